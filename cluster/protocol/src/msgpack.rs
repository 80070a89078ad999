//! The msgpack profile of NEO, written by hand.
//!
//! A general msgpack library would have to be bent to match NEO/py byte for byte: bin and
//! never str for byte strings, the smallest integer width, arrays for every tuple, ext values
//! for enums, maps whose keys are any type and whose order is kept. Writing the few markers
//! ourselves is shorter than that, and lets every read be a checked read over a borrowed
//! frame, so that bin payloads become cheap `Bytes` slices instead of copies.

use bytes::Bytes;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::types::EnumValue;

/// How deep generic values (`any` in the packet tables) may nest. NEO/py sends at most
/// three levels; the limit only exists so that hostile input cannot exhaust the stack.
pub const MAX_VALUE_DEPTH: usize = 32;

// ---------------------------------------------------------------------------------------
// Writing. Every function appends to a Vec and picks the smallest encoding, as NEO/py does.

pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub fn write_bool(out: &mut Vec<u8>, value: bool) {
    out.push(if value { 0xc3 } else { 0xc2 });
}

/// Writes a non-negative integer with the unsigned markers only, like msgpack-python.
pub fn write_uint(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        out.push(value as u8);
    } else if value <= u8::MAX as u64 {
        out.extend_from_slice(&[0xcc, value as u8]);
    } else if value <= u16::MAX as u64 {
        out.push(0xcd);
        out.extend_from_slice(&(value as u16).to_be_bytes());
    } else if value <= u32::MAX as u64 {
        out.push(0xce);
        out.extend_from_slice(&(value as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Writes a signed integer: non-negative values go through `write_uint`, because NEO/py
/// never uses a signed marker for them.
pub fn write_int(out: &mut Vec<u8>, value: i64) {
    if value >= 0 {
        write_uint(out, value as u64);
    } else if value >= -32 {
        out.push(value as u8);
    } else if value >= i8::MIN as i64 {
        out.extend_from_slice(&[0xd0, value as u8]);
    } else if value >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(value as i16).to_be_bytes());
    } else if value >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(value as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Writes a float 64; NEO/py never sends float 32.
pub fn write_f64(out: &mut Vec<u8>, value: f64) {
    out.push(0xcb);
    out.extend_from_slice(&value.to_bits().to_be_bytes());
}

pub fn write_bin(out: &mut Vec<u8>, data: &[u8]) {
    let len = data.len();
    if len <= u8::MAX as usize {
        out.extend_from_slice(&[0xc4, len as u8]);
    } else if len <= u16::MAX as usize {
        out.push(0xc5);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
}

/// Writes a msgpack str; only the handshake uses one.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let len = text.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= u8::MAX as usize {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(text.as_bytes());
}

pub fn write_array_len(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

pub fn write_map_len(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0xde);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Writes an ext value whose payload is the msgpack encoding of `value`: NEO/py's enums are
/// always small, so this is a fixext 1 (`d4 ext value`) in practice.
pub fn write_enum(out: &mut Vec<u8>, ext: i8, value: u8) {
    let mut payload = Vec::with_capacity(2);
    write_uint(&mut payload, value as u64);
    write_ext(out, ext, &payload);
}

pub fn write_ext(out: &mut Vec<u8>, ext: i8, payload: &[u8]) {
    let len = payload.len();
    match len {
        1 => out.push(0xd4),
        2 => out.push(0xd5),
        4 => out.push(0xd6),
        8 => out.push(0xd7),
        16 => out.push(0xd8),
        _ if len <= u8::MAX as usize => out.extend_from_slice(&[0xc7, len as u8]),
        _ if len <= u16::MAX as usize => {
            out.push(0xc8);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xc9);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
    out.push(ext as u8);
    out.extend_from_slice(payload);
}

// ---------------------------------------------------------------------------------------
// Measuring: how long is the msgpack object at the start of a buffer?

/// The result of scanning a buffer for one complete msgpack object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The object is complete and spans this many bytes.
    Complete(usize),
    /// At least this many bytes (counted from the start of the object) are needed.
    Incomplete(usize),
}

/// A resumable scanner for the extent of one msgpack object.
///
/// It keeps only a position and a count of items still to skip, so it needs no recursion
/// (hostile nesting cannot overflow the stack) and, when the object arrives in pieces, it
/// resumes where it stopped instead of rescanning: a packet costs one pass whatever its split.
#[derive(Debug, Clone, Default)]
pub struct Scanner {
    pos: usize,
    /// Items still to skip; 0 means "not started" when `pos` is 0.
    pending: u64,
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner { pos: 0, pending: 1 }
    }

    /// Scans `buf` (which starts with the object and only grows between calls), refusing
    /// objects longer than `max` bytes as early as their headers show it.
    pub fn scan(&mut self, buf: &[u8], max: usize) -> Result<Scan, DecodeError> {
        while self.pending > 0 {
            let Some(&marker) = buf.get(self.pos) else {
                return Ok(Scan::Incomplete(self.pos + 1));
            };
            // (header bytes after the marker, payload bytes, child items)
            let (header, payload, children): (usize, u64, u64) = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
                0x80..=0x8f => (0, 0, 2 * (marker & 0x0f) as u64),
                0x90..=0x9f => (0, 0, (marker & 0x0f) as u64),
                0xa0..=0xbf => (0, (marker & 0x1f) as u64, 0),
                0xc1 => {
                    return Err(DecodeError::new(
                        self.pos as u64,
                        DecodeErrorKind::InvalidMarker(marker),
                    ))
                }
                0xc4 | 0xd9 => (1, self.be(buf, 1)?, 0),
                0xc5 | 0xda => (2, self.be(buf, 2)?, 0),
                0xc6 | 0xdb => (4, self.be(buf, 4)?, 0),
                0xc7 => (2, self.be(buf, 1)?, 0),
                0xc8 => (3, self.be(buf, 2)?, 0),
                0xc9 => (5, self.be(buf, 4)?, 0),
                0xca => (0, 4, 0),
                0xcb => (0, 8, 0),
                0xcc | 0xd0 => (0, 1, 0),
                0xcd | 0xd1 => (0, 2, 0),
                0xce | 0xd2 => (0, 4, 0),
                0xcf | 0xd3 => (0, 8, 0),
                0xd4 => (1, 1, 0),
                0xd5 => (1, 2, 0),
                0xd6 => (1, 4, 0),
                0xd7 => (1, 8, 0),
                0xd8 => (1, 16, 0),
                0xdc => (2, 0, self.be(buf, 2)?),
                0xdd => (4, 0, self.be(buf, 4)?),
                0xde => (2, 0, 2 * self.be(buf, 2)?),
                0xdf => (4, 0, 2 * self.be(buf, 4)?),
            };
            let end = self.pos as u64 + 1 + header as u64 + payload;
            // Every child takes at least one byte, so this bounds the object from below.
            let lower_bound = end + children + (self.pending - 1);
            if lower_bound > max as u64 {
                return Err(DecodeError::new(
                    0,
                    DecodeErrorKind::PacketTooLarge {
                        size: lower_bound,
                        max: max as u64,
                    },
                ));
            }
            if end > buf.len() as u64 {
                return Ok(Scan::Incomplete(end as usize));
            }
            self.pos = end as usize;
            self.pending = self.pending - 1 + children;
        }
        Ok(Scan::Complete(self.pos))
    }

    /// Reads the big-endian length that follows the marker, or reports how much is missing.
    fn be(&self, buf: &[u8], width: usize) -> Result<u64, DecodeError> {
        let start = self.pos + 1;
        // For ext headers the length comes first, then the type byte: only the length is read.
        match buf.get(start..start + width) {
            Some(bytes) => Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64)),
            None => Err(DecodeError::new(
                (start + width) as u64,
                DecodeErrorKind::UnexpectedEnd,
            )),
        }
    }
}

