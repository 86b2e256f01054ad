//! Fault injection decisions (seeded, lock-free) and the fault responses themselves.
use crate::config::FaultConfig;
use crate::error::ApiError;
use crate::rng;
use crate::stats::FaultKind;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Response, StatusCode};
use std::time::Duration;

/// Which kind of request a fault may hit (`faults.apply_to`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    Create,
    Poll,
    Cancel,
    Completions,
    Models,
    Archives,
    Other,
}

impl Class {
    pub fn of(method: &Method, path: &str) -> Class {
        let p = path.trim_end_matches('/');
        if let Some(rest) = p.strip_prefix("/v1/responses") {
            if rest.is_empty() {
                return if method == Method::POST { Class::Create } else { Class::Other };
            }
            if rest.ends_with("/cancel") {
                return Class::Cancel;
            }
            return if method == Method::GET { Class::Poll } else { Class::Other };
        }
        if p == "/v1/completions" || p == "/oai/api/v1/completions" {
            return Class::Completions;
        }
        if p.starts_with("/v1/models") {
            return Class::Models;
        }
        if p.starts_with("/_tinker/archives/") {
            return Class::Archives;
        }
        Class::Other
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Create => "create",
            Class::Poll => "poll",
            Class::Cancel => "cancel",
            Class::Completions => "completions",
            Class::Models => "models",
            Class::Archives => "archives",
            Class::Other => "other",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Plan {
    /// A 429/5xx/drop to inject instead of (or, when `after`, in place of) the real answer.
    pub fault: Option<FaultKind>,
    /// Creates only: inject after the response was created (so a retry needs idempotency).
    pub after: bool,
    pub slow: Option<Duration>,
}

pub fn decide(cfg: &FaultConfig, class: Class, seed: u64, seq: u64) -> Plan {
    let mut plan = Plan::default();
    if class == Class::Other || !cfg.any_http_fault() || !cfg.apply_to.iter().any(|c| c == class.name()) {
        return plan;
    }
    let u = rng::unit(rng::draw(seed, rng::STREAM_FAULT, seq));
    let mut acc = 0.0;
    for (rate, kind) in [
        (cfg.rate_429, FaultKind::Http429),
        (cfg.rate_500, FaultKind::Http500),
        (cfg.rate_502, FaultKind::Http502),
        (cfg.rate_503, FaultKind::Http503),
        (cfg.rate_drop, FaultKind::Drop),
    ] {
        acc += rate;
        if u < acc {
            plan.fault = Some(kind);
            break;
        }
    }
    // A 429 is an admission decision, so it always comes before any work.
    if class == Class::Create && plan.fault.is_some_and(|k| k != FaultKind::Http429) {
        plan.after = rng::unit(rng::draw(seed, rng::STREAM_FAULT_PHASE, seq)) < cfg.after_create_fraction;
    }
    if cfg.rate_slow > 0.0 && rng::unit(rng::draw(seed, rng::STREAM_SLOW, seq)) < cfg.rate_slow {
        plan.slow = Some(Duration::from_secs_f64(cfg.slow_seconds.min(3600.0)));
    }
    plan
}

/// Should this create end `failed` (server_error) after acceptance?
pub fn fails_after_acceptance(cfg: &FaultConfig, seed: u64, response_no: u64) -> bool {
    cfg.rate_fail > 0.0 && rng::unit(rng::draw(seed, rng::STREAM_FAIL, response_no)) < cfg.rate_fail
}

/// The HTTP answer of an injected 429/5xx.
pub fn response(kind: FaultKind, cfg: &FaultConfig) -> Response<Body> {
    let (status, kind_s, code, msg) = match kind {
        FaultKind::Http429 => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            "Rate limit reached; retry after the indicated delay",
        ),
        FaultKind::Http500 => {
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error", "The server had an error while processing your request")
        }
        FaultKind::Http502 => (StatusCode::BAD_GATEWAY, "server_error", "bad_gateway", "Bad gateway"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "service_unavailable", "The server is temporarily overloaded; retry later"),
    };
    let mut r = ApiError::new(status, kind_s, Some(code), msg).into_response();
    if kind == FaultKind::Http429 {
        let secs = cfg.retry_after_seconds;
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("{}", secs.ceil() as u64)) {
            h.insert("retry-after", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{}", (secs * 1000.0).round() as u64)) {
            h.insert("retry-after-ms", v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(Class::of(&Method::POST, "/v1/responses"), Class::Create);
        assert_eq!(Class::of(&Method::GET, "/v1/responses/resp_1"), Class::Poll);
        assert_eq!(Class::of(&Method::POST, "/v1/responses/resp_1/cancel"), Class::Cancel);
        assert_eq!(Class::of(&Method::GET, "/v1/models"), Class::Models);
        assert_eq!(Class::of(&Method::GET, "/_stats"), Class::Other);
    }

    #[test]
    fn rates_roughly_hold() {
        let cfg = FaultConfig { rate_500: 0.3, rate_drop: 0.1, ..Default::default() };
        let n = 20_000;
        let mut c500 = 0;
        let mut drops = 0;
        let mut after = 0;
        for i in 0..n {
            let p = decide(&cfg, Class::Create, 7, i);
            match p.fault {
                Some(FaultKind::Http500) => c500 += 1,
                Some(FaultKind::Drop) => drops += 1,
                _ => {}
            }
            after += p.after as u32;
        }
        assert!((c500 as f64 / n as f64 - 0.3).abs() < 0.02);
        assert!((drops as f64 / n as f64 - 0.1).abs() < 0.02);
        assert!((after as f64 / (c500 + drops) as f64 - 0.5).abs() < 0.05);
        let none = decide(&cfg, Class::Cancel, 7, 1);
        assert!(none.fault.is_none());
    }
}
