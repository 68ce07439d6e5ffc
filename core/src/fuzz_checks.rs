//! One check per core decoder, for the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the
//! corpus replay (`core/tests/fuzz_corpus.rs`), so both run exactly the same code. Only
//! with the `fuzzing` feature; not part of the API.
//!
//! Each check takes arbitrary bytes, must never panic on them, returns whether they
//! decoded, and asserts what must hold for anything that does decode (re-encoding gives
//! the same value; iterators agree with counts).

use crate::conn::{ConnId, ConnSettings, ConnState, Connection};
use crate::crypto::ChaChaKeyRng;
use crate::crypto::TAG_LEN_BYTES;
use crate::peer::{PeerName, PeerUid};
use crate::time::Instant;
use crate::wire::datagram::{DATAGRAM_LEN_MAX, DatagramHeader, Payload};
use crate::wire::frame::{FRAME_HEADER_LEN, Frame, FrameHeader, Message};
use crate::wire::handshake::{HELLO_LEN_MAX, Hello};
use crate::wire::topology::{TOPOLOGY_MSG_LEN_MAX, emit_entries, parse_entries};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// Target name (the directory under `fuzz/corpus/`) and its check.
pub type Check = fn(&[u8]) -> bool;

/// Every fuzz target, by name.
pub const TARGETS: &[(&str, Check)] = &[
    ("hello", hello),
    ("frame", frame),
    ("message", message),
    ("datagram", datagram),
    ("topology", topology),
    ("topology_sync", topology_sync),
    ("conn_stream", conn_stream),
    ("ipam", ipam),
    ("dns", dns),
    ("policy", policy),
    ("segment", segment),
    ("heartbeat", heartbeat),
    ("conn_pair", conn_pair),
    ("punch_msg", punch_msg),
    ("punch_datagram", punch_datagram),
];

/// Judges one target's corpus (file name, bytes): `valid-*` seeds must decode, `garbage-*`
/// seeds must be rejected, anything else (files a fuzzing run added) must simply not
/// panic, and there must be at least one seed of each kind. The replay tests call it
/// with the files of `fuzz/corpus/<target>/`.
pub fn replay(target: &str, check: Check, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    let (mut valid, mut garbage) = (0, 0);
    for (name, bytes) in files {
        let decoded = check(bytes);
        if name.starts_with("valid-") {
            valid += 1;
            if !decoded {
                return Err(format!("{target}/{name}: valid seed did not decode"));
            }
        } else if name.starts_with("garbage-") {
            garbage += 1;
            if decoded {
                return Err(format!("{target}/{name}: garbage seed was accepted"));
            }
        }
    }
    if valid == 0 || garbage == 0 {
        return Err(format!(
            "{target}: corpus needs valid and garbage seeds ({valid} valid, {garbage} garbage)"
        ));
    }
    Ok(())
}

/// The hello decoder: a parsed hello re-emits and re-parses to itself.
pub fn hello(data: &[u8]) -> bool {
    let Ok((hello, n)) = Hello::parse(data) else {
        return false;
    };
    assert!(n <= data.len() && n <= HELLO_LEN_MAX);
    let mut buf = [0u8; HELLO_LEN_MAX];
    let m = hello.emit(&mut buf).expect("a parsed hello re-emits");
    let (again, m2) = Hello::parse(&buf[..m]).expect("an emitted hello parses");
    assert_eq!((again, m2), (hello, m));
    true
}

/// The frame decoder: header and frame agree on lengths.
pub fn frame(data: &[u8]) -> bool {
    let Ok((f, n)) = Frame::parse(data) else {
        return false;
    };
    assert_eq!(n, FRAME_HEADER_LEN + f.sealed.len());
    assert!(f.sealed.len() >= TAG_LEN_BYTES);
    assert_eq!(FrameHeader::parse(data), Ok(f.header));
    let mut hdr = [0u8; FRAME_HEADER_LEN];
    f.header.emit(&mut hdr).expect("a parsed header re-emits");
    assert_eq!(&hdr[..], f.header_bytes);
    true
}

/// The message decoder: a parsed message re-emits to exactly the input bytes.
pub fn message(data: &[u8]) -> bool {
    let Ok(msg) = Message::parse(data) else {
        return false;
    };
    let mut buf = vec![0u8; msg.buffer_len()];
    let n = msg.emit(&mut buf).expect("a parsed message re-emits");
    assert_eq!(&buf[..n], data);
    true
}

