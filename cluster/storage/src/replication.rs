//! Replication of OUT_OF_DATE cells (cluster.md 6.1, 6.2), both sides.
//!
//! The replicating side keeps per-partition progress (`next_trans`, `next_obj`,
//! `max_ttid`), the targets the master gave (`targets`, NEO/py's `replicate_dict`) and the
//! TTIDs that were pending when it asked; it replicates one partition at a time, the one
//! furthest behind, from a random RUNNING node with a readable cell, in chunks of 1000
//! transactions then 1000 object records, persisting `pt.tid` as it goes so that a restart
//! resumes where it was. Packets of an aborted round are recognised by their msg_id and
//! ignored.
//!
//! The source side answers AskFetchTransactions/AskFetchObjects from committed tables,
//! streaming AddTransaction/AddObject under the request's msg_id before the answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use neo_node::{ConnId, Outbox, Time};
use neo_protocol::{
    AddObject, AddTransaction, AnswerCheckSerialRange, AnswerCheckTIDRange, AnswerFetchObjects,
    AnswerFetchTransactions, AskCheckSerialRange, AskCheckTIDRange, AskFetchObjects,
    AskFetchTransactions, AskUnfinishedTransactions, Bytes, CellChange, CellState, Checksum, Dict,
    ErrorCode, Nid, NodeType, Oid, Packet, Pong, RequestIdentification, Tid, ZERO_HASH,
};
use tracing::{debug, warn};

use crate::backend::{Backend, StoredData, TransactionRecord};
use crate::checker::{serial_digests, tid_digests, Digests};
use crate::node::{Fail, Handled, Link, LinkKind, Phase, Storage, RECONNECT_DELAY};
use crate::transactions::sha1;

/// Items per replication chunk (`FETCH_COUNT`).
pub const FETCH_COUNT: u32 = 1000;

/// A source serves at most this many items per request, whatever the requester asks, so
/// that a bogus length cannot make it build a huge answer.
const SERVE_MAX: u32 = 100_000;

/// NEO/py's INVALID_TID: "the master has not answered yet" for `max_ttid`.
const INVALID_TID: Tid = Tid(u64::MAX);

#[derive(Debug, Default)]
pub(crate) struct Replication {
    partitions: BTreeMap<u32, Progress>,
    targets: BTreeMap<u32, Tid>,
    ttids: BTreeSet<Tid>,
    /// AskUnfinishedTransactions in flight: msg_id → partitions.
    asked: HashMap<u32, Vec<u32>>,
    round: Option<Round>,
    /// When to try connecting to the source again (rate limit).
    pub(crate) retry_at: Option<Time>,
}

#[derive(Debug, Clone)]
struct Progress {
    next_trans: Tid,
    next_obj: Tid,
    /// Greatest TTID pending when the master answered; INVALID_TID until it answers.
    max_ttid: Option<Tid>,
}

#[derive(Debug, Clone)]
struct Round {
    partition: u32,
    source: Nid,
    conn: Option<ConnId>,
    /// The request whose answer (and AddTransaction/AddObject stream) we expect.
    msg_id: Option<u32>,
    /// The TID we replicate up to, taken from `targets` at the first request.
    max: Option<Tid>,
}

impl Replication {
    pub(crate) fn uses(&self, conn: ConnId) -> bool {
        self.round.as_ref().is_some_and(|r| r.conn == Some(conn))
    }

    fn is_current(&self, conn: ConnId, msg_id: u32) -> bool {
        self.round
            .as_ref()
            .is_some_and(|r| r.conn == Some(conn) && r.msg_id == Some(msg_id))
    }

    /// The partition being replicated (for tests and logs).
    pub(crate) fn current_partition(&self) -> Option<u32> {
        self.round.as_ref().map(|r| r.partition)
    }
}

fn next_tid(tid: Tid) -> Tid {
    Tid(tid.0.saturating_add(1))
}

/// The check digest (8 item 13): SHA-1 of the decimal values joined by commas, or
/// ZERO_HASH for none.
pub(crate) fn digest(values: impl Iterator<Item = u64>) -> Checksum {
    let joined: Vec<String> = values.map(|v| v.to_string()).collect();
    if joined.is_empty() {
        ZERO_HASH
    } else {
        sha1(joined.join(",").as_bytes())
    }
}

