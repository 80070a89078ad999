//! neoctl: controls a NEO cluster through its admin node, with NEO/py's command words,
//! outputs, messages and exit codes (tools.md 1.5 and section 2), plus `--json` output for
//! the print commands. The client is blocking: one connection to the admin (no
//! identification, as NEO/py's neoctl), one request at a time, over `neo-net`.
//!
//! Ports the behaviour of NEO/py's `neo/neoctl`, not its code. Must not depend on any node
//! logic crate: everything it shows comes from the admin's answers.

pub mod command;
pub mod format;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use neo_logdb::writer::{Level, Logger};
use neo_net::{ConnectionHandle, Event, Events, Net, NetConfig};
use neo_protocol::*;
use serde_json::Value as Json;

use command::{CheckPartition, Command, ParseError, Storages};

/// Why neoctl failed; [`Failure::exit_code`] and [`Failure::message`] say how it ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The command line is wrong.
    Parse(ParseError),
    /// The admin could not be reached.
    NotConnected,
    /// The admin closed the connection before answering.
    ConnectionClosed,
    /// The admin answered NOT_READY (typically: no primary master).
    NotReady(String),
    /// The master refused the request (DENIED): its message alone is printed.
    Denied(String),
    /// Any other error or unexpected answer.
    Unexpected(String),
    /// No answer within the timeout.
    Timeout(Duration),
    /// A local problem (log file, network runtime).
    Local(String),
}

impl Failure {
    /// 2 for usage errors, 1 for everything else (tools.md 2.1).
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Parse(ParseError::Usage(_)) => 2,
            _ => 1,
        }
    }

    /// The line written to stderr.
    pub fn message(&self) -> String {
        match self {
            Failure::Parse(ParseError::Usage(message)) => format!("neoctl: {message}"),
            Failure::Parse(error) => error.to_string(),
            Failure::NotConnected => "ERROR: not connected".to_string(),
            Failure::ConnectionClosed => "ERROR: Connection closed".to_string(),
            Failure::NotReady(message) => format!("ERROR: {message}"),
            Failure::Denied(message) => message.clone(),
            Failure::Unexpected(message) => {
                format!("neoctl: unexpected answer from the admin: {message}")
            }
            Failure::Timeout(timeout) => {
                format!(
                    "ERROR: no answer from the admin within {} s",
                    timeout.as_secs_f64()
                )
            }
            Failure::Local(message) => format!("neoctl: {message}"),
        }
    }
}

impl From<ParseError> for Failure {
    fn from(error: ParseError) -> Failure {
        Failure::Parse(error)
    }
}

/// What a successful command prints: nothing, a text (followed by a newline), or JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Nothing,
    Text(String),
    Json(Json),
}

/// NEO/py's address syntax for `-a`: `host:port`, `[ipv6]:port`, or `host` alone with the
/// default port; names are resolved once.
pub fn parse_address(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid address: {text}"))?;
        match tail.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if tail.is_empty() => (host, None),
            None => return Err(format!("invalid address: {text}")),
        }
    } else {
        match text.rsplit_once(':') {
            // A bare IPv6 address has several colons and no port.
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (text, None),
        }
    };
    let port = match port {
        Some(port) => port
            .parse()
            .map_err(|_| format!("invalid port in address: {text}"))?,
        None => default_port,
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host}"))
}

/// A blocking connection to an admin node.
pub struct Client {
    events: Events,
    conn: ConnectionHandle,
    timeout: Duration,
    logger: Option<Logger>,
    /// Dropped last, after the connection.
    _net: Net,
}

