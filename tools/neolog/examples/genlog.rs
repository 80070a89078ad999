//! Writes a synthetic NEO log through `neo_logdb::Logger`, for benchmarks and manual checks:
//! `genlog PATH SIZE_MB` fills PATH with log and packet records until it reaches SIZE_MB.

use neo_logdb::{Level, Logger};
use neo_protocol::{
    Address, AskObject, Nid, NodeInfo, NodeState, NodeType, NotifyNodeInformation, Oid, Packet, Tid,
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: genlog PATH SIZE_MB"))?;
    let size_mb: u64 = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let target = size_mb << 20;
    let _ = std::fs::remove_file(&path);
    // Write-everything mode would commit per record; a large buffer with explicit flushes
    // measures the same writer at the rate a busy node produces records.
    let mut logger = Logger::with_buffer(&path, Some(usize::MAX))?;
    let mut date = 1_700_000_000.0f64;
    logger.set_clock(move || {
        date += 0.000_01;
        date
    });
    logger.set_node("bench", Some(Nid::new(NodeType::Storage, 1)))?;
    let peer = Some(Nid::new(NodeType::Client, 3));
    let address = Some("127.0.0.1:45012".parse()?);
    let mut i: u64 = 0;
    loop {
        for _ in 0..10_000 {
            i += 1;
            match i % 4 {
                0 => logger.log(
                    Level::DEBUG,
                    "storage/app.rs",
                    120,
                    &format!("handling request {i} from C3 on partition {}", i % 12),
                )?,
                1 => logger.log(
                    Level::INFO,
                    "storage/replicator.rs",
                    77,
                    "replication of partition 3 done up to 0x040d2bed40bebaa4",
                )?,
                2 => logger.packet(
                    (i % 65536) as u32,
                    &Packet::AskObject(AskObject {
                        oid: Oid(i),
                        at: None,
                        before: Some(Tid(i << 20)),
                    }),
                    false,
                    peer,
                    address,
                )?,
                _ => logger.packet(
                    (i % 65536) as u32,
                    &Packet::NotifyNodeInformation(NotifyNodeInformation {
                        timestamp: 1_700_000_000.25,
                        node_list: vec![NodeInfo {
                            node_type: NodeType::Storage,
                            address: Some(Address {
                                host: "127.0.0.1".into(),
                                port: 20001,
                            }),
                            nid: Some(Nid::new(NodeType::Storage, 1)),
                            state: NodeState::Running,
                            id_timestamp: Some(1_700_000_000.5),
                        }],
                    }),
                    true,
                    peer,
                    address,
                )?,
            }
        }
        logger.flush()?;
        if std::fs::metadata(&path)?.len() >= target {
            break;
        }
    }
    logger.close()?;
    eprintln!("genlog: {i} records in {path}");
    Ok(())
}
