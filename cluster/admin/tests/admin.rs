//! The admin node driven input by input: bootstrap to the primary master, local answers,
//! relay of neoctl's requests and of the master's answers, monitoring, and (with
//! `NEO_PY_DIR`) the admin on real sockets between a NEO/py master and NEO/py's neoctl.

#[path = "admin/harness.rs"]
mod harness;
#[path = "admin/neopy.rs"]
mod neopy;

use harness::*;
use neo_admin::{Config, NOT_CONNECTED_MESSAGE};
use neo_node::{Input, Node, Output};
use neo_protocol::*;

mod bootstrap {
    use super::*;

    #[test]
    fn identifies_as_admin_then_asks_the_cluster_state() {
        let mut h = Harness::new(config_with_backup(&[10000]));
        let out = h.step(Input::Start);
        let master = expect_connect(&out, &addr(10000));
        let out = h.step(Input::Connected { conn: master });
        let (msg_id, packet) = expect_send(&out, master);
        let Packet::RequestIdentification(p) = packet else {
            panic!("not an identification: {packet:?}");
        };
        assert_eq!(p.node_type, NodeType::Admin);
        assert_eq!(p.nid, None);
        assert_eq!(p.address, Some(addr(9999)));
        assert_eq!(&p.cluster_name[..], b"test");
        assert_eq!(p.id_timestamp, None);
        assert_eq!(
            p.extra,
            Dict(vec![(
                Bytes::from_static(b"backup"),
                Value::Array(vec![Value::Bin(Bytes::from_static(b"backup1"))])
            )])
        );
        let out = h.step(Input::Answer {
            conn: master,
            msg_id,
            packet: accept(admin_nid(1)),
        });
        let (_, packet) = expect_send(&out, master);
        assert_eq!(packet, Packet::AskClusterState(AskClusterState {}));
        assert!(h.admin.is_connected());
        assert_eq!(h.admin.nid(), Some(admin_nid(1)));
    }

    #[test]
    fn retries_the_same_master_no_sooner_than_a_second_later() {
        let mut h = Harness::new(config(&[10000]));
        let out = h.step(Input::Start);
        let conn = expect_connect(&out, &addr(10000));
        h.now += 0.2;
        let out = h.step(Input::ConnectFailed { conn });
        assert!(out.is_empty(), "no new attempt at once: {out:?}");
        assert_eq!(h.admin.deadline(), Some(1001.0));
        h.now = 1001.0;
        let out = h.step(Input::Timer);
        expect_connect(&out, &addr(10000));
    }

    #[test]
    fn tries_the_masters_in_turn_and_follows_redirections() {
        let mut h = Harness::new(config(&[10000, 10001]));
        let out = h.step(Input::Start);
        let first = expect_connect(&out, &addr(10000));
        let out = h.step(Input::ConnectFailed { conn: first });
        let second = expect_connect(&out, &addr(10001));
        h.step(Input::Connected { conn: second });
        // A secondary names the primary, a third master the admin did not know.
        let out = h.step(Input::Packet {
            conn: second,
            msg_id: 0,
            packet: Packet::NotPrimaryMaster(NotPrimaryMaster {
                primary: Some(2),
                known_master_list: vec![addr(10000), addr(10001), addr(10002)],
            }),
        });
        assert!(out.contains(&Output::Close { conn: second }));
        let third = expect_connect(&out, &addr(10002));
        let out = h.step(Input::Connected { conn: third });
        let (msg_id, _) = expect_send(&out, third);
        h.step(Input::Answer {
            conn: third,
            msg_id,
            packet: accept(admin_nid(1)),
        });
        assert!(h.admin.is_connected());
    }

    #[test]
    fn a_refused_identification_moves_on() {
        let mut h = Harness::new(config(&[10000, 10001]));
        let out = h.step(Input::Start);
        let conn = expect_connect(&out, &addr(10000));
        let out = h.step(Input::Connected { conn });
        let (msg_id, _) = expect_send(&out, conn);
        let out = h.step(Input::Answer {
            conn,
            msg_id,
            packet: Packet::error(ErrorCode::NotReady, "not ready"),
        });
        assert!(out.contains(&Output::Close { conn }));
        expect_connect(&out, &addr(10001));
        assert!(!h.admin.is_connected());
    }