/// The sleeve datagram decoder (header, then the payload as plaintext when unsealed).
pub fn datagram(data: &[u8]) -> bool {
    let Ok((header, rest)) = DatagramHeader::parse(data) else {
        return false;
    };
    let mut hdr = [0u8; 32];
    let hl = header.emit(&mut hdr).expect("a parsed header re-emits");
    assert_eq!(&hdr[..hl], &data[..hl]);
    if header.sealed {
        // Opening needs keys; the datapath checks the tag length before opening.
        return rest.len() >= TAG_LEN_BYTES;
    }
    let Ok(payload) = Payload::parse(header.kind, rest) else {
        return false;
    };
    match payload {
        // Both frame kinds carry the same payload.
        Payload::Frames(_) => assert!(header.kind.carries_frames()),
        _ => assert_eq!(payload.kind(), header.kind),
    }
    if let Payload::Frames(frames) = payload {
        assert_eq!(frames.iter().count(), frames.len());
        assert!(!frames.is_empty());
    }
    let mut buf = vec![0u8; DATAGRAM_LEN_MAX];
    let n = payload.emit(&mut buf).expect("a parsed payload re-emits");
    if let Payload::PmtuProbe { .. } = payload {
        // Padding content is ignored and re-emitted as zeros: compare id and length.
        assert_eq!((n, &buf[..4]), (rest.len(), &rest[..4]));
    } else {
        assert_eq!(&buf[..n], rest);
    }
    true
}

/// The topology gossip decoder (owner B's codec): entries re-emit and re-parse equal.
pub fn topology(data: &[u8]) -> bool {
    let Ok(entries) = parse_entries(data) else {
        return false;
    };
    let mut buf = vec![0u8; TOPOLOGY_MSG_LEN_MAX];
    let n = emit_entries(&entries, &mut buf).expect("parsed entries re-emit");
    assert_eq!(parse_entries(&buf[..n]), Ok(entries));
    true
}

/// The topology sync decoder: what parses re-emits to the same bytes.
pub fn topology_sync(data: &[u8]) -> bool {
    use crate::wire::topology_sync::SyncMsg;
    let Ok(m) = SyncMsg::parse(data) else {
        return false;
    };
    assert_eq!(m.to_vec().as_deref(), Ok(data), "re-emit differs");
    true
}

/// A connection fed arbitrary stream bytes: never panics, and an error always closes it.
/// "Decodes" means the bytes were accepted without error.
pub fn conn_stream(data: &[u8]) -> bool {
    let mut rng = ChaChaKeyRng::for_simulation(1);
    let settings = ConnSettings::new(PeerName::from_u64(0x01), PeerUid(1));
    let addr = core::net::SocketAddr::from(([10, 0, 0, 1], 6783));
    let mut conn = Connection::new(ConnId(1), false, addr, &settings, &mut rng, Instant::ZERO);
    // Two halves, to exercise reassembly across calls.
    let (a, b) = data.split_at(data.len() / 2);
    let result = conn
        .handle_bytes(Instant::ZERO, a)
        .and_then(|()| conn.handle_bytes(Instant::ZERO, b));
    while conn.poll_output().is_some() {}
    let mut out = [0u8; 4096];
    while conn.poll_transmit(&mut out).is_some() {}
    match result {
        Ok(()) => {
            assert_ne!(
                conn.state(),
                ConnState::Established,
                "no confirm without keys"
            );
            true
        }
        Err(e) => {
            assert_eq!(conn.state(), ConnState::Closed);
            assert_eq!(conn.error(), Some(e));
            false
        }
    }
}

/// The IPAM gossip decoder (`weft_core::ipam::wire`): a parsed message re-emits to exactly
/// its input bytes, and an IPAM fed the bytes as gossip (and as a state file) never panics
/// and keeps its ring invariant.
pub fn ipam(data: &[u8]) -> bool {
    use crate::ipam::wire::IpamMsg;
    use crate::ipam::{InitMode, Ipam, IpamConfig};
    let mut config = IpamConfig::default();
    config.range = "10.32.0.0/22".parse().expect("a valid range");
    config.default_subnet = config.range;
    // An observer has no ring: a full ring in `data` is adopted, then merged again.
    config.init = InitMode::Observer;
    let me = PeerName::from_u64(0x0a0b0c0d0e0f);
    let gossip = crate::time::Duration::from_secs(5);
    let mut ipam = Ipam::new(config, me, 1, gossip, Instant::ZERO);
    for _ in 0..2 {
        let _ = ipam.handle_message(Instant::ZERO, PeerName::from_u64(2), data);
        assert_eq!(ipam.ring().check(), Ok(()));
    }
    while ipam.poll_output().is_some() {}
    let _ = Ipam::import(config, me, 1, gossip, Instant::ZERO, data);
    let Ok(msg) = IpamMsg::parse(data) else {
        return false;
    };
    let bytes = msg.to_vec().expect("a parsed message re-emits");
    assert_eq!(bytes, data);
    true
}

