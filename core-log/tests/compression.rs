//! Compressed batches as Kafka clients send them: every codec (gzip, snappy, lz4, zstd) is
//! written by the producer's `compression.type`, stored as sent, and read back by consumers,
//! `read`, compaction and timestamp lookups; snappy also as librdkafka writes it (one raw
//! block). A batch that inflates past `max.message.bytes` (a decompression bomb), or whose
//! compressed stream is damaged under a valid CRC, is refused and costs nothing else.

// Test helpers unwrap too: a panic is the failure report (see clippy.toml).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use core_log::codec::{BatchBuilder, RecordBatch};
use core_log::serialization::StringSerde;
use core_log::{
    AutoOffsetReset, CleanupPolicy, Compression, Consumer, ConsumerConfig, Error, Header,
    IsolationLevel, Log, Partition, Producer, ProducerConfig, ProducerRecord, TopicConfig,
    TopicPartition,
};

mod common;
use common::{NOW, open};

/// The codecs that compress.
const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// Every record of partition 0 of `topic`, as (key, value) strings, read with a consumer.
fn consume_all(log: &Log, topic: &str, n: usize) -> Vec<(String, String)> {
    let mut c: Consumer<String, String> = Consumer::new(
        log,
        ConsumerConfig::default()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .isolation_level(IsolationLevel::ReadCommitted),
        StringSerde,
        StringSerde,
    )
    .unwrap();
    c.assign(&[TopicPartition::new(topic, 0)]).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let polled = c.poll(Duration::from_secs(5)).unwrap();
        assert!(
            !polled.is_empty(),
            "only {} of {n} records came back",
            out.len()
        );
        for r in polled {
            out.push((r.key.unwrap(), r.value.unwrap()));
        }
    }
    out
}

/// The codec of every batch stored in `p`.
fn stored_codecs(p: &Partition) -> Vec<i16> {
    let data = p.read(0, 64 << 20).unwrap();
    data.batches().map(|b| b.compression()).collect()
}

fn records(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("k{}", i % 50),
                format!("like {i} of a product, repeated text"),
            )
        })
        .collect()
}

#[test]
fn every_codec_is_written_by_the_producer_stored_as_sent_and_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for codec in CODECS {
        let topic = codec.name();
        log.create_topic(topic, 1, TopicConfig::default()).unwrap();
        let producer: Producer<str, str> = Producer::new(
            &log,
            ProducerConfig::default().compression_type(codec),
            StringSerde,
            StringSerde,
        )
        .unwrap();
        let sent = records(2_000);
        for (k, v) in &sent {
            let _delivery = producer
                .send(
                    ProducerRecord::new(topic)
                        .partition(0)
                        .key(k.as_str())
                        .value(v.as_str()),
                )
                .unwrap();
        }
        producer.flush();
        let p = log.partition(topic, 0).unwrap();
        let codecs = stored_codecs(&p);
        assert!(!codecs.is_empty());
        assert!(
            codecs.iter().all(|&c| c == codec.id()),
            "{codec:?}: {codecs:?}"
        );
        // Stored compressed: well under the records' own size.
        let raw: usize = sent.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(
            (p.size_bytes().unwrap() as usize) < raw / 2,
            "{codec:?}: {} bytes for {raw}",
            p.size_bytes().unwrap()
        );
        assert_eq!(consume_all(&log, topic, sent.len()), sent, "{codec:?}");
        // `read` decompresses too.
        let data = p.read(0, 64 << 20).unwrap();
        assert_eq!(data.records().count(), sent.len(), "{codec:?}");
    }
}

/// A batch of `n` records `(k<i>, v<i>)` with `codec`, as a client would send it.
fn client_batch(codec: Compression, n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(Vec::new()).compression(codec);
    for i in 0..n {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        b.append(NOW + i as i64, Some(k.as_bytes()), Some(v.as_bytes()), &[]);
    }
    b.finish()
}

/// Rewrites the batch length and the CRC of a batch edited in place, as a client computing
/// them over the bytes it sends would.
fn reseal(batch: &mut [u8]) {
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn client_batches_of_every_codec_survive_a_reopen_and_timestamp_lookups() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.create_topic("t", 1, TopicConfig::default()).unwrap();
        let p = log.partition("t", 0).unwrap();
        for codec in CODECS {
            p.append_batches(&mut client_batch(codec, 100)).unwrap();
        }
        log.close().unwrap();
    }
    common::simulate_crash(dir.path());
    let log = open(dir.path());
    let p = log.partition("t", 0).unwrap();
    assert_eq!(
        p.log_end_offset().unwrap(),
        400,
        "recovery kept every batch"
    );
    assert_eq!(stored_codecs(&p), vec![1, 2, 3, 4]);
    let got = consume_all(&log, "t", 400);
    for (i, (k, v)) in got.iter().enumerate() {
        assert_eq!(
            (k.as_str(), v.as_str()),
            (&*format!("k{}", i % 100), &*format!("v{}", i % 100))
        );
    }
    // Every batch has timestamps NOW..NOW + 100: the first record at NOW + 50 is offset 50,
    // in the gzip batch.
    let (offset, ts) = p.offset_for_timestamp(NOW + 50).unwrap().unwrap();
    assert_eq!((offset, ts), (50, NOW + 50));
    assert_eq!(
        p.offset_for_timestamp(NOW + 99).unwrap(),
        Some((99, NOW + 99))
    );
}