/// Replication resumes at `pt.tid + 1`, or at 0 for a cell with no progress.
fn resume_tid(raw: i64) -> Tid {
    if raw <= 0 {
        Tid(0)
    } else {
        Tid(raw as u64 + 1)
    }
}

impl<B: Backend> Storage<B> {
    pub fn replicating_partition(&self) -> Option<u32> {
        self.replication.current_partition()
    }

    /// Start of operation: every own OUT_OF_DATE cell is to be replicated (6.1 step 1).
    pub(crate) fn populate(&mut self, out: &mut Outbox) -> Handled {
        let own = self.own();
        let mut outdated = Vec::new();
        for row in self.backend.pt_rows()? {
            if row.nid == own && row.tid >= 0 {
                let next = resume_tid(row.tid);
                self.replication.partitions.insert(
                    row.partition,
                    Progress {
                        next_trans: next,
                        next_obj: next,
                        max_ttid: Some(INVALID_TID),
                    },
                );
                outdated.push(row.partition);
            }
        }
        if !outdated.is_empty() {
            self.tm.replicating(&outdated);
            self.ask_unfinished(outdated, out);
        }
        Ok(())
    }

    fn ask_unfinished(&mut self, partitions: Vec<u32>, out: &mut Outbox) {
        if let Some(master) = self.master_conn() {
            debug!("asking unfinished transactions for partitions {partitions:?}");
            let msg_id = out.ask(
                master,
                AskUnfinishedTransactions {
                    offset_list: partitions.clone(),
                },
            );
            self.replication.asked.insert(msg_id, partitions);
        }
    }

    /// AnswerUnfinishedTransactions (6.1 step 2).
    pub(crate) fn unfinished_transactions(
        &mut self,
        msg_id: u32,
        max_tid: Tid,
        ttids: Vec<Tid>,
        out: &mut Outbox,
    ) -> Handled {
        let Some(partitions) = self.replication.asked.remove(&msg_id) else {
            return Err(Fail::Protocol(
                "AnswerUnfinishedTransactions to no request".into(),
            ));
        };
        let replication = &mut self.replication;
        let max_ttid = ttids.iter().max().copied();
        replication.ttids.extend(ttids);
        for partition in partitions {
            if let Some(progress) = replication.partitions.get_mut(&partition) {
                progress.max_ttid = max_ttid;
                replication.targets.insert(partition, max_tid);
            }
        }
        self.next_partition(out);
        Ok(())
    }

    /// NotifyTransactionFinished / AbortTransaction from the master (6.1 step 7).
    pub(crate) fn transaction_finished(
        &mut self,
        ttid: Tid,
        max_tid: Option<Tid>,
        out: &mut Outbox,
    ) -> Handled {
        if !self.replication.ttids.remove(&ttid) {
            return Ok(());
        }
        let replication = &mut self.replication;
        let min_ttid = replication.ttids.first().copied().unwrap_or(INVALID_TID);
        let current = replication.round.as_ref().map(|r| r.partition);
        let mut done = Vec::new();
        for (&partition, progress) in replication.partitions.iter_mut() {
            let Some(max_ttid) = progress.max_ttid else {
                continue;
            };
            if let Some(tid) = max_tid {
                replication.targets.insert(partition, tid);
            }
            if max_ttid < min_ttid {
                if current != Some(partition) && !replication.targets.contains_key(&partition) {
                    debug!("pending transactions of partition {partition} ended");
                    done.push((partition, max_ttid));
                }
                progress.max_ttid = None;
            }
        }
        for (partition, tid) in done {
            self.replicated(partition, tid, out)?;
        }
        self.next_partition(out);
        Ok(())
    }

    /// The partition holds everything up to `tid` (6.2): the transaction manager turns
    /// lockless writes into locks and tells the master.
    fn replicated(&mut self, partition: u32, tid: Tid, out: &mut Outbox) -> Handled {
        debug!("partition {partition} holds everything up to {tid}");
        self.tm_replicated(partition, tid, out)
    }

