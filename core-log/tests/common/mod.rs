//! Helpers shared by the integration tests (`mod common;` in each test file).

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use core_log::{FlushPolicy, Log, ManualClock};

/// A fixed "now" for manual clocks: 2023-11-14.
pub const NOW: i64 = 1_700_000_000_000;

/// Opens a log driven by `clock`, fsyncing every append, with no maintenance thread: tests
/// call retention and compaction themselves.
pub fn open_at(dir: &Path, clock: &ManualClock) -> Log {
    Log::builder(dir)
        .clock(clock.clone())
        .flush_policy(FlushPolicy::EveryAppend)
        .background_maintenance(false)
        .open()
        .unwrap()
}

/// [`open_at`] with a clock standing at [`NOW`].
pub fn open(dir: &Path) -> Log {
    open_at(dir, &ManualClock::new(NOW))
}

/// Makes the next open recover every segment, as after a crash: removes the clean-shutdown
/// marker and the recovery-point checkpoint a clean close left.
pub fn simulate_crash(dir: &Path) {
    std::fs::remove_file(dir.join("clean-shutdown")).unwrap();
    std::fs::remove_file(dir.join("recovery-point-offset-checkpoint")).unwrap();
}

/// Deterministic xorshift generator: tests must be reproducible.
pub struct Rng(pub u64);

impl Rng {
    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
