//! The storage's side of two-phase commit (cluster.md 5.3-5.14, 6.2): write locks taken by
//! stores and checkCurrent, delayed requests, deadlock avoidance, vote, lock, unlock and
//! abort, lockless writes to partitions being replicated and their conversion into locks,
//! read locks between lock and unlock, and undo serials.
//!
//! Per transaction (by TTID) the manager keeps the serial each oid was stored or checked
//! against, the stored data (kept in memory until the vote writes `tobj`, so that a
//! relock can give it back to the client), the lockless oids and the vote status.
//! Globally: write locks `oid → ttid`, read locks `oid → ttid`, and two queues of
//! delayed requests: writes sorted by TTID (older transactions get a released lock
//! first), reads in arrival order. Both are re-run whenever locks are released, reads
//! first. A delayed request whose connection closed meanwhile is dropped.

use std::collections::{BTreeMap, BTreeSet};

use neo_node::{ConnId, Outbox, Time};
use neo_protocol::{
    AnswerCheckCurrentSerial, AnswerInformationLocked, AnswerRelockObject, AnswerStoreObject,
    AnswerStoreTransaction, AnswerVoteTransaction, AskStoreObject, AskStoreTransaction, Checksum,
    ErrorCode, Nid, NotifyDeadlock, NotifyReplicationDone, ObjectData, Oid, PackInfo, Packet,
    RelockConflict, Tid, UndoSerial, ZERO_HASH,
};
use sha1::{Digest, Sha1};
use tracing::{debug, info, warn};

use crate::backend::{Backend, StoredData, TransactionRecord};
use crate::node::{Fail, Handled, LinkKind, Storage};

/// NEO/py enforces MySQL's MEDIUMBLOB limit on every backend: fewer than 2^21 oids.
const MAX_OIDS: usize = 0x20_0000;

/// A store is answered this when it was accepted without lock, or ignored.
const LOCKLESS: Option<Tid> = Some(Tid(0));

/// How long an unlocked transaction may stay uncommitted (5.9 step 2).
const DEFERRED_COMMIT: Time = 1.0;

#[derive(Debug, Default)]
pub(crate) struct TransactionManager {
    transactions: BTreeMap<Tid, Transaction>,
    write_locks: BTreeMap<Oid, Tid>,
    read_locks: BTreeMap<Oid, Tid>,
    /// Partitions being replicated: stores there are accepted without lock (5.6).
    replicating: BTreeSet<u32>,
    /// Partitions replicated up to a TID, waiting for the master's confirmation; None
    /// once NotifyReplicationDone was sent.
    replicated: BTreeMap<u32, Option<Tid>>,
    /// Delayed stores, checks and relocks, sorted by TTID (stable).
    write_queue: Vec<(Tid, Delayed)>,
    /// Delayed reads, in arrival order.
    read_queue: Vec<(ConnId, u32, Packet)>,
    executing: bool,
    /// Locks were released while the queues were being run: run them again.
    again: bool,
    /// When the unlocked transactions must be committed at the latest.
    pub(crate) commit_at: Option<Time>,
}

#[derive(Debug)]
struct Transaction {
    /// The client that stores (to send it NotifyDeadlock, and to abort on its loss).
    nid: Option<Nid>,
    /// The final TID, once locked.
    tid: Option<Tid>,
    voted: Vote,
    /// The transaction carries a pack order (stored at vote).
    pack: bool,
    serials: BTreeMap<Oid, Tid>,
    stores: BTreeMap<Oid, Stored>,
    lockless: BTreeSet<Oid>,
    /// Oids for which NotifyDeadlock was sent (once per oid until relocked).
    deadlock: BTreeSet<Oid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vote {
    No,
    /// AskVoteTransaction: objects only.
    Objects,
    /// AskStoreTransaction: this node also holds the metadata.
    Metadata,
}

#[derive(Debug, Clone)]
struct Stored {
    /// None for a deletion (or the undo of a creation).
    data: Option<StoredData>,
    data_serial: Option<Tid>,
    /// The data is that of the committed record `(oid, data_serial)`: the backend reuses
    /// it rather than storing a copy.
    reuse: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Delayed {
    Store {
        conn: ConnId,
        msg_id: u32,
        store: AskStoreObject,
    },
    Check {
        conn: ConnId,
        msg_id: u32,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
    },
    Relock {
        conn: ConnId,
        msg_id: u32,
        ttid: Tid,
        oid: Oid,
    },
}

impl Delayed {
    fn conn(&self) -> ConnId {
        match self {
            Delayed::Store { conn, .. }
            | Delayed::Check { conn, .. }
            | Delayed::Relock { conn, .. } => *conn,
        }
    }
}

/// The outcome of trying to take a write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    Locked,
    Lockless,
    /// Retry when locks are released.
    Delay,
    /// The serial committed for the object, newer than the one the client based on.
    Conflict(Tid),
    /// The partition is not ours (yet): the store is ignored.
    NonReadable,
}

impl TransactionManager {
    /// Whether a locked, not yet unlocked transaction has a TID <= `tid` (6.5).
    pub(crate) fn is_locked_tid(&self, tid: Tid) -> bool {
        self.transactions
            .values()
            .any(|t| t.tid.is_some_and(|locked| locked <= tid))
    }

