//! One TCP connection to a peer: hello exchange, key confirmation, then sealed frames
//! carrying gossip, heartbeats and close — as a sans-IO state machine.
//!
//! What it does: builds and checks hellos, derives the session ([`crate::crypto`]),
//! reassembles frames from arbitrary TCP chunking in a bounded buffer, seals outgoing
//! messages into a bounded send queue, sends heartbeats and notices silence.
//! What it does not do: sockets, timers or deciding which connections to keep — the
//! [`crate::router`] owns a map of these, feeds them bytes and time, and drains
//! [`Connection::poll_transmit`] / [`Connection::poll_output`].
//!
//! Flow: both sides send their hello at once; it carries an X25519 public key, or with a
//! password a SPAKE2 element ([`crate::crypto::Handshake`]), and (v3) the ciphers we offer
//! for sleeve datagrams. On the peer's hello we check it (name, versions, encryption flag),
//! choose the datagram cipher (AES-256-GCM if both offer it, else ChaCha20-Poly1305), derive
//! keys (the datagram ones bound to the cipher and to SHA-256(initiator hello || responder
//! hello)) and send a sealed `Confirm` carrying that hash. On the peer's confirm: does not open -> wrong password; hash differs -> a hello was
//! altered (downgrade); else established. Sending our confirm first is safe with SPAKE2: it
//! only opens under a key that a peer can compute for the one password it committed to.
//! Any error closes the connection for good; the router drops it and may redial.

use crate::crypto::{
    CipherSuite, CipherSuites, CryptoError, DatagramBinding, DatagramOpener, DatagramSealer,
    Handshake, KeyRng, Opener, Psk, Sealer, TAG_LEN_BYTES, transcript_hash,
};
use crate::peer::{PeerName, PeerUid};
use crate::punch::arq::ArqError;
use crate::time::{Duration, Instant};
use crate::wire::frame::{
    CLOSE_REASON_DUPLICATE, CLOSE_REASON_NORMAL, CLOSE_REASON_PROTOCOL_ERROR, CLOSE_REASON_TIMEOUT,
    FRAME_HEADER_LEN, FRAME_LEN_MAX, FrameHeader, GOSSIP_PAYLOAD_LEN_MAX, MESSAGE_LEN_MAX, Message,
};
use crate::wire::handshake::{
    HELLO_CIPHERS_VERSION_MIN, HELLO_HEADER_LEN, HELLO_LEN_MAX, Hello, NICKNAME_LEN_MAX, hello_len,
    negotiate_version,
};
use crate::wire::{PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, WireError};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

/// Most bytes of sealed gossip waiting in the send queue; past it
/// [`Connection::send_gossip`] returns [`ConnError::QueueFull`].
pub const SEND_QUEUE_BYTES_MAX: usize = 4 * FRAME_LEN_MAX;
/// Extra room above [`SEND_QUEUE_BYTES_MAX`] for heartbeats, confirm and close, so a
/// gossip backlog cannot starve them (and they cannot grow the queue without bound).
pub const SEND_QUEUE_CONTROL_HEADROOM_BYTES: usize = 4096;
/// An emptied send or receive buffer keeps at most this much capacity: a burst (the
/// whole topology to a new neighbour, up to [`SEND_QUEUE_BYTES_MAX`]) is not held for
/// the connection's life. Thousands of connections in one process (the simulator) or
/// a router with hundreds of neighbours would otherwise keep every burst's peak.
pub const IDLE_BUF_BYTES_MAX: usize = 4096;
/// Most outputs (established, gossip) waiting for [`Connection::poll_output`].
pub const OUTPUT_QUEUE_LEN_MAX: usize = 256;
/// Most gossip payload bytes waiting for [`Connection::poll_output`]; past either limit
/// received gossip is dropped and counted ([`Connection::dropped_gossip`]). Gossip is
/// periodic, so a drop delays convergence, it does not lose state.
pub const OUTPUT_QUEUE_BYTES_MAX: usize = 4 * FRAME_LEN_MAX;
/// Default time between heartbeats on an established connection.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Default silence after which an established connection is declared dead.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time allowed from connect to confirmed session.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an inbound stream may stay silent before the peer's hello arrived. A real
/// peer sends its hello as soon as the stream is up, so this is far shorter than the
/// handshake timeout: idle streams give their slot back quickly.
pub const DEFAULT_PRE_HELLO_TIMEOUT_MS: u64 = 3_000;

