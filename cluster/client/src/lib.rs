//! A blocking Rust API to a NEO cluster: [`Client::connect`] puts the client logic
//! (`neo-client-core`) behind a lock shared by the calling threads, one reader thread per
//! connection and a timer thread (`driver.rs`); each method submits an operation from the
//! caller's own thread and waits for its completion (cache hits complete at once).
//!
//! The methods mirror what ZODB needs of a storage (zodb-storage-api.md) so that the Python
//! adapter only translates: loads, OIDs, the two-phase commit with caller-side conflict
//! resolution, undo, the transaction iterator, pack, sync, and the ordered stream of
//! invalidations ([`Client::poll_invalidations`] or a callback).
//!
//! Must not hold node logic (that is `neo-client-core`); nothing here is sans-IO.

mod driver;

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use neo_client_core::codec::{Codec, Encoded};
use neo_client_core::Operation;
pub use neo_client_core::Reply;
pub use neo_client_core::{
    CacheStats, ClientError, Conflict, HistoryEntry, Invalidation, ObjectRecord, TransactionInfo,
    TransactionMeta,
};
use neo_protocol::{Address, Bytes, Oid, Tid, UndoSerial};

/// Receives each invalidation, in order, on whichever client thread processed it, with the
/// client's lock held: it must not call the client back.
pub type InvalidationCallback = Arc<dyn Fn(&Invalidation) + Send + Sync>;

/// How to reach the cluster and treat data (tools.md 7.1).
#[derive(Clone)]
pub struct ClientConfig {
    /// Master addresses (`host:port`).
    pub masters: Vec<String>,
    pub cluster: String,
    pub compress: bool,
    /// zlib level 1..=9.
    pub compression_level: u32,
    /// Cache capacity in bytes.
    pub cache_size: usize,
    pub read_only: bool,
    pub ignore_wrong_checksum: bool,
    /// How long a call waits before giving up (the operation may still complete).
    pub timeout: Duration,
    /// Called in order for every invalidation (ZODB's `DB.invalidate`), from a client
    /// thread holding the client's lock (so it must not call the client); invalidations
    /// are also queued for [`Client::poll_invalidations`].
    pub on_invalidation: Option<InvalidationCallback>,
    /// Whether a caller waiting for a read's answer polls for it for a few microseconds
    /// before sleeping, while answers keep coming that fast and no other thread wants the
    /// CPU: this saves the two thread wakeups of a round trip (`neo_net::spin`).
    pub spin: bool,
}

impl ClientConfig {
    pub fn new(masters: Vec<String>, cluster: impl Into<String>) -> ClientConfig {
        ClientConfig {
            masters,
            cluster: cluster.into(),
            compress: true,
            compression_level: 6,
            cache_size: 20 * 1024 * 1024,
            read_only: false,
            ignore_wrong_checksum: false,
            timeout: Duration::from_secs(60),
            on_invalidation: None,
            spin: true,
        }
    }
}

