//! Hand-driven tests of the client core: inputs played as a master and storages would
//! send them, outputs checked packet by packet.

use neo_client_core::{
    codec, Cache, Client, ClientError, Config, Invalidation, OpId, Operation, Reply,
    TransactionMeta,
};
use neo_node::{ConnId, Input, Node, Outbox, Output};
use neo_protocol::{
    self as protocol, Address, Bytes, Cell, CellState, ErrorCode, Nid, NodeInfo, NodeState,
    NodeType, Oid, Packet, Tid,
};

fn addr(port: u16) -> Address {
    Address {
        host: Bytes::from_static(b"127.0.0.1"),
        port,
    }
}

const CLIENT: Nid = Nid(-0x1000000 + 1);

fn s(n: u32) -> Nid {
    Nid::new(NodeType::Storage, n)
}

fn m1() -> Nid {
    Nid::new(NodeType::Master, 1)
}

/// A client and the peers' side of its connections.
struct Harness {
    client: Client,
    out: Outbox,
    now: f64,
    next_op: OpId,
    master: Option<ConnId>,
    /// Sent by the client and not yet looked at.
    sent: Vec<Output>,
}

impl Harness {
    fn new(config: Config) -> Harness {
        let mut h = Harness {
            client: Client::new(config),
            out: Outbox::new(),
            now: 1000.0,
            next_op: 1,
            master: None,
            sent: Vec::new(),
        };
        h.input(Input::Start);
        h
    }

    fn collect(&mut self) {
        self.sent.extend(self.out.drain());
    }

    fn input(&mut self, input: Input) {
        self.client.handle(self.now, input, &mut self.out);
        self.collect();
    }

    fn submit(&mut self, operation: Operation) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        self.client.submit(self.now, op, operation, &mut self.out);
        self.collect();
        op
    }

    fn result(&mut self, op: OpId) -> Option<Result<Reply, ClientError>> {
        let done = self.client.take_completions();
        let mut found = None;
        for (id, result) in done {
            if id == op {
                found = Some(result);
            } else {
                panic!("unexpected completion of {id}: {result:?}");
            }
        }
        found
    }

    /// The next connection opened by the client, and to where.
    fn take_connect(&mut self) -> (ConnId, Address) {
        let index = self
            .sent
            .iter()
            .position(|o| matches!(o, Output::Connect { .. }))
            .unwrap_or_else(|| panic!("no connect in {:?}", self.sent));
        match self.sent.remove(index) {
            Output::Connect { conn, addr } => (conn, addr),
            _ => unreachable!(),
        }
    }

    /// The next packet sent on `conn`.
    fn take_sent(&mut self, conn: ConnId) -> (u32, Packet) {
        let index = self
            .sent
            .iter()
            .position(|o| matches!(o, Output::Send { conn: c, .. } if *c == conn))
            .unwrap_or_else(|| panic!("nothing sent on {conn:x} in {:?}", self.sent));
        match self.sent.remove(index) {
            Output::Send { msg_id, packet, .. } => (msg_id, packet),
            _ => unreachable!(),
        }
    }

    fn nothing_sent_on(&self, conn: ConnId) -> bool {
        !self
            .sent
            .iter()
            .any(|o| matches!(o, Output::Send { conn: c, .. } if *c == conn))
    }

    fn answer(&mut self, conn: ConnId, msg_id: u32, packet: impl Into<Packet>) {
        self.input(Input::Answer {
            conn,
            msg_id,
            packet: packet.into(),
        });
    }

    fn notify(&mut self, conn: ConnId, packet: impl Into<Packet>) {
        self.input(Input::Packet {
            conn,
            msg_id: 0,
            packet: packet.into(),
        });
    }

    /// Plays the primary master's side of a connection until the client is ready: node
    /// list with `storages` (RUNNING unless said), partition table `rows`, last TID.
    fn bootstrap(&mut self, storages: &[(Nid, NodeState)], rows: Vec<Vec<Cell>>, ltid: Tid) {
        let (conn, address) = self.take_connect();
        assert_eq!(address, addr(1000));
        self.master = Some(conn);
        let (msg_id, packet) = self.take_sent(conn);
        let Packet::RequestIdentification(request) = packet else {
            panic!("{packet:?}");
        };
        assert_eq!(request.node_type, NodeType::Client);
        assert_eq!(request.address, None);
        assert_eq!(request.cluster_name, Bytes::from_static(b"test"));
        assert_eq!(request.id_timestamp, None);
        self.accept_and_feed(conn, msg_id, storages, rows, ltid);
    }

    fn accept_and_feed(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        storages: &[(Nid, NodeState)],
        rows: Vec<Vec<Cell>>,
        ltid: Tid,
    ) {
        self.answer(
            conn,
            msg_id,
            protocol::AcceptIdentification {
                node_type: NodeType::Master,
                nid: Some(m1()),
                your_nid: Some(CLIENT),
            },
        );
        let (last_id, packet) = self.take_sent(conn);
        assert!(
            matches!(packet, Packet::AskLastTransaction(_)),
            "{packet:?}"
        );
        let mut node_list = vec![
            NodeInfo {
                node_type: NodeType::Client,
                address: None,
                nid: Some(CLIENT),
                state: NodeState::Running,
                id_timestamp: Some(1234.5),
            },
            NodeInfo {
                node_type: NodeType::Master,
                address: Some(addr(1000)),
                nid: Some(m1()),
                state: NodeState::Running,
                id_timestamp: None,
            },
        ];
        for &(nid, state) in storages {
            node_list.push(NodeInfo {
                node_type: NodeType::Storage,
                address: Some(addr(2000 + (nid.0 & 0xff) as u16)),
                nid: Some(nid),
                state,
                id_timestamp: Some(1000.0),
            });
        }
        self.notify(
            conn,
            protocol::NotifyNodeInformation {
                timestamp: 1234.5,
                node_list,
            },
        );
        self.notify(
            conn,
            protocol::SendPartitionTable {
                ptid: Some(1),
                num_replicas: 0,
                row_list: rows,
            },
        );
        self.answer(conn, last_id, protocol::AnswerLastTransaction { tid: ltid });
    }

    /// Accepts the client on a storage: returns the connection.
    fn accept_storage(&mut self, nid: Nid) -> ConnId {
        let (conn, address) = self.take_connect();
        assert_eq!(address, addr(2000 + (nid.0 & 0xff) as u16));
        let (msg_id, packet) = self.take_sent(conn);
        let Packet::RequestIdentification(request) = packet else {
            panic!("{packet:?}");
        };
        assert_eq!(request.nid, Some(CLIENT));
        assert_eq!(
            request.id_timestamp,
            Some(1234.5),
            "id_timestamp from the node list"
        );
        self.answer(
            conn,
            msg_id,
            protocol::AcceptIdentification {
                node_type: NodeType::Storage,
                nid: Some(nid),
                your_nid: Some(CLIENT),
            },
        );
        conn
    }
}

