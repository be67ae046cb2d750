//! Decompression (per `content_encoding`) and de-batching (Spring's `lengthHeader4`) of a
//! delivery: pure functions over the received properties and body.

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{FieldTable, ShortString};

use crate::batching;
use crate::compression;
use crate::error::RabbitError;
use crate::headers;

/// A delivery's body after decompression and de-batching.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// Properties with the compression and batch markers removed; `None` when nothing was
    /// removed (the usual plain delivery: the raw message's properties, not copied).
    pub(crate) properties: Option<BasicProperties>,
    /// A producer batch's parts, or the decompressed body; empty for a plain delivery (its
    /// body is the raw message's, not copied).
    pub(crate) parts: Vec<Bytes>,
    /// Whether the body was a `lengthHeader4` batch.
    pub(crate) batched: bool,
}

impl Unpacked {
    /// The delivery as received.
    pub(crate) fn plain() -> Self {
        Self {
            properties: None,
            parts: Vec::new(),
            batched: false,
        }
    }

    /// Whether the delivery is the message unchanged (one part, as received).
    pub(crate) fn is_plain(&self) -> bool {
        self.properties.is_none() && self.parts.is_empty()
    }
}

/// Decompresses (per `contentEncoding`) and de-batches (Spring's `lengthHeader4`) a delivery.
pub(crate) fn unpack(
    received: &BasicProperties,
    received_body: &Bytes,
    limit: u64,
) -> Result<Unpacked, RabbitError> {
    let encoding = received
        .content_encoding()
        .as_ref()
        .and_then(|e| compression::compression_of(e.as_str()).map(|c| (e.as_str(), c)));
    let is_batch = |props: &BasicProperties| {
        props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(batching::SPRING_BATCH_FORMAT))
            .is_some_and(|v| {
                headers::from_amqp(v).as_str() == Some(batching::BATCH_FORMAT_LENGTH_HEADER4)
            })
    };
    if encoding.is_none() && !is_batch(received) {
        return Ok(Unpacked {
            properties: None,
            parts: Vec::new(),
            batched: false,
        });
    }
    let mut properties = received.clone();
    let mut body = received_body.clone();
    if let Some((encoding, c)) = encoding {
        body = Bytes::from(
            compression::decompress(&body, c, limit)
                .map_err(|e| RabbitError::Payload(e.to_string()))?,
        );
        properties = with_content_encoding(&properties, compression::remaining_encoding(encoding));
        properties = without_header(properties, compression::SPRING_AUTO_DECOMPRESS);
    }
    if !is_batch(&properties) {
        return Ok(Unpacked {
            properties: Some(properties),
            parts: vec![body],
            batched: false,
        });
    }
    let parts = batching::decode(&body).map_err(|e| RabbitError::Payload(e.to_string()))?;
    Ok(Unpacked {
        properties: Some(without_header(properties, batching::SPRING_BATCH_FORMAT)),
        parts,
        batched: true,
    })
}

fn without_header(props: BasicProperties, name: &str) -> BasicProperties {
    match props.headers().clone() {
        Some(mut table) if table.inner().contains_key(name) => {
            let mut inner = table.inner().clone();
            inner.remove(name);
            table = FieldTable::from(inner);
            props.with_headers(table)
        }
        _ => props,
    }
}

/// The properties with `content_encoding` replaced (lapin's builder cannot unset a field).
fn with_content_encoding(p: &BasicProperties, encoding: Option<String>) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = encoding.filter(|e| !e.is_empty()) {
        out = out.with_content_encoding(ShortString::from(v));
    }
    if let Some(v) = p.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.expiration() {
        out = out.with_expiration(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, LongString};

    use super::*;

    fn props(encoding: Option<&str>, batch: bool) -> BasicProperties {
        let mut p = BasicProperties::default().with_content_type("text/plain".into());
        if let Some(e) = encoding {
            p = p.with_content_encoding(e.into());
        }
        let mut t = FieldTable::default();
        t.insert("user".into(), AMQPValue::Boolean(true));
        if batch {
            t.insert(
                batching::SPRING_BATCH_FORMAT.into(),
                AMQPValue::LongString(LongString::from(batching::BATCH_FORMAT_LENGTH_HEADER4)),
            );
        }
        if encoding.is_some() {
            t.insert(
                compression::SPRING_AUTO_DECOMPRESS.into(),
                AMQPValue::Boolean(true),
            );
        }
        p.with_headers(t)
    }

    #[test]
    fn plain_deliveries_are_not_copied() {
        let body = Bytes::from_static(b"hello");
        let u = unpack(&props(None, false), &body, 1 << 20).expect("plain");
        assert!(u.is_plain());
        assert!(!u.batched);
    }

    #[test]
    fn batches_split_and_lose_their_marker() {
        let body = Bytes::from(batching::encode(&[b"foo".as_slice(), b"bar".as_slice()]));
        let u = unpack(&props(None, true), &body, 1 << 20).expect("batch");
        assert!(u.batched);
        assert_eq!(
            u.parts,
            vec![Bytes::from_static(b"foo"), Bytes::from_static(b"bar")]
        );
        let h = u
            .properties
            .expect("properties")
            .headers()
            .clone()
            .expect("headers");
        assert!(!h.inner().contains_key(batching::SPRING_BATCH_FORMAT));
        assert!(h.inner().contains_key("user"));
    }

    #[test]
    fn gzip_is_undone_and_the_encoding_restored() {
        let zipped = Bytes::from(compression::gzip(b"payload", 1));
        let u = unpack(&props(Some("gzip, utf-8"), false), &zipped, 1 << 20).expect("gzip");
        assert_eq!(u.parts, vec![Bytes::from_static(b"payload")]);
        let p = u.properties.expect("properties");
        assert_eq!(
            p.content_encoding().as_ref().map(|e| e.as_str()),
            Some("utf-8")
        );
        let h = p.headers().clone().expect("headers");
        assert!(!h.inner().contains_key(compression::SPRING_AUTO_DECOMPRESS));
        assert_eq!(
            p.content_type().as_ref().map(|c| c.as_str()),
            Some("text/plain")
        );
    }

    #[test]
    fn bad_batches_and_bombs_are_errors() {
        let bad = Bytes::from_static(b"\0\0\0\x09abc");
        let e = unpack(&props(None, true), &bad, 1 << 20).expect_err("bad batch");
        assert!(
            e.to_string().contains("Bad batched message received"),
            "{e}"
        );
        let big = Bytes::from(compression::gzip(&vec![0u8; 10_000], 1));
        let e = unpack(&props(Some("gzip"), false), &big, 100).expect_err("bomb");
        assert!(!e.to_string().is_empty());
    }
}
