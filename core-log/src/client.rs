//! The clients: producer, consumer and admin, over the coordinators and the storage layer.

pub(crate) mod admin;
pub(crate) mod consumer;
pub(crate) mod producer;
