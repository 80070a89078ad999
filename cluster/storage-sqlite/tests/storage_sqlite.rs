//! Integration tests of the SQLite backend: NEO/py's own files (tests/data, see its
//! README) open and read back as NEO/py wrote them; the schema we create is NEO/py's;
//! every trait method round-trips; the 7.5 partition-table rules, data sharing and
//! pruning, truncation, partition drops, migrations and exclusive use.
//!
//! The checks that run NEO/py itself are skipped unless `NEO_PY_DIR` (a neoppod checkout)
//! and `NEO_PY_PYTHON` (a Python able to import it) are set:
//! `NEO_PY_DIR=/tmp/neoppod NEO_PY_PYTHON=/tmp/neovenv/bin/python cargo test -p neo-storage-sqlite`.

use std::path::{Path, PathBuf};

use neo_protocol::{Bytes, CellState, Checksum, Nid, Oid, PackInfo, Tid};
use neo_storage::backend::{
    Backend, BackendError, ObjectRecord, PtRow, StoredData, TransactionRecord,
};
use neo_storage_sqlite::{OpenOptions, SqliteBackend};
use tempfile::TempDir;

const S1: Nid = Nid(1);
const S2: Nid = Nid(2);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A copy of a fixture in a fresh directory (opening a file may write to it).
fn copy_fixture(name: &str) -> (TempDir, String) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(name);
    std::fs::copy(fixture(name), &path).unwrap();
    (dir, path.to_str().unwrap().to_owned())
}

fn new_db() -> (TempDir, String) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db.sqlite").to_str().unwrap().to_owned();
    (dir, path)
}

fn open(path: &str) -> SqliteBackend {
    SqliteBackend::open(path, OpenOptions::default()).unwrap()
}

