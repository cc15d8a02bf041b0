//! Kafka's RecordBatch v2 ("magic 2") layout, encoded and decoded without copies.
//!
//! Segment files hold these bytes unchanged, so that a later Kafka wire-protocol front end can
//! serve them to real Kafka clients as they are.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset                \ log overhead (not covered by the CRC)
//!      8     4  batch_length (bytes after)  /
//!     12     4  partition_leader_epoch
//!     16     1  magic (= 2)
//!     17     4  crc (CRC-32C of bytes 21..end)
//!     21     2  attributes: bits 0-2 compression, 3 timestamp type, 4 transactional,
//!                           5 control, 6 has delete horizon
//!     23     4  last_offset_delta
//!     27     8  base_timestamp (or the delete horizon when bit 6 is set)
//!     35     8  max_timestamp
//!     43     8  producer_id
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  records_count
//!     61     .  records
//!
//! record: length varint | attributes i8 | timestamp_delta varlong | offset_delta varint |
//!         key_length varint (-1 = null) | key | value_length varint | value |
//!         header_count varint | (key_length varint | key utf-8 | value_length varint | value)*
//! ```
//!
//! Every length read from bytes is checked against the bytes that remain before it is used, so
//! decoding never panics and never allocates on behalf of a corrupt length.
//!
//! A compressed batch (attributes bits 0-2, see `compression.rs`) holds its records section as
//! one compressed stream: [`RecordBatch::records`] reads only uncompressed batches, without a
//! copy, and [`RecordBatch::records_in`] reads any batch, decompressing into a buffer the
//! caller keeps, bounded by the limit it gives.

use crate::compression::Compression;
use crate::record::{Header, TimestampType};

/// Size of the fixed batch header, records excluded.
pub const BATCH_HEADER_LEN: usize = 61;
/// The largest batch the log accepts or reads back from disk (`max.message.bytes` is capped
/// by it). A length field above it (or above what the file still holds) is corruption, and is
/// never used to size a buffer.
pub(crate) const MAX_BATCH_BYTES: usize = 64 << 20;

/// Bytes before `batch_length` ends: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// The only record format this log reads and writes.
pub const MAGIC: i8 = 2;
/// Producer id of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of a batch written without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Sequence of a batch written without idempotence.
pub const NO_SEQUENCE: i32 = -1;
/// Timestamp of a batch that holds no timestamp.
pub const NO_TIMESTAMP: i64 = -1;

const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC_AT: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
const DELETE_HORIZON_BIT: i16 = 0x40;

/// Why bytes are not a valid batch. Carries no position: callers add where the bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DecodeError {}

type Decoded<T> = Result<T, DecodeError>;

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the base offset and the total size (log overhead included) of the batch starting at
/// `buf`, if at least [`LOG_OVERHEAD`] bytes are there. The size is checked to be at least a
/// batch header, not that it fits in `buf`: callers compare it with what they can read.
pub fn peek_header(buf: &[u8]) -> Decoded<Option<(i64, usize)>> {
    if buf.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let length = be_i32(buf, 8);
    if length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(DecodeError("batch length below the header size"));
    }
    Ok(Some((be_i64(buf, 0), LOG_OVERHEAD + length as usize)))
}

/// What [`RecordBatch::validate`] learned while decoding every record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordsSummary {
    /// The largest record timestamp ([`NO_TIMESTAMP`] for an empty batch).
    pub max_timestamp: i64,
    /// Whether any record has no key.
    pub null_keys: bool,
}

/// A zero-copy view of one complete record batch.
#[derive(Clone, Copy)]
pub struct RecordBatch<'a> {
    buf: &'a [u8],
}

impl std::fmt::Debug for RecordBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("last_offset", &self.last_offset())
            .field("records", &self.records_count())
            .field("size", &self.size())
            .finish()
    }
}

impl<'a> RecordBatch<'a> {
    /// Splits the first batch off `buf`. Checks the framing (length, magic) but not the CRC:
    /// call [`RecordBatch::validate`] for that. Returns `Ok(None)` when `buf` ends inside the
    /// batch, which is the normal end of a partial read.
    pub fn split(buf: &'a [u8]) -> Decoded<Option<(RecordBatch<'a>, &'a [u8])>> {
        let Some((_, size)) = peek_header(buf)? else {
            return Ok(None);
        };
        if buf.len() < size {
            return Ok(None);
        }
        let (batch, rest) = buf.split_at(size);
        if batch[MAGIC_AT] as i8 != MAGIC {
            return Err(DecodeError(
                "unsupported magic (only record batch v2 is read)",
            ));
        }
        Ok(Some((RecordBatch { buf: batch }, rest)))
    }

