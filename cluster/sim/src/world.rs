//! The simulated world: a virtual clock, an event queue ordered by (time, sequence), the
//! nodes (each a real state machine built by a factory, so that it can be killed and
//! constructed again), FIFO connections between them and the faults the tests inject
//! (kill, restart, partition, heal, delay).
//!
//! Every packet is encoded with `neo_protocol::encode_message` when a node sends it and
//! decoded when it arrives, as over TCP: an encoding bug shows up as a violation. Every
//! random choice (latencies, node seeds) comes from the world's one [`Rng`], so a seed
//! replays a run exactly.

use std::any::Any;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use neo_node::{ConnId, Input, Node, Outbox, Output, Rng, Time};
use neo_protocol::{Address, Bytes, Packet};

use crate::check::Checker;

/// 2026-01-01T00:00:00Z: the virtual clock starts there, so that TIDs look real.
pub const EPOCH: Time = 1_767_225_600.0;

/// The first fake port; nodes get consecutive ones.
const FIRST_PORT: u16 = 20_000;

/// A node stuck at the same instant after this many timer calls is a livelock.
const TIMER_LIVELOCK: u32 = 1_000;

/// How long after its last input a node with background work gets `Input::Idle`: what
/// is due at the same instant goes first, as a real driver serves pending events first.
const IDLE_DELAY: Time = 1e-5;

/// A node under simulation: any [`Node`] that can be looked at by type.
pub trait SimNode: Node {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Node + 'static> SimNode for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Builds a node instance; called at creation and at every restart with a fresh seed.
/// An error is a node that failed to start (it counts as exited with code 1).
pub type Factory = Box<dyn FnMut(u64) -> Result<Box<dyn SimNode>, String>>;

/// Index of a node in the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

/// Whether a node runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Up,
    /// Killed by the test (or never started).
    Down,
    /// The node asked to exit.
    Exited {
        code: i32,
        reason: String,
    },
}

/// Latencies of the simulated network, in seconds.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub latency_min: f64,
    pub latency_max: f64,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            latency_min: 0.000_2,
            latency_max: 0.005,
        }
    }
}

/// A packet that left a node, as the checkers see it.
#[derive(Debug, Clone)]
pub struct Sent<'a> {
    pub from: NodeId,
    pub to: NodeId,
    pub link: u64,
    pub msg_id: u32,
    pub packet: &'a Packet,
}

pub struct World {
    now: Time,
    rng: Rng,
    seq: u64,
    queue: BinaryHeap<Event>,
    slots: Vec<Slot>,
    links: BTreeMap<u64, Link>,
    next_link: u64,
    /// Unordered pairs of nodes that cannot talk (partitions).
    blocked: BTreeSet<(NodeId, NodeId)>,
    pub net: NetConfig,
    checker: Checker,
    violations: Vec<String>,
    /// Recent events, for failure reports.
    trace: Vec<String>,
    trace_limit: usize,
    /// Trace packets with their fields, not only their names.
    verbose: bool,
    events_processed: u64,
}

