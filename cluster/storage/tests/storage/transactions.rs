//! Two-phase commit on one storage driven by hand (cluster.md 5.3-5.14, 6.2): stores and
//! checks with their write locks, conflicts, delays and deadlock avoidance, vote, lock,
//! unlock and what survives a crash, aborts, lost clients, read locks, undo serials, and
//! lockless stores while a partition is replicated.

use neo_node::{ConnId, Input, Node, Output};
use neo_protocol::{
    AbortTransaction, AnswerCheckCurrentSerial, AnswerFinalTID, AnswerInformationLocked,
    AnswerLockedTransactions, AnswerObject, AnswerObjectUndoSerial, AnswerRelockObject,
    AnswerStoreObject, AnswerStoreTransaction, AnswerVoteTransaction, AskCheckCurrentSerial,
    AskFinalTID, AskLockInformation, AskLockedTransactions, AskObject, AskObjectUndoSerial,
    AskRelockObject, AskStoreObject, AskStoreTransaction, AskVoteTransaction, Bytes, CellState,
    Dict, ErrorCode, Nid, NodeInfo, NodeState, NodeType, NotifyDeadlock, NotifyNodeInformation,
    NotifyUnlockInformation, ObjectData, Oid, Packet, RelockConflict, RequestIdentification, Tid,
    UndoSerial, ValidateTransaction,
};
use neo_storage::{Backend, MemoryBackend};
use sha1::{Digest, Sha1};

use crate::harness::*;
use crate::initialisation::{prefilled, tid};

const C1: ConnId = 5;
const C2: ConnId = 6;

pub fn client_nid(n: u32) -> Nid {
    Nid::new(NodeType::Client, n)
}

pub fn client(n: u32, state: NodeState) -> NodeInfo {
    NodeInfo {
        node_type: NodeType::Client,
        address: None,
        nid: Some(client_nid(n)),
        state,
        id_timestamp: Some(0.9),
    }
}

/// Accepts and identifies client `n` on connection `conn`.
pub fn connect_client(h: &mut Harness, conn: ConnId, n: u32) {
    let peer = format!("127.0.0.1:{}", 50000 + conn).parse().unwrap();
    assert!(h.feed(Input::Accepted { conn, peer }).is_empty());
    let outputs = h.packet(
        conn,
        0,
        RequestIdentification {
            node_type: NodeType::Client,
            nid: Some(client_nid(n)),
            address: None,
            cluster_name: Bytes::from_static(CLUSTER.as_bytes()),
            id_timestamp: Some(0.9),
            extra: Dict::new(),
        },
    );
    assert!(
        matches!(
            outputs.as_slice(),
            [Output::Send {
                packet: Packet::AcceptIdentification(_),
                ..
            }]
        ),
        "{outputs:?}"
    );
}

/// S1 operating on the pre-filled database (oid i at tid(i), partition i % 2), both
/// partitions UP_TO_DATE, clients 1 and 2 connected on C1 and C2.
fn booted() -> Harness {
    let mut h = Harness::new(2001, prefilled());
    let s1 = storage_nid(1);
    let nodes = [
        node(s1, 2001, NodeState::Running, 0.5),
        client(1, NodeState::Running),
        client(2, NodeState::Running),
    ];
    let rows = vec![
        row(&[(s1, CellState::UpToDate)]),
        row(&[(s1, CellState::UpToDate)]),
    ];
    h.boot(s1, &nodes, 1.0, &rows, 2);
    connect_client(&mut h, C1, 1);
    connect_client(&mut h, C2, 2);
    h
}

pub fn checksum(data: &[u8]) -> [u8; 20] {
    Sha1::digest(data).into()
}

pub fn store_request(oid: u64, serial: Tid, text: &str, ttid: Tid) -> AskStoreObject {
    AskStoreObject {
        oid: Oid(oid),
        serial,
        compression: 0,
        checksum: checksum(text.as_bytes()),
        data: Bytes::copy_from_slice(text.as_bytes()),
        data_serial: None,
        ttid,
    }
}

fn store(
    h: &mut Harness,
    conn: ConnId,
    msg_id: u32,
    oid: u64,
    serial: Tid,
    ttid: Tid,
) -> Vec<Output> {
    let text = format!("{oid} by {ttid}");
    h.packet(conn, msg_id, store_request(oid, serial, &text, ttid))
}

/// The packets sent on a connection, without msg ids.
pub fn on(outputs: &[Output], conn: ConnId) -> Vec<Packet> {
    sent_on(outputs, conn).into_iter().map(|(_, p)| p).collect()
}

pub fn stored(conflict: Option<Tid>) -> Packet {
    AnswerStoreObject { conflict }.into()
}

pub fn vote_metadata(h: &mut Harness, conn: ConnId, ttid: Tid, oids: &[u64]) {
    let outputs = h.packet(
        conn,
        50,
        AskStoreTransaction {
            ttid,
            user: "user".into(),
            description: "2pc".into(),
            extension: Bytes::new(),
            oid_list: oids.iter().map(|o| Oid(*o)).collect(),
            pack: None,
        },
    );
    assert_eq!(on(&outputs, conn), vec![AnswerStoreTransaction {}.into()]);
}