    #[test]
    fn master_loss_reconnects_unless_the_cluster_is_stopping() {
        let (mut h, master) = connected();
        h.now += 5.0;
        let out = h.step(Input::Closed { conn: master });
        expect_connect(&out, &addr(10000));
        assert_eq!(h.admin.cluster_state(), None);

        let (mut h, master) = connected();
        h.step(notify(
            master,
            NotifyClusterInformation {
                state: ClusterState::Stopping,
            },
        ));
        let out = h.step(Input::Closed { conn: master });
        assert!(
            matches!(&out[..], [Output::Exit { code: 0, .. }]),
            "exit 0 when STOPPING: {out:?}"
        );
    }
}

mod requests {
    use super::*;

    #[test]
    fn not_ready_without_a_master() {
        let mut h = Harness::new(config(&[10000]));
        h.step(Input::Start);
        let ctl = h.accept();
        let out = h.step(Input::Packet {
            conn: ctl,
            msg_id: 3,
            packet: Packet::AskNodeList(AskNodeList { node_type: None }),
        });
        assert_eq!(
            out,
            vec![
                Output::Send {
                    conn: ctl,
                    msg_id: 3,
                    packet: Packet::error(ErrorCode::NotReady, NOT_CONNECTED_MESSAGE),
                },
                Output::Close { conn: ctl },
            ]
        );
    }

    #[test]
    fn relays_a_request_and_the_answer_back_under_the_request_msg_id() {
        let (mut h, master) = connected();
        let ctl = h.accept();
        let other = h.accept();
        let out = h.step(Input::Packet {
            conn: ctl,
            msg_id: 7,
            packet: Packet::SetClusterState(SetClusterState {
                state: ClusterState::Verifying,
            }),
        });
        let (relayed, packet) = expect_send(&out, master);
        assert_eq!(
            packet,
            Packet::SetClusterState(SetClusterState {
                state: ClusterState::Verifying
            })
        );
        // A second requester, same msg_id on its own connection.
        let out = h.step(Input::Packet {
            conn: other,
            msg_id: 7,
            packet: Packet::AskLastIDs(AskLastIDs {}),
        });
        let (relayed_other, _) = expect_send(&out, master);
        assert_ne!(relayed, relayed_other);
        let out = h.step(Input::Answer {
            conn: master,
            msg_id: relayed_other,
            packet: Packet::AnswerLastIDs(AnswerLastIDs {
                last_tid: Some(Tid(5)),
                last_oid: Some(Oid(6)),
                first_tid: Tid(1),
            }),
        });
        assert_eq!(
            out,
            vec![Output::Send {
                conn: other,
                msg_id: 7,
                packet: Packet::AnswerLastIDs(AnswerLastIDs {
                    last_tid: Some(Tid(5)),
                    last_oid: Some(Oid(6)),
                    first_tid: Tid(1),
                }),
            }]
        );
        let ack = Packet::error(ErrorCode::Ack, "Cluster state changed");
        let out = h.step(Input::Answer {
            conn: master,
            msg_id: relayed,
            packet: ack.clone(),
        });
        assert_eq!(
            out,
            vec![Output::Send {
                conn: ctl,
                msg_id: 7,
                packet: ack
            }]
        );
    }

    #[test]
    fn a_protocol_error_from_the_master_closes_the_requester() {
        let (mut h, master) = connected();
        let ctl = h.accept();
        let out = h.step(Input::Packet {
            conn: ctl,
            msg_id: 1,
            packet: Packet::Truncate(Truncate { tid: Tid(1) }),
        });
        let (relayed, _) = expect_send(&out, master);
        let error = Packet::error(ErrorCode::ProtocolError, "bad");
        let out = h.step(Input::Answer {
            conn: master,
            msg_id: relayed,
            packet: error.clone(),
        });
        assert_eq!(
            out,
            vec![
                Output::Send {
                    conn: ctl,
                    msg_id: 1,
                    packet: error
                },
                Output::Close { conn: ctl }
            ]
        );
    }

    #[test]
    fn master_loss_fails_the_relayed_requests() {
        let (mut h, master) = connected();
        let ctl = h.accept();
        h.step(Input::Packet {
            conn: ctl,
            msg_id: 4,
            packet: Packet::AddPendingNodes(AddPendingNodes { nid_list: vec![] }),
        });
        let out = h.step(Input::Closed { conn: master });
        assert_eq!(
            out[..2],
            [
                Output::Send {
                    conn: ctl,
                    msg_id: 4,
                    packet: Packet::error(ErrorCode::ProtocolError, "connection to master lost"),
                },
                Output::Close { conn: ctl },
            ]
        );
    }