    /// Transactions in progress here that have not voted yet (they may bring a vote).
    pub(crate) fn unvoted_count(&self) -> usize {
        self.transactions
            .values()
            .filter(|t| t.tid.is_none() && t.voted == Vote::No)
            .count()
    }

    pub(crate) fn is_read_locked(&self, oid: Oid) -> bool {
        self.read_locks.contains_key(&oid)
    }

    pub(crate) fn delay_read(&mut self, conn: ConnId, msg_id: u32, packet: Packet) {
        self.read_queue.push((conn, msg_id, packet));
    }

    /// The final TID of a transaction this node is committing, if locked.
    pub(crate) fn final_tid(&self, ttid: Tid) -> Option<Tid> {
        self.transactions.get(&ttid).and_then(|t| t.tid)
    }

    /// Stores to these partitions are accepted without lock from now on (6.1 step 1).
    pub(crate) fn replicating(&mut self, partitions: &[u32]) {
        self.replicating.extend(partitions.iter().copied());
    }

    /// Own cells became readable: the master confirmed the replication.
    pub(crate) fn readable(&mut self, partitions: &[u32]) {
        for partition in partitions {
            self.replicated.remove(partition);
        }
    }

    /// Transactions in progress (for tests and logs): (ttid, final tid, voted).
    pub(crate) fn summary(&self) -> Vec<(Tid, Option<Tid>, bool)> {
        self.transactions
            .iter()
            .map(|(ttid, t)| (*ttid, t.tid, t.voted != Vote::No))
            .collect()
    }

    pub(crate) fn write_locks(&self) -> Vec<(Oid, Tid)> {
        self.write_locks.iter().map(|(o, t)| (*o, *t)).collect()
    }
}

/// SHA-1 of the data as sent, the checksum NEO stores (8 item 14).
pub(crate) fn sha1(data: &[u8]) -> Checksum {
    Sha1::digest(data).into()
}

impl<B: Backend> Storage<B> {
    /// Transactions in progress on this node: (ttid, final tid once locked, voted).
    pub fn transactions(&self) -> Vec<(Tid, Option<Tid>, bool)> {
        self.tm.summary()
    }

    /// Write locks held: (oid, ttid).
    pub fn write_locks(&self) -> Vec<(Oid, Tid)> {
        self.tm.write_locks()
    }

    pub(crate) fn partition(&self, id: u64) -> u32 {
        self.table.partition_of(id).unwrap_or(0)
    }

    // --- Client requests -------------------------------------------------------------

    /// AskStoreObject (5.3).
    pub(crate) fn ask_store_object(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        store: AskStoreObject,
        out: &mut Outbox,
    ) -> Handled {
        if store.compression > 1 {
            return Err(Fail::Protocol("invalid compression value".into()));
        }
        if (!store.data.is_empty() || store.checksum != ZERO_HASH)
            && sha1(&store.data) != store.checksum
        {
            return Err(Fail::Protocol("invalid checksum".into()));
        }
        self.register(conn, store.ttid);
        self.run_store(conn, msg_id, store, out)
    }

    /// AskCheckCurrentSerial (5.3): the locking procedure without data.
    pub(crate) fn ask_check_current_serial(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        out: &mut Outbox,
    ) -> Handled {
        self.register(conn, ttid);
        if self
            .tm
            .transactions
            .get(&ttid)
            .is_some_and(|t| t.serials.contains_key(&oid))
        {
            return Err(Fail::Protocol(format!(
                "{oid} already stored or checked by {ttid}"
            )));
        }
        self.run_check(conn, msg_id, ttid, oid, serial, out)
    }

