//! The logic of a NEO client (ZODB's side of the cluster), sans-IO: the master connection
//! (bootstrap over the configured masters, identification, node list, partition table,
//! invalidations), storage connections opened on demand, reads with replica choice and
//! retries, the two-phase commit (stores, conflicts, lockless answers, vote, finish with
//! `AskFinalTID` recovery, abort), OID batches, undo and iteration queries, pack orders,
//! and the multi-queue cache ([`cache`]).
//!
//! [`Client`] is a [`neo_node::Node`] for network events, plus an operation API:
//! [`Client::submit`] starts an [`Operation`] and [`Client::take_completions`] returns the
//! finished ones; [`Client::take_invalidations`] gives, in order, what other clients
//! committed. Nothing here blocks: `neo-client` runs this on `neo-net` behind a blocking
//! API. Conflict resolution is the caller's (ZODB's `tryToResolveConflict`): a vote that
//! meets conflicts returns them, the caller stores the resolved data and votes again.
//!
//! Must not depend on tokio, `neo-net` or any I/O (tidy test in `cluster/node`). Follows
//! cluster.md 1.4-1.6, 2.12, 4.3, 5 and 6.9, tools.md 7; ports the behaviour of NEO/py's
//! `neo/client/{app,transactions,cache}.py` and `neo/client/handlers/`, not their code.

pub mod cache;
mod client;
pub mod codec;

pub use cache::{Cache, CacheStats, CachedRevision};
pub use client::Client;

use neo_protocol::{Address, Bytes, ErrorCode, Oid, Tid, UndoSerial};

/// Names an operation so that its completion can be matched.
pub type OpId = u64;

/// How many OIDs are asked from the master at once (NEO/py's batch).
pub const OID_BATCH: u32 = 100;

/// A node that failed is avoided for reads during this many seconds (cluster.md 2.12).
pub const MAX_FAILURE_AGE: f64 = 600.0;

/// Connection attempts to a master are at least this far apart (cluster.md 1.6).
pub const RECONNECT_DELAY: f64 = 1.0;

/// What the client is told to connect to, and how it treats data.
#[derive(Debug, Clone)]
pub struct Config {
    pub masters: Vec<Address>,
    pub cluster: String,
    /// Refuse writes locally and identify as read-only.
    pub read_only: bool,
    /// Cache capacity in bytes of uncompressed data (NEO/py default 20 MiB).
    pub cache_size: usize,
    /// zlib-compress stored data (kept only when strictly smaller).
    pub compress: bool,
    /// zlib level, 1..=9 (NEO/py uses zlib's default, 6).
    pub compression_level: u32,
    /// Return data whose checksum is wrong on every replica instead of failing.
    pub ignore_wrong_checksum: bool,
    /// Seed of the replica choice.
    pub seed: u64,
}

impl Config {
    pub fn new(masters: Vec<Address>, cluster: impl Into<String>) -> Config {
        Config {
            masters,
            cluster: cluster.into(),
            read_only: false,
            cache_size: 20 * 1024 * 1024,
            compress: true,
            compression_level: 6,
            ignore_wrong_checksum: false,
            seed: 0,
        }
    }
}

/// Transaction metadata, given at `tpc_begin` and sent at vote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransactionMeta {
    pub user: Bytes,
    pub description: Bytes,
    /// The pickled extension dict, or empty.
    pub extension: Bytes,
}

