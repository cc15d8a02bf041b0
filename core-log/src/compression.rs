//! The compression codecs of a record batch (Kafka's `compression.type`): the records section
//! of a batch (everything after its 61-byte header) is compressed as one stream, and the
//! batch's attributes name the codec (bits 0-2).
//!
//! The stream formats are the ones Kafka's clients write and read:
//! - gzip: a gzip stream (RFC 1952); several members are read as one.
//! - snappy: written in the xerial framing of Kafka's Java client (`snappy-java`'s
//!   `SnappyOutputStream`: an 8-byte magic, two version ints, then blocks of a big-endian
//!   length and raw snappy), which librdkafka reads too; read in that framing or as one raw
//!   snappy block (what librdkafka writes).
//! - lz4: the LZ4 frame format (Kafka's `KafkaLZ4BlockOutputStream` since magic 1).
//! - zstd: a zstd frame.
//!
//! Decompression is bounded: it stops, with an error, once the output would pass the limit the
//! caller gives (`max.message.bytes` for an append), so a small batch that inflates to
//! gigabytes (a decompression bomb) costs at most the limit. Nothing is allocated from a
//! length the compressed bytes claim before that length is checked against the limit.

use std::io::{Read, Write};

use crate::codec::DecodeError;

/// A batch's codec, with Kafka's ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// `none` (0): records as they are.
    #[default]
    None,
    /// `gzip` (1).
    Gzip,
    /// `snappy` (2).
    Snappy,
    /// `lz4` (3).
    Lz4,
    /// `zstd` (4).
    Zstd,
}

/// The xerial framing's magic: `-126 'S' 'N' 'A' 'P' 'P' 'Y' 0`.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic, version and compatible version.
const XERIAL_HEADER_LEN: usize = 16;
/// The uncompressed size of each xerial block Kafka's Java client writes.
const XERIAL_BLOCK: usize = 32 * 1024;

/// The smallest window (as a power of two) zstd frames may use: 8 MiB.
const ZSTD_MIN_WINDOW_LOG: u32 = 23;
/// The largest: 2 GiB, zstd's own bound on 64-bit machines for frames it decodes.
const ZSTD_MAX_WINDOW_LOG: u32 = 31;

/// zstd's level when Kafka's `compression.zstd.level` is not set (zstd's own default).
const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// Every codec, `none` first.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec with Kafka's `id` (the attributes' bits 0-2).
    pub fn from_id(id: i16) -> Result<Compression, DecodeError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            _ => Err(DecodeError("unknown compression codec")),
        }
    }

    /// Kafka's id of the codec.
    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec a `compression.type` value names.
    pub fn from_name(name: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Kafka's name of the codec (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Appends `input` compressed to `out`. Writing into a `Vec` cannot fail; the codecs'
    /// `io::Result`s are for other writers.
    pub fn compress(self, input: &[u8], out: &mut Vec<u8>) {
        let written = match self {
            Compression::None => {
                out.extend_from_slice(input);
                Ok(())
            }
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                e.write_all(input).and_then(|()| e.finish().map(drop))
            }
            Compression::Snappy => {
                xerial_compress(input, out);
                Ok(())
            }
            Compression::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(out);
                e.write_all(input)
                    .and_then(|()| e.finish().map(drop).map_err(std::io::Error::other))
            }
            Compression::Zstd => zstd::stream::copy_encode(input, out, ZSTD_LEVEL),
        };
        debug_assert!(
            written.is_ok(),
            "compressing into a Vec failed: {written:?}"
        );
    }

    /// Appends `input` decompressed to `out`, failing without growing `out` past `limit`
    /// bytes more if the output would be larger.
    pub fn decompress(
        self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), DecodeError> {
        match self {
            Compression::None => {
                if input.len() > limit {
                    return Err(TOO_LARGE);
                }
                out.extend_from_slice(input);
                Ok(())
            }
            Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), out, limit),
            Compression::Snappy => snappy_decompress(input, out, limit),
            Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(input), out, limit),
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(input)
                    .map_err(|_| DecodeError("corrupt zstd data"))?;
                // A frame's header names its window, which the decoder allocates whatever the
                // output turns out to be: a few bytes could ask for zstd's default maximum of
                // 128 MiB. Windows are capped at the limit (at least 8 MiB, what producers'
                // streaming compressors use at their default levels).
                let window_log = usize::BITS - limit.max(1 << ZSTD_MIN_WINDOW_LOG).leading_zeros();
                d.window_log_max(window_log.min(ZSTD_MAX_WINDOW_LOG))
                    .map_err(|_| DecodeError("corrupt zstd data"))?;
                read_bounded(d, out, limit)
            }
        }
    }
}

const TOO_LARGE: DecodeError = DecodeError("records decompress to more than the batch size limit");

/// Reads `reader` to its end into `out`, at most `limit` bytes.
fn read_bounded(reader: impl Read, out: &mut Vec<u8>, limit: usize) -> Result<(), DecodeError> {
    let start = out.len();
    // One byte past the limit tells a stream of exactly `limit` bytes from a longer one.
    let mut bounded = reader.take(limit as u64 + 1);
    match bounded.read_to_end(out) {
        Ok(_) if out.len() - start > limit => {
            out.truncate(start);
            Err(TOO_LARGE)
        }
        Ok(_) => Ok(()),
        Err(_) => {
            out.truncate(start);
            Err(DecodeError("corrupt compressed records"))
        }
    }
}

