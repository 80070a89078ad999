//! The driver against small purpose-built nodes on real sockets: connection ids both ways,
//! requests and answers, closes in both directions, failed connections, timers, and the
//! packet log.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use neo_daemons::driver::Driver;
use neo_net::NetConfig;
use neo_node::io::is_outgoing;
use neo_node::{ConnId, Input, Node, Outbox, Time};
use neo_protocol::{Address, CloseClient, Packet, Ping, Pong};

/// Answers Ping; closes the connection after answering when `close_after_answer`; exits 0
/// on CloseClient, or 1 if it was ever told about a connection it closed itself.
#[derive(Default)]
struct Server {
    close_after_answer: bool,
    accepted: Vec<ConnId>,
    closed_by_me: Vec<ConnId>,
    deadline: Option<Time>,
    wrong: bool,
}

impl Node for Server {
    fn handle(&mut self, now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Accepted { conn, .. } => self.accepted.push(conn),
            Input::Packet {
                conn,
                msg_id,
                packet: Packet::Ping(_),
            } => {
                out.answer(conn, msg_id, Pong {});
                if self.close_after_answer {
                    out.close(conn);
                    self.closed_by_me.push(conn);
                    // Wait a little for a wrongful Closed, then exit.
                    self.deadline = Some(now + 0.3);
                }
            }
            Input::Packet {
                packet: Packet::CloseClient(_),
                ..
            } => out.exit(0, "client done"),
            Input::Closed { conn } if self.closed_by_me.contains(&conn) => self.wrong = true,
            Input::Timer => out.exit(if self.wrong { 1 } else { 0 }, "timer"),
            _ => {}
        }
    }

    fn deadline(&self) -> Option<Time> {
        self.deadline
    }
}

/// Connects, pings, and reports how it went through its exit code.
struct Client {
    server: Address,
    conn: Option<ConnId>,
    ping: Option<u32>,
}

impl Node for Client {
    fn handle(&mut self, _now: Time, input: Input, out: &mut Outbox) {
        match input {
            Input::Start => self.conn = Some(out.connect(self.server.clone())),
            Input::Connected { conn } => {
                assert!(is_outgoing(conn));
                self.ping = Some(out.ask(conn, Ping {}));
            }
            Input::ConnectFailed { .. } => out.exit(3, "connection failed"),
            Input::Answer {
                conn,
                msg_id,
                packet: Packet::Pong(_),
            } if Some(msg_id) == self.ping && Some(conn) == self.conn => {
                out.notify(conn, CloseClient {});
                out.exit(7, "pong");
            }
            Input::Closed { .. } => out.exit(9, "closed by the server"),
            _ => {}
        }
    }

    fn deadline(&self) -> Option<Time> {
        None
    }
}

fn server_driver() -> (Driver, SocketAddr) {
    let driver = Driver::bind(Some("127.0.0.1:0".parse().unwrap()), NetConfig::default()).unwrap();
    let addr = driver.local_addr().unwrap();
    assert_ne!(addr.port(), 0);
    (driver, addr)
}

fn client(addr: SocketAddr) -> Client {
    Client {
        server: Address::from_socket_addr(addr),
        conn: None,
        ping: None,
    }
}

#[test]
fn request_answer_and_exit_codes() {
    let (driver, addr) = server_driver();
    let server = thread::spawn(move || {
        let mut server = Server::default();
        let code = driver.run(&mut server);
        (code, server.accepted)
    });
    let client_driver = Driver::bind(None, NetConfig::default()).unwrap();
    assert_eq!(client_driver.run(&mut client(addr)), 7);
    let (code, accepted) = server.join().unwrap();
    assert_eq!(code, 0);
    assert_eq!(accepted.len(), 1);
    assert!(!is_outgoing(accepted[0]));
}

