//! Invariants checked after every event and on every packet a node sends:
//!
//! - **One reigning primary per side of a partition.** A master "reigns" when it plays
//!   the primary role with the cluster beyond RECOVERING (it has taken storages). When a
//!   master starts to reign, no other reigning master may be reachable from it: NEO has
//!   no quorum, so two sides of a partition may each elect a primary, but never two
//!   masters that can talk to each other.
//! - **Partition table versions grow one by one.** On each connection from a master to
//!   a storage, admin or client, every NotifyPartitionChanges carries the ptid following
//!   the previous table (SendPartitionTable) or change sent on that connection.
//! - **RUNNING needs an operational table.** A reigning master in RUNNING has, in its own
//!   table and node states, a readable cell on a running storage for every partition.
//!
//! - **Commit TIDs strictly increase.** Every AnswerTransactionFinished any master sends
//!   carries a TID greater than every one acknowledged before (by it or by an earlier
//!   primary): a new primary starts after the last committed TID.
//!
//! - **No commit without a lock.** A master acknowledges a commit
//!   (AnswerTransactionFinished) only after at least one storage answered
//!   AnswerInformationLocked for that TTID: otherwise no storage holds the commit point.
//!
//! A violation is reported once, when it starts to hold.
//!
//! Not a violation but recorded ([`Checker::stale_restarts`]): a primary leaving
//! RECOVERING with an older partition table than one the cluster already ran with. NEO
//! (like NEO/py) restarts automatically after losing operation from the newest table
//! among the storages present, so a storage that missed changes while it was away can
//! bring back an old table and the commits made without it are lost (no quorum).

use std::collections::{BTreeMap, BTreeSet};

use neo_master::Master;
use neo_protocol::{ClusterState, Packet, Tid};

use crate::world::{NodeId, Sent, SimNode};

#[derive(Debug, Default)]
pub struct Checker {
    /// Masters that reign (primary role, cluster beyond RECOVERING).
    reigning: BTreeSet<NodeId>,
    /// Per connection: the last ptid a master sent on it (None: a table without ptid).
    ptid_sent: BTreeMap<u64, Option<u64>>,
    /// Masters currently RUNNING without an operational table (reported once).
    not_operational: BTreeSet<NodeId>,
    /// The greatest TID acknowledged to a committing client, and by which node.
    last_acked: Option<(Tid, NodeId)>,
    /// TTIDs some storage answered AnswerInformationLocked for.
    locked: BTreeSet<Tid>,
    /// The newest ptid a reigning master ran with.
    newest_running_ptid: Option<u64>,
    /// Per master: the ptid of the last table a storage gave it in recovery.
    loaded_ptid: BTreeMap<NodeId, Option<u64>>,
    stale_restarts: Vec<String>,
}

