//! Append and sequential-read throughput of `core-log`, against the plain-file ceiling.
//!
//! Run with `cargo bench -p moldau-benches --bench log`. It prints the machine, then one table:
//! for each row the median of several runs (records/s and MB/s, MB = 10^6 bytes), the min and
//! max MB/s, and the ratio of the median to the median of the row's ceiling, measured in the
//! same run on the same file system: the same bytes written with `write_all` to a plain file in
//! chunks of the same size (plus `fdatasync` where the log row fsyncs), and read back with
//! 1 MiB `read`s.
//!
//! Records have an 8-byte key and a 100-byte value, no headers, one timestamp per run. They
//! are encoded once, before any timing, with [`BatchBuilder`] into a pool of batches of about
//! the target size (about 64 MiB of batches, reused in a cycle); the log assigns offsets in
//! place, outside the CRC, so a batch can be appended again. Every run checks afterwards that
//! the partition holds exactly the records and bytes appended, and the read rows check the
//! count, the bytes and (once, untimed) every key and value; a mismatch panics.
//!
//! Rows named `diag:` split the costs: the checks `append_batches` makes on every batch (CRC
//! and every record decoded) and the encoding `append(&[Record])` adds, both in memory; and the
//! plain read redone with what `Partition::read` adds (a fresh zeroed buffer per read, a CRC
//! per batch). Only the interval row (and the read partition) runs background maintenance.
//!
//! Page cache: nothing is dropped (dropping caches would disturb the other users of the
//! machine), so reads come from the page cache for the log and the plain file alike, and
//! unsynced writes land in the page cache for both. Environment: `MOLDAU_BENCH_DIR` overrides
//! the data directory (default: the workspace's `target/`), `MOLDAU_BENCH_MIB` the bytes
//! appended per run (default 512), `MOLDAU_BENCH_ONLY` a comma-separated subset of the sections
//! `append`, `fsync`, `read` (to profile one of them).

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use core_log::codec::{BatchBuilder, RecordBatch};
use core_log::{FlushPolicy, Log, Partition, Record, TopicConfig};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const KEY_LEN: usize = 8;
const VALUE_LEN: usize = 100;
/// Bytes of distinct pre-encoded batches, cycled through by each run.
const POOL_BYTES: usize = 64 << 20;
/// Runs per row (median, min, max); the fsync-per-batch rows use [`FSYNC_REPS`].
const REPS: usize = 5;
/// Samples of each read row, and full passes over the data per sample.
const READ_REPS: usize = 11;
const READ_PASSES: u64 = 4;
const FSYNC_REPS: usize = 3;
/// Bounds of one fsync-per-batch run: whichever comes first.
const FSYNC_MAX_BATCHES: usize = 2_000;
const FSYNC_MAX_TIME: Duration = Duration::from_secs(2);
/// `flush.ms` of the interval row (with `flush.messages` unbounded).
const INTERVAL_MS: i64 = 100;
/// Bytes per `Partition::read` and per plain `read`.
const READ_CHUNK: usize = 1 << 20;
const TOPIC: &str = "bench";

/// Pre-encoded batches of one target size, and the records they hold.
struct Pool {
    batches: Vec<Vec<u8>>,
    /// Every batch has the same length and the same record count.
    batch_len: usize,
    records_per_batch: usize,
    keys: Vec<[u8; KEY_LEN]>,
    values: Vec<[u8; VALUE_LEN]>,
    timestamp: i64,
}

impl Pool {
    fn build(target: usize, timestamp: i64) -> Pool {
        // Records per batch: as many as fit in `target` bytes.
        let (k0, v0) = (key_of(0), value_of(0));
        let mut probe = BatchBuilder::new(Vec::new());
        while probe.size() + probe.record_size(timestamp, Some(&k0), Some(&v0), &[]) <= target {
            probe.append(timestamp, Some(&k0), Some(&v0), &[]);
        }
        let records_per_batch = probe.records_count() as usize;
        assert!(
            records_per_batch > 0,
            "a {target}-byte batch holds no record"
        );
        let batch_len = probe.finish().len();
        let n_batches = POOL_BYTES.div_ceil(batch_len);
        let n_records = n_batches * records_per_batch;
        let keys: Vec<_> = (0..n_records).map(key_of).collect();
        let values: Vec<_> = (0..n_records).map(value_of).collect();
        let batches: Vec<Vec<u8>> = (0..n_batches)
            .map(|i| {
                let mut b = BatchBuilder::new(Vec::with_capacity(batch_len));
                for k in i * records_per_batch..(i + 1) * records_per_batch {
                    b.append(timestamp, Some(&keys[k]), Some(&values[k]), &[]);
                }
                let bytes = b.finish();
                assert_eq!(bytes.len(), batch_len, "batches of one pool differ in size");
                bytes
            })
            .collect();
        Pool {
            batches,
            batch_len,
            records_per_batch,
            keys,
            values,
            timestamp,
        }
    }