fn config() -> Config {
    let mut config = Config::new(vec![addr(1000)], "test");
    config.seed = 7;
    config
}

fn cell(nid: Nid, state: CellState) -> Cell {
    Cell { nid, state }
}

/// One partition on S1 (and S2 when given).
fn ready(storages: &[(Nid, NodeState)], rows: Vec<Vec<Cell>>) -> Harness {
    let mut h = Harness::new(config());
    let op = h.submit(Operation::LastTransaction);
    h.bootstrap(storages, rows, Tid(100));
    assert_eq!(h.result(op), Some(Ok(Reply::Tid(Tid(100)))));
    h
}

fn begin(h: &mut Harness, ttid: Tid) {
    let op = h.submit(Operation::TpcBegin {
        tid: None,
        meta: TransactionMeta {
            user: Bytes::from_static(b"me"),
            description: Bytes::from_static(b"test"),
            extension: Bytes::new(),
        },
    });
    let master = h.master.unwrap();
    let (msg_id, packet) = h.take_sent(master);
    assert_eq!(
        packet,
        Packet::AskBeginTransaction(protocol::AskBeginTransaction { tid: None })
    );
    h.answer(master, msg_id, protocol::AnswerBeginTransaction { ttid });
    assert_eq!(h.result(op), Some(Ok(Reply::Tid(ttid))));
}

fn store(h: &mut Harness, ttid: Tid, oid: u64, serial: u64, data: &'static [u8]) {
    let op = h.submit(Operation::Store {
        ttid,
        oid: Oid(oid),
        serial: Tid(serial),
        data: Bytes::from_static(data),
        data_serial: None,
    });
    assert_eq!(h.result(op), Some(Ok(Reply::Done)));
}

fn store_answer(conflict: Option<Tid>) -> protocol::AnswerStoreObject {
    protocol::AnswerStoreObject { conflict }
}

mod identification {
    use super::*;

    #[test]
    fn master_then_storage_identification() {
        let mut config = config();
        config.read_only = true;
        let mut h = Harness::new(config);
        assert!(h.sent.is_empty(), "the master connection is lazy");
        let op = h.submit(Operation::LoadSerial {
            oid: Oid(1),
            serial: Tid(5),
        });
        let (conn, _) = h.take_connect();
        h.master = Some(conn);
        let (msg_id, packet) = h.take_sent(conn);
        let Packet::RequestIdentification(request) = packet else {
            panic!()
        };
        assert_eq!(request.extra.0.len(), 1);
        assert_eq!(request.extra.0[0].0, Bytes::from_static(b"read_only"));
        h.accept_and_feed(
            conn,
            msg_id,
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
            Tid(100),
        );
        assert_eq!(h.client.nid(), Some(CLIENT));
        assert!(h.client.is_ready());
        // The waiting load goes to S1, after identification there.
        let storage = h.accept_storage(s(1));
        let (msg_id, packet) = h.take_sent(storage);
        assert_eq!(
            packet,
            Packet::AskObject(protocol::AskObject {
                oid: Oid(1),
                at: Some(Tid(5)),
                before: None
            })
        );
        let data = codec::encode(&Bytes::from_static(b"hello"), false, 6);
        h.answer(
            storage,
            msg_id,
            protocol::AnswerObject {
                oid: Oid(1),
                serial: Tid(5),
                next_serial: Some(Tid(9)),
                compression: Some(data.compression),
                checksum: data.checksum,
                data: data.data,
                data_serial: None,
            },
        );
        match h.result(op) {
            Some(Ok(Reply::Object(record))) => {
                assert_eq!(record.data, Some(Bytes::from_static(b"hello")));
                assert_eq!(record.next_serial, Some(Tid(9)));
            }
            other => panic!("{other:?}"),
        }
        // Read-only: writes are refused locally.
        let op = h.submit(Operation::TpcBegin {
            tid: None,
            meta: TransactionMeta::default(),
        });
        assert_eq!(h.result(op), Some(Err(ClientError::ReadOnly)));
    }

