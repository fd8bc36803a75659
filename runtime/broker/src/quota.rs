//! Client quotas (Kafka's `ClientQuotaManager`): each principal's produce bytes, fetch
//! bytes and request-handling time are measured over a sliding window, and a principal
//! over its quota is throttled for as long as it takes its rate to fall back to the
//! quota. Sans-IO: callers pass the time in, so tests drive it with a manual clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Length of one sample of a rate window (Kafka's `quota.window.size.seconds`).
pub const QUOTA_SAMPLE_MS: u64 = 1_000;
/// Samples in a rate window (Kafka's `quota.window.num`).
pub const QUOTA_SAMPLES: usize = 11;
/// The longest one answer is held back: a rate far over its quota is brought back
/// over several answers, not by one very long wait.
pub const QUOTA_THROTTLE_MAX: Duration =
    Duration::from_secs(QUOTA_SAMPLE_MS * QUOTA_SAMPLES as u64 / 1_000);

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    ProduceBytes,
    FetchBytes,
    /// Milliseconds spent handling the principal's requests, against a percent of one
    /// core (a quota of 25 allows 250 ms per second).
    RequestTime,
}

impl QuotaKind {
    /// The label in `quiver_throttle_seconds_total`.
    pub const fn name(self) -> &'static str {
        match self {
            QuotaKind::ProduceBytes => "produce",
            QuotaKind::FetchBytes => "fetch",
            QuotaKind::RequestTime => "request",
        }
    }
}

/// Amounts recorded over the last [`QUOTA_SAMPLES`] samples.
#[derive(Debug, Default)]
pub struct RateWindow {
    /// `(sample start, amount)`, oldest first.
    samples: VecDeque<(u64, f64)>,
}

impl RateWindow {
    /// Adds `amount` at `now_ms`.
    pub fn record(&mut self, now_ms: u64, amount: f64) {
        let start = now_ms - now_ms % QUOTA_SAMPLE_MS;
        match self.samples.back_mut() {
            Some((at, total)) if *at == start => *total += amount,
            _ => self.samples.push_back((start, amount)),
        }
        let horizon = start.saturating_sub(QUOTA_SAMPLE_MS * (QUOTA_SAMPLES as u64 - 1));
        while self.samples.front().is_some_and(|(at, _)| *at < horizon) {
            self.samples.pop_front();
        }
    }

    /// How long the principal must wait for the window's rate to be `quota` per
    /// second: the time its recorded amount would take at the quota, less the time
    /// the window covers (its samples up to the end of the current one, and at least
    /// the full window, as Kafka counts, so one burst after a quiet spell is not
    /// throttled as if the window were short).
    pub fn throttle(&self, now_ms: u64, quota_per_sec: f64) -> Duration {
        let Some((oldest, _)) = self.samples.front() else {
            return Duration::ZERO;
        };
        let total: f64 = self.samples.iter().map(|(_, amount)| amount).sum();
        let window_ms = QUOTA_SAMPLE_MS * (QUOTA_SAMPLES as u64 - 1);
        let elapsed_ms = (now_ms.saturating_sub(*oldest) + QUOTA_SAMPLE_MS).max(window_ms) as f64;
        let needed_ms = total / quota_per_sec * 1_000.0;
        if needed_ms <= elapsed_ms {
            return Duration::ZERO;
        }
        Duration::from_millis((needed_ms - elapsed_ms) as u64).min(QUOTA_THROTTLE_MAX)
    }
}

/// Every principal's windows, and until when each throttled principal's requests are
/// held back. Principals are authenticated names (or the one anonymous principal), so
/// a client cannot grow the maps with names of its own.
#[derive(Default)]
pub struct QuotaMeter {
    windows: Mutex<HashMap<(String, QuotaKind), RateWindow>>,
    held_until_ms: Mutex<HashMap<String, u64>>,
    /// Whether any principal may be held: every request asks, and without quotas none
    /// is, so the common case takes no lock.
    any_held: std::sync::atomic::AtomicBool,
}

