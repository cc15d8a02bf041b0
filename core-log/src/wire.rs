//! Kafka's wire-format primitives, shared by the record formats of the internal topics:
//! `__consumer_offsets` (`coordinator::records`) and `__transaction_state` (`txn::records`).
//!
//! ```text
//!  encode   record fn ──► Writer ──► Counter      (first run: the exact size)
//!                                └─► Vec<u8>      (second run: the bytes, no regrowth)
//!
//!  decode   &[u8] ──► Reader ──► value
//!                        └─────► WireError { record, reason } ──► the module's Corrupt error
//! ```
//!
//! Integers are big-endian. In classic versions a string is an `i16` length and UTF-8,
//! `bytes` an `i32` length and the data, an array an `i32` count and the elements, and -1 is
//! null. Flexible versions use Kafka's compact forms instead: an unsigned varint of length + 1
//! (0 for null), and a tagged-field section after every structure: a varint count, then per
//! field a varint tag, a varint size and the field's bytes. Writers and readers start
//! classic; a record switches them to flexible (`flexible = true`) once its version says so.
//!
//! The reader checks every length against the bytes that remain before using it, so corrupt
//! bytes give an error and never a panic or an allocation on behalf of a bogus length.

use crate::record::TopicPartition;

/// The longest string a record can hold: classic strings carry an `i16` length, and Kafka
/// refuses longer compact ones too. Callers check group ids, transactional ids, metadata and
/// client ids against it; the writer clips anything longer.
pub(crate) const MAX_STRING_LEN: usize = i16::MAX as usize;

