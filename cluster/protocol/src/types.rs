//! The value types carried by packets: ids (TID, OID, NID), the five ext enums, addresses,
//! partition-table cells, node information, and the [`Wire`] trait that encodes and decodes
//! each of them exactly as NEO/py does.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::msgpack::{self, Reader, Value};

/// A value that has one wire form in the packet tables. `decode` is strict about types
/// (a TID must be an 8-byte bin) and lenient about integer widths, like NEO/py.
pub trait Wire: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

// ---------------------------------------------------------------------------------------
// Ids.

macro_rules! p64_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            pub const ZERO: $name = $name(0);
            /// The highest value SQL back-ends can hold (2^63-1).
            pub const MAX: $name = $name(0x7fff_ffff_ffff_ffff);

            pub fn to_bytes(self) -> [u8; 8] {
                self.0.to_be_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        /// Sent as an 8-byte big-endian bin, never as a msgpack integer.
        impl Wire for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                msgpack::write_bin(out, &self.0.to_be_bytes());
            }
            fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok($name(u64::from_be_bytes(reader.read_bin_exact::<8>()?)))
            }
        }
    };
}

p64_id!(
    /// A transaction id (also TTIDs, serials and pack ids): a ZODB time stamp.
    Tid
);
p64_id!(
    /// An object id; 0 is the ZODB root object.
    Oid
);

/// A node id (UUID in NEO/py): a signed 32-bit integer whose high byte is a namespace per
/// node type; storage ids are positive and persistent, the others negative and temporary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nid(pub i32);

impl Nid {
    /// Builds the `number`-th id of a node type (S1, M1, C1, A1 are number 1).
    pub fn new(node_type: NodeType, number: u32) -> Nid {
        Nid((node_type.namespace() << 24).wrapping_add((number & 0x00ff_ffff) as i32))
    }

    /// The node type whose namespace holds this id, if any.
    pub fn node_type(self) -> Option<NodeType> {
        NodeType::ALL
            .iter()
            .copied()
            .find(|t| t.namespace() == self.0 >> 24)
    }
}

/// The usual display form: the type's initial and the number, e.g. `S1`, `M2`.
impl fmt::Display for Nid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node_type() {
            Some(t) => write!(f, "{}{}", t.initial(), self.0 & 0x00ff_ffff),
            None => write!(f, "{:08x}", self.0),
        }
    }
}

impl Wire for Nid {
    fn encode(&self, out: &mut Vec<u8>) {
        msgpack::write_int(out, self.0 as i64);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Nid(reader.read_int_as("a node id (i32)")?))
    }
}

/// A listening address as NEO sends it: the numeric host text in a bin, and the port.
/// The host is kept as the bytes received so that re-encoding is exact.
/// Ordered as (host bytes, port), the order of NEO's election keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub host: Bytes,
    pub port: u16,
}

impl Address {
    /// The host text NEO/py would send for this socket address (no brackets, no scope).
    pub fn from_socket_addr(addr: SocketAddr) -> Address {
        Address {
            host: Bytes::from(addr.ip().to_string()),
            port: addr.port(),
        }
    }

    /// The socket address, if the host is a numeric IPv4 or IPv6 address.
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        let host = std::str::from_utf8(&self.host).ok()?;
        let ip: IpAddr = host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = String::from_utf8_lossy(&self.host);
        if host.contains(':') {
            write!(f, "[{host}]:{}", self.port)
        } else {
            write!(f, "{host}:{}", self.port)
        }
    }
}

impl Wire for Address {
    fn encode(&self, out: &mut Vec<u8>) {
        msgpack::write_array_len(out, 2);
        msgpack::write_bin(out, &self.host);
        msgpack::write_uint(out, self.port as u64);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        reader.read_tuple_len(2)?;
        Ok(Address {
            host: reader.read_bin()?,
            port: reader.read_int_as("a port (u16)")?,
        })
    }
}

/// A SHA-1 digest (object data checksums, replica-check digests).
pub type Checksum = [u8; 20];

/// The checksum meaning "no data".
pub const ZERO_HASH: Checksum = [0; 20];

