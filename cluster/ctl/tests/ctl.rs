//! neoctl: texts for given answers (checked against NEO/py's output, recorded in
//! `tests/data/neopy_transcript.txt`), command-line parsing and errors, the real binary
//! against a fake admin, and (with `NEO_PY_DIR`) byte-for-byte comparison with NEO/py's
//! neoctl against a NEO/py cluster.

#[path = "ctl/fake_admin.rs"]
mod fake_admin;
#[path = "ctl/neopy.rs"]
mod neopy;

use neo_ctl::command::{parse, CheckPartition, Command, ParseError, Storages};
use neo_ctl::format;
use neo_protocol::*;

fn addr(port: u16) -> Address {
    Address {
        host: Bytes::from_static(b"127.0.0.1"),
        port,
    }
}

fn s(n: u32) -> Nid {
    Nid::new(NodeType::Storage, n)
}

fn node(
    node_type: NodeType,
    nid: Option<Nid>,
    port: u16,
    state: NodeState,
    ts: Option<f64>,
) -> NodeInfo {
    NodeInfo {
        node_type,
        address: Some(addr(port)),
        nid,
        state,
        id_timestamp: ts,
    }
}

fn cells(row: &[(u32, CellState)]) -> Row {
    row.iter()
        .map(|(n, state)| Cell {
            nid: s(*n),
            state: *state,
        })
        .collect()
}

/// The storages of the transcript: S1 on 21102, S2 on 21101.
fn storages(s2: NodeState) -> Vec<NodeInfo> {
    vec![
        node(
            NodeType::Storage,
            Some(s(2)),
            21101,
            s2,
            Some(1_795_298_892.706977),
        ),
        node(
            NodeType::Storage,
            Some(s(1)),
            21102,
            NodeState::Running,
            Some(1_795_298_892.706724),
        ),
    ]
}

mod formats {
    use super::*;

    #[test]
    fn node_list_is_sorted_and_padded_per_listing() {
        let nodes = vec![
            node(
                NodeType::Storage,
                Some(s(2)),
                21101,
                NodeState::Pending,
                Some(1_795_298_857.158_16),
            ),
            node(
                NodeType::Master,
                Some(Nid::new(NodeType::Master, 1)),
                21100,
                NodeState::Running,
                None,
            ),
            node(
                NodeType::Storage,
                Some(s(1)),
                21102,
                NodeState::Pending,
                Some(1_795_298_857.062644),
            ),
            node(
                NodeType::Admin,
                Some(Nid::new(NodeType::Admin, 1)),
                21199,
                NodeState::Running,
                Some(1_795_298_856.300335),
            ),
        ];
        assert_eq!(
            format::node_list(&nodes).join("\n"),
            "A1 | ADMIN   | 127.0.0.1:21199 | RUNNING | 2026-11-21 22:07:36.300335\n\
             M1 | MASTER  | 127.0.0.1:21100 | RUNNING | None\n\
             S1 | STORAGE | 127.0.0.1:21102 | PENDING | 2026-11-21 22:07:37.062644\n\
             S2 | STORAGE | 127.0.0.1:21101 | PENDING | 2026-11-21 22:07:37.158160"
        );
        assert_eq!(
            format::node_list(&storages(NodeState::Down)).join("\n"),
            "S1 | STORAGE | 127.0.0.1:21102 | RUNNING | 2026-11-21 22:08:12.706724\n\
             S2 | STORAGE | 127.0.0.1:21101 | DOWN    | 2026-11-21 22:08:12.706977"
        );
        assert!(format::node_list(&[]).is_empty());
    }

