//! The client cache of object revisions (tools.md 7.5): NEO's multi-queue algorithm,
//! bounded by the bytes of uncompressed data it holds, with hit and miss counters.
//!
//! Each cached revision is valid over `[serial, next_serial)`; `next_serial == None` means
//! "current as far as the client knows". Revisions live in one of several FIFO queues:
//! queue 0 is the history (revisions whose data was dropped but whose access counter is
//! kept, so that a re-load promotes them quickly), queues 1.. hold data, a revision
//! accessed `n` times going to queue `1 + floor(log2(n))`. Every access advances a logical
//! clock and ages at most one revision whose stay in its queue expired.
//!
//! Queues are ordered maps keyed by a sequence number taken when a revision is appended,
//! so that the head is the first key and unlinking is a removal by key. An OID's revisions
//! are kept sorted by serial with their serials beside them, so that finding, adding and
//! removing one is a binary search however many revisions an often-committed object has.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use neo_protocol::{Bytes, Oid, Tid};

/// Accesses a revision stays in its queue before aging (NEO/py's default).
pub const LIFE_TIME: u64 = 10_000;
/// Revisions kept in the history queue at most (NEO/py's default).
pub const MAX_HISTORY_SIZE: usize = 100_000;

/// A revision served from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRevision {
    pub data: Bytes,
    pub serial: Tid,
    pub next_serial: Option<Tid>,
}

/// What [`Cache::stats`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Bytes of data held.
    pub size: usize,
    pub max_size: usize,
    /// OIDs with at least one revision (history included).
    pub oids: usize,
    /// The logical clock.
    pub time: u64,
    /// Length of the history queue, then of each regular queue.
    pub queue_lengths: Vec<usize>,
}

type EntryId = u64;

/// Hashes the integer keys of the cache's maps (entry ids, OIDs) with one multiplication:
/// they come from counters, not from peers, so they need no protection against flooding.
#[derive(Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        // The high bits of the product select hashbrown's buckets and tags; fold them down.
        let product = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = product ^ (product >> 29);
    }
}

type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

#[derive(Debug)]
struct Entry {
    oid: Oid,
    serial: Tid,
    next_serial: Option<Tid>,
    /// None while in the history queue (or not yet filled).
    data: Option<Bytes>,
    counter: u64,
    /// (queue index, sequence number in that queue) while queued.
    place: Option<(usize, u64)>,
    expire: u64,
}

/// The multi-queue cache. Not thread-safe by itself: the client core owns it.
#[derive(Debug)]
pub struct Cache {
    max_size: usize,
    life_time: u64,
    max_history_size: usize,
    entries: IntMap<EntryId, Entry>,
    next_entry: EntryId,
    /// Per OID, its revisions (serial, entry) sorted by serial, oldest first.
    by_oid: IntMap<Oid, VecDeque<(Tid, EntryId)>>,
    /// queues[0] is the history; sequence number → entry.
    queues: Vec<BTreeMap<u64, EntryId>>,
    next_seq: u64,
    time: u64,
    size: usize,
    hits: u64,
    misses: u64,
}

impl Cache {
    pub fn new(max_size: usize) -> Cache {
        Cache::with_parameters(max_size, LIFE_TIME, MAX_HISTORY_SIZE)
    }