    #[test]
    fn an_answer_for_a_closed_requester_is_dropped() {
        let (mut h, master) = connected();
        let ctl = h.accept();
        let out = h.step(Input::Packet {
            conn: ctl,
            msg_id: 0,
            packet: Packet::AskRecovery(AskRecovery {}),
        });
        let (relayed, _) = expect_send(&out, master);
        h.step(Input::Closed { conn: ctl });
        let out = h.step(Input::Answer {
            conn: master,
            msg_id: relayed,
            packet: Packet::AnswerRecovery(AnswerRecovery {
                ptid: None,
                backup_tid: None,
                truncate_tid: None,
            }),
        });
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn flush_log_goes_to_the_master_and_to_our_log() {
        let (mut h, master) = connected();
        let ctl = h.accept();
        let out = h.step(Input::Packet {
            conn: ctl,
            msg_id: 0,
            packet: Packet::FlushLog(FlushLog {}),
        });
        let (_, packet) = expect_send(&out, master);
        assert_eq!(packet, Packet::FlushLog(FlushLog {}));
        assert!(h.admin.take_flush_log());
        assert!(!h.admin.take_flush_log());
    }
}

mod cluster_view {
    use super::*;

    #[test]
    fn notifications_are_applied_and_answered_from() {
        let (mut h, master) = connected();
        running_two_storages(&mut h, master);
        let ctl = h.accept();
        let answer = h.ask(
            ctl,
            AskNodeList {
                node_type: Some(NodeType::Storage),
            },
        );
        let Packet::AnswerNodeList(list) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(list.node_list.len(), 2);
        assert_eq!(
            h.ask(ctl, AskClusterState {}),
            Packet::AnswerClusterState(AnswerClusterState {
                state: Some(ClusterState::Running)
            })
        );
        assert_eq!(
            h.ask(ctl, AskPrimary {}),
            Packet::AnswerPrimary(AnswerPrimary {
                primary_nid: master_nid(1)
            })
        );
        // S2 goes down: its cells become out of date.
        h.step(notify(
            master,
            NotifyNodeInformation {
                timestamp: 3.0,
                node_list: vec![storage(2, NodeState::Down)],
            },
        ));
        h.step(notify(
            master,
            NotifyPartitionChanges {
                ptid: 2,
                num_replicas: 1,
                cell_list: vec![
                    CellChange {
                        partition: 0,
                        nid: storage_nid(2),
                        state: CellState::OutOfDate,
                    },
                    CellChange {
                        partition: 1,
                        nid: storage_nid(2),
                        state: CellState::Discarded,
                    },
                ],
            },
        ));
        assert_eq!(
            h.ask(
                ctl,
                AskPartitionList {
                    min_offset: 0,
                    max_offset: 0,
                    nid: None
                }
            ),
            Packet::AnswerPartitionList(AnswerPartitionList {
                ptid: Some(2),
                num_replicas: 1,
                row_list: vec![
                    vec![cell(1, CellState::UpToDate), cell(2, CellState::OutOfDate)],
                    vec![cell(1, CellState::UpToDate)],
                ],
            })
        );
        assert_eq!(
            h.ask(
                ctl,
                AskPartitionList {
                    min_offset: 1,
                    max_offset: 2,
                    nid: Some(storage_nid(1))
                }
            ),
            Packet::AnswerPartitionList(AnswerPartitionList {
                ptid: Some(2),
                num_replicas: 1,
                row_list: vec![vec![cell(1, CellState::UpToDate)]],
            })
        );
    }

    #[test]
    fn bad_offsets_are_a_protocol_error() {
        let (mut h, master) = connected();
        running_two_storages(&mut h, master);
        let ctl = h.accept();
        let out = h.step(Input::Packet {
            conn: ctl,
            msg_id: 2,
            packet: Packet::AskPartitionList(AskPartitionList {
                min_offset: 1,
                max_offset: 5,
                nid: None,
            }),
        });
        assert_eq!(
            out,
            vec![
                Output::Send {
                    conn: ctl,
                    msg_id: 2,
                    packet: Packet::error(
                        ErrorCode::ProtocolError,
                        "invalid partition table offset"
                    ),
                },
                Output::Close { conn: ctl },
            ]
        );
    }
}

mod monitoring {
    use super::*;

    /// 2026-11-21 19:57:15.174617, the TID of tools.md's examples.
    const LTID: Tid = Tid(0x040d_2bed_40be_baa4);

