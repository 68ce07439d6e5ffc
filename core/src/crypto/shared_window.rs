//! A [`ReplayWindow`] several datapath threads share: the sleeve's queues each receive
//! some of one peer's datagrams (a multi-queue sleeve spreads them by CPU), and a counter
//! must still be accepted once over all of them.
//!
//! The bitmap is the one of [`ReplayWindow`] (same rules, same length) made of atomics,
//! and a test-and-test-and-set spin lock orders each check-and-update (held for tens of
//! nanoseconds: no I/O, no allocation inside). Atomics under a lock instead of an
//! `UnsafeCell`: the core stays free of `unsafe` and `no_std`. Opening (the expensive part)
//! happens outside the lock.

use super::CryptoError;
use super::REPLAY_WINDOW_LEN_COUNTERS;
use super::replay::{WINDOW_WORDS, WORD_BITS};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A replay window behind a spin lock, for one peer's datagrams received on several
/// threads: accepts each counter once over all of them, with [`super::ReplayWindow`]'s rules.
pub struct SharedReplayWindow {
    locked: AtomicBool,
    /// Some counter was accepted (then `highest` holds the highest).
    any: AtomicBool,
    highest: AtomicU64,
    bits: [AtomicU64; WINDOW_WORDS],
}

impl Default for SharedReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// The window's contents while the lock is held (every access `Relaxed`: the lock's
/// Acquire/Release orders them).
struct Held<'a>(&'a SharedReplayWindow);

impl Held<'_> {
    fn highest(&self) -> Option<u64> {
        let w = self.0;
        w.any
            .load(Ordering::Relaxed)
            .then(|| w.highest.load(Ordering::Relaxed))
    }

    fn slot(counter: u64) -> (usize, u64) {
        let idx = counter % REPLAY_WINDOW_LEN_COUNTERS;
        ((idx / WORD_BITS) as usize, 1u64 << (idx % WORD_BITS))
    }

    fn bit(&self, counter: u64) -> bool {
        let (word, mask) = Self::slot(counter);
        self.0.bits[word].load(Ordering::Relaxed) & mask != 0
    }

    fn set_bit(&self, counter: u64, on: bool) {
        let (word, mask) = Self::slot(counter);
        let w = &self.0.bits[word];
        let v = w.load(Ordering::Relaxed);
        w.store(if on { v | mask } else { v & !mask }, Ordering::Relaxed);
    }

    fn check(&self, counter: u64) -> Result<(), CryptoError> {
        let Some(highest) = self.highest() else {
            return Ok(());
        };
        if counter > highest {
            return Ok(());
        }
        if highest - counter >= REPLAY_WINDOW_LEN_COUNTERS || self.bit(counter) {
            return Err(CryptoError::Replayed);
        }
        Ok(())
    }

    fn update(&self, counter: u64) -> Result<(), CryptoError> {
        self.check(counter)?;
        match self.highest() {
            Some(highest) if counter <= highest => {}
            Some(highest) => {
                if counter - highest >= REPLAY_WINDOW_LEN_COUNTERS {
                    for w in &self.0.bits {
                        w.store(0, Ordering::Relaxed);
                    }
                } else {
                    // Bounded by the window length, as in ReplayWindow::update.
                    for c in highest + 1..=counter {
                        self.set_bit(c, false);
                    }
                }
                self.0.highest.store(counter, Ordering::Relaxed);
            }
            None => {
                self.0.highest.store(counter, Ordering::Relaxed);
                self.0.any.store(true, Ordering::Relaxed);
            }
        }
        self.set_bit(counter, true);
        Ok(())
    }
}

impl SharedReplayWindow {
    /// An empty window: every counter is new.
    pub fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
            any: AtomicBool::new(false),
            highest: AtomicU64::new(0),
            bits: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&Held<'_>) -> R) -> R {
        // Test-and-test-and-set: spin on a plain load so waiting does not bounce the line.
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
        let r = f(&Held(self));
        self.locked.store(false, Ordering::Release);
        r
    }

    /// `Ok` if `counter` was not accepted yet and is not too old; changes nothing.
    pub fn check(&self, counter: u64) -> Result<(), CryptoError> {
        self.with(|w| w.check(counter))
    }

    /// Records `counter` as accepted, atomically over all threads: of several threads
    /// updating with one counter, exactly one gets `Ok`. Fails (changing nothing) if it
    /// was accepted already or is too old.
    pub fn update(&self, counter: u64) -> Result<(), CryptoError> {
        self.with(|w| w.update(counter))
    }

    /// The highest accepted counter, if any.
    pub fn highest(&self) -> Option<u64> {
        self.with(|w| w.highest())
    }
}

impl core::fmt::Debug for SharedReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedReplayWindow")
            .field("highest", &self.highest())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    extern crate std;
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::sync::atomic::AtomicU64;

    #[test]
    fn threads_updating_the_same_counters_accept_each_exactly_once() {
        const THREADS: u64 = 4;
        const COUNTERS: u64 = 20_000;
        let w = Arc::new(SharedReplayWindow::new());
        let accepted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (w, accepted) = (Arc::clone(&w), Arc::clone(&accepted));
                std::thread::spawn(move || {
                    // Every thread offers every counter, in a different order each, with
                    // the offsets kept inside the window so none is refused as too old.
                    for c in 0..COUNTERS {
                        let c = if t % 2 == 0 { c } else { c ^ 7 };
                        if w.update(c).is_ok() {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(accepted.load(Ordering::Relaxed), COUNTERS);
        assert_eq!(w.highest(), Some(COUNTERS - 1));
        assert_eq!(w.check(5), Err(CryptoError::Replayed));
        assert_eq!(w.check(COUNTERS), Ok(()));
    }

    #[test]
    fn follows_the_rules_of_the_single_thread_window() {
        // The same pseudo-random walk (jumps forward, back within and beyond the window,
        // repeats) through both windows: every answer the same.
        let (mut model, shared) = (
            crate::crypto::ReplayWindow::new(),
            SharedReplayWindow::new(),
        );
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut c: u64 = 1 << 40;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c = match x % 8 {
                0 => c + 1 + x % 64,
                1 => c + REPLAY_WINDOW_LEN_COUNTERS + x % 64,
                2 => c.saturating_sub(x % (2 * REPLAY_WINDOW_LEN_COUNTERS)),
                3 => c,
                _ => c.wrapping_add(x % 16).wrapping_sub(8),
            };
            assert_eq!(shared.check(c), model.check(c), "check {c}");
            assert_eq!(shared.update(c), model.update(c), "update {c}");
            assert_eq!(shared.highest(), model.highest());
        }
    }
}