/// Identifies a connection inside one router (allocated by the router, never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// What a connection needs to know about ourselves; the same for all connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnSettings {
    /// Our peer name.
    pub name: PeerName,
    /// Our incarnation.
    pub uid: PeerUid,
    /// Our nickname; cut to [`NICKNAME_LEN_MAX`] bytes (at a char boundary) in the hello.
    pub nickname: String,
    /// The TCP port we listen on, announced in the hello.
    pub listen_port: u16,
    /// The network's secret ([`Psk`]), if a password or key file is set.
    pub psk: Option<Psk>,
    /// The ciphers we offer for sleeve datagrams (the host decides, from the CPU and
    /// `--cipher`); those this build cannot run ([`CipherSuites::supported`]) are left out.
    pub ciphers: CipherSuites,
    /// Time between heartbeats once established.
    pub heartbeat_interval: Duration,
    /// Silence after which an established connection fails.
    pub heartbeat_timeout: Duration,
    /// Time from creation to confirmed session before giving up.
    pub handshake_timeout: Duration,
    /// Time from accepting an inbound stream to the peer's hello before giving up (capped
    /// by `handshake_timeout`; outbound streams wait the whole handshake timeout).
    pub pre_hello_timeout: Duration,
}

impl ConnSettings {
    /// Settings with no password, no nickname, port 6783, ChaCha20-Poly1305 alone and the
    /// default timers.
    pub fn new(name: PeerName, uid: PeerUid) -> Self {
        Self {
            name,
            uid,
            nickname: String::new(),
            listen_port: 6783,
            psk: None,
            ciphers: CipherSuites::CHACHA20_POLY1305,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            pre_hello_timeout: Duration::from_millis(DEFAULT_PRE_HELLO_TIMEOUT_MS),
        }
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Our hello is queued; waiting for the peer's.
    Handshaking,
    /// Hellos exchanged, our confirm sent; waiting for the peer's confirm.
    Confirming,
    /// Session confirmed: gossip flows.
    Established,
    /// Done (error, peer's close or ours); only queued bytes remain to send.
    Closed,
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Handshaking => "handshaking",
            Self::Confirming => "confirming",
            Self::Established => "established",
            Self::Closed => "closed",
        })
    }
}

/// What the peer told us about itself, once its hello was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteHello {
    /// The peer's name.
    pub name: PeerName,
    /// The peer's incarnation.
    pub uid: PeerUid,
    /// The peer's nickname.
    pub nickname: String,
    /// The port the peer listens on.
    pub listen_port: u16,
    /// The protocol version both sides speak on this connection.
    pub version: u8,
    /// The AEAD of this connection's sleeve datagrams (the stream is always
    /// ChaCha20-Poly1305).
    pub cipher: CipherSuite,
}

/// Something the router must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnOutput {
    /// The session is confirmed; this is the peer.
    Established(RemoteHello),
    /// A gossip message arrived.
    Gossip {
        /// Its channel (`CHANNEL_*` in [`crate::wire::frame`]).
        channel: u8,
        /// The channel's payload.
        payload: Vec<u8>,
    },
}

