//! The retry policy, all of it: which failures are retried (status and error classes, the
//! server's `x-should-retry`, the 429 rule for unkeyed creates), how long to back off, how to
//! read and cap `Retry-After` / `retry-after-ms`, the deadline rule, and how cancels retry.
//! Pure functions, no I/O, so they are unit- and property-tested directly; `sampler` only
//! asks.

use std::time::{Duration, SystemTime};

/// Exponential backoff with full jitter, bounded by `max_retries`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// Backoff before retry n is uniform in `[0, min(cap, base * 2^n)]`.
    pub base: Duration,
    pub cap: Duration,
    /// A server-sent Retry-After above this is ignored in favour of our own backoff
    /// (mirrors the OpenAI SDK: huge values are more likely bugs than intent).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter delay before retry number `retry` (0-based), given a uniform sample in [0, 1).
    pub fn backoff(&self, retry: u32, unit_random: f64) -> Duration {
        let exp = self.base.as_secs_f64() * 2f64.powi(retry.min(30) as i32);
        let ceiling = exp.min(self.cap.as_secs_f64());
        Duration::from_secs_f64(ceiling * unit_random.clamp(0.0, 1.0))
    }

    /// The delay to wait before the next retry: the server's hint when it gave a sane one,
    /// else our own backoff.
    pub fn delay(&self, retry: u32, server_hint: Option<Duration>, unit_random: f64) -> Duration {
        match server_hint {
            Some(hint) if hint > Duration::ZERO && hint <= self.max_retry_after => hint,
            _ => self.backoff(retry, unit_random),
        }
    }
}

/// What went wrong with one attempt, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made: the request never left.
    Connect,
    /// The server's certificate was rejected: retrying cannot help.
    Certificate,
    /// The connection broke or timed out after the request may have reached the server.
    Transport,
    /// The server answered outside the protocol (malformed framing, an oversized body):
    /// asking again would get the same answer.
    Protocol,
    /// The server answered with an error status, and perhaps `x-should-retry`.
    Status { status: u16, should_retry: Option<bool> },
}

/// Whether a failed attempt is tried again. `may_resend`: the request may safely reach the
/// server twice (polls, cancels, keyed creates; not an unkeyed asap create, which would make
/// a second sample).
///
/// A server's explicit `x-should-retry` wins, as in OpenAI's SDK (`true` means the server did
/// not act on the request). A 429 is the server refusing the request outright, so even an
/// unkeyed create may retry it.
pub fn is_retryable(failure: Failure, may_resend: bool) -> bool {
    match failure {
        Failure::Connect => true,
        Failure::Certificate | Failure::Protocol => false,
        Failure::Transport => may_resend,
        Failure::Status { should_retry: Some(explicit), .. } => explicit,
        Failure::Status { status, should_retry: None } => is_transient_status(status) && (may_resend || status == 429),
    }
}

/// The deadline rule: a retry whose delay would reach past the sample deadline is not
/// slept through (the caller gets the last error now instead of a timeout later).
pub fn fits_before_deadline(delay: Duration, remaining: Option<Duration>) -> bool {
    !matches!(remaining, Some(rem) if delay >= rem)
}

/// `x-should-retry: true|false` (any other value: no opinion).
pub fn parse_should_retry(value: &str) -> Option<bool> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Server-side cancels are best effort: this many attempts, with a short doubling backoff.
pub const CANCEL_ATTEMPTS: u32 = 3;

/// The pause after failed cancel attempt `attempt` (0-based).
pub fn cancel_backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(6))
}

/// Whether a cancel attempt settled the matter: any answer but a transient status (a 404
/// means the response is gone already). `None`: no answer at all.
pub fn cancel_settled(status: Option<u16>) -> bool {
    status.is_some_and(|s| !is_transient_status(s))
}

