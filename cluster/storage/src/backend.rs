//! What the storage logic needs from a database (cluster.md 7.9), as one trait. The SQLite
//! backend (`neo-storage-sqlite`) and the in-memory one implement it with the same
//! semantics; a backend is used from the node's own thread only.
//!
//! Conventions: `partition` of an object is `oid mod np`, of a transaction `tid mod np`,
//! where np is the number of rows of the stored partition table. Writes are not durable
//! until [`Backend::commit`]. Data is stored as received (compression flag, SHA-1 of the
//! stored bytes); a deletion is a record with no data.

use neo_protocol::{Bytes, CellState, Checksum, Nid, Oid, PackInfo, Tid};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("database error: {0}")]
    Database(String),
    #[error("schema version {found} is newer than this program's ({supported})")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("database is used by another process ({0})")]
    Locked(String),
    #[error("corrupt database: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// One row of the `pt` table: the raw `tid` column encodes the state (7.5): negative is
/// `-state` (UP_TO_DATE -1, FEEDING -2, CORRUPTED -3), >= 0 is OUT_OF_DATE with, for own
/// cells, the replication progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtRow {
    pub partition: u32,
    pub nid: Nid,
    pub tid: i64,
    pub pack: Option<Tid>,
}

impl PtRow {
    pub fn state(&self) -> CellState {
        match self.tid {
            -1 => CellState::UpToDate,
            -2 => CellState::Feeding,
            -3 => CellState::Corrupted,
            _ => CellState::OutOfDate,
        }
    }
}

/// Transaction metadata as in `trans`/`ttrans`.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionRecord {
    pub tid: Tid,
    pub ttid: Tid,
    pub oids: Vec<Oid>,
    pub user: Bytes,
    pub description: Bytes,
    pub extension: Bytes,
    pub packed: bool,
    /// The pack order carried by this transaction, if any (`pack` table).
    pub pack: Option<PackInfo>,
}

/// One object revision with its data.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRecord {
    pub oid: Oid,
    pub serial: Tid,
    /// The next revision's serial, when asked for a non-current revision.
    pub next_serial: Option<Tid>,
    /// None for a deletion (or undone creation).
    pub data: Option<StoredData>,
    /// Undo back-pointer: the serial whose data this revision reuses (`value_tid`).
    pub data_serial: Option<Tid>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredData {
    pub compression: u8,
    pub checksum: Checksum,
    pub value: Bytes,
}

/// The storage's database.
pub trait Backend {
    // --- Configuration (`config` table, 7.3) ---------------------------------------

    fn get_config(&self, key: &str) -> Result<Option<String>>;
    /// `None` deletes the key.
    fn set_config(&mut self, key: &str, value: Option<&str>) -> Result<()>;
    /// Makes every write so far durable.
    fn commit(&mut self) -> Result<()>;
    /// Drops every table and recreates an empty schema (`--reset`, or told UNKNOWN).
    fn erase(&mut self) -> Result<()>;