    #[test]
    fn healthy_cluster() {
        let (mut h, master) = connected();
        running_two_storages(&mut h, master);
        let (warning, problem, text) = h.summary(master, LTID);
        assert_eq!((warning, problem), (vec![], vec![]));
        assert_eq!(
            text,
            "RUNNING; UP_TO_DATE=4; ltid=040d2bed40bebaa4 (2026-11-21 19:57:15.174617)"
        );
    }

    #[test]
    fn degraded_table_is_a_problem() {
        let (mut h, master) = connected();
        running_two_storages(&mut h, master);
        h.step(notify(
            master,
            NotifyNodeInformation {
                timestamp: 3.0,
                node_list: vec![storage(2, NodeState::Down)],
            },
        ));
        h.step(notify(
            master,
            NotifyPartitionChanges {
                ptid: 2,
                num_replicas: 1,
                cell_list: vec![
                    CellChange {
                        partition: 0,
                        nid: storage_nid(2),
                        state: CellState::OutOfDate,
                    },
                    CellChange {
                        partition: 1,
                        nid: storage_nid(2),
                        state: CellState::OutOfDate,
                    },
                ],
            },
        ));
        let (warning, problem, text) = h.summary(master, LTID);
        assert_eq!((warning, problem), (vec![], vec![None]));
        assert_eq!(
            text,
            "RUNNING; OUT_OF_DATE=2, UP_TO_DATE=2; DOWN=1; ltid=040d2bed40bebaa4 (2026-11-21 19:57:15.174617)"
        );
        assert_eq!(h.admin.monitor().severity(false), 2);
    }

    #[test]
    fn out_of_date_cells_of_running_nodes_are_a_warning() {
        let (mut h, master) = connected();
        running_two_storages(&mut h, master);
        h.step(notify(
            master,
            NotifyPartitionChanges {
                ptid: 2,
                num_replicas: 1,
                cell_list: vec![CellChange {
                    partition: 1,
                    nid: storage_nid(2),
                    state: CellState::Feeding,
                }],
            },
        ));
        let (warning, problem, text) = h.summary(master, LTID);
        assert_eq!((warning, problem), (vec![None], vec![]));
        assert!(
            text.starts_with("RUNNING; UP_TO_DATE=3, FEEDING=1; ltid="),
            "{text}"
        );
    }

    #[test]
    fn before_start_no_tid_is_asked() {
        let (mut h, master) = connected();
        h.step(Input::Answer {
            conn: master,
            msg_id: 1,
            packet: Packet::AnswerClusterState(AnswerClusterState {
                state: Some(ClusterState::Recovering),
            }),
        });
        h.step(notify(
            master,
            SendPartitionTable {
                ptid: None,
                num_replicas: 0,
                row_list: vec![vec![], vec![]],
            },
        ));
        let ctl = h.accept();
        let answer = h.ask(ctl, AskMonitorInformation {});
        assert_eq!(
            answer,
            Packet::AnswerMonitorInformation(AnswerMonitorInformation {
                warning: vec![],
                problem: vec![None],
                summary: Bytes::from_static(b"RECOVERING"),
            })
        );
    }

    #[test]
    fn a_master_that_does_not_answer_in_time_is_dropped() {
        let (mut h, master) = connected();
        running_two_storages(&mut h, master);
        let ctl = h.accept();
        h.step(Input::Packet {
            conn: ctl,
            msg_id: 0,
            packet: Packet::AskMonitorInformation(AskMonitorInformation {}),
        });
        let deadline = h.admin.deadline().expect("a monitoring timeout");
        assert!(deadline <= h.now + 60.0);
        h.now = deadline;
        let out = h.step(Input::Timer);
        assert!(out.contains(&Output::Close { conn: master }), "{out:?}");
        // The waiting neoctl gets the "not connected" summary.
        assert!(out.contains(&Output::Send {
            conn: ctl,
            msg_id: 0,
            packet: Packet::AnswerMonitorInformation(AnswerMonitorInformation {
                warning: vec![],
                problem: vec![None],
                summary: Bytes::from_static(NOT_CONNECTED_MESSAGE.as_bytes()),
            }),
        }));
        expect_connect(&out, &addr(10000));
    }

