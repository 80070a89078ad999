//! The committed history as the storages hold it, and the checks of the clients' model
//! ([`crate::workload::Model`]) against it, run once the cluster has settled:
//!
//! 1. every UP_TO_DATE replica of a partition holds the same transactions and object
//!    records, byte for byte (read through the `Backend` trait);
//! 2. every acknowledged commit is there, at its TID, with exactly the values stored;
//!    every transaction there is one a client asked to finish, with its values;
//! 3. per object, each committed revision was based on the revision just before it:
//!    two writers based on the same serial never both commit (no lost update);
//! 4. every load returned the revision current at the snapshot it used;
//! 5. every client received, in TID order, an invalidation for each commit of the others
//!    after its first connection (or a full invalidation covering it), and none for a
//!    TID that is not committed.
//!
//! TIDs of acknowledgements growing strictly is checked on the wire (`check`).

use std::collections::{BTreeMap, BTreeSet};

use neo_client_core::{codec, Invalidation};
use neo_protocol::{Bytes, CellState, Oid, Tid};
use neo_storage::{Backend, MemoryBackend, StoredData};

use crate::cluster::Cluster;
use crate::workload::{decode_value, LoadKind, LoadResult, Model, Outcome};

/// One committed transaction, merged from the partitions holding its parts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    /// None if no replica holds its metadata (reported as a problem).
    pub ttid: Option<Tid>,
    pub oids: Vec<Oid>,
    /// oid → data (None: a deletion).
    pub objects: BTreeMap<Oid, Option<Bytes>>,
}

/// TID → committed transaction.
pub type History = BTreeMap<Tid, Committed>;

/// One partition as one storage holds it.
#[derive(Debug, Default, PartialEq)]
struct PartitionDump {
    /// tid → (ttid, oids)
    transactions: BTreeMap<Tid, (Tid, Vec<Oid>)>,
    /// (tid, oid) → (stored data, data_serial)
    objects: BTreeMap<(Tid, Oid), (Option<StoredData>, Option<Tid>)>,
}

impl Cluster {
    /// Reads every UP_TO_DATE cell (in the primary's table) of every operational
    /// storage, checks that replicas of a partition are identical, and merges the
    /// partitions into one history. Returns the history and the problems found.
    pub fn committed_history(&self) -> (History, Vec<String>) {
        let mut problems = Vec::new();
        let mut history = History::new();
        let Some((pt, _)) = self.primary_view() else {
            return (history, vec!["no primary".to_string()]);
        };
        let mut dumps: BTreeMap<u32, Vec<(String, PartitionDump)>> = BTreeMap::new();
        for &id in &self.storages {
            let Some(storage) = self.storage(id).filter(|s| s.is_operational()) else {
                continue;
            };
            let Some(nid) = storage.nid() else {
                continue;
            };
            for (partition, state) in pt.cells_of(nid) {
                if state != CellState::UpToDate {
                    continue;
                }
                match dump_partition(storage.backend(), partition) {
                    Ok(dump) => dumps
                        .entry(partition)
                        .or_default()
                        .push((self.world.name(id).to_string(), dump)),
                    Err(e) => problems.push(format!(
                        "{} partition {partition}: read error {e}",
                        self.world.name(id)
                    )),
                }
            }
        }
        for partition in 0..pt.np() {
            let Some(replicas) = dumps.get(&partition) else {
                problems.push(format!(
                    "partition {partition}: no UP_TO_DATE replica to read"
                ));
                continue;
            };
            let (first_name, first) = &replicas[0];
            for (name, dump) in &replicas[1..] {
                if dump != first {
                    problems.push(format!(
                        "partition {partition}: replicas differ: {first_name} {} vs {name} {}",
                        describe_difference(first, dump).0,
                        describe_difference(first, dump).1,
                    ));
                }
            }
            for (tid, (ttid, oids)) in &first.transactions {
                let entry = history.entry(*tid).or_default();
                entry.ttid = Some(*ttid);
                entry.oids = oids.clone();
            }
            for ((tid, oid), (data, _)) in &first.objects {
                let value = match data {
                    Some(data) => match codec::decompress(data.compression, &data.value) {
                        Ok(value) => Some(value),
                        Err(e) => {
                            problems.push(format!("object {oid:?} at {tid:?}: {e}"));
                            continue;
                        }
                    },
                    None => None,
                };
                history.entry(*tid).or_default().objects.insert(*oid, value);
            }
        }
        for (tid, committed) in &history {
            if committed.ttid.is_none() {
                problems.push(format!(
                    "objects {:?} at {tid:?} without transaction metadata",
                    committed.objects.keys().collect::<Vec<_>>()
                ));
            }
        }
        (history, problems)
    }
}