/// Why a connection failed. Each `Display` is one line a user can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnError {
    /// The peer sent bytes that do not decode.
    Wire(WireError),
    /// A handshake or sealing check failed.
    Crypto(CryptoError),
    /// A frame (received or to send) over [`FRAME_LEN_MAX`].
    FrameTooLarge,
    /// Nothing heard from the peer for the heartbeat timeout.
    HeartbeatTimeout,
    /// The session was not confirmed within the handshake timeout.
    HandshakeTimeout,
    /// An inbound stream sent no hello within the pre-hello timeout.
    HelloTimeout,
    /// An inbound stream without a hello yet, closed to make room for a newer one (the
    /// budget for connections still in their handshake was full).
    Evicted,
    /// A connection under way to a discovered target, stopped to make room for a
    /// `weft connect` target (the connection limit was reached).
    Preempted,
    /// The peer has our own name: we dialled ourselves (or a name clash).
    SelfConnection,
    /// The send queue is full; try again after the stream drained.
    QueueFull,
    /// The peer closed the connection with this reason (`CLOSE_REASON_*`).
    ClosedByPeer(u8),
    /// Gossip offered before the session is established or after it closed.
    NotEstablished,
    /// A valid message at the wrong time (e.g. gossip before confirm, a second confirm).
    UnexpectedMessage,
    /// The driver could not open the stream (refused, unreachable, timed out).
    ConnectFailed,
    /// The stream was closed or reset underneath the connection.
    StreamClosed,
    /// A second connection to the same peer, closed by the tie-break.
    Duplicate,
    /// The user removed the target (`weft forget`).
    Forgotten,
    /// The peer speaks only protocol versions up to this one, older than ours.
    PeerTooOld(u8),
    /// The peer speaks only protocol versions from this one on, newer than ours.
    PeerTooNew(u8),
    /// A punched connection's datagram stream broke ([`crate::punch::arq`]).
    PunchedPath(ArqError),
    /// A punch still under way, replaced by a newer introduction to the same peer.
    PunchSuperseded,
}

