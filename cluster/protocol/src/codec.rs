//! Framing over one direction of a connection: the handshake, then a stream of packets
//! `[msg_id, code, args]` with no length prefix. The decoder accepts the stream in pieces of
//! any size and returns each packet once its last byte has arrived.

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::msgpack::{self, Reader, Scan, Scanner};
use crate::packets::Packet;

/// `PROTOCOL_VERSION` of NEO/py 1.12.
pub const PROTOCOL_VERSION: u8 = 5;

/// What each end sends first: msgpack `["NEO", 5]`, "NEO" being the protocol's only str.
pub const HANDSHAKE: [u8; 6] = [0x92, 0xa3, b'N', b'E', b'O', PROTOCOL_VERSION];

/// NEO/py's stream decoder holds at most 64 MiB, so no packet may be larger.
pub const MAX_PACKET_SIZE: usize = 0x400_0000;

/// The result of looking at the first bytes of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeCheck {
    /// What arrived so far is a prefix of our handshake: wait for more.
    Incomplete,
    /// The 6 bytes match.
    Ok,
    /// The peer speaks NEO, but another version (its version byte).
    VersionMismatch(u8),
    /// The peer does not speak NEO.
    NotNeo,
}

/// Checks the start of a stream against [`HANDSHAKE`].
pub fn check_handshake(buf: &[u8]) -> HandshakeCheck {
    let n = buf.len().min(HANDSHAKE.len());
    if buf[..n] == HANDSHAKE[..n] {
        if n == HANDSHAKE.len() {
            HandshakeCheck::Ok
        } else {
            HandshakeCheck::Incomplete
        }
    } else if n == HANDSHAKE.len() && buf[..5] == HANDSHAKE[..5] {
        HandshakeCheck::VersionMismatch(buf[5])
    } else {
        HandshakeCheck::NotNeo
    }
}

/// One packet with its message id.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub msg_id: u32,
    pub packet: Packet,
}

/// The bytes of one complete packet, before its arguments are decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Offset of the frame's first byte in the stream (handshake included).
    pub offset: u64,
    pub bytes: Bytes,
}

impl Frame {
    /// Decodes the envelope and typed arguments. Bin arguments borrow the frame's buffer.
    pub fn decode(&self) -> Result<Message, DecodeError> {
        decode_message(&self.bytes).map_err(|e| e.shifted(self.offset))
    }

    /// Decodes only the envelope: message id, packet code, and where the args start.
    pub fn header(&self) -> Result<(u32, u16, usize), DecodeError> {
        decode_header(&self.bytes).map_err(|e| e.shifted(self.offset))
    }
}

/// Decodes one complete packet that fills `bytes` exactly.
pub fn decode_message(bytes: &Bytes) -> Result<Message, DecodeError> {
    let (msg_id, code, args_at) = decode_header(bytes)?;
    let mut reader = Reader::at(bytes, args_at);
    let packet = Packet::decode_args(code, &mut reader)?;
    if reader.remaining() != 0 {
        return Err(reader.error(DecodeErrorKind::TrailingBytes(reader.remaining())));
    }
    Ok(Message { msg_id, packet })
}

fn decode_header(bytes: &Bytes) -> Result<(u32, u16, usize), DecodeError> {
    let mut reader = Reader::new(bytes);
    let envelope = |e: DecodeError| match e.kind {
        DecodeErrorKind::TypeMismatch { .. } | DecodeErrorKind::TupleLength { .. } => {
            DecodeError::new(e.offset, DecodeErrorKind::BadEnvelope)
        }
        _ => e,
    };
    reader.read_tuple_len(3).map_err(envelope)?;
    let msg_id: u32 = reader.read_int_as("a message id (u32)")?;
    let code_at = reader.position();
    let code = reader.read_integer().map_err(envelope)?.as_i128();
    let code = u16::try_from(code)
        .ok()
        .filter(|&c| crate::packets::packet_name(c).is_some())
        .ok_or_else(|| {
            DecodeError::new(
                code_at as u64,
                DecodeErrorKind::UnknownPacketCode(code.clamp(0, u64::MAX as i128) as u64),
            )
        })?;
    Ok((msg_id, code, reader.position()))
}