    /// AskRelockObject (5.5): give the lock back, let older transactions take it, then
    /// take it again (now or later).
    pub(crate) fn ask_relock_object(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        ttid: Tid,
        oid: Oid,
        out: &mut Outbox,
    ) -> Handled {
        let relockable = match self.tm.transactions.get_mut(&ttid) {
            Some(txn) if txn.serials.contains_key(&oid) => {
                if txn.lockless.contains(&oid) {
                    return Err(Fail::Protocol(format!("{oid} was stored without lock")));
                }
                txn.deadlock.remove(&oid);
                true
            }
            _ => false,
        };
        if relockable {
            if self.tm.write_locks.get(&oid) == Some(&ttid) {
                self.tm.write_locks.remove(&oid);
            }
            // The younger transaction that was refused this lock should get it now.
            self.run_queued(out)?;
        } else {
            info!("forget relock of {oid} by {ttid}");
        }
        self.run_relock(conn, msg_id, ttid, oid, out)
    }

    /// AskStoreTransaction and AskVoteTransaction (5.7).
    pub(crate) fn vote(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        ttid: Tid,
        metadata: Option<AskStoreTransaction>,
    ) -> Handled {
        if metadata.is_some() {
            self.register(conn, ttid);
        }
        let Some(txn) = self.tm.transactions.get_mut(&ttid) else {
            return Err(Fail::Protocol(format!("unknown ttid {ttid}")));
        };
        debug!("vote of {ttid}");
        let record = match metadata {
            Some(ask) => {
                let pack_oids = ask
                    .pack
                    .as_ref()
                    .and_then(|p| p.oids.as_ref())
                    .map_or(0, Vec::len);
                if ask.oid_list.len() >= MAX_OIDS || pack_oids >= MAX_OIDS {
                    return Err(Fail::Protocol(
                        "Too many modified OIDs (the default storage backend has a \
                         limitation of 2^21-1)"
                            .into(),
                    ));
                }
                txn.voted = Vote::Metadata;
                txn.pack = ask.pack.is_some();
                Some(TransactionRecord {
                    tid: ttid,
                    ttid,
                    oids: ask.oid_list,
                    user: ask.user,
                    description: ask.description,
                    extension: ask.extension,
                    packed: false,
                    pack: ask.pack.map(|p| PackInfo {
                        approved: None,
                        partial: p.oids.as_ref().is_some_and(|o| !o.is_empty()),
                        oids: p.oids,
                        pack_tid: p.pack_tid,
                    }),
                })
            }
            None => {
                if txn.voted == Vote::No {
                    txn.voted = Vote::Objects;
                }
                None
            }
        };
        let stores: Vec<(Oid, Stored)> = txn.stores.iter().map(|(o, s)| (*o, s.clone())).collect();
        for (oid, stored) in stores {
            let data = if stored.reuse {
                None
            } else {
                stored.data.as_ref()
            };
            self.backend
                .store_object(oid, ttid, data, stored.data_serial, true)?;
        }
        let answered_store = record.is_some();
        if let Some(record) = record {
            self.backend.store_transaction(&record, true)?;
        }
        // After the vote, everything but the final TID is durable (8 item 12): the
        // answer waits for the next group commit.
        if answered_store {
            self.answer_durable(conn, msg_id, AnswerStoreTransaction {});
        } else {
            self.answer_durable(conn, msg_id, AnswerVoteTransaction {});
        }
        Ok(())
    }

    /// AskObjectUndoSerial (5.14).
    pub(crate) fn ask_object_undo_serial(
        &self,
        ttid: Tid,
        ltid: Tid,
        undone_tid: Tid,
        oids: Vec<Oid>,
    ) -> Result<Result<Vec<(Oid, UndoSerial)>, Oid>, Fail> {
        let mut answers = Vec::new();
        for oid in oids {
            self.check_readable(oid.0)?;
            let own = self
                .tm
                .transactions
                .get(&ttid)
                .and_then(|t| t.stores.get(&oid))
                .map(|s| s.data_serial.unwrap_or(ttid));
            match self.find_undo_tid(oid, ltid, undone_tid, own)? {
                None => {}
                Some(None) => return Ok(Err(oid)),
                Some(Some(answer)) => answers.push((oid, answer)),
            }
        }
        Ok(Ok(answers))
    }

