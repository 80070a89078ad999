//! The primary's pack orders (cluster.md 6.9): approval of new orders, signatures sent to
//! storages, completion reported by storages, and clients waiting for a pack to be done.
//! Also the admin's replica check (6.6), which hands partitions to storages.

use std::collections::BTreeMap;

use neo_node::{ConnId, Outbox};
use neo_protocol::{Nid, Oid, PackOrder, PackRequest, Tid};

use crate::Master;

#[derive(Debug, Clone)]
struct Order {
    approved: Option<bool>,
    partial: bool,
    oids: Option<Vec<Oid>>,
    pack_tid: Tid,
    /// Clients waiting on WaitForPack for this order: (conn, msg_id).
    waiters: Vec<(ConnId, u32)>,
}

#[derive(Debug, Default)]
pub(crate) struct PackManager {
    orders: BTreeMap<Tid, Order>,
    /// The greatest id completed by every node holding readable cells.
    max_completed: Option<Tid>,
    /// What each storage reported with NotifyPackCompleted.
    completed: BTreeMap<Nid, Tid>,
}

impl PackManager {
    /// Whether a new order is approved at once: only if none is waiting for a signature.
    pub(crate) fn auto_approve(&self) -> bool {
        self.orders.values().all(|o| o.approved.is_some())
    }

    fn register(
        &mut self,
        id: Tid,
        approved: Option<bool>,
        partial: bool,
        oids: Option<Vec<Oid>>,
        pack_tid: Tid,
    ) {
        if self.max_completed.is_some_and(|m| id <= m) {
            return;
        }
        self.orders.entry(id).or_insert(Order {
            approved,
            partial,
            oids,
            pack_tid,
            waiters: Vec::new(),
        });
    }

    fn signed(&self) -> (Vec<Tid>, Vec<Tid>) {
        let mut approved: Vec<Tid> = self.max_completed.into_iter().collect();
        let mut rejected = Vec::new();
        for (id, order) in &self.orders {
            match order.approved {
                Some(true) => approved.push(*id),
                Some(false) => rejected.push(*id),
                None => {}
            }
        }
        (approved, rejected)
    }
}

impl Master {
    /// A committed transaction carried a pack order: register it and, if approved, tell
    /// the ready storages (NotifyPackSigned).
    pub(crate) fn pack_order_committed(
        &mut self,
        out: &mut Outbox,
        tid: Tid,
        pack: &PackRequest,
        approved: bool,
    ) {
        self.pm.register(
            tid,
            Some(approved),
            pack.oids.is_some(),
            pack.oids.clone(),
            pack.pack_tid,
        );
        let (approved_ids, rejected_ids) = if approved {
            (vec![tid], Vec::new())
        } else {
            (Vec::new(), vec![tid])
        };
        let ready: Vec<Nid> = self.ready.keys().copied().collect();
        for nid in ready {
            if let Some(conn) = self.node_conn(nid) {
                out.notify(
                    conn,
                    neo_protocol::NotifyPackSigned {
                        approved: approved_ids.clone(),
                        rejected: rejected_ids.clone(),
                    },
                );
            }
        }
    }

    /// A storage became ready: it learns every signature.
    pub(crate) fn send_pack_signatures(&mut self, out: &mut Outbox, conn: ConnId) {
        let (approved, rejected) = self.pm.signed();
        if !approved.is_empty() || !rejected.is_empty() {
            out.notify(conn, neo_protocol::NotifyPackSigned { approved, rejected });
        }
    }

    /// Orders reported by storages at verification. Those not signed yet belong to
    /// committed transactions whose signature was lost with the previous primary: they
    /// are approved now, as the previous primary would have done with no other order
    /// pending.
    pub(crate) fn pack_orders_recovered(&mut self, orders: Vec<PackOrder>) {
        for order in orders {
            self.pm.register(
                order.pack_id,
                Some(order.approved.unwrap_or(true)),
                order.partial,
                order.oids,
                order.pack_tid,
            );
        }
    }

