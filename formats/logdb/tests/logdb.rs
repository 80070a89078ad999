//! Writes logs through `Logger` and reads them back through `LogReader`: the flush rules,
//! reopen after rotation, date clashes, node identities, the protocol table and bad files.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use neo_logdb::protocol::{description, PacketNames};
use neo_logdb::{Level, LogReader, Logger, Record, RecordKind};
use neo_protocol::{Nid, NodeType, Packet, Ping};

/// A clock that advances by one millisecond per call, from a fixed start.
fn stepping_clock() -> impl FnMut() -> f64 + Send + 'static {
    let ticks = Arc::new(AtomicU64::new(0));
    move || 1_700_000_000.0 + ticks.fetch_add(1, Ordering::SeqCst) as f64 / 1000.0
}

fn read_all(path: &std::path::Path) -> Vec<Record> {
    let mut reader = LogReader::open(path).expect("open log");
    std::iter::from_fn(|| reader.next_record()).collect()
}

fn messages(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| match &r.kind {
            RecordKind::Log { msg, .. } => msg.clone(),
            RecordKind::Packet { name, .. } => format!("packet {}", name.as_deref().unwrap_or("?")),
            RecordKind::Error { message, .. } => format!("error {message}"),
        })
        .collect()
}

#[test]
fn buffered_records_are_written_on_warning_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    let mut logger = Logger::open(&path).unwrap();
    logger.set_clock(stepping_clock());
    logger.log(Level::DEBUG, "a.rs", 1, "first").unwrap();
    logger.log(Level::INFO, "a.rs", 2, "second").unwrap();
    assert_eq!(logger.buffered(), 2);
    assert!(messages(&read_all(&path)).is_empty());
    logger.log(Level::WARNING, "a.rs", 3, "trouble").unwrap();
    assert_eq!(logger.buffered(), 0);
    assert_eq!(messages(&read_all(&path)), ["first", "second", "trouble"]);
    std::mem::forget(logger);
}

#[test]
fn explicit_flush_and_drop_write_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    let mut logger = Logger::open(&path).unwrap();
    logger.set_clock(stepping_clock());
    logger.log(Level::INFO, "a.rs", 1, "one").unwrap();
    logger.flush().unwrap();
    assert_eq!(messages(&read_all(&path)), ["one"]);
    logger.log(Level::DEBUG, "a.rs", 2, "two").unwrap();
    drop(logger);
    assert_eq!(messages(&read_all(&path)), ["one", "two"]);
}

#[test]
fn full_buffer_drops_oldest_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    // Room for three records of 1160 + 10 bytes, not four.
    let mut logger = Logger::with_buffer(&path, Some(3 * 1170 + 100)).unwrap();
    logger.set_clock(stepping_clock());
    for i in 0..6 {
        logger
            .log(Level::DEBUG, "a.rs", i, &format!("message {i}"))
            .unwrap();
    }
    assert_eq!(logger.buffered(), 3);
    logger.log(Level::ERROR, "a.rs", 9, "failure").unwrap();
    assert_eq!(
        messages(&read_all(&path)),
        ["message 3", "message 4", "message 5", "failure"]
    );
    std::mem::forget(logger);
}

#[test]
fn unbuffered_mode_writes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.log");
    let mut logger = Logger::with_buffer(&path, None).unwrap();
    logger.log(Level::DEBUG, "a.rs", 1, "now").unwrap();
    assert_eq!(messages(&read_all(&path)), ["now"]);
    std::mem::forget(logger);
}

#[test]
fn same_date_moves_to_next_double() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    let mut logger = Logger::with_buffer(&path, None).unwrap();
    logger.set_clock(|| 1_700_000_000.5);
    logger.log(Level::INFO, "a.rs", 1, "a").unwrap();
    logger.log(Level::INFO, "a.rs", 2, "b").unwrap();
    let records = read_all(&path);
    assert_eq!(messages(&records), ["a", "b"]);
    assert_eq!(records[1].date, neo_logdb::next_date(1_700_000_000.5));
}

#[test]
fn packets_and_node_identity_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.log");
    let mut logger = Logger::open(&path).unwrap();
    logger.set_clock(stepping_clock());
    logger.log(Level::DEBUG, "a.rs", 1, "before id").unwrap();
    logger
        .set_node("demo", Some(Nid::new(NodeType::Master, 1)))
        .unwrap();
    let peer = Some(Nid::new(NodeType::Admin, 1));
    let addr = Some("127.0.0.1:38950".parse().unwrap());
    logger
        .packet(7, &Packet::Ping(Ping {}), false, peer, addr)
        .unwrap();
    logger.flush().unwrap();
    let records = read_all(&path);
    assert_eq!(
        messages(&records),
        ["before id", "Node ID: M1", "packet Ping"]
    );
    assert_eq!(records[1].node.nid, None);
    assert_eq!(records[2].node.nid, Some(-268435455));
    assert_eq!(records[2].node.cluster.as_deref(), Some("demo"));
    match &records[2].kind {
        RecordKind::Packet {
            msg_id,
            code,
            peer,
            body,
            ..
        } => {
            assert_eq!((*msg_id, *code), (7, 2));
            assert_eq!(peer, "< A1 (127.0.0.1:38950)");
            assert_eq!(body.as_deref(), Some(&[0x90u8][..]));
        }
        other => panic!("expected a packet, got {other:?}"),
    }
    std::mem::forget(logger);
}

