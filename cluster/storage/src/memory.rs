//! An in-memory [`Backend`] with the semantics of the SQLite one (cluster.md 7), for tests
//! and the simulator.
//!
//! What a crash keeps is modelled explicitly: the committed tables live in a
//! [`MemoryDisk`], a cloneable handle shared with whoever "owns the machine", while the
//! backend works on its own copy. [`Backend::commit`] copies the working tables onto the
//! disk; dropping a backend without committing loses its writes, so a storage killed and
//! restarted on the same disk sees exactly what was committed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use neo_protocol::{CellState, Nid, Oid, PackInfo, Tid};

use crate::backend::{
    Backend, BackendError, ObjectRecord, PtRow, Result, StoredData, TransactionRecord,
};

/// The "disk" of a memory backend: committed tables, shared between the backend using them
/// and the code that may restart a storage on them.
#[derive(Debug, Clone, Default)]
pub struct MemoryDisk(Rc<RefCell<Disk>>);

#[derive(Debug, Default)]
struct Disk {
    committed: Tables,
    /// Set while a backend has the disk open (the exclusive lock of 7.8).
    in_use: bool,
    /// Commits made on this disk, for tests of group commit.
    commits: u64,
}

impl MemoryDisk {
    pub fn new() -> MemoryDisk {
        MemoryDisk::default()
    }

    /// Whether a backend currently has this disk open.
    pub fn in_use(&self) -> bool {
        self.0.borrow().in_use
    }

    /// How many commits were made on this disk (each would be an fsync on a real one).
    pub fn commits(&self) -> u64 {
        self.0.borrow().commits
    }
}

/// One revision in `obj`/`tobj`. Data is kept inline (Bytes are shared, so reusing the data
/// of another revision, as undo does, costs no copy).
#[derive(Debug, Clone, PartialEq)]
struct ObjRow {
    data: Option<StoredData>,
    value_tid: Option<Tid>,
}

#[derive(Debug, Clone, Default)]
struct Tables {
    config: BTreeMap<String, String>,
    /// (partition, nid) → (raw tid column, pack column).
    pt: BTreeMap<(u32, i32), (i64, Option<Tid>)>,
    /// (partition, tid) → metadata (pack order included).
    trans: BTreeMap<(u32, Tid), TransactionRecord>,
    /// (partition, oid, tid), the primary key of `obj`.
    obj: BTreeMap<(u32, Oid, Tid), ObjRow>,
    /// (partition, tid, oid), the secondary index used by replication.
    obj_by_tid: BTreeSet<(u32, Tid, Oid)>,
    /// ttid → (metadata, final tid once locked).
    ttrans: BTreeMap<Tid, (TransactionRecord, Option<Tid>)>,
    /// (ttid, oid) → revision.
    tobj: BTreeMap<(Tid, Oid), ObjRow>,
}

impl Tables {
    /// Number of partitions: one more than the greatest partition of `pt` (7.3: the
    /// obsolete `partitions` key is not used).
    fn np(&self) -> u64 {
        self.pt
            .keys()
            .map(|(p, _)| *p as u64 + 1)
            .max()
            .unwrap_or(0)
    }

    fn partition(&self, id: u64) -> u32 {
        match self.np() {
            0 => 0,
            np => (id % np) as u32,
        }
    }

    fn insert_obj(&mut self, partition: u32, oid: Oid, tid: Tid, row: ObjRow) {
        self.obj.insert((partition, oid, tid), row);
        self.obj_by_tid.insert((partition, tid, oid));
    }

    fn remove_obj(&mut self, partition: u32, oid: Oid, tid: Tid) {
        self.obj.remove(&(partition, oid, tid));
        self.obj_by_tid.remove(&(partition, tid, oid));
    }

    fn last_trans_tid(&self, partition: u32) -> Option<Tid> {
        self.trans
            .range((partition, Tid(0))..=(partition, Tid(u64::MAX)))
            .next_back()
            .map(|((_, tid), _)| *tid)
    }

    fn last_obj_tid(&self, partition: u32) -> Option<Tid> {
        self.obj_by_tid
            .range((partition, Tid(0), Oid(0))..=(partition, Tid(u64::MAX), Oid(u64::MAX)))
            .next_back()
            .map(|(_, tid, _)| *tid)
    }