fn open_dedup(path: &str) -> SqliteBackend {
    SqliteBackend::open(
        path,
        OpenOptions {
            dedup: true,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// A second connection for looking at what was committed.
fn raw(path: &str) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn count(path: &str, sql: &str) -> i64 {
    raw(path).query_row(sql, [], |row| row.get(0)).unwrap()
}

/// The backend stores checksums as received and never recomputes them, so any function
/// of the bytes serves here.
fn checksum_of(value: &[u8]) -> Checksum {
    let mut sum = [0u8; 20];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, byte) in value.iter().enumerate() {
        h = (h ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        sum[i % 20] ^= (h >> 32) as u8;
    }
    sum[..8].copy_from_slice(&h.to_be_bytes());
    sum
}

fn data(value: &[u8]) -> StoredData {
    StoredData {
        compression: 0,
        checksum: checksum_of(value),
        value: Bytes::copy_from_slice(value),
    }
}

fn txn(tid: u64, ttid: u64, oids: &[u64]) -> TransactionRecord {
    TransactionRecord {
        tid: Tid(tid),
        ttid: Tid(ttid),
        oids: oids.iter().map(|&o| Oid(o)).collect(),
        user: Bytes::from_static(b"user"),
        description: Bytes::from(format!("txn {tid:x}")),
        extension: Bytes::new(),
        packed: false,
        pack: None,
    }
}

/// A partition table of `np` partitions, all UP_TO_DATE on `own` and, with `other`, on
/// a second node too.
fn make_pt(backend: &mut SqliteBackend, np: u32, own: Nid, other: Option<Nid>) {
    let mut cells = Vec::new();
    for partition in 0..np {
        cells.push((partition, own, CellState::UpToDate));
        if let Some(other) = other {
            cells.push((partition, other, CellState::UpToDate));
        }
    }
    backend.set_nid(own).unwrap();
    backend.apply_pt_changes(1, 0, &cells, true, own).unwrap();
    backend.commit().unwrap();
}

/// Commits a transaction through the temporary tables like a client commit does.
fn commit_txn(backend: &mut SqliteBackend, tid: u64, objects: &[(u64, Option<&[u8]>)]) {
    let oids: Vec<u64> = objects.iter().map(|(oid, _)| *oid).collect();
    backend
        .store_transaction(&txn(tid, tid, &oids), true)
        .unwrap();
    for (oid, value) in objects {
        let value = value.map(data);
        backend
            .store_object(Oid(*oid), Tid(tid), value.as_ref(), None, true)
            .unwrap();
    }
    backend.lock_transaction(Tid(tid), Tid(tid)).unwrap();
    backend.unlock_transaction(Tid(tid), Tid(tid)).unwrap();
    backend.commit().unwrap();
}

mod neopy_fixture {
    use super::*;

    // What fixture_client.py committed (tests/data/README.md).
    const T0: u64 = 0x040d2c6be7720e33; // initial database creation: oid 0
    const T1: u64 = 0x040d2c6be7788d54; // first: oids 0, 1
    const T2: u64 = 0x040d2c6be78110ec; // second: oids 1, 0, 2
    const T3: u64 = 0x040d2c6be78709dc; // third: oid 1
    const T4: u64 = 0x040d2c6be78fa812; // undo of third: oid 1 reuses T2's data
    const TTID1: u64 = 0x040d2c6be774e5cc;

    fn check_node(name: &str, own: Nid) {
        let (_dir, path) = copy_fixture(name);
        let backend = open(&path);
        assert_eq!(
            backend.get_config("name").unwrap().as_deref(),
            Some("fixture")
        );
        assert_eq!(backend.get_config("version").unwrap().as_deref(), Some("4"));
        assert_eq!(backend.nid().unwrap(), Some(own));
        assert_eq!(backend.ptid().unwrap(), Some(1));
        assert_eq!(backend.replicas().unwrap(), 1);
        assert_eq!(backend.truncate_tid().unwrap(), None);
        assert_eq!(backend.backup_tid().unwrap(), None);
        assert_eq!(backend.num_partitions(), 3);
        assert!(!backend.dedup().unwrap());
        let mut expected = Vec::new();
        for partition in 0..3 {
            for nid in [S1, S2] {
                expected.push(PtRow {
                    partition,
                    nid,
                    tid: -1,
                    pack: (nid == own).then_some(Tid(0)),
                });
            }
        }
        assert_eq!(backend.pt_rows().unwrap(), expected);
        assert!(backend
            .pt_rows()
            .unwrap()
            .iter()
            .all(|row| row.state() == CellState::UpToDate));

        assert_eq!(
            backend.last_ids(&[0, 1, 2]).unwrap(),
            (Some(Tid(T4)), Some(Oid(2)), Tid(T0))
        );
        // Partition 1 holds only oid 1 and transaction T3.
        assert_eq!(
            backend.last_ids(&[1]).unwrap(),
            (Some(Tid(T4)), Some(Oid(1)), Tid(T3))
        );
        assert_eq!(backend.partition_last_tid(2).unwrap(), Some(Tid(T4)));
        assert_eq!(backend.locked_transactions().unwrap(), vec![]);
        assert_eq!(backend.final_tid(Tid(TTID1)).unwrap(), Some(Tid(T1)));
        assert_eq!(backend.final_tid(Tid(T1)).unwrap(), None);

        let first = backend.transaction(Tid(T1), false).unwrap().unwrap();
        assert_eq!(
            first,
            TransactionRecord {
                tid: Tid(T1),
                ttid: Tid(TTID1),
                oids: vec![Oid(0), Oid(1)],
                user: Bytes::from_static(b"/ alice"),
                description: Bytes::from_static(b"first"),
                extension: Bytes::new(),
                packed: false,
                pack: None,
            }
        );
        let second = backend.transaction(Tid(T2), false).unwrap().unwrap();
        assert_eq!(second.oids, vec![Oid(1), Oid(0), Oid(2)]);
        assert_eq!(second.description, Bytes::from_static(b"second"));

        assert_eq!(
            backend.tids_desc(&[0, 1, 2], 0, 100).unwrap(),
            vec![Tid(T4), Tid(T3), Tid(T2), Tid(T1), Tid(T0)]
        );
        assert_eq!(
            backend.tids_desc(&[0, 1, 2], 1, 2).unwrap(),
            vec![Tid(T3), Tid(T2)]
        );
        assert_eq!(
            backend.tids_range(0, Tid(0), Tid::MAX, 10).unwrap(),
            vec![Tid(T1), Tid(T2)]
        );

        // The undo record reuses the data row of T2 and points at it.
        let current = backend.object(Oid(1), None, None).unwrap().unwrap();
        let at_t2 = backend
            .object(Oid(1), Some(Tid(T2)), None)
            .unwrap()
            .unwrap();
        assert_eq!(current.serial, Tid(T4));
        assert_eq!(current.next_serial, None);
        assert_eq!(current.data_serial, Some(Tid(T2)));
        assert_eq!(current.data, at_t2.data);
        assert_eq!(at_t2.next_serial, Some(Tid(T3)));
        assert_eq!(at_t2.data_serial, None);
        let stored = at_t2.data.unwrap();
        assert_eq!(stored.compression, 1);
        assert_eq!(stored.value.len(), 69);
        assert_eq!(
            hex(&stored.checksum),
            "0a7c6564aacf35b84c8f4e847719ed96cf85d762"
        );
        let before_t3 = backend
            .object(Oid(1), None, Some(Tid(T3)))
            .unwrap()
            .unwrap();
        assert_eq!(before_t3.serial, Tid(T2));
        assert_eq!(backend.object(Oid(1), Some(Tid(T0)), None).unwrap(), None);
        assert_eq!(backend.object(Oid(7), None, None).unwrap(), None);
        assert_eq!(
            backend.object_history(Oid(1), 0, 10).unwrap(),
            vec![(Tid(T4), 69), (Tid(T3), 69), (Tid(T2), 69), (Tid(T1), 69)]
        );
        assert_eq!(
            backend
                .objects_range(1, Tid(0), Oid(0), Tid::MAX, 100)
                .unwrap(),
            vec![
                (Tid(T1), Oid(1)),
                (Tid(T2), Oid(1)),
                (Tid(T3), Oid(1)),
                (Tid(T4), Oid(1))
            ]
        );
        backend.close().unwrap();
    }

    #[test]
    fn storage_s1_reads_back() {
        check_node("neopy-s1.sqlite", S1);
    }

    #[test]
    fn storage_s2_reads_back() {
        check_node("neopy-s2.sqlite", S2);
    }

    /// neopy-locked.sqlite: NEO/py killed after locking the undo transaction and before
    /// committing its unlock.
    #[test]
    fn locked_transaction_is_rebuilt_and_finished() {
        const T2: u64 = 0x040d2c727ebe4500; // second: oid 1's data row (1 << 48) + 1
        const TTID: u64 = 0x040d2c727eca5baa;
        const TID: u64 = 0x040d2c727ece7ece;
        let (_dir, path) = copy_fixture("neopy-locked.sqlite");
        let mut backend = open(&path);
        assert_eq!(
            backend.locked_transactions().unwrap(),
            vec![(Tid(TTID), Some(Tid(TID)))]
        );
        assert_eq!(backend.uncommitted_references((1 << 48) + 1), 1);
        let voted = backend.transaction(Tid(TTID), true).unwrap().unwrap();
        assert_eq!((voted.tid, voted.ttid), (Tid(TID), Tid(TTID)));
        assert_eq!(voted.description, Bytes::from_static(b"undo third"));
        assert_eq!(voted.oids, vec![Oid(1)]);
        assert_eq!(backend.transaction(Tid(TID), false).unwrap(), None);
        let undone = backend
            .object(Oid(1), Some(Tid(T2)), None)
            .unwrap()
            .unwrap()
            .data;
        // The reference held by tobj keeps the data row when its last obj user goes.
        backend.delete_objects(1, &[(Tid(T2), Oid(1))]).unwrap();
        backend.commit().unwrap();
        assert_eq!(
            count(
                &path,
                &format!("SELECT count(*) FROM data WHERE id={}", (1i64 << 48) + 1)
            ),
            1
        );
        backend.unlock_transaction(Tid(TTID), Tid(TID)).unwrap();
        backend.commit().unwrap();
        assert_eq!(backend.locked_transactions().unwrap(), vec![]);
        assert_eq!(backend.uncommitted_references((1 << 48) + 1), 0);
        assert_eq!(backend.final_tid(Tid(TTID)).unwrap(), Some(Tid(TID)));
        assert_eq!(backend.last_ids(&[0, 1, 2]).unwrap().0, Some(Tid(TID)));
        let current = backend.object(Oid(1), None, None).unwrap().unwrap();
        assert_eq!(current.serial, Tid(TID));
        assert_eq!(current.data_serial, Some(Tid(T2)));
        assert_eq!(current.data, undone);
    }

    #[test]
    fn new_data_ids_continue_after_neopy_ones() {
        let (_dir, path) = copy_fixture("neopy-s1.sqlite");
        let mut backend = open(&path);
        // oid 4 is in partition 1, whose last data id is (1 << 48) + 2.
        let tid = T4 + 3;
        commit_txn(&mut backend, tid, &[(4, Some(b"new"))]);
        let id: i64 = raw(&path)
            .query_row("SELECT data_id FROM obj WHERE oid=4", [], |r| r.get(0))
            .unwrap();
        assert_eq!(id, (1 << 48) + 3);
    }
}

mod schema {
    use super::*;

    /// `sqlite_master` without formatting: comments dropped, blanks and quotes removed.
    fn normalised_schema(path: &str) -> Vec<(String, String, String)> {
        let conn = raw(path);
        let mut statement = conn
            .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
            .unwrap();
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .unwrap();
        rows.map(|row| {
            let (kind, name, sql) = row.unwrap();
            let text: String = sql
                .lines()
                .map(|line| line.split("--").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(" ");
            let compact: String = text
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '"')
                .collect();
            (kind, name, compact.to_ascii_lowercase())
        })
        .collect()
    }

    /// Column name, declared type, NOT NULL and key position.
    type Column = (String, String, bool, i64);

    /// The columns of every table.
    fn columns(path: &str) -> Vec<(String, Vec<Column>)> {
        let conn = raw(path);
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        tables
            .into_iter()
            .map(|table| {
                let columns = conn
                    .prepare(&format!("PRAGMA table_xinfo({table})"))
                    .unwrap()
                    .query_map([], |row| {
                        Ok((row.get(1)?, row.get(2)?, row.get(3)?, row.get(5)?))
                    })
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                (table, columns)
            })
            .collect()
    }

    #[test]
    fn fresh_schema_equals_neopy() {
        let (_dir, path) = new_db();
        open(&path).close().unwrap();
        let (_fixture_dir, neopy) = copy_fixture("neopy-s1.sqlite");
        assert_eq!(normalised_schema(&path), normalised_schema(&neopy));
        assert_eq!(columns(&path), columns(&neopy));
        let conn = raw(&path);
        let version: String = conn
            .query_row("SELECT value FROM config WHERE name='version'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(version, "4");
    }

    #[test]
    fn dedup_index() {
        let (_dir, path) = new_db();
        let backend = open_dedup(&path);
        assert!(backend.dedup().unwrap());
        backend.close().unwrap();
        let indexes: Vec<(String, String, String)> = normalised_schema(&path)
            .into_iter()
            .filter(|(kind, _, _)| kind == "index")
            .collect();
        assert_eq!(
            indexes,
            vec![
                (
                    "index".into(),
                    "_data_i1".into(),
                    "createuniqueindex_data_i1ondata(hash,compression)".into()
                ),
                (
                    "index".into(),
                    "_obj_i1".into(),
                    "createindex_obj_i1onobj(partition,tid,oid)".into()
                ),
                (
                    "index".into(),
                    "_obj_i2".into(),
                    "createindex_obj_i2onobj(data_id)".into()
                ),
            ]
        );
        // Reopening without --dedup keeps it: the index decides.
        let backend = open(&path);
        assert!(backend.dedup().unwrap());
    }

    #[test]
    fn newer_version_is_refused() {
        let (_dir, path) = new_db();
        open(&path).close().unwrap();
        raw(&path)
            .execute("UPDATE config SET value='5' WHERE name='version'", [])
            .unwrap();
        match SqliteBackend::open(&path, OpenOptions::default()) {
            Err(BackendError::SchemaTooNew {
                found: 5,
                supported: 4,
            }) => {}
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn reset_erases() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 2, S1, None);
        commit_txn(&mut backend, 10, &[(1, Some(b"x"))]);
        backend.close().unwrap();
        let backend = SqliteBackend::open(
            &path,
            OpenOptions {
                reset: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        assert_eq!(backend.pt_rows().unwrap(), vec![]);
        assert_eq!(backend.nid().unwrap(), None);
        assert_eq!(count(&path, "SELECT count(*) FROM obj"), 0);
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 0);
        assert_eq!(count(&path, "SELECT count(*) FROM config"), 1);
    }

    #[test]
    fn erase_empties_every_table() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 2, S1, None);
        commit_txn(&mut backend, 10, &[(1, Some(b"x"))]);
        backend.set_config("name", Some("c")).unwrap();
        backend.erase().unwrap();
        assert_eq!(backend.get_config("version").unwrap().as_deref(), Some("4"));
        assert_eq!(backend.get_config("name").unwrap(), None);
        assert_eq!(backend.num_partitions(), 0);
        for table in ["pt", "trans", "obj", "data", "ttrans", "tobj", "pack"] {
            assert_eq!(
                count(&path, &format!("SELECT count(*) FROM {table}")),
                0,
                "{table}"
            );
        }
        // Without a partition table, partition-based calls are refused, not guessed.
        assert!(backend.object(Oid(1), None, None).is_err());
    }
}

mod migration {
    use super::*;

    /// A database as NEO/py left it at `version`, built from the old DDL: `pt` in the
    /// version-2 form `(rid, nid, state)` or the version-3 form `(partition, nid, tid)`.
    pub(super) fn old_db(path: &str, version: u32, unfinished: bool) {
        let conn = raw(path);
        conn.execute_batch(
            "CREATE TABLE config (name TEXT NOT NULL PRIMARY KEY, value TEXT) WITHOUT ROWID;
             INSERT INTO config VALUES ('nid', '1'), ('ptid', '9'), ('replicas', '1'),
                                       ('partitions', '2'), ('name', 'old');
             CREATE TABLE trans (partition INTEGER NOT NULL, tid INTEGER NOT NULL,
                 packed BOOLEAN NOT NULL, oids BLOB NOT NULL, user BLOB NOT NULL,
                 description BLOB NOT NULL, ext BLOB NOT NULL, ttid INTEGER NOT NULL,
                 PRIMARY KEY (partition, tid)) WITHOUT ROWID;
             CREATE TABLE obj (partition INTEGER NOT NULL, oid INTEGER NOT NULL,
                 tid INTEGER NOT NULL, data_id INTEGER, value_tid INTEGER,
                 PRIMARY KEY (partition, tid, oid)) WITHOUT ROWID;
             CREATE TABLE data (id INTEGER PRIMARY KEY, hash BLOB NOT NULL,
                 compression INTEGER NOT NULL, value BLOB NOT NULL);
             CREATE TABLE tobj (partition INTEGER NOT NULL, oid INTEGER NOT NULL,
                 tid INTEGER NOT NULL, data_id INTEGER, value_tid INTEGER,
                 PRIMARY KEY (tid, oid)) WITHOUT ROWID;
             INSERT INTO trans VALUES (0, 10, 0, x'0000000000000002', x'', x'', x'', 10);
             INSERT INTO obj VALUES (0, 2, 10, 0, NULL);
             INSERT INTO data VALUES (0, x'0000000000000000000000000000000000000000', 0, x'41');",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO config VALUES ('version', ?)",
            [version.to_string()],
        )
        .unwrap();
        if version >= 1 {
            conn.execute_batch(
                "CREATE TABLE ttrans (partition INTEGER NOT NULL, tid INTEGER,
                     packed BOOLEAN NOT NULL, oids BLOB NOT NULL, user BLOB NOT NULL,
                     description BLOB NOT NULL, ext BLOB NOT NULL, ttid INTEGER NOT NULL)",
            )
            .unwrap();
        }
        if unfinished {
            conn.execute("INSERT INTO tobj VALUES (0, 4, 20, NULL, NULL)", [])
                .unwrap();
        }
        if version >= 3 {
            conn.execute_batch(
                "CREATE TABLE pt (partition INTEGER NOT NULL, nid INTEGER NOT NULL,
                     tid INTEGER NOT NULL, PRIMARY KEY (partition, nid)) WITHOUT ROWID;
                 INSERT INTO pt VALUES (0, 1, -1), (0, 2, 5), (1, 1, 7), (1, 2, -3);",
            )
            .unwrap();
        } else {
            // Old numbering: UP_TO_DATE 0, OUT_OF_DATE 1, FEEDING 2, CORRUPTED 4.
            conn.execute_batch(
                "CREATE TABLE pt (rid INTEGER NOT NULL, nid INTEGER NOT NULL,
                     state INTEGER NOT NULL, PRIMARY KEY (rid, nid));
                 INSERT INTO pt VALUES (0, 1, 0), (0, 2, 1), (1, 1, 2), (1, 2, 4);",
            )
            .unwrap();
        }
    }

    #[test]
    fn from_version_3() {
        let (_dir, path) = new_db();
        old_db(&path, 3, false);
        let backend = open(&path);
        assert_eq!(backend.get_config("version").unwrap().as_deref(), Some("4"));
        assert_eq!(backend.get_config("partitions").unwrap(), None);
        assert_eq!(backend.num_partitions(), 2);
        assert_eq!(
            backend.pt_rows().unwrap(),
            vec![
                PtRow {
                    partition: 0,
                    nid: S1,
                    tid: -1,
                    pack: Some(Tid(0))
                },
                PtRow {
                    partition: 0,
                    nid: S2,
                    tid: 5,
                    pack: None
                },
                PtRow {
                    partition: 1,
                    nid: S1,
                    tid: 7,
                    pack: Some(Tid(0))
                },
                PtRow {
                    partition: 1,
                    nid: S2,
                    tid: -3,
                    pack: None
                },
            ]
        );
        let object = backend.object(Oid(2), None, None).unwrap().unwrap();
        assert_eq!(object.serial, Tid(10));
        backend.close().unwrap();
        let (_fixture_dir, neopy) = copy_fixture("neopy-s1.sqlite");
        assert_eq!(columns_of(&path, "pt"), columns_of(&neopy, "pt"));
    }

    #[test]
    fn from_version_0_with_old_pt() {
        let (_dir, path) = new_db();
        old_db(&path, 0, false);
        let backend = open(&path);
        assert_eq!(backend.get_config("version").unwrap().as_deref(), Some("4"));
        assert_eq!(
            backend.pt_rows().unwrap(),
            vec![
                PtRow {
                    partition: 0,
                    nid: S1,
                    tid: -1,
                    pack: Some(Tid(0))
                },
                PtRow {
                    partition: 0,
                    nid: S2,
                    tid: 0,
                    pack: None
                },
                PtRow {
                    partition: 1,
                    nid: S1,
                    tid: -2,
                    pack: Some(Tid(0))
                },
                PtRow {
                    partition: 1,
                    nid: S2,
                    tid: -3,
                    pack: None
                },
            ]
        );
        // obj was rebuilt with the (partition, oid, tid) key, and its indexes added.
        let (_fixture_dir, neopy) = copy_fixture("neopy-s1.sqlite");
        for table in ["pt", "obj", "ttrans", "pack"] {
            assert_eq!(
                columns_of(&path, table),
                columns_of(&neopy, table),
                "{table}"
            );
        }
        assert_eq!(
            count(
                &path,
                "SELECT count(*) FROM sqlite_master WHERE name LIKE '_obj_i%'"
            ),
            2
        );
        assert_eq!(
            backend.object(Oid(2), None, None).unwrap().unwrap().serial,
            Tid(10)
        );
    }

    #[test]
    fn unfinished_transactions_block_migration_1() {
        let (_dir, path) = new_db();
        old_db(&path, 0, true);
        let error = SqliteBackend::open(&path, OpenOptions::default()).unwrap_err();
        assert!(
            error.to_string().contains("unfinished transactions"),
            "{error}"
        );
    }

    #[test]
    fn interrupted_rebuild_resumes() {
        // NEO/py may stop between dropping `pt` and renaming `new_pt`.
        let (_dir, path) = new_db();
        old_db(&path, 3, false);
        raw(&path)
            .execute_batch(
                "CREATE TABLE new_pt (partition INTEGER NOT NULL, nid INTEGER NOT NULL,
                     tid INTEGER NOT NULL, pack INTEGER, PRIMARY KEY (partition, nid))
                     WITHOUT ROWID;
                 INSERT INTO new_pt VALUES (0, 1, -1, 0);
                 DROP TABLE pt;",
            )
            .unwrap();
        let backend = open(&path);
        assert_eq!(
            backend.pt_rows().unwrap(),
            vec![PtRow {
                partition: 0,
                nid: S1,
                tid: -1,
                pack: Some(Tid(0))
            }]
        );
    }

    fn columns_of(path: &str, table: &str) -> Vec<(String, String, bool, i64)> {
        raw(path)
            .prepare(&format!("PRAGMA table_xinfo({table})"))
            .unwrap()
            .query_map([], |row| {
                Ok((row.get(1)?, row.get(2)?, row.get(3)?, row.get(5)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

mod exclusive_use {
    use super::*;

    #[test]
    fn second_open_is_refused_until_close() {
        let (_dir, path) = new_db();
        let backend = open(&path);
        let error = SqliteBackend::open(&path, OpenOptions::default()).unwrap_err();
        assert!(matches!(error, BackendError::Locked(_)), "{error:?}");
        assert!(error.to_string().contains("database is locked"), "{error}");
        // Through a file: URI naming the same file too.
        let uri = format!("file:{path}?cache_size=-4000");
        assert!(matches!(
            SqliteBackend::open(&uri, OpenOptions::default()),
            Err(BackendError::Locked(_))
        ));
        backend.close().unwrap();
        open(&uri).close().unwrap();
    }

    #[test]
    fn uri_pragmas_apply() {
        let (_dir, path) = new_db();
        let backend = open(&format!("file:{path}?journal_mode=WAL&synchronous=OFF"));
        drop(backend);
        let mode: String = raw(&path)
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let error = SqliteBackend::open(&format!("file:{path}?cksumvfs=1"), OpenOptions::default())
            .unwrap_err();
        assert!(error.to_string().contains("cksumvfs"), "{error}");
    }

    #[test]
    fn write_ahead_logging_unless_the_uri_chooses_a_journal() {
        let mode = |path: &str| -> String {
            raw(path)
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap()
        };
        let (_dir, path) = new_db();
        open(&path).close().unwrap();
        assert_eq!(mode(&path), "wal");
        let (_dir, path) = new_db();
        open(&format!("file:{path}?journal_mode=DELETE"))
            .close()
            .unwrap();
        assert_eq!(mode(&path), "delete");
    }
}

mod partition_table {
    use super::*;

    fn row(backend: &SqliteBackend, partition: u32, nid: Nid) -> Option<PtRow> {
        backend
            .pt_rows()
            .unwrap()
            .into_iter()
            .find(|row| row.partition == partition && row.nid == nid)
    }

    #[test]
    fn inserted_rows_follow_7_5() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        backend.set_nid(S1).unwrap();
        backend.set_last_pack_id(Tid(77));
        backend
            .apply_pt_changes(
                4,
                1,
                &[
                    (0, S1, CellState::UpToDate),
                    (0, S2, CellState::OutOfDate),
                    (1, S1, CellState::OutOfDate),
                    (1, S2, CellState::Feeding),
                    (2, S1, CellState::Feeding),
                    (2, S2, CellState::Corrupted),
                    (3, S1, CellState::Corrupted),
                ],
                true,
                S1,
            )
            .unwrap();
        backend.commit().unwrap();
        assert_eq!(backend.ptid().unwrap(), Some(4));
        assert_eq!(backend.replicas().unwrap(), 1);
        assert_eq!(backend.num_partitions(), 4);
        let rows = backend.pt_rows().unwrap();
        let expected = [
            (0, S1, -1, Some(0)),
            (0, S2, 0, None),
            (1, S1, 0, Some(77)),
            (1, S2, -2, None),
            (2, S1, -2, Some(0)),
            (2, S2, -3, None),
            (3, S1, -3, Some(77)),
        ];
        let expected: Vec<PtRow> = expected
            .iter()
            .map(|&(partition, nid, tid, pack)| PtRow {
                partition,
                nid,
                tid,
                pack: pack.map(Tid),
            })
            .collect();
        assert_eq!(rows, expected);
        let states: Vec<CellState> = rows.iter().map(PtRow::state).collect();
        use CellState::*;
        assert_eq!(
            states,
            vec![UpToDate, OutOfDate, OutOfDate, Feeding, Feeding, Corrupted, Corrupted]
        );
    }

    #[test]
    fn out_of_date_progress() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 3, S1, Some(S2));
        commit_txn(&mut backend, 0x30, &[(0, Some(b"a"))]);
        commit_txn(&mut backend, 0x41, &[(0, Some(b"b"))]); // trans in partition 2, obj in 0
                                                            // Readable -> OUT_OF_DATE: progress is the last TID of the partition.
        backend
            .apply_pt_changes(
                2,
                0,
                &[(0, S1, CellState::OutOfDate), (1, S1, CellState::OutOfDate)],
                false,
                S1,
            )
            .unwrap();
        assert_eq!(row(&backend, 0, S1).unwrap().tid, 0x41);
        assert_eq!(row(&backend, 1, S1).unwrap().tid, 0);
        // Pack status is set at insertion only.
        assert_eq!(row(&backend, 0, S1).unwrap().pack, Some(Tid(0)));
        // Progress is recorded, and kept by a repeated OUT_OF_DATE.
        backend.set_replication_progress(1, S1, Tid(0x99)).unwrap();
        backend
            .apply_pt_changes(3, 0, &[(1, S1, CellState::OutOfDate)], false, S1)
            .unwrap();
        assert_eq!(row(&backend, 1, S1).unwrap().tid, 0x99);
        // Readable cells have no progress.
        backend.set_replication_progress(2, S1, Tid(0x99)).unwrap();
        assert_eq!(row(&backend, 2, S1).unwrap().tid, -1);
        // Cells not assigned to the node have nothing to record.
        backend.set_replication_progress(9, S1, Tid(0x99)).unwrap();
        assert_eq!(row(&backend, 9, S1), None);
        // CORRUPTED -> OUT_OF_DATE restarts from scratch.
        backend
            .apply_pt_changes(4, 0, &[(2, S1, CellState::Corrupted)], false, S1)
            .unwrap();
        backend
            .apply_pt_changes(5, 0, &[(2, S1, CellState::OutOfDate)], false, S1)
            .unwrap();
        assert_eq!(row(&backend, 2, S1).unwrap().tid, 0);
        // Other nodes' OUT_OF_DATE cells are always 0.
        backend
            .apply_pt_changes(6, 0, &[(2, S2, CellState::OutOfDate)], false, S1)
            .unwrap();
        assert_eq!(
            row(&backend, 2, S2).unwrap(),
            PtRow {
                partition: 2,
                nid: S2,
                tid: 0,
                pack: None
            }
        );
        // In backup mode, a readable cell resumes from backup_tid.
        backend
            .set_config("backup_tid", Some("0000000000000035"))
            .unwrap();
        backend
            .apply_pt_changes(
                7,
                0,
                &[(2, S1, CellState::UpToDate), (1, S1, CellState::UpToDate)],
                false,
                S1,
            )
            .unwrap();
        backend
            .apply_pt_changes(8, 0, &[(2, S1, CellState::OutOfDate)], false, S1)
            .unwrap();
        assert_eq!(row(&backend, 2, S1).unwrap().tid, 0x35);
        assert_eq!(backend.ptid().unwrap(), Some(8));
    }

    #[test]
    fn discarded_and_reset_remove_rows() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 3, S1, Some(S2));
        backend
            .apply_pt_changes(2, 0, &[(1, S2, CellState::Discarded)], false, S1)
            .unwrap();
        assert_eq!(row(&backend, 1, S2), None);
        assert_eq!(backend.pt_rows().unwrap().len(), 5);
        backend
            .apply_pt_changes(
                3,
                0,
                &[(0, S1, CellState::UpToDate), (1, S2, CellState::UpToDate)],
                true,
                S1,
            )
            .unwrap();
        backend.commit().unwrap();
        assert_eq!(
            backend.pt_rows().unwrap(),
            vec![
                PtRow {
                    partition: 0,
                    nid: S1,
                    tid: -1,
                    pack: Some(Tid(0))
                },
                PtRow {
                    partition: 1,
                    nid: S2,
                    tid: -1,
                    pack: None
                },
            ]
        );
        assert_eq!(backend.num_partitions(), 2);
    }

    #[test]
    fn set_nid_renames_own_rows() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 2, S1, Some(S2));
        backend
            .apply_pt_changes(2, 0, &[(1, S1, CellState::OutOfDate)], false, S1)
            .unwrap();
        let s3 = Nid(3);
        backend.set_nid(s3).unwrap();
        backend.commit().unwrap();
        assert_eq!(backend.nid().unwrap(), Some(s3));
        assert_eq!(
            backend.pt_rows().unwrap(),
            vec![
                PtRow {
                    partition: 0,
                    nid: S2,
                    tid: -1,
                    pack: None
                },
                PtRow {
                    partition: 0,
                    nid: s3,
                    tid: -1,
                    pack: Some(Tid(0))
                },
                PtRow {
                    partition: 1,
                    nid: S2,
                    tid: -1,
                    pack: None
                },
                PtRow {
                    partition: 1,
                    nid: s3,
                    tid: 0,
                    pack: Some(Tid(0))
                },
            ]
        );
    }

    #[test]
    fn config_round_trip() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        backend.set_config("name", Some("neo")).unwrap();
        backend
            .set_config("truncate_tid", Some("00000000000000ff"))
            .unwrap();
        backend.commit().unwrap();
        assert_eq!(backend.truncate_tid().unwrap(), Some(Tid(0xff)));
        backend.set_config("truncate_tid", None).unwrap();
        assert_eq!(backend.truncate_tid().unwrap(), None);
        // Uncommitted writes are lost on close.
        backend.close().unwrap();
        let backend = open(&path);
        assert_eq!(backend.truncate_tid().unwrap(), Some(Tid(0xff)));
        assert_eq!(backend.get_config("name").unwrap().as_deref(), Some("neo"));
    }
}

