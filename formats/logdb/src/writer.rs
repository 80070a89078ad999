//! The logger a node writes its log through: NEO/py's RAM buffer and flush rules.
//!
//! Records go to a FIFO whose size is estimated as NEO/py does (1160 bytes plus the message
//! length per record). A record below WARNING that makes the estimate exceed the cap drops
//! the oldest records; a record at WARNING or above writes the whole buffer, so that the
//! file holds the context of every warning. [`Logger::flush`] serves SIGRTMIN and
//! `neoctl flush_log`, [`Logger::reopen`] serves SIGRTMIN+1, and dropping the logger
//! flushes too, where NEO/py loses the buffer at exit.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use neo_protocol::{Address, Nid, Packet};
use rusqlite::{params, Connection, OptionalExtension};

use crate::{next_date, protocol, SCHEMA};

/// NEO/py's default buffer cap: 16 MiB.
pub const DEFAULT_MAX_SIZE: usize = 1 << 24;

/// NEO/py's per-record overhead estimate, so that caps mean the same in both.
const RECORD_SIZE: usize = 1160;

/// A Python logging level number; the names are those neolog prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(pub i64);

impl Level {
    pub const DEBUG: Level = Level(10);
    pub const INFO: Level = Level(20);
    pub const WARNING: Level = Level(30);
    pub const ERROR: Level = Level(40);
    pub const CRITICAL: Level = Level(50);

