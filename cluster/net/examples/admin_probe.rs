//! Interoperability probe: connects to a NEO master (NEO/py or ours), identifies as an admin
//! node, and prints what the master tells an admin: the node list (NotifyNodeInformation),
//! the partition table (SendPartitionTable) and the cluster state (AskClusterState), plus
//! the last transaction id.
//!
//! ```text
//! cargo run -p neo-net --example admin_probe -- --master 127.0.0.1:21000 --cluster test
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use neo_net::{Event, Net, NetConfig};
use neo_protocol::json::message_to_json_line;
use neo_protocol::*;

#[derive(Parser)]
struct Args {
    /// Address of the primary master.
    #[arg(long)]
    master: SocketAddr,
    /// Cluster name.
    #[arg(long)]
    cluster: String,
    /// Seconds to wait for the answers.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Also print every received packet in the JSON form of neoproto.
    #[arg(long)]
    json: bool,
}

const CLUSTER_STATE: u64 = 1;
const LAST_TRANSACTION: u64 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("admin_probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let (net, events) = Net::new(NetConfig::default()).context("starting the network")?;
    // An admin announces its listening address; listen on an ephemeral port of the same
    // family so that the address we announce is real.
    let listen_on: SocketAddr = if args.master.is_ipv6() {
        "[::1]:0".parse()?
    } else {
        "127.0.0.1:0".parse()?
    };
    let own_address = net.listen(listen_on).context("listening")?;
    let conn = net.connect(args.master);
    // Like a NEO/py admin: identification, then the cluster state, without waiting.
    conn.ask(
        RequestIdentification {
            node_type: NodeType::Admin,
            nid: None,
            address: Some(Address::from_socket_addr(own_address)),
            cluster_name: Bytes::from(args.cluster.clone()),
            id_timestamp: None,
            extra: Dict(vec![(Bytes::from_static(b"backup"), Value::Array(vec![]))]),
        },
        0,
    )?;
    conn.ask(AskClusterState {}, CLUSTER_STATE)?;
    conn.ask(AskLastTransaction {}, LAST_TRANSACTION)?;

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut identified = false;
    let mut state = None;
    let mut nodes = None;
    let mut table = false;
    let mut last_tid = None;
    while !(identified && state.is_some() && nodes.is_some() && table && last_tid.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match events.recv_timeout(left) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => bail!("no complete answer within {}s", args.timeout),
            Err(RecvTimeoutError::Disconnected) => bail!("network stopped"),
        };
        let (msg_id, packet) = match event {
            Event::Connected { .. } => {
                println!("connected to {}", args.master);
                continue;
            }
            Event::ConnectFailed { error, .. } => {
                bail!("cannot connect to {}: {error}", args.master)
            }
            Event::Closed { reason, .. } => bail!("connection closed: {reason}"),
            Event::Accepted { .. } => continue,
            Event::Packet { msg_id, packet, .. } | Event::Answer { msg_id, packet, .. } => {
                (msg_id, packet)
            }
        };
        if args.json {
            println!(
                "{}",
                message_to_json_line(&Message {
                    msg_id,
                    packet: packet.clone()
                })?
            );
        }
        match packet {
            Packet::AcceptIdentification(accept) => {
                println!(
                    "identified: master {:?} nid {}, our nid {}",
                    accept.node_type,
                    show_nid(accept.nid),
                    show_nid(accept.your_nid)
                );
                identified = true;
            }
            Packet::Error(error) => bail!(
                "master answered Error({}, {:?})",
                error.code,
                String::from_utf8_lossy(&error.message)
            ),
            Packet::NotPrimaryMaster(not) => bail!(
                "not the primary master (primary index {:?} of {:?})",
                not.primary,
                not.known_master_list
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
            ),
            Packet::NotifyNodeInformation(info) => {
                println!(
                    "node list ({} nodes, master time {:.3}):",
                    info.node_list.len(),
                    info.timestamp
                );
                for node in &info.node_list {
                    println!(
                        "  {:<8} {:<6} {:<8} {:<22} id_timestamp {}",
                        node.node_type.py_name(),
                        show_nid(node.nid),
                        node.state.py_name(),
                        node.address
                            .as_ref()
                            .map_or("-".to_owned(), |a| a.to_string()),
                        node.id_timestamp
                            .map_or("-".to_owned(), |t| format!("{t:.3}")),
                    );
                }
                nodes = Some(info.node_list.len());
            }
            Packet::SendPartitionTable(pt) => {
                println!(
                    "partition table: ptid {:?}, {} replicas, {} partitions",
                    pt.ptid,
                    pt.num_replicas,
                    pt.row_list.len()
                );
                table = true;
            }
            Packet::NotifyPartitionChanges(_) | Packet::NotifyClusterInformation(_) => {}
            Packet::AnswerClusterState(answer) => {
                println!(
                    "cluster state: {}",
                    answer
                        .state
                        .map_or("none".to_owned(), |s| s.py_name().to_owned())
                );
                state = Some(answer.state);
            }
            Packet::AnswerLastTransaction(answer) => {
                println!("last transaction: {}", answer.tid);
                last_tid = Some(answer.tid);
            }
            other => println!("(ignored {})", other.name()),
        }
    }
    conn.close();
    net.shutdown(Duration::from_secs(5));
    Ok(())
}

fn show_nid(nid: Option<Nid>) -> String {
    nid.map_or("-".to_owned(), |n| n.to_string())
}
