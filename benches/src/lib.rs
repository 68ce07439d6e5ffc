//! weft benchmarks. `src/bin/converge.rs`: simulator convergence time and gossip cost per
//! peer for 10, 100 and 1000 routers (10,000 with `--huge`). Throughput benchmarks against
//! other overlays live beside it as they land.