    /// Parses exactly one batch that fills `buf`.
    pub fn new(buf: &'a [u8]) -> Decoded<RecordBatch<'a>> {
        match Self::split(buf)? {
            Some((b, [])) => Ok(b),
            Some(_) => Err(DecodeError("trailing bytes after the batch")),
            None => Err(DecodeError("batch truncated")),
        }
    }

    /// The encoded bytes, log overhead included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// Total size in bytes, log overhead included.
    pub fn size(&self) -> usize {
        self.buf.len()
    }
    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        be_i64(self.buf, 0)
    }
    /// Offset of the last record the batch was written with (kept by compaction).
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + i64::from(self.last_offset_delta())
    }
    /// Offset after the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    /// The last offset minus the base offset.
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.buf, LAST_OFFSET_DELTA)
    }
    /// The partition leader epoch the batch was written in.
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.buf, PARTITION_LEADER_EPOCH)
    }
    /// The CRC stored in the batch.
    pub fn stored_crc(&self) -> u32 {
        be_i32(self.buf, CRC) as u32
    }
    /// The CRC of the bytes as they are.
    pub fn computed_crc(&self) -> u32 {
        crc32c::crc32c(&self.buf[ATTRIBUTES..])
    }
    /// The raw attribute bits.
    pub fn attributes(&self) -> i16 {
        be_i16(self.buf, ATTRIBUTES)
    }
    /// The compression codec id (0 = none).
    pub fn compression(&self) -> i16 {
        self.attributes() & COMPRESSION_MASK
    }
    /// Whether timestamps are the producer's (create time) or the log's (log append time).
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    /// Whether the batch is a transaction control marker.
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    /// The time after which compaction may drop this batch's tombstones (KIP-534), if set.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes() & DELETE_HORIZON_BIT != 0).then(|| self.base_timestamp())
    }
    /// The timestamp the record deltas are relative to.
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.buf, BASE_TIMESTAMP)
    }
    /// The largest timestamp in the batch (the append time for log-append-time batches).
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.buf, MAX_TIMESTAMP)
    }
    /// The idempotent producer's id, or [`NO_PRODUCER_ID`].
    pub fn producer_id(&self) -> i64 {
        be_i64(self.buf, PRODUCER_ID)
    }
    /// The idempotent producer's epoch, or [`NO_PRODUCER_EPOCH`].
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.buf, PRODUCER_EPOCH)
    }
    /// The sequence number of the first record, or [`NO_SEQUENCE`].
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.buf, BASE_SEQUENCE)
    }
    /// The number of records the header announces.
    pub fn records_count(&self) -> i32 {
        be_i32(self.buf, RECORDS_COUNT)
    }

    /// Checks the CRC and that every record decodes: the full check a batch gets when it is
    /// read back during recovery. A compressed batch is decompressed up to
    /// 64 MiB, the largest batch the log reads; [`RecordBatch::validate_in`] reuses a buffer
    /// and takes a limit.
    pub fn validate(&self) -> Decoded<RecordsSummary> {
        self.validate_in(&mut Vec::new(), MAX_BATCH_BYTES)
    }

    /// [`RecordBatch::validate`], decompressing a compressed batch into `scratch` and refusing
    /// one whose records inflate past `limit` bytes (a decompression bomb): the check a batch
    /// gets when a producer sends it, with the topic's `max.message.bytes`.
    pub fn validate_in(&self, scratch: &mut Vec<u8>, limit: usize) -> Decoded<RecordsSummary> {
        if self.stored_crc() != self.computed_crc() {
            return Err(DecodeError("crc mismatch"));
        }
        self.validate_records_in(scratch, limit)
    }

    /// Checks that every record decodes, with deltas inside the batch's announced range.
    pub fn validate_records(&self) -> Decoded<RecordsSummary> {
        self.validate_records_in(&mut Vec::new(), MAX_BATCH_BYTES)
    }

    /// [`RecordBatch::validate_records`], decompressing into `scratch` up to `limit` bytes.
    pub fn validate_records_in(
        &self,
        scratch: &mut Vec<u8>,
        limit: usize,
    ) -> Decoded<RecordsSummary> {
        let count = self.records_count();
        if count < 0 || self.last_offset_delta() < 0 {
            return Err(DecodeError("negative record count or offset delta"));
        }
        let mut n = 0i32;
        let mut prev_delta = -1i64;
        let mut summary = RecordsSummary {
            max_timestamp: NO_TIMESTAMP,
            null_keys: false,
        };
        for r in self.records_in(scratch, limit)? {
            let r = r?;
            let delta = r.offset.wrapping_sub(self.base_offset());
            if delta <= prev_delta || delta > i64::from(self.last_offset_delta()) {
                return Err(DecodeError(
                    "record offset deltas out of order or out of range",
                ));
            }
            prev_delta = delta;
            for h in r.headers() {
                h?;
            }
            summary.max_timestamp = summary.max_timestamp.max(r.timestamp);
            summary.null_keys |= r.key.is_none();
            n += 1;
        }
        if n != count {
            return Err(DecodeError("record count does not match the header"));
        }
        Ok(summary)
    }

    /// The batch's codec.
    pub fn compression_type(&self) -> Decoded<Compression> {
        Compression::from_id(self.compression())
    }

    /// Iterates the records of an uncompressed batch, borrowed from its bytes. Each item is
    /// checked for bounds as it is decoded; iteration stops after the first error. A
    /// compressed batch yields one error: read it with [`RecordBatch::records_in`].
    pub fn records(&self) -> Records<'a> {
        if self.compression() != 0 {
            return Records::failed(DecodeError("compressed batch read without decompressing"));
        }
        self.records_from(&self.buf[BATCH_HEADER_LEN..])
    }

    /// Iterates the records of any batch: borrowed from its bytes when it is uncompressed, else
    /// decompressed into `scratch` (cleared first) and borrowed from there. Fails if the codec
    /// is unknown, the stream is damaged, or the records inflate past `limit` bytes.
    pub fn records_in<'s>(&self, scratch: &'s mut Vec<u8>, limit: usize) -> Decoded<Records<'s>>
    where
        'a: 's,
    {
        if self.compression() == 0 {
            return Ok(self.records());
        }
        scratch.clear();
        self.decompress_records(scratch, limit)?;
        Ok(self.records_from(scratch))
    }

    /// Appends the records section of a compressed batch, decompressed, to `out`, at most
    /// `limit` bytes; read them with [`RecordBatch::records_from`].
    pub(crate) fn decompress_records(&self, out: &mut Vec<u8>, limit: usize) -> Decoded<()> {
        self.compression_type()?
            .decompress(&self.buf[BATCH_HEADER_LEN..], out, limit)
    }

    /// The records of this batch read from `records`, its records section as stored when
    /// uncompressed, or as decompressed elsewhere.
    pub(crate) fn records_from<'s>(&self, records: &'s [u8]) -> Records<'s> {
        Records {
            rest: records,
            base_offset: self.base_offset(),
            base_timestamp: self.base_timestamp(),
            log_append_time: (self.timestamp_type() == TimestampType::LogAppendTime)
                .then(|| self.max_timestamp()),
            remaining: self.records_count().max(0),
            failed: None,
        }
    }
}

