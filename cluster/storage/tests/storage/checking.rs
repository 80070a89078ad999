//! Replica checks driven by CheckPartition (cluster.md 6.6): the checking storage asks
//! its peers chunk by chunk through the router, computes its own digests when idle, and
//! reports to the master the nodes whose digests differ.

use neo_protocol::{
    CellState, CheckPartition, CheckSource, Nid, NodeInfo, NodeState, NotifyPartitionCorrupted,
    Oid, Packet, Row, Tid,
};
use neo_storage::{Backend, MemoryBackend, CHECK_COUNT};

use crate::harness::*;
use crate::initialisation::tid;
use crate::replication::source_disk;

fn nodes() -> Vec<NodeInfo> {
    vec![
        node(storage_nid(1), 2001, NodeState::Running, 0.5),
        node(storage_nid(2), 2002, NodeState::Running, 0.6),
        node(storage_nid(3), 2003, NodeState::Running, 0.7),
        node(MASTER_NID, 1000, NodeState::Running, 0.1),
        crate::transactions::client(1, NodeState::Running),
    ]
}

fn rows() -> Vec<Row> {
    vec![row(&[
        (storage_nid(1), CellState::UpToDate),
        (storage_nid(2), CellState::UpToDate),
        (storage_nid(3), CellState::UpToDate),
    ])]
}

/// Three storages holding partition 0 with `transactions` transactions each; `damage`
/// may alter a storage's database (by index) before it boots.
fn cluster(transactions: u64, damage: impl Fn(usize, &mut MemoryBackend)) -> Router {
    let storages = (0..3)
        .map(|i| {
            let disk = source_disk(transactions);
            let mut backend = MemoryBackend::open(disk.clone()).unwrap();
            damage(i, &mut backend);
            backend.commit().unwrap();
            drop(backend);
            let mut h = Harness::new(2001 + i as u16, disk);
            h.boot(storage_nid(i as u32 + 1), &nodes(), 1.0, &rows(), 2);
            h
        })
        .collect();
    Router::new(storages)
}

/// The master asks storage 0 to check partition 0 up to `max`, against `reference`.
fn check(router: &mut Router, reference: Option<u16>, max: Tid) {
    let outputs = router.node(0).master_sends(CheckPartition {
        partition: 0,
        source: CheckSource {
            upstream_name: Default::default(),
            address: reference.map(address),
        },
        min_tid: Tid(0),
        max_tid: max,
    });
    router.route(0, outputs);
    router.run(usize::MAX);
    assert_eq!(router.node(0).storage.checking_partition(), None, "done");
}

fn corrupted(router: &mut Router) -> Vec<NotifyPartitionCorrupted> {
    router
        .take_master()
        .into_iter()
        .filter_map(|(from, _, packet)| match packet {
            Packet::NotifyPartitionCorrupted(notify) => {
                assert_eq!(from, 0, "only the checking node reports");
                Some(notify)
            }
            _ => None,
        })
        .collect()
}

fn asked(router: &Router, name: &str) -> usize {
    router
        .log
        .iter()
        .filter(|(from, p)| *from == 0 && p.name() == name)
        .count()
}

fn notify(nids: &[Nid]) -> NotifyPartitionCorrupted {
    NotifyPartitionCorrupted {
        partition: 0,
        nid_list: nids.to_vec(),
    }
}

#[test]
fn equal_replicas_are_checked_without_report() {
    let mut router = cluster(300, |_, _| {});
    check(&mut router, None, tid(300));
    assert!(corrupted(&mut router).is_empty());
    // One chunk of TIDs, one of object records, asked of both peers.
    assert_eq!(asked(&router, "AskCheckTIDRange"), 2);
    assert_eq!(asked(&router, "AskCheckSerialRange"), 2);
    // The connections the check opened are given back.
    assert_eq!(asked(&router, "CloseClient"), 2);
}

#[test]
fn without_reference_every_node_is_reported_and_the_check_stops() {
    let mut router = cluster(300, |i, backend| {
        if i == 2 {
            backend.delete_transactions(0, &[tid(150)]).unwrap();
        }
    });
    check(&mut router, None, tid(300));
    assert_eq!(
        corrupted(&mut router),
        vec![notify(&[storage_nid(1), storage_nid(2), storage_nid(3)])]
    );
    assert_eq!(asked(&router, "AskCheckSerialRange"), 0, "aborted");
}

