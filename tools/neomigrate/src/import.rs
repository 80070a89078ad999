//! FileStorage -> NEO: every source transaction replayed with its own TID and metadata
//! through the client's restore path, in order, while a reader thread keeps the next ones
//! decoded and compressed. With `--pipeline N`, N transactions are in flight: begun in
//! TID order (our master accepts overlapping explicit TIDs that increase; NEO/py's
//! refuses them), and finished in TID order, each finish sent once the previous one is
//! on its way, so that the storages commit several at once.
//!
//! Resuming: the cluster's TIDs must be the source's first ones, one for one, and the
//! last one's metadata and objects must match; migration goes on after it. The serial
//! each store names (the previous revision of the object) is the source's own history,
//! so the prefix already migrated is scanned for it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{bail, Result};
use neo_client::{Client, Codec, TransactionMeta, Vote};
use neo_filestorage::FileStorage;
use neo_protocol::{Oid, Tid};

use crate::db::{hex, FileReader, Txn};
use crate::progress::Progress;
use crate::Totals;

/// Where a migration into a cluster starts.
#[derive(Debug, PartialEq)]
pub enum Start {
    /// The cluster is empty.
    Empty,
    /// The cluster holds the source up to and including this TID, which ends at byte
    /// `bytes` of the source.
    After {
        tid: u64,
        transactions: u64,
        bytes: u64,
    },
}

/// Checks that the cluster is empty or holds a prefix of the source, and says where to
/// start. Fills `serials` with the last TID of every object of that prefix.
pub fn find_start(
    source: &Path,
    fs: &FileStorage,
    client: &Client,
    serials: &mut HashMap<u64, u64>,
) -> Result<Start> {
    let last = client.last_transaction()?;
    if last == Tid::ZERO {
        return Ok(Start::Empty);
    }
    let mut iter = fs.iter(None, Some(neo_filestorage::Tid(last.0)))?;
    let mut transactions = 0u64;
    let mut bytes = 0;
    let mut found = None;
    // The cluster's TIDs, fetched a page at a time, must be the source's one for one: a
    // run whose overlapping finishes failed in the middle could leave a gap.
    let mut cluster_tids = ClusterTids::new(client, last);
    let mut matched = 0;
    while let Some(txn) = iter.next_txn()? {
        transactions += 1;
        let view = txn.view;
        match cluster_tids.next()? {
            Some(tid) if tid == view.tid().0 => matched = tid,
            // The source's first transaction must be the oldest of the cluster too, or
            // the cluster holds something else that merely ends with a source TID.
            _ if transactions == 1 => bail!(not_a_prefix(
                source,
                last.0,
                "its first transaction is not the source's"
            )),
            Some(tid) if tid > view.tid().0 => bail!(
                "the destination cluster lacks transaction {} of {}, although it holds later \
                 ones up to {} (a gap, left by a migration whose transaction failed after a \
                 later one was sent): truncate the cluster to the last transaction before \
                 the gap (neoctl -a ADMIN truncate tid:{}) and run the same command again",
                hex(view.tid().0),
                source.display(),
                hex(last.0),
                hex(matched)
            ),
            _ => bail!(not_a_prefix(
                source,
                last.0,
                &format!(
                    "it holds transactions that the source does not have (after {})",
                    hex(matched)
                )
            )),
        }
        for record in view.records() {
            serials.insert(record.header.oid.0, record.header.tid.0);
        }
        if view.tid().0 == last.0 {
            bytes = view.end_pos();
            found = Some((
                view.user().to_vec(),
                view.description().to_vec(),
                view.extension().to_vec(),
                view.records().map(|r| r.header.oid.0).collect::<Vec<_>>(),
            ));
        }
    }
    let Some((user, description, extension, mut oids)) = found else {
        bail!(not_a_prefix(
            source,
            last.0,
            "that TID is not in the source"
        ));
    };
    let info = client.transaction_information(last)?;
    let mut neo_oids: Vec<u64> = info.oids.iter().map(|o| o.0).collect();
    oids.sort_unstable();
    oids.dedup();
    neo_oids.sort_unstable();
    if info.user[..] != user[..]
        || info.description[..] != description[..]
        || info.extension[..] != extension[..]
        || neo_oids != oids
    {
        bail!(not_a_prefix(
            source,
            last.0,
            "that transaction differs from the source's (metadata or objects)"
        ));
    }
    Ok(Start::After {
        tid: last.0,
        transactions,
        bytes,
    })
}

