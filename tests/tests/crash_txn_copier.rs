//! Crash test of exactly-once read-process-write, shaped like Kafka's `TransactionsTest`
//! (a transactional copier bounced while it copies) and Jepsen's queue checks (nothing lost,
//! nothing duplicated, nothing aborted ever seen).
//!
//! ```text
//!  parent: in (2 partitions, 50,000 records each)  out (3 partitions)
//!     │ spawn, SIGKILL at a random moment, 30 times; then once more after `ack done`
//!     ▼
//!  child run r:  copier   group "copier", read_committed ── poll ≤ 750 ──┐
//!                         transactional.id "copier"                      │ begin
//!                         "<value>@<r>.<n>" to out, same key  ◄──────────┘ send ...
//!                         input offsets in the transaction                 send_offsets
//!                         `ack commit <n> <partition>:<first>-<last> ..`    commit
//!                reader   read_committed, all of out from the start ──► seen-<r>.txt
//! ```
//!
//! A kill leaves an open transaction (its records are in `out`, not yet committed or
//! aborted) or a half-done commit; the next child's `init_transactions` must resolve it.
//! The output value carries the run and transaction number, so a copy from an aborted
//! transaction is told apart from the committed copy of the same input.
//!
//! At the end the parent reads `out` with read_committed and checks: the input parts of the
//! output values are the input set (no loss) with no duplicate, in order per input partition;
//! every acknowledged commit's copies are the ones there; the group's committed offsets are
//! at the end of `in`; and every reader, in every run, saw a prefix of the final committed
//! output of each partition (so never an aborted or uncommitted record, nor a gap).
//!
//! The seed is printed (shown when the test fails); `MOLDAU_CRASH_SEED=<n>` replays the same
//! kill kinds and delays (the kill moments themselves depend on the scheduler).
#![allow(
    clippy::unwrap_used,
    reason = "clippy.toml lets #[test] fns unwrap; the helpers here are test code too"
)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use core_log::serialization::StringSerde;
use core_log::{
    Admin, AutoOffsetReset, Consumer, ConsumerConfig, IsolationLevel, Log, LogBuilder,
    OffsetAndMetadata, Producer, ProducerConfig, ProducerRecord, Record, TopicConfig,
    TopicPartition,
};

mod common;
use common::{
    DIR_ENV, Kill, RUN_ENV, SEED_ENV, ack, close_dirty, open_retrying, run_child, seed, start_acks,
};

const INPUT: &str = "in";
const OUTPUT: &str = "out";
const INPUT_PARTITIONS: u32 = 2;
const OUTPUT_PARTITIONS: u32 = 3;
const PER_PARTITION: i64 = 50_000;
const GROUP: &str = "copier";
const TRANSACTIONAL_ID: &str = "copier";
const MAX_POLL_RECORDS: usize = 750;
/// How long the copier waits inside each transaction, between its sends and the commit.
/// It spreads the copy (134 transactions, at least 1.3 s of copying) over the random kills
/// (on a 2-core machine, 26 to 30 of the 30 hit a copier that is copying), and makes most
/// kills land in an open transaction whose records are already in `out`: the case the next
/// run's `init_transactions` must abort.
const TXN_PAUSE: Duration = Duration::from_millis(10);
/// The random kills; one more ends the run that finishes the copy.
const KILLS: u32 = 30;
/// The longest random kill delay (see [`Kill::random`]).
const MAX_KILL_MS: u64 = 150;
/// How long the last run may take to finish the copy.
const FINISH_WITHIN: Duration = Duration::from_secs(60);

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// The input value at `offset` of input partition `p`.
fn input_value(p: u32, offset: i64) -> String {
    format!("{p}-{offset:05}")
}

/// Splits an input value into (partition, offset).
fn parse_input(v: &str) -> (u32, i64) {
    let (p, o) = v
        .split_once('-')
        .unwrap_or_else(|| panic!("malformed input value {v:?}"));
    (p.parse().unwrap(), o.parse().unwrap())
}

/// Both processes open the log with small internal topics; the child keeps the default
/// `FlushPolicy::Never` (a SIGKILL keeps the page cache) and background maintenance.
fn log_builder(b: LogBuilder) -> LogBuilder {
    b.offsets_topic_num_partitions(4)
        .transaction_state_log_num_partitions(4)
}

/// The seen-file of run `run`'s reader, next to the log directory.
fn seen_path(log_dir: &Path, run: u32) -> PathBuf {
    log_dir.parent().unwrap().join(format!("seen-{run:02}.txt"))
}

