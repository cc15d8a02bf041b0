//! Idempotent producer state per partition (work in progress).