    #[test]
    fn backup_clusters_report_and_lag() {
        let (mut h, master) = connected_with(config_with_backup(&[10000]));
        running_two_storages(&mut h, master);
        let backup = h.accept();
        // Refusals first: not an admin, unknown name.
        let refused = h.step(Input::Packet {
            conn: backup,
            msg_id: 0,
            packet: identification(NodeType::Client, "backup1"),
        });
        assert_eq!(
            refused[0],
            Output::Send {
                conn: backup,
                msg_id: 0,
                packet: Packet::error(ErrorCode::ProtocolError, "reject non-admin node"),
            }
        );
        let backup = h.accept();
        let refused = h.step(Input::Packet {
            conn: backup,
            msg_id: 0,
            packet: identification(NodeType::Admin, "other"),
        });
        assert_eq!(
            refused[0],
            Output::Send {
                conn: backup,
                msg_id: 0,
                packet: Packet::error(ErrorCode::ProtocolError, "unknown backup cluster 'other'"),
            }
        );
        let backup = h.accept();
        let out = h.step(Input::Packet {
            conn: backup,
            msg_id: 0,
            packet: identification(NodeType::Admin, "backup1"),
        });
        assert!(matches!(
            expect_send(&out, backup).1,
            Packet::AcceptIdentification(_)
        ));
        let info = Dict(vec![
            (
                Bytes::from_static(b"cluster_state"),
                Value::Enum(EnumValue::ClusterState(ClusterState::BackingUp)),
            ),
            (Bytes::from_static(b"down"), Value::Int(0)),
            (
                Bytes::from_static(b"pt_summary"),
                Value::Map(vec![(
                    Value::Enum(EnumValue::CellState(CellState::UpToDate)),
                    Value::Int(4),
                )]),
            ),
        ]);
        // The report starts a round that asks both clusters their last TIDs.
        let out = h.step(notify(backup, NotifyMonitorInformation { info }));
        let asked_master = sends(&out, master);
        let asked_backup = sends(&out, backup);
        assert_eq!(asked_master.len(), 1, "{out:?}");
        assert_eq!(
            asked_backup.len(),
            2,
            "AskRecovery and AskLastTransaction: {out:?}"
        );
        let ctl = h.accept();
        let out = h.step(Input::Packet {
            conn: ctl,
            msg_id: 9,
            packet: Packet::AskMonitorInformation(AskMonitorInformation {}),
        });
        assert!(out.is_empty(), "the round in progress answers: {out:?}");
        // Upstream at 19:57:00, the backup 30 s behind (exact in TID units).
        let upstream_tid = Tid(0x040d_2bed_0000_0000);
        let backup_tid = Tid(0x040d_2bec_8000_0000);
        h.step(Input::Answer {
            conn: backup,
            msg_id: asked_backup[0].0,
            packet: Packet::AnswerRecovery(AnswerRecovery {
                ptid: Some(1),
                backup_tid: Some(backup_tid),
                truncate_tid: None,
            }),
        });
        h.step(Input::Answer {
            conn: backup,
            msg_id: asked_backup[1].0,
            packet: Packet::AnswerLastTransaction(AnswerLastTransaction { tid: upstream_tid }),
        });
        let out = h.step(Input::Answer {
            conn: master,
            msg_id: asked_master[0].0,
            packet: Packet::AnswerLastTransaction(AnswerLastTransaction { tid: upstream_tid }),
        });
        let (msg_id, packet) = expect_send(&out, ctl);
        assert_eq!(msg_id, 9);
        assert_eq!(
            packet,
            Packet::AnswerMonitorInformation(AnswerMonitorInformation {
                warning: vec![Some(Bytes::from_static(b"backup1"))],
                problem: vec![],
                summary: Bytes::from(
                    "RUNNING; UP_TO_DATE=4; ltid=040d2bed00000000 (2026-11-21 19:57:00)\n\
                     \n\
                     backup1\n    \
                     BACKINGUP; UP_TO_DATE=4; ltid=040d2bec80000000; lag=30.0"
                        .to_string()
                ),
            })
        );
    }

    fn identification(node_type: NodeType, name: &str) -> Packet {
        Packet::RequestIdentification(RequestIdentification {
            node_type,
            nid: None,
            address: None,
            cluster_name: Bytes::from(name.to_string()),
            id_timestamp: None,
            extra: Dict::new(),
        })
    }
}

mod upstream {
    use super::*;