// ---------------------------------------------------------------------------------------
// Kafka's partitionFor

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, in
/// wrapping 32-bit arithmetic.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The partition of an internal topic that holds `key` (a group id or a transactional id):
/// Kafka's `partitionFor`, `Utils.abs(key.hashCode()) % partitions`, where `Utils.abs` maps
/// `i32::MIN` to 0. The same key lands in the same partition as in Kafka with the same
/// partition count. `partitions` is at least 1 (the topic exists); 0 gives 0.
pub(crate) fn partition_for(key: &str, partitions: u32) -> u32 {
    let hash = java_string_hash(key);
    let abs = if hash == i32::MIN {
        0
    } else {
        hash.unsigned_abs()
    };
    abs.checked_rem(partitions).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Encoding

/// Where encoded bytes go: the output, or a counter that sizes it. Each format is written by
/// one function, run once to count and once to fill a vector of exactly the right size.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

fn measure(write: &dyn Fn(&mut Writer<'_>)) -> usize {
    let mut counter = Counter(0);
    write(&mut Writer::new(&mut counter));
    counter.0
}

/// The bytes `write` writes, in a vector of exactly their size.
pub(crate) fn encode_with(write: &dyn Fn(&mut Writer<'_>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(measure(write));
    write(&mut Writer::new(&mut out));
    out
}

/// Writes Kafka's primitive types; `flexible` selects the compact forms and tagged fields.
pub(crate) struct Writer<'s> {
    out: &'s mut dyn Sink,
    /// Whether the structure being written is a flexible version. Off at the start.
    pub(crate) flexible: bool,
}

impl<'s> Writer<'s> {
    fn new(out: &'s mut dyn Sink) -> Self {
        Writer {
            out,
            flexible: false,
        }
    }

    pub(crate) fn i8(&mut self, v: i8) {
        self.out.put(&v.to_be_bytes());
    }

    pub(crate) fn i16(&mut self, v: i16) {
        self.out.put(&v.to_be_bytes());
    }

    pub(crate) fn i32(&mut self, v: i32) {
        self.out.put(&v.to_be_bytes());
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.out.put(&v.to_be_bytes());
    }

    /// Kafka's unsigned varint: 7 bits a byte, low bits first, high bit set on all but the
    /// last.
    fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.out.put(&[(v as u8 & 0x7f) | 0x80]);
            v >>= 7;
        }
        self.out.put(&[v as u8]);
    }

    /// A length or count, or null: `i32` when `wide` (bytes, arrays) or `i16` (strings), -1
    /// for null; or, when flexible, a compact varint of length + 1 (0 for null). Lengths past
    /// what the form can say do not occur in memory (strings are clipped first); they
    /// saturate rather than wrap.
    fn length(&mut self, n: Option<usize>, wide: bool) {
        if self.flexible {
            let n = n.map_or(0, |n| {
                u32::try_from(n).map_or(u32::MAX, |n| n.saturating_add(1))
            });
            self.uvarint(n);
        } else if wide {
            self.i32(n.map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX)));
        } else {
            self.i16(n.map_or(-1, |n| i16::try_from(n).unwrap_or(i16::MAX)));
        }
    }

    /// An array count, or null.
    pub(crate) fn count(&mut self, n: Option<usize>) {
        self.length(n, true);
    }

    /// A Kafka string. Strings over [`MAX_STRING_LEN`] bytes cannot be represented; callers
    /// validate them, and anything longer is clipped at a character boundary rather than
    /// written with a wrong length.
    pub(crate) fn string(&mut self, s: &str) {
        let s = clip(s, MAX_STRING_LEN);
        self.length(Some(s.len()), false);
        self.out.put(s.as_bytes());
    }

    pub(crate) fn nullable_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.length(None, false),
        }
    }

    pub(crate) fn nullable_bytes(&mut self, b: Option<&[u8]>) {
        self.length(b.map(<[u8]>::len), true);
        if let Some(b) = b {
            self.out.put(b);
        }
    }

    /// A `bytes` field holding another encoded structure, written in place after its length.
    /// The nested structure has its own versions, so its writer starts classic.
    pub(crate) fn nested(&mut self, write: &dyn Fn(&mut Writer<'_>)) {
        self.length(Some(measure(write)), true);
        write(&mut Writer::new(&mut *self.out));
    }

    /// Kafka's `[topic str | partitions [i32]]` (each entry followed by its tagged fields when
    /// flexible), or null. Each run of consecutive partitions of one topic becomes one entry,
    /// so decoding gives back the same list in the same order; a list grouped by topic (what
    /// assignors and transactions produce) has one entry per topic, as Kafka writes it.
    ///
    /// Partition ids are written as Kafka's `i32`; ids past `i32::MAX` come out negative,
    /// which decoding refuses rather than misreads.
    pub(crate) fn topic_partitions(&mut self, tps: Option<&[TopicPartition]>) {
        let Some(tps) = tps else {
            self.count(None);
            return;
        };
        let runs = || tps.chunk_by(|a, b| a.topic == b.topic);
        self.count(Some(runs().count()));
        for run in runs() {
            self.string(run.first().map_or("", |tp| &tp.topic));
            self.count(Some(run.len()));
            for tp in run {
                self.i32(tp.partition as i32);
            }
            self.tagged_fields(&[]);
        }
    }

    /// The tagged-field section of a flexible structure: the fields whose value is not the
    /// default, `(tag, bytes)` in increasing tag order. Nothing in a classic version.
    pub(crate) fn tagged_fields(&mut self, fields: &[(u32, &[u8])]) {
        if !self.flexible {
            return;
        }
        self.uvarint(fields.len() as u32);
        for (tag, bytes) in fields {
            self.uvarint(*tag);
            self.uvarint(bytes.len() as u32);
            self.out.put(bytes);
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Why bytes could not be read: which record the reader was reading, and what is wrong. It
/// becomes [`InternalRecordError::Corrupt`] (a `From` impl), so `?` carries it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WireError {
    /// The record being read (the [`Reader`]'s `record`).
    pub(crate) record: &'static str,
    /// What is wrong.
    pub(crate) reason: &'static str,
}

pub(crate) type WireResult<T> = Result<T, WireError>;

/// Why a record of an internal topic (`__consumer_offsets`, `__transaction_state`) could not
/// be read: one error for both coordinators' records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InternalRecordError {
    /// A key version (record type) this coordinator does not keep, such as Kafka's newer
    /// consumer, share or streams group records. Not corruption: loaders skip it, as Kafka's
    /// do.
    UnknownKeyVersion {
        /// The internal topic.
        topic: &'static str,
        /// The key version.
        version: i16,
    },
    /// A version of a known record that cannot be read.
    UnsupportedVersion {
        /// Which record.
        record: &'static str,
        /// The version found.
        version: i16,
    },
    /// A field holding a code no Kafka version defines (a transaction state byte).
    UnknownCode {
        /// Which field.
        field: &'static str,
        /// The code found.
        code: i64,
    },
    /// Bytes that do not decode as the record says they are.
    Corrupt {
        /// Which record.
        record: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl InternalRecordError {
    /// Whether the record is of a type this coordinator does not keep (and may be skipped),
    /// rather than broken.
    pub(crate) fn is_unknown_key_version(&self) -> bool {
        matches!(self, InternalRecordError::UnknownKeyVersion { .. })
    }
}

impl std::fmt::Display for InternalRecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InternalRecordError::UnknownKeyVersion { topic, version } => {
                write!(f, "unknown {topic} key version {version}")
            }
            InternalRecordError::UnsupportedVersion { record, version } => {
                write!(f, "unsupported {record} version {version}")
            }
            InternalRecordError::UnknownCode { field, code } => write!(f, "unknown {field} {code}"),
            InternalRecordError::Corrupt { record, reason } => {
                write!(f, "corrupt {record}: {reason}")
            }
        }
    }
}