pub fn lock(h: &mut Harness, ttid: Tid, tid: Tid) {
    let outputs = h.master_sends(AskLockInformation {
        ttid,
        tid,
        pack: false,
    });
    assert_eq!(
        on(&outputs, h.master.unwrap()),
        vec![AnswerInformationLocked { ttid }.into()]
    );
}

fn read(h: &mut Harness, conn: ConnId, msg_id: u32, oid: u64) -> Vec<Output> {
    h.packet(
        conn,
        msg_id,
        AskObject {
            oid: Oid(oid),
            at: None,
            before: None,
        },
    )
}

#[test]
fn commit_round_trip_moves_to_final_tables_with_the_final_tid() {
    let mut h = booted();
    let (ttid, final_tid) = (tid(20), tid(22));
    assert_eq!(
        on(&store(&mut h, C1, 1, 2, tid(2), ttid), C1),
        vec![stored(None)]
    );
    assert_eq!(
        on(&store(&mut h, C1, 2, 11, Tid(0), ttid), C1),
        vec![stored(None)]
    );
    assert_eq!(
        h.storage.write_locks(),
        vec![(Oid(2), ttid), (Oid(11), ttid)]
    );
    vote_metadata(&mut h, C1, ttid, &[2, 11]);
    // Voted: in the temporary tables.
    assert_eq!(
        h.storage.backend().locked_transactions().unwrap(),
        vec![(ttid, None)]
    );
    lock(&mut h, ttid, final_tid);
    assert_eq!(
        h.storage.backend().locked_transactions().unwrap(),
        vec![(ttid, Some(final_tid))]
    );
    // The final TID is known before unlock.
    assert_eq!(
        on(&h.packet(C2, 3, AskFinalTID { ttid }), C2),
        vec![AnswerFinalTID {
            tid: Some(final_tid)
        }
        .into()]
    );
    // Read-locked: another client's load waits for the unlock.
    assert!(read(&mut h, C2, 4, 2).is_empty());
    let now = h.now;
    let outputs = h.master_sends(NotifyUnlockInformation { ttid });
    match on(&outputs, C2).as_slice() {
        [Packet::AnswerObject(AnswerObject { serial, data, .. })] => {
            assert_eq!(*serial, final_tid);
            assert_eq!(data.as_ref(), format!("2 by {ttid}").as_bytes());
        }
        other => panic!("{other:?}"),
    }
    assert!(h.storage.write_locks().is_empty());
    assert!(h.storage.transactions().is_empty());
    let backend = h.storage.backend();
    assert_eq!(
        backend.object(Oid(11), None, None).unwrap().unwrap().serial,
        final_tid
    );
    let record = backend.transaction(final_tid, false).unwrap().unwrap();
    assert_eq!(
        (record.ttid, record.oids.clone()),
        (ttid, vec![Oid(2), Oid(11)])
    );
    assert_eq!(backend.final_tid(ttid).unwrap(), Some(final_tid));
    // The move to the final tables is committed within a second.
    assert_eq!(h.storage.deadline(), Some(now + 1.0));
    h.now = now + 1.0;
    h.feed(Input::Timer);
    assert_eq!(h.storage.deadline(), None);
    let disk = h.storage.backend().disk();
    drop(h);
    let reopened = MemoryBackend::open(disk).unwrap();
    assert!(reopened.locked_transactions().unwrap().is_empty());
    assert_eq!(reopened.final_tid(ttid).unwrap(), Some(final_tid));
}

#[test]
fn a_storage_killed_after_lock_replays_the_unlock_at_verification() {
    let mut h = booted();
    let (ttid, final_tid) = (tid(30), tid(32));
    store(&mut h, C1, 1, 4, tid(4), ttid);
    vote_metadata(&mut h, C1, ttid, &[4]);
    lock(&mut h, ttid, final_tid);
    // Killed before the unlock: what was committed at lock is all that is left.
    let disk = h.storage.backend().disk();
    drop(h);
    let mut h = Harness::new(2001, disk);
    h.identify(storage_nid(1));
    let outputs = h.master_sends(AskLockedTransactions {});
    assert_eq!(
        on(&outputs, h.master.unwrap()),
        vec![AnswerLockedTransactions {
            tid_dict: Dict(vec![(ttid, Some(final_tid))])
        }
        .into()]
    );
    assert!(h
        .master_sends(ValidateTransaction {
            ttid,
            tid: final_tid
        })
        .is_empty());
    let backend = h.storage.backend();
    assert!(backend.locked_transactions().unwrap().is_empty());
    let object = backend.object(Oid(4), None, None).unwrap().unwrap();
    assert_eq!(object.serial, final_tid);
    assert_eq!(
        object.data.unwrap().value.as_ref(),
        format!("4 by {ttid}").as_bytes()
    );
    assert_eq!(
        backend.transaction(final_tid, false).unwrap().unwrap().ttid,
        ttid
    );
}