/// Checks the clients' model against the committed history (points 2 to 5 of the
/// module documentation). Returns the problems found.
pub fn check_model(model: &Model, history: &History) -> Vec<String> {
    let mut problems: Vec<String> = model.harness_errors.clone();
    check_commits(model, history, &mut problems);
    let revisions = revisions(history);
    check_serials(&revisions, &mut problems);
    check_loads(model, &revisions, &mut problems);
    check_invalidations(model, history, &mut problems);
    problems
}

/// Per object, its committed revisions in TID order: (tid, data).
type Revisions = BTreeMap<Oid, Vec<(Tid, Option<Bytes>)>>;

fn revisions(history: &History) -> Revisions {
    let mut revisions = Revisions::new();
    for (tid, committed) in history {
        for (oid, data) in &committed.objects {
            revisions
                .entry(*oid)
                .or_default()
                .push((*tid, data.clone()));
        }
    }
    revisions
}

fn check_commits(model: &Model, history: &History, problems: &mut Vec<String>) {
    for attempt in &model.attempts {
        let Outcome::Acked(tid) = attempt.outcome else {
            continue;
        };
        let Some(committed) = history.get(&tid) else {
            problems.push(format!(
                "acknowledged commit {tid:?} of client {} (ttid {:?}) is lost",
                attempt.client, attempt.ttid
            ));
            continue;
        };
        if committed.ttid != Some(attempt.ttid) {
            problems.push(format!(
                "commit {tid:?} acknowledged for ttid {:?} holds ttid {:?}",
                attempt.ttid, committed.ttid
            ));
        }
    }
    for (tid, committed) in history {
        let attempt = committed
            .ttid
            .and_then(|ttid| model.by_ttid.get(&ttid))
            .map(|&i| &model.attempts[i]);
        let Some(attempt) = attempt else {
            problems.push(format!(
                "committed transaction {tid:?} (ttid {:?}) was never started by a client",
                committed.ttid
            ));
            continue;
        };
        match &attempt.outcome {
            Outcome::Acked(acked) if acked != tid => problems.push(format!(
                "ttid {:?} acknowledged at {acked:?} but committed at {tid:?}",
                attempt.ttid
            )),
            Outcome::Acked(_) | Outcome::FinishSent | Outcome::FinishFailed(_) => {}
            Outcome::Open | Outcome::Abandoned(_) => problems.push(format!(
                "transaction {tid:?} of client {} (ttid {:?}) committed without a finish \
                 request ({:?})",
                attempt.client, attempt.ttid, attempt.outcome
            )),
        }
        let written: BTreeMap<Oid, Option<Bytes>> = attempt
            .writes
            .iter()
            .map(|(oid, (_, value))| (*oid, Some(value.clone())))
            .collect();
        if written != committed.objects {
            problems.push(format!(
                "transaction {tid:?} of client {} holds {:?}, the client stored {:?}",
                attempt.client, committed.objects, written
            ));
        }
        let oids: BTreeSet<Oid> = committed.oids.iter().copied().collect();
        let stored: BTreeSet<Oid> = attempt.writes.keys().copied().collect();
        if oids != stored {
            problems.push(format!(
                "transaction {tid:?} lists oids {oids:?}, the client stored {stored:?}"
            ));
        }
    }
}

/// Each committed revision must be based on the previous one (ZERO for the first).
fn check_serials(revisions: &Revisions, problems: &mut Vec<String>) {
    for (oid, list) in revisions {
        let mut previous = Tid::ZERO;
        for (tid, data) in list {
            let base = data
                .as_ref()
                .and_then(|d| decode_value(d))
                .map(|(_, _, _, base)| base);
            match base {
                Some(base) if base == previous => {}
                Some(base) => {
                    let what = if list.iter().any(|(t, _)| *t == base) || base == Tid::ZERO {
                        "lost update: two commits based on the same serial"
                    } else {
                        "based on a serial that is not committed"
                    };
                    problems.push(format!(
                        "{what}: {oid:?} at {tid:?} was based on {base:?}, the previous \
                         revision is {previous:?}"
                    ));
                }
                None => problems.push(format!("{oid:?} at {tid:?}: value {data:?} not ours")),
            }
            previous = *tid;
        }
    }
}

fn check_loads(model: &Model, revisions: &Revisions, problems: &mut Vec<String>) {
    let empty = Vec::new();
    for load in &model.loads {
        let list = revisions.get(&load.oid).unwrap_or(&empty);
        // The newest revision strictly before a TID.
        let before = |limit: Tid| list.iter().rev().find(|(t, _)| *t < limit);
        let ok = match (&load.kind, &load.result) {
            (LoadKind::Serial(serial), LoadResult::Found { serial: got, data }) => {
                got == serial && list.iter().any(|(t, d)| t == serial && d == data)
            }
            (LoadKind::Serial(_), LoadResult::Missing) => false,
            (LoadKind::Before(limit), result) => match (before(*limit), result) {
                (None, LoadResult::Missing) => true,
                (Some((t, d)), LoadResult::Found { serial, data }) => t == serial && d == data,
                _ => false,
            },
            (LoadKind::Current { low, high }, LoadResult::Found { serial, data }) => {
                let exists = list.iter().any(|(t, d)| t == serial && d == data);
                // Current at some TID in [low, high]: not newer than high, and nothing
                // newer committed up to low.
                let newer_by_low = list.iter().any(|(t, _)| t > serial && t <= low);
                exists && serial <= high && !newer_by_low
            }
            (LoadKind::Current { low, .. }, LoadResult::Missing) => {
                list.iter().all(|(t, _)| t > low)
            }
        };
        if !ok {
            problems.push(format!(
                "client {} load of {:?} ({:?}) returned {:?}; committed revisions {:?}",
                load.client, load.oid, load.kind, load.result, list
            ));
        }
    }
}

