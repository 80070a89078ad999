//! NEO wire protocol, version 5, byte-compatible with NEO/py (`neo/lib/protocol.py` and
//! `neo/lib/connection.py` framing): typed packets with NEO/py's names, ids (TID, OID, NID),
//! the five ext enums, addresses, partition-table cells, error codes, the handshake, and an
//! incremental decoder and encoder over a hand-written msgpack layer.
//!
//! This crate is pure: it does no I/O, spawns nothing, reads no clock, and must not depend on
//! tokio or on any crate of the cluster. Connections live in `neo-net`; node logic in the
//! node crates. Bad input is data here: every read is checked, and decoding never panics.
//!
//! Entry points: [`Decoder`] (bytes in, [`Message`]s out), [`encode_message`] (the reverse),
//! [`HANDSHAKE`], and the [`Packet`] enum with one struct per packet kind.

pub mod codec;
pub mod error;
#[cfg(feature = "json")]
pub mod json;
pub mod msgpack;
pub mod packets;
pub mod types;

pub use bytes::Bytes;
pub use codec::{
    check_handshake, decode_message, encode_message, Decoder, Frame, HandshakeCheck, HandshakeMode,
    Message, HANDSHAKE, MAX_PACKET_SIZE, PROTOCOL_VERSION,
};
pub use error::{DecodeError, DecodeErrorKind};
pub use msgpack::Value;
pub use packets::*;
pub use types::*;