    /// `None`: nothing to undo for this oid; `Some(None)`: the undoing transaction cannot
    /// see the undone record (OID_NOT_FOUND).
    fn find_undo_tid(
        &self,
        oid: Oid,
        ltid: Tid,
        undone_tid: Tid,
        own: Option<Tid>,
    ) -> Result<Option<Option<UndoSerial>>, Fail> {
        let Some(undone) = self.backend.object(oid, Some(undone_tid), None)? else {
            return Ok(None);
        };
        let mut before = self
            .backend
            .object(oid, None, Some(undone_tid))?
            .map(|r| r.serial);
        // The records after the undone one, oldest first: (tid, value_tid).
        let mut history = Vec::new();
        let mut next = undone.next_serial;
        while let Some(tid) = next {
            let Some(record) = self.backend.object(oid, Some(tid), None)? else {
                break;
            };
            history.push((tid, record.data_serial));
            next = record.next_serial.filter(|n| *n > tid);
        }
        let current = match own {
            Some(tid) => tid,
            None => {
                let visible = history
                    .iter()
                    .rev()
                    .map(|(tid, _)| *tid)
                    .find(|tid| *tid < ltid);
                match visible {
                    Some(tid) => tid,
                    None if ltid <= undone_tid => return Ok(Some(None)),
                    None => undone_tid,
                }
            }
        };
        let mut is_current = current == undone_tid;
        let mut undone_tid = undone_tid;
        for (tid, value_tid) in history {
            match value_tid {
                Some(v) if Some(v) == before => before = Some(tid),
                Some(v) if v == undone_tid => {
                    if current == tid {
                        is_current = true;
                    } else {
                        undone_tid = tid;
                    }
                }
                _ => {}
            }
        }
        Ok(Some(Some(UndoSerial {
            current_serial: current,
            undo_serial: before,
            is_current,
        })))
    }

    // --- Master requests -------------------------------------------------------------

    /// AskLockInformation (5.9): the commit point of the transaction on this node.
    pub(crate) fn lock_information(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        ttid: Tid,
        tid: Tid,
        pack: bool,
        out: &mut Outbox,
    ) -> Handled {
        let Some(txn) = self.tm.transactions.get_mut(&ttid) else {
            return Err(Fail::Protocol(format!("unknown ttid {ttid}")));
        };
        if txn.tid.is_some() {
            return Err(Fail::Protocol(format!("{ttid} is already locked")));
        }
        if tid < ttid {
            return Err(Fail::Protocol(format!(
                "final tid {tid} before ttid {ttid}"
            )));
        }
        debug!("lock of {ttid} as {tid}");
        txn.tid = Some(tid);
        let (voted, carries_pack) = (txn.voted, txn.pack);
        let oids: Vec<Oid> = txn.stores.keys().copied().collect();
        for oid in oids {
            self.tm.read_locks.insert(oid, ttid);
        }
        match voted {
            Vote::Metadata => {
                if pack && carries_pack {
                    self.backend.sign_pack_orders(&[ttid], &[])?;
                }
                self.backend.lock_transaction(ttid, tid)?;
                // The final TID must be on disk before the master hears of the lock.
                self.answer_durable(conn, msg_id, AnswerInformationLocked { ttid });
                return Ok(());
            }
            // Nothing to write: the objects are durable since the vote was answered.
            Vote::Objects => {}
            Vote::No => warn!("{ttid} locked without having voted here"),
        }
        out.answer(conn, msg_id, AnswerInformationLocked { ttid });
        Ok(())
    }

    /// NotifyUnlockInformation (5.9): move to the final tables, commit within a second,
    /// release the locks.
    pub(crate) fn unlock_information(&mut self, ttid: Tid, out: &mut Outbox) -> Handled {
        let Some(txn) = self.tm.transactions.get(&ttid) else {
            return Err(Fail::Protocol(format!("unknown ttid {ttid}")));
        };
        let Some(tid) = txn.tid else {
            return Err(Fail::Protocol(format!("{ttid} is not locked")));
        };
        debug!("unlock of {ttid} ({tid})");
        self.backend.unlock_transaction(ttid, tid)?;
        if self.tm.commit_at.is_none() {
            self.tm.commit_at = Some(self.now + DEFERRED_COMMIT);
        }
        self.abort(ttid, true, out)
    }

    /// The deferred commit is due.
    pub(crate) fn transactions_timer(&mut self) -> Handled {
        if self.tm.commit_at.is_some_and(|t| t <= self.now) {
            self.tm.commit_at = None;
            self.backend.commit()?;
        }
        Ok(())
    }

    /// NotifyTransactionFinished, or AbortTransaction from the client or the master
    /// (5.10): a transaction not locked here is forgotten with its temporary data; in all
    /// cases replication bookkeeping hears it ended.
    pub(crate) fn transaction_ended(
        &mut self,
        ttid: Tid,
        max_tid: Option<Tid>,
        out: &mut Outbox,
    ) -> Handled {
        self.abort(ttid, false, out)?;
        self.transaction_finished(ttid, max_tid, out)
    }