/// Kafka's Java framing: the header, then blocks of at most [`XERIAL_BLOCK`] input bytes,
/// each a big-endian length and its raw snappy.
fn xerial_compress(input: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes()); // version
    out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
    let mut encoder = snap::raw::Encoder::new();
    for block in input.chunks(XERIAL_BLOCK) {
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let max = snap::raw::max_compress_len(block.len());
        out.resize(len_at + 4 + max, 0);
        // The output was sized by max_compress_len and the input is under snappy's 4 GiB
        // limit, which are the encoder's only failures.
        let n = encoder
            .compress(block, &mut out[len_at + 4..])
            .unwrap_or_default();
        out.truncate(len_at + 4 + n);
        out[len_at..len_at + 4].copy_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Snappy in the xerial framing, or one raw block.
fn snappy_decompress(input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), DecodeError> {
    let start = out.len();
    let result = if input.len() >= XERIAL_HEADER_LEN && input[..8] == XERIAL_MAGIC {
        let mut rest = &input[XERIAL_HEADER_LEN..];
        let mut r = Ok(());
        while !rest.is_empty() {
            let Some((len, body)) = rest.split_first_chunk::<4>() else {
                r = Err(DecodeError("truncated snappy block length"));
                break;
            };
            let len = u32::from_be_bytes(*len) as usize;
            if len > body.len() {
                r = Err(DecodeError("snappy block beyond the end of the batch"));
                break;
            }
            let (block, next) = body.split_at(len);
            if let Err(e) = snappy_block(block, out, limit.saturating_sub(out.len() - start)) {
                r = Err(e);
                break;
            }
            rest = next;
        }
        r
    } else {
        snappy_block(input, out, limit)
    };
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// One raw snappy block, its claimed length checked against `limit` before anything is
/// allocated for it.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), DecodeError> {
    let len = snap::raw::decompress_len(block).map_err(|_| DecodeError("corrupt snappy data"))?;
    if len > limit {
        return Err(TOO_LARGE);
    }
    let at = out.len();
    out.resize(at + len, 0);
    match snap::raw::Decoder::new().decompress(block, &mut out[at..]) {
        Ok(n) if n == len => Ok(()),
        _ => Err(DecodeError("corrupt snappy data")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_compresses() {
        let input = sample();
        for c in Compression::ALL {
            let mut packed = Vec::new();
            c.compress(&input, &mut packed);
            if c != Compression::None {
                assert!(packed.len() < input.len() / 4, "{c:?}: {}", packed.len());
            }
            let mut back = vec![7];
            c.decompress(&packed, &mut back, input.len()).unwrap();
            assert_eq!(back[0], 7, "{c:?} appends");
            assert_eq!(&back[1..], &input[..], "{c:?}");
        }
    }

    #[test]
    fn a_stream_larger_than_the_limit_is_refused_and_leaves_the_output_as_it_was() {
        let input = vec![0u8; 1 << 20];
        for c in Compression::ALL {
            let mut packed = Vec::new();
            c.compress(&input, &mut packed);
            let mut out = vec![1, 2, 3];
            assert_eq!(
                c.decompress(&packed, &mut out, (1 << 20) - 1),
                Err(TOO_LARGE),
                "{c:?}"
            );
            assert_eq!(out, [1, 2, 3], "{c:?}");
            c.decompress(&packed, &mut out, 1 << 20).unwrap();
        }
    }

    /// A zstd frame header that asks for a 2 GiB window (and says nothing of its content
    /// size) is refused before the decoder allocates the window.
    #[test]
    fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
        // Magic, frame header descriptor 0 (no content size, not single-segment), window
        // descriptor 0xA8 (exponent 21: 2^(10 + 21) = 2 GiB), then a raw last block of 1 byte.
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa8, 0x09, 0x00, 0x00, 0x61];
        let mut out = Vec::new();
        let err = Compression::Zstd.decompress(&frame, &mut out, 1 << 20);
        assert!(err.is_err(), "{err:?}");
        assert!(out.capacity() < 1 << 20);
    }

    #[test]
    fn raw_snappy_as_librdkafka_writes_it_is_read() {
        let input = sample();
        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        let mut out = Vec::new();
        Compression::Snappy
            .decompress(&raw, &mut out, input.len())
            .unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn damaged_streams_are_errors_not_panics() {
        let input = sample();
        for c in Compression::ALL.into_iter().skip(1) {
            let mut packed = Vec::new();
            c.compress(&input, &mut packed);
            for cut in [0, 1, 9, 17, packed.len() / 2, packed.len() - 1] {
                let mut out = Vec::new();
                let _ = c.decompress(&packed[..cut], &mut out, input.len());
            }
            let mut flipped = packed.clone();
            for i in (0..flipped.len()).step_by(7) {
                flipped[i] ^= 0x5a;
            }
            let mut out = Vec::new();
            assert!(
                c.decompress(&flipped, &mut out, input.len()).is_err() || out != input,
                "{c:?}"
            );
        }
    }

    #[test]
    fn names_and_ids_are_kafkas() {
        for (c, id, name) in [
            (Compression::None, 0, "none"),
            (Compression::Gzip, 1, "gzip"),
            (Compression::Snappy, 2, "snappy"),
            (Compression::Lz4, 3, "lz4"),
            (Compression::Zstd, 4, "zstd"),
        ] {
            assert_eq!((c.id(), c.name()), (id, name));
            assert_eq!(Compression::from_id(id), Ok(c));
            assert_eq!(Compression::from_name(name), Some(c));
        }
        assert!(Compression::from_id(5).is_err());
        assert_eq!(Compression::from_name("brotli"), None);
    }
}
