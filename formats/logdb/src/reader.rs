//! Reading a log file, ours or NEO/py's, as one stream of records ordered by date.
//!
//! Rows are fetched in pages keyed by date (`date > last ORDER BY date LIMIT n`), which
//! walks the primary key without holding a read lock for the whole file: a live writer is
//! not blocked for long, and a follow mode only needs to start a new pass to see new rows.
//!
//! Reading is meant to keep pace with `sqlite3 FILE 'select * from log'`, although a log has
//! two tables to read where that command reads one. Each table is read by its own worker
//! thread, with its own connection, a page or two ahead of the caller, so that decoding rows
//! overlaps with whatever the caller does with them (neolog: formatting). Pages go back and
//! forth between the worker and the reader, and a page's records are decoded into the
//! buffers of the records it held before (no allocation per row once warmed up); the small
//! `node` table is cached instead of joined on every row; the file is memory-mapped; and
//! [`LogReader::next_ref`] lends each record rather than handing over a copy.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};

use crate::protocol::{PacketNames, ProtocolError};

/// Rows fetched per query: large enough to amortise the query, small enough to stream.
const PAGE_ROWS: usize = 4096;

/// Pages a worker may have read before the reader asks for them: one being read while the
/// reader works on another is what lets the two overlap; a second absorbs uneven pages.
const PAGES_AHEAD: usize = 2;

/// Bytes of the file SQLite may map. Reading pages in place instead of copying each through
/// a `read` call is what makes a large log cheap to scan; SQLite caps this at its own
/// compile-time limit and reads the rest of a larger file as usual.
const MMAP_BYTES: i64 = 1 << 40;

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

/// One table (or its legacy predecessor) as the reader sees it: pages come from a worker
/// thread, started on first use so that `--from` and `--until` are known by then.
struct Stream {
    /// Everything the worker needs, until it is started.
    source: Option<Source>,
    worker: Option<Worker>,
    /// The page being returned: records `next..page.len` are still to come.
    page: Page,
    next: usize,
    /// This pass has returned every record of the table.
    exhausted: bool,
}

/// The channels to a running worker and its thread.
struct Worker {
    requests: Sender<Request>,
    pages: Receiver<Page>,
    thread: JoinHandle<()>,
}

/// What the reader asks of a worker.
enum Request {
    /// Read the next page into this one (or, once the pass is over, keep it for the next).
    Fill(Page),
    /// Start a new pass: rows added since the last one become visible.
    NewPass,
}

/// Records read from one table. Slots beyond `len` keep their buffers for later pages.
#[derive(Default)]
struct Page {
    records: Vec<Record>,
    len: usize,
    /// The last page of this pass.
    exhausted: bool,
}

/// A table read page by page, keyed by date, on a worker's own connection.
struct Source {
    db: Connection,
    table: String,
    /// The column read as the node: `node` (an id in the `node` table) or `name`.
    node: &'static str,
    packets: bool,
    /// Log records carry `pathname` and `lineno`.
    locations: bool,
    /// The second column is the node name itself (tables older than the `node` table)
    /// rather than an id in the `node` table.
    legacy: bool,
    after: f64,
    /// The first page of the first pass includes `after` itself (`--from`).
    inclusive: bool,
    until: Option<f64>,
    nodes: Nodes,
}

/// The `node` table, read once and again only when a record names an id not seen yet
/// (a live writer adds a row in the same transaction as the first record using it).
#[derive(Default)]
struct Nodes {
    /// Sorted by id; a log has a handful of identities, looked up on every row.
    rows: Vec<(i64, NodeRef)>,
}

/// The packet names of each protocol row, by date.
type Protocols = Vec<(f64, Result<PacketNames, ProtocolError>)>;