#[test]
fn conflicts_answer_the_committed_serial_and_take_no_lock() {
    let mut h = booted();
    assert_eq!(
        on(&store(&mut h, C1, 1, 6, tid(1), tid(20)), C1),
        vec![stored(Some(tid(6)))]
    );
    // A new object that exists already.
    assert_eq!(
        on(&store(&mut h, C1, 2, 8, Tid(0), tid(20)), C1),
        vec![stored(Some(tid(8)))]
    );
    assert!(h.storage.write_locks().is_empty());
    // checkCurrent: same procedure, no data.
    let outputs = h.packet(
        C1,
        3,
        AskCheckCurrentSerial {
            ttid: tid(20),
            oid: Oid(6),
            serial: tid(5),
        },
    );
    assert_eq!(
        on(&outputs, C1),
        vec![AnswerCheckCurrentSerial {
            conflict: Some(tid(6))
        }
        .into()]
    );
    let outputs = h.packet(
        C1,
        4,
        AskCheckCurrentSerial {
            ttid: tid(20),
            oid: Oid(10),
            serial: tid(10),
        },
    );
    assert_eq!(
        on(&outputs, C1),
        vec![AnswerCheckCurrentSerial { conflict: None }.into()]
    );
    assert_eq!(h.storage.write_locks(), vec![(Oid(10), tid(20))]);
    // A younger store of a checked oid waits; after the commit it conflicts only if the
    // committing transaction wrote the oid (a check writes nothing).
    assert!(store(&mut h, C2, 1, 10, tid(10), tid(40)).is_empty());
    vote_metadata(&mut h, C1, tid(20), &[10]);
    lock(&mut h, tid(20), tid(22));
    let outputs = h.master_sends(NotifyUnlockInformation { ttid: tid(20) });
    assert_eq!(on(&outputs, C2), vec![stored(None)]);
    assert_eq!(h.storage.write_locks(), vec![(Oid(10), tid(40))]);
    // Bad requests.
    let mut bad = store_request(2, tid(2), "x", tid(50));
    bad.compression = 2;
    let outputs = h.packet(C2, 2, bad);
    assert!(
        matches!(on(&outputs, C2).as_slice(), [Packet::Error(e)] if e.code == ErrorCode::ProtocolError)
    );
}

#[test]
fn a_younger_store_waits_for_the_older_transaction_and_then_conflicts() {
    let mut h = booted();
    assert_eq!(
        on(&store(&mut h, C1, 1, 2, tid(2), tid(20)), C1),
        vec![stored(None)]
    );
    // Younger: delayed, nothing answered.
    assert!(store(&mut h, C2, 1, 2, tid(2), tid(40)).is_empty());
    // A third, younger still, waits behind it.
    assert!(store(&mut h, C2, 2, 2, tid(2), tid(60)).is_empty());
    vote_metadata(&mut h, C1, tid(20), &[2]);
    lock(&mut h, tid(20), tid(22));
    let outputs = h.master_sends(NotifyUnlockInformation { ttid: tid(20) });
    // Both run, in TTID order, against the new committed serial.
    assert_eq!(
        sent_on(&outputs, C2),
        vec![(1, stored(Some(tid(22)))), (2, stored(Some(tid(22))))]
    );
    // Re-stored after conflict resolution: locked.
    assert_eq!(
        on(&store(&mut h, C2, 3, 2, tid(22), tid(40)), C2),
        vec![stored(None)]
    );
    assert_eq!(h.storage.write_locks(), vec![(Oid(2), tid(40))]);
}

#[test]
fn abort_frees_locks_and_runs_delayed_stores() {
    let mut h = booted();
    store(&mut h, C1, 1, 4, tid(4), tid(20));
    vote_metadata(&mut h, C1, tid(20), &[4]);
    // The holder voted: even an older transaction waits, without deadlock avoidance.
    assert!(store(&mut h, C2, 1, 4, tid(4), tid(10)).is_empty());
    let outputs = h.packet(
        C1,
        9,
        AbortTransaction {
            ttid: tid(20),
            nid_list: vec![],
        },
    );
    assert!(on(&outputs, C1).is_empty());
    assert_eq!(on(&outputs, C2), vec![stored(None)]);
    assert_eq!(h.storage.write_locks(), vec![(Oid(4), tid(10))]);
    assert!(h
        .storage
        .backend()
        .locked_transactions()
        .unwrap()
        .is_empty());
    // Aborted by the master: same, and a store arriving later for it is ignored.
    let outputs = h.master_sends(AbortTransaction {
        ttid: tid(10),
        nid_list: vec![],
    });
    assert!(outputs.is_empty(), "{outputs:?}");
    assert!(h.storage.write_locks().is_empty());
    // A locked transaction is not aborted.
    store(&mut h, C1, 2, 6, tid(6), tid(30));
    vote_metadata(&mut h, C1, tid(30), &[6]);
    lock(&mut h, tid(30), tid(32));
    h.master_sends(AbortTransaction {
        ttid: tid(30),
        nid_list: vec![],
    });
    assert_eq!(
        h.storage.transactions(),
        vec![(tid(30), Some(tid(32)), true)]
    );
}

