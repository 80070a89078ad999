//! NEO/py's SQLite schema, version 4 (cluster.md 7.2), its creation, and the migrations
//! from older versions (7.7). Table, column and index names and types are NEO/py's, so
//! that either implementation opens the other's files.

use rusqlite::{Connection, OptionalExtension};

use neo_storage::backend::{BackendError, Result};

use crate::sqlite::db_error;

/// The schema version this backend writes (`config.version`).
pub const SCHEMA_VERSION: u32 = 4;

/// Every table NEO/py's SQLite backend has; `erase` drops them all.
pub const TABLES: [&str; 8] = [
    "config", "pt", "pack", "trans", "obj", "data", "ttrans", "tobj",
];

// `{}` is replaced by the table name (with `IF NOT EXISTS`, or `new_<table>` during a
// migration).
const CONFIG: &str = "CREATE TABLE {} (
    name TEXT NOT NULL PRIMARY KEY,
    value TEXT) WITHOUT ROWID";

const PT: &str = "CREATE TABLE {} (
    partition INTEGER NOT NULL,
    nid INTEGER NOT NULL,
    tid INTEGER NOT NULL,
    pack INTEGER,
    PRIMARY KEY (partition, nid)) WITHOUT ROWID";

/// `pt` as migration 3 leaves it, before migration 4 adds `pack`.
const PT_V3: &str = "CREATE TABLE {} (
    partition INTEGER NOT NULL,
    nid INTEGER NOT NULL,
    tid INTEGER NOT NULL,
    PRIMARY KEY (partition, nid)) WITHOUT ROWID";

/// Pack orders: `approved` is NULL while not signed; `oids` is packed like `trans.oids`.
const PACK: &str = "CREATE TABLE {} (
    tid INTEGER PRIMARY KEY,
    approved BOOLEAN,
    partial BOOLEAN NOT NULL,
    oids BLOB,
    pack_tid INTEGER)";

const TRANS: &str = "CREATE TABLE {} (
    partition INTEGER NOT NULL,
    tid INTEGER NOT NULL,
    packed BOOLEAN NOT NULL,
    oids BLOB NOT NULL,
    user BLOB NOT NULL,
    description BLOB NOT NULL,
    ext BLOB NOT NULL,
    ttid INTEGER NOT NULL,
    PRIMARY KEY (partition, tid)) WITHOUT ROWID";

const OBJ: &str = "CREATE TABLE {} (
    partition INTEGER NOT NULL,
    oid INTEGER NOT NULL,
    tid INTEGER NOT NULL,
    data_id INTEGER,
    value_tid INTEGER,
    PRIMARY KEY (partition, oid, tid)) WITHOUT ROWID";

const DATA: &str = "CREATE TABLE {} (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    compression INTEGER NOT NULL,
    value BLOB NOT NULL)";

/// Like `trans`, with `tid` NULL until the transaction is locked, and no key.
const TTRANS: &str = "CREATE TABLE {} (
    partition INTEGER NOT NULL,
    tid INTEGER,
    packed BOOLEAN NOT NULL,
    oids BLOB NOT NULL,
    user BLOB NOT NULL,
    description BLOB NOT NULL,
    ext BLOB NOT NULL,
    ttid INTEGER NOT NULL)";

/// Like `obj`, `tid` holding the TTID.
const TOBJ: &str = "CREATE TABLE {} (
    partition INTEGER NOT NULL,
    oid INTEGER NOT NULL,
    tid INTEGER NOT NULL,
    data_id INTEGER,
    value_tid INTEGER,
    PRIMARY KEY (tid, oid)) WITHOUT ROWID";

/// Tables other than `config`, in NEO/py's creation order.
const SCHEMA: [(&str, &str); 7] = [
    ("pt", PT),
    ("pack", PACK),
    ("trans", TRANS),
    ("obj", OBJ),
    ("data", DATA),
    ("ttrans", TTRANS),
    ("tobj", TOBJ),
];

const OBJ_INDEXES: [&str; 2] = [
    "CREATE INDEX IF NOT EXISTS _obj_i1 ON obj(partition, tid, oid)",
    "CREATE INDEX IF NOT EXISTS _obj_i2 ON obj(data_id)",
];

/// Only with deduplication: inserting a value whose (hash, compression) exists fails,
/// and the existing row is reused.
const DATA_DEDUP_INDEX: &str =
    "CREATE UNIQUE INDEX IF NOT EXISTS _data_i1 ON data(hash, compression)";

fn ddl(template: &str, name: &str) -> String {
    template.replacen("{}", name, 1)
}

/// Creates the schema in an empty database, or migrates an older one, then creates the
/// missing tables and indexes. With `dedup`, the deduplication index is created too (also
/// on an existing database, as NEO/py does). Runs inside the caller's transaction.
pub fn setup(conn: &Connection, dedup: bool) -> Result<()> {
    if table_nonempty(conn, "config")?.is_none() {
        exec(conn, &ddl(CONFIG, "config"))?;
        set_version(conn, SCHEMA_VERSION)?;
    } else {
        migrate(conn)?;
    }
    for (table, template) in SCHEMA {
        exec(conn, &ddl(template, &format!("IF NOT EXISTS {table}")))?;
    }
    for index in OBJ_INDEXES {
        exec(conn, index)?;
    }
    if dedup {
        exec(conn, DATA_DEDUP_INDEX)?;
    }
    Ok(())
}

