//! Every packet kind of protocol 5, with NEO/py's names, codes and argument order.
//!
//! One macro invocation lists them all; it generates a struct per kind, the [`Packet`] enum,
//! the code table and the argument codec, so that the codes, kinds and fields live in one
//! place that can be read against the packet tables of the specification.

use bytes::Bytes;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::msgpack::{self, Reader, Value};
use crate::types::*;

/// `RESPONSE_MASK`: a code with this bit is an answer (or Error).
pub const RESPONSE_MASK: u16 = 0x8000;

/// What a packet kind is used for; not marked on the wire, a property of the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// A request whose normal answer has this code.
    Request { answer: u16 },
    /// A request answered by the generic Error packet (ACK on success).
    RequestAnsweredByError,
    /// A one-way packet.
    Notification,
    /// An answer to a request (Error included).
    Answer,
}

impl PacketKind {
    /// Whether the sender of this kind waits for an answer.
    pub fn expects_answer(self) -> bool {
        matches!(
            self,
            PacketKind::Request { .. } | PacketKind::RequestAnsweredByError
        )
    }
}

macro_rules! packet_kind {
    (request($answer:ident)) => {
        PacketKind::Request {
            answer: $answer::CODE,
        }
    };
    (request_error) => {
        PacketKind::RequestAnsweredByError
    };
    (notification) => {
        PacketKind::Notification
    };
    (answer) => {
        PacketKind::Answer
    };
}

macro_rules! packets {
    ($(
        $(#[$meta:meta])*
        $code:literal $name:ident: $kind:ident $(($answer:ident))? {
            $($(#[$fmeta:meta])* $field:ident: $ty:ty,)*
        }
    )*) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, PartialEq)]
            pub struct $name {
                $($(#[$fmeta])* pub $field: $ty,)*
            }

            impl $name {
                pub const CODE: u16 = $code;
                pub const NAME: &'static str = stringify!($name);
                pub const KIND: PacketKind = packet_kind!($kind $(($answer))?);
            }

            impl From<$name> for Packet {
                fn from(packet: $name) -> Packet {
                    Packet::$name(packet)
                }
            }
        )*

        /// A packet of any kind, with its typed arguments.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Packet {
            $($name($name),)*
        }

        /// Every packet kind: (code, name, kind), in definition order.
        pub const PACKET_TABLE: &[(u16, &str, PacketKind)] = &[
            $(($code, stringify!($name), $name::KIND),)*
        ];

        impl Packet {
            pub fn code(&self) -> u16 {
                match self {
                    $(Packet::$name(_) => $code,)*
                }
            }

            pub fn name(&self) -> &'static str {
                match self {
                    $(Packet::$name(_) => stringify!($name),)*
                }
            }

            pub fn kind(&self) -> PacketKind {
                match self {
                    $(Packet::$name(_) => $name::KIND,)*
                }
            }

            /// Appends the argument array.
            pub fn encode_args(&self, out: &mut Vec<u8>) {
                match self {
                    $(
                        #[allow(unused_variables)]
                        Packet::$name(packet) => {
                            msgpack::write_array_len(out, <[&str]>::len(&[$(stringify!($field)),*]));
                            $(Wire::encode(&packet.$field, out);)*
                        }
                    )*
                }
            }

            /// Reads the argument array of the packet kind `code`.
            pub fn decode_args(code: u16, reader: &mut Reader<'_>) -> Result<Packet, DecodeError> {
                match code {
                    $(
                        $code => {
                            let start = reader.position();
                            let found = reader.read_array_len()?;
                            let expected = <[&str]>::len(&[$(stringify!($field)),*]);
                            if found != expected {
                                return Err(DecodeError::new(
                                    start as u64,
                                    DecodeErrorKind::ArgumentCount {
                                        packet: stringify!($name),
                                        expected,
                                        found,
                                    },
                                ));
                            }
                            Ok(Packet::$name($name { $($field: Wire::decode(reader)?,)* }))
                        }
                    )*
                    _ => Err(reader.error(DecodeErrorKind::UnknownPacketCode(code as u64))),
                }
            }
        }
    };
}