#[test]
fn an_older_transaction_blocked_by_a_younger_one_makes_it_relock() {
    let mut h = booted();
    let (older, younger) = (tid(20), tid(30));
    assert_eq!(
        on(&store(&mut h, C2, 1, 2, tid(2), younger), C2),
        vec![stored(None)]
    );
    // The older one is blocked by a younger one that has not voted: deadlock avoidance.
    let outputs = store(&mut h, C1, 1, 2, tid(2), older);
    assert!(on(&outputs, C1).is_empty());
    assert_eq!(
        on(&outputs, C2),
        vec![NotifyDeadlock {
            ttid: younger,
            oid: Oid(2)
        }
        .into()]
    );
    // Not notified twice for the same oid.
    let outputs = h.packet(
        C1,
        2,
        AskCheckCurrentSerial {
            ttid: older,
            oid: Oid(2),
            serial: tid(2),
        },
    );
    assert!(outputs.is_empty(), "{outputs:?}");
    // The younger gives its lock back: the older takes it, the younger waits.
    let outputs = h.packet(
        C2,
        2,
        AskRelockObject {
            ttid: younger,
            oid: Oid(2),
        },
    );
    assert_eq!(on(&outputs, C1).first(), Some(&stored(None)));
    assert!(on(&outputs, C2).is_empty(), "{outputs:?}");
    assert_eq!(h.storage.write_locks(), vec![(Oid(2), older)]);
    // The older commits a new serial: the younger's relock conflicts and gets its data
    // back.
    vote_metadata(&mut h, C1, older, &[2]);
    lock(&mut h, older, tid(22));
    let outputs = h.master_sends(NotifyUnlockInformation { ttid: older });
    let text = format!("2 by {younger}");
    assert_eq!(
        sent_on(&outputs, C2),
        vec![(
            2,
            AnswerRelockObject {
                conflict: Some(RelockConflict {
                    serial: tid(2),
                    conflict_serial: tid(22),
                    data: Some(ObjectData {
                        compression: 0,
                        checksum: checksum(text.as_bytes()),
                        data: Bytes::copy_from_slice(text.as_bytes()),
                    }),
                }),
            }
            .into()
        )]
    );
    // The store was dropped: voting writes nothing for it.
    let outputs = h.packet(C2, 4, AskVoteTransaction { ttid: younger });
    assert_eq!(on(&outputs, C2), vec![AnswerVoteTransaction {}.into()]);
    assert_eq!(h.storage.backend().locked_transactions().unwrap(), vec![]);
}

#[test]
fn a_relock_without_contention_is_answered_at_once() {
    let mut h = booted();
    store(&mut h, C2, 1, 4, tid(4), tid(30));
    let outputs = h.packet(
        C2,
        2,
        AskRelockObject {
            ttid: tid(30),
            oid: Oid(4),
        },
    );
    assert_eq!(
        on(&outputs, C2),
        vec![AnswerRelockObject { conflict: None }.into()]
    );
    assert_eq!(h.storage.write_locks(), vec![(Oid(4), tid(30))]);
    // Unknown transaction: nothing to relock.
    let outputs = h.packet(
        C2,
        3,
        AskRelockObject {
            ttid: tid(77),
            oid: Oid(4),
        },
    );
    assert_eq!(
        on(&outputs, C2),
        vec![AnswerRelockObject { conflict: None }.into()]
    );
}

#[test]
fn lost_clients_lose_their_transactions() {
    let mut h = booted();
    store(&mut h, C1, 1, 2, tid(2), tid(20));
    store(&mut h, C1, 2, 4, tid(4), tid(30));
    vote_metadata(&mut h, C1, tid(30), &[4]);
    store(&mut h, C2, 1, 6, tid(6), tid(40));
    // Connection lost: only the non-voted transaction goes.
    h.feed(Input::Closed { conn: C1 });
    assert_eq!(
        h.storage.transactions(),
        vec![(tid(30), None, true), (tid(40), None, false)]
    );
    // The master says client 1 is gone: the voted one goes too.
    let outputs = h.master_sends(NotifyNodeInformation {
        timestamp: 2.0,
        node_list: vec![client(1, NodeState::Unknown)],
    });
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(h.storage.transactions(), vec![(tid(40), None, false)]);
    assert_eq!(h.storage.write_locks(), vec![(Oid(6), tid(40))]);
    assert!(h
        .storage
        .backend()
        .locked_transactions()
        .unwrap()
        .is_empty());
}

