//! The master driven by hand: a test plays storages, admins and other masters, feeding
//! packets and checking what the master sends. The simulator (`neo-sim`) runs it with
//! the real storages; these tests pin the exact packets of each step.

use neo_master::{Config, Master};
use neo_node::{Input, Node, Outbox, Output};
use neo_protocol::*;

const T0: f64 = 1_790_000_000.0;

fn addr(port: u16) -> Address {
    Address {
        host: Bytes::from_static(b"127.0.0.1"),
        port,
    }
}

fn config(autostart: Option<u32>) -> Config {
    Config {
        cluster: "test".into(),
        address: addr(10000),
        masters: vec![addr(10000)],
        partitions: 4,
        replicas: 1,
        autostart,
        nid: None,
        seed: 1,
    }
}

/// A master and the outputs of its last step.
struct Harness {
    master: Master,
    now: f64,
    out: Outbox,
    started: Vec<Output>,
}

impl Harness {
    fn new(config: Config) -> Harness {
        let mut h = Harness {
            master: Master::new(config),
            now: T0,
            out: Outbox::new(),
            started: Vec::new(),
        };
        h.started = h.step(Input::Start);
        h
    }

    fn step(&mut self, input: Input) -> Vec<Output> {
        self.now += 0.01;
        self.master.handle(self.now, input, &mut self.out);
        self.out.drain().collect()
    }

    fn packet(&mut self, conn: u64, msg_id: u32, packet: impl Into<Packet>) -> Vec<Output> {
        self.step(Input::Packet {
            conn,
            msg_id,
            packet: packet.into(),
        })
    }

    fn answer(&mut self, conn: u64, msg_id: u32, packet: impl Into<Packet>) -> Vec<Output> {
        self.step(Input::Answer {
            conn,
            msg_id,
            packet: packet.into(),
        })
    }

    /// A storage connects and identifies; returns the outputs.
    fn storage_joins(&mut self, conn: u64, port: u16, nid: Option<Nid>) -> Vec<Output> {
        self.step(Input::Accepted {
            conn,
            peer: "127.0.0.1:1".parse().unwrap(),
        });
        self.packet(
            conn,
            0,
            RequestIdentification {
                node_type: NodeType::Storage,
                nid,
                address: Some(addr(port)),
                cluster_name: Bytes::from_static(b"test"),
                id_timestamp: None,
                extra: Dict::new(),
            },
        )
    }
}

/// The packets sent on one connection, with their msg ids.
fn sent(outputs: &[Output], conn: u64) -> Vec<(u32, Packet)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                conn: c,
                msg_id,
                packet,
            } if *c == conn => Some((*msg_id, packet.clone())),
            _ => None,
        })
        .collect()
}

fn names(outputs: &[Output], conn: u64) -> Vec<&'static str> {
    sent(outputs, conn).iter().map(|(_, p)| p.name()).collect()
}

fn find<'a>(outputs: &'a [(u32, Packet)], name: &str) -> (u32, &'a Packet) {
    outputs
        .iter()
        .find(|(_, p)| p.name() == name)
        .map(|(id, p)| (*id, p))
        .unwrap_or_else(|| panic!("no {name} in {outputs:?}"))
}

#[test]
fn lone_master_waits_in_recovery() {
    let h = Harness::new(config(None));
    assert!(h.master.is_primary());
    assert_eq!(h.master.cluster_state(), ClusterState::Recovering);
    assert_eq!(h.master.nid(), Some(Nid::new(NodeType::Master, 1)));
}

