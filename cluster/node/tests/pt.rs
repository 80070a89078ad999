//! Partition table tests: the worked examples of cluster.md 3.8, the master algorithms
//! (tweak, outdate, replication done, drop), receivers following change lists, the neoctl
//! text forms, a randomized run over many seeds, and a scenario transcript that NEO/py's
//! master PartitionTable produced for the same script (NEO_PY_TRANSCRIPT below).

use std::collections::{BTreeMap, BTreeSet};

use neo_node::pt::{check_rows, format_rows, format_table, is_readable, PtError};
use neo_node::{PartitionTable, Rng};
use neo_protocol::{Bytes, Cell, CellChange, CellState, Nid, NodeState};

fn s(n: i32) -> Nid {
    Nid(n)
}

fn plain(nids: &[i32]) -> Vec<(Nid, Vec<Bytes>)> {
    nids.iter().map(|&n| (s(n), Vec::new())).collect()
}

fn devpath(text: &str) -> Vec<Bytes> {
    text.split('/')
        .map(|part| Bytes::copy_from_slice(part.as_bytes()))
        .collect()
}

/// The nodes of each row, sorted.
fn row_nodes(pt: &PartitionTable, partition: u32) -> Vec<i32> {
    let mut nids: Vec<i32> = pt.row(partition).iter().map(|c| c.nid.0).collect();
    nids.sort();
    nids
}

fn all_running(_: Nid) -> bool {
    true
}

/// Marks every OUT_OF_DATE cell of a running node as replicated, row by row, and checks
/// that each accepted notification takes exactly one ptid.
fn replicate_all(pt: &mut PartitionTable, is_running: impl Fn(Nid) -> bool) -> Vec<CellChange> {
    let mut all = Vec::new();
    for partition in 0..pt.np() {
        for cell in pt.row(partition).to_vec() {
            if cell.state == CellState::OutOfDate && is_running(cell.nid) {
                let before = pt.ptid();
                let changes = pt.replication_done(cell.nid, partition, true).unwrap();
                assert!(!changes.is_empty());
                assert_eq!(pt.ptid(), before.map(|p| p + 1));
                all.extend(changes);
            }
        }
    }
    all
}

fn counts(pt: &PartitionTable) -> BTreeMap<Nid, usize> {
    pt.nodes()
        .into_iter()
        .map(|nid| (nid, pt.cell_count(nid)))
        .collect()
}

fn balanced(pt: &PartitionTable) -> bool {
    let counts: Vec<usize> = counts(pt).into_values().collect();
    counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1
}

#[test]
fn worked_example_round_robin_pairs() {
    let mut pt = PartitionTable::new(10, 1);
    let changes = pt.make(&plain(&[1, 2, 3, 4, 5])).unwrap();
    assert_eq!(pt.ptid(), Some(1));
    assert_eq!(changes.len(), 20);
    assert!(changes.iter().all(|c| c.state == CellState::UpToDate));
    let pairs = [[1, 2], [3, 4], [1, 5], [2, 3], [4, 5]];
    for partition in 0..10 {
        assert_eq!(
            row_nodes(&pt, partition),
            pairs[partition as usize % 5],
            "row {partition}"
        );
        assert!(pt
            .row(partition)
            .iter()
            .all(|c| c.state == CellState::UpToDate));
    }
    assert!(pt.is_operational(all_running, &[]));
    assert_eq!(pt.members(), vec![s(1), s(2), s(3), s(4), s(5)]);

    // Nothing to move: no change, no new ptid.
    assert_eq!(pt.tweak(&plain(&[1, 2, 3, 4, 5]), &[]).unwrap(), vec![]);
    assert_eq!(pt.ptid(), Some(1));
}

#[test]
fn make_drops_members_without_cells_and_refuses_twice() {
    let mut pt = PartitionTable::new(2, 0);
    pt.make(&plain(&[1, 2, 3])).unwrap();
    assert_eq!(pt.nodes(), vec![s(1), s(2)]);
    assert_eq!(pt.members(), vec![s(1), s(2)]);
    assert_eq!(pt.make(&plain(&[1])), Err(PtError::AlreadyMade));
}

#[test]
fn third_node_gets_cells_and_feeding_cells_go_after_replication() {
    let mut pt = PartitionTable::new(12, 1);
    pt.make(&plain(&[1, 2])).unwrap();
    assert!(pt.add_node(s(3)));
    assert!(!pt.add_node(s(3)));
    let changes = pt.tweak(&plain(&[1, 2, 3]), &[]).unwrap();
    assert_eq!(pt.ptid(), Some(2));
    // S3 gets 8 new cells, all OUT_OF_DATE; for each, the node giving it up keeps it
    // FEEDING so that the row still has 2 readable copies.
    let new: Vec<&CellChange> = changes.iter().filter(|c| c.nid == s(3)).collect();
    assert_eq!(new.len(), 8);
    assert!(new.iter().all(|c| c.state == CellState::OutOfDate));
    let feeding: Vec<&CellChange> = changes
        .iter()
        .filter(|c| c.state == CellState::Feeding)
        .collect();
    assert_eq!(feeding.len(), 8);
    for partition in 0..12 {
        assert_eq!(pt.readable_cells(partition).len(), 2, "row {partition}");
    }
    assert_eq!(pt.cell_count(s(1)), 8);
    assert_eq!(pt.cell_count(s(3)), 8);

    let done = replicate_all(&mut pt, all_running);
    assert_eq!(
        done.iter()
            .filter(|c| c.state == CellState::Discarded)
            .count(),
        8
    );
    assert!(pt.nodes().iter().all(|&n| pt
        .cells_of(n)
        .iter()
        .all(|(_, st)| *st == CellState::UpToDate)));
    for partition in 0..12 {
        assert_eq!(pt.row(partition).len(), 2, "row {partition}");
        assert_eq!(pt.readable_cells(partition).len(), 2);
    }
    assert_eq!(counts(&pt).into_values().collect::<Vec<_>>(), vec![8, 8, 8]);
    assert_eq!(pt.tweak(&plain(&[1, 2, 3]), &[]).unwrap(), vec![]);
}

#[test]
fn topology_spreads_copies_over_hosts() {
    let nodes = vec![
        (s(1), devpath("h1/d1")),
        (s(2), devpath("h1/d2")),
        (s(3), devpath("h2/d1")),
        (s(4), devpath("h2/d2")),
    ];
    let host = |nid: i32| if nid <= 2 { "h1" } else { "h2" };
    for np in [4, 8, 12, 17] {
        let mut pt = PartitionTable::new(np, 1);
        pt.make(&nodes).unwrap();
        for partition in 0..np {
            let nids = row_nodes(&pt, partition);
            assert_eq!(nids.len(), 2);
            assert_ne!(
                host(nids[0]),
                host(nids[1]),
                "np {np} row {partition}: {nids:?}"
            );
        }
        assert!(balanced(&pt));
    }
    // Without devpaths the same nodes pair up on the same host: the topology is what
    // changed the result.
    let mut pt = PartitionTable::new(8, 1);
    pt.make(&plain(&[1, 2, 3, 4])).unwrap();
    assert_eq!(row_nodes(&pt, 0), vec![1, 2]);
}

#[test]
fn topology_three_hosts_three_copies() {
    let nodes: Vec<(Nid, Vec<Bytes>)> = (1..=6)
        .map(|n| (s(n), devpath(&format!("host{}/disk{}", (n - 1) / 2, n % 2))))
        .collect();
    let mut pt = PartitionTable::new(12, 2);
    pt.make(&nodes).unwrap();
    for partition in 0..12 {
        let hosts: BTreeSet<i32> = row_nodes(&pt, partition)
            .iter()
            .map(|n| (n - 1) / 2)
            .collect();
        assert_eq!(hosts.len(), 3, "row {partition}");
    }
}

#[test]
fn outdate_without_and_with_lost_node() {
    let mut pt = PartitionTable::new(6, 1);
    pt.make(&plain(&[1, 2, 3])).unwrap();
    let mut down = BTreeSet::new();
    down.insert(s(2));
    let running = |down: &BTreeSet<Nid>| {
        let down = down.clone();
        move |nid: Nid| !down.contains(&nid)
    };

    // S2 lost: every row it shares with a running readable cell gets it outdated.
    let changes = pt.outdate(running(&down), Some(s(2)));
    assert_eq!(pt.ptid(), Some(2));
    assert_eq!(changes.len(), 4);
    assert!(changes
        .iter()
        .all(|c| c.nid == s(2) && c.state == CellState::OutOfDate));
    assert!(pt.is_operational(running(&down), &[]));

    // S1 lost too: rows 0 and 3 have no other readable cell, so S1 keeps them UP_TO_DATE
    // for a restart; its other cells are outdated.
    down.insert(s(1));
    let changes = pt.outdate(running(&down), Some(s(1)));
    let outdated: Vec<u32> = changes.iter().map(|c| c.partition).collect();
    assert_eq!(outdated, vec![1, 4]);
    assert_eq!(pt.cell(0, s(1)), Some(CellState::UpToDate));
    assert!(!pt.is_operational(running(&down), &[]));

    // Outdate without a lost node (end of recovery, kill): nothing is kept.
    let changes = pt.outdate(running(&down), None);
    assert_eq!(
        changes.iter().map(|c| c.partition).collect::<Vec<_>>(),
        vec![0, 3]
    );
    assert_eq!(pt.ptid(), Some(4));
    // Nothing left to outdate: no change, no ptid.
    assert_eq!(pt.outdate(running(&down), None), vec![]);
    assert_eq!(pt.ptid(), Some(4));
}