    fn nid(&self) -> Result<Option<Nid>> {
        Ok(self
            .get_config("nid")?
            .and_then(|v| v.parse().ok())
            .map(Nid))
    }
    /// Stores a new NID; rows of `pt` under the old one are renamed.
    fn set_nid(&mut self, nid: Nid) -> Result<()>;
    fn ptid(&self) -> Result<Option<u64>> {
        Ok(self.get_config("ptid")?.and_then(|v| v.parse().ok()))
    }
    fn replicas(&self) -> Result<u32> {
        Ok(self
            .get_config("replicas")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
    fn truncate_tid(&self) -> Result<Option<Tid>> {
        Ok(parse_hex_tid(self.get_config("truncate_tid")?))
    }
    fn backup_tid(&self) -> Result<Option<Tid>> {
        Ok(parse_hex_tid(self.get_config("backup_tid")?))
    }

    // --- Partition table (7.5) -------------------------------------------------------

    fn pt_rows(&self) -> Result<Vec<PtRow>>;
    /// Applies a partition-table change (or a whole table with `reset`, which first deletes
    /// every row), with the 7.5 rules for `tid` and `pack` of own cells, and stores `ptid`
    /// and `replicas`. `own` is this node's NID. Does not commit.
    fn apply_pt_changes(
        &mut self,
        ptid: u64,
        replicas: u32,
        cells: &[(u32, Nid, CellState)],
        reset: bool,
        own: Nid,
    ) -> Result<()>;
    /// Records replication progress of an own OUT_OF_DATE cell (`pt.tid`).
    fn set_replication_progress(&mut self, partition: u32, own: Nid, tid: Tid) -> Result<()>;

    // --- Reads -----------------------------------------------------------------------

    /// Greatest TID of committed transactions and objects of one partition (max of both).
    fn partition_last_tid(&self, partition: u32) -> Result<Option<Tid>>;
    /// (last tid, last oid, first tid) over the given partitions, for AnswerLastIDs.
    fn last_ids(&self, partitions: &[u32]) -> Result<(Option<Tid>, Option<Oid>, Tid)>;
    /// `{ttid: tid|None}` from the temporary tables (AnswerLockedTransactions).
    fn locked_transactions(&self) -> Result<Vec<(Tid, Option<Tid>)>>;
    /// The final TID of a transaction committed under this TTID, if it is in `trans`.
    fn final_tid(&self, ttid: Tid) -> Result<Option<Tid>>;
    /// An object revision: the exact `serial` (`at`), the newest before `before`, or the
    /// newest (both None). `next_serial` is filled for non-current revisions.
    fn object(
        &self,
        oid: Oid,
        at: Option<Tid>,
        before: Option<Tid>,
    ) -> Result<Option<ObjectRecord>>;
    /// The serial of an object's current revision (what a store is checked against);
    /// a backend can find it without reading the data.
    fn last_serial(&self, oid: Oid) -> Result<Option<Tid>> {
        Ok(self.object(oid, None, None)?.map(|r| r.serial))
    }
    /// Committed transaction metadata (`temporary` also looks at `ttrans` by TTID).
    fn transaction(&self, tid: Tid, temporary: bool) -> Result<Option<TransactionRecord>>;
    /// Revisions of an object, newest first: (serial, data size), from `first` for `count`.
    fn object_history(&self, oid: Oid, first: u64, count: u64) -> Result<Vec<(Tid, u64)>>;
    /// Committed TIDs of some partitions, newest first, skipping `first`, up to `count`.
    fn tids_desc(&self, partitions: &[u32], first: u64, count: u64) -> Result<Vec<Tid>>;
    /// Committed TIDs of a partition in `[min, max]`, ascending, at most `limit`.
    fn tids_range(&self, partition: u32, min: Tid, max: Tid, limit: usize) -> Result<Vec<Tid>>;
    /// Object records `(serial, oid)` of a partition with `serial <= max` and
    /// `(serial, oid) >= (min, min_oid)`, ordered by (serial, oid), at most `limit`.
    fn objects_range(
        &self,
        partition: u32,
        min: Tid,
        min_oid: Oid,
        max: Tid,
        limit: usize,
    ) -> Result<Vec<(Tid, Oid)>>;

    // --- Writes ----------------------------------------------------------------------

    /// Stores transaction metadata: into `trans` (`temporary` false, e.g. replication), or
    /// into `ttrans` under `record.ttid` with a null tid (vote).
    fn store_transaction(&mut self, record: &TransactionRecord, temporary: bool) -> Result<()>;
    /// Stores an object revision into `obj` (`temporary` false; an identical existing row
    /// is tolerated) or into `tobj` under the TTID `serial`. With `data_serial` and no
    /// data, the data of `(oid, data_serial)` is reused.
    fn store_object(
        &mut self,
        oid: Oid,
        serial: Tid,
        data: Option<&StoredData>,
        data_serial: Option<Tid>,
        temporary: bool,
    ) -> Result<()>;
    /// Sets the final tid of a voted transaction (`ttrans.tid`). Does not commit: the
    /// storage commits once for every transaction locked meanwhile (group commit).
    fn lock_transaction(&mut self, ttid: Tid, tid: Tid) -> Result<()>;
    /// Moves a locked transaction from the temporary tables to the final ones.
    fn unlock_transaction(&mut self, ttid: Tid, tid: Tid) -> Result<()>;
    /// Deletes the temporary rows of a transaction (and data nobody references).
    fn abort_transaction(&mut self, ttid: Tid) -> Result<()>;
    /// Deletes every temporary row (start of operation).
    fn drop_unfinished(&mut self) -> Result<()>;
    /// Deletes committed transactions of a partition by tid (replication said the source
    /// lacks them).
    fn delete_transactions(&mut self, partition: u32, tids: &[Tid]) -> Result<()>;
    /// Deletes object revisions (replication said the source lacks them).
    fn delete_objects(&mut self, partition: u32, records: &[(Tid, Oid)]) -> Result<()>;
    /// Deletes everything of the given partitions (discarded cells).
    fn drop_partitions(&mut self, partitions: &[u32]) -> Result<()>;
    /// Deletes transactions and objects with TID > `tid` in the given partitions, lowering
    /// replication progress of own cells to `tid` (6.8).
    fn truncate(&mut self, partitions: &[u32], own: Nid, tid: Tid) -> Result<()>;

    // --- Pack orders ---------------------------------------------------------------------

    /// Pack orders (`pack` table) with id >= `min` of the given partitions, by id
    /// (AnswerPackOrders to the master). The default walks the transactions of the
    /// partitions; a backend with a `pack` table should answer from it.
    fn pack_orders(&self, partitions: &[u32], min: Tid) -> Result<Vec<(Tid, PackInfo)>> {
        let mut orders = Vec::new();
        for &partition in partitions {
            for tid in self.tids_range(partition, min, Tid(u64::MAX), usize::MAX)? {
                if let Some(pack) = self.transaction(tid, false)?.and_then(|t| t.pack) {
                    orders.push((tid, pack));
                }
            }
        }
        orders.sort_by_key(|(tid, _)| *tid);
        Ok(orders)
    }

    /// Signs pack orders (NotifyPackSigned, 6.9; at lock, the order of the transaction
    /// being locked, still keyed by its TTID): `approved` ids get `approved = 1`,
    /// `rejected` ones `approved = 0`. Returns the ids that were found. Does not commit.
    /// The default rewrites committed `trans` rows through the other methods; it cannot
    /// reach the temporary tables, so a backend should override it.
    fn sign_pack_orders(&mut self, approved: &[Tid], rejected: &[Tid]) -> Result<Vec<Tid>> {
        let np = self
            .pt_rows()?
            .iter()
            .map(|r| r.partition as u64 + 1)
            .max()
            .unwrap_or(1);
        let mut found = Vec::new();
        let signed = approved
            .iter()
            .map(|id| (*id, true))
            .chain(rejected.iter().map(|id| (*id, false)));
        for (id, verdict) in signed {
            let Some(mut record) = self.transaction(id, false)? else {
                continue;
            };
            let Some(pack) = &mut record.pack else {
                continue;
            };
            pack.approved = Some(verdict);
            self.delete_transactions((id.0 % np) as u32, &[id])?;
            self.store_transaction(&record, false)?;
            found.push(id);
        }
        Ok(found)
    }

    /// Records that the pack order `pack_id` was applied to an own cell (`pt.pack`, 7.5,
    /// 6.9). Does not commit. There is no way to write `pt.pack` through the other
    /// methods, so the default refuses: a backend that packs must override it.
    fn set_pack_progress(&mut self, partition: u32, own: Nid, pack_id: Tid) -> Result<()> {
        let _ = (partition, own, pack_id);
        Err(BackendError::Invalid(
            "this backend cannot record pack progress".into(),
        ))
    }
}

/// `backup_tid` and `truncate_tid` are stored as 16 hex digits.
pub fn parse_hex_tid(value: Option<String>) -> Option<Tid> {
    value.and_then(|v| u64::from_str_radix(v.trim(), 16).ok().map(Tid))
}

pub fn format_hex_tid(tid: Tid) -> String {
    format!("{:016x}", tid.0)
}