    #[test]
    fn not_primary_master_redirects() {
        let mut config = config();
        config.masters = vec![addr(1001), addr(1000)];
        let mut h = Harness::new(config);
        let op = h.submit(Operation::Sync);
        let (conn, address) = h.take_connect();
        assert_eq!(address, addr(1001));
        let _ = h.take_sent(conn);
        h.notify(
            conn,
            protocol::NotPrimaryMaster {
                primary: Some(1),
                known_master_list: vec![addr(1001), addr(1000)],
            },
        );
        assert!(h.sent.contains(&Output::Close { conn }));
        h.sent.retain(|o| o != &Output::Close { conn });
        h.bootstrap(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
            Tid(7),
        );
        let master = h.master.unwrap();
        let (msg_id, packet) = h.take_sent(master);
        assert!(matches!(packet, Packet::Ping(_)));
        h.answer(master, msg_id, protocol::Pong {});
        assert_eq!(h.result(op), Some(Ok(Reply::Done)));
    }

    #[test]
    fn not_operational_table_reconnects_a_second_later() {
        let mut h = Harness::new(config());
        let op = h.submit(Operation::LastTransaction);
        let (conn, _) = h.take_connect();
        let (msg_id, _) = h.take_sent(conn);
        // S1 is down: the table is not operational.
        h.accept_and_feed(
            conn,
            msg_id,
            &[(s(1), NodeState::Down)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
            Tid(1),
        );
        assert!(h.sent.contains(&Output::Close { conn }));
        assert!(!h.sent.iter().any(|o| matches!(o, Output::Connect { .. })));
        assert_eq!(
            h.client.deadline(),
            Some(h.now + 1.0),
            "attempts are 1 s apart"
        );
        h.sent.clear();
        h.now += 1.0;
        h.input(Input::Timer);
        h.bootstrap(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
            Tid(1),
        );
        assert_eq!(h.result(op), Some(Ok(Reply::Tid(Tid(1)))));
    }
}

mod routing {
    use super::*;

    #[test]
    fn stores_go_to_every_running_cell_loads_to_readable_ones() {
        // Partition 0: S1 up to date, S2 out of date, S3 up to date but its node is down.
        let mut h = ready(
            &[
                (s(1), NodeState::Running),
                (s(2), NodeState::Running),
                (s(3), NodeState::Down),
            ],
            vec![vec![
                cell(s(1), CellState::UpToDate),
                cell(s(2), CellState::OutOfDate),
                cell(s(3), CellState::UpToDate),
            ]],
        );
        let ttid = Tid(200);
        begin(&mut h, ttid);
        store(&mut h, ttid, 1, 0, b"data");
        let s1 = h.accept_storage(s(1));
        let s2 = h.accept_storage(s(2));
        assert!(
            !h.sent.iter().any(|o| matches!(o, Output::Connect { .. })),
            "not to S3"
        );
        for conn in [s1, s2] {
            let (_, packet) = h.take_sent(conn);
            let Packet::AskStoreObject(p) = packet else {
                panic!()
            };
            assert_eq!((p.oid, p.serial, p.ttid), (Oid(1), Tid(0), ttid));
            assert_eq!(p.checksum, codec::checksum(&p.data));
        }
        // Loads: only S1 is readable and running, whatever the random order.
        for _ in 0..5 {
            let op = h.submit(Operation::LoadBefore {
                oid: Oid(7),
                before: Tid(50),
            });
            let (msg_id, packet) = h.take_sent(s1);
            assert!(matches!(packet, Packet::AskObject(_)));
            assert!(h.nothing_sent_on(s2));
            h.answer(
                s1,
                msg_id,
                Packet::error(ErrorCode::OidNotFound, "no revision"),
            );
            assert_eq!(h.result(op), Some(Ok(Reply::None)));
        }
    }