    /// Own cells changed while operating (3.12).
    pub(crate) fn replication_partition_changes(
        &mut self,
        changes: &[CellChange],
        out: &mut Outbox,
    ) -> Handled {
        let own = self.own();
        let mut added = Vec::new();
        let mut discarded = Vec::new();
        let mut readable = Vec::new();
        let mut abort = false;
        for change in changes.iter().filter(|c| c.nid == own) {
            let partition = change.partition;
            match change.state {
                CellState::Discarded | CellState::Corrupted => {
                    discarded.push(partition);
                    if self.replication.partitions.remove(&partition).is_some() {
                        self.replication.targets.remove(&partition);
                        abort |= self.replication.current_partition() == Some(partition);
                    }
                }
                CellState::OutOfDate => {
                    if self.replication.partitions.contains_key(&partition) {
                        continue;
                    }
                    let raw = self
                        .backend
                        .pt_rows()?
                        .into_iter()
                        .find(|r| r.partition == partition && r.nid == own)
                        .map_or(0, |r| r.tid);
                    let next = resume_tid(raw);
                    self.replication.partitions.insert(
                        partition,
                        Progress {
                            next_trans: next,
                            next_obj: next,
                            max_ttid: Some(INVALID_TID),
                        },
                    );
                    added.push(partition);
                }
                CellState::UpToDate | CellState::Feeding => readable.push(partition),
            }
        }
        if !added.is_empty() {
            self.tm.replicating(&added);
            self.ask_unfinished(added, out);
        }
        if !discarded.is_empty() {
            self.tm_discarded(&discarded, out)?;
        }
        self.tm.readable(&readable);
        if !readable.is_empty() || !discarded.is_empty() {
            // The smallest pack progress over our cells may have changed.
            self.notify_pack_completed(out)?;
            self.maybe_pack(out)?;
        }
        if abort {
            self.abort_replication(out, "partition discarded");
        }
        Ok(())
    }

    /// Starts replicating the partition furthest behind, if idle (6.1 step 3).
    pub(crate) fn next_partition(&mut self, out: &mut Outbox) {
        if self.phase != Phase::Operation || self.replication.round.is_some() {
            return;
        }
        let replication = &mut self.replication;
        replication
            .targets
            .retain(|p, _| replication.partitions.contains_key(p));
        let Some(partition) = replication.targets.keys().copied().min_by_key(|p| {
            let progress = &replication.partitions[p];
            (progress.next_obj, progress.max_ttid.is_some())
        }) else {
            return;
        };
        let own = self.own();
        let sources: Vec<Nid> = self
            .table
            .readable_nids(partition)
            .into_iter()
            .filter(|nid| {
                *nid != own
                    && self
                        .nodes
                        .get(*nid)
                        .is_some_and(|n| n.is_running() && n.address.is_some())
            })
            .collect();
        let Some(&source) = self.rng.pick(&sources) else {
            // Retried when the master tells about nodes or cells.
            warn!("no running node with a readable cell of partition {partition}");
            return;
        };
        debug!("replicating partition {partition} from {source}");
        self.replication.round = Some(Round {
            partition,
            source,
            conn: None,
            msg_id: None,
            max: None,
        });
        self.connect_source(out);
    }

    /// Finds or opens the connection to the current round's source.
    fn connect_source(&mut self, out: &mut Outbox) {
        let Some(round) = &self.replication.round else {
            return;
        };
        let source = round.source;
        let existing = self
            .links
            .iter()
            .filter(|(_, l)| l.kind == LinkKind::Storage && l.nid == Some(source))
            .max_by_key(|(_, l)| l.identified)
            .map(|(c, l)| (*c, l.identified));
        if let Some((conn, identified)) = existing {
            if let Some(round) = &mut self.replication.round {
                round.conn = Some(conn);
            }
            if identified {
                self.start_round(out);
            }
            return;
        }
        let Some(address) = self.nodes.get(source).and_then(|n| n.address.clone()) else {
            self.abort_replication(out, "source has no address");
            return;
        };
        if let Some(last) = self.last_connect.get(&address) {
            if self.now < last + RECONNECT_DELAY {
                self.replication.retry_at = Some(last + RECONNECT_DELAY);
                return;
            }
        }
        self.last_connect.insert(address.clone(), self.now);
        let conn = out.connect(address);
        self.links.insert(
            conn,
            Link {
                kind: LinkKind::Storage,
                nid: Some(source),
                outgoing: true,
                identified: false,
                id_msg: None,
                delayed: None,
                peer: None,
            },
        );
        if let Some(round) = &mut self.replication.round {
            round.conn = Some(conn);
        }
    }