/// `AskTIDs` with this partition means "all partitions readable on the storage".
pub const INVALID_PARTITION: u32 = 0xffff_ffff;

// ---------------------------------------------------------------------------------------
// Enums: msgpack ext types, the ext code being NEO/py's registration order.

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident = ext $ext:literal as $py:literal {
            $($(#[$vmeta:meta])* $variant:ident = $value:literal $pyname:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)*
        }

        impl $name {
            /// The msgpack ext type code of this enum.
            pub const EXT: i8 = $ext;
            /// The enum's name in NEO/py (and in the JSON form).
            pub const PY_NAME: &'static str = $py;
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn from_value(value: i128) -> Option<$name> {
                match value {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }

            pub fn value(self) -> u8 {
                self as u8
            }

            /// The member's name in NEO/py, e.g. `STORAGE`.
            pub fn py_name(self) -> &'static str {
                match self {
                    $($name::$variant => $pyname,)*
                }
            }

            pub fn from_py_name(name: &str) -> Option<$name> {
                match name {
                    $($pyname => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.py_name())
            }
        }
    };
}

macro_rules! ext_wire {
    ($name:ident, $variant:ident) => {
        impl Wire for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                msgpack::write_enum(out, $name::EXT, self.value());
            }
            fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let start = reader.position();
                match reader.read_enum()? {
                    EnumValue::$variant(v) => Ok(v),
                    other => Err(DecodeError::new(
                        start as u64,
                        DecodeErrorKind::TypeMismatch {
                            expected: concat!("a ", stringify!($name), " ext value"),
                            found: other.ext() as u8,
                        },
                    )),
                }
            }
        }
    };
}

wire_enum! {
    /// State of one replica of one partition on one storage.
    CellState = ext 0 as "CellStates" {
        /// Writable, missing recent transactions, being replicated.
        OutOfDate = 0 "OUT_OF_DATE",
        /// Readable and writable.
        UpToDate = 1 "UP_TO_DATE",
        /// Like up-to-date, but to be dropped once another node has replicated it.
        Feeding = 2 "FEEDING",
        /// A replica check found a mismatch; neither readable nor writable.
        Corrupted = 3 "CORRUPTED",
        /// Only in NotifyPartitionChanges: the cell is removed.
        Discarded = 4 "DISCARDED",
    }
}

wire_enum! {
    /// State of the whole cluster, decided by the primary master.
    ClusterState = ext 1 as "ClusterStates" {
        Recovering = 0 "RECOVERING",
        Verifying = 1 "VERIFYING",
        Running = 2 "RUNNING",
        Stopping = 3 "STOPPING",
        StartingBackup = 4 "STARTING_BACKUP",
        BackingUp = 5 "BACKINGUP",
        StoppingBackup = 6 "STOPPING_BACKUP",
    }
}

wire_enum! {
    /// Codes of the Error packet. Registered as ext 2, but the Error packet carries them as
    /// plain integers.
    ErrorCode = ext 2 as "ErrorCodes" {
        Ack = 0 "ACK",
        Denied = 1 "DENIED",
        NotReady = 2 "NOT_READY",
        OidNotFound = 3 "OID_NOT_FOUND",
        TidNotFound = 4 "TID_NOT_FOUND",
        OidDoesNotExist = 5 "OID_DOES_NOT_EXIST",
        ProtocolError = 6 "PROTOCOL_ERROR",
        ReplicationError = 7 "REPLICATION_ERROR",
        CheckingError = 8 "CHECKING_ERROR",
        BackendNotImplemented = 9 "BACKEND_NOT_IMPLEMENTED",
        NonReadableCell = 10 "NON_READABLE_CELL",
        ReadOnlyAccess = 11 "READ_ONLY_ACCESS",
        IncompleteTransaction = 12 "INCOMPLETE_TRANSACTION",
        UndoPackError = 13 "UNDO_PACK_ERROR",
    }
}