/// Iterator over the records of one batch.
pub struct Records<'a> {
    rest: &'a [u8],
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    remaining: i32,
    /// `Some(None)` once an error was returned; `Some(Some(e))`: `e` is the next item.
    failed: Option<Option<DecodeError>>,
}

impl<'a> Iterator for Records<'a> {
    type Item = Decoded<RecordRef<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(pending) = &mut self.failed {
            return pending.take().map(Err);
        }
        if self.remaining == 0 {
            if !self.rest.is_empty() {
                self.failed = Some(None);
                return Some(Err(DecodeError("bytes after the last record")));
            }
            return None;
        }
        self.remaining -= 1;
        let r = self.decode();
        if r.is_err() {
            self.failed = Some(None);
        }
        Some(r)
    }
}

impl<'a> Records<'a> {
    /// An iterator whose only item is `e`.
    fn failed(e: DecodeError) -> Self {
        Records {
            rest: &[],
            base_offset: 0,
            base_timestamp: 0,
            log_append_time: None,
            remaining: 0,
            failed: Some(Some(e)),
        }
    }

    fn decode(&mut self) -> Decoded<RecordRef<'a>> {
        let mut cur = Cursor { buf: self.rest };
        let len = cur.varint()?;
        let body = cur.take_len(len)?;
        self.rest = cur.buf;
        let mut c = Cursor { buf: body };
        let attributes = c.u8()? as i8;
        let ts_delta = c.varlong()?;
        let offset_delta = c.varint()?;
        let key = c.nullable_bytes()?;
        let value = c.nullable_bytes()?;
        let header_count = c.varint()?;
        if header_count < 0 {
            return Err(DecodeError("negative header count"));
        }
        let headers = HeadersRef {
            buf: c.buf,
            remaining: header_count,
        };
        let timestamp = match self.log_append_time {
            Some(t) => t,
            None => self.base_timestamp.wrapping_add(ts_delta),
        };
        Ok(RecordRef {
            offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp,
            attributes,
            key,
            value,
            headers,
        })
    }
}

/// One record, borrowed from the batch bytes.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// The record's offset in its partition.
    pub offset: i64,
    /// Create time or log append time, per the batch's timestamp type.
    pub timestamp: i64,
    /// Record attributes (unused by Kafka today, kept as read).
    pub attributes: i8,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    headers: HeadersRef<'a>,
}

impl<'a> RecordRef<'a> {
    /// Iterates the record's headers.
    pub fn headers(&self) -> HeadersRef<'a> {
        self.headers
    }
}

/// Iterator over a record's headers.
#[derive(Clone, Copy, Debug)]
pub struct HeadersRef<'a> {
    buf: &'a [u8],
    remaining: i32,
}

impl<'a> Iterator for HeadersRef<'a> {
    type Item = Decoded<Header<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            if self.remaining == 0 && !self.buf.is_empty() {
                self.remaining = -1;
                return Some(Err(DecodeError("bytes after the last header")));
            }
            return None;
        }
        self.remaining -= 1;
        let mut c = Cursor { buf: self.buf };
        let r = (|| {
            let klen = c.varint()?;
            let key = c.take_len(klen)?;
            let key =
                std::str::from_utf8(key).map_err(|_| DecodeError("header key is not utf-8"))?;
            let value = c.nullable_bytes()?;
            Ok(Header { key, value })
        })();
        match r {
            Ok(h) => {
                self.buf = c.buf;
                Some(Ok(h))
            }
            Err(e) => {
                self.remaining = -1;
                Some(Err(e))
            }
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Decoded<u8> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(DecodeError("record truncated"))?;
        self.buf = rest;
        Ok(b)
    }
    fn varlong(&mut self) -> Decoded<i64> {
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(((b >> 1) as i64) ^ -((b & 1) as i64));
        }
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(DecodeError("varlong longer than 10 bytes"))
    }
    fn varint(&mut self) -> Decoded<i32> {
        // Most varints in a record (attributes aside: lengths, deltas, counts) fit one byte.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(((b >> 1) as i32) ^ -((b & 1) as i32));
        }
        let mut raw: u32 = 0;
        for i in 0..5 {
            let b = self.u8()?;
            raw |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32));
            }
        }
        Err(DecodeError("varint longer than 5 bytes"))
    }
    fn take_len(&mut self, len: i32) -> Decoded<&'a [u8]> {
        let len = usize::try_from(len).map_err(|_| DecodeError("negative length"))?;
        if len > self.buf.len() {
            return Err(DecodeError("length beyond the end of the record"));
        }
        let (a, b) = self.buf.split_at(len);
        self.buf = b;
        Ok(a)
    }
    fn nullable_bytes(&mut self) -> Decoded<Option<&'a [u8]>> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        self.take_len(len).map(Some)
    }
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn varint_len(v: i64) -> usize {
    let mut z = zigzag64(v);
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = zigzag64(v);
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varint_len(b.len() as i64) + b.len(),
        None => 1,
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

/// The identity and sequence a batch is written with; all "none" for a plain producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchProducer {
    /// Producer id, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// Producer epoch, or [`NO_PRODUCER_EPOCH`].
    pub producer_epoch: i16,
    /// Sequence of the first record, or [`NO_SEQUENCE`].
    pub base_sequence: i32,
    /// Whether the batch is part of a transaction.
    pub transactional: bool,
}

