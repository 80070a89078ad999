//! The `-d` connection string of the SQLite backend (tools.md 1.3): a path (with `~`
//! expansion) or a `file:` URI whose query sets the PRAGMAs `cache_size`, `journal_mode`
//! and `synchronous`, and `cksumvfs`.

use neo_storage::backend::{BackendError, Result};

/// A parsed connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The database file, as SQLite opens it (an empty path or `:memory:` is a
    /// temporary database, which nothing locks).
    pub path: String,
    /// `(name, value)` PRAGMAs to run after connecting, in the order given.
    pub pragmas: Vec<(String, String)>,
    /// `cksumvfs=1`: NEO/py's checksum VFS, which this backend cannot load.
    pub cksumvfs: Option<bool>,
}

const PRAGMAS: [&str; 3] = ["cache_size", "journal_mode", "synchronous"];

impl ConnectionString {
    pub fn parse(database: &str) -> Result<ConnectionString> {
        let Some(uri) = database.strip_prefix("file:") else {
            return Ok(ConnectionString {
                path: expand_user(database),
                pragmas: Vec::new(),
                cksumvfs: None,
            });
        };
        // Like a URL split: an optional `//authority` (ignored), the path, a query and a
        // fragment. The path is used as written, without percent-decoding, as NEO/py does.
        let (uri, _fragment) = uri.split_once('#').unwrap_or((uri, ""));
        let (rest, query) = uri.split_once('?').unwrap_or((uri, ""));
        let path = match rest.strip_prefix("//") {
            Some(authority_and_path) => match authority_and_path.find('/') {
                Some(i) => &authority_and_path[i..],
                None => "",
            },
            None => rest,
        };
        let mut pragmas: Vec<(String, String)> = Vec::new();
        let mut cksumvfs = None;
        if !query.is_empty() {
            for pair in query.split('&') {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(invalid(format!("bad query field: {pair:?}")));
                };
                let key = percent_decode(key)?;
                let value = percent_decode(value)?;
                if key == "cksumvfs" {
                    if cksumvfs.is_some() || !(value == "0" || value == "1") {
                        return Err(invalid(format!("invalid or duplicate {key} value")));
                    }
                    cksumvfs = Some(value == "1");
                    continue;
                }
                if pragmas.iter().any(|(k, _)| *k == key) {
                    return Err(invalid(format!("duplicate pragma: {key}")));
                }
                if !PRAGMAS.contains(&key.as_str()) {
                    return Err(invalid(format!("unsupported pragma: {key}")));
                }
                // The value is spliced into a PRAGMA statement: only plain words and
                // numbers can be meant there.
                if value.is_empty()
                    || !value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(invalid(format!(
                        "invalid value for pragma {key}: {value:?}"
                    )));
                }
                pragmas.push((key, value));
            }
        }
        Ok(ConnectionString {
            path: path.to_owned(),
            pragmas,
            cksumvfs,
        })
    }
}

fn invalid(message: String) -> BackendError {
    BackendError::Invalid(message)
}

/// `~` and `~/...` become the home directory (`~user` is left alone).
fn expand_user(path: &str) -> String {
    if path == "~" || path.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return format!("{}{}", home.to_string_lossy(), &path[1..]);
        }
    }
    path.to_owned()
}

/// Query fields are form-encoded: `+` is a space and `%XX` a byte.
fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| invalid(format!("query field is not UTF-8: {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, path: &str, pragmas: &[(&str, &str)], cksumvfs: Option<bool>) {
        let parsed = ConnectionString::parse(input).unwrap();
        assert_eq!(parsed.path, path, "{input}");
        let expected: Vec<(String, String)> = pragmas
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(parsed.pragmas, expected, "{input}");
        assert_eq!(parsed.cksumvfs, cksumvfs, "{input}");
    }

    #[test]
    fn plain_paths_and_uris() {
        check(
            "/var/lib/neo/s1.sqlite",
            "/var/lib/neo/s1.sqlite",
            &[],
            None,
        );
        check("rel.sqlite", "rel.sqlite", &[], None);
        check("file:/tmp/a.db", "/tmp/a.db", &[], None);
        check("file:///tmp/a.db", "/tmp/a.db", &[], None);
        check("file:a.db", "a.db", &[], None);
        check(
            "file:/tmp/a.db?cache_size=-20000&journal_mode=WAL&synchronous=NORMAL",
            "/tmp/a.db",
            &[
                ("cache_size", "-20000"),
                ("journal_mode", "WAL"),
                ("synchronous", "NORMAL"),
            ],
            None,
        );
        check("file:/tmp/a.db?cksumvfs=0", "/tmp/a.db", &[], Some(false));
    }

    #[test]
    fn home_expansion() {
        let home = std::env::var("HOME").unwrap();
        check("~/x.sqlite", &format!("{home}/x.sqlite"), &[], None);
        check("~other/x.sqlite", "~other/x.sqlite", &[], None);
    }

    #[test]
    fn bad_queries() {
        for (input, message) in [
            ("file:/a?foo=1", "unsupported pragma: foo"),
            (
                "file:/a?cache_size=1&cache_size=2",
                "duplicate pragma: cache_size",
            ),
            ("file:/a?cksumvfs=2", "invalid or duplicate cksumvfs value"),
            (
                "file:/a?cksumvfs=0&cksumvfs=0",
                "invalid or duplicate cksumvfs value",
            ),
            ("file:/a?synchronous", "bad query field"),
            ("file:/a?synchronous=OFF;DROP", "invalid value for pragma"),
            ("file:/a?journal_mode=a%20b", "invalid value for pragma"),
        ] {
            let error = ConnectionString::parse(input).unwrap_err().to_string();
            assert!(error.contains(message), "{input}: {error}");
        }
    }
}