fn read_committed_reader(log: &Log) -> Consumer<String, String> {
    let config = ConsumerConfig::default()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted);
    let mut c = Consumer::new(log, config, StringSerde, StringSerde).unwrap();
    let all: Vec<_> = (0..OUTPUT_PARTITIONS).map(|p| tp(OUTPUT, p)).collect();
    c.assign(&all).unwrap();
    c
}

// ---------------------------------------------------------------------------------------------
// The child

/// The child of [`transactional_copier_survives_sigkill`]: the copier and the reader, until
/// killed. Acknowledges `commit <n> <partition>:<first>-<last> ...` after each committed
/// transaction (its input offsets per partition) and `done` once the group's committed
/// offsets reach the end of both input partitions.
#[test]
fn crash_child_copier() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    start_acks();
    let dir = PathBuf::from(dir);
    let run: u32 = std::env::var(RUN_ENV).unwrap().parse().unwrap();
    let log = open_retrying(&dir, log_builder);

    let reader = {
        let log = log.clone();
        let path = seen_path(&dir, run);
        thread::spawn(move || read_all_committed(&log, &path))
    };

    let config = ProducerConfig::default()
        .transactional_id(TRANSACTIONAL_ID)
        .linger_ms(1);
    let producer: Producer<str, str> =
        Producer::new(&log, config, StringSerde, StringSerde).unwrap();
    // First, as in Kafka: fences the killed run's producer and aborts (or completes) the
    // transaction it left, releasing its pending offsets before the consumer fetches them.
    producer.init_transactions().unwrap();

    let config = ConsumerConfig::default()
        .group_id(GROUP)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .isolation_level(IsolationLevel::ReadCommitted)
        .max_poll_records(MAX_POLL_RECORDS);
    let mut consumer: Consumer<String, String> =
        Consumer::new(&log, config, StringSerde, StringSerde).unwrap();
    consumer.subscribe(&[INPUT]).unwrap();
    let inputs: Vec<TopicPartition> = (0..INPUT_PARTITIONS).map(|p| tp(INPUT, p)).collect();

    let mut done = false;
    let mut txn_number = 0u32;
    loop {
        if reader.is_finished() {
            // It loops until killed: it ended only by panicking.
            match reader.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the reader returned"),
            }
        }
        if done {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        let records = consumer.poll(Duration::from_millis(20)).unwrap();
        if !records.is_empty() {
            txn_number += 1;
            let txn = producer.begin_transaction().unwrap();
            // Input partition -> (first, last) offset copied.
            let mut ranges: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
            let mut out = String::new();
            for r in &records {
                out.clear();
                write!(out, "{}@{run}.{txn_number}", r.value.as_deref().unwrap()).unwrap();
                // Not waited for one by one: `commit` flushes, and fails if a record failed.
                let _delivery = txn
                    .send(
                        ProducerRecord::new(OUTPUT)
                            .key(r.key.as_deref().unwrap())
                            .value(out.as_str()),
                    )
                    .unwrap();
                ranges
                    .entry(r.partition)
                    .and_modify(|e| e.1 = r.offset)
                    .or_insert((r.offset, r.offset));
            }
            thread::sleep(TXN_PAUSE);
            let offsets: Vec<_> = ranges
                .iter()
                .map(|(&p, &(_, last))| (tp(INPUT, p), OffsetAndMetadata::new(last + 1)))
                .collect();
            txn.send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap())
                .unwrap();
            txn.commit().unwrap();
            let mut line = format!("commit {txn_number}");
            for (p, (first, last)) in &ranges {
                write!(line, " {p}:{first}-{last}").unwrap();
            }
            ack(format_args!("{line}"));
        }
        let committed = consumer.committed(&inputs).unwrap();
        if committed
            .values()
            .all(|o| o.as_ref().is_some_and(|o| o.offset == PER_PARTITION))
        {
            ack(format_args!("done"));
            done = true;
        }
    }
}

