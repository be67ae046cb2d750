//! Body compression as Spring AMQP's `GZipPostProcessor` writes it and its
//! `DelegatingDecompressingPostProcessor` reads it (spec §7), with a cap on the inflated size so
//! a compression bomb is an error rather than an out-of-memory.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use flate2::write::GzEncoder;

/// Header telling Spring consumers to decompress (`MessageProperties.SPRING_AUTO_DECOMPRESS`).
pub const SPRING_AUTO_DECOMPRESS: &str = "springAutoDecompress";
/// Delimiter between the compression and the original encoding (`encodingDelimiter`).
const ENCODING_DELIMITER: &str = ", ";

/// A body that could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Failed to decompress a message with content-encoding `{encoding}`: {reason}")]
pub struct DecompressError {
    /// The compression (`gzip`, `zip`, `deflate`).
    pub encoding: String,
    /// What went wrong.
    pub reason: String,
}

/// Gzips `body` at `level` (0-9; out-of-range levels are clamped).
pub fn gzip(body: &[u8], level: u32) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(body.len() / 2 + 32),
        Compression::new(level.min(9)),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// The content encoding of a gzipped message: `gzip`, or `gzip, <existing>` when the message
/// had one.
pub fn gzip_encoding(existing: Option<&str>) -> String {
    match existing.filter(|e| !e.trim().is_empty()) {
        Some(e) => format!("gzip{ENCODING_DELIMITER}{e}"),
        None => "gzip".to_owned(),
    }
}

/// The compression named by a content encoding (the text before the first `:` or else `,`),
/// when it is one the consumer decompresses.
pub fn compression_of(content_encoding: &str) -> Option<&'static str> {
    let delim = content_encoding
        .find(':')
        .or_else(|| content_encoding.find(','));
    let head = match delim {
        Some(i) if i > 0 => &content_encoding[..i],
        _ => content_encoding,
    };
    match head {
        "gzip" => Some("gzip"),
        "zip" => Some("zip"),
        "deflate" => Some("deflate"),
        _ => None,
    }
}

/// The content encoding left after removing the compression: the trimmed text after the
/// delimiter, or none.
pub fn remaining_encoding(content_encoding: &str) -> Option<String> {
    let delim = content_encoding
        .find(':')
        .or_else(|| content_encoding.find(','))?;
    let rest = content_encoding[delim + 1..].trim();
    Some(rest.to_owned())
}

/// Inflates `body` compressed as `compression` (`gzip`, `zip` or `deflate`), refusing to produce
/// more than `limit` bytes.
pub fn decompress(body: &[u8], compression: &str, limit: u64) -> Result<Vec<u8>, DecompressError> {
    let err = |reason: String| DecompressError {
        encoding: compression.to_owned(),
        reason,
    };
    let reader: Box<dyn Read + '_> = match compression {
        "gzip" => Box::new(MultiGzDecoder::new(body)),
        "deflate" => Box::new(ZlibDecoder::new(body)),
        "zip" => zip_entry(body).map_err(err)?,
        other => return Err(err(format!("unsupported compression `{other}`"))),
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(1 << 20));
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| err(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(err(format!(
            "the decompressed body exceeds the limit of {limit} bytes \
             (spring.cloud.stream.rabbit.binder.max-decompressed-size); the message may be a compression bomb"
        )));
    }
    Ok(out)
}

