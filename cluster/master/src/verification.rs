//! VERIFYING: finish the transactions that were committed but not fully unlocked, learn
//! the last TID/OID and the pack orders, then start service (cluster.md 2.5).

use std::collections::{BTreeMap, BTreeSet};

use neo_node::{ConnId, Outbox, Time};
use neo_protocol::{ClusterState, Nid, NodeState, NodeType, Oid, Packet, Tid};

use crate::{Asked, Master};

#[derive(Debug, Default, Clone)]
pub struct Verification {
    step: Step,
    /// Nodes we wait answers from in the current step.
    waiting: BTreeSet<Nid>,
    /// ttid -> final tid, for transactions locked somewhere.
    locked: BTreeMap<Tid, Tid>,
    /// ttid -> nodes that voted it.
    voted: BTreeMap<Tid, BTreeSet<Nid>>,
    /// AskFinalTID queue: (ttid, nodes still to ask).
    final_tid_queue: Vec<(Tid, Vec<Nid>)>,
    last_tid: Option<Tid>,
    last_oid: Option<Oid>,
    first_tid: Option<Tid>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Step {
    #[default]
    Locked,
    FinalTid,
    LastIds,
    PackOrders,
    Done,
}

impl Master {
    pub(crate) fn enter_verification(&mut self, now: Time, out: &mut Outbox) {
        self.change_cluster_state(out, ClusterState::Verifying);
        let storages: Vec<ConnId> = self
            .nodes
            .of_type(NodeType::Storage)
            .filter_map(|e| e.conn)
            .collect();
        for conn in storages {
            self.send_pt(out, conn);
        }
        let mut verification = Verification::default();
        // Ask every running node holding a readable cell for its locked transactions.
        for nid in self.readable_running_nodes() {
            if let Some(conn) = self.node_conn(nid) {
                self.ask(
                    out,
                    conn,
                    neo_protocol::AskLockedTransactions {},
                    Asked::LockedTransactions,
                );
                verification.waiting.insert(nid);
            }
        }
        self.verification = Some(verification);
        self.verification_check(now, out);
    }

    fn readable_running_nodes(&self) -> Vec<Nid> {
        let mut nodes = BTreeSet::new();
        for p in 0..self.pt.np() {
            for nid in self.pt.readable_cells(p) {
                if self.is_running(nid) {
                    nodes.insert(nid);
                }
            }
        }
        nodes.into_iter().collect()
    }

    pub(crate) fn verification_answer(
        &mut self,
        now: Time,
        out: &mut Outbox,
        conn: ConnId,
        asked: Asked,
        packet: Packet,
    ) {
        let Some(nid) = self.nodes.by_conn(conn).and_then(|e| e.nid) else {
            return;
        };
        if asked == Asked::PackOrders {
            if let Packet::AnswerPackOrders(answer) = packet {
                self.pack_orders_recovered(answer.pack_list);
            }
            return;
        }
        let Some(v) = self.verification.as_mut() else {
            return;
        };
        match (asked, packet) {
            (Asked::LockedTransactions, Packet::AnswerLockedTransactions(answer)) => {
                for (ttid, tid) in answer.tid_dict.0 {
                    v.voted.entry(ttid).or_default().insert(nid);
                    if let Some(tid) = tid {
                        v.locked.insert(ttid, tid);
                    }
                }
                v.waiting.remove(&nid);
            }
            (Asked::FinalTid(ttid), Packet::AnswerFinalTID(answer)) => {
                v.waiting.remove(&nid);
                if let Some(tid) = answer.tid {
                    v.locked.insert(ttid, tid);
                    v.final_tid_queue.retain(|(t, _)| *t != ttid);
                }
            }
            (Asked::LastIds, Packet::AnswerLastIDs(answer)) => {
                v.waiting.remove(&nid);
                if let Some(t) = answer.last_tid {
                    v.last_tid = v.last_tid.max(Some(t));
                }
                if let Some(o) = answer.last_oid {
                    v.last_oid = v.last_oid.max(Some(o));
                }
                if answer.first_tid != Tid::ZERO || v.first_tid.is_none() {
                    v.first_tid = Some(
                        v.first_tid
                            .map_or(answer.first_tid, |f| f.min(answer.first_tid)),
                    );
                }
            }
            (_, other) => {
                tracing::warn!("unexpected {} during verification", other.name());
            }
        }
        self.verification_check(now, out);
    }

