//! The checking side of replica checks (cluster.md 6.6): on CheckPartition from the
//! master, this node compares its cell of the partition with every other readable cell
//! (and the reference the master named, if any), chunk by chunk, first the TIDs of
//! `trans` then the `(tid, oid)` keys of `obj`, by digests (8 item 13); nodes whose
//! digests differ from the reference's (from everyone's when there is none) are reported
//! to the master with NotifyPartitionCorrupted and left out of the rest of the check.
//!
//! Checks are queued and run one partition at a time. This node's own digests are
//! computed on `Input::Idle`, i.e. at the low priority of replication (6.4), and never
//! while a transaction up to the checked TID is locked (6.5); peers compute theirs the
//! same way when they answer AskCheckTIDRange/AskCheckSerialRange.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use neo_node::{ConnId, Outbox};
use neo_protocol::{
    AskCheckSerialRange, AskCheckTIDRange, CellState, CheckSource, Checksum, CloseClient, Nid,
    NotifyPartitionCorrupted, Oid, Packet, Tid,
};
use tracing::{debug, error, info, warn};

use crate::backend::Backend;
use crate::node::{Handled, Link, LinkKind, Storage};
use crate::replication::digest;

/// Records per chunk, as NEO/py's checker asks (6.6).
pub const CHECK_COUNT: u32 = 40_000;

/// Queued checks and the one running.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    queue: VecDeque<Job>,
    current: Option<Check>,
}

/// One CheckPartition from the master.
#[derive(Debug, Clone)]
struct Job {
    partition: u32,
    source: CheckSource,
    min_tid: Tid,
    max_tid: Tid,
}

/// Who answers in a check: a peer storage over a connection, or this node (None).
type Peer = Option<ConnId>;

/// The digests of one chunk, as compared between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Digests {
    Tids {
        count: u64,
        checksum: Checksum,
        max_tid: Tid,
    },
    Serials {
        count: u64,
        tid_checksum: Checksum,
        max_tid: Tid,
        oid_checksum: Checksum,
        max_oid: Oid,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// The connection is not identified yet: asked once it is.
    Connecting,
    /// Asked under this msg_id.
    Asked(u32),
    /// This node's digests, computed when idle.
    Computing,
    Answered(Digests),
}

#[derive(Debug)]
struct Check {
    partition: u32,
    min_tid: Tid,
    max_tid: Tid,
    next_tid: Tid,
    /// None during the TID phase; the next oid during the object phase.
    next_oid: Option<Oid>,
    /// The reference whose digests are right by definition, if any.
    source: Option<Peer>,
    slots: BTreeMap<Peer, Slot>,
    nids: BTreeMap<ConnId, Nid>,
    /// Connections this check opened: given back with CloseClient at the end.
    opened: BTreeSet<ConnId>,
}

impl Checker {
    /// Whether `conn` takes part in the running check.
    pub(crate) fn uses(&self, conn: ConnId) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.slots.contains_key(&Some(conn)))
    }

    fn is_asked(&self, conn: ConnId, msg_id: u32) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.slots.get(&Some(conn)) == Some(&Slot::Asked(msg_id)))
    }

    /// The TID up to which this node's digests wait for locked transactions, if they are
    /// to be computed.
    pub(crate) fn own_due(&self) -> Option<Tid> {
        let check = self.current.as_ref()?;
        (check.slots.get(&None) == Some(&Slot::Computing)).then_some(check.max_tid)
    }

    /// The partition being checked (for tests and logs).
    pub(crate) fn current_partition(&self) -> Option<u32> {
        self.current.as_ref().map(|c| c.partition)
    }
}

impl<B: Backend> Storage<B> {
    /// The partition being checked, if any.
    pub fn checking_partition(&self) -> Option<u32> {
        self.checker.current_partition()
    }

    /// CheckPartition from the master: queued, started at once if no check runs.
    pub(crate) fn check_partition(
        &mut self,
        partition: u32,
        source: CheckSource,
        min_tid: Tid,
        max_tid: Tid,
        out: &mut Outbox,
    ) {
        self.checker.queue.push_back(Job {
            partition,
            source,
            min_tid,
            max_tid,
        });
        if self.checker.current.is_none() {
            self.next_check(out);
        }
    }

