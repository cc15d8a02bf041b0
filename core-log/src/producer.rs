//! The producer: Kafka's `KafkaProducer` over the embedded log (work in progress).
