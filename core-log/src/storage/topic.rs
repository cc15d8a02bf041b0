//! Topic names, and the manifest that persists topics and their configs.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::record::TopicPartition;
use crate::storage::config::TopicConfig;

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name against Kafka's rules: 1 to 249 characters from `a-z A-Z 0-9 . _ -`,
/// and not `.` or `..`. Names become directory names, so the rules are enforced strictly.
///
/// ```
/// use core_log::validate_topic_name;
/// assert!(validate_topic_name("likes.v2_by-product").is_ok());
/// assert!(validate_topic_name("../etc").is_err());
/// ```
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidTopicName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return bad("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only a-z, A-Z, 0-9, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Whether a topic is one the log keeps for itself (`__consumer_offsets`, and
/// `__transaction_state` with transactions). Pattern subscriptions never match them, as with
/// Kafka's `exclude.internal.topics=true`.
///
/// ```
/// assert!(core_log::is_internal_topic("__consumer_offsets"));
/// assert!(!core_log::is_internal_topic("likes"));
/// ```
pub fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

/// The most partitions one topic may have. Each open partition holds a file descriptor and a
/// directory, so a count far above this fails part-way through on the process's open-file
/// limit; it is refused before the disk is touched instead.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 10_000;

/// The directory of a partition: `<topic>-<partition>`, as Kafka names it.
pub(crate) fn partition_dir_name(topic: &str, partition: u32) -> String {
    format!("{topic}-{partition}")
}

/// Parses a partition directory name back into `(topic, partition)`.
pub(crate) fn parse_partition_dir(name: &str) -> Option<(&str, u32)> {
    let (topic, p) = name.rsplit_once('-')?;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    validate_topic_name(topic).ok()?;
    Some((topic, p.parse().ok()?))
}

/// `topics.json`: every topic's partition count and config. Rewritten atomically and durably
/// on each change; it is the commit point of topic creation and deletion.
///
/// ```text
/// {"version": 2, "crc32c": <CRC-32C of the exact bytes of "topics">, "topics": [...]}
/// ```
///
/// The checksum makes a flipped bit an error at open instead of a different set of topics
/// (which would orphan the partition directories of a topic whose name changed). Version 1,
/// written before the checksum existed, is read and rewritten as version 2 at open.
#[derive(Debug, Default)]
pub(crate) struct Manifest {
    pub topics: Vec<ManifestTopic>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ManifestTopic {
    pub name: String,
    pub partitions: u32,
    pub config: TopicConfig,
    /// Compaction may have run on the topic (its cleanup policy includes, or once included,
    /// `compact`), so its offsets may have gaps. Offsets of any other topic continue from
    /// batch to batch and segment to segment, and a gap there is damage. Version 1 manifests
    /// did not record it: their topics count as compacted.
    #[serde(default = "compacted_unknown")]
    pub compacted: bool,
}

fn compacted_unknown() -> bool {
    true
}

#[derive(Serialize)]
struct Envelope<'a> {
    version: u32,
    crc32c: u32,
    topics: &'a serde_json::value::RawValue,
}

#[derive(Deserialize)]
struct ReadEnvelope<'a> {
    version: u32,
    #[serde(default)]
    crc32c: Option<u32>,
    #[serde(borrow)]
    topics: &'a serde_json::value::RawValue,
}

impl Manifest {
    pub(crate) const FILE: &'static str = "topics.json";
    const VERSION: u32 = 2;

