//! weft-core: the whole weft protocol as a sans-IO state machine.
//!
//! What it does: wire codecs (handshake, connection frames, gossip, sleeve datagrams),
//! crypto (X25519 handshake, HKDF session keys, ChaCha20-Poly1305 framing, replay window),
//! topology and its gossip, unicast routes and per-source broadcast trees, MAC learning,
//! the connection maker, address management ([`ipam`]), container names ([`dns`]), and
//! [`router::Router`], the one type a host or the simulator drives.
//!
//! What it does not do: read a clock, touch a socket or file, spawn a thread or ask the OS
//! for randomness. Time comes in as [`time::Instant`], bytes as slices, randomness from the
//! seed given to [`router::Router::new`]; actions go out through `poll_*`. Same inputs,
//! same outputs, bit for bit.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod admission;
pub mod anti_entropy;
pub mod conn;
pub mod crypto;
pub mod dns;
pub mod fastdp;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_checks;
pub mod gossip;
pub mod ipam;
pub mod maker;
pub mod peer;
pub mod policy;
pub mod punch;
pub mod rng;
pub mod router;
pub mod routes;
pub mod segment;
pub mod sleeve;
pub mod switch;
pub mod time;
pub mod topology;
pub mod wire;