/// The DNS gossip decoder (`weft_core::dns::wire`): a parsed message re-emits to exactly
/// its input bytes, and a record set fed the bytes as gossip never panics and ends up
/// holding, for every record of the message, that record or a newer state of it.
pub fn dns(data: &[u8]) -> bool {
    use crate::dns::{Dns, wire};
    let me = PeerName::from_u64(0x0a0b0c0d0e0f);
    let gossip = crate::time::Duration::from_secs(5);
    let mut d = Dns::new(me, gossip, Instant::ZERO);
    for _ in 0..2 {
        let _ = d.handle_message(Instant::ZERO, PeerName::from_u64(2), data, |_| true);
    }
    while d.poll_output().is_some() {}
    let Ok(recs) = wire::parse(data) else {
        return false;
    };
    let held: Vec<_> = d.records().collect();
    for r in &recs {
        let h = held
            .iter()
            .find(|h| h.key == r.key)
            .expect("a merged record is held");
        assert!(h.rank() >= r.rank() || r.key.owner == me);
    }
    let refs: Vec<_> = recs.iter().collect();
    assert_eq!(
        wire::to_vec(&refs).expect("a parsed message re-emits"),
        data
    );
    true
}

/// The policy gossip decoder (`weft_core::policy::wire`): a parsed message re-emits to
/// exactly its input bytes; a table fed the bytes as gossip never panics and ends up
/// holding, for every entry of the message, that entry or a greater state of it (our own
/// pods aside: we answer those with a newer version); the bytes as a state file never
/// panic either.
pub fn policy(data: &[u8]) -> bool {
    use crate::policy::PolicyTable;
    use crate::policy::table::pod_rank;
    use crate::policy::wire::{self, Msg};
    let me = PeerName::from_u64(0x0a0b0c0d0e0f);
    let gossip = crate::time::Duration::from_secs(5);
    let mut t = PolicyTable::new(me, gossip, Instant::ZERO);
    for _ in 0..2 {
        let _ = t.handle_message(Instant::ZERO, PeerName::from_u64(2), data, |_| true);
    }
    while t.poll_output().is_some() {}
    let _ = PolicyTable::new(me, gossip, Instant::ZERO).import_shared(Instant::ZERO, data);
    let Ok(msg) = wire::parse(data) else {
        return false;
    };
    match &msg {
        Msg::Policies(es) => {
            let held: Vec<_> = t.policy_entries().collect();
            for e in es {
                let h = held
                    .iter()
                    .find(|h| h.key == e.key)
                    .expect("merged entry held");
                assert!((h.stamp, h.policy.as_ref()) >= (e.stamp, e.policy.as_ref()));
            }
        }
        Msg::Namespaces(es) => {
            let held: Vec<_> = t.namespace_entries().collect();
            for e in es {
                let h = held
                    .iter()
                    .find(|h| h.name == e.name)
                    .expect("merged entry held");
                assert!((h.stamp, h.labels.as_ref()) >= (e.stamp, e.labels.as_ref()));
            }
        }
        Msg::Pods(es) => {
            let held: Vec<_> = t.pod_entries().collect();
            for e in es {
                let h = held
                    .iter()
                    .find(|h| h.key == e.key)
                    .expect("merged pod held");
                assert!(pod_rank(h) >= pod_rank(e) || e.key.owner == me);
            }
        }
    }
    assert_eq!(msg.to_vec().expect("a parsed message re-emits"), data);
    true
}

