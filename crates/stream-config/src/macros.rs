//! The macros that define typed properties: [`properties!`](crate::properties),
//! [`property_enum!`](crate::property_enum) and
//! [`property_field_from_str!`](crate::property_field_from_str).

/// Defines one or more properties structs with their defaults.
///
/// Each field is `name: Type = default_expr`, documented with `///` (the first line goes to the
/// generated reference). The key of a field is its name in kebab-case (`max_attempts` ->
/// `max-attempts`; `r#type` -> `type`). Generated: the struct with `#[non_exhaustive]`, `Clone`,
/// `Debug`, `PartialEq`, `Default` (from the defaults), [`Properties`](crate::Properties) and
/// [`PropertyField`](crate::PropertyField) (so it nests in other properties structs).
///
/// ```
/// use std::time::Duration;
/// use stream_config::{Environment, Properties};
///
/// stream_config::properties! {
///     /// Retry settings.
///     pub struct RetryProperties {
///         /// Attempts in all.
///         pub max_attempts: u32 = 3,
///         /// First back-off.
///         pub initial: Duration = Duration::from_millis(1000),
///     }
///
///     /// Consumer settings of my binder.
///     pub struct MyConsumerProperties {
///         /// Messages fetched at once.
///         pub prefetch: u16 = 1,
///         /// Optional time-to-live.
///         pub ttl: Option<u32> = None,
///         /// Nested settings.
///         pub retry: RetryProperties = RetryProperties::default(),
///     }
/// }
///
/// let env = Environment::builder()
///     .properties_str("app.properties", "my.prefetch=10\nmy.retry.maxAttempts=5\nmy.retry.initial=2s")
///     .build()?;
/// let mut props = MyConsumerProperties::default();
/// env.bind("my", &mut props)?;
/// assert_eq!(props.prefetch, 10);
/// assert_eq!(props.ttl, None);
/// assert_eq!(props.retry.max_attempts, 5);
/// assert_eq!(props.retry.initial, Duration::from_secs(2));
/// assert_eq!(MyConsumerProperties::descriptors()[0].name, "prefetch");
/// # Ok::<(), stream_config::ConfigError>(())
/// ```
#[macro_export]
macro_rules! properties {
    ($(
        $(#[$smeta:meta])*
        $svis:vis struct $name:ident {
            $(
                $(#[doc = $fdoc:literal])*
                $fvis:vis $field:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
    )*) => {$(
        $(#[$smeta])*
        #[non_exhaustive]
        #[derive(Clone, Debug, PartialEq)]
        $svis struct $name {
            $(
                $(#[doc = $fdoc])*
                $fvis $field: $ty,
            )*
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $crate::Properties for $name {
            fn descriptors() -> ::std::vec::Vec<$crate::PropertyDescriptor> {
                let defaults = <Self as ::core::default::Default>::default();
                // A struct without fields (a binder with no binder-level keys) reads none.
                let _ = &defaults;
                ::std::vec![$(
                    $crate::PropertyDescriptor::of::<$ty>(
                        stringify!($field),
                        &defaults.$field,
                        &$crate::__first_doc_line(&[$($fdoc),*]),
                    ),
                )*]
            }

            fn bind_from(
                &mut self,
                env: &$crate::Environment,
                prefix: &str,
            ) -> ::std::result::Result<(), $crate::ConfigError> {
                let _ = (&env, &prefix);
                $(
                    $crate::PropertyField::bind_field(
                        &mut self.$field,
                        env,
                        &$crate::__field_path(prefix, stringify!($field)),
                    )?;
                )*
                ::std::result::Result::Ok(())
            }
        }

        impl $crate::PropertyField for $name {
            fn type_name() -> ::std::string::String {
                ::std::string::String::from("properties")
            }
            fn kind() -> $crate::PropertyKind {
                $crate::PropertyKind::Nested(<$name as $crate::Properties>::descriptors)
            }
            fn render_default(&self) -> ::std::string::String {
                ::std::string::String::new()
            }
            fn bind_field(
                &mut self,
                env: &$crate::Environment,
                key: &str,
            ) -> ::std::result::Result<(), $crate::ConfigError> {
                <$name as $crate::Properties>::bind_from(self, env, key)
            }
        }
    )*};
}

/// Defines an enum property whose values are written as strings. Parsing ignores case and treats
/// `-`, `_` and camelCase alike (`embeddedHeaders` = `embedded-headers` = `EMBEDDED_HEADERS`).
///
/// Generated: `Clone`, `Copy`, `Debug`, `PartialEq`, `Eq`, `Hash`, `as_str()`, `Display`,
/// `FromStr`, and the property-field traits.
///
/// ```
/// stream_config::property_enum! {
///     /// Exchange types.
///     pub enum ExchangeType { Topic = "topic", Direct = "direct", Fanout = "fanout" }
/// }
/// assert_eq!("TOPIC".parse::<ExchangeType>(), Ok(ExchangeType::Topic));
/// assert_eq!(ExchangeType::Fanout.to_string(), "fanout");
/// assert!("x".parse::<ExchangeType>().unwrap_err().contains("topic, direct, fanout"));
/// ```
#[macro_export]
macro_rules! property_enum {
    ($(
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[doc = $vdoc:literal])*
                $variant:ident = $text:literal
            ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $(
                $(#[doc = $vdoc])*
                $variant,
            )*
        }

        impl $name {
            /// The value as written in configuration.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::core::str::FromStr for $name {
            type Err = ::std::string::String;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                let wanted = $crate::canonical_segment(s);
                $(
                    if $crate::canonical_segment($text) == wanted {
                        return ::std::result::Result::Ok($name::$variant);
                    }
                )*
                ::std::result::Result::Err(::std::format!(
                    "`{}` is not one of {}",
                    s.trim(),
                    [$($text),*].join(", ")
                ))
            }
        }

        impl $crate::ScalarField for $name {
            fn type_name() -> ::std::string::String {
                ::std::format!("one of {}", [$($text),*].join(", "))
            }
            fn parse_value(text: &str) -> ::std::result::Result<Self, ::std::string::String> {
                text.parse()
            }
            fn render(&self) -> ::std::string::String {
                ::std::string::String::from(self.as_str())
            }
        }
        $crate::__scalar_property_field!($name);
    )*};
}

/// Makes a `FromStr + Debug` type usable as a property field (and in `Option`, `Vec`, maps).
/// The second argument is the type as shown to users. Defaults are rendered with `Debug`.
///
/// ```
/// # mod wrap {
/// #[derive(Debug, Clone, PartialEq)]
/// pub struct Level(pub u8);
/// impl std::str::FromStr for Level {
///     type Err = String;
///     fn from_str(s: &str) -> Result<Self, String> {
///         s.trim().parse().map(Level).map_err(|_| format!("`{s}` is not a level"))
///     }
/// }
/// stream_config::property_field_from_str!(Level, "a level (0-9)");
/// # }
/// ```
#[macro_export]
macro_rules! property_field_from_str {
    ($t:ty, $type_name:expr) => {
        impl $crate::ScalarField for $t {
            fn type_name() -> ::std::string::String {
                ::std::string::String::from($type_name)
            }
            fn parse_value(text: &str) -> ::std::result::Result<Self, ::std::string::String> {
                <$t as ::core::str::FromStr>::from_str(text)
                    .map_err(|e| ::std::string::ToString::to_string(&e))
            }
            fn render(&self) -> ::std::string::String {
                ::std::format!("{:?}", self)
            }
        }
        $crate::__scalar_property_field!($t);
    };
}

/// First non-empty line of a field's docs.
#[doc(hidden)]
pub fn __first_doc_line(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// The canonical key of a field below `prefix`.
#[doc(hidden)]
pub fn __field_path(prefix: &str, field: &str) -> String {
    crate::key::join(prefix, &crate::key::field_key(field))
}
