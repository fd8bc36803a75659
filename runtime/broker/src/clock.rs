//! The broker's one clock seam: every reading of the time that decides something
//! (timestamps stored and sent, sessions, leases, retention, rate windows) comes from
//! a [`Clock`], so tests drive the broker's logic with a [`ManualClock`].
//!
//! Two readings, kept apart on purpose: wall-clock time, for what is stored or shown
//! (record timestamps, retention by age, offsets' commit times), and monotonic time,
//! for how long ago something happened here (a broker's lease on its leaderships).
//! Wall clocks jump and differ across hosts; nothing that compares two moments on
//! this broker reads them. Deadlines of asynchronous waits use tokio's timer, whose
//! own test clock (`tokio::time::pause`) is their seam.

use std::time::Instant;

/// Where the broker reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall-clock milliseconds since the Unix epoch (0 if the clock reads before it).
    fn now_ms(&self) -> i64;

    /// Milliseconds since this clock began; never goes back.
    fn monotonic_ms(&self) -> u64;

    /// [`Clock::now_ms`] as an unsigned count, for the controller's commands.
    fn now_ms_u64(&self) -> u64 {
        u64::try_from(self.now_ms()).unwrap_or(0)
    }
}

/// The operating system's clocks.
#[derive(Debug)]
pub struct SystemClock {
    started: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn monotonic_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
pub use manual::ManualClock;

#[cfg(test)]
mod manual {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    use super::Clock;

    /// A clock that moves only when told: both readings advance together by
    /// [`ManualClock::advance_ms`]; [`ManualClock::set_wall_ms`] jumps the wall clock
    /// alone, as an operator or NTP may.
    #[derive(Debug)]
    pub struct ManualClock {
        wall_ms: AtomicI64,
        monotonic_ms: AtomicU64,
    }

    impl ManualClock {
        /// A clock reading `wall_ms` on the wall and 0 monotonic.
        pub fn new(wall_ms: i64) -> Self {
            Self {
                wall_ms: AtomicI64::new(wall_ms),
                monotonic_ms: AtomicU64::new(0),
            }
        }

        pub fn advance_ms(&self, ms: u64) {
            self.monotonic_ms.fetch_add(ms, Ordering::AcqRel);
            self.wall_ms
                .fetch_add(i64::try_from(ms).unwrap_or(i64::MAX), Ordering::AcqRel);
        }

        pub fn set_wall_ms(&self, wall_ms: i64) {
            self.wall_ms.store(wall_ms, Ordering::Release);
        }
    }

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.wall_ms.load(Ordering::Acquire)
        }

        fn monotonic_ms(&self) -> u64 {
            self.monotonic_ms.load(Ordering::Acquire)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_wall_may_jump() {
        let clock = ManualClock::new(1_000);
        assert_eq!((clock.now_ms(), clock.monotonic_ms()), (1_000, 0));
        clock.advance_ms(250);
        assert_eq!((clock.now_ms(), clock.monotonic_ms()), (1_250, 250));
        clock.set_wall_ms(-5);
        assert_eq!((clock.now_ms(), clock.now_ms_u64()), (-5, 0));
        assert_eq!(
            clock.monotonic_ms(),
            250,
            "a wall jump moves no monotonic time"
        );
    }

    #[test]
    fn the_system_clock_never_goes_back() {
        let clock = SystemClock::new();
        let first = clock.monotonic_ms();
        assert!(clock.monotonic_ms() >= first);
        assert!(
            clock.now_ms() > 1_600_000_000_000,
            "wall clock reads after 2020"
        );
    }
}
