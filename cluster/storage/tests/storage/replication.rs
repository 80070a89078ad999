//! Replication between two storages wired through the router (6.1): chunks, completion,
//! pending transactions, and resuming from the committed progress after a crash.

use neo_protocol::{
    AnswerUnfinishedTransactions, AskUnfinishedTransactions, CellState, NodeState,
    NotifyReplicationDone, NotifyTransactionFinished, Oid, Packet, Tid,
};
use neo_storage::{Backend, MemoryBackend, MemoryDisk, FETCH_COUNT};

use crate::harness::*;
use crate::initialisation::{data, record, tid};

const TRANSACTIONS: u64 = 2500;

/// S1's database: one partition, `n` transactions of one object each (oid `i % 300`),
/// with deletions and undo records among them.
pub fn source_disk(n: u64) -> MemoryDisk {
    let disk = MemoryDisk::new();
    let mut backend = MemoryBackend::open(disk.clone()).unwrap();
    let s1 = storage_nid(1);
    backend.set_config("name", Some(CLUSTER)).unwrap();
    backend.set_nid(s1).unwrap();
    backend
        .apply_pt_changes(1, 1, &[(0, s1, CellState::UpToDate)], true, s1)
        .unwrap();
    for i in 1..=n {
        let oid = Oid(i % 300);
        backend
            .store_transaction(&record(tid(i), vec![oid]), false)
            .unwrap();
        if i % 97 == 0 {
            backend
                .store_object(oid, tid(i), None, None, false)
                .unwrap();
        } else if i % 101 == 0 && i > 300 {
            backend
                .store_object(oid, tid(i), None, Some(tid(i - 300)), false)
                .unwrap();
        } else {
            let value = data(&format!("value {i}"));
            backend
                .store_object(oid, tid(i), Some(&value), None, false)
                .unwrap();
        }
    }
    backend.commit().unwrap();
    disk
}

fn nodes() -> Vec<neo_protocol::NodeInfo> {
    vec![
        node(storage_nid(1), 2001, NodeState::Running, 0.5),
        node(storage_nid(2), 2002, NodeState::Running, 0.6),
        node(MASTER_NID, 1000, NodeState::Running, 0.1),
    ]
}

fn rows() -> Vec<neo_protocol::Row> {
    vec![row(&[
        (storage_nid(1), CellState::UpToDate),
        (storage_nid(2), CellState::OutOfDate),
    ])]
}

/// S1 operating as the source, S2 booted with an OUT_OF_DATE cell: returns the router
/// and the msg_id of S2's AskUnfinishedTransactions.
fn cluster(requester: MemoryDisk) -> (Router, u32) {
    let mut source = Harness::new(2001, source_disk(TRANSACTIONS));
    let started = source.boot(storage_nid(1), &nodes(), 1.0, &rows(), 2);
    assert_eq!(
        sent_on(&started, source.master.unwrap()).len(),
        1,
        "NotifyReady only"
    );
    let (requester, ask) = boot_requester(requester);
    (Router::new(vec![source, requester]), ask)
}

fn boot_requester(disk: MemoryDisk) -> (Harness, u32) {
    let mut requester = Harness::new(2002, disk);
    let started = requester.boot(storage_nid(2), &nodes(), 1.0, &rows(), 2);
    let sent = sent_on(&started, requester.master.unwrap());
    let ask = match sent.as_slice() {
        [(_, Packet::NotifyReady(_)), (msg_id, Packet::AskUnfinishedTransactions(AskUnfinishedTransactions { offset_list }))] =>
        {
            assert_eq!(offset_list, &vec![0]);
            *msg_id
        }
        other => panic!("{other:?}"),
    };
    (requester, ask)
}

fn answer_unfinished(router: &mut Router, msg_id: u32, max_tid: Tid, ttid_list: Vec<Tid>) {
    let h = router.node(1);
    let master = h.master.unwrap();
    let outputs = h.packet(
        master,
        msg_id,
        AnswerUnfinishedTransactions { max_tid, ttid_list },
    );
    router.route(1, outputs);
}

fn count(router: &Router, from: usize, name: &str) -> usize {
    router
        .log
        .iter()
        .filter(|(f, p)| *f == from && p.name() == name)
        .count()
}