#[test]
fn outdate_discards_feeding_cells_of_lost_nodes() {
    let mut pt = PartitionTable::new(4, 0);
    pt.make(&plain(&[1, 2])).unwrap();
    pt.add_node(s(3));
    pt.tweak(&plain(&[1, 2, 3]), &[]).unwrap();
    let feeding: Vec<(u32, CellState)> = pt
        .cells_of(s(1))
        .into_iter()
        .filter(|(_, st)| *st == CellState::Feeding)
        .collect();
    assert_eq!(feeding.len(), 1);
    let partition = feeding[0].0;
    // S1 lost, but S3 holds no readable cell yet: the FEEDING cell is the only readable
    // one of its row, so it is kept.
    let changes = pt.outdate(|n| n != s(1), Some(s(1)));
    assert!(changes.iter().all(|c| c.partition != partition));
    // Once S3 has replicated, S1's FEEDING cell is gone anyway.
    let mut pt = PartitionTable::new(4, 1);
    pt.make(&plain(&[1, 2])).unwrap();
    pt.add_node(s(3));
    pt.tweak(&plain(&[1, 2, 3]), &[]).unwrap();
    let changes = pt.outdate(|n| n != s(1), Some(s(1)));
    for change in &changes {
        let expected = if pt.cell(change.partition, s(1)).is_none() {
            CellState::Discarded
        } else {
            CellState::OutOfDate
        };
        assert_eq!(change.state, expected);
    }
    assert!(changes.iter().any(|c| c.state == CellState::Discarded));
}

#[test]
fn replication_done_rules() {
    let mut pt = PartitionTable::new(3, 1);
    pt.make(&plain(&[1, 2])).unwrap();
    pt.outdate(|n| n != s(2), Some(s(2)));
    let ptid = pt.ptid();
    // Not updatable yet: ignored, no ptid.
    assert_eq!(pt.replication_done(s(2), 0, false), Ok(vec![]));
    assert_eq!(pt.ptid(), ptid);
    // Not assigned: protocol error; out of range: error; readable: late, ignored.
    assert_eq!(
        pt.replication_done(s(3), 0, true),
        Err(PtError::NotAssigned {
            partition: 0,
            nid: s(3)
        })
    );
    assert!(matches!(
        pt.replication_done(s(2), 3, true),
        Err(PtError::BadPartition { .. })
    ));
    assert_eq!(pt.replication_done(s(1), 0, true), Ok(vec![]));
    let changes = pt.replication_done(s(2), 0, true).unwrap();
    assert_eq!(
        changes,
        vec![CellChange {
            partition: 0,
            nid: s(2),
            state: CellState::UpToDate
        }]
    );
    assert_eq!(pt.ptid(), ptid.map(|p| p + 1));
}

#[test]
fn feeding_cleanup_prefers_nodes_being_emptied() {
    // Row 0: S1 FEEDING (S1 has only FEEDING cells), S2 FEEDING (S2 also has an
    // UP_TO_DATE cell), S3 UP_TO_DATE, S4 OUT_OF_DATE, S5 OUT_OF_DATE; nr = 2.
    let cell = |n, state| Cell { nid: s(n), state };
    let rows = vec![
        vec![
            cell(2, CellState::Feeding),
            cell(1, CellState::Feeding),
            cell(3, CellState::UpToDate),
            cell(4, CellState::OutOfDate),
            cell(5, CellState::OutOfDate),
        ],
        vec![cell(2, CellState::UpToDate), cell(1, CellState::Feeding)],
    ];
    let mut pt = PartitionTable::from_rows(Some(7), 2, rows);
    // S4 done: 4 readable of 5, 4 - nr = 2 FEEDING cells may go: both.
    let changes = pt.replication_done(s(4), 0, true).unwrap();
    assert_eq!(changes.len(), 3);
    assert_eq!(
        changes[1],
        CellChange {
            partition: 0,
            nid: s(1),
            state: CellState::Discarded
        }
    );
    assert_eq!(
        changes[2],
        CellChange {
            partition: 0,
            nid: s(2),
            state: CellState::Discarded
        }
    );

    // With nr = 3 only one may go, and it is S1's, S1 having only FEEDING cells.
    let rows = pt.rows();
    let mut rows = rows;
    rows[0] = vec![
        cell(2, CellState::Feeding),
        cell(1, CellState::Feeding),
        cell(3, CellState::UpToDate),
        cell(4, CellState::OutOfDate),
        cell(5, CellState::OutOfDate),
    ];
    let mut pt = PartitionTable::from_rows(Some(7), 3, rows);
    let changes = pt.replication_done(s(4), 0, true).unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1].nid, s(1));
    // S5 done: every cell readable, the last FEEDING cell goes whatever nr says.
    let changes = pt.replication_done(s(5), 0, true).unwrap();
    assert_eq!(
        changes[1..],
        [CellChange {
            partition: 0,
            nid: s(2),
            state: CellState::Discarded
        }]
    );
    assert_eq!(pt.ptid(), Some(9));
}

#[test]
fn drop_refused_for_only_readable_copy() {
    let mut pt = PartitionTable::new(4, 0);
    pt.make(&plain(&[1, 2])).unwrap();
    assert_eq!(
        pt.kill_check(s(1)),
        Err(PtError::OnlyReadableCopy { partition: 0 })
    );
    assert_eq!(
        pt.drop_node(s(1)),
        Err(PtError::OnlyReadableCopy { partition: 0 })
    );
    assert_eq!(
        PtError::OnlyReadableCopy { partition: 0 }.to_string(),
        "Refuse to drop nodes that contain the only readable copies of partition 0"
    );
    assert_eq!(pt.ptid(), Some(1));

    // S3 takes partition 2 over from S1 (FEEDING) and partition 3 from S2; dropping S3
    // before it replicated puts the FEEDING cells back to UP_TO_DATE.
    pt.add_node(s(3));
    pt.tweak(&plain(&[1, 2, 3]), &[]).unwrap();
    let feeding_before = pt
        .nodes()
        .iter()
        .flat_map(|&n| pt.cells_of(n))
        .filter(|(_, st)| *st == CellState::Feeding)
        .count();
    assert!(feeding_before > 0);
    assert_eq!(pt.kill_check(s(3)), Ok(()));
    let ptid = pt.ptid();
    let changes = pt.drop_node(s(3)).unwrap();
    assert_eq!(pt.ptid(), ptid.map(|p| p + 1));
    assert!(pt.cells_of(s(3)).is_empty());
    assert!(!pt.members().contains(&s(3)));
    assert!(changes.iter().any(|c| c.state == CellState::UpToDate));
    for partition in 0..4 {
        assert!(!pt.readable_cells(partition).is_empty());
    }
    // A node without cells: nothing to broadcast, but it is forgotten.
    pt.add_node(s(9));
    assert_eq!(pt.drop_node(s(9)), Ok(vec![]));
    assert!(!pt.members().contains(&s(9)));
    assert!(!pt.forget_node(s(1)));
}

#[test]
fn tweak_excluded_nodes_are_untouched_and_not_all_may_go() {
    let mut pt = PartitionTable::new(10, 1);
    pt.make(&plain(&[1, 2, 3, 4])).unwrap();
    let before = pt.cells_of(s(4));
    pt.tweak(&plain(&[1, 2, 3, 4]), &[s(4)]).unwrap();
    assert_eq!(pt.cells_of(s(4)), before);
    // The 3 others now hold 2 copies of every partition by themselves.
    replicate_all(&mut pt, all_running);
    for partition in 0..10 {
        let others = pt
            .readable_cells(partition)
            .into_iter()
            .filter(|&n| n != s(4))
            .count();
        assert_eq!(others, 2);
    }
    let err = pt
        .tweak(&plain(&[1, 2, 3, 4]), &[s(1), s(2), s(3), s(4)])
        .unwrap_err();
    assert_eq!(err, PtError::NoNodeLeft);
    assert_eq!(err.to_string(), "Can't remove all nodes.");
}

#[test]
fn tweak_dry_run_leaves_the_table() {
    let mut pt = PartitionTable::new(6, 0);
    pt.make(&plain(&[1, 2])).unwrap();
    let copy = pt.clone();
    let (changes, rows) = pt.tweak_dry_run(&plain(&[1, 2, 3]), &[]).unwrap();
    assert_eq!(pt, copy);
    assert!(!changes.is_empty());
    let applied = pt.tweak(&plain(&[1, 2, 3]), &[]).unwrap();
    assert_eq!(applied, changes);
    assert_eq!(pt.rows(), rows);
}

#[test]
fn ptid_bumps_once_per_change_list_and_for_replicas() {
    let mut pt = PartitionTable::new(4, 0);
    assert_eq!(pt.set_replicas(0), None);
    pt.make(&plain(&[1, 2])).unwrap();
    assert_eq!(pt.ptid(), Some(1));
    assert_eq!(pt.set_replicas(0), Some(2));
    assert_eq!(pt.replicas(), 0);
    pt.set_replicas(1);
    let changes = pt.tweak(&plain(&[1, 2]), &[]).unwrap();
    assert!(!changes.is_empty());
    assert_eq!(pt.ptid(), Some(4));
}

