//! [`SqliteBackend`]: the [`Backend`] trait on one SQLite connection, with the semantics
//! of cluster.md 7.3-7.6 and the queries shaped like NEO/py's so that both use the same
//! indexes.
//!
//! Writes open a transaction (`BEGIN`) that [`Backend::commit`] ends, as Python's
//! `sqlite3` module does for NEO/py. Data rows are shared (undo, deduplication) and
//! reference-counted implicitly: a row is deleted once no `obj` row references it and no
//! in-memory reference (one per `tobj` row) holds it.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Params, Row};

use neo_protocol::{Bytes, CellState, Checksum, Nid, Oid, PackInfo, Tid};
use neo_storage::backend::{
    Backend, BackendError, ObjectRecord, PtRow, Result, StoredData, TransactionRecord,
};

use crate::connection::ConnectionString;
use crate::lock::{lock_file, FileLock};
use crate::prepared::{Columns, Prepared};
use crate::schema;

/// How to open a database.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Create the deduplication index `_data_i1` (`--dedup`). NEO/py creates it on an
    /// existing database too; without it, identical values get separate rows.
    pub dedup: bool,
    /// Erase every table first (`--reset`).
    pub reset: bool,
}

/// The storage's database in a SQLite file, in NEO/py's format.
pub struct SqliteBackend {
    /// Declared (so dropped) before `conn`: statements must be finalized before their
    /// connection closes.
    loads: OnceCell<LoadStatements>,
    conn: Connection,
    path: String,
    dedup: bool,
    /// Number of partitions: `max(pt.partition) + 1`, 0 without a partition table.
    np: u32,
    /// Next data id per oid partition (7.6), computed on first use.
    next_data_id: HashMap<u32, i64>,
    /// In-memory references to data of uncommitted objects (`tobj`), by data id.
    uncommitted: HashMap<i64, u32>,
    /// Pack status given to own OUT_OF_DATE cells when they are added (7.5).
    last_pack_id: Tid,
    // Dropped last: the lock outlives the connection.
    _lock: Option<FileLock>,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.path)
            .field("np", &self.np)
            .finish_non_exhaustive()
    }
}

/// Deleting data by id lists is done in chunks of this many ids.
const PRUNE_CHUNK: usize = 500;

impl SqliteBackend {
    /// Opens (creating if needed) the database named by a `-d` connection string (a path
    /// or a `file:` URI, see [`ConnectionString`]), takes exclusive use of it, creates or
    /// migrates the schema and rebuilds the references held by unfinished transactions.
    pub fn open(database: &str, options: OpenOptions) -> Result<SqliteBackend> {
        let parsed = ConnectionString::parse(database)?;
        if parsed.cksumvfs == Some(true) {
            return Err(BackendError::Invalid(
                "cksumvfs=1: the checksum VFS is not supported by this backend".into(),
            ));
        }
        let conn = Connection::open(&parsed.path)
            .map_err(|e| BackendError::Database(format!("cannot open {}: {e}", parsed.path)))?;
        // The lock is taken once the file exists (SQLite creates it) and before the
        // first statement touches it.
        let lock = lock_file(Path::new(&parsed.path))?;
        // Python's sqlite3 waits 5 s on a busy database before failing.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(db_error)?;
        for (name, value) in &parsed.pragmas {
            conn.execute_batch(&format!("PRAGMA {name} = {value}"))
                .map_err(db_error)?;
        }
        // Write-ahead logging unless the connection string chooses: with synchronous FULL
        // (SQLite's default) a commit is one fsync of the log instead of the rollback
        // journal's four (create, sync, sync header, sync the database, delete), and pages
        // are written once. It is as durable, and NEO/py opens such a file as well (the
        // mode is recorded in it; `?journal_mode=DELETE` returns to NEO/py's default).
        let in_memory = parsed.path.is_empty() || parsed.path == ":memory:";
        if !in_memory
            && !parsed
                .pragmas
                .iter()
                .any(|(name, _)| name == "journal_mode")
        {
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
                .map_err(db_error)?;
        }
        // Statement journals (the undo of one statement inside a transaction: unlocking
        // copies every row of a transaction from tobj to obj) stay in memory: past 64 KiB
        // SQLite spills them to a temporary file, created and deleted at every commit.
        // About 13% of a storage's CPU during an import.
        conn.execute_batch("PRAGMA temp_store = MEMORY")
            .map_err(db_error)?;
        // A checkpoint copies every page changed since the previous one into the database
        // file and syncs it: the pages that every commit touches (index leaves, the ends
        // of tables) are written once per checkpoint. Every 10000 pages (a log of up to
        // 40 MB) rather than SQLite's 1000, a storage spends about 15% less CPU importing
        // a 1 GB database.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 10000")
            .map_err(db_error)?;
        conn.set_prepared_statement_cache_capacity(64);
        // A stable plan per statement: without it, the STAT4 planner re-prepares the
        // cached load queries at every bind, about a third of a load's CPU.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(db_error)?;
        let mut backend = SqliteBackend {
            loads: OnceCell::new(),
            conn,
            path: parsed.path,
            dedup: options.dedup,
            np: 0,
            next_data_id: HashMap::new(),
            uncommitted: HashMap::new(),
            last_pack_id: Tid::ZERO,
            _lock: lock,
        };
        backend.begin()?;
        if options.reset {
            backend.drop_tables()?;
        }
        schema::setup(&backend.conn, options.dedup)?;
        backend.commit()?;
        backend.load_state()?;
        Ok(backend)
    }