    #[test]
    fn node_list_edge_cases() {
        let nodes = vec![
            NodeInfo {
                node_type: NodeType::Master,
                address: Some(Address {
                    host: Bytes::from_static(b"::1"),
                    port: 5,
                }),
                nid: None,
                state: NodeState::Unknown,
                id_timestamp: None,
            },
            NodeInfo {
                node_type: NodeType::Client,
                address: None,
                nid: Some(Nid::new(NodeType::Client, 12)),
                state: NodeState::Running,
                id_timestamp: Some(0.0),
            },
        ];
        assert_eq!(
            format::node_list(&nodes).join("\n"),
            "C12  | CLIENT |         | RUNNING | 0.0\n\
             None | MASTER | [::1]:5 | UNKNOWN | None"
        );
        // Microseconds are rounded half to even, as Python's utcfromtimestamp does.
        assert_eq!(
            format::utc_from_timestamp(0.5),
            "1970-01-01 00:00:00.500000"
        );
        assert_eq!(
            format::utc_from_timestamp(1_700_000_000.0),
            "2023-11-14 22:13:20"
        );
    }

    #[test]
    fn partition_table_full_view() {
        let rows: Vec<Row> = (0..12)
            .map(|p| cells(&[(if p % 2 == 0 { 1 } else { 2 }, CellState::UpToDate)]))
            .collect();
        assert_eq!(
            format::partition_table(Some(1), 0, &rows, 0, 0, &storages(NodeState::Running)),
            "# ptid: 1, replicas: 0\n             10v\nS1 R U.U.U.U.U.U.\nS2 R .U.U.U.U.U.U"
        );
        let rows: Vec<Row> = (0..12)
            .map(|_| cells(&[(1, CellState::UpToDate), (2, CellState::OutOfDate)]))
            .collect();
        assert_eq!(
            format::partition_table(Some(16), 1, &rows, 0, 0, &storages(NodeState::Down)),
            "# ptid: 16, replicas: 1\n             10v\nS1 R UUUUUUUUUUUU\nS2 D OOOOOOOOOOOO"
        );
    }

    #[test]
    fn partition_table_before_start_is_an_empty_line() {
        let rows = vec![Row::new(); 12];
        let pending = vec![node(
            NodeType::Storage,
            Some(s(1)),
            21102,
            NodeState::Pending,
            None,
        )];
        assert_eq!(
            format::partition_table(None, 0, &rows, 0, 0, &pending),
            "# ptid: None, replicas: 0\n"
        );
    }

    #[test]
    fn partition_table_row_view() {
        let rows = vec![
            cells(&[(1, CellState::UpToDate), (2, CellState::UpToDate)]),
            cells(&[(2, CellState::UpToDate), (1, CellState::UpToDate)]),
        ];
        assert_eq!(
            format::partition_table(Some(15), 1, &rows, 2, 4, &[]),
            "# ptid: 15, replicas: 1\n\
             002 | S1 - UP_TO_DATE | S2 - UP_TO_DATE |\n\
             003 | S2 - UP_TO_DATE | S1 - UP_TO_DATE |"
        );
    }

    #[test]
    fn tweak_result_has_no_header() {
        let rows: Vec<Row> = (0..12)
            .map(|p| {
                if p % 2 == 0 {
                    cells(&[(1, CellState::UpToDate), (2, CellState::OutOfDate)])
                } else {
                    cells(&[(2, CellState::UpToDate), (1, CellState::OutOfDate)])
                }
            })
            .collect();
        assert_eq!(
            format::table(&rows, &storages(NodeState::Running)),
            "             10v\nS1 R UOUOUOUOUOUO\nS2 R OUOUOUOUOUOU"
        );
    }

    #[test]
    fn ids() {
        assert_eq!(
            format::ids(None, None, Tid(0), Some(Oid(0))),
            "last_oid = 0x0\nlast_tid = 0x0 (1900-01-01 00:00:00)\nlast_ptid = None"
        );
        assert_eq!(
            format::ids(Some(1), None, Tid(0x040d_2bed_40be_baa4), Some(Oid(0x64))),
            "last_oid = 0x64\nlast_tid = 0x40d2bed40bebaa4 (2026-11-21 19:57:15.174617)\nlast_ptid = 1"
        );
        assert_eq!(
            format::ids(
                Some(3),
                Some(Tid(0x040d_2bec_8000_0000)),
                Tid(0x040d_2bed_0000_0000),
                None
            ),
            "backup_tid = 0x40d2bec80000000 (2026-11-21 19:56:30)\n\
             last_tid = 0x40d2bed00000000 (2026-11-21 19:57:00)\nlast_ptid = 3"
        );
    }

