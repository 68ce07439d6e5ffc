//! Opening one peer's sleeve datagrams: replay check, decryption, then recording the
//! counter, in that order because each step takes the token the one before returns.
//!
//! [`DatagramOpener::check`] gives a [`Fresh`] counter, [`DatagramOpener::open`] spends it
//! and gives an [`Opened`] datagram, [`DatagramOpener::record`] spends that and gives the
//! plaintext length. Neither token can be made outside this module, so a counter is
//! opened only after its check and recorded only after it authenticated (a forged counter
//! never moves the window). Recording `&mut` and opening `&self` let one batch be opened
//! on several threads ([`OpenedSlots`]) and recorded in arrival order.

use super::aead::Cipher;
use super::session::open;
use super::{CipherSuite, CryptoError, SharedReplayWindow};
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

/// A counter the replay window has not accepted yet, from [`DatagramOpener::check`]; the
/// only way to [`open`](DatagramOpener::open) a datagram, which cannot be done unchecked:
///
/// ```compile_fail,E0308
/// # use weft_core::crypto::DatagramOpener;
/// fn open_unchecked(o: &DatagramOpener, counter: u64, sealed: &mut [u8]) {
///     let _ = o.open(counter, b"", sealed);
/// }
/// ```
#[must_use = "a checked counter is for opening the datagram that carries it"]
#[derive(Debug, PartialEq, Eq)]
pub struct Fresh(u64);

impl Fresh {
    /// The counter checked.
    pub fn counter(&self) -> u64 {
        self.0
    }
}

/// A datagram that authenticated under a [`Fresh`] counter, from [`DatagramOpener::open`];
/// the only thing [`DatagramOpener::record`] takes. Its plaintext length comes from
/// `record`, so the plaintext is used after the counter is recorded.
///
/// A counter cannot be recorded without opening first:
///
/// ```compile_fail,E0308
/// # use weft_core::crypto::DatagramOpener;
/// fn record_unopened(o: &mut DatagramOpener, counter: u64) {
///     let fresh = o.check(counter).unwrap();
///     let _ = o.record(fresh);
/// }
/// ```
///
/// nor an `Opened` made by hand:
///
/// ```compile_fail,E0423
/// # use weft_core::crypto::{DatagramOpener, Opened};
/// fn record_forged(o: &mut DatagramOpener, counter: u64) {
///     let _ = o.record(Opened(counter, 0));
/// }
/// ```
#[must_use = "an opened datagram's counter must be recorded before its plaintext is used"]
#[derive(Debug, PartialEq, Eq)]
pub struct Opened(u64, usize);

impl Opened {
    /// The counter it authenticated under.
    pub fn counter(&self) -> u64 {
        self.0
    }
}

/// Opens one peer's sleeve datagrams in any order, each counter once.
///
/// Clones share the key and the replay window: the queues of a multi-queue sleeve each
/// hold one and open the datagrams they receive, and a counter is still accepted once
/// over all of them ([`SharedReplayWindow`]).
///
/// ```
/// use weft_core::crypto::{ChaChaKeyRng, Handshake};
/// let mut rng = ChaChaKeyRng::for_simulation(1);
/// let (a, b) = (Handshake::start(&mut rng, None), Handshake::start(&mut rng, None));
/// let (pa, pb) = (a.public_bytes(), b.public_bytes());
/// let mut ours = a.finish(pb, true).unwrap();
/// let mut theirs = b.finish(pa, false).unwrap();
/// let mut buf = [0u8; 2 + weft_core::crypto::TAG_LEN_BYTES];
/// buf[..2].copy_from_slice(b"hi");
/// let (counter, len) = ours.datagram_sealer.seal_in_place(b"hdr", &mut buf, 2).unwrap();
///
/// let o = &mut theirs.datagram_opener;
/// let fresh = o.check(counter).unwrap();
/// let opened = o.open(fresh, b"hdr", &mut buf[..len]).unwrap();
/// let plain_len = o.record(opened).unwrap();
/// assert_eq!(&buf[..plain_len], b"hi");
/// assert!(o.check(counter).is_err(), "each counter once");
/// ```
#[derive(Clone)]
pub struct DatagramOpener {
    cipher: Arc<Cipher>,
    window: Arc<SharedReplayWindow>,
}

