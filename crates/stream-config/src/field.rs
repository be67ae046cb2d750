//! Typed property fields: the traits the [`properties!`](crate::properties) macro builds on, and
//! their implementations for the supported value types.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::descriptor::{PropertyDescriptor, PropertyKind};
use crate::environment::Environment;
use crate::error::ConfigError;
use crate::key::{self, canonical_key, canonical_segment, map_key_from_raw};
use crate::property::Property;
use crate::secret::{self, Secret};

impl PropertyDescriptor {
    /// Describes a field of type `T` with its default value and doc line.
    pub fn of<T: PropertyField>(field: &str, default: &T, description: &str) -> Self {
        let name = key::field_key(field);
        let sensitive = T::SENSITIVE || secret::is_sensitive_key(&name);
        PropertyDescriptor {
            default: if sensitive && !default.render_default().is_empty() {
                secret::REDACTED.to_owned()
            } else {
                default.render_default()
            },
            name,
            type_name: T::type_name(),
            description: description.to_owned(),
            kind: T::kind(),
            sensitive,
        }
    }
}

/// A struct of properties bound from one key prefix. Implemented by [`properties!`](crate::properties).
pub trait Properties: Default + Clone + std::fmt::Debug + Send + Sync + 'static {
    /// Describes every field (for docs and validation).
    fn descriptors() -> Vec<PropertyDescriptor>;
    /// Overlays the values found under `prefix` (canonical) onto `self`.
    fn bind_from(&mut self, env: &Environment, prefix: &str) -> Result<(), ConfigError>;
}

/// A type that can be a field of a [`Properties`] struct.
pub trait PropertyField: Sized {
    /// Whether values are secret (redacted everywhere).
    const SENSITIVE: bool = false;
    /// Type as shown to users.
    fn type_name() -> String;
    /// Shape of the property.
    fn kind() -> PropertyKind;
    /// The value rendered for the reference docs.
    fn render_default(&self) -> String;
    /// Overlays the value found at `key` (canonical), if any.
    fn bind_field(&mut self, env: &Environment, key: &str) -> Result<(), ConfigError>;
}

/// A single value parsed from text. Gives [`PropertyField`] to `T`, `Option<T>`, `Vec<T>` and
/// `BTreeMap<String, T>`.
pub trait ScalarField: Sized {
    /// Whether values are secret.
    const SENSITIVE: bool = false;
    /// Type as shown to users (`an integer (u32)`).
    fn type_name() -> String;
    /// Parses a value; the error explains what is wrong.
    fn parse_value(text: &str) -> Result<Self, String>;
    /// Renders a value for the docs.
    fn render(&self) -> String;
}

/// Parses the property `p` (at canonical `key`) as `T`, with an error naming key, value, type, origin.
pub fn parse_property<T: ScalarField>(key: &str, p: &Property) -> Result<T, ConfigError> {
    T::parse_value(p.value()).map_err(|detail| ConfigError::InvalidValue {
        key: key.to_owned(),
        value: if T::SENSITIVE || p.is_sensitive() {
            secret::REDACTED.to_owned()
        } else {
            secret::redact(key, p.value())
        },
        expected: T::type_name(),
        origin: p.origin().to_string(),
        detail: if T::SENSITIVE || p.is_sensitive() {
            None
        } else {
            Some(detail)
        },
    })
}

/// Implements [`PropertyField`] for a type that implements [`ScalarField`].
#[doc(hidden)]
#[macro_export]
macro_rules! __scalar_property_field {
    ($t:ty) => {
        impl $crate::PropertyField for $t {
            const SENSITIVE: bool = <$t as $crate::ScalarField>::SENSITIVE;
            fn type_name() -> ::std::string::String {
                <$t as $crate::ScalarField>::type_name()
            }
            fn kind() -> $crate::PropertyKind {
                $crate::PropertyKind::Value
            }
            fn render_default(&self) -> ::std::string::String {
                <$t as $crate::ScalarField>::render(self)
            }
            fn bind_field(
                &mut self,
                env: &$crate::Environment,
                key: &str,
            ) -> ::std::result::Result<(), $crate::ConfigError> {
                if let ::std::option::Option::Some(p) = env.property(key) {
                    *self = $crate::parse_property::<$t>(key, p)?;
                }
                ::std::result::Result::Ok(())
            }
        }
    };
}

macro_rules! int_fields {
    ($($t:ty),*) => {$(
        impl ScalarField for $t {
            fn type_name() -> String { format!("an integer ({})", stringify!($t)) }
            fn parse_value(text: &str) -> Result<Self, String> {
                let t = text.trim();
                t.strip_prefix('+').unwrap_or(t).replace('_', "").parse::<$t>().map_err(|e| e.to_string())
            }
            fn render(&self) -> String { self.to_string() }
        }
        crate::__scalar_property_field!($t);
    )*};
}
int_fields!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

impl ScalarField for f64 {
    fn type_name() -> String {
        "a number (f64)".to_owned()
    }
    fn parse_value(text: &str) -> Result<Self, String> {
        text.trim().parse::<f64>().map_err(|e| e.to_string())
    }
    fn render(&self) -> String {
        format!("{self:?}")
    }
}
crate::__scalar_property_field!(f64);