impl Checker {
    pub fn on_send(
        &mut self,
        sent: &Sent<'_>,
        nodes: &[(NodeId, Option<&dyn SimNode>)],
        violations: &mut Vec<String>,
        now: f64,
    ) {
        let from_master = nodes
            .get(sent.from.0)
            .and_then(|(_, n)| *n)
            .is_some_and(|n| n.as_any().is::<Master>());
        if let Packet::AnswerInformationLocked(p) = sent.packet {
            self.locked.insert(p.ttid);
        }
        if let Packet::AnswerPartitionTable(p) = sent.packet {
            let to_master = nodes
                .get(sent.to.0)
                .and_then(|(_, n)| *n)
                .is_some_and(|n| n.as_any().is::<Master>());
            if to_master {
                self.loaded_ptid.insert(sent.to, p.ptid);
            }
        }
        if !from_master {
            return;
        }
        match sent.packet {
            Packet::SendPartitionTable(p) => {
                self.ptid_sent.insert(sent.link, p.ptid);
            }
            Packet::NotifyPartitionChanges(p) => {
                if let Some(Some(previous)) = self.ptid_sent.get(&sent.link) {
                    if p.ptid != previous + 1 {
                        violations.push(format!(
                            "t={now:.4} node {} sent NotifyPartitionChanges ptid {} to node {} \
                             after ptid {previous} on the same connection (cells {:?})",
                            sent.from.0, p.ptid, sent.to.0, p.cell_list
                        ));
                    }
                }
                self.ptid_sent.insert(sent.link, Some(p.ptid));
            }
            Packet::AnswerTransactionFinished(p) => {
                if !self.locked.contains(&p.ttid) {
                    violations.push(format!(
                        "t={now:.4} node {} acknowledged commit {:?} of ttid {:?} without any \
                         storage locking it",
                        sent.from.0, p.tid, p.ttid
                    ));
                }
                if let Some((last, by)) = self.last_acked {
                    if p.tid <= last {
                        violations.push(format!(
                            "t={now:.4} node {} acknowledged commit {:?} (ttid {:?}) after \
                             node {} acknowledged {last:?}",
                            sent.from.0, p.tid, p.ttid, by.0
                        ));
                    }
                }
                if self.last_acked.is_none_or(|(last, _)| p.tid > last) {
                    self.last_acked = Some((p.tid, sent.from));
                }
            }
            _ => {}
        }
    }

    pub fn after_event(
        &mut self,
        nodes: &[(NodeId, Option<&dyn SimNode>)],
        blocked: &dyn Fn(NodeId, NodeId) -> bool,
        violations: &mut Vec<String>,
        now: f64,
    ) {
        let masters: Vec<(NodeId, &Master)> = nodes
            .iter()
            .filter_map(|(id, n)| {
                n.and_then(|n| n.as_any().downcast_ref::<Master>())
                    .map(|m| (*id, m))
            })
            .collect();
        let reigning: BTreeSet<NodeId> = masters
            .iter()
            .filter(|(_, m)| m.is_primary() && m.cluster_state() != ClusterState::Recovering)
            .map(|(id, _)| *id)
            .collect();
        let new_reigns: Vec<NodeId> = reigning.difference(&self.reigning).copied().collect();
        for &new in &new_reigns {
            for &other in &reigning {
                if other != new && !blocked(new, other) {
                    violations.push(format!(
                        "t={now:.4} node {} became primary beyond RECOVERING while node {} \
                         reigns and they are not partitioned",
                        new.0, other.0
                    ));
                }
            }
        }
        self.reigning = reigning;

        let mut not_operational = BTreeSet::new();
        for (id, master) in &masters {
            if !self.reigning.contains(id) || master.cluster_state() != ClusterState::Running {
                continue;
            }
            let nodes = master.nodes();
            if !master
                .partition_table()
                .is_operational(|nid| nodes.is_running(nid), &[])
            {
                not_operational.insert(*id);
                if !self.not_operational.contains(id) {
                    violations.push(format!(
                        "t={now:.4} node {} is RUNNING without a readable cell on a running \
                         storage for every partition: {:?}",
                        id.0,
                        master.partition_table().rows()
                    ));
                }
            }
        }
        self.not_operational = not_operational;

        for &id in &new_reigns {
            let loaded = self.loaded_ptid.get(&id).copied().flatten();
            if loaded.is_some() && loaded < self.newest_running_ptid {
                self.stale_restarts.push(format!(
                    "t={now:.4} node {} left RECOVERING with a table of ptid {loaded:?} read \
                     from a storage, the cluster ran with ptid {:?} before",
                    id.0, self.newest_running_ptid
                ));
            }
        }
        for (id, master) in &masters {
            if self.reigning.contains(id) && master.cluster_state() == ClusterState::Running {
                let ptid = master.partition_table().ptid();
                self.newest_running_ptid = self.newest_running_ptid.max(ptid);
            }
        }
    }

    /// Restarts from an older partition table seen so far (see the module documentation).
    pub fn stale_restarts(&self) -> &[String] {
        &self.stale_restarts
    }
}
