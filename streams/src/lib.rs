//! Moldau streams: the Kafka Streams analogue on [`core_log`].
//!
//! This crate is where topologies, state stores and exactly-once processing will live
//! (see the project's open issues). Today it only re-exports the log it builds on, so
//! that applications can depend on `moldau-streams` alone.

pub use core_log;