#[test]
fn reopen_follows_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    let rotated = dir.path().join("node.log.1");
    let mut logger = Logger::open(&path).unwrap();
    logger.set_clock(stepping_clock());
    logger.log(Level::WARNING, "a.rs", 1, "old file").unwrap();
    std::fs::rename(&path, &rotated).unwrap();
    logger
        .log(Level::INFO, "a.rs", 2, "buffered across rotation")
        .unwrap();
    logger.reopen().unwrap();
    logger.flush().unwrap();
    assert_eq!(messages(&read_all(&rotated)), ["old file"]);
    assert_eq!(messages(&read_all(&path)), ["buffered across rotation"]);
    // The rotated file had no packets, so its protocol row was dropped.
    let db = rusqlite::Connection::open(&rotated).unwrap();
    let tables: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name='protocol'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    std::mem::forget(logger);
}

#[test]
fn our_protocol_description_names_every_packet() {
    let names = PacketNames::from_source(&description()).unwrap();
    assert_eq!(names, PacketNames::builtin());
    assert_eq!(names.name(0x8000), Some("Error"));
    assert_eq!(names.name(0x0046), Some("FlushLog"));
    let stored = neo_logdb::protocol::stored_description();
    assert_eq!(PacketNames::from_stored(&stored).unwrap(), names);
}

#[test]
fn newer_description_format_is_refused() {
    let text = description().replace("FORMAT = 1", "FORMAT = 2");
    assert_eq!(
        PacketNames::from_source(&text),
        Err(neo_logdb::ProtocolError::NewerFormat { found: 2 })
    );
}

#[test]
fn python_registry_is_scanned_without_running_it() {
    // A registry in the shape the scanner expects, written for this test.
    let source = r#"
import x
class Packets(Base):
    """ The registry (has a stray paren ( in its docstring) """
    notify = factory
    Error = notify("""
        Not (really) an answer.
        """, error=True)
    Hello, Welcome = request("""
        Say hello.
        """, poll=True)
    # A comment line.
    Vote = request("""
        Answered by Error.
        """, error=True)
    Bye = notify("""bye""")

def after():
    Other = notify("")
"#;
    let names = PacketNames::from_source(source).unwrap();
    assert_eq!(names.name(0x8000), Some("Error"));
    assert_eq!(names.name(0x0001), Some("Hello"));
    assert_eq!(names.name(0x8001), Some("Welcome"));
    assert_eq!(names.name(0x0002), Some("Vote"));
    assert_eq!(names.name(0x8002), None);
    assert_eq!(names.name(0x0003), Some("Bye"));
    assert_eq!(names.len(), 5);
}

#[test]
fn legacy_tables_are_read_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.log");
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE log (id INTEGER PRIMARY KEY, date REAL NOT NULL, name TEXT,
               level INTEGER NOT NULL, pathname TEXT, lineno INTEGER, msg TEXT);
             CREATE TABLE packet (id INTEGER PRIMARY KEY, date REAL NOT NULL, name TEXT,
               msg_id INTEGER NOT NULL, code INTEGER NOT NULL, peer TEXT NOT NULL, body BLOB);
             INSERT INTO log VALUES (1, 1.0, 'storage1', 20, 'x.py', 3, 'legacy record');",
        )
        .unwrap();
    }
    let mut logger = Logger::with_buffer(&path, None).unwrap();
    logger.set_clock(|| 2.0);
    logger.log(Level::INFO, "a.rs", 1, "new record").unwrap();
    drop(logger);
    let records = read_all(&path);
    assert_eq!(messages(&records), ["legacy record", "new record"]);
    assert_eq!(records[0].node.name.as_deref(), Some("storage1"));
}

#[test]
fn files_that_are_not_logs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, this is not SQLite at all, just some words").unwrap();
    let error = LogReader::open(&text).err().expect("refused");
    assert!(
        error.to_string().contains("not a SQLite database"),
        "{error}"
    );
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let error = LogReader::open(&other).err().expect("refused");
    assert!(error.to_string().contains("not a NEO log"), "{error}");
    let error = LogReader::open(dir.path().join("missing.log"))
        .err()
        .expect("refused");
    assert!(error.to_string().contains("no such file"), "{error}");
}

