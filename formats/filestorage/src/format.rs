//! Fixed-size headers of the FileStorage byte layout (see FORMAT.md).
//!
//! Integers are big-endian. A transaction record is a 23-byte header,
//! user, description and extension bytes, data records, and a trailing
//! copy of `tlen`. A data record is a 42-byte header followed by the
//! pickle, or by an 8-byte backpointer when `plen` is 0.

use crate::tid::{Oid, Tid};

pub const MAGIC_FS30: [u8; 4] = *b"FS30";
pub const MAGIC_FS21: [u8; 4] = *b"FS21";
pub const TXN_HEADER_LEN: u64 = 23;
pub const DATA_HEADER_LEN: u64 = 42;
/// Offset of the status byte inside a transaction header.
pub const STATUS_OFFSET: u64 = 16;

/// Which Python string model the pickles follow; the layout is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Magic {
    /// Written by ZODB on Python 3.
    Fs30,
    /// Written by ZODB on Python 2.
    Fs21,
}

impl Magic {
    pub fn from_bytes(bytes: &[u8]) -> Option<Magic> {
        match bytes {
            b"FS30" => Some(Magic::Fs30),
            b"FS21" => Some(Magic::Fs21),
            _ => None,
        }
    }

    pub fn bytes(self) -> [u8; 4] {
        match self {
            Magic::Fs30 => MAGIC_FS30,
            Magic::Fs21 => MAGIC_FS21,
        }
    }
}

/// Transaction status byte values.
pub mod status {
    pub const NORMAL: u8 = b' ';
    pub const PACKED: u8 = b'p';
    pub const CHECKPOINT: u8 = b'c';
    pub const UNDONE: u8 = b'u';
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnHeader {
    pub tid: Tid,
    /// Length of the record without the trailing 8-byte copy of itself.
    pub tlen: u64,
    pub status: u8,
    pub ulen: u16,
    pub dlen: u16,
    pub elen: u16,
}

impl TxnHeader {
    pub fn parse(bytes: &[u8; 23]) -> TxnHeader {
        TxnHeader {
            tid: Tid(be_u64(&bytes[0..8])),
            tlen: be_u64(&bytes[8..16]),
            status: bytes[16],
            ulen: be_u16(&bytes[17..19]),
            dlen: be_u16(&bytes[19..21]),
            elen: be_u16(&bytes[21..23]),
        }
    }

    /// Header plus metadata: where the first data record starts.
    pub fn header_len(&self) -> u64 {
        TXN_HEADER_LEN + self.ulen as u64 + self.dlen as u64 + self.elen as u64
    }

    pub fn encode(&self) -> [u8; 23] {
        let mut out = [0u8; 23];
        out[0..8].copy_from_slice(&self.tid.to_bytes());
        out[8..16].copy_from_slice(&self.tlen.to_be_bytes());
        out[16] = self.status;
        out[17..19].copy_from_slice(&self.ulen.to_be_bytes());
        out[19..21].copy_from_slice(&self.dlen.to_be_bytes());
        out[21..23].copy_from_slice(&self.elen.to_be_bytes());
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub oid: Oid,
    pub tid: Tid,
    /// Position of the previous record of the same oid, or 0.
    pub prev: u64,
    /// Position of the enclosing transaction header.
    pub tloc: u64,
    pub vlen: u16,
    /// Pickle length; 0 means an 8-byte backpointer follows.
    pub plen: u64,
}

impl DataHeader {
    pub fn parse(bytes: &[u8; 42]) -> DataHeader {
        DataHeader {
            oid: Oid(be_u64(&bytes[0..8])),
            tid: Tid(be_u64(&bytes[8..16])),
            prev: be_u64(&bytes[16..24]),
            tloc: be_u64(&bytes[24..32]),
            vlen: be_u16(&bytes[32..34]),
            plen: be_u64(&bytes[34..42]),
        }
    }

    /// Whole record length, as fstest computes it (legacy version records
    /// carry 16 more bytes plus the version name).
    pub fn record_len(&self) -> u64 {
        let body = if self.plen == 0 { 8 } else { self.plen };
        let version = if self.vlen > 0 {
            16 + self.vlen as u64
        } else {
            0
        };
        DATA_HEADER_LEN.saturating_add(body).saturating_add(version)
    }

    pub fn encode(&self) -> [u8; 42] {
        let mut out = [0u8; 42];
        out[0..8].copy_from_slice(&self.oid.to_bytes());
        out[8..16].copy_from_slice(&self.tid.to_bytes());
        out[16..24].copy_from_slice(&self.prev.to_be_bytes());
        out[24..32].copy_from_slice(&self.tloc.to_be_bytes());
        out[32..34].copy_from_slice(&self.vlen.to_be_bytes());
        out[34..42].copy_from_slice(&self.plen.to_be_bytes());
        out
    }
}

pub fn be_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(raw)
}

pub fn be_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}