/// What the caller asks the client to do. Transactions are named by their TTID, which
/// `TpcBegin` returns.
#[derive(Debug, Clone)]
pub enum Operation {
    /// One new OID (from a batch of [`OID_BATCH`]). → [`Reply::Oid`]
    NewOid,
    /// The current revision (never newer than the last invalidation). → [`Reply::Object`]
    Load { oid: Oid },
    /// The revision valid just before `before`. → [`Reply::Object`] or [`Reply::None`]
    LoadBefore { oid: Oid, before: Tid },
    /// The exact revision `serial`. → [`Reply::Object`]
    LoadSerial { oid: Oid, serial: Tid },
    /// The last TID known (connects first if needed). → [`Reply::Tid`]
    LastTransaction,
    /// `size` newest revisions of an object with their transactions. → [`Reply::History`]
    History { oid: Oid, size: u64 },
    /// One transaction's metadata. → [`Reply::Transaction`]
    TransactionInformation { tid: Tid },
    /// TIDs for the undo log, newest first, from every storage (approximate, as NEO/py).
    /// → [`Reply::Tids`]
    UndoLogTids { first: u64, last: u64 },
    /// Up to `length` TIDs in `[min, max]`, oldest first (the iterator). → [`Reply::Tids`]
    TidsFrom { min: Tid, max: Tid, length: u32 },
    /// Starts a transaction, with a chosen TID for imports/restores. → [`Reply::Tid`]
    /// (the TTID)
    TpcBegin {
        tid: Option<Tid>,
        meta: TransactionMeta,
    },
    /// Stores a revision based on `serial` (ZERO for a new object); `data_serial` is the
    /// TID whose data this is (undo, restore). Conflicts show at vote. → [`Reply::Done`]
    Store {
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        data: Bytes,
        data_serial: Option<Tid>,
    },
    /// A store whose data the caller already encoded ([`codec::Codec::encode`] of `data`),
    /// so that bulk writers (neomigrate) compress in their own threads. → [`Reply::Done`]
    StoreEncoded {
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        data: Bytes,
        encoded: codec::Encoded,
        data_serial: Option<Tid>,
    },
    /// ZODB's `checkCurrentSerialInTransaction`. → [`Reply::Done`]
    CheckCurrentSerial { ttid: Tid, oid: Oid, serial: Tid },
    /// ZODB's `deleteObject` (also an undone creation). → [`Reply::Done`]
    DeleteObject { ttid: Tid, oid: Oid, serial: Tid },
    /// Attaches a pack order to the transaction (ZODB pack, reflink). → [`Reply::Done`]
    SetPackOrder {
        ttid: Tid,
        oids: Option<Vec<Oid>>,
        pack_tid: Tid,
    },
    /// What undoing `undone_tid` needs per object. → [`Reply::UndoSerials`]
    ObjectUndoSerial { ttid: Tid, undone_tid: Tid },
    /// Waits for stores, then votes. → [`Reply::Conflicts`] (resolve, store again, vote
    /// again) or [`Reply::Voted`]
    TpcVote { ttid: Tid },
    /// Commits a voted transaction. → [`Reply::Tid`] (the final TID)
    TpcFinish { ttid: Tid },
    /// → [`Reply::Done`]
    TpcAbort { ttid: Tid },
    /// Waits until the storages packed up to the pack transaction `tid`. → [`Reply::Done`]
    WaitForPack { tid: Tid },
    /// A barrier with the master: every invalidation sent before is received.
    /// → [`Reply::Done`]
    Sync,
}

/// One object revision as read.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRecord {
    /// None for a deletion or an undone creation.
    pub data: Option<Bytes>,
    pub serial: Tid,
    pub next_serial: Option<Tid>,
    /// The transaction whose data this record reuses (undo back-pointer).
    pub data_serial: Option<Tid>,
}

/// `AnswerTransactionInformation`.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionInfo {
    pub tid: Tid,
    pub user: Bytes,
    pub description: Bytes,
    pub extension: Bytes,
    pub packed: bool,
    pub oids: Vec<Oid>,
}

/// One entry of an object's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub serial: Tid,
    /// Size of the stored (possibly compressed) data.
    pub size: u64,
    /// The transaction, if its metadata could be read.
    pub transaction: Option<TransactionInfo>,
}

/// A conflict found by a store: resolve `data` (based on `serial`) against the committed
/// `committed_serial`, then store with `serial = committed_serial`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub oid: Oid,
    pub serial: Tid,
    pub committed_serial: Tid,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Done,
    None,
    Oid(Oid),
    Tid(Tid),
    Object(ObjectRecord),
    History(Vec<HistoryEntry>),
    Transaction(TransactionInfo),
    Tids(Vec<Tid>),
    UndoSerials(Vec<(Oid, UndoSerial)>),
    Conflicts(Vec<Conflict>),
    /// The vote succeeded; these OIDs had conflicts that were resolved.
    Voted {
        resolved: Vec<Oid>,
    },
}

/// What other clients committed, in commit order (cluster.md 5.12).
#[derive(Debug, Clone, PartialEq)]
pub enum Invalidation {
    Objects {
        tid: Tid,
        oids: Vec<Oid>,
    },
    /// After a reconnection to a master whose last TID differs: everything may be stale.
    All {
        last_tid: Tid,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    #[error("read-only client")]
    ReadOnly,
    /// Transient: retry (NEO/py raises a ReadConflictError subclass).
    #[error("primary master lost")]
    PrimaryMasterLost,
    /// The object never existed (POSKeyError).
    #[error("object {0} does not exist")]
    OidDoesNotExist(Oid),
    /// The object exists but not at the requested revision.
    #[error("object {0} not found at the requested revision")]
    OidNotFound(Oid),
    #[error("transaction {0} not found")]
    TidNotFound(Tid),
    #[error("wrong checksum for {oid} at {serial}")]
    WrongChecksum { oid: Oid, serial: Tid },
    #[error("storage error: {0}")]
    Storage(String),
    /// checkCurrentSerial failed (ReadConflictError).
    #[error("read conflict on {oid}: {serial} checked, {committed} committed")]
    ReadConflict {
        oid: Oid,
        serial: Tid,
        committed: Tid,
    },
    #[error("undo error: {0}")]
    Undo(String),
    #[error("incomplete transaction: failed storages cannot be disconnected")]
    IncompleteTransaction,
    #[error("unknown transaction {0}")]
    UnknownTransaction(Tid),
    #[error("transaction failed: {0}")]
    Transaction(String),
    #[error("{code:?}: {message}")]
    Remote { code: ErrorCode, message: String },
    #[error("client closed")]
    Closed,
}