struct Slot {
    name: String,
    address: Address,
    factory: Factory,
    node: Option<Box<dyn SimNode>>,
    outbox: Outbox,
    status: Status,
    incarnation: u32,
    /// This node's connection ids → links.
    conns: BTreeMap<ConnId, u64>,
    next_accept: u64,
    timer_at: Option<Time>,
    timer_calls_at_now: (Time, u32),
    /// An Idle event is queued for this node.
    idle_scheduled: bool,
    /// Added to every packet to or from this node (the "delay" fault).
    extra_delay: f64,
    starts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LinkState {
    Connecting,
    Open,
}

/// One connection. End 0 opened it, end 1 accepted it.
struct Link {
    ends: [End; 2],
    state: LinkState,
    /// Packets the initiator sent before the connection was established.
    pending: Vec<Vec<u8>>,
    /// Arrival time of the last thing sent in each direction (0: end 0 → end 1), to keep
    /// FIFO order whatever latency is drawn.
    last_arrival: [Time; 2],
    /// Cut by a partition: nothing more is delivered.
    cut: bool,
}

#[derive(Debug, Clone, Copy)]
struct End {
    node: NodeId,
    incarnation: u32,
    /// The end's name for the connection; None until accepted.
    conn: Option<ConnId>,
    /// This end is gone (closed it, was told Closed, or died).
    closed: bool,
}

#[derive(Debug)]
enum EventKind {
    Start {
        node: NodeId,
        incarnation: u32,
    },
    Timer {
        node: NodeId,
        incarnation: u32,
    },
    /// Background work of a node that wants it, a little after what is due now.
    Idle {
        node: NodeId,
        incarnation: u32,
    },
    Establish {
        link: u64,
    },
    ConnectFailed {
        link: u64,
    },
    Deliver {
        link: u64,
        to: usize,
        bytes: Vec<u8>,
    },
    Closed {
        link: u64,
        to: usize,
    },
}

struct Event {
    at: Time,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Event) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Reversed, so that the max-heap pops the earliest (time, sequence) first.
    fn cmp(&self, other: &Event) -> Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl World {
    pub fn new(seed: u64) -> World {
        World {
            now: EPOCH,
            rng: Rng::new(seed),
            seq: 0,
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            links: BTreeMap::new(),
            next_link: 1,
            blocked: BTreeSet::new(),
            net: NetConfig::default(),
            checker: Checker::default(),
            violations: Vec::new(),
            trace: Vec::new(),
            trace_limit: 200,
            verbose: std::env::var_os("NEO_SIM_VERBOSE").is_some(),
            events_processed: 0,
        }
    }

    // --- Nodes --------------------------------------------------------------------------

    /// The address the next added node will listen on.
    pub fn next_address(&self) -> Address {
        address_of(self.slots.len())
    }

    /// Adds a node listening on [`World::next_address`], and starts it now.
    pub fn add_node(&mut self, name: &str, factory: Factory) -> NodeId {
        let id = self.add_node_stopped(name, factory);
        self.restart(id);
        id
    }

    /// Adds a node that is down until [`World::restart`].
    pub fn add_node_stopped(&mut self, name: &str, factory: Factory) -> NodeId {
        let id = NodeId(self.slots.len());
        self.slots.push(Slot {
            name: name.to_string(),
            address: address_of(id.0),
            factory,
            node: None,
            outbox: Outbox::new(),
            status: Status::Down,
            incarnation: 0,
            conns: BTreeMap::new(),
            next_accept: 1,
            timer_at: None,
            timer_calls_at_now: (0.0, 0),
            idle_scheduled: false,
            extra_delay: 0.0,
            starts: 0,
        });
        id
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.slots.len()).map(NodeId)
    }

    pub fn name(&self, id: NodeId) -> &str {
        &self.slots[id.0].name
    }

    pub fn address(&self, id: NodeId) -> Address {
        self.slots[id.0].address.clone()
    }

    pub fn status(&self, id: NodeId) -> &Status {
        &self.slots[id.0].status
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.slots[id.0].status == Status::Up
    }

    /// How many times the node was started.
    pub fn starts(&self, id: NodeId) -> u32 {
        self.slots[id.0].starts
    }

