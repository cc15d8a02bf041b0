//! The consumer: Kafka's `KafkaConsumer` with manual assignment over the embedded log (work in
//! progress).
