//! UDP hole punching: two routers behind NAT that both reach a third (the introducer)
//! get a direct, "punched" connection, so their traffic stops being relayed.
//!
//! How (all sans-IO; the router drives it, `router/punching.rs` is the glue):
//! 1. **Observed address.** Over each connection a router sends its neighbour a random
//!    reflect token, then reflect datagrams carrying it, from the sleeve's UDP port to the
//!    neighbour's. The neighbour records where they come from (our mapped address as its
//!    NAT shows it) and tells us (`Observed`). The token keeps an off-path sender from
//!    planting an address; the periodic reflects keep the NAT mapping open.
//! 2. **Rendezvous.** For a peer in the topology that we have no connection to and that a
//!    neighbour of ours is connected to, the lower name of the two asks that neighbour
//!    for an introduction. The introducer sends both, at once, the other's observed
//!    address and one fresh session number.
//! 3. **Probes are the handshake.** Both ends create a normal
//!    [`Connection`](crate::conn::Connection) (same hello, same PAKE, same keys, same
//!    datagram AEAD as over TCP) whose byte stream runs over punch datagrams through a
//!    small ARQ ([`arq`]); its hello, resent every probe interval, is the probe. The first
//!    segment of the session moves the link to its source address (a NAT whose mapping
//!    depends on the destination shows the other end a port the introducer never saw);
//!    later sources are taken but not followed, so two such mappings do not chase each
//!    other's new ports. Once established it is an ordinary topology edge, announced
//!    without a dialable address: kill the introducer and the punched link stays.
//! 4. **Failure.** Probes that never cross end at the ARQ's try limit or the handshake
//!    timeout: the attempt is recorded as failed ("no answer"), traffic stays relayed,
//!    and it is retried with exponential backoff. A punched link whose heartbeats stop (a
//!    NAT that changed its mapping) drops like any connection; routes fall back to the
//!    relay and punching starts again.
//!
//! What it does not do: sockets (punch datagrams share the sleeve's UDP port; the driver
//! tells them apart by their first byte, [`wire::PunchDatagram::is_punch`]), or carry
//! frames (the sleeve does, to the punched connection's address).

pub mod arq;
pub mod wire;

use crate::conn::ConnError;
use crate::peer::PeerName;
use crate::time::{Duration, Instant};
use core::fmt;
use core::net::SocketAddr;
use wire::RefuseReason;

/// Most peers we keep punch state for (attempts, their outcome, their backoff).
pub const PUNCH_PEERS_MAX: usize = 1024;
/// Most introductions asked for in one check.
pub const INTRO_REQUESTS_PER_CHECK_MAX: usize = 16;
/// Most punched connections still in their handshake at once.
pub const PUNCHES_IN_FLIGHT_MAX: usize = 64;
/// Most punch datagrams (reflects, last words of a closed link) waiting to be sent.
pub const PUNCH_OUT_QUEUE_LEN_MAX: usize = 1024;
/// Longest backoff doubling: `retry_base << PUNCH_BACKOFF_SHIFT_MAX` (capped by `retry_max`).
pub const PUNCH_BACKOFF_SHIFT_MAX: u32 = 10;

/// How punching runs (part of the router's config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PunchConfig {
    /// Whether the router punches (sends reflects, asks for and serves introductions).
    /// A router that does not still ignores punch traffic harmlessly.
    pub enabled: bool,
    /// Reflect datagrams to each neighbour this often (below the usual 30 s UDP NAT
    /// timeout, so they also hold the mapping open).
    pub reflect_interval: Duration,
    /// Probes (hello retransmissions) this often while punching.
    pub probe_interval: Duration,
    /// Look for peers to punch to this often.
    pub check_interval: Duration,
    /// First wait after a failed punch; doubles per failure.
    pub retry_base: Duration,
    /// Longest wait between punch attempts.
    pub retry_max: Duration,
}

impl PunchConfig {
    /// Off, with the deployment timers it would use when switched on.
    pub const fn off() -> Self {
        Self {
            enabled: false,
            reflect_interval: Duration::from_secs(10),
            probe_interval: Duration::from_millis(200),
            check_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(300),
        }
    }

    /// The wait before retrying after `failures` failed attempts (at least one).
    pub fn backoff(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(PUNCH_BACKOFF_SHIFT_MAX);
        self.retry_base
            .saturating_mul(1 << shift)
            .min(self.retry_max)
    }
}

/// Why a punch attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PunchFailure {
    /// The introducer did not answer the request in time.
    NoIntroduction,
    /// The introducer could not introduce us.
    Refused(RefuseReason),
    /// Probes were sent but the handshake never completed (the NATs do not let them cross).
    NoAnswer,
    /// The punched connection was up and then failed (e.g. a NAT changed its mapping).
    Lost(ConnError),
}

impl fmt::Display for PunchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoIntroduction => f.write_str("no introduction"),
            Self::Refused(RefuseReason::NotConnected) => f.write_str("introducer lost the peer"),
            Self::Refused(RefuseReason::NoAddress) => {
                f.write_str("introducer has no mapped address yet")
            }
            Self::NoAnswer => f.write_str("no answer"),
            Self::Lost(e) => write!(f, "punched link lost: {e}"),
        }
    }
}

/// Where an attempt to punch to one peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PunchPhase {
    /// We asked `via` for an introduction.
    Requested {
        /// The introducer.
        via: PeerName,
        /// When we asked.
        since: Instant,
    },
    /// Introduced (by `via`); probes and handshake under way.
    Probing {
        /// The introducer.
        via: PeerName,
        /// Where we probe.
        addr: SocketAddr,
        /// When the introduction arrived.
        since: Instant,
    },
    /// The punched connection is up.
    Punched {
        /// Its address (the peer's mapped address).
        addr: SocketAddr,
        /// Since when.
        since: Instant,
    },
    /// The last attempt failed; the next one is due at `retry_at` (only the lower name of
    /// the two asks for introductions).
    Failed {
        /// Why.
        reason: PunchFailure,
        /// When it failed.
        at: Instant,
        /// When we try again.
        retry_at: Instant,
    },
}

/// What we know about punching to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PunchAttempt {
    /// Where it is.
    pub phase: PunchPhase,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Attempts started (introductions received) in total.
    pub introductions: u32,
}

/// Counters of punching, for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PunchStats {
    /// Introductions we asked for.
    pub intro_requests_sent: u64,
    /// Introductions we made (as the introducer).
    pub intros_made: u64,
    /// Introduction requests we refused.
    pub intros_refused: u64,
    /// Punched connections that completed their handshake.
    pub punched_up: u64,
    /// Punch attempts that ended without a connection.
    pub punch_failures: u64,
    /// Reflect datagrams sent.
    pub reflects_sent: u64,
    /// Punch datagrams dropped: malformed, not for us, unknown token or session.
    pub datagrams_dropped: u64,
    /// Punch datagrams not queued because the out queue was full.
    pub out_queue_drops: u64,
    /// Segments resent on punched links (a lossy or broken path).
    pub retransmits: u64,
}