/// The cluster's TIDs up to `last`, oldest first.
struct ClusterTids<'a> {
    client: &'a Client,
    last: Tid,
    page: std::vec::IntoIter<Tid>,
    /// The last TID returned (0 before the first): the next page starts after it.
    previous: u64,
    exhausted: bool,
}

impl<'a> ClusterTids<'a> {
    /// TIDs asked for at once.
    const PAGE: u32 = 1000;

    fn new(client: &'a Client, last: Tid) -> ClusterTids<'a> {
        ClusterTids {
            client,
            last,
            page: Vec::new().into_iter(),
            previous: 0,
            exhausted: false,
        }
    }

    fn next(&mut self) -> Result<Option<u64>> {
        if self.page.len() == 0 && !self.exhausted {
            let min = if self.previous == 0 {
                Tid::ZERO
            } else {
                Tid(self.previous + 1)
            };
            let page = self.client.tids_from(min, self.last, Self::PAGE)?;
            self.exhausted = page.len() < Self::PAGE as usize;
            self.page = page.into_iter();
        }
        let tid = self.page.next().map(|tid| tid.0);
        if let Some(tid) = tid {
            self.previous = tid;
        }
        Ok(tid)
    }
}

fn not_a_prefix(source: &Path, last: u64, why: &str) -> String {
    format!(
        "the destination cluster is not empty and does not hold a beginning of {}: its last \
         transaction is {} and {why}. Migrate into an empty cluster.",
        source.display(),
        hex(last)
    )
}

/// Replays the source's transactions after `start` into the cluster, `pipeline` of them
/// in flight: this thread begins each one (in TID order, as the master requires) and
/// sends its stores; workers vote, then finish strictly in order, so that the cluster
/// always holds a beginning of the source (a failed transaction stops every later one
/// before its finish). `pipeline` 1 is NEO/py's way, one transaction at a time.
pub fn run(
    source: FileStorage,
    client: &Arc<Client>,
    start: &Start,
    mut serials: HashMap<u64, u64>,
    codec: Codec,
    pipeline: usize,
    progress: &Progress,
) -> Result<Totals> {
    let after = match start {
        Start::Empty => None,
        Start::After { tid, .. } => Some(*tid),
    };
    let reader = FileReader::start(source, after, Some(codec))?;
    let order = Order {
        state: Mutex::new(OrderState {
            turn: 0,
            settled: 0,
            finished: BTreeMap::new(),
            committed: after.unwrap_or(0),
            last_success: None,
            overlap_refused: false,
            failure: None,
            totals: Totals::default(),
        }),
        turns: (0..pipeline.max(1)).map(|_| Condvar::new()).collect(),
        progress: Condvar::new(),
    };
    let workers = pipeline.max(1);
    let (jobs, receiver) = mpsc::sync_channel::<Job>(0);
    let receiver = Mutex::new(receiver);
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let (receiver, order) = (&receiver, &order);
            scope.spawn(move || loop {
                let job = match receiver.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                    Ok(job) => job,
                    Err(_) => return,
                };
                vote_and_finish(client, job, order, progress);
            });
        }
        for (seq, txn) in reader.enumerate() {
            let seq = seq as u64;
            if order.failed() {
                break;
            }
            let txn = match txn {
                Ok(txn) => txn,
                Err(error) => {
                    order.fail(seq, error);
                    break;
                }
            };
            // At most `pipeline` transactions between begin and the end of finish (1: each
            // begins after the previous one finished, as a NEO/py master requires).
            if !order.wait_settled_within(seq, workers as u64) {
                break;
            }
            // A record pointing back to the data of a transaction still in flight waits
            // until it is committed: the storage looks that data up when it stores.
            let back = txn.records.iter().filter_map(|r| r.data_txn).max();
            if let Some(back) = back {
                if !order.wait_committed(back) {
                    break;
                }
            }
            match begin_and_store(client, &txn, &mut serials) {
                Ok(ttid) => {
                    if jobs.send(Job { seq, ttid, txn }).is_err() {
                        break;
                    }
                }
                Err(error) => {
                    // The transactions sent before finish or fail before this one's turn.
                    if seq > 0 && error.to_string().contains("concurrent transactions") {
                        order.lock().overlap_refused = true;
                    }
                    order.fail(seq, error.context(describe(&txn)));
                    break;
                }
            }
        }
        drop(jobs);
        Ok(())
    })?;
    let state = order.state.into_inner().unwrap_or_else(|e| e.into_inner());
    // Finishes overlap: one that failed may have been followed by one that committed.
    if let (Some((failed, error)), Some((seq, tid))) = (&state.failure, state.last_success) {
        if seq > *failed {
            bail!(
                "{error:#}; but a later transaction, {}, was committed: the cluster lacks \
                 the failed one and no run can add it back. Truncate the cluster before it \
                 (neoctl -a ADMIN truncate tid:TID, with the TID that the next run names) and \
                 run the same command again",
                hex(tid)
            );
        }
    }
    match state.failure {
        // The master closed the connection on the overlapping begin, which failed the
        // transactions in flight first: say why.
        Some(_) if state.overlap_refused => Err(OverlapRefused(state.totals).into()),
        Some((_, error)) => Err(error.context(format!(
            "{} transactions migrated by this run; run the same command again to resume \
             after the last one committed",
            state.totals.transactions
        ))),
        None => Ok(state.totals),
    }
}