    /// Index into `keys`/`values` of the record at `offset` of a partition filled by cycling.
    fn record_at(&self, offset: i64) -> usize {
        let offset = offset as usize;
        let batch = (offset / self.records_per_batch) % self.batches.len();
        batch * self.records_per_batch + offset % self.records_per_batch
    }
}

fn key_of(k: usize) -> [u8; KEY_LEN] {
    (k as u64).to_be_bytes()
}

fn value_of(k: usize) -> [u8; VALUE_LEN] {
    std::array::from_fn(|j| (k as u8).wrapping_add(j as u8))
}

/// The pool's records as `Record`s, for the `Partition::append` row.
fn as_records_of<'a>(
    keys: &'a [[u8; KEY_LEN]],
    values: &'a [[u8; VALUE_LEN]],
    timestamp: i64,
) -> Vec<Record<'a>> {
    keys.iter()
        .zip(values)
        .map(|(k, v)| Record::new(Some(k), Some(v)).timestamp(timestamp))
        .collect()
}

/// One timed run.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    records: u64,
    bytes: u64,
}

impl Sample {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    fn rec_s(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

/// A table row: its samples and the row it is compared with.
struct Row {
    name: String,
    ceiling: Option<String>,
    samples: Vec<Sample>,
}

impl Row {
    fn new(name: impl Into<String>, ceiling: Option<&str>) -> Row {
        Row {
            name: name.into(),
            ceiling: ceiling.map(str::to_string),
            samples: Vec::new(),
        }
    }
    /// The sample with the median MB/s.
    fn median(&self) -> Sample {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.mb_s().total_cmp(&b.mb_s()));
        s[s.len() / 2]
    }
    fn min_max(&self) -> (f64, f64) {
        let rates = self.samples.iter().map(Sample::mb_s);
        (
            rates.clone().fold(f64::INFINITY, f64::min),
            rates.fold(0.0, f64::max),
        )
    }
}

struct Bench {
    root: PathBuf,
    run_bytes: usize,
    next_dir: usize,
}

impl Bench {
    /// A fresh, empty directory under the data directory.
    fn fresh_dir(&mut self) -> BenchResult<PathBuf> {
        self.next_dir += 1;
        let dir = self.root.join(format!("run-{}", self.next_dir));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn batches_per_run(&self, pool: &Pool) -> usize {
        self.run_bytes.div_ceil(pool.batch_len)
    }

    fn open_log(&mut self, policy: FlushPolicy, background: bool) -> BenchResult<(Log, Partition)> {
        let dir = self.fresh_dir()?;
        let log = Log::builder(&dir)
            .flush_policy(policy)
            .background_maintenance(background)
            .open()?;
        log.create_topic(TOPIC, 1, TopicConfig::default())?;
        let p = log.partition(TOPIC, 0)?;
        Ok((log, p))
    }

    /// Deletes the topic first, so that closing does not fsync data nobody will read.
    fn discard_log(&self, log: Log, p: Partition) -> BenchResult<()> {
        let dir = log.dir().to_path_buf();
        drop(p);
        log.delete_topic(TOPIC)?;
        log.close()?;
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }

    /// Appends `batches` pool batches (cycling), with `append_batches` or, if `as_records`, with
    /// `append(&[Record])`; stops early once `deadline` has passed. Checks the partition.
    fn append_run(
        &mut self,
        pool: &mut Pool,
        policy: FlushPolicy,
        as_records: bool,
        batches: usize,
        deadline: Option<Duration>,
    ) -> BenchResult<Sample> {
        let background = matches!(policy, FlushPolicy::Interval { .. });
        let (log, p) = self.open_log(policy, background)?;
        let records = if as_records {
            as_records_of(&pool.keys, &pool.values, pool.timestamp)
        } else {
            Vec::new()
        };
        let rpb = pool.records_per_batch;
        let n_pool = pool.batches.len();
        let start = Instant::now();
        let mut done = 0;
        while done < batches {
            let i = done % n_pool;
            let info = if as_records {
                p.append(&records[i * rpb..(i + 1) * rpb])?
            } else {
                p.append_batches(&mut pool.batches[i])?
            };
            black_box(info);
            done += 1;
            if deadline.is_some_and(|d| start.elapsed() >= d) {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let sample = Sample {
            secs,
            records: (done * rpb) as u64,
            bytes: (done * pool.batch_len) as u64,
        };
        drop(records);
        let (leo, size) = (p.log_end_offset()?, p.size_bytes()?);
        assert_eq!(
            (leo as u64, size),
            (sample.records, sample.bytes),
            "partition (log end offset, bytes) differs from what was appended"
        );
        self.discard_log(log, p)?;
        Ok(sample)
    }

    /// Writes the same batches to a plain file in the same chunks: no fsync, an fdatasync per
    /// chunk, or an fdatasync every `sync_every` (like `flush.ms`).
    fn plain_write_run(
        &mut self,
        pool: &Pool,
        batches: usize,
        sync: PlainSync,
        deadline: Option<Duration>,
    ) -> BenchResult<Sample> {
        let dir = self.fresh_dir()?;
        let path = dir.join("plain.bin");
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let start = Instant::now();
        let mut last_sync = start;
        let mut done = 0;
        while done < batches {
            f.write_all(&pool.batches[done % pool.batches.len()])?;
            done += 1;
            match sync {
                PlainSync::None => {}
                PlainSync::EveryChunk => f.sync_data()?,
                PlainSync::Every(d) => {
                    if last_sync.elapsed() >= d {
                        f.sync_data()?;
                        last_sync = Instant::now();
                    }
                }
            }
            if deadline.is_some_and(|d| start.elapsed() >= d) {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let bytes = (done * pool.batch_len) as u64;
        assert_eq!(f.metadata()?.len(), bytes, "plain file size");
        drop(f);
        std::fs::remove_dir_all(dir)?;
        Ok(Sample {
            secs,
            records: (done * pool.records_per_batch) as u64,
            bytes,
        })
    }
}

#[derive(Clone, Copy)]
enum PlainSync {
    None,
    EveryChunk,
    Every(Duration),
}

/// Reads the whole partition with 1 MiB fetches; with `decode`, also walks every record.
/// Reads the whole partition in 1 MiB fetches. With `reuse`, through `read_into` and one
/// buffer kept across fetches (a consumer's fetch loop); otherwise through `read`, which hands
/// out a fresh `Bytes` per fetch.
fn log_read_run(p: &Partition, decode: bool, reuse: bool) -> BenchResult<(Sample, u64)> {
    let leo = p.log_end_offset()?;
    let mut buf = Vec::new();
    let start = Instant::now();
    let (mut offset, mut bytes, mut records, mut value_bytes) = (0i64, 0u64, 0u64, 0u64);
    while offset < leo {
        let mut count =
            |records_len: usize, it: &mut dyn Iterator<Item = core_log::codec::RecordRef<'_>>| {
                bytes += records_len as u64;
                if decode {
                    for r in it {
                        records += 1;
                        value_bytes += r.value.map_or(0, <[u8]>::len) as u64;
                    }
                }
            };
        let next = if reuse {
            let fetch = p.read_into(offset, READ_CHUNK, &mut buf)?;
            count(fetch.records.len(), &mut fetch.records());
            black_box(&fetch);
            fetch.next_offset()
        } else {
            let fetch = p.read(offset, READ_CHUNK)?;
            count(fetch.records.len(), &mut fetch.records());
            black_box(&fetch);
            fetch.next_offset()
        };
        assert!(next > offset, "read at {offset} made no progress");
        offset = next;
    }
    let secs = start.elapsed().as_secs_f64();
    black_box(value_bytes);
    if decode {
        assert_eq!(
            records, leo as u64,
            "records read differ from records written"
        );
    }
    Ok((
        Sample {
            secs,
            records: leo as u64,
            bytes,
        },
        value_bytes,
    ))
}

/// Runs `f` [`READ_PASSES`] times and adds up the samples.
fn passes(mut f: impl FnMut() -> BenchResult<Sample>) -> BenchResult<Sample> {
    let mut total = Sample {
        secs: 0.0,
        records: 0,
        bytes: 0,
    };
    for _ in 0..READ_PASSES {
        let s = f()?;
        total.secs += s.secs;
        total.records += s.records;
        total.bytes += s.bytes;
    }
    Ok(total)
}

fn plain_read_run(path: &Path, records: u64) -> BenchResult<Sample> {
    let mut buf = vec![0u8; READ_CHUNK];
    let start = Instant::now();
    let mut f = File::open(path)?;
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        black_box(&buf[..n]);
    }
    Ok(Sample {
        secs: start.elapsed().as_secs_f64(),
        records,
        bytes,
    })
}

/// Diagnostic: the CPU cost of the checks `append_batches` makes, without the write: framing,
/// CRC and every record decoded, per batch, in memory.
fn validate_run(pool: &Pool, batches: usize) -> BenchResult<Sample> {
    let start = Instant::now();
    for i in 0..batches {
        // `DecodeError` implements Display but not `std::error::Error`.
        let batch = RecordBatch::new(&pool.batches[i % pool.batches.len()]).map_err(|e| e.0)?;
        black_box(batch.validate().map_err(|e| e.0)?);
    }
    Ok(Sample {
        secs: start.elapsed().as_secs_f64(),
        records: (batches * pool.records_per_batch) as u64,
        bytes: (batches * pool.batch_len) as u64,
    })
}

/// Diagnostic: the CPU cost of encoding the records into batches (what `append(&[Record])`
/// does before `append_batches`' work), in memory, reusing one buffer.
fn encode_run(pool: &Pool, batches: usize) -> Sample {
    let rpb = pool.records_per_batch;
    let mut buf = Vec::new();
    let start = Instant::now();
    for i in 0..batches {
        let first = (i % pool.batches.len()) * rpb;
        let mut b = BatchBuilder::new(buf);
        for k in first..first + rpb {
            b.append(
                pool.timestamp,
                Some(&pool.keys[k]),
                Some(&pool.values[k]),
                &[],
            );
        }
        buf = b.finish();
        black_box(&buf);
    }
    Sample {
        secs: start.elapsed().as_secs_f64(),
        records: (batches * rpb) as u64,
        bytes: (batches * pool.batch_len) as u64,
    }
}

/// Diagnostic variants of the plain read, each adding one thing `Partition::read` does: a
/// fresh zeroed buffer per read (`vec![0; n]` then `pread`), and/or a CRC-32C over every
/// `crc_chunk` bytes (the batch size: the log checks each batch's CRC on every read).
fn plain_read_variant(
    path: &Path,
    records: u64,
    fresh: bool,
    crc_chunk: Option<usize>,
) -> BenchResult<Sample> {
    let len = std::fs::metadata(path)?.len();
    let mut reused = vec![0u8; READ_CHUNK];
    let start = Instant::now();
    let f = File::open(path)?;
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(READ_CHUNK as u64) as usize;
        let mut fresh_buf;
        let buf = if fresh {
            fresh_buf = vec![0u8; n];
            &mut fresh_buf[..]
        } else {
            &mut reused[..n]
        };
        f.read_exact_at(buf, pos)?;
        if let Some(chunk) = crc_chunk {
            for c in buf.chunks(chunk) {
                black_box(crc32c::crc32c(c));
            }
        }
        black_box(&buf[..]);
        pos += n as u64;
    }
    Ok(Sample {
        secs: start.elapsed().as_secs_f64(),
        records,
        bytes: len,
    })
}

/// Untimed: every record of the partition, in order, is the one appended at its offset.
fn verify_contents(p: &Partition, pool: &Pool) -> BenchResult<()> {
    let leo = p.log_end_offset()?;
    let mut offset = 0i64;
    let mut expected = 0i64;
    while offset < leo {
        let fetch = p.read(offset, READ_CHUNK)?;
        for r in fetch.records() {
            assert_eq!(r.offset, expected, "offsets read out of sequence");
            let k = pool.record_at(r.offset);
            assert_eq!(r.key, Some(&pool.keys[k][..]), "key at offset {}", r.offset);
            assert_eq!(
                r.value,
                Some(&pool.values[k][..]),
                "value at offset {}",
                r.offset
            );
            assert_eq!(r.timestamp, pool.timestamp, "timestamp at {}", r.offset);
            expected += 1;
        }
        offset = fetch.next_offset();
    }
    assert_eq!(expected, leo, "records read differ from records written");
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn data_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("MOLDAU_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    if target.is_dir() {
        target
    } else {
        PathBuf::from("/var/tmp")
    }
}

/// `(mount point, fs type, device)` of the mount holding `path`, from /proc/self/mountinfo.
fn mount_of(path: &Path) -> Option<(String, String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(String, String, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        let (mount_point, fstype, source) =
            (fields.get(4)?, fields.get(dash + 1)?, fields.get(dash + 2)?);
        if path.starts_with(mount_point)
            && best
                .as_ref()
                .is_none_or(|(m, _, _)| mount_point.len() >= m.len())
        {
            best = Some((
                mount_point.to_string(),
                fstype.to_string(),
                source.to_string(),
            ));
        }
    }
    best
}

fn print_machine(root: &Path, run_bytes: usize) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown", str::trim);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (mount, fstype, device) = mount_of(root).unwrap_or_default();
    println!("moldau core-log throughput");
    println!(
        "  cpus (nproc): {cpus}, cpu: {model}, kernel: {}",
        kernel.trim()
    );
    println!("  load average at start: {}", load.trim());
    println!(
        "  data dir: {} (device {device}, {fstype}, mounted at {mount})",
        root.display()
    );
    println!(
        "  records: {KEY_LEN}-byte key, {VALUE_LEN}-byte value, no headers; \
         {} MiB appended per run (fsync-per-batch rows: at most {FSYNC_MAX_BATCHES} batches or {:?})",
        run_bytes >> 20,
        FSYNC_MAX_TIME
    );
    println!(
        "  median of {REPS} runs ({FSYNC_REPS} for fsync-per-batch rows, {READ_REPS} of {READ_PASSES} passes for reads); MB = 10^6 bytes; \
         page cache not dropped: reads come from the page cache for log and plain file alike"
    );
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<46} {:>12} {:>9} {:>19}  {:>6}  ceiling",
        "row", "records/s", "MB/s", "MB/s min..max", "ratio"
    );
    for row in rows {
        let m = row.median();
        let (lo, hi) = row.min_max();
        let ceiling = row
            .ceiling
            .as_ref()
            .and_then(|c| rows.iter().find(|r| &r.name == c));
        let ratio = ceiling.map_or(String::from("-"), |c| {
            format!("{:.0}%", 100.0 * m.mb_s() / c.median().mb_s())
        });
        println!(
            "{:<46} {:>12.0} {:>9.1} {:>19}  {:>6}  {}",
            row.name,
            m.rec_s(),
            m.mb_s(),
            format!("{lo:.1}..{hi:.1}"),
            ratio,
            row.ceiling.as_deref().unwrap_or("")
        );
    }
}

