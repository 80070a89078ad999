//! [`Prepared`]: a statement of the object load path, prepared once for the connection's
//! life and run through SQLite's C API. Through rusqlite's statement cache every load
//! hashed its SQL (about 200 bytes) twice and copied it into a new key; rusqlite's binding
//! and column accessors then cost about 1,900 instructions a load, where SQLite's own work
//! is about 5,500. Only integer parameters and integer or blob columns are needed here.

use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::ptr::NonNull;

use rusqlite::{ffi, Connection};

use neo_storage::backend::{BackendError, Result};

use crate::sqlite::db_error;

/// A prepared statement owned by the backend. It must be dropped before its connection
/// closes (a connection with live statements does not close).
pub(crate) struct Prepared {
    stmt: NonNull<ffi::sqlite3_stmt>,
}

impl Prepared {
    /// Prepares one statement of `conn`, marked as long-lived for SQLite's allocator.
    pub(crate) fn new(conn: &Connection, sql: &str) -> Result<Prepared> {
        let len = c_int::try_from(sql.len())
            .map_err(|_| BackendError::Database("statement too long".into()))?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: the connection's handle is open while `conn` is borrowed; SQLite reads
        // `len` bytes of `sql` (no NUL needed with an explicit length) and writes the
        // statement (or null) to `stmt`.
        let rc = unsafe {
            let db = conn.handle();
            let rc = ffi::sqlite3_prepare_v3(
                db,
                sql.as_ptr().cast(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT as _,
                &mut stmt,
                std::ptr::null_mut(),
            );
            if rc != ffi::SQLITE_OK {
                return Err(failure(db, rc));
            }
            rc
        };
        NonNull::new(stmt)
            .map(|stmt| Prepared { stmt })
            .ok_or_else(|| BackendError::Database(format!("empty statement (code {rc})")))
    }

    /// Binds `params` to the statement's parameters (in order), runs it and gives its
    /// first row, if any, to `map`. The statement is reset before returning, whatever
    /// happened, so that it holds no read lock and no page.
    pub(crate) fn query_row<T>(
        &mut self,
        params: &[i64],
        map: impl FnOnce(&Columns<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let stmt = self.stmt.as_ptr();
        let result = (|| {
            for (i, &value) in params.iter().enumerate() {
                // SAFETY: `stmt` is a live statement; SQLite checks the index.
                let rc = unsafe { ffi::sqlite3_bind_int64(stmt, i as c_int + 1, value) };
                if rc != ffi::SQLITE_OK {
                    return Err(self.failure(rc));
                }
            }
            // SAFETY: `stmt` is a live statement with every parameter bound.
            match unsafe { ffi::sqlite3_step(stmt) } {
                ffi::SQLITE_ROW => map(&Columns {
                    stmt,
                    _row: PhantomData,
                })
                .map(Some),
                ffi::SQLITE_DONE => Ok(None),
                rc => Err(self.failure(rc)),
            }
        })();
        // SAFETY: `stmt` is a live statement; resetting also ends the row read above, whose
        // borrowed columns did not outlive `map`. Its code repeats the step's error, if
        // any, which is already in `result`.
        unsafe { ffi::sqlite3_reset(stmt) };
        result
    }

    /// The error of a failed call on this statement, with SQLite's message.
    fn failure(&self, rc: c_int) -> BackendError {
        // SAFETY: the statement's connection is open while the statement lives.
        unsafe { failure(ffi::sqlite3_db_handle(self.stmt.as_ptr()), rc) }
    }
}

// SAFETY: a statement is used only through `&mut` (one thread at a time) and lives inside
// the backend that owns its connection, so it moves between threads with that connection,
// as rusqlite's `Connection` (Send) does with its own statements.
unsafe impl Send for Prepared {}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: the statement is live and finalized once; its connection is still open
        // (see the type's documentation).
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// The current row of a [`Prepared`] statement, valid while `map` runs.
pub(crate) struct Columns<'row> {
    stmt: *mut ffi::sqlite3_stmt,
    _row: PhantomData<&'row ()>,
}

impl Columns<'_> {
    /// An integer column, None for NULL; another type is corruption.
    pub(crate) fn int(&self, column: c_int) -> Result<Option<i64>> {
        // SAFETY: `stmt` has a current row (see `Prepared::query_row`); SQLite returns
        // NULL's type for an index out of range.
        unsafe {
            match ffi::sqlite3_column_type(self.stmt, column) {
                ffi::SQLITE_NULL => Ok(None),
                ffi::SQLITE_INTEGER => Ok(Some(ffi::sqlite3_column_int64(self.stmt, column))),
                other => Err(BackendError::Corrupt(format!(
                    "column {column}: type {other} where an integer was expected"
                ))),
            }
        }
    }