/// An open log file.
pub struct LogReader {
    path: PathBuf,
    db: Connection,
    log: Vec<Stream>,
    packet: Vec<Stream>,
    protocols: Protocols,
    /// The names used when the file has no protocol row.
    builtin: PacketNames,
    /// The stream [`LogReader::peek_date`] found, for the next [`LogReader::next_ref`].
    chosen: Option<(bool, usize, f64)>,
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
        let db = connect(&path).map_err(not_sqlite)?;
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
        for (table, streams, packets) in [("log", &mut log, false), ("packet", &mut packet, true)] {
            // Older NEO wrote the node name in the second column and had no node table;
            // NEO/py renames such tables to log1/packet1, whose rows come first.
            let legacy_table = format!("{table}1");
            if has(&legacy_table) {
                let db = connect(&path).map_err(not_sqlite)?;
                let source = Source::new(db, &legacy_table, "name", packets, true);
                streams.push(Stream::new(source));
            }
            if has(table) {
                let db = connect(&path).map_err(not_sqlite)?;
                let node = if legacy_main { "name" } else { "node" };
                let source = Source::new(db, table, node, packets, legacy_main);
                streams.push(Stream::new(source));
            }
        }
        let mut reader = LogReader {
            path,
            db,
            log,
            packet,
            protocols: Vec::new(),
            builtin: PacketNames::builtin(),
            chosen: None,
            until: None,
            warnings: Vec::new(),
        };
        reader.load_protocols();
        Ok(reader)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Only records at or after `from` (UNIX time) on the first pass. Must be called before
    /// reading.
    pub fn set_from(&mut self, from: f64) {
        for stream in self.log.iter_mut().chain(self.packet.iter_mut()) {
            if let Some(source) = &mut stream.source {
                source.after = from;
                source.inclusive = true;
            }
        }
    }

    /// Leaves `pathname` and `lineno` out of log records (both `None`), for a caller that
    /// does not show them, like neolog: every column read costs several calls into SQLite
    /// per row. Must be called before reading.
    pub fn skip_locations(&mut self) {
        for stream in self.log.iter_mut() {
            if let Some(source) = &mut stream.source {
                source.locations = false;
            }
        }
    }

    /// Only records at or before `until`. Must be called before reading.
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
            if let Some(worker) = &stream.worker {
                let _ = worker.requests.send(Request::NewPass);
            }
        }
        self.load_protocols();
    }

    /// The next record of this pass, packets and messages merged by date (a message wins a
    /// tie, as in NEO/py), or `None` when the pass has read everything.
    pub fn next_record(&mut self) -> Option<Record> {
        self.next_ref().cloned()
    }

    /// The date of the record [`LogReader::next_ref`] would return, which lets several
    /// files be merged without taking their records out.
    pub fn peek_date(&mut self) -> Option<f64> {
        if self.chosen.is_none() {
            self.chosen = self.choose();
        }
        self.chosen.map(|(_, _, date)| date)
    }

    /// As [`LogReader::next_record`], but lends the record, which stays valid until the
    /// reader is used again; this is what spares a copy of every row.
    pub fn next_ref(&mut self) -> Option<&Record> {
        let (packets, index, _) = match self.chosen.take() {
            Some(chosen) => chosen,
            None => self.choose()?,
        };
        let streams = if packets {
            &mut self.packet
        } else {
            &mut self.log
        };
        let stream = &mut streams[index];
        let record = &mut stream.page.records[stream.next];
        stream.next += 1;
        if let RecordKind::Packet { code, name, .. } = &mut record.kind {
            // Resolved when taken rather than when read, so that it uses the protocol rows
            // of the current pass.
            let found = packet_name(&self.protocols, &self.builtin, record.date, *code);
            match (found, name.as_mut()) {
                (Some(found), Some(name)) => {
                    name.clear();
                    name.push_str(found);
                }
                (found, _) => *name = found.map(str::to_owned),
            }
        }
        Some(record)
    }

    /// Which stream holds the next record: packets or not, its index, and the record date.
    fn choose(&mut self) -> Option<(bool, usize, f64)> {
        let log = self.front(false);
        let packet = self.front(true);
        match (log, packet) {
            (None, None) => None,
            (Some((_, l)), Some((i, p))) if p < l => Some((true, i, p)),
            (Some((i, l)), _) => Some((false, i, l)),
            (None, Some((i, p))) => Some((true, i, p)),
        }
    }

    /// The first stream of a kind with a record left (reading a page if needed), and the
    /// date of that record.
    fn front(&mut self, packets: bool) -> Option<(usize, f64)> {
        let streams = if packets {
            &mut self.packet
        } else {
            &mut self.log
        };
        for (index, stream) in streams.iter_mut().enumerate() {
            if stream.next == stream.page.len && !stream.exhausted {
                stream.next_page(self.until);
            }
            if stream.next < stream.page.len {
                return Some((index, stream.page.records[stream.next].date));
            }
        }
        None
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
                let names = PacketNames::from_stored(&text);
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

/// The name of packet `code` dated `date`, or `None` for an unknown code.
fn packet_name<'a>(
    protocols: &'a Protocols,
    builtin: &'a PacketNames,
    date: f64,
    code: i64,
) -> Option<&'a str> {
    let code = u16::try_from(code).ok()?;
    // The row in force is the last one dated at or before the packet; a packet older than
    // every row (not written by NEO/py) falls back to the first row.
    let index = protocols.partition_point(|(d, _)| *d <= date);
    let names = match protocols.get(index.saturating_sub(1)) {
        Some((_, Ok(names))) => names,
        Some((_, Err(_))) => return None,
        None => builtin,
    };
    names.name(code)
}

