//! How function inputs are made from messages and outputs turned into messages.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::convert::{ConversionService, OCTET_STREAM};
use crate::error::ConversionError;
use crate::message::{Headers, Message, names};

/// Conversion settings of one binding, resolved at bind time.
#[derive(Clone, Debug)]
pub struct ConversionContext {
    /// The codecs.
    pub conversion: std::sync::Arc<ConversionService>,
    /// The binding's `content-type` (used when a message carries none, and for outputs);
    /// shared, so that cloning a context per message costs no allocation.
    pub content_type: std::sync::Arc<str>,
    /// `use-native-decoding` / `use-native-encoding`: no conversion by content type.
    pub native: bool,
}

impl ConversionContext {
    /// A context with the default codecs.
    pub fn new(content_type: impl Into<std::sync::Arc<str>>) -> Self {
        Self {
            conversion: std::sync::Arc::new(ConversionService::default()),
            content_type: content_type.into(),
            native: false,
        }
    }

    /// Decodes by the message's `contentType`. A message without one (the usual case for
    /// producers that are not Spring), or with only `application/octet-stream` (what brokers
    /// report when none was set) and no codec for it, is decoded by the binding's
    /// `content-type` (`application/json` unless configured), as Spring does; a failure then
    /// says that the content type was assumed.
    fn decode<T: DeserializeOwned + 'static>(
        &self,
        payload: &Bytes,
        headers: &Headers,
    ) -> Result<T, ConversionError> {
        if self.native {
            // Native decoding: the payload goes to the function as the broker gave it; only
            // raw types can take it.
            return self.conversion.decode(payload, OCTET_STREAM);
        }
        let assumed = |e: ConversionError| ConversionError::NoContentType {
            assumed: self.content_type.to_string(),
            cause: Box::new(e),
        };
        match headers.get_str(names::CONTENT_TYPE) {
            Some(ct) if !is_octet_stream(ct) => self.conversion.decode(payload, ct),
            Some(ct) => match self.conversion.decode(payload, ct) {
                Err(ConversionError::NoCodec { .. }) if !is_octet_stream(&self.content_type) => {
                    self.conversion
                        .decode(payload, &self.content_type)
                        .map_err(assumed)
                }
                other => other,
            },
            None => self
                .conversion
                .decode(payload, &self.content_type)
                .map_err(assumed),
        }
    }
}

fn is_octet_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(OCTET_STREAM))
}

/// A type a function can take: any `serde` type (converted by content type), `String`/`Bytes`/
/// `Vec<u8>` (raw), or a [`Message`] of those (with headers and the acknowledgment handle).
pub trait FunctionInput: Sized + Send + 'static {
    /// Whether the input keeps the message's headers (`Message<T>`); when it does not, the
    /// runtime moves the headers to the output instead of copying them.
    const KEEPS_HEADERS: bool = false;

    /// Builds the input from a delivered message.
    fn from_message(
        message: Message<Bytes>,
        ctx: &ConversionContext,
    ) -> Result<Self, ConversionError>;

    /// Builds the input from a payload and a view of the headers (used when
    /// [`FunctionInput::KEEPS_HEADERS`] is false, so the headers need not be copied).
    fn from_payload(
        payload: Bytes,
        headers: &Headers,
        ctx: &ConversionContext,
    ) -> Result<Self, ConversionError> {
        Self::from_message(Message::from_parts(payload, headers.clone()), ctx)
    }
}

impl<T: DeserializeOwned + Send + 'static> FunctionInput for T {
    fn from_message(
        message: Message<Bytes>,
        ctx: &ConversionContext,
    ) -> Result<Self, ConversionError> {
        ctx.decode(message.payload(), message.headers())
    }

    fn from_payload(
        payload: Bytes,
        headers: &Headers,
        ctx: &ConversionContext,
    ) -> Result<Self, ConversionError> {
        ctx.decode(&payload, headers)
    }
}

