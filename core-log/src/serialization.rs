//! Typed keys and values: Kafka's `Serializer` and `Deserializer`.
//!
//! | type | encoding (Kafka's where Kafka has one) |
//! |---|---|
//! | [`BytesSerde`] | the bytes as they are (`ByteArraySerializer`) |
//! | [`StringSerde`] | UTF-8 (`StringSerializer`); decoding checks UTF-8 |
//! | [`IntegerSerde`] | big-endian, fixed width: `i16`/`u16` 2 bytes, `i32`/`u32` 4 (`IntegerSerializer`), `i64`/`u64` 8 (`LongSerializer`) |
//! | [`Json`] | `serde_json` |
//! | [`Bincode`] | `bincode` 1.3 (its stable, complete release) |
//!
//! A serializer writes into a buffer the caller reuses, so the hot path does not allocate per
//! record. Errors are returned to the caller for that one record, never panicked.
//!
//! ```
//! use core_log::serialization::{Deserializer, Json, Serializer};
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Like { user: u64, product: u64 }
//! let mut buf = Vec::new();
//! Json::default().serialize("likes", &Like { user: 1, product: 42 }, &mut buf).unwrap();
//! let back: Like = Json::default().deserialize("likes", &buf).unwrap();
//! assert_eq!(back, Like { user: 1, product: 42 });
//! ```

use std::marker::PhantomData;

/// The error a serializer or deserializer reports; the client wraps it with the topic,
/// partition and offset.
pub type SerdeError = Box<dyn std::error::Error + Send + Sync>;

/// Turns a `T` into bytes.
pub trait Serializer<T: ?Sized>: Send + Sync {
    /// Appends the encoding of `value` to `out` (which the caller has cleared).
    fn serialize(&self, topic: &str, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError>;
}

/// Turns bytes back into a `T`.
pub trait Deserializer<T>: Send + Sync {
    /// Decodes `bytes`.
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<T, SerdeError>;

    /// Decodes bytes the caller owns and gives up: a deserializer whose type can take the
    /// buffer over (strings, byte vectors) does so instead of copying.
    fn deserialize_owned(&self, topic: &str, bytes: Vec<u8>) -> Result<T, SerdeError> {
        self.deserialize(topic, &bytes)
    }

    /// Decodes `part`, a slice of `buffer` (the bytes a consumer fetched): a deserializer whose
    /// type can share the buffer ([`bytes::Bytes`]) takes a slice of it instead of copying.
    fn deserialize_shared(
        &self,
        topic: &str,
        buffer: &bytes::Bytes,
        part: &[u8],
    ) -> Result<T, SerdeError> {
        let _ = buffer;
        self.deserialize(topic, part)
    }
}

/// Raw bytes, unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesSerde;

impl Serializer<[u8]> for BytesSerde {
    fn serialize(&self, _: &str, value: &[u8], out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value);
        Ok(())
    }
}

impl Serializer<Vec<u8>> for BytesSerde {
    fn serialize(&self, _: &str, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value);
        Ok(())
    }
}

impl Deserializer<Vec<u8>> for BytesSerde {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> Result<Vec<u8>, SerdeError> {
        Ok(bytes.to_vec())
    }

    fn deserialize_owned(&self, _: &str, bytes: Vec<u8>) -> Result<Vec<u8>, SerdeError> {
        Ok(bytes)
    }
}

impl Deserializer<bytes::Bytes> for BytesSerde {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> Result<bytes::Bytes, SerdeError> {
        Ok(bytes::Bytes::copy_from_slice(bytes))
    }

    fn deserialize_owned(&self, _: &str, bytes: Vec<u8>) -> Result<bytes::Bytes, SerdeError> {
        Ok(bytes.into())
    }

    /// A slice of the consumer's fetch buffer: no copy, no allocation (a copy if `part` is
    /// not inside `buffer`). A slice kept keeps its whole fetch buffer (up to
    /// `max.partition.fetch.bytes`) alive: copy what is kept long
    /// (`Bytes::copy_from_slice`).
    fn deserialize_shared(
        &self,
        _: &str,
        buffer: &bytes::Bytes,
        part: &[u8],
    ) -> Result<bytes::Bytes, SerdeError> {
        let (at, end) = (
            buffer.as_ptr() as usize,
            buffer.as_ptr() as usize + buffer.len(),
        );
        let p = part.as_ptr() as usize;
        Ok(if p >= at && p + part.len() <= end {
            buffer.slice_ref(part)
        } else {
            bytes::Bytes::copy_from_slice(part)
        })
    }
}

/// UTF-8 strings.
#[derive(Clone, Copy, Debug, Default)]
pub struct StringSerde;

impl Serializer<str> for StringSerde {
    fn serialize(&self, _: &str, value: &str, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
}

impl Serializer<String> for StringSerde {
    fn serialize(&self, _: &str, value: &String, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
}

impl Deserializer<String> for StringSerde {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> Result<String, SerdeError> {
        Ok(std::str::from_utf8(bytes)?.to_owned())
    }