    /// The file's bytes: the topics sorted by name, under their checksum.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut topics = self.topics.clone();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let body = serde_json::to_string_pretty(&topics).expect("topics serialize");
        let raw = serde_json::value::RawValue::from_string(body).expect("serde_json wrote json");
        let envelope = Envelope {
            version: Self::VERSION,
            crc32c: crc32c::crc32c(raw.get().as_bytes()),
            topics: &raw,
        };
        let mut out = serde_json::to_vec_pretty(&envelope).expect("manifest serializes");
        out.push(b'\n');
        out
    }

    /// Decodes and checks the manifest; anything wrong is an error, never a silent loss of
    /// topics. The flag says it was a version 1 file, which has no checksum.
    pub(crate) fn decode(bytes: &[u8], path: &std::path::Path) -> Result<(Manifest, bool)> {
        let corrupt = |reason| Error::Corrupt {
            file: path.to_path_buf(),
            position: 0,
            reason,
        };
        let envelope: ReadEnvelope<'_> =
            serde_json::from_slice(bytes).map_err(|_| corrupt("not a valid topics manifest"))?;
        let legacy = match (envelope.version, envelope.crc32c) {
            (1, None) => true,
            (Self::VERSION, Some(crc)) => {
                if crc32c::crc32c(envelope.topics.get().as_bytes()) != crc {
                    return Err(corrupt("topics manifest checksum mismatch"));
                }
                false
            }
            (Self::VERSION, None) => return Err(corrupt("topics manifest without its checksum")),
            _ => return Err(corrupt("unknown manifest version")),
        };
        let topics: Vec<ManifestTopic> = serde_json::from_str(envelope.topics.get())
            .map_err(|_| corrupt("not a valid topics manifest"))?;
        let mut seen = std::collections::HashSet::new();
        for t in &topics {
            validate_topic_name(&t.name).map_err(|_| corrupt("invalid topic name in manifest"))?;
            t.config
                .validate()
                .map_err(|_| corrupt("invalid topic config in manifest"))?;
            if t.partitions == 0 {
                return Err(corrupt("topic with no partitions in manifest"));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(corrupt("topic named twice in manifest"));
            }
        }
        Ok((Manifest { topics }, legacy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_name_rules() {
        for ok in ["a", "likes", "A.b_c-9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "ü",
            "a\0",
            &"x".repeat(250),
            "../x",
        ] {
            assert!(
                matches!(
                    validate_topic_name(bad),
                    Err(Error::InvalidTopicName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            topics: vec![
                ManifestTopic {
                    name: "likes".into(),
                    partitions: 2,
                    config: TopicConfig::default(),
                    compacted: false,
                },
                ManifestTopic {
                    name: "like-totals".into(),
                    partitions: 8,
                    config: TopicConfig::default(),
                    compacted: true,
                },
            ],
        }
    }

    #[test]
    fn the_manifest_round_trips_and_a_flipped_bit_is_an_error_not_other_topics() {
        let path = std::path::Path::new("topics.json");
        let bytes = manifest().encode();
        let (back, legacy) = Manifest::decode(&bytes, path).unwrap();
        assert!(!legacy);
        assert_eq!(back.topics.len(), 2);
        assert_eq!(back.topics[0].name, "like-totals");
        assert!(back.topics[0].compacted && !back.topics[1].compacted);
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            match Manifest::decode(&b, path) {
                Err(Error::Corrupt { .. }) => {}
                // Whitespace between JSON tokens carries nothing; any other change must fail.
                Ok((m, false)) => {
                    assert_eq!(
                        format!("{:?}", m.topics),
                        format!("{:?}", back.topics),
                        "bit {i}"
                    )
                }
                other => panic!("bit {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_version_1_manifest_is_read_as_compacted_topics_without_a_checksum() {
        let v1 = format!(
            r#"{{"version":1,"topics":[{{"name":"likes","partitions":2,"config":{}}}]}}"#,
            serde_json::to_string(&TopicConfig::default()).unwrap()
        );
        let (m, legacy) =
            Manifest::decode(v1.as_bytes(), std::path::Path::new("topics.json")).unwrap();
        assert!(legacy);
        assert!(m.topics[0].compacted);
        assert_eq!(m.topics[0].partitions, 2);
    }

    #[test]
    fn partition_dirs_round_trip_even_with_dashes() {
        let name = partition_dir_name("like-count-totals", 12);
        assert_eq!(parse_partition_dir(&name), Some(("like-count-totals", 12)));
        assert_eq!(parse_partition_dir("likes-"), None);
        assert_eq!(parse_partition_dir("likes-x"), None);
        assert_eq!(parse_partition_dir("lost+found"), None);
    }
}
