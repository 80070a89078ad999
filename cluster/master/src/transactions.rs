//! The transaction manager of the primary: TTIDs and final TIDs (cluster.md 4.2), the
//! commit queue, locking on storages, invalidations before unlock, aborts, and the
//! bookkeeping storages need to finish replication (5.1, 5.7-5.11, 6.1 step 2).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use neo_node::tid::{add_tid, tid_from_time};
use neo_node::{ConnId, Outbox, Time};
use neo_protocol::{ErrorCode, Nid, NodeState, NodeType, Oid, Packet, Tid};

use crate::Master;

/// A transaction between AskBeginTransaction and its commit or abort.
#[derive(Debug, Clone)]
pub(crate) struct Transaction {
    ttid: Tid,
    /// The client that began it; None once that client is gone (an orphan that still
    /// commits if it was prepared).
    client: Option<(Nid, ConnId)>,
    /// Readiness counter when it began: only storages ready by then take part.
    readiness: u64,
    /// Final TID, set when finish was requested (or at begin for an explicit TID).
    tid: Option<Tid>,
    /// Begun with an explicit TID (restore, migration): queued at begin.
    explicit: bool,
    /// Finish requested: (msg_id of AskFinishTransaction).
    finish_msg_id: Option<u32>,
    oids: Vec<Oid>,
    involved: BTreeSet<Nid>,
    /// Involved storages that have not answered AnswerInformationLocked yet.
    locking: BTreeSet<Nid>,
    /// Storages that failed during the transaction (FailedVote).
    failed: BTreeSet<Nid>,
    /// Storages waiting for the end of this transaction (AskUnfinishedTransactions).
    waiting: BTreeSet<Nid>,
    /// Clients waiting on AskFinalTID: (conn, msg_id).
    final_tid_waiters: Vec<(ConnId, u32)>,
    /// The pack order it carries, and whether it was approved at finish.
    pack: Option<(neo_protocol::PackRequest, bool)>,
}

impl Transaction {
    fn prepared(&self) -> bool {
        self.finish_msg_id.is_some()
    }
}

/// Why a begin is refused while a transaction with an explicit TID is pending, or an
/// explicit TID while any is.
const CONCURRENT_WITH_TID: &str =
    "There can't be concurrent transactions when a TID is specified for any of them.";

#[derive(Debug, Default)]
pub(crate) struct TransactionManager {
    pending: BTreeMap<Tid, Transaction>,
    /// TTIDs in the order they were prepared (explicit TIDs are queued at begin).
    queue: VecDeque<Tid>,
    /// AskBeginTransaction requests delayed while a storage is starting: (conn, msg_id, tid).
    delayed_begins: Vec<(ConnId, u32, Option<Tid>)>,
}

impl TransactionManager {
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

impl Master {
    /// NEO/py's `next_tid` (cluster.md 4.2).
    fn next_tid(&self, now: Time, ttid: Option<Tid>, divisor: u32) -> Tid {
        let floor = self.tid_floor();
        let mut t = tid_from_time(now);
        if t <= floor {
            if ttid == Some(floor) {
                return floor;
            }
            t = add_tid(floor, 1);
        }
        if let Some(ttid) = ttid {
            let divisor = u64::from(divisor.max(1));
            let want = ttid.0 % divisor;
            let delta = want as i64 - (t.0 % divisor) as i64;
            if delta != 0 {
                t = add_tid(t, delta);
                if t <= floor {
                    t = add_tid(t, divisor as i64);
                }
            }
        }
        t
    }

    /// The greatest TID a new one must exceed: pending TTIDs, the final TID of the last
    /// queued transaction, or the last committed TID.
    fn tid_floor(&self) -> Tid {
        let tm = &self.tm;
        if tm.pending.is_empty() {
            return self.last_tid;
        }
        let mut floor = tm.pending.keys().next_back().copied().unwrap_or(Tid::ZERO);
        if let Some(last) = tm.queue.back().and_then(|t| tm.pending.get(t)) {
            if let Some(tid) = last.tid {
                floor = floor.max(tid);
            }
        }
        floor
    }