wire_enum! {
    /// State of a node as the primary master sees it.
    NodeState = ext 3 as "NodeStates" {
        /// In a node list: forget this node.
        Unknown = 0 "UNKNOWN",
        Down = 1 "DOWN",
        Running = 2 "RUNNING",
        Pending = 3 "PENDING",
    }
}

wire_enum! {
    NodeType = ext 4 as "NodeTypes" {
        Master = 0 "MASTER",
        Storage = 1 "STORAGE",
        Client = 2 "CLIENT",
        Admin = 3 "ADMIN",
    }
}

impl NodeType {
    /// The high byte of the node ids of this type.
    pub fn namespace(self) -> i32 {
        match self {
            NodeType::Storage => 0x00,
            NodeType::Master => -0x10,
            NodeType::Client => -0x20,
            NodeType::Admin => -0x30,
        }
    }

    pub fn initial(self) -> char {
        match self {
            NodeType::Master => 'M',
            NodeType::Storage => 'S',
            NodeType::Client => 'C',
            NodeType::Admin => 'A',
        }
    }
}

ext_wire!(CellState, CellState);
ext_wire!(ClusterState, ClusterState);
ext_wire!(NodeState, NodeState);
ext_wire!(NodeType, NodeType);

/// In the Error packet the code is a plain integer. NEO/py would also accept the ext form,
/// so the decoder does too; the encoder always writes the integer, as NEO/py does.
impl Wire for ErrorCode {
    fn encode(&self, out: &mut Vec<u8>) {
        msgpack::write_uint(out, self.value() as u64);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = reader.position();
        if matches!(reader.peek()?, 0xc7..=0xc9 | 0xd4..=0xd8) {
            return match reader.read_enum()? {
                EnumValue::ErrorCode(code) => Ok(code),
                other => Err(DecodeError::new(
                    start as u64,
                    DecodeErrorKind::TypeMismatch {
                        expected: "an error code",
                        found: other.ext() as u8,
                    },
                )),
            };
        }
        let value = reader.read_integer()?.as_i128();
        ErrorCode::from_value(value).ok_or_else(|| {
            DecodeError::new(
                start as u64,
                DecodeErrorKind::UnknownEnumValue {
                    ext: ErrorCode::EXT,
                    value,
                },
            )
        })
    }
}

/// A member of any of the five ext enums: what a generic decoder finds in an ext value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnumValue {
    CellState(CellState),
    ClusterState(ClusterState),
    ErrorCode(ErrorCode),
    NodeState(NodeState),
    NodeType(NodeType),
}

impl EnumValue {
    pub fn from_ext(ext: i8, value: i128) -> Result<EnumValue, DecodeErrorKind> {
        let unknown = DecodeErrorKind::UnknownEnumValue { ext, value };
        match ext {
            0 => CellState::from_value(value)
                .map(EnumValue::CellState)
                .ok_or(unknown),
            1 => ClusterState::from_value(value)
                .map(EnumValue::ClusterState)
                .ok_or(unknown),
            2 => ErrorCode::from_value(value)
                .map(EnumValue::ErrorCode)
                .ok_or(unknown),
            3 => NodeState::from_value(value)
                .map(EnumValue::NodeState)
                .ok_or(unknown),
            4 => NodeType::from_value(value)
                .map(EnumValue::NodeType)
                .ok_or(unknown),
            _ => Err(DecodeErrorKind::UnknownExtType(ext)),
        }
    }

    /// Finds a member by its JSON name, e.g. `NodeTypes.STORAGE`.
    pub fn from_qualified_name(name: &str) -> Option<EnumValue> {
        let (enum_name, member) = name.split_once('.')?;
        match enum_name {
            CellState::PY_NAME => CellState::from_py_name(member).map(EnumValue::CellState),
            ClusterState::PY_NAME => {
                ClusterState::from_py_name(member).map(EnumValue::ClusterState)
            }
            ErrorCode::PY_NAME => ErrorCode::from_py_name(member).map(EnumValue::ErrorCode),
            NodeState::PY_NAME => NodeState::from_py_name(member).map(EnumValue::NodeState),
            NodeType::PY_NAME => NodeType::from_py_name(member).map(EnumValue::NodeType),
            _ => None,
        }
    }