    #[test]
    fn summary() {
        assert_eq!(
            format::summary(&[], &[None], "RECOVERING"),
            "# {\"problem\": [null]}\nRECOVERING"
        );
        assert_eq!(
            format::summary(
                &[],
                &[],
                "RUNNING; UP_TO_DATE=24; ltid=0000000000000000 (1900-01-01 00:00:00)"
            ),
            "# {}\nRUNNING; UP_TO_DATE=24; ltid=0000000000000000 (1900-01-01 00:00:00)"
        );
        assert_eq!(
            format::summary(&[Some("b\u{e9}".into())], &[None, Some("c".into())], "x"),
            "# {\"warning\": [\"b\\u00e9\"], \"problem\": [null, \"c\"]}\nx"
        );
    }
}

mod parsing {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn check(line: &str, expected: Command) {
        assert_eq!(parse(&words(line)), Ok(expected), "{line}");
    }

    fn refused(line: &str, expected: ParseError) {
        assert_eq!(parse(&words(line)), Err(expected), "{line}");
    }

    #[test]
    fn commands() {
        check("", Command::List);
        check("print ids", Command::PrintIds);
        check(
            "print pt",
            Command::PrintPt {
                min: 0,
                max: 0,
                node: None,
            },
        );
        check(
            "print pt 2 10 S3",
            Command::PrintPt {
                min: 2,
                max: 10,
                node: Some(s(3)),
            },
        );
        check("print node", Command::PrintNode(None));
        check(
            "print node Storage",
            Command::PrintNode(Some(NodeType::Storage)),
        );
        check("print cluster", Command::PrintCluster);
        check("print primary", Command::PrintPrimary);
        check("print summary", Command::PrintSummary);
        check(
            "set cluster stopping",
            Command::SetCluster(ClusterState::Stopping),
        );
        check("set replicas 2", Command::SetReplicas(2));
        check("start", Command::Start);
        check("add all", Command::Add(Storages::All));
        check("add S1 S2", Command::Add(Storages::List(vec![s(1), s(2)])));
        check(
            "tweak",
            Command::Tweak {
                dry_run: false,
                nodes: vec![],
            },
        );
        check(
            "tweak -n S2",
            Command::Tweak {
                dry_run: true,
                nodes: vec![s(2)],
            },
        );
        check("kill M2", Command::Kill(Nid::new(NodeType::Master, 2)));
        check("drop S2", Command::Drop(s(2)));
        check(
            "prune_orphan 1 all",
            Command::PruneOrphan {
                dry_run: true,
                nodes: Storages::All,
            },
        );
        check(
            "prune_orphan 0 S1",
            Command::PruneOrphan {
                dry_run: false,
                nodes: Storages::List(vec![s(1)]),
            },
        );
        check(
            "truncate tid:0x40d2bed40bebaa4",
            Command::Truncate(Tid(0x040d_2bed_40be_baa4)),
        );
        check(
            "truncate TID:291937848842435236",
            Command::Truncate(Tid(291_937_848_842_435_236)),
        );
        check("flush_log", Command::FlushLog);
        check("print --help", Command::Help(vec!["print".into()]));
        check("tweak -n --help", Command::Help(vec!["tweak".into()]));
    }

    #[test]
    fn timestamps_are_utc_tids() {
        // 2023-11-14 22:13:20 UTC.
        let minutes: u64 = ((((2023 - 1900) * 12 + 10) * 31 + 13) * 24 + 22) * 60 + 13;
        check(
            "truncate 1700000000",
            Command::Truncate(Tid(minutes << 32 | 0x5555_5555)),
        );
        check(
            "truncate 1700000000.5",
            Command::Truncate(Tid(minutes << 32 | 0x5777_7777)),
        );
    }

    #[test]
    fn check_arguments() {
        check(
            "check 1:S1 3: 1700000000",
            Command::Check {
                partitions: vec![
                    CheckPartition {
                        partition: Some(1),
                        reference: Some(s(1)),
                    },
                    CheckPartition {
                        partition: Some(3),
                        reference: None,
                    },
                ],
                min_tid: neo_node::tid::tid_from_time(1_700_000_000.0),
                max_tid: None,
            },
        );
        check(
            "check : tid:5 tid:9 ignored",
            Command::Check {
                partitions: vec![CheckPartition {
                    partition: None,
                    reference: None,
                }],
                min_tid: Tid(5),
                max_tid: Some(Tid(9)),
            },
        );
    }