/// The master refused a transaction begun while others were in flight (a NEO/py master
/// does, with explicit TIDs), after these were migrated: the caller goes on one at a time.
#[derive(Debug)]
pub struct OverlapRefused(pub Totals);

impl std::fmt::Display for OverlapRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the master refuses overlapping transactions with explicit TIDs (a NEO/py master \
             does), after {} transactions migrated",
            self.0.transactions
        )
    }
}

impl std::error::Error for OverlapRefused {}

/// A transaction begun and stored, for a worker to vote and finish.
struct Job {
    seq: u64,
    ttid: Tid,
    txn: Txn,
}

/// Finishes in sequence order, and the first failure (by sequence).
struct Order {
    state: Mutex<OrderState>,
    /// The worker of sequence number `seq` waits on `turns[seq % turns.len()]` for its
    /// turn: the transactions in flight are fewer than that, so each waits alone and only
    /// the next one is woken (not every worker at each step).
    turns: Vec<Condvar>,
    /// The reading thread waits on this for transactions to be done with, or a failure.
    progress: Condvar,
}

struct OrderState {
    /// Sequence number whose finish may be sent now: finishes are sent in order, each
    /// once the previous one is on its way (the master then commits them in that order).
    turn: u64,
    /// Every transaction before this sequence number is done with (committed or not).
    settled: u64,
    /// Transactions done with out of order, after `settled`: whether each committed (its
    /// TID).
    finished: BTreeMap<u64, Option<u64>>,
    /// TID of the last transaction committed with all the ones before it (or already in
    /// the cluster).
    committed: u64,
    /// The latest transaction committed: (sequence number, TID).
    last_success: Option<(u64, u64)>,
    /// A begin was refused because others were in flight.
    overlap_refused: bool,
    failure: Option<(u64, anyhow::Error)>,
    totals: Totals,
}

impl OrderState {
    /// Keeps the failure of the earliest transaction: the one to report.
    fn record(&mut self, seq: u64, error: anyhow::Error) {
        if self.failure.as_ref().is_none_or(|(s, _)| seq < *s) {
            self.failure = Some((seq, error));
        }
    }

    /// Transaction `seq` is done with: committed as `tid`, or not.
    fn settle(&mut self, seq: u64, tid: Option<u64>) {
        if let Some(tid) = tid {
            if self.last_success.is_none_or(|(s, _)| s < seq) {
                self.last_success = Some((seq, tid));
            }
        }
        self.finished.insert(seq, tid);
        while let Some(tid) = self.finished.remove(&self.settled) {
            if let Some(tid) = tid {
                self.committed = tid;
            }
            self.settled += 1;
        }
    }
}

impl Order {
    fn lock(&self) -> std::sync::MutexGuard<'_, OrderState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self) -> bool {
        self.lock().failure.is_some()
    }

    /// Waits until fewer than `window` transactions before `seq` are still in flight;
    /// false if something failed meanwhile.
    fn wait_settled_within(&self, seq: u64, window: u64) -> bool {
        let mut state = self.lock();
        while state.settled + window <= seq && state.failure.is_none() {
            state = self.progress.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.failure.is_none()
    }

    /// Waits until `tid` is committed; false if something failed meanwhile.
    fn wait_committed(&self, tid: u64) -> bool {
        let mut state = self.lock();
        while state.committed < tid && state.failure.is_none() {
            state = self.progress.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.failure.is_none()
    }

    /// Records a failure; the earliest transaction's is the one reported.
    fn fail(&self, seq: u64, error: anyhow::Error) {
        self.lock().record(seq, error);
        self.progress.notify_all();
    }

    /// Waits (holding `state`) until it is the turn of `seq` to finish.
    fn wait_turn<'a>(
        &self,
        mut state: std::sync::MutexGuard<'a, OrderState>,
        seq: u64,
    ) -> std::sync::MutexGuard<'a, OrderState> {
        let turn = &self.turns[(seq % self.turns.len() as u64) as usize];
        while state.turn != seq {
            state = turn.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state
    }

    /// Passes the turn on from `state.turn` and wakes the worker whose turn it becomes.
    fn pass_turn(&self, state: &mut OrderState) {
        state.turn += 1;
        self.turns[(state.turn % self.turns.len() as u64) as usize].notify_all();
    }
}