    /// Closes the connection (uncommitted writes are lost) and releases the lock.
    pub fn close(self) -> Result<()> {
        let SqliteBackend {
            loads, conn, _lock, ..
        } = self;
        // Finalized first: a connection with live statements does not close.
        drop(loads);
        conn.close().map_err(|(_, e)| db_error(e))?;
        drop(_lock);
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether identical values share one data row (the `_data_i1` index exists).
    pub fn dedup(&self) -> Result<bool> {
        schema::has_dedup_index(&self.conn)
    }

    /// The last pack id the storage knows (NEO/py's `app.last_pack_id`): stored as the
    /// pack status of own cells added as OUT_OF_DATE by later partition-table changes.
    pub fn set_last_pack_id(&mut self, pack_id: Tid) {
        self.last_pack_id = pack_id;
    }

    /// Number of partitions of the stored partition table (0 if there is none).
    pub fn num_partitions(&self) -> u32 {
        self.np
    }

    /// Number of in-memory references held on a data row (tests and diagnostics).
    pub fn uncommitted_references(&self, data_id: i64) -> u32 {
        self.uncommitted.get(&data_id).copied().unwrap_or(0)
    }

    // --- Helpers ---------------------------------------------------------------------

    /// Recomputes what is cached from the tables: np, the data id counters and the
    /// references held by `tobj` rows.
    fn load_state(&mut self) -> Result<()> {
        self.load_np()?;
        self.next_data_id.clear();
        self.uncommitted.clear();
        let held: Vec<(i64, i64)> = self.query_all(
            "SELECT data_id, count(*) FROM tobj WHERE data_id IS NOT NULL GROUP BY data_id",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        for (data_id, count) in held {
            self.uncommitted
                .insert(data_id, u32::try_from(count).unwrap_or(u32::MAX));
        }
        Ok(())
    }

    fn load_np(&mut self) -> Result<()> {
        let max: Option<i64> =
            self.query_one("SELECT MAX(partition) FROM pt", [], |row| row.get(0))?;
        self.np = match max {
            None => 0,
            Some(max) => u32::try_from(max + 1)
                .map_err(|_| BackendError::Corrupt(format!("bad partition {max} in pt")))?,
        };
        Ok(())
    }

    /// Starts a transaction unless one is open. Reads open one too and leave it open
    /// until the next [`Backend::commit`]: in autocommit mode every statement would take
    /// and release the file's shared lock and look for a hot journal (fcntl and stat
    /// calls, a third of a load's CPU). Other connections may still read meanwhile.
    fn begin(&self) -> Result<()> {
        if self.conn.is_autocommit() {
            self.conn
                .prepare_cached("BEGIN")
                .and_then(|mut statement| statement.execute([]))
                .map_err(db_error)?;
        }
        Ok(())
    }

    /// The load statements, prepared at the first load.
    fn loads(&self) -> Result<&LoadStatements> {
        if let Some(loads) = self.loads.get() {
            return Ok(loads);
        }
        let loads = LoadStatements::prepare(&self.conn)?;
        Ok(self.loads.get_or_init(|| loads))
    }

    fn drop_tables(&mut self) -> Result<()> {
        for table in schema::TABLES {
            self.conn
                .execute_batch(&format!("DROP TABLE IF EXISTS {table}"))
                .map_err(db_error)?;
        }
        Ok(())
    }

    fn partition_of(&self, id: u64) -> Result<u32> {
        if self.np == 0 {
            return Err(BackendError::Invalid("no partition table is stored".into()));
        }
        Ok((id % u64::from(self.np)) as u32)
    }

    fn exec<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute(params))
            .map_err(db_error)
    }

