//! Content conversion: payload bytes <-> function types, by content type.
//!
//! `String`, [`Bytes`] and `Vec<u8>` pass through as raw bytes whatever the content type (a
//! Java `Function<String, String>` sends its text unquoted even under `application/json`);
//! every other `serde` type goes through the [`Codec`] registered for the content type
//! (JSON and text built in).

mod codec;
mod mime;

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use codec::{Codec, DecodeVisitor, JsonCodec, TextCodec};
pub use mime::MimeType;

use crate::error::ConversionError;

/// The default content type of a binding (`application/json`).
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";
/// Content type assumed for inbound messages that carry none.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The registered codecs, tried in order (user codecs first).
///
/// ```
/// use stream_core::convert::ConversionService;
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Order { id: String, amount: i64 }
/// let conversion = ConversionService::default();
/// let bytes = conversion.encode(&Order { id: "a".into(), amount: 3 }, "application/json").unwrap();
/// assert_eq!(&bytes[..], br#"{"id":"a","amount":3}"#);
/// let order: Order = conversion.decode(&bytes, "application/json").unwrap();
/// assert_eq!(order.amount, 3);
/// // Strings are raw, as Spring sends them:
/// let text: String = conversion.decode(&bytes::Bytes::from_static(b"hello"), "application/json").unwrap();
/// assert_eq!(text, "hello");
/// ```
#[derive(Clone)]
pub struct ConversionService {
    codecs: Vec<Arc<dyn Codec>>,
}

impl Default for ConversionService {
    fn default() -> Self {
        Self {
            codecs: vec![Arc::new(JsonCodec), Arc::new(TextCodec)],
        }
    }
}

impl fmt::Debug for ConversionService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.codecs.iter().map(|c| c.name()))
            .finish()
    }
}

enum Raw {
    String,
    Bytes,
    Vec,
}

fn raw_kind<T: 'static + ?Sized>() -> Option<Raw> {
    let id = TypeId::of::<T>();
    if id == TypeId::of::<String>() || id == TypeId::of::<str>() {
        Some(Raw::String)
    } else if id == TypeId::of::<Bytes>() {
        Some(Raw::Bytes)
    } else if id == TypeId::of::<Vec<u8>>() || id == TypeId::of::<[u8]>() {
        Some(Raw::Vec)
    } else {
        None
    }
}

fn cast<T: 'static, U: 'static>(value: U) -> T {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        Some(t) => match t.take() {
            Some(v) => v,
            None => unreachable!("slot was filled above"),
        },
        None => unreachable!("callers check TypeId before casting"),
    }
}

impl ConversionService {
    /// Registers a codec ahead of the built-in ones.
    pub fn register(&mut self, codec: impl Codec) -> &mut Self {
        self.codecs.insert(0, Arc::new(codec));
        self
    }

    /// The codec for a content type.
    pub fn codec_for(&self, content_type: &str) -> Result<&dyn Codec, ConversionError> {
        let mime: MimeType = content_type.parse()?;
        self.codecs
            .iter()
            .find(|c| c.supports(&mime))
            .map(|c| &**c)
            .ok_or_else(|| ConversionError::NoCodec {
                content_type: content_type.to_owned(),
                target: "any",
            })
    }

