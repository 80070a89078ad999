//! Integration tests of neo-net over loopback: two endpoints exchanging requests, answers
//! and notifications concurrently with out-of-order answers and a replication stream; bad
//! peers closed with a reason while other connections go on; IPv6; socket options; close
//! and connect failures.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::RecvTimeoutError;
use std::thread;
use std::time::{Duration, Instant};

use neo_net::{CloseReason, ConnectionHandle, Event, Events, Net, NetConfig, Poller, SendError};

/// The receiving end of either kind of [`Net`]: every test runs with events over a channel
/// (tokio reads) and with a [`Poller`] (the test's thread reads plain connections).
enum Rx {
    Channel(Events),
    Polled(Poller),
}

impl Rx {
    fn recv_timeout(&self, timeout: Duration) -> Result<Event, std::sync::mpsc::RecvTimeoutError> {
        match self {
            Rx::Channel(events) => events.recv_timeout(timeout),
            Rx::Polled(poller) => poller.recv_timeout(timeout),
        }
    }
}

fn new_net(polled: bool, config: NetConfig) -> std::io::Result<(Net, Rx)> {
    if polled {
        Net::new_polled(config).map(|(net, poller)| (net, Rx::Polled(poller)))
    } else {
        Net::new(config).map(|(net, events)| (net, Rx::Channel(events)))
    }
}
use neo_protocol::*;

const TIMEOUT: Duration = Duration::from_secs(20);