#[test]
fn with_a_reference_only_the_differing_node_is_reported() {
    // Same TIDs everywhere; storage 3 lacks an object record in the second chunk of
    // records, so the TID phase takes two chunks and agrees, the object phase does not.
    let n = u64::from(CHECK_COUNT) + 5;
    let mut router = cluster(n, |i, backend| {
        if i == 2 {
            let serial = tid(n - 2);
            backend
                .delete_objects(0, &[(serial, Oid((n - 2) % 300))])
                .unwrap();
        }
    });
    check(&mut router, Some(2001), tid(n));
    assert_eq!(corrupted(&mut router), vec![notify(&[storage_nid(3)])]);
    assert_eq!(asked(&router, "AskCheckTIDRange"), 2 * 2);
    // Second object chunk asked of both; only storage 2 is asked nothing more as the
    // check ends there.
    assert_eq!(asked(&router, "AskCheckSerialRange"), 2 * 2);
}

#[test]
fn a_peer_lost_during_the_check_is_left_out() {
    let mut router = cluster(300, |i, backend| {
        if i == 2 {
            backend.delete_transactions(0, &[tid(150)]).unwrap();
        }
    });
    let outputs = router.node(0).master_sends(CheckPartition {
        partition: 0,
        source: CheckSource {
            upstream_name: Default::default(),
            address: None,
        },
        min_tid: Tid(0),
        max_tid: tid(300),
    });
    router.route(0, outputs);
    // Storage 3, the damaged one, dies before answering.
    router.kill(2);
    router.run(usize::MAX);
    assert_eq!(router.node(0).storage.checking_partition(), None);
    assert!(corrupted(&mut router).is_empty());
    assert_eq!(asked(&router, "AskCheckSerialRange"), 1);
}

#[test]
fn checks_are_queued_and_refused_for_an_unknown_reference() {
    let mut router = cluster(300, |_, _| {});
    let source = |port: Option<u16>| CheckSource {
        upstream_name: Default::default(),
        address: port.map(address),
    };
    // An address no node has: refused at once; the next queued check still runs.
    let h = router.node(0);
    let mut outputs = h.master_sends(CheckPartition {
        partition: 0,
        source: source(Some(2999)),
        min_tid: Tid(0),
        max_tid: tid(300),
    });
    assert_eq!(h.storage.checking_partition(), None);
    outputs.extend(h.master_sends(CheckPartition {
        partition: 0,
        source: source(Some(2002)),
        min_tid: tid(100),
        max_tid: tid(300),
    }));
    assert_eq!(h.storage.checking_partition(), Some(0));
    outputs.extend(h.master_sends(CheckPartition {
        partition: 0,
        source: source(None),
        min_tid: Tid(0),
        max_tid: tid(300),
    }));
    router.route(0, outputs);
    router.run(usize::MAX);
    assert_eq!(router.node(0).storage.checking_partition(), None);
    assert!(corrupted(&mut router).is_empty());
    // Two checks ran, each asking two peers once per phase, over the same connections.
    assert_eq!(asked(&router, "AskCheckTIDRange"), 4);
    assert_eq!(asked(&router, "AskCheckSerialRange"), 4);
    assert_eq!(asked(&router, "CloseClient"), 2);
}

#[test]
fn digests_wait_for_transactions_locked_up_to_the_checked_tid() {
    use crate::transactions::{connect_client, lock, on, store_request, stored, vote_metadata};
    use neo_protocol::NotifyUnlockInformation;
    const CLIENT: u64 = 500;
    let mut router = cluster(300, |_, _| {});
    // A transaction committing on every storage, locked at tid(302) but not unlocked.
    let (ttid, final_tid) = (tid(301), tid(302));
    for i in 0..3 {
        let h = router.node(i);
        connect_client(h, CLIENT, 1);
        let outputs = h.packet(CLIENT, 1, store_request(7, tid(7), "locked", ttid));
        assert_eq!(on(&outputs, CLIENT), vec![stored(None)]);
        vote_metadata(h, CLIENT, ttid, &[7]);
        lock(h, ttid, final_tid);
    }
    let outputs = router.node(0).master_sends(CheckPartition {
        partition: 0,
        source: CheckSource {
            upstream_name: Default::default(),
            address: None,
        },
        min_tid: Tid(0),
        max_tid: final_tid,
    });
    router.route(0, outputs);
    router.run(usize::MAX);
    // Nobody computed anything: the check waits.
    assert_eq!(router.node(0).storage.checking_partition(), Some(0));
    assert_eq!(asked(&router, "AskCheckTIDRange"), 2);
    let answers = router
        .log
        .iter()
        .filter(|(_, p)| p.name() == "AnswerCheckTIDRange")
        .count();
    assert_eq!(answers, 0);
    // The unlock everywhere lets it go on, the transaction included everywhere.
    for i in 0..3 {
        let outputs = router
            .node(i)
            .master_sends(NotifyUnlockInformation { ttid });
        router.route(i, outputs);
    }
    router.run(usize::MAX);
    assert_eq!(router.node(0).storage.checking_partition(), None);
    assert!(corrupted(&mut router).is_empty());
    assert_eq!(asked(&router, "AskCheckSerialRange"), 2);
}
