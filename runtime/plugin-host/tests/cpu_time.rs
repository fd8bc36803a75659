//! The per-call bound counts the CPU time of the guest's thread, not wall-clock time;
//! wall-clock time only ends a call through the far larger safety net.
//!
//! The fake clock makes these deterministic: a looping guest runs until the test
//! changes the CPU time it reports, so no outcome depends on how fast this machine is.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{module, records};
use quiver_plugin_host::sandbox::EPOCH_TICK;
use quiver_plugin_host::{Limits, PluginEngine, PluginError, ThreadCpuClock};

/// Loops forever: only the sandbox ends it.
const LOOP: &str =
    r#"(func (export "filter") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#;

/// Reports the CPU time the test sets, and counts how often it was read.
#[derive(Default)]
struct FakeClock {
    cpu_nanos: AtomicU64,
    reads: AtomicU64,
}

impl ThreadCpuClock for FakeClock {
    fn thread_cpu_time(&self) -> Option<Duration> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Some(Duration::from_nanos(self.cpu_nanos.load(Ordering::SeqCst)))
    }
}

/// How long the test waits for the sandbox to read the clock before giving up:
/// a bound on the test's own loop, far beyond the few ticks it needs.
const WAIT_MAX: Duration = Duration::from_secs(120);

#[test]
fn wall_time_past_call_time_max_does_not_end_a_call_whose_cpu_time_is_within_it() {
    let clock = Arc::new(FakeClock::default());
    let limits = Limits {
        call_time_max: Duration::from_millis(10),
        call_wall_time_max: Duration::from_secs(3600),
        ..Limits::default()
    };
    let engine = PluginEngine::with_cpu_clock(limits, clock.clone()).expect("engine");
    let plugin = engine.compile("loop", &module(LOOP)).expect("compiles");
    let mut instance = engine.instantiate(&plugin, &[]).expect("instance");

    // Ticks the call must survive: each is at least EPOCH_TICK after the one before,
    // so by the last the call has run for at least (TICKS - 1) * EPOCH_TICK of wall
    // time, several times call_time_max.
    const TICKS: u64 = 12;
    const _: () = assert!((TICKS as u128 - 1) * EPOCH_TICK.as_nanos() > 4 * 10_000_000);
    let returned = AtomicBool::new(false);
    let started = Instant::now();
    let reads_before = clock.reads.load(Ordering::SeqCst);
    let outcome = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            // Two reads start the alloc and filter calls; the rest are ticks.
            let target = reads_before + 2 + TICKS;
            // Until the ticks were seen, or the call ended (which fails the test).
            while clock.reads.load(Ordering::SeqCst) < target && !returned.load(Ordering::SeqCst) {
                assert!(
                    started.elapsed() < WAIT_MAX,
                    "the sandbox stopped reading the clock"
                );
                std::thread::sleep(EPOCH_TICK);
            }
            let still_running = !returned.load(Ordering::SeqCst);
            let wall = started.elapsed();
            // Now the call's CPU time passes its bound: the next tick ends it.
            clock.cpu_nanos.store(3_600_000_000_000, Ordering::SeqCst);
            (still_running, wall)
        });
        let outcome = instance.run(&records(2));
        returned.store(true, Ordering::SeqCst);
        let (still_running, wall) = watcher.join().expect("watcher");
        (outcome, still_running, wall)
    });
    let (outcome, still_running, wall) = outcome;
    assert!(
        still_running,
        "the call ran on through {TICKS} ticks while its CPU time stayed at 0"
    );
    assert!(
        wall > limits.call_time_max,
        "{wall:?} of wall time passed before its CPU time moved"
    );
    assert_eq!(
        outcome.err(),
        Some(PluginError::Timeout(limits.call_time_max)),
        "once its CPU time passed call_time_max, the call was ended"
    );
}

