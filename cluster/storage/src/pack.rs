//! Packing on the storage (cluster.md 6.9): pack orders are signed by the master
//! (NotifyPackSigned); when an approved order is newer than what the own UP_TO_DATE cells
//! have completed, the storage asks the master for it (AskPackOrders), deletes the old
//! revisions of each such partition, records the order in `pt.pack`, and reports the
//! minimum over its cells (NotifyPackCompleted).
//!
//! NEO/py packs in the background, in chunks of oids; here a partition is packed at once
//! when the order arrives, which is simpler and gives the same result (pack is
//! deterministic), at the price of a pause on large partitions.

use std::collections::BTreeMap;

use neo_node::Outbox;
use neo_protocol::{AskPackOrders, CellState, NotifyPackCompleted, Oid, PackOrder, Tid};
use tracing::{debug, info, warn};

use crate::backend::Backend;
use crate::node::{Handled, Phase, Storage};

#[derive(Debug, Default)]
pub(crate) struct PackState {
    /// The greatest approved pack id heard of.
    last_pack_id: Tid,
    /// AskPackOrders is in flight.
    asked: bool,
    /// The completed id last reported to the master.
    reported: Option<Tid>,
}

impl<B: Backend> Storage<B> {
    /// NotifyPackSigned: record the signatures, then pack if a newer order is approved.
    pub(crate) fn pack_signed(
        &mut self,
        approved: &[Tid],
        rejected: &[Tid],
        out: &mut Outbox,
    ) -> Handled {
        let found = self.backend.sign_pack_orders(approved, rejected)?;
        if !found.is_empty() {
            self.backend.commit()?;
        }
        if let Some(&newest) = approved.iter().max() {
            if self.pack.last_pack_id < newest {
                self.pack.last_pack_id = newest;
                if self.phase == Phase::Operation {
                    self.maybe_pack(out)?;
                }
            }
        }
        Ok(())
    }

    /// Asks the master for the next order to apply, if the own UP_TO_DATE cells are
    /// behind the last approved one.
    pub(crate) fn maybe_pack(&mut self, out: &mut Outbox) -> Handled {
        if self.pack.asked {
            return Ok(());
        }
        let Some(packed) = self.packed_up_to_date()? else {
            return Ok(());
        };
        if packed < self.pack.last_pack_id {
            if let Some(master) = self.master_conn() {
                debug!("asking for the pack order after {packed}");
                self.pack.asked = true;
                out.ask(
                    master,
                    AskPackOrders {
                        pack_id: Tid(packed.0.saturating_add(1)),
                    },
                );
            }
        }
        Ok(())
    }

    /// AnswerPackOrders from the master: the first approved order after our progress.
    pub(crate) fn pack_orders_answered(
        &mut self,
        orders: Vec<PackOrder>,
        out: &mut Outbox,
    ) -> Handled {
        self.pack.asked = false;
        let Some(order) = orders.into_iter().next() else {
            return Ok(());
        };
        if order.approved != Some(true) {
            warn!("pack order {} is not approved: not packing", order.pack_id);
            return Ok(());
        }
        let own = self.own();
        let partitions: Vec<u32> = self
            .backend
            .pt_rows()?
            .into_iter()
            .filter(|r| r.nid == own && r.state() == CellState::UpToDate)
            .filter(|r| r.pack.is_some_and(|p| p < order.pack_id))
            .map(|r| r.partition)
            .collect();
        for partition in partitions {
            let deleted = self.pack_partition(partition, order.pack_tid, order.oids.as_deref())?;
            self.backend
                .set_pack_progress(partition, own, order.pack_id)?;
            self.backend.commit()?;
            info!(
                "partition {partition} packed at {} (order {}): {deleted} records deleted",
                order.pack_tid, order.pack_id
            );
        }
        self.notify_pack_completed(out)?;
        self.maybe_pack(out)
    }

    /// Deletes the revisions a pack at `pack_tid` makes useless: for each object with
    /// records at or before it, those before the newest one, and that one too if it is a
    /// deletion. Returns how many records were deleted.
    fn pack_partition(
        &mut self,
        partition: u32,
        pack_tid: Tid,
        oids: Option<&[Oid]>,
    ) -> Result<usize, crate::node::Fail> {
        let mut by_oid: BTreeMap<Oid, Vec<Tid>> = BTreeMap::new();
        for (tid, oid) in
            self.backend
                .objects_range(partition, Tid(0), Oid(0), pack_tid, usize::MAX)?
        {
            if oids.is_none_or(|o| o.contains(&oid)) {
                by_oid.entry(oid).or_default().push(tid);
            }
        }
        let mut doomed = Vec::new();
        for (oid, mut tids) in by_oid {
            tids.sort_unstable();
            let Some(&newest) = tids.last() else {
                continue;
            };
            let deleted = self
                .backend
                .object(oid, Some(newest), None)?
                .is_some_and(|r| r.data.is_none());
            let keep = if deleted { 0 } else { 1 };
            let cut = tids.len() - keep;
            doomed.extend(tids[..cut].iter().map(|tid| (*tid, oid)));
        }
        self.backend.delete_objects(partition, &doomed)?;
        Ok(doomed.len())
    }

    /// NotifyPackCompleted with the minimum `pt.pack` over own cells, if it changed.
    pub(crate) fn notify_pack_completed(&mut self, out: &mut Outbox) -> Handled {
        let own = self.own();
        let completed = self
            .backend
            .pt_rows()?
            .into_iter()
            .filter(|r| r.nid == own)
            .filter_map(|r| r.pack)
            .min();
        if let Some(pack_id) = completed {
            if self.pack.reported != Some(pack_id) {
                self.pack.reported = Some(pack_id);
                if let Some(master) = self.master_conn() {
                    out.notify(master, NotifyPackCompleted { pack_id });
                }
            }
        }
        Ok(())
    }

    /// The smallest pack progress over own UP_TO_DATE cells.
    fn packed_up_to_date(&self) -> Result<Option<Tid>, crate::node::Fail> {
        let own = self.own();
        Ok(self
            .backend
            .pt_rows()?
            .into_iter()
            .filter(|r| r.nid == own && r.state() == CellState::UpToDate)
            .filter_map(|r| r.pack)
            .min())
    }
}