/// The first entry of a zip archive (Java's `ZipOutputStream` with one entry, as
/// `ZipPostProcessor` writes): stored or deflated, read from its local file header.
fn zip_entry(body: &[u8]) -> Result<Box<dyn Read + '_>, String> {
    let u16_at = |i: usize| -> Result<usize, String> {
        body.get(i..i + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            .ok_or_else(|| "truncated zip header".to_owned())
    };
    let u32_at = |i: usize| -> Result<usize, String> {
        body.get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| "truncated zip header".to_owned())
    };
    if body.get(..4) != Some(&[0x50, 0x4b, 0x03, 0x04][..]) {
        return Err("not a zip archive (no local file header)".to_owned());
    }
    let method = u16_at(8)?;
    let compressed = u32_at(18)?;
    let start = 30 + u16_at(26)? + u16_at(28)?;
    let data = body
        .get(start..)
        .ok_or_else(|| "truncated zip entry".to_owned())?;
    match method {
        8 => Ok(Box::new(DeflateDecoder::new(data))),
        0 => data
            .get(..compressed)
            .map(|d| Box::new(d) as Box<dyn Read + '_>)
            .ok_or_else(|| "truncated stored zip entry".to_owned()),
        m => Err(format!("unsupported zip compression method {m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use flate2::write::{DeflateEncoder, ZlibEncoder};
    use proptest::prelude::*;

    #[test]
    fn gzip_round_trip_and_plain_decoder() {
        let body = b"hello hello hello hello".repeat(10);
        let z = gzip(&body, 1);
        let mut plain = Vec::new();
        GzDecoder::new(&z[..])
            .read_to_end(&mut plain)
            .expect("plain gzip decoder");
        assert_eq!(plain, body);
        assert_eq!(decompress(&z, "gzip", 1 << 20).expect("inflate"), body);
    }

    #[test]
    fn encodings() {
        assert_eq!(gzip_encoding(None), "gzip");
        assert_eq!(gzip_encoding(Some("")), "gzip");
        assert_eq!(gzip_encoding(Some("utf-8")), "gzip, utf-8");
        assert_eq!(compression_of("gzip"), Some("gzip"));
        assert_eq!(compression_of("gzip, utf-8"), Some("gzip"));
        assert_eq!(compression_of("zip:utf-8"), Some("zip"));
        assert_eq!(compression_of("deflate"), Some("deflate"));
        assert_eq!(compression_of("utf-8"), None);
        assert_eq!(compression_of("gzipx"), None);
        assert_eq!(remaining_encoding("gzip"), None);
        assert_eq!(remaining_encoding("gzip, utf-8").as_deref(), Some("utf-8"));
        assert_eq!(remaining_encoding("gzip:utf-8").as_deref(), Some("utf-8"));
    }

    #[test]
    fn deflate_and_zip() {
        let body = b"abcabcabc".to_vec();
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&body).expect("write");
        let z = z.finish().expect("zlib");
        assert_eq!(decompress(&z, "deflate", 100).expect("deflate"), body);
        // A one-entry zip as java.util.zip.ZipOutputStream writes it (data descriptor, sizes 0).
        let mut raw = DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(&body).expect("write");
        let raw = raw.finish().expect("deflate");
        let mut zip = vec![0x50, 0x4b, 0x03, 0x04, 20, 0, 8, 0, 8, 0, 0, 0, 0, 0];
        zip.extend_from_slice(&[0; 12]); // crc, sizes (in the data descriptor)
        zip.extend_from_slice(&4u16.to_le_bytes()); // name length
        zip.extend_from_slice(&0u16.to_le_bytes()); // extra length
        zip.extend_from_slice(b"amqp");
        zip.extend_from_slice(&raw);
        zip.extend_from_slice(&[0x50, 0x4b, 0x07, 0x08]);
        assert_eq!(decompress(&zip, "zip", 100).expect("zip"), body);
        assert!(decompress(b"PK\x03", "zip", 100).is_err());
    }

    #[test]
    fn bombs_are_refused() {
        let body = vec![0u8; 1 << 20];
        let z = gzip(&body, 9);
        assert!(z.len() < 4096, "compresses well: {}", z.len());
        let e = decompress(&z, "gzip", 64 * 1024).expect_err("bomb");
        assert!(
            e.to_string().contains("exceeds the limit of 65536 bytes"),
            "{e}"
        );
        assert_eq!(
            decompress(&z, "gzip", 1 << 20).expect("at the limit").len(),
            1 << 20
        );
        assert!(decompress(b"not gzip", "gzip", 100).is_err());
    }

    proptest! {
        #[test]
        fn decompress_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), which in 0usize..3) {
            let c = ["gzip", "zip", "deflate"][which];
            let _ = decompress(&body, c, 4096);
        }

        #[test]
        fn gzip_round_trip(body in proptest::collection::vec(any::<u8>(), 0..2048), level in 0u32..10) {
            let z = gzip(&body, level);
            prop_assert_eq!(decompress(&z, "gzip", 4096).expect("round trip"), body);
        }
    }
}