#[test]
fn new_cluster_autostarts_and_runs() {
    let mut h = Harness::new(config(Some(2)));
    let out = h.storage_joins(1, 20001, None);
    assert_eq!(
        names(&out, 1),
        [
            "AcceptIdentification",
            "NotifyNodeInformation",
            "AskRecovery"
        ],
        "the new node is not part of the broadcast about itself"
    );
    let s1 = sent(&out, 1);
    let (_, accept) = find(&s1, "AcceptIdentification");
    let Packet::AcceptIdentification(accept) = accept else {
        unreachable!()
    };
    assert_eq!(accept.your_nid, Some(Nid::new(NodeType::Storage, 1)));
    let (_, nni) = find(&s1, "NotifyNodeInformation");
    let Packet::NotifyNodeInformation(nni) = nni else {
        unreachable!()
    };
    assert_eq!(
        nni.node_list[0].nid, accept.your_nid,
        "the peer comes first"
    );
    assert_eq!(nni.node_list[0].state, NodeState::Pending);
    let (recovery_id, _) = find(&s1, "AskRecovery");
    h.answer(
        1,
        recovery_id,
        AnswerRecovery {
            ptid: None,
            backup_tid: None,
            truncate_tid: None,
        },
    );
    assert_eq!(
        h.master.cluster_state(),
        ClusterState::Recovering,
        "autostart waits for 2"
    );

    let out = h.storage_joins(2, 20002, None);
    let s2 = sent(&out, 2);
    assert!(
        names(&out, 1).contains(&"NotifyNodeInformation"),
        "S1 hears of S2"
    );
    let (recovery_id, _) = find(&s2, "AskRecovery");
    let out = h.answer(
        2,
        recovery_id,
        AnswerRecovery {
            ptid: None,
            backup_tid: None,
            truncate_tid: None,
        },
    );
    assert_eq!(h.master.cluster_state(), ClusterState::Verifying);
    let pt = h.master.partition_table();
    assert_eq!(pt.ptid(), Some(1));
    assert_eq!(pt.np(), 4);
    for p in 0..4 {
        assert_eq!(
            pt.readable_cells(p).len(),
            2,
            "replicas 1: two copies of partition {p}"
        );
    }
    // Verification: the table, then the locked transactions.
    for conn in [1, 2] {
        let s = sent(&out, conn);
        let names: Vec<_> = s.iter().map(|(_, p)| p.name()).collect();
        assert!(names.contains(&"NotifyClusterInformation"));
        assert!(names.contains(&"SendPartitionTable"));
        let (id, _) = find(&s, "AskLockedTransactions");
        let out = h.answer(
            conn,
            id,
            AnswerLockedTransactions {
                tid_dict: Dict::new(),
            },
        );
        if conn == 2 {
            for conn in [1, 2] {
                let s = sent(&out, conn);
                let (id, _) = find(&s, "AskLastIDs");
                let tid = Tid(0x03ff_0000_0000_0000 + conn);
                h.answer(
                    conn,
                    id,
                    AnswerLastIDs {
                        last_tid: Some(tid),
                        last_oid: Some(Oid(7 * conn)),
                        first_tid: Tid(5),
                    },
                );
            }
        }
    }
    assert_eq!(h.master.cluster_state(), ClusterState::Running);
    assert_eq!(h.master.last_ids(), (Tid(0x03ff_0000_0000_0002), Oid(14)));
}

#[test]
fn wrong_cluster_name_is_a_protocol_error() {
    let mut h = Harness::new(config(None));
    h.step(Input::Accepted {
        conn: 1,
        peer: "127.0.0.1:1".parse().unwrap(),
    });
    let out = h.packet(
        1,
        0,
        RequestIdentification {
            node_type: NodeType::Storage,
            nid: None,
            address: Some(addr(20001)),
            cluster_name: Bytes::from_static(b"other"),
            id_timestamp: None,
            extra: Dict::new(),
        },
    );
    let s = sent(&out, 1);
    let Packet::Error(e) = &s[0].1 else {
        panic!("{s:?}")
    };
    assert_eq!(e.code, ErrorCode::ProtocolError);
    assert!(out.contains(&Output::Close { conn: 1 }));
}

#[test]
fn clients_are_refused_while_recovering() {
    let mut h = Harness::new(config(None));
    h.step(Input::Accepted {
        conn: 1,
        peer: "127.0.0.1:1".parse().unwrap(),
    });
    let out = h.packet(
        1,
        0,
        RequestIdentification {
            node_type: NodeType::Client,
            nid: None,
            address: None,
            cluster_name: Bytes::from_static(b"test"),
            id_timestamp: None,
            extra: Dict::new(),
        },
    );
    let s = sent(&out, 1);
    let Packet::Error(e) = &s[0].1 else {
        panic!("{s:?}")
    };
    assert_eq!(e.code, ErrorCode::NotReady);
}

