//! What describes a property: its shape, type, default and doc line (validation, environment
//! mapping and generated docs read these).

/// What shape a property has (used for validation, environment-variable mapping and docs).
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum PropertyKind {
    /// A single value.
    Value,
    /// A list: comma-separated or indexed `key[0]`.
    List,
    /// A map: any key below this one.
    Map,
    /// A nested properties struct.
    Nested(fn() -> Vec<PropertyDescriptor>),
    /// Accepted for compatibility (with everything below it) but without effect here: a
    /// [`NoEffect`](crate::NoEffect) field. Setting it logs one warning at startup.
    NoEffect,
}

impl std::fmt::Debug for PropertyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PropertyKind::Value => "Value",
            PropertyKind::List => "List",
            PropertyKind::Map => "Map",
            PropertyKind::Nested(_) => "Nested",
            PropertyKind::NoEffect => "NoEffect",
        })
    }
}

/// Describes one property of a [`Properties`](crate::Properties) struct.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PropertyDescriptor {
    /// Kebab-case key segment (`max-attempts`).
    pub name: String,
    /// Type as shown to users (`integer (u32)`, `duration`).
    pub type_name: String,
    /// The default, rendered (empty when none).
    pub default: String,
    /// First line of the field's documentation.
    pub description: String,
    /// Shape.
    pub kind: PropertyKind,
    /// Whether values are secret.
    pub sensitive: bool,
}