/// Whether the deduplication index exists.
pub fn has_dedup_index(conn: &Connection) -> Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type='index' AND name='_data_i1'",
        [],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(db_error)
}

/// None if the table does not exist, else whether it has a row.
pub fn table_nonempty(conn: &Connection, table: &str) -> Result<Option<bool>> {
    let exists = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
            [table],
            |_| Ok(()),
        )
        .optional()
        .map_err(db_error)?;
    if exists.is_none() {
        return Ok(None);
    }
    let row = conn
        .query_row(&format!("SELECT 1 FROM {table} LIMIT 1"), [], |_| Ok(()))
        .optional()
        .map_err(db_error)?;
    Ok(Some(row.is_some()))
}

/// Runs migrations from the stored version up to [`SCHEMA_VERSION`]. Tables an old
/// database lacks are created afterwards by [`setup`].
fn migrate(conn: &Connection) -> Result<()> {
    let stored: Option<String> = conn
        .query_row("SELECT value FROM config WHERE name='version'", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(db_error)?;
    let mut version: u32 = match stored {
        None => 0,
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| BackendError::Corrupt(format!("bad schema version {text:?}")))?,
    };
    if version > SCHEMA_VERSION {
        return Err(BackendError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    while version < SCHEMA_VERSION {
        version += 1;
        match version {
            1 => {
                // ttrans gets a nullable tid. Its rows cannot be converted, so a
                // database with unfinished transactions must first be finished by the
                // version of NEO that wrote it.
                if table_nonempty(conn, "ttrans")? == Some(true)
                    || table_nonempty(conn, "tobj")? == Some(true)
                {
                    return Err(BackendError::Invalid(
                        "the database can not be upgraded because it has unfinished \
                         transactions: use an older version of NEO to verify them"
                            .into(),
                    ));
                }
                exec(conn, "DROP TABLE IF EXISTS ttrans")?;
            }
            2 => {
                // obj keyed by (partition, oid, tid) instead of tid first.
                alter_table(conn, "obj", OBJ, "*")?;
            }
            3 => {
                // pt: (rid, nid, state) with the old numbering (UP_TO_DATE 0,
                // OUT_OF_DATE 1, FEEDING 2, DISCARDED 3, CORRUPTED 4) becomes
                // (partition, nid, tid) with tid = -state (new numbering) or >= 0 for
                // OUT_OF_DATE.
                alter_table(
                    conn,
                    "pt",
                    PT_V3,
                    "rid, nid, CASE state WHEN 0 THEN -1 WHEN 2 THEN -2 ELSE 1-state END",
                )?;
            }
            4 => {
                // pt.pack: 0 for own cells, NULL for the others; np now comes from pt.
                exec(conn, "DELETE FROM config WHERE name='partitions'")?;
                let own: Option<String> = conn
                    .query_row("SELECT value FROM config WHERE name='nid'", [], |row| {
                        row.get(0)
                    })
                    .optional()
                    .map_err(db_error)?;
                let own = match own {
                    None => "NULL".to_owned(),
                    Some(text) => text
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| BackendError::Corrupt(format!("bad nid {text:?}")))?
                        .to_string(),
                };
                alter_table(
                    conn,
                    "pt",
                    PT,
                    &format!("*, CASE WHEN nid={own} THEN 0 ELSE NULL END"),
                )?;
            }
            _ => unreachable!("no migration to version {version}"),
        }
        set_version(conn, version)?;
    }
    Ok(())
}

/// Rebuilds `table` through `new_<table>` (create, copy with `select`, drop, rename).
/// Resumes a rebuild interrupted after the old table was dropped; a table that exists in
/// neither form is left to [`setup`].
fn alter_table(conn: &Connection, table: &str, template: &str, select: &str) -> Result<()> {
    let new = format!("new_{table}");
    if table_nonempty(conn, table)?.is_none() {
        if table_nonempty(conn, &new)?.is_none() {
            return Ok(());
        }
    } else {
        exec(conn, &format!("DROP TABLE IF EXISTS {new}"))?;
        exec(conn, &ddl(template, &new))?;
        exec(
            conn,
            &format!("INSERT INTO {new} SELECT {select} FROM {table}"),
        )?;
        exec(conn, &format!("DROP TABLE {table}"))?;
    }
    exec(conn, &format!("ALTER TABLE {new} RENAME TO {table}"))
}

fn set_version(conn: &Connection, version: u32) -> Result<()> {
    conn.execute(
        "REPLACE INTO config VALUES ('version', ?)",
        [version.to_string()],
    )
    .map_err(db_error)?;
    Ok(())
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.execute_batch(sql).map_err(db_error)
}
