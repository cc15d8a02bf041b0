//! Benchmark harnesses live in `benches/`.