mod transactions {
    use super::*;

    #[test]
    fn vote_lock_unlock() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 3, S1, None);
        let (ttid, tid) = (0x100, 0x103); // same partition (mod 3)
        let mut record = txn(0, ttid, &[1, 2]);
        record.pack = Some(PackInfo {
            approved: None,
            partial: true,
            oids: Some(vec![Oid(1)]),
            pack_tid: Tid(0x50),
        });
        backend.store_transaction(&record, true).unwrap();
        backend
            .store_object(Oid(1), Tid(ttid), Some(&data(b"one")), None, true)
            .unwrap();
        backend
            .store_object(Oid(2), Tid(ttid), None, None, true)
            .unwrap();
        backend.commit().unwrap();
        assert_eq!(
            backend.locked_transactions().unwrap(),
            vec![(Tid(ttid), None)]
        );
        let temporary = backend.transaction(Tid(ttid), true).unwrap().unwrap();
        assert_eq!(temporary.oids, vec![Oid(1), Oid(2)]);
        assert_eq!(temporary.pack.as_ref().unwrap().approved, None);
        assert_eq!(backend.transaction(Tid(ttid), false).unwrap(), None);
        assert_eq!(backend.object(Oid(1), None, None).unwrap(), None);

        backend.sign_pack_orders(&[Tid(ttid)], &[]).unwrap();
        backend.lock_transaction(Tid(ttid), Tid(tid)).unwrap();
        assert_eq!(
            backend.locked_transactions().unwrap(),
            vec![(Tid(ttid), Some(Tid(tid)))]
        );
        backend.unlock_transaction(Tid(ttid), Tid(tid)).unwrap();
        backend.commit().unwrap();
        assert_eq!(backend.locked_transactions().unwrap(), vec![]);
        assert_eq!(backend.final_tid(Tid(ttid)).unwrap(), Some(Tid(tid)));
        let committed = backend.transaction(Tid(tid), false).unwrap().unwrap();
        assert_eq!(
            committed,
            TransactionRecord {
                tid: Tid(tid),
                ttid: Tid(ttid),
                oids: vec![Oid(1), Oid(2)],
                user: Bytes::from_static(b"user"),
                description: Bytes::from("txn 0"),
                extension: Bytes::new(),
                packed: false,
                pack: Some(PackInfo {
                    approved: Some(true),
                    partial: true,
                    oids: Some(vec![Oid(1)]),
                    pack_tid: Tid(0x50),
                }),
            }
        );
        assert_eq!(count(&path, "SELECT tid FROM pack"), tid as i64);
        assert_eq!(
            backend.object(Oid(1), None, None).unwrap(),
            Some(ObjectRecord {
                oid: Oid(1),
                serial: Tid(tid),
                next_serial: None,
                data: Some(data(b"one")),
                data_serial: None,
            })
        );
        // A deletion record has no data.
        let deleted = backend.object(Oid(2), None, None).unwrap().unwrap();
        assert_eq!(deleted.data, None);
        assert_eq!(
            backend.object_history(Oid(2), 0, 5).unwrap(),
            vec![(Tid(tid), 0)]
        );
        assert_eq!(backend.uncommitted_references(1 << 48), 0);
    }

    #[test]
    fn pack_orders_from_the_pack_table() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 2, S1, None);
        let order = |approved, pack_tid| PackInfo {
            approved,
            partial: false,
            oids: None,
            pack_tid: Tid(pack_tid),
        };
        // Committed in partition 0, replicated into partition 1, pending in partition 0.
        let mut record = txn(0, 0x10, &[]);
        record.pack = Some(order(None, 1));
        backend.store_transaction(&record, true).unwrap();
        // The master approved it (AskLockInformation.pack): signed under its TTID.
        assert_eq!(
            backend.sign_pack_orders(&[Tid(0x10)], &[]).unwrap(),
            vec![Tid(0x10)]
        );
        backend.lock_transaction(Tid(0x10), Tid(0x12)).unwrap();
        backend.unlock_transaction(Tid(0x10), Tid(0x12)).unwrap();
        let mut record = txn(0x13, 0x13, &[]);
        record.pack = Some(order(Some(false), 2));
        backend.store_transaction(&record, false).unwrap();
        let mut record = txn(0, 0x20, &[]);
        record.pack = Some(order(None, 3));
        backend.store_transaction(&record, true).unwrap();
        backend.commit().unwrap();
        assert_eq!(
            backend.pack_orders(&[0, 1], Tid(0)).unwrap(),
            vec![
                (Tid(0x12), order(Some(true), 1)),
                (Tid(0x13), order(Some(false), 2)),
                (Tid(0x20), order(None, 3)),
            ]
        );
        assert_eq!(
            backend.pack_orders(&[1], Tid(0)).unwrap(),
            vec![(Tid(0x13), order(Some(false), 2))]
        );
        assert_eq!(
            backend.pack_orders(&[0], Tid(0x13)).unwrap(),
            vec![(Tid(0x20), order(None, 3))]
        );
        assert_eq!(backend.pack_orders(&[], Tid(0)).unwrap(), vec![]);
    }

    #[test]
    fn abort_prunes_new_data_only() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 1, S1, None);
        commit_txn(&mut backend, 0x10, &[(1, Some(b"kept"))]);
        backend
            .store_transaction(&txn(0, 0x20, &[1, 2]), true)
            .unwrap();
        backend
            .store_object(Oid(1), Tid(0x20), None, Some(Tid(0x10)), true)
            .unwrap();
        backend
            .store_object(Oid(2), Tid(0x20), Some(&data(b"dropped")), None, true)
            .unwrap();
        // Storing the same object again in a transaction replaces the first store.
        backend
            .store_object(Oid(2), Tid(0x20), Some(&data(b"dropped too")), None, true)
            .unwrap();
        backend.commit().unwrap();
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 2);
        assert_eq!(count(&path, "SELECT count(*) FROM tobj"), 2);
        backend.abort_transaction(Tid(0x20)).unwrap();
        backend.commit().unwrap();
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 1);
        assert_eq!(count(&path, "SELECT count(*) FROM tobj"), 0);
        assert_eq!(count(&path, "SELECT count(*) FROM ttrans"), 0);
        assert_eq!(backend.locked_transactions().unwrap(), vec![]);
        assert_eq!(
            backend.object(Oid(1), None, None).unwrap().unwrap().data,
            Some(data(b"kept"))
        );
    }

    #[test]
    fn drop_unfinished_clears_temporary_tables() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 2, S1, None);
        for ttid in [0x20, 0x21] {
            let mut record = txn(0, ttid, &[ttid]);
            record.pack = Some(PackInfo {
                approved: None,
                partial: false,
                oids: None,
                pack_tid: Tid(1),
            });
            backend.store_transaction(&record, true).unwrap();
            backend
                .store_object(
                    Oid(ttid),
                    Tid(ttid),
                    Some(&data(&ttid.to_be_bytes())),
                    None,
                    true,
                )
                .unwrap();
        }
        backend.lock_transaction(Tid(0x20), Tid(0x22)).unwrap();
        backend.drop_unfinished().unwrap();
        for table in ["tobj", "ttrans", "data", "pack"] {
            assert_eq!(
                count(&path, &format!("SELECT count(*) FROM {table}")),
                0,
                "{table}"
            );
        }
    }

    #[test]
    fn undo_reuses_data_and_references_survive_restart() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 1, S1, None);
        commit_txn(&mut backend, 0x10, &[(1, Some(b"v1"))]);
        commit_txn(&mut backend, 0x11, &[(1, Some(b"v2"))]);
        // Undo of 0x11 in a committed transaction: same data row as 0x10.
        backend
            .store_transaction(&txn(0x12, 0x12, &[1]), false)
            .unwrap();
        backend
            .store_object(Oid(1), Tid(0x12), None, Some(Tid(0x10)), false)
            .unwrap();
        backend.commit().unwrap();
        let undone = backend.object(Oid(1), None, None).unwrap().unwrap();
        assert_eq!(undone.data, Some(data(b"v1")));
        assert_eq!(undone.data_serial, Some(Tid(0x10)));
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 2);
        // An unfinished transaction holds v2 through an undo, across a restart.
        backend
            .store_transaction(&txn(0, 0x13, &[1]), true)
            .unwrap();
        backend
            .store_object(Oid(1), Tid(0x13), None, Some(Tid(0x11)), true)
            .unwrap();
        backend.commit().unwrap();
        backend.close().unwrap();
        let mut backend = open(&path);
        assert_eq!(backend.uncommitted_references(1), 1);
        assert_eq!(
            backend.locked_transactions().unwrap(),
            vec![(Tid(0x13), None)]
        );
        // Deleting the committed records keeps the held data, drops the other.
        backend
            .delete_objects(0, &[(Tid(0x10), Oid(1)), (Tid(0x11), Oid(1))])
            .unwrap();
        backend.commit().unwrap();
        assert_eq!(
            count(&path, "SELECT count(*) FROM data"),
            2,
            "v1 still used by 0x12"
        );
        backend.delete_objects(0, &[(Tid(0x12), Oid(1))]).unwrap();
        backend.commit().unwrap();
        assert_eq!(
            count(&path, "SELECT count(*) FROM data"),
            1,
            "v2 held by tobj"
        );
        backend.abort_transaction(Tid(0x13)).unwrap();
        backend.commit().unwrap();
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 0);
    }

    #[test]
    fn replicated_records_tolerate_identical_duplicates() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 1, S1, None);
        backend
            .store_transaction(&txn(0x10, 0x10, &[1]), false)
            .unwrap();
        backend
            .store_object(Oid(1), Tid(0x10), Some(&data(b"x")), None, false)
            .unwrap();
        backend
            .store_object(Oid(1), Tid(0x10), Some(&data(b"x")), None, false)
            .unwrap();
        assert!(backend
            .store_object(Oid(1), Tid(0x10), Some(&data(b"y")), None, false)
            .is_err());
        assert!(backend
            .store_object(Oid(1), Tid(0x10), None, None, false)
            .is_err());
        backend
            .store_transaction(&txn(0x10, 0x10, &[1]), false)
            .unwrap();
        assert!(backend
            .store_transaction(&txn(0x10, 0x10, &[1, 2]), false)
            .is_err());
        backend.commit().unwrap();
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 1);
        assert_eq!(count(&path, "SELECT count(*) FROM obj"), 1);
    }

    #[test]
    fn listings() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 2, S1, None);
        // Even TIDs are in partition 0, odd ones in 1; oid 2 is in 0, oid 3 in 1.
        for tid in [0x10, 0x11, 0x20, 0x21, 0x30, 0x31] {
            backend
                .store_transaction(&txn(tid, tid, &[2, 3]), false)
                .unwrap();
            for oid in [2, 3] {
                let value = format!("{oid}@{tid}");
                backend
                    .store_object(
                        Oid(oid),
                        Tid(tid),
                        Some(&data(value.as_bytes())),
                        None,
                        false,
                    )
                    .unwrap();
            }
        }
        backend
            .store_transaction(&txn(0x41, 0x41, &[]), false)
            .unwrap();
        backend.commit().unwrap();
        assert_eq!(
            backend.tids_desc(&[0], 1, 3).unwrap(),
            vec![Tid(0x20), Tid(0x10)]
        );
        assert_eq!(
            backend.tids_desc(&[0, 1], 0, 3).unwrap(),
            vec![Tid(0x41), Tid(0x31), Tid(0x30)]
        );
        assert_eq!(backend.tids_desc(&[], 0, 3).unwrap(), vec![]);
        // The current serial, read without the data, agrees with a load.
        for oid in [2, 3, 4] {
            assert_eq!(
                backend.last_serial(Oid(oid)).unwrap(),
                backend
                    .object(Oid(oid), None, None)
                    .unwrap()
                    .map(|r| r.serial),
                "oid {oid}"
            );
        }
        assert_eq!(backend.last_serial(Oid(2)).unwrap(), Some(Tid(0x31)));
        // Loads of a revision by serial or before a TID give the next serial too, and
        // the data of that revision.
        let at = backend
            .object(Oid(3), Some(Tid(0x20)), None)
            .unwrap()
            .unwrap();
        assert_eq!(at.next_serial, Some(Tid(0x21)));
        assert_eq!(at.data.unwrap().value.as_ref(), b"3@32");
        let before = backend
            .object(Oid(3), None, Some(Tid(0x31)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (before.serial, before.next_serial),
            (Tid(0x30), Some(Tid(0x31)))
        );
        let current = backend.object(Oid(3), None, None).unwrap().unwrap();
        assert_eq!((current.serial, current.next_serial), (Tid(0x31), None));
        // A load before any TID agrees with the history, whether it finds the current
        // revision (read without looking for a next serial) or an older one.
        for oid in [2, 3, 4, 5] {
            let serials: Vec<Tid> = backend
                .object_history(Oid(oid), 0, 100)
                .unwrap()
                .into_iter()
                .map(|(serial, _)| serial)
                .collect();
            for before in 0x10..0x43 {
                let found = backend.object(Oid(oid), None, Some(Tid(before))).unwrap();
                let expected = serials.iter().position(|s| s.0 < before).map(|i| {
                    let at = backend.object(Oid(oid), Some(serials[i]), None).unwrap();
                    (serials[i], i.checked_sub(1).map(|n| serials[n]), at)
                });
                match (found, expected) {
                    (None, None) => {}
                    (Some(found), Some((serial, next, at))) => {
                        assert_eq!(found.serial, serial, "oid {oid} before {before:#x}");
                        assert_eq!(found.next_serial, next, "oid {oid} before {before:#x}");
                        assert_eq!(Some(found), at, "oid {oid} before {before:#x}");
                    }
                    (found, expected) => {
                        panic!("oid {oid} before {before:#x}: {found:?} != {expected:?}")
                    }
                }
            }
        }
        assert_eq!(
            backend.tids_range(1, Tid(0x11), Tid(0x41), 2).unwrap(),
            vec![Tid(0x11), Tid(0x21)]
        );
        assert_eq!(
            backend.tids_range(1, Tid(0x12), Tid(0x41), 100).unwrap(),
            vec![Tid(0x21), Tid(0x31), Tid(0x41)]
        );
        // From (0x11, oid 3) on: (0x11, oid 2) is before it.
        assert_eq!(
            backend
                .objects_range(0, Tid(0x11), Oid(3), Tid(0x30), 10)
                .unwrap(),
            vec![
                (Tid(0x20), Oid(2)),
                (Tid(0x21), Oid(2)),
                (Tid(0x30), Oid(2))
            ]
        );
        assert_eq!(
            backend
                .objects_range(1, Tid(0x11), Oid(3), Tid(0x30), 2)
                .unwrap(),
            vec![(Tid(0x11), Oid(3)), (Tid(0x20), Oid(3))]
        );
        assert_eq!(
            backend
                .objects_range(1, Tid(0x30), Oid(0), Tid(0x20), 2)
                .unwrap(),
            vec![]
        );
        assert_eq!(
            backend
                .objects_range(1, Tid(0), Oid(0), Tid(0x20), 0)
                .unwrap(),
            vec![]
        );
        assert_eq!(
            backend.object_history(Oid(3), 1, 2).unwrap(),
            vec![(Tid(0x30), 4), (Tid(0x21), 4)]
        );
        assert_eq!(backend.object_history(Oid(9), 0, 2).unwrap(), vec![]);
        assert_eq!(backend.partition_last_tid(0).unwrap(), Some(Tid(0x31)));
        assert_eq!(backend.partition_last_tid(1).unwrap(), Some(Tid(0x41)));
        assert_eq!(
            backend.last_ids(&[0]).unwrap(),
            (Some(Tid(0x31)), Some(Oid(2)), Tid(0x10))
        );
        assert_eq!(backend.last_ids(&[]).unwrap(), (None, None, Tid::MAX));
        let object = backend
            .object(Oid(3), None, Some(Tid(0x30)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (object.serial, object.next_serial),
            (Tid(0x21), Some(Tid(0x30)))
        );
        assert_eq!(object.data, Some(data(b"3@33")));
        backend
            .delete_transactions(0, &[Tid(0x10), Tid(0x30)])
            .unwrap();
        assert_eq!(
            backend.tids_range(0, Tid(0), Tid::MAX, 10).unwrap(),
            vec![Tid(0x20)]
        );
    }
}