    fn query_opt<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        self.begin()?;
        self.conn
            .prepare_cached(sql)
            .and_then(|mut statement| statement.query_row(params, map).optional())
            .map_err(db_error)
    }

    /// For aggregates, which always return one row.
    fn query_one<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, params, map)?
            .ok_or_else(|| BackendError::Database(format!("no row from {sql}")))
    }

    fn query_all<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        self.begin()?;
        self.conn
            .prepare_cached(sql)
            .and_then(|mut statement| {
                statement
                    .query_map(params, map)?
                    .collect::<rusqlite::Result<Vec<T>>>()
            })
            .map_err(db_error)
    }

    fn max_tid_of(&self, sql: &str, partition: u32) -> Result<Option<u64>> {
        let max: Option<i64> = self.query_one(sql, [partition], |row| row.get(0))?;
        max.map(to_u64).transpose()
    }

    /// Stores data for an object of partition `partition` and returns its id: the data
    /// of `(oid, data_serial)` when that record exists (undo), else a new row (or, with
    /// deduplication, an identical existing one); None for no data.
    fn store_data(
        &mut self,
        partition: u32,
        oid: Oid,
        data: Option<&StoredData>,
        data_serial: Option<Tid>,
    ) -> Result<Option<i64>> {
        if let Some(data_serial) = data_serial {
            let reused: Option<Option<i64>> = self.query_opt(
                "SELECT data_id FROM obj WHERE partition=? AND oid=? AND tid=?",
                params![partition, to_i64(oid.0)?, to_i64(data_serial.0)?],
                |row| row.get(0),
            )?;
            if let Some(data_id) = reused {
                return Ok(data_id);
            }
            // Record not found (e.g. a cell being replicated): like NEO/py, fall back to
            // the data sent along, or to none. Refusing an undo of packed data
            // (UndoPackError) is the storage logic's call, as it knows readability.
        }
        let Some(data) = data else {
            return Ok(None);
        };
        let id = match self.next_data_id.get(&partition) {
            Some(id) => *id,
            None => {
                let low = i64::from(partition) << 48;
                let high = (i64::from(partition) + 1) << 48;
                let max: Option<i64> = self.query_one(
                    "SELECT MAX(id) FROM data WHERE ? <= id AND id < ?",
                    [low, high],
                    |row| row.get(0),
                )?;
                max.map_or(low, |max| max + 1)
            }
        };
        let inserted = self
            .conn
            .prepare_cached("INSERT INTO data VALUES (?,?,?,?)")
            .and_then(|mut statement| {
                statement.execute(params![
                    id,
                    &data.checksum[..],
                    data.compression,
                    &data.value[..]
                ])
            });
        match inserted {
            Ok(_) => {
                self.next_data_id.insert(partition, id + 1);
                Ok(Some(id))
            }
            Err(e) if is_dedup_conflict(&e) => {
                let existing: Option<(i64, Vec<u8>)> = self.query_opt(
                    "SELECT id, value FROM data WHERE hash=? AND compression=?",
                    params![&data.checksum[..], data.compression],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                match existing {
                    Some((id, value)) if value == data.value[..] => Ok(Some(id)),
                    _ => Err(BackendError::Corrupt(format!(
                        "SHA-1 collision: another value with checksum {} is stored",
                        hex(&data.checksum)
                    ))),
                }
            }
            Err(e) => Err(db_error(e)),
        }
    }

    /// [`Backend::store_object`] into `tobj`, `key` being (oid, ttid): inserts first, and
    /// looks for the row it replaces only when the key is taken (a second store of the
    /// object in one transaction, rare: looking first would cost a query per store).
    fn store_temporary_object(
        &mut self,
        partition: u32,
        oid: Oid,
        key: (i64, i64),
        data: Option<&StoredData>,
        data_serial: Option<Tid>,
    ) -> Result<()> {
        let value_tid = data_serial.map(|t| to_i64(t.0)).transpose()?;
        let data_id = self.store_data(partition, oid, data, data_serial)?;
        let row = params![partition, key.0, key.1, data_id, value_tid];
        let inserted = self
            .conn
            .prepare_cached("INSERT INTO tobj VALUES (?,?,?,?,?)")
            .and_then(|mut statement| statement.execute(row));
        match inserted {
            Ok(_) => {}
            Err(e) if is_primary_key_conflict(&e) => {
                let previous: Option<Option<i64>> = self.query_opt(
                    "SELECT data_id FROM tobj WHERE tid=? AND oid=?",
                    params![key.1, key.0],
                    |row| row.get(0),
                )?;
                self.exec(
                    "DELETE FROM tobj WHERE tid=? AND oid=?",
                    params![key.1, key.0],
                )?;
                self.exec("INSERT INTO tobj VALUES (?,?,?,?,?)", row)?;
                // Held before the previous one is released: both may be the same row.
                self.hold(data_id);
                if let Some(Some(previous)) = previous {
                    self.release(&[previous], true)?;
                }
                return Ok(());
            }
            Err(e) => return Err(db_error(e)),
        }
        self.hold(data_id);
        Ok(())
    }

    fn load_data(&self, data_id: i64) -> Result<StoredData> {
        let row: Option<(u8, Vec<u8>, Vec<u8>)> = self.query_opt(
            "SELECT compression, hash, value FROM data WHERE id=?",
            [data_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        let (compression, hash, value) =
            row.ok_or_else(|| BackendError::Corrupt(format!("data row {data_id} is missing")))?;
        Ok(StoredData {
            compression,
            checksum: to_checksum(&hash)?,
            value: Bytes::from(value),
        })
    }

    fn hold(&mut self, data_id: Option<i64>) {
        if let Some(data_id) = data_id {
            *self.uncommitted.entry(data_id).or_insert(0) += 1;
        }
    }

    /// Drops one in-memory reference per id; with `prune`, deletes the rows nothing
    /// references any more.
    fn release(&mut self, data_ids: &[i64], prune: bool) -> Result<()> {
        for data_id in data_ids {
            if let Some(count) = self.uncommitted.get_mut(data_id) {
                *count -= 1;
                if *count == 0 {
                    self.uncommitted.remove(data_id);
                }
            }
        }
        if prune {
            self.prune(data_ids)?;
        }
        Ok(())
    }

    /// Deletes the data rows among `data_ids` that neither `obj` nor an in-memory
    /// reference uses.
    fn prune(&mut self, data_ids: &[i64]) -> Result<usize> {
        let candidates: Vec<i64> = data_ids
            .iter()
            .copied()
            .filter(|id| !self.uncommitted.contains_key(id))
            .collect::<HashSet<i64>>()
            .into_iter()
            .collect();
        let mut deleted = 0;
        for chunk in candidates.chunks(PRUNE_CHUNK) {
            let list = join_ints(chunk);
            let used: HashSet<i64> = self
                .query_all(
                    &format!("SELECT DISTINCT data_id FROM obj WHERE data_id IN ({list})"),
                    [],
                    |row| row.get(0),
                )?
                .into_iter()
                .collect();
            let unused: Vec<i64> = chunk
                .iter()
                .copied()
                .filter(|id| !used.contains(id))
                .collect();
            if !unused.is_empty() {
                deleted += self.exec(
                    &format!("DELETE FROM data WHERE id IN ({})", join_ints(&unused)),
                    [],
                )?;
            }
        }
        Ok(deleted)
    }

    /// Deletes `obj` rows of a partition with tid > `min` (all with None), pruning data.
    fn delete_objects_after(&mut self, partition: u32, min: Option<i64>) -> Result<()> {
        let min = min.unwrap_or(-1);
        let data_ids: Vec<i64> = self.query_all(
            "SELECT DISTINCT data_id FROM obj WHERE partition=? AND ? < tid \
             AND data_id IS NOT NULL",
            params![partition, min],
            |row| row.get(0),
        )?;
        self.exec(
            "DELETE FROM obj WHERE partition=? AND ? < tid",
            params![partition, min],
        )?;
        self.prune(&data_ids)?;
        Ok(())
    }

    /// Deletes `trans` rows (and their pack orders) of a partition with tid > `min`.
    fn delete_transactions_after(&mut self, partition: u32, min: Option<i64>) -> Result<()> {
        let min = min.unwrap_or(-1);
        self.exec(
            "DELETE FROM pack WHERE tid IN \
             (SELECT tid FROM trans WHERE partition=? AND ? < tid)",
            params![partition, min],
        )?;
        self.exec(
            "DELETE FROM trans WHERE partition=? AND ? < tid",
            params![partition, min],
        )?;
        Ok(())
    }

    /// Deletes the temporary rows matching `filter` (a WHERE clause on `partition` or
    /// `ttid`/`tid` with one parameter), their pending pack orders, and the references
    /// their objects held.
    fn drop_temporary(&mut self, tobj_where: &str, ttrans_where: &str, arg: i64) -> Result<()> {
        let data_ids: Vec<i64> = self.query_all(
            &format!("SELECT data_id FROM tobj WHERE {tobj_where} AND data_id IS NOT NULL"),
            [arg],
            |row| row.get(0),
        )?;
        self.exec(&format!("DELETE FROM tobj WHERE {tobj_where}"), [arg])?;
        // Pending pack orders are keyed by TTID until unlock.
        self.exec(
            &format!(
                "DELETE FROM pack WHERE tid IN (SELECT ttid FROM ttrans WHERE {ttrans_where})"
            ),
            [arg],
        )?;
        self.exec(&format!("DELETE FROM ttrans WHERE {ttrans_where}"), [arg])?;
        self.release(&data_ids, true)
    }

    fn read_pack(
        &self,
        approved: Option<bool>,
        partial: Option<bool>,
        oids: Option<Vec<u8>>,
        pack_tid: Option<i64>,
        key: u64,
    ) -> Result<Option<PackInfo>> {
        let Some(partial) = partial else {
            return Ok(None);
        };
        Ok(Some(PackInfo {
            approved,
            partial,
            oids: oids.map(|oids| split_oids(key, &oids)).transpose()?,
            pack_tid: Tid(to_u64(pack_tid.unwrap_or(0))?),
        }))
    }
}

impl Backend for SqliteBackend {
    fn get_config(&self, key: &str) -> Result<Option<String>> {
        self.begin()?;
        let value = self
            .conn
            .prepare_cached("SELECT value FROM config WHERE name=?")
            .and_then(|mut statement| {
                statement
                    .query_row([key], |row| {
                        Ok(match row.get_ref(0)? {
                            ValueRef::Null => None,
                            ValueRef::Integer(i) => Some(i.to_string()),
                            ValueRef::Real(r) => Some(r.to_string()),
                            ValueRef::Text(t) | ValueRef::Blob(t) => {
                                Some(String::from_utf8_lossy(t).into_owned())
                            }
                        })
                    })
                    .optional()
            })
            .map_err(db_error)?;
        Ok(value.flatten())
    }

    fn set_config(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        self.begin()?;
        match value {
            None => self.exec("DELETE FROM config WHERE name=?", [key])?,
            Some(value) => self.exec("REPLACE INTO config VALUES (?,?)", [key, value])?,
        };
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if !self.conn.is_autocommit() {
            self.conn
                .prepare_cached("COMMIT")
                .and_then(|mut statement| statement.execute([]))
                .map_err(db_error)?;
        }
        Ok(())
    }

    fn erase(&mut self) -> Result<()> {
        self.begin()?;
        self.drop_tables()?;
        schema::setup(&self.conn, self.dedup)?;
        self.commit()?;
        self.load_state()
    }

    fn set_nid(&mut self, nid: Nid) -> Result<()> {
        let old = self.nid()?;
        if old == Some(nid) {
            return Ok(());
        }
        self.begin()?;
        if let Some(old) = old {
            let rows: Vec<(i64, i64, Option<i64>)> = self.query_all(
                "SELECT partition, tid, pack FROM pt WHERE nid=?",
                [old.0],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
            for (partition, tid, pack) in rows {
                self.exec(
                    "DELETE FROM pt WHERE partition=? AND nid=?",
                    params![partition, old.0],
                )?;
                let updated = self.exec(
                    "UPDATE pt SET tid=? WHERE partition=? AND nid=?",
                    params![tid, partition, nid.0],
                )?;
                if updated == 0 {
                    self.exec(
                        "INSERT INTO pt VALUES (?,?,?,?)",
                        params![partition, nid.0, tid, pack],
                    )?;
                }
            }
        }
        self.set_config("nid", Some(&nid.0.to_string()))
    }

    fn pt_rows(&self) -> Result<Vec<PtRow>> {
        let rows: Vec<(i64, i64, i64, Option<i64>)> = self.query_all(
            "SELECT partition, nid, tid, pack FROM pt ORDER BY partition, nid",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )?;
        rows.into_iter()
            .map(|(partition, nid, tid, pack)| {
                Ok(PtRow {
                    partition: u32::try_from(partition).map_err(|_| {
                        BackendError::Corrupt(format!("bad partition {partition} in pt"))
                    })?,
                    nid: Nid(i32::try_from(nid)
                        .map_err(|_| BackendError::Corrupt(format!("bad nid {nid} in pt")))?),
                    tid,
                    pack: pack.map(to_u64).transpose()?.map(Tid),
                })
            })
            .collect()
    }

    fn apply_pt_changes(
        &mut self,
        ptid: u64,
        replicas: u32,
        cells: &[(u32, Nid, CellState)],
        reset: bool,
        own: Nid,
    ) -> Result<()> {
        let own_cells: HashMap<u32, i64> = self
            .pt_rows()?
            .into_iter()
            .filter(|row| row.nid == own)
            .map(|row| (row.partition, row.tid))
            .collect();
        // A zero backup_tid means none, as in NEO/py.
        let backup_tid = self.backup_tid()?.filter(|tid| tid.0 != 0);
        let readable = |state: CellState| matches!(state, CellState::UpToDate | CellState::Feeding);
        let mut changes: Vec<(u32, Nid, Option<i64>, Option<i64>)> = Vec::new();
        for &(partition, nid, state) in cells {
            if state == CellState::Discarded {
                changes.push((partition, nid, None, None));
                continue;
            }
            let mine = nid == own;
            let pack = if !mine {
                None
            } else if readable(state) {
                Some(0)
            } else {
                Some(to_i64(self.last_pack_id.0)?)
            };
            let tid = if !mine || state != CellState::OutOfDate {
                -i64::from(state.value())
            } else {
                match own_cells.get(&partition).copied().unwrap_or(0) {
                    // Already OUT_OF_DATE: keep the replication progress.
                    progress if progress >= 0 => progress,
                    // Was readable: replication resumes after what it has.
                    -1 | -2 => match backup_tid {
                        Some(backup_tid) => to_i64(backup_tid.0)?,
                        None => self
                            .partition_last_tid(partition)?
                            .map_or(Ok(0), |t| to_i64(t.0))?,
                    },
                    // Was CORRUPTED: from scratch.
                    _ => 0,
                }
            };
            changes.push((partition, nid, Some(tid), pack));
        }
        self.begin()?;
        let mut delete: HashSet<(i64, i64)> = if reset {
            self.query_all("SELECT partition, nid FROM pt", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .into_iter()
            .collect()
        } else {
            HashSet::new()
        };
        for (partition, nid, tid, pack) in changes {
            let key = (i64::from(partition), i64::from(nid.0));
            let Some(tid) = tid else {
                delete.insert(key);
                continue;
            };
            delete.remove(&key);
            // An existing row keeps its pack status: only the state changes.
            let updated = self.exec(
                "UPDATE pt SET tid=? WHERE partition=? AND nid=?",
                params![tid, key.0, key.1],
            )?;
            if updated == 0 {
                self.exec(
                    "INSERT INTO pt VALUES (?,?,?,?)",
                    params![key.0, key.1, tid, pack],
                )?;
            }
        }
        for (partition, nid) in delete {
            self.exec(
                "DELETE FROM pt WHERE partition=? AND nid=?",
                params![partition, nid],
            )?;
        }
        self.set_config("ptid", Some(&ptid.to_string()))?;
        self.set_config("replicas", Some(&replicas.to_string()))?;
        let old_np = self.np;
        self.load_np()?;
        if reset || self.np != old_np {
            self.next_data_id.clear();
        }
        Ok(())
    }

    fn set_replication_progress(&mut self, partition: u32, own: Nid, tid: Tid) -> Result<()> {
        let current: Option<i64> = self.query_opt(
            "SELECT tid FROM pt WHERE partition=? AND nid=?",
            params![partition, own.0],
            |row| row.get(0),
        )?;
        let tid = to_i64(tid.0)?;
        match current {
            // Readable cells have no progress to record.
            Some(current) if current >= 0 && current != tid => {
                self.begin()?;
                self.exec(
                    "UPDATE pt SET tid=? WHERE partition=? AND nid=?",
                    params![tid, partition, own.0],
                )?;
                Ok(())
            }
            // Not (or no longer) assigned: nothing to record.
            _ => Ok(()),
        }
    }

    fn partition_last_tid(&self, partition: u32) -> Result<Option<Tid>> {
        let trans = self.max_tid_of("SELECT MAX(tid) FROM trans WHERE partition=?", partition)?;
        let obj = self.max_tid_of("SELECT MAX(tid) FROM obj WHERE partition=?", partition)?;
        Ok(trans.max(obj).map(Tid))
    }

    fn last_ids(&self, partitions: &[u32]) -> Result<(Option<Tid>, Option<Oid>, Tid)> {
        let mut last_tid = None;
        let mut last_oid = None;
        let mut first_tid = Tid::MAX;
        for &partition in partitions {
            last_tid = last_tid.max(self.partition_last_tid(partition)?);
            last_oid = last_oid
                .max(self.max_tid_of("SELECT MAX(oid) FROM obj WHERE partition=?", partition)?);
            let first: Option<i64> = self.query_one(
                "SELECT MIN(tid) FROM trans WHERE partition=?",
                [partition],
                |row| row.get(0),
            )?;
            if let Some(first) = first {
                first_tid = first_tid.min(Tid(to_u64(first)?));
            }
        }
        Ok((last_tid, last_oid.map(Oid), first_tid))
    }

    fn locked_transactions(&self) -> Result<Vec<(Tid, Option<Tid>)>> {
        let mut unfinished: BTreeMap<u64, Option<u64>> = BTreeMap::new();
        let tobj: Vec<i64> =
            self.query_all("SELECT DISTINCT tid FROM tobj", [], |row| row.get(0))?;
        for ttid in tobj {
            unfinished.insert(to_u64(ttid)?, None);
        }
        let ttrans: Vec<(i64, Option<i64>)> =
            self.query_all("SELECT ttid, tid FROM ttrans", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
        for (ttid, tid) in ttrans {
            unfinished.insert(to_u64(ttid)?, tid.map(to_u64).transpose()?);
        }
        Ok(unfinished
            .into_iter()
            .map(|(ttid, tid)| (Tid(ttid), tid.map(Tid)))
            .collect())
    }

    fn final_tid(&self, ttid: Tid) -> Result<Option<Tid>> {
        let partition = self.partition_of(ttid.0)?;
        let ttid = to_i64(ttid.0)?;
        // `tid>=ttid` lets SQLite use the primary key (the final TID is never smaller).
        let tid: Option<i64> = self.query_opt(
            "SELECT tid FROM trans WHERE partition=? AND tid>=? AND ttid=? LIMIT 1",
            params![partition, ttid, ttid],
            |row| row.get(0),
        )?;
        Ok(tid.map(to_u64).transpose()?.map(Tid))
    }

    fn object(
        &self,
        oid: Oid,
        at: Option<Tid>,
        before: Option<Tid>,
    ) -> Result<Option<ObjectRecord>> {
        let partition = self.partition_of(oid.0)?;
        let key = to_i64(oid.0)?;
        // One statement per load (see LoadStatements).
        type Found = (
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<(u8, Checksum, Bytes)>,
        );
        // The blobs are read in place: the hash into the checksum, the value copied once
        // into the answer's buffer.
        let map = |row: &Columns<'_>| -> Result<Found> {
            let data = match row.int(4)? {
                Some(compression) => {
                    let compression = u8::try_from(compression).map_err(|_| {
                        BackendError::Corrupt(format!("bad compression {compression}"))
                    })?;
                    let (Some(hash), Some(value)) = (row.blob(5)?, row.blob(6)?) else {
                        return Err(BackendError::Corrupt(
                            "data row without hash or value".into(),
                        ));
                    };
                    Some((
                        compression,
                        to_checksum(hash)?,
                        Bytes::copy_from_slice(value),
                    ))
                }
                None => None,
            };
            let serial = row
                .int(0)?
                .ok_or_else(|| BackendError::Corrupt("object row without tid".into()))?;
            Ok((serial, row.int(1)?, row.int(2)?, row.int(3)?, data))
        };
        self.begin()?;
        let loads = self.loads()?;
        let partition = i64::from(partition);
        let found: Option<Found> = match (at, before) {
            (Some(at), _) => loads
                .at
                .borrow_mut()
                .query_row(&[partition, key, to_i64(at.0)?], map)?,
            (None, Some(before)) => {
                // Most loads are of the current revision (the reader knows of no later
                // commit of the object): the current revision's query finds it with one
                // index search, where the general one also searches for the next serial.
                let before = to_i64(before.0)?;
                match loads
                    .current
                    .borrow_mut()
                    .query_row(&[partition, key], map)?
                {
                    Some(current) if current.0 >= before => loads
                        .before
                        .borrow_mut()
                        .query_row(&[partition, key, before], map)?,
                    found => found,
                }
            }
            (None, None) => loads
                .current
                .borrow_mut()
                .query_row(&[partition, key], map)?,
        };
        let Some((serial, data_id, value_tid, next, data)) = found else {
            return Ok(None);
        };
        let data = match (data_id, data) {
            (None, _) => None,
            (Some(_), Some((compression, checksum, value))) => Some(StoredData {
                compression,
                checksum,
                value,
            }),
            (Some(data_id), None) => {
                return Err(BackendError::Corrupt(format!(
                    "data row {data_id} is missing"
                )))
            }
        };
        Ok(Some(ObjectRecord {
            oid,
            serial: Tid(to_u64(serial)?),
            next_serial: next.map(to_u64).transpose()?.map(Tid),
            data,
            data_serial: value_tid.map(to_u64).transpose()?.map(Tid),
        }))
    }

    fn last_serial(&self, oid: Oid) -> Result<Option<Tid>> {
        let partition = self.partition_of(oid.0)?;
        let tid: Option<i64> = self.query_opt(
            "SELECT tid FROM obj WHERE partition=? AND oid=? ORDER BY tid DESC LIMIT 1",
            params![partition, to_i64(oid.0)?],
            |row| row.get(0),
        )?;
        Ok(tid.map(to_u64).transpose()?.map(Tid))
    }

    fn transaction(&self, tid: Tid, temporary: bool) -> Result<Option<TransactionRecord>> {
        type Found = (
            Option<i64>,
            Vec<u8>,
            Vec<u8>,
            Vec<u8>,
            Vec<u8>,
            bool,
            i64,
            Option<bool>,
            Option<bool>,
            Option<Vec<u8>>,
            Option<i64>,
        );
        let map = |row: &Row<'_>| -> rusqlite::Result<Found> {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
                row.get(8)?,
                row.get(9)?,
                row.get(10)?,
            ))
        };
        let key = to_i64(tid.0)?;
        let mut found = self.query_opt(
            "SELECT trans.tid, trans.oids, user, description, ext, packed, ttid, \
             approved, partial, pack.oids, pack_tid \
             FROM trans LEFT JOIN pack USING (tid) WHERE partition=? AND tid=?",
            params![self.partition_of(tid.0)?, key],
            map,
        )?;
        if found.is_none() && temporary {
            // Until unlock, the pack order is keyed by the TTID too.
            found = self.query_opt(
                "SELECT ttrans.tid, ttrans.oids, user, description, ext, packed, ttid, \
                 approved, partial, pack.oids, pack_tid \
                 FROM ttrans LEFT JOIN pack ON pack.tid = ttrans.ttid WHERE ttid=?",
                [key],
                map,
            )?;
        }
        let Some((
            final_tid,
            oids,
            user,
            description,
            extension,
            packed,
            ttid,
            approved,
            partial,
            pack_oids,
            pack_tid,
        )) = found
        else {
            return Ok(None);
        };
        let ttid = to_u64(ttid)?;
        Ok(Some(TransactionRecord {
            tid: final_tid.map(to_u64).transpose()?.map_or(tid, Tid),
            ttid: Tid(ttid),
            oids: split_oids(tid.0, &oids)?,
            user: Bytes::from(user),
            description: Bytes::from(description),
            extension: Bytes::from(extension),
            packed,
            pack: self.read_pack(approved, partial, pack_oids, pack_tid, tid.0)?,
        }))
    }

    fn object_history(&self, oid: Oid, first: u64, count: u64) -> Result<Vec<(Tid, u64)>> {
        let partition = self.partition_of(oid.0)?;
        let rows: Vec<(i64, Option<i64>)> = self.query_all(
            "SELECT tid, LENGTH(value) FROM obj LEFT JOIN data ON obj.data_id = data.id \
             WHERE partition=? AND oid=? ORDER BY tid DESC LIMIT ?,?",
            params![partition, to_i64(oid.0)?, clamp(first), clamp(count)],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        rows.into_iter()
            .map(|(tid, length)| Ok((Tid(to_u64(tid)?), to_u64(length.unwrap_or(0))?)))
            .collect()
    }

    fn tids_desc(&self, partitions: &[u32], first: u64, count: u64) -> Result<Vec<Tid>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let list = partitions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let tids: Vec<i64> = self.query_all(
            &format!(
                "SELECT tid FROM trans WHERE partition IN ({list}) ORDER BY tid DESC LIMIT ?,?"
            ),
            params![clamp(first), clamp(count)],
            |row| row.get(0),
        )?;
        tids.into_iter().map(|tid| Ok(Tid(to_u64(tid)?))).collect()
    }

    fn tids_range(&self, partition: u32, min: Tid, max: Tid, limit: usize) -> Result<Vec<Tid>> {
        let tids: Vec<i64> = self.query_all(
            "SELECT tid FROM trans WHERE partition=? AND ?<=tid AND tid<=? \
             ORDER BY tid ASC LIMIT ?",
            params![
                partition,
                to_i64(min.0)?,
                clamp_tid(max),
                clamp(limit as u64)
            ],
            |row| row.get(0),
        )?;
        tids.into_iter().map(|tid| Ok(Tid(to_u64(tid)?))).collect()
    }

    fn objects_range(
        &self,
        partition: u32,
        min: Tid,
        min_oid: Oid,
        max: Tid,
        limit: usize,
    ) -> Result<Vec<(Tid, Oid)>> {
        if max < min || limit == 0 {
            return Ok(Vec::new());
        }
        let min = to_i64(min.0)?;
        let rows: Vec<(i64, i64)> = self.query_all(
            "SELECT tid, oid FROM obj WHERE partition=? AND tid<=? \
             AND (tid>? OR tid=? AND oid>=?) ORDER BY tid, oid LIMIT ?",
            params![
                partition,
                clamp_tid(max),
                min,
                min,
                clamp(min_oid.0),
                clamp(limit as u64)
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        rows.into_iter()
            .map(|(tid, oid)| Ok((Tid(to_u64(tid)?), Oid(to_u64(oid)?))))
            .collect()
    }

    fn store_transaction(&mut self, record: &TransactionRecord, temporary: bool) -> Result<()> {
        let key = if temporary { record.ttid } else { record.tid };
        let partition = self.partition_of(key.0)?;
        if !temporary {
            // Replication may resend a transaction it stored before being interrupted.
            if let Some(existing) = self.transaction(record.tid, false)? {
                if existing == *record {
                    return Ok(());
                }
                return Err(BackendError::Invalid(format!(
                    "transaction {} is already stored with other metadata",
                    record.tid
                )));
            }
        }
        let mut oids = Vec::with_capacity(record.oids.len() * 8);
        for oid in &record.oids {
            oids.extend_from_slice(&oid.to_bytes());
        }
        let ttid = to_i64(record.ttid.0)?;
        let tid = if temporary {
            None
        } else {
            Some(to_i64(record.tid.0)?)
        };
        let sql = if temporary {
            "INSERT INTO ttrans VALUES (?,?,?,?,?,?,?,?)"
        } else {
            "INSERT OR FAIL INTO trans VALUES (?,?,?,?,?,?,?,?)"
        };
        self.begin()?;
        self.exec(
            sql,
            params![
                partition,
                tid,
                record.packed,
                oids,
                &record.user[..],
                &record.description[..],
                &record.extension[..],
                ttid,
            ],
        )?;
        if let Some(pack) = &record.pack {
            let pack_oids = pack.oids.as_ref().map(|oids| {
                oids.iter()
                    .flat_map(|oid| oid.to_bytes())
                    .collect::<Vec<u8>>()
            });
            self.exec(
                "INSERT INTO pack VALUES (?,?,?,?,?)",
                params![
                    to_i64(key.0)?,
                    pack.approved,
                    pack.partial,
                    pack_oids,
                    to_i64(pack.pack_tid.0)?
                ],
            )?;
        }
        Ok(())
    }

    fn store_object(
        &mut self,
        oid: Oid,
        serial: Tid,
        data: Option<&StoredData>,
        data_serial: Option<Tid>,
        temporary: bool,
    ) -> Result<()> {
        let partition = self.partition_of(oid.0)?;
        let key = (to_i64(oid.0)?, to_i64(serial.0)?);
        let value_tid = data_serial.map(|t| to_i64(t.0)).transpose()?;
        self.begin()?;
        if temporary {
            return self.store_temporary_object(partition, oid, key, data, data_serial);
        }
        // Replication may resend a record it stored before being interrupted: an identical
        // row is fine, a different one is an error.
        let existing: Option<(Option<i64>, Option<i64>)> = self.query_opt(
            "SELECT data_id, value_tid FROM obj WHERE partition=? AND oid=? AND tid=?",
            params![partition, key.0, key.1],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if let Some((existing_data, existing_value_tid)) = existing {
            let reused: Option<Option<i64>> = match value_tid {
                Some(value_tid) => self.query_opt(
                    "SELECT data_id FROM obj WHERE partition=? AND oid=? AND tid=?",
                    params![partition, key.0, value_tid],
                    |row| row.get(0),
                )?,
                None => None,
            };
            let same_data = match (reused, existing_data) {
                (Some(reused), existing) => reused == existing,
                (None, None) => data.is_none(),
                (None, Some(id)) => {
                    data.is_some_and(|data| self.load_data(id).is_ok_and(|stored| stored == *data))
                }
            };
            if same_data && existing_value_tid == value_tid {
                return Ok(());
            }
            return Err(BackendError::Invalid(format!(
                "object {:016x} at {serial} is already stored with other content",
                oid.0
            )));
        }
        let data_id = self.store_data(partition, oid, data, data_serial)?;
        self.exec(
            "INSERT INTO obj VALUES (?,?,?,?,?)",
            params![partition, key.0, key.1, data_id, value_tid],
        )?;
        Ok(())
    }

    fn lock_transaction(&mut self, ttid: Tid, tid: Tid) -> Result<()> {
        let ttid = to_i64(ttid.0)?;
        self.begin()?;
        self.exec(
            "UPDATE ttrans SET tid=? WHERE ttid=?",
            params![to_i64(tid.0)?, ttid],
        )?;
        // A pack order carried by this transaction is approved only when the master says
        // so (AskLockInformation.pack): the storage logic signs it with sign_pack_orders.
        // The storage logic commits (once for every transaction locked meanwhile).
        Ok(())
    }

    fn unlock_transaction(&mut self, ttid: Tid, tid: Tid) -> Result<()> {
        let ttid = to_i64(ttid.0)?;
        let tid = to_i64(tid.0)?;
        self.begin()?;
        let moved = self.exec(
            "INSERT INTO trans SELECT partition, ?, packed, oids, user, description, ext, ttid \
             FROM ttrans WHERE ttid=?",
            params![tid, ttid],
        )?;
        if moved != 0 {
            // The pack order takes the final TID as pack id.
            self.exec("UPDATE pack SET tid=? WHERE tid=?", params![tid, ttid])?;
            self.exec("DELETE FROM ttrans WHERE ttid=?", [ttid])?;
        }
        let data_ids: Vec<i64> = self.query_all(
            "SELECT data_id FROM tobj WHERE tid=? AND data_id IS NOT NULL",
            [ttid],
            |row| row.get(0),
        )?;
        self.exec(
            "INSERT INTO obj SELECT partition, oid, ?, data_id, value_tid FROM tobj WHERE tid=?",
            params![tid, ttid],
        )?;
        self.exec("DELETE FROM tobj WHERE tid=?", [ttid])?;
        // obj rows now reference the data: no pruning needed.
        self.release(&data_ids, false)
    }

    fn abort_transaction(&mut self, ttid: Tid) -> Result<()> {
        let ttid = to_i64(ttid.0)?;
        self.begin()?;
        self.drop_temporary("tid=?", "ttid=?", ttid)
    }

    fn drop_unfinished(&mut self) -> Result<()> {
        self.begin()?;
        // `WHERE 1`: every row.
        self.drop_temporary("?", "?", 1)?;
        self.commit()
    }

    fn delete_transactions(&mut self, partition: u32, tids: &[Tid]) -> Result<()> {
        self.begin()?;
        for tid in tids {
            let tid = to_i64(tid.0)?;
            self.exec("DELETE FROM pack WHERE tid=?", [tid])?;
            self.exec(
                "DELETE FROM trans WHERE partition=? AND tid=?",
                params![partition, tid],
            )?;
        }
        Ok(())
    }

    fn delete_objects(&mut self, partition: u32, records: &[(Tid, Oid)]) -> Result<()> {
        self.begin()?;
        let mut data_ids = Vec::new();
        for (serial, oid) in records {
            let key = params![partition, to_i64(oid.0)?, to_i64(serial.0)?];
            let data_id: Option<Option<i64>> = self.query_opt(
                "SELECT data_id FROM obj WHERE partition=? AND oid=? AND tid=?",
                key,
                |row| row.get(0),
            )?;
            if let Some(data_id) = data_id {
                self.exec(
                    "DELETE FROM obj WHERE partition=? AND oid=? AND tid=?",
                    params![partition, to_i64(oid.0)?, to_i64(serial.0)?],
                )?;
                data_ids.extend(data_id);
            }
        }
        self.prune(&data_ids)?;
        Ok(())
    }

    fn drop_partitions(&mut self, partitions: &[u32]) -> Result<()> {
        self.begin()?;
        for &partition in partitions {
            self.drop_temporary("partition=?", "partition=?", i64::from(partition))?;
            self.delete_objects_after(partition, None)?;
            self.delete_transactions_after(partition, None)?;
        }
        Ok(())
    }

    fn truncate(&mut self, partitions: &[u32], own: Nid, tid: Tid) -> Result<()> {
        let max = to_i64(tid.0)?;
        self.begin()?;
        for &partition in partitions {
            // Replication progress beyond the truncation point is lowered to it.
            self.exec(
                "UPDATE pt SET tid=? WHERE partition=? AND nid=? AND tid>?",
                params![max, partition, own.0, max],
            )?;
            self.delete_transactions_after(partition, Some(max))?;
            self.delete_objects_after(partition, Some(max))?;
        }
        self.set_config("truncate_tid", None)?;
        self.commit()
    }

    /// `pack.approved` set in place; pending orders are still keyed by their TTID, which
    /// is what the storage passes at lock time.
    fn sign_pack_orders(&mut self, approved: &[Tid], rejected: &[Tid]) -> Result<Vec<Tid>> {
        let mut found = Vec::new();
        let signed = approved
            .iter()
            .map(|id| (*id, true))
            .chain(rejected.iter().map(|id| (*id, false)));
        for (id, verdict) in signed {
            self.begin()?;
            let changed = self.exec(
                "UPDATE pack SET approved=? WHERE tid=?",
                params![verdict, to_i64(id.0)?],
            )?;
            if changed != 0 {
                found.push(id);
            }
        }
        Ok(found)
    }

    fn set_pack_progress(&mut self, partition: u32, own: Nid, pack_id: Tid) -> Result<()> {
        self.begin()?;
        self.exec(
            "UPDATE pt SET pack=? WHERE partition=? AND nid=?",
            params![to_i64(pack_id.0)?, partition, own.0],
        )?;
        Ok(())
    }

    /// From the `pack` table, as NEO/py does: pending orders (keyed by the TTID of a
    /// transaction being committed, not signed yet) are listed too.
    fn pack_orders(&self, partitions: &[u32], min: Tid) -> Result<Vec<(Tid, PackInfo)>> {
        if partitions.is_empty() || self.np == 0 {
            return Ok(Vec::new());
        }
        type Found = (i64, Option<bool>, bool, Option<Vec<u8>>, Option<i64>);
        let list = join_ints(&partitions.iter().map(|&p| i64::from(p)).collect::<Vec<_>>());
        let rows: Vec<Found> = self.query_all(
            &format!(
                "SELECT tid, approved, partial, oids, pack_tid FROM pack \
                 WHERE tid >= ? AND tid % {} IN ({list}) ORDER BY tid",
                self.np
            ),
            [clamp(min.0)],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )?;
        rows.into_iter()
            .map(|(id, approved, partial, oids, pack_tid)| {
                let id = to_u64(id)?;
                let pack = self
                    .read_pack(approved, Some(partial), oids, pack_tid, id)?
                    .ok_or_else(|| BackendError::Corrupt(format!("pack order {id:016x}")))?;
                Ok((Tid(id), pack))
            })
            .collect()
    }
}

/// The queries of a load, prepared once for the connection's life (see [`Prepared`]).
/// Each is one statement: the revision, its data (LEFT JOIN: a deletion has none) and, for
/// a non-current revision, the next serial (the current revision has none by definition).
/// Columns: tid, data_id, value_tid, next serial, compression, hash, value.
struct LoadStatements {
    /// The current revision: (partition, oid).
    current: RefCell<Prepared>,
    /// The revision of a serial: (partition, oid, serial).
    at: RefCell<Prepared>,
    /// The last revision before a TID: (partition, oid, tid).
    before: RefCell<Prepared>,
}

/// The next serial of the selected revision, for the loads that need it.
const NEXT_SERIAL: &str = "(SELECT n.tid FROM obj AS n WHERE n.partition=o.partition \
     AND n.oid=o.oid AND n.tid>o.tid ORDER BY n.tid LIMIT 1)";

/// A load statement: the columns of [`LoadStatements`], with `next` for the next serial,
/// for (partition, oid) and whatever `filter` adds.
fn load_sql(next: &str, filter: &str) -> String {
    format!(
        "SELECT o.tid, o.data_id, o.value_tid, {next}, d.compression, d.hash, d.value \
         FROM obj AS o LEFT JOIN data AS d ON d.id=o.data_id \
         WHERE o.partition=? AND o.oid=? {filter}"
    )
}

impl LoadStatements {
    fn prepare(conn: &Connection) -> Result<LoadStatements> {
        let prepare = |sql: String| Prepared::new(conn, &sql).map(RefCell::new);
        Ok(LoadStatements {
            current: prepare(load_sql("NULL", "ORDER BY o.tid DESC LIMIT 1"))?,
            at: prepare(load_sql(NEXT_SERIAL, "AND o.tid=?"))?,
            before: prepare(load_sql(
                NEXT_SERIAL,
                "AND o.tid<? ORDER BY o.tid DESC LIMIT 1",
            ))?,
        })
    }
}

pub(crate) fn db_error(e: rusqlite::Error) -> BackendError {
    BackendError::Database(e.to_string())
}

fn is_dedup_conflict(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            failure.code == ErrorCode::ConstraintViolation
                && failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && message.as_deref().is_some_and(|m| m.contains("data.hash"))
        }
        _ => false,
    }
}

fn is_primary_key_conflict(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// TIDs and OIDs are signed 64-bit integers in SQLite (hence MAX_TID = 2^63-1).
fn to_i64(value: u64) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| BackendError::Invalid(format!("{value:#x} does not fit in 63 bits")))
}

fn to_u64(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| BackendError::Corrupt(format!("negative id {value}")))
}

/// For bounds and limits, where anything above 2^63-1 means "no limit".
fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn clamp_tid(tid: Tid) -> i64 {
    clamp(tid.0)
}

fn to_checksum(hash: &[u8]) -> Result<Checksum> {
    Checksum::try_from(hash)
        .map_err(|_| BackendError::Corrupt(format!("data hash of {} bytes", hash.len())))
}

/// `trans.oids` and `pack.oids`: concatenated 8-byte big-endian OIDs.
fn split_oids(tid: u64, oids: &[u8]) -> Result<Vec<Oid>> {
    if oids.len() % 8 != 0 {
        return Err(BackendError::Corrupt(format!(
            "invalid oids length for tid {tid:016x}: {}",
            oids.len()
        )));
    }
    Ok(oids
        .chunks_exact(8)
        .map(|chunk| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(chunk);
            Oid(u64::from_be_bytes(bytes))
        })
        .collect())
}

fn join_ints(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