fn check_invalidations(model: &Model, history: &History, problems: &mut Vec<String>) {
    // The writer of each commit, from its values.
    let writer = |committed: &Committed| -> Option<usize> {
        committed
            .objects
            .values()
            .flatten()
            .find_map(|d| decode_value(d))
            .map(|(client, ..)| client)
    };
    for (index, log) in model.clients.iter().enumerate() {
        let mut last = Tid::ZERO;
        let mut seen: BTreeMap<Tid, Vec<Oid>> = BTreeMap::new();
        let mut full: Vec<Tid> = Vec::new();
        for invalidation in &log.invalidations {
            match invalidation {
                Invalidation::Objects { tid, oids } => {
                    if *tid <= last {
                        problems.push(format!(
                            "client {index}: invalidation {tid:?} after {last:?} (out of order)"
                        ));
                    }
                    last = last.max(*tid);
                    seen.insert(*tid, oids.clone());
                }
                Invalidation::All { last_tid } => {
                    if *last_tid < last {
                        problems.push(format!(
                            "client {index}: full invalidation at {last_tid:?} after an \
                             invalidation of {last:?} (history went back)"
                        ));
                    }
                    last = last.max(*last_tid);
                    full.push(*last_tid);
                }
            }
        }
        for (tid, oids) in &seen {
            match history.get(tid) {
                None => problems.push(format!(
                    "client {index}: invalidation for {tid:?}, which is not committed"
                )),
                Some(committed) => {
                    let expected: BTreeSet<Oid> = committed.objects.keys().copied().collect();
                    let got: BTreeSet<Oid> = oids.iter().copied().collect();
                    if expected != got {
                        problems.push(format!(
                            "client {index}: invalidation for {tid:?} lists {got:?}, the \
                             commit wrote {expected:?}"
                        ));
                    }
                }
            }
        }
        let Some(first) = log.first_last_tid else {
            continue;
        };
        for (tid, committed) in history.range(Tid(first.0 + 1)..) {
            if writer(committed) == Some(index) {
                continue;
            }
            let covered = seen.contains_key(tid) || full.iter().any(|l| l >= tid);
            if !covered {
                problems.push(format!(
                    "client {index} never received an invalidation for {tid:?} (commit of \
                     client {:?}, oids {:?})",
                    writer(committed),
                    committed.objects.keys().collect::<Vec<_>>()
                ));
            }
        }
    }
}

fn dump_partition(backend: &MemoryBackend, partition: u32) -> Result<PartitionDump, String> {
    let mut dump = PartitionDump::default();
    let tids = backend
        .tids_range(partition, Tid(0), Tid(u64::MAX), usize::MAX)
        .map_err(|e| e.to_string())?;
    for tid in tids {
        let record = backend
            .transaction(tid, false)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("transaction {tid:?} listed but not found"))?;
        dump.transactions.insert(tid, (record.ttid, record.oids));
    }
    let objects = backend
        .objects_range(partition, Tid(0), Oid(0), Tid(u64::MAX), usize::MAX)
        .map_err(|e| e.to_string())?;
    for (tid, oid) in objects {
        let record = backend
            .object(oid, Some(tid), None)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("object {oid:?} at {tid:?} listed but not found"))?;
        dump.objects
            .insert((tid, oid), (record.data, record.data_serial));
    }
    Ok(dump)
}

/// The first transaction or object where two dumps differ, as (left, right).
fn describe_difference(a: &PartitionDump, b: &PartitionDump) -> (String, String) {
    let tids: BTreeSet<&Tid> = a.transactions.keys().chain(b.transactions.keys()).collect();
    for tid in tids {
        let (x, y) = (a.transactions.get(tid), b.transactions.get(tid));
        if x != y {
            return (format!("txn {tid:?}: {x:?}"), format!("{y:?}"));
        }
    }
    let keys: BTreeSet<&(Tid, Oid)> = a.objects.keys().chain(b.objects.keys()).collect();
    for key in keys {
        let (x, y) = (a.objects.get(key), b.objects.get(key));
        if x != y {
            return (format!("object {key:?}: {x:?}"), format!("{y:?}"));
        }
    }
    (String::new(), String::new())
}