mod data_rows {
    use super::*;

    fn store_same_value_twice(backend: &mut SqliteBackend) {
        make_pt(backend, 2, S1, None);
        commit_txn(
            backend,
            0x10,
            &[(1, Some(b"same")), (3, Some(b"same")), (2, Some(b"same"))],
        );
    }

    #[test]
    fn ids_per_partition() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        store_same_value_twice(&mut backend);
        let ids: Vec<i64> = raw(&path)
            .prepare("SELECT data_id FROM obj ORDER BY oid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ids, vec![1 << 48, 0, (1 << 48) + 1]);
        backend.close().unwrap();
        // After a restart, allocation goes on from the greatest id of the partition.
        let mut backend = open(&path);
        commit_txn(&mut backend, 0x20, &[(5, Some(b"later"))]);
        assert_eq!(
            count(&path, "SELECT data_id FROM obj WHERE oid=5"),
            (1 << 48) + 2
        );
    }

    #[test]
    fn dedup_shares_rows() {
        let (_dir, path) = new_db();
        let mut backend = open_dedup(&path);
        store_same_value_twice(&mut backend);
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 1);
        assert_eq!(count(&path, "SELECT count(DISTINCT data_id) FROM obj"), 1);
        // Same checksum and compression, different bytes: refused.
        let forged = StoredData {
            compression: 0,
            checksum: checksum_of(b"same"),
            value: Bytes::from_static(b"other"),
        };
        backend
            .store_transaction(&txn(0, 0x20, &[4]), true)
            .unwrap();
        let error = backend
            .store_object(Oid(4), Tid(0x20), Some(&forged), None, true)
            .unwrap_err();
        assert!(error.to_string().contains("collision"), "{error}");
        // The shared row survives until its last user goes.
        backend
            .delete_objects(1, &[(Tid(0x10), Oid(1)), (Tid(0x10), Oid(3))])
            .unwrap();
        backend.commit().unwrap();
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 1);
        backend.delete_objects(0, &[(Tid(0x10), Oid(2))]).unwrap();
        backend.commit().unwrap();
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 0);
    }

    #[test]
    fn restoring_the_same_value_in_a_transaction_keeps_its_shared_row() {
        let (_dir, path) = new_db();
        let mut backend = open_dedup(&path);
        make_pt(&mut backend, 1, S1, None);
        backend
            .store_transaction(&txn(0, 0x20, &[1]), true)
            .unwrap();
        // The second store replaces the first and finds the same row: releasing the first
        // must not prune the row that the second one uses.
        for _ in 0..2 {
            backend
                .store_object(Oid(1), Tid(0x20), Some(&data(b"twice")), None, true)
                .unwrap();
        }
        backend.commit().unwrap();
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 1);
        assert_eq!(count(&path, "SELECT count(*) FROM tobj"), 1);
        backend.lock_transaction(Tid(0x20), Tid(0x21)).unwrap();
        backend.unlock_transaction(Tid(0x20), Tid(0x21)).unwrap();
        backend.commit().unwrap();
        assert_eq!(
            backend.object(Oid(1), None, None).unwrap().unwrap().data,
            Some(data(b"twice"))
        );
    }

    #[test]
    fn no_dedup_keeps_separate_rows() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        store_same_value_twice(&mut backend);
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 3);
    }
}

