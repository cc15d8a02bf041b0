//! Crash tests: a child process appending with `FlushPolicy::EveryAppend` (or creating and
//! growing topics) is killed with SIGKILL at random moments; after every restart, everything
//! it acknowledged must be on disk, exactly once and in order.
//!
//! There is no extra binary: the test binary re-executes itself with `--exact <child test>`
//! and `MOLDAU_CRASH_CHILD_DIR` set. The child tests do their work only when that variable is
//! set, and are no-ops in a normal test run. The child prints one `ack ...` line to stdout
//! after each operation returns; the parent reads those lines, kills the child, reopens the
//! log itself and checks it against what was acknowledged.
//!
//! The seed is printed (shown when a test fails); `MOLDAU_CRASH_SEED=<n>` replays the same
//! choices of batches and kill delays (the kill moments themselves depend on the scheduler).
#![allow(
    clippy::unwrap_used,
    reason = "clippy.toml lets #[test] fns unwrap; the helpers here are test code too"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;

use core_log::{FlushPolicy, Log, Partition, Record, TopicConfig};

mod common;
use common::{
    DIR_ENV, Kill, RUN_ENV, SEED_ENV, ack, close_dirty, open_retrying, run_child, seed, start_acks,
};

/// Child of the append test: per partition, the sequence the log must at least reach
/// (highest acknowledged + 1), comma-separated.
const MIN_NEXT_ENV: &str = "MOLDAU_CRASH_MIN_NEXT";

const TOPIC: &str = "crash";
const PARTITIONS: u32 = 3;
const SEGMENT_BYTES: u32 = 64 * 1024;
/// Bytes of padding per record value, so that segments roll after a few hundred records.
const PADDING: usize = 96;