#[test]
fn receivers_follow_and_refuse_gaps() {
    let mut master = PartitionTable::new(8, 1);
    master.make(&plain(&[1, 2, 3])).unwrap();
    let mut storage = PartitionTable::from_rows(master.ptid(), master.replicas(), master.rows());
    assert_eq!(storage, master);

    master.add_node(s(4));
    let changes = master.tweak(&plain(&[1, 2, 3, 4]), &[]).unwrap();
    let ptid = master.ptid().unwrap();

    // A notification that skips a ptid is refused and changes nothing.
    let copy = storage.clone();
    assert_eq!(
        storage.apply_changes(ptid + 1, 1, &changes),
        Err(PtError::PtidGap {
            have: Some(ptid - 1),
            got: ptid + 1
        })
    );
    assert_eq!(storage, copy);
    let bad = [CellChange {
        partition: 8,
        nid: s(1),
        state: CellState::UpToDate,
    }];
    assert!(matches!(
        storage.apply_changes(ptid, 1, &bad),
        Err(PtError::BadPartition { .. })
    ));
    assert_eq!(storage, copy);
    assert!(PartitionTable::new(8, 1)
        .apply_changes(1, 1, &changes)
        .is_err());

    storage.apply_changes(ptid, 1, &changes).unwrap();
    assert_eq!(storage.rows(), master.rows());
    assert_eq!(storage.ptid(), master.ptid());
    let partition = changes.iter().find(|c| c.nid == s(4)).unwrap().partition;
    let done = master.replication_done(s(4), partition, true).unwrap();
    assert!(!done.is_empty());
    storage
        .apply_changes(master.ptid().unwrap(), 1, &done)
        .unwrap();
    assert_eq!(storage.rows(), master.rows());
    // An empty list (SetNumReplicas) is a notification too.
    let ptid = master.set_replicas(2).unwrap();
    storage.apply_changes(ptid, 2, &[]).unwrap();
    assert_eq!(storage.replicas(), 2);
}

#[test]
fn loading_rows_is_lenient_and_check_rows_is_strict() {
    let cell = |n, state| Cell { nid: s(n), state };
    let rows = vec![
        vec![cell(1, CellState::UpToDate), cell(2, CellState::Discarded)],
        vec![cell(2, CellState::OutOfDate), cell(2, CellState::UpToDate)],
    ];
    assert_eq!(
        check_rows(&rows),
        Err(PtError::BadRow {
            partition: 0,
            nid: s(2)
        })
    );
    assert_eq!(check_rows(&[]), Err(PtError::NoPartitions));
    let pt = PartitionTable::from_rows(Some(3), 0, rows);
    assert_eq!(pt.row(0), &[cell(1, CellState::UpToDate)]);
    assert_eq!(pt.row(1), &[cell(2, CellState::UpToDate)]);
    assert_eq!(pt.row(2), &[]);
    assert_eq!(pt.partition_of(7), 1);
    assert_eq!(pt.nodes(), vec![s(1), s(2)]);
    assert!(pt.is_filled());
    assert!(pt.is_operational(all_running, &[]));
    assert!(!pt.is_operational(all_running, &[s(2)]));
    assert!(!pt.is_operational(|n| n != s(1), &[]));
    let empty = PartitionTable::from_rows(None, 0, Vec::new());
    assert_eq!(empty.partition_of(5), 0);
    assert!(!PartitionTable::new(2, 0).is_filled());
}

#[test]
fn text_forms_match_neoctl() {
    // tools.md 2.4: `print pt` on np = 12, nr = 0, two storages.
    let mut pt = PartitionTable::new(12, 0);
    pt.make(&plain(&[1, 2])).unwrap();
    let storages = [(s(1), NodeState::Running), (s(2), NodeState::Running)];
    assert_eq!(
        format_table(&pt.rows(), &storages),
        vec!["             10v", "S1 R U.U.U.U.U.U.", "S2 R .U.U.U.U.U.U"]
    );
    assert_eq!(
        format_rows(&pt.rows()[..4], 0),
        vec![
            "000 | S1 - UP_TO_DATE |",
            "001 | S2 - UP_TO_DATE |",
            "002 | S1 - UP_TO_DATE |",
            "003 | S2 - UP_TO_DATE |",
        ]
    );
    // A new cluster before start: no line at all.
    let empty = PartitionTable::new(12, 0);
    let pending = [(s(1), NodeState::Pending)];
    assert!(format_table(&empty.rows(), &pending).is_empty());
    // A running storage without cells gets a line; NIDs are padded to the last one.
    let mut wide = PartitionTable::new(3, 0);
    wide.make(&plain(&[1, 10])).unwrap();
    let storages = [
        (s(1), NodeState::Down),
        (s(10), NodeState::Running),
        (s(7), NodeState::Running),
    ];
    assert_eq!(
        format_table(&wide.rows(), &storages),
        vec!["S1  D U.U", "S7  R ...", "S10 R .U."]
    );
    // The log form lists members and uses the caller's node states.
    wide.add_node(s(2));
    assert_eq!(
        wide.format(|_| NodeState::Running),
        vec!["S1  R U.U", "S2  R ...", "S10 R .U."]
    );
}

// ---------------------------------------------------------------------------------------
// Randomized runs: the master's operations in random order keep the invariants.

struct Cluster {
    pt: PartitionTable,
    running: BTreeSet<Nid>,
    devpaths: BTreeMap<Nid, Vec<Bytes>>,
    /// A storage following the master through change lists only.
    follower: PartitionTable,
    next_nid: i32,
}

impl Cluster {
    fn nodes(&self) -> Vec<(Nid, Vec<Bytes>)> {
        self.pt
            .members()
            .into_iter()
            .map(|nid| (nid, self.devpaths.get(&nid).cloned().unwrap_or_default()))
            .collect()
    }

    fn is_running(&self) -> impl Fn(Nid) -> bool {
        let running = self.running.clone();
        move |nid| running.contains(&nid)
    }

    /// Checks what must hold after any change list, and feeds it to the follower.
    fn after(&mut self, what: &str, before: &PartitionTable, changes: &[CellChange]) {
        let expected = if changes.is_empty() {
            before.ptid()
        } else {
            Some(before.ptid().map_or(1, |p| p + 1))
        };
        assert_eq!(self.pt.ptid(), expected, "{what}: ptid");
        if !changes.is_empty() {
            self.follower
                .apply_changes(self.pt.ptid().unwrap(), self.pt.replicas(), changes)
                .unwrap();
        }
        assert_eq!(self.follower.rows(), self.pt.rows(), "{what}: follower");
        for partition in 0..self.pt.np() {
            let row = self.pt.row(partition);
            let nids: BTreeSet<Nid> = row.iter().map(|c| c.nid).collect();
            assert_eq!(
                nids.len(),
                row.len(),
                "{what}: duplicate cell in row {partition}"
            );
            assert!(row.iter().all(|c| c.state != CellState::Discarded));
            if !before.readable_cells(partition).is_empty() {
                assert!(
                    !self.pt.readable_cells(partition).is_empty(),
                    "{what}: row {partition} lost its last readable cell"
                );
            }
        }
        assert!(
            self.pt.is_operational(self.is_running(), &[]),
            "{what}: not operational"
        );
    }
}