impl Default for BatchProducer {
    fn default() -> Self {
        BatchProducer {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
        }
    }
}

/// Encodes records into one batch, in place in a reusable buffer.
///
/// ```
/// use core_log::codec::{BatchBuilder, RecordBatch};
/// let mut b = BatchBuilder::new(Vec::new());
/// b.append(1_000, Some(b"k"), Some(b"v"), &[]);
/// let bytes = b.finish();
/// let batch = RecordBatch::new(&bytes).unwrap();
/// batch.validate().unwrap();
/// assert_eq!(batch.records_count(), 1);
/// ```
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    last_offset_delta: i32,
    producer: BatchProducer,
    control: bool,
    delete_horizon: Option<i64>,
    timestamp_type: TimestampType,
    partition_leader_epoch: i32,
    compression: Compression,
}

impl BatchBuilder {
    /// Starts a batch in `buf` (cleared first; its capacity is reused).
    pub fn new(mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.resize(BATCH_HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: None,
            max_timestamp: NO_TIMESTAMP,
            last_offset_delta: -1,
            producer: BatchProducer::default(),
            control: false,
            delete_horizon: None,
            timestamp_type: TimestampType::CreateTime,
            partition_leader_epoch: -1,
            compression: Compression::None,
        }
    }

    /// Compresses the records section with `codec` when the batch is finished.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    /// Sets the producer id, epoch, base sequence and transactional flag.
    pub fn producer(mut self, producer: BatchProducer) -> Self {
        self.producer = producer;
        self
    }

    /// Marks the batch as a transaction control batch.
    pub fn control(mut self, control: bool) -> Self {
        self.control = control;
        self
    }

    /// Sets the timestamp type bit.
    pub fn timestamp_type(mut self, t: TimestampType) -> Self {
        self.timestamp_type = t;
        self
    }

    /// Sets the delete horizon (KIP-534); the base timestamp then holds it.
    pub fn delete_horizon_ms(mut self, horizon: Option<i64>) -> Self {
        self.delete_horizon = horizon;
        if horizon.is_some() {
            // Record timestamps are deltas from the base timestamp, which now holds the horizon.
            self.base_timestamp = horizon;
        }
        self
    }

    /// Number of records appended so far.
    pub fn records_count(&self) -> i32 {
        self.count
    }

    /// Encoded size so far, header included, before compression.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// The encoded size a record would add.
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> usize {
        let body = self.body_len(self.last_offset_delta + 1, timestamp, key, value, headers);
        varint_len(body as i64) + body
    }

    fn body_len(
        &self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> usize {
        let base_ts = self.base_timestamp.unwrap_or(timestamp);
        let mut n = 1
            + varint_len(timestamp.wrapping_sub(base_ts))
            + varint_len(i64::from(offset_delta))
            + bytes_len(key)
            + bytes_len(value)
            + varint_len(headers.len() as i64);
        for h in headers {
            n += bytes_len(Some(h.key.as_bytes())) + bytes_len(h.value);
        }
        n
    }

    /// Appends a record at the next offset delta.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) {
        let delta = self.last_offset_delta + 1;
        self.append_with_offset_delta(delta, timestamp, key, value, headers);
    }