    pub(crate) fn begin_transaction(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        client: Nid,
        msg_id: u32,
        tid: Option<Tid>,
    ) {
        if !self.starting.is_empty() || self.stopping {
            self.tm.delayed_begins.push((conn, msg_id, tid));
            return;
        }
        let ttid = match tid {
            None => {
                // As NEO/py, an explicit-TID transaction that is already finishing is
                // tolerated: its TID is fixed and queued.
                if self
                    .tm
                    .pending
                    .values()
                    .any(|t| t.explicit && !t.prepared())
                {
                    self.client_protocol_error(now, out, conn, msg_id, CONCURRENT_WITH_TID);
                    return;
                }
                self.next_tid(now, None, 1)
            }
            Some(tid) => {
                // Beyond NEO/py, which refuses any concurrency here: explicit TIDs may
                // overlap when they increase, so that a migration keeps several
                // transactions in flight (each is queued at begin, so they commit in TID
                // order). The messages are NEO/py's: clients and scripts show them as is.
                let refused = if self.tm.pending.values().any(|t| !t.explicit) {
                    Some(CONCURRENT_WITH_TID)
                } else if tid <= self.last_tid {
                    Some("new TID must be greater than the last committed one")
                } else if tid <= self.tid_floor() {
                    Some("new TID must be greater than the TIDs of pending transactions")
                } else {
                    None
                };
                if let Some(why) = refused {
                    self.client_protocol_error(now, out, conn, msg_id, why);
                    return;
                }
                self.tm.queue.push_back(tid);
                tid
            }
        };
        self.tm.pending.insert(
            ttid,
            Transaction {
                ttid,
                client: Some((client, conn)),
                readiness: self.readiness,
                tid,
                explicit: tid.is_some(),
                finish_msg_id: None,
                oids: Vec::new(),
                involved: BTreeSet::new(),
                locking: BTreeSet::new(),
                failed: BTreeSet::new(),
                waiting: BTreeSet::new(),
                final_tid_waiters: Vec::new(),
                pack: None,
            },
        );
        out.answer(conn, msg_id, neo_protocol::AnswerBeginTransaction { ttid });
    }

    pub(crate) fn retry_delayed_begins(&mut self, now: Time, out: &mut Outbox) {
        if !self.starting.is_empty() || self.stopping {
            return;
        }
        let delayed = std::mem::take(&mut self.tm.delayed_begins);
        for (conn, msg_id, tid) in delayed {
            let client = self.nodes.by_conn(conn).and_then(|e| e.nid);
            if let Some(client) = client {
                self.begin_transaction(now, out, conn, client, msg_id, tid);
            }
        }
    }