/// Super-frame segmentation and coalescing (`weft_core::segment`). Input: 8 bytes of
/// offload request (gso type 0-3, csum flag, gso_size u16, csum start u16, csum offset
/// u16, big-endian) then the frame. Never panics; when a GSO request is accepted, every
/// segment is a whole IP packet whose L4 checksum verifies, no longer than the frame, and
/// TCP segments coalesce back into a single frame.
pub fn segment(data: &[u8]) -> bool {
    use crate::segment::{
        Coalescer, Gso, Offload, PartialCsum, SUPER_FRAME_LEN_MAX, l4_csum_verifies,
    };
    let Some((req, frame)) = data.split_first_chunk::<8>() else {
        return false;
    };
    let gso = [Gso::None, Gso::TcpV4, Gso::TcpV6, Gso::Udp][usize::from(req[0] % 4)];
    let off = Offload {
        gso,
        gso_size: u16::from_be_bytes([req[2], req[3]]),
        csum: (req[1] & 1 != 0).then_some(PartialCsum {
            start: u16::from_be_bytes([req[4], req[5]]),
            offset: u16::from_be_bytes([req[6], req[7]]),
        }),
        ..Offload::default()
    };
    let mut scratch = vec![0u8; SUPER_FRAME_LEN_MAX];
    let mut segs: Vec<Vec<u8>> = Vec::new();
    let res = crate::segment::segment(frame, &off, 1500, &mut scratch, |s| segs.push(s.to_vec()));
    let mut c = Coalescer::new();
    let mut out = 0usize;
    for s in &segs {
        c.push(s, &mut |_, f| out += usize::from(!f.is_empty()));
    }
    c.flush(&mut |_, f| out += usize::from(!f.is_empty()));
    if res.is_err() || gso == Gso::None {
        return false;
    }
    for s in &segs {
        assert!(
            s.len() <= frame.len(),
            "a segment is never longer than its frame"
        );
        assert_eq!(l4_csum_verifies(s), Some(true), "every segment verifies");
    }
    if gso != Gso::Udp {
        // Only plain data segments (ACK, perhaps PSH) merge, as in Linux's GRO; a frame with
        // URG, ECE, CWR, SYN, RST or FIN (the last segment's) comes back in more pieces.
        let flags = tcp_flags(frame).unwrap_or(0);
        if flags & !(TCP_PSH | TCP_ACK) == 0 && flags & TCP_ACK != 0 {
            assert_eq!(out, 1, "plain TCP segments coalesce back into one frame");
        } else {
            assert!(out <= segs.len(), "coalescing never adds frames");
        }
    }
    true
}

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// The TCP flags byte of an Ethernet + IPv4/IPv6 + TCP frame (the segmenter accepted it,
/// so the headers are there).
fn tcp_flags(frame: &[u8]) -> Option<u8> {
    let ip = frame.get(14..)?;
    let l4 = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => usize::from(ip.first()? & 0x0f) * 4,
        0x86dd => 40,
        _ => return None,
    };
    ip.get(l4 + 13).copied()
}

/// The fast-path heartbeat decoder (`weft_core::fastdp`): a parsed heartbeat re-emits to
/// the same bytes from the ethertype to its last MAC (the MAC header is re-derived from
/// the names, padding is zeros) and re-parses to itself; a tracker that is its receiver
/// and knows its sender takes it and keeps the MACs it announces, any other ignores it.
pub fn heartbeat(data: &[u8]) -> bool {
    use crate::fastdp::{
        FastPaths, HEARTBEAT_FRAME_LEN, HEARTBEAT_FRAME_LEN_MAX, HEARTBEAT_MACS_MAX, Heartbeat,
        SleeveReason, heartbeat_mac,
    };
    use alloc::collections::BTreeSet;
    let tracker = |me: PeerName, peer: PeerName| {
        let mut fp = FastPaths::new(me);
        fp.set_peers(Instant::ZERO, [peer]);
        fp
    };
    let Ok(hb) = Heartbeat::parse(data) else {
        let a = PeerName::from_u64(1);
        assert!(!tracker(a, a).handle_frame(Instant::ZERO, data));
        return false;
    };
    assert!(hb.macs.len() <= HEARTBEAT_MACS_MAX);
    assert!(hb.macs.iter().all(|m| m[0] & 1 == 0), "no group MACs");
    // MAC header, magic, names, flags, seq, count, then the MACs.
    let used = 14 + 8 + 6 + 6 + 1 + 8 + 2 + 6 * hb.macs.len();
    assert!(used <= data.len());
    let mut buf = [0u8; HEARTBEAT_FRAME_LEN_MAX];
    let n = hb.emit(&mut buf).expect("a parsed heartbeat re-emits");
    assert_eq!(n, used.max(HEARTBEAT_FRAME_LEN));
    assert_eq!(buf[..6], heartbeat_mac(hb.receiver));
    assert_eq!(buf[6..12], heartbeat_mac(hb.sender));
    assert_eq!(buf[12..used], data[12..used]);
    assert!(buf[used..n].iter().all(|&b| b == 0), "padding is zeros");
    assert_eq!(Heartbeat::parse(&buf[..n]).as_ref(), Ok(&hb));

    let mut fp = tracker(hb.receiver, hb.sender);
    assert!(fp.handle_frame(Instant::ZERO, data));
    let held: BTreeSet<_> = fp.peer_macs(hb.sender).collect();
    assert_eq!(held, hb.macs.iter().copied().collect());
    let mode = fp.mode(hb.sender, Instant::ZERO);
    assert_eq!(mode.is_ok(), hb.hears_you);
    assert!(hb.hears_you || mode == Err(SleeveReason::OneWay));
    // Not for us, or from a peer we do not track: ignored.
    let other = PeerName::from_u64(u64::from(hb.receiver == PeerName::from_u64(1)) + 1);
    let stranger = PeerName::from_u64(u64::from(hb.sender == PeerName::from_u64(3)) + 3);
    assert!(!tracker(other, hb.sender).handle_frame(Instant::ZERO, data));
    assert!(!tracker(hb.receiver, stranger).handle_frame(Instant::ZERO, data));
    true
}