#[test]
fn undo_serials_follow_the_history_of_each_object() {
    let mut h = booted();
    // oid 2: tid(2) (creation), then tid(12), then tid(14) undoing tid(12), all
    // committed through 2PC.
    store(&mut h, C1, 1, 2, tid(2), tid(12));
    vote_metadata(&mut h, C1, tid(12), &[2]);
    lock(&mut h, tid(12), tid(12));
    h.master_sends(NotifyUnlockInformation { ttid: tid(12) });
    let undo = AskStoreObject {
        data_serial: Some(tid(2)),
        ..store_request(2, tid(12), "value 2", tid(14))
    };
    assert_eq!(on(&h.packet(C1, 2, undo), C1), vec![stored(None)]);
    vote_metadata(&mut h, C1, tid(14), &[2]);
    lock(&mut h, tid(14), tid(14));
    h.master_sends(NotifyUnlockInformation { ttid: tid(14) });
    let record = h
        .storage
        .backend()
        .object(Oid(2), Some(tid(14)), None)
        .unwrap()
        .unwrap();
    assert_eq!(record.data_serial, Some(tid(2)));
    // The data of tid(2) is reused, not the copy the client sent.
    assert_eq!(record.data, Some(crate::initialisation::data("value 2")));
    let ask = |h: &mut Harness, undone: Tid, ltid: Tid, oids: Vec<Oid>| {
        let outputs = h.packet(
            C1,
            9,
            AskObjectUndoSerial {
                ttid: tid(50),
                ltid,
                undone_tid: undone,
                oid_list: oids,
            },
        );
        on(&outputs, C1).remove(0)
    };
    let answer = |pairs: Vec<(Oid, Tid, Option<Tid>, bool)>| -> Packet {
        AnswerObjectUndoSerial {
            object_tid_dict: Dict(
                pairs
                    .into_iter()
                    .map(|(oid, current, undo, is_current)| {
                        (
                            oid,
                            UndoSerial {
                                current_serial: current,
                                undo_serial: undo,
                                is_current,
                            },
                        )
                    })
                    .collect(),
            ),
        }
        .into()
    };
    // Undoing tid(14) (current): back to tid(12)'s data.
    assert_eq!(
        ask(&mut h, tid(14), tid(15), vec![Oid(2)]),
        answer(vec![(Oid(2), tid(14), Some(tid(12)), true)])
    );
    // Undoing tid(12) is undoing what tid(14) undid already: tid(14) has tid(2)'s data,
    // so tid(12) is not current; the data before it is tid(2)'s, best found at tid(14).
    assert_eq!(
        ask(&mut h, tid(12), tid(15), vec![Oid(2)]),
        answer(vec![(Oid(2), tid(14), Some(tid(14)), false)])
    );
    // Undoing the creation of oid 4 (current); oid 6 was not touched by tid(4): skipped.
    assert_eq!(
        ask(&mut h, tid(4), tid(15), vec![Oid(4), Oid(6)]),
        answer(vec![(Oid(4), tid(4), None, true)])
    );
    // A snapshot that cannot see the undone transaction.
    let outputs = ask(&mut h, tid(14), tid(13), vec![Oid(2)]);
    assert!(matches!(outputs, Packet::Error(e) if e.code == ErrorCode::OidNotFound));
    // Undo of data that was packed away: refused.
    let undo = AskStoreObject {
        data_serial: Some(tid(1)),
        ..store_request(2, tid(14), "value 2", tid(60))
    };
    let outputs = h.packet(C1, 3, undo);
    assert!(
        matches!(on(&outputs, C1).as_slice(), [Packet::Error(e)] if e.code == ErrorCode::UndoPackError)
    );
}

#[test]
fn reads_and_range_queries_wait_for_the_unlock() {
    let mut h = booted();
    store(&mut h, C1, 1, 8, tid(8), tid(20));
    vote_metadata(&mut h, C1, tid(20), &[8]);
    lock(&mut h, tid(20), tid(22));
    // Another oid is not read-locked.
    assert_eq!(on(&read(&mut h, C2, 1, 6), C2).len(), 1);
    assert!(read(&mut h, C2, 2, 8).is_empty());
    let tids_from = |max: Tid| neo_protocol::AskTIDsFrom {
        min_tid: Tid(0),
        max_tid: max,
        length: 100,
        partition: 0,
    };
    // Below the locked TID: answered; at or above: delayed.
    assert_eq!(on(&h.packet(C2, 3, tids_from(tid(21))), C2).len(), 1);
    assert!(h.packet(C2, 4, tids_from(tid(22))).is_empty());
    let outputs = h.master_sends(NotifyUnlockInformation { ttid: tid(20) });
    let answers = sent_on(&outputs, C2);
    assert_eq!(
        answers.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
        vec![2, 4]
    );
    match &answers[1].1 {
        Packet::AnswerTIDsFrom(a) => assert_eq!(a.tid_list.last(), Some(&tid(22))),
        other => panic!("{other:?}"),
    }
    // A delayed read of a client that went away is dropped.
    store(&mut h, C1, 2, 8, tid(22), tid(30));
    vote_metadata(&mut h, C1, tid(30), &[8]);
    lock(&mut h, tid(30), tid(32));
    assert!(read(&mut h, C2, 5, 8).is_empty());
    h.feed(Input::Closed { conn: C2 });
    let outputs = h.master_sends(NotifyUnlockInformation { ttid: tid(30) });
    assert!(sent_on(&outputs, C2).is_empty());
}