    /// Appends a record at a given offset delta, larger than the previous one. Compaction uses
    /// this to keep the offsets of the records it retains.
    pub fn append_with_offset_delta(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) {
        debug_assert!(offset_delta > self.last_offset_delta);
        let base_ts = *self.base_timestamp.get_or_insert(timestamp);
        let body = self.body_len(offset_delta, timestamp, key, value, headers);
        put_varint(&mut self.buf, body as i64);
        self.buf.push(0);
        put_varint(&mut self.buf, timestamp.wrapping_sub(base_ts));
        put_varint(&mut self.buf, i64::from(offset_delta));
        put_bytes(&mut self.buf, key);
        put_bytes(&mut self.buf, value);
        put_varint(&mut self.buf, headers.len() as i64);
        for h in headers {
            put_bytes(&mut self.buf, Some(h.key.as_bytes()));
            put_bytes(&mut self.buf, h.value);
        }
        self.count += 1;
        self.last_offset_delta = offset_delta;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Keeps the batch's last offset delta at least `delta` even when the records that had the
    /// larger deltas were removed (compaction keeps a batch's offset range, as Kafka does).
    pub fn set_last_offset_delta(&mut self, delta: i32) {
        self.last_offset_delta = self.last_offset_delta.max(delta);
    }

    /// Writes the header (base offset 0; the log assigns offsets on append) and the CRC and
    /// returns the encoded batch.
    pub fn finish(mut self) -> Vec<u8> {
        if self.compression != Compression::None {
            let mut packed = Vec::with_capacity(self.buf.len() / 2 + BATCH_HEADER_LEN);
            packed.resize(BATCH_HEADER_LEN, 0);
            self.compression
                .compress(&self.buf[BATCH_HEADER_LEN..], &mut packed);
            self.buf = packed;
        }
        let length = (self.buf.len() - LOG_OVERHEAD) as i32;
        let mut attributes: i16 = self.compression.id();
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= TIMESTAMP_TYPE_BIT;
        }
        if self.producer.transactional {
            attributes |= TRANSACTIONAL_BIT;
        }
        if self.control {
            attributes |= CONTROL_BIT;
        }
        if self.delete_horizon.is_some() {
            attributes |= DELETE_HORIZON_BIT;
        }
        let base_ts = self
            .delete_horizon
            .or(self.base_timestamp)
            .unwrap_or(NO_TIMESTAMP);
        let b = &mut self.buf;
        b[0..8].copy_from_slice(&0i64.to_be_bytes());
        b[8..12].copy_from_slice(&length.to_be_bytes());
        b[PARTITION_LEADER_EPOCH..MAGIC_AT]
            .copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        b[MAGIC_AT] = MAGIC as u8;
        b[ATTRIBUTES..LAST_OFFSET_DELTA].copy_from_slice(&attributes.to_be_bytes());
        b[LAST_OFFSET_DELTA..BASE_TIMESTAMP]
            .copy_from_slice(&self.last_offset_delta.max(0).to_be_bytes());
        b[BASE_TIMESTAMP..MAX_TIMESTAMP].copy_from_slice(&base_ts.to_be_bytes());
        b[MAX_TIMESTAMP..PRODUCER_ID].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[PRODUCER_ID..PRODUCER_EPOCH].copy_from_slice(&self.producer.producer_id.to_be_bytes());
        b[PRODUCER_EPOCH..BASE_SEQUENCE]
            .copy_from_slice(&self.producer.producer_epoch.to_be_bytes());
        b[BASE_SEQUENCE..RECORDS_COUNT].copy_from_slice(&self.producer.base_sequence.to_be_bytes());
        b[RECORDS_COUNT..BATCH_HEADER_LEN].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES..]);
        b[CRC..ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

/// The type of a transaction control record: the key of the one record of a marker batch.
/// Kafka's `ControlRecordType` (the types Kafka uses for its own metadata log, such as
/// `LEADER_CHANGE`, never appear in a topic partition and are not decoded here).
///
/// ```text
/// key   = version i16 (0) | type i16 (0 = abort, 1 = commit)
/// value = version i16 (0) | coordinator_epoch i32            (EndTransactionMarker)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlRecordType {
    /// The transaction is aborted: its records must be skipped by read_committed consumers.
    Abort,
    /// The transaction is committed: its records become visible to read_committed consumers.
    Commit,
}

/// The version of the control record key this log writes (Kafka's
/// `ControlRecordType.CURRENT_CONTROL_RECORD_KEY_VERSION`).
const CONTROL_KEY_VERSION: i16 = 0;
/// The version of the end transaction marker value this log writes (Kafka's
/// `EndTransactionMarker.CURRENT_END_TXN_MARKER_VERSION`).
const END_TXN_MARKER_VERSION: i16 = 0;
/// version i16, type i16.
const CONTROL_KEY_LEN: usize = 4;
/// version i16, coordinator epoch i32.
const END_TXN_MARKER_VALUE_LEN: usize = 6;

impl ControlRecordType {
    /// Kafka's numeric id of the type.
    pub fn id(self) -> i16 {
        match self {
            ControlRecordType::Abort => 0,
            ControlRecordType::Commit => 1,
        }
    }

    /// Decodes a control record's key. As in Kafka, a key version above the current one is
    /// read the same way (newer versions may only add fields after the type).
    ///
    /// ```
    /// use core_log::codec::{ControlRecordError, ControlRecordType};
    /// assert_eq!(ControlRecordType::parse(Some(&[0, 0, 0, 1])), Ok(ControlRecordType::Commit));
    /// assert_eq!(
    ///     ControlRecordType::parse(Some(&[0, 0, 0, 2])),
    ///     Err(ControlRecordError::UnknownType(2))
    /// );
    /// ```
    pub fn parse(key: Option<&[u8]>) -> Result<ControlRecordType, ControlRecordError> {
        let key = key.ok_or(ControlRecordError::Invalid(DecodeError(
            "control record without a key",
        )))?;
        if key.len() < CONTROL_KEY_LEN {
            return Err(ControlRecordError::Invalid(DecodeError(
                "control record key shorter than version and type",
            )));
        }
        if be_i16(key, 0) < 0 {
            return Err(ControlRecordError::Invalid(DecodeError(
                "negative control record key version",
            )));
        }
        match be_i16(key, 2) {
            0 => Ok(ControlRecordType::Abort),
            1 => Ok(ControlRecordType::Commit),
            other => Err(ControlRecordError::UnknownType(other)),
        }
    }
}

/// Why a control batch is not a transaction marker this log understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlRecordError {
    /// A well-formed key with a control type other than abort and commit.
    UnknownType(i16),
    /// The bytes are not a control record (missing or short key or value, a batch that is not
    /// a control batch, or without exactly one record).
    Invalid(DecodeError),
}

impl std::fmt::Display for ControlRecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlRecordError::UnknownType(t) => write!(f, "unknown control record type {t}"),
            ControlRecordError::Invalid(e) => write!(f, "invalid control record: {e}"),
        }
    }
}

impl std::error::Error for ControlRecordError {}

/// The content of a transaction marker: Kafka's `EndTransactionMarker`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndTransactionMarker {
    /// Commit or abort.
    pub kind: ControlRecordType,
    /// The epoch of the transaction coordinator that wrote the marker.
    pub coordinator_epoch: i32,
}