/// The reader thread: reads all of `out` with read_committed from the start, and appends
/// `<partition> <offset> <value>` for every record to `path` after each poll (one write per
/// poll; a kill can only cut the last line short). Returns only by panicking.
fn read_all_committed(log: &Log, path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let mut reader = read_committed_reader(log);
    let mut buf = String::new();
    loop {
        let records = reader.poll(Duration::from_millis(50)).unwrap();
        buf.clear();
        for r in &records {
            writeln!(
                buf,
                "{} {} {}",
                r.partition,
                r.offset,
                r.value.as_deref().unwrap()
            )
            .unwrap();
        }
        // An unbuffered file: once written, the lines survive a SIGKILL (page cache).
        file.write_all(buf.as_bytes()).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The parent

/// An acknowledged commit: its run and transaction number, and per input partition the
/// offsets copied.
struct AckedCommit {
    run: u32,
    txn: u32,
    ranges: Vec<(u32, i64, i64)>,
}

impl AckedCommit {
    fn parse(run: u32, ack: &str) -> AckedCommit {
        let mut f = ack.split(' ');
        assert_eq!(f.next(), Some("commit"), "malformed ack {ack:?}");
        let txn = f.next().unwrap().parse().unwrap();
        let ranges = f
            .map(|r| {
                let (p, span) = r.split_once(':').unwrap();
                let (first, last) = span.split_once('-').unwrap();
                (
                    p.parse().unwrap(),
                    first.parse().unwrap(),
                    last.parse().unwrap(),
                )
            })
            .collect();
        AckedCommit { run, txn, ranges }
    }
}

/// Creates the log in `dir`: `in` filled, `out` empty.
fn create_log(dir: &Path) {
    let log = open_retrying(dir, |b| log_builder(b).background_maintenance(false));
    log.create_topic(INPUT, INPUT_PARTITIONS, TopicConfig::default())
        .unwrap();
    log.create_topic(OUTPUT, OUTPUT_PARTITIONS, TopicConfig::default())
        .unwrap();
    for p in 0..INPUT_PARTITIONS {
        let part = log.partition(INPUT, p).unwrap();
        // The key is the input partition: each input partition's copies go to one output
        // partition, where their order can be checked.
        let key = p.to_string();
        let mut offset = 0;
        while offset < PER_PARTITION {
            let values: Vec<String> = (offset..PER_PARTITION.min(offset + 1_000))
                .map(|o| input_value(p, o))
                .collect();
            let records: Vec<Record<'_>> = values
                .iter()
                .map(|v| Record::new(Some(key.as_bytes()), Some(v.as_bytes())))
                .collect();
            part.append(&records).unwrap();
            offset += values.len() as i64;
        }
        assert_eq!(part.high_watermark().unwrap(), PER_PARTITION);
    }
    log.close().unwrap();
}

/// What a read_committed reader of `out` finds, from the start to the last stable offsets.
struct Output {
    /// Per output partition, the committed records `(offset, value)` in offset order.
    committed: Vec<Vec<(i64, String)>>,
    /// Records below the high watermarks that read_committed did not return: aborted, or in
    /// a transaction still open.
    not_committed: usize,
    /// Some partition's last stable offset is below its high watermark.
    open_transaction: bool,
}

/// Reads all of `out` with read_committed, and counts what read_uncommitted would add.
fn read_output(log: &Log, when: &str) -> Output {
    let mut reader = read_committed_reader(log);
    let mut committed = vec![Vec::new(); OUTPUT_PARTITIONS as usize];
    loop {
        let records = reader.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            break;
        }
        for r in &records {
            committed[r.partition as usize].push((r.offset, r.value.clone().unwrap()));
        }
    }
    let mut below_hw = 0;
    let mut open_transaction = false;
    for p in 0..OUTPUT_PARTITIONS {
        let part = log.partition(OUTPUT, p).unwrap();
        let (lso, hw) = (
            part.last_stable_offset().unwrap(),
            part.high_watermark().unwrap(),
        );
        open_transaction |= lso < hw;
        assert_eq!(
            reader.position(&tp(OUTPUT, p)).unwrap(),
            lso,
            "{when}: read_committed did not read {OUTPUT}-{p} up to its last stable offset"
        );
        let mut offset = 0;
        while offset < hw {
            let fetch = part.read(offset, 1 << 20).unwrap();
            below_hw += fetch.records().filter(|r| r.offset < hw).count();
            offset = fetch.next_offset();
        }
    }
    let found: usize = committed.iter().map(Vec::len).sum();
    Output {
        committed,
        not_committed: below_hw - found,
        open_transaction,
    }
}

/// No input copied twice, each input partition's copies in one output partition and in input
/// order. Returns input value -> the `<run>.<txn>` that copied it.
fn check_copies(out: &Output, when: &str) -> HashMap<String, String> {
    let mut tags: HashMap<String, String> = HashMap::new();
    let mut home: BTreeMap<u32, usize> = BTreeMap::new();
    for (op, records) in out.committed.iter().enumerate() {
        let mut last: HashMap<u32, i64> = HashMap::new();
        for (offset, v) in records {
            let at = format!("{when}: {OUTPUT}-{op} offset {offset}");
            let (input, tag) = v
                .split_once('@')
                .unwrap_or_else(|| panic!("{at}: malformed value {v:?}"));
            let (ip, io) = parse_input(input);
            assert!(
                ip < INPUT_PARTITIONS && (0..PER_PARTITION).contains(&io),
                "{at}: {v:?} copies no input"
            );
            if let Some(first) = tags.insert(input.to_string(), tag.to_string()) {
                panic!("{at}: duplicate: {input} copied by transactions {first} and {tag}");
            }
            let h = *home.entry(ip).or_insert(op);
            assert_eq!(
                h, op,
                "{at}: input partition {ip}'s copies are in two output partitions"
            );
            if let Some(&prev) = last.get(&ip) {
                assert!(
                    io > prev,
                    "{at}: {input} after {}: out of order",
                    input_value(ip, prev)
                );
            }
            last.insert(ip, io);
        }
    }
    tags
}

/// Every acknowledged commit's copies are the ones in the output: a commit that returned was
/// not undone by a crash (after which its inputs would be copied again, or not at all).
fn check_acked(tags: &HashMap<String, String>, acked: &[AckedCommit], when: &str) {
    for c in acked {
        let want = format!("{}.{}", c.run, c.txn);
        for &(p, first, last) in &c.ranges {
            for o in first..=last {
                let input = input_value(p, o);
                assert_eq!(
                    tags.get(&input),
                    Some(&want),
                    "{when}: {input}: the acknowledged copy by run {} transaction {} is not the \
                     committed one",
                    c.run,
                    c.txn
                );
            }
        }
    }
}

/// Nothing lost: every input was copied.
fn check_complete(tags: &HashMap<String, String>) {
    let expected = (INPUT_PARTITIONS as usize) * (PER_PARTITION as usize);
    if tags.len() != expected {
        let missing: Vec<String> = (0..INPUT_PARTITIONS)
            .flat_map(|p| (0..PER_PARTITION).map(move |o| input_value(p, o)))
            .filter(|v| !tags.contains_key(v))
            .take(10)
            .collect();
        panic!(
            "lost: {} of {expected} inputs copied; missing (first 10): {missing:?}",
            tags.len()
        );
    }
}

/// What one reader saw, `(partition, offset, value)` in the order it saw it, is per output
/// partition a prefix of the final committed records: the same offsets, the same values, no
/// gap. So it never saw an aborted or uncommitted record.
fn check_prefix<'a>(
    who: &str,
    seen: impl Iterator<Item = (usize, i64, &'a str)>,
    last: &Output,
) -> usize {
    let mut next = vec![0usize; OUTPUT_PARTITIONS as usize];
    let mut n = 0;
    for (p, o, v) in seen {
        let want = last.committed[p].get(next[p]);
        assert_eq!(
            want.map(|(wo, wv)| (*wo, wv.as_str())),
            Some((o, v)),
            "{who} saw {v:?} at {OUTPUT}-{p} offset {o}, but the next committed record there \
             is {want:?}{}",
            if last.committed[p].iter().any(|(_, cv)| cv == v) {
                ""
            } else {
                "; that value is not among the committed output: aborted or never committed"
            }
        );
        next[p] += 1;
        n += 1;
    }
    n
}

/// [`check_prefix`] for the readers of every run. Returns the number of records checked.
fn check_seen_files(log_dir: &Path, runs: u32, last: &Output) -> usize {
    let mut n = 0;
    for run in 0..runs {
        // A run killed before its reader started has no file.
        let Ok(text) = std::fs::read_to_string(seen_path(log_dir, run)) else {
            continue;
        };
        // A kill may have cut the last line short.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let seen = complete.lines().map(|line| {
            let mut f = line.splitn(3, ' ');
            let (Some(p), Some(o), Some(v)) = (f.next(), f.next(), f.next()) else {
                panic!("run {run}: malformed seen line {line:?}");
            };
            (p.parse().unwrap(), o.parse().unwrap(), v)
        });
        n += check_prefix(&format!("the reader of run {run}"), seen, last);
    }
    n
}

