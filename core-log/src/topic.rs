//! Topic names, and the manifest that persists topics and their configs.

use serde::{Deserialize, Serialize};

use crate::config::TopicConfig;
use crate::error::{Error, Result};

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
pub(crate) fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

/// A topic and a partition index: Kafka's `TopicPartition`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition's index.
    pub partition: u32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

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
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub version: u32,
    pub topics: Vec<ManifestTopic>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ManifestTopic {
    pub name: String,
    pub partitions: u32,
    pub config: TopicConfig,
}

impl Manifest {
    pub(crate) const FILE: &'static str = "topics.json";

    /// Decodes and checks the manifest; anything wrong is an error, never a silent loss of
    /// topics.
    pub(crate) fn decode(bytes: &[u8], path: &std::path::Path) -> Result<Manifest> {
        let corrupt = |reason| Error::Corrupt {
            file: path.to_path_buf(),
            position: 0,
            reason,
        };
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|_| corrupt("not a valid topics manifest"))?;
        if m.version != 1 {
            return Err(corrupt("unknown manifest version"));
        }
        for t in &m.topics {
            validate_topic_name(&t.name).map_err(|_| corrupt("invalid topic name in manifest"))?;
            t.config
                .validate()
                .map_err(|_| corrupt("invalid topic config in manifest"))?;
            if t.partitions == 0 {
                return Err(corrupt("topic with no partitions in manifest"));
            }
        }
        Ok(m)
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

    #[test]
    fn partition_dirs_round_trip_even_with_dashes() {
        let name = partition_dir_name("like-count-totals", 12);
        assert_eq!(parse_partition_dir(&name), Some(("like-count-totals", 12)));
        assert_eq!(parse_partition_dir("likes-"), None);
        assert_eq!(parse_partition_dir("likes-x"), None);
        assert_eq!(parse_partition_dir("lost+found"), None);
    }
}