/// Appends the encoding of one packet, byte-identical to NEO/py's.
pub fn encode_message(out: &mut Vec<u8>, msg_id: u32, packet: &Packet) {
    msgpack::write_array_len(out, 3);
    msgpack::write_uint(out, msg_id as u64);
    msgpack::write_uint(out, packet.code() as u64);
    packet.encode_args(out);
}

/// Whether the decoder should first read the peer's handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeMode {
    Expect,
    Skip,
}

/// Incremental decoder for one direction of a connection.
///
/// Feed it bytes as they come (or read straight into [`Decoder::buffer_mut`]); call
/// [`Decoder::next_frame`] or [`Decoder::next_message`] until they return `Ok(None)`.
/// After an error the stream cannot be resynchronized (there is no length prefix), so the
/// decoder keeps returning that error; the connection must be closed.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    handshake_pending: bool,
    /// Stream offset of `buf[0]`.
    consumed: u64,
    scanner: Scanner,
    /// Do not rescan before the buffer holds this many bytes.
    need: usize,
    max_packet_size: usize,
    failed: Option<DecodeError>,
}

impl Decoder {
    pub fn new(mode: HandshakeMode) -> Decoder {
        Decoder {
            buf: BytesMut::with_capacity(64 * 1024),
            handshake_pending: mode == HandshakeMode::Expect,
            consumed: 0,
            scanner: Scanner::new(),
            need: 1,
            max_packet_size: MAX_PACKET_SIZE,
            failed: None,
        }
    }

    /// Lowers (or raises) the packet size limit; NEO/py's is [`MAX_PACKET_SIZE`].
    pub fn with_max_packet_size(mut self, max: usize) -> Decoder {
        self.max_packet_size = max;
        self
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The receive buffer, to read into directly (e.g. with tokio's `read_buf`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the peer's handshake has been read (always true in `Skip` mode).
    pub fn handshake_done(&self) -> bool {
        !self.handshake_pending
    }

    /// Stream offset of the next byte to be decoded.
    pub fn offset(&self) -> u64 {
        self.consumed
    }

    /// Returns the next complete packet, decoded.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        match self.next_frame()? {
            None => Ok(None),
            Some(frame) => frame.decode().map(Some).map_err(|e| self.fail(e)),
        }
    }

    /// Returns the bytes of the next complete packet, checking only its extent, the
    /// handshake and the size limit.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.handshake_pending {
            match check_handshake(&self.buf) {
                HandshakeCheck::Incomplete => return Ok(None),
                HandshakeCheck::Ok => {
                    let _ = self.buf.split_to(HANDSHAKE.len());
                    self.consumed += HANDSHAKE.len() as u64;
                    self.handshake_pending = false;
                }
                HandshakeCheck::VersionMismatch(version) => {
                    return Err(self.fail(DecodeError::new(
                        self.consumed + 5,
                        DecodeErrorKind::VersionMismatch(version),
                    )))
                }
                HandshakeCheck::NotNeo => {
                    return Err(self.fail(DecodeError::new(self.consumed, DecodeErrorKind::NotNeo)))
                }
            }
        }
        if self.buf.len() < self.need {
            return Ok(None);
        }
        let len = match self.scanner.scan(&self.buf, self.max_packet_size) {
            Ok(Scan::Complete(len)) => len,
            Ok(Scan::Incomplete(need)) => {
                self.need = need;
                return Ok(None);
            }
            // The length header of a bin/array is not all here yet.
            Err(DecodeError {
                offset,
                kind: DecodeErrorKind::UnexpectedEnd,
            }) => {
                self.need = offset as usize;
                return Ok(None);
            }
            Err(err) => {
                let base = self.consumed;
                return Err(self.fail(err.shifted(base)));
            }
        };
        if self.buf.first() != Some(&0x93) {
            // Every packet is a 3-array; anything else is not a packet (checked after the
            // scan so that the error names the right kind for truncated input).
            let offset = self.consumed;
            return Err(self.fail(DecodeError::new(offset, DecodeErrorKind::BadEnvelope)));
        }
        let frame = Frame {
            offset: self.consumed,
            bytes: self.buf.split_to(len).freeze(),
        };
        self.consumed += len as u64;
        self.scanner = Scanner::new();
        self.need = 1;
        Ok(Some(frame))
    }

    /// Whether bytes are buffered that do not form a complete packet (at end of stream,
    /// this means the peer stopped in the middle of one).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    fn fail(&mut self, err: DecodeError) -> DecodeError {
        self.failed = Some(err.clone());
        err
    }
}

