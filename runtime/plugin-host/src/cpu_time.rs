//! The CPU bound of one guest call: CPU time of the thread running the guest, read at
//! the start of the call and at every epoch tick while it runs, with a much larger
//! wall-clock bound as a safety net for a call that is descheduled for good.
//!
//! Wall-clock time alone is the wrong measure on a shared machine: a plugin that needs
//! 55 ms of CPU failed a 100 ms bound every time while another topic's looping plugin
//! held the same cores. The clock sits behind [`ThreadCpuClock`] so tests can drive it.
//!
//! What this does not do: tick. The engine's epoch ticker thread does, and wasmtime
//! calls [`CallBudget::check`] (through the store's epoch deadline callback) on the
//! guest's own thread at each tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads the CPU time the calling thread has used.
///
/// Contract for implementations:
/// - it is called on the thread running the guest (at the start of a call, and at each
///   epoch tick during it), and measures that thread;
/// - on one thread, a later reading is never smaller than an earlier one;
/// - `None` means the clock cannot be read; the call is then measured by wall-clock
///   time since its start instead, which is never less than its CPU time.
pub trait ThreadCpuClock: Send + Sync {
    fn thread_cpu_time(&self) -> Option<Duration>;
}

/// The operating system's per-thread CPU clock (`CLOCK_THREAD_CPUTIME_ID`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsThreadCpuClock;

impl ThreadCpuClock for OsThreadCpuClock {
    #[cfg(unix)]
    fn thread_cpu_time(&self) -> Option<Duration> {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a pointer to a live local
        // and has no other preconditions.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        if rc != 0 {
            return None;
        }
        Some(Duration::new(
            u64::try_from(now.tv_sec).ok()?,
            u32::try_from(now.tv_nsec).ok()?,
        ))
    }

    #[cfg(not(unix))]
    fn thread_cpu_time(&self) -> Option<Duration> {
        None
    }
}

/// Which bound a call exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    /// Its thread's CPU time passed `call_time_max`.
    CpuTime,
    /// Its wall-clock time passed the safety net.
    WallTime,
}

/// The bounds of the call a store is running, and where it started. One per store;
/// [`CallBudget::start`] before every entry into the guest.
pub(crate) struct CallBudget {
    clock: Arc<dyn ThreadCpuClock>,
    cpu_time_max: Duration,
    wall_time_max: Duration,
    started_cpu: Option<Duration>,
    started_wall: Instant,
    /// Set when [`CallBudget::check`] ended the call; read to name its error.
    pub(crate) exceeded: Option<Exceeded>,
}

impl CallBudget {
    pub(crate) fn new(
        clock: Arc<dyn ThreadCpuClock>,
        cpu_time_max: Duration,
        wall_time_max: Duration,
    ) -> Self {
        Self {
            clock,
            cpu_time_max,
            wall_time_max,
            started_cpu: None,
            started_wall: Instant::now(),
            exceeded: None,
        }
    }

    /// A call starts now, on this thread.
    pub(crate) fn start(&mut self) {
        self.started_wall = Instant::now();
        self.started_cpu = self.clock.thread_cpu_time();
        self.exceeded = None;
    }

    /// At an epoch tick, on the guest's thread: whether the call must end.
    pub(crate) fn check(&mut self) -> Option<Exceeded> {
        let wall = self.started_wall.elapsed();
        let exceeded = if wall > self.wall_time_max {
            Some(Exceeded::WallTime)
        } else {
            let cpu = match (self.started_cpu, self.clock.thread_cpu_time()) {
                (Some(start), Some(now)) => now.saturating_sub(start),
                // No CPU clock: wall-clock time is an upper bound of CPU time.
                _ => wall,
            };
            (cpu > self.cpu_time_max).then_some(Exceeded::CpuTime)
        };
        self.exceeded = exceeded;
        exceeded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enough iterations to use far more than one tick of any CPU clock.
    const SPINS_MAX: u64 = 1 << 32;

    #[cfg(unix)]
    #[test]
    fn the_os_clock_counts_this_threads_work_and_never_goes_back() {
        let clock = OsThreadCpuClock;
        let before = clock.thread_cpu_time().expect("readable on unix");
        // Work until the clock moves: it counts this thread's CPU time.
        let moved = (0..SPINS_MAX).find_map(|spin| {
            std::hint::black_box(spin);
            let now = clock.thread_cpu_time().expect("readable");
            assert!(now >= before, "the clock went back");
            (now > before).then_some(now)
        });
        assert!(moved.is_some(), "{SPINS_MAX} spins used no CPU time");
    }
}
