//! Sparse per-segment indexes: offset → file position, and timestamp → offset.
//!
//! Both live in memory while a segment is open and are written to `<base>.index` and
//! `<base>.timeindex` when the segment is sealed (rolled) or the log shuts down cleanly. Each
//! file ends with a CRC-32C of its entries, so a torn or stale index is detected on load and
//! rebuilt from the segment instead of being trusted.
//!
//! ```text
//! .index      (relative_offset u32, position u32)*  crc u32      big-endian
//! .timeindex  (timestamp i64, relative_offset u32)* crc u32
//! ```

/// Offset index: the base offset (relative to the segment) and file position of every batch
/// that starts after `index.interval.bytes` of unindexed data.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub(crate) fn push(&mut self, relative_offset: u32, position: u32) {
        if self
            .entries
            .last()
            .is_none_or(|&(r, p)| relative_offset > r && position > p)
        {
            self.entries.push((relative_offset, position));
        }
    }

    /// The last entry whose relative offset is at most `relative_offset`, if any:
    /// `(relative offset, position)`. The batch at that position has exactly that offset.
    pub(crate) fn lookup_entry(&self, relative_offset: u32) -> Option<(u32, u32)> {
        let i = self.entries.partition_point(|&(r, _)| r <= relative_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The entries: `(relative offset, position)`.
    pub(crate) fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    /// The last entry, if any: `(relative offset, position)`.
    pub(crate) fn last_entry(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8 + 4);
        for &(r, p) in &self.entries {
            out.extend_from_slice(&r.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes and checks an index file: CRC, strictly increasing entries, positions inside a
    /// segment of `segment_size` bytes. `None` means "rebuild it".
    pub(crate) fn decode(bytes: &[u8], segment_size: u64) -> Option<Self> {
        let body = checked_body(bytes, 8)?;
        let mut idx = OffsetIndex::default();
        for e in body.chunks_exact(8) {
            let r = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let p = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
            if u64::from(p) >= segment_size {
                return None;
            }
            if let Some(&(lr, lp)) = idx.entries.last()
                && (r <= lr || p <= lp)
            {
                return None;
            }
            idx.entries.push((r, p));
        }
        Some(idx)
    }
}

/// Time index: `(largest timestamp so far, relative base offset of the batch that first
/// reached it)`, appended with the offset index when the largest timestamp has grown.
///
/// Invariant used by lookups: every record in batches up to and including an entry's batch has
/// a timestamp at most the entry's timestamp.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub(crate) fn push(&mut self, timestamp: i64, relative_offset: u32) {
        if self
            .entries
            .last()
            .is_none_or(|&(t, r)| timestamp > t && relative_offset >= r)
        {
            self.entries.push((timestamp, relative_offset));
        }
    }

    /// Relative offset of a batch from which a forward scan finds the first record with a
    /// timestamp at or after `target`: the last entry whose timestamp is below `target`.
    pub(crate) fn lookup(&self, target: i64) -> u32 {
        let i = self.entries.partition_point(|&(t, _)| t < target);
        if i == 0 { 0 } else { self.entries[i - 1].1 }
    }

    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12 + 4);
        for &(t, r) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&r.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let body = checked_body(bytes, 12)?;
        let mut idx = TimeIndex::default();
        for e in body.chunks_exact(12) {
            let mut t = [0u8; 8];
            t.copy_from_slice(&e[..8]);
            let t = i64::from_be_bytes(t);
            let r = u32::from_be_bytes([e[8], e[9], e[10], e[11]]);
            if let Some(&(lt, lr)) = idx.entries.last()
                && (t <= lt || r < lr)
            {
                return None;
            }
            idx.entries.push((t, r));
        }
        Some(idx)
    }
}

fn checked_body(bytes: &[u8], entry: usize) -> Option<&[u8]> {
    if bytes.len() < 4 || !(bytes.len() - 4).is_multiple_of(entry) {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    (crc32c::crc32c(body) == crc).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_last_entry_at_or_below() {
        let mut i = OffsetIndex::default();
        for (r, p) in [(10, 100), (20, 200), (30, 300)] {
            i.push(r, p);
        }
        assert_eq!(i.lookup_entry(5), None);
        assert_eq!(i.lookup_entry(10), Some((10, 100)));
        assert_eq!(i.lookup_entry(29), Some((20, 200)));
        assert_eq!(i.lookup_entry(1_000), Some((30, 300)));
        let back = OffsetIndex::decode(&i.encode(), 301).unwrap();
        assert_eq!(back, i);
        assert!(
            OffsetIndex::decode(&i.encode(), 300).is_none(),
            "position past the segment"
        );
    }

    #[test]
    fn time_lookup_is_strictly_below_target() {
        let mut t = TimeIndex::default();
        t.push(100, 0);
        t.push(200, 5);
        t.push(150, 9); // not larger: ignored
        assert_eq!(t.lookup(100), 0);
        assert_eq!(t.lookup(201), 5);
        assert_eq!(TimeIndex::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn damaged_index_files_are_rejected() {
        let mut i = OffsetIndex::default();
        i.push(1, 10);
        i.push(2, 20);
        let good = i.encode();
        for cut in 0..good.len() {
            assert!(OffsetIndex::decode(&good[..cut], 100).is_none());
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(OffsetIndex::decode(&bad, 100).is_none());
        }
    }
}