    #[test]
    fn non_readable_cell_and_failures_move_to_the_next_replica() {
        let mut h = ready(
            &[(s(1), NodeState::Running), (s(2), NodeState::Running)],
            vec![vec![
                cell(s(1), CellState::UpToDate),
                cell(s(2), CellState::UpToDate),
            ]],
        );
        let op = h.submit(Operation::Load { oid: Oid(3) });
        let (first, _) = h.take_connect();
        let (msg_id, _) = h.take_sent(first);
        // The first storage refuses us: marked failed, the other one is asked.
        h.answer(
            first,
            msg_id,
            Packet::error(ErrorCode::NotReady, "not ready"),
        );
        let (second, _) = h.take_connect();
        let (msg_id, packet) = h.take_sent(second);
        assert!(matches!(packet, Packet::RequestIdentification(_)));
        h.answer(
            second,
            msg_id,
            protocol::AcceptIdentification {
                node_type: NodeType::Storage,
                nid: None,
                your_nid: Some(CLIENT),
            },
        );
        let (msg_id, packet) = h.take_sent(second);
        let Packet::AskObject(ask) = packet else {
            panic!()
        };
        assert_eq!(
            ask.before,
            Some(Tid(101)),
            "never newer than the last invalidation"
        );
        // A bad checksum from it: nothing left but the failed node, then a sync.
        h.answer(
            second,
            msg_id,
            protocol::AnswerObject {
                oid: Oid(3),
                serial: Tid(90),
                next_serial: None,
                compression: Some(0),
                checksum: codec::checksum(b"other"),
                data: Bytes::from_static(b"data"),
                data_serial: None,
            },
        );
        let failed: Vec<Nid> = [s(1), s(2)]
            .into_iter()
            .filter(|n| h.client.recently_failed(*n, h.now))
            .collect();
        assert_eq!(failed.len(), 1, "NOT_READY marks the node failed");
        assert!(h.client.take_completions().is_empty());
        // From now on every read gets a bad checksum and S1 stays not ready; each round
        // over the replicas ends with a ping to the master (partition table updates).
        let master = h.master.unwrap();
        let mut rounds = 0;
        while !h.sent.is_empty() {
            let output = h.sent.remove(0);
            let Output::Send {
                conn,
                msg_id,
                packet,
            } = output
            else {
                continue;
            };
            match packet {
                Packet::Ping(_) if conn == master => {
                    rounds += 1;
                    h.answer(master, msg_id, protocol::Pong {});
                }
                Packet::AskObject(_) => h.answer(
                    conn,
                    msg_id,
                    protocol::AnswerObject {
                        oid: Oid(3),
                        serial: Tid(90),
                        next_serial: None,
                        compression: Some(0),
                        checksum: codec::checksum(b"other"),
                        data: Bytes::from_static(b"data"),
                        data_serial: None,
                    },
                ),
                Packet::RequestIdentification(_) => {
                    h.answer(conn, msg_id, Packet::error(ErrorCode::NotReady, "no"))
                }
                other => panic!("{other:?}"),
            }
            assert!(rounds < 10);
        }
        assert!(rounds >= 1);
        assert_eq!(
            h.result(op),
            Some(Err(ClientError::WrongChecksum {
                oid: Oid(3),
                serial: Tid(90)
            }))
        );
    }
}

mod commit {
    use super::*;

    fn two_storages() -> Harness {
        ready(
            &[(s(1), NodeState::Running), (s(2), NodeState::Running)],
            vec![vec![
                cell(s(1), CellState::UpToDate),
                cell(s(2), CellState::OutOfDate),
            ]],
        )
    }

    #[test]
    fn awaits_the_master_only_for_its_answers() {
        let mut h = Harness::new(config());
        assert!(!h.client.awaits_master(), "no master connection yet");
        let op = h.submit(Operation::LastTransaction);
        h.bootstrap(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
            Tid(100),
        );
        assert_eq!(h.result(op), Some(Ok(Reply::Tid(Tid(100)))));
        assert_eq!(h.client.master_conn(), h.master);
        assert!(!h.client.awaits_master(), "ready, nothing asked");
        let op = h.submit(Operation::TpcBegin {
            tid: None,
            meta: TransactionMeta::default(),
        });
        assert!(h.client.awaits_master(), "AskBeginTransaction pending");
        let master = h.master.unwrap();
        let (msg_id, _) = h.take_sent(master);
        h.answer(
            master,
            msg_id,
            protocol::AnswerBeginTransaction { ttid: Tid(200) },
        );
        assert_eq!(h.result(op), Some(Ok(Reply::Tid(Tid(200)))));
        // A store waits for a storage, not for the master.
        store(&mut h, Tid(200), 1, 0, b"data");
        assert!(!h.client.awaits_master());
    }

