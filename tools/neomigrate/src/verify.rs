//! `--verify`: walks two databases side by side in TID order and compares each
//! transaction (TID, user, description, extension) and each record (OID, data after
//! resolving backpointers). Backpointers themselves (undo information) are compared too
//! but counted apart: a database migrated by NEO/py's neomigrate lacks them and still
//! holds the same data.

use anyhow::Result;
use serde_json::json;

use crate::db::{hex, Rec, Txn};
use crate::progress::Progress;

/// What a comparison found.
#[derive(Debug, Default)]
pub struct Report {
    pub transactions: u64,
    pub records: u64,
    pub bytes: u64,
    /// Differences in transactions, metadata, records or data (first ones kept as text).
    pub differences: u64,
    /// Records with the same data whose backpointer (data_txn) differs.
    pub backpointer_differences: u64,
    pub examples: Vec<String>,
}

const EXAMPLES: usize = 20;

impl Report {
    fn differ(&mut self, text: String) {
        self.differences += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(text);
        }
    }

    pub fn identical(&self) -> bool {
        self.differences == 0
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "transactions": self.transactions,
            "records": self.records,
            "bytes": self.bytes,
            "differences": self.differences,
            "backpointer_differences": self.backpointer_differences,
            "examples": self.examples,
        })
    }

    /// The lines printed after a comparison.
    pub fn summary(&self, source: &str, destination: &str) -> Vec<String> {
        let mut lines = Vec::new();
        if self.identical() {
            lines.push(format!(
                "Verified: {} transactions, {} records, {} bytes of data: {destination} is \
                 identical to {source}",
                self.transactions, self.records, self.bytes
            ));
        } else {
            lines.push(format!(
                "Verification FAILED: {} differences between {source} and {destination} \
                 ({} transactions, {} records compared)",
                self.differences, self.transactions, self.records
            ));
            for example in &self.examples {
                lines.push(format!("  {example}"));
            }
            if self.differences > self.examples.len() as u64 {
                lines.push(format!(
                    "  ... and {} more",
                    self.differences - self.examples.len() as u64
                ));
            }
        }
        if self.backpointer_differences > 0 {
            lines.push(format!(
                "Note: {} records have the same data but not the same undo backpointer",
                self.backpointer_differences
            ));
        }
        lines
    }
}

/// Compares `source` and `destination`, advancing `progress` by the source's sizes.
pub fn compare(
    source: impl Iterator<Item = Result<Txn>>,
    destination: impl Iterator<Item = Result<Txn>>,
    progress: &Progress,
) -> Result<Report> {
    let mut report = Report::default();
    let mut source = source.peekable();
    let mut destination = destination.peekable();
    loop {
        let a_tid = match source.peek() {
            Some(Ok(txn)) => Some(txn.tid),
            Some(Err(_)) => return Err(source.next().and_then(Result::err).expect("peeked")),
            None => None,
        };
        let b_tid = match destination.peek() {
            Some(Ok(txn)) => Some(txn.tid),
            Some(Err(_)) => return Err(destination.next().and_then(Result::err).expect("peeked")),
            None => None,
        };
        match (a_tid, b_tid) {
            (None, None) => break,
            (Some(a), b) if b.is_none_or(|b| a < b) => {
                let txn = source.next().expect("peeked")?;
                report.differ(format!(
                    "transaction {} is missing in the destination",
                    hex(a)
                ));
                progress.advance(&txn);
            }
            (a, Some(b)) if a.is_none_or(|a| b < a) => {
                destination.next();
                report.differ(format!(
                    "transaction {} of the destination is not in the source",
                    hex(b)
                ));
            }
            _ => {
                let a = source.next().expect("peeked")?;
                let b = destination.next().expect("peeked")?;
                compare_transaction(&a, &b, &mut report);
                report.transactions += 1;
                progress.advance(&a);
            }
        }
    }
    Ok(report)
}