    /// A blob column (None for NULL), borrowed from SQLite until the row ends; another
    /// type is corruption.
    pub(crate) fn blob(&self, column: c_int) -> Result<Option<&[u8]>> {
        // SAFETY: `stmt` has a current row; the pointer and length that SQLite returns for
        // a blob stay valid until the statement steps or is reset, which only happens
        // after the borrow of `self` ends (`query_row` resets after `map`). A zero-length
        // blob may come as a null pointer.
        unsafe {
            match ffi::sqlite3_column_type(self.stmt, column) {
                ffi::SQLITE_NULL => Ok(None),
                ffi::SQLITE_BLOB => {
                    let data = ffi::sqlite3_column_blob(self.stmt, column);
                    let len = ffi::sqlite3_column_bytes(self.stmt, column);
                    if data.is_null() || len <= 0 {
                        Ok(Some(&[]))
                    } else {
                        Ok(Some(std::slice::from_raw_parts(data.cast(), len as usize)))
                    }
                }
                other => Err(BackendError::Corrupt(format!(
                    "column {column}: type {other} where a blob was expected"
                ))),
            }
        }
    }
}

/// The error of a failed call on `db`, with SQLite's message.
///
/// # Safety
/// `db` must be an open connection.
unsafe fn failure(db: *mut ffi::sqlite3, rc: c_int) -> BackendError {
    let message = ffi::sqlite3_errmsg(db);
    let message =
        (!message.is_null()).then(|| CStr::from_ptr(message).to_string_lossy().into_owned());
    db_error(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend moves to the storage's thread like its connection.
    #[test]
    fn backend_is_send() {
        fn send<T: Send>() {}
        send::<crate::SqliteBackend>();
    }

    #[test]
    fn rows_columns_and_errors() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (k INTEGER PRIMARY KEY, i INTEGER, b BLOB);
             INSERT INTO t VALUES (1, 10, x'0102'), (2, NULL, x''), (3, 'text', NULL);",
        )
        .unwrap();
        let mut select = Prepared::new(&conn, "SELECT i, b FROM t WHERE k=?").unwrap();
        let read = |row: &Columns<'_>| Ok((row.int(0)?, row.blob(1)?.map(<[u8]>::to_vec)));
        assert_eq!(
            select.query_row(&[1], read).unwrap(),
            Some((Some(10), Some(vec![1, 2])))
        );
        assert_eq!(
            select.query_row(&[2], read).unwrap(),
            Some((None, Some(vec![])))
        );
        assert_eq!(select.query_row(&[4], read).unwrap(), None);
        // Another type than asked is an error, and the statement is usable again.
        assert!(matches!(
            select.query_row(&[3], read),
            Err(BackendError::Corrupt(_))
        ));
        assert_eq!(
            select.query_row(&[1], read).unwrap(),
            Some((Some(10), Some(vec![1, 2])))
        );
        // A statement that does not prepare, or a parameter it does not have, is an error.
        assert!(Prepared::new(&conn, "SELECT nothing FROM nowhere").is_err());
        assert!(select.query_row(&[1, 2], read).is_err());
        drop(select);
        conn.close().unwrap();
    }
}