/// The fuzzing entry point, shared by the cargo-fuzz target and the stable bounded test:
/// decodes `input` fed in pieces of `chunk` bytes (with a handshake if it starts like one),
/// and checks that each decoded packet re-encodes to bytes that decode to the same packet.
/// Returns whether the whole input was valid. Panics only if the codec breaks an invariant.
pub fn fuzz_decode(input: &[u8], chunk: usize) -> bool {
    let mode = if input.first() == Some(&HANDSHAKE[0]) {
        HandshakeMode::Expect
    } else {
        HandshakeMode::Skip
    };
    let mut decoder = Decoder::new(mode).with_max_packet_size(1 << 20);
    for piece in input.chunks(chunk.max(1)) {
        decoder.feed(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let mut first = Vec::new();
                    encode_message(&mut first, message.msg_id, &message.packet);
                    let again = decode_message(&Bytes::from(first.clone()))
                        .expect("a re-encoded packet decodes");
                    let mut second = Vec::new();
                    encode_message(&mut second, again.msg_id, &again.packet);
                    assert_eq!(first, second, "re-encoding is stable");
                }
                Ok(None) => break,
                Err(_) => return false,
            }
        }
    }
    decoder.buffered() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_checks() {
        assert_eq!(check_handshake(&[]), HandshakeCheck::Incomplete);
        assert_eq!(check_handshake(&HANDSHAKE[..3]), HandshakeCheck::Incomplete);
        assert_eq!(check_handshake(&HANDSHAKE), HandshakeCheck::Ok);
        assert_eq!(
            check_handshake(&[0x92, 0xa3, b'N', b'E', b'O', 4]),
            HandshakeCheck::VersionMismatch(4)
        );
        assert_eq!(check_handshake(b"GET / HTTP/1.0"), HandshakeCheck::NotNeo);
        assert_eq!(check_handshake(&[0x92, 0xa3, b'X']), HandshakeCheck::NotNeo);
    }

    #[test]
    fn wrong_handshake_is_an_error_with_offset() {
        let mut decoder = Decoder::new(HandshakeMode::Expect);
        decoder.feed(&[0x92, 0xa3, b'N', b'E', b'O', 4, 0x93]);
        let err = decoder.next_frame().unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::VersionMismatch(4));
        assert_eq!(err.offset, 5);
        // The decoder stays failed.
        assert_eq!(decoder.next_frame().unwrap_err(), err);
    }

    #[test]
    fn non_packet_object_is_refused() {
        let mut decoder = Decoder::new(HandshakeMode::Skip);
        decoder.feed(&[0x92, 0x01, 0x02]);
        let err = decoder.next_frame().unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::BadEnvelope);
    }

    #[test]
    fn size_limit_applies_before_the_data_arrives() {
        let mut decoder = Decoder::new(HandshakeMode::Skip).with_max_packet_size(1000);
        // AnswerObject-like header then a bin32 of 1 MiB: refused from the header alone.
        decoder.feed(&[
            0x93, 0x00, 0xcd, 0x80, 0x20, 0x97, 0xc6, 0x00, 0x10, 0x00, 0x00,
        ]);
        let err = decoder.next_frame().unwrap_err();
        assert!(
            matches!(err.kind, DecodeErrorKind::PacketTooLarge { .. }),
            "{err}"
        );
    }
}