    pub(crate) fn replication_timer(&mut self, out: &mut Outbox) {
        if self.replication.retry_at.is_some_and(|t| t <= self.now) {
            self.replication.retry_at = None;
            match &self.replication.round {
                Some(round) if round.conn.is_none() => self.connect_source(out),
                Some(_) => {}
                None => self.next_partition(out),
            }
        }
    }

    /// Our connection to a source is established: identify.
    pub(crate) fn source_connected(&mut self, conn: ConnId, out: &mut Outbox) {
        let request = RequestIdentification {
            node_type: NodeType::Storage,
            nid: self.nid,
            address: Some(self.config.address.clone()),
            cluster_name: Bytes::from(self.config.cluster.clone().into_bytes()),
            id_timestamp: self.id_timestamp,
            extra: Dict::new(),
        };
        let msg_id = out.ask(conn, request);
        if let Some(link) = self.links.get_mut(&conn) {
            link.id_msg = Some(msg_id);
        }
    }

    fn start_round(&mut self, out: &mut Outbox) {
        let started = self
            .replication
            .round
            .as_ref()
            .is_some_and(|r| r.max.is_some() || r.msg_id.is_some());
        if !started {
            if let Err(e) = self.fetch_transactions(None, out) {
                self.fail_round(e, out);
            }
        }
    }

    /// A backend error during replication is fatal like anywhere else; a protocol error
    /// closes the source connection (which aborts the round).
    fn fail_round(&mut self, fail: Fail, out: &mut Outbox) {
        match fail {
            Fail::Backend(e) => {
                let conn = self.replication.round.as_ref().and_then(|r| r.conn);
                if let Some(conn) = conn {
                    self.close_link(conn, out);
                }
                warn!("replication failed: {e}");
                self.abort_replication(out, "backend error");
            }
            other => {
                warn!("replication failed: {other:?}");
                self.abort_replication(out, "error");
            }
        }
    }

    /// Asks the next chunk of transactions (6.1 step 4); `min` None starts the round.
    fn fetch_transactions(&mut self, min: Option<Tid>, out: &mut Outbox) -> Handled {
        let Some(round) = &self.replication.round else {
            return Ok(());
        };
        let (partition, conn) = (round.partition, round.conn);
        let Some(conn) = conn else {
            return Ok(());
        };
        let (min, ask_pack_info) = match min {
            Some(min) => {
                self.backend.commit()?;
                (min, false)
            }
            None => {
                let target = self.replication.targets.remove(&partition);
                let round = self.replication.round.as_mut().expect("checked above");
                let Some(max) = target.or(round.max) else {
                    self.abort_replication(out, "no target");
                    return Ok(());
                };
                round.max = Some(max);
                let Some(next) = self
                    .replication
                    .partitions
                    .get(&partition)
                    .map(|p| p.next_trans)
                else {
                    self.abort_replication(out, "partition discarded");
                    return Ok(());
                };
                debug!("starting replication of partition {partition} from {next} to {max}");
                (next, true)
            }
        };
        if let Some(progress) = self.replication.partitions.get_mut(&partition) {
            progress.next_trans = min;
        }
        let round = self.replication.round.as_mut().expect("checked above");
        let max = round.max.unwrap_or(min);
        let tid_list = self
            .backend
            .tids_range(partition, min, max, FETCH_COUNT as usize)?;
        round.msg_id = Some(out.ask(
            conn,
            AskFetchTransactions {
                partition,
                length: FETCH_COUNT,
                min_tid: min,
                max_tid: max,
                tid_list,
                ask_pack_info,
            },
        ));
        Ok(())
    }