#[test]
fn an_approved_pack_order_deletes_old_revisions_of_up_to_date_cells() {
    use neo_protocol::{
        AnswerPackOrders, AskPackOrders, NotifyPackCompleted, NotifyPackSigned, PackOrder,
    };
    let mut h = booted();
    // oid 2: tid(2), then tid(22) and tid(24) by 2PC; oid 4: tid(4), deleted at tid(24).
    for (ttid, stores) in [(tid(22), vec![(2, tid(2))]), (tid(24), vec![(2, tid(22))])] {
        for (oid, serial) in &stores {
            store(&mut h, C1, 1, *oid, *serial, ttid);
        }
        if ttid == tid(24) {
            let deletion = AskStoreObject {
                oid: Oid(4),
                serial: tid(4),
                compression: 0,
                checksum: [0; 20],
                data: Bytes::new(),
                data_serial: None,
                ttid,
            };
            assert_eq!(on(&h.packet(C1, 2, deletion), C1), vec![stored(None)]);
        }
        vote_metadata(&mut h, C1, ttid, &[2]);
        lock(&mut h, ttid, ttid);
        h.master_sends(NotifyUnlockInformation { ttid });
    }
    let master = h.master.unwrap();
    let outputs = h.master_sends(NotifyPackSigned {
        approved: vec![tid(30)],
        rejected: vec![],
    });
    assert_eq!(
        on(&outputs, master),
        vec![AskPackOrders { pack_id: Tid(1) }.into()]
    );
    let outputs = h.master_sends(AnswerPackOrders {
        pack_list: vec![PackOrder {
            pack_id: tid(30),
            approved: Some(true),
            partial: false,
            oids: None,
            pack_tid: tid(24),
        }],
    });
    assert_eq!(
        on(&outputs, master),
        vec![NotifyPackCompleted { pack_id: tid(30) }.into()]
    );
    let backend = h.storage.backend();
    let history = |oid: u64| {
        backend
            .object_history(Oid(oid), 0, 10)
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>()
    };
    assert_eq!(history(2), vec![tid(24)]);
    assert_eq!(
        history(4),
        vec![],
        "a deletion at the pack TID goes with its past"
    );
    assert_eq!(history(6), vec![tid(6)]);
    assert!(backend
        .pt_rows()
        .unwrap()
        .iter()
        .all(|r| r.pack == Some(tid(30))));
    // Nothing newer approved: no new request.
    let outputs = h.master_sends(NotifyPackSigned {
        approved: vec![tid(30)],
        rejected: vec![],
    });
    assert!(outputs.is_empty(), "{outputs:?}");
}

#[test]
fn an_undo_record_is_read_back_with_its_back_pointer() {
    let mut h = booted();
    // oid 2 was created at tid(2) with "value 2"; tid(12) changes it; the undo of tid(12)
    // is committed under TTID tid(20) at the final TID tid(22) (so the temporary rows
    // are renamed at unlock).
    store(&mut h, C1, 1, 2, tid(2), tid(12));
    vote_metadata(&mut h, C1, tid(12), &[2]);
    lock(&mut h, tid(12), tid(12));
    h.master_sends(NotifyUnlockInformation { ttid: tid(12) });
    let undo = AskStoreObject {
        data_serial: Some(tid(2)),
        ..store_request(2, tid(12), "value 2", tid(20))
    };
    assert_eq!(on(&h.packet(C1, 2, undo), C1), vec![stored(None)]);
    vote_metadata(&mut h, C1, tid(20), &[2]);
    lock(&mut h, tid(20), tid(22));
    h.master_sends(NotifyUnlockInformation { ttid: tid(20) });
    let expected = |serial: Tid, next_serial: Option<Tid>| -> Packet {
        AnswerObject {
            oid: Oid(2),
            serial,
            next_serial,
            compression: Some(0),
            checksum: crate::initialisation::data("value 2").checksum,
            data: Bytes::from_static(b"value 2"),
            data_serial: Some(tid(2)),
        }
        .into()
    };
    // Latest, exact and before: the back-pointer comes along, whoever asks.
    for (at, before) in [(None, None), (Some(tid(22)), None), (None, Some(tid(23)))] {
        let outputs = h.packet(
            C2,
            3,
            AskObject {
                oid: Oid(2),
                at,
                before,
            },
        );
        assert_eq!(on(&outputs, C2), vec![expected(tid(22), None)]);
    }
    // A restart reads it from the committed tables.
    h.now += 1.0;
    h.feed(Input::Timer);
    let disk = h.storage.backend().disk();
    drop(h);
    let reopened = MemoryBackend::open(disk).unwrap();
    let record = reopened
        .object(Oid(2), Some(tid(22)), None)
        .unwrap()
        .unwrap();
    assert_eq!(record.data_serial, Some(tid(2)));
}