fn random_run(seed: u64) {
    let mut rng = Rng::new(seed);
    let np = 1 + rng.below(16) as u32;
    let replicas = rng.below(3) as u32;
    let first = 1 + rng.below(5) as i32;
    let topology = rng.chance(0.3);
    let mut devpaths = BTreeMap::new();
    for n in 1..=40 {
        // Two hosts of disks when topology is on: nodes alternate between hosts.
        let path = format!("host{}/disk{}", n % 2, n);
        devpaths.insert(s(n), if topology { devpath(&path) } else { Vec::new() });
    }
    let mut pt = PartitionTable::new(np, replicas);
    let initial: Vec<(Nid, Vec<Bytes>)> = (1..=first)
        .map(|n| (s(n), devpaths[&s(n)].clone()))
        .collect();
    pt.make(&initial).unwrap();
    let follower = PartitionTable::from_rows(pt.ptid(), pt.replicas(), pt.rows());
    let mut cluster = Cluster {
        pt,
        running: (1..=first).map(s).collect(),
        devpaths,
        follower,
        next_nid: first + 1,
    };
    for step in 0..60 {
        let what = format!("seed {seed} step {step}");
        let before = cluster.pt.clone();
        match rng.below(8) {
            0 if cluster.next_nid <= 40 => {
                let nid = s(cluster.next_nid);
                cluster.next_nid += 1;
                cluster.pt.add_node(nid);
                cluster.running.insert(nid);
            }
            0 | 1 => {
                // Tweak: down members must be excluded; sometimes a running one too.
                let mut excluded: Vec<Nid> = cluster
                    .pt
                    .members()
                    .into_iter()
                    .filter(|n| !cluster.running.contains(n))
                    .collect();
                if rng.chance(0.2) {
                    if let Some(&nid) = rng.pick(&cluster.pt.members()) {
                        excluded.push(nid);
                    }
                }
                let nodes = cluster.nodes();
                match cluster.pt.tweak(&nodes, &excluded) {
                    Ok(changes) => {
                        for c in &changes {
                            if before.cell(c.partition, c.nid).is_none() {
                                assert_eq!(c.state, CellState::OutOfDate, "{what}: new cell");
                            }
                            assert!(!excluded.contains(&c.nid), "{what}: excluded node touched");
                        }
                        cluster.after(&what, &before, &changes);
                    }
                    Err(PtError::NoNodeLeft) => {
                        assert!(nodes.iter().all(|(n, _)| excluded.contains(n)));
                    }
                    Err(e) => panic!("{what}: tweak: {e}"),
                }
            }
            2 => {
                // A running storage is lost, if the cluster survives it (otherwise the
                // master would go back to recovery, which this run does not model).
                let candidates: Vec<Nid> = cluster.running.iter().copied().collect();
                let Some(&lost) = rng.pick(&candidates) else {
                    continue;
                };
                if !cluster.pt.is_operational(cluster.is_running(), &[lost]) {
                    continue;
                }
                cluster.running.remove(&lost);
                let changes = cluster.pt.outdate(cluster.is_running(), Some(lost));
                assert!(changes.iter().all(|c| c.nid == lost));
                assert!(cluster
                    .pt
                    .cells_of(lost)
                    .iter()
                    .all(|(_, st)| !is_readable(*st)));
                cluster.after(&what, &before, &changes);
            }
            3 => {
                let down: Vec<Nid> = cluster
                    .pt
                    .members()
                    .into_iter()
                    .filter(|n| !cluster.running.contains(n))
                    .collect();
                let Some(&nid) = rng.pick(&down) else {
                    continue;
                };
                cluster.running.insert(nid);
            }
            4 | 5 => {
                let mut out_of_date = Vec::new();
                for partition in 0..cluster.pt.np() {
                    for cell in cluster.pt.row(partition) {
                        if cell.state == CellState::OutOfDate && cluster.running.contains(&cell.nid)
                        {
                            out_of_date.push((partition, cell.nid));
                        }
                    }
                }
                let Some(&(partition, nid)) = rng.pick(&out_of_date) else {
                    continue;
                };
                let updatable = rng.chance(0.9);
                let changes = cluster
                    .pt
                    .replication_done(nid, partition, updatable)
                    .unwrap();
                assert_eq!(changes.is_empty(), !updatable, "{what}");
                if updatable {
                    // Discarded FEEDING cells: all of them once the row is all readable,
                    // else the readable cells beyond nr.
                    let row = before.row(partition);
                    let readable = before.readable_cells(partition).len() + 1;
                    let feeding = row.iter().filter(|c| c.state == CellState::Feeding).count();
                    let expected = if readable == row.len() {
                        feeding
                    } else {
                        feeding.min(readable.saturating_sub(before.replicas() as usize))
                    };
                    let discarded = changes
                        .iter()
                        .filter(|c| c.state == CellState::Discarded)
                        .count();
                    assert_eq!(discarded, expected, "{what}");
                }
                cluster.after(&what, &before, &changes);
            }
            6 => {
                let down: Vec<Nid> = cluster
                    .pt
                    .members()
                    .into_iter()
                    .filter(|n| !cluster.running.contains(n))
                    .collect();
                let Some(&nid) = rng.pick(&down) else {
                    continue;
                };
                match cluster.pt.drop_node(nid) {
                    Ok(changes) => {
                        assert!(cluster.pt.cells_of(nid).is_empty());
                        cluster.devpaths.remove(&nid);
                        cluster.after(&what, &before, &changes);
                    }
                    Err(PtError::OnlyReadableCopy { partition }) => {
                        assert_eq!(before.readable_cells(partition), vec![nid], "{what}");
                        assert_eq!(cluster.pt, before);
                    }
                    Err(e) => panic!("{what}: drop: {e}"),
                }
            }
            _ => {
                let replicas = rng.below(3) as u32;
                let ptid = cluster.pt.set_replicas(replicas).unwrap();
                cluster.follower.apply_changes(ptid, replicas, &[]).unwrap();
            }
        }
    }
    settle(&mut cluster, seed);
}

/// Every member back, one full tweak, every cell replicated: the table is then exactly
/// the ideal one (R = min(nr + 1, N) UP_TO_DATE cells per row, balanced nodes) and a
/// second tweak changes nothing.
fn settle(cluster: &mut Cluster, seed: u64) {
    let what = format!("seed {seed} settle");
    cluster.running.extend(cluster.pt.members());
    let before = cluster.pt.clone();
    let nodes = cluster.nodes();
    let changes = cluster.pt.tweak(&nodes, &[]).unwrap();
    cluster.after(&what, &before, &changes);
    for partition in 0..cluster.pt.np() {
        for cell in cluster.pt.row(partition).to_vec() {
            if cell.state == CellState::OutOfDate {
                let before = cluster.pt.clone();
                let changes = cluster
                    .pt
                    .replication_done(cell.nid, partition, true)
                    .unwrap();
                cluster.after(&what, &before, &changes);
            }
        }
    }
    let members = cluster.pt.members().len();
    let copies = (cluster.pt.replicas() as usize + 1).min(members);
    for partition in 0..cluster.pt.np() {
        let row = cluster.pt.row(partition);
        assert_eq!(row.len(), copies, "{what}: row {partition}: {row:?}");
        assert!(row.iter().all(|c| c.state == CellState::UpToDate), "{what}");
    }
    let counts: Vec<usize> = cluster
        .pt
        .members()
        .iter()
        .map(|&n| cluster.pt.cell_count(n))
        .collect();
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "{what}: {counts:?}"
    );
    if cluster.devpaths.values().any(|d| !d.is_empty()) && copies == 2 {
        // Hosts alternate by NID parity; with both hosts equally represented the two
        // copies of a partition are on different hosts.
        let hosts: Vec<i32> = cluster.pt.members().iter().map(|n| n.0 % 2).collect();
        let odd = hosts.iter().filter(|&&h| h == 1).count();
        if odd * 2 == hosts.len() {
            for partition in 0..cluster.pt.np() {
                let parities: BTreeSet<i32> = cluster
                    .pt
                    .row(partition)
                    .iter()
                    .map(|c| c.nid.0 % 2)
                    .collect();
                assert_eq!(parities.len(), 2, "{what}: row {partition}");
            }
        }
    }
    let before = cluster.pt.clone();
    assert_eq!(
        cluster.pt.tweak(&nodes, &[]).unwrap(),
        vec![],
        "{what}: second tweak"
    );
    assert_eq!(cluster.pt, before);
}

#[test]
fn random_operations_keep_invariants() {
    let seeds: u64 = std::env::var("NEO_PT_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for seed in 0..seeds {
        random_run(seed);
    }
}

// ---------------------------------------------------------------------------------------
// The same scenarios as NEO/py's master PartitionTable ran them.

