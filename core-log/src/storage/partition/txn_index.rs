//! The aborted-transaction index of a segment: Kafka's `TransactionIndex`.
//!
//! Every abort marker that ends an ongoing transaction adds one entry to the index of the
//! segment the marker is written to. A read_committed fetch returns, with its batches, the
//! aborted transactions that overlap them, so that the consumer can skip their records.
//!
//! ```text
//! <base>.txnindex   (version i16 (0) | producer id i64 | first offset i64 |
//!                    last offset i64 (the abort marker) | last stable offset i64)*
//!                   CRC-32C u32 of (entry count u32, entries)             big-endian
//!
//!   entries are in marker order; `last stable offset` is the LSO just after the marker. A
//!   fetch of [fetch, upper) collects, from the segment holding `fetch` on, the entries with
//!   last offset >= fetch and first offset < upper, and stops at the first entry whose last
//!   stable offset is >= upper: every later abort started at or after it.
//! ```
//!
//! The entries are Kafka's, byte for byte; the file adds a CRC-32C of them (and their count), and every sealed
//! segment has the file, even with no entry. Kafka's file has neither, so a missing file, or
//! one cut at an entry boundary, reads as "no aborts" there, and read_committed consumers
//! would be served aborted records. Here:
//!
//! - Segments that recovery scans (not known durable: after a crash, from the recovery point
//!   on) never read the file: their index is rebuilt from the abort markers replayed with the
//!   producer state.
//! - Segments trusted at open (a clean shutdown, or below the recovery point) load the file
//!   and check it: present, its CRC, version 0, markers in increasing order inside the
//!   segment, first offset <= last offset, last stable offset <= last offset + 1, and each
//!   entry's last offset holding an abort marker of its producer (with a good CRC). Any
//!   failure (a file without the CRC, written by an older version, too) rebuilds the index
//!   as for a scanned segment.
//!
//! The entries are kept in memory (aborts are rare) and written when the segment is sealed,
//! on a clean close and by compaction, like the other indexes.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::storage::fs::write_atomic;

/// File extension: `00000000000000004711.txnindex`.
pub(crate) const TXN_INDEX_EXT: &str = "txnindex";
/// version i16, producer id i64, first offset i64, last offset i64, last stable offset i64.
pub(crate) const ENTRY_LEN: usize = 2 + 8 + 8 + 8 + 8;
/// Kafka's `AbortedTxn.CURRENT_VERSION`.
const VERSION: i16 = 0;

/// `<base offset, 20 digits>.txnindex`, beside the segment it belongs to.
pub(crate) fn path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.{TXN_INDEX_EXT}"))
}

/// One aborted transaction: Kafka's `AbortedTxn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AbortedTxn {
    pub producer_id: i64,
    /// The offset of the transaction's first data batch in this partition.
    pub first_offset: i64,
    /// The offset of the abort marker.
    pub last_offset: i64,
    /// The partition's LSO right after the marker.
    pub last_stable_offset: i64,
}

/// A segment's aborted transactions, in marker order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TxnIndex {
    entries: Vec<AbortedTxn>,
}

impl TxnIndex {
    /// Adds the entry of an abort marker written after every marker already indexed.
    pub(crate) fn push(&mut self, entry: AbortedTxn) {
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|e| e.last_offset < entry.last_offset)
        );
        self.entries.push(entry);
    }

    pub(crate) fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Kafka's `TransactionIndex.collectAbortedTxns`: calls `found` with each entry whose
    /// marker is at or after `fetch_offset` and whose transaction starts before `upper`.
    /// Returns whether the search is complete (no later segment can add an entry).
    pub(crate) fn collect(
        &self,
        fetch_offset: i64,
        upper: i64,
        mut found: impl FnMut(&AbortedTxn),
    ) -> bool {
        // Entries with an earlier marker cannot overlap, and their last stable offset is at
        // most their marker + 1 <= fetch_offset < upper, so they cannot end the search either.
        let start = self
            .entries
            .partition_point(|e| e.last_offset < fetch_offset);
        for e in &self.entries[start..] {
            if e.first_offset < upper {
                found(e);
            }
            if e.last_stable_offset >= upper {
                return true;
            }
        }
        false
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * ENTRY_LEN + 4);
        for e in &self.entries {
            out.extend_from_slice(&VERSION.to_be_bytes());
            out.extend_from_slice(&e.producer_id.to_be_bytes());
            out.extend_from_slice(&e.first_offset.to_be_bytes());
            out.extend_from_slice(&e.last_offset.to_be_bytes());
            out.extend_from_slice(&e.last_stable_offset.to_be_bytes());
        }
        let crc = checksum(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes an index file of the segment holding offsets `[base_offset, next_offset)`,
    /// checking what can be checked without the segment's bytes (see the module doc).
    pub(crate) fn decode(
        bytes: &[u8],
        base_offset: i64,
        next_offset: i64,
    ) -> std::result::Result<TxnIndex, &'static str> {
        if bytes.len().is_multiple_of(ENTRY_LEN) {
            return Err("no checksum (an older version wrote it)");
        }
        if bytes.len() < 4 || !(bytes.len() - 4).is_multiple_of(ENTRY_LEN) {
            return Err("not a whole number of entries");
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if checksum(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err("checksum mismatch");
        }
        let mut index = TxnIndex::default();
        for e in body.chunks_exact(ENTRY_LEN) {
            let i64_at = |at: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&e[at..at + 8]);
                i64::from_be_bytes(a)
            };
            if i16::from_be_bytes([e[0], e[1]]) != VERSION {
                return Err("unknown entry version");
            }
            let entry = AbortedTxn {
                producer_id: i64_at(2),
                first_offset: i64_at(10),
                last_offset: i64_at(18),
                last_stable_offset: i64_at(26),
            };
            if entry.producer_id < 0
                || entry.first_offset < 0
                || entry.first_offset > entry.last_offset
                || !(base_offset..next_offset).contains(&entry.last_offset)
                || entry.last_stable_offset < 0
                || entry.last_stable_offset > entry.last_offset + 1
            {
                return Err("entry out of range");
            }
            if index
                .entries
                .last()
                .is_some_and(|prev| prev.last_offset >= entry.last_offset)
            {
                return Err("entries out of order");
            }
            index.entries.push(entry);
        }
        Ok(index)
    }

    /// Writes the index next to its segment (atomically; fsynced with `durable`), even with no
    /// entry: a trusted segment without the file gets its index rebuilt.
    pub(crate) fn save(&self, dir: &Path, base_offset: i64, durable: bool) -> Result<()> {
        write_atomic(&path(dir, base_offset), &self.encode(), durable)
    }
}