/// Scans a whole buffer at once (no resumption): see [`Scanner::scan`].
pub fn scan_object(buf: &[u8], max: usize) -> Result<Scan, DecodeError> {
    match Scanner::new().scan(buf, max) {
        // A missing length header is just an incomplete object.
        Err(DecodeError {
            offset,
            kind: DecodeErrorKind::UnexpectedEnd,
        }) => Ok(Scan::Incomplete(offset as usize)),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// Reading: checked reads over one complete frame.

/// An integer as msgpack carries it: any width, either sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integer {
    Unsigned(u64),
    Negative(i64),
}

impl Integer {
    pub fn as_i128(self) -> i128 {
        match self {
            Integer::Unsigned(v) => v as i128,
            Integer::Negative(v) => v as i128,
        }
    }
}

/// A cursor over one frame. Every read checks its bounds and returns a [`DecodeError`] with
/// the offset of the faulty byte; bin payloads are returned as slices of the frame.
#[derive(Debug)]
pub struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(frame: &'a Bytes) -> Reader<'a> {
        Reader { frame, pos: 0 }
    }

    /// A cursor starting at `pos` (clamped to the frame).
    pub fn at(frame: &'a Bytes, pos: usize) -> Reader<'a> {
        Reader {
            frame,
            pos: pos.min(frame.len()),
        }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.frame.len() - self.pos
    }

    pub fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.pos as u64, kind)
    }

    fn error_at(&self, pos: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(pos as u64, kind)
    }

    pub fn peek(&self) -> Result<u8, DecodeError> {
        self.frame
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.error(DecodeErrorKind::UnexpectedEnd))
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let frame: &'a Bytes = self.frame;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= frame.len())
            .ok_or_else(|| self.error(DecodeErrorKind::UnexpectedEnd))?;
        let slice = &frame[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    fn be_len(&mut self, width: usize) -> Result<usize, DecodeError> {
        let bytes = self.take(width)?;
        Ok(bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize))
    }

    /// Consumes a nil if one is next; this is how every `?T` is read.
    pub fn read_nil(&mut self) -> Result<bool, DecodeError> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        match self.peek()? {
            0xc2 => {
                self.pos += 1;
                Ok(false)
            }
            0xc3 => {
                self.pos += 1;
                Ok(true)
            }
            found => Err(self.mismatch("a boolean", found)),
        }
    }

    /// Reads an integer of any width (NEO/py accepts any width, so we do too).
    pub fn read_integer(&mut self) -> Result<Integer, DecodeError> {
        let rest = &self.frame[self.pos..];
        match parse_integer(rest) {
            Some((value, used)) => {
                self.pos += used;
                Ok(value)
            }
            None => match rest.first() {
                Some(0xcc..=0xd3) | None => Err(self.error(DecodeErrorKind::UnexpectedEnd)),
                Some(&found) => Err(self.mismatch("an integer", found)),
            },
        }
    }

    /// Reads an integer that must fit `T` (e.g. u32 for a partition number).
    pub fn read_int_as<T: TryFrom<i128>>(
        &mut self,
        expected: &'static str,
    ) -> Result<T, DecodeError> {
        let start = self.pos;
        let value = self.read_integer()?.as_i128();
        T::try_from(value).map_err(|_| {
            self.error_at(
                start,
                DecodeErrorKind::IntegerOutOfRange { value, expected },
            )
        })
    }

    /// Reads a float; float 32 is accepted although NEO/py only sends float 64.
    pub fn read_f64(&mut self) -> Result<f64, DecodeError> {
        match self.peek()? {
            0xcb => {
                self.pos += 1;
                Ok(f64::from_bits(u64::from_be_bytes(self.take_array()?)))
            }
            0xca => {
                self.pos += 1;
                Ok(f32::from_bits(u32::from_be_bytes(self.take_array()?)) as f64)
            }
            found => Err(self.mismatch("a float", found)),
        }
    }

    /// Reads a bin and returns the position of its payload in the frame.
    pub fn read_bin_range(&mut self) -> Result<std::ops::Range<usize>, DecodeError> {
        let len = match self.peek()? {
            0xc4 => {
                self.pos += 1;
                self.be_len(1)?
            }
            0xc5 => {
                self.pos += 1;
                self.be_len(2)?
            }
            0xc6 => {
                self.pos += 1;
                self.be_len(4)?
            }
            found => return Err(self.mismatch("a bin", found)),
        };
        let start = self.pos;
        self.take(len)?;
        Ok(start..self.pos)
    }

    /// Reads a bin as a slice of the frame: no copy of the payload.
    pub fn read_bin(&mut self) -> Result<Bytes, DecodeError> {
        let range = self.read_bin_range()?;
        Ok(self.frame.slice(range))
    }

    /// Reads a bin of exactly `N` bytes (TIDs, OIDs, checksums).
    pub fn read_bin_exact<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let start = self.pos;
        let range = self.read_bin_range()?;
        let bytes = &self.frame[range];
        <[u8; N]>::try_from(bytes).map_err(|_| {
            self.error_at(
                start,
                DecodeErrorKind::BinLength {
                    expected: N,
                    found: bytes.len(),
                },
            )
        })
    }

    pub fn read_str(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        let len = match self.peek()? {
            m @ 0xa0..=0xbf => {
                self.pos += 1;
                (m & 0x1f) as usize
            }
            0xd9 => {
                self.pos += 1;
                self.be_len(1)?
            }
            0xda => {
                self.pos += 1;
                self.be_len(2)?
            }
            0xdb => {
                self.pos += 1;
                self.be_len(4)?
            }
            found => return Err(self.mismatch("a str", found)),
        };
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.error_at(start, DecodeErrorKind::InvalidUtf8))
    }

    pub fn read_array_len(&mut self) -> Result<usize, DecodeError> {
        match self.peek()? {
            m @ 0x90..=0x9f => {
                self.pos += 1;
                Ok((m & 0x0f) as usize)
            }
            0xdc => {
                self.pos += 1;
                self.be_len(2)
            }
            0xdd => {
                self.pos += 1;
                self.be_len(4)
            }
            found => Err(self.mismatch("an array", found)),
        }
    }

    /// Reads an array header that must announce exactly `expected` items (a tuple).
    pub fn read_tuple_len(&mut self, expected: usize) -> Result<(), DecodeError> {
        let start = self.pos;
        let found = self.read_array_len()?;
        if found != expected {
            return Err(self.error_at(start, DecodeErrorKind::TupleLength { expected, found }));
        }
        Ok(())
    }

    pub fn read_map_len(&mut self) -> Result<usize, DecodeError> {
        match self.peek()? {
            m @ 0x80..=0x8f => {
                self.pos += 1;
                Ok((m & 0x0f) as usize)
            }
            0xde => {
                self.pos += 1;
                self.be_len(2)
            }
            0xdf => {
                self.pos += 1;
                self.be_len(4)
            }
            found => Err(self.mismatch("a map", found)),
        }
    }

    /// Reads an ext value of one of NEO's five ext types and checks its member.
    pub fn read_enum(&mut self) -> Result<EnumValue, DecodeError> {
        let start = self.pos;
        let len = match self.peek()? {
            0xd4 => 1,
            0xd5 => 2,
            0xd6 => 4,
            0xd7 => 8,
            0xd8 => 16,
            0xc7..=0xc9 => 0,
            found => return Err(self.mismatch("an ext value", found)),
        };
        let marker = self.byte()?;
        let len = match marker {
            0xc7 => self.be_len(1)?,
            0xc8 => self.be_len(2)?,
            0xc9 => self.be_len(4)?,
            _ => len,
        };
        let ext = self.byte()? as i8;
        let payload = self.take(len)?;
        // The payload is itself msgpack: one integer, whatever its width.
        let value = match parse_integer(payload) {
            Some((value, used)) if used == payload.len() => value.as_i128(),
            _ => {
                return Err(self.error_at(
                    start,
                    DecodeErrorKind::TypeMismatch {
                        expected: "an ext payload holding one integer",
                        found: marker,
                    },
                ))
            }
        };
        EnumValue::from_ext(ext, value).map_err(|kind| self.error_at(start, kind))
    }

    /// Reads any value (the `any` of the packet tables), nesting at most [`MAX_VALUE_DEPTH`].
    pub fn read_value(&mut self) -> Result<Value, DecodeError> {
        self.read_value_at(0)
    }

    fn read_value_at(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_VALUE_DEPTH {
            return Err(self.error(DecodeErrorKind::TooDeep(MAX_VALUE_DEPTH)));
        }
        let marker = self.peek()?;
        Ok(match marker {
            0xc0 => {
                self.pos += 1;
                Value::Nil
            }
            0xc2 | 0xc3 => Value::Bool(self.read_bool()?),
            0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => Value::Int(self.read_integer()?.as_i128()),
            0xca | 0xcb => Value::F64(self.read_f64()?),
            0xc4..=0xc6 => Value::Bin(self.read_bin()?),
            0xa0..=0xbf | 0xd9..=0xdb => Value::Str(self.read_str()?),
            0x90..=0x9f | 0xdc | 0xdd => {
                let len = self.read_array_len()?;
                // Each item takes at least a byte: never reserve more than the input can hold.
                let mut items = Vec::with_capacity(len.min(self.remaining()));
                for _ in 0..len {
                    items.push(self.read_value_at(depth + 1)?);
                }
                Value::Array(items)
            }
            0x80..=0x8f | 0xde | 0xdf => {
                let len = self.read_map_len()?;
                let mut pairs = Vec::with_capacity(len.min(self.remaining() / 2));
                for _ in 0..len {
                    let key = self.read_value_at(depth + 1)?;
                    let value = self.read_value_at(depth + 1)?;
                    pairs.push((key, value));
                }
                Value::Map(pairs)
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => Value::Enum(self.read_enum()?),
            _ => return Err(self.error(DecodeErrorKind::InvalidMarker(marker))),
        })
    }

    fn mismatch(&self, expected: &'static str, found: u8) -> DecodeError {
        self.error(DecodeErrorKind::TypeMismatch { expected, found })
    }
}