    pub(crate) fn finish_transaction(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        msg_id: u32,
        request: neo_protocol::AskFinishTransaction,
    ) {
        let ttid = request.ttid;
        let Some(txn) = self.tm.pending.get(&ttid) else {
            self.client_protocol_error(now, out, conn, msg_id, "unknown transaction");
            return;
        };
        if txn.prepared() {
            self.client_protocol_error(now, out, conn, msg_id, "transaction already finishing");
            return;
        }
        if let Some(pack) = &request.pack {
            if pack.pack_tid == Tid::ZERO || pack.pack_tid > self.last_tid {
                self.client_protocol_error(now, out, conn, msg_id, "invalid pack time");
                return;
            }
        }
        let failed: Vec<Nid> = txn.failed.iter().copied().collect();
        if !failed.is_empty() && !self.operational_without(&failed) {
            out.error(
                conn,
                msg_id,
                ErrorCode::IncompleteTransaction,
                "too many storages failed",
            );
            self.abort_transaction(out, ttid, &[]);
            return;
        }
        let np = self.pt.np().max(1);
        let mut partitions: BTreeSet<u32> = request
            .oid_list
            .iter()
            .map(|o| (o.0 % u64::from(np)) as u32)
            .collect();
        partitions.extend(request.deleted.iter().copied());
        partitions.extend(request.checked.iter().copied());
        partitions.insert((ttid.0 % u64::from(np)) as u32);
        let readiness = txn.readiness;
        let mut involved = BTreeSet::new();
        let mut to_disconnect = Vec::new();
        for p in &partitions {
            for cell in self.pt.row(*p) {
                let nid = cell.nid;
                let Some(entry) = self.nodes.get(nid) else {
                    continue;
                };
                if entry.conn.is_none() || entry.state != NodeState::Running {
                    continue;
                }
                if !self.ready_by(nid, readiness) {
                    continue;
                }
                if failed.contains(&nid) {
                    to_disconnect.push(nid);
                } else {
                    involved.insert(nid);
                }
            }
        }
        // Failed nodes are disconnected first, so that their cells are outdated (and the
        // new table broadcast) before anything is locked.
        to_disconnect.sort();
        to_disconnect.dedup();
        for nid in to_disconnect {
            if let Some(c) = self.node_conn(nid) {
                self.drop_connection(out, c);
                self.node_lost(now, out, nid, c);
            }
        }
        let Some(txn) = self.tm.pending.get(&ttid) else {
            return; // aborted by the loss of service
        };
        let tid = match txn.tid {
            Some(tid) => tid,
            None => {
                let tid = self.next_tid(now, Some(ttid), np);
                self.tm.queue.push_back(ttid);
                tid
            }
        };
        if let Some(max) = request.oid_list.iter().max() {
            if *max > self.last_oid {
                self.last_oid = *max;
            }
        }
        let pack = request.pack.clone().map(|p| (p, self.pm.auto_approve()));
        let pack_approved = pack.as_ref().is_some_and(|(_, a)| *a);
        for nid in &involved {
            if let Some(c) = self.node_conn(*nid) {
                let lock = neo_protocol::AskLockInformation {
                    ttid,
                    tid,
                    pack: pack_approved,
                };
                self.ask(out, c, lock, crate::Asked::Lock(ttid));
            }
        }
        let txn = self.tm.pending.get_mut(&ttid).expect("checked above");
        txn.tid = Some(tid);
        txn.finish_msg_id = Some(msg_id);
        txn.oids = request.oid_list;
        txn.locking = involved.clone();
        txn.involved = involved;
        txn.pack = pack;
        self.commit_ready_transactions(now, out);
    }

    pub(crate) fn information_locked(&mut self, now: Time, out: &mut Outbox, nid: Nid, ttid: Tid) {
        if let Some(txn) = self.tm.pending.get_mut(&ttid) {
            txn.locking.remove(&nid);
        }
        self.commit_ready_transactions(now, out);
    }

    /// Commits the transactions at the head of the queue that every involved storage has
    /// locked, in queue order.
    fn commit_ready_transactions(&mut self, now: Time, out: &mut Outbox) {
        while let Some(head) = self.tm.queue.front().copied() {
            let ready = self
                .tm
                .pending
                .get(&head)
                .is_some_and(|t| t.prepared() && t.locking.is_empty());
            if !ready {
                if !self.tm.pending.contains_key(&head) {
                    self.tm.queue.pop_front();
                    continue;
                }
                break;
            }
            self.tm.queue.pop_front();
            let txn = self.tm.pending.remove(&head).expect("checked above");
            self.transaction_committed(now, out, txn);
        }
    }