mod removal {
    use super::*;

    #[test]
    fn drop_partitions_removes_everything_of_them() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 2, S1, None);
        let mut record = txn(0x11, 0x11, &[1]);
        record.pack = Some(PackInfo {
            approved: Some(true),
            partial: false,
            oids: None,
            pack_tid: Tid(2),
        });
        backend.store_transaction(&record, false).unwrap();
        backend
            .store_object(Oid(1), Tid(0x11), Some(&data(b"p1")), None, false)
            .unwrap();
        commit_txn(&mut backend, 0x12, &[(2, Some(b"p0"))]);
        // Unfinished stores in partition 1.
        backend
            .store_transaction(&txn(0, 0x13, &[3]), true)
            .unwrap();
        backend
            .store_object(Oid(3), Tid(0x13), Some(&data(b"tmp")), None, true)
            .unwrap();
        backend.commit().unwrap();
        backend.drop_partitions(&[1]).unwrap();
        backend.commit().unwrap();
        assert_eq!(
            count(&path, "SELECT count(*) FROM obj WHERE partition=1"),
            0
        );
        assert_eq!(
            count(&path, "SELECT count(*) FROM trans WHERE partition=1"),
            0
        );
        assert_eq!(count(&path, "SELECT count(*) FROM tobj"), 0);
        assert_eq!(count(&path, "SELECT count(*) FROM ttrans"), 0);
        assert_eq!(count(&path, "SELECT count(*) FROM pack"), 0);
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 1);
        assert_eq!(
            backend.object(Oid(2), None, None).unwrap().unwrap().data,
            Some(data(b"p0"))
        );
        assert!(backend.transaction(Tid(0x12), false).unwrap().is_some());
    }

    #[test]
    fn truncate_deletes_after_tid() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 1, S1, None);
        for tid in [0x10, 0x20, 0x30] {
            commit_txn(
                &mut backend,
                tid,
                &[(1, Some(format!("v{tid}").as_bytes()))],
            );
        }
        backend
            .apply_pt_changes(2, 0, &[(0, S1, CellState::OutOfDate)], false, S1)
            .unwrap();
        backend
            .set_config("truncate_tid", Some("0000000000000020"))
            .unwrap();
        backend.commit().unwrap();
        assert_eq!(backend.pt_rows().unwrap()[0].tid, 0x30);
        backend.truncate(&[0], S1, Tid(0x20)).unwrap();
        assert_eq!(backend.pt_rows().unwrap()[0].tid, 0x20);
        assert_eq!(backend.truncate_tid().unwrap(), None);
        assert_eq!(
            backend.tids_range(0, Tid(0), Tid::MAX, 10).unwrap(),
            vec![Tid(0x10), Tid(0x20)]
        );
        assert_eq!(
            backend.object(Oid(1), None, None).unwrap().unwrap().serial,
            Tid(0x20)
        );
        // Committed by truncate itself.
        backend.close().unwrap();
        assert_eq!(count(&path, "SELECT count(*) FROM data"), 2);
        assert_eq!(
            count(
                &path,
                "SELECT count(*) FROM config WHERE name='truncate_tid'"
            ),
            0
        );
    }
}