impl<T: DeserializeOwned + Send + 'static> FunctionInput for Message<T> {
    const KEEPS_HEADERS: bool = true;

    fn from_message(
        message: Message<Bytes>,
        ctx: &ConversionContext,
    ) -> Result<Self, ConversionError> {
        let value: T = ctx.decode(message.payload(), message.headers())?;
        Ok(message.map_payload(|_| value))
    }
}

/// A type a function can return: any `serde` type (a JSON `null`, e.g. `None`, sends nothing),
/// or a [`Message`] of one (its headers are sent; a `contentType` header chooses the codec).
pub trait FunctionOutput: Send + 'static {
    /// Converts the output to a message; `None` means nothing is sent.
    fn into_message(
        self,
        ctx: &ConversionContext,
    ) -> Result<Option<Message<Bytes>>, ConversionError>;
}

fn encode_payload<T: Serialize + 'static>(
    value: T,
    content_type: &str,
    ctx: &ConversionContext,
) -> Result<Option<Bytes>, ConversionError> {
    let ct = if ctx.native {
        OCTET_STREAM
    } else {
        content_type
    };
    let bytes = ctx.conversion.encode_owned(value, ct)?;
    if bytes.as_ref() == b"null" && ctx.conversion.codec_for(ct)?.name() == "json" {
        return Ok(None);
    }
    Ok(Some(bytes))
}

impl<T: Serialize + Send + 'static> FunctionOutput for T {
    fn into_message(
        self,
        ctx: &ConversionContext,
    ) -> Result<Option<Message<Bytes>>, ConversionError> {
        Ok(encode_payload(self, &ctx.content_type, ctx)?.map(|bytes| {
            let mut m = Message::new(bytes);
            if !ctx.native {
                m.headers_mut()
                    .insert(names::CONTENT_TYPE, &*ctx.content_type);
            }
            m
        }))
    }
}

impl<T: Serialize + Send + 'static> FunctionOutput for Message<T> {
    fn into_message(
        self,
        ctx: &ConversionContext,
    ) -> Result<Option<Message<Bytes>>, ConversionError> {
        let (payload, mut headers) = self.into_parts();
        let ct = headers
            .get_str(names::CONTENT_TYPE)
            .unwrap_or(&ctx.content_type)
            .to_owned();
        Ok(encode_payload(payload, &ct, ctx)?.map(|bytes| {
            if !ctx.native {
                headers.insert(names::CONTENT_TYPE, ct);
            }
            Message::from_parts(bytes, headers)
        }))
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
    fn message_input_keeps_headers() {
        let ctx = ConversionContext::new("application/json");
        let m = Message::bytes(&br#"{"id":"1","amount":2}"#[..]).with_header("k", "v");
        let input = Message::<Order>::from_message(m, &ctx).unwrap();
        assert_eq!(input.payload().amount, 2);
        assert_eq!(input.headers().get_str("k"), Some("v"));
    }

    #[test]
    fn none_output_sends_nothing() {
        let ctx = ConversionContext::new("application/json");
        assert!(Option::<Order>::None.into_message(&ctx).unwrap().is_none());
        let some = Some(Order {
            id: "x".into(),
            amount: 1,
        })
        .into_message(&ctx)
        .unwrap()
        .unwrap();
        assert_eq!(some.content_type(), Some("application/json"));
    }

    #[test]
    fn message_output_content_type_header_chooses_codec() {
        let ctx = ConversionContext::new("application/json");
        let out = Message::new(5_i32)
            .with_header("contentType", "text/plain")
            .into_message(&ctx)
            .unwrap()
            .unwrap();
        assert_eq!(&out.payload()[..], b"5");
        assert_eq!(out.content_type(), Some("text/plain"));
    }

    #[test]
    fn native_decoding_passes_raw_bytes_and_refuses_structures() {
        let mut ctx = ConversionContext::new("application/json");
        ctx.native = true;
        let s = String::from_message(Message::bytes(&b"{raw}"[..]), &ctx).unwrap();
        assert_eq!(s, "{raw}");
        assert!(Order::from_message(Message::bytes(&b"{}"[..]), &ctx).is_err());
    }
}