    fn transaction_committed(&mut self, now: Time, out: &mut Outbox, txn: Transaction) {
        let tid = txn.tid.expect("prepared transactions have a tid");
        // Invalidations to other clients before unlock orders to storages.
        let clients: Vec<(Nid, ConnId)> = self
            .nodes
            .of_type(NodeType::Client)
            .filter_map(|e| Some((e.nid?, e.conn?)))
            .collect();
        for (nid, conn) in clients {
            if txn.client.is_some_and(|(c, _)| c == nid) {
                if let Some(msg_id) = txn.finish_msg_id {
                    out.answer(
                        conn,
                        msg_id,
                        neo_protocol::AnswerTransactionFinished {
                            ttid: txn.ttid,
                            tid,
                        },
                    );
                }
            } else {
                // Even with no oid (deletions, checks, pack orders): clients learn of
                // every TID, as NEO/py sends it.
                out.notify(
                    conn,
                    neo_protocol::InvalidateObjects {
                        tid,
                        oid_list: txn.oids.clone(),
                    },
                );
            }
        }
        for nid in &txn.involved {
            if let Some(c) = self.node_conn(*nid) {
                out.notify(c, neo_protocol::NotifyUnlockInformation { ttid: txn.ttid });
            }
        }
        if let Some((pack, approved)) = &txn.pack {
            self.pack_order_committed(out, tid, pack, *approved);
        }
        for nid in &txn.waiting {
            if let Some(c) = self.node_conn(*nid) {
                out.notify(
                    c,
                    neo_protocol::NotifyTransactionFinished {
                        ttid: txn.ttid,
                        max_tid: tid,
                    },
                );
            }
        }
        for (conn, msg_id) in &txn.final_tid_waiters {
            if self.conns.contains_key(conn) {
                out.answer(
                    *conn,
                    *msg_id,
                    neo_protocol::AnswerFinalTID { tid: Some(tid) },
                );
            }
        }
        // Empty storages report MAX_TID as their first TID.
        if self.first_tid == Tid::ZERO || self.first_tid > tid {
            self.first_tid = tid;
        }
        self.last_tid = tid;
        self.retry_delayed_begins(now, out);
    }

    /// Forgets a transaction that is not prepared, telling the storages that may hold its
    /// data (`nids`, when ready) and those waiting for its end.
    pub(crate) fn abort_transaction(&mut self, out: &mut Outbox, ttid: Tid, nids: &[Nid]) {
        let Some(txn) = self.tm.pending.remove(&ttid) else {
            return;
        };
        self.tm.queue.retain(|t| *t != ttid);
        let mut targets: BTreeSet<Nid> = nids
            .iter()
            .copied()
            .filter(|n| self.ready.contains_key(n))
            .collect();
        targets.extend(txn.waiting.iter().copied());
        targets.extend(txn.involved.iter().copied());
        for nid in targets {
            if let Some(c) = self.node_conn(nid) {
                out.notify(
                    c,
                    neo_protocol::AbortTransaction {
                        ttid,
                        nid_list: Vec::new(),
                    },
                );
            }
        }
        for (conn, msg_id) in txn.final_tid_waiters {
            out.answer(conn, msg_id, neo_protocol::AnswerFinalTID { tid: None });
        }
    }

    pub(crate) fn client_abort(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        msg_id: u32,
        ttid: Tid,
        nids: Vec<Nid>,
    ) {
        match self.tm.pending.get(&ttid) {
            Some(txn) if !txn.prepared() => self.abort_transaction(out, ttid, &nids),
            _ => self.client_protocol_error(
                now,
                out,
                conn,
                msg_id,
                "cannot abort: unknown or finishing transaction",
            ),
        }
    }

    pub(crate) fn failed_vote(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        msg_id: u32,
        ttid: Tid,
        failed: Vec<Nid>,
    ) {
        let Some(txn) = self.tm.pending.get(&ttid) else {
            out.error(
                conn,
                msg_id,
                ErrorCode::IncompleteTransaction,
                "unknown transaction",
            );
            return;
        };
        let readiness = txn.readiness;
        let failed: Vec<Nid> = failed
            .into_iter()
            .filter(|n| self.ready_by(*n, readiness))
            .collect();
        if !self.operational_without(&failed) {
            out.error(
                conn,
                msg_id,
                ErrorCode::IncompleteTransaction,
                "the partition table would not be operational",
            );
            return;
        }
        if let Some(txn) = self.tm.pending.get_mut(&ttid) {
            txn.failed.extend(failed);
        }
        out.error(conn, msg_id, ErrorCode::Ack, "");
    }

