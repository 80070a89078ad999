//! Interoperability probe in the other direction: a minimal admin node that NEO/py's
//! `neoctl` can talk to. It identifies to a master as an admin, keeps the node list and
//! partition table the master sends, answers `AskNodeList`, `AskPartitionList` and
//! `AskPrimary` from them, and forwards every other neoctl request to the master, relaying
//! the answer under the neoctl request's id (as NEO/py's admin does).
//!
//! This is a probe, not the admin node: no reconnection, no backup monitoring.
//!
//! ```text
//! cargo run -p neo-net --example relay_admin -- --master 127.0.0.1:21000 --cluster test \
//!     --bind 127.0.0.1:21300
//! neoctl -a 127.0.0.1:21300 print node
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use neo_net::{ConnectionHandle, ConnectionId, Event, Net, NetConfig};
use neo_protocol::*;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    master: SocketAddr,
    #[arg(long)]
    cluster: String,
    /// Where neoctl connects.
    #[arg(long)]
    bind: SocketAddr,
    /// Stop after serving this many neoctl connections (0: run until killed).
    #[arg(long, default_value_t = 0)]
    connections: usize,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (net, events) = Net::new(NetConfig::default()).context("starting the network")?;
    let bound = net.listen(args.bind).context("listening")?;
    println!("relay_admin: listening on {bound}");
    let master = net.connect(args.master);
    master.ask(
        RequestIdentification {
            node_type: NodeType::Admin,
            nid: None,
            address: Some(Address::from_socket_addr(bound)),
            cluster_name: Bytes::from(args.cluster.clone()),
            id_timestamp: None,
            extra: Dict(vec![(Bytes::from_static(b"backup"), Value::Array(vec![]))]),
        },
        0,
    )?;

    let mut master_nid = None;
    let mut nodes: Vec<NodeInfo> = Vec::new();
    let mut table: Option<SendPartitionTable> = None;
    let mut ctl: HashMap<ConnectionId, ConnectionHandle> = HashMap::new();
    // Forwarded requests: our context → (neoctl connection, neoctl msg_id).
    let mut forwarded: HashMap<u64, (ConnectionId, u32)> = HashMap::new();
    let mut next_context = 1u64;
    let mut served = 0usize;
    loop {
        let event = events.recv().context("network stopped")?;
        match event {
            Event::Accepted { conn, .. } => {
                ctl.insert(conn.id(), conn);
            }
            Event::Closed { conn, reason, .. } if conn == master.id() => {
                bail!("master connection closed: {reason}")
            }
            Event::Closed { conn, .. } => {
                ctl.remove(&conn);
                served += 1;
                if args.connections != 0 && served >= args.connections {
                    break;
                }
            }
            Event::ConnectFailed { error, .. } => bail!("cannot connect to the master: {error}"),
            Event::Connected { .. } => {}
            Event::Answer {
                conn,
                context,
                packet,
                ..
            } if conn == master.id() => match (context, packet) {
                (Some(0), Packet::AcceptIdentification(accept)) => {
                    master_nid = accept.nid;
                    println!(
                        "relay_admin: identified to the master as {:?}",
                        accept.your_nid.map(|n| n.to_string())
                    );
                }
                (Some(0), other) => bail!("identification refused: {other:?}"),
                (Some(context), packet) => {
                    if let Some((ctl_id, msg_id)) = forwarded.remove(&context) {
                        if let Some(conn) = ctl.get(&ctl_id) {
                            conn.answer(msg_id, packet)?;
                        }
                    }
                }
                (None, packet) => println!(
                    "relay_admin: stray answer from the master: {}",
                    packet.name()
                ),
            },
            Event::Packet { conn, packet, .. } if conn == master.id() => match packet {
                Packet::NotifyNodeInformation(info) => {
                    for node in info.node_list {
                        // A node is known by its nid, or by its address while it has none.
                        nodes.retain(|n| match n.nid {
                            Some(nid) => node.nid != Some(nid),
                            None => n.address != node.address,
                        });
                        if node.state != NodeState::Unknown {
                            nodes.push(node);
                        }
                    }
                }
                Packet::SendPartitionTable(pt) => table = Some(pt),
                Packet::NotifyPartitionChanges(changes) => {
                    if let Some(pt) = &mut table {
                        pt.ptid = Some(changes.ptid);
                        pt.num_replicas = changes.num_replicas;
                        for change in changes.cell_list {
                            let Some(row) = pt.row_list.get_mut(change.partition as usize) else {
                                continue;
                            };
                            row.retain(|cell| cell.nid != change.nid);
                            if change.state != CellState::Discarded {
                                row.push(Cell {
                                    nid: change.nid,
                                    state: change.state,
                                });
                            }
                        }
                    }
                }
                _ => {}
            },
            Event::Packet {
                conn,
                msg_id,
                packet,
            } => {
                let Some(handle) = ctl.get(&conn) else {
                    continue;
                };
                match packet {
                    Packet::AskNodeList(ask) => {
                        let node_list = nodes
                            .iter()
                            .filter(|n| ask.node_type.is_none_or(|t| t == n.node_type))
                            .cloned()
                            .collect();
                        handle.answer(msg_id, AnswerNodeList { node_list })?;
                    }
                    Packet::AskPartitionList(ask) => match &table {
                        Some(pt) => {
                            let end = if ask.max_offset == 0 {
                                pt.row_list.len()
                            } else {
                                (ask.max_offset as usize).min(pt.row_list.len())
                            };
                            let start = (ask.min_offset as usize).min(end);
                            handle.answer(
                                msg_id,
                                AnswerPartitionList {
                                    ptid: pt.ptid,
                                    num_replicas: pt.num_replicas,
                                    row_list: pt.row_list[start..end].to_vec(),
                                },
                            )?;
                        }
                        None => handle.answer(
                            msg_id,
                            Packet::error(ErrorCode::NotReady, "no partition table yet"),
                        )?,
                    },
                    Packet::AskPrimary(_) => match master_nid {
                        Some(nid) => handle.answer(msg_id, AnswerPrimary { primary_nid: nid })?,
                        None => handle
                            .answer(msg_id, Packet::error(ErrorCode::NotReady, "not connected"))?,
                    },
                    packet if packet.kind().expects_answer() => {
                        let context = next_context;
                        next_context += 1;
                        forwarded.insert(context, (conn, msg_id));
                        master.ask(packet, context)?;
                    }
                    packet => {
                        master.notify(packet)?;
                    }
                }
            }
            Event::Answer { .. } => {}
        }
    }
    net.shutdown(Duration::from_secs(5));
    Ok(())
}