#[test]
fn an_older_candidate_wins_the_election() {
    let mut h = Harness::new(Config {
        masters: vec![addr(10000), addr(10001)],
        ..config(None)
    });
    // We connected to the other master as soon as recovery began.
    let outgoing: Vec<u64> = h
        .started
        .iter()
        .filter_map(|o| match o {
            Output::Connect { conn, addr: a } if *a == addr(10001) => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(outgoing.len(), 1, "{:?}", h.started);
    // The other master, elected earlier, identifies to us: we step down and follow it.
    h.step(Input::Accepted {
        conn: 5,
        peer: "127.0.0.1:2".parse().unwrap(),
    });
    let out = h.packet(
        5,
        0,
        RequestIdentification {
            node_type: NodeType::Master,
            nid: None,
            address: Some(addr(10001)),
            cluster_name: Bytes::from_static(b"test"),
            id_timestamp: Some(T0 - 100.0),
            extra: Dict::new(),
        },
    );
    assert!(!h.master.is_primary());
    assert_eq!(h.master.primary_address(), Some(&addr(10001)));
    assert!(
        !out.contains(&Output::Close { conn: outgoing[0] }),
        "our election connection to it carries on as the primary connection: {out:?}"
    );
    assert!(out.contains(&Output::Close { conn: 5 }));
}

/// A RUNNING cluster of two storages (conns 1 and 2, both ready), replicas 1. The test
/// plays empty storages: every request the master sends them is answered.
fn running_cluster() -> Harness {
    let mut h = Harness::new(config(Some(2)));
    let mut pending: Vec<Output> = Vec::new();
    pending.extend(h.storage_joins(1, 20001, None));
    pending.extend(h.storage_joins(2, 20002, None));
    let mut guard = 0;
    while let Some(output) = pending.pop() {
        guard += 1;
        assert!(guard < 200, "no progress in {}", h.master.cluster_state());
        let Output::Send {
            conn,
            msg_id,
            packet,
        } = output
        else {
            continue;
        };
        let answer: Packet = match packet {
            Packet::AskRecovery(_) => AnswerRecovery {
                ptid: None,
                backup_tid: None,
                truncate_tid: None,
            }
            .into(),
            Packet::AskLockedTransactions(_) => AnswerLockedTransactions {
                tid_dict: Dict::new(),
            }
            .into(),
            Packet::AskLastIDs(_) => AnswerLastIDs {
                last_tid: Some(Tid(0x03ff_0000_0000_0000)),
                last_oid: Some(Oid(10)),
                first_tid: Tid(1),
            }
            .into(),
            Packet::AskPackOrders(_) => AnswerPackOrders {
                pack_list: Vec::new(),
            }
            .into(),
            _ => continue,
        };
        pending.extend(h.answer(conn, msg_id, answer));
    }
    assert_eq!(h.master.cluster_state(), ClusterState::Running);
    for conn in [1, 2] {
        h.packet(conn, 100, NotifyReady {});
    }
    h
}

fn client_joins(h: &mut Harness, conn: u64) -> Nid {
    h.step(Input::Accepted {
        conn,
        peer: "127.0.0.1:3".parse().unwrap(),
    });
    let out = h.packet(
        conn,
        0,
        RequestIdentification {
            node_type: NodeType::Client,
            nid: None,
            address: None,
            cluster_name: Bytes::from_static(b"test"),
            id_timestamp: None,
            extra: Dict::new(),
        },
    );
    let s = sent(&out, conn);
    let (_, accept) = find(&s, "AcceptIdentification");
    let Packet::AcceptIdentification(accept) = accept else {
        unreachable!()
    };
    assert!(names(&out, conn).contains(&"SendPartitionTable"));
    accept.your_nid.unwrap()
}

#[test]
fn a_commit_locks_invalidates_then_unlocks() {
    let mut h = running_cluster();
    client_joins(&mut h, 10);
    client_joins(&mut h, 11);
    let out = h.packet(10, 1, AskBeginTransaction { tid: None });
    let (_, begin) = &sent(&out, 10)[0];
    let Packet::AnswerBeginTransaction(begin) = begin else {
        panic!("{begin:?}")
    };
    let ttid = begin.ttid;
    assert!(
        ttid > Tid(0x03ff_0000_0000_0000),
        "TTIDs follow the last TID"
    );
    let out = h.packet(10, 2, AskNewOIDs { num_oids: 3 });
    let Packet::AnswerNewOIDs(oids) = &sent(&out, 10)[0].1 else {
        panic!()
    };
    assert_eq!(oids.oid_list, vec![Oid(11), Oid(12), Oid(13)]);
    let out = h.packet(
        10,
        3,
        AskFinishTransaction {
            ttid,
            oid_list: vec![Oid(11), Oid(12)],
            deleted: vec![],
            checked: vec![],
            pack: None,
        },
    );
    // Both storages hold every partition (replicas 1): both lock.
    let mut tid = Tid::ZERO;
    for conn in [1, 2] {
        let s = sent(&out, conn);
        let (id, lock) = find(&s, "AskLockInformation");
        let Packet::AskLockInformation(lock) = lock else {
            unreachable!()
        };
        assert_eq!(lock.ttid, ttid);
        assert_eq!(lock.tid.0 % 4, ttid.0 % 4, "final TID = TTID mod np");
        assert!(lock.tid >= ttid);
        tid = lock.tid;
        let out = h.answer(conn, id, AnswerInformationLocked { ttid });
        if conn == 1 {
            assert!(
                sent(&out, 10).is_empty(),
                "not committed before every storage locked"
            );
        } else {
            assert_eq!(
                sent(&out, 10),
                vec![(
                    3,
                    Packet::AnswerTransactionFinished(AnswerTransactionFinished { ttid, tid })
                )]
            );
            assert_eq!(
                names(&out, 11),
                ["InvalidateObjects"],
                "the other client is invalidated"
            );
            // Invalidations go before unlock orders.
            let position = |pred: &dyn Fn(&Output) -> bool| out.iter().position(pred).unwrap();
            let invalidate = position(&|o| matches!(o, Output::Send { conn: 11, .. }));
            let unlock = position(&|o| {
                matches!(
                    o,
                    Output::Send {
                        packet: Packet::NotifyUnlockInformation(_),
                        ..
                    }
                )
            });
            assert!(invalidate < unlock);
            for conn in [1, 2] {
                assert_eq!(names(&out, conn), ["NotifyUnlockInformation"]);
            }
        }
    }
    assert_eq!(h.master.last_ids().0, tid);
    // The next transaction gets a greater TID.
    let out = h.packet(11, 1, AskBeginTransaction { tid: None });
    let Packet::AnswerBeginTransaction(next) = &sent(&out, 11)[0].1 else {
        panic!()
    };
    assert!(next.ttid > tid);
}

#[test]
fn a_lost_client_aborts_its_unfinished_transaction_and_storages_waiting_are_told() {
    let mut h = running_cluster();
    client_joins(&mut h, 10);
    let out = h.packet(10, 1, AskBeginTransaction { tid: None });
    let Packet::AnswerBeginTransaction(begin) = &sent(&out, 10)[0].1 else {
        panic!()
    };
    // A storage replicating asks for the pending transactions.
    let out = h.packet(
        1,
        101,
        AskUnfinishedTransactions {
            offset_list: vec![0],
        },
    );
    let Packet::AnswerUnfinishedTransactions(u) = &sent(&out, 1)[0].1 else {
        panic!()
    };
    assert_eq!(u.ttid_list, vec![begin.ttid]);
    let out = h.step(Input::Closed { conn: 10 });
    assert!(sent(&out, 1)
        .iter()
        .any(|(_, p)| matches!(p, Packet::AbortTransaction(a) if a.ttid == begin.ttid)));
}

#[test]
fn a_storage_back_on_another_port_keeps_its_nid() {
    let mut h = running_cluster();
    h.step(Input::Closed { conn: 1 });
    let s1 = Nid::new(NodeType::Storage, 1);
    assert_eq!(h.master.nodes().state(s1), NodeState::Down);
    let out = h.storage_joins(7, 29999, Some(s1));
    let s = sent(&out, 7);
    let (_, accept) = find(&s, "AcceptIdentification");
    let Packet::AcceptIdentification(accept) = accept else {
        unreachable!()
    };
    assert_eq!(accept.your_nid, Some(s1));
    assert_eq!(h.master.nodes().state(s1), NodeState::Running);
    // Every node of the table it is sent is in the node list it was sent before.
    let (_, nni) = find(&s, "NotifyNodeInformation");
    let Packet::NotifyNodeInformation(nni) = nni else {
        unreachable!()
    };
    let (_, pt) = find(&s, "SendPartitionTable");
    let Packet::SendPartitionTable(pt) = pt else {
        unreachable!()
    };
    for row in &pt.row_list {
        for cell in row {
            assert!(
                nni.node_list.iter().any(|n| n.nid == Some(cell.nid)),
                "{cell:?} unknown to the storage"
            );
        }
    }
}

#[test]
fn a_pack_order_is_approved_signed_and_waited_for() {
    let mut h = running_cluster();
    client_joins(&mut h, 10);
    let out = h.packet(10, 1, AskBeginTransaction { tid: None });
    let Packet::AnswerBeginTransaction(begin) = &sent(&out, 10)[0].1 else {
        panic!()
    };
    let ttid = begin.ttid;
    let pack = PackRequest {
        oids: None,
        pack_tid: Tid(0x03ff_0000_0000_0000),
    };
    let out = h.packet(
        10,
        2,
        AskFinishTransaction {
            ttid,
            oid_list: vec![],
            deleted: vec![],
            checked: vec![],
            pack: Some(pack),
        },
    );
    let mut tid = Tid::ZERO;
    let mut last = Vec::new();
    for conn in [1, 2] {
        let s = sent(&out, conn);
        let (id, lock) = find(&s, "AskLockInformation");
        let Packet::AskLockInformation(lock) = lock else {
            unreachable!()
        };
        assert!(lock.pack, "no other order pending: approved at once");
        tid = lock.tid;
        last = h.answer(conn, id, AnswerInformationLocked { ttid });
    }
    for conn in [1, 2] {
        let s = sent(&last, conn);
        let (_, signed) = find(&s, "NotifyPackSigned");
        assert_eq!(
            signed,
            &Packet::NotifyPackSigned(NotifyPackSigned {
                approved: vec![tid],
                rejected: vec![]
            })
        );
    }
    // A storage asks for the order; a client waits for the pack.
    let out = h.packet(1, 200, AskPackOrders { pack_id: Tid(1) });
    let Packet::AnswerPackOrders(orders) = &sent(&out, 1)[0].1 else {
        panic!()
    };
    assert_eq!(orders.pack_list.len(), 1);
    assert_eq!(orders.pack_list[0].pack_id, tid);
    let out = h.packet(10, 3, WaitForPack { tid });
    assert!(sent(&out, 10).is_empty(), "not packed yet");
    let out = h.packet(1, 201, NotifyPackCompleted { pack_id: tid });
    assert!(
        sent(&out, 10).is_empty(),
        "one storage holding readable cells has not packed"
    );
    let out = h.packet(2, 202, NotifyPackCompleted { pack_id: tid });
    assert_eq!(
        sent(&out, 10),
        vec![(3, Packet::WaitedForPack(WaitedForPack {}))]
    );
}

#[test]
fn check_replicas_hands_each_partition_to_one_storage() {
    let mut h = running_cluster();
    h.step(Input::Accepted {
        conn: 30,
        peer: "127.0.0.1:4".parse().unwrap(),
    });
    h.packet(
        30,
        0,
        RequestIdentification {
            node_type: NodeType::Admin,
            nid: None,
            address: Some(addr(9999)),
            cluster_name: Bytes::from_static(b"test"),
            id_timestamp: None,
            extra: Dict::new(),
        },
    );
    let out = h.packet(
        30,
        1,
        CheckReplicas {
            partition_dict: Dict((0..4).map(|p| (p, None)).collect()),
            min_tid: Tid::ZERO,
            max_tid: None,
        },
    );
    let Packet::Error(ack) = &sent(&out, 30)[0].1 else {
        panic!()
    };
    assert_eq!(ack.code, ErrorCode::Ack);
    let mut checked = Vec::new();
    for conn in [1, 2] {
        for (_, p) in sent(&out, conn) {
            if let Packet::CheckPartition(c) = p {
                assert_eq!(
                    c.max_tid,
                    h.master.last_ids().0,
                    "up to the last TID by default"
                );
                assert_eq!(c.source.address, None);
                checked.push(c.partition);
            }
        }
    }
    checked.sort();
    assert_eq!(checked, vec![0, 1, 2, 3], "every partition once");
}

#[test]
fn read_only_clients_cannot_write_and_every_commit_is_announced() {
    let mut h = running_cluster();
    client_joins(&mut h, 10);
    h.step(Input::Accepted {
        conn: 11,
        peer: "127.0.0.1:5".parse().unwrap(),
    });
    h.packet(
        11,
        0,
        RequestIdentification {
            node_type: NodeType::Client,
            nid: None,
            address: None,
            cluster_name: Bytes::from_static(b"test"),
            id_timestamp: None,
            extra: Dict(vec![(Bytes::from_static(b"read_only"), Value::Bool(true))]),
        },
    );
    let out = h.packet(11, 1, AskBeginTransaction { tid: None });
    let Packet::Error(e) = &sent(&out, 11)[0].1 else {
        panic!("{out:?}")
    };
    assert_eq!(e.code, ErrorCode::ReadOnlyAccess);
    let out = h.packet(11, 2, AskLastTransaction {});
    assert!(
        matches!(sent(&out, 11)[0].1, Packet::AnswerLastTransaction(_)),
        "reads are fine"
    );
    // A transaction that only deletes (deleted oids travel as partitions) is still
    // announced to the other clients, with no oid.
    let out = h.packet(10, 1, AskBeginTransaction { tid: None });
    let Packet::AnswerBeginTransaction(begin) = &sent(&out, 10)[0].1 else {
        panic!()
    };
    let ttid = begin.ttid;
    let out = h.packet(
        10,
        2,
        AskFinishTransaction {
            ttid,
            oid_list: vec![],
            deleted: vec![1],
            checked: vec![],
            pack: None,
        },
    );
    let mut last = Vec::new();
    for conn in [1, 2] {
        let s = sent(&out, conn);
        let (id, _) = find(&s, "AskLockInformation");
        last = h.answer(conn, id, AnswerInformationLocked { ttid });
    }
    let s = sent(&last, 11);
    let (_, inv) = find(&s, "InvalidateObjects");
    let Packet::InvalidateObjects(inv) = inv else {
        unreachable!()
    };
    assert!(inv.oid_list.is_empty());
}

#[test]
fn explicit_tids_may_overlap_when_they_increase_and_commit_in_tid_order() {
    let mut h = running_cluster();
    client_joins(&mut h, 10);
    client_joins(&mut h, 11);
    let base = 0x03ff_0000_0000_0000u64;
    let begin = |h: &mut Harness, conn: u64, msg_id: u32, tid: Option<Tid>| -> Packet {
        let out = h.packet(conn, msg_id, AskBeginTransaction { tid });
        match sent(&out, conn).first() {
            Some((_, packet)) => packet.clone(),
            None => panic!("no answer to a begin: {out:?}"),
        }
    };
    let error = |packet: Packet| -> String {
        match packet {
            Packet::Error(e) => String::from_utf8_lossy(&e.message).into_owned(),
            other => panic!("expected an error, got {other:?}"),
        }
    };
    // A refused begin is a protocol error that closes the client's connection (as
    // NEO/py): each refusal below comes from a client of its own.
    for conn in [12, 13, 14] {
        client_joins(&mut h, conn);
    }
    // Not after the last committed TID: NEO/py's message.
    let refused = begin(&mut h, 12, 1, Some(Tid(base)));
    assert_eq!(
        error(refused),
        "new TID must be greater than the last committed one"
    );
    let (t1, t2) = (Tid(base + 100), Tid(base + 200));
    assert!(matches!(
        begin(&mut h, 10, 2, Some(t1)),
        Packet::AnswerBeginTransaction(_)
    ));
    assert!(matches!(
        begin(&mut h, 10, 3, Some(t2)),
        Packet::AnswerBeginTransaction(_)
    ));
    // Below a pending explicit TID, or without a TID while they are open: refused.
    let refused = begin(&mut h, 13, 1, Some(Tid(base + 150)));
    assert!(error(refused).contains("pending transactions"));
    let refused = begin(&mut h, 14, 1, None);
    assert!(error(refused).contains("There can't be concurrent transactions"));

    // The second finishes first: it is locked but waits for the first to commit.
    let finish = |h: &mut Harness, msg_id: u32, ttid: Tid| -> Vec<Output> {
        h.packet(
            10,
            msg_id,
            AskFinishTransaction {
                ttid,
                oid_list: vec![Oid(1)],
                deleted: vec![],
                checked: vec![],
                pack: None,
            },
        )
    };
    let mut locks = Vec::new();
    for (msg_id, ttid) in [(5, t2), (6, t1)] {
        let out = finish(&mut h, msg_id, ttid);
        for conn in [1, 2] {
            let s = sent(&out, conn);
            let (id, lock) = find(&s, "AskLockInformation");
            let Packet::AskLockInformation(lock) = lock else {
                unreachable!()
            };
            assert_eq!(lock.tid, ttid, "an explicit TID is the final TID");
            locks.push((conn, id, ttid));
        }
    }
    let mut finished = Vec::new();
    for (conn, id, ttid) in locks {
        let out = h.answer(conn, id, AnswerInformationLocked { ttid });
        for (_, packet) in sent(&out, 10) {
            if let Packet::AnswerTransactionFinished(done) = packet {
                finished.push(done.tid);
            }
        }
    }
    assert_eq!(finished, vec![t1, t2], "committed in TID order");
    assert_eq!(h.master.last_ids().0, t2);
}
