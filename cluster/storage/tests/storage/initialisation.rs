//! The initialisation phase: what the master's recovery and verification requests get
//! from a pre-filled database, partition tables persisted across restarts, truncation,
//! StartOperation/StopOperation, and being told DOWN or UNKNOWN.

use neo_node::{Input, Node, Output};
use neo_protocol::{
    AnswerLastIDs, AnswerLockedTransactions, AnswerPackOrders, AnswerPartitionTable,
    AnswerRecovery, AskFinalTID, AskLastIDs, AskLockedTransactions, AskPackOrders,
    AskPartitionTable, AskRecovery, CellChange, CellState, Checksum, Dict, ErrorCode, NodeState,
    NotifyNodeInformation, NotifyPackCompleted, NotifyPartitionChanges, NotifyReady, Oid, PackInfo,
    PackOrder, Packet, SendPartitionTable, StartOperation, StopOperation, Tid, Truncate,
    ValidateTransaction,
};
use neo_storage::{Backend, MemoryBackend, MemoryDisk, Phase, StoredData, TransactionRecord};

use crate::harness::*;

pub const BASE: u64 = 0x03e0_0000_0000_0000;

pub fn tid(i: u64) -> Tid {
    Tid(BASE + i)
}

pub fn data(text: &str) -> StoredData {
    StoredData {
        compression: 0,
        checksum: checksum(text.as_bytes()),
        value: text.as_bytes().to_vec().into(),
    }
}

/// Not SHA-1: the storage stores checksums as received and never checks them on this path.
fn checksum(bytes: &[u8]) -> Checksum {
    let mut sum = [0u8; 20];
    for (i, b) in bytes.iter().enumerate() {
        sum[i % 20] ^= b;
    }
    sum[19] ^= 1;
    sum
}

pub fn record(t: Tid, oids: Vec<Oid>) -> TransactionRecord {
    TransactionRecord {
        tid: t,
        ttid: t,
        oids,
        user: "user".into(),
        description: format!("txn {t}").into(),
        extension: "".into(),
        packed: false,
        pack: None,
    }
}

/// A database of storage S1 with 2 partitions, both UP_TO_DATE on S1 and OUT_OF_DATE on
/// S2, ten committed transactions (one object each, oid i at tid(i)), the fourth carrying
/// a pack order, one locked and one voted transaction.
pub fn prefilled() -> MemoryDisk {
    let disk = MemoryDisk::new();
    let mut backend = MemoryBackend::open(disk.clone()).unwrap();
    let s1 = storage_nid(1);
    backend.set_config("name", Some(CLUSTER)).unwrap();
    backend.set_nid(s1).unwrap();
    let cells = [
        (0, s1, CellState::UpToDate),
        (1, s1, CellState::UpToDate),
        (0, storage_nid(2), CellState::OutOfDate),
        (1, storage_nid(2), CellState::OutOfDate),
    ];
    backend.apply_pt_changes(1, 1, &cells, true, s1).unwrap();
    for i in 1..=10 {
        let mut r = record(tid(i), vec![Oid(i)]);
        if i == 4 {
            r.pack = Some(PackInfo {
                approved: Some(true),
                partial: false,
                oids: None,
                pack_tid: tid(2),
            });
        }
        backend.store_transaction(&r, false).unwrap();
        backend
            .store_object(
                Oid(i),
                tid(i),
                Some(&data(&format!("value {i}"))),
                None,
                false,
            )
            .unwrap();
    }
    // Locked: voted then locked with final tid(13) (same partition as its TTID, 3.3); voted
    // only: ttid tid(14).
    let mut locked = record(tid(11), vec![Oid(1)]);
    locked.tid = Tid(0);
    backend.store_transaction(&locked, true).unwrap();
    backend
        .store_object(Oid(1), tid(11), Some(&data("locked")), None, true)
        .unwrap();
    backend.lock_transaction(tid(11), tid(13)).unwrap();
    backend
        .store_object(Oid(2), tid(14), Some(&data("voted")), None, true)
        .unwrap();
    backend.commit().unwrap();
    disk
}

