//! Cluster scenarios, each named after what it proves. A scenario is a few steps on a
//! [`Cluster`] (build, run until a condition, inject a fault, run again); the world's
//! checkers run after every event, and `done` asserts none fired.

use neo_protocol::{CellState, ClusterState, NodeState, Packet};
use neo_sim::{Cluster, Reply, Spec};

/// How long a step may take, in virtual seconds, before the scenario fails.
const STEP: f64 = 120.0;

fn cluster(seed: u64, spec: Spec) -> Cluster {
    Cluster::new(seed, spec)
}

/// Runs until `what` holds, or fails with the recent trace.
fn expect(cluster: &mut Cluster, name: &str, what: impl FnMut(&Cluster) -> bool) {
    if !cluster.run_until(what, STEP) {
        panic!(
            "not reached within {STEP}s: {name}\nviolations: {:?}\ntrace:\n{}",
            cluster.world.violations(),
            cluster.world.trace().join("\n")
        );
    }
}

fn done(cluster: &Cluster) {
    cluster.world.assert_no_violations();
    let problems = cluster.check_data();
    assert!(problems.is_empty(), "data: {problems:#?}");
}

fn cell_states(cluster: &Cluster, storage: neo_sim::NodeId) -> Vec<CellState> {
    cluster
        .cells_of(storage)
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

fn all_cells(cluster: &Cluster, storage: neo_sim::NodeId, state: CellState) -> bool {
    let cells = cell_states(cluster, storage);
    !cells.is_empty() && cells.iter().all(|s| *s == state)
}

#[test]
fn new_cluster_reaches_running_with_autostart() {
    let mut c = cluster(1, Spec::default());
    expect(&mut c, "settled", Cluster::is_settled);
    let (pt, _) = c.primary_view().unwrap();
    assert_eq!(pt.np(), 4);
    // Replicas 1 on two storages: every partition on both.
    for p in 0..4 {
        assert_eq!(pt.row(p).len(), 2);
    }
    // The admin follows the primary's table and state.
    let admin = c.admins[0];
    expect(&mut c, "admin sees RUNNING", |c| {
        c.admin(admin)
            .is_some_and(|a| a.cluster_state() == Some(ClusterState::Running))
    });
    let ptid = c.primary_view().unwrap().0.ptid();
    assert_eq!(
        c.admin(admin).unwrap().partition_table().unwrap().ptid(),
        ptid
    );
    // neoctl through the admin.
    match c.neoctl(neo_protocol::AskClusterState {}) {
        Reply::Answered(Packet::AnswerClusterState(a)) => {
            assert_eq!(a.state, Some(ClusterState::Running))
        }
        other => panic!("{other:?}"),
    }
    done(&c);
}

#[test]
fn killed_primary_is_replaced_and_cluster_runs_again() {
    let mut c = cluster(
        2,
        Spec {
            masters: 3,
            ..Spec::default()
        },
    );
    expect(&mut c, "settled", Cluster::is_settled);
    let old = c.primary().unwrap();
    c.world.kill(old);
    expect(&mut c, "another primary settled", |c| {
        c.primary().is_some_and(|p| p != old) && c.is_settled()
    });
    c.world.restart(old);
    c.world.run_for(10.0);
    assert!(!c.master(old).is_primary());
    assert!(c.is_settled());
    done(&c);
}

#[test]
fn storage_killed_and_back_catches_up() {
    let mut c = cluster(3, Spec::default());
    expect(&mut c, "settled", Cluster::is_settled);
    c.prefill(10);
    expect(&mut c, "settled after prefill", Cluster::is_settled);
    let [s0, s1] = [c.storages[0], c.storages[1]];
    let nid0 = c.nid(s0).unwrap();
    c.world.kill(s0);
    expect(&mut c, "s0 cells OUT_OF_DATE", |c| {
        c.primary_view().is_some_and(|(pt, _)| {
            let cells = pt.cells_of(nid0);
            !cells.is_empty() && cells.iter().all(|(_, s)| *s == CellState::OutOfDate)
        })
    });
    assert!(c.is_running());
    // While s0 is away, s1 commits more (written to its disk across a restart).
    c.world.kill(s1);
    expect(&mut c, "back to recovery without storages", |c| {
        !c.is_running()
    });
    c.write_to_disk(s1, 6);
    c.world.restart(s1);
    expect(&mut c, "running on s1 alone", Cluster::is_running);
    c.world.restart(s0);
    expect(&mut c, "s0 UP_TO_DATE again", |c| {
        all_cells(c, s0, CellState::UpToDate) && c.is_settled()
    });
    done(&c);
}

#[test]
fn added_storage_is_fed_then_dropped_cells_leave() {
    let mut c = cluster(4, Spec::default());
    expect(&mut c, "settled", Cluster::is_settled);
    c.prefill(12);
    expect(&mut c, "settled after prefill", Cluster::is_settled);
    let s2 = c.add_storage();
    expect(&mut c, "s2 pending", |c| {
        c.node_state(s2) == Some(NodeState::Pending)
    });
    let nid2 = c.nid(s2).unwrap();
    match c.neoctl(neo_protocol::AddPendingNodes {
        nid_list: vec![nid2],
    }) {
        Reply::Answered(Packet::Error(e)) if e.code == neo_protocol::ErrorCode::Ack => {}
        other => panic!("AddPendingNodes: {other:?}"),
    }
    expect(&mut c, "s2 running", |c| {
        c.node_state(s2) == Some(NodeState::Running)
    });
    match c.neoctl(neo_protocol::TweakPartitionTable {
        dry_run: false,
        nid_list: vec![],
    }) {
        Reply::Answered(Packet::AnswerTweakPartitionTable(a)) => assert!(a.changed),
        other => panic!("TweakPartitionTable: {other:?}"),
    }
    // Some cells move to s2: the old holders feed it, and lose the cells once it is
    // up to date.
    expect(&mut c, "FEEDING cells appear", |c| {
        c.primary_view().is_some_and(|(pt, _)| {
            (0..pt.np()).any(|p| {
                pt.row(p)
                    .iter()
                    .any(|cell| cell.state == CellState::Feeding)
            })
        })
    });
    expect(&mut c, "s2 up to date, no FEEDING left", |c| {
        all_cells(c, s2, CellState::UpToDate) && c.is_settled()
    });
    let (pt, _) = c.primary_view().unwrap();
    assert!(pt.cell_count(nid2) > 0);
    for p in 0..pt.np() {
        assert_eq!(pt.row(p).len(), 2, "partition {p} keeps 2 replicas");
    }
    done(&c);
}

#[test]
fn partitioned_storage_is_outdated_then_catches_up() {
    let mut c = cluster(5, Spec::default());
    expect(&mut c, "settled", Cluster::is_settled);
    c.prefill(8);
    expect(&mut c, "settled after prefill", Cluster::is_settled);
    let (m0, s0) = (c.masters[0], c.storages[0]);
    c.world.partition(&[m0], &[s0]);
    expect(&mut c, "s0 cells OUT_OF_DATE", |c| {
        all_cells(c, s0, CellState::OutOfDate)
    });
    assert!(c.is_running());
    c.world.heal();
    expect(&mut c, "s0 back UP_TO_DATE", |c| {
        all_cells(c, s0, CellState::UpToDate) && c.is_settled()
    });
    done(&c);
}

#[test]
fn whole_cluster_restarts_from_disk_with_same_table() {
    let mut c = cluster(
        6,
        Spec {
            masters: 2,
            storages: 3,
            ..Spec::default()
        },
    );
    expect(&mut c, "settled", Cluster::is_settled);
    c.prefill(5);
    expect(&mut c, "settled after prefill", Cluster::is_settled);
    let rows_before = c.primary_view().unwrap().0.rows();
    let nodes: Vec<_> = c.world.node_ids().collect();
    for id in &nodes {
        c.world.kill(*id);
    }
    c.world.run_for(5.0);
    for id in &nodes {
        c.world.restart(*id);
    }
    expect(&mut c, "settled after restart", Cluster::is_settled);
    assert_eq!(c.primary_view().unwrap().0.rows(), rows_before);
    done(&c);
}

#[test]
fn storage_back_after_master_restart_keeps_its_nid() {
    let mut c = cluster(
        7,
        Spec {
            storages: 3,
            autostart: Some(3),
            ..Spec::default()
        },
    );
    expect(&mut c, "settled", Cluster::is_settled);
    let (m0, s2) = (c.masters[0], c.storages[2]);
    let nid2 = c.nid(s2).unwrap();
    c.world.kill(m0);
    c.world.kill(s2);
    c.world.restart(m0);
    // The new master loads the table (naming s2) from s0 and s1.
    expect(&mut c, "table loaded", |c| {
        c.primary_view().is_some_and(|(pt, _)| pt.ptid().is_some())
    });
    c.world.restart(s2);
    expect(&mut c, "s2 identified", |c| {
        c.node_state(s2) == Some(NodeState::Pending)
    });
    assert_eq!(c.nid(s2), Some(nid2), "s2 was given another NID");
    expect(&mut c, "settled", Cluster::is_settled);
    done(&c);
}