impl EndTransactionMarker {
    /// Encodes the marker as one control batch, as Kafka's
    /// `MemoryRecords.withEndTransactionMarker` does: transactional and control attributes,
    /// the producer's id and epoch, base sequence -1, one record with the control key and the
    /// marker value, timestamp `timestamp`. The base offset is 0; the log assigns it.
    ///
    /// ```
    /// use core_log::codec::{ControlRecordType, EndTransactionMarker, RecordBatch};
    /// let marker = EndTransactionMarker { kind: ControlRecordType::Abort, coordinator_epoch: 3 };
    /// let bytes = marker.encode_batch(Vec::new(), 42, 7, 1_000);
    /// let batch = RecordBatch::new(&bytes).unwrap();
    /// batch.validate().unwrap();
    /// assert!(batch.is_control() && batch.is_transactional());
    /// assert_eq!((batch.producer_id(), batch.producer_epoch()), (42, 7));
    /// assert_eq!(EndTransactionMarker::of(&batch), Ok(marker));
    /// ```
    pub fn encode_batch(
        &self,
        buf: Vec<u8>,
        producer_id: i64,
        producer_epoch: i16,
        timestamp: i64,
    ) -> Vec<u8> {
        let mut key = [0u8; CONTROL_KEY_LEN];
        key[..2].copy_from_slice(&CONTROL_KEY_VERSION.to_be_bytes());
        key[2..].copy_from_slice(&self.kind.id().to_be_bytes());
        let mut value = [0u8; END_TXN_MARKER_VALUE_LEN];
        value[..2].copy_from_slice(&END_TXN_MARKER_VERSION.to_be_bytes());
        value[2..].copy_from_slice(&self.coordinator_epoch.to_be_bytes());
        let mut b = BatchBuilder::new(buf)
            .producer(BatchProducer {
                producer_id,
                producer_epoch,
                base_sequence: NO_SEQUENCE,
                transactional: true,
            })
            .control(true);
        b.append(timestamp, Some(&key), Some(&value), &[]);
        b.finish()
    }

    /// Decodes the marker of a control batch: its type from the key and its coordinator epoch
    /// from the value of its one record. Unknown control types are
    /// [`ControlRecordError::UnknownType`], anything malformed [`ControlRecordError::Invalid`].
    pub fn of(batch: &RecordBatch<'_>) -> Result<EndTransactionMarker, ControlRecordError> {
        let invalid = |reason| ControlRecordError::Invalid(DecodeError(reason));
        if !batch.is_control() {
            return Err(invalid("not a control batch"));
        }
        if batch.records_count() != 1 {
            return Err(invalid(
                "a transaction marker batch holds exactly one record",
            ));
        }
        let record = batch
            .records()
            .next()
            .ok_or(invalid(
                "a transaction marker batch holds exactly one record",
            ))?
            .map_err(ControlRecordError::Invalid)?;
        let kind = ControlRecordType::parse(record.key)?;
        let value = record
            .value
            .ok_or(invalid("transaction marker without a value"))?;
        if value.len() < END_TXN_MARKER_VALUE_LEN {
            return Err(invalid("transaction marker value too short"));
        }
        if be_i16(value, 0) < 0 {
            return Err(invalid("negative transaction marker version"));
        }
        Ok(EndTransactionMarker {
            kind,
            coordinator_epoch: be_i32(value, 2),
        })
    }
}

/// In-place edits the log makes to a batch it accepts. None touch the CRC-covered bytes except
/// [`set_log_append_time`], which recomputes the CRC.
pub(crate) mod patch {
    use super::*;

    pub(crate) fn set_base_offset(batch: &mut [u8], base_offset: i64) {
        batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    }

