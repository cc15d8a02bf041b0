//! Compaction's crash-safe swap of cleaned segments, and its completion at open:
//!
//! ```text
//!   X.log.cleaned ──fsync──► X.<end>.swap  (the commit point; X.<end>.txnswap before it)
//!     ──► delete the segments in [X, end) ──► X.<end>.txnswap → X.txnindex ──► X.log
//! ```
//!
//! A crash before the rename to `.swap` leaves the old segments (the `.cleaned` file is
//! deleted at open); after it, the open finishes the swap ([`complete_swaps`]).

use std::path::Path;

use super::segment::{self, SEGMENT_FILE_EXTS};
use super::txn_index;
use crate::error::{Error, Result};
use crate::storage::fs::{fsync_dir, remove_if_exists};

pub(crate) fn swap_name(base: i64, end: i64) -> String {
    format!("{base:020}.{end:020}.swap")
}

/// The aborted-transaction entries of a cleaned group, waiting for the swap's commit.
pub(crate) fn txn_swap_name(base: i64, end: i64) -> String {
    format!("{base:020}.{end:020}.txnswap")
}

pub(crate) fn is_txn_swap(name: &str) -> bool {
    name.strip_suffix("txnswap")
        .and_then(|n| parse_swap_name(&format!("{n}swap")))
        .is_some()
}

pub(crate) fn parse_swap_name(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(".swap")?;
    let (a, b) = stem.split_once('.')?;
    let ok = |s: &str| s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit());
    (ok(a) && ok(b)).then(|| Some((a.parse().ok()?, b.parse().ok()?)))?
}

/// Finishes swaps a crash interrupted: the `.swap` file is complete and durable (it was
/// renamed only after its fsync), so the segments it replaces are deleted and it takes their
/// place.
pub(crate) fn complete_swaps(dir: &Path) -> Result<()> {
    let mut swaps = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        if let Some(range) = parse_swap_name(&entry.file_name().to_string_lossy()) {
            swaps.push(range);
        }
    }
    for (base, end) in swaps {
        tracing::info!(?dir, base, end, "completing an interrupted compaction swap");
        replace_with_swap(dir, base, end)?;
    }
    Ok(())
}

/// Deletes the segments in `[base, end)` and renames the swap file to `base`'s log file.
///
/// The cleaned group's aborted-transaction entries wait in `X.<end>.txnswap` (durable before
/// the commit point). It is renamed to `X.txnindex` after the old segments' files are gone and
/// before the `.swap` is, so a completion interrupted and run again finds either the
/// `.txnswap` (the old `X.txnindex` may go) or the new `X.txnindex` (which must stay).
pub(crate) fn replace_with_swap(dir: &Path, base: i64, end: i64) -> Result<()> {
    let txn_swap = dir.join(txn_swap_name(base, end));
    let txn_swap_pending = txn_swap.exists();
    let new_txn_index = txn_index::path(dir, base);
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let seg_base = SEGMENT_FILE_EXTS
            .iter()
            .find_map(|ext| segment::parse_base_offset(&name, ext));
        let installed_txn_index = !txn_swap_pending && entry.path() == new_txn_index;
        if seg_base.is_some_and(|b| b >= base && b < end) && !installed_txn_index {
            remove_if_exists(&entry.path())?;
        }
    }
    if txn_swap_pending {
        let empty = std::fs::metadata(&txn_swap)
            .map_err(Error::io(&txn_swap))?
            .len()
            == 0;
        if empty {
            remove_if_exists(&txn_swap)?;
        } else {
            std::fs::rename(&txn_swap, &new_txn_index).map_err(Error::io(&txn_swap))?;
        }
    }
    let swap = dir.join(swap_name(base, end));
    let log = dir.join(segment::file_name(base, "log"));
    std::fs::rename(&swap, &log).map_err(Error::io(&swap))?;
    fsync_dir(dir)
}