    pub(crate) fn ask_final_tid(&mut self, out: &mut Outbox, conn: ConnId, msg_id: u32, ttid: Tid) {
        match self.tm.pending.get_mut(&ttid) {
            Some(txn) if txn.prepared() => txn.final_tid_waiters.push((conn, msg_id)),
            Some(_) => out.answer(conn, msg_id, neo_protocol::AnswerFinalTID { tid: None }),
            None => {
                let tid = if ttid <= self.last_tid {
                    Some(Tid::MAX)
                } else {
                    None
                };
                out.answer(conn, msg_id, neo_protocol::AnswerFinalTID { tid });
            }
        }
    }

    /// AskUnfinishedTransactions: the last committed TID and every pending TTID; the
    /// storage is told when each of them ends.
    pub(crate) fn unfinished_transactions(&mut self, nid: Nid) -> (Tid, Vec<Tid>) {
        let mut ttids = Vec::new();
        for txn in self.tm.pending.values_mut() {
            txn.waiting.insert(nid);
            ttids.push(txn.ttid);
        }
        (self.last_tid, ttids)
    }

    /// A client is gone: its unprepared transactions are aborted, prepared ones commit as
    /// orphans.
    pub(crate) fn client_lost_transactions(&mut self, out: &mut Outbox, client: Nid) {
        let mine: Vec<(Tid, bool)> = self
            .tm
            .pending
            .values()
            .filter(|t| t.client.is_some_and(|(c, _)| c == client))
            .map(|t| (t.ttid, t.prepared()))
            .collect();
        for (ttid, prepared) in mine {
            if prepared {
                if let Some(txn) = self.tm.pending.get_mut(&ttid) {
                    txn.client = None;
                }
            } else {
                self.abort_transaction(out, ttid, &[]);
            }
        }
        self.tm
            .delayed_begins
            .retain(|(c, _, _)| self.conns.contains_key(c));
    }

    /// A storage is gone: transactions stop waiting for it.
    pub(crate) fn storage_lost_transactions(&mut self, now: Time, out: &mut Outbox, nid: Nid) {
        for txn in self.tm.pending.values_mut() {
            txn.locking.remove(&nid);
            txn.involved.remove(&nid);
            txn.waiting.remove(&nid);
        }
        self.commit_ready_transactions(now, out);
    }

    /// Whether a storage was ready when a transaction with this readiness value began:
    /// only those take part in it (cluster.md 5.9).
    fn ready_by(&self, nid: Nid, readiness: u64) -> bool {
        self.ready.get(&nid).is_some_and(|r| *r <= readiness)
    }

    /// Whether the table stays operational without these nodes.
    fn operational_without(&self, nids: &[Nid]) -> bool {
        let nodes = &self.nodes;
        self.pt.is_operational(|n| nodes.is_running(n), nids)
    }

    fn client_protocol_error(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        msg_id: u32,
        reason: &str,
    ) {
        let nid = self.nodes.by_conn(conn).and_then(|e| e.nid);
        self.protocol_error(out, conn, msg_id, reason);
        if let Some(nid) = nid {
            self.node_lost(now, out, nid, conn);
        }
    }

    /// Dispatch of client requests about transactions; returns the packet back if it is
    /// not one of them.
    pub(crate) fn client_transaction_packet(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        client: Nid,
        msg_id: u32,
        packet: Packet,
    ) -> Option<Packet> {
        match packet {
            Packet::AskBeginTransaction(p) => {
                self.begin_transaction(now, out, conn, client, msg_id, p.tid)
            }
            Packet::AskFinishTransaction(p) => self.finish_transaction(now, out, conn, msg_id, p),
            Packet::AbortTransaction(p) => {
                self.client_abort(now, out, conn, msg_id, p.ttid, p.nid_list)
            }
            Packet::FailedVote(p) => self.failed_vote(out, conn, msg_id, p.ttid, p.failed),
            Packet::AskFinalTID(p) => self.ask_final_tid(out, conn, msg_id, p.ttid),
            Packet::WaitForPack(p) => self.wait_for_pack(out, conn, msg_id, p.tid),
            Packet::AskPackOrders(p) => {
                self.answer_pack_orders(out, conn, msg_id, p.pack_id, false)
            }
            other => return Some(other),
        }
        None
    }
}
