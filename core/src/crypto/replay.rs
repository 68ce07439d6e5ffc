//! Sliding replay window for sleeve datagrams, which may arrive out of order or twice.

use super::CryptoError;

/// How many counters behind the highest one seen are still accepted (once each).
pub const REPLAY_WINDOW_LEN_COUNTERS: u64 = 8192;

pub(super) const WORD_BITS: u64 = 64;
pub(super) const WINDOW_WORDS: usize = (REPLAY_WINDOW_LEN_COUNTERS / WORD_BITS) as usize;

/// Remembers which of the last [`REPLAY_WINDOW_LEN_COUNTERS`] counters were accepted.
///
/// Bit `c % REPLAY_WINDOW_LEN_COUNTERS` of a ring bitmap stands for counter `c`, for `c`
/// within the window below `highest`. Sealed datagrams go through a
/// [`DatagramOpener`](super::DatagramOpener), whose tokens order the check, the opening and
/// the update; plain ones (nothing to authenticate) through [`update`](Self::update) alone.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// The highest accepted counter, `None` before the first.
    highest: Option<u64>,
    bits: [u64; WINDOW_WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: every counter is new.
    pub fn new() -> Self {
        Self {
            highest: None,
            bits: [0; WINDOW_WORDS],
        }
    }

    /// `Ok` if `counter` was not accepted yet and is not too old; [`CryptoError::Replayed`]
    /// otherwise. Does not change the window.
    pub fn check(&self, counter: u64) -> Result<(), CryptoError> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if counter > highest {
            return Ok(());
        }
        if highest - counter >= REPLAY_WINDOW_LEN_COUNTERS {
            return Err(CryptoError::Replayed);
        }
        if self.bit(counter) {
            Err(CryptoError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `counter` as accepted. Fails like [`check`](Self::check) (and changes
    /// nothing) if it was accepted already or is too old.
    pub fn update(&mut self, counter: u64) -> Result<(), CryptoError> {
        self.check(counter)?;
        match self.highest {
            Some(highest) if counter <= highest => {}
            Some(highest) => {
                let advance = counter - highest;
                if advance >= REPLAY_WINDOW_LEN_COUNTERS {
                    self.bits = [0; WINDOW_WORDS];
                } else {
                    // Clear the slots that now stand for the new counters highest+1..=counter.
                    // Bounded by the window length.
                    for c in highest + 1..=counter {
                        self.set_bit(c, false);
                    }
                }
                self.highest = Some(counter);
            }
            None => self.highest = Some(counter),
        }
        self.set_bit(counter, true);
        Ok(())
    }

    /// The highest accepted counter, if any.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    fn slot(counter: u64) -> (usize, u64) {
        let idx = counter % REPLAY_WINDOW_LEN_COUNTERS;
        ((idx / WORD_BITS) as usize, 1u64 << (idx % WORD_BITS))
    }

    fn bit(&self, counter: u64) -> bool {
        let (word, mask) = Self::slot(counter);
        self.bits.get(word).is_some_and(|w| w & mask != 0)
    }

    fn set_bit(&mut self, counter: u64, on: bool) {
        let (word, mask) = Self::slot(counter);
        if let Some(w) = self.bits.get_mut(word) {
            if on {
                *w |= mask;
            } else {
                *w &= !mask;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_counter_once_in_any_order() {
        let mut w = ReplayWindow::new();
        for c in [5u64, 3, 9, 4, 0, 1000] {
            assert_eq!(w.check(c), Ok(()), "counter {c}");
            assert_eq!(w.update(c), Ok(()));
            assert_eq!(w.check(c), Err(CryptoError::Replayed), "counter {c} twice");
            assert_eq!(w.update(c), Err(CryptoError::Replayed));
        }
        assert_eq!(w.highest(), Some(1000));
        assert_eq!(w.check(6), Ok(()));
    }

    #[test]
    fn rejects_counters_older_than_the_window() {
        let mut w = ReplayWindow::new();
        w.update(10_000).unwrap();
        assert_eq!(
            w.check(10_000 - REPLAY_WINDOW_LEN_COUNTERS),
            Err(CryptoError::Replayed)
        );
        assert_eq!(w.check(10_000 - REPLAY_WINDOW_LEN_COUNTERS + 1), Ok(()));
    }

    #[test]
    fn advancing_clears_stale_slots_that_alias_new_counters() {
        let mut w = ReplayWindow::new();
        w.update(1).unwrap();
        // 1 + window aliases slot of 1; after advancing there it must be accepted once.
        let alias = 1 + REPLAY_WINDOW_LEN_COUNTERS;
        w.update(alias - 1).unwrap();
        assert_eq!(w.check(alias), Ok(()));
        w.update(alias).unwrap();
        assert_eq!(w.check(alias), Err(CryptoError::Replayed));
        // A jump larger than the window forgets everything older.
        w.update(alias + 10 * REPLAY_WINDOW_LEN_COUNTERS).unwrap();
        assert_eq!(w.check(alias + 9 * REPLAY_WINDOW_LEN_COUNTERS + 1), Ok(()));
        assert_eq!(w.check(alias), Err(CryptoError::Replayed));
    }

    #[test]
    fn handles_counter_extremes_without_overflow() {
        let mut w = ReplayWindow::new();
        w.update(u64::MAX).unwrap();
        assert_eq!(w.check(u64::MAX), Err(CryptoError::Replayed));
        assert_eq!(w.check(0), Err(CryptoError::Replayed));
        assert_eq!(w.check(u64::MAX - 1), Ok(()));
    }
}