/// Opens the log in `dir`: as a child (`EveryAppend`, background maintenance on) or as the
/// parent checking it (defaults, no maintenance).
fn open_log(dir: &Path, child: bool) -> Log {
    open_retrying(dir, |b| {
        if child {
            b.flush_policy(FlushPolicy::EveryAppend)
        } else {
            b.background_maintenance(false)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Appends

fn encode(partition: u32, seq: i64) -> Vec<u8> {
    let mut v = format!("{partition}:{seq}:").into_bytes();
    v.resize(v.len() + PADDING, b'.');
    v
}

fn decode(value: &[u8]) -> (u32, i64) {
    let text = std::str::from_utf8(value).unwrap();
    let mut it = text.split(':');
    let (Some(p), Some(s), Some(pad), None) = (it.next(), it.next(), it.next(), it.next()) else {
        panic!("malformed record value {text:?}");
    };
    assert_eq!(pad.len(), PADDING, "record value {text:?} lost its padding");
    (p.parse().unwrap(), s.parse().unwrap())
}

/// The sequence number of the partition's last record, if it has any.
fn last_sequence(part: &Partition) -> Option<i64> {
    let end = part.log_end_offset().unwrap();
    if end == 0 {
        return None;
    }
    let fetch = part.read(end - 1, 1).unwrap();
    let last = fetch
        .records()
        .last()
        .expect("the record below the log end");
    assert_eq!(last.offset, end - 1);
    Some(decode(last.value.unwrap()).1)
}

/// Reads partition `p` from start to end and checks that the record at offset `o` is
/// sequence `o` of partition `p`: no gap, no duplicate, in order. Returns the record count.
fn verify_sequences(log: &Log, p: u32) -> i64 {
    let part = log.partition(TOPIC, p).unwrap();
    assert_eq!(part.log_start_offset().unwrap(), 0, "partition {p}");
    let end = part.log_end_offset().unwrap();
    let mut next = 0;
    while next < end {
        let fetch = part.read(next, 256 * 1024).unwrap();
        for r in fetch.records() {
            assert_eq!(r.offset, next, "partition {p}: offsets out of order");
            let (rp, seq) = decode(r.value.unwrap());
            assert_eq!(
                (rp, seq),
                (p, next),
                "partition {p} offset {next} holds (partition, sequence) ({rp}, {seq})"
            );
            next += 1;
        }
        assert_eq!(
            fetch.next_offset(),
            next,
            "partition {p}: a read from below the log end {end} returned no records"
        );
    }
    end
}

/// The child of [`acknowledged_appends_survive_sigkill`]: appends batches of 1-20 records to
/// random partitions of topic `crash` until killed, acknowledging each as
/// `ack <partition> <first seq> <last seq>` once `append` has returned.
#[test]
fn crash_child_append() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    start_acks();
    let mut rng = fastrand::Rng::with_seed(std::env::var(SEED_ENV).unwrap().parse().unwrap());
    let min_next: Vec<i64> = std::env::var(MIN_NEXT_ENV)
        .unwrap()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let log = open_log(Path::new(&dir), true);
    if !log.topics().iter().any(|t| t == TOPIC) {
        log.create_topic(
            TOPIC,
            PARTITIONS,
            TopicConfig::default().segment_bytes(SEGMENT_BYTES),
        )
        .unwrap();
    }
    let parts: Vec<Partition> = (0..PARTITIONS)
        .map(|p| log.partition(TOPIC, p).unwrap())
        .collect();
    // Resume each partition's sequence where the log left off, after checking (this is a
    // restart too) that nothing acknowledged was lost.
    let mut next: Vec<i64> = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        let end = part.log_end_offset().unwrap();
        let resume = last_sequence(part).map_or(0, |s| s + 1);
        assert_eq!(resume, end, "partition {p}: last sequence vs log end");
        assert!(
            end >= min_next[p],
            "partition {p} lost acknowledged records: log end {end}, acknowledged up to {}",
            min_next[p] - 1
        );
        next.push(resume);
    }
    let mut values: Vec<Vec<u8>> = Vec::new();
    loop {
        let p = rng.usize(..parts.len());
        let n = rng.i64(1..=20);
        values.clear();
        values.extend((next[p]..next[p] + n).map(|s| encode(p as u32, s)));
        let records: Vec<Record<'_>> = values
            .iter()
            .map(|v| Record::new(None, Some(v.as_slice())))
            .collect();
        let info = parts[p].append(&records).unwrap();
        assert_eq!(
            (info.base_offset, info.last_offset),
            (next[p], next[p] + n - 1)
        );
        next[p] += n;
        ack(format_args!(
            "{p} {} {}",
            info.base_offset, info.last_offset
        ));
    }
}

/// The durability promise of `FlushPolicy::EveryAppend` across process crashes: a child
/// appending to a 3-partition topic (64 KiB segments) is SIGKILLed at random moments, 100
/// times. After each kill the log is reopened (recovered) and every partition must
/// hold sequences `0..n` at offsets `0..n` (no gap, no duplicate, in order) with every
/// acknowledged sequence below `n`. Unacknowledged records at the tail may or may not be
/// there. Some runs are not verified by the parent (the next child recovers the crashed log
/// itself, and checks what it finds), and some verifications leave the log to be recovered
/// again, as after a crash.
#[test]
fn acknowledged_appends_survive_sigkill() {
    /// Kills at least; more (up to 3x) if the run has not yet exercised enough.
    const KILLS: u64 = 100;
    const MIN_RECORDS_ACKED: i64 = 2_000;
    const MIN_RUNS_WITH_ACKS: u64 = 30;
    let seed = seed();
    println!("seed {seed} ({SEED_ENV}={seed} to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();

    // Per partition: highest acknowledged sequence + 1.
    let mut acked_next = vec![0i64; PARTITIONS as usize];
    let mut records_acked = 0i64;
    let mut runs_with_acks = 0;
    let mut verified = 0;
    let mut kills = 0;
    while kills < KILLS
        || (kills < 3 * KILLS
            && (records_acked < MIN_RECORDS_ACKED
                || runs_with_acks < MIN_RUNS_WITH_ACKS
                || segment_counts(dir.path()).iter().all(|&s| s < 2)))
    {
        let i = kills;
        kills += 1;
        let kill = Kill::random(&mut rng, 80);
        let min_next = acked_next
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let run = run_child(
            "crash_child_append",
            dir.path(),
            &[
                (SEED_ENV, rng.u64(..).to_string()),
                (MIN_NEXT_ENV, min_next),
            ],
            kill,
        );

        // Within one run, a partition's acknowledgements are contiguous and start at or after
        // everything acknowledged before.
        let mut run_next: Vec<Option<i64>> = vec![None; PARTITIONS as usize];
        for a in &run.acks {
            let f: Vec<i64> = a.split(' ').map(|x| x.parse().unwrap()).collect();
            let [p, first, last] = f[..] else {
                panic!("malformed ack {a:?}");
            };
            let p = p as usize;
            match run_next[p] {
                Some(n) => assert_eq!(first, n, "run {i}: partition {p} acks not contiguous"),
                None => assert!(
                    first >= acked_next[p],
                    "run {i}: partition {p} reused a sequence"
                ),
            }
            assert!(last >= first);
            run_next[p] = Some(last + 1);
            records_acked += last - first + 1;
        }
        for (p, n) in run_next.iter().enumerate() {
            if let Some(n) = *n {
                acked_next[p] = acked_next[p].max(n);
            }
        }
        runs_with_acks += u64::from(!run.acks.is_empty());

        // Every fifth run, the next child recovers the crashed log without the parent looking
        // (the child checks what it finds against what was acknowledged).
        if i % 5 == 3 {
            continue;
        }
        verify_appends(
            dir.path(),
            &acked_next,
            &format!("run {i} ({kill:?})"),
            i % 4 == 1,
        );
        verified += 1;
    }
    let records_found = verify_appends(dir.path(), &acked_next, "after the last run", false);

    let segments = segment_counts(dir.path());
    println!(
        "{kills} kills ({runs_with_acks} after acknowledgements), {verified} verified reopens, \
         {records_acked} records acknowledged, {records_found} found, segments per partition {segments:?}"
    );
    // The run must have exercised something: many acknowledged appends, over rolled segments.
    assert!(
        runs_with_acks >= MIN_RUNS_WITH_ACKS,
        "only {runs_with_acks} children got to append"
    );
    assert!(
        records_acked >= MIN_RECORDS_ACKED,
        "only {records_acked} records acknowledged"
    );
    assert!(
        segments.iter().any(|&s| s > 1),
        "no segment rolled: {segments:?}"
    );
}

/// Opens the log in `dir` (recovering it if needed) and checks every partition of `crash`
/// against [`verify_sequences`] and the acknowledged sequences; closes it cleanly, or leaves it
/// to be recovered again if `dirty`. Returns the number of records found.
fn verify_appends(dir: &Path, acked_next: &[i64], when: &str, dirty: bool) -> i64 {
    let log = open_log(dir, false);
    let mut found = 0;
    if log.topics().is_empty() {
        // Killed before the topic's creation committed: nothing may have been acknowledged.
        assert!(
            acked_next.iter().all(|&n| n == 0),
            "{when}: the topic is gone"
        );
    } else {
        assert_eq!(log.topics(), vec![TOPIC.to_string()], "{when}");
        for p in 0..PARTITIONS {
            let n = verify_sequences(&log, p);
            assert!(
                n >= acked_next[p as usize],
                "{when}: partition {p} has {n} records but sequence {} was acknowledged",
                acked_next[p as usize] - 1
            );
            found += n;
        }
    }
    if dirty {
        close_dirty(log);
    } else {
        log.close().unwrap();
    }
    found
}

/// The number of segment files in each partition directory of `crash`.
fn segment_counts(dir: &Path) -> Vec<usize> {
    (0..PARTITIONS)
        .map(
            |p| match std::fs::read_dir(dir.join(format!("{TOPIC}-{p}"))) {
                Ok(entries) => entries
                    .filter(|e| e.as_ref().unwrap().path().extension() == Some(OsStr::new("log")))
                    .count(),
                Err(_) => 0,
            },
        )
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Topic creation and growth

/// The child of [`topic_changes_survive_sigkill`]: until killed, creates topics `r<run>_<k>`
/// with 1-3 partitions, grows random topics by 1-2 partitions, deletes the oldest topic when
/// there are more than 10, and appends one record `<topic>/<partition>` to each new
/// partition. Acknowledges `created|grown <topic> <count>`, `deleting <topic>` (before),
/// `deleted <topic>` and `record <topic> <partition>` (after).
#[test]
fn crash_child_topics() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    start_acks();
    let mut rng = fastrand::Rng::with_seed(std::env::var(SEED_ENV).unwrap().parse().unwrap());
    let run = std::env::var(RUN_ENV).unwrap();
    let log = open_log(Path::new(&dir), true);
    for k in 0.. {
        let topics = log.topics();
        let (name, old, new) = if topics.len() > 10 && rng.u32(0..3) == 0 {
            // Topic names sort by run, so the first one is the oldest.
            let victim = &topics[0];
            ack(format_args!("deleting {victim}"));
            log.delete_topic(victim).unwrap();
            ack(format_args!("deleted {victim}"));
            continue;
        } else if topics.is_empty() || rng.bool() {
            let name = format!("r{run}_{k}");
            let n = rng.u32(1..=3);
            log.create_topic(&name, n, TopicConfig::default()).unwrap();
            ack(format_args!("created {name} {n}"));
            (name, 0, n)
        } else {
            let name = topics[rng.usize(..topics.len())].clone();
            let old = log.partition_count(&name).unwrap();
            let new = old + rng.u32(1..=2);
            log.create_partitions(&name, new).unwrap();
            ack(format_args!("grown {name} {new}"));
            (name, old, new)
        };
        for p in old..new {
            let value = format!("{name}/{p}");
            log.partition(&name, p)
                .unwrap()
                .append(&[Record::new(None, Some(value.as_bytes()))])
                .unwrap();
            ack(format_args!("record {name} {p}"));
        }
    }
}

/// What the topic child acknowledged, folded over runs.
#[derive(Default)]
struct TopicModel {
    /// Topics whose creation was acknowledged: the acknowledged partition count.
    live: BTreeMap<String, u32>,
    /// Topics whose deletion began but was not acknowledged: present or gone.
    deleting: BTreeSet<String>,
    /// Topics whose deletion was acknowledged.
    deleted: BTreeSet<String>,
    /// Partitions whose one record was acknowledged.
    records: BTreeSet<(String, u32)>,
    /// Acknowledged partition growths.
    growths: usize,
    /// Every acknowledgement, with its run, for failure messages.
    history: Vec<(u32, String)>,
}

impl TopicModel {
    fn apply(&mut self, run: u32, ack: &str) {
        self.history.push((run, ack.to_string()));
        let f: Vec<&str> = ack.split(' ').collect();
        match f[..] {
            ["created" | "grown", name, n] => {
                self.live.insert(name.to_string(), n.parse().unwrap());
                self.growths += usize::from(f[0] == "grown");
            }
            ["deleting", name] => {
                self.deleting.insert(name.to_string());
            }
            ["deleted", name] => {
                self.deleting.remove(name);
                self.live.remove(name);
                self.deleted.insert(name.to_string());
            }
            ["record", name, p] => {
                self.records.insert((name.to_string(), p.parse().unwrap()));
            }
            _ => panic!("malformed ack {ack:?}"),
        }
    }

    fn history_of(&self, name: &str) -> Vec<&(u32, String)> {
        self.history
            .iter()
            .filter(|(_, a)| a.split(' ').nth(1) == Some(name))
            .collect()
    }

    /// Checks the reopened log against what was acknowledged, then forgets the in-doubt
    /// deletions in favour of what the log holds.
    /// Returns the partition directories there are.
    fn verify(&mut self, log: &Log, dir: &Path, run: u32) -> BTreeSet<String> {
        let topics = log.topics();
        let counts: BTreeMap<String, u32> = topics
            .iter()
            .map(|t| (t.clone(), log.partition_count(t).unwrap()))
            .collect();
        for (name, &acked) in &self.live {
            match counts.get(name) {
                Some(&n) => assert!(
                    n >= acked,
                    "run {run}: {name} has {n} partitions, {acked} acknowledged"
                ),
                None => assert!(
                    self.deleting.contains(name),
                    "run {run}: acknowledged topic {name} is gone; its history: {:?}",
                    self.history_of(name)
                ),
            }
        }
        for name in &self.deleted {
            assert!(
                !counts.contains_key(name),
                "run {run}: deleted topic {name} is back"
            );
        }
        // Every topic opens and reads: each partition holds at most its one record.
        for (name, &n) in &counts {
            for p in 0..n {
                let part = log.partition(name, p).unwrap();
                let end = part.log_end_offset().unwrap();
                assert!(end <= 1, "run {run}: {name}-{p} has {end} records");
                let values: Vec<Vec<u8>> = part
                    .read(0, 1 << 20)
                    .unwrap()
                    .records()
                    .map(|r| r.value.unwrap().to_vec())
                    .collect();
                assert_eq!(values.len() as i64, end, "run {run}: {name}-{p}");
                for v in values {
                    assert_eq!(v, format!("{name}/{p}").into_bytes(), "run {run}");
                }
                if self.records.contains(&(name.clone(), p)) {
                    assert_eq!(end, 1, "run {run}: acknowledged record in {name}-{p} lost");
                }
            }
        }
        // The manifest is the commit point: no directory of an uncommitted or deleted
        // partition survives the reopen, and every committed partition has its directory.
        let expected: BTreeSet<String> = counts
            .iter()
            .flat_map(|(name, &n)| (0..n).map(move |p| format!("{name}-{p}")))
            .collect();
        assert_eq!(subdirs(dir), expected, "run {run}: partition directories");

        for name in std::mem::take(&mut self.deleting) {
            if !counts.contains_key(&name) {
                self.live.remove(&name);
                self.deleted.insert(name);
            }
        }
        expected
    }
}

/// The names of the directories in `dir`.
fn subdirs(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect()
}

/// Topic creation, partition growth and deletion across process crashes: a child changing
/// topics is SIGKILLed 20 times. After each kill every topic in `topics()` opens and reads,
/// every acknowledged creation, growth, deletion and record holds, and no partition directory
/// exists that the manifest does not name.
#[test]
fn topic_changes_survive_sigkill() {
    /// Kills at least; more (up to 3x) if no growth or deletion was acknowledged yet.
    const KILLS: u32 = 20;
    const MIN_ACKS: usize = 50;
    let seed = seed();
    println!("seed {seed} ({SEED_ENV}={seed} to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut model = TopicModel::default();
    let mut acks = 0;
    let mut orphans_removed = 0;
    let mut run = 0;
    while run < KILLS
        || (run < 3 * KILLS && (acks < MIN_ACKS || model.growths == 0 || model.deleted.is_empty()))
    {
        let kill = Kill::random(&mut rng, 60);
        let child = run_child(
            "crash_child_topics",
            dir.path(),
            &[
                (SEED_ENV, rng.u64(..).to_string()),
                (RUN_ENV, format!("{run:02}")),
            ],
            kill,
        );
        acks += child.acks.len();
        for a in &child.acks {
            model.apply(run, a);
        }
        // Directories of partitions a crash left uncommitted (or deleted but not removed).
        let before = subdirs(dir.path());
        let log = open_log(dir.path(), false);
        let live = model.verify(&log, dir.path(), run);
        orphans_removed += before.difference(&live).count();
        if run % 4 == 1 {
            close_dirty(log);
        } else {
            log.close().unwrap();
        }
        run += 1;
    }
    println!(
        "{run} kills, {acks} acknowledgements, {} topics acknowledged live, {} growths, {} deleted, \
         {orphans_removed} orphan partition directories removed on reopen",
        model.live.len(),
        model.growths,
        model.deleted.len()
    );
    assert!(acks >= MIN_ACKS, "only {acks} topic changes acknowledged");
    assert!(model.growths > 0, "no partition growth acknowledged");
    assert!(!model.deleted.is_empty(), "no deletion acknowledged");
    assert!(!model.live.is_empty());
}