fn answer(outputs: &[Output]) -> Packet {
    match outputs {
        [.., Output::Send { packet, .. }] => packet.clone(),
        other => panic!("no answer: {other:?}"),
    }
}

#[test]
fn recovery_and_verification_answers_come_from_the_backend() {
    let mut h = Harness::new(2001, prefilled());
    h.identify(storage_nid(1));
    assert_eq!(
        answer(&h.master_sends(AskRecovery {})),
        AnswerRecovery {
            ptid: Some(1),
            backup_tid: None,
            truncate_tid: None
        }
        .into()
    );
    assert_eq!(
        answer(&h.master_sends(AskPartitionTable {})),
        AnswerPartitionTable {
            ptid: Some(1),
            num_replicas: 1,
            row_list: vec![
                row(&[
                    (storage_nid(1), CellState::UpToDate),
                    (storage_nid(2), CellState::OutOfDate)
                ]),
                row(&[
                    (storage_nid(1), CellState::UpToDate),
                    (storage_nid(2), CellState::OutOfDate)
                ]),
            ],
        }
        .into()
    );
    assert_eq!(
        answer(&h.master_sends(AskLockedTransactions {})),
        AnswerLockedTransactions {
            tid_dict: Dict(vec![(tid(11), Some(tid(13))), (tid(14), None)])
        }
        .into()
    );
    assert_eq!(
        answer(&h.master_sends(AskFinalTID { ttid: tid(7) })),
        neo_protocol::AnswerFinalTID { tid: Some(tid(7)) }.into()
    );
    assert_eq!(
        answer(&h.master_sends(AskFinalTID { ttid: tid(42) })),
        neo_protocol::AnswerFinalTID { tid: None }.into()
    );
    assert_eq!(
        answer(&h.master_sends(AskPackOrders { pack_id: Tid(0) })),
        AnswerPackOrders {
            pack_list: vec![PackOrder {
                pack_id: tid(4),
                approved: Some(true),
                partial: false,
                oids: None,
                pack_tid: tid(2),
            }]
        }
        .into()
    );
    let last = h.master_sends(AskLastIDs {});
    let master = h.master.unwrap();
    assert_eq!(
        sent_on(&last, master),
        vec![
            (1, NotifyPackCompleted { pack_id: Tid(0) }.into()),
            (
                100,
                AnswerLastIDs {
                    last_tid: Some(tid(10)),
                    last_oid: Some(Oid(10)),
                    first_tid: tid(1),
                }
                .into()
            ),
        ]
    );
    // ValidateTransaction replays lock and unlock: the locked transaction is committed.
    assert!(h
        .master_sends(ValidateTransaction {
            ttid: tid(11),
            tid: tid(13)
        })
        .is_empty());
    assert_eq!(
        h.storage.backend().final_tid(tid(11)).unwrap(),
        Some(tid(13))
    );
    let object = h
        .storage
        .backend()
        .object(Oid(1), None, None)
        .unwrap()
        .unwrap();
    assert_eq!(object.serial, tid(13));
    assert_eq!(object.data, Some(data("locked")));
}

