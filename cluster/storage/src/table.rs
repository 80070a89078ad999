//! The storage's view of the partition table: rows of `(nid, state)` with the ptid and the
//! number of replicas, loaded from the backend's `pt` rows and patched by the master's
//! notifications (cluster.md 3.11, 3.12). The backend keeps the durable copy (with
//! replication progress); this copy answers "which cells are readable, and where".

use neo_protocol::{Cell, CellChange, CellState, Nid, Row};

use crate::backend::PtRow;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub ptid: Option<u64>,
    pub replicas: u32,
    pub rows: Vec<Row>,
}

impl Table {
    /// The table stored by the backend (np is one more than the greatest partition).
    pub fn from_rows(ptid: Option<u64>, replicas: u32, stored: &[PtRow]) -> Table {
        let np = stored
            .iter()
            .map(|r| r.partition as usize + 1)
            .max()
            .unwrap_or(0);
        let mut rows = vec![Row::new(); np];
        for row in stored {
            rows[row.partition as usize].push(Cell {
                nid: row.nid,
                state: row.state(),
            });
        }
        Table {
            ptid,
            replicas,
            rows,
        }
    }

    pub fn np(&self) -> u32 {
        self.rows.len() as u32
    }

    /// Replaces everything (SendPartitionTable).
    pub fn load(&mut self, ptid: u64, replicas: u32, rows: Vec<Row>) {
        self.ptid = Some(ptid);
        self.replicas = replicas;
        self.rows = rows;
    }

    /// Applies NotifyPartitionChanges; the caller checked the ptid and the partitions.
    pub fn apply(&mut self, ptid: u64, replicas: u32, changes: &[CellChange]) {
        self.ptid = Some(ptid);
        self.replicas = replicas;
        for change in changes {
            let Some(row) = self.rows.get_mut(change.partition as usize) else {
                continue;
            };
            let existing = row.iter().position(|c| c.nid == change.nid);
            match (change.state, existing) {
                (CellState::Discarded, Some(i)) => {
                    row.remove(i);
                }
                (CellState::Discarded, None) => {}
                (state, Some(i)) => row[i].state = state,
                (state, None) => row.push(Cell {
                    nid: change.nid,
                    state,
                }),
            }
        }
    }

    /// Every row has at least one cell (a full table, as SendPartitionTable must carry).
    pub fn is_filled(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|row| !row.is_empty())
    }

    pub fn cell(&self, partition: u32, nid: Nid) -> Option<CellState> {
        self.rows
            .get(partition as usize)?
            .iter()
            .find(|c| c.nid == nid)
            .map(|c| c.state)
    }

    pub fn is_readable(&self, partition: u32, nid: Nid) -> bool {
        matches!(
            self.cell(partition, nid),
            Some(CellState::UpToDate | CellState::Feeding)
        )
    }

    /// Partitions where `nid` has a cell, in order.
    pub fn assigned(&self, nid: Nid) -> Vec<u32> {
        self.partitions_where(|c| c.nid == nid)
    }

    /// Partitions where `nid` has a readable cell.
    pub fn readable(&self, nid: Nid) -> Vec<u32> {
        self.partitions_where(|c| {
            c.nid == nid && matches!(c.state, CellState::UpToDate | CellState::Feeding)
        })
    }

    /// Nodes holding a readable cell of a partition.
    pub fn readable_nids(&self, partition: u32) -> Vec<Nid> {
        self.rows
            .get(partition as usize)
            .map(|row| {
                row.iter()
                    .filter(|c| matches!(c.state, CellState::UpToDate | CellState::Feeding))
                    .map(|c| c.nid)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The partition of an oid or tid (`id mod np`); None without a table.
    pub fn partition_of(&self, id: u64) -> Option<u32> {
        match self.np() {
            0 => None,
            np => Some((id % np as u64) as u32),
        }
    }

    fn partitions_where(&self, keep: impl Fn(&Cell) -> bool) -> Vec<u32> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, row)| row.iter().any(&keep))
            .map(|(p, _)| p as u32)
            .collect()
    }
}