#[test]
fn a_connection_the_node_closes_is_not_reported_closed() {
    let (driver, addr) = server_driver();
    let server = thread::spawn(move || {
        let mut server = Server {
            close_after_answer: true,
            ..Server::default()
        };
        driver.run(&mut server)
    });
    // The client gets its answer before the close (queued packets are flushed first).
    let client_driver = Driver::bind(None, NetConfig::default()).unwrap();
    assert_eq!(client_driver.run(&mut client(addr)), 7);
    assert_eq!(server.join().unwrap(), 0);
}

#[test]
fn the_peer_closing_is_reported() {
    /// Accepts and closes at once.
    struct Closer;
    impl Node for Closer {
        fn handle(&mut self, _now: Time, input: Input, out: &mut Outbox) {
            if let Input::Accepted { conn, .. } = input {
                out.close(conn);
                out.exit(0, "closed it");
            }
        }
        fn deadline(&self) -> Option<Time> {
            None
        }
    }
    /// Connects and waits for the close.
    struct Waiter(Address);
    impl Node for Waiter {
        fn handle(&mut self, _now: Time, input: Input, out: &mut Outbox) {
            match input {
                Input::Start => {
                    out.connect(self.0.clone());
                }
                Input::Closed { conn } if is_outgoing(conn) => out.exit(9, "closed"),
                Input::ConnectFailed { .. } => out.exit(3, "failed"),
                _ => {}
            }
        }
        fn deadline(&self) -> Option<Time> {
            None
        }
    }
    let (driver, addr) = server_driver();
    let server = thread::spawn(move || driver.run(&mut Closer));
    let waiter = Driver::bind(None, NetConfig::default()).unwrap();
    assert_eq!(waiter.run(&mut Waiter(Address::from_socket_addr(addr))), 9);
    assert_eq!(server.join().unwrap(), 0);
}

#[test]
fn connection_failures_are_reported() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let driver = Driver::bind(None, NetConfig::default()).unwrap();
    assert_eq!(driver.run(&mut client(port)), 3);
    // An address that cannot be resolved fails the same way, without reaching the network.
    let driver = Driver::bind(None, NetConfig::default()).unwrap();
    let mut node = Client {
        server: Address {
            host: "no-such-host.invalid".into(),
            port: 1,
        },
        conn: None,
        ping: None,
    };
    assert_eq!(driver.run(&mut node), 3);
}

#[test]
fn timers_fire_at_the_deadline() {
    struct Sleeper {
        deadline: Option<Time>,
    }
    impl Node for Sleeper {
        fn handle(&mut self, now: Time, input: Input, out: &mut Outbox) {
            match input {
                Input::Start => self.deadline = Some(now + 0.25),
                Input::Timer => {
                    let late = now - self.deadline.unwrap_or(now);
                    out.exit(if (0.0..0.2).contains(&late) { 5 } else { 1 }, "woke up");
                }
                _ => {}
            }
        }
        fn deadline(&self) -> Option<Time> {
            self.deadline
        }
    }
    let started = Instant::now();
    let driver = Driver::bind(None, NetConfig::default()).unwrap();
    assert_eq!(driver.run(&mut Sleeper { deadline: None }), 5);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn packets_go_to_the_sqlite_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.log");
    let logger = neo_logdb::Logger::with_buffer(&path, None).unwrap();
    let (driver, addr) = server_driver();
    let server = thread::spawn(move || driver.run(&mut Server::default()));
    let mut client_driver = Driver::bind(None, NetConfig::default()).unwrap();
    client_driver.set_logger(Arc::new(Mutex::new(logger)), "test");
    assert_eq!(client_driver.run(&mut client(addr)), 7);
    assert_eq!(server.join().unwrap(), 0);

    let mut reader = neo_logdb::LogReader::open(&path).unwrap();
    let mut packets = Vec::new();
    while let Some(record) = reader.next_record() {
        if let neo_logdb::RecordKind::Packet {
            msg_id, name, peer, ..
        } = record.kind
        {
            packets.push(format!("{msg_id} {} {peer}", name.unwrap_or_default()));
        }
    }
    assert_eq!(
        packets,
        [
            format!("0 Ping > None ({addr})"),
            format!("0 Pong < None ({addr})"),
            format!("1 CloseClient > None ({addr})"),
        ]
    );
}