    /// The running instance as type `T`, if up and of that type.
    pub fn get<T: 'static>(&self, id: NodeId) -> Option<&T> {
        self.slots[id.0]
            .node
            .as_ref()
            .and_then(|n| n.as_any().downcast_ref::<T>())
    }

    pub fn get_mut<T: 'static>(&mut self, id: NodeId) -> Option<&mut T> {
        self.slots[id.0]
            .node
            .as_mut()
            .and_then(|n| n.as_any_mut().downcast_mut::<T>())
    }

    /// Every running instance of type `T`.
    pub fn all<T: 'static>(&self) -> Vec<(NodeId, &T)> {
        self.node_ids()
            .filter_map(|id| self.get::<T>(id).map(|n| (id, n)))
            .collect()
    }

    // --- Clock and randomness -----------------------------------------------------------

    pub fn now(&self) -> Time {
        self.now
    }

    /// Seconds since the start of the simulation.
    pub fn elapsed(&self) -> f64 {
        self.now - EPOCH
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    pub fn events_processed(&self) -> u64 {
        self.events_processed
    }

    // --- Faults -------------------------------------------------------------------------

    /// Kills a node: its state is gone, its connections drop (peers get Closed after what
    /// it had already sent), packets to it are lost. A storage keeps its disk, which lives
    /// in its factory.
    pub fn kill(&mut self, id: NodeId) {
        if self.slots[id.0].node.is_none() {
            return;
        }
        self.log(format!("kill {}", self.slots[id.0].name));
        self.take_down(id, Status::Down);
    }

    /// Builds the node again from its factory and starts it (also starts a node added
    /// stopped, or one that exited).
    pub fn restart(&mut self, id: NodeId) {
        if self.slots[id.0].node.is_some() {
            self.take_down(id, Status::Down);
        }
        let seed = self.rng.next_u64();
        let slot = &mut self.slots[id.0];
        let node = match (slot.factory)(seed) {
            Ok(node) => node,
            Err(reason) => {
                slot.status = Status::Exited { code: 1, reason };
                let name = slot.name.clone();
                self.log(format!("{name} fails to start"));
                return;
            }
        };
        slot.node = Some(node);
        slot.outbox = Outbox::new();
        slot.status = Status::Up;
        slot.incarnation += 1;
        slot.starts += 1;
        slot.next_accept = 1;
        slot.timer_at = None;
        let incarnation = slot.incarnation;
        let name = slot.name.clone();
        self.log(format!("start {name}"));
        self.schedule(
            self.now,
            EventKind::Start {
                node: id,
                incarnation,
            },
        );
    }

    /// Cuts the network between two sets of nodes: connections between them are closed on
    /// both sides (what was in flight is lost) and new ones fail until [`World::heal`].
    pub fn partition(&mut self, left: &[NodeId], right: &[NodeId]) {
        self.log(format!(
            "partition {:?} | {:?}",
            left.iter().map(|i| self.name(*i)).collect::<Vec<_>>(),
            right.iter().map(|i| self.name(*i)).collect::<Vec<_>>()
        ));
        for &a in left {
            for &b in right {
                if a != b {
                    self.blocked.insert(pair(a, b));
                }
            }
        }
        let cut: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| !l.cut && self.is_blocked(l.ends[0].node, l.ends[1].node))
            .map(|(id, _)| *id)
            .collect();
        for link_id in cut {
            let latency = self.latency_between(None);
            let link = self.links.get_mut(&link_id).expect("listed above");
            link.cut = true;
            let open = link.state == LinkState::Open;
            let closed = [link.ends[0].closed, link.ends[1].closed];
            for (to, closed) in closed.into_iter().enumerate() {
                if open && !closed {
                    self.schedule(self.now + latency, EventKind::Closed { link: link_id, to });
                }
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.log("heal".to_string());
        self.blocked.clear();
    }

    /// Whether two nodes are separated by a partition.
    pub fn is_blocked(&self, a: NodeId, b: NodeId) -> bool {
        self.blocked.contains(&pair(a, b))
    }

    /// Adds `seconds` to the latency of every packet to or from a node (0 removes it).
    pub fn delay(&mut self, id: NodeId, seconds: f64) {
        self.log(format!("delay {} by {seconds:.3}s", self.slots[id.0].name));
        self.slots[id.0].extra_delay = seconds;
    }

    /// Delivers an operator's stop request (SIGTERM) to a node.
    pub fn shutdown(&mut self, id: NodeId) {
        self.input(id, Input::Shutdown);
    }

    // --- Running ------------------------------------------------------------------------

    /// Processes events until `predicate` holds (checked before each event) or the clock
    /// would pass `max_seconds` from now; returns whether the predicate held.
    pub fn run_until(
        &mut self,
        mut predicate: impl FnMut(&World) -> bool,
        max_seconds: f64,
    ) -> bool {
        let end = self.now + max_seconds;
        loop {
            if predicate(self) {
                return true;
            }
            if !self.step(end) {
                return predicate(self);
            }
        }
    }

    /// Processes every event of the next `seconds`.
    pub fn run_for(&mut self, seconds: f64) {
        let end = self.now + seconds;
        while self.step(end) {}
    }

    /// Processes the next event if it is not after `end`; otherwise moves the clock to
    /// `end` and returns false.
    pub fn step(&mut self, end: Time) -> bool {
        match self.queue.peek() {
            Some(event) if event.at <= end => {}
            _ => {
                if self.now < end {
                    self.now = end;
                }
                return false;
            }
        }
        let event = self.queue.pop().expect("peeked");
        if event.at > self.now {
            self.now = event.at;
        }
        self.events_processed += 1;
        self.process(event.kind);
        self.check();
        true
    }

    /// Invariant violations seen so far (checkers, decoding errors, livelocks).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Restarts of the cluster from an older partition table (a NEO hazard, not a
    /// violation: see [`crate::check`]).
    pub fn stale_restarts(&self) -> &[String] {
        self.checker.stale_restarts()
    }

    /// Fails with the violations and the recent trace, if any.
    pub fn assert_no_violations(&self) {
        if !self.violations.is_empty() {
            panic!(
                "invariant violations:\n  {}\nlast events:\n  {}",
                self.violations.join("\n  "),
                self.trace.join("\n  ")
            );
        }
    }

    /// The last events (kills, starts, connections, packets), oldest first.
    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    /// How many trace lines to keep (default 200).
    pub fn set_trace_limit(&mut self, limit: usize) {
        self.trace_limit = limit;
    }

    /// Records a violation found by a test's own checks, with the current time.
    pub fn violation(&mut self, message: String) {
        let line = format!("t={:.4} {message}", self.elapsed());
        self.log(format!("VIOLATION {message}"));
        self.violations.push(line);
    }

    /// Lets a test act on a running node of type `T` as if it had received an input:
    /// `f` gets the node, the time and its outbox, and what it pushes is carried out.
    pub fn act<T: 'static, R>(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut T, Time, &mut Outbox) -> R,
    ) -> Option<R> {
        let now = self.now;
        let slot = &mut self.slots[id.0];
        let node = slot.node.as_mut()?.as_any_mut().downcast_mut::<T>()?;
        let result = f(node, now, &mut slot.outbox);
        self.after_handle(id);
        Some(result)
    }

    /// Gives one input to a running node (as the driver would), then handles its outputs.
    pub fn input(&mut self, id: NodeId, input: Input) {
        let slot = &mut self.slots[id.0];
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        node.handle(self.now, input, &mut slot.outbox);
        self.after_handle(id);
    }

    // --- Internals ----------------------------------------------------------------------

    fn log(&mut self, line: String) {
        if self.trace_limit == 0 {
            return;
        }
        if self.trace.len() >= self.trace_limit {
            self.trace.remove(0);
        }
        self.trace.push(format!("{:10.4} {line}", self.now - EPOCH));
    }

    fn schedule(&mut self, at: Time, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Event {
            at,
            seq: self.seq,
            kind,
        });
    }

    /// One drawn latency, plus the extra delay of the given nodes.
    fn latency_between(&mut self, nodes: Option<(NodeId, NodeId)>) -> f64 {
        let span = self.net.latency_max - self.net.latency_min;
        let mut latency = self.net.latency_min + span * self.rng.unit();
        if let Some((a, b)) = nodes {
            latency += self.slots[a.0].extra_delay + self.slots[b.0].extra_delay;
        }
        latency
    }

    fn alive(&self, end: &End) -> bool {
        let slot = &self.slots[end.node.0];
        slot.node.is_some() && slot.incarnation == end.incarnation
    }

    fn process(&mut self, kind: EventKind) {
        match kind {
            EventKind::Start { node, incarnation } => {
                if self.slots[node.0].incarnation == incarnation {
                    self.input(node, Input::Start);
                }
            }
            EventKind::Timer { node, incarnation } => self.fire_timer(node, incarnation),
            EventKind::Idle { node, incarnation } => {
                let slot = &mut self.slots[node.0];
                slot.idle_scheduled = false;
                // A restarted node may have work too: the incarnation does not matter.
                let _ = incarnation;
                if slot.node.as_ref().is_some_and(|n| n.wants_idle()) {
                    self.input(node, Input::Idle);
                }
            }
            EventKind::Establish { link } => self.establish(link),
            EventKind::ConnectFailed { link } => {
                let Some(l) = self.links.remove(&link) else {
                    return;
                };
                let end = l.ends[0];
                if self.alive(&end) && !end.closed {
                    if let Some(conn) = end.conn {
                        self.slots[end.node.0].conns.remove(&conn);
                        self.log(format!("{} connect {conn:x} failed", self.name(end.node)));
                        self.input(end.node, Input::ConnectFailed { conn });
                    }
                }
            }
            EventKind::Deliver { link, to, bytes } => self.deliver(link, to, bytes),
            EventKind::Closed { link, to } => {
                let Some(l) = self.links.get_mut(&link) else {
                    return;
                };
                let end = l.ends[to];
                if end.closed {
                    return;
                }
                l.ends[to].closed = true;
                let both = l.ends[1 - to].closed;
                if both {
                    self.links.remove(&link);
                }
                if self.alive(&end) {
                    if let Some(conn) = end.conn {
                        self.slots[end.node.0].conns.remove(&conn);
                        self.log(format!("{} closed {conn:x}", self.name(end.node)));
                        self.input(end.node, Input::Closed { conn });
                    }
                }
            }
        }
    }

    fn fire_timer(&mut self, id: NodeId, incarnation: u32) {
        let now = self.now;
        let slot = &mut self.slots[id.0];
        if slot.incarnation != incarnation || slot.timer_at.is_none_or(|t| t > now) {
            return;
        }
        slot.timer_at = None;
        let Some(node) = slot.node.as_ref() else {
            return;
        };
        if node.deadline().is_some_and(|d| d <= now) {
            if slot.timer_calls_at_now.0 == now {
                slot.timer_calls_at_now.1 += 1;
            } else {
                slot.timer_calls_at_now = (now, 1);
            }
            if slot.timer_calls_at_now.1 > TIMER_LIVELOCK {
                let name = slot.name.clone();
                self.violation(format!(
                    "{name}: deadline stays in the past (timer livelock)"
                ));
                return;
            }
            self.input(id, Input::Timer);
        } else {
            self.reschedule_timer(id);
        }
    }

    fn reschedule_timer(&mut self, id: NodeId) {
        let now = self.now;
        let slot = &mut self.slots[id.0];
        let Some(deadline) = slot.node.as_ref().and_then(|n| n.deadline()) else {
            return;
        };
        if slot.timer_calls_at_now.1 > TIMER_LIVELOCK && slot.timer_calls_at_now.0 == now {
            return;
        }
        let at = deadline.max(now);
        if slot.timer_at.is_some_and(|t| t <= at) {
            return; // an earlier timer event is queued; it reschedules when it fires
        }
        slot.timer_at = Some(at);
        let incarnation = slot.incarnation;
        self.schedule(
            at,
            EventKind::Timer {
                node: id,
                incarnation,
            },
        );
    }

    /// Carries out what a node just asked for.
    fn after_handle(&mut self, id: NodeId) {
        let outputs: Vec<Output> = self.slots[id.0].outbox.drain().collect();
        for output in outputs {
            if self.slots[id.0].node.is_none() {
                break; // it exited: later outputs are lost
            }
            match output {
                Output::Connect { conn, addr } => self.connect(id, conn, addr),
                Output::Send {
                    conn,
                    msg_id,
                    packet,
                } => self.send(id, conn, msg_id, packet),
                Output::Close { conn } => self.close(id, conn),
                Output::Exit { code, reason } => {
                    let name = self.slots[id.0].name.clone();
                    self.log(format!("{name} exits {code}: {reason}"));
                    self.take_down(id, Status::Exited { code, reason });
                }
            }
        }
        self.reschedule_timer(id);
        let slot = &mut self.slots[id.0];
        if !slot.idle_scheduled && slot.node.as_ref().is_some_and(|n| n.wants_idle()) {
            slot.idle_scheduled = true;
            let incarnation = slot.incarnation;
            let at = self.now + IDLE_DELAY;
            self.schedule(
                at,
                EventKind::Idle {
                    node: id,
                    incarnation,
                },
            );
        }
    }

    fn connect(&mut self, id: NodeId, conn: ConnId, addr: Address) {
        let link_id = self.next_link;
        self.next_link += 1;
        let incarnation = self.slots[id.0].incarnation;
        let target = self
            .slots
            .iter()
            .position(|s| s.address == addr)
            .map(NodeId);
        self.slots[id.0].conns.insert(conn, link_id);
        let end = |node, incarnation, conn| End {
            node,
            incarnation,
            conn,
            closed: false,
        };
        let peer = target.unwrap_or(id);
        let peer_incarnation = self.slots[peer.0].incarnation;
        self.links.insert(
            link_id,
            Link {
                ends: [
                    end(id, incarnation, Some(conn)),
                    end(peer, peer_incarnation, None),
                ],
                state: LinkState::Connecting,
                pending: Vec::new(),
                last_arrival: [self.now; 2],
                cut: false,
            },
        );
        let name = self.slots[id.0].name.clone();
        match target {
            Some(target) if self.slots[target.0].node.is_some() && !self.is_blocked(id, target) => {
                let latency = self.latency_between(Some((id, target)));
                self.log(format!("{name} connects {conn:x} to {}", self.name(target)));
                self.schedule(self.now + latency, EventKind::Establish { link: link_id });
            }
            _ => {
                let latency = self.latency_between(None);
                self.log(format!("{name} connects {conn:x} to {addr}: refused"));
                self.schedule(
                    self.now + latency,
                    EventKind::ConnectFailed { link: link_id },
                );
            }
        }
    }

    fn establish(&mut self, link_id: u64) {
        let Some(link) = self.links.get(&link_id) else {
            return;
        };
        let [initiator, target] = link.ends;
        if initiator.closed || !self.alive(&initiator) {
            self.links.remove(&link_id);
            return;
        }
        let target_slot = &self.slots[target.node.0];
        if target_slot.node.is_none() || link.cut || self.is_blocked(initiator.node, target.node) {
            self.schedule(self.now, EventKind::ConnectFailed { link: link_id });
            return;
        }
        // The target may have restarted since the connect: it is the new one that accepts.
        let target_incarnation = target_slot.incarnation;
        let slot = &mut self.slots[target.node.0];
        let accepted = slot.next_accept;
        slot.next_accept += 1;
        slot.conns.insert(accepted, link_id);
        let link = self.links.get_mut(&link_id).expect("checked above");
        link.state = LinkState::Open;
        link.ends[1].incarnation = target_incarnation;
        link.ends[1].conn = Some(accepted);
        let pending = std::mem::take(&mut link.pending);
        let peer = socket_addr(&self.slots[initiator.node.0].address);
        self.log(format!(
            "{} accepts {accepted:x} from {}",
            self.name(target.node),
            self.name(initiator.node)
        ));
        self.input(
            target.node,
            Input::Accepted {
                conn: accepted,
                peer,
            },
        );
        if let Some(conn) = initiator.conn {
            if self.links.get(&link_id).is_some_and(|l| !l.ends[0].closed) {
                self.input(initiator.node, Input::Connected { conn });
            }
        }
        for bytes in pending {
            self.transmit(link_id, 0, bytes);
        }
    }

    fn send(&mut self, id: NodeId, conn: ConnId, msg_id: u32, packet: Packet) {
        let Some(&link_id) = self.slots[id.0].conns.get(&conn) else {
            let name = self.slots[id.0].name.clone();
            self.log(format!(
                "{name} sends {} on unknown connection {conn:x} (dropped)",
                packet.name()
            ));
            return;
        };
        let Some(link) = self.links.get(&link_id) else {
            return;
        };
        let side = if link.ends[0].node == id && link.ends[0].conn == Some(conn) {
            0
        } else {
            1
        };
        let to = link.ends[1 - side].node;
        let before = self.violations.len();
        self.checker.on_send(
            &Sent {
                from: id,
                to,
                link: link_id,
                msg_id,
                packet: &packet,
            },
            &view(&self.slots),
            &mut self.violations,
            self.now - EPOCH,
        );
        self.log_new_violations(before);
        if self.trace_limit > 0 {
            let what = if self.verbose {
                format!("{packet:?}")
            } else {
                packet.name().to_string()
            };
            self.log(format!(
                "{} -> {} #{msg_id} {what}",
                self.name(id),
                self.name(to)
            ));
        }
        let mut bytes = Vec::new();
        neo_protocol::encode_message(&mut bytes, msg_id, &packet);
        let link = self.links.get_mut(&link_id).expect("found above");
        if link.state == LinkState::Connecting {
            link.pending.push(bytes);
        } else {
            self.transmit(link_id, side, bytes);
        }
    }

    /// Queues bytes from end `side` to the other end, after what is already in flight.
    fn transmit(&mut self, link_id: u64, side: usize, bytes: Vec<u8>) {
        let Some(link) = self.links.get(&link_id) else {
            return;
        };
        let nodes = (link.ends[0].node, link.ends[1].node);
        let latency = self.latency_between(Some(nodes));
        let link = self.links.get_mut(&link_id).expect("found above");
        let at = (self.now + latency).max(link.last_arrival[side]);
        link.last_arrival[side] = at;
        self.schedule(
            at,
            EventKind::Deliver {
                link: link_id,
                to: 1 - side,
                bytes,
            },
        );
    }

    fn deliver(&mut self, link_id: u64, to: usize, bytes: Vec<u8>) {
        let Some(link) = self.links.get(&link_id) else {
            return;
        };
        let end = link.ends[to];
        if link.cut || end.closed || !self.alive(&end) {
            return;
        }
        let Some(conn) = end.conn else {
            return;
        };
        let message = match neo_protocol::decode_message(&Bytes::from(bytes)) {
            Ok(message) => message,
            Err(e) => {
                let name = self.slots[end.node.0].name.clone();
                self.violation(format!("{name}: packet on {conn:x} does not decode: {e}"));
                return;
            }
        };
        let (msg_id, packet) = (message.msg_id, message.packet);
        let input = Input::received(conn, msg_id, packet);
        self.input(end.node, input);
    }

    fn close(&mut self, id: NodeId, conn: ConnId) {
        let Some(link_id) = self.slots[id.0].conns.remove(&conn) else {
            return;
        };
        let Some(link) = self.links.get_mut(&link_id) else {
            return;
        };
        let side = if link.ends[0].node == id && link.ends[0].conn == Some(conn) {
            0
        } else {
            1
        };
        link.ends[side].closed = true;
        let other = link.ends[1 - side];
        let state = link.state;
        let last = link.last_arrival[side];
        let name = self.slots[id.0].name.clone();
        self.log(format!("{name} closes {conn:x}"));
        if other.closed {
            self.links.remove(&link_id);
        } else if state == LinkState::Open {
            let latency = self.latency_between(Some((id, other.node)));
            let at = (self.now + latency).max(last);
            self.schedule(
                at,
                EventKind::Closed {
                    link: link_id,
                    to: 1 - side,
                },
            );
        }
    }

    /// A node stops (killed or exited): drop its instance and connections.
    fn take_down(&mut self, id: NodeId, status: Status) {
        let slot = &mut self.slots[id.0];
        slot.node = None;
        slot.status = status;
        slot.timer_at = None;
        slot.outbox = Outbox::new();
        let conns: Vec<(ConnId, u64)> = std::mem::take(&mut slot.conns).into_iter().collect();
        for (_, link_id) in conns {
            self.orphan_link(id, link_id);
        }
        // Connections still being accepted by this node die with it too.
        let accepting: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.state == LinkState::Connecting && l.ends[1].node == id)
            .map(|(k, _)| *k)
            .collect();
        for link_id in accepting {
            self.schedule(self.now, EventKind::ConnectFailed { link: link_id });
        }
    }

    fn orphan_link(&mut self, id: NodeId, link_id: u64) {
        let Some(link) = self.links.get_mut(&link_id) else {
            return;
        };
        let side = if link.ends[0].node == id { 0 } else { 1 };
        link.ends[side].closed = true;
        let other = link.ends[1 - side];
        let state = link.state;
        let last = link.last_arrival[side];
        if other.closed {
            self.links.remove(&link_id);
        } else if state == LinkState::Open {
            let latency = self.latency_between(Some((id, other.node)));
            let at = (self.now + latency).max(last);
            self.schedule(
                at,
                EventKind::Closed {
                    link: link_id,
                    to: 1 - side,
                },
            );
        } else {
            // The initiator died while connecting: the target never hears of it.
            self.links.remove(&link_id);
        }
    }

    fn check(&mut self) {
        let now = self.now - EPOCH;
        let blocked = &self.blocked;
        let before = self.violations.len();
        self.checker.after_event(
            &view(&self.slots),
            &|a, b| blocked.contains(&pair(a, b)),
            &mut self.violations,
            now,
        );
        self.log_new_violations(before);
    }

    fn log_new_violations(&mut self, before: usize) {
        if self.violations.len() > before {
            let new: Vec<String> = self.violations[before..].to_vec();
            for v in new {
                self.log(format!("VIOLATION {v}"));
            }
        }
    }
}

/// Each node with its running instance, for the checkers.
fn view(slots: &[Slot]) -> Vec<(NodeId, Option<&dyn SimNode>)> {
    slots
        .iter()
        .enumerate()
        .map(|(i, s)| (NodeId(i), s.node.as_deref()))
        .collect()
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a < b {
        (a, b)
    } else {
        (b, a)
    }
}

/// 127.0.0.1 with a distinct fake port per node: the address of the node added
/// `index`-th.
pub fn address_of(index: usize) -> Address {
    Address {
        host: Bytes::from_static(b"127.0.0.1"),
        port: FIRST_PORT + index as u16,
    }
}

fn socket_addr(address: &Address) -> SocketAddr {
    address.to_socket_addr().unwrap_or(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        address.port,
    ))
}