#[test]
fn raw_snappy_as_librdkafka_writes_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    // The records section of an uncompressed batch, compressed as one raw snappy block, and
    // the header's attributes and CRC rewritten as a client writing that would.
    let plain = client_batch(Compression::None, 30);
    let raw = snap::raw::Encoder::new()
        .compress_vec(&plain[61..])
        .unwrap();
    let mut batch = plain[..61].to_vec();
    batch.extend_from_slice(&raw);
    batch[21..23].copy_from_slice(&Compression::Snappy.id().to_be_bytes());
    reseal(&mut batch);
    RecordBatch::new(&batch).unwrap().validate().unwrap();

    log.partition("t", 0)
        .unwrap()
        .append_batches(&mut batch)
        .unwrap();
    let got = consume_all(&log, "t", 30);
    assert_eq!(got[29], ("k29".to_owned(), "v29".to_owned()));
}

#[test]
fn a_decompression_bomb_is_refused_and_the_log_keeps_taking_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let max = 1 << 20;
    log.create_topic(
        "t",
        1,
        TopicConfig::default()
            .set("max.message.bytes", &max.to_string())
            .unwrap(),
    )
    .unwrap();
    let p = log.partition("t", 0).unwrap();
    for codec in CODECS {
        // 8 MiB of zeros: a few kilobytes compressed, 8 times the topic's limit inflated.
        let zeros = vec![0u8; 8 << 20];
        let mut b = BatchBuilder::new(Vec::new()).compression(codec);
        b.append(NOW, Some(b"k"), Some(&zeros), &[]);
        let mut bomb = b.finish();
        assert!(bomb.len() < max / 2, "{codec:?}: {} bytes", bomb.len());
        let err = p.append_batches(&mut bomb).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidRecord { reason } if reason.contains("decompress")),
            "{codec:?}: {err:?}"
        );
        assert_eq!(
            p.log_end_offset().unwrap(),
            0,
            "{codec:?}: nothing appended"
        );
    }
    p.append_batches(&mut client_batch(Compression::Zstd, 5))
        .unwrap();
    assert_eq!(p.log_end_offset().unwrap(), 5);
}

#[test]
fn a_damaged_compressed_stream_under_a_valid_crc_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic("t", 1, TopicConfig::default()).unwrap();
    let p = log.partition("t", 0).unwrap();
    for codec in CODECS {
        let mut batch = client_batch(codec, 200);
        // Cut the compressed stream short, under a valid length and CRC.
        batch.truncate(61 + (batch.len() - 61) / 2);
        reseal(&mut batch);
        let err = p.append_batches(&mut batch).unwrap_err();
        assert!(
            matches!(err, Error::InvalidRecord { .. }),
            "{codec:?}: {err:?}"
        );
    }
    // An unknown codec id (5..7) is refused too.
    let mut batch = client_batch(Compression::None, 3);
    batch[21..23].copy_from_slice(&5i16.to_be_bytes());
    reseal(&mut batch);
    assert!(matches!(
        p.append_batches(&mut batch),
        Err(Error::InvalidRecord { .. })
    ));
    assert_eq!(p.log_end_offset().unwrap(), 0);
}

#[test]
fn compaction_keeps_the_latest_value_of_compressed_records_and_their_codec() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_topic(
        "c",
        1,
        TopicConfig::default()
            .cleanup_policy(CleanupPolicy::COMPACT)
            .segment_bytes(4_096),
    )
    .unwrap();
    let p = log.partition("c", 0).unwrap();
    // 20 rounds of the same 50 keys, each round one gzip batch; the last round wins.
    for round in 0..20 {
        let mut b = BatchBuilder::new(Vec::new()).compression(Compression::Gzip);
        for k in 0..50 {
            let (k, v) = (format!("k{k}"), format!("round {round}"));
            let h = [Header {
                key: "round",
                value: Some(v.as_bytes()),
            }];
            b.append(NOW, Some(k.as_bytes()), Some(v.as_bytes()), &h);
        }
        p.append_batches(&mut b.finish()).unwrap();
    }
    let stats = log.compact(true).unwrap();
    assert!(stats.records_removed > 0, "{stats:?}");
    let mut latest = std::collections::BTreeMap::new();
    let mut offset = p.log_start_offset().unwrap();
    while offset < p.log_end_offset().unwrap() {
        let data = p.read(offset, 64 << 20).unwrap();
        assert!(
            data.batches()
                .all(|b| b.compression() == Compression::Gzip.id())
        );
        for r in data.records() {
            let header = r.headers().next().unwrap().unwrap();
            assert_eq!(header.value, r.value);
            latest.insert(r.key.unwrap().to_vec(), r.value.unwrap().to_vec());
        }
        offset = data.next_offset();
    }
    assert_eq!(latest.len(), 50);
    assert!(latest.values().all(|v| v == b"round 19"), "{latest:?}");
}