/// Checks that need NEO/py itself.
mod neopy {
    use super::*;
    use std::process::Command;

    fn neopy() -> Option<(String, String)> {
        match (std::env::var("NEO_PY_DIR"), std::env::var("NEO_PY_PYTHON")) {
            (Ok(dir), Ok(python)) => Some((dir, python)),
            _ => {
                eprintln!("skipped: set NEO_PY_DIR and NEO_PY_PYTHON to run NEO/py");
                None
            }
        }
    }

    /// Runs `script` with NEO/py importable; the database path is `sys.argv[1]`.
    fn run_python(script: &str, path: &str) -> Option<String> {
        let (dir, python) = neopy()?;
        let output = Command::new(python)
            .env("PYTHONPATH", dir)
            .arg("-c")
            .arg(script)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "NEO/py failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Some(String::from_utf8(output.stdout).unwrap())
    }

    const READ_BACK: &str = r#"
import sys
from neo.storage.database.sqlite import SQLiteDatabaseManager
from neo.lib.util import p64, u64
dm = SQLiteDatabaseManager(sys.argv[1])
dm.setup()
h = lambda x: None if x is None else x.hex()
print('nid', dm.getUUID(), 'ptid', dm.getPTID(), 'replicas', dm.getNumReplicas(), 'name', dm.getName())
print('pt', sorted(dm.getPartitionTable()))
print('packed', sorted(dm.getPackedIDs().items()))
tid, oid = dm.getLastIDs()
print('last', h(tid), h(oid), 'first', h(dm.getFirstTID()))
for o in range(4):
    r = dm.getObject(p64(o))
    if r:
        serial, next_serial, compression, checksum, data, data_serial = r
        print('obj', o, h(serial), h(next_serial), compression, h(checksum), h(data), h(data_serial))
    print('history', o, [(h(t), n) for t, n in dm.getObjectHistoryWithLength(p64(o), 0, 10) or ()])
for t in dm.getTIDList(0, 10, list(range(dm.np))):
    oids, user, desc, ext, packed, ttid, pack = dm.getTransaction(t)
    print('trans', h(t), [h(x) for x in oids], user, desc, ext, packed, h(ttid), pack and (pack[:3], h(pack[3])))
print('unfinished', dm.getUnfinishedTIDDict())
dm.close()
"#;