    #[test]
    fn a_backup_admin_reports_to_the_upstream_admin() {
        let (mut h, master) = connected();
        running_two_storages(&mut h, master);
        let out = h.step(notify(
            master,
            NotifyUpstreamAdmin {
                address: addr(30000),
            },
        ));
        let upstream = expect_connect(&out, &addr(30000));
        let out = h.step(Input::Connected { conn: upstream });
        let (msg_id, packet) = expect_send(&out, upstream);
        let Packet::RequestIdentification(p) = packet else {
            panic!("{packet:?}")
        };
        assert_eq!(
            (p.node_type, &p.cluster_name[..]),
            (NodeType::Admin, &b"test"[..])
        );
        let out = h.step(Input::Answer {
            conn: upstream,
            msg_id,
            packet: Packet::AcceptIdentification(AcceptIdentification {
                node_type: NodeType::Admin,
                nid: None,
                your_nid: None,
            }),
        });
        let (_, packet) = expect_send(&out, upstream);
        let Packet::NotifyMonitorInformation(p) = packet else {
            panic!("{packet:?}")
        };
        assert_eq!(p.info.0.len(), 3);
        // Its requests are relayed to our master like neoctl's.
        let out = h.step(Input::Packet {
            conn: upstream,
            msg_id: 5,
            packet: Packet::AskLastTransaction(AskLastTransaction {}),
        });
        let (relayed, _) = expect_send(&out, master);
        let out = h.step(Input::Answer {
            conn: master,
            msg_id: relayed,
            packet: Packet::AnswerLastTransaction(AnswerLastTransaction { tid: Tid(1) }),
        });
        assert_eq!(expect_send(&out, upstream).0, 5);
        // A change is pushed.
        let out = h.step(notify(
            master,
            NotifyClusterInformation {
                state: ClusterState::Stopping,
            },
        ));
        let (_, packet) = expect_send(&out, upstream);
        assert!(matches!(packet, Packet::NotifyMonitorInformation(_)));
    }
}

/// A config with masters on these ports, listening on 9999.
fn config(master_ports: &[u16]) -> Config {
    Config {
        cluster: "test".into(),
        address: addr(9999),
        masters: master_ports.iter().map(|p| addr(*p)).collect(),
        nid: None,
        monitor_maxlag: 0.0,
        monitor_backup: vec![],
    }
}

/// The same, monitoring the backup cluster "backup1".
fn config_with_backup(master_ports: &[u16]) -> Config {
    Config {
        monitor_backup: vec!["backup1".into()],
        ..config(master_ports)
    }
}

/// An admin identified to master M1 at port 10000, its AskClusterState not answered yet.
fn connected() -> (Harness, u64) {
    connected_with(config(&[10000]))
}

fn connected_with(config: Config) -> (Harness, u64) {
    let mut h = Harness::new(config);
    let out = h.step(Input::Start);
    let master = expect_connect(&out, &addr(10000));
    let out = h.step(Input::Connected { conn: master });
    let (msg_id, _) = expect_send(&out, master);
    h.step(Input::Answer {
        conn: master,
        msg_id,
        packet: accept(admin_nid(1)),
    });
    (h, master)
}

/// The master's usual first messages for a RUNNING cluster with S1 and S2, two
/// partitions, each on both nodes.
fn running_two_storages(h: &mut Harness, master: u64) {
    h.step(notify(
        master,
        NotifyNodeInformation {
            timestamp: 1.0,
            node_list: vec![
                NodeInfo {
                    node_type: NodeType::Admin,
                    address: Some(addr(9999)),
                    nid: Some(admin_nid(1)),
                    state: NodeState::Running,
                    id_timestamp: Some(1.0),
                },
                NodeInfo {
                    node_type: NodeType::Master,
                    address: Some(addr(10000)),
                    nid: Some(master_nid(1)),
                    state: NodeState::Running,
                    id_timestamp: None,
                },
                storage(1, NodeState::Running),
                storage(2, NodeState::Running),
            ],
        },
    ));
    h.step(notify(
        master,
        SendPartitionTable {
            ptid: Some(1),
            num_replicas: 1,
            row_list: vec![
                vec![cell(1, CellState::UpToDate), cell(2, CellState::UpToDate)],
                vec![cell(1, CellState::UpToDate), cell(2, CellState::UpToDate)],
            ],
        },
    ));
    // The answer to the AskClusterState sent after identification (msg_id 1: the
    // identification was 0).
    let out = h.step(Input::Answer {
        conn: master,
        msg_id: 1,
        packet: Packet::AnswerClusterState(AnswerClusterState {
            state: Some(ClusterState::Running),
        }),
    });
    // Operational: the admin asks the last TID at once, for monitoring.
    let (msg_id, packet) = expect_send(&out, master);
    assert_eq!(packet, Packet::AskLastTransaction(AskLastTransaction {}));
    h.step(Input::Answer {
        conn: master,
        msg_id,
        packet: Packet::AnswerLastTransaction(AnswerLastTransaction { tid: Tid(0) }),
    });
}
