//! Internal topics: the partition count of every sub-topology, the repartition and changelog
//! topics it needs (created when missing, checked when present), and co-partitioning.

use std::collections::HashMap;

use core_log::{CleanupPolicy, TopicConfig};

use crate::client::Admin;
use crate::config::{ErrorHandling, StreamsConfig};
use crate::error::{Error, Result};
use crate::topology::{NodeKind, TopicRef, Topology, changelog_topic, repartition_topic};

/// The partition count of each sub-topology (= its tasks), after creating or checking the
/// internal topics. `create_missing_sources` (the test driver) creates absent user topics with
/// `default_partitions`; the application refuses to start without them.
pub(crate) fn prepare(
    admin: &dyn Admin,
    topology: &Topology,
    application_id: &str,
    create_missing: Option<u32>,
) -> Result<Vec<u32>> {
    let t = &*topology.inner;
    let user_partitions = |name: &str| -> Result<u32> {
        match admin.partition_count(name) {
            Ok(n) => Ok(n),
            Err(core_log::Error::UnknownTopicOrPartition { .. }) => match create_missing {
                Some(n) => {
                    admin.create_topic(name, n, TopicConfig::default())?;
                    Ok(n)
                }
                None => Err(Error::InvalidTopology {
                    reason: format!("source topic {name:?} does not exist"),
                }),
            },
            Err(e) => Err(e.into()),
        }
    };
    // Which sub-topology writes each repartition topic.
    let mut writer: HashMap<&str, usize> = HashMap::new();
    for (i, sub) in t.subtopologies.iter().enumerate() {
        for &g in &sub.nodes {
            if let NodeKind::Sink {
                topic: TopicRef::Repartition(name),
            } = &t.nodes[g].kind
            {
                writer.insert(name, i);
            }
        }
    }
    let asked: HashMap<&str, Option<u32>> = t
        .repartition_topics
        .iter()
        .map(|(n, p)| (n.as_str(), *p))
        .collect();
    let mut counts: Vec<Option<u32>> = vec![None; t.subtopologies.len()];
    // Fixed point: a sub-topology's count is known once all its sources' counts are.
    for _ in 0..=t.subtopologies.len() {
        for (i, sub) in t.subtopologies.iter().enumerate() {
            if counts[i].is_some() {
                continue;
            }
            let mut per_topic = Vec::new();
            let mut known = true;
            for topic in &sub.source_topics {
                match topic {
                    TopicRef::User(name) => per_topic.push((name.clone(), user_partitions(name)?)),
                    TopicRef::Repartition(name) => {
                        let n = match asked.get(name.as_str()).copied().flatten() {
                            Some(n) => Some(n),
                            None => writer.get(name.as_str()).and_then(|&w| counts[w]),
                        };
                        match n {
                            Some(n) => per_topic.push((repartition_topic(application_id, name), n)),
                            None => known = false,
                        }
                    }
                }
            }
            if !known {
                continue;
            }
            let n = per_topic.iter().map(|(_, n)| *n).max().unwrap_or(1);
            if let Some((topic, m)) = per_topic.iter().find(|(_, m)| *m != n) {
                return Err(Error::InvalidTopology {
                    reason: format!(
                        "sub-topology {i} reads topics that are not co-partitioned: {topic:?} has {m} partitions, others {n}"
                    ),
                });
            }
            counts[i] = Some(n);
        }
    }
    let counts: Vec<u32> = counts
        .into_iter()
        .map(|c| {
            c.ok_or_else(|| Error::InvalidTopology {
                reason: "repartition topics form a cycle".into(),
            })
        })
        .collect::<Result<_>>()?;
    for (name, asked) in &t.repartition_topics {
        let n = match asked {
            Some(n) => *n,
            None => writer.get(name.as_str()).map_or(1, |&w| counts[w]),
        };
        ensure_topic(
            admin,
            &repartition_topic(application_id, name),
            n,
            TopicConfig::default(),
        )?;
    }
    for (i, sub) in t.subtopologies.iter().enumerate() {
        for &s in &sub.stores {
            let def = &t.stores[s];
            if def.logging {
                let config = TopicConfig {
                    cleanup_policy: CleanupPolicy::COMPACT,
                    ..TopicConfig::default()
                };
                ensure_topic(
                    admin,
                    &changelog_topic(application_id, &def.name),
                    counts[i],
                    config,
                )?;
            }
        }
    }
    if let Some(n) = create_missing {
        for node in &t.nodes {
            if let NodeKind::Sink {
                topic: TopicRef::User(name),
            } = &node.kind
                && admin.partition_count(name).is_err()
            {
                admin.create_topic(name, n, TopicConfig::default())?;
            }
        }
    }
    Ok(counts)
}

/// Checks that the dead-letter queue topics of both error handlers exist. Streams never
/// creates them (their partitions and retention are the user's choice, as in Kafka Streams),
/// and a missing one would otherwise be found only at the first failed record, stopping the
/// application there.
pub(crate) fn check_dead_letter_topics(admin: &dyn Admin, config: &StreamsConfig) -> Result<()> {
    for handling in [&config.deserialization, &config.processing] {
        let ErrorHandling::DeadLetterQueue(topic) = handling else {
            continue;
        };
        match admin.partition_count(topic) {
            Ok(_) => {}
            Err(core_log::Error::UnknownTopicOrPartition { .. }) => {
                return Err(Error::MissingDeadLetterTopic {
                    topic: topic.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Creates `name` with `partitions`, or checks that it has them.
fn ensure_topic(admin: &dyn Admin, name: &str, partitions: u32, config: TopicConfig) -> Result<()> {
    match admin.partition_count(name) {
        Ok(n) if n == partitions => Ok(()),
        Ok(n) => Err(Error::InvalidTopology {
            reason: format!(
                "internal topic {name:?} has {n} partitions, the topology needs {partitions}"
            ),
        }),
        Err(core_log::Error::UnknownTopicOrPartition { .. }) => {
            match admin.create_topic(name, partitions, config) {
                Ok(()) | Err(core_log::Error::TopicAlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}
