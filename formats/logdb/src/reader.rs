//! Reading a log file, ours or NEO/py's, as one stream of records ordered by date.
//!
//! Rows are fetched in pages keyed by date (`date > last ORDER BY date LIMIT n`), which
//! walks the primary key without holding a read lock for the whole file: a live writer is
//! not blocked for long, and a follow mode only needs to start a new pass to see new rows.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use crate::protocol::{PacketNames, ProtocolError};

/// Rows fetched per query: large enough to amortise the query, small enough to stream.
const PAGE_ROWS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    #[error("{path}: not a SQLite database ({reason})")]
    NotSqlite { path: PathBuf, reason: String },
    #[error("{path}: not a NEO log (no log or packet table)")]
    NotNeoLog { path: PathBuf },
}

/// The emitter of a record as stored in the `node` table (all `None` for legacy rows
/// except the name, and for records written before the node had an identity).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeRef {
    pub name: Option<String>,
    pub cluster: Option<String>,
    pub nid: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordKind {
    Log {
        level: i64,
        pathname: Option<String>,
        lineno: Option<i64>,
        msg: String,
    },
    Packet {
        msg_id: i64,
        code: i64,
        peer: String,
        body: Option<Vec<u8>>,
        /// The name from the protocol row in force, or `None` for an unknown code.
        name: Option<String>,
    },
    /// A table could not be read; `table` is `LOG` or `PACKET` as neolog prints it.
    Error {
        table: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub date: f64,
    pub node: NodeRef,
    pub kind: RecordKind,
}

/// One table (or its legacy predecessor) read page by page.
struct Stream {
    sql: String,
    packets: bool,
    after: f64,
    /// The first page of the first pass includes `after` itself (`--from`).
    inclusive: bool,
    page: VecDeque<Record>,
    exhausted: bool,
}

/// An open log file.
pub struct LogReader {
    path: PathBuf,
    db: Connection,
    log: Vec<Stream>,
    packet: Vec<Stream>,
    protocols: Vec<(f64, Result<Arc<PacketNames>, ProtocolError>)>,
    until: Option<f64>,
    warnings: Vec<String>,
}

impl LogReader {
    /// Opens `path` read-only; nothing is ever created or changed.
    pub fn open(path: impl AsRef<Path>) -> Result<LogReader, ReadError> {
        let path = path.as_ref().to_owned();
        if !path.exists() {
            return Err(ReadError::Missing { path });
        }
        let not_sqlite = |e: rusqlite::Error| ReadError::NotSqlite {
            path: path.clone(),
            reason: e.to_string(),
        };
        let db = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(not_sqlite)?;
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(not_sqlite)?;
        let tables: Vec<String> = {
            let mut statement = db
                .prepare("SELECT name FROM sqlite_master WHERE type='table'")
                .map_err(not_sqlite)?;
            let rows = statement
                .query_map([], |row| row.get(0))
                .map_err(not_sqlite)?;
            rows.collect::<Result<_, _>>().map_err(not_sqlite)?
        };
        let has = |t: &str| tables.iter().any(|n| n == t);
        if !["log", "packet", "log1", "packet1"].iter().any(|t| has(t)) {
            return Err(ReadError::NotNeoLog { path });
        }
        let legacy_main = !has("node");
        let mut log = Vec::new();
        let mut packet = Vec::new();
        let log_columns = "level, pathname, lineno, msg";
        let packet_columns = "msg_id, code, peer, body";
        for (table, columns, streams, packets) in [
            ("log", log_columns, &mut log, false),
            ("packet", packet_columns, &mut packet, true),
        ] {
            // Older NEO wrote the node name in the third column and had no node table;
            // NEO/py renames such tables to log1/packet1, whose rows come first.
            let legacy = format!("SELECT date, name, NULL, NULL, {columns} FROM {{}} WHERE date {{}} ? ORDER BY date LIMIT {PAGE_ROWS}");
            let current = format!("SELECT date, name, cluster, nid, {columns} FROM {table} LEFT JOIN node ON node=id WHERE date {{}} ? ORDER BY date LIMIT {PAGE_ROWS}");
            let legacy_table = format!("{table}1");
            if has(&legacy_table) {
                streams.push(Stream::new(
                    legacy.replacen("{}", &legacy_table, 1),
                    packets,
                ));
            }
            if has(table) {
                let sql = if legacy_main {
                    legacy.replacen("{}", table, 1)
                } else {
                    current
                };
                streams.push(Stream::new(sql, packets));
            }
        }
        let mut reader = LogReader {
            path,
            db,
            log,
            packet,
            protocols: Vec::new(),
            until: None,
            warnings: Vec::new(),
        };
        reader.load_protocols();
        Ok(reader)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Only records at or after `from` (UNIX time) on the first pass.
    pub fn set_from(&mut self, from: f64) {
        for stream in self.log.iter_mut().chain(self.packet.iter_mut()) {
            stream.after = from;
            stream.inclusive = true;
        }
    }

    /// Only records at or before `until`.
    pub fn set_until(&mut self, until: f64) {
        self.until = Some(until);
    }

    /// Problems found with the protocol rows, to be reported once.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Starts a new pass: rows added since the last one become visible (follow mode).
    pub fn new_pass(&mut self) {
        for stream in self.log.iter_mut().chain(self.packet.iter_mut()) {
            stream.exhausted = false;
        }
        self.load_protocols();
    }

    /// The next record of this pass, packets and messages merged by date (a message wins a
    /// tie, as in NEO/py), or `None` when the pass has read everything.
    pub fn next_record(&mut self) -> Option<Record> {
        let log_date = self.peek_date(false);
        let packet_date = self.peek_date(true);
        let take_packet = match (log_date, packet_date) {
            (None, None) => return None,
            (Some(l), Some(p)) => p < l,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        let record = self.pop(take_packet)?;
        Some(match record.kind {
            RecordKind::Packet {
                msg_id,
                code,
                peer,
                body,
                name: _,
            } => {
                let name = self.packet_name(record.date, code);
                Record {
                    kind: RecordKind::Packet {
                        msg_id,
                        code,
                        peer,
                        body,
                        name,
                    },
                    ..record
                }
            }
            _ => record,
        })
    }

    fn peek_date(&mut self, packets: bool) -> Option<f64> {
        let streams = if packets {
            &mut self.packet
        } else {
            &mut self.log
        };
        for stream in streams.iter_mut() {
            if stream.page.is_empty() && !stream.exhausted {
                stream.fill(&self.db, self.until);
            }
            if let Some(record) = stream.page.front() {
                return Some(record.date);
            }
        }
        None
    }

    fn pop(&mut self, packets: bool) -> Option<Record> {
        let streams = if packets {
            &mut self.packet
        } else {
            &mut self.log
        };
        streams.iter_mut().find_map(|s| s.page.pop_front())
    }

    fn packet_name(&mut self, date: f64, code: i64) -> Option<String> {
        let code = u16::try_from(code).ok()?;
        // The row in force is the last one dated at or before the packet; a packet older
        // than every row (not written by NEO/py) falls back to the first row.
        let index = self.protocols.partition_point(|(d, _)| *d <= date);
        let names = match self.protocols.get(index.saturating_sub(1)) {
            Some((_, Ok(names))) => names.clone(),
            Some((_, Err(_))) => return None,
            None => Arc::new(PacketNames::builtin()),
        };
        names.name(code).map(str::to_owned)
    }

    fn load_protocols(&mut self) {
        let rows: rusqlite::Result<Vec<(f64, Vec<u8>)>> = (|| {
            let mut statement = self
                .db
                .prepare("SELECT date, text FROM protocol ORDER BY date")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })();
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                // A log without a protocol table (rotated before any packet) is normal
                // when it has no packets; the built-in table serves otherwise.
                if !self.packet.is_empty() && self.protocols.is_empty() {
                    self.warnings.push(format!(
                        "{}: no protocol table ({e}); using the built-in packet names",
                        self.path.display()
                    ));
                }
                Vec::new()
            }
        };
        if rows.len() == self.protocols.len() {
            return;
        }
        self.protocols = rows
            .into_iter()
            .map(|(date, text)| {
                let names = PacketNames::from_stored(&text).map(Arc::new);
                if let Err(e) = &names {
                    self.warnings.push(format!(
                        "{}: protocol row dated {date}: {e}; its packets are shown as unknown",
                        self.path.display()
                    ));
                }
                (date, names)
            })
            .collect();
    }
}

impl Stream {
    fn new(sql: String, packets: bool) -> Stream {
        Stream {
            sql,
            packets,
            after: f64::NEG_INFINITY,
            inclusive: false,
            page: VecDeque::new(),
            exhausted: false,
        }
    }

    fn fill(&mut self, db: &Connection, until: Option<f64>) {
        let sql = self
            .sql
            .replacen("{}", if self.inclusive { ">=" } else { ">" }, 1);
        let result = (|| -> rusqlite::Result<usize> {
            let mut statement = db.prepare_cached(&sql)?;
            let mut rows = statement.query([self.after])?;
            let mut count = 0;
            while let Some(row) = rows.next()? {
                count += 1;
                let date: f64 = row.get(0)?;
                let node = NodeRef {
                    name: row.get(1)?,
                    cluster: row.get(2)?,
                    nid: row.get(3)?,
                };
                let kind = if self.packets {
                    RecordKind::Packet {
                        msg_id: row.get(4)?,
                        code: row.get(5)?,
                        peer: row.get(6)?,
                        body: row.get(7)?,
                        name: None,
                    }
                } else {
                    RecordKind::Log {
                        level: row.get(4)?,
                        pathname: row.get(5)?,
                        lineno: row.get(6)?,
                        msg: text_column(row, 7)?,
                    }
                };
                self.after = date;
                self.inclusive = false;
                if until.is_some_and(|u| date > u) {
                    return Ok(0);
                }
                self.page.push_back(Record { date, node, kind });
            }
            Ok(count)
        })();
        match result {
            Ok(count) => self.exhausted = count < PAGE_ROWS,
            Err(e) => {
                self.exhausted = true;
                // Skip past the bad page on the next pass rather than report it forever.
                self.page.push_back(Record {
                    date: self.after.max(0.0),
                    node: NodeRef::default(),
                    kind: RecordKind::Error {
                        table: if self.packets { "PACKET" } else { "LOG" },
                        message: sqlite_error_text(&e),
                    },
                });
            }
        }
    }
}

/// The message column as text, whatever its stored type, since a NULL or a BLOB there
/// must not stop the listing.
fn text_column(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    Ok(match row.get_ref(index)? {
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
    })
}

/// `DatabaseError: <text>` as neolog prints a failing table.
fn sqlite_error_text(error: &rusqlite::Error) -> String {
    format!("DatabaseError: {error}")
}
