//! The partition table (cluster.md section 3). Being written; see the PT helper's task.

use neo_protocol::{Cell, Row};

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionTable {
    pub ptid: Option<u64>,
    pub replicas: u32,
    pub rows: Vec<Row>,
}

impl PartitionTable {
    pub fn new(partitions: u32, replicas: u32) -> PartitionTable {
        PartitionTable {
            ptid: None,
            replicas,
            rows: vec![Vec::<Cell>::new(); partitions as usize],
        }
    }
}