/// The kind (request, answer, notification) of a packet code, if the code exists.
pub fn packet_kind(code: u16) -> Option<PacketKind> {
    PACKET_TABLE.iter().find(|e| e.0 == code).map(|e| e.2)
}

/// The NEO/py name of a packet code, if the code exists.
pub fn packet_name(code: u16) -> Option<&'static str> {
    PACKET_TABLE.iter().find(|e| e.0 == code).map(|e| e.1)
}

/// The code of a packet name, if the name exists.
pub fn packet_code(name: &str) -> Option<u16> {
    PACKET_TABLE.iter().find(|e| e.1 == name).map(|e| e.0)
}

impl Packet {
    /// The arguments in their generic form (what the JSON form shows). This fails only for
    /// a packet built by hand with an `any` value nested deeper than the decoder accepts.
    pub fn args_value(&self) -> Result<Vec<Value>, DecodeError> {
        let mut out = Vec::new();
        self.encode_args(&mut out);
        match Value::from_bytes(&Bytes::from(out))? {
            Value::Array(items) => Ok(items),
            // encode_args always writes an array header first.
            _ => Err(DecodeError::new(0, DecodeErrorKind::BadEnvelope)),
        }
    }

    /// Builds a typed packet from generic arguments, checking their types.
    pub fn from_args_value(code: u16, args: &[Value]) -> Result<Packet, DecodeError> {
        let bytes = Bytes::from(Value::Array(args.to_vec()).to_bytes());
        let mut reader = Reader::new(&bytes);
        let packet = Packet::decode_args(code, &mut reader)?;
        if reader.remaining() != 0 {
            return Err(reader.error(DecodeErrorKind::TrailingBytes(reader.remaining())));
        }
        Ok(packet)
    }

    /// Builds an Error packet.
    pub fn error(code: ErrorCode, message: impl Into<Bytes>) -> Packet {
        Packet::Error(Error {
            code,
            message: message.into(),
        })
    }
}