    #[test]
    fn lockless_answers_vote_finish_and_cache() {
        let mut h = two_storages();
        let ttid = Tid(200);
        begin(&mut h, ttid);
        store(&mut h, ttid, 1, 0, b"new object");
        let s1 = h.accept_storage(s(1));
        let s2 = h.accept_storage(s(2));
        let (m1_id, _) = h.take_sent(s1);
        let (m2_id, _) = h.take_sent(s2);
        h.answer(s1, m1_id, store_answer(None));
        // S2 replicates: it accepts without lock.
        h.answer(s2, m2_id, store_answer(Some(Tid::ZERO)));
        let op = h.submit(Operation::TpcVote { ttid });
        for conn in [s1, s2] {
            let (msg_id, packet) = h.take_sent(conn);
            let Packet::AskStoreTransaction(p) = packet else {
                panic!("{packet:?}")
            };
            assert_eq!(p.oid_list, vec![Oid(1)]);
            assert_eq!(p.user, Bytes::from_static(b"me"));
            h.answer(conn, msg_id, protocol::AnswerStoreTransaction {});
        }
        assert_eq!(h.result(op), Some(Ok(Reply::Voted { resolved: vec![] })));
        let op = h.submit(Operation::TpcFinish { ttid });
        let master = h.master.unwrap();
        let (msg_id, packet) = h.take_sent(master);
        let Packet::AskFinishTransaction(p) = packet else {
            panic!()
        };
        assert_eq!(
            (p.oid_list, p.deleted, p.checked),
            (vec![Oid(1)], vec![], vec![])
        );
        h.answer(
            master,
            msg_id,
            protocol::AnswerTransactionFinished {
                ttid,
                tid: Tid(201),
            },
        );
        assert_eq!(h.result(op), Some(Ok(Reply::Tid(Tid(201)))));
        assert_eq!(h.client.last_tid(), Some(Tid(201)));
        // Our own data is now cached as current.
        let op = h.submit(Operation::Load { oid: Oid(1) });
        match h.result(op) {
            Some(Ok(Reply::Object(record))) => {
                assert_eq!(record.serial, Tid(201));
                assert_eq!(record.data, Some(Bytes::from_static(b"new object")));
            }
            other => panic!("{other:?}"),
        }
        assert!(h.sent.is_empty());
    }

    #[test]
    fn lockless_rule_with_a_failed_locking_node() {
        let mut h = two_storages();
        let ttid = Tid(200);
        begin(&mut h, ttid);
        store(&mut h, ttid, 1, 0, b"x");
        let s1 = h.accept_storage(s(1));
        let s2 = h.accept_storage(s(2));
        let (_, _) = h.take_sent(s1);
        let (m2_id, _) = h.take_sent(s2);
        h.answer(s2, m2_id, store_answer(Some(Tid::ZERO)));
        // S1, the only node that checks conflicts, goes away.
        h.input(Input::Closed { conn: s1 });
        let op = h.submit(Operation::TpcVote { ttid });
        let (msg_id, packet) = h.take_sent(s2);
        assert!(matches!(packet, Packet::AskStoreTransaction(_)));
        h.answer(s2, msg_id, protocol::AnswerStoreTransaction {});
        assert_eq!(
            h.result(op),
            Some(Err(ClientError::Storage(
                "partition 0 not fully write-locked".into()
            )))
        );
    }

    #[test]
    fn failed_vote_tells_the_master() {
        let mut h = ready(
            &[(s(1), NodeState::Running), (s(2), NodeState::Running)],
            vec![vec![
                cell(s(1), CellState::UpToDate),
                cell(s(2), CellState::UpToDate),
            ]],
        );
        let ttid = Tid(200);
        begin(&mut h, ttid);
        store(&mut h, ttid, 1, 0, b"x");
        let s1 = h.accept_storage(s(1));
        let s2 = h.accept_storage(s(2));
        let (id1, _) = h.take_sent(s1);
        let _ = h.take_sent(s2);
        h.answer(s1, id1, store_answer(None));
        h.input(Input::Closed { conn: s2 });
        let op = h.submit(Operation::TpcVote { ttid });
        // A node that failed is never written again in this transaction.
        assert!(!h.sent.iter().any(|o| matches!(o, Output::Connect { .. })));
        let (msg_id, _) = h.take_sent(s1);
        h.answer(s1, msg_id, protocol::AnswerStoreTransaction {});
        let master = h.master.unwrap();
        let (msg_id, packet) = h.take_sent(master);
        assert_eq!(
            packet,
            Packet::FailedVote(protocol::FailedVote {
                ttid,
                failed: vec![s(2)]
            })
        );
        h.answer(master, msg_id, Packet::error(ErrorCode::Ack, ""));
        assert_eq!(h.result(op), Some(Ok(Reply::Voted { resolved: vec![] })));
    }

