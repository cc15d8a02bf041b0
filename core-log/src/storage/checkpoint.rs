//! The log's small metadata files: the per-partition checkpoints (Kafka's offset checkpoint
//! format) and the producer id block, each ending with a checksum line (see
//! [`seal_text`](crate::storage::fs::seal_text)).
//!
//! ```text
//! recovery-point-offset-checkpoint   "0\n<count>\n<topic> <partition> <offset>\n...crc32c <hex>\n"
//! cleaner-offset-checkpoint          the same: compaction's first dirty offset
//! log-start-offset-checkpoint        the same: the first offset retention kept
//! producer-id-block                  "<end of the reserved block>\ncrc32c <hex>\n"
//! ```

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use crate::error::Result;
use crate::storage::fs::{unseal_text, write_atomic};

pub(crate) const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
pub(crate) const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";
pub(crate) const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";
pub(crate) const PRODUCER_ID_BLOCK: &str = "producer-id-block";

/// Reads a checkpoint file: Kafka's offset checkpoint format (`0`, the count, then `topic
/// partition offset` lines) under a checksum line. A missing or damaged file yields an empty
/// map: recovery then checks everything.
pub(crate) fn read_checkpoint(path: &Path) -> HashMap<(String, u32), i64> {
    let Ok(text) = fs::read_to_string(path) else {
        return HashMap::new();
    };
    match parse_checkpoint(&text) {
        Some(map) => map,
        None => {
            tracing::warn!(
                ?path,
                "damaged checkpoint file: recovery checks every segment"
            );
            HashMap::new()
        }
    }
}

pub(crate) fn parse_checkpoint(text: &str) -> Option<HashMap<(String, u32), i64>> {
    let mut lines = unseal_text(text).ok()?.lines();
    if lines.next() != Some("0") {
        return None;
    }
    let count = lines.next()?.parse::<usize>().ok()?;
    let mut map = HashMap::new();
    for line in lines {
        let mut it = line.split(' ');
        let (Some(t), Some(p), Some(o), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return None;
        };
        map.insert(
            (t.to_string(), p.parse::<u32>().ok()?),
            o.parse::<i64>().ok()?,
        );
    }
    (map.len() == count).then_some(map)
}

/// Writes a checkpoint file atomically, or, when that fails (a full disk has no room for the
/// temporary file), over the old file in place: its blocks are already allocated. A crash in
/// the middle leaves a file that fails its checksum, which only makes the next recovery check
/// more.
pub(crate) fn write_checkpoint_file(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, text.as_bytes(), true)
        .or_else(|e| crate::storage::fs::overwrite_in_place(path, text.as_bytes()).map_err(|_| e))
}

/// The end of the reserved producer id block in `text`, or `Err` when the
/// file fails its checksum. A bare number without a checksum line is what an older version
/// wrote, and is read as it is.
pub(crate) fn parse_producer_id_block(text: &str) -> std::result::Result<i64, ()> {
    let parse = |body: &str| {
        body.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or(())
    };
    match unseal_text(text) {
        Ok(body) => parse(body),
        Err(_) if text.lines().count() == 1 => parse(text),
        Err(_) => Err(()),
    }
}