fn compare_transaction(a: &Txn, b: &Txn, report: &mut Report) {
    let tid = hex(a.tid);
    for (field, x, y) in [
        ("user", &a.user, &b.user),
        ("description", &a.description, &b.description),
        ("extension", &a.extension, &b.extension),
    ] {
        if x != y {
            report.differ(format!(
                "transaction {tid}: {field} differs ({:?} / {:?})",
                String::from_utf8_lossy(x),
                String::from_utf8_lossy(y)
            ));
        }
    }
    let mut a_records: Vec<&Rec> = a.records.iter().collect();
    let mut b_records: Vec<&Rec> = b.records.iter().collect();
    a_records.sort_by_key(|r| r.oid);
    b_records.sort_by_key(|r| r.oid);
    let (mut i, mut j) = (0, 0);
    while i < a_records.len() || j < b_records.len() {
        let x = a_records.get(i);
        let y = b_records.get(j);
        // Which side holds the smaller OID next (both: the same OID).
        let (x, y) = match (x, y) {
            (Some(x), Some(y)) if x.oid == y.oid => (Some(*x), Some(*y)),
            (Some(x), Some(y)) if x.oid < y.oid => (Some(*x), None),
            (Some(x), None) => (Some(*x), None),
            (_, Some(y)) => (None, Some(*y)),
            (None, None) => break,
        };
        match (x, y) {
            (Some(x), Some(y)) => {
                report.records += 1;
                report.bytes += x.data.as_ref().map_or(0, |d| d.len() as u64);
                if x.data != y.data {
                    report.differ(format!(
                        "transaction {tid}, object {}: data differ ({} / {})",
                        hex(x.oid),
                        describe(x),
                        describe(y)
                    ));
                } else if x.data_txn != y.data_txn {
                    report.backpointer_differences += 1;
                }
                i += 1;
                j += 1;
            }
            (Some(x), None) => {
                report.differ(format!(
                    "transaction {tid}: object {} is missing in the destination",
                    hex(x.oid)
                ));
                i += 1;
            }
            (None, Some(y)) => {
                report.differ(format!(
                    "transaction {tid}: object {} of the destination is not in the source",
                    hex(y.oid)
                ));
                j += 1;
            }
            (None, None) => break,
        }
    }
}

fn describe(record: &Rec) -> String {
    match &record.data {
        Some(data) => format!("{} bytes", data.len()),
        None => "no data".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_protocol::Bytes;

    /// (oid, data, data_txn)
    type R = (u64, Option<&'static [u8]>, Option<u64>);

    fn txn(tid: u64, records: &[R]) -> Txn {
        Txn {
            tid,
            user: Bytes::from_static(b"u"),
            description: Bytes::from_static(b"d"),
            extension: Bytes::new(),
            packed: false,
            records: records
                .iter()
                .map(|&(oid, data, data_txn)| Rec {
                    oid,
                    data: data.map(Bytes::from_static),
                    data_txn,
                    encoded: None,
                })
                .collect(),
            size: 1,
        }
    }

    fn run(a: Vec<Txn>, b: Vec<Txn>) -> Report {
        compare(
            a.into_iter().map(Ok),
            b.into_iter().map(Ok),
            &Progress::hidden(),
        )
        .unwrap()
    }

    #[test]
    fn equal_streams_are_identical_whatever_the_record_order() {
        let a = vec![
            txn(1, &[(0, Some(b"root"), None)]),
            txn(2, &[(1, Some(b"x"), None), (2, None, None)]),
        ];
        let b = vec![
            txn(1, &[(0, Some(b"root"), None)]),
            txn(2, &[(2, None, None), (1, Some(b"x"), None)]),
        ];
        let report = run(a, b);
        assert!(report.identical(), "{:?}", report);
        assert_eq!(
            (report.transactions, report.records, report.bytes),
            (2, 3, 5)
        );
    }

    #[test]
    fn every_kind_of_difference_is_counted_and_named() {
        let a = vec![
            txn(1, &[(0, Some(b"root"), None)]),
            txn(2, &[(1, Some(b"x"), None), (3, Some(b"y"), Some(1))]),
            txn(4, &[]),
        ];
        let mut changed = txn(
            2,
            &[
                (1, Some(b"X"), None),
                (3, Some(b"y"), None),
                (5, None, None),
            ],
        );
        changed.user = Bytes::from_static(b"other");
        let b = vec![txn(1, &[(0, Some(b"root"), None)]), changed, txn(5, &[])];
        let report = run(a, b);
        let text = report.examples.join("\n");
        assert_eq!(report.differences, 5, "{text}");
        assert_eq!(report.backpointer_differences, 1);
        for expected in [
            "transaction 0x0000000000000002: user differs",
            "object 0x0000000000000001: data differ (1 bytes / 1 bytes)",
            "object 0x0000000000000005 of the destination is not in the source",
            "transaction 0x0000000000000004 is missing in the destination",
            "transaction 0x0000000000000005 of the destination is not in the source",
        ] {
            assert!(text.contains(expected), "{expected} not in:\n{text}");
        }
    }
}
