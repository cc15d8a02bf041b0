//! Serdes: how keys and values become bytes in topics and stores.
//!
//! A [`Serde<T>`] both serializes and deserializes. Every pair of core-log's
//! [`Serializer`](core_log::serialization::Serializer) and
//! [`Deserializer`](core_log::serialization::Deserializer) for the same type is one:
//! [`BytesSerde`], [`StringSerde`], [`IntegerSerde`], [`Json`] and [`Bincode`], re-exported here.
//! [`Nullable`] wraps a serde to carry Kafka's `null` (a tombstone) as `None`.
//!
//! ```
//! use streams::serde::{IntegerSerde, Nullable, Serde};
//! let mut out = Vec::new();
//! Serde::<Option<i64>>::serialize(&Nullable(IntegerSerde), "t", &Some(7), &mut out).unwrap();
//! assert_eq!(out, 7i64.to_be_bytes());
//! assert!(Serde::<Option<i64>>::is_null(&Nullable(IntegerSerde), &None));
//! ```

pub use core_log::serialization::{
    Bincode, BytesSerde, Deserializer, IntegerSerde, Json, SerdeError, Serializer, StringSerde,
};

/// Reads and writes a `T` as bytes.
pub trait Serde<T>: Send + Sync + 'static {
    /// Appends the encoding of `value` to `out` (cleared by the caller).
    fn serialize(&self, topic: &str, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError>;

    /// Decodes `bytes`.
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<T, SerdeError>;

    /// Decodes bytes given up by the caller, taking the buffer over where the type allows
    /// (strings, byte vectors).
    fn deserialize_owned(&self, topic: &str, bytes: Vec<u8>) -> Result<T, SerdeError> {
        self.deserialize(topic, &bytes)
    }

    /// Whether `value` is written as Kafka's `null` (no bytes at all: a tombstone).
    fn is_null(&self, value: &T) -> bool {
        let _ = value;
        false
    }

    /// What a `null` reads as; `None` when this serde has no null, and the record is skipped.
    fn null(&self) -> Option<T> {
        None
    }
}

impl<T, S> Serde<T> for S
where
    S: Serializer<T> + Deserializer<T> + 'static,
{
    fn serialize(&self, topic: &str, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        Serializer::serialize(self, topic, value, out)
    }

    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<T, SerdeError> {
        Deserializer::deserialize(self, topic, bytes)
    }

    fn deserialize_owned(&self, topic: &str, bytes: Vec<u8>) -> Result<T, SerdeError> {
        Deserializer::deserialize_owned(self, topic, bytes)
    }
}

/// `Option<T>` with `None` as Kafka's `null`: a tombstone in a topic, a delete in a table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Nullable<S>(pub S);

impl<T, S: Serde<T>> Serde<Option<T>> for Nullable<S> {
    fn serialize(
        &self,
        topic: &str,
        value: &Option<T>,
        out: &mut Vec<u8>,
    ) -> Result<(), SerdeError> {
        match value {
            Some(v) => self.0.serialize(topic, v, out),
            None => Ok(()),
        }
    }

    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<Option<T>, SerdeError> {
        self.0.deserialize(topic, bytes).map(Some)
    }

    fn deserialize_owned(&self, topic: &str, bytes: Vec<u8>) -> Result<Option<T>, SerdeError> {
        self.0.deserialize_owned(topic, bytes).map(Some)
    }

    fn is_null(&self, value: &Option<T>) -> bool {
        value.is_none()
    }

    fn null(&self) -> Option<Option<T>> {
        Some(None)
    }
}

/// A shared, type-erased serde, as topologies keep them.
pub(crate) type SharedSerde<T> = std::sync::Arc<dyn Serde<T>>;

/// Serializes into `out` (cleared first); `Ok(false)` for a null.
pub(crate) fn encode<T: 'static>(
    serde: &dyn Serde<T>,
    topic: &str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<bool, SerdeError> {
    out.clear();
    if serde.is_null(value) {
        return Ok(false);
    }
    serde.serialize(topic, value, out)?;
    Ok(true)
}

thread_local! {
    /// The buffer [`append`] serializes into, reused by every serde of the thread.
    static APPEND_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Appends `value`'s encoding to `out`, which may hold bytes already: the serde writes into an
/// empty buffer (as the trait promises it), a thread's reused one, not a new one per value.
pub(crate) fn append<T: ?Sized>(
    serde: &(impl Fn(&T, &mut Vec<u8>) -> Result<(), SerdeError> + ?Sized),
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), SerdeError> {
    let r = APPEND_SCRATCH.try_with(|cell| {
        // Taken while a serde nested in this one appends: that one gets a buffer of its own.
        let mut scratch = cell.try_borrow_mut().ok()?;
        scratch.clear();
        let r = serde(value, &mut scratch);
        if r.is_ok() {
            out.extend_from_slice(&scratch);
        }
        if scratch.capacity() > APPEND_SCRATCH_KEEP {
            *scratch = Vec::new();
        }
        Some(r)
    });
    match r {
        Ok(Some(r)) => r,
        _ => {
            let mut buf = Vec::new();
            serde(value, &mut buf)?;
            out.extend_from_slice(&buf);
            Ok(())
        }
    }
}

/// The largest scratch buffer [`append`] keeps between values.
const APPEND_SCRATCH_KEEP: usize = 1 << 20;
