//! The two kinds of database neomigrate reads, as one stream of owned transactions: a
//! FileStorage read by a background thread, and a NEO cluster read by a pool of threads
//! sharing one client (the iterator of tools.md 7.3 costs one round trip per object, so
//! several transactions are fetched at once and handed out in TID order).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};
use neo_client::{Client, ClientError, Codec, Encoded, Error as ClientCallError};
use neo_filestorage::{FileStorage, Options};
use neo_protocol::{Bytes, Tid};

/// One transaction with its records, whatever it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    pub tid: u64,
    pub user: Bytes,
    pub description: Bytes,
    pub extension: Bytes,
    /// FileStorage status `'p'`, or NEO's packed flag.
    pub packed: bool,
    /// In the order of the source, one per OID (a later record of the same OID in one
    /// transaction replaces the earlier, as NEO keeps one).
    pub records: Vec<Rec>,
    /// Bytes this transaction takes in a FileStorage (its record, header to trailing
    /// length), or the sum of its data sizes for NEO: what progress counts.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub oid: u64,
    /// None for a deletion or an undone creation.
    pub data: Option<Bytes>,
    /// The transaction whose record holds this data (undo and its backpointers).
    pub data_txn: Option<u64>,
    /// The data as sent to a cluster (compressed, checksummed), when the reader was asked
    /// to prepare it.
    pub encoded: Option<Encoded>,
}

impl Txn {
    pub fn data_bytes(&self) -> u64 {
        self.records
            .iter()
            .map(|r| r.data.as_ref().map_or(0, |d| d.len() as u64))
            .sum()
    }
}

/// Keeps the last record of each OID, at the place of the first.
fn dedup_records(records: &mut Vec<Rec>) {
    if records.len() < 2 {
        return;
    }
    let mut at: HashMap<u64, usize> = HashMap::with_capacity(records.len());
    let mut out: Vec<Rec> = Vec::with_capacity(records.len());
    for record in records.drain(..) {
        match at.get(&record.oid) {
            Some(&i) => out[i] = record,
            None => {
                at.insert(record.oid, out.len());
                out.push(record);
            }
        }
    }
    *records = out;
}

/// Opens a FileStorage for reading, refusing one whose end is torn: its last
/// transaction would be silently left out otherwise.
pub fn open_source_file(path: &Path) -> Result<FileStorage> {
    let options = Options {
        sidecar: false,
        ..Options::default()
    };
    let fs = FileStorage::open(path, options)
        .with_context(|| format!("{} is not a readable FileStorage", path.display()))?;
    if let Some(torn) = fs.torn_tail() {
        anyhow::bail!(
            "{}: the last transaction is torn at byte {} ({} bytes: {}); nothing was \
             migrated. Keep the complete transactions with `neofs copy {} NEW.fs` (or open \
             it read-write with ZODB, which truncates it) and migrate that.",
            path.display(),
            torn.pos,
            torn.len,
            torn.why,
            path.display(),
        );
    }
    Ok(fs)
}

/// Reads the transactions of a FileStorage after `after` in a background thread, a
/// bounded number ahead of the consumer.
pub struct FileReader {
    receiver: Receiver<Result<Txn>>,
    thread: Option<JoinHandle<()>>,
}

impl FileReader {
    /// With `codec`, the reader also encodes every record's data for a cluster, so that
    /// compression runs beside the commits instead of before each.
    pub fn start(fs: FileStorage, after: Option<u64>, codec: Option<Codec>) -> Result<FileReader> {
        let (sender, receiver) = mpsc::sync_channel(64);
        let thread = std::thread::Builder::new()
            .name("fs-reader".into())
            .spawn(move || {
                let mut codec = codec;
                if let Err(error) = read_file(&fs, after, codec.as_mut(), &sender) {
                    let _ = sender.send(Err(error));
                }
            })
            .context("cannot start the reader thread")?;
        Ok(FileReader {
            receiver,
            thread: Some(thread),
        })
    }
}