impl Client {
    /// Connects to the admin at `address`; `timeout` bounds every wait.
    pub fn connect(
        address: SocketAddr,
        timeout: Duration,
        logfile: Option<&Path>,
    ) -> Result<Client, Failure> {
        let logger = match logfile {
            Some(path) => {
                // Unlike daemons, neoctl writes every record at once (tools.md 1.5).
                let logger = Logger::with_buffer(path, None).map_err(|e| {
                    Failure::Local(format!("opening log file {}: {e}", path.display()))
                })?;
                Some(logger)
            }
            None => None,
        };
        let (net, events) = Net::new(NetConfig::default())
            .map_err(|e| Failure::Local(format!("starting the network: {e}")))?;
        let conn = net.connect(address);
        let mut client = Client {
            events,
            conn,
            timeout,
            logger,
            _net: net,
        };
        client.log(&format!("connecting to {address}"));
        let deadline = Instant::now() + timeout;
        loop {
            match client.next_event(deadline)? {
                Event::Connected { .. } => return Ok(client),
                Event::ConnectFailed { error, .. } => {
                    client.log(&format!("connection to {address} failed: {error}"));
                    return Err(Failure::NotConnected);
                }
                Event::Closed { .. } => return Err(Failure::NotConnected),
                _ => {}
            }
        }
    }