    /// Ends the running check (if any) and starts the next queued one that can start.
    fn next_check(&mut self, out: &mut Outbox) {
        let opened = self
            .checker
            .current
            .take()
            .map(|check| check.opened)
            .unwrap_or_default();
        while let Some(job) = self.checker.queue.pop_front() {
            let partition = job.partition;
            match self.start_check(job, out) {
                Ok(()) => break,
                Err(reason) => {
                    error!("failed to start checking partition {partition} ({reason})")
                }
            }
        }
        // Connections the next check reuses stay open (and are given back after it).
        for conn in opened {
            match &mut self.checker.current {
                Some(check) if check.slots.contains_key(&Some(conn)) => {
                    check.opened.insert(conn);
                }
                _ => self.give_back(conn, out),
            }
        }
    }

    /// Tells a peer we no longer use a connection we opened, unless our replication
    /// uses it; the peer closes it if it does not use it either.
    fn give_back(&mut self, conn: ConnId, out: &mut Outbox) {
        if self.links.contains_key(&conn) && !self.replication.uses(conn) {
            out.notify(conn, CloseClient {});
        }
    }

    fn start_check(&mut self, job: Job, out: &mut Outbox) -> Result<(), &'static str> {
        let own = self.own();
        let partition = job.partition;
        if matches!(
            self.table.cell(partition, own),
            None | Some(CellState::OutOfDate)
        ) {
            return Err("discarded or out-of-date");
        }
        if !job.source.upstream_name.is_empty() {
            return Err("checking against an upstream cluster is not supported");
        }
        // The other readable cells, on nodes we can reach.
        let peers: Vec<Nid> = self
            .table
            .readable_nids(partition)
            .into_iter()
            .filter(|nid| *nid != own)
            .filter(|nid| {
                let reachable = self
                    .nodes
                    .get(*nid)
                    .is_some_and(|n| n.is_running() && n.address.is_some());
                if !reachable {
                    warn!("{nid} is not running: left out of the check of partition {partition}");
                }
                reachable
            })
            .collect();
        // The reference must be one of the nodes checked (or this one).
        let source_nid = match &job.source.address {
            None => None,
            Some(address) if *address == self.config.address => Some(own),
            Some(address) => match self.nodes.by_address(address).and_then(|n| n.nid) {
                Some(nid) if peers.contains(&nid) => Some(nid),
                _ => return Err("unavailable source"),
            },
        };
        if peers.is_empty() {
            return Err("no replica");
        }
        let mut check = Check {
            partition,
            min_tid: job.min_tid,
            max_tid: job.max_tid,
            next_tid: job.min_tid,
            next_oid: None,
            source: None,
            slots: BTreeMap::new(),
            nids: BTreeMap::new(),
            opened: BTreeSet::new(),
        };
        check.slots.insert(None, Slot::Computing);
        if source_nid == Some(own) {
            check.source = Some(None);
        }
        for nid in peers {
            let (conn, identified) = match self.storage_link(nid) {
                Some(found) => found,
                None => match self.open_storage_link(nid, out) {
                    Some(conn) => {
                        check.opened.insert(conn);
                        (conn, false)
                    }
                    None => continue,
                },
            };
            // An identified peer is asked by `ask_range` below.
            check.slots.insert(
                Some(conn),
                if identified {
                    Slot::Asked(0)
                } else {
                    Slot::Connecting
                },
            );
            check.nids.insert(conn, nid);
            if source_nid == Some(nid) {
                check.source = Some(Some(conn));
            }
        }
        debug!(
            "start checking partition {partition} from {} to {}",
            job.min_tid, job.max_tid
        );
        self.checker.current = Some(check);
        self.ask_range(out);
        Ok(())
    }

    /// An existing connection with a storage: (conn, identified), identified ones first.
    fn storage_link(&self, nid: Nid) -> Option<(ConnId, bool)> {
        self.links
            .iter()
            .filter(|(_, l)| l.kind == LinkKind::Storage && l.nid == Some(nid))
            .max_by_key(|(_, l)| l.identified)
            .map(|(c, l)| (*c, l.identified))
    }

    /// Connects to a storage as a client (identification follows `Input::Connected`).
    fn open_storage_link(&mut self, nid: Nid, out: &mut Outbox) -> Option<ConnId> {
        let address = self.nodes.get(nid).and_then(|n| n.address.clone())?;
        self.last_connect.insert(address.clone(), self.now);
        let conn = out.connect(address);
        self.links.insert(
            conn,
            Link {
                kind: LinkKind::Storage,
                nid: Some(nid),
                outgoing: true,
                identified: false,
                id_msg: None,
                delayed: None,
                peer: None,
            },
        );
        Some(conn)
    }

    /// Asks the current chunk of every identified peer and schedules our own digests.
    fn ask_range(&mut self, out: &mut Outbox) {
        let Some(check) = &mut self.checker.current else {
            return;
        };
        let peers: Vec<Peer> = check.slots.keys().copied().collect();
        for peer in peers {
            let slot = match peer {
                None => Slot::Computing,
                Some(conn) => {
                    if check.slots.get(&peer) == Some(&Slot::Connecting) {
                        continue;
                    }
                    Slot::Asked(ask_chunk(check, conn, out))
                }
            };
            check.slots.insert(peer, slot);
        }
    }

    /// A connection became identified: a peer waiting for it is asked the current chunk.
    pub(crate) fn checker_connected(&mut self, conn: ConnId, out: &mut Outbox) {
        let Some(check) = &mut self.checker.current else {
            return;
        };
        if check.slots.get(&Some(conn)) == Some(&Slot::Connecting) {
            let msg_id = ask_chunk(check, conn, out);
            check.slots.insert(Some(conn), Slot::Asked(msg_id));
        }
    }

    /// AnswerCheckTIDRange/AnswerCheckSerialRange from a peer; answers to requests of an
    /// earlier chunk or check are ignored (returns whether it was ours).
    pub(crate) fn checker_answer(
        &mut self,
        conn: ConnId,
        msg_id: u32,
        digests: Digests,
        out: &mut Outbox,
    ) -> bool {
        if !self.checker.is_asked(conn, msg_id) {
            debug!("ignored check answer {digests:?} from {conn:x}");
            return false;
        }
        if let Some(check) = &mut self.checker.current {
            let expected = matches!(
                (&digests, check.next_oid),
                (Digests::Tids { .. }, None) | (Digests::Serials { .. }, Some(_))
            );
            if !expected {
                warn!("answer of the wrong check phase from {conn:x}: left out of the check");
                self.checker_link_lost(conn, out);
                return true;
            }
            check.slots.insert(Some(conn), Slot::Answered(digests));
        }
        self.evaluate(out);
        true
    }

    /// An error answered to a check request: the peer cannot take part (its cell is not
    /// complete, or it refused). Returns whether the request was ours.
    pub(crate) fn checker_error(&mut self, conn: ConnId, msg_id: u32, out: &mut Outbox) -> bool {
        if !self.checker.is_asked(conn, msg_id) {
            return false;
        }
        self.checker_link_lost(conn, out);
        true
    }

    /// A peer is gone (or refused): the check goes on with the others unless it was the
    /// reference or fewer than two nodes remain.
    pub(crate) fn checker_link_lost(&mut self, conn: ConnId, out: &mut Outbox) {
        let Some(check) = &mut self.checker.current else {
            return;
        };
        if check.slots.remove(&Some(conn)).is_none() {
            return;
        }
        check.opened.remove(&conn);
        let partition = check.partition;
        if check.source == Some(Some(conn)) {
            warn!("reference lost: check of partition {partition} aborted");
        } else if check.slots.len() > 1 {
            warn!("node lost but keep up checking partition {partition}");
            // What was waited for may have been that node's answer only.
            self.evaluate(out);
            return;
        } else {
            warn!("check of partition {partition} aborted");
        }
        self.next_check(out);
    }

    /// Whether our own digests are due and computable now (no lock up to the checked TID).
    pub(crate) fn checker_wants_idle(&self) -> bool {
        self.checker
            .own_due()
            .is_some_and(|max| !self.tm.is_locked_tid(max))
    }

    /// One idle step: this node's digests of the current chunk.
    pub(crate) fn checker_idle(&mut self, out: &mut Outbox) -> Handled {
        if !self.checker_wants_idle() {
            return Ok(());
        }
        let Some(check) = &self.checker.current else {
            return Ok(());
        };
        let digests = match check.next_oid {
            None => {
                let tids = self.backend.tids_range(
                    check.partition,
                    check.next_tid,
                    check.max_tid,
                    CHECK_COUNT as usize,
                )?;
                tid_digests(&tids)
            }
            Some(next_oid) => {
                let records = self.backend.objects_range(
                    check.partition,
                    check.next_tid,
                    next_oid,
                    check.max_tid,
                    CHECK_COUNT as usize,
                )?;
                serial_digests(&records)
            }
        };
        if let Some(check) = &mut self.checker.current {
            check.slots.insert(None, Slot::Answered(digests));
        }
        self.evaluate(out);
        Ok(())
    }

    /// Once every node answered the chunk: report the nodes that differ, then go on with
    /// the next chunk, the object phase, or the next partition.
    fn evaluate(&mut self, out: &mut Outbox) {
        let own = self.own();
        let master = self.master_conn();
        let Some(check) = &mut self.checker.current else {
            return;
        };
        let mut answers = Vec::new();
        for (peer, slot) in &check.slots {
            match slot {
                Slot::Answered(digests) => answers.push((*peer, digests.clone())),
                _ => return,
            }
        }
        let Some((_, first)) = answers.first().cloned() else {
            return;
        };
        let agreed = if answers.iter().all(|(_, d)| *d == first) {
            first
        } else {
            let reference = check
                .source
                .and_then(|source| answers.iter().find(|(p, _)| *p == source))
                .map(|(_, d)| d.clone());
            let mut corrupted = Vec::new();
            for (peer, digests) in &answers {
                if Some(digests) != reference.as_ref() {
                    check.slots.remove(peer);
                    corrupted.push(match peer {
                        None => own,
                        Some(conn) => check.nids.get(conn).copied().unwrap_or(Nid(0)),
                    });
                }
            }
            let partition = check.partition;
            let names: Vec<String> = corrupted.iter().map(Nid::to_string).collect();
            warn!(
                "partition {partition}: replicas differ on {}",
                names.join(", ")
            );
            if let Some(master) = master {
                out.notify(
                    master,
                    NotifyPartitionCorrupted {
                        partition,
                        nid_list: corrupted,
                    },
                );
            }
            match reference {
                Some(reference) if check.slots.len() > 1 => reference,
                _ => {
                    warn!("check of partition {partition} aborted");
                    self.next_check(out);
                    return;
                }
            }
        };
        match agreed {
            Digests::Tids { count, max_tid, .. } => {
                if count < u64::from(CHECK_COUNT) {
                    check.next_tid = check.min_tid;
                    check.next_oid = Some(Oid(0));
                } else {
                    check.next_tid = Tid(max_tid.0.saturating_add(1));
                }
            }
            Digests::Serials {
                count,
                max_tid,
                max_oid,
                ..
            } => {
                if count < u64::from(CHECK_COUNT) {
                    info!(
                        "partition {} checked from {} to {}",
                        check.partition, check.min_tid, check.max_tid
                    );
                    self.next_check(out);
                    return;
                }
                check.next_tid = max_tid;
                check.next_oid = Some(Oid(max_oid.0.saturating_add(1)));
            }
        }
        self.ask_range(out);
    }
}

