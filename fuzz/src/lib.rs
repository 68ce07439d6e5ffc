//! Shared checks for the fuzz targets. The same file is compiled into
//! `core/tests/fuzz_corpus.rs`, so `cargo test` replays the corpus through exactly the
//! code the fuzzer runs.

pub mod checks;
