//! Pluggable codecs: bytes <-> serde values for one family of content types.

use crate::convert::MimeType;
use crate::error::BoxError;

/// The callback a codec hands its deserializer to.
pub type DecodeVisitor<'v> =
    dyn FnMut(&mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error> + 'v;

/// Converts payload bytes to and from serde values for the content types it supports.
///
/// A codec is object-safe: it hands a type-erased deserializer to the runtime's callback and
/// serializes a type-erased value, so one codec serves every payload type.
///
/// ```
/// use stream_core::convert::{Codec, ConversionService, DecodeVisitor, MimeType};
/// use stream_core::BoxError;
///
/// /// Reads and writes JSON under `application/x-ndjson` (one value per message).
/// struct NdJson;
/// impl Codec for NdJson {
///     fn name(&self) -> &str { "ndjson" }
///     fn supports(&self, mime: &MimeType) -> bool { mime.essence() == "application/x-ndjson" }
///     fn decode(&self, bytes: &[u8], visit: &mut DecodeVisitor<'_>) -> Result<(), BoxError> {
///         let mut de = serde_json::Deserializer::from_slice(bytes);
///         visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?;
///         Ok(())
///     }
///     fn encode(&self, value: &dyn erased_serde::Serialize, out: &mut Vec<u8>) -> Result<(), BoxError> {
///         serde_json::to_writer(&mut *out, value)?;
///         out.push(b'\n');
///         Ok(())
///     }
/// }
/// let mut conversion = ConversionService::default();
/// conversion.register(NdJson);
/// let bytes = conversion.encode(&vec![1, 2], "application/x-ndjson").unwrap();
/// assert_eq!(&bytes[..], b"[1,2]\n");
/// let back: Vec<i32> = conversion.decode(&bytes, "application/x-ndjson").unwrap();
/// assert_eq!(back, vec![1, 2]);
/// ```
pub trait Codec: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &str;
    /// Whether the codec handles the content type.
    fn supports(&self, mime: &MimeType) -> bool;
    /// Gives `visit` a deserializer over `bytes`.
    fn decode(&self, bytes: &[u8], visit: &mut DecodeVisitor<'_>) -> Result<(), BoxError>;
    /// Serializes `value` into `out`.
    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        out: &mut Vec<u8>,
    ) -> Result<(), BoxError>;
}

/// `application/json` and `+json` types, with serde_json.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn name(&self) -> &str {
        "json"
    }

    fn supports(&self, mime: &MimeType) -> bool {
        mime.is_json()
    }

    fn decode(&self, bytes: &[u8], visit: &mut DecodeVisitor<'_>) -> Result<(), BoxError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?;
        de.end()?;
        Ok(())
    }

    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        out: &mut Vec<u8>,
    ) -> Result<(), BoxError> {
        serde_json::to_writer(out, value)?;
        Ok(())
    }
}

/// `text/*`: the payload is the UTF-8 text of a string, number or boolean.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextCodec;

impl Codec for TextCodec {
    fn name(&self) -> &str {
        "text"
    }

    fn supports(&self, mime: &MimeType) -> bool {
        mime.is_text()
    }

    fn decode(&self, bytes: &[u8], visit: &mut DecodeVisitor<'_>) -> Result<(), BoxError> {
        let text = std::str::from_utf8(bytes)?;
        // Numbers and booleans read as such (`42` into an `i64`); anything else is a string.
        let trimmed = text.trim();
        let scalar = matches!(trimmed, "true" | "false")
            || (!trimmed.is_empty() && serde_json::from_str::<serde_json::Number>(trimmed).is_ok());
        if scalar {
            let mut de = serde_json::Deserializer::from_str(trimmed);
            visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?;
        } else {
            let de = serde::de::value::StrDeserializer::<erased_serde::Error>::new(text);
            visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(de))?;
        }
        Ok(())
    }

    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        out: &mut Vec<u8>,
    ) -> Result<(), BoxError> {
        match serde_json::to_value(value)? {
            serde_json::Value::String(s) => out.extend_from_slice(s.as_bytes()),
            serde_json::Value::Null => {}
            v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                out.extend_from_slice(v.to_string().as_bytes());
            }
            _ => {
                return Err(
                    "only strings, numbers and booleans can be written as text; use application/json for structures"
                        .into(),
                );
            }
        }
        Ok(())
    }
}
