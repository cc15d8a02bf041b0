//! Small file-system helpers: atomic replace and directory fsync.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Fsyncs a directory so that a file created, renamed or removed in it survives a power loss.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

/// Replaces `path` with `bytes` atomically: a reader (or a restart) sees the old file or the
/// new one, never a mix. With `durable`, the new content and the rename are fsynced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let tmp = path.with_extension(match path.extension() {
        Some(e) => format!("{}.tmp", e.to_string_lossy()),
        None => "tmp".to_string(),
    });
    let written = File::create(&tmp).and_then(|mut f| {
        #[cfg(test)]
        if DISK_FULL.with(std::cell::Cell::get) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device (injected)",
            ));
        }
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        Ok(())
    });
    if let Err(e) = written {
        // A full disk leaves a partial temporary file: not worth keeping, and in the way.
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp)(e));
    }
    fs::rename(&tmp, path).map_err(Error::io(path))?;
    if durable && let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Overwrites `path` with `bytes` in place and fsyncs it: for a small file whose atomic
/// replacement failed for want of space. Not atomic: a reader may see a mix after a crash, so
/// only files with a checksum are written so.
pub(crate) fn overwrite_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(Error::io(path))?;
    f.write_all_at(bytes, 0)
        .and_then(|()| f.set_len(bytes.len() as u64))
        .and_then(|()| f.sync_all())
        .map_err(Error::io(path))
}

/// Removes a file; a file that is already gone is not an error.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
thread_local! {
    /// Makes [`write_atomic`] on this thread fail as on a full disk, after creating its
    /// temporary file (as a real `ENOSPC` leaves it).
    pub(crate) static DISK_FULL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The prefix of the last line of a checksummed text file.
const CHECKSUM_PREFIX: &str = "crc32c ";

/// `body` followed by a last line `crc32c <8 hex digits>` holding the CRC-32C of `body`: how
/// the log's small text files (checkpoints, the producer id block) detect a flipped bit.
pub(crate) fn seal_text(body: &str) -> String {
    format!(
        "{body}{CHECKSUM_PREFIX}{:08x}\n",
        crc32c::crc32c(body.as_bytes())
    )
}

/// The body of a file written by [`seal_text`], or why it cannot be trusted.
pub(crate) fn unseal_text(text: &str) -> std::result::Result<&str, &'static str> {
    let trimmed = text
        .strip_suffix('\n')
        .ok_or("no checksum line at the end")?;
    let line_start = trimmed.rfind('\n').map_or(0, |i| i + 1);
    let (body, last) = text.split_at(line_start);
    let hex = last
        .trim_end_matches('\n')
        .strip_prefix(CHECKSUM_PREFIX)
        .ok_or("no checksum line at the end")?;
    // Lowercase only, as written: a flipped case bit must not read as the same value.
    if hex.len() != 8 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("malformed checksum line");
    }
    let stored = u32::from_str_radix(hex, 16).map_err(|_| "malformed checksum line")?;
    if stored != crc32c::crc32c(body.as_bytes()) {
        return Err("checksum mismatch");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_round_trips_and_every_flipped_bit_is_caught() {
        let body = "0\n2\nlikes 0 42\nlikes 1 7\n";
        let sealed = seal_text(body);
        assert_eq!(unseal_text(&sealed), Ok(body));
        assert_eq!(unseal_text(&seal_text("")), Ok(""));
        let bytes = sealed.as_bytes();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.to_vec();
            b[i / 8] ^= 1 << (i % 8);
            // A flip may make the bytes invalid UTF-8, which a reader refuses before this.
            if let Ok(text) = std::str::from_utf8(&b) {
                assert!(unseal_text(text).is_err(), "bit {i} flipped went unnoticed");
            }
        }
        for cut in 0..bytes.len() {
            assert!(unseal_text(&sealed[..cut]).is_err(), "cut at {cut}");
        }
    }
}