    #[test]
    fn errors() {
        refused("foo bar", ParseError::InvalidCommand("foo bar".into()));
        refused("print foo", ParseError::InvalidCommand("print foo".into()));
        refused("print", ParseError::InvalidCommand("print".into()));
        refused("set replicas -1", ParseError::InvalidReplicas);
        refused(
            "print cluster extra",
            ParseError::Usage("usage: neoctl print cluster".into()),
        );
        refused("kill", ParseError::Usage("usage: neoctl kill node".into()));
        refused(
            "print node foo",
            ParseError::Usage("invalid node type: foo (master, storage, client or admin)".into()),
        );
        refused(
            "set cluster foo",
            ParseError::Usage("invalid cluster state: foo".into()),
        );
        refused(
            "kill X1",
            ParseError::Usage("invalid node id: X1 (e.g. S1, M1)".into()),
        );
        refused(
            "print pt x",
            ParseError::Usage("invalid partition offset: x".into()),
        );
        refused(
            "truncate tid:x",
            ParseError::Usage("invalid TID: tid:x (tid:<integer> or a UNIX timestamp)".into()),
        );
        refused(
            "prune_orphan 2 S1",
            ParseError::Usage("usage: neoctl prune_orphan 0|1 node [node [...]]".into()),
        );
        refused(
            "check 1: :",
            ParseError::Usage(
                "check: ':REF' (every partition) must be the only partition argument".into(),
            ),
        );
    }

    #[test]
    fn command_list_names_every_command() {
        let text = neo_ctl::command::usage(&[]);
        assert!(text.starts_with("Commands:\nprint\n  ids\n"), "{text}");
        for word in [
            "  pt",
            "  node",
            "  cluster",
            "  primary",
            "  summary",
            "set",
            "  replicas",
            "check",
            "start",
            "add",
            "tweak",
            "drop",
            "kill",
            "prune_orphan",
            "truncate",
            "flush_log",
        ] {
            assert!(
                text.lines().any(|l| l == word),
                "{word} missing from\n{text}"
            );
        }
        assert!(
            text.ends_with("'1700000000' (2023-11-14 22:13:20 UTC) are valid."),
            "{text}"
        );
        let tweak = neo_ctl::command::usage(&["tweak".into()]);
        assert!(
            tweak.starts_with("Commands:\ntweak\n  Rebalance"),
            "{tweak}"
        );
    }
}

mod binary {
    use super::fake_admin::{FakeAdmin, Reply};
    use super::*;
    use std::process::Command as Process;

    /// Runs neoctl with `args`: (exit code, stdout, stderr).
    fn neoctl(args: &[&str]) -> (i32, String, String) {
        let output = Process::new(env!("CARGO_BIN_EXE_neoctl"))
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    }

    fn against(admin: &FakeAdmin, args: &str) -> (i32, String, String) {
        let address = admin.address.to_string();
        let mut all = vec!["-a", &address];
        all.extend(args.split_whitespace());
        neoctl(&all)
    }

    fn ok(text: &str) -> (i32, String, String) {
        (0, text.to_string(), String::new())
    }