    /// Aborts the transactions of a client: the non-voted ones when its connection with
    /// us is lost (the master may still finish the voted ones), all non-locked ones when
    /// the master says it is not running (5.11).
    pub(crate) fn abort_for(&mut self, nid: Nid, even_if_voted: bool, out: &mut Outbox) -> Handled {
        let doomed: Vec<Tid> = self
            .tm
            .transactions
            .iter()
            .filter(|(_, t)| t.nid == Some(nid) && (even_if_voted || t.voted == Vote::No))
            .map(|(ttid, _)| *ttid)
            .collect();
        for ttid in doomed {
            info!("aborting {ttid} of lost client {nid}");
            self.abort(ttid, false, out)?;
        }
        Ok(())
    }

    /// The master is lost or stopped operation: in-memory transactions are forgotten
    /// (what was voted or locked stays in the database for the next verification).
    pub(crate) fn forget_transactions(&mut self) {
        let commit_at = self.tm.commit_at;
        self.tm = TransactionManager {
            commit_at,
            ..TransactionManager::default()
        };
    }

    // --- Replication -----------------------------------------------------------------

    /// The partition holds everything up to `tid` (6.2): lockless writes become locks,
    /// and the master is told when no oid is locked by two transactions.
    pub(crate) fn tm_replicated(&mut self, partition: u32, tid: Tid, out: &mut Outbox) -> Handled {
        self.tm.replicating.remove(&partition);
        self.tm.replicated.insert(partition, Some(tid));
        self.notify_replicated(out)
    }

    fn notify_replicated(&mut self, out: &mut Outbox) -> Handled {
        let mut notify: BTreeSet<u32> = self
            .tm
            .replicated
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(p, _)| *p)
            .collect();
        if notify.is_empty() {
            return Ok(());
        }
        // In TTID order, so that the youngest of several lockless stores of an oid holds
        // the lock, which delays new transactions.
        let lockless: Vec<(Tid, Oid)> = self
            .tm
            .transactions
            .iter()
            .flat_map(|(ttid, t)| t.lockless.iter().map(move |oid| (*ttid, *oid)))
            .collect();
        for (ttid, oid) in lockless {
            let partition = self.partition(oid.0);
            if self
                .tm
                .replicated
                .get(&partition)
                .copied()
                .flatten()
                .is_some()
            {
                if self.tm.write_locks.get(&oid).is_some_and(|t| *t != ttid) {
                    // A "multi-lock": wait until one of them ends.
                    notify.remove(&partition);
                }
                self.tm.write_locks.insert(oid, ttid);
            }
        }
        if notify.is_empty() {
            return Ok(());
        }
        for &partition in &notify {
            let Some(Some(tid)) = self.tm.replicated.insert(partition, None) else {
                continue;
            };
            if let Some(master) = self.master_conn() {
                info!("partition {partition} replicated up to {tid}");
                out.notify(master, NotifyReplicationDone { partition, tid });
            }
        }
        // Now that the data is complete, every lock of these partitions is checked for
        // conflicts; a store that conflicts is dropped here (a readable cell reported
        // the conflict to the client).
        let relock: Vec<(Oid, Tid)> = self
            .tm
            .write_locks
            .iter()
            .filter(|(oid, _)| notify.contains(&self.partition(oid.0)))
            .map(|(o, t)| (*o, *t))
            .collect();
        for (oid, ttid) in relock {
            self.tm.write_locks.remove(&oid);
            let Some(txn) = self.tm.transactions.get_mut(&ttid) else {
                continue;
            };
            txn.lockless.remove(&oid);
            let Some(serial) = txn.serials.get(&oid).copied() else {
                continue;
            };
            match self.lock_object(ttid, serial, oid, out)? {
                Lock::Locked => {}
                Lock::Conflict(_) => {
                    self.unstore(ttid, oid);
                }
                other => warn!("relocking {oid} for {ttid} after replication: {other:?}"),
            }
        }
        Ok(())
    }

    /// Own cells discarded: their temporary data and locks go.
    pub(crate) fn tm_discarded(&mut self, partitions: &[u32], out: &mut Outbox) -> Handled {
        let gone: BTreeSet<u32> = partitions.iter().copied().collect();
        for partition in partitions {
            self.tm.replicating.remove(partition);
            self.tm.replicated.remove(partition);
        }
        let np = self.table.np().max(1) as u64;
        let in_gone = |oid: &Oid| gone.contains(&((oid.0 % np) as u32));
        self.tm.write_locks.retain(|oid, _| !in_gone(oid));
        self.tm.read_locks.retain(|oid, _| !in_gone(oid));
        for txn in self.tm.transactions.values_mut() {
            txn.serials.retain(|oid, _| !in_gone(oid));
            txn.stores.retain(|oid, _| !in_gone(oid));
            txn.lockless.retain(|oid| !in_gone(oid));
        }
        self.run_queued(out)
    }

