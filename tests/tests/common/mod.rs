//! The child-process harness the crash tests share (`mod common;` in each).
//!
//! There is no extra binary: a test binary re-executes itself with `--exact <child test>` and
//! [`DIR_ENV`] set. Child tests do their work only when that variable is set, and are no-ops
//! in a normal test run. A child prints one `ack ...` line to stdout after each operation
//! returns ([`ack`]); the parent ([`run_child`]) reads those lines, kills the child with
//! SIGKILL as a [`Kill`] says, and checks the log against what was acknowledged.
#![allow(
    dead_code,
    reason = "each crash test binary compiles this module and uses a different part of it"
)]
#![allow(
    clippy::unwrap_used,
    reason = "clippy.toml lets #[test] fns unwrap; the helpers here are test code too"
)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use core_log::{IsolationLevel, Log, LogBuilder};

/// Set in a child: the log directory. Its presence makes the child tests run.
pub const DIR_ENV: &str = "MOLDAU_CRASH_CHILD_DIR";
/// Seeds the child's (and, if set in the parent's environment, the parent's) randomness.
pub const SEED_ENV: &str = "MOLDAU_CRASH_SEED";
/// The number of the child's run, to make what it writes unique across runs.
pub const RUN_ENV: &str = "MOLDAU_CRASH_RUN";

pub const SIGKILL: i32 = 9;

/// When the parent kills a child.
#[derive(Clone, Copy, Debug)]
pub enum Kill {
    /// Right after `spawn` returns: during exec, start-up or opening (recovering) the log.
    AtSpawn,
    /// This many milliseconds after spawning.
    AfterSpawn(u64),
    /// This many milliseconds after the child's first acknowledgement.
    AfterFirstAck(u64),
    /// As soon as the child acknowledges exactly `ack` (without the `ack ` prefix), or after
    /// `within` if it does not: the caller checks which by looking at the acknowledgements.
    AtAck { ack: &'static str, within: Duration },
}

impl Kill {
    /// One of the first three kinds: 10% at spawn, 40% up to `max_ms` after spawning, 50% up
    /// to `max_ms / 2` after the first acknowledgement.
    pub fn random(rng: &mut fastrand::Rng, max_ms: u64) -> Kill {
        match rng.u32(0..10) {
            0 => Kill::AtSpawn,
            1..=4 => Kill::AfterSpawn(rng.u64(1..=max_ms)),
            _ => Kill::AfterFirstAck(rng.u64(0..=max_ms / 2)),
        }
    }
}

/// What a killed child printed.
pub struct ChildRun {
    /// The `ack` lines, without the `ack ` prefix, in the order printed.
    pub acks: Vec<String>,
}

/// Runs the child test `test` on `dir` with extra environment `env`, kills it as `kill` says,
/// and returns its acknowledgements. Fails if the child exited by itself (a panic in it).
pub fn run_child(test: &str, dir: &Path, env: &[(&str, String)], kill: Kill) -> ChildRun {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, OsStr::new(v));
    }
    let mut child = cmd.spawn().unwrap();

    let stdout = child.stdout.take().unwrap();
    // Every acknowledgement, as it arrives; the sender is dropped at the end of the output.
    let (ack_tx, ack_rx) = mpsc::channel::<String>();
    let out_reader = thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            assert!(
                line.starts_with("ack ") || !line.contains("ack "),
                "an acknowledgement was not on a line of its own: {line:?}"
            );
            if let Some(ack) = line.strip_prefix("ack ") {
                let _ = ack_tx.send(ack.to_string());
                acks.push(ack.to_string());
            }
        }
        acks
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    match kill {
        Kill::AtSpawn => {}
        Kill::AfterSpawn(ms) => thread::sleep(Duration::from_millis(ms)),
        Kill::AfterFirstAck(ms) => {
            // Returns early if the child dies first.
            let _ = ack_rx.recv_timeout(Duration::from_secs(30));
            thread::sleep(Duration::from_millis(ms));
        }
        Kill::AtAck { ack, within } => {
            let deadline = Instant::now() + within;
            while let Ok(a) =
                ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                if a == ack {
                    break;
                }
            }
        }
    }
    // Child::kill sends SIGKILL; it fails only if the child was already reaped (it is not).
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let acks = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "the child must run until killed, but it ended with {status}; stderr:\n{stderr}"
    );
    ChildRun { acks }
}