/// Two connections (A dialled B) driven through an arbitrary interleaving of partial
/// deliveries each way, time passing, gossip sent on either side, bytes corrupted or
/// injected in flight and closes. The first byte picks passwords (none, the same or
/// different) and cipher offers. Never a panic; a send queue never grows past its bound;
/// an end that fails is closed with that error; different passwords never both
/// establish; with nothing tampered, each end receives the other's gossip exactly and
/// in order. "Decodes" means both ends established.
pub fn conn_pair(data: &[u8]) -> bool {
    use crate::conn::{SEND_QUEUE_BYTES_MAX, SEND_QUEUE_CONTROL_HEADROOM_BYTES};
    use crate::crypto::{CipherSuites, Psk};
    use crate::time::Duration;
    use alloc::collections::VecDeque;

    let Some((&cfg, mut ops)) = data.split_first() else {
        return false;
    };
    let mut rng = ChaChaKeyRng::for_simulation(u64::from(cfg));
    let mut sa = ConnSettings::new(PeerName::from_u64(1), PeerUid(1));
    let mut sb = ConnSettings::new(PeerName::from_u64(2), PeerUid(2));
    if cfg & 1 != 0 {
        sa.psk = Some(Psk::from_password(b"fuzz"));
    }
    if cfg & 2 != 0 {
        let pw: &[u8] = if cfg & 4 != 0 { b"other" } else { b"fuzz" };
        sb.psk = Some(Psk::from_password(pw));
    }
    let same_secret = sa.psk == sb.psk;
    if cfg & 8 != 0 {
        sa.ciphers = CipherSuites::supported();
    }
    if cfg & 16 != 0 {
        sb.ciphers = CipherSuites::supported();
    }
    let addr = core::net::SocketAddr::from(([10, 0, 0, 2], 6783));
    let mut now = Instant::ZERO;
    let mut ends = [
        Connection::new(ConnId(1), true, addr, &sa, &mut rng, now),
        Connection::new(ConnId(2), false, addr, &sb, &mut rng, now),
    ];
    // Bytes in flight from end i to the other; gossip end i sent that the other has yet
    // to receive (kept only while nothing was tampered with).
    let mut wire: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut sent: [VecDeque<(u8, Vec<u8>)>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut tampered = false;
    let mut established = [false; 2];
    let queue_max = SEND_QUEUE_BYTES_MAX + SEND_QUEUE_CONTROL_HEADROOM_BYTES;
    let next = |ops: &mut &[u8]| -> u8 {
        let (&b, rest) = ops.split_first().unwrap_or((&0, &[]));
        *ops = rest;
        b
    };
    for _ in 0..512 {
        if ops.is_empty() {
            break;
        }
        let op = next(&mut ops);
        let i = usize::from(op >> 7);
        let j = 1 - i;
        match op & 7 {
            0 => {
                let mut buf = [0u8; 1500];
                while let Some(n) = ends[i].poll_transmit(&mut buf) {
                    wire[i].extend_from_slice(&buf[..n]);
                    if wire[i].len() > 4 * FRAME_LEN_MAX_CHECK {
                        break;
                    }
                }
            }
            1 => {
                let n = match usize::from(next(&mut ops)) * 16 {
                    0 => wire[i].len(),
                    n => n.min(wire[i].len()),
                };
                let bytes: Vec<u8> = wire[i].drain(..n).collect();
                if let Err(e) = ends[j].handle_bytes(now, &bytes) {
                    assert_eq!(ends[j].state(), ConnState::Closed, "{e:?}");
                    assert_eq!(ends[j].error(), Some(e));
                }
            }
            2 => {
                now += Duration::from_millis(u64::from(next(&mut ops)) * 250);
                for c in &mut ends {
                    if let Err(e) = c.handle_timeout(now) {
                        assert_eq!(c.state(), ConnState::Closed, "{e:?}");
                        assert_eq!(c.error(), Some(e));
                    }
                    if let Some(t) = c.poll_timeout() {
                        assert!(
                            c.state() == ConnState::Closed || t > now,
                            "a timer in the past"
                        );
                    }
                }
            }
            3 => {
                let channel = next(&mut ops) % 6;
                let len = usize::from(next(&mut ops)).min(ops.len());
                let (payload, rest) = ops.split_at(len);
                ops = rest;
                let both = established.iter().all(|e| *e);
                if ends[i].send_gossip(channel, payload).is_ok() {
                    if both && !tampered {
                        sent[i].push_back((channel, payload.to_vec()));
                    } else {
                        // Sent before this check saw both ends up: it cannot say where
                        // in the order it belongs.
                        tampered = true;
                    }
                }
            }
            4 => {
                let at = usize::from(next(&mut ops)) * 7;
                if let Some(b) = wire[i].get_mut(at) {
                    *b ^= 1 << (at % 8);
                    tampered = true;
                }
            }
            5 => {
                let len = usize::from(next(&mut ops)).min(ops.len());
                let (junk, rest) = ops.split_at(len);
                ops = rest;
                wire[i].extend_from_slice(junk);
                tampered |= len > 0;
            }
            6 => {
                ends[i].close(next(&mut ops));
                tampered = true;
            }
            _ => {}
        }
        for (k, c) in ends.iter_mut().enumerate() {
            assert!(
                c.send_queue_len() <= queue_max,
                "a send queue past its bound"
            );
            while let Some(out) = c.poll_output() {
                match out {
                    crate::conn::ConnOutput::Established(_) => established[k] = true,
                    crate::conn::ConnOutput::Gossip { channel, payload } => {
                        if !tampered {
                            let want = sent[1 - k].pop_front();
                            assert_eq!(want, Some((channel, payload)), "gossip in order");
                        }
                    }
                }
            }
        }
        if established == [true, true] {
            assert!(same_secret, "different secrets established a session");
        }
    }
    established == [true, true]
}

/// Caps the bytes one end keeps in flight in [`conn_pair`].
const FRAME_LEN_MAX_CHECK: usize = crate::wire::frame::FRAME_LEN_MAX;
/// The punch control message decoder: a parsed message re-emits to exactly the input.
pub fn punch_msg(data: &[u8]) -> bool {
    use crate::punch::wire::{PUNCH_MSG_LEN_MAX, PunchMsg};
    let Ok(m) = PunchMsg::parse(data) else {
        return false;
    };
    let mut buf = [0u8; PUNCH_MSG_LEN_MAX];
    let n = m.emit(&mut buf).expect("a parsed punch message re-emits");
    assert_eq!(&buf[..n], data);
    true
}

/// The punch datagram decoder: a parsed datagram re-emits to exactly the input, and a
/// router (punching on, no neighbours) that gets it drops it and counts the drop.
pub fn punch_datagram(data: &[u8]) -> bool {
    use crate::punch::wire::{PUNCH_DATAGRAM_LEN_MAX, PunchDatagram};
    use crate::router::{Config, Router};
    let parsed = PunchDatagram::parse(data);
    let me = match &parsed {
        Ok(d) => d.receiver,
        Err(_) => PeerName::from_u64(1),
    };
    let mut c = Config::new(me, 6783);
    c.punch.enabled = true;
    let keys = alloc::boxed::Box::new(ChaChaKeyRng::for_simulation(1));
    let mut r = Router::new(c, 1, keys, Instant::ZERO);
    let from = core::net::SocketAddr::from(([192, 0, 2, 1], 6783));
    r.handle_datagram(Instant::ZERO, from, data);
    assert_eq!(r.punch_stats().datagrams_dropped, 1);
    let Ok(d) = parsed else {
        return false;
    };
    let mut buf = [0u8; PUNCH_DATAGRAM_LEN_MAX];
    let n = d.emit(&mut buf).expect("a parsed punch datagram re-emits");
    assert_eq!(&buf[..n], data);
    true
}