/// Parses one msgpack integer at the start of `bytes`: the value and the bytes it used, or
/// None if `bytes` does not start with a complete integer.
fn parse_integer(bytes: &[u8]) -> Option<(Integer, usize)> {
    fn be<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
        bytes.get(1..1 + N)?.try_into().ok()
    }
    let marker = *bytes.first()?;
    Some(match marker {
        0x00..=0x7f => (Integer::Unsigned(marker as u64), 1),
        0xe0..=0xff => (Integer::Negative(marker as i8 as i64), 1),
        0xcc => (Integer::Unsigned(u8::from_be_bytes(be(bytes)?) as u64), 2),
        0xcd => (Integer::Unsigned(u16::from_be_bytes(be(bytes)?) as u64), 3),
        0xce => (Integer::Unsigned(u32::from_be_bytes(be(bytes)?) as u64), 5),
        0xcf => (Integer::Unsigned(u64::from_be_bytes(be(bytes)?)), 9),
        0xd0 => (signed(i8::from_be_bytes(be(bytes)?) as i64), 2),
        0xd1 => (signed(i16::from_be_bytes(be(bytes)?) as i64), 3),
        0xd2 => (signed(i32::from_be_bytes(be(bytes)?) as i64), 5),
        0xd3 => (signed(i64::from_be_bytes(be(bytes)?)), 9),
        _ => return None,
    })
}

