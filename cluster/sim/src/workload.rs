//! Clients under simulation: [`Workload`] runs the real `neo_client_core::Client` and
//! drives it like a ZODB application would, one transaction at a time over a small set
//! of shared objects (begin, load, store, vote, resolve conflicts or abort, finish), and
//! writes what it did and saw into the shared [`Model`] that the history checks read.
//!
//! Every stored value names its writer and what it was based on
//! (`c<client>/t<seq>/o<oid>/b<base serial>`), so that the storages' final contents can
//! be traced back to the attempt that wrote them, and a lost update (two commits based on
//! the same serial) shows in the data itself.
//!
//! The client's outputs go through a private outbox and are forwarded grouped by
//! connection: the client iterates hash maps in places (order across connections is
//! not deterministic), and the order across connections carries no meaning (TCP orders
//! each connection only), so grouping them keeps a seed's run reproducible.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use neo_client_core::{Client, ClientError, Invalidation, OpId, Operation, Reply, TransactionMeta};
use neo_node::{Input, Node, Outbox, Output, Rng, Time};
use neo_protocol::{Bytes, Oid, Tid};

/// The model shared by every client of a cluster (single-threaded simulator: `Rc`).
pub type SharedModel = Rc<RefCell<Model>>;

/// What the clients did and saw, for the checks against the committed history.
#[derive(Debug, Default)]
pub struct Model {
    pub attempts: Vec<Attempt>,
    /// TTID → index in `attempts`.
    pub by_ttid: BTreeMap<Tid, usize>,
    pub loads: Vec<LoadCheck>,
    /// Per client (index = client number).
    pub clients: Vec<ClientLog>,
    /// Problems of the simulator's own plumbing (should stay empty).
    pub harness_errors: Vec<String>,
    /// Conflicts met at vote and resolved by storing again.
    pub resolutions: u64,
}

/// One transaction a client started.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub client: usize,
    pub seq: u64,
    pub ttid: Tid,
    /// oid → (serial the store was based on, value), the last store of each oid.
    pub writes: BTreeMap<Oid, (Tid, Bytes)>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stores or vote in progress.
    Open,
    /// Aborted (by choice or after an error) before any finish request.
    Abandoned(String),
    /// AskFinishTransaction sent, no answer yet.
    FinishSent,
    /// The client was told the final TID: this commit must never be lost.
    Acked(Tid),
    /// The finish failed: the transaction may or may not have committed.
    FinishFailed(String),
}

/// One load and what it returned.
#[derive(Debug, Clone)]
pub struct LoadCheck {
    pub client: usize,
    pub oid: Oid,
    pub kind: LoadKind,
    pub result: LoadResult,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LoadKind {
    /// `Load` (current revision): the client's last TID when it was asked and when it
    /// was answered. The answer must be the revision current at some TID in between.
    Current { low: Tid, high: Tid },
    /// `LoadBefore`: the newest revision strictly before this TID.
    Before(Tid),
    /// `LoadSerial`: exactly this revision.
    Serial(Tid),
}

#[derive(Debug, Clone, PartialEq)]
pub enum LoadResult {
    Found {
        serial: Tid,
        data: Option<Bytes>,
    },
    /// No revision (OID_DOES_NOT_EXIST, or none before the TID).
    Missing,
}

/// What one client received from the master about others' commits.
#[derive(Debug, Default, Clone)]
pub struct ClientLog {
    /// The last TID learnt at the first connection: commits after it must be invalidated.
    pub first_last_tid: Option<Tid>,
    pub invalidations: Vec<Invalidation>,
    /// Own commits, in acknowledgement order.
    pub acks: Vec<Tid>,
    /// Completed `Sync` barriers (the final check waits for one after the run).
    pub syncs: u32,
}

/// The value a client stores: who wrote it, in which attempt, based on which serial.
pub fn encode_value(client: usize, seq: u64, oid: Oid, base: Tid) -> Bytes {
    Bytes::from(format!("c{client}/t{seq}/o{}/b{}", oid.0, base.0))
}

/// `(client, seq, oid, base)` of a value written by [`encode_value`].
pub fn decode_value(value: &[u8]) -> Option<(usize, u64, Oid, Tid)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut fields = text.split('/');
    let mut next =
        |prefix: char| -> Option<u64> { fields.next()?.strip_prefix(prefix)?.parse().ok() };
    let client = next('c')? as usize;
    let seq = next('t')?;
    let oid = Oid(next('o')?);
    let base = Tid(next('b')?);
    Some((client, seq, oid, base))
}

/// Shape of the workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Objects `1..=oids` are shared by every client.
    pub oids: u64,
    /// Conflict resolution rounds before a transaction gives up.
    pub max_rounds: u32,
}