#[test]
fn partition_table_is_persisted_and_reloaded_after_a_restart() {
    let disk = MemoryDisk::new();
    let s1 = storage_nid(1);
    let s2 = storage_nid(2);
    let mut h = Harness::new(2001, disk.clone());
    h.identify(s1);
    h.master_sends(SendPartitionTable {
        ptid: Some(5),
        num_replicas: 1,
        row_list: vec![
            row(&[(s1, CellState::UpToDate)]),
            row(&[(s2, CellState::UpToDate)]),
        ],
    });
    let changes = h.master_sends(NotifyPartitionChanges {
        ptid: 6,
        num_replicas: 1,
        cell_list: vec![
            CellChange {
                partition: 1,
                nid: s1,
                state: CellState::OutOfDate,
            },
            CellChange {
                partition: 0,
                nid: s2,
                state: CellState::OutOfDate,
            },
        ],
    });
    assert!(changes.is_empty(), "{changes:?}");
    let expected = vec![
        row(&[(s1, CellState::UpToDate), (s2, CellState::OutOfDate)]),
        row(&[(s2, CellState::UpToDate), (s1, CellState::OutOfDate)]),
    ];
    assert_eq!(
        h.storage.partition_table(),
        (Some(6), 1, expected.as_slice())
    );
    drop(h);
    let mut h = Harness::new(2001, disk);
    let (ptid, replicas, rows) = h.storage.partition_table();
    assert_eq!((ptid, replicas), (Some(6), 1));
    // Rows come back in the backend's order; compare as sets.
    for (got, want) in rows.iter().zip(&expected) {
        let mut got = got.clone();
        let mut want = want.clone();
        got.sort_by_key(|c| c.nid);
        want.sort_by_key(|c| c.nid);
        assert_eq!(got, want);
    }
    h.identify(s1);
    assert_eq!(
        answer(&h.master_sends(AskRecovery {})),
        AnswerRecovery {
            ptid: Some(6),
            backup_tid: None,
            truncate_tid: None
        }
        .into()
    );
}