    fn answers(packet: &Packet) -> Reply {
        match packet {
            Packet::AskClusterState(_) => {
                Reply::Answer(Packet::AnswerClusterState(AnswerClusterState {
                    state: Some(ClusterState::Running),
                }))
            }
            Packet::AskPrimary(_) => Reply::Answer(Packet::AnswerPrimary(AnswerPrimary {
                primary_nid: Nid::new(NodeType::Master, 1),
            })),
            Packet::AskNodeList(p) => Reply::Answer(Packet::AnswerNodeList(AnswerNodeList {
                node_list: match p.node_type {
                    Some(NodeType::Client) => vec![],
                    _ => storages(NodeState::Down),
                },
            })),
            Packet::AskPartitionList(p) => {
                let rows: Vec<Row> = (0..12)
                    .map(|_| cells(&[(1, CellState::UpToDate), (2, CellState::OutOfDate)]))
                    .collect();
                let max = if p.max_offset == 0 {
                    12
                } else {
                    p.max_offset as usize
                };
                match rows.get(p.min_offset as usize..max) {
                    Some(rows) => Reply::Answer(Packet::AnswerPartitionList(AnswerPartitionList {
                        ptid: Some(16),
                        num_replicas: 1,
                        row_list: rows.to_vec(),
                    })),
                    None => Reply::AnswerThenClose(Packet::error(
                        ErrorCode::ProtocolError,
                        "invalid partition table offset",
                    )),
                }
            }
            Packet::AskRecovery(_) => Reply::Answer(Packet::AnswerRecovery(AnswerRecovery {
                ptid: Some(1),
                backup_tid: None,
                truncate_tid: None,
            })),
            Packet::AskLastIDs(_) => Reply::Answer(Packet::AnswerLastIDs(AnswerLastIDs {
                last_tid: Some(Tid(0x040d_2bed_40be_baa4)),
                last_oid: Some(Oid(0x64)),
                first_tid: Tid(1),
            })),
            Packet::AskMonitorInformation(_) => {
                Reply::Answer(Packet::AnswerMonitorInformation(AnswerMonitorInformation {
                    warning: vec![],
                    problem: vec![None],
                    summary: Bytes::from_static(b"RUNNING; OUT_OF_DATE=12, UP_TO_DATE=12; DOWN=1"),
                }))
            }
            Packet::SetClusterState(p) if p.state == ClusterState::Verifying => Reply::Answer(
                Packet::error(ErrorCode::Denied, "Can not switch to this state"),
            ),
            Packet::SetClusterState(_) => {
                Reply::Answer(Packet::error(ErrorCode::Ack, "Cluster state changed"))
            }
            Packet::SetNumReplicas(_) | Packet::Repair(_) => {
                Reply::Answer(Packet::error(ErrorCode::Ack, ""))
            }
            Packet::AddPendingNodes(p) if p.nid_list.is_empty() => {
                Reply::Answer(Packet::error(ErrorCode::Ack, "No node added"))
            }
            Packet::AddPendingNodes(_) => {
                Reply::Answer(Packet::error(ErrorCode::Ack, "Nodes added: S1, S2"))
            }
            Packet::TweakPartitionTable(p) if p.nid_list.is_empty() => {
                let rows: Vec<Row> = (0..12)
                    .map(|p| {
                        if p % 2 == 0 {
                            cells(&[(1, CellState::UpToDate), (2, CellState::OutOfDate)])
                        } else {
                            cells(&[(2, CellState::UpToDate), (1, CellState::OutOfDate)])
                        }
                    })
                    .collect();
                Reply::Answer(Packet::AnswerTweakPartitionTable(
                    AnswerTweakPartitionTable {
                        changed: true,
                        row_list: rows,
                    },
                ))
            }
            Packet::TweakPartitionTable(_) => Reply::Answer(Packet::AnswerTweakPartitionTable(
                AnswerTweakPartitionTable {
                    changed: false,
                    row_list: vec![],
                },
            )),
            Packet::SetNodeState(p) if p.nid == s(9) => {
                Reply::Answer(Packet::error(ErrorCode::Denied, "unknown node"))
            }
            Packet::SetNodeState(_) => {
                Reply::Answer(Packet::error(ErrorCode::Ack, "state changed"))
            }
            Packet::Truncate(_) | Packet::CheckReplicas(_) => {
                Reply::Answer(Packet::error(ErrorCode::Ack, ""))
            }
            Packet::FlushLog(_) => Reply::Nothing,
            _ => Reply::AnswerThenClose(Packet::error(ErrorCode::ProtocolError, "unexpected")),
        }
    }