impl Default for WorkloadConfig {
    fn default() -> WorkloadConfig {
        WorkloadConfig {
            oids: 4,
            max_rounds: 4,
        }
    }
}

/// A client node with its workload driver.
pub struct Workload {
    client: Client,
    /// The client's own outbox (see the module documentation).
    private: Outbox,
    index: usize,
    config: WorkloadConfig,
    rng: Rng,
    model: SharedModel,
    now: Time,
    next_op: OpId,
    /// The one operation in flight.
    waiting: Option<(OpId, Wait)>,
    txn: Option<Current>,
    /// When the next transaction begins (think time).
    wake_at: Option<Time>,
    stopping: bool,
    seq: u64,
}

#[derive(Debug, Clone)]
enum Wait {
    Begin,
    Load {
        oid: Oid,
        kind: LoadKind,
    },
    /// Re-reading the committed revision of a conflict before storing on it.
    ResolveLoad {
        oid: Oid,
        committed: Tid,
    },
    Store,
    Vote,
    Finish,
    Abort,
    Sync,
}

#[derive(Debug)]
struct Current {
    attempt: usize,
    ttid: Tid,
    seq: u64,
    /// The client's last TID at begin: `LoadBefore` reads as of it.
    snapshot: Tid,
    todo: VecDeque<Oid>,
    resolve: VecDeque<(Oid, Tid)>,
    rounds: u32,
}