    /// Sends a request and waits for its answer. NOT_READY and DENIED become failures, as
    /// in NEO/py; other Error answers are returned to the caller.
    pub fn ask(&mut self, packet: impl Into<Packet>) -> Result<Packet, Failure> {
        let packet = packet.into();
        let msg_id = self
            .conn
            .ask(packet.clone(), 0)
            .map_err(|_| Failure::ConnectionClosed)?;
        self.log_packet(msg_id, &packet, true);
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.next_event(deadline)? {
                Event::Answer {
                    msg_id: answered,
                    packet,
                    ..
                } if answered == msg_id => {
                    self.log_packet(msg_id, &packet, false);
                    return match packet {
                        Packet::Error(e) if e.code == ErrorCode::NotReady => {
                            Err(Failure::NotReady(text(&e.message)))
                        }
                        Packet::Error(e) if e.code == ErrorCode::Denied => {
                            Err(Failure::Denied(text(&e.message)))
                        }
                        packet => Ok(packet),
                    };
                }
                Event::Closed { .. } => return Err(Failure::ConnectionClosed),
                Event::Packet { msg_id, packet, .. } | Event::Answer { msg_id, packet, .. } => {
                    self.log_packet(msg_id, &packet, false);
                }
                _ => {}
            }
        }
    }

    /// Sends a notification and waits until it is written and the connection closed.
    pub fn send(&mut self, packet: impl Into<Packet>) -> Result<(), Failure> {
        let packet = packet.into();
        let msg_id = self
            .conn
            .notify(packet.clone())
            .map_err(|_| Failure::ConnectionClosed)?;
        self.log_packet(msg_id, &packet, true);
        self.conn.close();
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Event::Closed { .. } = self.next_event(deadline)? {
                return Ok(());
            }
        }
    }

    fn next_event(&mut self, deadline: Instant) -> Result<Event, Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(event) => Ok(event),
            Err(RecvTimeoutError::Timeout) => Err(Failure::Timeout(self.timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(Failure::ConnectionClosed),
        }
    }

    fn log(&mut self, message: &str) {
        if let Some(logger) = &mut self.logger {
            // A log that cannot be written must not change the command's outcome.
            let _ = logger.log(Level::INFO, file!(), line!(), message);
        }
    }

    fn log_packet(&mut self, msg_id: u32, packet: &Packet, outgoing: bool) {
        if let Some(logger) = &mut self.logger {
            let _ = logger.packet(msg_id, packet, outgoing, None, Some(self.conn.peer_addr()));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.conn.close();
        if let Some(logger) = &mut self.logger {
            let _ = logger.flush();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn unexpected(packet: &Packet) -> Failure {
    match packet {
        Packet::Error(e) => {
            Failure::Unexpected(format!("{} ({})", e.code.py_name(), text(&e.message)))
        }
        other => Failure::Unexpected(other.name().to_string()),
    }
}

/// Runs a parsed command against the admin (`connect` opens the connection only when
/// the command needs one). `json` selects the JSON form of the print commands.
pub fn execute(
    command: &Command,
    json: bool,
    connect: impl FnOnce() -> Result<Client, Failure>,
) -> Result<Output, Failure> {
    match command {
        Command::List => return Ok(Output::Text(command::usage(&[]))),
        Command::Help(path) => return Ok(Output::Text(command::usage(path))),
        _ => {}
    }
    let mut client = connect()?;
    let client = &mut client;
    let output = match command {
        Command::List | Command::Help(_) => unreachable!("handled above"),
        Command::PrintIds => {
            let recovery = match client.ask(AskRecovery {})? {
                Packet::AnswerRecovery(p) => p,
                other => return Err(unexpected(&other)),
            };
            let (last_tid, last_oid) = match recovery.backup_tid {
                Some(_) => match client.ask(AskLastTransaction {})? {
                    Packet::AnswerLastTransaction(p) => (p.tid, None),
                    other => return Err(unexpected(&other)),
                },
                None => match client.ask(AskLastIDs {})? {
                    Packet::AnswerLastIDs(p) => (
                        p.last_tid.unwrap_or(Tid::ZERO),
                        Some(p.last_oid.unwrap_or(Oid::ZERO)),
                    ),
                    other => return Err(unexpected(&other)),
                },
            };
            if json {
                Output::Json(format::ids_json(
                    recovery.ptid,
                    recovery.backup_tid,
                    last_tid,
                    last_oid,
                ))
            } else {
                Output::Text(format::ids(
                    recovery.ptid,
                    recovery.backup_tid,
                    last_tid,
                    last_oid,
                ))
            }
        }
        Command::PrintPt { min, max, node } => {
            let answer = match client.ask(AskPartitionList {
                min_offset: *min,
                max_offset: *max,
                nid: *node,
            })? {
                Packet::AnswerPartitionList(p) => p,
                other => return Err(unexpected(&other)),
            };
            if json {
                Output::Json(format::partition_table_json(
                    answer.ptid,
                    answer.num_replicas,
                    &answer.row_list,
                    *min,
                ))
            } else {
                let storages = if *min == 0 && *max == 0 {
                    storage_list(client)?
                } else {
                    Vec::new()
                };
                Output::Text(format::partition_table(
                    answer.ptid,
                    answer.num_replicas,
                    &answer.row_list,
                    *min,
                    *max,
                    &storages,
                ))
            }
        }
        Command::PrintNode(node_type) => {
            let nodes = node_list(client, *node_type)?;
            if json {
                Output::Json(format::node_list_json(&nodes))
            } else {
                let lines = format::node_list(&nodes);
                Output::Text(if lines.is_empty() {
                    "Empty list!".to_string()
                } else {
                    lines.join("\n")
                })
            }
        }
        Command::PrintCluster => match client.ask(AskClusterState {})? {
            Packet::AnswerClusterState(p) if json => Output::Json(serde_json::json!({
                "state": p.state.map(|s| s.py_name()),
            })),
            Packet::AnswerClusterState(p) => Output::Text(format::cluster_state(p.state)),
            other => return Err(unexpected(&other)),
        },
        Command::PrintPrimary => match client.ask(AskPrimary {})? {
            Packet::AnswerPrimary(p) if json => Output::Json(serde_json::json!({
                "primary": format::nid_text(Some(p.primary_nid)),
            })),
            Packet::AnswerPrimary(p) => Output::Text(format::nid_text(Some(p.primary_nid))),
            other => return Err(unexpected(&other)),
        },
        Command::PrintSummary => match client.ask(AskMonitorInformation {})? {
            Packet::AnswerMonitorInformation(p) => {
                let names = |list: &[Option<Bytes>]| -> Vec<Option<String>> {
                    list.iter().map(|n| n.as_deref().map(text)).collect()
                };
                let (warning, problem) = (names(&p.warning), names(&p.problem));
                let summary = text(&p.summary);
                if json {
                    Output::Json(format::summary_json(&warning, &problem, &summary))
                } else {
                    Output::Text(format::summary(&warning, &problem, &summary))
                }
            }
            other => return Err(unexpected(&other)),
        },
        Command::SetCluster(state) => acknowledged(client, SetClusterState { state: *state })?,
        Command::Start => acknowledged(
            client,
            SetClusterState {
                state: ClusterState::Verifying,
            },
        )?,
        Command::SetReplicas(n) => acknowledged(client, SetNumReplicas { num_replicas: *n })?,
        Command::Add(storages) => {
            let nid_list = resolve_storages(client, storages)?;
            acknowledged(client, AddPendingNodes { nid_list })?
        }
        Command::Tweak { dry_run, nodes } => match client.ask(TweakPartitionTable {
            dry_run: *dry_run,
            nid_list: nodes.clone(),
        })? {
            Packet::AnswerTweakPartitionTable(p) if p.changed => {
                let storages = storage_list(client)?;
                Output::Text(format::table(&p.row_list, &storages))
            }
            Packet::AnswerTweakPartitionTable(_) => Output::Text("No change done.".to_string()),
            other => return Err(unexpected(&other)),
        },
        Command::Kill(nid) => acknowledged(
            client,
            SetNodeState {
                nid: *nid,
                state: NodeState::Down,
            },
        )?,
        Command::Drop(nid) => acknowledged(
            client,
            SetNodeState {
                nid: *nid,
                state: NodeState::Unknown,
            },
        )?,
        Command::PruneOrphan { dry_run, nodes } => {
            let nid_list = resolve_storages(client, nodes)?;
            acknowledged(
                client,
                Repair {
                    nid_list,
                    dry_run: *dry_run,
                },
            )?
        }
        Command::Truncate(tid) => {
            acknowledged(client, Truncate { tid: *tid })?;
            Output::Nothing
        }
        Command::Check {
            partitions,
            min_tid,
            max_tid,
        } => {
            let partition_dict = check_partitions(client, partitions)?;
            acknowledged(
                client,
                CheckReplicas {
                    partition_dict,
                    min_tid: *min_tid,
                    max_tid: *max_tid,
                },
            )?;
            Output::Nothing
        }
        Command::FlushLog => {
            client.send(FlushLog {})?;
            Output::Nothing
        }
    };
    Ok(output)
}

/// A request answered by Error: ACK carries the text to print.
fn acknowledged(client: &mut Client, packet: impl Into<Packet>) -> Result<Output, Failure> {
    match client.ask(packet)? {
        Packet::Error(e) if e.code == ErrorCode::Ack => Ok(Output::Text(text(&e.message))),
        other => Err(unexpected(&other)),
    }
}

fn node_list(client: &mut Client, node_type: Option<NodeType>) -> Result<Vec<NodeInfo>, Failure> {
    match client.ask(AskNodeList { node_type })? {
        Packet::AnswerNodeList(p) => Ok(p.node_list),
        other => Err(unexpected(&other)),
    }
}

fn storage_list(client: &mut Client) -> Result<Vec<NodeInfo>, Failure> {
    node_list(client, Some(NodeType::Storage))
}

/// `all` means every storage node the admin knows (the master keeps only the relevant
/// ones, e.g. the pending ones for `add`).
fn resolve_storages(client: &mut Client, storages: &Storages) -> Result<Vec<Nid>, Failure> {
    match storages {
        Storages::List(nids) => Ok(nids.clone()),
        Storages::All => Ok(storage_list(client)?.iter().filter_map(|n| n.nid).collect()),
    }
}

/// The partition → reference map of `check`; `:REF` needs the number of partitions.
fn check_partitions(
    client: &mut Client,
    partitions: &[CheckPartition],
) -> Result<Dict<u32, Option<Nid>>, Failure> {
    let mut dict: Vec<(u32, Option<Nid>)> = Vec::new();
    for item in partitions {
        match item.partition {
            Some(partition) => match dict.iter_mut().find(|(p, _)| *p == partition) {
                Some(entry) => entry.1 = item.reference,
                None => dict.push((partition, item.reference)),
            },
            None => {
                let np = match client.ask(AskPartitionList {
                    min_offset: 0,
                    max_offset: 0,
                    nid: None,
                })? {
                    Packet::AnswerPartitionList(p) => p.row_list.len() as u32,
                    other => return Err(unexpected(&other)),
                };
                dict = (0..np).map(|p| (p, item.reference)).collect();
            }
        }
    }
    Ok(Dict(dict))
}