    fn obj_revisions(
        &self,
        partition: u32,
        oid: Oid,
    ) -> impl DoubleEndedIterator<Item = (&Tid, &ObjRow)> {
        self.obj
            .range((partition, oid, Tid(0))..=(partition, oid, Tid(u64::MAX)))
            .map(|((_, _, tid), row)| (tid, row))
    }
}

/// The in-memory backend.
#[derive(Debug)]
pub struct MemoryBackend {
    disk: MemoryDisk,
    work: Tables,
}

impl MemoryBackend {
    /// A backend on a fresh, empty disk.
    pub fn new() -> MemoryBackend {
        MemoryBackend::open(MemoryDisk::new()).expect("a new disk is not in use")
    }

    /// Opens a disk, seeing what was committed on it. Fails like a locked database if
    /// another backend has it open.
    pub fn open(disk: MemoryDisk) -> Result<MemoryBackend> {
        let work = {
            let mut inner = disk.0.borrow_mut();
            if inner.in_use {
                return Err(BackendError::Locked("memory disk already open".into()));
            }
            inner.in_use = true;
            inner.committed.clone()
        };
        Ok(MemoryBackend { disk, work })
    }

    /// The disk, to restart a storage on it after this backend is dropped.
    pub fn disk(&self) -> MemoryDisk {
        self.disk.clone()
    }
}

impl Default for MemoryBackend {
    fn default() -> MemoryBackend {
        MemoryBackend::new()
    }
}

impl Drop for MemoryBackend {
    fn drop(&mut self) {
        self.disk.0.borrow_mut().in_use = false;
    }
}

impl Backend for MemoryBackend {
    fn get_config(&self, key: &str) -> Result<Option<String>> {
        Ok(self.work.config.get(key).cloned())
    }