fn replication_done(router: &mut Router) -> Vec<NotifyReplicationDone> {
    router
        .take_master()
        .into_iter()
        .filter_map(|(_, _, p)| match p {
            Packet::NotifyReplicationDone(done) => Some(done),
            _ => None,
        })
        .collect()
}

/// Both databases hold the same transactions and object revisions.
fn assert_same_data(a: &MemoryBackend, b: &MemoryBackend) {
    let all = |x: &MemoryBackend| x.tids_range(0, Tid(0), Tid::MAX, usize::MAX).unwrap();
    assert_eq!(all(a).len(), TRANSACTIONS as usize);
    assert_eq!(all(a), all(b));
    for t in all(a) {
        assert_eq!(
            a.transaction(t, false).unwrap(),
            b.transaction(t, false).unwrap()
        );
    }
    let records = |x: &MemoryBackend| {
        x.objects_range(0, Tid(0), Oid(0), Tid::MAX, usize::MAX)
            .unwrap()
    };
    assert_eq!(records(a), records(b));
    for (serial, oid) in records(a) {
        assert_eq!(
            a.object(oid, Some(serial), None).unwrap(),
            b.object(oid, Some(serial), None).unwrap()
        );
    }
}

#[test]
fn a_partition_replicates_in_chunks_then_is_notified_done() {
    let (mut router, ask) = cluster(MemoryDisk::new());
    answer_unfinished(&mut router, ask, tid(TRANSACTIONS), vec![]);
    router.run(usize::MAX);
    let chunks = TRANSACTIONS.div_ceil(FETCH_COUNT as u64) as usize;
    assert_eq!(count(&router, 1, "AskFetchTransactions"), chunks);
    assert_eq!(count(&router, 1, "AskFetchObjects"), chunks);
    assert_eq!(count(&router, 0, "AddTransaction"), TRANSACTIONS as usize);
    assert_eq!(count(&router, 0, "AddObject"), TRANSACTIONS as usize);
    // Every streamed packet carries its request's msg_id (checked by the requester, which
    // ignores others): all were stored.
    assert_eq!(
        replication_done(&mut router),
        vec![NotifyReplicationDone {
            partition: 0,
            tid: tid(TRANSACTIONS)
        }]
    );
    let source = router.nodes[0].as_ref().unwrap().storage.backend();
    let requester = router.nodes[1].as_ref().unwrap().storage.backend();
    assert_same_data(source, requester);
    let progress = requester.pt_rows().unwrap();
    assert_eq!(
        progress
            .iter()
            .find(|r| r.nid == storage_nid(2))
            .unwrap()
            .tid,
        tid(TRANSACTIONS).0 as i64
    );
    assert_eq!(router.node(1).storage.replicating_partition(), None);
    // A stray packet of a finished round (its msg_id is no longer awaited) is ignored.
    let source_conn = neo_node::io::OUTGOING | 2;
    let stray = router.node(1).packet(
        source_conn,
        0,
        neo_protocol::AddTransaction {
            tid: tid(TRANSACTIONS + 1),
            user: "intruder".into(),
            description: "".into(),
            extension: "".into(),
            packed: false,
            ttid: tid(TRANSACTIONS + 1),
            oid_list: vec![],
            pack: None,
        },
    );
    assert!(stray.is_empty(), "{stray:?}");
    let requester = router.nodes[1].as_ref().unwrap().storage.backend();
    assert!(requester
        .transaction(tid(TRANSACTIONS + 1), false)
        .unwrap()
        .is_none());
    // A packet a storage has no business sending closes that connection only.
    let outputs = router
        .node(1)
        .packet(source_conn, 7, neo_protocol::AskRecovery {});
    assert!(
        matches!(outputs.as_slice(), [neo_node::Output::Send { packet: Packet::Error(e), .. }, neo_node::Output::Close { conn }]
            if e.code == neo_protocol::ErrorCode::ProtocolError && *conn == source_conn),
        "{outputs:?}"
    );
    assert!(router.node(1).storage.is_operational());
}

