//! weft benchmarks (placeholder)