    fn set_config(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(value) => self.work.config.insert(key.to_owned(), value.to_owned()),
            None => self.work.config.remove(key),
        };
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let mut disk = self.disk.0.borrow_mut();
        disk.committed = self.work.clone();
        disk.commits += 1;
        Ok(())
    }

    fn erase(&mut self) -> Result<()> {
        self.work = Tables::default();
        Ok(())
    }

    fn set_nid(&mut self, nid: Nid) -> Result<()> {
        if let Some(old) = self.nid()? {
            if old != nid {
                let rows: Vec<_> = self
                    .work
                    .pt
                    .iter()
                    .filter(|((_, n), _)| *n == old.0)
                    .map(|(k, v)| (*k, *v))
                    .collect();
                for ((partition, _), value) in rows {
                    self.work.pt.remove(&(partition, old.0));
                    self.work.pt.insert((partition, nid.0), value);
                }
            }
        }
        self.set_config("nid", Some(&nid.0.to_string()))
    }

    fn pt_rows(&self) -> Result<Vec<PtRow>> {
        Ok(self
            .work
            .pt
            .iter()
            .map(|((partition, nid), (tid, pack))| PtRow {
                partition: *partition,
                nid: Nid(*nid),
                tid: *tid,
                pack: *pack,
            })
            .collect())
    }

    fn apply_pt_changes(
        &mut self,
        ptid: u64,
        replicas: u32,
        cells: &[(u32, Nid, CellState)],
        reset: bool,
        own: Nid,
    ) -> Result<()> {
        let backup_tid = self.backup_tid()?;
        let before = self.work.pt.clone();
        // np may grow here only on a first table; last TIDs are per partition anyway.
        let mut delete: BTreeSet<(u32, i32)> = if reset {
            before.keys().copied().collect()
        } else {
            BTreeSet::new()
        };
        for &(partition, nid, state) in cells {
            let key = (partition, nid.0);
            if state == CellState::Discarded {
                delete.insert(key);
                continue;
            }
            delete.remove(&key);
            let tid = if nid != own || state != CellState::OutOfDate {
                -(state as i64)
            } else {
                match before.get(&key).map(|(tid, _)| *tid) {
                    None => 0,
                    Some(tid) if tid >= 0 => tid,
                    Some(tid)
                        if tid == -(CellState::UpToDate as i64)
                            || tid == -(CellState::Feeding as i64) =>
                    {
                        match backup_tid {
                            Some(backup) if backup.0 != 0 => backup.0 as i64,
                            _ => {
                                let last = self
                                    .work
                                    .last_trans_tid(partition)
                                    .max(self.work.last_obj_tid(partition));
                                last.map_or(0, |t| t.0 as i64).max(0)
                            }
                        }
                    }
                    Some(_) => 0,
                }
            };
            match self.work.pt.get_mut(&key) {
                Some(row) => row.0 = tid,
                None => {
                    // 7.5: the pack column is set only on insertion; this backend does not
                    // know the node's last pack id, which stays ZERO until packing exists.
                    let pack = (nid == own).then_some(Tid(0));
                    self.work.pt.insert(key, (tid, pack));
                }
            }
        }
        for key in delete {
            self.work.pt.remove(&key);
        }
        self.set_config("ptid", Some(&ptid.to_string()))?;
        self.set_config("replicas", Some(&replicas.to_string()))
    }

    fn set_replication_progress(&mut self, partition: u32, own: Nid, tid: Tid) -> Result<()> {
        if let Some(row) = self.work.pt.get_mut(&(partition, own.0)) {
            if row.0 >= 0 {
                row.0 = tid.0.min(i64::MAX as u64) as i64;
            }
        }
        Ok(())
    }

    fn partition_last_tid(&self, partition: u32) -> Result<Option<Tid>> {
        Ok(self
            .work
            .last_trans_tid(partition)
            .max(self.work.last_obj_tid(partition)))
    }

    fn last_ids(&self, partitions: &[u32]) -> Result<(Option<Tid>, Option<Oid>, Tid)> {
        let mut last_tid = None;
        let mut last_oid = None;
        let mut first_tid = Tid::MAX;
        for &partition in partitions {
            last_tid = last_tid
                .max(self.work.last_obj_tid(partition))
                .max(self.work.last_trans_tid(partition));
            let max_oid = self
                .work
                .obj
                .range((partition, Oid(0), Tid(0))..=(partition, Oid(u64::MAX), Tid(u64::MAX)))
                .next_back()
                .map(|((_, oid, _), _)| *oid);
            last_oid = last_oid.max(max_oid);
            if let Some(((_, tid), _)) = self
                .work
                .trans
                .range((partition, Tid(0))..=(partition, Tid(u64::MAX)))
                .next()
            {
                first_tid = first_tid.min(*tid);
            }
        }
        Ok((last_tid, last_oid, first_tid))
    }

    fn locked_transactions(&self) -> Result<Vec<(Tid, Option<Tid>)>> {
        let mut found: BTreeMap<Tid, Option<Tid>> = self
            .work
            .ttrans
            .iter()
            .map(|(ttid, (_, tid))| (*ttid, *tid))
            .collect();
        for (ttid, _) in self.work.tobj.keys() {
            found.entry(*ttid).or_insert(None);
        }
        Ok(found.into_iter().collect())
    }

    fn final_tid(&self, ttid: Tid) -> Result<Option<Tid>> {
        let partition = self.work.partition(ttid.0);
        Ok(self
            .work
            .trans
            .range((partition, ttid)..=(partition, Tid(u64::MAX)))
            .find(|(_, record)| record.ttid == ttid)
            .map(|((_, tid), _)| *tid))
    }

    fn object(
        &self,
        oid: Oid,
        at: Option<Tid>,
        before: Option<Tid>,
    ) -> Result<Option<ObjectRecord>> {
        let partition = self.work.partition(oid.0);
        let revisions: Vec<(&Tid, &ObjRow)> = self.work.obj_revisions(partition, oid).collect();
        let index = match (at, before) {
            (Some(at), _) => revisions.iter().position(|(tid, _)| **tid == at),
            (None, Some(before)) => revisions.iter().rposition(|(tid, _)| **tid < before),
            (None, None) => revisions.len().checked_sub(1),
        };
        Ok(index.map(|i| {
            let (serial, row) = revisions[i];
            ObjectRecord {
                oid,
                serial: *serial,
                next_serial: revisions.get(i + 1).map(|(tid, _)| **tid),
                data: row.data.clone(),
                data_serial: row.value_tid,
            }
        }))
    }

    fn transaction(&self, tid: Tid, temporary: bool) -> Result<Option<TransactionRecord>> {
        let partition = self.work.partition(tid.0);
        if let Some(record) = self.work.trans.get(&(partition, tid)) {
            return Ok(Some(record.clone()));
        }
        if temporary {
            return Ok(self.work.ttrans.get(&tid).map(|(record, _)| record.clone()));
        }
        Ok(None)
    }

    fn object_history(&self, oid: Oid, first: u64, count: u64) -> Result<Vec<(Tid, u64)>> {
        let partition = self.work.partition(oid.0);
        Ok(self
            .work
            .obj_revisions(partition, oid)
            .rev()
            .skip(first.min(usize::MAX as u64) as usize)
            .take(count.min(usize::MAX as u64) as usize)
            .map(|(tid, row)| (*tid, row.data.as_ref().map_or(0, |d| d.value.len() as u64)))
            .collect())
    }

    fn tids_desc(&self, partitions: &[u32], first: u64, count: u64) -> Result<Vec<Tid>> {
        let mut tids: Vec<Tid> = partitions
            .iter()
            .flat_map(|&p| {
                self.work
                    .trans
                    .range((p, Tid(0))..=(p, Tid(u64::MAX)))
                    .map(|((_, tid), _)| *tid)
            })
            .collect();
        tids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(tids
            .into_iter()
            .skip(first.min(usize::MAX as u64) as usize)
            .take(count.min(usize::MAX as u64) as usize)
            .collect())
    }

    fn tids_range(&self, partition: u32, min: Tid, max: Tid, limit: usize) -> Result<Vec<Tid>> {
        if min > max {
            return Ok(Vec::new());
        }
        Ok(self
            .work
            .trans
            .range((partition, min)..=(partition, max))
            .take(limit)
            .map(|((_, tid), _)| *tid)
            .collect())
    }

    fn objects_range(
        &self,
        partition: u32,
        min: Tid,
        min_oid: Oid,
        max: Tid,
        limit: usize,
    ) -> Result<Vec<(Tid, Oid)>> {
        if min > max {
            return Ok(Vec::new());
        }
        Ok(self
            .work
            .obj_by_tid
            .range((partition, min, min_oid)..=(partition, max, Oid(u64::MAX)))
            .take(limit)
            .map(|(_, tid, oid)| (*tid, *oid))
            .collect())
    }

    fn store_transaction(&mut self, record: &TransactionRecord, temporary: bool) -> Result<()> {
        if temporary {
            self.work.ttrans.insert(record.ttid, (record.clone(), None));
        } else {
            let partition = self.work.partition(record.tid.0);
            self.work
                .trans
                .insert((partition, record.tid), record.clone());
        }
        Ok(())
    }

    fn store_object(
        &mut self,
        oid: Oid,
        serial: Tid,
        data: Option<&StoredData>,
        data_serial: Option<Tid>,
        temporary: bool,
    ) -> Result<()> {
        let partition = self.work.partition(oid.0);
        let data = match (data, data_serial) {
            (Some(data), _) => Some(data.clone()),
            (None, Some(data_serial)) => self
                .work
                .obj
                .get(&(partition, oid, data_serial))
                .and_then(|row| row.data.clone()),
            (None, None) => None,
        };
        let row = ObjRow {
            data,
            value_tid: data_serial,
        };
        if temporary {
            self.work.tobj.insert((serial, oid), row);
        } else {
            self.work.insert_obj(partition, oid, serial, row);
        }
        Ok(())
    }

    fn lock_transaction(&mut self, ttid: Tid, tid: Tid) -> Result<()> {
        // A storage holding only objects of the transaction has no `ttrans` row: like
        // the SQL UPDATE of the SQLite backend, that changes nothing (ValidateTransaction
        // replays lock+unlock on every node that voted).
        if let Some(entry) = self.work.ttrans.get_mut(&ttid) {
            entry.1 = Some(tid);
        }
        Ok(())
    }

    fn unlock_transaction(&mut self, ttid: Tid, tid: Tid) -> Result<()> {
        if let Some((mut record, _)) = self.work.ttrans.remove(&ttid) {
            record.tid = tid;
            record.ttid = ttid;
            let partition = self.work.partition(tid.0);
            self.work.trans.insert((partition, tid), record);
        }
        let rows: Vec<(Oid, ObjRow)> = self
            .work
            .tobj
            .range((ttid, Oid(0))..=(ttid, Oid(u64::MAX)))
            .map(|((_, oid), row)| (*oid, row.clone()))
            .collect();
        for (oid, row) in rows {
            self.work.tobj.remove(&(ttid, oid));
            let partition = self.work.partition(oid.0);
            self.work.insert_obj(partition, oid, tid, row);
        }
        Ok(())
    }

    fn abort_transaction(&mut self, ttid: Tid) -> Result<()> {
        self.work.ttrans.remove(&ttid);
        self.work.tobj.retain(|(row_ttid, _), _| *row_ttid != ttid);
        Ok(())
    }

    fn drop_unfinished(&mut self) -> Result<()> {
        self.work.ttrans.clear();
        self.work.tobj.clear();
        Ok(())
    }

    fn delete_transactions(&mut self, partition: u32, tids: &[Tid]) -> Result<()> {
        for tid in tids {
            self.work.trans.remove(&(partition, *tid));
        }
        Ok(())
    }

    fn delete_objects(&mut self, partition: u32, records: &[(Tid, Oid)]) -> Result<()> {
        for &(tid, oid) in records {
            self.work.remove_obj(partition, oid, tid);
        }
        Ok(())
    }

    fn drop_partitions(&mut self, partitions: &[u32]) -> Result<()> {
        let set: BTreeSet<u32> = partitions.iter().copied().collect();
        self.work.trans.retain(|(p, _), _| !set.contains(p));
        self.work.obj.retain(|(p, _, _), _| !set.contains(p));
        self.work.obj_by_tid.retain(|(p, _, _)| !set.contains(p));
        Ok(())
    }

    fn truncate(&mut self, partitions: &[u32], own: Nid, tid: Tid) -> Result<()> {
        for &partition in partitions {
            let doomed: Vec<(Tid, Oid)> = self
                .work
                .obj_by_tid
                .range((partition, Tid(tid.0.saturating_add(1)), Oid(0))..)
                .take_while(|(p, _, _)| *p == partition)
                .map(|(_, t, o)| (*t, *o))
                .filter(|(t, _)| *t > tid)
                .collect();
            for (t, o) in doomed {
                self.work.remove_obj(partition, o, t);
            }
            self.work
                .trans
                .retain(|(p, t), _| *p != partition || *t <= tid);
            if let Some(row) = self.work.pt.get_mut(&(partition, own.0)) {
                if row.0 > tid.0.min(i64::MAX as u64) as i64 {
                    row.0 = tid.0 as i64;
                }
            }
        }
        Ok(())
    }

    fn pack_orders(&self, partitions: &[u32], min: Tid) -> Result<Vec<(Tid, PackInfo)>> {
        let set: BTreeSet<u32> = partitions.iter().copied().collect();
        let mut orders: Vec<(Tid, PackInfo)> = self
            .work
            .trans
            .iter()
            .filter(|((p, tid), _)| set.contains(p) && *tid >= min)
            .filter_map(|((_, tid), record)| record.pack.clone().map(|pack| (*tid, pack)))
            .collect();
        orders.sort_by_key(|(tid, _)| *tid);
        Ok(orders)
    }

    fn sign_pack_orders(&mut self, approved: &[Tid], rejected: &[Tid]) -> Result<Vec<Tid>> {
        let mut found = Vec::new();
        let signed = approved
            .iter()
            .map(|id| (*id, true))
            .chain(rejected.iter().map(|id| (*id, false)));
        for (id, verdict) in signed {
            let partition = self.work.partition(id.0);
            // Until unlock, the order of a transaction is keyed by its TTID.
            let record = match self.work.trans.get_mut(&(partition, id)) {
                Some(record) => Some(record),
                None => self.work.ttrans.get_mut(&id).map(|(record, _)| record),
            };
            if let Some(pack) = record.and_then(|r| r.pack.as_mut()) {
                pack.approved = Some(verdict);
                found.push(id);
            }
        }
        Ok(found)
    }

    fn set_pack_progress(&mut self, partition: u32, own: Nid, pack_id: Tid) -> Result<()> {
        if let Some(row) = self.work.pt.get_mut(&(partition, own.0)) {
            row.1 = Some(pack_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_sees_only_committed_writes_and_the_disk_is_exclusive() {
        let disk = MemoryDisk::new();
        let mut backend = MemoryBackend::open(disk.clone()).unwrap();
        assert!(matches!(
            MemoryBackend::open(disk.clone()),
            Err(BackendError::Locked(_))
        ));
        backend.set_config("name", Some("kept")).unwrap();
        backend.commit().unwrap();
        backend.set_config("name", Some("lost")).unwrap();
        drop(backend);
        assert!(!disk.in_use());
        let backend = MemoryBackend::open(disk).unwrap();
        assert_eq!(backend.get_config("name").unwrap().as_deref(), Some("kept"));
    }
}
