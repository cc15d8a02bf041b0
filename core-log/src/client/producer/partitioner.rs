//! Choosing a record's partition, as Kafka's producer does.
//!
//! - A record with an explicit partition goes there.
//! - [`PartitionerKind::BuiltIn`] (Kafka's default, no `partitioner.class`): a keyed record goes
//!   to `to_positive(murmur2(key)) % partitions` ([`partition_for_key`]), bit for bit Kafka's
//!   choice, so a key lands where a Kafka client would put it; a keyless record uses the sticky
//!   partitioner: it stays on one partition until that partition's batch is full or sent, then
//!   moves to another (KIP-480), so keyless records form full batches instead of one record
//!   per partition per batch.
//! - [`PartitionerKind::RoundRobin`] (Kafka's `RoundRobinPartitioner`): every record, keyed or
//!   not, to the next partition in turn.
//! - [`PartitionerKind::Custom`]: a [`Partitioner`] of your own.

use std::sync::Arc;

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`, reading the input as
/// little-endian 4-byte words, returning Java's signed `int`.
///
/// ```
/// // Kafka's own test vector (UtilsTest.testMurmur2).
/// assert_eq!(core_log::murmur2(b"foobar"), -790332482);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java's `int length`: the cast only differs for inputs over 2 GiB, which no record is.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        let mut k = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // Kafka's switch falls through from case 3 to case 1.
        if tail.len() == 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which fails on `i32::MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition Kafka's default partitioner gives a serialized key among `partitions`
/// partitions: `to_positive(murmur2(key)) % partitions` (Kafka's
/// `BuiltInPartitioner.partitionForKey`).
///
/// ```
/// // murmur2("foobar") = -790332482; to_positive gives 1357151166; 1357151166 % 4 = 2.
/// assert_eq!(core_log::partition_for_key(b"foobar", 4), 2);
/// ```
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    // `max(1)`: a topic has at least one partition; the guard only keeps this total.
    to_positive(murmur2(key)) as u32 % partitions.max(1)
}

/// A custom partitioner (Kafka's `Partitioner` interface), given the serialized key and value.
///
/// ```
/// use core_log::Partitioner;
/// /// Everything with a key starting with "vip-" to partition 0, the rest spread by key.
/// #[derive(Debug)]
/// struct Vip;
/// impl Partitioner for Vip {
///     fn partition(&self, _topic: &str, key: Option<&[u8]>, _value: Option<&[u8]>, n: u32) -> u32 {
///         match key {
///             Some(k) if k.starts_with(b"vip-") => 0,
///             Some(k) => core_log::partition_for_key(k, n),
///             None => 0,
///         }
///     }
/// }
/// ```
pub trait Partitioner: Send + Sync + std::fmt::Debug {
    /// The partition, in `0..partition_count`, for a record of `topic`. A value out of range
    /// fails that record's `send` with `UnknownTopicOrPartition`.
    fn partition(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partition_count: u32,
    ) -> u32;
}

/// Which partitioner a producer uses for records without an explicit partition: Kafka's
/// `partitioner.class`.
#[derive(Clone, Debug, Default)]
pub enum PartitionerKind {
    /// Kafka's built-in partitioner (no `partitioner.class`): murmur2 of the key for keyed
    /// records, sticky for keyless ones.
    #[default]
    BuiltIn,
    /// Kafka's `RoundRobinPartitioner`: each record to the next partition in turn, keys
    /// ignored.
    RoundRobin,
    /// A partitioner of your own.
    Custom(Arc<dyn Partitioner>),
}

/// How the accumulator places one record, decided before it takes its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// This partition (explicit, by key, or from a custom partitioner).
    Fixed(u32),
    /// The topic's sticky partition (keyless record, built-in partitioner).
    Sticky,
    /// The topic's next partition in turn.
    RoundRobin,
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0.
pub(crate) fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// A small xorshift generator for the sticky partitioner's random choice (Kafka picks the
/// next sticky partition at random so that producers do not move in lockstep).
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // Mixed with an address so that producers created in the same nanosecond differ.
        let local = 0u8;
        let addr = &local as *const u8 as u64;
        Rng((nanos ^ addr.rotate_left(32)) | 1)
    }

    pub(crate) fn next_below(&mut self, n: u32) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        ((x >> 32) % u64::from(n.max(1))) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX - 5, 5), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX - 4, 5), 0);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX, 3), 2);
    }
}