    /// Python's `logging.getLevelName`.
    pub fn name(self) -> String {
        match self.0 {
            10 => "DEBUG".into(),
            20 => "INFO".into(),
            30 => "WARNING".into(),
            40 => "ERROR".into(),
            50 => "CRITICAL".into(),
            0 => "NOTSET".into(),
            n => format!("Level {n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open log {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot write log {path}: {source}")]
    Write {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// Who emitted a record: the logger name (NULL in production), the cluster name and NID.
type NodeKey = (Option<String>, Option<String>, Option<i32>);

enum Pending {
    Log {
        date: f64,
        node: NodeKey,
        level: Level,
        pathname: String,
        lineno: u32,
        msg: String,
    },
    Packet {
        date: f64,
        node: NodeKey,
        msg_id: u32,
        code: u16,
        peer: String,
        body: Option<Vec<u8>>,
    },
}

impl Pending {
    fn size(&self) -> usize {
        RECORD_SIZE
            + match self {
                Pending::Log { msg, .. } => msg.len(),
                Pending::Packet { body, .. } => body.as_ref().map_or(0, Vec::len),
            }
    }
}

/// A node's log file and its RAM buffer.
pub struct Logger {
    path: PathBuf,
    db: Option<Connection>,
    /// `None` writes every record at once (neoctl `-l`, tests' `-L`).
    max_size: Option<usize>,
    /// Packets bigger than this are logged without their body, as NEO/py's `max_packet`.
    max_packet: Option<usize>,
    buffer: VecDeque<Pending>,
    buffered_size: usize,
    identity: NodeKey,
    node_ids: HashMap<NodeKey, i64>,
    clock: Box<dyn FnMut() -> f64 + Send>,
}

impl Logger {
    /// Opens (or creates) `path` in the default buffered mode with a 16 MiB cap.
    pub fn open(path: impl AsRef<Path>) -> Result<Logger, LogError> {
        Logger::with_buffer(path, Some(DEFAULT_MAX_SIZE))
    }

    /// Opens `path` with a buffer cap, or with `None` to write every record at once.
    pub fn with_buffer(
        path: impl AsRef<Path>,
        max_size: Option<usize>,
    ) -> Result<Logger, LogError> {
        let mut logger = Logger {
            path: path.as_ref().to_owned(),
            db: None,
            max_size,
            max_packet: None,
            buffer: VecDeque::new(),
            buffered_size: 0,
            identity: (None, None, None),
            node_ids: HashMap::new(),
            clock: Box::new(system_time),
        };
        logger.setup()?;
        Ok(logger)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the clock, so that tests and simulations control record dates.
    pub fn set_clock(&mut self, clock: impl FnMut() -> f64 + Send + 'static) {
        self.clock = Box::new(clock);
    }

    /// Sets the logger name stored in the `node` table (threaded tests name their nodes).
    pub fn set_name(&mut self, name: Option<&str>) {
        self.identity.0 = name.map(str::to_owned);
    }

    pub fn set_max_packet(&mut self, max_packet: Option<usize>) {
        self.max_packet = max_packet;
    }

    /// Records that the node now has this identity. As in NEO/py, the change is announced
    /// by an INFO record written under the previous identity.
    pub fn set_node(&mut self, cluster: &str, nid: Option<Nid>) -> Result<(), LogError> {
        let next = (Some(cluster.to_owned()), nid.map(|n| n.0));
        if (self.identity.1.clone(), self.identity.2) == next {
            return Ok(());
        }
        let text = nid.map_or_else(|| "None".to_owned(), uuid_str);
        self.log(Level::INFO, file!(), line!(), &format!("Node ID: {text}"))?;
        self.identity.1 = next.0;
        self.identity.2 = next.1;
        Ok(())
    }

    /// Logs a message; `pathname` and `lineno` say where it comes from in the source.
    pub fn log(
        &mut self,
        level: Level,
        pathname: &str,
        lineno: u32,
        msg: &str,
    ) -> Result<(), LogError> {
        let date = (self.clock)();
        self.queue(Pending::Log {
            date,
            node: self.identity.clone(),
            level,
            pathname: pathname.to_owned(),
            lineno,
            msg: msg.to_owned(),
        })
    }

    /// Logs a packet sent (`outgoing`) or received, with its arguments encoded as on the
    /// wire, so that readers decode what was really exchanged.
    pub fn packet(
        &mut self,
        msg_id: u32,
        packet: &Packet,
        outgoing: bool,
        peer_nid: Option<Nid>,
        peer_addr: Option<SocketAddr>,
    ) -> Result<(), LogError> {
        let mut body = Vec::new();
        packet.encode_args(&mut body);
        self.packet_raw(
            msg_id,
            packet.code(),
            Some(body),
            outgoing,
            peer_nid,
            peer_addr,
        )
    }

    /// Logs a packet from its code and encoded argument array (for relays that do not
    /// decode what they forward).
    pub fn packet_raw(
        &mut self,
        msg_id: u32,
        code: u16,
        body: Option<Vec<u8>>,
        outgoing: bool,
        peer_nid: Option<Nid>,
        peer_addr: Option<SocketAddr>,
    ) -> Result<(), LogError> {
        let body = body.filter(|b| self.max_packet.is_none_or(|max| b.len() <= max));
        let peer = format!(
            "{} {} ({})",
            if outgoing { '>' } else { '<' },
            peer_nid.map_or_else(|| "None".to_owned(), uuid_str),
            peer_addr.map_or_else(String::new, |a| Address::from_socket_addr(a).to_string()),
        );
        let date = (self.clock)();
        self.queue(Pending::Packet {
            date,
            node: self.identity.clone(),
            msg_id,
            code,
            peer,
            body,
        })
    }

    /// Writes and commits every buffered record.
    pub fn flush(&mut self) -> Result<(), LogError> {
        if self.buffer.is_empty() || self.db.is_none() {
            return Ok(());
        }
        let records: Vec<Pending> = self.buffer.drain(..).collect();
        self.buffered_size = 0;
        self.write(&records)
    }

    /// Reopens the same path after logrotate renamed the file. A file without packets
    /// loses its protocol row first, which is useless without packets.
    pub fn reopen(&mut self) -> Result<(), LogError> {
        if let Some(db) = self.db.take() {
            let has_packets = db
                .query_row("SELECT 1 FROM packet LIMIT 1", [], |_| Ok(()))
                .optional()
                .map_err(|source| self.write_error(source))?
                .is_some();
            if !has_packets {
                db.execute_batch("DROP TABLE IF EXISTS protocol; VACUUM")
                    .map_err(|source| self.write_error(source))?;
            }
        }
        self.setup()
    }

    /// How many records wait in RAM.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Flushes and closes: the clean-exit path.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()
    }

    fn queue(&mut self, record: Pending) -> Result<(), LogError> {
        let Some(max_size) = self.max_size else {
            return self.write(std::slice::from_ref(&record));
        };
        let level = match &record {
            Pending::Log { level, .. } => *level,
            Pending::Packet { .. } => Level::DEBUG,
        };
        self.buffered_size += record.size();
        self.buffer.push_back(record);
        if level < Level::WARNING {
            while self.buffered_size > max_size {
                let Some(old) = self.buffer.pop_front() else {
                    break;
                };
                self.buffered_size -= old.size();
            }
            Ok(())
        } else {
            self.flush()
        }
    }

    fn write(&mut self, records: &[Pending]) -> Result<(), LogError> {
        let Some(db) = self.db.as_ref() else {
            return Ok(());
        };
        let result = (|| -> rusqlite::Result<()> {
            let tx = db.unchecked_transaction()?;
            for record in records {
                let node = match record {
                    Pending::Log { node, .. } | Pending::Packet { node, .. } => node,
                };
                let node_id = node_id(&tx, &mut self.node_ids, node)?;
                match record {
                    Pending::Log {
                        date,
                        level,
                        pathname,
                        lineno,
                        msg,
                        ..
                    } => {
                        let mut statement =
                            tx.prepare_cached("INSERT INTO log VALUES (?,?,?,?,?,?)")?;
                        insert_unique(*date, |d| {
                            statement.execute(params![d, node_id, level.0, pathname, lineno, msg])
                        })?;
                    }
                    Pending::Packet {
                        date,
                        msg_id,
                        code,
                        peer,
                        body,
                        ..
                    } => {
                        let mut statement =
                            tx.prepare_cached("INSERT INTO packet VALUES (?,?,?,?,?,?)")?;
                        insert_unique(*date, |d| {
                            statement.execute(params![d, node_id, msg_id, code, peer, body])
                        })?;
                    }
                }
            }
            tx.commit()
        })();
        result.map_err(|source| self.write_error(source))
    }

    fn setup(&mut self) -> Result<(), LogError> {
        let open_error = |source| LogError::Open {
            path: self.path.clone(),
            source,
        };
        let db = Connection::open(&self.path).map_err(open_error)?;
        // A reader (neolog -f) may hold the file briefly; wait rather than lose records.
        db.busy_timeout(Duration::from_secs(60))
            .map_err(open_error)?;
        // MEMORY journaling keeps no side file, which logrotate's rename would orphan.
        let _: String = db
            .query_row("PRAGMA journal_mode = MEMORY", [], |row| row.get(0))
            .map_err(open_error)?;
        if self.max_size.is_none() {
            db.execute_batch("PRAGMA synchronous = OFF")
                .map_err(open_error)?;
        }
        for table in ["log", "packet"] {
            if is_legacy_table(&db, table).map_err(open_error)? {
                db.execute_batch(&format!("ALTER TABLE {table} RENAME TO {table}1"))
                    .map_err(open_error)?;
            }
        }
        db.execute_batch(SCHEMA).map_err(open_error)?;
        let description = protocol::stored_description();
        let latest: Option<(f64, Vec<u8>)> = db
            .query_row(
                "SELECT date, text FROM protocol ORDER BY date DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(open_error)?;
        if latest.as_ref().map(|l| &l.1) != Some(&description) {
            // Date 0 makes the first description apply to every packet of the file, even
            // those dated before the file was opened.
            let date = if latest.is_some() {
                (self.clock)()
            } else {
                0.0
            };
            insert_unique(date, |d| {
                db.execute("INSERT INTO protocol VALUES (?,?)", params![d, description])
            })
            .map_err(open_error)?;
        }
        let mut node_ids = HashMap::new();
        {
            let mut statement = db
                .prepare("SELECT id, name, cluster, nid FROM node")
                .map_err(open_error)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        (
                            row.get(1)?,
                            row.get(2)?,
                            row.get::<_, Option<i64>>(3)?.map(|n| n as i32),
                        ),
                        row.get(0)?,
                    ))
                })
                .map_err(open_error)?;
            for row in rows {
                let (key, id) = row.map_err(open_error)?;
                node_ids.insert(key, id);
            }
        }
        self.node_ids = node_ids;
        self.db = Some(db);
        Ok(())
    }

