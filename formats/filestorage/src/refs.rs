//! `fsrefs`: current revisions that refer to objects which are missing,
//! whose creation was undone, or which cannot be loaded, reported as ZODB's
//! `ZODB/scripts/fsrefs.py` reports them.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::dump::py_str_repr;
use crate::error::{Error, Result};
use crate::pickle;
use crate::storage::FileStorage;
use crate::tid::Oid;

pub struct RefsReport {
    /// The text fsrefs prints.
    pub text: String,
    /// Objects with at least one bad reference.
    pub objects_with_problems: usize,
    /// Objects whose current revision could not be read (other than "no
    /// data"), with the reason.
    pub unloadable: Vec<(Oid, String)>,
}

pub fn check(storage: &FileStorage) -> Result<RefsReport> {
    // Visit objects in file order, as fsrefs does, to read the file forwards.
    let mut by_pos: Vec<(u64, Oid)> = storage
        .index()
        .iter()
        .map(|(oid, pos)| (pos, oid))
        .collect();
    by_pos.sort_unstable();
    let mut undone = HashSet::new();
    let mut noload = HashSet::new();
    let mut unloadable = Vec::new();
    for &(_, oid) in &by_pos {
        match storage.load(oid) {
            Ok(_) => {}
            Err(Error::NoData { .. }) => {
                undone.insert(oid.0);
            }
            Err(e) => {
                noload.insert(oid.0);
                unloadable.push((oid, e.to_string()));
            }
        }
    }
    let mut text = String::new();
    let mut objects_with_problems = 0;
    for &(_, oid) in &by_pos {
        if undone.contains(&oid.0) || noload.contains(&oid.0) {
            continue;
        }
        let (data, serial) = storage.load(oid)?;
        let refs = match pickle::references(&data) {
            Ok(refs) => refs,
            Err(e) => {
                noload.insert(oid.0);
                unloadable.push((oid, format!("unreadable pickle: {}", e.0)));
                continue;
            }
        };
        let mut missing = Vec::new();
        for reference in refs {
            let class = match &reference.class {
                Some((module, name)) => format!("{module}.{name}"),
                None => "<unknown>".to_string(),
            };
            let target = <[u8; 8]>::try_from(reference.oid.as_slice())
                .ok()
                .map(Oid::from_bytes);
            let in_index = target.is_some_and(|t| storage.index().get(t).is_some());
            if !in_index {
                missing.push((oid_repr(&reference.oid), class.clone(), "missing"));
            }
            if let Some(t) = target {
                if noload.contains(&t.0) {
                    missing.push((oid_repr(&reference.oid), class.clone(), "failed to load"));
                }
                if undone.contains(&t.0) {
                    missing.push((
                        oid_repr(&reference.oid),
                        class.clone(),
                        "object creation was undone",
                    ));
                }
            }
        }
        if missing.is_empty() {
            continue;
        }
        objects_with_problems += 1;
        let (module, name) = pickle::class_name(&data);
        let _ = writeln!(text, "oid {:#x} {module}.{name}", oid.0);
        let _ = writeln!(
            text,
            "last updated: {}, tid={:#x}",
            serial.timestamp_string(),
            serial.0
        );
        let plural = if missing.len() > 1 { "s" } else { "" };
        let _ = writeln!(text, "refers to invalid object{plural}:");
        for (target, class, reason) in missing {
            let _ = writeln!(text, "\toid {target} {reason}: {}", py_str_repr(&class));
        }
        text.push('\n');
    }
    Ok(RefsReport {
        text,
        objects_with_problems,
        unloadable,
    })
}

/// ZODB's `oid_repr`: hex without leading zeros, an even number of digits.
pub fn oid_repr(oid: &[u8]) -> String {
    if oid.len() != 8 {
        return crate::dump::py_bytes_repr(oid);
    }
    let hex = crate::dump::hex(oid);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0x00".to_string()
    } else if trimmed.len() % 2 == 1 {
        format!("0x0{trimmed}")
    } else {
        format!("0x{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::oid_repr;

    #[test]
    fn oid_reprs() {
        assert_eq!(oid_repr(&[0; 8]), "0x00");
        assert_eq!(oid_repr(&[0, 0, 0, 0, 0, 0, 0, 1]), "0x01");
        assert_eq!(oid_repr(&[0, 0, 0, 0, 0, 0, 1, 0]), "0x0100");
        assert_eq!(oid_repr(&[0, 0, 0, 0, 0, 0, 0x12, 0x34]), "0x1234");
    }
}
