//! The critical v1 flaw: one xoshiro stream gave both the uid (sent in the clear) and the
//! ephemeral secrets, so one hello gave away every key. Now the router takes two sources:
//! the public seed (uid, jitter) and a key generator. These tests pin the separation.

use std::net::SocketAddr;
use weft_core::crypto::{ChaChaKeyRng, Psk};
use weft_core::peer::{PeerName, PeerUid};
use weft_core::router::{Config, Router, TRANSMIT_LEN_MIN};
use weft_core::time::Instant;
use weft_core::wire::handshake::Hello;

/// The uid and handshake public value of the hello a router sends on a new inbound stream.
fn first_hello(seed: u64, key_seed: u64, password: Option<&[u8]>) -> (PeerUid, [u8; 32]) {
    let mut config = Config::new(PeerName::from_u64(0x42), 6783);
    config.psk = password.map(Psk::from_password);
    let keys = Box::new(ChaChaKeyRng::for_simulation(key_seed));
    let mut r = Router::new(config, seed, keys, Instant::ZERO);
    let remote: SocketAddr = "10.0.0.9:40000".parse().unwrap();
    let conn = r.accept_stream(Instant::ZERO, remote);
    let mut buf = vec![0u8; TRANSMIT_LEN_MIN.max(4096)];
    let t = r
        .poll_transmit(Instant::ZERO, &mut buf)
        .expect("the hello goes out");
    assert_eq!(t.destination, weft_core::router::Destination::Stream(conn));
    let (hello, _) = Hello::parse(&buf[..t.len]).expect("a hello");
    (hello.uid, hello.public_key)
}

#[test]
fn keys_do_not_follow_the_public_stream() {
    for password in [None, Some(b"pw".as_slice())] {
        // Replaying the public stream (same seed, so the same uid and jitter) with another
        // key generator gives other keys: the uid says nothing about them.
        let (uid1, key1) = first_hello(1, 100, password);
        let (uid1b, key1b) = first_hello(1, 101, password);
        assert_eq!(uid1, uid1b, "the public stream replays");
        assert_ne!(key1, key1b, "but the keys come from the key generator");
        // And the other way: a different public stream leaves the keys as they were, so no
        // output of the public stream is an input to them.
        let (uid2, key2) = first_hello(2, 100, password);
        assert_ne!(uid1, uid2);
        assert_eq!(key1, key2, "keys depend on the key generator only");
    }
}