    pub(crate) fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
        batch[PARTITION_LEADER_EPOCH..MAGIC_AT].copy_from_slice(&epoch.to_be_bytes());
    }

    /// `batch`'s header alone, with no records: the same base offset, last offset delta, max
    /// timestamp, producer id, epoch and base sequence (Kafka's `writeEmptyHeader`). Compaction
    /// keeps a producer's last batch this way so that a replay still finds its sequence. With
    /// no records there are no tombstones: the delete horizon goes, and the base timestamp
    /// becomes the max timestamp.
    pub(crate) fn empty_copy(batch: &RecordBatch<'_>, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&batch.as_bytes()[..BATCH_HEADER_LEN]);
        let length = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;
        out[8..12].copy_from_slice(&length.to_be_bytes());
        // No records: no compressed stream either.
        let attributes = batch.attributes() & !DELETE_HORIZON_BIT & !COMPRESSION_MASK;
        out[ATTRIBUTES..LAST_OFFSET_DELTA].copy_from_slice(&attributes.to_be_bytes());
        out[BASE_TIMESTAMP..MAX_TIMESTAMP].copy_from_slice(&batch.max_timestamp().to_be_bytes());
        out[RECORDS_COUNT..BATCH_HEADER_LEN].copy_from_slice(&0i32.to_be_bytes());
        let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
        out[CRC..ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
    }

    /// Stamps a batch with the log's append time, as Kafka does for
    /// `message.timestamp.type=LogAppendTime`: the type bit is set and the max timestamp holds
    /// the append time, which every record then reports.
    pub(crate) fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
        let attrs = be_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
        batch[ATTRIBUTES..LAST_OFFSET_DELTA].copy_from_slice(&attrs.to_be_bytes());
        batch[MAX_TIMESTAMP..PRODUCER_ID].copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
        batch[CRC..ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Rec {
        ts: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(String, Option<Vec<u8>>)>,
    }

    fn rec() -> impl Strategy<Value = Rec> {
        (
            // Kafka timestamps: -1 (none) or milliseconds since the epoch.
            -1i64..i64::MAX / 2,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::collection::vec(
                (
                    "[a-z\u{e9}]{0,8}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                ),
                0..3,
            ),
        )
            .prop_map(|(ts, key, value, headers)| Rec {
                ts,
                key,
                value,
                headers,
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_any_batch(
            recs in proptest::collection::vec(rec(), 0..20),
            pid in any::<i64>(), epoch in any::<i16>(), seq in any::<i32>(),
            transactional in any::<bool>(), control in any::<bool>(),
            base_offset in 0i64..i64::MAX / 2,
        ) {
            let mut b = BatchBuilder::new(Vec::new())
                .producer(BatchProducer { producer_id: pid, producer_epoch: epoch, base_sequence: seq, transactional })
                .control(control);
            for r in &recs {
                let hs: Vec<Header<'_>> = r.headers.iter().map(|(k, v)| Header { key: k, value: v.as_deref() }).collect();
                b.append(r.ts, r.key.as_deref(), r.value.as_deref(), &hs);
            }
            let mut bytes = b.finish();
            patch::set_base_offset(&mut bytes, base_offset);
            let batch = RecordBatch::new(&bytes).unwrap();
            batch.validate().unwrap();
            prop_assert_eq!(batch.base_offset(), base_offset);
            prop_assert_eq!(batch.records_count() as usize, recs.len());
            prop_assert_eq!(batch.producer_id(), pid);
            prop_assert_eq!(batch.producer_epoch(), epoch);
            prop_assert_eq!(batch.base_sequence(), seq);
            prop_assert_eq!(batch.is_transactional(), transactional);
            prop_assert_eq!(batch.is_control(), control);
            if let Some(max) = recs.iter().map(|r| r.ts).max() {
                prop_assert_eq!(batch.max_timestamp(), max);
            }
            for (i, (got, want)) in batch.records().zip(&recs).enumerate() {
                let got = got.unwrap();
                prop_assert_eq!(got.offset, base_offset + i as i64);
                prop_assert_eq!(got.timestamp, want.ts);
                prop_assert_eq!(got.key, want.key.as_deref());
                prop_assert_eq!(got.value, want.value.as_deref());
                let hs: Vec<_> = got.headers().map(|h| h.unwrap()).collect();
                prop_assert_eq!(hs.len(), want.headers.len());
                for (h, (k, v)) in hs.iter().zip(&want.headers) {
                    prop_assert_eq!(h.key, k.as_str());
                    prop_assert_eq!(h.value, v.as_deref());
                }
            }
        }

        /// Any bytes at all: decoding returns an error or a value, never panics.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ControlRecordType::parse(Some(&bytes));
            if let Ok(Some((b, _))) = RecordBatch::split(&bytes) {
                let _ = EndTransactionMarker::of(&b);
                let _ = b.validate();
                let _ = b.validate_records();
                for r in b.records().flatten() { for h in r.headers() { let _ = h; } }
            }
        }

        /// A compressed batch reads back as written; damaged anywhere in its stream (its CRC
        /// fixed, as a client computing it over what it sent would), reading it never panics
        /// and never inflates past the limit.
        #[test]
        fn compressed_batches_round_trip_and_damaged_ones_never_panic(
            recs in proptest::collection::vec(rec(), 1..20),
            codec in 1i16..5,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let codec = Compression::from_id(codec).unwrap();
            let mut b = BatchBuilder::new(Vec::new()).compression(codec);
            for r in &recs {
                let hs: Vec<Header<'_>> =
                    r.headers.iter().map(|(k, v)| Header { key: k, value: v.as_deref() }).collect();
                b.append(r.ts, r.key.as_deref(), r.value.as_deref(), &hs);
            }
            let mut bytes = b.finish();
            // Undamaged, it reads back as written.
            {
                let batch = RecordBatch::new(&bytes).unwrap();
                prop_assert_eq!(batch.compression(), codec.id());
                batch.validate().unwrap();
                let mut scratch = Vec::new();
                type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);
                let back: Vec<KeyValue> = batch
                    .records_in(&mut scratch, MAX_BATCH_BYTES)
                    .unwrap()
                    .map(|r| {
                        let r = r.unwrap();
                        (r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec))
                    })
                    .collect();
                let sent: Vec<_> = recs.iter().map(|r| (r.key.clone(), r.value.clone())).collect();
                prop_assert_eq!(back, sent);
            }
            let section = bytes.len() - BATCH_HEADER_LEN;
            for (at, x) in flips {
                bytes[BATCH_HEADER_LEN + at.index(section)] ^= x | 1;
            }
            bytes.truncate(BATCH_HEADER_LEN + 1 + cut.index(section));
            let length = (bytes.len() - LOG_OVERHEAD) as i32;
            bytes[8..12].copy_from_slice(&length.to_be_bytes());
            let crc = crc32c::crc32c(&bytes[ATTRIBUTES..]);
            bytes[CRC..ATTRIBUTES].copy_from_slice(&crc.to_be_bytes());
            let batch = RecordBatch::new(&bytes).unwrap();
            let mut scratch = Vec::new();
            let _ = batch.validate_in(&mut scratch, 1 << 16);
            prop_assert!(scratch.len() <= 1 << 16);
        }

        /// A flipped bit anywhere in a valid batch is caught: by the framing, the CRC, or (in
        /// the uncovered base offset) leaves a batch that still validates.
        #[test]
        fn any_flipped_bit_is_detected(recs in proptest::collection::vec(rec(), 1..5), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut b = BatchBuilder::new(Vec::new());
            for r in &recs { b.append(r.ts, r.key.as_deref(), r.value.as_deref(), &[]); }
            let mut bytes = b.finish();
            let at = pos.index(bytes.len());
            bytes[at] ^= 1 << bit;
            let ok = matches!(RecordBatch::new(&bytes).map(|b| b.validate()), Ok(Ok(_)));
            // Only the base offset and the partition leader epoch are outside the CRC.
            prop_assert_eq!(ok, at < 8 || (12..16).contains(&at));
        }
    }

    proptest! {
        /// A marker batch is Kafka's: control and transactional, base sequence -1, one record
        /// whose key is (version 0, type) and value (version 0, coordinator epoch).
        #[test]
        fn end_transaction_markers_round_trip(
            commit in any::<bool>(), coordinator_epoch in any::<i32>(),
            pid in 0i64..i64::MAX, epoch in 0i16..i16::MAX, ts in 0i64..i64::MAX / 2,
        ) {
            let kind = if commit { ControlRecordType::Commit } else { ControlRecordType::Abort };
            let marker = EndTransactionMarker { kind, coordinator_epoch };
            let bytes = marker.encode_batch(Vec::new(), pid, epoch, ts);
            let batch = RecordBatch::new(&bytes).unwrap();
            batch.validate().unwrap();
            prop_assert!(batch.is_control() && batch.is_transactional());
            prop_assert_eq!(batch.attributes(), TRANSACTIONAL_BIT | CONTROL_BIT);
            prop_assert_eq!((batch.producer_id(), batch.producer_epoch()), (pid, epoch));
            prop_assert_eq!(batch.base_sequence(), NO_SEQUENCE);
            prop_assert_eq!((batch.records_count(), batch.max_timestamp()), (1, ts));
            let r = batch.records().next().unwrap().unwrap();
            let key = [0, 0, 0, kind.id() as u8];
            prop_assert_eq!(r.key, Some(&key[..]));
            let mut value = vec![0, 0];
            value.extend_from_slice(&coordinator_epoch.to_be_bytes());
            prop_assert_eq!(r.value, Some(&value[..]));
            prop_assert_eq!(EndTransactionMarker::of(&batch), Ok(marker));
        }
    }

    #[test]
    fn control_records_that_are_not_markers_are_typed_errors() {
        fn invalid<T>(r: Result<T, ControlRecordError>) -> bool {
            matches!(r, Err(ControlRecordError::Invalid(_)))
        }
        assert_eq!(
            ControlRecordType::parse(Some(&[0, 0, 0, 0])),
            Ok(ControlRecordType::Abort)
        );
        // A newer key version is read the same way, as Kafka does.
        assert_eq!(
            ControlRecordType::parse(Some(&[0, 1, 0, 1, 9])),
            Ok(ControlRecordType::Commit)
        );
        // Kafka's other control types (LEADER_CHANGE = 2, snapshot header and footer).
        for t in [2u8, 3, 4, 0xff] {
            assert_eq!(
                ControlRecordType::parse(Some(&[0, 0, 0, t])),
                Err(ControlRecordError::UnknownType(i16::from(t)))
            );
        }
        assert!(invalid(ControlRecordType::parse(None)));
        assert!(invalid(ControlRecordType::parse(Some(&[0, 0, 0]))));
        assert!(invalid(ControlRecordType::parse(Some(&[0xff, 0xff, 0, 0]))));

        type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
        let control_batch = |records: &[KeyValue<'_>], control: bool| {
            let mut b = BatchBuilder::new(Vec::new()).control(control);
            for (k, v) in records {
                b.append(0, *k, *v, &[]);
            }
            b.finish()
        };
        let marker_of = |bytes: &[u8]| EndTransactionMarker::of(&RecordBatch::new(bytes).unwrap());
        let key: &[u8] = &[0, 0, 0, 1];
        let value: &[u8] = &[0, 0, 0, 0, 0, 7];
        assert_eq!(
            marker_of(&control_batch(&[(Some(key), Some(value))], true)),
            Ok(EndTransactionMarker {
                kind: ControlRecordType::Commit,
                coordinator_epoch: 7
            })
        );
        assert!(invalid(marker_of(&control_batch(
            &[(Some(key), Some(value))],
            false
        ))));
        assert!(invalid(marker_of(&control_batch(
            &[(Some(key), Some(value)); 2],
            true
        ))));
        assert!(invalid(marker_of(&control_batch(
            &[(Some(key), None)],
            true
        ))));
        assert!(invalid(marker_of(&control_batch(
            &[(Some(key), Some(&value[..5]))],
            true
        ))));
        assert!(invalid(marker_of(&control_batch(
            &[(Some(key), Some(&[0xff, 0, 0, 0, 0, 0]))],
            true
        ))));
        assert_eq!(
            marker_of(&control_batch(&[(Some(&[0, 0, 0, 2]), Some(value))], true)),
            Err(ControlRecordError::UnknownType(2))
        );
    }

    #[test]
    fn log_append_time_patch_keeps_crc_valid() {
        let mut b = BatchBuilder::new(Vec::new());
        b.append(5, None, Some(b"x"), &[]);
        b.append(7, None, Some(b"y"), &[]);
        let mut bytes = b.finish();
        patch::set_log_append_time(&mut bytes, 99);
        let batch = RecordBatch::new(&bytes).unwrap();
        batch.validate().unwrap();
        assert_eq!(batch.timestamp_type(), TimestampType::LogAppendTime);
        assert!(batch.records().all(|r| r.unwrap().timestamp == 99));
    }

    /// Kafka's own encoding of zigzag varints (ByteUtilsTest).
    #[test]
    fn varints_match_kafka() {
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (300, &[0xd8, 0x04]),
            (i32::MAX as i64, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN as i64, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (v, enc) in cases {
            let mut buf = Vec::new();
            put_varint(&mut buf, *v);
            assert_eq!(&buf[..], *enc, "{v}");
            assert_eq!(varint_len(*v), enc.len());
            let mut c = Cursor { buf: enc };
            assert_eq!(c.varlong().unwrap(), *v);
        }
    }
}
