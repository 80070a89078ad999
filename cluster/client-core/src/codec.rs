//! Object data as it travels (cluster.md 5.3): zlib compression kept only when strictly
//! smaller, and the SHA-1 checksum of the bytes sent, verified again on load.

use std::io::{Read, Write};

use neo_protocol::{Bytes, Checksum, ZERO_HASH};
use sha1::{Digest, Sha1};

/// Compression code 0: data sent as is.
pub const RAW: u8 = 0;
/// Compression code 1: zlib.
pub const ZLIB: u8 = 1;

/// Data ready for `AskStoreObject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub compression: u8,
    pub checksum: Checksum,
    pub data: Bytes,
}

/// Why stored data could not be turned back into an object's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("wrong checksum")]
    WrongChecksum,
    #[error("unknown compression {0}")]
    UnknownCompression(u8),
    #[error("corrupted zlib data")]
    BadZlib,
}

/// SHA-1 of the bytes as sent.
pub fn checksum(data: &[u8]) -> Checksum {
    Sha1::digest(data).into()
}

/// Compresses `data` with zlib at `level` (1..=9) when `compress` is set and the result is
/// strictly smaller; computes the checksum of what is sent.
pub fn encode(data: &Bytes, compress: bool, level: u32) -> Encoded {
    if compress && !data.is_empty() {
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level.min(9)));
        // Writing into a Vec cannot fail.
        if encoder.write_all(data).is_ok() {
            if let Ok(compressed) = encoder.finish() {
                if compressed.len() < data.len() {
                    return Encoded {
                        compression: ZLIB,
                        checksum: checksum(&compressed),
                        data: Bytes::from(compressed),
                    };
                }
            }
        }
    }
    Encoded {
        compression: RAW,
        checksum: checksum(data),
        data: data.clone(),
    }
}

/// The encoding of "no data" (deletion, creation undone).
pub fn no_data() -> Encoded {
    Encoded {
        compression: RAW,
        checksum: ZERO_HASH,
        data: Bytes::new(),
    }
}

/// Checks the checksum and decompresses.
pub fn decode(
    compression: u8,
    checksum_sent: &Checksum,
    data: &Bytes,
) -> Result<Bytes, CodecError> {
    if checksum(data) != *checksum_sent {
        return Err(CodecError::WrongChecksum);
    }
    decompress(compression, data)
}

/// Decompresses without checking (the `ignore_wrong_checksum` path).
pub fn decompress(compression: u8, data: &Bytes) -> Result<Bytes, CodecError> {
    match compression {
        RAW => Ok(data.clone()),
        ZLIB => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&data[..])
                .read_to_end(&mut out)
                .map_err(|_| CodecError::BadZlib)?;
            Ok(Bytes::from(out))
        }
        other => Err(CodecError::UnknownCompression(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_only_when_smaller() {
        let text = Bytes::from(vec![b'a'; 1000]);
        let encoded = encode(&text, true, 6);
        assert_eq!(encoded.compression, ZLIB);
        assert!(encoded.data.len() < 1000);
        assert_eq!(
            decode(encoded.compression, &encoded.checksum, &encoded.data),
            Ok(text.clone())
        );
        let tiny = Bytes::from_static(b"xy");
        let encoded = encode(&tiny, true, 6);
        assert_eq!(encoded.compression, RAW);
        assert_eq!(encoded.data, tiny);
        let plain = encode(&text, false, 6);
        assert_eq!(plain.compression, RAW);
        assert_eq!(
            decode(RAW, &plain.checksum, &Bytes::from_static(b"other")),
            Err(CodecError::WrongChecksum)
        );
        assert_eq!(
            decode(7, &checksum(b"z"), &Bytes::from_static(b"z")),
            Err(CodecError::UnknownCompression(7))
        );
    }
}