    /// Asks the next chunk of object records (6.1 step 5); `min` None starts the phase.
    fn fetch_objects(&mut self, min: Option<(Tid, Oid)>, out: &mut Outbox) -> Handled {
        let own = self.own();
        let Some(round) = &self.replication.round else {
            return Ok(());
        };
        let (partition, conn, max) = (round.partition, round.conn, round.max);
        let (Some(conn), Some(max)) = (conn, max) else {
            return Ok(());
        };
        let Some(progress) = self.replication.partitions.get_mut(&partition) else {
            return Ok(());
        };
        let (min_tid, min_oid) = match min {
            Some((tid, oid)) => {
                progress.next_obj = tid;
                self.backend.set_replication_progress(
                    partition,
                    own,
                    Tid(tid.0.saturating_sub(1)),
                )?;
                (tid, oid)
            }
            None => {
                progress.next_trans = next_tid(max);
                (progress.next_obj, Oid(0))
            }
        };
        self.backend.commit()?;
        let mut object_dict: Vec<(Tid, Vec<Oid>)> = Vec::new();
        for (serial, oid) in
            self.backend
                .objects_range(partition, min_tid, min_oid, max, FETCH_COUNT as usize)?
        {
            match object_dict.last_mut() {
                Some((last, oids)) if *last == serial => oids.push(oid),
                _ => object_dict.push((serial, vec![oid])),
            }
        }
        let msg_id = out.ask(
            conn,
            AskFetchObjects {
                partition,
                length: FETCH_COUNT,
                min_tid,
                max_tid: max,
                min_oid,
                object_dict: Dict(object_dict),
            },
        );
        if let Some(round) = &mut self.replication.round {
            round.msg_id = Some(msg_id);
        }
        Ok(())
    }

    /// The round is complete (6.1 step 6).
    fn finish_round(&mut self, out: &mut Outbox) -> Handled {
        let own = self.own();
        let Some(round) = self.replication.round.take() else {
            return Ok(());
        };
        let Some(tid) = round.max else {
            return Ok(());
        };
        let partition = round.partition;
        let mut pending = self.replication.targets.contains_key(&partition);
        if let Some(progress) = self.replication.partitions.get_mut(&partition) {
            progress.next_obj = next_tid(tid);
            pending |= progress.max_ttid.is_some();
        }
        self.backend.set_replication_progress(partition, own, tid)?;
        self.backend.commit()?;
        if pending {
            debug!(
                "partition {partition} replicated up to {tid}, transactions still pending: {:?}",
                self.replication.ttids
            );
        } else {
            self.replicated(partition, tid, out)?;
        }
        self.next_partition(out);
        Ok(())
    }

    /// The round stops (source lost, REPLICATION_ERROR, partition discarded); the
    /// partition goes back to the targets, another one being tried first if any.
    pub(crate) fn abort_replication(&mut self, out: &mut Outbox, reason: &str) {
        let Some(round) = self.replication.round.take() else {
            return;
        };
        let partition = round.partition;
        warn!("replication aborted for partition {partition} ({reason})");
        if !self.replication.partitions.contains_key(&partition) {
            self.next_partition(out);
            return;
        }
        let target = self.replication.targets.remove(&partition).or(round.max);
        if self.replication.targets.is_empty() {
            if let Some(tid) = target {
                self.replication.targets.insert(partition, tid);
            }
            self.next_partition(out);
        } else {
            self.next_partition(out);
            if let Some(tid) = target {
                self.replication.targets.insert(partition, tid);
            }
        }
    }

    // --- Packets on storage connections -------------------------------------------------