    #[test]
    fn print_commands() {
        let admin = FakeAdmin::start(answers);
        assert_eq!(against(&admin, "print cluster"), ok("RUNNING\n"));
        assert_eq!(against(&admin, "print primary"), ok("M1\n"));
        assert_eq!(
            against(&admin, "print node"),
            ok(
                "S1 | STORAGE | 127.0.0.1:21102 | RUNNING | 2026-11-21 22:08:12.706724\n\
                S2 | STORAGE | 127.0.0.1:21101 | DOWN    | 2026-11-21 22:08:12.706977\n"
            )
        );
        assert_eq!(against(&admin, "print node client"), ok("Empty list!\n"));
        assert_eq!(
            against(&admin, "print pt"),
            ok("# ptid: 16, replicas: 1\n             10v\nS1 R UUUUUUUUUUUU\nS2 D OOOOOOOOOOOO\n")
        );
        assert_eq!(
            against(&admin, "print pt 10"),
            ok("# ptid: 16, replicas: 1\n\
                010 | S1 - UP_TO_DATE | S2 - OUT_OF_DATE |\n\
                011 | S1 - UP_TO_DATE | S2 - OUT_OF_DATE |\n")
        );
        assert_eq!(
            against(&admin, "print ids"),
            ok("last_oid = 0x64\nlast_tid = 0x40d2bed40bebaa4 (2026-11-21 19:57:15.174617)\nlast_ptid = 1\n")
        );
        assert_eq!(
            against(&admin, "print summary"),
            ok("# {\"problem\": [null]}\nRUNNING; OUT_OF_DATE=12, UP_TO_DATE=12; DOWN=1\n")
        );
        let requests = admin.requests();
        assert!(
            requests.contains(&Packet::AskPartitionList(AskPartitionList {
                min_offset: 10,
                max_offset: 0,
                nid: None
            }))
        );
        // The full view needs the storage list.
        assert!(requests.contains(&Packet::AskNodeList(AskNodeList {
            node_type: Some(NodeType::Storage)
        })));
    }