#[test]
fn a_store_pointing_back_to_a_locked_transaction_waits_for_its_unlock() {
    let mut h = booted();
    // tid(12) changes oid 2 and is locked, but its unlock has not arrived yet when a
    // restore under TTID tid(20) points back to its record (the master answered the
    // finish to the client before the unlock reached this storage).
    store(&mut h, C1, 1, 2, tid(2), tid(12));
    vote_metadata(&mut h, C1, tid(12), &[2]);
    lock(&mut h, tid(12), tid(12));
    let back = AskStoreObject {
        data_serial: Some(tid(12)),
        ..store_request(2, tid(12), "anything", tid(20))
    };
    assert_eq!(on(&h.packet(C2, 2, back), C2), vec![]);
    // The unlock moves the record to the committed tables; the store then finds it.
    let outputs = h.master_sends(NotifyUnlockInformation { ttid: tid(12) });
    assert_eq!(on(&outputs, C2), vec![stored(None)]);
    vote_metadata(&mut h, C2, tid(20), &[2]);
    lock(&mut h, tid(20), tid(22));
    h.master_sends(NotifyUnlockInformation { ttid: tid(20) });
    let outputs = h.packet(
        C1,
        3,
        AskObject {
            oid: Oid(2),
            at: Some(tid(22)),
            before: None,
        },
    );
    let text = format!("2 by {}", tid(12));
    assert_eq!(
        on(&outputs, C1),
        vec![AnswerObject {
            oid: Oid(2),
            serial: tid(22),
            next_serial: None,
            compression: Some(0),
            checksum: checksum(text.as_bytes()),
            data: Bytes::copy_from_slice(text.as_bytes()),
            data_serial: Some(tid(12)),
        }
        .into()]
    );
}

#[test]
fn a_deferred_commit_is_made_before_exiting() {
    let mut h = booted();
    let (ttid, final_tid) = (tid(20), tid(22));
    store(&mut h, C1, 1, 2, tid(2), ttid);
    vote_metadata(&mut h, C1, ttid, &[2]);
    lock(&mut h, ttid, final_tid);
    h.master_sends(NotifyUnlockInformation { ttid });
    assert!(h.storage.deadline().is_some(), "commit deferred");
    let outputs = h.feed(Input::Shutdown);
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Exit { code: 0, .. })),
        "{outputs:?}"
    );
    let disk = h.storage.backend().disk();
    drop(h);
    let reopened = MemoryBackend::open(disk).unwrap();
    assert!(reopened.locked_transactions().unwrap().is_empty());
    assert_eq!(reopened.final_tid(ttid).unwrap(), Some(final_tid));
}

/// Votes of `ttid` on C1/C2 stored and answered, ready for the master's lock.
fn voted(h: &mut Harness, conn: ConnId, oid: u64, ttid: Tid) {
    assert_eq!(
        on(&store(h, conn, 1, oid, tid(oid), ttid), conn),
        vec![stored(None)]
    );
    vote_metadata(h, conn, ttid, &[oid]);
}

fn ask_lock(h: &mut Harness, msg_id: u32, ttid: Tid, tid: Tid) -> Vec<Output> {
    let conn = h.master.unwrap();
    h.feed(Input::Packet {
        conn,
        msg_id,
        packet: AskLockInformation {
            ttid,
            tid,
            pack: false,
        }
        .into(),
    })
}

#[test]
fn several_locks_are_answered_after_one_commit() {
    let (a, b) = (tid(40), tid(41));
    let (tid_a, tid_b) = (tid(42), tid(43));
    for kill_before_idle in [true, false] {
        let mut h = booted();
        voted(&mut h, C1, 2, a);
        voted(&mut h, C2, 3, b);
        let disk = h.storage.backend().disk();
        let commits = disk.commits();
        // The driver feeds both locks before it finds no event waiting: neither is
        // answered, nor committed, yet.
        assert!(ask_lock(&mut h, 100, a, tid_a).is_empty());
        assert!(ask_lock(&mut h, 101, b, tid_b).is_empty());
        let master = h.master.unwrap();
        assert_eq!(
            h.storage.held_answers(),
            vec![
                (master, 100, "AnswerInformationLocked"),
                (master, 101, "AnswerInformationLocked"),
            ]
        );
        assert_eq!(disk.commits(), commits);
        assert!(h.storage.wants_idle());
        if kill_before_idle {
            // Killed now: the master was told nothing, and the disk has the votes only.
            drop(h);
            let reopened = MemoryBackend::open(disk).unwrap();
            assert_eq!(
                reopened.locked_transactions().unwrap(),
                vec![(a, None), (b, None)]
            );
            continue;
        }
        // No event waits: one commit, then both answers.
        let outputs = h.feed(Input::Idle);
        assert_eq!(disk.commits(), commits + 1);
        assert_eq!(
            sent_on(&outputs, master),
            vec![
                (100, AnswerInformationLocked { ttid: a }.into()),
                (101, AnswerInformationLocked { ttid: b }.into()),
            ]
        );
        assert!(h.storage.held_answers().is_empty());
        drop(h);
        let reopened = MemoryBackend::open(disk).unwrap();
        assert_eq!(
            reopened.locked_transactions().unwrap(),
            vec![(a, Some(tid_a)), (b, Some(tid_b))]
        );
    }
}