impl Workload {
    pub fn new(
        client: Client,
        index: usize,
        config: WorkloadConfig,
        seed: u64,
        model: SharedModel,
    ) -> Workload {
        {
            let mut m = model.borrow_mut();
            while m.clients.len() <= index {
                m.clients.push(ClientLog::default());
            }
        }
        Workload {
            client,
            private: Outbox::new(),
            index,
            config,
            rng: Rng::new(seed),
            model,
            now: 0.0,
            next_op: 1,
            waiting: None,
            txn: None,
            wake_at: None,
            stopping: false,
            seq: 0,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// No operation in flight and no transaction open.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_none() && self.txn.is_none()
    }

    /// What is in flight, for failure reports.
    pub fn describe(&self) -> String {
        format!(
            "client {}: waiting {:?}, txn {:?}, stopping {}, ready {}, last_tid {:?}",
            self.index,
            self.waiting,
            self.txn.as_ref().map(|t| (t.ttid, t.seq)),
            self.stopping,
            self.client.is_ready(),
            self.client.last_tid()
        )
    }

    /// Begins no new transaction (the current one runs to its end).
    pub fn stop(&mut self, now: Time, out: &mut Outbox) {
        self.stopping = true;
        self.wake_at = None;
        self.pump(now, out);
    }

    /// Starts a barrier with the master once idle: every invalidation sent before it is
    /// then received. Returns false if an operation is still in flight.
    pub fn sync(&mut self, now: Time, out: &mut Outbox) -> bool {
        if !self.is_idle() {
            return false;
        }
        self.now = now;
        self.submit(Operation::Sync, Wait::Sync);
        self.pump(now, out);
        true
    }

    fn submit(&mut self, operation: Operation, wait: Wait) {
        let op = self.next_op;
        self.next_op += 1;
        self.waiting = Some((op, wait));
        self.client
            .submit(self.now, op, operation, &mut self.private);
    }

    /// Processes completions and invalidations until nothing new happens, then forwards
    /// the client's outputs.
    fn pump(&mut self, now: Time, out: &mut Outbox) {
        self.now = now;
        loop {
            self.collect_invalidations();
            let done = self.client.take_completions();
            if done.is_empty() {
                if self.waiting.is_none()
                    && self.txn.is_none()
                    && !self.stopping
                    && self.wake_at.is_some_and(|t| t <= now)
                {
                    self.wake_at = None;
                    self.begin();
                    continue;
                }
                break;
            }
            for (op, result) in done {
                self.completed(op, result);
            }
        }
        self.forward(out);
    }

    fn collect_invalidations(&mut self) {
        let invalidations = self.client.take_invalidations();
        let mut model = self.model.borrow_mut();
        let log = &mut model.clients[self.index];
        if log.first_last_tid.is_none() && invalidations.is_empty() {
            log.first_last_tid = self.client.last_tid();
        }
        log.invalidations.extend(invalidations);
    }

    fn forward(&mut self, out: &mut Outbox) {
        let mut outputs: Vec<Output> = self.private.drain().collect();
        outputs.sort_by_key(|o| match o {
            Output::Connect { conn, .. } | Output::Send { conn, .. } | Output::Close { conn } => {
                (0, *conn)
            }
            Output::Exit { .. } => (1, 0),
        });
        for output in outputs {
            match output {
                Output::Connect { conn, addr } => {
                    let forwarded = out.connect(addr);
                    if forwarded != conn {
                        self.model.borrow_mut().harness_errors.push(format!(
                            "client {}: connection {conn:x} forwarded as {forwarded:x}",
                            self.index
                        ));
                    }
                }
                Output::Send {
                    conn,
                    msg_id,
                    packet,
                } => out.notify_with_id(conn, msg_id, packet),
                Output::Close { conn } => out.close(conn),
                Output::Exit { code, reason } => out.exit(code, reason),
            }
        }
    }

    fn idle(&mut self) {
        self.txn = None;
        self.waiting = None;
        if !self.stopping {
            self.wake_at = Some(self.now + 0.05 + 0.3 * self.rng.unit());
        }
    }

    fn begin(&mut self) {
        self.seq += 1;
        let meta = TransactionMeta {
            user: Bytes::from_static(b"sim"),
            description: Bytes::from(format!("c{} t{}", self.index, self.seq)),
            extension: Bytes::new(),
        };
        self.submit(Operation::TpcBegin { tid: None, meta }, Wait::Begin);
    }

    fn completed(&mut self, op: OpId, result: Result<Reply, ClientError>) {
        let Some((expected, wait)) = self.waiting.take() else {
            return;
        };
        if op != expected {
            // A completion of something no longer waited for (the abort of a vote also
            // completes the vote).
            self.waiting = Some((expected, wait));
            return;
        }
        match (wait, result) {
            (Wait::Begin, Ok(Reply::Tid(ttid))) => self.begun(ttid),
            (Wait::Begin, _) => self.idle(),
            (Wait::Load { oid, kind }, result) => {
                let kind = match kind {
                    LoadKind::Current { low, .. } => LoadKind::Current {
                        low,
                        high: self.client.last_tid().unwrap_or(Tid::ZERO),
                    },
                    other => other,
                };
                let base = match result {
                    Ok(Reply::Object(record)) => {
                        self.record_load(
                            oid,
                            kind,
                            LoadResult::Found {
                                serial: record.serial,
                                data: record.data,
                            },
                        );
                        record.serial
                    }
                    Ok(Reply::None) | Err(ClientError::OidDoesNotExist(_)) => {
                        self.record_load(oid, kind, LoadResult::Missing);
                        Tid::ZERO
                    }
                    Ok(other) => return self.abort(format!("load answered {other:?}")),
                    Err(e) => return self.abort(format!("load failed: {e}")),
                };
                self.store(oid, base);
            }
            (Wait::ResolveLoad { oid, committed }, result) => match result {
                Ok(Reply::Object(record)) => {
                    self.record_load(
                        oid,
                        LoadKind::Serial(committed),
                        LoadResult::Found {
                            serial: record.serial,
                            data: record.data,
                        },
                    );
                    self.store(oid, committed);
                }
                Ok(other) => self.abort(format!("conflict reload answered {other:?}")),
                Err(e) => self.abort(format!("conflict reload failed: {e}")),
            },
            (Wait::Store, Ok(_)) => self.next(),
            (Wait::Store, Err(e)) => self.abort(format!("store failed: {e}")),
            (Wait::Vote, Ok(Reply::Voted { .. })) => {
                if self.rng.chance(0.9) {
                    self.finish();
                } else {
                    self.abort("chose to abort after vote".to_string());
                }
            }
            (Wait::Vote, Ok(Reply::Conflicts(conflicts))) => {
                let Some(txn) = self.txn.as_mut() else {
                    return self.idle();
                };
                txn.rounds += 1;
                if txn.rounds > self.config.max_rounds || self.rng.chance(0.15) {
                    return self.abort("gave up on conflicts".to_string());
                }
                self.model.borrow_mut().resolutions += conflicts.len() as u64;
                txn.resolve = conflicts
                    .iter()
                    .map(|c| (c.oid, c.committed_serial))
                    .collect();
                self.next();
            }
            (Wait::Vote, Ok(other)) => self.abort(format!("vote answered {other:?}")),
            (Wait::Vote, Err(e)) => self.abort(format!("vote failed: {e}")),
            (Wait::Finish, result) => {
                let outcome = match result {
                    Ok(Reply::Tid(tid)) => {
                        self.model.borrow_mut().clients[self.index].acks.push(tid);
                        Outcome::Acked(tid)
                    }
                    Ok(other) => Outcome::FinishFailed(format!("finish answered {other:?}")),
                    Err(e) => Outcome::FinishFailed(e.to_string()),
                };
                self.set_outcome(outcome);
                self.idle();
            }
            (Wait::Abort, _) => self.idle(),
            (Wait::Sync, _) => {
                self.model.borrow_mut().clients[self.index].syncs += 1;
                self.idle();
            }
        }
    }

    fn begun(&mut self, ttid: Tid) {
        let attempt = {
            let mut model = self.model.borrow_mut();
            let attempt = model.attempts.len();
            model.attempts.push(Attempt {
                client: self.index,
                seq: self.seq,
                ttid,
                writes: BTreeMap::new(),
                outcome: Outcome::Open,
            });
            if model.by_ttid.insert(ttid, attempt).is_some() {
                model
                    .harness_errors
                    .push(format!("TTID {ttid:?} given to two transactions"));
            }
            attempt
        };
        let mut oids: Vec<Oid> = (1..=self.config.oids).map(Oid).collect();
        let count = 1 + self.rng.below(2.min(self.config.oids)) as usize;
        let mut todo = VecDeque::new();
        for _ in 0..count {
            let i = self.rng.below(oids.len() as u64) as usize;
            todo.push_back(oids.remove(i));
        }
        self.txn = Some(Current {
            attempt,
            ttid,
            seq: self.seq,
            snapshot: self.client.last_tid().unwrap_or(Tid::ZERO),
            todo,
            resolve: VecDeque::new(),
            rounds: 0,
        });
        self.next();
    }

    /// The next step of the open transaction: a conflict to resolve, an object to read
    /// and write, or the vote.
    fn next(&mut self) {
        let Some(txn) = self.txn.as_mut() else {
            return self.idle();
        };
        if let Some((oid, committed)) = txn.resolve.pop_front() {
            return self.submit(
                Operation::LoadSerial {
                    oid,
                    serial: committed,
                },
                Wait::ResolveLoad { oid, committed },
            );
        }
        if let Some(oid) = txn.todo.pop_front() {
            let snapshot = txn.snapshot;
            if self.rng.chance(0.5) {
                let low = self.client.last_tid().unwrap_or(Tid::ZERO);
                let kind = LoadKind::Current { low, high: low };
                return self.submit(Operation::Load { oid }, Wait::Load { oid, kind });
            }
            let before = Tid(snapshot.0 + 1);
            return self.submit(
                Operation::LoadBefore { oid, before },
                Wait::Load {
                    oid,
                    kind: LoadKind::Before(before),
                },
            );
        }
        let ttid = txn.ttid;
        self.submit(Operation::TpcVote { ttid }, Wait::Vote);
    }

    fn store(&mut self, oid: Oid, base: Tid) {
        let Some(txn) = self.txn.as_ref() else {
            return self.idle();
        };
        let (ttid, attempt) = (txn.ttid, txn.attempt);
        let data = encode_value(self.index, txn.seq, oid, base);
        self.model.borrow_mut().attempts[attempt]
            .writes
            .insert(oid, (base, data.clone()));
        self.submit(
            Operation::Store {
                ttid,
                oid,
                serial: base,
                data,
                data_serial: None,
            },
            Wait::Store,
        );
    }

    fn finish(&mut self) {
        let Some(ttid) = self.txn.as_ref().map(|t| t.ttid) else {
            return self.idle();
        };
        self.set_outcome(Outcome::FinishSent);
        self.submit(Operation::TpcFinish { ttid }, Wait::Finish);
    }

    fn abort(&mut self, reason: String) {
        let Some(ttid) = self.txn.as_ref().map(|t| t.ttid) else {
            return self.idle();
        };
        self.set_outcome(Outcome::Abandoned(reason));
        self.submit(Operation::TpcAbort { ttid }, Wait::Abort);
    }

    fn set_outcome(&mut self, outcome: Outcome) {
        if let Some(txn) = &self.txn {
            self.model.borrow_mut().attempts[txn.attempt].outcome = outcome;
        }
    }

    fn record_load(&mut self, oid: Oid, kind: LoadKind, result: LoadResult) {
        self.model.borrow_mut().loads.push(LoadCheck {
            client: self.index,
            oid,
            kind,
            result,
        });
    }
}

impl Node for Workload {
    fn handle(&mut self, now: Time, input: Input, out: &mut Outbox) {
        self.now = now;
        if matches!(input, Input::Start) && self.seq == 0 {
            self.wake_at = Some(now + 0.1);
        }
        self.client.handle(now, input, &mut self.private);
        self.pump(now, out);
    }

    fn deadline(&self) -> Option<Time> {
        let wake = self.wake_at.filter(|_| self.is_idle() && !self.stopping);
        match (self.client.deadline(), wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn wants_idle(&self) -> bool {
        self.client.wants_idle()
    }
}