/// Replays a scenario script (the format of NEO_PY_SCRIPT) and returns the transcript in
/// the form the NEO/py side printed: each operation with its change list, the ptid, and
/// the table as NEO/py logs it.
fn replay(script: &str) -> String {
    let mut out = Vec::new();
    let mut pt = PartitionTable::new(1, 0);
    // Node states and devpaths, forgotten with each new table.
    let mut nodes: BTreeMap<Nid, (NodeState, Vec<Bytes>)> = BTreeMap::new();
    let node = |text: &str, nodes: &mut BTreeMap<Nid, (NodeState, Vec<Bytes>)>| {
        let (nid, path) = text.split_once('@').unwrap_or((text, ""));
        let nid = s(nid.parse().unwrap());
        let entry = nodes.entry(nid).or_insert((NodeState::Running, Vec::new()));
        if !path.is_empty() {
            entry.1 = devpath(path);
        }
        (nid, entry.1.clone())
    };
    let changes_text = |changes: &[CellChange]| -> String {
        changes
            .iter()
            .map(|c| {
                format!(
                    "{}:{}:{}",
                    c.partition,
                    c.nid,
                    neo_node::pt::cell_state_letter(c.state)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    for line in script.lines() {
        let line = line.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (op, args) = (words[0], &words[1..]);
        let nid = |i: usize| s(args[i].parse().unwrap());
        let mut changes = Vec::new();
        let mut label = line.to_string();
        match op {
            "scenario" => {
                out.push(format!("== {}", args.join(" ")));
                continue;
            }
            "new" => {
                pt = PartitionTable::new(args[0].parse().unwrap(), args[1].parse().unwrap());
                nodes.clear();
            }
            "make" => {
                let listed: Vec<_> = args.iter().map(|a| node(a, &mut nodes)).collect();
                pt.make(&listed).unwrap();
            }
            "add" => {
                for a in args {
                    let (nid, _) = node(a, &mut nodes);
                    pt.add_node(nid);
                }
            }
            "tweak" => {
                let excluded: Vec<Nid> = (0..args.len()).map(nid).collect();
                let listed: Vec<_> = pt
                    .members()
                    .iter()
                    .map(|n| node(&n.0.to_string(), &mut nodes))
                    .collect();
                match pt.tweak(&listed, &excluded) {
                    Ok(c) => changes = c,
                    Err(e) => {
                        out.push(format!("error {e}"));
                        continue;
                    }
                }
            }
            "doneall" => {
                let running = |n: Nid| nodes.get(&n).map(|e| e.0) == Some(NodeState::Running);
                changes = replicate_all(&mut pt, running);
                label = "doneall".into();
            }
            "up" => {
                for i in 0..args.len() {
                    if let Some(entry) = nodes.get_mut(&nid(i)) {
                        entry.0 = NodeState::Running;
                    }
                }
                continue;
            }
            "done" => {
                let partition = args[1].parse().unwrap();
                changes = pt.replication_done(nid(0), partition, true).unwrap();
            }
            "down" => {
                for i in 0..args.len() {
                    nodes
                        .entry(nid(i))
                        .or_insert((NodeState::Down, Vec::new()))
                        .0 = NodeState::Down;
                }
                continue;
            }
            "outdate" => {
                let lost = (!args.is_empty()).then(|| nid(0));
                changes = pt.outdate(
                    |n| nodes.get(&n).map(|e| e.0) == Some(NodeState::Running),
                    lost,
                );
            }
            "drop" => match pt.drop_node(nid(0)) {
                Ok(c) => changes = c,
                Err(e) => {
                    out.push(format!("error {e}"));
                    continue;
                }
            },
            "replicas" => {
                pt.set_replicas(args[0].parse().unwrap());
            }
            _ => panic!("unknown operation {op}"),
        }
        out.push(format!("{label} {}", changes_text(&changes)));
        out.push(format!(
            "ptid {}",
            pt.ptid().map_or("None".to_string(), |p| p.to_string())
        ));
        let state_of = |n: Nid| nodes.get(&n).map_or(NodeState::Unknown, |e| e.0);
        out.extend(pt.format(state_of).into_iter().map(|l| format!("pt: {l}")));
    }
    out.join("\n")
}

#[test]
fn same_results_as_neo_py() {
    let ours = replay(NEO_PY_SCRIPT);
    for (i, (a, b)) in ours
        .lines()
        .zip(NEO_PY_TRANSCRIPT.trim().lines())
        .enumerate()
    {
        assert_eq!(a.trim_end(), b.trim_end(), "line {}", i + 1);
    }
    assert_eq!(
        ours.lines().count(),
        NEO_PY_TRANSCRIPT.trim().lines().count()
    );
}

/// Compares with any NEO/py transcript, e.g. of randomly generated scripts (local only:
/// CI has no NEO/py): `NEO_PT_SCRIPT=script NEO_PT_TRANSCRIPT=output cargo test -p
/// neo-node --test node neo_py_transcript_from_env`.
#[test]
fn neo_py_transcript_from_env() {
    let (Ok(script), Ok(transcript)) = (
        std::env::var("NEO_PT_SCRIPT"),
        std::env::var("NEO_PT_TRANSCRIPT"),
    ) else {
        return;
    };
    let script = std::fs::read_to_string(script).unwrap();
    let expected = std::fs::read_to_string(transcript).unwrap();
    let ours = replay(&script);
    let mut scenario = "";
    for (i, (a, b)) in ours.lines().zip(expected.trim().lines()).enumerate() {
        if b.starts_with("== ") {
            scenario = b;
        }
        assert_eq!(a.trim_end(), b.trim_end(), "line {} in {scenario}", i + 1);
    }
    assert_eq!(ours.lines().count(), expected.trim().lines().count());
}

/// The script given to both implementations: `new NP NR`, `make NID[@DEVPATH]...`,
/// `add NID...` (a member without cells), `tweak [EXCLUDED...]`, `doneall` (every
/// OUT_OF_DATE cell of a running node replicated, row by row), `down NID...`,
/// `outdate [LOST]`, `drop NID`, `replicas NR`, and for random scripts `up NID...`,
/// `done NID PARTITION` (one replicated cell).
const NEO_PY_SCRIPT: &str = r#"
scenario example
new 10 1
make 1 2 3 4 5
tweak
scenario grow_nr1
new 12 1
make 1 2
add 3
tweak
doneall
tweak
scenario grow_nr0
new 12 0
make 1 2
add 3
tweak
doneall
tweak
scenario topology_2x2
new 8 1
make 1@h1/d1 2@h1/d2 3@h2/d1 4@h2/d2
tweak
scenario topology_3x2_nr2
new 12 2
make 1@a/x 2@a/y 3@b/x 4@b/y 5@c/x 6@c/y
scenario topology_grow
new 12 1
make 1@a/x 2@a/y 3@b/x
add 4@b/y
tweak
doneall
scenario topology_ignored
new 6 1
make 1@a/x 2@a/y 3@a/z 4@b/x
scenario outdate
new 6 1
make 1 2 3
down 2
outdate 2
down 1
outdate 1
outdate
scenario drop
new 4 0
make 1 2
drop 1
add 3
tweak
drop 1
drop 3
scenario exclude
new 9 1
make 1 2 3
add 4
tweak 1
doneall
tweak 1 2 3 4
scenario shrink
new 10 1
make 1 2 3 4
tweak 4
doneall
drop 4
scenario nr2_down
new 7 2
make 1 2 3 4
down 4
outdate
tweak 4
doneall
scenario replicas
new 6 0
make 1 2 3
replicas 1
tweak
doneall
replicas 0
tweak
doneall
scenario big
new 24 1
make 1 2 3 4
add 5 6
tweak
doneall
down 2
outdate
tweak 2
doneall
drop 2
add 7
tweak
# random scripts generated against NEO/py's state (local generator)
scenario seed296
new 3 2
make 1@h1/d1 2@h0/d2 3@h1/d3 4@h0/d4 5@h1/d5 6@h0/d6
down 2
outdate 2
tweak 2
done 4 0
done 5 2
down 6
outdate 6
doneall
tweak 2 6
replicas 1
tweak 2 6 5
up 6
doneall
drop 2
tweak 
done 6 2
doneall
scenario seed113
new 1 2
make 1@h1/d1 2@h2/d2
add 3@h0/d3
tweak 
replicas 2
done 3 0
down 2
outdate 2
down 1
outdate 1
up 2
done 2 0
drop 1
tweak 
replicas 2
tweak 
scenario seed39
new 7 2
make 1@h1/d1 2@h0/d2
replicas 0
doneall
tweak 
add 3@h1/d3
tweak 
tweak 
down 3
outdate 3
replicas 2
done 1 3
up 3
done 3 5
doneall
replicas 0
add 4@h0/d4
scenario big_seed149
new 29 0
make 1@h1/d1 2@h0/d2 3@h1/d3
add 4@h0/d4
tweak 
add 5@h1/d5
done 3 6
done 3 22
"#;

/// What NEO/py printed for NEO_PY_SCRIPT (its neo/master/pt.py driven by a small script;
/// the table lines are its own log format).
const NEO_PY_TRANSCRIPT: &str = r#"
== example
new 10 1 
ptid None
make 1 2 3 4 5 
ptid 1
pt: S1 R U.U..U.U..
pt: S2 R U..U.U..U.
pt: S3 R .U.U..U.U.
pt: S4 R .U..U.U..U
pt: S5 R ..U.U..U.U
tweak 
ptid 1
pt: S1 R U.U..U.U..
pt: S2 R U..U.U..U.
pt: S3 R .U.U..U.U.
pt: S4 R .U..U.U..U
pt: S5 R ..U.U..U.U
== grow_nr1
new 12 1 
ptid None
make 1 2 
ptid 1
pt:              10v
pt: S1 R UUUUUUUUUUUU
pt: S2 R UUUUUUUUUUUU
add 3 
ptid 1
pt:              10v
pt: S1 R UUUUUUUUUUUU
pt: S2 R UUUUUUUUUUUU
pt: S3 R ............
tweak 1:S3:O 2:S3:O 4:S3:O 5:S3:O 7:S3:O 8:S3:O 10:S3:O 11:S3:O 1:S2:F 2:S1:F 4:S2:F 5:S1:F 7:S2:F 8:S1:F 10:S2:F 11:S1:F
ptid 2
pt:              10v
pt: S1 R UUFUUFUUFUUF
pt: S2 R UFUUFUUFUUFU
pt: S3 R .OO.OO.OO.OO
doneall 1:S3:U 1:S2:D 2:S3:U 2:S1:D 4:S3:U 4:S2:D 5:S3:U 5:S1:D 7:S3:U 7:S2:D 8:S3:U 8:S1:D 10:S3:U 10:S2:D 11:S3:U 11:S1:D
ptid 10
pt:              10v
pt: S1 R UU.UU.UU.UU.
pt: S2 R U.UU.UU.UU.U
pt: S3 R .UU.UU.UU.UU
tweak 
ptid 10
pt:              10v
pt: S1 R UU.UU.UU.UU.
pt: S2 R U.UU.UU.UU.U
pt: S3 R .UU.UU.UU.UU
== grow_nr0
new 12 0 
ptid None
make 1 2 
ptid 1
pt:              10v
pt: S1 R U.U.U.U.U.U.
pt: S2 R .U.U.U.U.U.U
add 3 
ptid 1
pt:              10v
pt: S1 R U.U.U.U.U.U.
pt: S2 R .U.U.U.U.U.U
pt: S3 R ............
tweak 3:S1:O 9:S1:O 4:S2:O 10:S2:O 2:S3:O 5:S3:O 8:S3:O 11:S3:O 2:S1:F 3:S2:F 4:S1:F 5:S2:F 8:S1:F 9:S2:F 10:S1:F 11:S2:F
ptid 2
pt:              10v
pt: S1 R U.FOF.U.FOF.
pt: S2 R .U.FOF.U.FOF
pt: S3 R ..O..O..O..O
doneall 2:S3:U 2:S1:D 3:S1:U 3:S2:D 4:S2:U 4:S1:D 5:S3:U 5:S2:D 8:S3:U 8:S1:D 9:S1:U 9:S2:D 10:S2:U 10:S1:D 11:S3:U 11:S2:D
ptid 10
pt:              10v
pt: S1 R U..U..U..U..
pt: S2 R .U..U..U..U.
pt: S3 R ..U..U..U..U
tweak 
ptid 10
pt:              10v
pt: S1 R U..U..U..U..
pt: S2 R .U..U..U..U.
pt: S3 R ..U..U..U..U
== topology_2x2
new 8 1 
ptid None
make 1@h1/d1 2@h1/d2 3@h2/d1 4@h2/d2 
ptid 1
pt: S1 R U.U.U.U.
pt: S2 R .U.U.U.U
pt: S3 R U.U.U.U.
pt: S4 R .U.U.U.U
tweak 
ptid 1
pt: S1 R U.U.U.U.
pt: S2 R .U.U.U.U
pt: S3 R U.U.U.U.
pt: S4 R .U.U.U.U
== topology_3x2_nr2
new 12 2 
ptid None
make 1@a/x 2@a/y 3@b/x 4@b/y 5@c/x 6@c/y 
ptid 1
pt:              10v
pt: S1 R U.U.U.U.U.U.
pt: S2 R .U.U.U.U.U.U
pt: S3 R U.U.U.U.U.U.
pt: S4 R .U.U.U.U.U.U
pt: S5 R U.U.U.U.U.U.
pt: S6 R .U.U.U.U.U.U
== topology_grow
new 12 1 
ptid None
make 1@a/x 2@a/y 3@b/x 
ptid 1
pt:              10v
pt: S1 R UU.UU.UU.UU.
pt: S2 R U.UU.UU.UU.U
pt: S3 R .UU.UU.UU.UU
add 4@b/y 
ptid 1
pt:              10v
pt: S1 R UU.UU.UU.UU.
pt: S2 R U.UU.UU.UU.U
pt: S3 R .UU.UU.UU.UU
pt: S4 R ............
tweak 2:S1:O 8:S1:O 1:S2:O 7:S2:O 0:S3:O 6:S3:O 1:S4:O 3:S4:O 5:S4:O 7:S4:O 9:S4:O 11:S4:O 0:S2:F 1:S1:F 1:S3:F 2:S2:F 3:S1:F 5:S3:F 6:S2:F 7:S1:F 7:S3:F 8:S2:F 9:S1:F 11:S3:F
ptid 2
pt:              10v
pt: S1 R UFOFU.UFOFU.
pt: S2 R FOFU.UFOFU.U
pt: S3 R OFU.UFOFU.UF
pt: S4 R .O.O.O.O.O.O
doneall 0:S3:U 0:S2:D 1:S2:U 1:S1:D 1:S3:D 1:S4:U 2:S1:U 2:S2:D 3:S4:U 3:S1:D 5:S4:U 5:S3:D 6:S3:U 6:S2:D 7:S2:U 7:S1:D 7:S3:D 7:S4:U 8:S1:U 8:S2:D 9:S4:U 9:S1:D 11:S4:U 11:S3:D
ptid 14
pt:              10v
pt: S1 R U.U.U.U.U.U.
pt: S2 R .U.U.U.U.U.U
pt: S3 R U.U.U.U.U.U.
pt: S4 R .U.U.U.U.U.U
== topology_ignored
new 6 1 
ptid None
make 1@a/x 2@a/y 3@a/z 4@b/x 
ptid 1
pt: S1 R U.U.U.
pt: S2 R U.U.U.
pt: S3 R .U.U.U
pt: S4 R .U.U.U
== outdate
new 6 1 
ptid None
make 1 2 3 
ptid 1
pt: S1 R UU.UU.
pt: S2 R U.UU.U
pt: S3 R .UU.UU
outdate 2 0:S2:O 2:S2:O 3:S2:O 5:S2:O
ptid 2
pt: S1 R UU.UU.
pt: S2 D O.OO.O
pt: S3 R .UU.UU
outdate 1 1:S1:O 4:S1:O
ptid 3
pt: S1 D UO.UO.
pt: S2 D O.OO.O
pt: S3 R .UU.UU
outdate 0:S1:O 3:S1:O
ptid 4
pt: S1 D OO.OO.
pt: S2 D O.OO.O
pt: S3 R .UU.UU
== drop
new 4 0 
ptid None
make 1 2 
ptid 1
pt: S1 R U.U.
pt: S2 R .U.U
error Refuse to drop nodes that contain the only readable copies of partition 0
add 3 
ptid 1
pt: S1 R U.U.
pt: S2 R .U.U
pt: S3 R ....
tweak 3:S1:O 2:S3:O 2:S1:F 3:S2:F
ptid 2
pt: S1 R U.FO
pt: S2 R .U.F
pt: S3 R ..O.
error Refuse to drop nodes that contain the only readable copies of partition 0
drop 3 2:S3:D 2:S1:U
ptid 3
pt: S1 R U.UO
pt: S2 R .U.F
== exclude
new 9 1 
ptid None
make 1 2 3 
ptid 1
pt: S1 R UU.UU.UU.
pt: S2 R U.UU.UU.U
pt: S3 R .UU.UU.UU
add 4 
ptid 1
pt: S1 R UU.UU.UU.
pt: S2 R U.UU.UU.U
pt: S3 R .UU.UU.UU
pt: S4 R .........
tweak 1 0:S4:O 1:S4:O 3:S4:O 4:S4:O 6:S4:O 7:S4:O
ptid 2
pt: S1 R UU.UU.UU.
pt: S2 R U.UU.UU.U
pt: S3 R .UU.UU.UU
pt: S4 R OO.OO.OO.
doneall 0:S4:U 1:S4:U 3:S4:U 4:S4:U 6:S4:U 7:S4:U
ptid 8
pt: S1 R UU.UU.UU.
pt: S2 R U.UU.UU.U
pt: S3 R .UU.UU.UU
pt: S4 R UU.UU.UU.
error Can't remove all nodes.
== shrink
new 10 1 
ptid None
make 1 2 3 4 
ptid 1
pt: S1 R U.U.U.U.U.
pt: S2 R U.U.U.U.U.
pt: S3 R .U.U.U.U.U
pt: S4 R .U.U.U.U.U
tweak 4 3:S1:O 5:S1:O 9:S1:O 1:S2:O 3:S2:O 7:S2:O 9:S2:O 2:S3:O 4:S3:O 8:S3:O 2:S2:F 3:S3:F 4:S1:F 8:S2:F 9:S3:F
ptid 2
pt: S1 R U.UOFOU.UO
pt: S2 R UOFOU.UOFO
pt: S3 R .UOFOU.UOF
pt: S4 R .U.U.U.U.U
doneall 1:S2:U 2:S3:U 2:S2:D 3:S1:U 3:S3:D 3:S2:U 4:S3:U 4:S1:D 5:S1:U 7:S2:U 8:S3:U 8:S2:D 9:S1:U 9:S3:D 9:S2:U
ptid 12
pt: S1 R U.UU.UU.UU
pt: S2 R UU.UU.UU.U
pt: S3 R .UU.UU.UU.
pt: S4 R .U.U.U.U.U
drop 4 1:S4:D 3:S4:D 5:S4:D 7:S4:D 9:S4:D
ptid 13
pt: S1 R U.UU.UU.UU
pt: S2 R UU.UU.UU.U
pt: S3 R .UU.UU.UU.
== nr2_down
new 7 2 
ptid None
make 1 2 3 4 
ptid 1
pt: S1 R UUU.UUU
pt: S2 R UU.UUU.
pt: S3 R U.UUU.U
pt: S4 R .UUU.UU
outdate 1:S4:O 2:S4:O 3:S4:O 5:S4:O 6:S4:O
ptid 2
pt: S1 R UUU.UUU
pt: S2 R UU.UUU.
pt: S3 R U.UUU.U
pt: S4 D .OOO.OO
tweak 4 3:S1:O 2:S2:O 6:S2:O 1:S3:O 5:S3:O
ptid 3
pt: S1 R UUUOUUU
pt: S2 R UUOUUUO
pt: S3 R UOUUUOU
pt: S4 D .OOO.OO
doneall 1:S3:U 2:S2:U 3:S1:U 5:S3:U 6:S2:U
ptid 8
pt: S1 R UUUUUUU
pt: S2 R UUUUUUU
pt: S3 R UUUUUUU
pt: S4 D .OOO.OO
== replicas
new 6 0 
ptid None
make 1 2 3 
ptid 1
pt: S1 R U..U..
pt: S2 R .U..U.
pt: S3 R ..U..U
replicas 1 
ptid 2
pt: S1 R U..U..
pt: S2 R .U..U.
pt: S3 R ..U..U
tweak 1:S1:O 4:S1:O 2:S2:O 5:S2:O 0:S3:O 3:S3:O
ptid 3
pt: S1 R UO.UO.
pt: S2 R .UO.UO
pt: S3 R O.UO.U
doneall 0:S3:U 1:S1:U 2:S2:U 3:S3:U 4:S1:U 5:S2:U
ptid 9
pt: S1 R UU.UU.
pt: S2 R .UU.UU
pt: S3 R U.UU.U
replicas 0 
ptid 10
pt: S1 R UU.UU.
pt: S2 R .UU.UU
pt: S3 R U.UU.U
tweak 0:S3:D 1:S1:D 2:S2:D 3:S3:D 4:S1:D 5:S2:D
ptid 11
pt: S1 R U..U..
pt: S2 R .U..U.
pt: S3 R ..U..U
doneall 
ptid 11
pt: S1 R U..U..
pt: S2 R .U..U.
pt: S3 R ..U..U
== big
new 24 1 
ptid None
make 1 2 3 4 
ptid 1
pt:              10v       20v
pt: S1 R U.U.U.U.U.U.U.U.U.U.U.U.
pt: S2 R U.U.U.U.U.U.U.U.U.U.U.U.
pt: S3 R .U.U.U.U.U.U.U.U.U.U.U.U
pt: S4 R .U.U.U.U.U.U.U.U.U.U.U.U
add 5 6 
ptid 1
pt:              10v       20v
pt: S1 R U.U.U.U.U.U.U.U.U.U.U.U.
pt: S2 R U.U.U.U.U.U.U.U.U.U.U.U.
pt: S3 R .U.U.U.U.U.U.U.U.U.U.U.U
pt: S4 R .U.U.U.U.U.U.U.U.U.U.U.U
pt: S5 R ........................
pt: S6 R ........................
tweak 3:S1:O 9:S1:O 15:S1:O 21:S1:O 3:S2:O 9:S2:O 15:S2:O 21:S2:O 4:S3:O 10:S3:O 16:S3:O 22:S3:O 4:S4:O 10:S4:O 16:S4:O 22:S4:O 2:S5:O 5:S5:O 8:S5:O 11:S5:O 14:S5:O 17:S5:O 20:S5:O 23:S5:O 2:S6:O 5:S6:O 8:S6:O 11:S6:O 14:S6:O 17:S6:O 20:S6:O 23:S6:O 2:S1:F 2:S2:F 3:S3:F 3:S4:F 4:S1:F 4:S2:F 5:S3:F 5:S4:F 8:S1:F 8:S2:F 9:S3:F 9:S4:F 10:S1:F 10:S2:F 11:S3:F 11:S4:F 14:S1:F 14:S2:F 15:S3:F 15:S4:F 16:S1:F 16:S2:F 17:S3:F 17:S4:F 20:S1:F 20:S2:F 21:S3:F 21:S4:F 22:S1:F 22:S2:F 23:S3:F 23:S4:F
ptid 2
pt:              10v       20v
pt: S1 R U.FOF.U.FOF.U.FOF.U.FOF.
pt: S2 R U.FOF.U.FOF.U.FOF.U.FOF.
pt: S3 R .U.FOF.U.FOF.U.FOF.U.FOF
pt: S4 R .U.FOF.U.FOF.U.FOF.U.FOF
pt: S5 R ..O..O..O..O..O..O..O..O
pt: S6 R ..O..O..O..O..O..O..O..O
doneall 2:S5:U 2:S1:D 2:S2:D 2:S6:U 3:S1:U 3:S3:D 3:S4:D 3:S2:U 4:S3:U 4:S1:D 4:S2:D 4:S4:U 5:S5:U 5:S3:D 5:S4:D 5:S6:U 8:S5:U 8:S1:D 8:S2:D 8:S6:U 9:S1:U 9:S3:D 9:S4:D 9:S2:U 10:S3:U 10:S1:D 10:S2:D 10:S4:U 11:S5:U 11:S3:D 11:S4:D 11:S6:U 14:S5:U 14:S1:D 14:S2:D 14:S6:U 15:S1:U 15:S3:D 15:S4:D 15:S2:U 16:S3:U 16:S1:D 16:S2:D 16:S4:U 17:S5:U 17:S3:D 17:S4:D 17:S6:U 20:S5:U 20:S1:D 20:S2:D 20:S6:U 21:S1:U 21:S3:D 21:S4:D 21:S2:U 22:S3:U 22:S1:D 22:S2:D 22:S4:U 23:S5:U 23:S3:D 23:S4:D 23:S6:U
ptid 34
pt:              10v       20v
pt: S1 R U..U..U..U..U..U..U..U..
pt: S2 R U..U..U..U..U..U..U..U..
pt: S3 R .U..U..U..U..U..U..U..U.
pt: S4 R .U..U..U..U..U..U..U..U.
pt: S5 R ..U..U..U..U..U..U..U..U
pt: S6 R ..U..U..U..U..U..U..U..U
outdate 0:S2:O 3:S2:O 6:S2:O 9:S2:O 12:S2:O 15:S2:O 18:S2:O 21:S2:O
ptid 35
pt:              10v       20v
pt: S1 R U..U..U..U..U..U..U..U..
pt: S2 D O..O..O..O..O..O..O..O..
pt: S3 R .U..U..U..U..U..U..U..U.
pt: S4 R .U..U..U..U..U..U..U..U.
pt: S5 R ..U..U..U..U..U..U..U..U
pt: S6 R ..U..U..U..U..U..U..U..U
tweak 2 5:S1:O 8:S1:O 10:S1:O 13:S1:O 20:S1:O 23:S1:O 6:S3:O 9:S3:O 11:S3:O 14:S3:O 21:S3:O 2:S4:O 9:S4:O 12:S4:O 14:S4:O 17:S4:O 0:S5:O 7:S5:O 10:S5:O 12:S5:O 15:S5:O 22:S5:O 1:S6:O 3:S6:O 6:S6:O 13:S6:O 16:S6:O 18:S6:O 21:S6:O 1:S4:F 2:S6:F 5:S6:F 6:S1:F 7:S3:F 8:S5:F 9:S1:F 10:S3:F 10:S4:F 11:S5:F 12:S1:F 13:S3:F 13:S4:F 14:S5:F 14:S6:F 16:S4:F 17:S6:F 20:S6:F 21:S1:F 22:S3:F 23:S5:F
ptid 36
pt:              10v       20v
pt: S1 R U..U.OF.OFO.FO.U..U.OF.O
pt: S2 D O..O..O..O..O..O..O..O..
pt: S3 R .U..U.OF.OFO.FO.U..U.OF.
pt: S4 R .FO.U..U.OF.OFO.FO.U..U.
pt: S5 R O.U..U.OF.OFO.FO.U..U.OF
pt: S6 R .OFO.FO.U..U.OF.OFO.FO.U
doneall 0:S5:U 1:S6:U 1:S4:D 2:S4:U 2:S6:D 3:S6:U 5:S1:U 5:S6:D 6:S3:U 6:S1:D 6:S6:U 7:S5:U 7:S3:D 8:S1:U 8:S5:D 9:S3:U 9:S1:D 9:S4:U 10:S1:U 10:S3:D 10:S4:D 10:S5:U 11:S3:U 11:S5:D 12:S4:U 12:S1:D 12:S5:U 13:S1:U 13:S3:D 13:S4:D 13:S6:U 14:S3:U 14:S5:D 14:S6:D 14:S4:U 15:S5:U 16:S6:U 16:S4:D 17:S4:U 17:S6:D 18:S6:U 20:S1:U 20:S6:D 21:S3:U 21:S1:D 21:S6:U 22:S5:U 22:S3:D 23:S1:U 23:S5:D
ptid 65
pt:              10v       20v
pt: S1 R U..U.U..U.U..U.U..U.U..U
pt: S2 D O..O..O..O..O..O..O..O..
pt: S3 R .U..U.U..U.U..U.U..U.U..
pt: S4 R ..U.U..U.U..U.U..U.U..U.
pt: S5 R U.U..U.U..U.U..U.U..U.U.
pt: S6 R .U.U..U.U..U.U..U.U..U.U
drop 2 0:S2:D 3:S2:D 6:S2:D 9:S2:D 12:S2:D 15:S2:D 18:S2:D 21:S2:D
ptid 66
pt:              10v       20v
pt: S1 R U..U.U..U.U..U.U..U.U..U
pt: S3 R .U..U.U..U.U..U.U..U.U..
pt: S4 R ..U.U..U.U..U.U..U.U..U.
pt: S5 R U.U..U.U..U.U..U.U..U.U.
pt: S6 R .U.U..U.U..U.U..U.U..U.U
add 7 
ptid 66
pt:              10v       20v
pt: S1 R U..U.U..U.U..U.U..U.U..U
pt: S3 R .U..U.U..U.U..U.U..U.U..
pt: S4 R ..U.U..U.U..U.U..U.U..U.
pt: S5 R U.U..U.U..U.U..U.U..U.U.
pt: S6 R .U.U..U.U..U.U..U.U..U.U
pt: S7 R ........................
tweak 6:S1:O 9:S1:O 12:S1:O 21:S1:O 7:S3:O 10:S3:O 13:S3:O 22:S3:O 1:S4:O 10:S4:O 13:S4:O 16:S4:O 8:S5:O 11:S5:O 14:S5:O 23:S5:O 0:S6:O 9:S6:O 12:S6:O 15:S6:O 2:S7:O 5:S7:O 8:S7:O 11:S7:O 14:S7:O 17:S7:O 20:S7:O 23:S7:O 0:S5:F 1:S6:F 2:S4:F 5:S1:F 6:S3:F 7:S5:F 8:S1:F 8:S6:F 9:S3:F 9:S4:F 10:S1:F 10:S5:F 11:S3:F 11:S6:F 12:S4:F 12:S5:F 13:S1:F 13:S6:F 14:S3:F 14:S4:F 15:S5:F 16:S6:F 17:S4:F 20:S1:F 21:S3:F 22:S5:F 23:S1:F 23:S6:F
ptid 67
pt:              10v       20v
pt: S1 R U..U.FO.FOF.OF.U..U.FO.F
pt: S3 R .U..U.FO.FOF.OF.U..U.FO.
pt: S4 R .OF.U..U.FO.FOF.OF.U..U.
pt: S5 R F.U..U.FO.FOF.OF.U..U.FO
pt: S6 R OF.U..U.FO.FOF.OF.U..U.F
pt: S7 R ..O..O..O..O..O..O..O..O
== seed296
new 3 2 
ptid None
make 1@h1/d1 2@h0/d2 3@h1/d3 4@h0/d4 5@h1/d5 6@h0/d6 
ptid 1
pt: S1 R U.U
pt: S2 R U.U
pt: S3 R U.U
pt: S4 R .U.
pt: S5 R .U.
pt: S6 R .U.
outdate 2 0:S2:O 2:S2:O
ptid 2
pt: S1 R U.U
pt: S2 D O.O
pt: S3 R U.U
pt: S4 R .U.
pt: S5 R .U.
pt: S6 R .U.
tweak 2 0:S4:O 2:S5:O
ptid 3
pt: S1 R U.U
pt: S2 D O.O
pt: S3 R U.U
pt: S4 R OU.
pt: S5 R .UO
pt: S6 R .U.
done 4 0 0:S4:U
ptid 4
pt: S1 R U.U
pt: S2 D O.O
pt: S3 R U.U
pt: S4 R UU.
pt: S5 R .UO
pt: S6 R .U.
done 5 2 2:S5:U
ptid 5
pt: S1 R U.U
pt: S2 D O.O
pt: S3 R U.U
pt: S4 R UU.
pt: S5 R .UU
pt: S6 R .U.
outdate 6 1:S6:O
ptid 6
pt: S1 R U.U
pt: S2 D O.O
pt: S3 R U.U
pt: S4 R UU.
pt: S5 R .UU
pt: S6 D .O.
doneall 
ptid 6
pt: S1 R U.U
pt: S2 D O.O
pt: S3 R U.U
pt: S4 R UU.
pt: S5 R .UU
pt: S6 D .O.
tweak 2 6 1:S1:O
ptid 7
pt: S1 R UOU
pt: S2 D O.O
pt: S3 R U.U
pt: S4 R UU.
pt: S5 R .UU
pt: S6 D .O.
replicas 1 
ptid 8
pt: S1 R UOU
pt: S2 D O.O
pt: S3 R U.U
pt: S4 R UU.
pt: S5 R .UU
pt: S6 D .O.
tweak 2 6 5 0:S1:D
ptid 9
pt: S1 R .OU
pt: S2 D O.O
pt: S3 R U.U
pt: S4 R UU.
pt: S5 R .UU
pt: S6 D .O.
doneall 1:S6:U 1:S1:U
ptid 11
pt: S1 R .UU
pt: S2 D O.O
pt: S3 R U.U
pt: S4 R UU.
pt: S5 R .UU
pt: S6 R .U.
drop 2 0:S2:D 2:S2:D
ptid 12
pt: S1 R .UU
pt: S3 R U.U
pt: S4 R UU.
pt: S5 R .UU
pt: S6 R .U.
tweak 2:S6:O 1:S4:D 1:S6:D 2:S1:F 2:S5:D
ptid 13
pt: S1 R .UF
pt: S3 R U.U
pt: S4 R U..
pt: S5 R .U.
pt: S6 R ..O
done 6 2 2:S6:U 2:S1:D
ptid 14
pt: S1 R .U.
pt: S3 R U.U
pt: S4 R U..
pt: S5 R .U.
pt: S6 R ..U
doneall 
ptid 14
pt: S1 R .U.
pt: S3 R U.U
pt: S4 R U..
pt: S5 R .U.
pt: S6 R ..U
== seed113
new 1 2 
ptid None
make 1@h1/d1 2@h2/d2 
ptid 1
pt: S1 R U
pt: S2 R U
add 3@h0/d3 
ptid 1
pt: S1 R U
pt: S2 R U
pt: S3 R .
tweak 0:S3:O
ptid 2
pt: S1 R U
pt: S2 R U
pt: S3 R O
replicas 2 
ptid 3
pt: S1 R U
pt: S2 R U
pt: S3 R O
done 3 0 0:S3:U
ptid 4
pt: S1 R U
pt: S2 R U
pt: S3 R U
outdate 2 0:S2:O
ptid 5
pt: S1 R U
pt: S2 D O
pt: S3 R U
outdate 1 0:S1:O
ptid 6
pt: S1 D O
pt: S2 D O
pt: S3 R U
done 2 0 0:S2:U
ptid 7
pt: S1 D O
pt: S2 R U
pt: S3 R U
drop 1 0:S1:D
ptid 8
pt: S2 R U
pt: S3 R U
tweak 
ptid 8
pt: S2 R U
pt: S3 R U
replicas 2 
ptid 9
pt: S2 R U
pt: S3 R U
tweak 
ptid 9
pt: S2 R U
pt: S3 R U
== seed39
new 7 2 
ptid None
make 1@h1/d1 2@h0/d2 
ptid 1
pt: S1 R UUUUUUU
pt: S2 R UUUUUUU
replicas 0 
ptid 2
pt: S1 R UUUUUUU
pt: S2 R UUUUUUU
doneall 
ptid 2
pt: S1 R UUUUUUU
pt: S2 R UUUUUUU
tweak 0:S2:D 1:S1:D 2:S2:D 3:S1:D 4:S2:D 5:S1:D 6:S2:D
ptid 3
pt: S1 R U.U.U.U
pt: S2 R .U.U.U.
add 3@h1/d3 
ptid 3
pt: S1 R U.U.U.U
pt: S2 R .U.U.U.
pt: S3 R .......
tweak 3:S1:O 4:S2:O 2:S3:O 5:S3:O 2:S1:F 3:S2:F 4:S1:F 5:S2:F
ptid 4
pt: S1 R U.FOF.U
pt: S2 R .U.FOF.
pt: S3 R ..O..O.
tweak 
ptid 4
pt: S1 R U.FOF.U
pt: S2 R .U.FOF.
pt: S3 R ..O..O.
outdate 3 
ptid 4
pt: S1 R U.FOF.U
pt: S2 R .U.FOF.
pt: S3 D ..O..O.
replicas 2 
ptid 5
pt: S1 R U.FOF.U
pt: S2 R .U.FOF.
pt: S3 D ..O..O.
done 1 3 3:S1:U 3:S2:D
ptid 6
pt: S1 R U.FUF.U
pt: S2 R .U..OF.
pt: S3 D ..O..O.
done 3 5 5:S3:U 5:S2:D
ptid 7
pt: S1 R U.FUF.U
pt: S2 R .U..O..
pt: S3 R ..O..U.
doneall 2:S3:U 2:S1:D 4:S2:U 4:S1:D
ptid 9
pt: S1 R U..U..U
pt: S2 R .U..U..
pt: S3 R ..U..U.
replicas 0 
ptid 10
pt: S1 R U..U..U
pt: S2 R .U..U..
pt: S3 R ..U..U.
add 4@h0/d4 
ptid 10
pt: S1 R U..U..U
pt: S2 R .U..U..
pt: S3 R ..U..U.
pt: S4 R .......
== big_seed149
new 29 0 
ptid None
make 1@h1/d1 2@h0/d2 3@h1/d3 
ptid 1
pt:              10v       20v
pt: S1 R U..U..U..U..U..U..U..U..U..U.
pt: S2 R .U..U..U..U..U..U..U..U..U..U
pt: S3 R ..U..U..U..U..U..U..U..U..U..
add 4@h0/d4 
ptid 1
pt:              10v       20v
pt: S1 R U..U..U..U..U..U..U..U..U..U.
pt: S2 R .U..U..U..U..U..U..U..U..U..U
pt: S3 R ..U..U..U..U..U..U..U..U..U..
pt: S4 R .............................
tweak 4:S1:O 8:S1:O 16:S1:O 20:S1:O 28:S1:O 5:S2:O 9:S2:O 17:S2:O 21:S2:O 6:S3:O 10:S3:O 18:S3:O 22:S3:O 3:S4:O 7:S4:O 11:S4:O 15:S4:O 19:S4:O 23:S4:O 27:S4:O 3:S1:F 4:S2:F 5:S3:F 6:S1:F 7:S2:F 8:S3:F 9:S1:F 10:S2:F 11:S3:F 15:S1:F 16:S2:F 17:S3:F 18:S1:F 19:S2:F 20:S3:F 21:S1:F 22:S2:F 23:S3:F 27:S1:F 28:S2:F
ptid 2
pt:              10v       20v
pt: S1 R U..FO.F.OF..U..FO.F.OF..U..FO
pt: S2 R .U..FO.F.OF..U..FO.F.OF..U..F
pt: S3 R ..U..FO.F.OF..U..FO.F.OF..U..
pt: S4 R ...O...O...O...O...O...O...O.
add 5@h1/d5 
ptid 2
pt:              10v       20v
pt: S1 R U..FO.F.OF..U..FO.F.OF..U..FO
pt: S2 R .U..FO.F.OF..U..FO.F.OF..U..F
pt: S3 R ..U..FO.F.OF..U..FO.F.OF..U..
pt: S4 R ...O...O...O...O...O...O...O.
pt: S5 R .............................
done 3 6 6:S3:U 6:S1:D
ptid 3
pt:              10v       20v
pt: S1 R U..FO...OF..U..FO.F.OF..U..FO
pt: S2 R .U..FO.F.OF..U..FO.F.OF..U..F
pt: S3 R ..U..FU.F.OF..U..FO.F.OF..U..
pt: S4 R ...O...O...O...O...O...O...O.
pt: S5 R .............................
done 3 22 22:S3:U 22:S2:D
ptid 4
pt:              10v       20v
pt: S1 R U..FO...OF..U..FO.F.OF..U..FO
pt: S2 R .U..FO.F.OF..U..FO.F.O...U..F
pt: S3 R ..U..FU.F.OF..U..FO.F.UF..U..
pt: S4 R ...O...O...O...O...O...O...O.
pt: S5 R .............................
"#;