fn describe(txn: &Txn) -> String {
    format!("migrating transaction {}", hex(txn.tid))
}

/// Votes, waits for its turn, finishes (or aborts when an earlier one failed). The next
/// transaction's finish goes as soon as this one's is sent, not answered: the master
/// locks both at once and the storages commit them together.
fn vote_and_finish(client: &Client, job: Job, order: &Order, progress: &Progress) {
    let Job { seq, ttid, txn } = job;
    let voted = vote(client, ttid);
    let mut state = order.wait_turn(order.lock(), seq);
    // Only a failure of an earlier transaction stops this one: the ones before a failure
    // still commit, so a resumed run has less to do.
    let stopped = state.failure.as_ref().is_some_and(|(s, _)| *s < seq);
    let outcome = match (voted, stopped) {
        (_, true) => Err(None),
        (Err(error), false) => Err(Some(error)),
        (Ok(()), false) => {
            drop(state);
            let mut turn_passed = false;
            let finished = finish(client, ttid, &txn, || {
                order.pass_turn(&mut order.lock());
                turn_passed = true;
            });
            state = order.lock();
            if !turn_passed {
                order.pass_turn(&mut state);
            }
            finished.map_err(Some)
        }
    };
    match outcome {
        Ok(()) => {
            state.settle(seq, Some(txn.tid));
            state.totals.add(&txn);
            progress.advance(&txn);
        }
        Err(error) => {
            if state.turn == seq {
                order.pass_turn(&mut state);
            }
            if let Some(error) = error {
                state.record(seq, error.context(describe(&txn)));
            }
            state.settle(seq, None);
            drop(state);
            let _ = client.tpc_abort(ttid);
        }
    }
    order.progress.notify_all();
}

fn begin_and_store(client: &Client, txn: &Txn, serials: &mut HashMap<u64, u64>) -> Result<Tid> {
    let meta = TransactionMeta {
        user: txn.user.clone(),
        description: txn.description.clone(),
        extension: txn.extension.clone(),
    };
    let ttid = client.tpc_begin(Some(Tid(txn.tid)), meta)?;
    // The stores go out together when the loop ends: one write per storage.
    let stored = client.corked(|| -> Result<()> {
        for record in &txn.records {
            let oid = Oid(record.oid);
            let serial = Tid(serials.get(&record.oid).copied().unwrap_or(0));
            let data_txn = record.data_txn.map(Tid);
            match (&record.data, &record.encoded) {
                (Some(data), Some(encoded)) => client.restore_encoded(
                    ttid,
                    oid,
                    serial,
                    data.clone(),
                    encoded.clone(),
                    data_txn,
                )?,
                (Some(data), None) => {
                    client.restore(ttid, oid, serial, Some(data.clone()), data_txn)?
                }
                (None, _) => client.delete_object(ttid, oid, serial)?,
            }
        }
        Ok(())
    });
    if let Err(error) = stored {
        let _ = client.tpc_abort(ttid);
        return Err(error);
    }
    // Later transactions are based on this one: it commits before them or nothing
    // after it does.
    for record in &txn.records {
        serials.insert(record.oid, txn.tid);
    }
    Ok(ttid)
}

fn vote(client: &Client, ttid: Tid) -> Result<()> {
    match client.tpc_vote(ttid)? {
        Vote::Voted(_) => Ok(()),
        Vote::Conflicts(conflicts) => {
            let oids: Vec<String> = conflicts.iter().map(|c| hex(c.oid.0)).collect();
            bail!(
                "conflicts on {}: the cluster was written to by someone else during the \
                 migration",
                oids.join(", ")
            )
        }
    }
}

fn finish(client: &Client, ttid: Tid, txn: &Txn, sent: impl FnOnce()) -> Result<()> {
    let tid = client.tpc_finish_then(ttid, sent)?;
    if tid.0 != txn.tid {
        bail!(
            "the cluster committed it as {} instead of its own TID",
            hex(tid.0)
        );
    }
    Ok(())
}