fn next_event(events: &Rx) -> Event {
    match events.recv_timeout(TIMEOUT) {
        Ok(event) => event,
        Err(RecvTimeoutError::Timeout) => panic!("no event within {TIMEOUT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("event channel closed"),
    }
}

fn accept(events: &Rx) -> ConnectionHandle {
    match next_event(events) {
        Event::Accepted { conn, .. } => conn,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn ask_object(oid: u64) -> AskObject {
    AskObject {
        oid: Oid(oid),
        at: None,
        before: Some(Tid(oid + 1)),
    }
}

#[test]
fn loopback_concurrent_requests_out_of_order_answers_and_notifications_channel() {
    loopback_concurrent_requests_out_of_order_answers_and_notifications(false);
}

#[test]
fn loopback_concurrent_requests_out_of_order_answers_and_notifications_polled() {
    loopback_concurrent_requests_out_of_order_answers_and_notifications(true);
}

fn loopback_concurrent_requests_out_of_order_answers_and_notifications(polled: bool) {
    const CLIENT_THREADS: u64 = 4;
    const PER_THREAD: u64 = 50;
    const SERVER_ASKS: u64 = 20;
    const TOTAL: u64 = CLIENT_THREADS * PER_THREAD;

    let (server, server_events) = new_net(polled, NetConfig::default()).unwrap();
    let addr = server.listen(localhost()).unwrap();
    let (client, client_events) = new_net(polled, NetConfig::default()).unwrap();
    let conn = client.connect(addr);

    // The server's node thread: collects every AskObject, then answers them in reverse
    // order with a notification after each answer; meanwhile it asks the client questions
    // on the same connection and feeds one replication stream.
    let server_thread = thread::spawn(move || {
        let conn = accept(&server_events);
        let mut asked = BTreeMap::new();
        for i in 0..SERVER_ASKS {
            let msg_id = conn.ask(AskLastTransaction {}, 1000 + i).unwrap();
            asked.insert(1000 + i, msg_id);
        }
        let mut requests = Vec::new();
        let mut answers_from_client = BTreeSet::new();
        while requests.len() < TOTAL as usize || answers_from_client.len() < SERVER_ASKS as usize {
            match next_event(&server_events) {
                Event::Packet {
                    msg_id,
                    packet: Packet::AskObject(ask),
                    ..
                } => requests.push((msg_id, ask)),
                Event::Packet {
                    msg_id,
                    packet: Packet::AskFetchTransactions(fetch),
                    ..
                } => {
                    // Replication: notifications under the request's id, then the answer.
                    for i in 0..3u64 {
                        conn.notify_with_id(
                            msg_id,
                            AddTransaction {
                                tid: Tid(fetch.min_tid.0 + i),
                                user: Bytes::from_static(b"u"),
                                description: Bytes::new(),
                                extension: Bytes::new(),
                                packed: false,
                                ttid: Tid(fetch.min_tid.0 + i),
                                oid_list: vec![Oid(i)],
                                pack: None,
                            },
                        )
                        .unwrap();
                    }
                    conn.answer(
                        msg_id,
                        AnswerFetchTransactions {
                            next_tid: None,
                            tid_list: vec![],
                            completed_pack: None,
                        },
                    )
                    .unwrap();
                }
                Event::Answer {
                    context: Some(context),
                    msg_id,
                    packet: Packet::AnswerLastTransaction(answer),
                    ..
                } => {
                    assert_eq!(asked.get(&context), Some(&msg_id));
                    // The client answers with the msg_id as the TID, to prove correlation.
                    assert_eq!(answer.tid, Tid(msg_id as u64));
                    assert!(answers_from_client.insert(context), "answered twice");
                }
                other => panic!("server: unexpected {other:?}"),
            }
        }
        assert_eq!(conn.pending_requests(), 0);
        for (msg_id, ask) in requests.iter().rev() {
            conn.answer(
                *msg_id,
                AnswerObject {
                    oid: ask.oid,
                    serial: ask.before.unwrap(),
                    next_serial: None,
                    compression: Some(0),
                    checksum: ZERO_HASH,
                    data: Bytes::from(vec![ask.oid.0 as u8; (ask.oid.0 % 7 * 1000) as usize]),
                    data_serial: None,
                },
            )
            .unwrap();
            conn.notify(NotifyClusterInformation {
                state: ClusterState::Running,
            })
            .unwrap();
        }
        let ids: BTreeSet<u32> = requests.iter().map(|r| r.0).collect();
        assert_eq!(ids.len(), TOTAL as usize, "msg_ids are unique");
        (conn, server_events)
    });

    // The client: several threads send requests at once through clones of the handle.
    let senders: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let conn = conn.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let oid = t * PER_THREAD + i;
                    conn.ask(ask_object(oid), oid).unwrap();
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let fetch_id = conn
        .ask(
            AskFetchTransactions {
                partition: 0,
                length: 1000,
                min_tid: Tid(100),
                max_tid: Tid::MAX,
                tid_list: vec![],
                ask_pack_info: false,
            },
            9999,
        )
        .unwrap();

    let mut answered = BTreeSet::new();
    let mut answer_order = Vec::new();
    let mut notifications = 0;
    let mut streamed = Vec::new();
    let mut fetch_answered = false;
    let mut server_asks = 0;
    while answered.len() < TOTAL as usize
        || notifications < TOTAL
        || !fetch_answered
        || server_asks < SERVER_ASKS
    {
        match next_event(&client_events) {
            Event::Connected { .. } => {}
            Event::Answer {
                context: Some(context),
                packet: Packet::AnswerObject(answer),
                ..
            } => {
                assert_eq!(
                    answer.oid,
                    Oid(context),
                    "answer matched to the wrong request"
                );
                assert_eq!(answer.data.len() as u64, context % 7 * 1000);
                assert!(answered.insert(context));
                answer_order.push(context);
            }
            Event::Answer {
                context: Some(9999),
                msg_id,
                packet: Packet::AnswerFetchTransactions(_),
                ..
            } => {
                assert_eq!(msg_id, fetch_id);
                assert_eq!(streamed.len(), 3, "the stream comes before the answer");
                fetch_answered = true;
            }
            Event::Packet {
                msg_id,
                packet: Packet::AddTransaction(add),
                ..
            } => {
                assert_eq!(msg_id, fetch_id, "streamed under the request's id");
                assert!(!fetch_answered);
                streamed.push(add.tid);
            }
            Event::Packet {
                packet: Packet::NotifyClusterInformation(_),
                ..
            } => notifications += 1,
            Event::Packet {
                msg_id,
                packet: Packet::AskLastTransaction(_),
                ..
            } => {
                conn.answer(
                    msg_id,
                    AnswerLastTransaction {
                        tid: Tid(msg_id as u64),
                    },
                )
                .unwrap();
                server_asks += 1;
            }
            other => panic!("client: unexpected {other:?}"),
        }
    }
    assert_eq!(streamed, vec![Tid(100), Tid(101), Tid(102)]);
    assert_eq!(conn.pending_requests(), 0);
    // The answers really came out of order (the server answered newest first).
    let mut sorted = answer_order.clone();
    sorted.sort_unstable();
    assert_ne!(answer_order, sorted);

    // Clean close from the client: the server sees the peer close, the client sees its own.
    let (server_conn, server_events) = server_thread.join().unwrap();
    conn.close();
    match next_event(&client_events) {
        Event::Closed {
            reason, pending, ..
        } => {
            assert_eq!(reason, CloseReason::Local);
            assert!(pending.is_empty());
        }
        other => panic!("client: unexpected {other:?}"),
    }
    match next_event(&server_events) {
        Event::Closed { conn, reason, .. } => {
            assert_eq!(conn, server_conn.id());
            assert_eq!(reason, CloseReason::PeerClosed);
        }
        other => panic!("server: unexpected {other:?}"),
    }
    assert!(matches!(conn.ask(Ping {}, 0), Err(SendError::Closed)));
    drop(server_conn);
    server.shutdown(TIMEOUT);
    client.shutdown(TIMEOUT);
}

/// Sends raw bytes to the server and returns everything it sends back until it closes.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut received = Vec::new();
    // The server closes without reading everything: a reset is a close too.
    let _ = stream.read_to_end(&mut received);
    received
}

#[test]
fn bad_peers_are_closed_with_a_reason_and_others_go_on_channel() {
    bad_peers_are_closed_with_a_reason_and_others_go_on(false);
}

#[test]
fn bad_peers_are_closed_with_a_reason_and_others_go_on_polled() {
    bad_peers_are_closed_with_a_reason_and_others_go_on(true);
}

fn bad_peers_are_closed_with_a_reason_and_others_go_on(polled: bool) {
    let config = NetConfig {
        max_packet_size: 1 << 20,
        ..NetConfig::default()
    };
    let (server, events) = new_net(polled, config).unwrap();
    let addr = server.listen(localhost()).unwrap();
    let (client, client_events) = new_net(polled, NetConfig::default()).unwrap();
    let good = client.connect(addr);
    let good_on_server = accept(&events);
    good.ask(Ping {}, 1).unwrap();
    match next_event(&events) {
        Event::Packet {
            msg_id,
            packet: Packet::Ping(_),
            ..
        } => good_on_server.answer(msg_id, Pong {}).unwrap(),
        other => panic!("unexpected {other:?}"),
    }

    let mut oversized = HANDSHAKE.to_vec();
    oversized.extend_from_slice(&[
        0x93, 0x00, 0xcd, 0x80, 0x20, 0x97, 0xc6, 0x10, 0x00, 0x00, 0x00,
    ]);
    let mut unknown_code = HANDSHAKE.to_vec();
    unknown_code.extend_from_slice(&[0x93, 0x00, 0x4a, 0x90]);
    let mut bad_msgpack = HANDSHAKE.to_vec();
    bad_msgpack.extend_from_slice(&[0x93, 0x00, 0x02, 0xc1]);
    let mut bad_ext = HANDSHAKE.to_vec();
    bad_ext.extend_from_slice(&[0x93, 0x00, 0x2d, 0x91, 0xd4, 0x07, 0x01]);
    type Case = (&'static str, Vec<u8>, fn(&CloseReason) -> bool);
    let cases: Vec<Case> = vec![
        (
            "other version",
            vec![0x92, 0xa3, b'N', b'E', b'O', 4],
            |r| {
                matches!(
                    r,
                    CloseReason::Decode(DecodeError {
                        kind: DecodeErrorKind::VersionMismatch(4),
                        ..
                    })
                )
            },
        ),
        ("not NEO", b"GET / HTTP/1.0\r\n\r\n".to_vec(), |r| {
            matches!(
                r,
                CloseReason::Decode(DecodeError {
                    kind: DecodeErrorKind::NotNeo,
                    ..
                })
            )
        }),
        ("unknown code", unknown_code, |r| {
            matches!(
                r,
                CloseReason::Decode(DecodeError {
                    kind: DecodeErrorKind::UnknownPacketCode(0x4a),
                    offset: 8
                })
            )
        }),
        ("invalid marker", bad_msgpack, |r| {
            matches!(
                r,
                CloseReason::Decode(DecodeError {
                    kind: DecodeErrorKind::InvalidMarker(0xc1),
                    ..
                })
            )
        }),
        ("unknown ext", bad_ext, |r| {
            matches!(
                r,
                CloseReason::Decode(DecodeError {
                    kind: DecodeErrorKind::UnknownExtType(7),
                    ..
                })
            )
        }),
        ("oversized", oversized, |r| {
            matches!(
                r,
                CloseReason::Decode(DecodeError {
                    kind: DecodeErrorKind::PacketTooLarge { .. },
                    ..
                })
            )
        }),
        (
            "truncated",
            [&HANDSHAKE[..], &[0x93, 0x00][..]].concat(),
            |r| matches!(r, CloseReason::PeerClosedMidPacket { buffered: 2 }),
        ),
    ];
    for (name, bytes, expected) in &cases {
        let truncated = *name == "truncated";
        // The peer runs on its own thread: with a Poller, its bytes are read only while
        // this thread waits for events.
        let bytes = bytes.clone();
        let peer = std::thread::spawn(move || {
            if truncated {
                // Send half a packet, then close our side.
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.write_all(&bytes).unwrap();
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                let mut received = Vec::new();
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                let _ = stream.read_to_end(&mut received);
                received
            } else {
                raw_exchange(addr, &bytes)
            }
        });
        let conn = accept(&events);
        match next_event(&events) {
            Event::Closed {
                conn: id, reason, ..
            } => {
                assert_eq!(id, conn.id());
                assert!(expected(&reason), "{name}: {reason}");
                // The reason reads well in a log line.
                assert!(!reason.to_string().is_empty());
            }
            other => panic!("{name}: unexpected {other:?}"),
        }
        // Our handshake is sent at once, whatever the peer sends; nothing follows it.
        let received = peer.join().unwrap();
        assert_eq!(received, HANDSHAKE, "{name}");
    }

    // An answer to no request: the peer gets Error(PROTOCOL_ERROR) under that id, then EOF.
    let mut stray_answer = HANDSHAKE.to_vec();
    encode_message(
        &mut stray_answer,
        7,
        &Packet::AnswerLastTransaction(AnswerLastTransaction { tid: Tid(1) }),
    );
    let peer = std::thread::spawn(move || raw_exchange(addr, &stray_answer));
    let conn = accept(&events);
    match next_event(&events) {
        Event::Closed {
            conn: id,
            reason: CloseReason::Protocol(why),
            ..
        } => {
            assert_eq!(id, conn.id());
            assert!(why.contains("AnswerLastTransaction"), "{why}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let received = peer.join().unwrap();
    let mut decoder = Decoder::new(HandshakeMode::Expect);
    decoder.feed(&received);
    let message = decoder.next_message().unwrap().unwrap();
    assert_eq!(message.msg_id, 7);
    assert!(matches!(
        message.packet,
        Packet::Error(Error {
            code: ErrorCode::ProtocolError,
            ..
        })
    ));

    // Meanwhile the good connection kept working.
    let mut got_pong = false;
    while !got_pong {
        match next_event(&client_events) {
            Event::Connected { .. } => {}
            Event::Answer {
                context: Some(1),
                packet: Packet::Pong(_),
                ..
            } => got_pong = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    // An Error matching no request is delivered without context, not treated as fatal.
    good_on_server
        .answer(4242, Packet::error(ErrorCode::Denied, "no such partition"))
        .unwrap();
    match next_event(&client_events) {
        Event::Answer {
            context: None,
            msg_id: 4242,
            packet: Packet::Error(e),
            ..
        } => assert_eq!(e.code, ErrorCode::Denied),
        other => panic!("unexpected {other:?}"),
    }
    good.ask(Ping {}, 2).unwrap();
    match next_event(&events) {
        Event::Packet {
            msg_id,
            packet: Packet::Ping(_),
            ..
        } => good_on_server.answer(msg_id, Pong {}).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        next_event(&client_events),
        Event::Answer {
            context: Some(2),
            packet: Packet::Pong(_),
            ..
        }
    ));
    drop(good_on_server);
    server.shutdown(TIMEOUT);
    client.shutdown(TIMEOUT);
}

#[test]
fn ipv6_loopback_channel() {
    ipv6_loopback(false);
}

#[test]
fn ipv6_loopback_polled() {
    ipv6_loopback(true);
}

fn ipv6_loopback(polled: bool) {
    let (server, events) = new_net(polled, NetConfig::default()).unwrap();
    let addr = match server.listen("[::1]:0".parse().unwrap()) {
        Ok(addr) => addr,
        Err(e) => {
            // Some sandboxes have no IPv6 at all; say so rather than pass silently.
            eprintln!("ipv6_loopback: skipped, cannot listen on [::1]: {e}");
            return;
        }
    };
    let (client, client_events) = new_net(polled, NetConfig::default()).unwrap();
    let conn = client.connect(addr);
    conn.ask(AskClusterState {}, 5).unwrap();
    let server_conn = accept(&events);
    assert!(server_conn.peer_addr().is_ipv6());
    assert_eq!(
        Address::from_socket_addr(addr).to_socket_addr(),
        Some(addr),
        "the wire form of an IPv6 address maps back"
    );
    match next_event(&events) {
        Event::Packet {
            msg_id,
            packet: Packet::AskClusterState(_),
            ..
        } => server_conn
            .answer(
                msg_id,
                AnswerClusterState {
                    state: Some(ClusterState::Running),
                },
            )
            .unwrap(),
        other => panic!("unexpected {other:?}"),
    }
    loop {
        match next_event(&client_events) {
            Event::Connected { .. } => {}
            Event::Answer {
                context: Some(5),
                packet: Packet::AnswerClusterState(a),
                ..
            } => {
                assert_eq!(a.state, Some(ClusterState::Running));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn sockets_get_keepalive_and_nodelay() {
    let listener = std::net::TcpListener::bind(localhost()).unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    neo_net::socket::configure_stream(&stream).unwrap();
    let socket = socket2::SockRef::from(&stream);
    assert!(socket.tcp_nodelay().unwrap());
    assert!(socket.keepalive().unwrap());
    assert_eq!(
        socket.tcp_keepalive_time().unwrap(),
        Duration::from_secs(60)
    );
    assert_eq!(
        socket.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(10)
    );
    assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
}

#[test]
fn connect_failure_close_and_shutdown_are_reported_channel() {
    connect_failure_close_and_shutdown_are_reported(false);
}

#[test]
fn connect_failure_close_and_shutdown_are_reported_polled() {
    connect_failure_close_and_shutdown_are_reported(true);
}

fn connect_failure_close_and_shutdown_are_reported(polled: bool) {
    // A port with nothing listening.
    let free = std::net::TcpListener::bind(localhost())
        .unwrap()
        .local_addr()
        .unwrap();
    let (net, events) = new_net(polled, NetConfig::default()).unwrap();
    let conn = net.connect(free);
    match next_event(&events) {
        Event::ConnectFailed { conn: id, addr, .. } => {
            assert_eq!((id, addr), (conn.id(), free));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Packets queued before the connection is up go out right after the handshake; pending
    // requests are listed when the connection closes.
    let addr = net.listen(localhost()).unwrap();
    let conn = net.connect(addr);
    let msg_id = conn.ask(AskLastIDs {}, 77).unwrap();
    conn.notify(NotifyReady {}).unwrap();
    assert!(matches!(
        conn.ask(NotifyReady {}, 0),
        Err(SendError::NotARequest(_))
    ));
    assert!(matches!(
        conn.answer(0, Ping {}),
        Err(SendError::NotAnAnswer(_))
    ));
    let mut accepted = None;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match next_event(&events) {
            Event::Connected { .. } => {}
            Event::Accepted { conn, .. } => accepted = Some(conn),
            Event::Packet { packet, .. } => seen.push(packet.name()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["AskLastIDs", "NotifyReady"]);
    let accepted = accepted.unwrap();
    // Shutdown closes both ends; the asker learns its request will not be answered.
    let started = Instant::now();
    net.shutdown(TIMEOUT);
    assert!(started.elapsed() < TIMEOUT);
    let mut closed = BTreeMap::new();
    while let Ok(event) = events.recv_timeout(Duration::from_millis(500)) {
        if let Event::Closed {
            conn,
            reason,
            pending,
        } = event
        {
            closed.insert(conn, (reason, pending));
        }
    }
    assert_eq!(
        closed.get(&conn.id()),
        Some(&(CloseReason::Shutdown, vec![(msg_id, 77)]))
    );
    assert!(closed.contains_key(&accepted.id()));
}

/// Interop with a real NEO/py master, when one is available locally (CI cannot fetch it):
/// `NEO_PY_DIR=/path/to/neoppod NEO_PY_PYTHON=/path/to/venv/bin/python cargo test -p neo-net
/// --test net neo_py_master`. Without those variables the test says so and does nothing.
#[test]
fn neo_py_master_accepts_our_admin_channel() {
    neo_py_master_accepts_our_admin(false);
}

#[test]
fn neo_py_master_accepts_our_admin_polled() {
    neo_py_master_accepts_our_admin(true);
}

fn neo_py_master_accepts_our_admin(polled: bool) {
    let (Ok(dir), Ok(python)) = (std::env::var("NEO_PY_DIR"), std::env::var("NEO_PY_PYTHON"))
    else {
        eprintln!("neo_py_master_accepts_our_admin: skipped (set NEO_PY_DIR and NEO_PY_PYTHON)");
        return;
    };
    // A free port below the ephemeral range, in a range of its own for each variant: the
    // two run in parallel, and the same first free port would make their masters collide.
    let first = if polled { 26000 } else { 21000 };
    let port = (first..first + 5000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap();
    let master_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut master = std::process::Command::new(&python)
        .current_dir(&dir)
        .env("PYTHONPATH", &dir)
        .args([
            "neomaster",
            "-c",
            "neo-rs-interop",
            "-p",
            "3",
            "-r",
            "0",
            "-b",
        ])
        .arg(master_addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("NEO/py master starts");
    let result = std::panic::catch_unwind(|| {
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect(master_addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the NEO/py master does not listen"
            );
            thread::sleep(Duration::from_millis(100));
        }
        let (net, events) = new_net(polled, NetConfig::default()).unwrap();
        let own = net.listen(localhost()).unwrap();
        let conn = net.connect(master_addr);
        conn.ask(
            RequestIdentification {
                node_type: NodeType::Admin,
                nid: None,
                address: Some(Address::from_socket_addr(own)),
                cluster_name: Bytes::from_static(b"neo-rs-interop"),
                id_timestamp: None,
                extra: Dict(vec![(Bytes::from_static(b"backup"), Value::Array(vec![]))]),
            },
            0,
        )
        .unwrap();
        conn.ask(AskClusterState {}, 1).unwrap();
        let (mut our_nid, mut nodes, mut partitions, mut state) = (None, None, None, None);
        while our_nid.is_none() || nodes.is_none() || partitions.is_none() || state.is_none() {
            match next_event(&events) {
                Event::Answer {
                    context: Some(0),
                    packet: Packet::AcceptIdentification(a),
                    ..
                } => {
                    assert_eq!(a.node_type, NodeType::Master);
                    assert_eq!(a.nid, Some(Nid::new(NodeType::Master, 1)));
                    our_nid = a.your_nid;
                }
                Event::Packet {
                    packet: Packet::NotifyNodeInformation(info),
                    ..
                } => nodes = Some(info.node_list),
                Event::Packet {
                    packet: Packet::SendPartitionTable(pt),
                    ..
                } => partitions = Some(pt.row_list.len()),
                Event::Answer {
                    context: Some(1),
                    packet: Packet::AnswerClusterState(s),
                    ..
                } => state = Some(s.state),
                Event::Connected { .. } | Event::Packet { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let our_nid = our_nid.unwrap();
        assert_eq!(our_nid.node_type(), Some(NodeType::Admin));
        let nodes = nodes.unwrap();
        // The list starts with the receiving node itself, with its id_timestamp.
        assert_eq!(nodes[0].nid, Some(our_nid));
        assert_eq!(
            nodes[0].address.as_ref().and_then(|a| a.to_socket_addr()),
            Some(own)
        );
        assert!(nodes[0].id_timestamp.is_some());
        assert!(nodes.iter().any(|n| n.node_type == NodeType::Master
            && n.address.as_ref().and_then(|a| a.to_socket_addr()) == Some(master_addr)));
        assert_eq!(partitions, Some(3));
        // No storage: the cluster stays in recovery.
        assert_eq!(state, Some(Some(ClusterState::Recovering)));
        conn.close();
        net.shutdown(TIMEOUT);
    });
    let _ = master.kill();
    let _ = master.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Packets written by the sending threads themselves (plain TCP) and by the connection
/// task (when the socket buffer is full, or after a close) keep their order: several
/// threads send large notifications on one connection while the peer reads slowly, and
/// each thread's packets arrive in the order it sent them, none lost, none mixed.
#[test]
fn direct_and_queued_writes_keep_the_stream_in_order_channel() {
    direct_and_queued_writes_keep_the_stream_in_order(false);
}

#[test]
fn direct_and_queued_writes_keep_the_stream_in_order_polled() {
    direct_and_queued_writes_keep_the_stream_in_order(true);
}

fn direct_and_queued_writes_keep_the_stream_in_order(polled: bool) {
    const THREADS: u64 = 3;
    const PER_THREAD: u64 = 200;
    let (server, server_events) = new_net(polled, NetConfig::default()).unwrap();
    let addr = server.listen(localhost()).unwrap();
    let (client, client_events) = new_net(polled, NetConfig::default()).unwrap();
    let conn = client.connect(addr);
    let server_conn = accept(&server_events);
    assert!(matches!(
        next_event(&client_events),
        Event::Connected { .. }
    ));
    let senders: Vec<_> = (0..THREADS)
        .map(|thread| {
            let conn = conn.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    // 64 KiB and more: a few of them fill the socket buffers, so that
                    // some writes are partial and the rest goes through the task.
                    let size = 60_000 + (i as usize % 7) * 1000;
                    let packet = AddObject {
                        oid: Oid(thread),
                        serial: Tid(i),
                        compression: 0,
                        checksum: [0; 20],
                        data: Bytes::from(vec![thread as u8; size]),
                        data_serial: None,
                    };
                    conn.notify(packet).unwrap();
                }
            })
        })
        .collect();
    let mut next = BTreeMap::new();
    for _ in 0..THREADS * PER_THREAD {
        match next_event(&server_events) {
            Event::Packet {
                packet: Packet::AddObject(add),
                ..
            } => {
                let expected = next.entry(add.oid.0).or_insert(0u64);
                assert_eq!(
                    add.serial,
                    Tid(*expected),
                    "thread {} out of order",
                    add.oid.0
                );
                assert!(add.data.iter().all(|b| *b == add.oid.0 as u8));
                *expected += 1;
                // Read slowly at first, so that the client's socket buffer fills up.
                if add.serial.0 < 3 {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for sender in senders {
        sender.join().unwrap();
    }
    assert_eq!(
        next.values().copied().collect::<Vec<_>>(),
        vec![PER_THREAD; THREADS as usize]
    );
    // A close after direct writes still sends everything first.
    conn.notify(AddObject {
        oid: Oid(9),
        serial: Tid(1),
        compression: 0,
        checksum: [0; 20],
        data: Bytes::from_static(b"last"),
        data_serial: None,
    })
    .unwrap();
    conn.close();
    match next_event(&server_events) {
        Event::Packet {
            packet: Packet::AddObject(add),
            ..
        } => assert_eq!(add.data.as_ref(), b"last"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        next_event(&server_events),
        Event::Closed {
            reason: CloseReason::PeerClosed,
            ..
        }
    ));
    drop(server_conn);
}