    pub fn ext(self) -> i8 {
        match self {
            EnumValue::CellState(_) => CellState::EXT,
            EnumValue::ClusterState(_) => ClusterState::EXT,
            EnumValue::ErrorCode(_) => ErrorCode::EXT,
            EnumValue::NodeState(_) => NodeState::EXT,
            EnumValue::NodeType(_) => NodeType::EXT,
        }
    }

    pub fn value(self) -> u8 {
        match self {
            EnumValue::CellState(v) => v.value(),
            EnumValue::ClusterState(v) => v.value(),
            EnumValue::ErrorCode(v) => v.value(),
            EnumValue::NodeState(v) => v.value(),
            EnumValue::NodeType(v) => v.value(),
        }
    }

    /// The JSON name, e.g. `NodeTypes.STORAGE`.
    pub fn qualified_name(self) -> String {
        let (enum_name, member) = match self {
            EnumValue::CellState(v) => (CellState::PY_NAME, v.py_name()),
            EnumValue::ClusterState(v) => (ClusterState::PY_NAME, v.py_name()),
            EnumValue::ErrorCode(v) => (ErrorCode::PY_NAME, v.py_name()),
            EnumValue::NodeState(v) => (NodeState::PY_NAME, v.py_name()),
            EnumValue::NodeType(v) => (NodeType::PY_NAME, v.py_name()),
        };
        format!("{enum_name}.{member}")
    }
}

// ---------------------------------------------------------------------------------------
// Generic wire forms: scalars, options, lists, tuples, maps.

impl Wire for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        msgpack::write_bool(out, *self);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        reader.read_bool()
    }
}

macro_rules! uint_wire {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                msgpack::write_uint(out, *self as u64);
            }
            fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                reader.read_int_as(concat!("an integer (", stringify!($t), ")"))
            }
        }
    )*};
}
uint_wire!(u8, u16, u32, u64);

impl Wire for f64 {
    fn encode(&self, out: &mut Vec<u8>) {
        msgpack::write_f64(out, *self);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        reader.read_f64()
    }
}

/// Byte strings and UTF-8 text: always bin.
impl Wire for Bytes {
    fn encode(&self, out: &mut Vec<u8>) {
        msgpack::write_bin(out, self);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        reader.read_bin()
    }
}

impl Wire for Checksum {
    fn encode(&self, out: &mut Vec<u8>) {
        msgpack::write_bin(out, self);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        reader.read_bin_exact::<20>()
    }
}

impl Wire for Value {
    fn encode(&self, out: &mut Vec<u8>) {
        Value::encode(self, out);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        reader.read_value()
    }
}

/// `?T`: nil or T.
impl<T: Wire> Wire for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => msgpack::write_nil(out),
            Some(v) => v.encode(out),
        }
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if reader.read_nil()? {
            Ok(None)
        } else {
            T::decode(reader).map(Some)
        }
    }
}

/// `[T]`: an array of any length (lists and sets alike).
impl<T: Wire> Wire for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        msgpack::write_array_len(out, self.len());
        for item in self {
            item.encode(out);
        }
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = reader.read_array_len()?;
        // Each item takes at least one byte: the input bounds the reservation.
        let mut items = Vec::with_capacity(len.min(reader.remaining()));
        for _ in 0..len {
            items.push(T::decode(reader)?);
        }
        Ok(items)
    }
}

macro_rules! tuple_wire {
    ($len:literal: $($name:ident),*) => {
        /// A tuple: an array of exactly this many items.
        impl<$($name: Wire),*> Wire for ($($name,)*) {
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($name,)*) = self;
                msgpack::write_array_len(out, $len);
                $($name.encode(out);)*
            }
            fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                reader.read_tuple_len($len)?;
                Ok(($($name::decode(reader)?,)*))
            }
        }
    };
}
tuple_wire!(2: A, B);
tuple_wire!(3: A, B, C);
tuple_wire!(4: A, B, C, D);
tuple_wire!(5: A, B, C, D, E);