    // --- The locking procedure -------------------------------------------------------

    fn register(&mut self, conn: ConnId, ttid: Tid) {
        if !self.tm.transactions.contains_key(&ttid) {
            let nid = self.links.get(&conn).and_then(|l| l.nid);
            debug!("register {ttid} for {nid:?}");
            self.tm.transactions.insert(
                ttid,
                Transaction {
                    nid,
                    tid: None,
                    voted: Vote::No,
                    pack: false,
                    serials: BTreeMap::new(),
                    stores: BTreeMap::new(),
                    lockless: BTreeSet::new(),
                    deadlock: BTreeSet::new(),
                },
            );
        }
    }

    /// Takes the write lock of `oid` for `ttid`, checking that `serial` is current
    /// (5.3 steps 1-5).
    fn lock_object(
        &mut self,
        ttid: Tid,
        serial: Tid,
        oid: Oid,
        out: &mut Outbox,
    ) -> Result<Lock, Fail> {
        let partition = self.partition(oid.0);
        if !self.tm.transactions.contains_key(&ttid) {
            return Ok(Lock::NonReadable);
        }
        if self.tm.replicating.contains(&partition) {
            // We may lack the data to check, and may have missed stores that would lock:
            // a readable cell does the checking.
            if let Some(txn) = self.tm.transactions.get_mut(&ttid) {
                txn.lockless.insert(oid);
            }
            return Ok(Lock::Lockless);
        }
        let previous = match self.tm.write_locks.get(&oid).copied() {
            Some(locked) if !self.tm.transactions.contains_key(&locked) => {
                warn!("{oid} was locked by forgotten transaction {locked}");
                self.tm.write_locks.remove(&oid);
                self.last_serial(oid, partition)?
            }
            Some(locked) => {
                let other_voted = self.tm.transactions[&locked].voted != Vote::No;
                if locked < ttid || (locked != ttid && other_voted) {
                    debug!("lock of {oid} by {ttid} delayed by {locked}");
                    return Ok(Lock::Delay);
                }
                let txn = &self.tm.transactions[&ttid];
                if txn.lockless.contains(&oid) {
                    return Ok(Lock::Lockless);
                }
                if locked != ttid {
                    // We are older than the holder, which has not voted: it may be
                    // waiting for a lock we hold, so it is asked to give this one back.
                    if self.tm.transactions[&locked].lockless.contains(&oid) {
                        if let Some(txn) = self.tm.transactions.get_mut(&ttid) {
                            txn.lockless.insert(oid);
                        }
                        return Ok(Lock::Lockless);
                    }
                    let other = self.tm.transactions.get_mut(&locked);
                    if let Some(other) = other {
                        if other.deadlock.insert(oid) {
                            info!("deadlock on {oid}: {ttid} waits for younger {locked}");
                            let nid = other.nid;
                            let client = self
                                .links
                                .iter()
                                .find(|(_, l)| {
                                    l.kind == LinkKind::Client && l.identified && l.nid == nid
                                })
                                .map(|(c, _)| *c);
                            if let Some(client) = client {
                                out.notify(client, NotifyDeadlock { ttid: locked, oid });
                            }
                        }
                    }
                    return Ok(Lock::Delay);
                }
                // A second store of an oid this transaction holds: after an undo, the
                // new store must be based on the undo's target.
                match txn.stores.get(&oid).and_then(|s| s.data_serial) {
                    None => return Ok(Lock::Locked),
                    Some(previous) => Some(previous),
                }
            }
            None => {
                if self.table.is_readable(partition, self.own())
                    || self.tm.replicated.contains_key(&partition)
                {
                    self.last_serial(oid, partition)?
                } else {
                    // Not ours yet (or any more): another cell is readable for it.
                    return Ok(Lock::NonReadable);
                }
            }
        };
        if let Some(previous) = previous {
            if previous != serial {
                info!("conflict on {oid} for {ttid}: {previous} is committed");
                return Ok(Lock::Conflict(previous));
            }
        }
        self.tm.write_locks.insert(oid, ttid);
        Ok(Lock::Locked)
    }

    fn last_serial(&self, oid: Oid, _partition: u32) -> Result<Option<Tid>, Fail> {
        Ok(self.backend.last_serial(oid)?)
    }