impl Stream {
    fn new(source: Source) -> Stream {
        Stream {
            source: Some(source),
            worker: None,
            page: Page::default(),
            next: 0,
            exhausted: false,
        }
    }

    /// Hands the page just returned back to the worker and takes the next one, waiting for
    /// it if needed.
    fn next_page(&mut self, until: Option<f64>) {
        if let Some(mut source) = self.source.take() {
            source.until = until;
            self.worker = Some(Worker::start(source));
        }
        let Some(worker) = &self.worker else {
            self.exhausted = true;
            return;
        };
        // The worker only stops without a last page if it panicked; its table then ends.
        let Ok(page) = worker.pages.recv() else {
            self.exhausted = true;
            return;
        };
        let used = std::mem::replace(&mut self.page, page);
        self.next = 0;
        self.exhausted = self.page.exhausted;
        let _ = worker.requests.send(Request::Fill(used));
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(Worker {
            requests,
            pages,
            thread,
        }) = self.worker.take()
        {
            // Closing the requests channel ends the worker after the page it is reading,
            // and its connection is closed before the file can go (a temporary copy).
            drop(requests);
            drop(pages);
            let _ = thread.join();
        }
    }
}

impl Worker {
    fn start(mut source: Source) -> Worker {
        let (requests, requests_in) = channel();
        let (pages_out, pages) = channel();
        for _ in 0..PAGES_AHEAD {
            let _ = requests.send(Request::Fill(Page::default()));
        }
        let thread = std::thread::spawn(move || source.serve(requests_in, pages_out));
        Worker {
            requests,
            pages,
            thread,
        }
    }
}

impl Source {
    /// Reads `table` by date, with the node id (or, for legacy tables, the node name) in
    /// column `node`.
    fn new(db: Connection, table: &str, node: &'static str, packets: bool, legacy: bool) -> Source {
        Source {
            db,
            table: table.to_owned(),
            node,
            packets,
            locations: true,
            legacy,
            after: f64::NEG_INFINITY,
            inclusive: false,
            until: None,
            nodes: Nodes::default(),
        }
    }

    /// The query of the next page.
    fn sql(&self) -> String {
        let columns = match (self.packets, self.locations) {
            (true, _) => "msg_id, code, peer, body",
            (false, true) => "level, pathname, lineno, msg",
            (false, false) => "level, msg",
        };
        let (node, table) = (self.node, &self.table);
        let op = if self.inclusive { ">=" } else { ">" };
        format!("SELECT date, {node}, {columns} FROM {table} WHERE date {op} ? ORDER BY date LIMIT {PAGE_ROWS}")
    }

    /// The worker's loop: fills the pages it is given, in order, until a pass is over; the
    /// pages given after that wait for the next pass.
    fn serve(&mut self, requests: Receiver<Request>, pages: Sender<Page>) {
        let mut waiting = Vec::new();
        let mut exhausted = false;
        for request in requests {
            match request {
                Request::Fill(page) => waiting.push(page),
                Request::NewPass => {
                    exhausted = false;
                    // Node rows are only added, but a new pass re-reads them anyway.
                    self.nodes.rows.clear();
                }
            }
            while !exhausted {
                let Some(mut page) = waiting.pop() else {
                    break;
                };
                self.fill(&mut page);
                exhausted = page.exhausted;
                if pages.send(page).is_err() {
                    return;
                }
            }
        }
    }