/// Adds a row and returns its index.
fn add_row(rows: &mut Vec<Row>, name: &str, ceiling: Option<&str>) -> usize {
    rows.push(Row::new(name, ceiling));
    rows.len() - 1
}

fn ratio_of(rows: &[Row], row: &str, ceiling: &str) -> f64 {
    let find = |n: &str| {
        rows.iter()
            .find(|r| r.name == n)
            .map_or(f64::NAN, |r| r.median().mb_s())
    };
    find(row) / find(ceiling)
}

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let run_mib: usize = std::env::var("MOLDAU_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let run_bytes = run_mib << 20;
    let parent = data_root();
    let tmp = tempfile::Builder::new()
        .prefix("moldau-bench-")
        .tempdir_in(&parent)?;
    print_machine(tmp.path(), run_bytes);
    let mut bench = Bench {
        root: tmp.path().to_path_buf(),
        run_bytes,
        next_dir: 0,
    };
    let total = Instant::now();
    let ts = now_ms();
    let never = FlushPolicy::Never;
    let interval = FlushPolicy::Interval {
        messages: u64::MAX,
        ms: INTERVAL_MS,
    };

    let only = std::env::var("MOLDAU_BENCH_ONLY").unwrap_or_default();
    let section = |name: &str| only.is_empty() || only.split(',').any(|s| s.trim() == name);

    let mut rows: Vec<Row> = Vec::new();

    // Appends with flush=never (and the interval row at 16 KiB), per batch size.
    let sizes: &[(&str, usize)] = if section("append") {
        &[
            ("1 KiB", 1 << 10),
            ("16 KiB", 16 << 10),
            ("64 KiB", 64 << 10),
        ]
    } else {
        &[]
    };
    for &(label, target) in sizes {
        let mut pool = Pool::build(target, ts);
        let n = bench.batches_per_run(&pool);
        let plain_name = format!("plain write_all, {label} chunks");
        let plain = add_row(&mut rows, &plain_name, None);
        let log_batches = add_row(
            &mut rows,
            &format!("append_batches never, {label} batches"),
            Some(&plain_name),
        );
        let mut extra = None;
        if target == 16 << 10 {
            let rec = add_row(
                &mut rows,
                &format!("append(&[Record]) never, {label} batches"),
                Some(&plain_name),
            );
            let plain_iv_name = format!("plain write_all + fdatasync/{INTERVAL_MS}ms, {label}");
            let plain_iv = add_row(&mut rows, &plain_iv_name, None);
            let iv = add_row(
                &mut rows,
                &format!("append_batches interval {INTERVAL_MS}ms, {label}"),
                Some(&plain_iv_name),
            );
            let validate = add_row(
                &mut rows,
                "diag: validate() per batch, in memory, 16 KiB",
                None,
            );
            let encode = add_row(
                &mut rows,
                "diag: BatchBuilder encode, in memory, 16 KiB",
                None,
            );
            extra = Some((rec, plain_iv, iv, validate, encode));
        }
        println!(
            "  {label} batches: {} records/batch, {} bytes/batch, {n} batches/run",
            pool.records_per_batch, pool.batch_len
        );
        for _ in 0..REPS {
            let s = bench.plain_write_run(&pool, n, PlainSync::None, None)?;
            rows[plain].samples.push(s);
            let s = bench.append_run(&mut pool, never, false, n, None)?;
            rows[log_batches].samples.push(s);
            if let Some((rec, plain_iv, iv, validate, encode)) = extra {
                rows[validate].samples.push(validate_run(&pool, n)?);
                rows[encode].samples.push(encode_run(&pool, n));
                let s = bench.append_run(&mut pool, never, true, n, None)?;
                rows[rec].samples.push(s);
                let every = Duration::from_millis(INTERVAL_MS as u64);
                let s = bench.plain_write_run(&pool, n, PlainSync::Every(every), None)?;
                rows[plain_iv].samples.push(s);
                let s = bench.append_run(&mut pool, interval, false, n, None)?;
                rows[iv].samples.push(s);
            }
        }
    }

    let mut pool = Pool::build(16 << 10, ts);
    if section("fsync") {
        fsync_rows(&mut bench, &mut pool, &mut rows)?;
    }
    if section("read") {
        read_rows(&mut bench, &mut pool, &mut rows)?;
    }

    print_table(&rows);
    println!();
    for (name, ceiling, target) in [
        (
            "append_batches never, 16 KiB batches",
            "plain write_all, 16 KiB chunks",
            0.5,
        ),
        (
            "append_batches never, 64 KiB batches",
            "plain write_all, 64 KiB chunks",
            0.5,
        ),
        ("Partition::read_into 1 MiB, reused buffer", PLAIN_READ, 0.7),
        (
            "Partition::read 1 MiB, fresh Bytes per fetch",
            PLAIN_READ,
            0.7,
        ),
    ] {
        let r = ratio_of(&rows, name, ceiling);
        if r.is_nan() {
            continue;
        }
        let verdict = if r >= target { "meets" } else { "MISSES" };
        println!(
            "target: {name} >= {:.0}% of {ceiling}: {:.0}% ({verdict})",
            target * 100.0,
            r * 100.0
        );
    }
    println!("total bench time: {:.1} s", total.elapsed().as_secs_f64());
    Ok(())
}