    fn write_error(&self, source: rusqlite::Error) -> LogError {
        LogError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        // A clean exit keeps the buffered records; there is nobody to report a failure to.
        let _ = self.flush();
    }
}

/// NEO/py's NID text (`uuid_str`).
pub fn uuid_str(nid: Nid) -> String {
    if nid.0 == 0 {
        "0".to_owned()
    } else {
        nid.to_string()
    }
}

fn system_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `node` row of an identity, created on first use with 1 + the largest id.
fn node_id(
    db: &Connection,
    ids: &mut HashMap<NodeKey, i64>,
    node: &NodeKey,
) -> rusqlite::Result<Option<i64>> {
    if *node == (None, None, None) {
        return Ok(None);
    }
    if let Some(id) = ids.get(node) {
        return Ok(Some(*id));
    }
    let id = ids.values().max().map_or(0, |m| m + 1);
    db.execute(
        "INSERT INTO node VALUES (?,?,?,?)",
        params![id, node.0, node.1, node.2],
    )?;
    ids.insert(node.clone(), id);
    Ok(Some(id))
}

/// Runs an insert, moving the date to the next double while the primary key is taken.
fn insert_unique(
    mut date: f64,
    mut insert: impl FnMut(f64) -> rusqlite::Result<usize>,
) -> rusqlite::Result<()> {
    loop {
        match insert(date) {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                date = next_date(date);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `table` has the layout of NEO's older logs (`id, date, name, ...`), whose third
/// column is the node name.
fn is_legacy_table(db: &Connection, table: &str) -> rusqlite::Result<bool> {
    let mut statement = db.prepare(&format!("PRAGMA table_info({table})"))?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let index: i64 = row.get(0)?;
        let name: String = row.get(1)?;
        if index == 2 && name == "name" {
            return Ok(true);
        }
    }
    Ok(false)
}