#[test]
fn pending_transactions_delay_the_end_of_replication() {
    let (mut router, ask) = cluster(MemoryDisk::new());
    answer_unfinished(&mut router, ask, tid(2000), vec![tid(2001)]);
    router.run(usize::MAX);
    assert!(
        replication_done(&mut router).is_empty(),
        "a transaction is still pending"
    );
    assert_eq!(count(&router, 1, "AskFetchTransactions"), 2);
    // It commits as tid(2500) (for the test, everything up to it is on the source).
    let h = router.node(1);
    let outputs = h.master_sends(NotifyTransactionFinished {
        ttid: tid(2001),
        max_tid: tid(TRANSACTIONS),
    });
    router.route(1, outputs);
    router.run(usize::MAX);
    let asks: Vec<_> = router
        .log
        .iter()
        .filter_map(|(_, p)| match p {
            Packet::AskFetchTransactions(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        asks[2].min_tid,
        tid(2001),
        "the second round starts after the first"
    );
    assert_eq!(
        replication_done(&mut router),
        vec![NotifyReplicationDone {
            partition: 0,
            tid: tid(TRANSACTIONS)
        }]
    );
    let source = router.nodes[0].as_ref().unwrap().storage.backend();
    let requester = router.nodes[1].as_ref().unwrap().storage.backend();
    assert_same_data(source, requester);
}

#[test]
fn an_interrupted_replication_resumes_from_the_committed_progress() {
    let requester_disk = MemoryDisk::new();
    let (mut router, ask) = cluster(requester_disk.clone());
    answer_unfinished(&mut router, ask, tid(TRANSACTIONS), vec![]);
    // Run until the second chunk of objects is asked, then half of its stream.
    while count(&router, 1, "AskFetchObjects") < 2 {
        assert_eq!(router.run(1), 1, "replication stalled");
    }
    router.run(500);
    let second = router
        .log
        .iter()
        .rev()
        .find_map(|(_, p)| match p {
            Packet::AskFetchObjects(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert!(second.min_tid > tid(1));
    drop(router.kill(1));
    // What survived: progress up to just before the second chunk, none of its objects.
    let progress = {
        let backend = MemoryBackend::open(requester_disk.clone()).unwrap();
        let own = backend
            .pt_rows()
            .unwrap()
            .into_iter()
            .find(|r| r.nid == storage_nid(2))
            .unwrap();
        let stored = backend
            .objects_range(0, Tid(0), Oid(0), Tid::MAX, usize::MAX)
            .unwrap();
        assert!(
            stored.iter().all(|(serial, _)| *serial < second.min_tid),
            "uncommitted writes are lost"
        );
        own.tid
    };
    assert_eq!(progress as u64, second.min_tid.0 - 1);
    // Restart on the same disk: the first request resumes at progress + 1.
    let log_start = router.log.len();
    let (requester, ask) = boot_requester(requester_disk);
    router.nodes[1] = Some(requester);
    answer_unfinished(&mut router, ask, tid(TRANSACTIONS), vec![]);
    router.run(usize::MAX);
    let first = router.log[log_start..]
        .iter()
        .find_map(|(_, p)| match p {
            Packet::AskFetchTransactions(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(first.min_tid, second.min_tid);
    // Transactions are all there already: none is sent again.
    assert_eq!(
        router.log[log_start..]
            .iter()
            .filter(|(_, p)| p.name() == "AddTransaction")
            .count(),
        0
    );
    assert_eq!(
        replication_done(&mut router).last(),
        Some(&NotifyReplicationDone {
            partition: 0,
            tid: tid(TRANSACTIONS)
        })
    );
    let source = router.nodes[0].as_ref().unwrap().storage.backend();
    let requester = router.nodes[1].as_ref().unwrap().storage.backend();
    assert_same_data(source, requester);
}

#[test]
fn lockless_stores_while_replicating_become_locks_when_replication_ends() {
    use crate::transactions::{client, connect_client, store_request};
    use neo_protocol::{AbortTransaction, AnswerStoreObject, AskVoteTransaction};
    let mut all = nodes();
    all.push(client(1, NodeState::Running));
    let mut source = Harness::new(2001, source_disk(20));
    source.boot(storage_nid(1), &all, 1.0, &rows(), 2);
    let mut requester = Harness::new(2002, MemoryDisk::new());
    let started = requester.boot(storage_nid(2), &all, 1.0, &rows(), 2);
    let ask = match sent_on(&started, requester.master.unwrap()).as_slice() {
        [_, (msg_id, Packet::AskUnfinishedTransactions(_))] => *msg_id,
        other => panic!("{other:?}"),
    };
    let client_conn = 900;
    connect_client(&mut requester, client_conn, 1);
    // The cell is OUT_OF_DATE: everything is accepted without lock, even a stale serial.
    let stores = [
        (5, tid(5), tid(100)),
        (7, tid(1), tid(110)),
        (9, tid(9), tid(120)),
        (9, tid(9), tid(130)),
    ];
    for (i, (oid, serial, ttid)) in stores.into_iter().enumerate() {
        let outputs = requester.packet(
            client_conn,
            i as u32 + 1,
            store_request(oid, serial, "lockless", ttid),
        );
        assert_eq!(
            sent_on(&outputs, client_conn),
            vec![(
                i as u32 + 1,
                AnswerStoreObject {
                    conflict: Some(Tid(0))
                }
                .into()
            )]
        );
    }
    assert!(requester.storage.write_locks().is_empty());
    let mut router = Router::new(vec![source, requester]);
    answer_unfinished(&mut router, ask, tid(20), vec![]);
    router.run(10_000);
    // Replicated up to tid(20), but oid 9 is stored by two transactions: the master is not
    // told yet; the lockless stores hold locks now, the youngest on oid 9.
    assert!(replication_done(&mut router).is_empty());
    assert_eq!(
        router.node(1).storage.write_locks(),
        vec![(Oid(5), tid(100)), (Oid(7), tid(110)), (Oid(9), tid(130))]
    );
    // One of them ends: the partition is done, and the locks are checked against the
    // complete data; the stale store of oid 7 is dropped here.
    let outputs = router.node(1).packet(
        client_conn,
        10,
        AbortTransaction {
            ttid: tid(120),
            nid_list: vec![],
        },
    );
    router.route(1, outputs);
    assert_eq!(
        replication_done(&mut router),
        vec![NotifyReplicationDone {
            partition: 0,
            tid: tid(20)
        }]
    );
    let requester = router.node(1);
    assert_eq!(
        requester.storage.write_locks(),
        vec![(Oid(5), tid(100)), (Oid(9), tid(130))]
    );
    requester.packet(client_conn, 11, AskVoteTransaction { ttid: tid(110) });
    assert!(requester
        .storage
        .backend()
        .locked_transactions()
        .unwrap()
        .is_empty());
    // New stores are checked normally now (the cell is not readable yet, but replicated).
    let outputs = requester.packet(client_conn, 12, store_request(11, tid(3), "late", tid(140)));
    assert_eq!(
        sent_on(&outputs, client_conn),
        vec![(
            12,
            AnswerStoreObject {
                conflict: Some(tid(11))
            }
            .into()
        )]
    );
}

/// A storage peer connected anonymously on `conn` (as a checking node may be).
fn connect_peer(h: &mut Harness, conn: u64) {
    use neo_node::Input;
    let peer = format!("127.0.0.1:{}", 51000 + conn).parse().unwrap();
    assert!(h.feed(Input::Accepted { conn, peer }).is_empty());
    let outputs = h.packet(
        conn,
        0,
        neo_protocol::RequestIdentification {
            node_type: neo_protocol::NodeType::Storage,
            nid: None,
            address: None,
            cluster_name: neo_protocol::Bytes::from_static(CLUSTER.as_bytes()),
            id_timestamp: None,
            extra: neo_protocol::Dict::new(),
        },
    );
    assert_eq!(outputs.len(), 1, "{outputs:?}");
}

#[test]
fn check_digests_are_equal_on_storages_holding_the_same_data() {
    use crate::transactions::checksum;
    use neo_protocol::{
        AnswerCheckSerialRange, AnswerCheckTIDRange, AskCheckSerialRange, AskCheckTIDRange,
        ErrorCode, ZERO_HASH,
    };
    // Two copies of the same data, and a third missing the last transaction.
    let rows = vec![row(&[
        (storage_nid(1), CellState::UpToDate),
        (storage_nid(2), CellState::UpToDate),
    ])];
    let mut storages: Vec<Harness> = [(2001, 1, 300), (2002, 2, 300), (2003, 2, 299)]
        .into_iter()
        .map(|(port, n, transactions)| {
            let mut h = Harness::new(port, source_disk(transactions));
            h.boot(storage_nid(n), &nodes(), 1.0, &rows, 2);
            connect_peer(&mut h, 7);
            h
        })
        .collect();
    let ask_tids = |h: &mut Harness, min: Tid, length: u32| {
        let outputs = h.packet(
            7,
            3,
            AskCheckTIDRange {
                partition: 0,
                length,
                min_tid: min,
                max_tid: tid(300),
            },
        );
        sent_on(&outputs, 7).remove(0).1
    };
    let ask_serials = |h: &mut Harness, min: Tid, min_oid: Oid| {
        let outputs = h.packet(
            7,
            4,
            AskCheckSerialRange {
                partition: 0,
                length: 100,
                min_tid: min,
                max_tid: tid(300),
                min_oid,
            },
        );
        sent_on(&outputs, 7).remove(0).1
    };
    let decimal = |ids: &[u64]| {
        checksum(
            ids.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
                .as_bytes(),
        )
    };
    let first = ask_tids(&mut storages[0], Tid(0), 3);
    assert_eq!(
        first,
        AnswerCheckTIDRange {
            count: 3,
            checksum: decimal(&[tid(1).0, tid(2).0, tid(3).0]),
            max_tid: tid(3),
        }
        .into()
    );
    assert_eq!(ask_tids(&mut storages[1], Tid(0), 3), first);
    let whole = ask_tids(&mut storages[0], tid(4), 1000);
    assert_eq!(ask_tids(&mut storages[1], tid(4), 1000), whole);
    assert_ne!(ask_tids(&mut storages[2], tid(4), 1000), whole);
    let serials = ask_serials(&mut storages[0], tid(250), Oid(0));
    match &serials {
        Packet::AnswerCheckSerialRange(a) => {
            assert_eq!((a.count, a.max_tid, a.max_oid), (51, tid(300), Oid(0)));
            let tids: Vec<u64> = (250..=300).map(|i| tid(i).0).collect();
            let oids: Vec<u64> = (250..=300).map(|i| i % 300).collect();
            assert_eq!(a.tid_checksum, decimal(&tids));
            assert_eq!(a.oid_checksum, decimal(&oids));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ask_serials(&mut storages[1], tid(250), Oid(0)), serials);
    assert_ne!(ask_serials(&mut storages[2], tid(250), Oid(0)), serials);
    // Nothing in the range.
    assert_eq!(
        ask_serials(&mut storages[0], tid(301), Oid(0)),
        AnswerCheckSerialRange {
            count: 0,
            tid_checksum: ZERO_HASH,
            max_tid: Tid(0),
            oid_checksum: ZERO_HASH,
            max_oid: Oid(0),
        }
        .into()
    );
    // A storage whose cell is OUT_OF_DATE refuses.
    let (mut requester, _) = boot_requester(MemoryDisk::new());
    connect_peer(&mut requester, 7);
    assert!(
        matches!(ask_tids(&mut requester, Tid(0), 3), Packet::Error(e) if e.code == ErrorCode::CheckingError)
    );
}

#[test]
fn replication_requests_wait_for_an_idle_moment() {
    use neo_node::{Input, Node};
    use neo_protocol::{AskCheckTIDRange, Ping};
    let rows = vec![row(&[
        (storage_nid(1), CellState::UpToDate),
        (storage_nid(2), CellState::UpToDate),
    ])];
    let mut h = Harness::new(2001, source_disk(10));
    h.boot(storage_nid(1), &nodes(), 1.0, &rows, 2);
    connect_peer(&mut h, 7);
    // A check request, then a ping, arrive before the node is idle.
    let check = AskCheckTIDRange {
        partition: 0,
        length: 5,
        min_tid: Tid(0),
        max_tid: tid(10),
    };
    let outputs = h.feed(Input::Packet {
        conn: 7,
        msg_id: 3,
        packet: check.into(),
    });
    assert!(sent_on(&outputs, 7).is_empty(), "served in the background");
    assert!(h.storage.wants_idle());
    let outputs = h.feed(Input::Packet {
        conn: 7,
        msg_id: 4,
        packet: Ping {}.into(),
    });
    let names: Vec<_> = sent_on(&outputs, 7).iter().map(|(_, p)| p.name()).collect();
    assert_eq!(
        names,
        ["Pong"],
        "the request that came later is answered first"
    );
    let outputs = h.feed(Input::Idle);
    let answers = sent_on(&outputs, 7);
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (answers[0].0, answers[0].1.name()),
        (3, "AnswerCheckTIDRange")
    );
    assert!(!h.storage.wants_idle());
}
