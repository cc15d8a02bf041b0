//! End-to-end and crash tests live in `tests/tests/`.
