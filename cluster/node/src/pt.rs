//! The partition table (cluster.md section 3): which storage holds which partition, in
//! which cell state, at which version (ptid).
//!
//! Every node keeps one. Receivers (storages, clients, admins) load it from
//! `SendPartitionTable` ([`PartitionTable::reset`]) and patch it with
//! `NotifyPartitionChanges` ([`PartitionTable::apply_changes`]). The primary master also
//! runs the algorithms that decide changes: outdating cells of lost nodes (3.6), accepting
//! replicated cells and cleaning up FEEDING ones (3.7), the tweak that rebalances cells
//! over nodes with their topology (3.8), making a new table (3.9) and dropping a node
//! (3.10). Each of these returns the change list it applied, and bumps the ptid by exactly
//! one when that list is non-empty, because storages refuse a notification that skips a
//! ptid. The text forms that neoctl prints and logs show are here too (tools.md 2.4).
//!
//! Rows keep their cells in insertion order, as NEO/py does, so that the rows we send are
//! the ones NEO/py would send; everything else is ordered by NID.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use neo_protocol::{Bytes, Cell, CellChange, CellState, Nid, NodeState, Row};

/// What a partition-table operation refused, with the text the admin sends back in DENIED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtError {
    /// A notification whose ptid is not ours plus one (the sender must resend the table).
    PtidGap { have: Option<u64>, got: u64 },
    /// A partition number outside `0..np`.
    BadPartition { partition: u32, np: u32 },
    /// A table with no row at all: np is at least 1.
    NoPartitions,
    /// A row received with a DISCARDED cell or twice the same node.
    BadRow { partition: u32, nid: Nid },
    /// `NotifyReplicationDone` for a cell the node does not have.
    NotAssigned { partition: u32, nid: Nid },
    /// Tweak with every node excluded.
    NoNodeLeft,
    /// Dropping or killing the node would leave a partition without a readable cell.
    OnlyReadableCopy { partition: u32 },
    /// Make on a table that already has an id.
    AlreadyMade,
    /// Tweak found no assignment (NEO/py fails with an internal error there too).
    NoSolution,
}

impl fmt::Display for PtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PtError::PtidGap { have, got } => match have {
                Some(have) => write!(f, "partition table id {got} does not follow {have}"),
                None => write!(f, "partition table id {got} received without a table"),
            },
            PtError::BadPartition { partition, np } => {
                write!(f, "invalid partition {partition} (table has {np})")
            }
            PtError::NoPartitions => f.write_str("partition table without partitions"),
            PtError::BadRow { partition, nid } => {
                write!(f, "invalid cell of {nid} in partition {partition}")
            }
            PtError::NotAssigned { .. } => f.write_str("Non-assigned partition"),
            PtError::NoNodeLeft => f.write_str("Can't remove all nodes."),
            PtError::OnlyReadableCopy { partition } => write!(
                f,
                "Refuse to drop nodes that contain the only readable copies of partition \
                 {partition}"
            ),
            PtError::AlreadyMade => f.write_str("the partition table already exists"),
            PtError::NoSolution => f.write_str("tweak found no assignment of partitions"),
        }
    }
}

impl std::error::Error for PtError {}

