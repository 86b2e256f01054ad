//! Retry policy arithmetic: which failures are transient, how long to back off, and how to
//! read `Retry-After` / `retry-after-ms`. Pure functions, no I/O, so they are unit-tested directly.

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

/// Status codes worth retrying: 408 timeout, 409 lock, 429 rate limit, the protocol's
/// 500/502/503/504, and the 520-599 range gateways and CDNs use for transient origin trouble.
/// Other 5xx (501 not implemented, 505 version, 507/508/510/511) cannot get better by retrying.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504) || (520..=599).contains(&status)
}

/// Parse the retry hint from `retry-after-ms` (milliseconds) or `Retry-After`
/// (seconds, fractional allowed, or an HTTP date).
pub fn parse_retry_after(retry_after_ms: Option<&str>, retry_after: Option<&str>, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let value = retry_after?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
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