fn read_file(
    fs: &FileStorage,
    after: Option<u64>,
    mut codec: Option<&mut Codec>,
    sender: &SyncSender<Result<Txn>>,
) -> Result<()> {
    let start = after.map(|tid| neo_filestorage::Tid(tid.saturating_add(1)));
    let mut iter = fs.iter(start, None)?;
    while let Some(txn) = iter.next_txn()? {
        let view = txn.view;
        let mut records = Vec::new();
        for record in txn.records() {
            let record = record?;
            let data = record.data.map(|d| Bytes::copy_from_slice(&d));
            let encoded = match (&data, codec.as_deref_mut()) {
                (Some(data), Some(codec)) => Some(codec.encode(data)),
                _ => None,
            };
            records.push(Rec {
                oid: record.oid.0,
                data,
                data_txn: record.data_txn.map(|t| t.0),
                encoded,
            });
        }
        dedup_records(&mut records);
        let txn = Txn {
            tid: view.tid().0,
            user: Bytes::copy_from_slice(view.user()),
            description: Bytes::copy_from_slice(view.description()),
            extension: Bytes::copy_from_slice(view.extension()),
            packed: view.status() == b'p',
            records,
            size: view.end_pos() - view.pos,
        };
        if sender.send(Ok(txn)).is_err() {
            // The consumer stopped (an error on its side): nothing more to do.
            return Ok(());
        }
    }
    Ok(())
}

impl Iterator for FileReader {
    type Item = Result<Txn>;

    fn next(&mut self) -> Option<Result<Txn>> {
        match self.receiver.recv() {
            Ok(item) => Some(item),
            Err(_) => {
                if let Some(thread) = self.thread.take() {
                    if thread.join().is_err() {
                        return Some(Err(anyhow!("the FileStorage reader thread panicked")));
                    }
                }
                None
            }
        }
    }
}

/// Transactions fetched but not yet handed out, by sequence number.
struct Window {
    ready: BTreeMap<u64, Result<Txn>>,
    /// Sequence number the consumer waits for next.
    next: u64,
    /// Sequence numbers handed to workers so far.
    issued: u64,
    /// TIDs still to fetch (filled by chunks of the TID list).
    todo: std::collections::VecDeque<Tid>,
    /// Where the TID list goes on, or None once it is exhausted.
    list_from: Option<Tid>,
    stop: Tid,
    /// A worker is listing the next chunk of TIDs (it has taken `list_from`).
    listing: bool,
    failed: bool,
    closed: bool,
}

struct Shared {
    window: Mutex<Window>,
    changed: Condvar,
}

/// Reads a NEO cluster's transactions in `(after, stop]` with `workers` threads, at most
/// `ahead` transactions ahead of the consumer.
pub struct NeoReader {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

const TID_CHUNK: u32 = 1000;

impl NeoReader {
    pub fn start(client: Arc<Client>, after: Option<u64>, workers: usize) -> Result<NeoReader> {
        let stop = client.last_transaction()?;
        let first = Tid(after.map_or(0, |t| t.saturating_add(1)));
        let shared = Arc::new(Shared {
            window: Mutex::new(Window {
                ready: BTreeMap::new(),
                next: 0,
                issued: 0,
                todo: Default::default(),
                list_from: (first <= stop && stop != Tid::ZERO).then_some(first),
                stop,
                listing: false,
                failed: false,
                closed: false,
            }),
            changed: Condvar::new(),
        });
        let ahead = (workers as u64 * 8).max(16);
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let shared = shared.clone();
            let client = client.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("neo-reader-{i}"))
                    .spawn(move || fetch_loop(&client, &shared, ahead))
                    .context("cannot start a reader thread")?,
            );
        }
        Ok(NeoReader { shared, threads })
    }
}

fn lock(window: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
    window.lock().unwrap_or_else(|e| e.into_inner())
}

