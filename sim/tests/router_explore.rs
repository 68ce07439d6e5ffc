//! 200 random fault scenarios against real routers, split four ways so the test harness
//! runs them in parallel. A failure names the seed and the command that replays it.

use weft_sim::router_node::explore_router;
use weft_sim::scenario::replay_command;

fn explore(seeds: std::ops::Range<u64>) {
    for seed in seeds {
        if let Err(f) = explore_router(seed) {
            panic!("{f}\nworld seed {seed}; replay: {}", replay_command(seed));
        }
    }
}

#[test]
fn explore_seeds_0_to_50() {
    explore(0..50);
}

#[test]
fn explore_seeds_50_to_100() {
    explore(50..100);
}

#[test]
fn explore_seeds_100_to_150() {
    explore(100..150);
}

#[test]
fn explore_seeds_150_to_200() {
    explore(150..200);
}