    /// Drops a transaction's store (or check) of an oid; returns its data.
    fn unstore(&mut self, ttid: Tid, oid: Oid) -> Option<ObjectData> {
        let txn = self.tm.transactions.get_mut(&ttid)?;
        txn.serials.remove(&oid);
        let stored = txn.stores.remove(&oid)?;
        stored.data.map(|d| ObjectData {
            compression: d.compression,
            checksum: d.checksum,
            data: d.value,
        })
    }

    fn run_store(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        store: AskStoreObject,
        out: &mut Outbox,
    ) -> Handled {
        let (oid, ttid) = (store.oid, store.ttid);
        if !self.tm.transactions.contains_key(&ttid) {
            info!("forget store of {oid} by aborted {ttid}");
            out.answer(conn, msg_id, AnswerStoreObject { conflict: LOCKLESS });
            return Ok(());
        }
        let partition = self.partition(oid.0);
        let mut data =
            (!store.data.is_empty() || store.checksum != ZERO_HASH).then(|| StoredData {
                compression: store.compression,
                checksum: store.checksum,
                value: store.data.clone(),
            });
        let mut reuse = false;
        if let Some(data_serial) = store.data_serial {
            match self.backend.object(oid, Some(data_serial), None)? {
                Some(record) => {
                    reuse = true;
                    data = record.data;
                }
                // The record is that of a transaction locked here but not unlocked yet,
                // whose client may already know it committed (a migration stores right
                // after): the store waits for the unlock, which runs the queue again.
                None if self.tm.is_locked_tid(data_serial) => {
                    return self.delay_store(conn, msg_id, store);
                }
                None if self.table.is_readable(partition, self.own()) => {
                    out.error(
                        conn,
                        msg_id,
                        ErrorCode::UndoPackError,
                        format!("Could not undo for oid {oid}"),
                    );
                    return Ok(());
                }
                None => {}
            }
        }
        let conflict = match self.lock_object(ttid, store.serial, oid, out)? {
            Lock::Delay => return self.delay_store(conn, msg_id, store),
            Lock::Conflict(tid) => Some(tid),
            Lock::NonReadable => {
                info!("ignore store of {oid} by {ttid}: unassigned partition");
                LOCKLESS
            }
            lock @ (Lock::Locked | Lock::Lockless) => {
                if let Some(txn) = self.tm.transactions.get_mut(&ttid) {
                    // A previous store of this oid (before a conflict resolution, or
                    // lockless) is replaced.
                    txn.stores.remove(&oid);
                    txn.serials.insert(oid, store.serial);
                    txn.stores.insert(
                        oid,
                        Stored {
                            data,
                            data_serial: store.data_serial,
                            reuse,
                        },
                    );
                }
                if lock == Lock::Locked {
                    None
                } else {
                    LOCKLESS
                }
            }
        };
        out.answer(conn, msg_id, AnswerStoreObject { conflict });
        Ok(())
    }

    /// Runs `store` again when the queue next runs (an unlock or an abort).
    fn delay_store(&mut self, conn: ConnId, msg_id: u32, store: AskStoreObject) -> Handled {
        let ttid = store.ttid;
        self.queue_write(
            ttid,
            Delayed::Store {
                conn,
                msg_id,
                store,
            },
        );
        Ok(())
    }

    fn run_check(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        ttid: Tid,
        oid: Oid,
        serial: Tid,
        out: &mut Outbox,
    ) -> Handled {
        if !self.tm.transactions.contains_key(&ttid) {
            info!("forget serial check of {oid} by aborted {ttid}");
            out.answer(
                conn,
                msg_id,
                AnswerCheckCurrentSerial { conflict: LOCKLESS },
            );
            return Ok(());
        }
        let conflict = match self.lock_object(ttid, serial, oid, out)? {
            Lock::Delay => {
                self.queue_write(
                    ttid,
                    Delayed::Check {
                        conn,
                        msg_id,
                        ttid,
                        oid,
                        serial,
                    },
                );
                return Ok(());
            }
            Lock::Conflict(tid) => Some(tid),
            Lock::NonReadable => LOCKLESS,
            lock @ (Lock::Locked | Lock::Lockless) => {
                if let Some(txn) = self.tm.transactions.get_mut(&ttid) {
                    txn.serials.insert(oid, serial);
                }
                if lock == Lock::Locked {
                    None
                } else {
                    LOCKLESS
                }
            }
        };
        out.answer(conn, msg_id, AnswerCheckCurrentSerial { conflict });
        Ok(())
    }