    pub(crate) fn storage_packet(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        packet: Packet,
        out: &mut Outbox,
    ) -> Handled {
        let Some(link) = self.links.get(&conn) else {
            return Ok(());
        };
        if link.outgoing && !link.identified {
            let expected = link.id_msg == Some(msg_id);
            return match packet {
                Packet::AcceptIdentification(accept) if expected => {
                    if accept.node_type != NodeType::Storage
                        || accept.nid != link.nid
                        || accept.your_nid != self.nid
                    {
                        return Err(Fail::Protocol("invalid uuids".into()));
                    }
                    if let Some(link) = self.links.get_mut(&conn) {
                        link.identified = true;
                    }
                    if self.replication.uses(conn) {
                        self.start_round(out);
                    }
                    self.checker_connected(conn, out);
                    Ok(())
                }
                Packet::Error(e) if expected => {
                    warn!(
                        "source refused identification: {:?} {}",
                        e.code,
                        String::from_utf8_lossy(&e.message)
                    );
                    self.close_link(conn, out);
                    Ok(())
                }
                other => Err(Fail::Protocol(format!(
                    "unexpected packet: {} before identification",
                    other.name()
                ))),
            };
        }
        match packet {
            Packet::Ping(_) => {
                out.answer(conn, msg_id, Pong {});
                Ok(())
            }
            Packet::FlushLog(_) => Ok(()),
            Packet::CloseClient(_) => {
                if !self.replication.uses(conn) && !self.checker.uses(conn) && !link.outgoing {
                    self.close_link(conn, out);
                }
                Ok(())
            }
            // Served in the background, after client requests (6.4).
            packet @ (Packet::AskFetchTransactions(_)
            | Packet::AskFetchObjects(_)
            | Packet::AskCheckTIDRange(_)
            | Packet::AskCheckSerialRange(_)) => {
                self.background.push_back((conn, msg_id, packet));
                Ok(())
            }
            Packet::AddTransaction(add) => {
                if self.replication.is_current(conn, msg_id) {
                    self.backend.store_transaction(
                        &TransactionRecord {
                            tid: add.tid,
                            ttid: add.ttid,
                            oids: add.oid_list,
                            user: add.user,
                            description: add.description,
                            extension: add.extension,
                            packed: add.packed,
                            pack: add.pack,
                        },
                        false,
                    )?;
                }
                Ok(())
            }
            Packet::AddObject(add) => {
                if self.replication.is_current(conn, msg_id) {
                    let data = if add.data.is_empty() && add.checksum == ZERO_HASH {
                        None
                    } else {
                        Some(StoredData {
                            compression: add.compression,
                            checksum: add.checksum,
                            value: add.data,
                        })
                    };
                    self.backend.store_object(
                        add.oid,
                        add.serial,
                        data.as_ref(),
                        add.data_serial,
                        false,
                    )?;
                }
                Ok(())
            }
            Packet::AnswerFetchTransactions(answer) => {
                if !self.replication.is_current(conn, msg_id) {
                    return Ok(());
                }
                let partition = self.replication.current_partition().unwrap_or(0);
                self.backend
                    .delete_transactions(partition, &answer.tid_list)?;
                // Packs the source has not done are redone here later (6.9).
                if let Some(completed) = answer.completed_pack {
                    let own = self.own();
                    let ours = self
                        .backend
                        .pt_rows()?
                        .into_iter()
                        .find(|r| r.partition == partition && r.nid == own)
                        .and_then(|r| r.pack);
                    if ours.is_some_and(|p| completed < p) {
                        self.backend.set_pack_progress(partition, own, completed)?;
                    }
                }
                match answer.next_tid {
                    Some(next) => self.fetch_transactions(Some(next), out),
                    None => self.fetch_objects(None, out),
                }
            }
            Packet::AnswerFetchObjects(answer) => {
                if !self.replication.is_current(conn, msg_id) {
                    return Ok(());
                }
                let partition = self.replication.current_partition().unwrap_or(0);
                let records: Vec<(Tid, Oid)> = answer
                    .object_dict
                    .0
                    .iter()
                    .flat_map(|(serial, oids)| oids.iter().map(move |oid| (*serial, *oid)))
                    .collect();
                self.backend.delete_objects(partition, &records)?;
                match answer.next_tid {
                    Some(next) => {
                        self.fetch_objects(Some((next, answer.next_oid.unwrap_or(Oid(0)))), out)
                    }
                    None => self.finish_round(out),
                }
            }
            Packet::AnswerCheckTIDRange(answer) => {
                let digests = Digests::Tids {
                    count: answer.count,
                    checksum: answer.checksum,
                    max_tid: answer.max_tid,
                };
                self.checker_answer(conn, msg_id, digests, out);
                Ok(())
            }
            Packet::AnswerCheckSerialRange(answer) => {
                let digests = Digests::Serials {
                    count: answer.count,
                    tid_checksum: answer.tid_checksum,
                    max_tid: answer.max_tid,
                    oid_checksum: answer.oid_checksum,
                    max_oid: answer.max_oid,
                };
                self.checker_answer(conn, msg_id, digests, out);
                Ok(())
            }
            Packet::Error(e) => {
                let message = String::from_utf8_lossy(&e.message).into_owned();
                if self.checker_error(conn, msg_id, out) {
                    warn!("{:?} from {conn:x} to a check request: {message}", e.code);
                } else if self.replication.is_current(conn, msg_id) {
                    self.abort_replication(out, &format!("source message: {message}"));
                } else {
                    debug!("ignoring {:?} from a previous round: {message}", e.code);
                }
                Ok(())
            }
            other => Err(Fail::Protocol(format!(
                "unexpected packet: {} on a storage connection",
                other.name()
            ))),
        }
    }

