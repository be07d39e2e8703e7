//! When to try again: the retry and backoff policy, and the failure-streak logging rule.
//!
//! Pure functions only (no clock, no I/O, randomness passed in), so every decision is unit
//! tested and the delivery loop in [`super::sender`] is a thin driver around them.
//!
//! What is retried follows PostHog's capture service (`rust/capture/src/api.rs`): it answers
//! 400 for an event it refuses, 401 for every project-key problem (missing, malformed, a
//! personal `phx_` key) and 413 for an oversized body — sending the same bytes again cannot
//! change those answers. Capture never answers 403: one comes from something in between, and
//! is not retried either. Connect errors, timeouts, 408, 429 and 5xx are transient, so the
//! same body (same `uuid`, so PostHog deduplicates) is sent again after an exponentially
//! growing, jittered pause.

use std::time::{Duration, SystemTime};

/// First pause; doubled for every further retry.
pub(crate) const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(2);
/// No pause grows beyond this: the next cycle brings a fresh snapshot anyway.
pub(crate) const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5 * 60);
/// A `Retry-After` longer than this ends the cycle instead: waiting longer inside one cycle
/// would hold a stale snapshot, and the next cycle comes on its own.
pub(crate) const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(30 * 60);

/// How one attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// 2xx: PostHog took the event.
    Delivered { status: u16 },
    /// A status that sending again cannot fix (400, 401, 403, 413, other 4xx, 3xx).
    Rejected { status: u16, reason: String },
    /// Worth another try: connect error, timeout, reset, garbage, 408, 429, 5xx.
    Transient {
        /// The HTTP status, when there was one.
        status: Option<u16>,
        reason: String,
        /// The server's `Retry-After`, already converted to a pause.
        retry_after: Option<Duration>,
    },
}

impl Attempt {
    /// One line for logs and `telemetry send`: the class and the reason, never the body.
    pub(crate) fn describe(&self) -> String {
        match self {
            Attempt::Delivered { status } => format!("delivered (HTTP {status})"),
            Attempt::Rejected { status, reason } => format!("rejected (HTTP {status}): {reason}"),
            Attempt::Transient {
                status: Some(s),
                reason,
                ..
            } => format!("failed (HTTP {s}): {reason}"),
            Attempt::Transient {
                status: None,
                reason,
                ..
            } => format!("failed: {reason}"),
        }
    }

    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Attempt::Delivered { status } | Attempt::Rejected { status, .. } => Some(*status),
            Attempt::Transient { status, .. } => *status,
        }
    }
}

/// Sorts an HTTP status into the three classes. `retry_after` is the parsed header.
pub(crate) fn classify_status(status: u16, retry_after: Option<Duration>) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered { status },
        408 | 429 | 500..=599 => Attempt::Transient {
            status: Some(status),
            reason: status_reason(status).into(),
            retry_after,
        },
        _ => Attempt::Rejected {
            status,
            reason: status_reason(status).into(),
        },
    }
}

/// What a status means for this agent, worded so an administrator knows what to fix.
pub(crate) fn status_reason(status: u16) -> &'static str {
    match status {
        400 => "the destination refused the event (not retried)",
        401 => {
            "the project key is invalid (missing, malformed, or a personal phx_ key instead of \
             the project's phc_ key): check posthogKey / BUTLER_POSTHOG_KEY (not retried)"
        }
        403 => {
            "access refused; PostHog's capture does not answer 403, so a proxy or firewall in \
             between may be blocking it (not retried)"
        }
        404 => {
            "no capture endpoint at this address: check posthogHost / BUTLER_POSTHOG_HOST (not retried)"
        }
        408 => "the destination timed out reading the request",
        413 => "the event is too big for the destination (not retried)",
        429 => "rate limited by the destination",
        500..=599 => "the destination had a server error",
        300..=399 => {
            "the destination redirected; point posthogHost at the final address (not retried)"
        }
        _ => "unexpected answer from the destination (not retried)",
    }
}