#[test]
fn from_and_until_bound_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    let mut logger = Logger::with_buffer(&path, None).unwrap();
    let mut next = 0.0;
    logger.set_clock(move || {
        next += 1.0;
        next
    });
    for i in 1..=5 {
        logger
            .log(Level::INFO, "a.rs", i, &format!("at {i}"))
            .unwrap();
    }
    drop(logger);
    let mut reader = LogReader::open(&path).unwrap();
    reader.set_from(2.0);
    reader.set_until(4.0);
    let records: Vec<Record> = std::iter::from_fn(|| reader.next_record()).collect();
    assert_eq!(messages(&records), ["at 2", "at 3", "at 4"]);
}

/// Writes `count` messages and `count` packets alternating, the node identity set after the
/// first quarter; more than a page of each, so that pages are refilled by the workers.
fn write_many(path: &std::path::Path, count: u32) {
    let mut logger = Logger::with_buffer(path, Some(usize::MAX)).unwrap();
    logger.set_clock(stepping_clock());
    let peer = Some(Nid::new(NodeType::Client, 2));
    let address = Some("127.0.0.1:38950".parse().unwrap());
    for i in 0..count {
        if i == count / 4 {
            logger
                .set_node("demo", Some(Nid::new(NodeType::Storage, 3)))
                .unwrap();
        }
        logger
            .log(Level::INFO, "a.rs", i, &format!("message {i}"))
            .unwrap();
        logger
            .packet(i, &Packet::Ping(Ping {}), false, peer, address)
            .unwrap();
    }
    logger.flush().unwrap();
    std::mem::forget(logger);
}

#[test]
fn many_pages_come_in_date_order_with_their_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    let count = 10_000;
    write_many(&path, count);
    let mut reader = LogReader::open(&path).unwrap();
    let mut lent = Vec::new();
    while let Some(date) = reader.peek_date() {
        let record = reader.next_ref().expect("a peeked record is there");
        assert_eq!(record.date, date);
        lent.push(record.clone());
    }
    assert!(reader.next_ref().is_none());
    // The "Node ID" message comes in addition to the records written.
    assert_eq!(lent.len(), 2 * count as usize + 1);
    assert!(lent.windows(2).all(|w| w[0].date < w[1].date));
    let texts = messages(&lent);
    assert_eq!(texts[0], "message 0");
    assert_eq!(texts[1], "packet Ping");
    assert_eq!(texts.last().unwrap(), "packet Ping");
    assert_eq!(
        texts.iter().filter(|t| *t == "packet Ping").count(),
        count as usize
    );
    let storage = Some(Nid::new(NodeType::Storage, 3).0 as i64);
    assert_eq!(lent[0].node.nid, None);
    assert_eq!(lent.last().unwrap().node.nid, storage);
    assert_eq!(lent.last().unwrap().node.cluster.as_deref(), Some("demo"));
    // The records are the same whether lent or handed over.
    assert_eq!(read_all(&path), lent);
}

#[test]
fn locations_can_be_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    write_many(&path, 3);
    let mut reader = LogReader::open(&path).unwrap();
    reader.skip_locations();
    let records: Vec<Record> = std::iter::from_fn(|| reader.next_record()).collect();
    let full = read_all(&path);
    assert_eq!(messages(&records), messages(&full));
    for (lean, full) in records.iter().zip(&full) {
        match (&lean.kind, &full.kind) {
            (
                RecordKind::Log {
                    level,
                    pathname: None,
                    lineno: None,
                    msg,
                },
                RecordKind::Log {
                    level: full_level,
                    pathname: Some(pathname),
                    lineno: Some(_),
                    msg: full_msg,
                },
            ) => {
                assert_eq!((level, msg), (full_level, full_msg));
                assert!(!pathname.is_empty());
            }
            (RecordKind::Packet { .. }, RecordKind::Packet { .. }) => assert_eq!(lean, full),
            other => panic!("unexpected pair {other:?}"),
        }
    }
}

#[test]
fn a_new_pass_reads_what_was_added_since() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.log");
    let mut logger = Logger::with_buffer(&path, Some(usize::MAX)).unwrap();
    logger.set_clock(stepping_clock());
    let mut written = 0;
    let mut write = |logger: &mut Logger, n: u32| {
        for _ in 0..n {
            logger
                .log(Level::INFO, "a.rs", 1, &format!("message {written}"))
                .unwrap();
            written += 1;
        }
        logger.flush().unwrap();
    };
    write(&mut logger, 5000);
    let mut reader = LogReader::open(&path).unwrap();
    let first: Vec<Record> = std::iter::from_fn(|| reader.next_record()).collect();
    assert_eq!(first.len(), 5000);
    // Nothing new: the pass is empty, and the workers wait without reading ahead.
    reader.new_pass();
    assert!(reader.next_record().is_none());
    write(&mut logger, 5000);
    assert!(reader.next_record().is_none(), "the pass is over");
    reader.new_pass();
    let second = messages(&std::iter::from_fn(|| reader.next_record()).collect::<Vec<_>>());
    let expected: Vec<String> = (5000..10_000).map(|i| format!("message {i}")).collect();
    assert_eq!(second, expected);
    drop(logger);
}