    /// Moves verification forward when the current step has all its answers.
    pub(crate) fn verification_check(&mut self, now: Time, out: &mut Outbox) {
        if self.cluster_state != ClusterState::Verifying {
            return;
        }
        loop {
            let Some(v) = self.verification.as_mut() else {
                return;
            };
            if !v.waiting.is_empty() {
                return;
            }
            match v.step {
                Step::Locked => {
                    // Voted transactions with no known final tid: ask the other readable
                    // cells of their partition whether they were unlocked there.
                    let mut queue = Vec::new();
                    for (ttid, voters) in &v.voted {
                        if v.locked.contains_key(ttid) {
                            continue;
                        }
                        let partition = (ttid.0 % u64::from(self.pt.np().max(1))) as u32;
                        let others: Vec<Nid> = self
                            .pt
                            .readable_cells(partition)
                            .into_iter()
                            .filter(|n| !voters.contains(n) && self.nodes.is_running(*n))
                            .collect();
                        if !others.is_empty() {
                            queue.push((*ttid, others));
                        }
                    }
                    let v = self.verification.as_mut().expect("checked above");
                    v.final_tid_queue = queue;
                    v.step = Step::FinalTid;
                }
                Step::FinalTid => {
                    let next = v
                        .final_tid_queue
                        .iter_mut()
                        .find_map(|(ttid, nodes)| nodes.pop().map(|n| (*ttid, n)));
                    v.final_tid_queue.retain(|(_, nodes)| !nodes.is_empty());
                    match next {
                        Some((ttid, nid)) => {
                            if let Some(conn) = self.node_conn(nid) {
                                if let Some(v) = self.verification.as_mut() {
                                    v.waiting.insert(nid);
                                }
                                self.ask(
                                    out,
                                    conn,
                                    neo_protocol::AskFinalTID { ttid },
                                    Asked::FinalTid(ttid),
                                );
                            }
                        }
                        None => {
                            // Replay lock+unlock where it was locked somewhere.
                            let v = self.verification.as_mut().expect("checked above");
                            let validations: Vec<(Tid, Tid, Vec<Nid>)> = v
                                .locked
                                .iter()
                                .map(|(ttid, tid)| {
                                    (
                                        *ttid,
                                        *tid,
                                        v.voted
                                            .get(ttid)
                                            .map(|s| s.iter().copied().collect())
                                            .unwrap_or_default(),
                                    )
                                })
                                .collect();
                            v.step = Step::LastIds;
                            for (ttid, tid, nodes) in validations {
                                for nid in nodes {
                                    if let Some(conn) = self.node_conn(nid) {
                                        out.notify(
                                            conn,
                                            neo_protocol::ValidateTransaction { ttid, tid },
                                        );
                                    }
                                }
                            }
                            let storages: Vec<Nid> = self
                                .identified_storages()
                                .into_iter()
                                .filter(|n| self.nodes.state(*n) == NodeState::Running)
                                .collect();
                            for nid in storages {
                                if let Some(conn) = self.node_conn(nid) {
                                    if let Some(v) = self.verification.as_mut() {
                                        v.waiting.insert(nid);
                                    }
                                    self.ask(
                                        out,
                                        conn,
                                        neo_protocol::AskLastIDs {},
                                        Asked::LastIds,
                                    );
                                }
                            }
                        }
                    }
                }
                Step::LastIds => {
                    self.last_tid = v.last_tid.unwrap_or(Tid::ZERO);
                    self.last_oid = v.last_oid.unwrap_or(Oid::ZERO);
                    self.first_tid = v.first_tid.unwrap_or(Tid::ZERO);
                    v.step = Step::PackOrders;
                    self.truncate_tid = None;
                    for nid in self.readable_running_nodes() {
                        if let Some(conn) = self.node_conn(nid) {
                            self.ask(
                                out,
                                conn,
                                neo_protocol::AskPackOrders { pack_id: Tid::ZERO },
                                Asked::PackOrders,
                            );
                        }
                    }
                }
                Step::PackOrders => {
                    v.step = Step::Done;
                    self.enter_running(now, out);
                    return;
                }
                Step::Done => return,
            }
        }
    }
}

impl Verification {
    /// A node is gone: stop waiting for it.
    pub(crate) fn forget(&mut self, nid: Nid) {
        self.waiting.remove(&nid);
        for (_, nodes) in self.final_tid_queue.iter_mut() {
            nodes.retain(|n| *n != nid);
        }
    }
}