#[test]
fn a_call_whose_cpu_time_passes_call_time_max_is_ended_at_the_next_tick() {
    /// Once armed, each reading is a second of CPU time after the one before.
    #[derive(Default)]
    struct Racing {
        armed: AtomicBool,
        seconds: AtomicU64,
    }
    impl ThreadCpuClock for Racing {
        fn thread_cpu_time(&self) -> Option<Duration> {
            if !self.armed.load(Ordering::SeqCst) {
                return Some(Duration::ZERO);
            }
            Some(Duration::from_secs(
                self.seconds.fetch_add(1, Ordering::SeqCst),
            ))
        }
    }
    let limits = Limits {
        call_time_max: Duration::from_millis(100),
        call_wall_time_max: Duration::from_secs(3600),
        ..Limits::default()
    };
    let clock = Arc::new(Racing::default());
    let engine = PluginEngine::with_cpu_clock(limits, clock.clone()).expect("engine");
    let plugin = engine.compile("loop", &module(LOOP)).expect("compiles");
    let mut instance = engine.instantiate(&plugin, &[]).expect("instance");
    clock.armed.store(true, Ordering::SeqCst);
    assert_eq!(
        instance.run(&records(2)).err(),
        Some(PluginError::Timeout(limits.call_time_max))
    );
    // The start of alloc, the start of filter, and the one tick that ended the call;
    // or the start of alloc and a tick that came during alloc and ended it there.
    let reads = clock.seconds.load(Ordering::SeqCst);
    assert!((2..=3).contains(&reads), "{reads} readings");
}

#[test]
fn the_wall_clock_safety_net_ends_a_call_that_gets_no_cpu_time() {
    let clock = Arc::new(FakeClock::default());
    let limits = Limits {
        call_time_max: Duration::from_millis(1),
        // Far above what instantiating and the ABI version call take, even on a
        // loaded machine: they run under this net too.
        call_wall_time_max: Duration::from_millis(500),
        ..Limits::default()
    };
    assert_eq!(limits.call_wall_time_bound(), Duration::from_millis(500));
    let engine = PluginEngine::with_cpu_clock(limits, clock).expect("engine");
    let plugin = engine.compile("loop", &module(LOOP)).expect("compiles");
    let mut instance = engine.instantiate(&plugin, &[]).expect("instance");
    let err = instance.run(&records(2)).expect_err("ended");
    assert_eq!(err, PluginError::WallTimeout(Duration::from_millis(500)));
    assert_eq!(err.kind(), "timeout");
    assert_eq!(
        err.to_string(),
        "plugin call ran for more than 500ms of wall-clock time (call_wall_time_max)"
    );
}

#[test]
fn the_safety_net_is_never_tighter_than_ten_times_the_cpu_bound() {
    let limits = Limits {
        call_time_max: Duration::from_secs(60),
        ..Limits::default()
    };
    assert_eq!(limits.call_wall_time_bound(), Duration::from_secs(600));
    assert_eq!(
        Limits::default().call_wall_time_bound(),
        Limits::default().call_wall_time_max
    );
}

#[test]
fn a_looping_plugin_is_ended_by_its_cpu_time_on_the_real_clock() {
    let limits = Limits {
        call_time_max: Duration::from_millis(20),
        ..Limits::default()
    };
    let engine = PluginEngine::new(limits).expect("engine");
    let plugin = engine.compile("loop", &module(LOOP)).expect("compiles");
    let mut instance = engine.instantiate(&plugin, &[]).expect("instance");
    let err = instance.run(&records(2)).expect_err("ended");
    assert_eq!(err, PluginError::Timeout(Duration::from_millis(20)));
    assert_eq!(
        err.to_string(),
        "plugin exceeded its CPU time of 20ms (call_time_max)"
    );
    // A fresh instance of the same engine serves again.
    let good = engine
        .compile("keep-even", &module(&common::keep_even()))
        .expect("compiles");
    let mut fresh = engine.instantiate(&good, &[]).expect("instance");
    assert!(fresh.run(&records(2)).is_ok());
}