/// A cell is readable when it is UP_TO_DATE or FEEDING (3.2).
pub fn is_readable(state: CellState) -> bool {
    matches!(state, CellState::UpToDate | CellState::Feeding)
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionTable {
    ptid: Option<u64>,
    replicas: u32,
    rows: Vec<Row>,
    /// The nodes tweak distributes partitions over when nothing else is said: every node
    /// that had a cell, plus enabled storages without cells (`AddPendingNodes`). Nodes
    /// leave it only by [`PartitionTable::drop_node`] or [`PartitionTable::forget_node`].
    members: BTreeSet<Nid>,
}

impl PartitionTable {
    /// An empty table without id, as a master has before recovery and a new cluster
    /// before make. `np` comes from configuration and is at least 1.
    pub fn new(np: u32, replicas: u32) -> PartitionTable {
        assert!(np > 0, "a partition table has at least one partition");
        PartitionTable {
            ptid: None,
            replicas,
            rows: vec![Row::new(); np as usize],
            members: BTreeSet::new(),
        }
    }

    /// A table as received in `SendPartitionTable`, `AnswerPartitionTable` or loaded from
    /// a backend; np is the number of rows. Loading is lenient as in NEO/py: a DISCARDED
    /// cell is no cell, and a node listed twice in a row keeps its last state. Use
    /// [`check_rows`] first to refuse such rows instead.
    pub fn from_rows(ptid: Option<u64>, replicas: u32, rows: Vec<Row>) -> PartitionTable {
        let mut table = PartitionTable {
            ptid,
            replicas,
            rows: vec![Row::new(); rows.len()],
            members: BTreeSet::new(),
        };
        for (partition, row) in rows.into_iter().enumerate() {
            for cell in row {
                table.set_cell(partition as u32, cell.nid, cell.state);
            }
        }
        table
    }

    pub fn np(&self) -> u32 {
        self.rows.len() as u32
    }

    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    pub fn ptid(&self) -> Option<u64> {
        self.ptid
    }

    /// All rows, as `SendPartitionTable` and `AnswerPartitionTable` carry them.
    pub fn rows(&self) -> Vec<Row> {
        self.rows.clone()
    }

    /// The cells of one partition; empty for a partition outside the table, which has no
    /// cell by definition (partition numbers may come from the network).
    pub fn row(&self, partition: u32) -> &[Cell] {
        self.rows
            .get(partition as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn cell(&self, partition: u32, nid: Nid) -> Option<CellState> {
        self.row(partition)
            .iter()
            .find(|cell| cell.nid == nid)
            .map(|cell| cell.state)
    }

    /// The partition of an OID or TID (as u64): value mod np (3.3). A table received
    /// without rows maps everything to partition 0, which it does not have.
    pub fn partition_of(&self, value: u64) -> u32 {
        (value % (self.rows.len() as u64).max(1)) as u32
    }

    /// The nodes that have at least one cell, sorted.
    pub fn nodes(&self) -> Vec<Nid> {
        let nids: BTreeSet<Nid> = self.rows.iter().flatten().map(|cell| cell.nid).collect();
        nids.into_iter().collect()
    }

    /// The nodes tweak uses by default (see the field), sorted.
    pub fn members(&self) -> Vec<Nid> {
        self.members.iter().copied().collect()
    }

    /// The cells of one node, by partition.
    pub fn cells_of(&self, nid: Nid) -> Vec<(u32, CellState)> {
        let mut cells = Vec::new();
        for (partition, row) in self.rows.iter().enumerate() {
            if let Some(cell) = row.iter().find(|cell| cell.nid == nid) {
                cells.push((partition as u32, cell.state));
            }
        }
        cells
    }

    /// How many cells of the node are not FEEDING: the count by which the master balances
    /// nodes (a FEEDING cell is on its way out).
    pub fn cell_count(&self, nid: Nid) -> usize {
        self.cells_of(nid)
            .iter()
            .filter(|(_, state)| *state != CellState::Feeding)
            .count()
    }

    /// Every row has at least one cell.
    pub fn is_filled(&self) -> bool {
        self.rows.iter().all(|row| !row.is_empty())
    }

    /// The nodes with a readable cell of the partition, in row order.
    pub fn readable_cells(&self, partition: u32) -> Vec<Nid> {
        self.row(partition)
            .iter()
            .filter(|cell| is_readable(cell.state))
            .map(|cell| cell.nid)
            .collect()
    }

    /// The operational condition (3.4): every row has a readable cell on a running node
    /// that is not in `exclude`.
    pub fn is_operational(&self, is_running: impl Fn(Nid) -> bool, exclude: &[Nid]) -> bool {
        self.is_filled()
            && self.rows.iter().all(|row| {
                row.iter().any(|cell| {
                    is_readable(cell.state) && is_running(cell.nid) && !exclude.contains(&cell.nid)
                })
            })
    }

    // -----------------------------------------------------------------------------------
    // Receivers: storages, clients and admins follow the master's table.

    /// Replaces the whole table (`SendPartitionTable`), as [`PartitionTable::from_rows`].
    pub fn reset(&mut self, ptid: Option<u64>, replicas: u32, rows: Vec<Row>) {
        *self = PartitionTable::from_rows(ptid, replicas, rows);
    }

    /// Applies a `NotifyPartitionChanges`. The ptid must be ours plus one (3.11); nothing
    /// is changed when the notification is refused.
    pub fn apply_changes(
        &mut self,
        ptid: u64,
        replicas: u32,
        changes: &[CellChange],
    ) -> Result<(), PtError> {
        if self.ptid.and_then(|have| have.checked_add(1)) != Some(ptid) {
            return Err(PtError::PtidGap {
                have: self.ptid,
                got: ptid,
            });
        }
        for change in changes {
            self.check_partition(change.partition)?;
        }
        for change in changes {
            self.set_cell(change.partition, change.nid, change.state);
        }
        self.ptid = Some(ptid);
        self.replicas = replicas;
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Master side.

    /// Counts a node among the members tweak spreads partitions over, even without cells
    /// (`AddPendingNodes`). Returns whether it was new.
    pub fn add_node(&mut self, nid: Nid) -> bool {
        self.members.insert(nid)
    }

    /// Stops counting a node that has no cell (a storage forgotten by the node table).
    /// Returns false, changing nothing, if it still has cells.
    pub fn forget_node(&mut self, nid: Nid) -> bool {
        if self.rows.iter().flatten().any(|cell| cell.nid == nid) {
            return false;
        }
        self.members.remove(&nid);
        true
    }

    /// Changes the number of replicas (`SetNumReplicas`). The master broadcasts it as a
    /// notification with an empty cell list, which takes a ptid of its own: the new one is
    /// returned (None if the table has no id yet, then nothing is broadcast).
    pub fn set_replicas(&mut self, replicas: u32) -> Option<u64> {
        self.replicas = replicas;
        self.ptid = self.ptid.map(|ptid| ptid + 1);
        self.ptid
    }

    /// Outdates the readable cells of non-running nodes (3.6): FEEDING cells are
    /// discarded, UP_TO_DATE ones become OUT_OF_DATE. In a row where no readable cell is on
    /// a running node, the cells of `lost` are kept, so that the cluster can restart with
    /// that node's data.
    pub fn outdate(
        &mut self,
        is_running: impl Fn(Nid) -> bool,
        lost: Option<Nid>,
    ) -> Vec<CellChange> {
        let mut changes = Vec::new();
        for (partition, row) in self.rows.iter().enumerate() {
            let serving = row
                .iter()
                .any(|cell| is_readable(cell.state) && is_running(cell.nid));
            for cell in row {
                if !is_readable(cell.state) || is_running(cell.nid) {
                    continue;
                }
                if !serving && Some(cell.nid) == lost {
                    continue;
                }
                let state = match cell.state {
                    CellState::Feeding => CellState::Discarded,
                    _ => CellState::OutOfDate,
                };
                changes.push(change(partition as u32, cell.nid, state));
            }
        }
        self.commit(changes)
    }

    /// `NotifyReplicationDone(partition)` from `nid` (3.7). The cell becomes UP_TO_DATE if
    /// it is OUT_OF_DATE and `updatable` (the caller's mark: the storage asked
    /// `AskUnfinishedTransactions` since the cell last became non-readable; the caller
    /// drops that mark whenever a change list makes the cell non-readable). Otherwise the
    /// notification is late and ignored (empty list). FEEDING cells are then discarded:
    /// all of them if the whole row is readable, else as many as there are readable cells
    /// beyond the wanted replicas, those of nodes having only FEEDING cells first.
    pub fn replication_done(
        &mut self,
        nid: Nid,
        partition: u32,
        updatable: bool,
    ) -> Result<Vec<CellChange>, PtError> {
        self.check_partition(partition)?;
        let state = self
            .cell(partition, nid)
            .ok_or(PtError::NotAssigned { partition, nid })?;
        if state != CellState::OutOfDate || !updatable {
            return Ok(Vec::new());
        }
        let mut changes = vec![change(partition, nid, CellState::UpToDate)];
        let row = &self.rows[partition as usize];
        let readable = row
            .iter()
            .filter(|cell| is_readable(cell.state) || cell.nid == nid)
            .count();
        let mut feeding: Vec<Nid> = row
            .iter()
            .filter(|cell| cell.state == CellState::Feeding)
            .map(|cell| cell.nid)
            .collect();
        if readable != row.len() {
            // Stable sort: nodes being emptied come first, row order otherwise.
            feeding.sort_by_key(|&feeder| !self.only_feeding(feeder));
            feeding.truncate(readable.saturating_sub(self.replicas as usize));
        }
        for feeder in feeding {
            changes.push(change(partition, feeder, CellState::Discarded));
        }
        Ok(self.commit(changes))
    }

    /// Checks that `nid` could be killed or dropped (3.10): refused if it holds the only
    /// readable copy of some partition.
    pub fn kill_check(&self, nid: Nid) -> Result<(), PtError> {
        for (partition, row) in self.rows.iter().enumerate() {
            let holds_readable = row
                .iter()
                .any(|cell| cell.nid == nid && is_readable(cell.state));
            let other_readable = row
                .iter()
                .any(|cell| cell.nid != nid && is_readable(cell.state));
            if holds_readable && !other_readable {
                return Err(PtError::OnlyReadableCopy {
                    partition: partition as u32,
                });
            }
        }
        Ok(())
    }

    /// Drops a storage for good (admin "drop", 3.10): all its cells are discarded, and in
    /// each row that lost a cell a FEEDING cell (the last in row order), if any, becomes
    /// UP_TO_DATE again since the move it was kept for will not happen. The node stops
    /// being a member. Refused like [`PartitionTable::kill_check`].
    pub fn drop_node(&mut self, nid: Nid) -> Result<Vec<CellChange>, PtError> {
        self.kill_check(nid)?;
        let mut changes = Vec::new();
        for (partition, row) in self.rows.iter().enumerate() {
            if !row.iter().any(|cell| cell.nid == nid) {
                continue;
            }
            changes.push(change(partition as u32, nid, CellState::Discarded));
            if let Some(feeder) = row
                .iter()
                .rev()
                .find(|cell| cell.nid != nid && cell.state == CellState::Feeding)
            {
                changes.push(change(partition as u32, feeder.nid, CellState::UpToDate));
            }
        }
        self.members.remove(&nid);
        Ok(self.commit(changes))
    }

    /// Builds the table of a new cluster (3.9): the nodes (with their devpaths) become
    /// members, tweak gives them UP_TO_DATE cells, the ptid becomes 1, and nodes that got
    /// no cell are not kept as members.
    pub fn make(&mut self, nodes: &[(Nid, Vec<Bytes>)]) -> Result<Vec<CellChange>, PtError> {
        if self.ptid.is_some() {
            return Err(PtError::AlreadyMade);
        }
        let changes = self.tweak(nodes, &[])?;
        let with_cells: BTreeSet<Nid> = self.nodes().into_iter().collect();
        self.members.retain(|nid| with_cells.contains(nid));
        Ok(changes)
    }

    /// Rebalances the table (3.8) and applies the result. The participants are the
    /// members plus the `nodes` listed (which become members), minus `excluded`, whose
    /// cells are left untouched. `nodes` gives each node's devpath (topology); a member not
    /// listed has none, which disables the topology, so callers list every participant.
    pub fn tweak(
        &mut self,
        nodes: &[(Nid, Vec<Bytes>)],
        excluded: &[Nid],
    ) -> Result<Vec<CellChange>, PtError> {
        let plan = self.plan_tweak(nodes, excluded)?;
        for (nid, _) in nodes {
            if !excluded.contains(nid) {
                self.members.insert(*nid);
            }
        }
        Ok(self.commit(plan))
    }

    /// Tweak on a copy (`TweakPartitionTable` with dry_run): the changes and the rows the
    /// table would have; `self` is untouched.
    pub fn tweak_dry_run(
        &self,
        nodes: &[(Nid, Vec<Bytes>)],
        excluded: &[Nid],
    ) -> Result<(Vec<CellChange>, Vec<Row>), PtError> {
        let mut copy = self.clone();
        let changes = copy.tweak(nodes, excluded)?;
        Ok((changes, copy.rows))
    }

    /// The text of the table the way NEO/py logs it and neoctl prints it (tools.md 2.4):
    /// a line per member or node with cells. See [`format_table`].
    pub fn format(&self, node_state: impl Fn(Nid) -> NodeState) -> Vec<String> {
        let mut nids: BTreeSet<Nid> = self.members.clone();
        nids.extend(self.rows.iter().flatten().map(|cell| cell.nid));
        render(&self.rows, &nids, node_state)
    }

    // -----------------------------------------------------------------------------------
    // Helpers.

    fn check_partition(&self, partition: u32) -> Result<(), PtError> {
        if (partition as usize) < self.rows.len() {
            Ok(())
        } else {
            Err(PtError::BadPartition {
                partition,
                np: self.np(),
            })
        }
    }

    /// Sets one cell; DISCARDED removes it. The partition is in range.
    fn set_cell(&mut self, partition: u32, nid: Nid, state: CellState) {
        let row = &mut self.rows[partition as usize];
        let position = row.iter().position(|cell| cell.nid == nid);
        match (position, state) {
            (Some(i), CellState::Discarded) => {
                row.remove(i);
            }
            (None, CellState::Discarded) => {}
            (Some(i), _) => row[i].state = state,
            (None, _) => {
                row.push(Cell { nid, state });
                self.members.insert(nid);
            }
        }
    }

    /// Applies a change list computed on this table and takes the next ptid for it.
    fn commit(&mut self, changes: Vec<CellChange>) -> Vec<CellChange> {
        if changes.is_empty() {
            return changes;
        }
        for change in &changes {
            self.set_cell(change.partition, change.nid, change.state);
        }
        self.ptid = Some(self.ptid.map_or(1, |ptid| ptid + 1));
        changes
    }

    fn only_feeding(&self, nid: Nid) -> bool {
        self.rows
            .iter()
            .flatten()
            .filter(|cell| cell.nid == nid)
            .all(|cell| cell.state == CellState::Feeding)
    }

    /// Computes tweak's change list without applying it.
    fn plan_tweak(
        &self,
        nodes: &[(Nid, Vec<Bytes>)],
        excluded: &[Nid],
    ) -> Result<Vec<CellChange>, PtError> {
        let mut participants: BTreeMap<Nid, Vec<Bytes>> = BTreeMap::new();
        for &nid in &self.members {
            participants.insert(nid, Vec::new());
        }
        for (nid, devpath) in nodes {
            participants.insert(*nid, devpath.clone());
        }
        participants.retain(|nid, _| !excluded.contains(nid));
        if participants.is_empty() {
            return Err(PtError::NoNodeLeft);
        }
        let participants: Vec<(Nid, Vec<Bytes>)> = participants.into_iter().collect();
        let np = self.np();
        let node_count = participants.len();
        let copies = (self.replicas as usize + 1).min(node_count);

        // The cells each participant has now, by partition.
        let current: Vec<BTreeMap<u32, CellState>> = participants
            .iter()
            .map(|(nid, _)| self.cells_of(*nid).into_iter().collect())
            .collect();

        // The ideal pattern: partition copies dealt round-robin to node_count slots.
        let mut slots: Vec<Vec<u32>> = vec![Vec::new(); node_count];
        for i in 0..np as usize * copies {
            slots[i % node_count].push((i / copies) as u32);
        }
        let mut option_counts: BTreeMap<Vec<u32>, usize> = BTreeMap::new();
        for slot in slots {
            *option_counts.entry(slot).or_default() += 1;
        }
        let mut options: Vec<Vec<u32>> = option_counts.keys().cloned().collect();
        options.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        let mut available: Vec<usize> = options.iter().map(|o| option_counts[o]).collect();

        let devpaths: Vec<&[Bytes]> = participants.iter().map(|(_, d)| d.as_slice()).collect();
        let mut topology = Topology::new(np, copies, &devpaths);

        let mut solution = None;
        for order in strategies(&options, &current, np) {
            if let Some(chosen) = search(&order, &options, &mut available, &mut topology) {
                solution = Some((order, chosen));
                break;
            }
        }
        let (order, chosen) = solution.ok_or(PtError::NoSolution)?;

        // Apply the assignment to the change list.
        let new_state = if self.ptid.is_none() {
            CellState::UpToDate
        } else {
            CellState::OutOfDate
        };
        let mut changes = Vec::new();
        let mut missing = vec![copies; np as usize];
        let mut removable: Vec<Vec<(Nid, CellState)>> = vec![Vec::new(); np as usize];
        for (&(node, _), &option) in order.iter().zip(&chosen) {
            let nid = participants[node].0;
            let mut cells = current[node].clone();
            for &partition in &options[option] {
                match cells.remove(&partition) {
                    None => changes.push(change(partition, nid, new_state)),
                    Some(state) if is_readable(state) => {
                        if state == CellState::Feeding {
                            changes.push(change(partition, nid, CellState::UpToDate));
                        }
                        missing[partition as usize] -= 1;
                    }
                    Some(_) => {}
                }
            }
            for (partition, state) in cells {
                removable[partition as usize].push((nid, state));
            }
        }
        for (partition, candidates) in removable.into_iter().enumerate() {
            let missing = &mut missing[partition];
            for (nid, state) in candidates {
                if *missing > 0 && is_readable(state) {
                    *missing -= 1;
                    if state == CellState::UpToDate {
                        changes.push(change(partition as u32, nid, CellState::Feeding));
                    }
                } else {
                    changes.push(change(partition as u32, nid, CellState::Discarded));
                }
            }
        }
        Ok(changes)
    }
}

/// Refuses rows a receiver should not accept: no row at all, a DISCARDED cell, or a node
/// listed twice in one row.
pub fn check_rows(rows: &[Row]) -> Result<(), PtError> {
    if rows.is_empty() {
        return Err(PtError::NoPartitions);
    }
    for (partition, row) in rows.iter().enumerate() {
        for (i, cell) in row.iter().enumerate() {
            if cell.state == CellState::Discarded
                || row[..i].iter().any(|other| other.nid == cell.nid)
            {
                return Err(PtError::BadRow {
                    partition: partition as u32,
                    nid: cell.nid,
                });
            }
        }
    }
    Ok(())
}

/// The letter of a cell state in the compact table view (tools.md 0.4).
pub fn cell_state_letter(state: CellState) -> char {
    match state {
        CellState::OutOfDate => 'O',
        CellState::UpToDate => 'U',
        CellState::Feeding => 'F',
        CellState::Corrupted => 'C',
        CellState::Discarded => 'D',
    }
}

/// The letter of a node state in the compact table view (tools.md 0.4).
pub fn node_state_letter(state: NodeState) -> char {
    match state {
        NodeState::Running => 'R',
        NodeState::Down => 'D',
        NodeState::Unknown => 'U',
        NodeState::Pending => 'P',
    }
}

/// neoctl's full view of a table (`print pt`, `tweak`; tools.md 2.4), without the
/// `# ptid` header: a line per storage that has cells or is RUNNING in `storages` (the
/// node list), sorted by NID, with its state letter and one character per partition,
/// preceded by a ruler when there are more than 10 partitions. No line at all when no
/// node qualifies. A node absent from `storages` shows as unknown.
pub fn format_table(rows: &[Row], storages: &[(Nid, NodeState)]) -> Vec<String> {
    let mut nids: BTreeSet<Nid> = rows.iter().flatten().map(|cell| cell.nid).collect();
    nids.extend(
        storages
            .iter()
            .filter(|(_, state)| *state == NodeState::Running)
            .map(|(nid, _)| *nid),
    );
    render(rows, &nids, |nid| {
        storages
            .iter()
            .find(|(known, _)| *known == nid)
            .map_or(NodeState::Unknown, |(_, state)| *state)
    })
}

/// neoctl's row view (`print pt MIN MAX`; tools.md 2.4): `NNN |` then ` S1 - STATE |`
/// per cell, the first row being partition `first`.
pub fn format_rows(rows: &[Row], first: u32) -> Vec<String> {
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let mut line = format!("{:03} |", first as u64 + i as u64);
            for cell in row {
                line.push_str(&format!(" {} - {} |", cell.nid, cell.state));
            }
            line
        })
        .collect()
}

fn change(partition: u32, nid: Nid, state: CellState) -> CellChange {
    CellChange {
        partition,
        nid,
        state,
    }
}

fn render(
    rows: &[Row],
    nids: &BTreeSet<Nid>,
    node_state: impl Fn(Nid) -> NodeState,
) -> Vec<String> {
    let Some(last) = nids.last() else {
        return Vec::new();
    };
    let width = last.to_string().len();
    let mut lines = Vec::new();
    if rows.len() > 10 {
        let mut ruler = " ".repeat(4 + width);
        for tens in (10..rows.len()).step_by(10) {
            ruler.push_str(&format!("{tens:>9}v"));
        }
        lines.push(ruler);
    }
    for &nid in nids {
        let cells: String = rows
            .iter()
            .map(|row| {
                row.iter()
                    .find(|cell| cell.nid == nid)
                    .map_or('.', |cell| cell_state_letter(cell.state))
            })
            .collect();
        lines.push(format!(
            "{:<width$} {} {}",
            nid.to_string(),
            node_state_letter(node_state(nid)),
            cells
        ));
    }
    lines
}

/// The orders in which tweak's search visits nodes, best first (3.8 step 4): each item is
/// (participant index, candidate option indexes in preference order).
type Order = Vec<(usize, Vec<usize>)>;

fn strategies(options: &[Vec<u32>], current: &[BTreeMap<u32, CellState>], np: u32) -> Vec<Order> {
    let mut orders = Vec::new();

    // No-move: every node keeps all its non-FEEDING cells, if the ideal pattern allows.
    let mut keep = Order::new();
    for (node, cells) in current.iter().enumerate() {
        let required: Vec<u32> = cells
            .iter()
            .filter(|(_, state)| **state != CellState::Feeding)
            .map(|(partition, _)| *partition)
            .collect();
        let candidates: Vec<usize> = (0..options.len())
            .filter(|&o| required.iter().all(|p| options[o].binary_search(p).is_ok()))
            .collect();
        if candidates.is_empty() {
            break;
        }
        keep.push((node, candidates));
    }
    if keep.len() == current.len() {
        orders.push(keep);
    }

    // Heuristic: options by what the node would lose (readable cells first), nodes with
    // the widest spread between best and worst option first.
    let mut ranked: Vec<((i64, i64, usize), Vec<usize>)> = Vec::new();
    for (node, cells) in current.iter().enumerate() {
        let mut costs: Vec<((i64, i64), usize)> = options
            .iter()
            .enumerate()
            .map(|(o, option)| {
                let mut readable = 0;
                let mut other = 0;
                for (partition, state) in cells {
                    if *partition < np && option.binary_search(partition).is_err() {
                        if is_readable(*state) {
                            readable += 1;
                        } else {
                            other += 1;
                        }
                    }
                }
                ((readable, other), o)
            })
            .collect();
        costs.sort();
        let best = costs[0].0;
        let worst = costs[costs.len() - 1].0;
        ranked.push((
            (best.0 - worst.0, best.1 - worst.1, node),
            costs.into_iter().map(|(_, o)| o).collect(),
        ));
    }
    ranked.sort();
    orders.push(
        ranked
            .into_iter()
            .map(|((_, _, node), o)| (node, o))
            .collect(),
    );
    orders
}

/// Depth-first search over nodes in `order` (3.8 step 5): each node takes the first of
/// its candidates still available and allowed by the topology. Returns the option chosen
/// for each position of `order`, leaving `available` and `topology` as they were.
fn search(
    order: &Order,
    options: &[Vec<u32>],
    available: &mut [usize],
    topology: &mut Topology,
) -> Option<Vec<usize>> {
    let mut chosen: Vec<usize> = Vec::new();
    let mut cursor = vec![0usize; order.len()];
    loop {
        let level = chosen.len();
        let (node, candidates) = &order[level];
        let mut found = None;
        while cursor[level] < candidates.len() {
            let option = candidates[cursor[level]];
            cursor[level] += 1;
            if available[option] > 0 && topology.try_add(*node, &options[option]) {
                found = Some(option);
                break;
            }
        }
        match found {
            Some(option) => {
                chosen.push(option);
                available[option] -= 1;
                if chosen.len() == order.len() {
                    for (&(node, _), &option) in order.iter().zip(&chosen) {
                        available[option] += 1;
                        topology.remove(node, &options[option]);
                    }
                    return Some(chosen);
                }
                cursor[level + 1] = 0;
            }
            None => {
                let option = chosen.pop()?;
                let (previous, _) = order[level - 1];
                available[option] += 1;
                topology.remove(previous, &options[option]);
            }
        }
    }
}

/// Where copies of each partition sit in the storage topology during tweak's search
/// (3.8 step 3): per partition, the number of copies under each devpath prefix.
struct Topology {
    /// The prefix of each participant's devpath that counts; empty when the topology is
    /// ignored (one copy per partition, or devpaths that do not allow an even spread).
    paths: Vec<Vec<Bytes>>,
    /// Per level: at most `.0` copies of a partition in one group, and only `.1` sibling
    /// groups may reach that many.
    limits: Vec<(usize, usize)>,
    counts: Vec<BTreeMap<Vec<Bytes>, usize>>,
}

impl Topology {
    fn new(np: u32, copies: usize, devpaths: &[&[Bytes]]) -> Topology {
        let node_count = devpaths.len();
        let mut paths = vec![Vec::new(); node_count];
        let mut limits = Vec::new();
        if copies > 1 {
            let max_depth = devpaths.iter().map(|d| d.len()).min().unwrap_or(0);
            let mut used = false;
            for depth in 1..=max_depth {
                let mut groups: BTreeMap<&[Bytes], usize> = BTreeMap::new();
                for devpath in devpaths {
                    *groups.entry(&devpath[..depth]).or_default() += 1;
                }
                let group_count = groups.len();
                let smallest = groups.values().min().copied().unwrap_or(0);
                let largest = groups.values().max().copied().unwrap_or(0);
                if smallest != largest && largest * copies > node_count {
                    break;
                }
                let (q, r) = (copies / group_count, copies % group_count);
                limits.push(if r > 0 { (q + 1, r) } else { (q, group_count) });
                if group_count >= copies {
                    paths = devpaths.iter().map(|d| d[..depth].to_vec()).collect();
                    used = true;
                    break;
                }
            }
            if !used {
                tracing::warn!(
                    "Can't maximize resiliency: fix the topology of your storage nodes and \
                     make sure they're all running. {} storage device failure(s) may be \
                     enough to lose all the database.",
                    copies - 1
                );
            }
        }
        Topology {
            paths,
            limits,
            counts: vec![BTreeMap::new(); np as usize],
        }
    }

    /// Adds one copy of every partition of `option` at `node`'s place, unless a level's
    /// limit would be exceeded (then nothing changes).
    fn try_add(&mut self, node: usize, option: &[u32]) -> bool {
        let path = &self.paths[node];
        for &partition in option {
            let counts = &self.counts[partition as usize];
            for (level, &(most, groups_at_most)) in self.limits.iter().enumerate().take(path.len())
            {
                let here = counts.get(&path[..=level]).copied().unwrap_or(0);
                if here == most {
                    return false;
                }
                if here + 1 == most {
                    let siblings_full = counts
                        .iter()
                        .filter(|(prefix, count)| {
                            prefix.len() == level + 1
                                && prefix[..level] == path[..level]
                                && **count == most
                        })
                        .count();
                    if siblings_full == groups_at_most {
                        return false;
                    }
                }
            }
        }
        self.shift(node, option, true);
        true
    }

    fn remove(&mut self, node: usize, option: &[u32]) {
        self.shift(node, option, false);
    }

    fn shift(&mut self, node: usize, option: &[u32], add: bool) {
        let path = &self.paths[node];
        for &partition in option {
            let counts = &mut self.counts[partition as usize];
            for level in 0..path.len() {
                let count = counts.entry(path[..=level].to_vec()).or_default();
                if add {
                    *count += 1;
                } else {
                    *count -= 1;
                }
            }
        }
    }
}