#[test]
fn a_ptid_gap_is_a_protocol_error_and_the_master_is_looked_for_again() {
    let mut h = Harness::new(2001, MemoryDisk::new());
    let s1 = storage_nid(1);
    h.identify(s1);
    h.master_sends(SendPartitionTable {
        ptid: Some(5),
        num_replicas: 0,
        row_list: vec![row(&[(s1, CellState::UpToDate)])],
    });
    let master = h.master.unwrap();
    let outputs = h.master_sends(NotifyPartitionChanges {
        ptid: 7,
        num_replicas: 0,
        cell_list: vec![],
    });
    match outputs.as_slice() {
        [Output::Send {
            conn,
            packet: Packet::Error(e),
            ..
        }, Output::Close { conn: closed }] => {
            assert_eq!((*conn, *closed), (master, master));
            assert_eq!(e.code, ErrorCode::ProtocolError);
            assert_eq!(e.message.as_ref(), b"wrong partition table id");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.storage.phase(), Phase::Bootstrap);
    // The master was tried at this very time: the next attempt is a second later.
    assert_eq!(h.storage.deadline(), Some(h.now + 1.0));
    h.now += 1.0;
    let retry = h.feed(Input::Timer);
    assert!(
        matches!(retry.as_slice(), [Output::Connect { .. }]),
        "{retry:?}"
    );
    // The stored table is unchanged.
    assert_eq!(h.storage.backend().ptid().unwrap(), Some(5));
}

#[test]
fn truncate_is_persisted_then_done_by_ask_last_ids() {
    let disk = prefilled();
    let mut h = Harness::new(2001, disk.clone());
    h.identify(storage_nid(1));
    assert!(
        h.master_sends(Truncate { tid: tid(5) }).is_empty(),
        "no answer to the master"
    );
    // Persisted: a restart still knows it.
    drop(h);
    let mut h = Harness::new(2001, disk);
    h.identify(storage_nid(1));
    assert_eq!(
        answer(&h.master_sends(AskRecovery {})),
        AnswerRecovery {
            ptid: Some(1),
            backup_tid: None,
            truncate_tid: Some(tid(5))
        }
        .into()
    );
    assert_eq!(
        answer(&h.master_sends(AskLastIDs {})),
        AnswerLastIDs {
            last_tid: Some(tid(5)),
            last_oid: Some(Oid(5)),
            first_tid: tid(1)
        }
        .into()
    );
    let backend = h.storage.backend();
    assert_eq!(backend.truncate_tid().unwrap(), None);
    assert!(backend.transaction(tid(6), false).unwrap().is_none());
    assert!(backend.object(Oid(6), None, None).unwrap().is_none());
    assert!(backend.transaction(tid(5), false).unwrap().is_some());
}

#[test]
fn start_operation_notifies_ready_and_drops_unfinished_data() {
    let mut h = Harness::new(2001, prefilled());
    let s1 = storage_nid(1);
    let nodes = [
        node(s1, 2001, NodeState::Running, 1.0),
        node(MASTER_NID, 1000, NodeState::Running, 0.5),
    ];
    let rows = vec![
        row(&[(s1, CellState::UpToDate)]),
        row(&[(s1, CellState::UpToDate)]),
    ];
    let started = h.boot(s1, &nodes, 1.0, &rows, 2);
    assert_eq!(
        sent_on(&started, h.master.unwrap()),
        vec![(1, NotifyReady {}.into())]
    );
    assert_eq!(h.storage.phase(), Phase::Operation);
    assert!(h
        .storage
        .backend()
        .locked_transactions()
        .unwrap()
        .is_empty());
    // StartOperation is an initialisation packet: during operation it is a protocol error.
    let again = h.master_sends(StartOperation { backup: false });
    assert!(
        matches!(
            again.as_slice(),
            [
                Output::Send {
                    packet: Packet::Error(_),
                    ..
                },
                Output::Close { .. }
            ]
        ),
        "{again:?}"
    );
    assert_eq!(h.storage.phase(), Phase::Bootstrap);
}

#[test]
fn stop_operation_goes_back_to_initialisation() {
    let mut h = Harness::new(2001, prefilled());
    let s1 = storage_nid(1);
    let nodes = [node(s1, 2001, NodeState::Running, 1.0)];
    let rows = vec![
        row(&[(s1, CellState::UpToDate)]),
        row(&[(s1, CellState::UpToDate)]),
    ];
    h.boot(s1, &nodes, 1.0, &rows, 2);
    assert!(h.master_sends(StopOperation {}).is_empty());
    assert_eq!(h.storage.phase(), Phase::Initialisation);
    assert!(matches!(
        answer(&h.master_sends(AskRecovery {})),
        Packet::AnswerRecovery(_)
    ));
}

#[test]
fn told_down_the_storage_exits() {
    let mut h = Harness::new(2001, prefilled());
    let s1 = storage_nid(1);
    h.identify(s1);
    let outputs = h.master_sends(NotifyNodeInformation {
        timestamp: 3.0,
        node_list: vec![node(s1, 2001, NodeState::Down, 1.0)],
    });
    assert!(
        matches!(
            outputs.as_slice(),
            [Output::Close { .. }, Output::Exit { code: 0, .. }]
        ),
        "{outputs:?}"
    );
    assert_eq!(h.storage.phase(), Phase::Exited);
    assert!(h.feed(Input::Timer).is_empty());
    assert!(h
        .storage
        .backend()
        .transaction(tid(1), false)
        .unwrap()
        .is_some());
}

#[test]
fn told_unknown_the_storage_erases_its_database_and_exits() {
    let disk = prefilled();
    let mut h = Harness::new(2001, disk.clone());
    let s1 = storage_nid(1);
    h.identify(s1);
    let outputs = h.master_sends(NotifyNodeInformation {
        timestamp: 3.0,
        node_list: vec![node(s1, 2001, NodeState::Unknown, 1.0)],
    });
    assert!(
        matches!(outputs.last(), Some(Output::Exit { code: 0, .. })),
        "{outputs:?}"
    );
    drop(h);
    let backend = MemoryBackend::open(disk).unwrap();
    assert!(backend.pt_rows().unwrap().is_empty());
    assert_eq!(backend.get_config("name").unwrap(), None);
    assert!(backend.transaction(tid(1), false).unwrap().is_none());
}
