//! The group coordinator's offset store: committed offsets (Kafka's OffsetCommit and
//! OffsetFetch), offsets committed inside a transaction that wait for its marker
//! (TxnOffsetCommit, KIP-447's pending offsets), and an admin's offset changes. Membership
//! (join, sync, heartbeat, leave) is the parent module's; both share the group's state.
//!
//! ```text
//!   OffsetCommit ─────────────► record in __consumer_offsets ──► group.offsets
//!   TxnOffsetCommit ──► pending (per producer) ──► commit marker ──┘   abort marker: dropped
//! ```

use super::*;

/// An offset committed inside an open transaction.
#[derive(Debug, Clone)]
pub(super) struct PendingOffset {
    pub(super) group: String,
    pub(super) tp: TopicPartition,
    pub(super) value: CommittedOffset,
    /// The record's offset in `__consumer_offsets`.
    pub(super) at: i64,
}

impl Group {
    /// Records a committed offset written at `at`, unless a later record already set it.
    pub(super) fn commit_offset(&mut self, tp: TopicPartition, value: CommittedOffset, at: i64) {
        if self.written_at.get(&tp).is_some_and(|w| *w > at) {
            return;
        }
        self.written_at.insert(tp.clone(), at);
        self.offsets.insert(tp, value);
    }
}

impl GroupCoordinator {
    pub(crate) fn commit_offsets(
        &mut self,
        log: &LogManager,
        who: MemberRef<'_>,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        now: i64,
    ) -> Result<()> {
        validate_group_id(who.group_id)?;
        for (tp, o) in offsets {
            validate_commit(log, tp, o)?;
        }
        self.check_committer(log, who, now)?;
        self.store_offsets(log, who.group_id, offsets, now)
    }