/// The transactional copier across process crashes (see the module docs): 30 kills at
/// random moments, then a run to the end of the copy. After one kill in three, and at the
/// end, the parent reopens the log (recovering it) and checks what read_committed shows: no
/// duplicate, order kept, every acknowledged commit there. At the end also: nothing lost, no
/// transaction left open, the group's offsets at the end of the input, and every reader
/// (the children's and the parent's) saw a prefix of the final committed output.
#[test]
fn transactional_copier_survives_sigkill() {
    let started = Instant::now();
    let seed = seed();
    println!("seed {seed} ({SEED_ENV}={seed} to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    create_log(&dir);

    let mut acked: Vec<AckedCommit> = Vec::new();
    let mut snapshots: Vec<(u32, Output)> = Vec::new();
    let mut kills_copying = 0;
    let mut runs_committing = 0;
    let mut open_at_check = 0;
    let mut done_in = None;
    let mut run = 0;
    loop {
        let last = run == KILLS;
        let kill = if last {
            Kill::AtAck {
                ack: "done",
                within: FINISH_WITHIN,
            }
        } else {
            Kill::random(&mut rng, MAX_KILL_MS)
        };
        let child = run_child(
            "crash_child_copier",
            &dir,
            &[(RUN_ENV, run.to_string())],
            kill,
        );
        let done = child.acks.iter().any(|a| a == "done");
        if done {
            done_in.get_or_insert(run);
        } else {
            assert!(
                !last,
                "the last run did not finish the copy within {FINISH_WITHIN:?} ({} commits)",
                child.acks.len()
            );
            kills_copying += 1;
        }
        runs_committing += u32::from(child.acks.iter().any(|a| a.starts_with("commit ")));
        acked.extend(
            child
                .acks
                .iter()
                .filter(|a| *a != "done")
                .map(|a| AckedCommit::parse(run, a)),
        );
        run += 1;
        if last {
            break;
        }
        // One run in three, check the crashed log before the next run recovers it; leave it
        // closed cleanly or to be recovered again, in turns. (Not more often: the clean close
        // fsyncs what the children left in the page cache, the slowest step of the test.)
        if run % 3 == 0 {
            let when = format!("after run {} ({kill:?})", run - 1);
            let log = open_retrying(&dir, |b| log_builder(b).background_maintenance(false));
            let out = read_output(&log, &when);
            check_acked(&check_copies(&out, &when), &acked, &when);
            open_at_check += usize::from(out.open_transaction);
            let dirty = snapshots.len().is_multiple_of(2);
            snapshots.push((run - 1, out));
            if dirty {
                close_dirty(log);
            } else {
                log.close().unwrap();
            }
        }
    }

    let log = open_retrying(&dir, |b| log_builder(b).background_maintenance(false));
    let out = read_output(&log, "at the end");
    assert!(
        !out.open_transaction,
        "a transaction is still open after the last run"
    );
    let tags = check_copies(&out, "at the end");
    check_complete(&tags);
    check_acked(&tags, &acked, "at the end");
    let offsets = Admin::new(&log).list_consumer_group_offsets(GROUP).unwrap();
    for p in 0..INPUT_PARTITIONS {
        assert_eq!(
            offsets.get(&tp(INPUT, p)).map(|o| o.offset),
            Some(PER_PARTITION),
            "the group's committed offset of {INPUT}-{p}"
        );
    }
    log.close().unwrap();
    let mut seen = check_seen_files(&dir, run, &out);
    for (after, snap) in &snapshots {
        let flat = snap
            .committed
            .iter()
            .enumerate()
            .flat_map(|(p, records)| records.iter().map(move |(o, v)| (p, *o, v.as_str())));
        seen += check_prefix(&format!("the parent after run {after}"), flat, &out);
    }
    let copied: usize = out.committed.iter().map(Vec::len).sum();
    println!(
        "{run} kills ({kills_copying} before the copy was done, {runs_committing} runs committed, \
         copy done in run {}), {} checks between runs ({open_at_check} found a transaction open), \
         {} commits acknowledged, {copied} records copied exactly once, {} aborted copies in \
         {OUTPUT} never seen, {seen} records seen by read_committed readers checked, {:.1} s",
        done_in.unwrap_or(run - 1),
        snapshots.len(),
        acked.len(),
        out.not_committed,
        started.elapsed().as_secs_f64()
    );
    // The run must have exercised crashes during the copy, including inside transactions.
    assert!(
        kills_copying >= KILLS / 2,
        "only {kills_copying} kills hit the copier before the copy was done"
    );
    assert!(out.not_committed > 0, "no kill left a transaction to abort");
}
