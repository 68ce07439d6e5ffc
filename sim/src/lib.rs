//! weft-sim: a deterministic simulator for weft routers.
//!
//! Many nodes, one virtual clock, one virtual network with per-link latency, jitter, loss,
//! duplication, reordering, MTUs, partitions, cut links, stalls and crash/restart — all
//! derived from one world seed, so any run replays bit for bit. Invariants (topology
//! agreement, loop-free unicast, exactly-once broadcast, bounded queues; for the sleeve
//! datapath: frames delivered once, no relay loop, no datagram accepted twice, heartbeats
//! and PMTU) are checked as it runs.
//!
//! Layout: [`node`] is the trait the network drives (mirroring the router's sans-IO API),
//! [`net`] the link model, [`world`] the clock, queue and network, [`check`] the
//! invariants, [`scenario`] meshes, convergence and random fault schedules, [`toy`] a
//! small link-state node that tests all of the above without the real router, and
//! [`router_node`] the adapter for `weft_core::router::Router`. The sleeve: [`sleeve_node`]
//! runs a `weft_core::sleeve::Sleeve` beside each router as the host does,
//! [`sleeve_check`] its invariants, [`sleeve_scenario`] its seeded scenarios. NAT:
//! [`nat`] the NAT boxes a node can be put behind ([`world::World::set_nat`]),
//! [`nat_scenario`] hole punching between two NATed peers per pair of NAT types.
//!
//! What it does not do: real I/O, threads or wall-clock time.

pub mod check;
pub mod intern;
pub mod ipam_check;
pub mod nat;
pub mod nat_scenario;
pub mod net;
pub mod node;
pub mod router_node;
pub mod scenario;
pub mod sleeve_check;
pub mod sleeve_node;
pub mod sleeve_scenario;
pub mod toy;
pub mod world;