impl DatagramOpener {
    pub(super) fn new(cipher: Cipher) -> Self {
        Self {
            cipher: Arc::new(cipher),
            window: Arc::new(SharedReplayWindow::new()),
        }
    }

    /// The AEAD this opener expects.
    pub fn suite(&self) -> CipherSuite {
        self.cipher.suite()
    }

    /// [`check`](Self::check), [`open`](Self::open) and [`record`](Self::record) in one:
    /// decrypts `sealed` (ciphertext then tag) in place and returns the plaintext length.
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        sealed: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let fresh = self.check(counter)?;
        let opened = self.open(fresh, aad, sealed)?;
        self.record(opened)
    }

    /// Call first, before spending effort on a datagram: its counter as [`Fresh`], or
    /// [`CryptoError::Replayed`] if it was accepted already or is too old. Changes nothing.
    pub fn check(&self, counter: u64) -> Result<Fresh, CryptoError> {
        self.window.check(counter).map(|()| Fresh(counter))
    }

    /// Decrypts `sealed` in place under the `fresh` counter ([`CryptoError::Tampered`] if
    /// it does not authenticate). Records nothing and takes `&self`: the datagrams of one
    /// batch may be opened in parallel. [`record`](Self::record) the result in arrival
    /// order.
    pub fn open(&self, fresh: Fresh, aad: &[u8], sealed: &mut [u8]) -> Result<Opened, CryptoError> {
        let len = open(&self.cipher, fresh.0, aad, sealed)?;
        Ok(Opened(fresh.0, len))
    }

    /// Records an opened datagram's counter and returns its plaintext length (the
    /// plaintext is `sealed[..len]`); [`CryptoError::Replayed`] if the counter was
    /// recorded since its check (e.g. the same datagram twice in one batch, or on two
    /// queues at once).
    pub fn record(&self, opened: Opened) -> Result<usize, CryptoError> {
        self.window.update(opened.0).map(|()| opened.1)
    }

    /// As [`open`](Self::open) with the [`Fresh`] counter in slot `i` of `slots` (`&`: may
    /// be called for every slot at once, on several threads); the result waits in the
    /// slot for [`OpenedSlots::take`]. Does nothing for an empty slot.
    pub fn open_in_slot(&self, slots: &OpenedSlots, i: usize, aad: &[u8], sealed: &mut [u8]) {
        let Some(fresh) = slots.fresh.get(i).and_then(Option::as_ref) else {
            return;
        };
        if let Ok(len) = open(&self.cipher, fresh.0, aad, sealed) {
            slots.lens[i].store(len, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for DatagramOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramOpener")
            .field("window", &self.window.highest())
            .finish_non_exhaustive()
    }
}

/// Most datagrams in one [`OpenedSlots`].
pub const OPENED_SLOTS_MAX: usize = 64;

/// The datagrams of one batch between their check and their record: [`Fresh`] counters
/// put in by index, opened together ([`DatagramOpener::open_in_slot`], perhaps on several
/// threads), and taken out as [`Opened`] tokens in arrival order.
#[derive(Debug)]
pub struct OpenedSlots {
    fresh: [Option<Fresh>; OPENED_SLOTS_MAX],
    /// Plaintext length per slot once it opened; `NOT_OPENED` before.
    lens: [AtomicUsize; OPENED_SLOTS_MAX],
}

const NOT_OPENED: usize = usize::MAX;

impl Default for OpenedSlots {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenedSlots {
    /// Empty slots.
    pub fn new() -> Self {
        Self {
            fresh: core::array::from_fn(|_| None),
            lens: core::array::from_fn(|_| AtomicUsize::new(NOT_OPENED)),
        }
    }

    /// Puts datagram `i`'s checked counter in its slot; gives it back if `i` is not below
    /// [`OPENED_SLOTS_MAX`].
    pub fn insert(&mut self, i: usize, fresh: Fresh) -> Result<(), Fresh> {
        match self.fresh.get_mut(i) {
            Some(slot) => {
                *slot = Some(fresh);
                *self.lens[i].get_mut() = NOT_OPENED;
                Ok(())
            }
            None => Err(fresh),
        }
    }

    /// Empties slot `i`: `None` if nothing was put in it, else the [`Opened`] datagram or
    /// [`CryptoError::Tampered`] if it did not open.
    pub fn take(&mut self, i: usize) -> Option<Result<Opened, CryptoError>> {
        let fresh = self.fresh.get_mut(i)?.take()?;
        Some(
            match core::mem::replace(self.lens[i].get_mut(), NOT_OPENED) {
                NOT_OPENED => Err(CryptoError::Tampered),
                len => Ok(Opened(fresh.0, len)),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{ChaChaKeyRng, Handshake, KeyRng, SessionKeys, TAG_LEN_BYTES};

    fn pair(rng: &mut dyn KeyRng) -> (SessionKeys, SessionKeys) {
        let a = Handshake::start(rng, None);
        let b = Handshake::start(rng, None);
        let (pa, pb) = (a.public_bytes(), b.public_bytes());
        (a.finish(pb, true).unwrap(), b.finish(pa, false).unwrap())
    }

    fn sealed(keys: &mut SessionKeys, byte: u8) -> (u64, [u8; 1 + TAG_LEN_BYTES]) {
        let mut buf = [byte; 1 + TAG_LEN_BYTES];
        let (c, _) = keys
            .datagram_sealer
            .seal_in_place(b"h", &mut buf, 1)
            .unwrap();
        (c, buf)
    }

    #[test]
    fn check_open_record_accepts_a_counter_once_and_forgeries_never() {
        let (mut a, mut b) = pair(&mut ChaChaKeyRng::for_simulation(7));
        let o = &mut b.datagram_opener;
        let (c, mut buf) = sealed(&mut a, 5);
        let fresh = o.check(c).unwrap();
        assert_eq!(fresh.counter(), c);
        let opened = o.open(fresh, b"h", &mut buf).unwrap();
        assert_eq!(opened.counter(), c);
        // Opened, not recorded: the window still takes it.
        assert!(o.check(c).is_ok());
        assert_eq!(o.record(opened), Ok(1));
        assert_eq!(buf[0], 5);
        assert_eq!(o.check(c), Err(CryptoError::Replayed));
        // Two checks of one counter before either is recorded: only one records.
        let (c, buf) = sealed(&mut a, 6);
        let (mut x, mut y) = (buf, buf);
        let first = o.open(o.check(c).unwrap(), b"h", &mut x).unwrap();
        let second = o.open(o.check(c).unwrap(), b"h", &mut y).unwrap();
        assert_eq!(o.record(first), Ok(1));
        assert_eq!(o.record(second), Err(CryptoError::Replayed));
        // A forgery with a fresh counter does not open, so it cannot be recorded.
        let mut forged = [0u8; 1 + TAG_LEN_BYTES];
        let fresh = o.check(100).unwrap();
        assert_eq!(o.open(fresh, b"h", &mut forged), Err(CryptoError::Tampered));
        assert!(o.check(100).is_ok());
    }

    #[test]
    fn slots_give_back_what_opened_in_them() {
        let (mut a, mut b) = pair(&mut ChaChaKeyRng::for_simulation(8));
        let o = &mut b.datagram_opener;
        let mut bufs = [sealed(&mut a, 1), sealed(&mut a, 2), sealed(&mut a, 3)];
        bufs[1].1[0] ^= 1;
        let mut slots = OpenedSlots::new();
        for (i, (c, _)) in bufs.iter().enumerate().skip(1) {
            slots.insert(i, o.check(*c).unwrap()).unwrap();
        }
        let out_of_range = slots.insert(OPENED_SLOTS_MAX, o.check(9).unwrap());
        assert_eq!(out_of_range, Err(Fresh(9)));
        for (i, (_, buf)) in bufs.iter_mut().enumerate() {
            o.open_in_slot(&slots, i, b"h", buf);
        }
        assert_eq!(slots.take(0), None, "nothing put in slot 0");
        assert_eq!(slots.take(1), Some(Err(CryptoError::Tampered)));
        let opened = slots.take(2).unwrap().unwrap();
        assert_eq!(opened.counter(), bufs[2].0);
        assert_eq!(o.record(opened), Ok(1));
        assert_eq!(bufs[2].1[0], 3);
        assert_eq!(slots.take(2), None, "taken once");
    }
}