    /// What READ_BACK prints for the database `our_db_for_neopy` writes.
    const EXPECTED: &str = "\
nid 1 ptid 5 replicas 1 name ours
pt [(0, 1, 1), (0, 2, 1), (1, 1, 1), (1, 2, 0), (2, 1, 1)]
packed [(0, b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'), (1, b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'), (2, b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00')]
last 0000000000000023 0000000000000002 first 0000000000000012
obj 0 0000000000000012 None 0 CHK0 726f6f74 None
history 0 [('0000000000000012', 4)]
obj 1 0000000000000023 None 0 CHK1 6f6e65 0000000000000012
history 1 [('0000000000000023', 3), ('0000000000000021', 0), ('0000000000000012', 3)]
obj 2 0000000000000021 None 1 CHK2 74776f None
history 2 [('0000000000000021', 3)]
history 3 []
trans 0000000000000023 ['0000000000000001'] b'user' b'txn 0' b'' False 0000000000000020 ((True, True, [b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01']), '0000000000000010')
trans 0000000000000021 ['0000000000000001', '0000000000000002'] b'user' b'txn 0' b'' False 0000000000000021 None
trans 0000000000000012 ['0000000000000000', '0000000000000001'] b'user' b'txn 12' b'' False 0000000000000012 None
unfinished {b'\\x00\\x00\\x00\\x00\\x00\\x00\\x000': None}
";

    fn our_db_for_neopy(path: &str) {
        let mut backend = open(path);
        backend.set_config("name", Some("ours")).unwrap();
        backend.set_nid(S1).unwrap();
        backend
            .apply_pt_changes(
                5,
                1,
                &[
                    (0, S1, CellState::UpToDate),
                    (0, S2, CellState::UpToDate),
                    (1, S1, CellState::UpToDate),
                    (1, S2, CellState::OutOfDate),
                    (2, S1, CellState::UpToDate),
                ],
                true,
                S1,
            )
            .unwrap();
        commit_txn(&mut backend, 0x12, &[(0, Some(b"root")), (1, Some(b"one"))]);
        // 0x21: oid 1 deleted, oid 2 created (zlib flag, bytes as received).
        backend
            .store_transaction(&txn(0, 0x21, &[1, 2]), true)
            .unwrap();
        backend
            .store_object(Oid(1), Tid(0x21), None, None, true)
            .unwrap();
        let two = StoredData {
            compression: 1,
            ..data(b"two")
        };
        backend
            .store_object(Oid(2), Tid(0x21), Some(&two), None, true)
            .unwrap();
        backend.lock_transaction(Tid(0x21), Tid(0x21)).unwrap();
        backend.unlock_transaction(Tid(0x21), Tid(0x21)).unwrap();
        // 0x23 (TTID 0x20, same partition): undo of the deletion, with a pack order.
        let mut record = txn(0, 0x20, &[1]);
        record.pack = Some(PackInfo {
            approved: None,
            partial: true,
            oids: Some(vec![Oid(1)]),
            pack_tid: Tid(0x10),
        });
        backend.store_transaction(&record, true).unwrap();
        backend
            .store_object(Oid(1), Tid(0x20), None, Some(Tid(0x12)), true)
            .unwrap();
        backend.lock_transaction(Tid(0x20), Tid(0x23)).unwrap();
        // The master approved the order (AskLockInformation.pack): the storage signs it.
        backend.sign_pack_orders(&[Tid(0x20)], &[]).unwrap();
        backend.unlock_transaction(Tid(0x20), Tid(0x23)).unwrap();
        // An unfinished store, left in tobj.
        backend
            .store_object(Oid(3), Tid(0x30), Some(&data(b"tmp")), None, true)
            .unwrap();
        backend.commit().unwrap();
        backend.close().unwrap();
    }

    #[test]
    fn neopy_reads_our_database() {
        let (_dir, path) = new_db();
        our_db_for_neopy(&path);
        let Some(output) = run_python(READ_BACK, &path) else {
            return;
        };
        let expected = EXPECTED
            .replace("CHK0", &hex(&checksum_of(b"root")))
            .replace("CHK1", &hex(&checksum_of(b"one")))
            .replace("CHK2", &hex(&checksum_of(b"two")));
        assert_eq!(output, expected);
    }

    #[test]
    fn neopy_fresh_schema_equals_ours() {
        let (dir, path) = new_db();
        open_dedup(&path).close().unwrap();
        let neopy = dir.path().join("neopy.sqlite").to_str().unwrap().to_owned();
        let script = "import sys\n\
            from neo.storage.database.sqlite import SQLiteDatabaseManager\n\
            dm = SQLiteDatabaseManager(sys.argv[1]); dm.setup(dedup=True); dm.commit(); dm.close()\n";
        if run_python(script, &neopy).is_none() {
            return;
        }
        let dump = |path: &str| -> Vec<(String, String, String)> {
            raw(path)
                .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
                .unwrap()
                .query_map([], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get::<_, String>(2)?))
                })
                .unwrap()
                .map(|row| {
                    let (kind, name, sql) = row.unwrap();
                    let sql: String = sql
                        .lines()
                        .map(|line| line.split("--").next().unwrap_or(""))
                        .collect::<String>()
                        .split_whitespace()
                        .collect();
                    (kind, name, sql)
                })
                .collect()
        };
        assert_eq!(dump(&path), dump(&neopy));
        assert_eq!(
            count(
                &neopy,
                "SELECT CAST(value AS INTEGER) FROM config WHERE name='version'"
            ),
            4
        );
    }

    /// NEO/py and we migrate the same old databases to the same result.
    #[test]
    fn neopy_migrates_like_us() {
        let script = "import sys\n\
            from neo.storage.database.sqlite import SQLiteDatabaseManager\n\
            dm = SQLiteDatabaseManager(sys.argv[1]); dm.setup(); dm.commit(); dm.close()\n";
        for version in [0, 3] {
            let (dir, ours) = new_db();
            let theirs = dir.path().join("neopy.sqlite").to_str().unwrap().to_owned();
            super::migration::old_db(&ours, version, false);
            super::migration::old_db(&theirs, version, false);
            open(&ours).close().unwrap();
            if run_python(script, &theirs).is_none() {
                return;
            }
            let dump = |path: &str| -> Vec<String> {
                let conn = raw(path);
                let mut lines: Vec<String> = conn
                    .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
                    .unwrap()
                    .query_map([], |row| {
                        let sql: String = row.get(2)?;
                        let sql: String = sql
                            .lines()
                            .map(|line| line.split("--").next().unwrap_or(""))
                            .collect::<String>()
                            .chars()
                            .filter(|c| !c.is_whitespace() && *c != '"')
                            .collect();
                        Ok(format!(
                            "{} {} {sql}",
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?
                        ))
                    })
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                for table in ["config", "pt", "obj"] {
                    let rows = conn
                        .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
                        .unwrap()
                        .query_map([], |row| {
                            let values: Vec<String> = (0..row.as_ref().column_count())
                                .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                                .collect();
                            Ok(values.join(" "))
                        })
                        .unwrap()
                        .map(Result::unwrap)
                        .collect::<Vec<_>>();
                    lines.push(format!("{table}: {rows:?}"));
                }
                lines
            };
            assert_eq!(dump(&ours), dump(&theirs), "from version {version}");
        }
    }

    #[test]
    fn neopy_sees_our_lock_and_we_see_its() {
        let (_dir, path) = new_db();
        let backend = open(&path);
        let script = "import sys\n\
            from neo.storage.database.sqlite import SQLiteDatabaseManager\n\
            try:\n    SQLiteDatabaseManager(sys.argv[1])\n\
            except SystemExit as e:\n    print(e)\n";
        let Some(output) = run_python(script, &path) else {
            return;
        };
        assert_eq!(output.trim(), "error: database is locked");
        backend.close().unwrap();
        // NEO/py holding the file: we are refused.
        let (dir, python) = neopy().unwrap();
        let mut child = Command::new(python)
            .env("PYTHONPATH", dir)
            .arg("-c")
            .arg(
                "import sys\n\
                 from neo.storage.database.sqlite import SQLiteDatabaseManager\n\
                 dm = SQLiteDatabaseManager(sys.argv[1]); print('ready', flush=True); sys.stdin.read()\n",
            )
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        let error = SqliteBackend::open(&path, OpenOptions::default()).unwrap_err();
        assert!(matches!(error, BackendError::Locked(_)), "{error:?}");
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        open(&path).close().unwrap();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

mod pack_progress {
    use super::*;

    #[test]
    fn pack_progress_is_recorded_in_pt_pack_of_own_cells() {
        let (_dir, path) = new_db();
        let mut backend = open(&path);
        make_pt(&mut backend, 2, S1, None);
        backend.set_pack_progress(1, S1, Tid(0x42)).unwrap();
        backend.commit().unwrap();
        drop(backend);
        let backend = open(&path);
        let rows = backend.pt_rows().unwrap();
        let row = rows
            .iter()
            .find(|r| r.partition == 1 && r.nid == S1)
            .unwrap();
        assert_eq!(row.pack, Some(Tid(0x42)));
        let other = rows
            .iter()
            .find(|r| r.partition == 0 && r.nid == S1)
            .unwrap();
        assert_ne!(other.pack, Some(Tid(0x42)));
    }
}