packets! {
    // --- Generic and identification -------------------------------------------------

    /// any → any: answers any request; for the requests answered by Error, ACK is success.
    0x8000 Error: answer {
        code: ErrorCode,
        /// UTF-8 text, may be empty.
        message: Bytes,
    }

    /// any → any, first packet of a connection from the side that connected.
    0x0001 RequestIdentification: request(AcceptIdentification) {
        node_type: NodeType,
        nid: Option<Nid>,
        /// The sender's listening address.
        address: Option<Address>,
        cluster_name: Bytes,
        id_timestamp: Option<f64>,
        /// Optional properties (`devpath`, `new_nid`, `backup`, `read_only`).
        extra: Dict<Bytes, Value>,
    }
    /// Answer to RequestIdentification.
    0x8001 AcceptIdentification: answer {
        node_type: NodeType,
        nid: Option<Nid>,
        your_nid: Option<Nid>,
    }

    /// any → any: a barrier (the client uses it to synchronize with the master).
    0x0002 Ping: request(Pong) {}
    0x8002 Pong: answer {}

    /// any → any: the sender no longer uses the connection as a client.
    0x0003 CloseClient: notification {}

    /// ctl → admin: which master is primary.
    0x0004 AskPrimary: request(AnswerPrimary) {}
    0x8004 AnswerPrimary: answer {
        primary_nid: Nid,
    }

    /// secondary master → any, instead of AcceptIdentification; then the connection closes.
    0x0005 NotPrimaryMaster: notification {
        primary: Option<u32>,
        known_master_list: Vec<Address>,
    }

    /// master → all: node list changes (full list right after identification).
    0x0006 NotifyNodeInformation: notification {
        timestamp: f64,
        node_list: Vec<NodeInfo>,
    }

    // --- Cluster, recovery, verification, partition table ---------------------------

    /// master → storage during recovery (also ctl → admin → master).
    0x0007 AskRecovery: request(AnswerRecovery) {}
    0x8007 AnswerRecovery: answer {
        ptid: Option<u64>,
        backup_tid: Option<Tid>,
        truncate_tid: Option<Tid>,
    }

    /// master → storage (also ctl → admin → master).
    0x0008 AskLastIDs: request(AnswerLastIDs) {}
    0x8008 AnswerLastIDs: answer {
        last_tid: Option<Tid>,
        last_oid: Option<Oid>,
        first_tid: Tid,
    }

    /// master → the storage with the newest partition table, during recovery.
    0x0009 AskPartitionTable: request(AnswerPartitionTable) {}
    0x8009 AnswerPartitionTable: answer {
        ptid: Option<u64>,
        num_replicas: u32,
        row_list: Vec<Row>,
    }

    /// master → admin, client, storage: the full table.
    0x000A SendPartitionTable: notification {
        ptid: Option<u64>,
        num_replicas: u32,
        row_list: Vec<Row>,
    }

    /// master → admin, client, storage: cell changes; ptid is the previous one plus one.
    0x000B NotifyPartitionChanges: notification {
        ptid: u64,
        num_replicas: u32,
        cell_list: Vec<CellChange>,
    }

    /// master → storage: start serving.
    0x000C StartOperation: notification {
        backup: bool,
    }

    /// master → storage, client.
    0x000D StopOperation: notification {}

    /// storage → master, before replicating.
    0x000E AskUnfinishedTransactions: request(AnswerUnfinishedTransactions) {
        offset_list: Vec<u32>,
    }
    0x800E AnswerUnfinishedTransactions: answer {
        max_tid: Tid,
        ttid_list: Vec<Tid>,
    }

    /// master → storage during verification.
    0x000F AskLockedTransactions: request(AnswerLockedTransactions) {}
    0x800F AnswerLockedTransactions: answer {
        /// TTID → final TID if locked, nil if only voted.
        tid_dict: Dict<Tid, Option<Tid>>,
    }

    /// master → storage, client → master, client → storage (ZODB tpc_finish recovery).
    0x0010 AskFinalTID: request(AnswerFinalTID) {
        ttid: Tid,
    }
    0x8010 AnswerFinalTID: answer {
        tid: Option<Tid>,
    }

    /// master → storage.
    0x0011 ValidateTransaction: notification {
        ttid: Tid,
        tid: Tid,
    }

    // --- Transactions ----------------------------------------------------------------

    /// client → master (ZODB tpc_begin).
    0x0012 AskBeginTransaction: request(AnswerBeginTransaction) {
        tid: Option<Tid>,
    }
    0x8012 AnswerBeginTransaction: answer {
        ttid: Tid,
    }

    /// client → master: some storages failed the vote.
    0x0013 FailedVote: request_error {
        ttid: Tid,
        failed: Vec<Nid>,
    }

    /// client → master (ZODB tpc_finish); answered when the transaction is locked.
    0x0014 AskFinishTransaction: request(AnswerTransactionFinished) {
        ttid: Tid,
        oid_list: Vec<Oid>,
        deleted: Vec<u32>,
        checked: Vec<u32>,
        pack: Option<PackRequest>,
    }
    0x8014 AnswerTransactionFinished: answer {
        ttid: Tid,
        tid: Tid,
    }

    /// master → storage: lock the transaction.
    0x0015 AskLockInformation: request(AnswerInformationLocked) {
        ttid: Tid,
        tid: Tid,
        pack: bool,
    }
    0x8015 AnswerInformationLocked: answer {
        ttid: Tid,
    }

    /// master → client: objects modified by a committed transaction.
    0x0016 InvalidateObjects: notification {
        tid: Tid,
        oid_list: Vec<Oid>,
    }

    /// master → backup master (as a client): partitions modified by a transaction.
    0x0017 InvalidatePartitions: notification {
        tid: Tid,
        partition_list: Vec<u32>,
    }

    /// master → storage: the transaction is committed, unlock.
    0x0018 NotifyUnlockInformation: notification {
        ttid: Tid,
    }

    /// client → master (ZODB new_oid).
    0x0019 AskNewOIDs: request(AnswerNewOIDs) {
        num_oids: u32,
    }
    0x8019 AnswerNewOIDs: answer {
        oid_list: Vec<Oid>,
    }

    /// storage → client: the transaction must relock this object.
    0x001A NotifyDeadlock: notification {
        ttid: Tid,
        oid: Oid,
    }

    /// client → storage, after NotifyDeadlock.
    0x001B AskRelockObject: request(AnswerRelockObject) {
        ttid: Tid,
        oid: Oid,
    }
    0x801B AnswerRelockObject: answer {
        conflict: Option<RelockConflict>,
    }

    /// client → storage (ZODB store).
    0x001C AskStoreObject: request(AnswerStoreObject) {
        oid: Oid,
        serial: Tid,
        compression: u8,
        checksum: Checksum,
        data: Bytes,
        data_serial: Option<Tid>,
        ttid: Tid,
    }
    0x801C AnswerStoreObject: answer {
        /// Nil: stored and locked; ZERO: stored without lock; other: serial in conflict.
        conflict: Option<Tid>,
    }

    /// client → storage, client → master, master → storage (ZODB tpc_abort).
    0x001D AbortTransaction: notification {
        ttid: Tid,
        nid_list: Vec<Nid>,
    }

    /// client → storage (ZODB tpc_vote, on the storages of the TTID's partition).
    0x001E AskStoreTransaction: request(AnswerStoreTransaction) {
        ttid: Tid,
        user: Bytes,
        description: Bytes,
        extension: Bytes,
        oid_list: Vec<Oid>,
        pack: Option<PackRequest>,
    }
    0x801E AnswerStoreTransaction: answer {}

    /// client → storage (ZODB tpc_vote, on the other storages).
    0x001F AskVoteTransaction: request(AnswerVoteTransaction) {
        ttid: Tid,
    }
    0x801F AnswerVoteTransaction: answer {}

    // --- Object access ---------------------------------------------------------------

    /// client → storage (ZODB load, loadSerial, loadBefore).
    0x0020 AskObject: request(AnswerObject) {
        oid: Oid,
        at: Option<Tid>,
        before: Option<Tid>,
    }
    0x8020 AnswerObject: answer {
        oid: Oid,
        serial: Tid,
        next_serial: Option<Tid>,
        /// Nil for a record without data.
        compression: Option<u8>,
        checksum: Checksum,
        data: Bytes,
        data_serial: Option<Tid>,
    }

    /// client → storage (ZODB undoLog, newest first).
    0x0021 AskTIDs: request(AnswerTIDs) {
        first: u64,
        last: u64,
        partition: u32,
    }
    0x8021 AnswerTIDs: answer {
        tid_list: Vec<Tid>,
    }

    /// client → storage (ZODB undoInfo, history).
    0x0022 AskTransactionInformation: request(AnswerTransactionInformation) {
        tid: Tid,
    }
    0x8022 AnswerTransactionInformation: answer {
        tid: Tid,
        user: Bytes,
        description: Bytes,
        extension: Bytes,
        packed: bool,
        oid_list: Vec<Oid>,
    }

    /// client → storage (ZODB history).
    0x0023 AskObjectHistory: request(AnswerObjectHistory) {
        oid: Oid,
        first: u64,
        last: u64,
    }
    0x8023 AnswerObjectHistory: answer {
        oid: Oid,
        /// (serial, size of the stored data).
        history_list: Vec<(Tid, u64)>,
    }

    /// ctl → admin.
    0x0024 AskPartitionList: request(AnswerPartitionList) {
        min_offset: u32,
        max_offset: u32,
        nid: Option<Nid>,
    }
    0x8024 AnswerPartitionList: answer {
        ptid: Option<u64>,
        num_replicas: u32,
        row_list: Vec<Row>,
    }

    /// ctl → admin.
    0x0025 AskNodeList: request(AnswerNodeList) {
        node_type: Option<NodeType>,
    }
    0x8025 AnswerNodeList: answer {
        node_list: Vec<NodeInfo>,
    }

    /// ctl → admin → master.
    0x0026 SetNodeState: request_error {
        nid: Nid,
        state: NodeState,
    }

    /// ctl → admin → master.
    0x0027 AddPendingNodes: request_error {
        nid_list: Vec<Nid>,
    }

    /// ctl → admin → master.
    0x0028 TweakPartitionTable: request(AnswerTweakPartitionTable) {
        dry_run: bool,
        nid_list: Vec<Nid>,
    }
    0x8028 AnswerTweakPartitionTable: answer {
        changed: bool,
        row_list: Vec<Row>,
    }

    /// ctl → admin → master.
    0x0029 SetNumReplicas: request_error {
        num_replicas: u32,
    }

    /// ctl → admin → master.
    0x002A SetClusterState: request_error {
        state: ClusterState,
    }

    /// ctl → admin → master.
    0x002B Repair: request_error {
        nid_list: Vec<Nid>,
        dry_run: bool,
    }

    /// master → storage.
    0x002C NotifyRepair: notification {
        dry_run: bool,
    }

    /// master → all.
    0x002D NotifyClusterInformation: notification {
        state: ClusterState,
    }

    /// ctl → admin, admin → master.
    0x002E AskClusterState: request(AnswerClusterState) {}
    0x802E AnswerClusterState: answer {
        state: Option<ClusterState>,
    }

    /// client → storage (ZODB undo).
    0x002F AskObjectUndoSerial: request(AnswerObjectUndoSerial) {
        ttid: Tid,
        ltid: Tid,
        undone_tid: Tid,
        oid_list: Vec<Oid>,
    }
    0x802F AnswerObjectUndoSerial: answer {
        object_tid_dict: Dict<Oid, UndoSerial>,
    }

    /// client → storage (iterator, oldest first).
    0x0030 AskTIDsFrom: request(AnswerTIDsFrom) {
        min_tid: Tid,
        max_tid: Tid,
        length: u32,
        partition: u32,
    }
    0x8030 AnswerTIDsFrom: answer {
        tid_list: Vec<Tid>,
    }

    /// client → storage.
    0x0031 AskOIDsFrom: request(AnswerOIDsFrom) {
        partition: u32,
        length: u32,
        min_oid: Oid,
        tid: Tid,
    }
    0x8031 AnswerOIDsFrom: answer {
        next_oid: Option<Oid>,
        oid_list: Vec<Oid>,
    }

    // --- Pack ------------------------------------------------------------------------

    /// client → master (ZODB pack, waiting for completion).
    0x0032 WaitForPack: request(WaitedForPack) {
        tid: Tid,
    }
    0x8032 WaitedForPack: answer {}

    /// master → storage, client → master, storage → master.
    0x0033 AskPackOrders: request(AnswerPackOrders) {
        pack_id: Tid,
    }
    0x8033 AnswerPackOrders: answer {
        pack_list: Vec<PackOrder>,
    }

    /// master → storage, master → backup master.
    0x0034 NotifyPackSigned: notification {
        approved: Vec<Tid>,
        rejected: Vec<Tid>,
    }

    /// storage → master.
    0x0035 NotifyPackCompleted: notification {
        pack_id: Tid,
    }

    // --- Replication and replica checks ----------------------------------------------

    /// ctl → admin → master.
    0x0036 CheckReplicas: request_error {
        partition_dict: Dict<u32, Option<Nid>>,
        min_tid: Tid,
        max_tid: Option<Tid>,
    }

    /// master → storage.
    0x0037 CheckPartition: notification {
        partition: u32,
        source: CheckSource,
        min_tid: Tid,
        max_tid: Tid,
    }

    /// storage → storage.
    0x0038 AskCheckTIDRange: request(AnswerCheckTIDRange) {
        partition: u32,
        length: u32,
        min_tid: Tid,
        max_tid: Tid,
    }
    0x8038 AnswerCheckTIDRange: answer {
        count: u64,
        checksum: Checksum,
        max_tid: Tid,
    }

    /// storage → storage.
    0x0039 AskCheckSerialRange: request(AnswerCheckSerialRange) {
        partition: u32,
        length: u32,
        min_tid: Tid,
        max_tid: Tid,
        min_oid: Oid,
    }
    0x8039 AnswerCheckSerialRange: answer {
        count: u64,
        tid_checksum: Checksum,
        max_tid: Tid,
        oid_checksum: Checksum,
        max_oid: Oid,
    }

    /// storage → master.
    0x003A NotifyPartitionCorrupted: notification {
        partition: u32,
        nid_list: Vec<Nid>,
    }

    /// storage → master: operational after StartOperation.
    0x003B NotifyReady: notification {}

    /// client → master, admin → master (ZODB lastTransaction).
    0x003C AskLastTransaction: request(AnswerLastTransaction) {}
    0x803C AnswerLastTransaction: answer {
        tid: Tid,
    }

    /// client → storage (ZODB checkCurrentSerialInTransaction).
    0x003D AskCheckCurrentSerial: request(AnswerCheckCurrentSerial) {
        ttid: Tid,
        oid: Oid,
        serial: Tid,
    }
    0x803D AnswerCheckCurrentSerial: answer {
        conflict: Option<Tid>,
    }

    /// master → storage.
    0x003E NotifyTransactionFinished: notification {
        ttid: Tid,
        max_tid: Tid,
    }

    /// master → storage (backup mode).
    0x003F Replicate: notification {
        tid: Tid,
        upstream_name: Bytes,
        source_dict: Dict<u32, Option<Address>>,
    }

    /// storage → master.
    0x0040 NotifyReplicationDone: notification {
        partition: u32,
        tid: Tid,
    }

    /// storage → storage; the feeder streams AddTransaction with this request's msg_id.
    0x0041 AskFetchTransactions: request(AnswerFetchTransactions) {
        partition: u32,
        length: u32,
        min_tid: Tid,
        max_tid: Tid,
        tid_list: Vec<Tid>,
        ask_pack_info: bool,
    }
    0x8041 AnswerFetchTransactions: answer {
        next_tid: Option<Tid>,
        tid_list: Vec<Tid>,
        completed_pack: Option<Tid>,
    }

    /// storage → storage; the feeder streams AddObject with this request's msg_id.
    0x0042 AskFetchObjects: request(AnswerFetchObjects) {
        partition: u32,
        length: u32,
        min_tid: Tid,
        max_tid: Tid,
        min_oid: Oid,
        object_dict: Dict<Tid, Vec<Oid>>,
    }
    0x8042 AnswerFetchObjects: answer {
        next_tid: Option<Tid>,
        next_oid: Option<Oid>,
        object_dict: Dict<Tid, Vec<Oid>>,
    }

    /// storage → storage (replication stream).
    0x0043 AddTransaction: notification {
        tid: Tid,
        user: Bytes,
        description: Bytes,
        extension: Bytes,
        packed: bool,
        ttid: Tid,
        oid_list: Vec<Oid>,
        pack: Option<PackInfo>,
    }

    /// storage → storage (replication stream).
    0x0044 AddObject: notification {
        oid: Oid,
        serial: Tid,
        compression: u8,
        checksum: Checksum,
        data: Bytes,
        data_serial: Option<Tid>,
    }

    /// ctl → admin → master (answered by Error); master → storage (one-way).
    0x0045 Truncate: request_error {
        tid: Tid,
    }

    /// ctl → admin → master → all: flush logs.
    0x0046 FlushLog: notification {}

    /// ctl → admin.
    0x0047 AskMonitorInformation: request(AnswerMonitorInformation) {}
    0x8047 AnswerMonitorInformation: answer {
        warning: Vec<Option<Bytes>>,
        problem: Vec<Option<Bytes>>,
        summary: Bytes,
    }

    /// admin → upstream admin.
    0x0048 NotifyMonitorInformation: notification {
        info: Dict<Bytes, Value>,
    }

    /// master → admin.
    0x0049 NotifyUpstreamAdmin: notification {
        address: Address,
    }
}