    /// One step of background work: the oldest replication or check request still wanted
    /// (its connection may have gone meanwhile).
    pub(crate) fn background_step(&mut self, out: &mut Outbox) -> Option<(ConnId, u32, Handled)> {
        while let Some((conn, msg_id, packet)) = self.background.pop_front() {
            if !self.links.contains_key(&conn) {
                continue;
            }
            let result = match packet {
                Packet::AskFetchTransactions(ask) => {
                    self.serve_transactions(conn, msg_id, ask, out)
                }
                Packet::AskFetchObjects(ask) => self.serve_objects(conn, msg_id, ask, out),
                Packet::AskCheckTIDRange(ask) => self.check_tid_range(conn, msg_id, ask, out),
                Packet::AskCheckSerialRange(ask) => self.check_serial_range(conn, msg_id, ask, out),
                _ => Ok(()),
            };
            return Some((conn, msg_id, result));
        }
        None
    }

    /// Source side of AskFetchTransactions.
    fn serve_transactions(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        ask: AskFetchTransactions,
        out: &mut Outbox,
    ) -> Handled {
        let own = self.own();
        let partition = ask.partition;
        if !self.table.is_readable(partition, own) {
            out.error(
                conn,
                msg_id,
                ErrorCode::ReplicationError,
                format!("partition {partition} not readable"),
            );
            return Ok(());
        }
        // A transaction committed but not yet moved to the final tables (6.5).
        if self.tm.is_locked_tid(ask.max_tid) {
            self.tm
                .delay_read(conn, msg_id, Packet::AskFetchTransactions(ask));
            return Ok(());
        }
        let completed_pack = if ask.ask_pack_info {
            self.backend
                .pt_rows()?
                .into_iter()
                .find(|r| r.partition == partition && r.nid == own)
                .and_then(|r| r.pack)
        } else {
            None
        };
        let length = ask.length.min(SERVE_MAX) as usize;
        let mut tids = self
            .backend
            .tids_range(partition, ask.min_tid, ask.max_tid, length + 1)?;
        let next = if tids.len() > length {
            tids.pop()
        } else {
            None
        };
        let mut peer: BTreeSet<Tid> = ask.tid_list.iter().copied().collect();
        for tid in tids {
            if peer.remove(&tid) {
                continue;
            }
            let Some(t) = self.backend.transaction(tid, false)? else {
                out.error(
                    conn,
                    msg_id,
                    ErrorCode::ReplicationError,
                    format!("partition {partition} dropped"),
                );
                return Ok(());
            };
            out.notify_with_id(
                conn,
                msg_id,
                AddTransaction {
                    tid,
                    user: t.user,
                    description: t.description,
                    extension: t.extension,
                    packed: t.packed,
                    ttid: t.ttid,
                    oid_list: t.oids,
                    pack: t.pack,
                },
            );
        }
        let tid_list = ask
            .tid_list
            .into_iter()
            .filter(|tid| peer.contains(tid))
            .collect();
        out.answer(
            conn,
            msg_id,
            AnswerFetchTransactions {
                next_tid: next,
                tid_list,
                completed_pack,
            },
        );
        Ok(())
    }

    /// A peer checking replicas (6.6) needs our cell to be complete (CORRUPTED is
    /// fine: that is what the check is for).
    fn checkable(&self, partition: u32) -> bool {
        !matches!(
            self.table.cell(partition, self.own()),
            None | Some(CellState::OutOfDate)
        )
    }

