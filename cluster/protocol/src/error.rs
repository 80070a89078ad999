//! Errors of the decoder. A decode error is data about bad input, never a panic: it names
//! the byte offset (in the stream when the decoder knows it, else in the frame) so that a
//! person debugging a capture can find the faulty byte.

use thiserror::Error;

/// Why some bytes could not be decoded; `offset` is where the problem was seen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("at byte {offset}: {kind}")]
pub struct DecodeError {
    pub offset: u64,
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    pub fn new(offset: u64, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { offset, kind }
    }

    /// The same error, with its offset moved by `base` (frame offset to stream offset).
    pub fn shifted(mut self, base: u64) -> DecodeError {
        self.offset += base;
        self
    }
}

/// The kinds of bad input. Each one closes the connection it came from.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeErrorKind {
    #[error("the peer does not speak NEO (bad handshake)")]
    NotNeo,
    #[error("protocol version mismatch (peer sent version byte {0:#04x}, we speak 5)")]
    VersionMismatch(u8),
    #[error("input ends in the middle of a msgpack object")]
    UnexpectedEnd,
    #[error("byte {0:#04x} is not a valid msgpack marker")]
    InvalidMarker(u8),
    #[error("expected {expected}, found msgpack marker {found:#04x}")]
    TypeMismatch { expected: &'static str, found: u8 },
    #[error("integer {value} does not fit {expected}")]
    IntegerOutOfRange { value: i128, expected: &'static str },
    #[error("expected a bin of {expected} bytes, found {found}")]
    BinLength { expected: usize, found: usize },
    #[error("msgpack str is not valid UTF-8")]
    InvalidUtf8,
    #[error("unknown packet code {0:#06x}")]
    UnknownPacketCode(u64),
    #[error("unknown msgpack ext type {0}")]
    UnknownExtType(i8),
    #[error("ext type {ext} has no member {value}")]
    UnknownEnumValue { ext: i8, value: i128 },
    #[error("{packet} takes {expected} arguments, got {found}")]
    ArgumentCount {
        packet: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("expected an array of {expected} items, found {found}")]
    TupleLength { expected: usize, found: usize },
    #[error("a packet must be the array [msg_id, code, args]")]
    BadEnvelope,
    #[error("values nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("packet of at least {size} bytes is over the limit of {max} bytes")]
    PacketTooLarge { size: u64, max: u64 },
    #[error("{0} bytes left after the packet")]
    TrailingBytes(usize),
}