    fn fill(&mut self, page: &mut Page) {
        page.len = 0;
        match self.read_page(page) {
            Ok(count) => page.exhausted = count < PAGE_ROWS,
            Err(e) => {
                page.exhausted = true;
                // Skip past the bad page on the next pass rather than report it forever.
                let record = Record {
                    date: self.after.max(0.0),
                    node: NodeRef::default(),
                    kind: RecordKind::Error {
                        table: if self.packets { "PACKET" } else { "LOG" },
                        message: sqlite_error_text(&e),
                    },
                };
                match page.records.get_mut(page.len) {
                    Some(slot) => *slot = record,
                    None => page.records.push(record),
                }
                page.len += 1;
            }
        }
    }

    /// Decodes the rows of one page into `page.records[..len]`; the number of rows read, or
    /// 0 once a row is past `until`.
    fn read_page(&mut self, page: &mut Page) -> rusqlite::Result<usize> {
        let db = &self.db;
        let mut statement = db.prepare_cached(&self.sql())?;
        let mut rows = statement.query([self.after])?;
        let mut count = 0;
        while let Some(row) = rows.next()? {
            count += 1;
            if page.records.len() == page.len {
                page.records.push(Record::empty(self.packets));
            }
            let record = &mut page.records[page.len];
            if matches!(record.kind, RecordKind::Error { .. }) {
                *record = Record::empty(self.packets);
            }
            let date = get_f64(row, 0)?;
            record.date = date;
            if self.legacy {
                set_optional_text(&mut record.node.name, row, 1)?;
                record.node.cluster = None;
                record.node.nid = None;
            } else {
                match row.get_ref(1)? {
                    ValueRef::Integer(id) => {
                        // Field by field: a derived `clone_from` would allocate new strings.
                        let node = self.nodes.get(db, id)?;
                        record.node.name.clone_from(&node.name);
                        record.node.cluster.clone_from(&node.cluster);
                        record.node.nid = node.nid;
                    }
                    // No node row matches, as with a LEFT JOIN on the id.
                    _ => record.node = NodeRef::default(),
                }
            }
            match &mut record.kind {
                RecordKind::Log {
                    level,
                    pathname,
                    lineno,
                    msg,
                } => {
                    *level = get_i64(row, 2)?;
                    if self.locations {
                        set_optional_text(pathname, row, 3)?;
                        *lineno = row.get(4)?;
                        set_message(msg, row, 5)?;
                    } else {
                        set_message(msg, row, 3)?;
                    }
                }
                RecordKind::Packet {
                    msg_id,
                    code,
                    peer,
                    body,
                    name: _,
                } => {
                    *msg_id = get_i64(row, 2)?;
                    *code = get_i64(row, 3)?;
                    set_text(peer, row, 4)?;
                    set_optional_blob(body, row, 5)?;
                }
                RecordKind::Error { .. } => unreachable!("replaced above"),
            }
            self.after = date;
            self.inclusive = false;
            if self.until.is_some_and(|u| date > u) {
                return Ok(0);
            }
            page.len += 1;
        }
        Ok(count)
    }
}

impl Record {
    /// A slot for rows of the log or the packet table.
    fn empty(packets: bool) -> Record {
        let kind = if packets {
            RecordKind::Packet {
                msg_id: 0,
                code: 0,
                peer: String::new(),
                body: None,
                name: None,
            }
        } else {
            RecordKind::Log {
                level: 0,
                pathname: None,
                lineno: None,
                msg: String::new(),
            }
        };
        Record {
            date: 0.0,
            node: NodeRef::default(),
            kind,
        }
    }
}

/// A read-only connection to a log file; nothing is ever created or changed.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    db.busy_timeout(std::time::Duration::from_secs(10))?;
    // Only a speed-up: without the mapping SQLite reads the same pages through `read`.
    let _ = db.pragma_update(None, "mmap_size", MMAP_BYTES);
    Ok(db)
}

