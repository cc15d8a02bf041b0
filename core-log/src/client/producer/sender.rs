//! The sender thread: appends ready batches to the log and completes their records (Kafka's
//! `Sender`, without the network).
//!
//! One thread per producer, so each partition's batches are appended in the order they were
//! filled; with idempotence each gets the partition's next sequence here, at append time, so a
//! batch the log refused leaves no gap for the batches after it.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::Shared;
use super::accumulator::ProducerBatch;
use super::config::Acks;
use super::delivery::{Appended, Stored, copy_error};
use super::partitioner::increment_sequence;
use crate::codec::BatchProducer;
use crate::coordinator::producer_id::ProducerIdentity;

/// Runs until the producer is closed and every queued batch is completed.
pub(crate) fn run(shared: Arc<Shared>) {
    let mut sender = Sender {
        shared: &shared,
        sequences: HashMap::new(),
        identity: None,
    };
    let mut ready = Vec::new();
    while shared.accumulator.drain(&mut ready) {
        // A transactional producer adds every new partition of these batches to the open
        // transaction in one coordinator call (one `__transaction_state` write), as Kafka's
        // sender batches AddPartitionsToTxn.
        if let (Some(txn), Some(identity)) = (&shared.txn, *shared.identity_lock()) {
            txn.add_partitions(
                &shared,
                identity,
                ready
                    .iter()
                    .map(|b| (b.completion.topic.clone(), b.completion.partition)),
            );
        }
        for batch in ready.drain(..) {
            sender.send(batch);
        }
    }
}

struct Sender<'a> {
    shared: &'a Shared,
    /// Next sequence per topic and partition, for idempotent batches.
    sequences: HashMap<Arc<str>, Vec<i32>>,
    /// The identity the sequences belong to: a new epoch starts them again at 0.
    identity: Option<ProducerIdentity>,
}

impl Sender<'_> {
    fn next_sequence(&mut self, topic: &Arc<str>, partition: u32) -> &mut i32 {
        let seqs = self.sequences.entry(topic.clone()).or_default();
        let p = partition as usize;
        if seqs.len() <= p {
            seqs.resize(p + 1, 0);
        }
        &mut seqs[p]
    }

    fn send(&mut self, batch: ProducerBatch) {
        let ProducerBatch {
            id,
            mut builder,
            completion,
            callbacks,
            shared,
            reserved,
            ..
        } = batch;
        let topic = completion.topic.clone();
        let partition = completion.partition;
        let records = builder.records_count();
        let identity = *self.shared.identity_lock();
        if identity != self.identity {
            // A new producer id or epoch (a transaction ended): sequences start at 0.
            self.sequences.clear();
            self.identity = identity;
        }
        // A transactional batch first joins its partition to the open transaction.
        let admitted = match (&self.shared.txn, identity) {
            (Some(txn), Some(id)) => txn.before_append(self.shared, id, &topic, partition),
            (Some(txn), None) => Err(crate::error::Error::InvalidTxnState {
                transactional_id: txn.transactional_id.clone(),
                reason: "send before init_transactions",
            }),
            (None, _) => Ok(()),
        };
        if let Some(ProducerIdentity { producer_id, epoch }) = identity {
            let base_sequence = *self.next_sequence(&topic, partition);
            builder = builder.producer(BatchProducer {
                producer_id,
                producer_epoch: epoch,
                base_sequence,
                transactional: self.shared.txn.is_some(),
            });
        }
        let mut bytes = builder
            .compression(self.shared.config.compression_type)
            .finish();
        let result = admitted.and_then(|()| {
            self.shared
                .log
                .partition(&topic, partition)
                .and_then(|p| p.append_batches(&mut bytes))
        });
        match &result {
            Ok(_) => {
                if identity.is_some() {
                    let seq = self.next_sequence(&topic, partition);
                    *seq = increment_sequence(*seq, records);
                }
            }
            Err(e) => {
                tracing::warn!(%topic, partition, records, error = %e, "producer batch failed");
                if let Some(txn) = &self.shared.txn {
                    txn.batch_failed(e);
                }
            }
        }
        let appended = match self.shared.config.acks {
            // acks=0 reports offset -1 whatever happened, as Kafka does; the failure is logged.
            Acks::Zero => Ok(Appended {
                base_offset: -1,
                log_append_time: None,
            }),
            Acks::One | Acks::All => result.map(|info| Appended {
                base_offset: info.base_offset,
                log_append_time: info.log_append_time,
            }),
        };
        // Callbacks first, then the futures (Kafka's order): once a future has resolved, the
        // callbacks of its batch have run.
        for (info, callback) in callbacks {
            let outcome = match &appended {
                Ok(a) => Ok(info.metadata(&topic, partition, *a)),
                Err(e) => Err(copy_error(e)),
            };
            // A panicking callback must not stop the sender: every later record would hang.
            let call = || match callback {
                Stored::Once(f) => f(outcome),
                Stored::Shared(i) => shared[i as usize](outcome),
            };
            if catch_unwind(AssertUnwindSafe(call)).is_err() {
                tracing::error!(%topic, partition, "a producer callback panicked");
            }
        }
        completion.complete(appended);
        self.shared.accumulator.release(id, reserved, bytes);
    }
}