    fn run_relock(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        ttid: Tid,
        oid: Oid,
        out: &mut Outbox,
    ) -> Handled {
        let serial = self
            .tm
            .transactions
            .get(&ttid)
            .and_then(|t| t.serials.get(&oid))
            .copied();
        let conflict = match serial {
            // Aborted meanwhile, or the partition was dropped.
            None => None,
            Some(serial) => match self.lock_object(ttid, serial, oid, out)? {
                Lock::Delay => {
                    self.queue_write(
                        ttid,
                        Delayed::Relock {
                            conn,
                            msg_id,
                            ttid,
                            oid,
                        },
                    );
                    return Ok(());
                }
                Lock::Conflict(tid) => {
                    // The client may have forgotten the data: it is given back for
                    // conflict resolution.
                    let data = self.unstore(ttid, oid);
                    Some(RelockConflict {
                        serial,
                        conflict_serial: tid,
                        data,
                    })
                }
                Lock::Locked | Lock::Lockless | Lock::NonReadable => None,
            },
        };
        out.answer(conn, msg_id, AnswerRelockObject { conflict });
        Ok(())
    }

    fn queue_write(&mut self, ttid: Tid, delayed: Delayed) {
        let queue = &mut self.tm.write_queue;
        let at = queue.partition_point(|(key, _)| *key <= ttid);
        queue.insert(at, (ttid, delayed));
    }

    /// Forgets a transaction: its temporary data if not locked (unless `even_if_locked`,
    /// the unlock path, where the data just moved to the final tables), its locks; then
    /// delayed requests run again.
    fn abort(&mut self, ttid: Tid, even_if_locked: bool, out: &mut Outbox) -> Handled {
        let Some(txn) = self.tm.transactions.get(&ttid) else {
            return Ok(());
        };
        let locked = txn.tid.is_some();
        if locked && !even_if_locked {
            return Ok(());
        }
        if !locked {
            debug!("abort of {ttid}");
            self.backend.abort_transaction(ttid)?;
            self.backend.commit()?;
        }
        let Some(txn) = self.tm.transactions.remove(&ttid) else {
            return Ok(());
        };
        for oid in txn.serials.keys().chain(txn.stores.keys()) {
            if self.tm.read_locks.get(oid) == Some(&ttid) {
                self.tm.read_locks.remove(oid);
            }
            if self.tm.write_locks.get(oid) == Some(&ttid) {
                self.tm.write_locks.remove(oid);
            }
        }
        if !self.tm.replicated.is_empty() {
            self.notify_replicated(out)?;
        }
        self.run_queued(out)
    }

    /// Runs delayed requests again: reads first, then writes by TTID. If locks are
    /// released meanwhile, the pass restarts so that older transactions come first.
    pub(crate) fn run_queued(&mut self, out: &mut Outbox) -> Handled {
        if self.tm.executing {
            self.tm.again = true;
            return Ok(());
        }
        self.tm.executing = true;
        let result = self.run_queues(out);
        self.tm.executing = false;
        result
    }

    fn run_queues(&mut self, out: &mut Outbox) -> Handled {
        loop {
            self.tm.again = false;
            let reads = std::mem::take(&mut self.tm.read_queue);
            for (conn, msg_id, packet) in reads {
                if self.links.contains_key(&conn) {
                    // A read delayed again queues itself anew.
                    self.dispatch_delayed_read(conn, msg_id, packet, out);
                }
            }
            let mut writes = std::mem::take(&mut self.tm.write_queue).into_iter();
            for (_, delayed) in writes.by_ref() {
                if !self.links.contains_key(&delayed.conn()) {
                    continue;
                }
                match delayed {
                    Delayed::Store {
                        conn,
                        msg_id,
                        store,
                    } => self.run_store(conn, msg_id, store, out)?,
                    Delayed::Check {
                        conn,
                        msg_id,
                        ttid,
                        oid,
                        serial,
                    } => self.run_check(conn, msg_id, ttid, oid, serial, out)?,
                    Delayed::Relock {
                        conn,
                        msg_id,
                        ttid,
                        oid,
                    } => self.run_relock(conn, msg_id, ttid, oid, out)?,
                }
                if self.tm.again {
                    break;
                }
            }
            // Requests delayed again during this pass came before those not run yet; the
            // stable sort keeps that order among requests of one TTID.
            let mut rest = std::mem::take(&mut self.tm.write_queue);
            rest.extend(writes);
            rest.sort_by_key(|(key, _)| *key);
            self.tm.write_queue = rest;
            if !self.tm.again {
                return Ok(());
            }
        }
    }
}