/// Ends the test harness's `test <name> ... ` line, so that acknowledgements start a line.
pub fn start_acks() {
    let mut out = std::io::stdout().lock();
    out.write_all(b"\n").unwrap();
    out.flush().unwrap();
}

/// Prints one `ack` line in a single write (so that a kill cannot tear it) and flushes.
pub fn ack(line: std::fmt::Arguments<'_>) {
    let line = format!("ack {line}\n");
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).unwrap();
    out.flush().unwrap();
}

/// The parent's seed: [`SEED_ENV`] if set, else the time.
pub fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => s.parse().unwrap(),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// Opens the log in `dir`, built by `configure(Log::builder(dir))`, retrying `LogDirLocked`
/// for a while.
///
/// The lock is an `flock` on an open file, and while one test's thread has a log open,
/// another test's thread may fork to spawn its child: until that forked process execs (and
/// its close-on-exec descriptors go), it shares the lock.
pub fn open_retrying(dir: &Path, configure: impl Fn(LogBuilder) -> LogBuilder) -> Log {
    for _ in 0..1000 {
        match configure(Log::builder(dir)).open() {
            Err(core_log::Error::LogDirLocked { .. }) => thread::sleep(Duration::from_millis(10)),
            res => return res.unwrap(),
        }
    }
    panic!("{} stayed locked for 10 s", dir.display());
}

/// Closes the log cleanly, then strips its clean-shutdown marker and recovery points: the
/// next open recovers every segment as after a crash.
pub fn close_dirty(log: Log) {
    let dir = log.dir().to_path_buf();
    log.close().unwrap();
    std::fs::remove_file(dir.join("clean-shutdown")).unwrap();
    std::fs::remove_file(dir.join("recovery-point-offset-checkpoint")).unwrap();
}

/// A record's key and value as read.
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record of `topic` partition `p` that a read_committed reader sees, as (key, value).
pub fn read_committed(log: &Log, topic: &str, p: u32) -> Vec<KeyValue> {
    let part = log.partition(topic, p).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut offset = part.log_start_offset().unwrap();
    while offset < part.last_stable_offset().unwrap() {
        let fetch = part
            .read_into_isolated(offset, 1 << 20, &mut buf, IsolationLevel::ReadCommitted)
            .unwrap();
        for r in fetch.committed_records() {
            out.push((r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
        }
        let next = fetch.next_offset();
        assert!(next > offset, "no progress reading {topic}/{p} at {offset}");
        offset = next;
    }
    out
}

/// Runs the child test `test` on `dir` `kills` times, each killed at a random moment (up to
/// `max_kill_ms`), then once more until it acknowledges `done`. The children get the run
/// number and `seed` in their environment. Returns how many killed runs had acknowledged
/// `running` (were killed while the work ran).
pub fn kill_repeatedly(test: &str, dir: &Path, kills: u32, max_kill_ms: u64, seed: u64) -> u32 {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut killed_running = 0;
    for run in 0..=kills {
        let last = run == kills;
        let kill = if last {
            Kill::AtAck {
                ack: "done",
                within: Duration::from_secs(60),
            }
        } else {
            Kill::random(&mut rng, max_kill_ms)
        };
        let env = [(RUN_ENV, run.to_string()), (SEED_ENV, seed.to_string())];
        let child = run_child(test, dir, &env, kill);
        if last {
            assert!(
                child.acks.iter().any(|a| a == "done"),
                "the last run did not finish: {:?}",
                child.acks
            );
        } else {
            killed_running += u32::from(child.acks.iter().any(|a| a == "running"));
        }
    }
    killed_running
}