/// The CRC-32C of the entry count (u32 BE) and the entries. With the count in it, the CRC of no
/// entry is not zero, so a file cut to four zero bytes does not pass as an empty index.
fn checksum(entries: &[u8]) -> u32 {
    let count = (entries.len() / ENTRY_LEN) as u32;
    crc32c::crc32c_append(crc32c::crc32c(&count.to_be_bytes()), entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    fn collect(index: &TxnIndex, fetch: i64, upper: i64) -> (Vec<(i64, i64)>, bool) {
        let mut out = Vec::new();
        let complete = index.collect(fetch, upper, |e| out.push((e.producer_id, e.first_offset)));
        (out, complete)
    }

    #[test]
    fn entries_round_trip_in_kafkas_layout() {
        let mut i = TxnIndex::default();
        i.push(entry(7, 100, 120, 121));
        i.push(entry(9, 90, 130, 95));
        let bytes = i.encode();
        assert_eq!(bytes.len(), 2 * ENTRY_LEN + 4);
        // version 0, then the producer id: Kafka's AbortedTxn layout; then the CRC.
        assert_eq!(&bytes[..10], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(TxnIndex::decode(&bytes, 100, 131), Ok(i));
    }

    #[test]
    fn damaged_files_are_rejected() {
        let mut i = TxnIndex::default();
        i.push(entry(7, 100, 120, 121));
        i.push(entry(9, 90, 130, 95));
        let bytes = i.encode();
        assert_eq!(TxnIndex::decode(&bytes, 100, 131), Ok(i.clone()));
        // Cut anywhere, at entry boundaries too, or any bit flipped: refused.
        for cut in 0..bytes.len() {
            assert!(TxnIndex::decode(&bytes[..cut], 100, 131).is_err(), "{cut}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(TxnIndex::decode(&bad, 100, 131).is_err(), "bit {bit}");
        }
        // The entries alone, as Kafka and older versions wrote them, have no checksum.
        assert!(TxnIndex::decode(&bytes[..bytes.len() - 4], 100, 131).is_err());
        // Markers outside the segment, a first offset after the marker, an LSO past it, an
        // unknown version, entries out of order.
        assert!(TxnIndex::decode(&bytes, 100, 130).is_err());
        assert!(TxnIndex::decode(&bytes, 121, 131).is_err());
        // The same with a good checksum over the changed entries.
        let sealed = |body: &[u8]| {
            let mut out = body.to_vec();
            out.extend_from_slice(&checksum(body).to_be_bytes());
            out
        };
        let entries = &bytes[..bytes.len() - 4];
        for (at, value) in [(17usize, 200u8), (33, 200), (1, 1), (25, 1)] {
            let mut bad = entries.to_vec();
            bad[at] = value;
            assert!(
                TxnIndex::decode(&sealed(&bad), 0, 1_000).is_err(),
                "byte {at}"
            );
        }
        let mut swapped = entries[ENTRY_LEN..].to_vec();
        swapped.extend_from_slice(&entries[..ENTRY_LEN]);
        assert!(TxnIndex::decode(&sealed(&swapped), 100, 131).is_err());
    }

    /// Kafka's `TransactionIndexTest.testCollectAbortedTransactions` rules: overlap with
    /// [fetch, upper), and completeness by the last stable offset.
    #[test]
    fn collect_returns_the_overlapping_aborts_and_knows_when_it_is_complete() {
        // Transaction 1 is ongoing when 0 aborts (LSO 5), 3 when 2 aborts (LSO 32).
        let mut i = TxnIndex::default();
        i.push(entry(0, 0, 10, 5));
        i.push(entry(1, 5, 15, 16));
        i.push(entry(2, 18, 35, 32));
        i.push(entry(3, 32, 50, 51));
        assert_eq!(collect(&i, 0, 32), (vec![(0, 0), (1, 5), (2, 18)], true));
        assert_eq!(collect(&i, 0, 11), (vec![(0, 0), (1, 5)], true));
        assert_eq!(collect(&i, 11, 15), (vec![(1, 5)], true));
        assert_eq!(collect(&i, 16, 33), (vec![(2, 18), (3, 32)], true));
        // Past every entry's LSO the next segment may hold more.
        assert_eq!(collect(&i, 51, 100), (vec![], false));
        assert_eq!(collect(&i, 40, 100), (vec![(3, 32)], false));
    }
}
