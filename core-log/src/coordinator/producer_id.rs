//! Producer ids: Kafka's `InitProducerId` without a transactional id, and the ids the
//! transaction coordinator hands out. Ids are reserved durably in blocks, so that allocating
//! one rarely needs an fsync and a restart never hands out an id twice.
//!
//! ```text
//! <dir>/producer-id-block   "<end of the reserved block>\n" and a "crc32c <hex>" line
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::Result;
use crate::storage::checkpoint::{PRODUCER_ID_BLOCK, parse_producer_id_block};
use crate::storage::fs::{seal_text, write_atomic};
use crate::sync::lock;

/// Producer ids are reserved durably in blocks of this many.
const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// An idempotent producer's identity: Kafka's producer id and epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProducerIdentity {
    /// The producer id, unique in this log.
    pub producer_id: i64,
    /// The epoch; bumped to fence an older instance with the same transactional id.
    pub epoch: i16,
}

/// Hands out producer ids, never twice for one log directory.
#[derive(Debug)]
pub(crate) struct ProducerIdManager {
    path: PathBuf,
    /// `(next producer id, end of the durably reserved block)`.
    ids: Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    /// Reads the block file in `dir`. `known_max` gives the highest producer id the log's
    /// partitions know, for when the file is damaged.
    pub(crate) fn open(dir: &Path, known_max: impl FnOnce() -> Option<i64>) -> Self {
        ProducerIdManager {
            path: dir.join(PRODUCER_ID_BLOCK),
            ids: Mutex::new(read_producer_id_block(dir, known_max)),
        }
    }

    /// A new producer id, with epoch 0.
    pub(crate) fn next(&self) -> Result<ProducerIdentity> {
        let mut ids = lock(&self.ids);
        if ids.0 >= ids.1 {
            let end = ids.0 + PRODUCER_ID_BLOCK_SIZE;
            write_atomic(&self.path, seal_text(&format!("{end}\n")).as_bytes(), true)?;
            ids.1 = end;
        }
        let producer_id = ids.0;
        ids.0 += 1;
        Ok(ProducerIdentity {
            producer_id,
            epoch: 0,
        })
    }
}

/// The next free producer id: the end of the last reserved block, or 0. A damaged file (its
/// checksum fails) moves on to a fresh range above anything handed out: above half the id
/// space and above every producer id the partitions know (`known_max`), so that a second
/// damage never goes back to ids given out after the first. A bare number without a checksum
/// line is a file an older version wrote.
fn read_producer_id_block(dir: &Path, known_max: impl FnOnce() -> Option<i64>) -> (i64, i64) {
    let path = dir.join(PRODUCER_ID_BLOCK);
    let next = match fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
        Err(_) => None,
        Ok(text) => parse_producer_id_block(&text).ok(),
    };
    let next = next.unwrap_or_else(|| {
        tracing::warn!(
            ?path,
            "damaged producer id block: producer ids move on to a fresh range"
        );
        known_max()
            .map_or(0, |m| m.saturating_add(PRODUCER_ID_BLOCK_SIZE))
            .max(i64::MAX / 2)
    });
    (next, next)
}