    #[test]
    fn conflicts_surface_and_resolution_restores() {
        let mut h = ready(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
        );
        let ttid = Tid(200);
        begin(&mut h, ttid);
        store(&mut h, ttid, 1, 50, b"mine");
        let s1 = h.accept_storage(s(1));
        let (msg_id, _) = h.take_sent(s1);
        h.answer(s1, msg_id, store_answer(Some(Tid(80))));
        let op = h.submit(Operation::TpcVote { ttid });
        match h.result(op) {
            Some(Ok(Reply::Conflicts(conflicts))) => {
                assert_eq!(conflicts.len(), 1);
                assert_eq!(conflicts[0].oid, Oid(1));
                assert_eq!(conflicts[0].serial, Tid(50));
                assert_eq!(conflicts[0].committed_serial, Tid(80));
                assert_eq!(conflicts[0].data, Bytes::from_static(b"mine"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            h.nothing_sent_on(s1),
            "no vote while conflicts are unresolved"
        );
        // The caller resolved it: store again based on the committed serial.
        store(&mut h, ttid, 1, 80, b"merged");
        let (msg_id, packet) = h.take_sent(s1);
        let Packet::AskStoreObject(p) = packet else {
            panic!()
        };
        assert_eq!(p.serial, Tid(80));
        h.answer(s1, msg_id, store_answer(None));
        let op = h.submit(Operation::TpcVote { ttid });
        let (msg_id, _) = h.take_sent(s1);
        h.answer(s1, msg_id, protocol::AnswerStoreTransaction {});
        assert_eq!(
            h.result(op),
            Some(Ok(Reply::Voted {
                resolved: vec![Oid(1)]
            }))
        );
    }

    #[test]
    fn newer_conflict_waits_for_the_invalidation() {
        let mut h = ready(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
        );
        let ttid = Tid(200);
        begin(&mut h, ttid);
        store(&mut h, ttid, 1, 50, b"mine");
        let s1 = h.accept_storage(s(1));
        let (msg_id, _) = h.take_sent(s1);
        // Committed at 150, after our last TID (100): sync first.
        h.answer(s1, msg_id, store_answer(Some(Tid(150))));
        let op = h.submit(Operation::TpcVote { ttid });
        let master = h.master.unwrap();
        let (msg_id, packet) = h.take_sent(master);
        assert!(matches!(packet, Packet::Ping(_)));
        h.notify(
            master,
            protocol::InvalidateObjects {
                tid: Tid(150),
                oid_list: vec![Oid(1)],
            },
        );
        h.answer(master, msg_id, protocol::Pong {});
        assert!(matches!(h.result(op), Some(Ok(Reply::Conflicts(_)))));
        assert_eq!(
            h.client.take_invalidations(),
            vec![Invalidation::Objects {
                tid: Tid(150),
                oids: vec![Oid(1)]
            }]
        );
    }

    #[test]
    fn check_current_conflict_is_a_read_conflict() {
        let mut h = ready(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
        );
        let ttid = Tid(200);
        begin(&mut h, ttid);
        let op = h.submit(Operation::CheckCurrentSerial {
            ttid,
            oid: Oid(4),
            serial: Tid(40),
        });
        assert_eq!(h.result(op), Some(Ok(Reply::Done)));
        let s1 = h.accept_storage(s(1));
        let (msg_id, packet) = h.take_sent(s1);
        assert!(matches!(packet, Packet::AskCheckCurrentSerial(_)));
        h.answer(
            s1,
            msg_id,
            protocol::AnswerCheckCurrentSerial {
                conflict: Some(Tid(60)),
            },
        );
        let op = h.submit(Operation::TpcVote { ttid });
        assert_eq!(
            h.result(op),
            Some(Err(ClientError::ReadConflict {
                oid: Oid(4),
                serial: Tid(40),
                committed: Tid(60)
            }))
        );
        let op = h.submit(Operation::TpcAbort { ttid });
        assert_eq!(h.result(op), Some(Ok(Reply::Done)));
        let (_, packet) = h.take_sent(s1);
        assert_eq!(
            packet,
            Packet::AbortTransaction(protocol::AbortTransaction {
                ttid,
                nid_list: vec![]
            })
        );
        let (_, packet) = h.take_sent(h.master.unwrap());
        assert_eq!(
            packet,
            Packet::AbortTransaction(protocol::AbortTransaction {
                ttid,
                nid_list: vec![s(1)]
            })
        );
    }

    #[test]
    fn deleted_and_checked_partitions_at_finish() {
        let mut h = ready(
            &[(s(1), NodeState::Running)],
            vec![
                vec![cell(s(1), CellState::UpToDate)],
                vec![cell(s(1), CellState::UpToDate)],
            ],
        );
        let ttid = Tid(200);
        begin(&mut h, ttid);
        let op = h.submit(Operation::DeleteObject {
            ttid,
            oid: Oid(3),
            serial: Tid(9),
        });
        assert_eq!(h.result(op), Some(Ok(Reply::Done)));
        let op = h.submit(Operation::CheckCurrentSerial {
            ttid,
            oid: Oid(4),
            serial: Tid(9),
        });
        assert_eq!(h.result(op), Some(Ok(Reply::Done)));
        let s1 = h.accept_storage(s(1));
        let (id1, p1) = h.take_sent(s1);
        let Packet::AskStoreObject(p1) = p1 else {
            panic!()
        };
        assert!(p1.data.is_empty() && p1.checksum == [0; 20] && p1.data_serial.is_none());
        let (id2, _) = h.take_sent(s1);
        h.answer(s1, id1, store_answer(None));
        h.answer(
            s1,
            id2,
            protocol::AnswerCheckCurrentSerial { conflict: None },
        );
        let op = h.submit(Operation::TpcVote { ttid });
        let (msg_id, _) = h.take_sent(s1);
        h.answer(s1, msg_id, protocol::AnswerStoreTransaction {});
        assert!(matches!(h.result(op), Some(Ok(Reply::Voted { .. }))));
        h.submit(Operation::TpcFinish { ttid });
        let (_, packet) = h.take_sent(h.master.unwrap());
        let Packet::AskFinishTransaction(p) = packet else {
            panic!()
        };
        assert_eq!(
            (p.oid_list, p.deleted, p.checked),
            (vec![], vec![1], vec![0])
        );
    }

    #[test]
    fn master_loss_fails_the_transaction_and_discards_oids() {
        let mut h = ready(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
        );
        let master = h.master.unwrap();
        let op = h.submit(Operation::NewOid);
        let (msg_id, packet) = h.take_sent(master);
        assert_eq!(
            packet,
            Packet::AskNewOIDs(protocol::AskNewOIDs { num_oids: 100 })
        );
        h.answer(
            master,
            msg_id,
            protocol::AnswerNewOIDs {
                oid_list: (10..110).map(Oid).collect(),
            },
        );
        assert_eq!(h.result(op), Some(Ok(Reply::Oid(Oid(10)))));
        let op = h.submit(Operation::NewOid);
        assert_eq!(
            h.result(op),
            Some(Ok(Reply::Oid(Oid(11)))),
            "from the batch"
        );
        assert!(h.nothing_sent_on(master));
        let ttid = Tid(200);
        begin(&mut h, ttid);
        store(&mut h, ttid, 1, 0, b"x");
        let s1 = h.accept_storage(s(1));
        let (msg_id, _) = h.take_sent(s1);
        h.answer(s1, msg_id, store_answer(None));
        h.input(Input::Closed { conn: master });
        // Storage connections are dropped with the master.
        assert!(h.sent.contains(&Output::Close { conn: s1 }));
        h.sent.clear();
        let op = h.submit(Operation::TpcVote { ttid });
        assert!(matches!(
            h.result(op),
            Some(Err(ClientError::Transaction(_)))
        ));
        // Reconnected: the OID batch was discarded.
        h.now += 1.0;
        h.input(Input::Timer);
        h.bootstrap(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
            Tid(100),
        );
        let op = h.submit(Operation::NewOid);
        let (msg_id, packet) = h.take_sent(h.master.unwrap());
        assert!(matches!(packet, Packet::AskNewOIDs(_)));
        h.answer(
            h.master.unwrap(),
            msg_id,
            protocol::AnswerNewOIDs {
                oid_list: vec![Oid(500)],
            },
        );
        assert_eq!(h.result(op), Some(Ok(Reply::Oid(Oid(500)))));
    }

    #[test]
    fn final_tid_recovery_after_master_loss_during_finish() {
        let mut h = ready(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
        );
        let ttid = Tid(200);
        begin(&mut h, ttid);
        store(&mut h, ttid, 1, 0, b"x");
        let s1 = h.accept_storage(s(1));
        let (msg_id, _) = h.take_sent(s1);
        h.answer(s1, msg_id, store_answer(None));
        let op = h.submit(Operation::TpcVote { ttid });
        let (msg_id, _) = h.take_sent(s1);
        h.answer(s1, msg_id, protocol::AnswerStoreTransaction {});
        assert!(matches!(h.result(op), Some(Ok(Reply::Voted { .. }))));
        let op = h.submit(Operation::TpcFinish { ttid });
        let master = h.master.unwrap();
        let _ = h.take_sent(master);
        h.input(Input::Closed { conn: master });
        assert!(
            h.client.take_completions().is_empty(),
            "finish waits for recovery"
        );
        h.sent.clear();
        h.now += 1.0;
        h.input(Input::Timer);
        h.bootstrap(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
            Tid(201),
        );
        let master = h.master.unwrap();
        let (msg_id, packet) = h.take_sent(master);
        assert_eq!(packet, Packet::AskFinalTID(protocol::AskFinalTID { ttid }));
        // Not pending on the master any more: the storages are asked.
        h.answer(
            master,
            msg_id,
            protocol::AnswerFinalTID {
                tid: Some(Tid::MAX),
            },
        );
        let s1 = h.accept_storage(s(1));
        let (msg_id, packet) = h.take_sent(s1);
        assert_eq!(packet, Packet::AskFinalTID(protocol::AskFinalTID { ttid }));
        h.answer(
            s1,
            msg_id,
            protocol::AnswerFinalTID {
                tid: Some(Tid(201)),
            },
        );
        assert_eq!(h.result(op), Some(Ok(Reply::Tid(Tid(201)))));
    }
}

mod invalidations {
    use super::*;

    #[test]
    fn delivered_in_order_and_applied_to_the_cache() {
        let mut h = ready(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
        );
        let master = h.master.unwrap();
        // Fill the cache with the current revision of oid 1.
        let op = h.submit(Operation::Load { oid: Oid(1) });
        let s1 = h.accept_storage(s(1));
        let (msg_id, _) = h.take_sent(s1);
        // An invalidation arrives while the load is in flight.
        h.notify(
            master,
            protocol::InvalidateObjects {
                tid: Tid(110),
                oid_list: vec![Oid(1)],
            },
        );
        let encoded = codec::encode(&Bytes::from_static(b"v1"), true, 6);
        h.answer(
            s1,
            msg_id,
            protocol::AnswerObject {
                oid: Oid(1),
                serial: Tid(90),
                next_serial: None,
                compression: Some(encoded.compression),
                checksum: encoded.checksum,
                data: encoded.data,
                data_serial: None,
            },
        );
        assert!(matches!(h.result(op), Some(Ok(Reply::Object(_)))));
        h.notify(
            master,
            protocol::InvalidateObjects {
                tid: Tid(120),
                oid_list: vec![Oid(2), Oid(3)],
            },
        );
        assert_eq!(
            h.client.take_invalidations(),
            vec![
                Invalidation::Objects {
                    tid: Tid(110),
                    oids: vec![Oid(1)]
                },
                Invalidation::Objects {
                    tid: Tid(120),
                    oids: vec![Oid(2), Oid(3)]
                },
            ]
        );
        assert_eq!(h.client.last_tid(), Some(Tid(120)));
        // The revision read is valid only until 110: a load before 110 hits the cache,
        // the current one does not.
        let op = h.submit(Operation::LoadBefore {
            oid: Oid(1),
            before: Tid(110),
        });
        match h.result(op) {
            Some(Ok(Reply::Object(record))) => {
                assert_eq!(
                    (record.serial, record.next_serial),
                    (Tid(90), Some(Tid(110)))
                )
            }
            other => panic!("{other:?}"),
        }
        let op = h.submit(Operation::Load { oid: Oid(1) });
        assert_eq!(h.result(op), None);
        let (_, packet) = h.take_sent(s1);
        let Packet::AskObject(ask) = packet else {
            panic!()
        };
        assert_eq!(ask.before, Some(Tid(121)));
        let stats = h.client.cache().stats();
        assert_eq!((stats.hits, stats.misses), (1, 2));
    }

    #[test]
    fn ignored_until_last_transaction_then_full_invalidation() {
        let mut h = ready(
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
        );
        h.input(Input::Closed {
            conn: h.master.unwrap(),
        });
        h.now += 1.0;
        h.input(Input::Timer);
        let (conn, _) = h.take_connect();
        let (msg_id, _) = h.take_sent(conn);
        h.notify(
            conn,
            protocol::InvalidateObjects {
                tid: Tid(105),
                oid_list: vec![Oid(1)],
            },
        );
        h.accept_and_feed(
            conn,
            msg_id,
            &[(s(1), NodeState::Running)],
            vec![vec![cell(s(1), CellState::UpToDate)]],
            Tid(130),
        );
        h.notify(
            conn,
            protocol::InvalidateObjects {
                tid: Tid(140),
                oid_list: vec![Oid(1)],
            },
        );
        assert_eq!(
            h.client.take_invalidations(),
            vec![
                Invalidation::All { last_tid: Tid(130) },
                Invalidation::Objects {
                    tid: Tid(140),
                    oids: vec![Oid(1)]
                },
            ]
        );
    }
}

mod cache {
    use super::*;

    #[test]
    fn bounded_in_bytes_with_statistics() {
        let mut cache = Cache::new(1000);
        for i in 0..100u64 {
            cache.store(Oid(i), Bytes::from(vec![0u8; 100]), Tid(1), None);
            assert!(cache.size() <= 1000);
        }
        let stats = cache.stats();
        assert!(stats.size <= 1000 && stats.size >= 900, "{stats:?}");
        // The last stored are present, the first ones were evicted.
        assert!(cache.load(Oid(99), None).is_some());
        assert!(cache.load(Oid(0), None).is_none());
        // Frequently used objects survive a scan of new ones.
        for _ in 0..20 {
            assert!(cache.load(Oid(99), None).is_some());
        }
        for i in 100..150u64 {
            cache.store(Oid(i), Bytes::from(vec![0u8; 100]), Tid(1), None);
        }
        assert!(cache.load(Oid(99), None).is_some(), "popular entry kept");
        // Too large for the cache: never cached.
        cache.store(Oid(500), Bytes::from(vec![0u8; 1000]), Tid(1), None);
        assert!(cache.load(Oid(500), None).is_none());
        let stats = cache.stats();
        assert_eq!(stats.hits, 22);
        assert_eq!(stats.misses, 2);
        assert!(
            stats.queue_lengths.len() > 2,
            "popular entries climb queues: {stats:?}"
        );
        cache.clear();
        assert_eq!(cache.stats().hits, 0);
        assert_eq!(cache.size(), 0);
    }
}
