//! FileStorage -> NEO: every source transaction replayed with its own TID and metadata
//! through the client's restore path, in order. Explicit TIDs cannot overlap (the master
//! refuses a second one while one is pending), so transactions go one at a time, while a
//! reader thread keeps the next ones decoded.
//!
//! Resuming: the cluster's last TID must be a transaction of the source, whose metadata
//! and objects match; migration goes on after it. The serial each store names (the
//! previous revision of the object) is the source's own history, so the prefix already
//! migrated is scanned for it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use neo_client::{Client, Codec, TransactionMeta, Vote};
use neo_protocol::{Oid, Tid};

use crate::db::{call_error, hex, open_source_file, FileReader, Txn};
use crate::progress::Progress;
use crate::Totals;

/// Where a migration into a cluster starts.
#[derive(Debug, PartialEq)]
pub enum Start {
    /// The cluster is empty.
    Empty,
    /// The cluster holds the source up to and including this TID.
    After { tid: u64, transactions: u64 },
}

/// Checks that the cluster is empty or holds a prefix of the source, and says where to
/// start. Fills `serials` with the last TID of every object of that prefix.
pub fn find_start(
    source: &Path,
    client: &Client,
    serials: &mut HashMap<u64, u64>,
) -> Result<Start> {
    let last = client.last_transaction().map_err(call_error)?;
    if last == Tid::ZERO {
        return Ok(Start::Empty);
    }
    let fs = open_source_file(source)?;
    let mut iter = fs.iter(None, Some(neo_filestorage::Tid(last.0)))?;
    let mut transactions = 0u64;
    let mut found = None;
    while let Some(txn) = iter.next_txn()? {
        transactions += 1;
        let view = txn.view;
        if transactions == 1 {
            // The oldest transaction of the cluster must be the source's first too, or the
            // cluster holds something else that merely ends with a source TID.
            let first = client.tids_from(Tid::ZERO, last, 1).map_err(call_error)?;
            if first.first().map(|t| t.0) != Some(view.tid().0) {
                bail!(not_a_prefix(
                    source,
                    last.0,
                    "its first transaction is not the source's"
                ));
            }
        }
        for record in view.records() {
            serials.insert(record.header.oid.0, record.header.tid.0);
        }
        if view.tid().0 == last.0 {
            found = Some((
                view.user().to_vec(),
                view.description().to_vec(),
                view.extension().to_vec(),
                view.records().map(|r| r.header.oid.0).collect::<Vec<_>>(),
            ));
        }
    }
    let Some((user, description, extension, mut oids)) = found else {
        bail!(not_a_prefix(
            source,
            last.0,
            "that TID is not in the source"
        ));
    };
    let info = client.transaction_information(last).map_err(call_error)?;
    let mut neo_oids: Vec<u64> = info.oids.iter().map(|o| o.0).collect();
    oids.sort_unstable();
    oids.dedup();
    neo_oids.sort_unstable();
    if info.user[..] != user[..]
        || info.description[..] != description[..]
        || info.extension[..] != extension[..]
        || neo_oids != oids
    {
        bail!(not_a_prefix(
            source,
            last.0,
            "that transaction differs from the source's (metadata or objects)"
        ));
    }
    Ok(Start::After {
        tid: last.0,
        transactions,
    })
}

fn not_a_prefix(source: &Path, last: u64, why: &str) -> String {
    format!(
        "the destination cluster is not empty and does not hold a beginning of {}: its last \
         transaction is {} and {why}. Migrate into an empty cluster.",
        source.display(),
        hex(last)
    )
}

/// Replays the source's transactions after `start` into the cluster.
pub fn run(
    source: &Path,
    client: &Arc<Client>,
    start: &Start,
    mut serials: HashMap<u64, u64>,
    codec: Codec,
    progress: &Progress,
) -> Result<Totals> {
    let after = match start {
        Start::Empty => None,
        Start::After { tid, .. } => Some(*tid),
    };
    let reader = FileReader::start(source.to_path_buf(), after, Some(codec))?;
    let mut totals = Totals::default();
    for txn in reader {
        let txn = txn?;
        commit(client, &txn, &mut serials).with_context(|| {
            format!(
                "migrating transaction {} ({} transactions migrated by this run; run the \
                 same command again to resume after the last one committed)",
                hex(txn.tid),
                totals.transactions
            )
        })?;
        totals.add(&txn);
        progress.advance(&txn);
    }
    Ok(totals)
}

fn commit(client: &Client, txn: &Txn, serials: &mut HashMap<u64, u64>) -> Result<()> {
    let meta = TransactionMeta {
        user: txn.user.clone(),
        description: txn.description.clone(),
        extension: txn.extension.clone(),
    };
    let ttid = client
        .tpc_begin(Some(Tid(txn.tid)), meta)
        .map_err(call_error)?;
    let stored = (|| -> Result<()> {
        for record in &txn.records {
            let oid = Oid(record.oid);
            let serial = Tid(serials.get(&record.oid).copied().unwrap_or(0));
            let data_txn = record.data_txn.map(Tid);
            match (&record.data, &record.encoded) {
                (Some(data), Some(encoded)) => client
                    .restore_encoded(ttid, oid, serial, data.clone(), encoded.clone(), data_txn)
                    .map_err(call_error)?,
                (Some(data), None) => client
                    .restore(ttid, oid, serial, Some(data.clone()), data_txn)
                    .map_err(call_error)?,
                (None, _) => client
                    .delete_object(ttid, oid, serial)
                    .map_err(call_error)?,
            }
        }
        match client.tpc_vote(ttid).map_err(call_error)? {
            Vote::Voted(_) => Ok(()),
            Vote::Conflicts(conflicts) => {
                let oids: Vec<String> = conflicts.iter().map(|c| hex(c.oid.0)).collect();
                bail!(
                    "conflicts on {}: the cluster was written to by someone else during the \
                     migration",
                    oids.join(", ")
                )
            }
        }
    })();
    if let Err(error) = stored {
        let _ = client.tpc_abort(ttid);
        return Err(error);
    }
    let tid = client.tpc_finish(ttid).map_err(call_error)?;
    if tid.0 != txn.tid {
        bail!(
            "the cluster committed it as {} instead of its own TID",
            hex(tid.0)
        );
    }
    for record in &txn.records {
        serials.insert(record.oid, txn.tid);
    }
    Ok(())
}