impl ScalarField for f32 {
    fn type_name() -> String {
        "a number (f32)".to_owned()
    }
    fn parse_value(text: &str) -> Result<Self, String> {
        text.trim().parse::<f32>().map_err(|e| e.to_string())
    }
    fn render(&self) -> String {
        format!("{self:?}")
    }
}
crate::__scalar_property_field!(f32);

impl ScalarField for bool {
    fn type_name() -> String {
        "a boolean (true or false)".to_owned()
    }
    fn parse_value(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(true),
            "false" | "off" | "no" | "0" => Ok(false),
            _ => Err("use true or false".to_owned()),
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
}
crate::__scalar_property_field!(bool);

impl ScalarField for String {
    fn type_name() -> String {
        "a string".to_owned()
    }
    fn parse_value(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
    fn render(&self) -> String {
        self.clone()
    }
}
crate::__scalar_property_field!(String);

impl ScalarField for Duration {
    fn type_name() -> String {
        "a duration (milliseconds, or 500ms, 5s, 1m, 2h, PT5S)".to_owned()
    }
    fn parse_value(text: &str) -> Result<Self, String> {
        crate::duration::parse_duration(text)
    }
    fn render(&self) -> String {
        crate::duration::format_duration(*self)
    }
}
crate::__scalar_property_field!(Duration);

impl ScalarField for Secret {
    const SENSITIVE: bool = true;
    fn type_name() -> String {
        "a secret string".to_owned()
    }
    fn parse_value(text: &str) -> Result<Self, String> {
        Ok(Secret::new(text))
    }
    fn render(&self) -> String {
        if self.is_empty() {
            String::new()
        } else {
            secret::REDACTED.to_owned()
        }
    }
}
crate::__scalar_property_field!(Secret);

/// `Option<T>`: absent or empty means `None`.
impl<T: ScalarField> PropertyField for Option<T> {
    const SENSITIVE: bool = T::SENSITIVE;
    fn type_name() -> String {
        format!("{} (optional)", T::type_name())
    }
    fn kind() -> PropertyKind {
        PropertyKind::Value
    }
    fn render_default(&self) -> String {
        self.as_ref().map(T::render).unwrap_or_default()
    }
    fn bind_field(&mut self, env: &Environment, key: &str) -> Result<(), ConfigError> {
        if let Some(p) = env.property(key) {
            *self = if p.value().trim().is_empty() {
                None
            } else {
                Some(parse_property::<T>(key, p)?)
            };
        }
        Ok(())
    }
}

/// `Vec<T>`: a comma-separated value, or indexed keys `key[0]`, `key[1]`... taken from the
/// highest-precedence source that sets the list (as Spring Boot does).
impl<T: ScalarField> PropertyField for Vec<T> {
    const SENSITIVE: bool = T::SENSITIVE;
    fn type_name() -> String {
        format!(
            "a list of {}",
            T::type_name()
                .trim_start_matches("a ")
                .trim_start_matches("an ")
        )
    }
    fn kind() -> PropertyKind {
        PropertyKind::List
    }
    fn render_default(&self) -> String {
        self.iter().map(T::render).collect::<Vec<_>>().join(",")
    }
    fn bind_field(&mut self, env: &Environment, key: &str) -> Result<(), ConfigError> {
        let whole = env.property(key);
        let prefix = format!("{key}[");
        let indexed: Vec<(&str, &Property)> = env
            .properties_with_prefix(&prefix)
            .filter(|(k, _)| !k[prefix.len()..].contains('.'))
            .collect();
        let max_rank = indexed.iter().map(|(_, p)| p.rank()).max();
        match (whole, max_rank) {
            (Some(p), r) if r.is_none_or(|r| p.rank() >= r) => {
                let v = p.value().trim();
                *self = if v.is_empty() {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|item| {
                            T::parse_value(item.trim()).map_err(|d| {
                                let mut e = parse_property::<T>(key, p).err();
                                if let Some(ConfigError::InvalidValue { detail, .. }) = &mut e
                                    && !T::SENSITIVE
                                    && !p.is_sensitive()
                                {
                                    *detail = Some(format!("item `{}`: {d}", item.trim()));
                                }
                                e.unwrap_or_else(|| ConfigError::Invalid {
                                    key: key.to_owned(),
                                    origin: p.origin().to_string(),
                                    message: d,
                                })
                            })
                        })
                        .collect::<Result<_, _>>()?
                };
            }
            (_, Some(rank)) => {
                let mut items: Vec<(usize, T)> = Vec::new();
                for (k, p) in indexed.into_iter().filter(|(_, p)| p.rank() == rank) {
                    let idx = k[prefix.len()..]
                        .split(']')
                        .next()
                        .and_then(|i| i.parse::<usize>().ok())
                        .unwrap_or(usize::MAX);
                    items.push((idx, parse_property::<T>(k, p)?));
                }
                items.sort_by_key(|(i, _)| *i);
                *self = items.into_iter().map(|(_, v)| v).collect();
            }
            _ => {}
        }
        Ok(())
    }
}

/// `BTreeMap<String, T>`: every key below this one; the map key is taken from the key as written
/// (case kept, segments joined with `.`), so `retryable-exceptions.std::io::Error` keeps its case.
impl<T: ScalarField> PropertyField for BTreeMap<String, T> {
    const SENSITIVE: bool = T::SENSITIVE;
    fn type_name() -> String {
        format!(
            "a map of {}",
            T::type_name()
                .trim_start_matches("a ")
                .trim_start_matches("an ")
        )
    }
    fn kind() -> PropertyKind {
        PropertyKind::Map
    }
    fn render_default(&self) -> String {
        self.iter()
            .map(|(k, v)| format!("{k}={}", v.render()))
            .collect::<Vec<_>>()
            .join(",")
    }
    fn bind_field(&mut self, env: &Environment, key: &str) -> Result<(), ConfigError> {
        let prefix = format!("{key}.");
        for (k, p) in env.properties_with_prefix(&prefix) {
            let map_key =
                map_key_from_raw(p.raw_key(), key).unwrap_or_else(|| k[prefix.len()..].to_owned());
            self.insert(map_key, parse_property::<T>(k, p)?);
        }
        Ok(())
    }
}

/// A key Spring accepts that has no effect here: accepted (with any value, and any key below it)
/// so a Spring service's configuration can be copied unchanged, documented in the generated
/// reference, and reported once at startup ([`StreamConfig::notices`](crate::StreamConfig::notices)).
/// The field's doc line says why it has no effect.
///
/// ```
/// use stream_config::{Environment, NoEffect, PropertyKind, Properties, StreamConfig};
/// stream_config::properties! {
///     /// `demo.*`.
///     pub struct Demo {
///         /// Host.
///         pub host: String = "localhost".to_owned(),
///         /// No effect: connections are not cached here.
///         pub cache: NoEffect = NoEffect,
///     }
/// }
/// assert!(matches!(Demo::descriptors()[1].kind, PropertyKind::NoEffect));
/// let env = Environment::builder().map("t", [("demo.cache.channel.size", "25")]).build()?;
/// let mut d = Demo::default();
/// env.bind("demo", &mut d)?; // accepted, nothing bound
/// assert_eq!(d.host, "localhost");
/// # Ok::<(), stream_config::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoEffect;

impl PropertyField for NoEffect {
    fn type_name() -> String {
        "any (accepted, no effect)".to_owned()
    }
    fn kind() -> PropertyKind {
        PropertyKind::NoEffect
    }
    fn render_default(&self) -> String {
        String::new()
    }
    fn bind_field(&mut self, _env: &Environment, _key: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Binding typed properties: the generic half of [`Environment`], kept beside the traits it
/// uses.
impl Environment {
    /// Overlays the values found under `prefix` onto `target` (fields without a value keep theirs).
    ///
    /// ```
    /// use stream_config::{ConsumerProperties, Environment};
    /// let env = Environment::builder().map("test", [("app.consumer.max-attempts", "7")]).build()?;
    /// let mut c = ConsumerProperties::default();
    /// env.bind("app.consumer", &mut c)?;
    /// assert_eq!((c.max_attempts, c.concurrency), (7, 1));
    /// # Ok::<(), stream_config::ConfigError>(())
    /// ```
    pub fn bind<T: Properties>(&self, prefix: &str, target: &mut T) -> Result<(), ConfigError> {
        target.bind_from(self, &canonical_key(prefix))
    }

    /// A binder extension's binder-level properties: `spring.cloud.stream.<type>.binder.*`.
    pub fn extended_binder<B: Properties>(&self, binder_type: &str) -> Result<B, ConfigError> {
        let mut b = B::default();
        self.bind(
            &format!(
                "spring.cloud.stream.{}.binder",
                canonical_segment(binder_type)
            ),
            &mut b,
        )?;
        Ok(b)
    }

    /// A binder extension's consumer properties for `binding`:
    /// `spring.cloud.stream.<type>.default.consumer.*`, then `...<type>.bindings.<binding>.consumer.*`.
    pub fn extended_consumer<C: Properties>(
        &self,
        binder_type: &str,
        binding: &str,
    ) -> Result<C, ConfigError> {
        self.extended(binder_type, binding, "consumer")
    }

    /// A binder extension's producer properties for `binding` (layered like
    /// [`extended_consumer`](Self::extended_consumer)).
    pub fn extended_producer<P: Properties>(
        &self,
        binder_type: &str,
        binding: &str,
    ) -> Result<P, ConfigError> {
        self.extended(binder_type, binding, "producer")
    }

    fn extended<T: Properties>(
        &self,
        binder_type: &str,
        binding: &str,
        side: &str,
    ) -> Result<T, ConfigError> {
        let t = canonical_segment(binder_type);
        let mut v = T::default();
        self.bind(&format!("spring.cloud.stream.{t}.default.{side}"), &mut v)?;
        self.bind(
            &format!(
                "spring.cloud.stream.{t}.bindings.{}.{side}",
                canonical_segment(binding)
            ),
            &mut v,
        )?;
        Ok(v)
    }
}