    /// Converts payload bytes to `T` according to `content_type`.
    pub fn decode<T: DeserializeOwned + 'static>(
        &self,
        payload: &Bytes,
        content_type: &str,
    ) -> Result<T, ConversionError> {
        let target = std::any::type_name::<T>();
        match raw_kind::<T>() {
            Some(Raw::String) => {
                let text =
                    String::from_utf8(payload.to_vec()).map_err(|e| ConversionError::Decode {
                        content_type: content_type.to_owned(),
                        target,
                        reason: format!("payload is not UTF-8: {e}"),
                    })?;
                return Ok(cast::<T, String>(text));
            }
            Some(Raw::Bytes) => return Ok(cast::<T, Bytes>(payload.clone())),
            Some(Raw::Vec) => return Ok(cast::<T, Vec<u8>>(payload.to_vec())),
            None => {}
        }
        let codec = self.codec_for(content_type).map_err(|e| match e {
            ConversionError::NoCodec { content_type, .. } => ConversionError::NoCodec {
                content_type,
                target,
            },
            other => other,
        })?;
        let mut out: Option<T> = None;
        codec
            .decode(payload, &mut |de| {
                out = Some(erased_serde::deserialize::<T>(de)?);
                Ok(())
            })
            .map_err(|e| ConversionError::Decode {
                content_type: content_type.to_owned(),
                target,
                reason: e.to_string(),
            })?;
        out.ok_or_else(|| ConversionError::Decode {
            content_type: content_type.to_owned(),
            target,
            reason: format!("codec `{}` produced no value", codec.name()),
        })
    }

    /// Converts `value` to payload bytes according to `content_type`.
    pub fn encode<T: Serialize + 'static>(
        &self,
        value: &T,
        content_type: &str,
    ) -> Result<Bytes, ConversionError> {
        let any = value as &dyn Any;
        match raw_kind::<T>() {
            Some(Raw::String) => {
                if let Some(s) = any.downcast_ref::<String>() {
                    return Ok(Bytes::copy_from_slice(s.as_bytes()));
                }
            }
            Some(Raw::Bytes) => {
                if let Some(b) = any.downcast_ref::<Bytes>() {
                    return Ok(b.clone());
                }
            }
            Some(Raw::Vec) => {
                if let Some(v) = any.downcast_ref::<Vec<u8>>() {
                    return Ok(Bytes::copy_from_slice(v));
                }
            }
            None => {}
        }
        let source_type = std::any::type_name::<T>();
        let codec = self.codec_for(content_type)?;
        let mut out = Vec::new();
        codec
            .encode(value, &mut out)
            .map_err(|e| ConversionError::Encode {
                content_type: content_type.to_owned(),
                source_type,
                reason: e.to_string(),
            })?;
        Ok(Bytes::from(out))
    }

    /// Converts an owned `String`/`Bytes`/`Vec<u8>` without copying; other types as
    /// [`ConversionService::encode`].
    pub fn encode_owned<T: Serialize + 'static>(
        &self,
        value: T,
        content_type: &str,
    ) -> Result<Bytes, ConversionError> {
        match raw_kind::<T>() {
            Some(Raw::String) => Ok(Bytes::from(cast::<String, T>(value).into_bytes())),
            Some(Raw::Bytes) => Ok(cast::<Bytes, T>(value)),
            Some(Raw::Vec) => Ok(Bytes::from(cast::<Vec<u8>, T>(value))),
            None => self.encode(&value, content_type),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Order {
        id: String,
        amount: i64,
    }

    #[test]
    fn malformed_json_is_a_decode_error_naming_type_and_content_type() {
        let c = ConversionService::default();
        let err = c
            .decode::<Order>(&Bytes::from_static(b"{not json"), "application/json")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("application/json"), "{text}");
        assert!(text.contains("Order"), "{text}");
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let c = ConversionService::default();
        assert!(
            c.decode::<Order>(
                &Bytes::from_static(br#"{"id":"a","amount":1} x"#),
                "application/json"
            )
            .is_err()
        );
    }

    #[test]
    fn raw_types_pass_through_any_content_type() {
        let c = ConversionService::default();
        let b = c
            .encode_owned("HELLO".to_owned(), "application/json")
            .unwrap();
        assert_eq!(&b[..], b"HELLO");
        let v: Vec<u8> = c.decode(&b, "application/x-unknown").unwrap();
        assert_eq!(v, b"HELLO");
        let bytes: Bytes = c.decode(&b, "application/json").unwrap();
        assert_eq!(bytes, b);
    }

    #[test]
    fn text_codec_reads_numbers_and_writes_scalars() {
        let c = ConversionService::default();
        let n: i64 = c.decode(&Bytes::from_static(b"42"), "text/plain").unwrap();
        assert_eq!(n, 42);
        let out = c.encode(&7_u32, "text/plain").unwrap();
        assert_eq!(&out[..], b"7");
        assert!(
            c.encode(
                &Order {
                    id: "a".into(),
                    amount: 1
                },
                "text/plain"
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_content_type_names_it() {
        let c = ConversionService::default();
        let err = c
            .decode::<Order>(&Bytes::from_static(b"x"), "application/avro")
            .unwrap_err();
        assert!(err.to_string().contains("application/avro"), "{err}");
        assert!(
            c.decode::<Order>(&Bytes::from_static(b"x"), "nonsense")
                .is_err()
        );
    }

    #[test]
    fn invalid_utf8_for_string_is_an_error() {
        let c = ConversionService::default();
        assert!(
            c.decode::<String>(&Bytes::from_static(&[0xff, 0xfe]), "text/plain")
                .is_err()
        );
    }
}
