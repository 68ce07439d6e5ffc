//! Link model: latency, jitter, loss, duplication, reordering and the link MTU, derived per
//! link from the world seed so no per-link state is stored (O(1) memory per link, any mesh
//! size; the world keeps only the links whose MTU a scenario changed).

use weft_core::rng::Rng;

/// Parts per million: the unit of every probability here.
pub const PPM: u64 = 1_000_000;
/// Bytes an IPv4 and a UDP header add to a datagram's payload on the wire.
pub const IPV4_UDP_HEADER_BYTES: usize = 20 + 8;
/// The link MTU unless a scenario sets another (Ethernet's).
pub const LINK_MTU_DEFAULT_BYTES: u16 = 1500;

/// How the virtual network behaves. All times in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Smallest one-way link latency.
    pub latency_min_us: u64,
    /// Largest one-way link latency (each link draws one value in the range, per seed).
    pub latency_max_us: u64,
    /// Extra random delay per delivery, uniform in `0..=jitter_us`.
    pub jitter_us: u64,
    /// Chance a stream segment is "lost" and so retransmitted (extra delay, never missing bytes).
    pub stream_loss_ppm: u64,
    /// Retransmission delay added to a lost stream segment (on top of 2x latency).
    pub retransmit_us: u64,
    /// Chance a datagram is dropped.
    pub datagram_loss_ppm: u64,
    /// Chance a datagram is delivered twice.
    pub datagram_dup_ppm: u64,
    /// Chance a datagram is held back by up to `reorder_us` (so later ones overtake it).
    pub datagram_reorder_ppm: u64,
    /// Largest hold-back of a reordered datagram.
    pub reorder_us: u64,
    /// How long a dial into a partition or a cut link hangs before it fails.
    pub connect_timeout_us: u64,
    /// Chance a stream write is split into two segments (exercises reassembly).
    pub split_ppm: u64,
    /// IP MTU of every link a scenario did not set otherwise: a datagram whose payload and
    /// IPv4/UDP headers exceed it is dropped (the path does not fragment). Streams are cut
    /// to fit by TCP and never see it.
    pub link_mtu_bytes: u16,
}

impl NetConfig {
    /// A clean LAN: 0.5–2 ms latency, a little jitter, no loss.
    pub const fn lan() -> Self {
        Self {
            latency_min_us: 500,
            latency_max_us: 2_000,
            jitter_us: 200,
            stream_loss_ppm: 0,
            retransmit_us: 200_000,
            datagram_loss_ppm: 0,
            datagram_dup_ppm: 0,
            datagram_reorder_ppm: 0,
            reorder_us: 0,
            connect_timeout_us: 3_000_000,
            split_ppm: 100_000,
            link_mtu_bytes: LINK_MTU_DEFAULT_BYTES,
        }
    }

    /// A hostile WAN drawn from `rng`: up to 80 ms latency, jitter, a few percent loss,
    /// duplication and reordering.
    pub fn random(rng: &mut Rng) -> Self {
        let latency_min_us = 200 + rng.below(10_000);
        Self {
            latency_min_us,
            latency_max_us: latency_min_us + rng.below(70_000),
            jitter_us: rng.below(20_000),
            stream_loss_ppm: rng.below(50_000),
            retransmit_us: 200_000,
            datagram_loss_ppm: rng.below(100_000),
            datagram_dup_ppm: rng.below(20_000),
            datagram_reorder_ppm: rng.below(50_000),
            reorder_us: rng.below(50_000),
            connect_timeout_us: 1_000_000 + rng.below(4_000_000),
            split_ppm: rng.below(300_000),
            // Not drawn: the draws above stay those of every seed before the MTU existed.
            link_mtu_bytes: LINK_MTU_DEFAULT_BYTES,
        }
    }

    /// The one-way latency of the link between `a` and `b` (symmetric), fixed per seed.
    pub fn latency_us(&self, link_seed: u64, a: usize, b: usize) -> u64 {
        let span = self.latency_max_us.saturating_sub(self.latency_min_us);
        if span == 0 {
            return self.latency_min_us;
        }
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let h = mix(link_seed ^ mix((lo as u64) << 32 | hi as u64));
        self.latency_min_us + h % (span + 1)
    }
}

/// True if a datagram with `payload_len` bytes of UDP payload fits a link of `mtu_bytes`.
pub fn datagram_fits(payload_len: usize, mtu_bytes: u16) -> bool {
    payload_len + IPV4_UDP_HEADER_BYTES <= usize::from(mtu_bytes)
}

/// A 64-bit finaliser (splitmix64's): spreads every input bit over the output.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fast 64-bit content hash (FNV-style multiply, eight bytes per step) for the trace.
/// Not cryptographic; only needs to tell different byte strings apart.
pub fn content_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b))
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(29);
    }
    for b in words.remainder() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_symmetric_in_range_and_varies() {
        let mut rng = Rng::from_seed(3);
        let net = NetConfig::random(&mut rng);
        let mut seen = std::collections::BTreeSet::new();
        for a in 0..20 {
            for b in 0..20 {
                let l = net.latency_us(9, a, b);
                assert_eq!(l, net.latency_us(9, b, a));
                assert!((net.latency_min_us..=net.latency_max_us).contains(&l));
                seen.insert(l);
            }
        }
        assert!(seen.len() > 10, "latencies do not vary per link");
    }

    #[test]
    fn fnv_distinguishes() {
        assert_ne!(content_hash(b"ab"), content_hash(b"ba"));
        assert_ne!(content_hash(b"abcdefgh1"), content_hash(b"abcdefgh2"));
        assert_ne!(content_hash(b"abcdefgh"), content_hash(b"hgfedcba"));
        assert_ne!(content_hash(b""), content_hash(b"\0"));
    }
}