fn signed(value: i64) -> Integer {
    if value >= 0 {
        Integer::Unsigned(value as u64)
    } else {
        Integer::Negative(value)
    }
}

// ---------------------------------------------------------------------------------------
// Generic values.

/// Any msgpack value NEO may send: the `any` of the packet tables (the `extra` map of
/// RequestIdentification, NotifyMonitorInformation), and the generic form of packet
/// arguments used by tools. Maps keep their pairs in wire order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    /// Any integer from -2^63 to 2^64-1.
    Int(i128),
    F64(f64),
    Bin(Bytes),
    /// Only the handshake uses str; other packets never carry one.
    Str(String),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Enum(EnumValue),
}

impl Value {
    /// Appends the NEO/py encoding of this value. Integers outside the msgpack range cannot
    /// be built by the decoder; the JSON reader rejects them, and here they are clamped by
    /// `as` casts only if a caller constructs one by hand.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Nil => write_nil(out),
            Value::Bool(b) => write_bool(out, *b),
            Value::Int(v) if *v >= 0 => write_uint(out, *v as u64),
            Value::Int(v) => write_int(out, *v as i64),
            Value::F64(f) => write_f64(out, *f),
            Value::Bin(b) => write_bin(out, b),
            Value::Str(s) => write_str(out, s),
            Value::Array(items) => {
                write_array_len(out, items.len());
                for item in items {
                    item.encode(out);
                }
            }
            Value::Map(pairs) => {
                write_map_len(out, pairs.len());
                for (key, value) in pairs {
                    key.encode(out);
                    value.encode(out);
                }
            }
            Value::Enum(e) => write_enum(out, e.ext(), e.value()),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one complete value that must fill `bytes` exactly.
    pub fn from_bytes(bytes: &Bytes) -> Result<Value, DecodeError> {
        let mut reader = Reader::new(bytes);
        let value = reader.read_value()?;
        if reader.remaining() != 0 {
            return Err(reader.error(DecodeErrorKind::TrailingBytes(reader.remaining())));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_uint(value: u64, hex: &str) {
        let mut out = Vec::new();
        write_uint(&mut out, value);
        assert_eq!(to_hex(&out), hex, "{value}");
        let bytes = Bytes::from(out);
        assert_eq!(
            Reader::new(&bytes).read_integer().unwrap(),
            Integer::Unsigned(value)
        );
    }

    fn check_int(value: i64, hex: &str) {
        let mut out = Vec::new();
        write_int(&mut out, value);
        assert_eq!(to_hex(&out), hex, "{value}");
        let bytes = Bytes::from(out);
        assert_eq!(
            Reader::new(&bytes).read_integer().unwrap().as_i128(),
            value as i128
        );
    }

    fn to_hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn integer_widths_are_the_smallest() {
        check_uint(0, "00");
        check_uint(127, "7f");
        check_uint(128, "cc80");
        check_uint(255, "ccff");
        check_uint(256, "cd0100");
        check_uint(65535, "cdffff");
        check_uint(65536, "ce00010000");
        check_uint(u32::MAX as u64, "ceffffffff");
        check_uint(1 << 32, "cf0000000100000000");
        check_int(5, "05");
        check_int(-1, "ff");
        check_int(-32, "e0");
        check_int(-33, "d0df");
        check_int(-128, "d080");
        check_int(-129, "d1ff7f");
        check_int(-32769, "d2ffff7fff");
        check_int(-268435455, "d2f0000001");
        check_int(i64::MIN, "d38000000000000000");
    }

    #[test]
    fn lengths_switch_width_at_the_limits() {
        let mut out = Vec::new();
        write_bin(&mut out, &[7u8; 256]);
        assert_eq!(&out[..3], &[0xc5, 0x01, 0x00]);
        out.clear();
        write_array_len(&mut out, 16);
        assert_eq!(out, [0xdc, 0x00, 0x10]);
        out.clear();
        write_map_len(&mut out, 15);
        assert_eq!(out, [0x8f]);
    }

    #[test]
    fn scanner_resumes_and_finds_the_end() {
        let value = Value::Array(vec![
            Value::Bin(Bytes::from(vec![1u8; 300])),
            Value::Map(vec![(Value::Int(-5), Value::Array(vec![Value::Nil; 20]))]),
            Value::F64(1.5),
        ]);
        let bytes = value.to_bytes();
        let mut scanner = Scanner::new();
        for cut in 0..bytes.len() {
            match scanner.scan(&bytes[..cut], 1 << 20) {
                Ok(Scan::Incomplete(need)) => assert!(need > cut),
                Err(DecodeError {
                    kind: DecodeErrorKind::UnexpectedEnd,
                    ..
                }) => {}
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        assert_eq!(
            scanner.scan(&bytes, 1 << 20),
            Ok(Scan::Complete(bytes.len()))
        );
        assert_eq!(
            scan_object(&bytes, 1 << 20),
            Ok(Scan::Complete(bytes.len()))
        );
    }

    #[test]
    fn scanner_refuses_oversized_headers_early() {
        // A bin32 announcing 4 GiB, and an array32 announcing 4 G items.
        let err = scan_object(&[0xc6, 0xff, 0xff, 0xff, 0xff], 1 << 20).unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::PacketTooLarge { .. }));
        let err = scan_object(&[0xdd, 0xff, 0xff, 0xff, 0xff], 1 << 20).unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::PacketTooLarge { .. }));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let bytes = Bytes::from(vec![0x91u8; 100_000]);
        assert!(Value::from_bytes(&bytes).is_err());
    }
}