/// One worker: takes the next TID (listing more when needed), fetches it, files it.
fn fetch_loop(client: &Client, shared: &Shared, ahead: u64) {
    loop {
        let (seq, tid) = {
            let mut window = lock(&shared.window);
            loop {
                if window.closed || window.failed {
                    return;
                }
                if window.issued < window.next + ahead {
                    if let Some(tid) = window.todo.pop_front() {
                        let seq = window.issued;
                        window.issued += 1;
                        break (seq, tid);
                    }
                    if let Some(from) = window.list_from.take() {
                        // List the next chunk without holding the lock; other workers
                        // wait for it (list_from is None meanwhile, todo empty).
                        let stop = window.stop;
                        window.listing = true;
                        drop(window);
                        let listed = client.tids_from(from, stop, TID_CHUNK);
                        window = lock(&shared.window);
                        window.listing = false;
                        match listed {
                            Ok(tids) => {
                                if tids.len() as u32 == TID_CHUNK {
                                    if let Some(last) = tids.last() {
                                        if *last < window.stop {
                                            window.list_from = Some(Tid(last.0 + 1));
                                        }
                                    }
                                }
                                window.todo.extend(tids);
                            }
                            Err(error) => {
                                let seq = window.issued;
                                window.issued += 1;
                                window.ready.insert(seq, Err(anyhow::Error::from(error)));
                                window.failed = true;
                            }
                        }
                        shared.changed.notify_all();
                        continue;
                    }
                }
                window = shared
                    .changed
                    .wait(window)
                    .unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = fetch_transaction(client, tid);
        let mut window = lock(&shared.window);
        if result.is_err() {
            window.failed = true;
        }
        window.ready.insert(seq, result);
        shared.changed.notify_all();
    }
}

fn fetch_transaction(client: &Client, tid: Tid) -> Result<Txn> {
    let info = client.transaction_information(tid)?;
    let mut records = Vec::with_capacity(info.oids.len());
    for &oid in &info.oids {
        match client.load_serial(oid, tid) {
            Ok(record) => records.push(Rec {
                oid: oid.0,
                data: record.data,
                data_txn: record.data_serial.map(|t| t.0),
                encoded: None,
            }),
            // Removed by a pack, or only checked (readCurrent) in that transaction.
            Err(ClientCallError::Client(
                ClientError::OidNotFound(_) | ClientError::OidDoesNotExist(_),
            )) => {}
            Err(error) => {
                return Err(anyhow::Error::from(error)).with_context(|| {
                    format!(
                        "reading object {} of transaction {}",
                        hex(oid.0),
                        hex(tid.0)
                    )
                })
            }
        }
    }
    let mut txn = Txn {
        tid: tid.0,
        user: info.user,
        description: info.description,
        extension: info.extension,
        packed: info.packed,
        records,
        size: 0,
    };
    txn.size = txn.data_bytes();
    Ok(txn)
}

impl Iterator for NeoReader {
    type Item = Result<Txn>;

    fn next(&mut self) -> Option<Result<Txn>> {
        let mut window = lock(&self.shared.window);
        loop {
            let next = window.next;
            if let Some(item) = window.ready.remove(&next) {
                window.next += 1;
                self.shared.changed.notify_all();
                if item.is_err() {
                    window.closed = true;
                }
                return Some(item);
            }
            let exhausted = window.list_from.is_none() && window.todo.is_empty() && !window.listing;
            if window.closed || (window.issued == next && (exhausted || window.failed)) {
                return None;
            }
            window = self
                .shared
                .changed
                .wait(window)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for NeoReader {
    fn drop(&mut self) {
        lock(&self.shared.window).closed = true;
        self.shared.changed.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

pub fn hex(value: u64) -> String {
    format!("0x{value:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(oid: u64, data: &'static [u8]) -> Rec {
        Rec {
            oid,
            data: Some(Bytes::from_static(data)),
            data_txn: None,
            encoded: None,
        }
    }

    #[test]
    fn a_later_record_of_an_oid_replaces_the_earlier_in_place() {
        let mut records = vec![rec(1, b"a"), rec(2, b"b"), rec(1, b"c")];
        dedup_records(&mut records);
        assert_eq!(records, vec![rec(1, b"c"), rec(2, b"b")]);
    }
}