impl ConnError {
    /// The `CLOSE_REASON_*` byte to send the peer when we close for this error.
    pub fn close_reason(self) -> u8 {
        match self {
            Self::HeartbeatTimeout | Self::HandshakeTimeout | Self::HelloTimeout => {
                CLOSE_REASON_TIMEOUT
            }
            Self::Evicted | Self::Preempted | Self::PunchSuperseded => CLOSE_REASON_NORMAL,
            Self::Duplicate => CLOSE_REASON_DUPLICATE,
            Self::Forgotten | Self::StreamClosed | Self::ConnectFailed | Self::ClosedByPeer(_) => {
                CLOSE_REASON_NORMAL
            }
            _ => CLOSE_REASON_PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire(e) => write!(f, "malformed data from peer: {e}"),
            Self::Crypto(e) => write!(f, "{e}"),
            Self::FrameTooLarge => write!(f, "frame over the {FRAME_LEN_MAX}-byte limit"),
            Self::HeartbeatTimeout => f.write_str("peer silent past the heartbeat timeout"),
            Self::HandshakeTimeout => {
                f.write_str("handshake not completed in time (is the peer a weft router?)")
            }
            Self::HelloTimeout => {
                f.write_str("no hello from the peer in time (is it a weft router?)")
            }
            Self::Evicted => f.write_str(
                "closed before its hello to make room: too many connections still handshaking",
            ),
            Self::Preempted => f.write_str(
                "stopped to make room for a `weft connect` target: the connection limit was reached",
            ),
            Self::SelfConnection => f.write_str("connected to ourselves (same peer name)"),
            Self::QueueFull => f.write_str("send queue full"),
            Self::ClosedByPeer(CLOSE_REASON_NORMAL) => f.write_str("closed by peer"),
            Self::ClosedByPeer(CLOSE_REASON_PROTOCOL_ERROR) => {
                f.write_str("closed by peer: it saw a protocol or crypto error from us")
            }
            Self::ClosedByPeer(CLOSE_REASON_TIMEOUT) => {
                f.write_str("closed by peer: it heard nothing from us in time")
            }
            Self::ClosedByPeer(CLOSE_REASON_DUPLICATE) => {
                f.write_str("closed by peer: it keeps another connection to us")
            }
            Self::ClosedByPeer(r) => write!(f, "closed by peer (reason {r})"),
            Self::NotEstablished => f.write_str("connection not established"),
            Self::UnexpectedMessage => f.write_str("peer sent a message out of protocol order"),
            Self::ConnectFailed => {
                f.write_str("could not connect (refused, unreachable or timed out)")
            }
            Self::StreamClosed => f.write_str("connection closed or reset"),
            Self::Duplicate => {
                f.write_str("duplicate connection to the same peer (kept the other)")
            }
            Self::Forgotten => f.write_str("target forgotten"),
            Self::PeerTooOld(v) => write!(
                f,
                "the peer runs an older weft (protocol v{v}; this one needs v{PROTOCOL_VERSION_MIN}, \
                 with the SPAKE2 password handshake): upgrade it"
            ),
            Self::PunchedPath(e) => write!(f, "{e}"),
            Self::PunchSuperseded => f.write_str("punch replaced by a newer introduction"),
            Self::PeerTooNew(v) => write!(
                f,
                "the peer runs a newer weft (protocol v{v} and up; this one speaks up to \
                 v{PROTOCOL_VERSION_MAX}): upgrade this router"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConnError {}

impl From<WireError> for ConnError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

impl From<CryptoError> for ConnError {
    fn from(e: CryptoError) -> Self {
        Self::Crypto(e)
    }
}

/// Per-connection protocol state. See the module docs for the flow.
#[derive(Debug)]
pub struct Connection {
    id: ConnId,
    outbound: bool,
    remote_addr: SocketAddr,
    state: ConnState,
    error: Option<ConnError>,
    name: PeerName,
    encrypted: bool,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    handshake_deadline: Instant,
    /// Our half of the key exchange; used up once the session keys are derived.
    handshake: Option<Handshake>,
    /// The peer's hello must have arrived by then (inbound: the pre-hello timeout).
    hello_deadline: Instant,
    our_hello: Vec<u8>,
    /// The ciphers our hello offers.
    ciphers: CipherSuites,
    /// The protocol versions our hello claims (ours, except in tests).
    speaks: (u8, u8),
    /// Set once the peer's hello was accepted; hashed for the transcript.
    their_hello: Vec<u8>,
    transcript: [u8; 32],
    remote: Option<RemoteHello>,
    sealer: Option<Sealer>,
    opener: Option<Opener>,
    datagram_keys: Option<(DatagramSealer, DatagramOpener)>,
    /// Reassembly of the current hello or frame; never longer than one of them.
    recv_buf: Vec<u8>,
    /// Bytes for the stream; `send_buf[send_pos..]` are not yet handed out.
    send_buf: Vec<u8>,
    send_pos: usize,
    outputs: VecDeque<ConnOutput>,
    output_bytes: usize,
    dropped_gossip: u64,
    last_recv: Instant,
    next_heartbeat: Instant,
    heartbeat_seq: u64,
}

impl Connection {
    /// A new connection over a freshly opened (`outbound`) or accepted TCP stream. Starts
    /// the key exchange with secrets from `keys` (a cryptographically secure generator,
    /// never the router's cheap [`crate::rng::Rng`]) and queues our hello; call
    /// [`poll_transmit`](Self::poll_transmit) next.
    pub fn new(
        id: ConnId,
        outbound: bool,
        remote_addr: SocketAddr,
        settings: &ConnSettings,
        keys: &mut dyn KeyRng,
        now: Instant,
    ) -> Self {
        let speaks = (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX);
        Self::speaking(id, outbound, remote_addr, settings, keys, now, speaks)
    }

    /// A new connection over a punched UDP path ([`crate::punch`]): the same hello and
    /// keys as over TCP, but neither end accepted a stream, so both wait the whole
    /// handshake timeout for the other's hello (the punch probes are its retransmissions).
    /// `outbound` must be true at exactly one end (the router picks the greater name).
    pub fn new_punched(
        id: ConnId,
        outbound: bool,
        remote_addr: SocketAddr,
        settings: &ConnSettings,
        keys: &mut dyn KeyRng,
        now: Instant,
    ) -> Self {
        let mut c = Self::new(id, outbound, remote_addr, settings, keys, now);
        c.hello_deadline = c.handshake_deadline;
        c
    }

    /// [`new`](Self::new) speaking only the versions `speaks` (a subrange of ours): how
    /// tests stand in for an older router.
    fn speaking(
        id: ConnId,
        outbound: bool,
        remote_addr: SocketAddr,
        settings: &ConnSettings,
        keys: &mut dyn KeyRng,
        now: Instant,
        speaks: (u8, u8),
    ) -> Self {
        let handshake = Handshake::start(keys, settings.psk.as_ref());
        let ciphers = settings.ciphers.intersect(CipherSuites::supported());
        let hello = Hello {
            version_min: speaks.0,
            version_max: speaks.1,
            name: settings.name,
            uid: settings.uid,
            nickname: truncate_str(&settings.nickname, NICKNAME_LEN_MAX),
            listen_port: settings.listen_port,
            encrypted: settings.psk.is_some(),
            public_key: handshake.public_bytes(),
            ciphers,
        };
        let mut buf = [0u8; HELLO_LEN_MAX];
        let (our_hello, error) = match hello.emit(&mut buf) {
            // Nothing to offer (the host pinned a cipher this build lacks): fail closed.
            Ok(_) if ciphers.is_empty() => (Vec::new(), Some(CryptoError::NoCommonCipher.into())),
            Ok(n) => (buf[..n].to_vec(), None),
            // Unreachable with a truncated nickname and our own version range; fail closed.
            Err(e) => (Vec::new(), Some(ConnError::Wire(e))),
        };
        Self {
            id,
            outbound,
            remote_addr,
            state: if error.is_some() {
                ConnState::Closed
            } else {
                ConnState::Handshaking
            },
            error,
            name: settings.name,
            encrypted: settings.psk.is_some(),
            heartbeat_interval: settings.heartbeat_interval,
            heartbeat_timeout: settings.heartbeat_timeout,
            handshake_deadline: now + settings.handshake_timeout,
            handshake: Some(handshake),
            send_buf: our_hello.clone(),
            our_hello,
            ciphers,
            speaks,
            their_hello: Vec::new(),
            transcript: [0; 32],
            remote: None,
            sealer: None,
            opener: None,
            datagram_keys: None,
            recv_buf: Vec::new(),
            send_pos: 0,
            outputs: VecDeque::new(),
            output_bytes: 0,
            dropped_gossip: 0,
            last_recv: now,
            next_heartbeat: now,
            heartbeat_seq: 0,
            hello_deadline: if outbound {
                now + settings.handshake_timeout
            } else {
                now + settings.pre_hello_timeout.min(settings.handshake_timeout)
            },
        }
    }

    /// Feeds bytes read from the stream, in any chunking. On error the connection is
    /// closed for good (the same error is kept in [`error`](Self::error)); the router
    /// should flush [`poll_transmit`](Self::poll_transmit) (it may hold a close frame)
    /// and drop the stream. Bytes after a close are ignored.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ConnError> {
        self.feed(now, bytes).map_err(|e| self.fail(e))
    }

    fn feed(&mut self, now: Instant, mut input: &[u8]) -> Result<(), ConnError> {
        // Each pass either consumes input or completes (and clears) one unit, so this
        // ends after at most input.len() + number-of-units passes.
        loop {
            if self.state == ConnState::Closed {
                return Ok(());
            }
            let (header_len, known) = match self.state {
                ConnState::Handshaking => (HELLO_HEADER_LEN, hello_len(&self.recv_buf)),
                _ => (
                    FRAME_HEADER_LEN,
                    FrameHeader::parse(&self.recv_buf).map(|h| h.frame_len()),
                ),
            };
            let need = match known {
                Ok(total) if self.recv_buf.len() == total => {
                    self.process_unit(now)?;
                    continue;
                }
                Ok(total) => total,
                Err(WireError::Truncated) => header_len,
                Err(WireError::Oversized) if self.state != ConnState::Handshaking => {
                    return Err(ConnError::FrameTooLarge);
                }
                Err(e) => return Err(e.into()),
            };
            if input.is_empty() {
                return Ok(());
            }
            let want = need.saturating_sub(self.recv_buf.len()).max(1);
            let take = want.min(input.len());
            self.recv_buf.extend_from_slice(&input[..take]);
            input = &input[take..];
        }
    }

    /// Handles one complete hello or frame sitting in `recv_buf`.
    fn process_unit(&mut self, now: Instant) -> Result<(), ConnError> {
        let mut unit = core::mem::take(&mut self.recv_buf);
        let result = if self.state == ConnState::Handshaking {
            self.on_hello(&unit)
        } else {
            self.on_frame(now, &mut unit)
        };
        unit.clear();
        // A big frame's buffer is not kept for the small ones that mostly follow.
        if unit.capacity() > IDLE_BUF_BYTES_MAX {
            unit = Vec::new();
        }
        self.recv_buf = unit;
        result
    }

    fn on_hello(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let (hello, _) = Hello::parse(bytes)?;
        if hello.name == self.name {
            return Err(ConnError::SelfConnection);
        }
        if hello.version_max < PROTOCOL_VERSION_MIN {
            return Err(ConnError::PeerTooOld(hello.version_max));
        }
        if hello.version_min > PROTOCOL_VERSION_MAX {
            return Err(ConnError::PeerTooNew(hello.version_min));
        }
        let version = negotiate_version(self.speaks, (hello.version_min, hello.version_max))
            .ok_or(CryptoError::VersionMismatch)?;
        if hello.encrypted != self.encrypted {
            return Err(CryptoError::EncryptionMismatch.into());
        }
        let handshake = self.handshake.take().ok_or(ConnError::UnexpectedMessage)?;
        let transcript = if self.outbound {
            transcript_hash(&self.our_hello, bytes)
        } else {
            transcript_hash(bytes, &self.our_hello)
        };
        // v3 on: the best cipher both offer, with the datagram keys bound to it and to
        // both hellos. v2 (an older peer): ChaCha20-Poly1305, v2's schedule. The hellos,
        // offers included, are in the transcript the confirms compare: an offer changed
        // in flight is a downgrade.
        let (cipher, keys) = if version >= HELLO_CIPHERS_VERSION_MIN {
            let suite = self
                .ciphers
                .choose(hello.ciphers)
                .ok_or(CryptoError::NoCommonCipher)?;
            let binding = DatagramBinding { suite, transcript };
            let keys = handshake.finish_bound(hello.public_key, self.outbound, &binding)?;
            (suite, keys)
        } else {
            if !self.ciphers.contains(CipherSuite::ChaCha20Poly1305) {
                return Err(CryptoError::NoCommonCipher.into());
            }
            let keys = handshake.finish(hello.public_key, self.outbound)?;
            (CipherSuite::ChaCha20Poly1305, keys)
        };
        self.transcript = transcript;
        self.remote = Some(RemoteHello {
            name: hello.name,
            uid: hello.uid,
            nickname: String::from(hello.nickname),
            listen_port: hello.listen_port,
            version,
            cipher,
        });
        self.their_hello = bytes.to_vec();
        self.sealer = Some(keys.stream_sealer);
        self.opener = Some(keys.stream_opener);
        self.datagram_keys = Some((keys.datagram_sealer, keys.datagram_opener));
        self.state = ConnState::Confirming;
        self.queue_message(
            &Message::Confirm {
                transcript_hash: self.transcript,
            },
            true,
        )
    }

    fn on_frame(&mut self, now: Instant, unit: &mut [u8]) -> Result<(), ConnError> {
        let header = FrameHeader::parse(unit)?;
        let (header_bytes, sealed) = unit.split_at_mut(FRAME_HEADER_LEN);
        let opener = self.opener.as_mut().ok_or(ConnError::UnexpectedMessage)?;
        let confirming = self.state == ConnState::Confirming;
        let len = match opener.open_in_place(header.counter, header_bytes, sealed) {
            Ok(len) => len,
            // The very first sealed frame not opening means the keys differ: with a
            // password on both sides that is a wrong password.
            Err(CryptoError::Tampered) if confirming && self.encrypted => {
                return Err(CryptoError::WrongPassword.into());
            }
            Err(e) => return Err(e.into()),
        };
        let plain = sealed.get(..len).ok_or(WireError::Inconsistent)?;
        let msg = Message::parse(plain)?;
        self.last_recv = now;
        match (self.state, msg) {
            (ConnState::Confirming, Message::Confirm { transcript_hash }) => {
                if transcript_hash != self.transcript {
                    return Err(CryptoError::Downgrade.into());
                }
                self.state = ConnState::Established;
                self.next_heartbeat = now + self.heartbeat_interval;
                if let Some(remote) = self.remote.clone() {
                    // Never dropped: it is at most one per connection.
                    self.outputs.push_back(ConnOutput::Established(remote));
                }
                Ok(())
            }
            (_, Message::Close { reason }) => Err(ConnError::ClosedByPeer(reason)),
            (ConnState::Established, Message::Heartbeat { .. }) => Ok(()),
            (ConnState::Established, Message::Gossip { channel, payload }) => {
                if self.outputs.len() >= OUTPUT_QUEUE_LEN_MAX
                    || self.output_bytes + payload.len() > OUTPUT_QUEUE_BYTES_MAX
                {
                    self.dropped_gossip += 1;
                } else {
                    self.output_bytes += payload.len();
                    self.outputs.push_back(ConnOutput::Gossip {
                        channel,
                        payload: payload.to_vec(),
                    });
                }
                Ok(())
            }
            _ => Err(ConnError::UnexpectedMessage),
        }
    }

    /// Closes the connection with `error`, queueing a sealed close when the peer could
    /// open it, and returns the error for the caller to propagate.
    fn fail(&mut self, error: ConnError) -> ConnError {
        if self.state == ConnState::Closed {
            return error;
        }
        let reason = match error {
            // The peer cannot open our frames, or already left.
            ConnError::Crypto(CryptoError::WrongPassword) | ConnError::ClosedByPeer(_) => None,
            _ => Some(error.close_reason()),
        };
        if let Some(reason) = reason {
            // Best effort: without a sealer (before the hello) there is nothing to send.
            let _ = self.queue_message(&Message::Close { reason }, true);
        }
        self.state = ConnState::Closed;
        self.error = Some(error);
        error
    }

    /// Seals `msg` into the send queue. Control messages may use the headroom.
    fn queue_message(&mut self, msg: &Message<'_>, control: bool) -> Result<(), ConnError> {
        let sealer = self.sealer.as_mut().ok_or(ConnError::NotEstablished)?;
        let plain_len = msg.buffer_len();
        if plain_len > MESSAGE_LEN_MAX {
            return Err(ConnError::FrameTooLarge);
        }
        let frame_len = FRAME_HEADER_LEN + plain_len + TAG_LEN_BYTES;
        let limit = if control {
            SEND_QUEUE_BYTES_MAX + SEND_QUEUE_CONTROL_HEADROOM_BYTES
        } else {
            SEND_QUEUE_BYTES_MAX
        };
        let queued = self.send_buf.len() - self.send_pos;
        if queued + frame_len > limit {
            return Err(ConnError::QueueFull);
        }
        // Compact lazily: the drained prefix goes once it is at least half the buffer.
        if self.send_pos > 0 && self.send_pos * 2 >= self.send_buf.len() {
            self.send_buf.drain(..self.send_pos);
            self.send_pos = 0;
        }
        let start = self.send_buf.len();
        self.send_buf.resize(start + frame_len, 0);
        let (header_bytes, body) = self.send_buf[start..].split_at_mut(FRAME_HEADER_LEN);
        let sealed = msg.emit(body).map_err(ConnError::from).and_then(|n| {
            FrameHeader {
                sealed_len: n + TAG_LEN_BYTES,
                counter: sealer.next_counter(),
            }
            .emit(header_bytes)?;
            Ok(sealer.seal_in_place(header_bytes, body, n)?)
        });
        if let Err(e) = sealed {
            self.send_buf.truncate(start);
            return Err(e);
        }
        Ok(())
    }

    /// The next output for the router, if any; call after every `handle_*`.
    pub fn poll_output(&mut self) -> Option<ConnOutput> {
        let out = self.outputs.pop_front()?;
        if let ConnOutput::Gossip { payload, .. } = &out {
            self.output_bytes = self.output_bytes.saturating_sub(payload.len());
        }
        Some(out)
    }

    /// Seals one gossip message for the stream. Only when established
    /// ([`ConnError::NotEstablished`]); a payload over
    /// [`GOSSIP_PAYLOAD_LEN_MAX`] is [`ConnError::FrameTooLarge`]; a full send queue is
    /// [`ConnError::QueueFull`] (nothing queued; the connection stays up).
    pub fn send_gossip(&mut self, channel: u8, payload: &[u8]) -> Result<(), ConnError> {
        if self.state != ConnState::Established {
            return Err(ConnError::NotEstablished);
        }
        if payload.len() > GOSSIP_PAYLOAD_LEN_MAX {
            return Err(ConnError::FrameTooLarge);
        }
        self.queue_message(&Message::Gossip { channel, payload }, false)
    }

    /// Copies the next bytes for the TCP stream into `buf` and returns how many; `None`
    /// when nothing is pending. Frames may be split across calls. Keeps working after
    /// the connection closed, to flush a final close frame.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        let pending = self.send_buf.get(self.send_pos..)?;
        let n = pending.len().min(buf.len());
        if n == 0 {
            return None;
        }
        buf[..n].copy_from_slice(&pending[..n]);
        self.send_pos += n;
        if self.send_pos == self.send_buf.len() {
            self.send_buf.clear();
            if self.send_buf.capacity() > IDLE_BUF_BYTES_MAX {
                self.send_buf = Vec::new();
            }
            self.send_pos = 0;
        }
        Some(n)
    }

    /// Bytes queued for the stream and not yet handed out by `poll_transmit`.
    pub fn send_queue_len(&self) -> usize {
        self.send_buf.len() - self.send_pos
    }

    /// Drives timers: handshake deadline, heartbeat timeout, heartbeat sending. Call when
    /// [`poll_timeout`](Self::poll_timeout) has passed (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnError> {
        match self.state {
            ConnState::Closed => Ok(()),
            ConnState::Handshaking if now >= self.hello_deadline && !self.outbound => {
                Err(self.fail(ConnError::HelloTimeout))
            }
            ConnState::Handshaking | ConnState::Confirming => {
                if now >= self.handshake_deadline {
                    Err(self.fail(ConnError::HandshakeTimeout))
                } else {
                    Ok(())
                }
            }
            ConnState::Established => {
                if now >= self.last_recv + self.heartbeat_timeout {
                    return Err(self.fail(ConnError::HeartbeatTimeout));
                }
                if now >= self.next_heartbeat {
                    let seq = self.heartbeat_seq;
                    // A full queue means the stream is stuck; the peer's timeout will tell.
                    if self
                        .queue_message(&Message::Heartbeat { seq }, true)
                        .is_ok()
                    {
                        self.heartbeat_seq += 1;
                    }
                    self.next_heartbeat = now + self.heartbeat_interval;
                }
                Ok(())
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next needs calling; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ConnState::Closed => None,
            ConnState::Handshaking => Some(self.hello_deadline.min(self.handshake_deadline)),
            ConnState::Confirming => Some(self.handshake_deadline),
            ConnState::Established => Some(
                self.next_heartbeat
                    .min(self.last_recv + self.heartbeat_timeout),
            ),
        }
    }

    /// Where the connection is.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The peer's hello, once accepted (from [`ConnState::Confirming`] on).
    pub fn remote(&self) -> Option<&RemoteHello> {
        self.remote.as_ref()
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// True if we dialled.
    pub fn outbound(&self) -> bool {
        self.outbound
    }

    /// The peer's TCP address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// True if a password is in use (the session keys depend on it).
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// The error that closed the connection, if one did.
    pub fn error(&self) -> Option<ConnError> {
        self.error
    }

    /// Received gossip messages dropped because the output queue was full.
    pub fn dropped_gossip(&self) -> u64 {
        self.dropped_gossip
    }

    /// Hands the sleeve datagram keys for this peer to the datapath (once; `None` before
    /// the peer's hello or after they were taken).
    pub fn take_datagram_keys(&mut self) -> Option<(DatagramSealer, DatagramOpener)> {
        self.datagram_keys.take()
    }

    /// Closes the connection from our side, queueing a close frame with `reason`
    /// (`CLOSE_REASON_*`) when a session exists. Flush `poll_transmit`, then drop the stream.
    pub fn close(&mut self, reason: u8) {
        if self.state == ConnState::Closed {
            return;
        }
        // Best effort: before the peer's hello there is no key to seal with.
        let _ = self.queue_message(&Message::Close { reason }, true);
        self.state = ConnState::Closed;
    }
}

/// The longest prefix of `s` of at most `len_max` bytes that ends on a char boundary.
fn truncate_str(s: &str, len_max: usize) -> &str {
    let mut end = s.len().min(len_max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod cipher_tests;
#[cfg(test)]
mod tests;