const PLAIN_READ: &str = "plain read, 1 MiB reads";

/// Fsync per batch, bounded in count and time.
fn fsync_rows(bench: &mut Bench, pool: &mut Pool, rows: &mut Vec<Row>) -> BenchResult<()> {
    let plain_sync_name = "plain write_all + fdatasync per chunk, 16 KiB";
    let plain_sync = add_row(rows, plain_sync_name, None);
    let every = add_row(
        rows,
        "append_batches every-append, 16 KiB",
        Some(plain_sync_name),
    );
    for _ in 0..FSYNC_REPS {
        let s = bench.plain_write_run(
            pool,
            FSYNC_MAX_BATCHES,
            PlainSync::EveryChunk,
            Some(FSYNC_MAX_TIME),
        )?;
        rows[plain_sync].samples.push(s);
        let s = bench.append_run(
            pool,
            FlushPolicy::EveryAppend,
            false,
            FSYNC_MAX_BATCHES,
            Some(FSYNC_MAX_TIME),
        )?;
        rows[every].samples.push(s);
    }
    Ok(())
}

/// Sequential reads of one partition filled with 16 KiB batches, and of a plain file of the
/// same bytes in the same chunks.
fn read_rows(bench: &mut Bench, pool: &mut Pool, rows: &mut Vec<Row>) -> BenchResult<()> {
    let never = FlushPolicy::Never;
    let n = bench.batches_per_run(pool);
    let (log, p) = bench.open_log(never, true)?;
    let n_pool = pool.batches.len();
    for i in 0..n {
        p.append_batches(&mut pool.batches[i % n_pool])?;
    }
    let plain_dir = bench.fresh_dir()?;
    let plain_path = plain_dir.join("plain.bin");
    {
        let mut f = File::create(&plain_path)?;
        for i in 0..n {
            f.write_all(&pool.batches[i % pool.batches.len()])?;
        }
        // Write both files back before timing reads: otherwise the kernel's writeback of this
        // gigabyte runs during the timed reads (on 2 cores) and makes them noise.
        f.sync_all()?;
    }
    p.flush()?;
    let leo = p.log_end_offset()? as u64;
    let size = p.size_bytes()?;
    assert_eq!(
        std::fs::metadata(&plain_path)?.len(),
        size,
        "plain file size"
    );
    verify_contents(&p, pool)?;
    let plain_read_name = PLAIN_READ;
    let plain_read = add_row(rows, plain_read_name, None);
    let log_read_into = add_row(
        rows,
        "Partition::read_into 1 MiB, reused buffer",
        Some(plain_read_name),
    );
    let log_read_into_decode = add_row(
        rows,
        "Partition::read_into 1 MiB + records()",
        Some(plain_read_name),
    );
    let log_read = add_row(
        rows,
        "Partition::read 1 MiB, fresh Bytes per fetch",
        Some(plain_read_name),
    );
    let log_read_decode = add_row(
        rows,
        "Partition::read 1 MiB + records()",
        Some(plain_read_name),
    );
    let batch_crc = Some(pool.batch_len);
    let diag_read: Vec<(usize, bool, Option<usize>)> = [
        ("diag: plain pread, fresh zeroed 1 MiB Vec", true, None),
        (
            "diag: plain read + crc32c per 16 KiB batch",
            false,
            batch_crc,
        ),
        (
            "diag: plain pread, fresh Vec + crc32c/batch",
            true,
            batch_crc,
        ),
    ]
    .into_iter()
    .map(|(name, fresh, crc)| (add_row(rows, name, Some(plain_read_name)), fresh, crc))
    .collect();
    // A pass over 512 MiB from the page cache takes only ~25-50 ms: each sample is several
    // passes, and reads take more samples, so that a shared machine's hiccups do not decide
    // the median.
    for _ in 0..READ_REPS {
        for &(i, fresh, crc) in &diag_read {
            let s = passes(|| plain_read_variant(&plain_path, leo, fresh, crc))?;
            assert_eq!(s.bytes, size * READ_PASSES, "plain read bytes");
            rows[i].samples.push(s);
        }
        let s = passes(|| plain_read_run(&plain_path, leo))?;
        assert_eq!(s.bytes, size * READ_PASSES, "plain read bytes");
        rows[plain_read].samples.push(s);
        for (row, decode, reuse) in [
            (log_read_into, false, true),
            (log_read_into_decode, true, true),
            (log_read, false, false),
            (log_read_decode, true, false),
        ] {
            let s = passes(|| {
                let (s, value_bytes) = log_read_run(&p, decode, reuse)?;
                if decode {
                    assert_eq!(value_bytes, leo * VALUE_LEN as u64, "value bytes read");
                }
                Ok(s)
            })?;
            assert_eq!(
                s.bytes,
                size * READ_PASSES,
                "bytes read differ from bytes written"
            );
            rows[row].samples.push(s);
        }
    }
    bench.discard_log(log, p)?;
    std::fs::remove_dir_all(plain_dir)?;
    Ok(())
}