    fn deserialize_owned(&self, _: &str, bytes: Vec<u8>) -> Result<String, SerdeError> {
        Ok(String::from_utf8(bytes)?)
    }
}

/// Fixed-width big-endian integers, as Kafka's integer serializers write them.
#[derive(Clone, Copy, Debug, Default)]
pub struct IntegerSerde;

macro_rules! integer_serde {
    ($($t:ty),*) => {$(
        impl Serializer<$t> for IntegerSerde {
            fn serialize(&self, _: &str, value: &$t, out: &mut Vec<u8>) -> Result<(), SerdeError> {
                out.extend_from_slice(&value.to_be_bytes());
                Ok(())
            }
        }
        impl Deserializer<$t> for IntegerSerde {
            fn deserialize(&self, _: &str, bytes: &[u8]) -> Result<$t, SerdeError> {
                let arr: [u8; std::mem::size_of::<$t>()] = bytes.try_into().map_err(|_| {
                    format!(
                        "expected {} bytes for {}, got {}",
                        std::mem::size_of::<$t>(),
                        stringify!($t),
                        bytes.len()
                    )
                })?;
                Ok(<$t>::from_be_bytes(arr))
            }
        }
    )*};
}

integer_serde!(i16, u16, i32, u32, i64, u64);

/// Any serde type as JSON.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Default for Json<T> {
    fn default() -> Self {
        Json(PhantomData)
    }
}

impl<T> std::fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Json")
    }
}

impl<T: serde::Serialize> Serializer<T> for Json<T> {
    fn serialize(&self, _: &str, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        serde_json::to_writer(out, value)?;
        Ok(())
    }
}

impl<T: serde::de::DeserializeOwned> Deserializer<T> for Json<T> {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> Result<T, SerdeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// Any serde type in bincode's compact binary form.
pub struct Bincode<T>(PhantomData<fn() -> T>);

impl<T> Default for Bincode<T> {
    fn default() -> Self {
        Bincode(PhantomData)
    }
}

impl<T> std::fmt::Debug for Bincode<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bincode")
    }
}

/// The largest value bincode may allocate while decoding: a length prefix in hostile bytes
/// must not make it reserve gigabytes.
const BINCODE_LIMIT: u64 = 64 << 20;

fn bincode_options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(BINCODE_LIMIT)
}

impl<T: serde::Serialize> Serializer<T> for Bincode<T> {
    fn serialize(&self, _: &str, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        use bincode::Options;
        bincode_options().serialize_into(out, value)?;
        Ok(())
    }
}

impl<T: serde::de::DeserializeOwned> Deserializer<T> for Bincode<T> {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> Result<T, SerdeError> {
        use bincode::Options;
        Ok(bincode_options().deserialize(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T, S>(serde: &S, value: &T) -> T
    where
        S: Serializer<T> + Deserializer<T>,
    {
        let mut buf = Vec::new();
        serde.serialize("t", value, &mut buf).unwrap();
        serde.deserialize("t", &buf).unwrap()
    }

    #[test]
    fn integers_are_kafkas_big_endian_fixed_width() {
        let mut buf = Vec::new();
        Serializer::<i32>::serialize(&IntegerSerde, "t", &1, &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0, 1]);
        buf.clear();
        Serializer::<i64>::serialize(&IntegerSerde, "t", &-2, &mut buf).unwrap();
        assert_eq!(buf, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(round_trip(&IntegerSerde, &u64::MAX), u64::MAX);
        let short: Result<i64, _> = IntegerSerde.deserialize("t", &[1, 2, 3]);
        assert!(short.is_err());
    }

    #[test]
    fn bytes_share_the_buffer_they_are_a_slice_of_and_copy_other_bytes() {
        let buffer = bytes::Bytes::from(b"key-value".to_vec());
        let value: bytes::Bytes = BytesSerde
            .deserialize_shared("t", &buffer, &buffer[4..])
            .unwrap();
        assert_eq!(&value[..], b"value");
        assert_eq!(value.as_ptr(), buffer[4..].as_ptr());
        let elsewhere = b"other".to_vec();
        let value: bytes::Bytes = BytesSerde
            .deserialize_shared("t", &buffer, &elsewhere)
            .unwrap();
        assert_eq!(&value[..], b"other");
        assert_ne!(value.as_ptr(), elsewhere.as_ptr());
        // Other types decode the slice.
        let n: u32 = IntegerSerde
            .deserialize_shared("t", &buffer, &buffer[0..4])
            .unwrap();
        assert_eq!(n, u32::from_be_bytes(*b"key-"));
    }

    #[test]
    fn strings_check_utf8() {
        assert_eq!(round_trip(&StringSerde, &"héllo".to_string()), "héllo");
        let bad: Result<String, _> = StringSerde.deserialize("t", &[0xff, 0xfe]);
        assert!(bad.is_err());
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Event {
        user: u64,
        product: String,
        delta: i8,
    }

    #[test]
    fn serde_types_round_trip_and_bad_bytes_are_errors() {
        let e = Event {
            user: 7,
            product: "p-42".into(),
            delta: -1,
        };
        let back = round_trip(&Json::default(), &e);
        assert_eq!(back, e);
        let back = round_trip(&Bincode::default(), &e);
        assert_eq!(back, e);
        let bad: Result<Event, _> = Json::default().deserialize("t", b"{not json");
        assert!(bad.is_err());
        // A length prefix claiming an enormous string must fail, not allocate.
        let mut hostile = 7u64.to_le_bytes().to_vec();
        hostile.extend_from_slice(&u64::MAX.to_le_bytes());
        let bad: Result<Event, _> = Bincode::default().deserialize("t", &hostile);
        assert!(bad.is_err());
    }
}