impl std::error::Error for InternalRecordError {}

impl From<WireError> for InternalRecordError {
    fn from(WireError { record, reason }: WireError) -> Self {
        InternalRecordError::Corrupt { record, reason }
    }
}

/// A bounds-checked reader over one record's bytes. `flexible` switches strings, bytes and
/// arrays to Kafka's compact forms and enables tagged-field sections.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    /// The record being read, named in errors. A reader may rename it once a key's version
    /// has said what the record is.
    pub(crate) record: &'static str,
    /// Whether the structure being read is a flexible version. Off at the start.
    pub(crate) flexible: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], record: &'static str) -> Self {
        Reader {
            buf,
            record,
            flexible: false,
        }
    }

    fn corrupt(&self, reason: &'static str) -> WireError {
        WireError {
            record: self.record,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> WireResult<&'a [u8]> {
        let Some((head, rest)) = self.buf.split_at_checked(n) else {
            return Err(self.corrupt("truncated"));
        };
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> WireResult<[u8; N]> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| self.corrupt("truncated"))
    }

    pub(crate) fn i8(&mut self) -> WireResult<i8> {
        self.array().map(i8::from_be_bytes)
    }

    pub(crate) fn i16(&mut self) -> WireResult<i16> {
        self.array().map(i16::from_be_bytes)
    }

    pub(crate) fn i32(&mut self) -> WireResult<i32> {
        self.array().map(i32::from_be_bytes)
    }

    pub(crate) fn i64(&mut self) -> WireResult<i64> {
        self.array().map(i64::from_be_bytes)
    }

    /// Kafka's unsigned varint (at most 5 bytes, 32 bits).
    fn uvarint(&mut self) -> WireResult<u32> {
        let mut value = 0u32;
        for i in 0..5 {
            let [b] = self.array::<1>()?;
            if i == 4 && b > 0x0f {
                return Err(self.corrupt("varint longer than 32 bits"));
            }
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.corrupt("varint longer than 32 bits"))
    }

    /// A length: an `i32` when `wide` (bytes, arrays) or an `i16` (strings), or a compact
    /// varint (length + 1) when flexible. `None` is null (-1); other negative lengths are
    /// corrupt. Not yet checked against the bytes left: callers do that before using it.
    fn length(&mut self, wide: bool) -> WireResult<Option<usize>> {
        let n = if self.flexible {
            i64::from(self.uvarint()?) - 1
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        match n {
            -1 => Ok(None),
            n => usize::try_from(n)
                .map(Some)
                .map_err(|_| self.corrupt("negative length")),
        }
    }

    pub(crate) fn nullable_bytes(&mut self) -> WireResult<Option<&'a [u8]>> {
        match self.length(true)? {
            Some(n) => self.take(n).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn bytes(&mut self) -> WireResult<&'a [u8]> {
        self.nullable_bytes()?
            .ok_or_else(|| self.corrupt("null bytes in a non-nullable field"))
    }

    /// `n` bytes of UTF-8.
    fn utf8(&mut self, n: usize) -> WireResult<String> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| self.corrupt("string is not UTF-8"))
    }

    /// A nullable string of any length the bytes hold (see [`Reader::bounded_string`]).
    pub(crate) fn nullable_string(&mut self) -> WireResult<Option<String>> {
        match self.length(false)? {
            Some(n) => self.utf8(n).map(Some),
            None => Ok(None),
        }
    }

    /// A string of any length the bytes hold (see [`Reader::bounded_string`]).
    pub(crate) fn string(&mut self) -> WireResult<String> {
        self.nullable_string()?
            .ok_or_else(|| self.corrupt("null string in a non-nullable field"))
    }

    /// A string of at most [`MAX_STRING_LEN`] bytes. Kafka refuses compact strings longer
    /// than an `i16` length could say (a classic length cannot say more), and so does this.
    pub(crate) fn bounded_string(&mut self) -> WireResult<String> {
        let n = self
            .length(false)?
            .ok_or_else(|| self.corrupt("null string in a non-nullable field"))?;
        if n > MAX_STRING_LEN {
            return Err(self.corrupt("string longer than 32767 bytes"));
        }
        self.utf8(n)
    }

    /// A nullable array whose elements take at least `min_size` bytes each: the count is
    /// checked against the bytes left before anything is allocated for it. `element` may
    /// fail with the caller's own error (a nested record's version, say).
    pub(crate) fn nullable_vec<T, E: From<WireError>>(
        &mut self,
        min_size: usize,
        mut element: impl FnMut(&mut Self) -> Result<T, E>,
    ) -> Result<Option<Vec<T>>, E> {
        let Some(n) = self.length(true)? else {
            return Ok(None);
        };
        if n > self.buf.len() / min_size.max(1) {
            return Err(self.corrupt("array count exceeds the bytes left").into());
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(element(self)?);
        }
        Ok(Some(out))
    }

    /// A non-nullable array; see [`Reader::nullable_vec`].
    pub(crate) fn vec<T, E: From<WireError>>(
        &mut self,
        min_size: usize,
        element: impl FnMut(&mut Self) -> Result<T, E>,
    ) -> Result<Vec<T>, E> {
        self.nullable_vec(min_size, element)?
            .ok_or_else(|| self.corrupt("null array in a non-nullable field").into())
    }

    /// The smallest encoding of a string (`wide` false), bytes or array length.
    pub(crate) fn min_len(&self, wide: bool) -> usize {
        match (self.flexible, wide) {
            (true, _) => 1,
            (false, false) => 2,
            (false, true) => 4,
        }
    }

    /// A flexible structure's tagged fields, each given to `field` as its tag and bytes.
    /// Nothing in a classic version.
    pub(crate) fn tagged_fields<E: From<WireError>>(
        &mut self,
        mut field: impl FnMut(u32, &'a [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.flexible {
            return Ok(());
        }
        // Each field takes at least two bytes, so the loop ends with the input.
        let count = self.uvarint()?;
        for _ in 0..count {
            let tag = self.uvarint()?;
            let size = self.uvarint()?;
            let bytes = self.take(size as usize)?;
            field(tag, bytes)?;
        }
        Ok(())
    }

    /// Skips a flexible structure's tagged fields, for structures with none this reader needs.
    pub(crate) fn skip_tagged_fields(&mut self) -> WireResult<()> {
        self.tagged_fields(|_, _| Ok::<(), WireError>(()))
    }

    /// A partition id: Kafka's `i32`, refused when negative.
    pub(crate) fn partition(&mut self) -> WireResult<u32> {
        u32::try_from(self.i32()?).map_err(|_| self.corrupt("negative partition"))
    }

    /// Kafka's `[topic str | partitions [i32]]` (with tagged fields per entry when
    /// flexible), flattened, or `None` for null.
    pub(crate) fn nullable_topic_partitions(&mut self) -> WireResult<Option<Vec<TopicPartition>>> {
        // An entry has at least its topic's length, its partition count and (flexible) its
        // tagged-field count.
        let entry_min = self.min_len(false) + self.min_len(true) + usize::from(self.flexible);
        let entries = self.nullable_vec(entry_min, |r| -> WireResult<_> {
            let topic = r.bounded_string()?;
            let partitions = r.vec(4, Reader::partition)?;
            r.skip_tagged_fields()?;
            Ok((topic, partitions))
        })?;
        Ok(entries.map(|entries| {
            entries
                .into_iter()
                .flat_map(|(topic, ps)| ps.into_iter().map(move |p| TopicPartition::new(&topic, p)))
                .collect()
        }))
    }

    /// A non-nullable [`Reader::nullable_topic_partitions`].
    pub(crate) fn topic_partitions(&mut self) -> WireResult<Vec<TopicPartition>> {
        self.nullable_topic_partitions()?
            .ok_or_else(|| self.corrupt("null array in a non-nullable field"))
    }

    /// Ends the read: bytes left over mean the record is not what its version says.
    pub(crate) fn finish(self) -> WireResult<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RECORD: &str = "TestRecord";

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn corrupt(reason: &'static str) -> WireError {
        WireError {
            record: RECORD,
            reason,
        }
    }

    fn write(flexible: bool, body: impl Fn(&mut Writer<'_>)) -> Vec<u8> {
        encode_with(&|w| {
            w.flexible = flexible;
            body(w);
        })
    }

    fn reader(bytes: &[u8], flexible: bool) -> Reader<'_> {
        let mut r = Reader::new(bytes, RECORD);
        r.flexible = flexible;
        r
    }

    #[test]
    fn java_string_hash_code() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(java_string_hash("été"), 227_742);
        // A character outside the BMP counts as its two UTF-16 surrogates.
        assert_eq!(java_string_hash("\u{1F600}g"), 54_959_972);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn partition_for_matches_kafka() {
        // Negative hashes: Kafka puts "my-group" in partition 12 of the default 50.
        assert_eq!(partition_for("my-group", 50), 12);
        // Utils.abs(Integer.MIN_VALUE) is 0, not a negative number.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("a", 0), 0);
    }

    #[test]
    fn uvarints_match_kafka() {
        fn varint(v: u32) -> Vec<u8> {
            let mut out = Vec::new();
            Writer::new(&mut out).uvarint(v);
            out
        }
        assert_eq!(varint(0), [0]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(u32::MAX), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        for v in [0, 127, 128, 300, 16_384, u32::MAX] {
            let bytes = varint(v);
            let mut r = Reader::new(&bytes, RECORD);
            assert_eq!(r.uvarint().unwrap(), v);
            assert!(r.finish().is_ok());
        }
        // Over 32 bits, in the fifth byte or past it.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x1f], RECORD);
        assert_eq!(r.uvarint(), Err(corrupt("varint longer than 32 bits")));
        let mut r = Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], RECORD);
        assert_eq!(r.uvarint(), Err(corrupt("varint longer than 32 bits")));
        // Cut short.
        let mut r = Reader::new(&[0x80, 0x80], RECORD);
        assert_eq!(r.uvarint(), Err(corrupt("truncated")));
    }

    #[test]
    fn classic_and_compact_forms() {
        let tps = [tp("a", 0), tp("a", 1), tp("b", 4)];
        let fields = |w: &mut Writer<'_>| {
            w.string("hi");
            w.nullable_string(None);
            w.nullable_bytes(Some(&[7]));
            w.nullable_bytes(None);
            w.count(Some(2));
            w.topic_partitions(Some(&tps));
            w.topic_partitions(None);
            w.tagged_fields(&[(3, &[9, 9])]);
        };
        #[rustfmt::skip]
        let classic: &[u8] = &[
            0, 2, b'h', b'i',
            0xff, 0xff,
            0, 0, 0, 1, 7,
            0xff, 0xff, 0xff, 0xff,
            0, 0, 0, 2,
            0, 0, 0, 2,
                0, 1, b'a', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1,
                0, 1, b'b', 0, 0, 0, 1, 0, 0, 0, 4,
            0xff, 0xff, 0xff, 0xff,
            // no tagged fields in a classic version
        ];
        #[rustfmt::skip]
        let compact: &[u8] = &[
            3, b'h', b'i',
            0,
            2, 7,
            0,
            3,
            3,
                2, b'a', 3, 0, 0, 0, 0, 0, 0, 0, 1, 0,
                2, b'b', 2, 0, 0, 0, 4, 0,
            0,
            1, 3, 2, 9, 9,
        ];
        assert_eq!(write(false, fields), classic);
        assert_eq!(write(true, fields), compact);

        for (bytes, flexible) in [(classic, false), (compact, true)] {
            let mut r = reader(bytes, flexible);
            assert_eq!(r.string().unwrap(), "hi");
            assert_eq!(r.nullable_string().unwrap(), None);
            assert_eq!(r.nullable_bytes().unwrap(), Some(&[7u8][..]));
            assert_eq!(r.nullable_bytes().unwrap(), None);
            assert_eq!(r.length(true).unwrap(), Some(2));
            assert_eq!(r.topic_partitions().unwrap(), tps);
            assert_eq!(r.nullable_topic_partitions().unwrap(), None);
            let mut seen = Vec::new();
            r.tagged_fields(|tag, bytes| {
                seen.push((tag, bytes.to_vec()));
                Ok::<(), WireError>(())
            })
            .unwrap();
            if flexible {
                assert_eq!(seen, [(3, vec![9, 9])]);
            } else {
                assert!(seen.is_empty());
            }
            r.finish().unwrap();
        }
    }

    #[test]
    fn nested_structures_are_classic_and_sized() {
        let inner = |w: &mut Writer<'_>| w.string("x");
        // In a flexible structure the nested bytes get a compact length, but the nested
        // structure keeps its own (classic) form.
        assert_eq!(write(true, |w| w.nested(&inner)), [4, 0, 1, b'x']);
        assert_eq!(write(false, |w| w.nested(&inner)), [0, 0, 0, 3, 0, 1, b'x']);
        let bytes = write(false, |w| w.nested(&inner));
        assert_eq!(bytes.capacity(), bytes.len());
    }

    #[test]
    fn overlong_strings_are_clipped_at_a_char_boundary() {
        let long = "é".repeat(MAX_STRING_LEN); // two bytes each
        for flexible in [false, true] {
            let bytes = write(flexible, |w| w.string(&long));
            let got = reader(&bytes, flexible).bounded_string().unwrap();
            assert_eq!(got.len(), MAX_STRING_LEN - 1);
            assert!(long.starts_with(&got));
        }
    }

    #[test]
    fn reads_never_pass_the_end() {
        let mut r = reader(&[1, 2, 3], false);
        assert_eq!(r.i32(), Err(corrupt("truncated")));
        // A failed read consumes nothing.
        assert_eq!(r.i16().unwrap(), 0x0102);
        assert_eq!(r.i8().unwrap(), 3);
        assert_eq!(r.i8(), Err(corrupt("truncated")));
        assert_eq!(reader(&[], false).i64(), Err(corrupt("truncated")));
        // Lengths longer than what is left.
        assert_eq!(
            reader(&[0, 3, b'a', b'b'], false).string(),
            Err(corrupt("truncated"))
        );
        assert_eq!(
            reader(&[0x7f, 0xff, 0xff, 0xff, 1], false).bytes(),
            Err(corrupt("truncated"))
        );
        assert_eq!(
            reader(&[0xff, 0xff, 0xff, 0xff, 0x0f], true).nullable_bytes(),
            Err(corrupt("truncated"))
        );
        assert_eq!(
            reader(&[1, 0, 5, 0], true).skip_tagged_fields(),
            Err(corrupt("truncated"))
        );
        assert_eq!(reader(&[0], false).finish(), Err(corrupt("trailing bytes")));
    }

    #[test]
    fn lengths_are_checked_before_use() {
        // Negative lengths other than null.
        assert_eq!(
            reader(&[0xff, 0xfe], false).nullable_string(),
            Err(corrupt("negative length"))
        );
        assert_eq!(
            reader(&[0x80, 0, 0, 0], false).nullable_bytes(),
            Err(corrupt("negative length"))
        );
        // Null where the schema has none.
        assert_eq!(
            reader(&[0xff, 0xff], false).string(),
            Err(corrupt("null string in a non-nullable field"))
        );
        assert_eq!(
            reader(&[0], true).bytes(),
            Err(corrupt("null bytes in a non-nullable field"))
        );
        assert_eq!(
            reader(&[0xff, 0xff, 0xff, 0xff], false).vec(4, Reader::i32),
            Err(corrupt("null array in a non-nullable field"))
        );
        assert_eq!(
            reader(&[0], true).topic_partitions(),
            Err(corrupt("null array in a non-nullable field"))
        );
        // Counts that the bytes left cannot hold fail before any allocation.
        let huge = [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1];
        assert_eq!(
            reader(&huge, false).vec(4, Reader::i32),
            Err(corrupt("array count exceeds the bytes left"))
        );
        // Two i32s claimed, 7 bytes left.
        let short = [0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(
            reader(&short, false).vec(4, Reader::i32),
            Err(corrupt("array count exceeds the bytes left"))
        );
        assert_eq!(
            reader(&[0xff, 0xff, 0xff, 0xff, 0x0f], true).nullable_topic_partitions(),
            Err(corrupt("array count exceeds the bytes left"))
        );
        // A zero minimum size is taken as one byte, not a division by zero.
        assert_eq!(
            reader(&[0, 0, 0, 2, 0], false).vec(0, |_| Ok::<(), WireError>(())),
            Err(corrupt("array count exceeds the bytes left"))
        );
        // Compact strings Kafka would refuse, and bad UTF-8.
        let long = [&[0x81, 0x80, 0x02][..], &[b'a'; 1 << 15]].concat();
        assert_eq!(reader(&long, true).string().unwrap().len(), 1 << 15);
        assert_eq!(
            reader(&long, true).bounded_string(),
            Err(corrupt("string longer than 32767 bytes"))
        );
        assert_eq!(
            reader(&[0, 1, 0xff], false).string(),
            Err(corrupt("string is not UTF-8"))
        );
        let negative = [0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            reader(&negative, false).topic_partitions(),
            Err(corrupt("negative partition"))
        );
    }

    #[test]
    fn element_errors_keep_the_callers_type() {
        #[derive(Debug, PartialEq)]
        enum Outer {
            Wire(WireError),
            Mine,
        }
        impl From<WireError> for Outer {
            fn from(e: WireError) -> Self {
                Outer::Wire(e)
            }
        }
        let bytes = [0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            reader(&bytes, false).vec(4, |_| Err::<(), _>(Outer::Mine)),
            Err(Outer::Mine)
        );
        assert_eq!(
            reader(&bytes[..2], false).vec(4, |_| Err::<(), _>(Outer::Mine)),
            Err(Outer::Wire(corrupt("truncated")))
        );
        assert_eq!(
            reader(&[1, 0, 0], true).tagged_fields(|_, _| Err(Outer::Mine)),
            Err(Outer::Mine)
        );
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z\u{e9}\u{1F600}.-]{0,10}"
    }

    proptest! {
        /// What the writer writes, the reader reads back, in both forms.
        #[test]
        fn round_trips(
            flexible in any::<bool>(),
            s in name(),
            ns in proptest::option::of(name()),
            b in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            tps in proptest::option::of(proptest::collection::vec(("[ab]{1,2}", 0..=i32::MAX as u32), 0..8)),
            ints in (any::<i8>(), any::<i16>(), any::<i32>(), any::<i64>()),
        ) {
            let tps: Option<Vec<TopicPartition>> =
                tps.map(|v| v.into_iter().map(|(t, p)| TopicPartition::new(t, p)).collect());
            let bytes = write(flexible, |w| {
                w.string(&s);
                w.nullable_string(ns.as_deref());
                w.nullable_bytes(b.as_deref());
                w.topic_partitions(tps.as_deref());
                w.i8(ints.0);
                w.i16(ints.1);
                w.i32(ints.2);
                w.i64(ints.3);
                w.tagged_fields(&[(1, &[1, 2]), (200, &[])]);
            });
            prop_assert_eq!(bytes.capacity(), bytes.len());
            let read = |bytes: &[u8]| -> WireResult<_> {
                let mut r = reader(bytes, flexible);
                let got = (
                    r.bounded_string()?,
                    r.nullable_string()?,
                    r.nullable_bytes()?.map(<[u8]>::to_vec),
                    r.nullable_topic_partitions()?,
                    (r.i8()?, r.i16()?, r.i32()?, r.i64()?),
                );
                r.skip_tagged_fields()?;
                r.finish()?;
                Ok(got)
            };
            prop_assert_eq!(read(&bytes), Ok((s, ns, b, tps, ints)));
            for len in 0..bytes.len() {
                prop_assert!(read(&bytes[..len]).is_err(), "prefix {len}");
            }
        }

        /// Any bytes give values or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(
            flexible in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut r = reader(&bytes, flexible);
            let _ = r.nullable_topic_partitions();
            let _ = r.vec(2, Reader::nullable_string);
            let _ = r.bytes();
            let _ = r.tagged_fields(|_, _| Ok::<(), WireError>(()));
            let _ = r.finish();
        }
    }
}
