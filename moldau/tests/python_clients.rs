//! Unmodified Kafka clients against the real `moldau serve`: confluent-kafka (librdkafka) and
//! kafka-python, from the Python virtual environment `bin/ensure-deps` creates
//! (`target/py-venv`, or `$MOLDAU_PY_VENV`). Each script creates its topic, produces keyed
//! records, checks where they landed and reads them back, and looks offsets up by time.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use common::Server;

/// The venv's Python; fails the test, saying how to make it, when it is missing.
fn python() -> PathBuf {
    let venv = std::env::var_os("MOLDAU_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/release/moldau -> target/py-venv
            let bin = PathBuf::from(env!("CARGO_BIN_EXE_moldau"));
            bin.parent().unwrap().parent().unwrap().join("py-venv")
        });
    let python = venv.join("bin").join("python");
    assert!(
        python.exists(),
        "no Python venv with the Kafka clients at {}: run bin/ensure-deps (bin/test does)",
        venv.display()
    );
    python
}

/// Runs `moldau/tests/python/<script>` against `server` (at most 120 s).
fn run(script: &str, server: &Server) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let child = Command::new(python())
        .arg(path)
        .arg(server.addr.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output: Output = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("{script} did not finish\nserver log:\n{}", server.logs());
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        server.logs()
    );
    stdout
}

#[test]
fn confluent_kafka_creates_produces_consumes_and_finds_offsets_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let out = run("confluent_clients.py", &server);
    assert!(
        out.contains("confluent-kafka ok: 201 produced and consumed"),
        "{out}"
    );
    assert!(server.stop().success());
}

#[test]
fn kafka_python_creates_produces_consumes_and_finds_offsets_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let out = run("kafka_python_clients.py", &server);
    assert!(out.contains("kafka-python ok: 150 produced"), "{out}");
    // kafka-python's default partitioner is Java's (murmur2 of the key): the same partitions
    // Moldau's own producer picks.
    let mut keys = 0;
    for line in out.lines().filter_map(|l| l.strip_prefix("partition ")) {
        let (key, partition) = line.split_once(' ').unwrap();
        let partition: u32 = partition.parse().unwrap();
        assert_eq!(
            partition,
            core_log::partition_for_key(key.as_bytes(), 3),
            "key {key}"
        );
        keys += 1;
    }
    assert_eq!(keys, 23);
    assert!(server.stop().success());
    // Everything the client was told is delivered is in the log after a clean stop.
    let log = core_log::Log::open(&data).unwrap();
    let total: i64 = (0..3)
        .map(|p| {
            log.partition("clicks", p)
                .unwrap()
                .log_end_offset()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 150);
    log.close().unwrap();
}

#[test]
fn confluent_kafka_consumers_share_a_topic_in_a_group_and_resume_at_their_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let out = run("confluent_group.py", &server);
    assert!(out.contains("confluent-kafka group ok"), "{out}");
    assert!(server.stop().success());
}

#[test]
fn kafka_python_consumers_resume_at_their_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let out = run("kafka_python_group.py", &server);
    assert!(out.contains("kafka-python group ok"), "{out}");
    assert!(server.stop().success());
}

#[test]
fn confluent_kafka_transactions_commit_abort_fence_and_copy_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let out = run("confluent_transactions.py", &server);
    assert!(out.contains("confluent-kafka transactions ok"), "{out}");
    assert!(server.stop().success());
    // The decided transactions stay decided after a restart: read_committed sees the same.
    let log = core_log::Log::open(&data).unwrap();
    let mut committed = 0;
    for p in 0..2 {
        let partition = log.partition("ledger", p).unwrap();
        let read = partition
            .read_isolated(0, 1 << 20, core_log::IsolationLevel::ReadCommitted)
            .unwrap();
        assert_eq!(
            partition.last_stable_offset().unwrap(),
            partition.high_watermark().unwrap()
        );
        committed += read.committed_records().count();
    }
    assert_eq!(
        committed, 16,
        "10 + 5 committed, 10 aborted, 1 from the newer instance"
    );
    log.close().unwrap();
}

#[test]
fn kafka_python_transactions_are_seen_as_committed_or_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let out = run("kafka_python_transactions.py", &server);
    assert!(out.contains("kafka-python transactions ok"), "{out}");
    assert!(server.stop().success());
}

/// Every codec both ways: librdkafka and kafka-python each write a topic per codec, both read
/// each back whole, and the log stores every batch compressed as the client sent it.
#[test]
fn every_compression_codec_is_produced_and_consumed_by_both_clients() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let out = run("compression.py", &server);
    assert!(out.contains("compression ok: 8 topics"), "{out}");
    assert!(server.stop().success());
    let log = core_log::Log::open(&data).unwrap();
    for (codec, id) in [("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
        for client in ["confluent", "kafka-python"] {
            let p = log.partition(&format!("{codec}-{client}"), 0).unwrap();
            assert_eq!(p.log_end_offset().unwrap(), 500);
            let data = p.read(0, 64 << 20).unwrap();
            let codecs: Vec<i16> = data.batches().map(|b| b.compression()).collect();
            assert!(
                !codecs.is_empty() && codecs.iter().all(|&c| c == id),
                "{codec}-{client}: {codecs:?}"
            );
        }
    }
    log.close().unwrap();
}
