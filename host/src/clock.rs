//! The host's one clock: the core's [`Instant`] (microseconds since this router started)
//! for the driver, the sleeve datapath and the fast path alike, and the wall-clock time
//! that start stands for. Made once at start-up and copied to each.

use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};
use weft_core::time::Instant;

/// Monotonic time since start-up, as the core counts it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HostClock {
    origin: StdInstant,
    unix_origin_micros: u64,
}

impl HostClock {
    /// A clock whose zero is now.
    pub(crate) fn start() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Self {
            origin: StdInstant::now(),
            unix_origin_micros: unix,
        }
    }

    /// The core's time now.
    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// The std instant a core time stands for (for timers).
    pub(crate) fn to_std(self, t: Instant) -> StdInstant {
        self.origin + Duration::from_micros(t.total_micros())
    }

    /// Unix time in microseconds at [`Instant::ZERO`].
    pub(crate) fn unix_origin_micros(&self) -> u64 {
        self.unix_origin_micros
    }

    /// Unix time in milliseconds at [`Instant::ZERO`].
    pub(crate) fn unix_origin_ms(&self) -> u64 {
        self.unix_origin_micros / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_time_and_std_time_agree() {
        let c = HostClock::start();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(5));
        let b = c.now();
        assert!(b.total_micros() >= a.total_micros() + 5_000);
        let back = c.to_std(b);
        assert!(back <= StdInstant::now());
        assert!(c.unix_origin_ms() > 1_700_000_000_000, "a real wall clock");
    }
}