/// Sends the current chunk's request to a peer; returns its msg_id.
fn ask_chunk(check: &Check, conn: ConnId, out: &mut Outbox) -> u32 {
    let packet: Packet = match check.next_oid {
        None => AskCheckTIDRange {
            partition: check.partition,
            length: CHECK_COUNT,
            min_tid: check.next_tid,
            max_tid: check.max_tid,
        }
        .into(),
        Some(min_oid) => AskCheckSerialRange {
            partition: check.partition,
            length: CHECK_COUNT,
            min_tid: check.next_tid,
            max_tid: check.max_tid,
            min_oid,
        }
        .into(),
    };
    out.ask(conn, packet)
}

/// The digests of the TIDs of a chunk, ascending (the answering side uses it too).
pub(crate) fn tid_digests(tids: &[Tid]) -> Digests {
    Digests::Tids {
        count: tids.len() as u64,
        checksum: digest(tids.iter().map(|t| t.0)),
        max_tid: tids.last().copied().unwrap_or(Tid(0)),
    }
}

/// The digests of the `(tid, oid)` records of a chunk, ordered by (tid, oid).
pub(crate) fn serial_digests(records: &[(Tid, Oid)]) -> Digests {
    let (max_tid, max_oid) = records.last().copied().unwrap_or((Tid(0), Oid(0)));
    Digests::Serials {
        count: records.len() as u64,
        tid_checksum: digest(records.iter().map(|(t, _)| t.0)),
        max_tid,
        oid_checksum: digest(records.iter().map(|(_, o)| o.0)),
        max_oid,
    }
}
