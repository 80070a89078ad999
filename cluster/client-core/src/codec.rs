//! Object data as it travels (cluster.md 5.3): zlib compression kept only when strictly
//! smaller, and the SHA-1 checksum of the bytes sent, verified again on load.
//!
//! [`Codec`] keeps one deflate and one inflate state for every object it handles: setting
//! a deflate state up costs far more than compressing a small object.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
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
    Codec::new(compress, level).encode(data)
}

/// Encodes and decodes object data with deflate and inflate states kept from one object to
/// the next.
pub struct Codec {
    compress: bool,
    deflate: Compress,
    inflate: Decompress,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("compress", &self.compress)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// Compresses at zlib `level` (1..=9) when `compress` is set.
    pub fn new(compress: bool, level: u32) -> Codec {
        Codec {
            compress,
            deflate: Compress::new(Compression::new(level.clamp(1, 9)), true),
            inflate: Decompress::new(true),
        }
    }

    /// Compresses `data` when the result is strictly smaller; computes the checksum of
    /// what is sent.
    pub fn encode(&mut self, data: &Bytes) -> Encoded {
        if self.compress && !data.is_empty() {
            self.deflate.reset();
            // Output longer than the input is useless: the stream must end within it.
            let mut compressed = Vec::with_capacity(data.len());
            let status = self
                .deflate
                .compress_vec(data, &mut compressed, FlushCompress::Finish);
            if matches!(status, Ok(Status::StreamEnd)) && compressed.len() < data.len() {
                return Encoded {
                    compression: ZLIB,
                    checksum: checksum(&compressed),
                    data: Bytes::from(compressed),
                };
            }
        }
        Encoded {
            compression: RAW,
            checksum: checksum(data),
            data: data.clone(),
        }
    }

    /// Checks the checksum and decompresses.
    pub fn decode(
        &mut self,
        compression: u8,
        checksum_sent: &Checksum,
        data: &Bytes,
    ) -> Result<Bytes, CodecError> {
        verify(checksum_sent, data)?;
        self.decompress(compression, data)
    }

    /// Decompresses without checking (the `ignore_wrong_checksum` path).
    pub fn decompress(&mut self, compression: u8, data: &Bytes) -> Result<Bytes, CodecError> {
        match compression {
            RAW => Ok(data.clone()),
            ZLIB => self.inflate(data).map(Bytes::from),
            other => Err(CodecError::UnknownCompression(other)),
        }
    }

    fn inflate(&mut self, data: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.inflate.reset(true);
        let mut out = Vec::with_capacity(data.len().saturating_mul(4).max(64));
        loop {
            let consumed =
                usize::try_from(self.inflate.total_in()).map_err(|_| CodecError::BadZlib)?;
            let rest = data.get(consumed..).ok_or(CodecError::BadZlib)?;
            let produced = out.len();
            match self
                .inflate
                .decompress_vec(rest, &mut out, FlushDecompress::None)
            {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {
                    let progress =
                        self.inflate.total_in() as usize != consumed || out.len() != produced;
                    if out.len() == out.capacity() {
                        out.reserve(out.capacity());
                    } else if !progress {
                        // Input ended before the stream did.
                        return Err(CodecError::BadZlib);
                    }
                }
                Err(_) => return Err(CodecError::BadZlib),
            }
        }
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
    verify(checksum_sent, data)?;
    decompress(compression, data)
}

fn verify(checksum_sent: &Checksum, data: &[u8]) -> Result<(), CodecError> {
    if checksum(data) != *checksum_sent {
        return Err(CodecError::WrongChecksum);
    }
    Ok(())
}

/// Decompresses without checking (the `ignore_wrong_checksum` path).
pub fn decompress(compression: u8, data: &Bytes) -> Result<Bytes, CodecError> {
    match compression {
        RAW => Ok(data.clone()),
        ZLIB => Codec::new(false, 6).inflate(data).map(Bytes::from),
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

    #[test]
    fn one_codec_reused_across_objects() {
        let mut codec = Codec::new(true, 6);
        let texts: Vec<Bytes> = (0..50u8)
            .map(|i| Bytes::from(vec![b'a' + i % 26; 300 + 7 * i as usize]))
            .collect();
        for text in &texts {
            let encoded = codec.encode(text);
            assert_eq!(encoded.compression, ZLIB);
            assert!(encoded.data.len() < text.len());
            // Streams from the reused state are plain zlib streams.
            assert_eq!(encoded, encode(text, true, 6));
            assert_eq!(
                codec.decode(encoded.compression, &encoded.checksum, &encoded.data),
                Ok(text.clone())
            );
        }
        // Incompressible data goes raw.
        let mut state = 0x1234_5678_9abc_def1u64;
        let noise: Vec<u8> = (0..200)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let noise = Bytes::from(noise);
        assert_eq!(codec.encode(&noise).compression, RAW);
        // A large object needs the output to grow several times.
        let big = Bytes::from(vec![b'z'; 1 << 20]);
        let encoded = codec.encode(&big);
        assert_eq!(codec.decompress(ZLIB, &encoded.data), Ok(big));
        // Truncated and corrupted streams are errors, never panics.
        let cut = encoded.data.slice(..encoded.data.len() / 2);
        assert_eq!(codec.decompress(ZLIB, &cut), Err(CodecError::BadZlib));
        assert_eq!(
            codec.decompress(ZLIB, &Bytes::from_static(b"not zlib at all")),
            Err(CodecError::BadZlib)
        );
        assert_eq!(decompress(ZLIB, &cut), Err(CodecError::BadZlib));
    }
}