impl Nodes {
    fn get(&mut self, db: &Connection, id: i64) -> rusqlite::Result<&NodeRef> {
        let index = match self.rows.binary_search_by_key(&id, |(id, _)| *id) {
            Ok(index) => index,
            Err(_) => {
                self.rows.clear();
                let mut statement =
                    db.prepare_cached("SELECT id, name, cluster, nid FROM node ORDER BY id")?;
                let mut rows = statement.query([])?;
                while let Some(row) = rows.next()? {
                    let node = NodeRef {
                        name: row.get(1)?,
                        cluster: row.get(2)?,
                        nid: row.get(3)?,
                    };
                    self.rows.push((row.get(0)?, node));
                }
                // An id without a row reads as the LEFT JOIN did: nothing known. It is kept
                // so that the table is not read again for every such record of this pass.
                match self.rows.binary_search_by_key(&id, |(id, _)| *id) {
                    Ok(index) => index,
                    Err(index) => {
                        self.rows.insert(index, (id, NodeRef::default()));
                        index
                    }
                }
            }
        };
        Ok(&self.rows[index].1)
    }
}

// The getters and setters below read a column with a single access, and copy text into a
// record's existing buffer. Values of an unexpected type go through rusqlite's own
// conversion, so that they fail (or succeed) as `row.get` would.

/// Buffers above this size are not kept for the next page: one huge message must not pin
/// its size in every slot it passes through.
const KEPT_CAPACITY: usize = 1 << 16;

fn reuse(out: &mut String) {
    if out.capacity() > KEPT_CAPACITY {
        *out = String::new();
    } else {
        out.clear();
    }
}

fn reuse_blob(out: &mut Vec<u8>) {
    if out.capacity() > KEPT_CAPACITY {
        *out = Vec::new();
    } else {
        out.clear();
    }
}

fn get_f64(row: &Row<'_>, index: usize) -> rusqlite::Result<f64> {
    match row.get_ref(index)? {
        ValueRef::Real(f) => Ok(f),
        _ => row.get(index),
    }
}

fn get_i64(row: &Row<'_>, index: usize) -> rusqlite::Result<i64> {
    match row.get_ref(index)? {
        ValueRef::Integer(i) => Ok(i),
        _ => row.get(index),
    }
}

fn set_text(out: &mut String, row: &Row<'_>, index: usize) -> rusqlite::Result<()> {
    match text_ref(row.get_ref(index)?) {
        Some(text) => {
            reuse(out);
            out.push_str(text);
        }
        None => *out = row.get(index)?,
    }
    Ok(())
}

fn set_optional_text(
    out: &mut Option<String>,
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<()> {
    let value = row.get_ref(index)?;
    match (text_ref(value), out.as_mut()) {
        (Some(text), Some(out)) => {
            reuse(out);
            out.push_str(text);
        }
        (Some(text), None) => *out = Some(text.to_owned()),
        (None, _) if value == ValueRef::Null => *out = None,
        (None, _) => *out = row.get(index)?,
    }
    Ok(())
}

/// A value that `row.get::<String>` would accept as it is.
fn text_ref(value: ValueRef<'_>) -> Option<&str> {
    match value {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

fn set_optional_blob(
    out: &mut Option<Vec<u8>>,
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<()> {
    match (row.get_ref(index)?, out.as_mut()) {
        (ValueRef::Null, _) => *out = None,
        (ValueRef::Blob(bytes), Some(blob)) => {
            reuse_blob(blob);
            blob.extend_from_slice(bytes);
        }
        _ => *out = row.get(index)?,
    }
    Ok(())
}

/// The message column as text, whatever its stored type, since a NULL or a BLOB there
/// must not stop the listing.
fn set_message(out: &mut String, row: &Row<'_>, index: usize) -> rusqlite::Result<()> {
    reuse(out);
    match row.get_ref(index)? {
        ValueRef::Null => {}
        ValueRef::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        ValueRef::Real(f) => {
            let _ = write!(out, "{f}");
        }
        ValueRef::Text(t) | ValueRef::Blob(t) => match std::str::from_utf8(t) {
            Ok(text) => out.push_str(text),
            Err(_) => out.push_str(&String::from_utf8_lossy(t)),
        },
    }
    Ok(())
}

/// `DatabaseError: <text>` as neolog prints a failing table.
fn sqlite_error_text(error: &rusqlite::Error) -> String {
    format!("DatabaseError: {error}")
}