#[test]
fn held_answers_go_out_before_anything_that_is_not_a_plain_request() {
    let mut h = booted();
    let (ttid, final_tid) = (tid(40), tid(42));
    voted(&mut h, C1, 2, ttid);
    let disk = h.storage.backend().disk();
    let commits = disk.commits();
    // A vote is held like a lock.
    assert!(ask_lock(&mut h, 100, ttid, final_tid).is_empty());
    // Loads are served meanwhile (they read only committed data).
    let load = h.feed(Input::Packet {
        conn: C2,
        msg_id: 7,
        packet: AskObject {
            oid: Oid(5),
            at: None,
            before: None,
        }
        .into(),
    });
    assert!(matches!(
        on(&load, C2).as_slice(),
        [Packet::AnswerObject(_)]
    ));
    assert_eq!(disk.commits(), commits);
    // The final TID of a transaction is said only once its lock is durable: the commit
    // and the lock's answer come first.
    let outputs = h.feed(Input::Packet {
        conn: C2,
        msg_id: 8,
        packet: AskFinalTID { ttid }.into(),
    });
    assert_eq!(disk.commits(), commits + 1);
    let master = h.master.unwrap();
    assert_eq!(
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Send { conn, packet, .. } => Some((*conn, packet.clone())),
                _ => None,
            })
            .collect::<Vec<_>>(),
        vec![
            (master, AnswerInformationLocked { ttid }.into()),
            (
                C2,
                AnswerFinalTID {
                    tid: Some(final_tid)
                }
                .into()
            ),
        ]
    );
}

#[test]
fn a_vote_is_answered_once_it_is_committed() {
    let mut h = booted();
    let ttid = tid(40);
    assert_eq!(
        on(&store(&mut h, C1, 1, 2, tid(2), ttid), C1),
        vec![stored(None)]
    );
    let outputs = h.feed(Input::Packet {
        conn: C1,
        msg_id: 9,
        packet: AskVoteTransaction { ttid }.into(),
    });
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(
        h.storage.held_answers(),
        vec![(C1, 9, "AnswerVoteTransaction")]
    );
    // The client's connection drops before the commit: nobody is left to read the
    // answer, which is forgotten.
    let outputs = h.feed(Input::Closed { conn: C1 });
    assert!(on(&outputs, C1).is_empty(), "{outputs:?}");
    assert!(h.storage.held_answers().is_empty());
}

fn ask_vote(h: &mut Harness, conn: ConnId, msg_id: u32, ttid: Tid) -> Vec<Output> {
    h.feed(Input::Packet {
        conn,
        msg_id,
        packet: AskVoteTransaction { ttid }.into(),
    })
}

#[test]
fn a_group_commit_waits_briefly_for_the_votes_of_other_transactions() {
    let (a, b) = (tid(40), tid(41));
    for b_votes in [true, false] {
        let mut h = booted();
        store(&mut h, C1, 1, 2, tid(2), a);
        store(&mut h, C2, 1, 3, tid(3), b);
        let disk = h.storage.backend().disk();
        let commits = disk.commits();
        // A votes while B, which stored here too, has not: the commit waits a little.
        assert!(ask_vote(&mut h, C1, 9, a).is_empty());
        assert!(!h.storage.wants_idle());
        let deadline = h.storage.deadline().expect("the wait is bounded");
        assert!(deadline > h.now && deadline < h.now + 0.01, "{deadline}");
        if b_votes {
            // B's vote comes: nothing is left to wait for, one commit answers both.
            assert!(ask_vote(&mut h, C2, 10, b).is_empty());
            assert!(h.storage.wants_idle());
            let outputs = h.feed(Input::Idle);
            assert_eq!(on(&outputs, C1), vec![AnswerVoteTransaction {}.into()]);
            assert_eq!(on(&outputs, C2), vec![AnswerVoteTransaction {}.into()]);
        } else {
            // B does not vote in time: A's answer goes at the deadline.
            h.now = deadline;
            let outputs = h.feed(Input::Timer);
            assert_eq!(on(&outputs, C1), vec![AnswerVoteTransaction {}.into()]);
        }
        assert_eq!(disk.commits(), commits + 1);
        assert!(h.storage.held_answers().is_empty());
    }
}

#[test]
fn a_lock_does_not_wait_for_transactions_that_already_voted() {
    // A migration keeps transactions voted and waiting for their turn to finish, in TID
    // order: their locks cannot come before this one is answered, so waiting for them
    // would only delay every commit by the group delay.
    let (a, b) = (tid(40), tid(41));
    let mut h = booted();
    voted(&mut h, C1, 2, a);
    voted(&mut h, C1, 3, b);
    let disk = h.storage.backend().disk();
    let commits = disk.commits();
    assert!(ask_lock(&mut h, 100, a, tid(42)).is_empty());
    assert!(h.storage.wants_idle(), "nothing can join this commit soon");
    let outputs = h.feed(Input::Idle);
    let master = h.master.unwrap();
    assert_eq!(
        sent_on(&outputs, master),
        vec![(100, AnswerInformationLocked { ttid: a }.into())]
    );
    assert_eq!(disk.commits(), commits + 1);
}