    /// AskCheckTIDRange: digest of the committed TIDs of a range (6.6).
    fn check_tid_range(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        ask: AskCheckTIDRange,
        out: &mut Outbox,
    ) -> Handled {
        if !self.checkable(ask.partition) {
            let message = format!("partition {} not readable", ask.partition);
            out.error(conn, msg_id, ErrorCode::CheckingError, message);
            return Ok(());
        }
        if self.tm.is_locked_tid(ask.max_tid) {
            self.tm
                .delay_read(conn, msg_id, Packet::AskCheckTIDRange(ask));
            return Ok(());
        }
        let tids = self.backend.tids_range(
            ask.partition,
            ask.min_tid,
            ask.max_tid,
            ask.length as usize,
        )?;
        if let Digests::Tids {
            count,
            checksum,
            max_tid,
        } = tid_digests(&tids)
        {
            out.answer(
                conn,
                msg_id,
                AnswerCheckTIDRange {
                    count,
                    checksum,
                    max_tid,
                },
            );
        }
        Ok(())
    }

    /// AskCheckSerialRange: digests of the object records of a range (6.6).
    fn check_serial_range(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        ask: AskCheckSerialRange,
        out: &mut Outbox,
    ) -> Handled {
        if !self.checkable(ask.partition) {
            let message = format!("partition {} not readable", ask.partition);
            out.error(conn, msg_id, ErrorCode::CheckingError, message);
            return Ok(());
        }
        if self.tm.is_locked_tid(ask.max_tid) {
            return Err(Fail::Protocol(
                "transactions must be checked before objects".into(),
            ));
        }
        let records = self.backend.objects_range(
            ask.partition,
            ask.min_tid,
            ask.min_oid,
            ask.max_tid,
            ask.length as usize,
        )?;
        if let Digests::Serials {
            count,
            tid_checksum,
            max_tid,
            oid_checksum,
            max_oid,
        } = serial_digests(&records)
        {
            out.answer(
                conn,
                msg_id,
                AnswerCheckSerialRange {
                    count,
                    tid_checksum,
                    max_tid,
                    oid_checksum,
                    max_oid,
                },
            );
        }
        Ok(())
    }

    /// Source side of AskFetchObjects.
    fn serve_objects(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        ask: AskFetchObjects,
        out: &mut Outbox,
    ) -> Handled {
        let partition = ask.partition;
        if !self.table.is_readable(partition, self.own()) {
            out.error(
                conn,
                msg_id,
                ErrorCode::ReplicationError,
                format!("partition {partition} not readable"),
            );
            return Ok(());
        }
        let length = ask.length.min(SERVE_MAX) as usize;
        let mut records = self.backend.objects_range(
            partition,
            ask.min_tid,
            ask.min_oid,
            ask.max_tid,
            length + 1,
        )?;
        let (next_tid, next_oid) = if records.len() > length {
            match records.pop() {
                Some((tid, oid)) => (Some(tid), Some(oid)),
                None => (None, None),
            }
        } else {
            (None, None)
        };
        let mut peer: BTreeMap<Tid, BTreeSet<Oid>> = BTreeMap::new();
        for (serial, oids) in &ask.object_dict.0 {
            peer.entry(*serial)
                .or_default()
                .extend(oids.iter().copied());
        }
        for (serial, oid) in records {
            if peer.get_mut(&serial).is_some_and(|oids| oids.remove(&oid)) {
                continue;
            }
            let Some(record) = self.backend.object(oid, Some(serial), None)? else {
                out.error(
                    conn,
                    msg_id,
                    ErrorCode::ReplicationError,
                    format!("partition {partition} dropped or truncated"),
                );
                return Ok(());
            };
            let (compression, checksum, data) = match record.data {
                Some(d) => (d.compression, d.checksum, d.value),
                None => (0, ZERO_HASH, Bytes::new()),
            };
            out.notify_with_id(
                conn,
                msg_id,
                AddObject {
                    oid,
                    serial,
                    compression,
                    checksum,
                    data,
                    data_serial: record.data_serial,
                },
            );
        }
        let mut object_dict = Vec::new();
        for (serial, oids) in ask.object_dict.0 {
            let Some(left) = peer.get(&serial) else {
                continue;
            };
            let oids: Vec<Oid> = oids.into_iter().filter(|o| left.contains(o)).collect();
            if !oids.is_empty() && !object_dict.iter().any(|(s, _)| *s == serial) {
                object_dict.push((serial, oids));
            }
        }
        out.answer(
            conn,
            msg_id,
            AnswerFetchObjects {
                next_tid,
                next_oid,
                object_dict: Dict(object_dict),
            },
        );
        Ok(())
    }
}