/// What a connection attempt or a call can fail with, beyond the cluster's own errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("bad master address {0}")]
    BadAddress(String),
    #[error("cannot start the network: {0}")]
    Network(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply {0:?}")]
    Unexpected(Box<Reply>),
    /// A conflict the resolver could not resolve (ZODB ConflictError).
    #[error("unresolved conflict on {oid}")]
    Conflict {
        oid: Oid,
        serial: Tid,
        committed_serial: Tid,
    },
    #[error("undo error: {0}")]
    Undo(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The outcome of a vote.
#[derive(Debug, Clone, PartialEq)]
pub enum Vote {
    /// Resolve these, store again (with `serial = committed_serial`), vote again.
    Conflicts(Vec<Conflict>),
    /// Voted; these OIDs had resolved conflicts (ZODB reloads them).
    Voted(Vec<Oid>),
}

/// One object record of the transaction iterator.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub oid: Oid,
    pub tid: Tid,
    /// None for a deletion or an undone creation.
    pub data: Option<Bytes>,
    /// The transaction whose data this record points back to (undo).
    pub data_txn: Option<Tid>,
}

/// One transaction of the iterator, with its records.
#[derive(Debug, Clone, PartialEq)]
pub struct IteratedTransaction {
    pub info: TransactionInfo,
    pub records: Vec<Record>,
}

/// A connected client. Cheap to share by reference across threads (`&Client` is Sync).
pub struct Client {
    shared: Arc<driver::Shared>,
    invalidations: Arc<Mutex<VecDeque<Invalidation>>>,
    timeout: Duration,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    /// Starts the client and waits until it is connected to the primary master with an
    /// operational partition table.
    pub fn connect(config: ClientConfig) -> Result<Client> {
        let masters = config
            .masters
            .iter()
            .map(|m| {
                let socket: SocketAddr = m
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| Error::BadAddress(m.clone()))?;
                Ok(Address::from_socket_addr(socket))
            })
            .collect::<Result<Vec<Address>>>()?;
        let mut core = neo_client_core::Config::new(masters, config.cluster.clone());
        core.read_only = config.read_only;
        core.cache_size = config.cache_size;
        core.compress = config.compress;
        core.compression_level = config.compression_level;
        core.ignore_wrong_checksum = config.ignore_wrong_checksum;
        core.seed = driver::random_seed();
        let invalidations = Arc::new(Mutex::new(VecDeque::new()));
        let (shared, thread) = driver::start(
            core,
            invalidations.clone(),
            config.on_invalidation.clone(),
            config.spin,
        )?;
        let client = Client {
            shared,
            invalidations,
            timeout: config.timeout,
            thread: Some(thread),
        };
        client.last_transaction()?;
        Ok(client)
    }

    fn call(&self, operation: Operation) -> Result<Reply> {
        match self.shared.call(operation, self.timeout) {
            driver::CallResult::Done(result) => Ok(result?),
            driver::CallResult::TimedOut => Err(Error::Timeout(self.timeout)),
        }
    }

    pub fn new_oid(&self) -> Result<Oid> {
        match self.call(Operation::NewOid)? {
            Reply::Oid(oid) => Ok(oid),
            other => Err(unexpected(other)),
        }
    }

    /// The current revision: (data, serial). A deleted object is `OidDoesNotExist`.
    pub fn load(&self, oid: Oid) -> Result<(Bytes, Tid)> {
        let record = self
            .object(Operation::Load { oid })?
            .ok_or(ClientError::OidDoesNotExist(oid))?;
        match record.data {
            Some(data) => Ok((data, record.serial)),
            None => Err(ClientError::OidDoesNotExist(oid).into()),
        }
    }

    /// The revision valid before `before`, or None if the object has none.
    pub fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<ObjectRecord>> {
        self.object(Operation::LoadBefore { oid, before })
    }

    pub fn load_serial(&self, oid: Oid, serial: Tid) -> Result<ObjectRecord> {
        self.object(Operation::LoadSerial { oid, serial })?
            .ok_or_else(|| ClientError::OidNotFound(oid).into())
    }

    fn object(&self, operation: Operation) -> Result<Option<ObjectRecord>> {
        match self.call(operation)? {
            Reply::Object(record) => Ok(Some(record)),
            Reply::None => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    pub fn last_transaction(&self) -> Result<Tid> {
        match self.call(Operation::LastTransaction)? {
            Reply::Tid(tid) => Ok(tid),
            other => Err(unexpected(other)),
        }
    }

    pub fn history(&self, oid: Oid, size: u64) -> Result<Vec<HistoryEntry>> {
        match self.call(Operation::History { oid, size })? {
            Reply::History(entries) => Ok(entries),
            other => Err(unexpected(other)),
        }
    }

    pub fn transaction_information(&self, tid: Tid) -> Result<TransactionInfo> {
        match self.call(Operation::TransactionInformation { tid })? {
            Reply::Transaction(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// ZODB's `undoLog(first, last)`: transactions newest first (approximate, as NEO/py).
    pub fn undo_log(&self, first: u64, last: u64) -> Result<Vec<TransactionInfo>> {
        let tids = match self.call(Operation::UndoLogTids { first, last })? {
            Reply::Tids(tids) => tids,
            other => return Err(unexpected(other)),
        };
        let mut infos = Vec::new();
        for tid in tids {
            match self.transaction_information(tid) {
                Ok(info) => infos.push(info),
                Err(Error::Client(ClientError::TidNotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(infos)
    }

    /// Up to `length` TIDs in `[min, max]`, oldest first.
    pub fn tids_from(&self, min: Tid, max: Tid, length: u32) -> Result<Vec<Tid>> {
        match self.call(Operation::TidsFrom { min, max, length })? {
            Reply::Tids(tids) => Ok(tids),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a transaction; `tid` imposes its TID (imports, restore). Returns the TTID
    /// naming it in the other calls.
    pub fn tpc_begin(&self, tid: Option<Tid>, meta: TransactionMeta) -> Result<Tid> {
        match self.call(Operation::TpcBegin { tid, meta })? {
            Reply::Tid(ttid) => Ok(ttid),
            other => Err(unexpected(other)),
        }
    }

    pub fn store(&self, ttid: Tid, oid: Oid, serial: Tid, data: Bytes) -> Result<()> {
        self.done(Operation::Store {
            ttid,
            oid,
            serial,
            data,
            data_serial: None,
        })
    }

    /// Stores a record whose data comes from transaction `data_txn` (restore, undo).
    pub fn restore(
        &self,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        data: Option<Bytes>,
        data_txn: Option<Tid>,
    ) -> Result<()> {
        match data {
            Some(data) => self.done(Operation::Store {
                ttid,
                oid,
                serial,
                data,
                data_serial: data_txn,
            }),
            None => self.delete_object(ttid, oid, serial),
        }
    }

    /// [`Client::restore`] of data the caller encoded itself with a [`Codec`] (the
    /// compression it wants), e.g. in other threads while this one waits for the cluster.
    pub fn restore_encoded(
        &self,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        data: Bytes,
        encoded: Encoded,
        data_txn: Option<Tid>,
    ) -> Result<()> {
        self.done(Operation::StoreEncoded {
            ttid,
            oid,
            serial,
            data,
            encoded,
            data_serial: data_txn,
        })
    }

    pub fn check_current_serial(&self, ttid: Tid, oid: Oid, serial: Tid) -> Result<()> {
        self.done(Operation::CheckCurrentSerial { ttid, oid, serial })
    }

    pub fn delete_object(&self, ttid: Tid, oid: Oid, serial: Tid) -> Result<()> {
        self.done(Operation::DeleteObject { ttid, oid, serial })
    }

    /// Attaches a pack order (reflink's API; `pack` uses it).
    pub fn set_pack_order(&self, ttid: Tid, oids: Option<Vec<Oid>>, pack_tid: Tid) -> Result<()> {
        self.done(Operation::SetPackOrder {
            ttid,
            oids,
            pack_tid,
        })
    }

    pub fn tpc_vote(&self, ttid: Tid) -> Result<Vote> {
        match self.call(Operation::TpcVote { ttid })? {
            Reply::Conflicts(conflicts) => Ok(Vote::Conflicts(conflicts)),
            Reply::Voted { resolved } => Ok(Vote::Voted(resolved)),
            other => Err(unexpected(other)),
        }
    }

    /// Votes, resolving conflicts with `resolve(conflict) -> merged data` (ZODB's
    /// `tryToResolveConflict`); None from it is a ConflictError.
    pub fn tpc_vote_resolving(
        &self,
        ttid: Tid,
        mut resolve: impl FnMut(&Conflict) -> Option<Bytes>,
    ) -> Result<Vec<Oid>> {
        loop {
            match self.tpc_vote(ttid)? {
                Vote::Voted(resolved) => return Ok(resolved),
                Vote::Conflicts(conflicts) => {
                    for conflict in conflicts {
                        let Some(data) = resolve(&conflict) else {
                            return Err(Error::Conflict {
                                oid: conflict.oid,
                                serial: conflict.serial,
                                committed_serial: conflict.committed_serial,
                            });
                        };
                        self.store(ttid, conflict.oid, conflict.committed_serial, data)?;
                    }
                }
            }
        }
    }

    /// Commits a voted transaction; returns its TID.
    pub fn tpc_finish(&self, ttid: Tid) -> Result<Tid> {
        match self.call(Operation::TpcFinish { ttid })? {
            Reply::Tid(tid) => Ok(tid),
            other => Err(unexpected(other)),
        }
    }

    /// Commits a voted transaction like [`Client::tpc_finish`], calling `sent` once the
    /// request is queued on the master's connection, before waiting for the answer: a
    /// finish asked for after `sent` reaches the master after this one (a migration
    /// overlaps its finishes this way, still in TID order).
    pub fn tpc_finish_then(&self, ttid: Tid, sent: impl FnOnce()) -> Result<Tid> {
        let reply = match self
            .shared
            .call_then(Operation::TpcFinish { ttid }, self.timeout, sent)
        {
            driver::CallResult::Done(result) => result?,
            driver::CallResult::TimedOut => return Err(Error::Timeout(self.timeout)),
        };
        match reply {
            Reply::Tid(tid) => Ok(tid),
            other => Err(unexpected(other)),
        }
    }

    /// Runs `f`, holding back the requests this thread makes in it that complete at once
    /// (stores, deletions, checks) and sending them together when it returns: one write
    /// per storage for a transaction's stores instead of one each (a migration's). A call
    /// in `f` that waits for an answer sends what was held back, and holds nothing back
    /// afterwards.
    pub fn corked<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Uncork;
        impl Drop for Uncork {
            fn drop(&mut self) {
                driver::uncork();
            }
        }
        if !driver::cork() {
            return f();
        }
        let _uncork = Uncork;
        f()
    }

    pub fn tpc_abort(&self, ttid: Tid) -> Result<()> {
        self.done(Operation::TpcAbort { ttid })
    }

    /// ZODB's `undo(tid)` inside transaction `ttid`: stores what undoing needs and returns
    /// the OIDs touched. Objects changed since need `resolve(oid, current_serial,
    /// undo_data, current_data)` (ZODB's conflict resolution); None is an UndoError.
    pub fn undo(
        &self,
        ttid: Tid,
        undone_tid: Tid,
        mut resolve: impl FnMut(Oid, Tid, Option<&Bytes>, Option<&Bytes>) -> Option<Bytes>,
    ) -> Result<Vec<Oid>> {
        let serials: Vec<(Oid, UndoSerial)> =
            match self.call(Operation::ObjectUndoSerial { ttid, undone_tid })? {
                Reply::UndoSerials(serials) => serials,
                other => return Err(unexpected(other)),
            };
        let mut oids = Vec::new();
        for (oid, undo) in serials {
            let undo_data = match undo.undo_serial {
                Some(serial) => self.load_serial(oid, serial)?.data,
                None => None,
            };
            if undo.is_current {
                match (undo.undo_serial, undo_data) {
                    (Some(serial), Some(data)) => self.done(Operation::Store {
                        ttid,
                        oid,
                        serial: undo.current_serial,
                        data,
                        data_serial: Some(serial),
                    })?,
                    // Undoing the creation (or back to a deletion): store a deletion.
                    _ => self.delete_object(ttid, oid, undo.current_serial)?,
                }
            } else {
                let current = self.load_serial(oid, undo.current_serial)?.data;
                let Some(data) = resolve(
                    oid,
                    undo.current_serial,
                    undo_data.as_ref(),
                    current.as_ref(),
                ) else {
                    return Err(Error::Undo(format!("{oid} was modified since")));
                };
                self.store(ttid, oid, undo.current_serial, data)?;
            }
            oids.push(oid);
        }
        Ok(oids)
    }

    /// ZODB's `pack(t)`: commits a pack order at `min(pack_tid, last TID)`; with `wait`,
    /// returns once the storages packed.
    pub fn pack(&self, pack_tid: Tid, oids: Option<Vec<Oid>>, wait: bool) -> Result<()> {
        let pack_tid = pack_tid.min(self.last_transaction()?);
        if pack_tid == Tid::ZERO {
            return Ok(());
        }
        let meta = TransactionMeta {
            description: Bytes::from_static(b"IStorage.pack"),
            ..TransactionMeta::default()
        };
        let ttid = self.tpc_begin(None, meta)?;
        let result = (|| {
            self.set_pack_order(ttid, oids, pack_tid)?;
            self.tpc_vote_resolving(ttid, |_| None)?;
            self.tpc_finish(ttid)
        })();
        let tid = match result {
            Ok(tid) => tid,
            Err(e) => {
                let _ = self.tpc_abort(ttid);
                return Err(e);
            }
        };
        if wait {
            self.done(Operation::WaitForPack { tid })?;
        }
        Ok(())
    }

    /// A barrier with the master: invalidations committed before are received after.
    pub fn sync(&self) -> Result<()> {
        self.done(Operation::Sync)
    }

    /// Transactions in `[start, stop]` (stop defaults to, and is capped at, the last TID).
    pub fn iterator(
        &self,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> Result<TransactionIterator<'_>> {
        let last = self.last_transaction()?;
        Ok(TransactionIterator {
            client: self,
            next: start.unwrap_or(Tid::ZERO),
            stop: stop.map_or(last, |s| s.min(last)),
            buffer: VecDeque::new(),
            done: false,
        })
    }

    /// Invalidations received since the last call, in commit order. When more than
    /// `MAX_QUEUED_INVALIDATIONS` (10 000) wait, they are replaced by one
    /// [`Invalidation::All`] (as after a reconnection), so that a client whose user never
    /// polls does not grow without bound.
    pub fn poll_invalidations(&self) -> Vec<Invalidation> {
        let mut queue = self.invalidations.lock().unwrap_or_else(|e| e.into_inner());
        queue.drain(..).collect()
    }

    pub fn cache_stats(&self) -> Result<CacheStats> {
        Ok(self.shared.cache_stats())
    }

    /// Closes every connection and stops the background thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.shared.close();
            let _ = thread.join();
        }
    }

    fn done(&self, operation: Operation) -> Result<()> {
        match self.call(operation)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unexpected(reply: Reply) -> Error {
    Error::Unexpected(Box::new(reply))
}

/// Iterates transactions by chunks of 100 TIDs (tools.md 7.3).
pub struct TransactionIterator<'a> {
    client: &'a Client,
    next: Tid,
    stop: Tid,
    buffer: VecDeque<Tid>,
    done: bool,
}

impl Iterator for TransactionIterator<'_> {
    type Item = Result<IteratedTransaction>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            if self.next > self.stop {
                self.done = true;
                return None;
            }
            match self.client.tids_from(self.next, self.stop, 100) {
                Ok(tids) => {
                    if tids.len() < 100 {
                        self.done = true;
                    }
                    if let Some(last) = tids.last() {
                        self.next = Tid(last.0 + 1);
                    }
                    self.buffer.extend(tids);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let tid = self.buffer.pop_front()?;
        Some(self.transaction(tid))
    }
}

impl TransactionIterator<'_> {
    fn transaction(&self, tid: Tid) -> Result<IteratedTransaction> {
        let info = self.client.transaction_information(tid)?;
        let mut records = Vec::new();
        for &oid in &info.oids {
            match self.client.load_serial(oid, tid) {
                Ok(record) => records.push(Record {
                    oid,
                    tid,
                    data: record.data,
                    data_txn: record.data_serial,
                }),
                // Removed by a pack, or only checked in that transaction.
                Err(Error::Client(
                    ClientError::OidNotFound(_) | ClientError::OidDoesNotExist(_),
                )) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(IteratedTransaction { info, records })
    }
}