/// Parsed server hints are clamped to this before becoming a `Duration` (a hostile
/// `Retry-After: 1e300` must not overflow it). Anything above `max_retry_after` is ignored
/// by `RetryPolicy::delay` anyway.
pub const MAX_PARSED_HINT: Duration = Duration::from_secs(24 * 3600);

fn clamped_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(MAX_PARSED_HINT.as_secs_f64())))
}

/// Status codes worth retrying: 408 timeout, 409 lock, 429 rate limit, the protocol's
/// 500/502/503/504, and the 520-599 range gateways and CDNs use for transient origin trouble.
/// Other 5xx (501 not implemented, 505 version, 507/508/510/511) cannot get better by retrying.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504) || (520..=599).contains(&status)
}

/// Parse the retry hint from `retry-after-ms` (milliseconds) or `Retry-After`
/// (seconds, fractional allowed, or an HTTP date).
/// Every result is at most `MAX_PARSED_HINT`, whatever the server sent.
pub fn parse_retry_after(retry_after_ms: Option<&str>, retry_after: Option<&str>, now: SystemTime) -> Option<Duration> {
    if let Some(hint) = retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok()).and_then(|ms| clamped_secs(ms / 1000.0)) {
        return Some(hint);
    }
    let value = retry_after?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return clamped_secs(secs);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_PARSED_HINT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_statuses() {
        for s in [408, 409, 429, 500, 502, 503, 504, 522, 529, 599] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 422, 501, 505, 507, 511] {
            assert!(!is_transient_status(s), "{s}");
        }
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(0, 1.0), Duration::from_millis(250));
        assert_eq!(p.backoff(2, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(20, 1.0), Duration::from_secs(8));
        assert_eq!(p.backoff(u32::MAX, 0.5), Duration::from_secs(4));
    }

    #[test]
    fn server_hint_wins_when_sane() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, Some(Duration::from_secs(3)), 0.0), Duration::from_secs(3));
        // Zero or absurd hints fall back to our own backoff.
        assert_eq!(p.delay(0, Some(Duration::ZERO), 1.0), Duration::from_millis(250));
        assert_eq!(p.delay(0, Some(Duration::from_secs(3600)), 1.0), Duration::from_millis(250));
    }

    #[test]
    fn absurd_hints_are_clamped_not_panics() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for v in ["1e20", "1e300", "99999999999999999999999", "1.7976931348623157e308"] {
            assert_eq!(parse_retry_after(None, Some(v), now), Some(MAX_PARSED_HINT), "{v}");
            assert_eq!(parse_retry_after(Some(v), None, now), Some(MAX_PARSED_HINT), "{v}");
        }
        assert_eq!(parse_retry_after(Some("1e30"), None, now), Some(MAX_PARSED_HINT));
        assert_eq!(parse_retry_after(None, Some("inf"), now), None);
        assert_eq!(parse_retry_after(None, Some("NaN"), now), None);
        assert_eq!(parse_retry_after(None, Some("Fri, 31 Dec 9999 23:59:59 GMT"), now), Some(MAX_PARSED_HINT));
        // And a clamped hint is beyond max_retry_after, so our own backoff is used.
        assert_eq!(RetryPolicy::default().delay(0, Some(MAX_PARSED_HINT), 1.0), Duration::from_millis(250));
    }

    #[test]
    fn retry_classes() {
        assert!(is_retryable(Failure::Connect, false));
        assert!(!is_retryable(Failure::Certificate, true));
        assert!(!is_retryable(Failure::Protocol, true));
        assert!(is_retryable(Failure::Transport, true));
        assert!(!is_retryable(Failure::Transport, false));
        let status = |status, should_retry| Failure::Status { status, should_retry };
        assert!(is_retryable(status(503, None), true));
        assert!(!is_retryable(status(503, None), false), "an unkeyed create is not resent after a 503");
        assert!(is_retryable(status(429, None), false), "a 429 refused the request: safe to resend");
        assert!(!is_retryable(status(400, None), true));
        // x-should-retry overrides the status, as in OpenAI's SDK.
        assert!(!is_retryable(status(503, Some(false)), true));
        assert!(!is_retryable(status(429, Some(false)), false));
        assert!(is_retryable(status(400, Some(true)), false));
    }

    #[test]
    fn should_retry_values() {
        assert_eq!(parse_should_retry("true"), Some(true));
        assert_eq!(parse_should_retry(" FALSE "), Some(false));
        assert_eq!(parse_should_retry("yes"), None);
        assert_eq!(parse_should_retry(""), None);
    }

    #[test]
    fn deadline_rule() {
        let s = Duration::from_secs;
        assert!(fits_before_deadline(s(1), None));
        assert!(fits_before_deadline(s(1), Some(s(2))));
        assert!(!fits_before_deadline(s(2), Some(s(2))));
        assert!(!fits_before_deadline(Duration::ZERO, Some(Duration::ZERO)));
    }

    #[test]
    fn cancel_rules() {
        assert!(cancel_settled(Some(200)) && cancel_settled(Some(404)) && cancel_settled(Some(400)));
        assert!(!cancel_settled(Some(503)) && !cancel_settled(Some(429)) && !cancel_settled(None));
        assert_eq!(cancel_backoff(0), Duration::from_millis(100));
        assert_eq!(cancel_backoff(2), Duration::from_millis(400));
        assert_eq!(cancel_backoff(u32::MAX), Duration::from_millis(6400));
    }

    proptest::proptest! {
        /// Whatever a server sends as a hint, parsing never panics and stays within the clamp.
        #[test]
        fn any_hint_parses_within_the_clamp(ms in ".{0,40}", secs in ".{0,40}", f in proptest::prelude::any::<f64>()) {
            let now = SystemTime::now();
            for (a, b) in [(Some(ms.as_str()), None), (None, Some(secs.as_str())), (Some(&*f.to_string()), Some(&*f.to_string()))] {
                if let Some(d) = parse_retry_after(a, b, now) {
                    proptest::prop_assert!(d <= MAX_PARSED_HINT);
                }
            }
        }

        /// The delay never exceeds the larger of the backoff cap and the Retry-After cap.
        #[test]
        fn delays_are_bounded(retry in proptest::prelude::any::<u32>(), hint_ms in proptest::prelude::any::<u64>(), r in 0.0f64..1.0) {
            let p = RetryPolicy::default();
            let d = p.delay(retry, Some(Duration::from_millis(hint_ms)), r);
            proptest::prop_assert!(d <= p.cap.max(p.max_retry_after));
            proptest::prop_assert!(p.backoff(retry, r) <= p.cap);
        }

        /// Certificate and protocol failures are never retried; connect failures always are;
        /// an explicit `x-should-retry` always decides.
        #[test]
        fn classification_invariants(status in 100u16..600, may_resend in proptest::prelude::any::<bool>(), explicit in proptest::prelude::any::<bool>()) {
            proptest::prop_assert!(!is_retryable(Failure::Certificate, may_resend));
            proptest::prop_assert!(!is_retryable(Failure::Protocol, may_resend));
            proptest::prop_assert!(is_retryable(Failure::Connect, may_resend));
            let with_header = Failure::Status { status, should_retry: Some(explicit) };
            proptest::prop_assert_eq!(is_retryable(with_header, may_resend), explicit);
            let without = Failure::Status { status, should_retry: None };
            proptest::prop_assert!(is_transient_status(status) || !is_retryable(without, may_resend));
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(Some("1500"), Some("9"), now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after(None, Some("2"), now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(None, Some("0.25"), now), Some(Duration::from_millis(250)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(None, Some(&later), now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(None, Some(&earlier), now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(None, Some("soon"), now), None);
        assert_eq!(parse_retry_after(Some("-5"), None, now), None);
        assert_eq!(parse_retry_after(None, None, now), None);
    }
}