    /// AskPackOrders: storages get the first approved order >= id, clients every order.
    pub(crate) fn answer_pack_orders(
        &self,
        out: &mut Outbox,
        conn: ConnId,
        msg_id: u32,
        pack_id: Tid,
        only_first_approved: bool,
    ) {
        let mut list = Vec::new();
        for (id, order) in self.pm.orders.range(pack_id..) {
            if only_first_approved && order.approved != Some(true) {
                continue;
            }
            list.push(PackOrder {
                pack_id: *id,
                approved: order.approved,
                partial: order.partial,
                oids: order.oids.clone(),
                pack_tid: order.pack_tid,
            });
            if only_first_approved {
                break;
            }
        }
        out.answer(
            conn,
            msg_id,
            neo_protocol::AnswerPackOrders { pack_list: list },
        );
    }

    /// NotifyPackCompleted from a storage: the cluster-wide completed id is the minimum
    /// over nodes holding readable cells; orders up to it are done.
    pub(crate) fn pack_completed(&mut self, out: &mut Outbox, nid: Nid, pack_id: Tid) {
        self.pm.completed.insert(nid, pack_id);
        let mut holders = std::collections::BTreeSet::new();
        for p in 0..self.pt.np() {
            holders.extend(self.pt.readable_cells(p));
        }
        let mut min: Option<Tid> = None;
        for nid in holders {
            match self.pm.completed.get(&nid) {
                Some(t) => min = Some(min.map_or(*t, |m: Tid| m.min(*t))),
                None => return,
            }
        }
        let Some(min) = min else { return };
        if self.pm.max_completed.is_some_and(|m| m >= min) {
            return;
        }
        self.pm.max_completed = Some(min);
        let done: Vec<Tid> = self.pm.orders.range(..=min).map(|(id, _)| *id).collect();
        for id in done {
            if let Some(order) = self.pm.orders.remove(&id) {
                for (conn, msg_id) in order.waiters {
                    out.answer(conn, msg_id, neo_protocol::WaitedForPack {});
                }
            }
        }
    }

    /// WaitForPack(tid): answered once the order is done cluster-wide (at once for an
    /// unknown or completed one).
    pub(crate) fn wait_for_pack(&mut self, out: &mut Outbox, conn: ConnId, msg_id: u32, tid: Tid) {
        match self.pm.orders.get_mut(&tid) {
            Some(order) if order.approved == Some(true) => order.waiters.push((conn, msg_id)),
            _ => out.answer(conn, msg_id, neo_protocol::WaitedForPack {}),
        }
    }

    /// CheckReplicas from the admin (6.6): each partition with at least two readable cells
    /// is checked by one of its nodes, spreading the work.
    pub(crate) fn check_replicas(
        &mut self,
        out: &mut Outbox,
        partitions: Vec<(u32, Option<Nid>)>,
        min_tid: Tid,
        max_tid: Option<Tid>,
    ) -> Result<String, String> {
        let max_tid = max_tid.unwrap_or(self.last_tid);
        if min_tid > max_tid {
            tracing::warn!("nothing to check: min_tid={min_tid} > max_tid={max_tid}");
            return Ok(String::new());
        }
        let mut busy = std::collections::BTreeSet::new();
        for (partition, reference) in partitions {
            if partition >= self.pt.np() {
                return Err(format!("invalid partition {partition}"));
            }
            let cells = self.pt.readable_cells(partition);
            if cells.len() <= 1 {
                continue;
            }
            // The first node already checking something, else the last one.
            let node = cells
                .iter()
                .copied()
                .find(|n| busy.contains(n))
                .unwrap_or_else(|| {
                    let last = *cells.last().expect("at least two cells");
                    busy.insert(last);
                    last
                });
            let address = match reference {
                Some(r) => Some(
                    self.nodes
                        .get(r)
                        .and_then(|e| e.address.clone())
                        .ok_or_else(|| format!("unknown reference node {r}"))?,
                ),
                None => None,
            };
            if let Some(conn) = self.node_conn(node) {
                out.notify(
                    conn,
                    neo_protocol::CheckPartition {
                        partition,
                        source: neo_protocol::CheckSource {
                            upstream_name: neo_protocol::Bytes::new(),
                            address,
                        },
                        min_tid,
                        max_tid,
                    },
                );
            }
        }
        Ok(String::new())
    }
}