impl QuotaMeter {
    /// Records `amount` of `kind` for `principal` at `now_ms` and returns how long to
    /// hold back its answer under `quota_per_sec` (`None`: no quota, nothing kept).
    pub fn charge(
        &self,
        principal: &str,
        kind: QuotaKind,
        amount: f64,
        quota_per_sec: Option<f64>,
        now_ms: u64,
    ) -> Duration {
        let Some(quota) = quota_per_sec.filter(|q| *q > 0.0) else {
            return Duration::ZERO;
        };
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = windows.entry((principal.to_owned(), kind)).or_default();
        window.record(now_ms, amount);
        let throttle = window.throttle(now_ms, quota);
        drop(windows);
        if !throttle.is_zero() {
            let until = now_ms + throttle.as_millis() as u64;
            let mut held = self
                .held_until_ms
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = held.entry(principal.to_owned()).or_insert(0);
            *entry = (*entry).max(until);
            self.any_held
                .store(true, std::sync::atomic::Ordering::Release);
        }
        throttle
    }

    /// How long `principal`'s next request waits, as of `now_ms`: what is left of its
    /// last throttle (Kafka mutes a throttled client's channel likewise, so a client
    /// that ignores the throttle time in its answers gains nothing).
    pub fn held_for(&self, principal: &str, now_ms: u64) -> Duration {
        if !self.any_held.load(std::sync::atomic::Ordering::Acquire) {
            return Duration::ZERO;
        }
        let mut held = self
            .held_until_ms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.get(principal) {
            Some(until) if *until > now_ms => Duration::from_millis(until - now_ms),
            Some(_) => {
                held.remove(principal);
                if held.is_empty() {
                    self.any_held
                        .store(false, std::sync::atomic::Ordering::Release);
                }
                Duration::ZERO
            }
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_the_quota_nothing_is_held_back() {
        let meter = QuotaMeter::default();
        // 1,000 bytes per second for 20 seconds against a quota of 1,000.
        for second in 0..20u64 {
            let throttle = meter.charge(
                "User:a",
                QuotaKind::ProduceBytes,
                1_000.0,
                Some(1_000.0),
                second * 1_000,
            );
            assert_eq!(throttle, Duration::ZERO, "second {second}");
        }
    }

    #[test]
    fn over_the_quota_the_wait_brings_the_rate_back() {
        let mut window = RateWindow::default();
        // 20,000 bytes at once against 1,000 per second over a 10-second window:
        // 20 s of quota, 10 s covered, so 10 s to wait (capped at the window).
        window.record(100_000, 20_000.0);
        assert_eq!(window.throttle(100_000, 1_000.0), Duration::from_secs(10));
        // 12,000 bytes: 2 s more than the window covers.
        let mut window = RateWindow::default();
        window.record(100_000, 12_000.0);
        assert_eq!(window.throttle(100_000, 1_000.0), Duration::from_secs(2));
        // Once the samples age out of the window, the rate is back.
        window.record(112_000, 1.0);
        assert_eq!(window.throttle(112_000, 1_000.0), Duration::ZERO);
    }

    #[test]
    fn one_principal_over_its_quota_does_not_throttle_another() {
        let meter = QuotaMeter::default();
        let heavy = meter.charge("User:heavy", QuotaKind::FetchBytes, 1e9, Some(1e6), 5_000);
        assert!(heavy > Duration::ZERO);
        let light = meter.charge("User:light", QuotaKind::FetchBytes, 1e3, Some(1e6), 5_000);
        assert_eq!(light, Duration::ZERO);
        // Nor does one kind throttle another of the same principal.
        let other = meter.charge("User:heavy", QuotaKind::ProduceBytes, 1e3, Some(1e6), 5_000);
        assert_eq!(other, Duration::ZERO);
        assert_eq!(
            meter.charge("User:heavy", QuotaKind::FetchBytes, 1e9, None, 5_000),
            Duration::ZERO,
            "no quota, no throttle"
        );
        // The throttled principal's next requests are held until its throttle ends;
        // the other's are not.
        assert_eq!(meter.held_for("User:heavy", 5_000), heavy);
        assert_eq!(
            meter.held_for("User:heavy", 5_000 + heavy.as_millis() as u64),
            Duration::ZERO
        );
        assert_eq!(meter.held_for("User:light", 5_000), Duration::ZERO);
    }
}
