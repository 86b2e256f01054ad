//! Counters (`GET /_stats`, `EmulatorHandle::stats`): plain relaxed atomics, no locks.
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Http429,
    Http500,
    Http502,
    Http503,
    Drop,
    Slow,
    Fail,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] =
        [FaultKind::Http429, FaultKind::Http500, FaultKind::Http502, FaultKind::Http503, FaultKind::Drop, FaultKind::Slow, FaultKind::Fail];
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Http429 => "429",
            FaultKind::Http500 => "500",
            FaultKind::Http502 => "502",
            FaultKind::Http503 => "503",
            FaultKind::Drop => "drop",
            FaultKind::Slow => "slow",
            FaultKind::Fail => "fail",
        }
    }
}

#[derive(Default)]
struct Counter(AtomicU64);
impl Counter {
    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

pub struct Stats {
    pub requests_total: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// New samples actually started.
    pub creates: AtomicU64,
    pub idempotent_replays: AtomicU64,
    pub idempotency_conflicts: AtomicU64,
    pub polls: AtomicU64,
    pub cancels_received: AtomicU64,
    pub cancels_effective: AtomicU64,
    /// Responses that ended `completed` / `failed`.
    pub completions: AtomicU64,
    pub failures: AtomicU64,
    pub expired: AtomicU64,
    /// `POST /v1/completions` served.
    pub openai_completions: AtomicU64,
    pub lora_downloads: AtomicU64,
    pub lora_cache_hits: AtomicU64,
    pub archive_downloads: AtomicU64,
    /// Idempotency keys that started more than one sample (must stay 0).
    pub duplicate_samples: AtomicU64,
    pub tokens_generated: AtomicU64,
    /// Prompt tokens of completed responses, and the part served from the prefix cache.
    pub input_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    /// Completed responses with at least one cached prompt token.
    pub prompt_cache_hits: AtomicU64,
    /// queued + in_progress; not reset by `reset()`.
    pub in_flight: AtomicI64,
    pub queued: AtomicI64,
    by_status: Box<[Counter]>,
    faults: [Counter; 7],
    /// How late the first poll saw each completed response, as a fraction of its service time,
    /// in bins of LATENESS_BIN (the last bin holds everything beyond).
    poll_lateness: Box<[Counter]>,
    /// Sum of the service times of those responses, in microseconds.
    service_micros: AtomicU64,
    /// Completed responses by how many polls found them pending first (the last bin: that many or more).
    pending_polls: Box<[Counter]>,
    /// Those pending polls by when they came, as a fraction of the response's service time, in
    /// bins of POSITION_BIN (the last bin: 0.95 or beyond; a pending poll comes before the service time ends).
    poll_position: Box<[Counter]>,
}

const LATENESS_BIN: f64 = 0.001;
const LATENESS_BINS: usize = 5001;
const PENDING_POLL_BINS: usize = 65;
const POSITION_BIN: f64 = 0.05;
const POSITION_BINS: usize = 20;

impl Default for Stats {
    fn default() -> Self {
        Stats {
            requests_total: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            creates: AtomicU64::new(0),
            idempotent_replays: AtomicU64::new(0),
            idempotency_conflicts: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            cancels_received: AtomicU64::new(0),
            cancels_effective: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            openai_completions: AtomicU64::new(0),
            lora_downloads: AtomicU64::new(0),
            lora_cache_hits: AtomicU64::new(0),
            archive_downloads: AtomicU64::new(0),
            duplicate_samples: AtomicU64::new(0),
            tokens_generated: AtomicU64::new(0),
            input_tokens: AtomicU64::new(0),
            cached_tokens: AtomicU64::new(0),
            prompt_cache_hits: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            queued: AtomicI64::new(0),
            by_status: (0..600).map(|_| Counter::default()).collect(),
            faults: Default::default(),
            poll_lateness: (0..LATENESS_BINS).map(|_| Counter::default()).collect(),
            service_micros: AtomicU64::new(0),
            pending_polls: (0..PENDING_POLL_BINS).map(|_| Counter::default()).collect(),
            poll_position: (0..POSITION_BINS).map(|_| Counter::default()).collect(),
        }
    }
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Stats {
    pub fn status(&self, code: u16) {
        if let Some(c) = self.by_status.get(code as usize) {
            c.0.fetch_add(1, Relaxed);
        }
    }

    pub fn record_poll_lateness(&self, fraction: f64, service_seconds: f64) {
        let bin = ((fraction.max(0.0) / LATENESS_BIN) as usize).min(LATENESS_BINS - 1);
        self.poll_lateness[bin].0.fetch_add(1, Relaxed);
        self.service_micros.fetch_add((service_seconds * 1e6) as u64, Relaxed);
    }

    /// A completed response was polled pending at these times (seconds since it was created).
    pub fn record_polls_of_response(&self, pending_at: &[f32], service_seconds: f64) {
        self.pending_polls[pending_at.len().min(PENDING_POLL_BINS - 1)].0.fetch_add(1, Relaxed);
        for &t in pending_at {
            let bin = ((t as f64 / service_seconds).max(0.0) / POSITION_BIN) as usize;
            self.poll_position[bin.min(POSITION_BINS - 1)].0.fetch_add(1, Relaxed);
        }
    }

    /// Count and quantiles (upper bin edges) of the recorded poll lateness.
    fn poll_lateness_json(&self) -> Value {
        let counts: Vec<u64> = self.poll_lateness.iter().map(Counter::get).collect();
        let total: u64 = counts.iter().sum();
        let quantile = |p: f64| -> Option<f64> {
            let target = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut acc = 0;
            counts
                .iter()
                .position(|&c| {
                    acc += c;
                    acc >= target
                })
                .map(|i| (i + 1) as f64 * LATENESS_BIN)
        };
        let mean_service = if total > 0 { self.service_micros.load(Relaxed) as f64 / 1e6 / total as f64 } else { 0.0 };
        json!({"count": total, "p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99), "max": quantile(1.0),
               "mean_service_seconds": mean_service})
    }

    pub fn fault(&self, k: FaultKind) {
        self.faults[k as usize].0.fetch_add(1, Relaxed);
    }

    pub fn fault_count(&self, k: FaultKind) -> u64 {
        self.faults[k as usize].get()
    }

    pub fn status_count(&self, code: u16) -> u64 {
        self.by_status.get(code as usize).map(|c| c.get()).unwrap_or(0)
    }

    /// Zero the event counters (gauges such as `in_flight` keep their value).
    pub fn reset(&self) {
        for c in [
            &self.requests_total,
            &self.connections_accepted,
            &self.creates,
            &self.idempotent_replays,
            &self.idempotency_conflicts,
            &self.polls,
            &self.cancels_received,
            &self.cancels_effective,
            &self.completions,
            &self.failures,
            &self.expired,
            &self.openai_completions,
            &self.lora_downloads,
            &self.lora_cache_hits,
            &self.archive_downloads,
            &self.duplicate_samples,
            &self.tokens_generated,
            &self.input_tokens,
            &self.cached_tokens,
            &self.prompt_cache_hits,
        ] {
            c.store(0, Relaxed);
        }
        for c in self.by_status.iter().chain(self.faults.iter()).chain(self.poll_lateness.iter()) {
            c.0.store(0, Relaxed);
        }
        for c in self.pending_polls.iter().chain(self.poll_position.iter()) {
            c.0.store(0, Relaxed);
        }
        self.service_micros.store(0, Relaxed);
    }

    pub fn to_json(&self, stored_responses: usize) -> Value {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let mut by_status = Map::new();
        for (code, c) in self.by_status.iter().enumerate() {
            if c.get() > 0 {
                by_status.insert(code.to_string(), json!(c.get()));
            }
        }
        let mut faults = Map::new();
        let mut faults_total = 0;
        for k in FaultKind::ALL {
            faults.insert(k.name().into(), json!(self.fault_count(k)));
            faults_total += self.fault_count(k);
        }
        let in_flight = self.in_flight.load(Relaxed).max(0);
        let queued = self.queued.load(Relaxed).max(0);
        json!({
            "requests_total": g(&self.requests_total),
            "connections_accepted": g(&self.connections_accepted),
            "creates": g(&self.creates),
            "idempotent_replays": g(&self.idempotent_replays),
            "idempotency_conflicts": g(&self.idempotency_conflicts),
            "polls": g(&self.polls),
            "cancels_received": g(&self.cancels_received),
            "cancels_effective": g(&self.cancels_effective),
            "completions": g(&self.completions),
            "failures": g(&self.failures),
            "expired": g(&self.expired),
            "openai_completions": g(&self.openai_completions),
            "lora_downloads": g(&self.lora_downloads),
            "lora_cache_hits": g(&self.lora_cache_hits),
            "archive_downloads": g(&self.archive_downloads),
            "duplicate_samples": g(&self.duplicate_samples),
            "tokens_generated": g(&self.tokens_generated),
            "input_tokens": g(&self.input_tokens),
            "cached_tokens": g(&self.cached_tokens),
            "prompt_cache_hits": g(&self.prompt_cache_hits),
            "in_flight": in_flight,
            "queued": queued,
            "in_progress": (in_flight - queued).max(0),
            "stored_responses": stored_responses,
            "by_status": by_status,
            "faults": faults,
            "faults_total": faults_total,
            "poll_lateness": self.poll_lateness_json(),
            // Index i: completed responses polled pending i times first (last: that many or more).
            "pending_polls_per_response": self.pending_polls.iter().map(Counter::get).collect::<Vec<_>>(),
            // Index i: those pending polls at i*0.05 .. (i+1)*0.05 of the service time (last: 0.95 or beyond).
            "pending_poll_position": self.poll_position.iter().map(Counter::get).collect::<Vec<_>>(),
        })
    }
}