    #[test]
    fn json_output() {
        let admin = FakeAdmin::start(answers);
        let address = admin.address.to_string();
        let (code, out, _) = neoctl(&["--json", "-a", &address, "print", "node"]);
        assert_eq!(code, 0);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json[1]["nid"], "S2");
        assert_eq!(json[1]["state"], "DOWN");
        assert_eq!(json[1]["address"], "127.0.0.1:21101");
        let (_, out, _) = neoctl(&["--json", "-a", &address, "print", "pt", "0", "1"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["ptid"], 16);
        assert_eq!(json["rows"][0]["cells"][1]["state"], "OUT_OF_DATE");
        let (_, out, _) = neoctl(&["--json", "-a", &address, "print", "ids"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["last_tid"], "040d2bed40bebaa4");
        let (_, out, _) = neoctl(&["--json", "-a", &address, "print", "summary"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["problem"], serde_json::json!([null]));
        let (_, out, _) = neoctl(&["--json", "-a", &address, "print", "cluster"]);
        assert_eq!(out, "{\"state\":\"RUNNING\"}\n");
    }

    #[test]
    fn orders() {
        let admin = FakeAdmin::start(answers);
        assert_eq!(
            against(&admin, "set cluster stopping"),
            ok("Cluster state changed\n")
        );
        assert_eq!(
            against(&admin, "start"),
            (1, String::new(), "Can not switch to this state\n".into())
        );
        assert_eq!(against(&admin, "set replicas 1"), ok("\n"));
        assert_eq!(against(&admin, "add all"), ok("Nodes added: S1, S2\n"));
        assert_eq!(against(&admin, "add"), ok("No node added\n"));
        assert_eq!(
            against(&admin, "tweak -n"),
            ok("             10v\nS1 R UOUOUOUOUOUO\nS2 D OUOUOUOUOUOU\n")
        );
        assert_eq!(against(&admin, "tweak S2"), ok("No change done.\n"));
        assert_eq!(against(&admin, "kill S2"), ok("state changed\n"));
        assert_eq!(
            against(&admin, "drop S9"),
            (1, String::new(), "unknown node\n".into())
        );
        assert_eq!(against(&admin, "prune_orphan 1 S1"), ok("\n"));
        assert_eq!(against(&admin, "truncate tid:0x10"), ok(""));
        assert_eq!(against(&admin, "check : 1700000000"), ok(""));
        assert_eq!(against(&admin, "flush_log"), ok(""));
        // neoctl leaves once its notification is written, maybe before the admin's thread
        // has taken it from the socket.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !admin.requests().contains(&Packet::FlushLog(FlushLog {}))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let requests = admin.requests();
        for expected in [
            Packet::SetClusterState(SetClusterState {
                state: ClusterState::Stopping,
            }),
            Packet::SetClusterState(SetClusterState {
                state: ClusterState::Verifying,
            }),
            Packet::SetNumReplicas(SetNumReplicas { num_replicas: 1 }),
            Packet::AddPendingNodes(AddPendingNodes {
                nid_list: vec![s(2), s(1)],
            }),
            Packet::TweakPartitionTable(TweakPartitionTable {
                dry_run: true,
                nid_list: vec![],
            }),
            Packet::TweakPartitionTable(TweakPartitionTable {
                dry_run: false,
                nid_list: vec![s(2)],
            }),
            Packet::SetNodeState(SetNodeState {
                nid: s(2),
                state: NodeState::Down,
            }),
            Packet::SetNodeState(SetNodeState {
                nid: s(9),
                state: NodeState::Unknown,
            }),
            Packet::Repair(Repair {
                nid_list: vec![s(1)],
                dry_run: true,
            }),
            Packet::Truncate(Truncate { tid: Tid(0x10) }),
            Packet::CheckReplicas(CheckReplicas {
                partition_dict: Dict((0..12).map(|p| (p, None)).collect()),
                min_tid: neo_node::tid::tid_from_time(1_700_000_000.0),
                max_tid: None,
            }),
            Packet::FlushLog(FlushLog {}),
        ] {
            assert!(
                requests.contains(&expected),
                "{expected:?} not sent; got {requests:?}"
            );
        }
    }

    #[test]
    fn errors_and_exit_codes() {
        let admin = FakeAdmin::start(|packet| match packet {
            Packet::AskClusterState(_) => Reply::AnswerThenClose(Packet::error(
                ErrorCode::NotReady,
                "Not connected to a primary master.",
            )),
            Packet::AskPrimary(_) => Reply::Close,
            _ => Reply::AnswerThenClose(Packet::error(
                ErrorCode::ProtocolError,
                "invalid partition table offset",
            )),
        });
        assert_eq!(
            against(&admin, "print cluster"),
            (
                1,
                String::new(),
                "ERROR: Not connected to a primary master.\n".into()
            )
        );
        assert_eq!(
            against(&admin, "print primary"),
            (1, String::new(), "ERROR: Connection closed\n".into())
        );
        assert_eq!(
            against(&admin, "print pt 5 100"),
            (
                1,
                String::new(),
                "neoctl: unexpected answer from the admin: PROTOCOL_ERROR (invalid partition table offset)\n".into()
            )
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(
            neoctl(&["-a", &format!("127.0.0.1:{port}"), "print", "cluster"]),
            (1, String::new(), "ERROR: not connected\n".into())
        );
        assert_eq!(
            against(&admin, "foo bar"),
            (1, String::new(), "invalid command: foo bar\n".into())
        );
        assert_eq!(
            against(&admin, "set replicas -1"),
            (1, String::new(), "invalid number of replicas\n".into())
        );
        let (code, _, err) = against(&admin, "kill X1");
        assert_eq!(
            (code, err.as_str()),
            (2, "neoctl: invalid node id: X1 (e.g. S1, M1)\n")
        );
        let (code, _, err) = neoctl(&["--bogus"]);
        assert_eq!(code, 2, "{err}");
    }

    #[test]
    fn help_and_command_list_need_no_admin() {
        let (code, out, _) = neoctl(&["-a", "127.0.0.1:1"]);
        assert_eq!(code, 0);
        assert!(out.starts_with("Commands:\nprint\n"), "{out}");
        let (code, out, _) = neoctl(&["--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("--address"), "{out}");
        let (code, out, _) = neoctl(&["set", "--help"]);
        assert_eq!(code, 0);
        assert!(out.starts_with("Commands:\ncluster\n"), "{out}");
    }
}