    pub fn with_parameters(max_size: usize, life_time: u64, max_history_size: usize) -> Cache {
        Cache {
            max_size,
            life_time,
            max_history_size,
            entries: IntMap::default(),
            next_entry: 0,
            by_oid: IntMap::default(),
            queues: vec![BTreeMap::new()],
            next_seq: 0,
            time: 0,
            size: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// The revision valid just before `before` (or the current one without `before`), if
    /// the cache holds its data. Counts a hit or a miss.
    pub fn load(&mut self, oid: Oid, before: Option<Tid>) -> Option<CachedRevision> {
        let found = self
            .find(oid, before)
            .filter(|id| self.entries.get(id).is_some_and(|e| e.data.is_some()));
        match found {
            Some(id) => {
                self.hits += 1;
                self.access(id);
                let entry = self.entries.get(&id)?;
                Some(CachedRevision {
                    data: entry.data.clone()?,
                    serial: entry.serial,
                    next_serial: entry.next_serial,
                })
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// The exact revision `serial`, if cached with data.
    pub fn load_serial(&mut self, oid: Oid, serial: Tid) -> Option<CachedRevision> {
        // The smallest key above `serial` finds the revision starting at `serial` if any.
        let revision = self.load(oid, Some(Tid(serial.0.checked_add(1)?)))?;
        (revision.serial == serial).then_some(revision)
    }

    /// Caches a revision. Data as large as the capacity is not cached.
    pub fn store(&mut self, oid: Oid, data: Bytes, serial: Tid, next_serial: Option<Tid>) {
        if data.len() >= self.max_size {
            return;
        }
        let id = match self.find(oid, next_serial) {
            Some(id) => {
                let Some(entry) = self.entries.get_mut(&id) else {
                    return;
                };
                if entry.serial != serial {
                    // The caller's view disagrees with the cache; the cache is only a hint,
                    // so forget what it had rather than serve a wrong revision.
                    tracing::warn!(%oid, %serial, cached = %entry.serial, "cache: inconsistent store");
                    self.forget(id);
                    return self.store(oid, data, serial, next_serial);
                }
                if entry.data.is_some() {
                    return;
                }
                entry.next_serial = next_serial;
                id
            }
            None => self.insert(oid, serial, next_serial),
        };
        let size = data.len();
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.data = Some(data);
        }
        self.size += size;
        self.access(id);
        if self.size > self.max_size {
            self.evict();
        }
    }

    /// Closes the current revision of `oid` at `tid` (a newer revision was committed).
    pub fn invalidate(&mut self, oid: Oid, tid: Tid) {
        let Some(&(_, id)) = self.by_oid.get(&oid).and_then(|ids| ids.back()) else {
            return;
        };
        if let Some(entry) = self.entries.get_mut(&id) {
            if entry.next_serial.is_none() {
                entry.next_serial = Some(tid);
            }
        }
    }

    /// Drops every revision believed current: after a reconnection nobody knows.
    pub fn clear_current(&mut self) {
        let current: Vec<EntryId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.next_serial.is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in current {
            self.forget(id);
        }
    }

    /// Forgets everything, statistics included.
    pub fn clear(&mut self) {
        *self = Cache::with_parameters(self.max_size, self.life_time, self.max_history_size);
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            size: self.size,
            max_size: self.max_size,
            oids: self.by_oid.len(),
            time: self.time,
            queue_lengths: self.queues.iter().map(BTreeMap::len).collect(),
        }
    }

    /// Bytes of data held.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The lookup of tools.md 7.5, without counting.
    fn find(&self, oid: Oid, before: Option<Tid>) -> Option<EntryId> {
        let ids = self.by_oid.get(&oid)?;
        match before {
            None => {
                let &(_, id) = ids.back()?;
                self.entries
                    .get(&id)
                    .filter(|e| e.next_serial.is_none())
                    .map(|_| id)
            }
            Some(before) => {
                // The newest revision older than `before`.
                let index = ids.partition_point(|&(serial, _)| serial < before);
                let &(_, id) = ids.get(index.checked_sub(1)?)?;
                let entry = self.entries.get(&id)?;
                // A revision closed before `before` leaves a gap we know nothing of.
                match entry.next_serial {
                    Some(next) if next < before => None,
                    _ => Some(id),
                }
            }
        }
    }

    /// Adds an empty revision in its place in the OID's list.
    fn insert(&mut self, oid: Oid, serial: Tid, next_serial: Option<Tid>) -> EntryId {
        let id = self.next_entry;
        self.next_entry += 1;
        let mut entry = Entry {
            oid,
            serial,
            next_serial,
            data: None,
            counter: 0,
            place: None,
            expire: 0,
        };
        let mut replaced = None;
        if next_serial.is_none() {
            // A new current revision inherits the popularity of the previous one.
            let previous = self
                .by_oid
                .get(&oid)
                .and_then(|ids| ids.back())
                .map(|&(_, id)| id);
            if let Some(previous) = previous {
                if let Some(prev) = self.entries.get_mut(&previous) {
                    entry.counter = prev.counter;
                    let level = prev.place.map(|p| p.0);
                    if prev.data.is_some() {
                        prev.counter = 0;
                        if level.is_some_and(|l| l > 1) {
                            self.access(previous);
                        }
                    } else {
                        replaced = Some(previous);
                    }
                }
            }
        }
        self.entries.insert(id, entry);
        if let Some(previous) = replaced {
            self.forget(previous);
        }
        let list = self.by_oid.entry(oid).or_default();
        let position = list.partition_point(|&(other, _)| other <= serial);
        list.insert(position, (serial, id));
        id
    }

    /// Counts an access: the revision moves to the queue of its new counter, the clock
    /// advances, and one expired revision ages.
    fn access(&mut self, id: EntryId) {
        self.unlink(id);
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.counter += 1;
        let level = 1 + entry.counter.ilog2() as usize;
        self.link(id, level);
        self.time += 1;
        let time = self.time;
        let expired = (1..self.queues.len()).find_map(|level| {
            let (_, &head) = self.queues[level].first_key_value()?;
            (self.entries.get(&head)?.expire < time).then_some((level, head))
        });
        if let Some((level, head)) = expired {
            self.unlink(head);
            let counter = self.entries.get(&head).map_or(0, |e| e.counter);
            let lower = level - 1;
            if lower > 0 || counter > 0 {
                self.link(head, lower);
            } else {
                self.forget(head);
            }
        }
    }

    /// Walks the regular queues from their heads until the size fits.
    fn evict(&mut self) {
        for level in 1..self.queues.len() {
            while let Some((_, &head)) = self.queues[level].first_key_value() {
                self.unlink(head);
                let counter = self.entries.get(&head).map_or(0, |e| e.counter);
                if counter > 0 {
                    self.link(head, 0);
                } else {
                    self.forget(head);
                }
                if self.size <= self.max_size {
                    return;
                }
            }
        }
    }

    /// Appends to a queue; the history drops the data and keeps its length bounded.
    fn link(&mut self, id: EntryId, level: usize) {
        while self.queues.len() <= level {
            self.queues.push(BTreeMap::new());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let expire = self.time + self.life_time;
        let mut freed = 0;
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.place = Some((level, seq));
            if level > 0 {
                entry.expire = expire;
            } else if let Some(data) = entry.data.take() {
                freed = data.len();
            }
        }
        self.size -= freed;
        self.queues[level].insert(seq, id);
        if level == 0 && self.queues[0].len() > self.max_history_size {
            if let Some((_, oldest)) = self.queues[0].pop_first() {
                if let Some(entry) = self.entries.get_mut(&oldest) {
                    entry.place = None;
                }
                self.forget(oldest);
            }
        }
    }

    fn unlink(&mut self, id: EntryId) {
        if let Some(entry) = self.entries.get_mut(&id) {
            if let Some((level, seq)) = entry.place.take() {
                self.queues[level].remove(&seq);
            }
        }
    }

    /// Removes a revision entirely.
    fn forget(&mut self, id: EntryId) {
        self.unlink(id);
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        if let Some(data) = &entry.data {
            self.size -= data.len();
        }
        if let Some(list) = self.by_oid.get_mut(&entry.oid) {
            // Several entries never share a serial, but look around it to be sure.
            let start = list.partition_point(|&(serial, _)| serial < entry.serial);
            let found = (start..list.len())
                .take_while(|&i| list[i].0 == entry.serial)
                .find(|&i| list[i].1 == id);
            match found {
                Some(index) => {
                    list.remove(index);
                }
                None => list.retain(|&(_, other)| other != id),
            }
            if list.is_empty() {
                self.by_oid.remove(&entry.oid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn revisions_and_intervals() {
        let mut cache = Cache::new(1000);
        cache.store(Oid(1), data(10), Tid(5), Some(Tid(8)));
        cache.store(Oid(1), data(11), Tid(8), None);
        assert_eq!(cache.load(Oid(1), None).map(|r| r.serial), Some(Tid(8)));
        assert_eq!(
            cache.load(Oid(1), Some(Tid(8))).map(|r| r.serial),
            Some(Tid(5))
        );
        assert_eq!(cache.load(Oid(1), Some(Tid(5))), None);
        assert_eq!(
            cache.load_serial(Oid(1), Tid(5)).map(|r| r.data.len()),
            Some(10)
        );
        cache.invalidate(Oid(1), Tid(9));
        assert_eq!(
            cache.load(Oid(1), None),
            None,
            "no current revision after invalidation"
        );
        assert_eq!(
            cache.load(Oid(1), Some(Tid(9))).map(|r| r.serial),
            Some(Tid(8))
        );
        // A gap: the revision before 12 is unknown (closed at 9).
        assert_eq!(cache.load(Oid(1), Some(Tid(12))), None);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (4, 3));
        assert_eq!(stats.size, 21);
    }

    #[test]
    fn clear_current_keeps_closed_revisions() {
        let mut cache = Cache::new(1000);
        cache.store(Oid(1), data(3), Tid(1), Some(Tid(2)));
        cache.store(Oid(1), data(4), Tid(2), None);
        cache.store(Oid(2), data(5), Tid(1), None);
        cache.clear_current();
        assert_eq!(cache.size(), 3);
        assert_eq!(cache.stats().oids, 1);
    }

    /// Random commits, invalidations, reads of old revisions and loads against a model of
    /// the history: whatever the cache returns must be the revision the history has there,
    /// and its size stays bounded, with many revisions of a few objects.
    #[test]
    fn agrees_with_the_history_under_many_revisions() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut cache = Cache::with_parameters(20_000, 500, 3_000);
        // Per OID, (serial, data) in commit order.
        let mut history: HashMap<Oid, Vec<(Tid, Bytes)>> = HashMap::new();
        let mut tid = 1u64;
        for _ in 0..20_000 {
            let oid = Oid(next(5));
            match next(4) {
                0 | 1 => {
                    tid += 1;
                    let data = Bytes::from(vec![tid as u8; 1 + next(60) as usize]);
                    cache.invalidate(oid, Tid(tid));
                    cache.store(oid, data.clone(), Tid(tid), None);
                    history.entry(oid).or_default().push((Tid(tid), data));
                }
                2 => {
                    // A read of an old revision, as a storage answers it.
                    let Some(revisions) = history.get(&oid) else {
                        continue;
                    };
                    let index = next(revisions.len() as u64) as usize;
                    let (serial, data) = revisions[index].clone();
                    let next_serial = revisions.get(index + 1).map(|r| r.0);
                    cache.store(oid, data, serial, next_serial);
                }
                _ => {
                    let before = Tid(1 + next(tid + 1));
                    let expected = history
                        .get(&oid)
                        .and_then(|r| r.iter().rev().find(|(serial, _)| *serial < before));
                    if let Some(found) = cache.load(oid, Some(before)) {
                        let (serial, data) = expected.expect("a revision the history lacks");
                        assert_eq!((found.serial, &found.data), (*serial, data));
                    }
                    let current = history.get(&oid).and_then(|r| r.last());
                    if let Some(found) = cache.load(oid, None) {
                        let (serial, data) = current.expect("a current revision unknown");
                        assert_eq!((found.serial, &found.data), (*serial, data));
                        assert_eq!(found.next_serial, None);
                    }
                }
            }
            assert!(cache.size() <= 20_000);
        }
        let stats = cache.stats();
        assert!(stats.hits > 1000, "{stats:?}");
        assert!(stats.queue_lengths[0] <= 3_000);
    }
}