/// The tunables of the retry loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt (so at most `max_retries + 1` attempts per cycle).
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub(crate) fn new(max_retries: u32) -> Self {
        RetryPolicy {
            max_retries,
            base_delay: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Done: delivered.
    Done,
    /// Wait this long, then send the same body again.
    RetryAfter(Duration),
    /// Stop for this cycle; the reason says why.
    GiveUp(GiveUpReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUpReason {
    /// A status retrying cannot fix.
    Rejected,
    /// All retries used.
    RetriesExhausted,
    /// The server asked to wait longer than [`RetryPolicy::max_retry_after`].
    RetryAfterTooLong,
}

/// Decides after attempt number `retries_done + 1`. `jitter` is a uniform sample in `[0, 1)`:
/// the pause is drawn from `[d/2, d)` where `d` is the capped exponential delay ("equal
/// jitter"), so a fleet that failed together spreads out but never retries immediately.
/// A `Retry-After` from the server replaces the computed pause (it knows its own load).
pub(crate) fn next(
    policy: &RetryPolicy,
    retries_done: u32,
    attempt: &Attempt,
    jitter: f64,
) -> Next {
    match attempt {
        Attempt::Delivered { .. } => Next::Done,
        Attempt::Rejected { .. } => Next::GiveUp(GiveUpReason::Rejected),
        Attempt::Transient { retry_after, .. } => {
            if retries_done >= policy.max_retries {
                return Next::GiveUp(GiveUpReason::RetriesExhausted);
            }
            if let Some(after) = retry_after {
                if *after > policy.max_retry_after {
                    return Next::GiveUp(GiveUpReason::RetryAfterTooLong);
                }
                return Next::RetryAfter(*after);
            }
            Next::RetryAfter(backoff(policy, retries_done, jitter))
        }
    }
}

/// The jittered exponential pause before retry number `retries_done + 1`.
pub(crate) fn backoff(policy: &RetryPolicy, retries_done: u32, jitter: f64) -> Duration {
    let factor = 2u32.saturating_pow(retries_done.min(30));
    let full = policy
        .base_delay
        .saturating_mul(factor)
        .min(policy.max_delay);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // In whole milliseconds, and strictly below `full`: tokio's timer rounds a sleep up to the
    // next millisecond, and floating point rounds a jitter just under 1 up to 1, either of
    // which would turn a pause just under `full` into `full` itself.
    let full_ms = u64::try_from(full.as_millis()).unwrap_or(u64::MAX);
    let half = full_ms / 2;
    let span = full_ms - half;
    let extra = ((span as f64 * jitter) as u64).min(span.saturating_sub(1));
    Duration::from_millis(half + extra)
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3) in any of the three
/// formats recipients must accept (IMF-fixdate, RFC 850, asctime), relative to `now`.
/// A date in the past means "now" (zero); anything unparseable is ignored (`None`), so the
/// computed backoff applies.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The one-warning-per-streak rule: what to log after each cycle's final outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Streak {
    /// Cycles that failed in a row.
    pub(crate) failures: u64,
    /// Whether the last logged failure was a rejection (so a change of kind logs once more).
    last_rejected: Option<bool>,
}

/// A log line the streak rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreakLog {
    /// First failure of a streak, or the failure changed kind: warn once.
    Warn,
    /// Delivered after `failed_cycles` failed cycles: one info line.
    Recovered { failed_cycles: u64 },
}

impl Streak {
    /// Records a failed cycle; returns `Some(Warn)` only when this starts a streak or the kind
    /// changes (transient ↔ rejected), so a week offline gives one warning, not hundreds.
    pub(crate) fn failed(&mut self, rejected: bool) -> Option<StreakLog> {
        self.failures = self.failures.saturating_add(1);
        let log = (self.last_rejected != Some(rejected)).then_some(StreakLog::Warn);
        self.last_rejected = Some(rejected);
        log
    }

    /// Records a delivery; returns `Some(Recovered)` when it ends a streak.
    pub(crate) fn delivered(&mut self) -> Option<StreakLog> {
        let failed_cycles = std::mem::take(&mut self.failures);
        self.last_rejected = None;
        (failed_cycles > 0).then_some(StreakLog::Recovered { failed_cycles })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> Attempt {
        Attempt::Transient {
            status: None,
            reason: "connect".into(),
            retry_after: None,
        }
    }

    #[test]
    fn classes_follow_posthog_capture() {
        for s in [200, 201, 204] {
            assert!(
                matches!(classify_status(s, None), Attempt::Delivered { .. }),
                "{s}"
            );
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(classify_status(s, None), Attempt::Transient { .. }),
                "{s}"
            );
        }
        for s in [301, 400, 401, 403, 404, 413, 422] {
            assert!(
                matches!(classify_status(s, None), Attempt::Rejected { .. }),
                "{s}"
            );
        }
        assert!(status_reason(401).contains("BUTLER_POSTHOG_KEY"));
        assert!(status_reason(401).contains("project key is invalid"));
        assert!(status_reason(403).contains("does not answer 403"));
        assert!(!status_reason(403).contains("key"));
        assert!(status_reason(413).contains("too big"));
    }

    #[test]
    fn never_retries_rejections() {
        let p = RetryPolicy::new(5);
        for s in [400, 401, 403, 413] {
            assert_eq!(
                next(&p, 0, &classify_status(s, None), 0.5),
                Next::GiveUp(GiveUpReason::Rejected)
            );
        }
    }

    #[test]
    fn exponential_with_equal_jitter_and_cap() {
        let p = RetryPolicy::new(20);
        // jitter 0 → half the exponential delay; jitter → 1 approaches the full delay.
        assert_eq!(backoff(&p, 0, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(&p, 1, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(&p, 2, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(&p, 3, 0.5), Duration::from_secs(12));
        assert!(backoff(&p, 3, 0.999) < Duration::from_secs(16));
        // Capped at max_delay, and no overflow far out.
        assert_eq!(backoff(&p, 50, 0.0), DEFAULT_MAX_DELAY / 2);
        assert!(backoff(&p, u32::MAX, 0.999) < DEFAULT_MAX_DELAY);
        // Bad jitter input cannot produce a nonsense pause.
        assert_eq!(backoff(&p, 0, f64::NAN), Duration::from_secs(1));
        // (A jitter of 1 or more is clamped to the top of `[d/2, d)`.)
        assert_eq!(backoff(&p, 0, 7.0), Duration::from_millis(1999));
        // The largest jitter below 1 stays below the full delay in whole milliseconds, so
        // the timer (which rounds sleeps up to the millisecond) cannot stretch it to `full`.
        let top = backoff(&p, 0, 1.0 - f64::EPSILON);
        assert!(top < Duration::from_secs(2), "{top:?}");
        assert_eq!(top.subsec_nanos() % 1_000_000, 0, "{top:?}");
    }

    #[test]
    fn bounded_number_of_retries() {
        let p = RetryPolicy::new(3);
        for done in 0..3 {
            assert!(matches!(
                next(&p, done, &transient(), 0.0),
                Next::RetryAfter(_)
            ));
        }
        assert_eq!(
            next(&p, 3, &transient(), 0.0),
            Next::GiveUp(GiveUpReason::RetriesExhausted)
        );
        let none = RetryPolicy::new(0);
        assert_eq!(
            next(&none, 0, &transient(), 0.0),
            Next::GiveUp(GiveUpReason::RetriesExhausted)
        );
    }

    #[test]
    fn retry_after_replaces_backoff_and_is_bounded() {
        let p = RetryPolicy::new(5);
        let a = classify_status(429, Some(Duration::from_secs(7)));
        assert_eq!(
            next(&p, 0, &a, 0.9),
            Next::RetryAfter(Duration::from_secs(7))
        );
        let long = classify_status(503, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(
            next(&p, 0, &long, 0.0),
            Next::GiveUp(GiveUpReason::RetryAfterTooLong)
        );
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        // The two obsolete formats RFC 9110 §5.6.7 still requires recipients to accept.
        assert_eq!(
            parse_retry_after("Thursday, 01-Jan-26 00:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Thu Jan  1 00:01:30 2026", now),
            Some(Duration::from_secs(90))
        );
        // A date in the past: retry now.
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in [
            "",
            "-5",
            "soon",
            "Thu, 01 Jan 2026 00:01:30 CET",
            "1.5",
            "Thu, 32 Foo 2026 00:00:00 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn one_warning_per_streak_and_info_on_recovery() {
        let mut s = Streak::default();
        assert_eq!(s.delivered(), None);
        assert_eq!(s.failed(false), Some(StreakLog::Warn));
        for _ in 0..1000 {
            assert_eq!(s.failed(false), None);
        }
        // Kind changes (e.g. the key became wrong): one more line.
        assert_eq!(s.failed(true), Some(StreakLog::Warn));
        assert_eq!(s.failed(true), None);
        assert_eq!(
            s.delivered(),
            Some(StreakLog::Recovered {
                failed_cycles: 1003
            })
        );
        assert_eq!(s.delivered(), None);
        assert_eq!(s.failed(false), Some(StreakLog::Warn));
    }
}
