//! Spring AMQP's `SimpleBatchingStrategy` wire format (spec §6): a batch body is, for each
//! message, a 4-byte big-endian length followed by the message's bytes; the batch carries the
//! first message's properties plus headers `springBatchFormat=lengthHeader4` and
//! `amqp_batchSize=<n>` (an AMQP signed 32-bit integer, Java's `Integer`).

use bytes::Bytes;

/// Header naming the batch format (`MessageProperties.SPRING_BATCH_FORMAT`).
pub const SPRING_BATCH_FORMAT: &str = "springBatchFormat";
/// The only batch format: 4-byte length headers (`MessageProperties.BATCH_FORMAT_LENGTH_HEADER4`).
pub const BATCH_FORMAT_LENGTH_HEADER4: &str = "lengthHeader4";
/// Header holding the number of messages in a batch (`AmqpHeaders.BATCH_SIZE`).
pub const BATCH_SIZE: &str = "amqp_batchSize";

/// A batch body that cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Bad batched message received: {reason} at offset {offset}")]
pub struct BadBatch {
    /// Byte offset of the length field that could not be honoured.
    pub offset: usize,
    /// What was wrong.
    pub reason: String,
}

/// Concatenates bodies in the `lengthHeader4` format.
pub fn encode<B: AsRef<[u8]>>(bodies: &[B]) -> Vec<u8> {
    let size = bodies.iter().map(|b| 4 + b.as_ref().len()).sum();
    let mut out = Vec::with_capacity(size);
    for b in bodies {
        let b = b.as_ref();
        let len = i32::try_from(b.len()).unwrap_or(i32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// Splits a `lengthHeader4` body into its messages (zero-copy slices of `body`). A negative
/// length, a length past the end or a truncated length field is a [`BadBatch`]; an empty body
/// holds no message (as in Spring).
pub fn decode(body: &Bytes) -> Result<Vec<Bytes>, BadBatch> {
    let mut parts = Vec::new();
    let mut pos = 0usize;
    while pos < body.len() {
        let Some(header) = body.get(pos..pos + 4) else {
            return Err(BadBatch {
                offset: pos,
                reason: format!(
                    "insufficient batch data ({} bytes left, a 4-byte length expected)",
                    body.len() - pos
                ),
            });
        };
        let len = i32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let start = pos + 4;
        let remaining = body.len() - start;
        let len = match usize::try_from(len) {
            Ok(l) if l <= remaining => l,
            Ok(l) => {
                return Err(BadBatch {
                    offset: pos,
                    reason: format!(
                        "insufficient batch data (length {l}, {remaining} bytes remaining)"
                    ),
                });
            }
            Err(_) => {
                return Err(BadBatch {
                    offset: pos,
                    reason: format!("negative length {len}"),
                });
            }
        };
        parts.push(body.slice(start..start + len));
        pos = start + len;
    }
    Ok(parts)
}

/// Per-routing-key accumulation following `SimpleBatchingStrategy.addToBatch`: the current
/// batch is released first when the next message would overflow the buffer limit, and released
/// after adding when it reaches `batch_size` messages or the buffer limit.
#[derive(Debug)]
pub(crate) struct Accumulator<T> {
    batch_size: usize,
    buffer_limit: usize,
    items: Vec<T>,
    size: usize,
}

impl<T> Accumulator<T> {
    pub(crate) fn new(batch_size: u32, buffer_limit: u32) -> Self {
        Accumulator {
            batch_size: (batch_size as usize).max(1),
            buffer_limit: buffer_limit as usize,
            items: Vec::new(),
            size: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether an item of `len` body bytes would overflow the buffer of a non-empty batch
    /// (which is then released before the item is added).
    pub(crate) fn overflows(&self, len: usize) -> bool {
        !self.items.is_empty() && self.size + 4 + len > self.buffer_limit
    }

    /// Adds an item of `len` body bytes, without releasing anything.
    pub(crate) fn push(&mut self, item: T, len: usize) {
        self.size += 4 + len;
        self.items.push(item);
    }

    /// Whether the batch is to be released now: `batch_size` items or the buffer limit.
    pub(crate) fn is_full(&self) -> bool {
        self.items.len() >= self.batch_size || self.size >= self.buffer_limit
    }

    /// Adds an item of `len` body bytes; returns up to two batches to send, in order.
    #[cfg(test)]
    pub(crate) fn add(&mut self, item: T, len: usize) -> Vec<Vec<T>> {
        let mut out = Vec::new();
        if self.overflows(len) {
            out.push(self.take());
        }
        self.push(item, len);
        if self.is_full() {
            out.push(self.take());
        }
        out
    }

    /// Releases what is pending.
    pub(crate) fn take(&mut self) -> Vec<T> {
        self.size = 0;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spring_wire_format() {
        assert_eq!(encode(&[b"foo", b"bar"]), b"\0\0\0\x03foo\0\0\0\x03bar");
        let parts = decode(&Bytes::from_static(b"\0\0\0\x03foo\0\0\0\x03bar")).expect("decode");
        assert_eq!(
            parts,
            vec![Bytes::from_static(b"foo"), Bytes::from_static(b"bar")]
        );
        assert!(decode(&Bytes::new()).expect("empty").is_empty());
        assert_eq!(
            decode(&Bytes::from_static(b"\0\0\0\0")).expect("one empty"),
            vec![Bytes::new()]
        );
    }

    #[test]
    fn malformed_batches_are_errors() {
        let e = decode(&Bytes::from_static(b"\xff\xff\xff\xfeabc")).expect_err("negative");
        assert!(
            e.to_string().starts_with("Bad batched message received"),
            "{e}"
        );
        assert!(e.to_string().contains("negative length -2"), "{e}");
        let e = decode(&Bytes::from_static(b"\0\0\0\x03foo\0\0\0\x09bar")).expect_err("past end");
        assert_eq!(e.offset, 7);
        assert!(e.to_string().contains("insufficient batch data"), "{e}");
        let e = decode(&Bytes::from_static(b"\0\0\0\x01x\0\0")).expect_err("truncated length");
        assert_eq!(e.offset, 5);
    }

    #[test]
    fn accumulator_follows_simple_batching_strategy() {
        let mut a = Accumulator::new(3, 10_000);
        assert!(a.add(1, 3).is_empty());
        assert!(a.add(2, 3).is_empty());
        assert_eq!(a.add(3, 3), vec![vec![1, 2, 3]]);
        assert!(a.is_empty());
        // buffer limit 20: 4+8 = 12, next 12 would overflow -> release first
        let mut a = Accumulator::new(100, 20);
        assert!(a.add("a", 8).is_empty());
        assert_eq!(a.add("b", 8), vec![vec!["a"]]);
        assert_eq!(a.take(), vec!["b"]);
        // a single message at or above the limit goes out alone at once
        let mut a = Accumulator::new(100, 20);
        assert!(a.add("a", 2).is_empty());
        assert_eq!(a.add("big", 30), vec![vec!["a"], vec!["big"]]);
        assert!(a.is_empty());
    }

    proptest! {
        #[test]
        fn decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&Bytes::from(body));
        }

        #[test]
        fn encode_decode_round_trip(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let encoded = Bytes::from(encode(&parts));
            let decoded = decode(&encoded).expect("round trip");
            let decoded: Vec<Vec<u8>> = decoded.iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(decoded, parts);
        }
    }
}