/// `{K:V}`: a msgpack map, pairs kept in wire order (NEO/py uses insertion order and the
/// vectors must re-encode byte for byte).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dict<K, V>(pub Vec<(K, V)>);

impl<K, V> Dict<K, V> {
    pub fn new() -> Dict<K, V> {
        Dict(Vec::new())
    }
}

impl<K: Wire, V: Wire> Wire for Dict<K, V> {
    fn encode(&self, out: &mut Vec<u8>) {
        msgpack::write_map_len(out, self.0.len());
        for (key, value) in &self.0 {
            key.encode(out);
            value.encode(out);
        }
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = reader.read_map_len()?;
        let mut pairs = Vec::with_capacity(len.min(reader.remaining() / 2));
        for _ in 0..len {
            let key = K::decode(reader)?;
            let value = V::decode(reader)?;
            pairs.push((key, value));
        }
        Ok(Dict(pairs))
    }
}

// ---------------------------------------------------------------------------------------
// Structured tuples of the packet tables.

/// Declares a struct sent as a fixed-length array of its fields, in order.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl Wire for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                msgpack::write_array_len(out, <[&str]>::len(&[$(stringify!($field)),*]));
                $(self.$field.encode(out);)*
            }
            fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                reader.read_tuple_len(<[&str]>::len(&[$(stringify!($field)),*]))?;
                Ok($name { $($field: Wire::decode(reader)?,)* })
            }
        }
    };
}

wire_struct! {
    /// One replica of a partition in a partition-table row: `(nid, CellStates)`.
    Cell {
        nid: Nid,
        state: CellState,
    }
}

wire_struct! {
    /// One change in NotifyPartitionChanges: `(partition, nid, CellStates)`;
    /// `Discarded` removes the cell.
    CellChange {
        partition: u32,
        nid: Nid,
        state: CellState,
    }
}

/// One partition's cells; the row index is the partition number.
pub type Row = Vec<Cell>;

wire_struct! {
    /// A node as listed by NotifyNodeInformation and AnswerNodeList.
    NodeInfo {
        node_type: NodeType,
        /// Nil for clients and nodes without a listening address.
        address: Option<Address>,
        /// Nil for a master known only by its address.
        nid: Option<Nid>,
        state: NodeState,
        /// When the primary master identified the node (float seconds); nil for itself.
        id_timestamp: Option<f64>,
    }
}

wire_struct! {
    /// A pack order carried by AskFinishTransaction and AskStoreTransaction.
    PackRequest {
        /// Nil for a full pack; the sorted OIDs for a partial pack.
        oids: Option<Vec<Oid>>,
        pack_tid: Tid,
    }
}

wire_struct! {
    /// A pack order as listed by AnswerPackOrders.
    PackOrder {
        pack_id: Tid,
        /// Nil while not signed.
        approved: Option<bool>,
        partial: bool,
        oids: Option<Vec<Oid>>,
        pack_tid: Tid,
    }
}

wire_struct! {
    /// A pack order stored with a transaction, as replicated by AddTransaction.
    PackInfo {
        approved: Option<bool>,
        partial: bool,
        oids: Option<Vec<Oid>>,
        pack_tid: Tid,
    }
}

wire_struct! {
    /// Object data as stored and sent: compression (0 none, 1 zlib), SHA-1 of the data as
    /// sent, and the data.
    ObjectData {
        compression: u8,
        checksum: Checksum,
        data: Bytes,
    }
}

wire_struct! {
    /// The non-nil answer of AskRelockObject.
    RelockConflict {
        serial: Tid,
        conflict_serial: Tid,
        /// The data moved back to the client, or nil.
        data: Option<ObjectData>,
    }
}

wire_struct! {
    /// What AskObjectUndoSerial answers per OID.
    UndoSerial {
        current_serial: Tid,
        undo_serial: Option<Tid>,
        is_current: bool,
    }
}

wire_struct! {
    /// The `source` of CheckPartition: upstream cluster name (or empty) and the address of
    /// the reference storage (or nil).
    CheckSource {
        upstream_name: Bytes,
        address: Option<Address>,
    }
}