    /// The membership checks of an offset commit: a member of the current generation, not
    /// while the assignment is being synced; or, with generation -1 and no member id, a
    /// consumer without membership, which only a group without members accepts.
    fn check_committer(&mut self, log: &LogManager, who: MemberRef<'_>, now: i64) -> Result<()> {
        let simple = who.generation < 0 && who.member_id.is_empty();
        if simple {
            // A consumer without membership (or an admin) may create the group.
            self.groups
                .entry(who.group_id.to_string())
                .or_insert_with(|| Group::new(now));
        }
        self.expire(log, who.group_id, now);
        if simple {
            if self
                .groups
                .get(who.group_id)
                .is_some_and(|g| !g.members.is_empty())
            {
                return Err(Error::UnknownMemberId {
                    group: who.group_id.to_string(),
                    member_id: String::new(),
                });
            }
        } else {
            let g = self.current_member(who, now)?;
            if g.state == GroupState::CompletingRebalance {
                return Err(Error::RebalanceInProgress {
                    group: who.group_id.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The `__consumer_offsets` partition that holds `group_id`'s records.
    pub(crate) fn partition_for(&self, group_id: &str) -> u32 {
        partition_for_group(group_id, self.offsets_partitions)
    }

    /// Kafka's TxnOffsetCommit: offsets committed inside the producer's open transaction
    /// (which must already include the group's `__consumer_offsets` partition). They are
    /// stored as a transactional batch and take effect only with the commit marker. The
    /// member is checked as for a plain commit (KIP-447): a member the group has moved on from
    /// cannot commit, even inside a transaction.
    pub(crate) fn commit_transactional_offsets(
        &mut self,
        log: &LogManager,
        who: MemberRef<'_>,
        producer: ProducerIdentity,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        now: i64,
    ) -> Result<()> {
        validate_group_id(who.group_id)?;
        for (tp, o) in offsets {
            validate_commit(log, tp, o)?;
        }
        self.check_committer(log, who, now)?;
        if offsets.is_empty() {
            return Ok(());
        }
        let p = partition_for_group(who.group_id, self.offsets_partitions);
        let values: Vec<CommittedOffset> = offsets
            .iter()
            .map(|(_, o)| CommittedOffset {
                offset: o.clone(),
                commit_timestamp: now,
            })
            .collect();
        // The batch is idempotent like any producer's: it continues the producer's sequence
        // at its epoch in this partition (0 at a new epoch: protocol version 2 starts every
        // transaction so; version 1 keeps the epoch, and the sequence goes on).
        let partition = log.partition(OFFSETS_TOPIC, p)?;
        let base_sequence = partition.next_sequence(producer.producer_id, producer.epoch)?;
        let mut builder = BatchBuilder::new(Vec::new()).producer(BatchProducer {
            producer_id: producer.producer_id,
            producer_epoch: producer.epoch,
            base_sequence,
            transactional: true,
        });
        for ((tp, _), v) in offsets.iter().zip(&values) {
            let key = records::offset_commit_key(who.group_id, tp);
            let value = records::offset_commit_value(v);
            builder.append(now, Some(&key), Some(&value), &[]);
        }
        let mut bytes = builder.finish();
        let base = partition.append_batches(&mut bytes)?.base_offset;
        let pending = self
            .pending_txn
            .entry((p, producer.producer_id))
            .or_default();
        for (i, ((tp, _), value)) in offsets.iter().zip(values).enumerate() {
            pending.push(PendingOffset {
                group: who.group_id.to_string(),
                tp: tp.clone(),
                value,
                at: base + i as i64,
            });
        }
        Ok(())
    }

    /// The transaction of `producer_id` was decided in `__consumer_offsets` partition
    /// `partition`: its offsets take effect (commit) or are dropped (abort).
    pub(crate) fn complete_transactional_offsets(
        &mut self,
        partition: u32,
        producer_id: i64,
        commit: bool,
    ) {
        let Some(pending) = self.pending_txn.remove(&(partition, producer_id)) else {
            return;
        };
        if !commit {
            return;
        }
        for PendingOffset {
            group,
            tp,
            value,
            at,
        } in pending
        {
            let g = self
                .groups
                .entry(group)
                .or_insert_with(|| Group::new(value.commit_timestamp));
            g.commit_offset(tp, value, at);
        }
    }

    /// Those of these partitions of the group for which a transaction not decided yet holds
    /// offsets (Kafka's UNSTABLE_OFFSET_COMMIT): a consumer must wait before starting there.
    pub(crate) fn pending_offsets(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> std::collections::HashSet<TopicPartition> {
        self.pending_txn
            .values()
            .flatten()
            .filter(|o| o.group == group_id && partitions.contains(&o.tp))
            .map(|o| o.tp.clone())
            .collect()
    }

    fn store_offsets(
        &mut self,
        log: &LogManager,
        group_id: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        now: i64,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let values: Vec<CommittedOffset> = offsets
            .iter()
            .map(|(_, o)| CommittedOffset {
                offset: o.clone(),
                commit_timestamp: now,
            })
            .collect();
        let recs: Vec<(Vec<u8>, Option<Vec<u8>>)> = offsets
            .iter()
            .zip(&values)
            .map(|((tp, _), v)| {
                (
                    records::offset_commit_key(group_id, tp),
                    Some(records::offset_commit_value(v)),
                )
            })
            .collect();
        let base = self.append(log, group_id, &recs)?;
        let g = self.group_mut(group_id)?;
        for (i, ((tp, _), v)) in offsets.iter().zip(values).enumerate() {
            g.commit_offset(tp.clone(), v, base + i as i64);
        }
        Ok(())
    }

    /// Kafka's OffsetFetch: the group's committed offsets, of the partitions named (all if
    /// `None`).
    pub(crate) fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
        let Some(g) = self.groups.get(group_id) else {
            return BTreeMap::new();
        };
        match partitions {
            None => g
                .offsets
                .iter()
                .map(|(tp, c)| (tp.clone(), c.offset.clone()))
                .collect(),
            Some(tps) => tps
                .iter()
                .filter_map(|tp| g.offsets.get(tp).map(|c| (tp.clone(), c.offset.clone())))
                .collect(),
        }
    }

    /// Every group and its state (Kafka's ListGroups).
    pub(crate) fn alter_offsets(
        &mut self,
        log: &LogManager,
        group_id: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        now: i64,
    ) -> Result<()> {
        validate_group_id(group_id)?;
        for (tp, o) in offsets {
            validate_commit(log, tp, o)?;
        }
        self.expire(log, group_id, now);
        if self
            .groups
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
        {
            return Err(Error::NonEmptyGroup {
                group: group_id.to_string(),
            });
        }
        self.groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(now));
        self.store_offsets(log, group_id, offsets, now)
    }
}

fn validate_commit(log: &LogManager, tp: &TopicPartition, o: &OffsetAndMetadata) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::InvalidCommitOffset {
            topic: tp.topic.clone(),
            partition: tp.partition,
            reason,
        })
    };
    if o.offset < 0 {
        return bad(format!("negative offset {}", o.offset));
    }
    if o.metadata.len() > OFFSET_METADATA_MAX_BYTES {
        return bad(format!(
            "metadata of {} bytes exceeds offset.metadata.max.bytes {OFFSET_METADATA_MAX_BYTES}",
            o.metadata.len()
        ));
    }
    log.partition(&tp.topic, tp.partition).map(|_| ())
}
