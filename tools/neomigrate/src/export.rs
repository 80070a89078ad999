//! NEO -> FileStorage: the cluster's transactions, in TID order, written with ZODB's
//! `restore` semantics: TIDs, metadata and the packed status kept, deletions written as
//! records without data, and a record whose data comes from an earlier transaction of the
//! same object (undo) written as a backpointer to it.
//!
//! The file is synced once at the end (and its indexes saved), not per transaction: a
//! run that stops midway leaves at worst a torn last transaction, which the next run
//! removes (saving it aside) before it resumes after the last complete one.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use neo_client::Client;
use neo_filestorage::format::status;
use neo_filestorage::{FileStorage, Options, TxnMeta};
use neo_protocol::Tid;

use crate::db::{hex, NeoReader};
use crate::progress::Progress;
use crate::Totals;

/// The destination file, opened (created if missing), and where the export resumes.
pub struct Destination {
    pub fs: FileStorage,
    /// Last TID already in the file (0 for a new or empty file).
    pub after: u64,
    /// What opening it had to repair, for the user.
    pub repaired: Option<String>,
}

pub fn open_destination(path: &Path, client: &Client) -> Result<Destination> {
    let options = Options {
        sync: false,
        ..Options::writable()
    };
    let fs = FileStorage::open(path, options)
        .with_context(|| format!("cannot open or create the FileStorage {}", path.display()))?;
    let repaired = fs.torn_tail().map(|torn| {
        format!(
            "{}: removed a torn transaction at byte {} ({} bytes: {}){}",
            path.display(),
            torn.pos,
            torn.len,
            torn.why,
            torn.saved_to
                .as_ref()
                .map(|p| format!(", saved to {}", p.display()))
                .unwrap_or_default()
        )
    });
    let after = fs.last_transaction().0;
    if after != 0 {
        check_prefix(path, &fs, client, after)?;
    }
    Ok(Destination {
        fs,
        after,
        repaired,
    })
}

/// A non-empty destination must be a beginning of the cluster: same first and last TID,
/// and the same metadata for the last one.
fn check_prefix(path: &Path, fs: &FileStorage, client: &Client, last: u64) -> Result<()> {
    let refuse = |why: &str| -> Result<()> {
        bail!(
            "the destination {} is not empty and is not a beginning of the cluster: its last \
             transaction is {} and {why}. Export into a new file.",
            path.display(),
            hex(last)
        )
    };
    let mut iter = fs.iter(None, None)?;
    let first = match iter.next_txn()? {
        Some(txn) => txn.tid().0,
        None => return Ok(()),
    };
    drop(iter);
    let cluster_first = client.tids_from(Tid::ZERO, Tid(u64::MAX), 1)?;
    if cluster_first.first().map(|t| t.0) != Some(first) {
        return refuse("its first transaction is not the cluster's");
    }
    let info = match client.transaction_information(Tid(last)) {
        Ok(info) => info,
        Err(_) => return refuse("the cluster has no such transaction"),
    };
    let last_tid = neo_filestorage::Tid(last);
    let mut iter = fs.iter(Some(last_tid), Some(last_tid))?;
    let Some(txn) = iter.next_txn()? else {
        return refuse("the file cannot read it back");
    };
    let meta = txn.meta();
    if meta.user[..] != info.user[..]
        || meta.description[..] != info.description[..]
        || meta.extension[..] != info.extension[..]
    {
        return refuse("its metadata differ from the cluster's transaction");
    }
    Ok(())
}

/// Writes the cluster's transactions after `destination.after` into the file.
pub fn run(
    client: &Arc<Client>,
    destination: Destination,
    workers: usize,
    progress: &Progress,
) -> Result<Totals> {
    let after = (destination.after != 0).then_some(destination.after);
    let reader = NeoReader::start(client.clone(), after, workers)?;
    let mut totals = Totals::default();
    let mut fs = destination.fs;
    for txn in reader {
        let txn = txn?;
        let meta = TxnMeta {
            user: txn.user.to_vec(),
            description: txn.description.to_vec(),
            extension: txn.extension.to_vec(),
        };
        let txn_status = if txn.packed {
            status::PACKED
        } else {
            status::NORMAL
        };
        let write = (|| -> neo_filestorage::Result<()> {
            let mut writer = fs.begin(Some(neo_filestorage::Tid(txn.tid)), meta, txn_status)?;
            for record in &txn.records {
                writer.restore(
                    neo_filestorage::Oid(record.oid),
                    record.data.as_deref(),
                    record.data_txn.map(neo_filestorage::Tid),
                )?;
            }
            writer.commit()?;
            Ok(())
        })();
        write.with_context(|| format!("writing transaction {}", hex(txn.tid)))?;
        totals.add(&txn);
        progress.advance(&txn);
    }
    fs.close()
        .context("syncing the destination and saving its index")?;
    Ok(totals)
}
