//! The life of one response: wait out its window's latency (queued, then in_progress), resolve its
//! LoRA, sample, store the rendered result. Cancellation is observed at each step.
use crate::config::LatencyConfig;
use crate::lora::LoraRef;
use crate::model::{NgramModel, Sample, SamplingParams};
use crate::render;
use crate::rng;
use crate::state::AppState;
use crate::store::{Head, Status, View};
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

pub struct Job {
    pub head: Arc<Head>,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub lora: LoraRef,
    pub logprobs: bool,
    /// Injected "fails after acceptance" fault.
    pub fail: bool,
    /// Prompt tokens served from the simulated prefix cache.
    pub cached_tokens: u64,
    pub queued_for: Duration,
    pub runs_for: Duration,
}

/// (time queued, time in progress) for response number `n` of `window`, drawn from the configured
/// distribution (deterministic for a seed).
pub fn latency_plan(cfg: &LatencyConfig, window: &str, seed: u64, n: u64) -> (Duration, Duration) {
    let base = cfg.seconds_for(window);
    if base <= 0.0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let u = rng::unit(rng::draw(seed, rng::STREAM_LATENCY, n));
    let factor = if cfg.distribution == "lognormal" {
        // Box-Muller from two independent uniforms.
        let v = rng::unit(rng::draw(seed, rng::STREAM_LATENCY_SPREAD, n));
        let z = (-2.0 * (1.0 - u).ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
        (cfg.sigma * z).exp()
    } else {
        1.0 + cfg.jitter * (2.0 * u - 1.0)
    };
    let total = (base * factor).clamp(0.0, 1e6);
    let q = total * cfg.in_progress_fraction;
    (Duration::from_secs_f64(q), Duration::from_secs_f64(total - q))
}

/// Sampling is cheap for short outputs; long ones go to the blocking pool so they cannot stall
/// the request handlers sharing the worker threads.
const INLINE_MAX_TOKENS: u32 = 2048;

pub async fn sample(prompt: Vec<u32>, adapter: Option<Arc<crate::model::Adapter>>, params: SamplingParams) -> Option<(Vec<u32>, Sample)> {
    if params.max_tokens <= INLINE_MAX_TOKENS && prompt.len() <= 100_000 {
        let s = NgramModel::default_model().sample(&prompt, adapter.as_deref(), &params);
        Some((prompt, s))
    } else {
        tokio::task::spawn_blocking(move || {
            let s = NgramModel::default_model().sample(&prompt, adapter.as_deref(), &params);
            (prompt, s)
        })
        .await
        .ok()
    }
}

/// Current body of a response (None if it is gone).
pub fn current(st: &AppState, id: u64) -> Option<Bytes> {
    st.store.get(id, st.retention()).map(|v| match v {
        View::Body(b) => b,
        View::Live(s, h) => render::live(&h, s),
    })
}

pub async fn run(st: Arc<AppState>, job: Job) -> Option<Bytes> {
    let id = job.head.id;
    if !job.queued_for.is_zero() {
        tokio::time::sleep(job.queued_for).await;
    }
    if !st.store.start(id) {
        return current(&st, id);
    }
    if !job.runs_for.is_zero() {
        tokio::time::sleep(job.runs_for).await;
    }
    if !st.store.is_active(id) {
        return current(&st, id);
    }
    let outcome = if job.fail {
        Err(("server_error", "The server had an error while processing this response (injected fault); retry the request".to_string()))
    } else {
        match st.loras.resolve(&job.lora, &job.head.model).await {
            Err(e) => Err((e.code, e.message)),
            Ok(adapter) => match sample(job.prompt, adapter, job.params).await {
                Some(r) => Ok(r),
                None => Err(("server_error", "Sampling failed".to_string())),
            },
        }
    };
    let input_tokens = match &outcome {
        Ok((prompt, _)) => prompt.len() as u64,
        Err(_) => 0,
    };
    let (status, body, ntok) = match outcome {
        Ok((prompt, s)) => {
            let text = crate::model::decode_text(&s.tokens);
            let c = render::Completed {
                text: &text,
                tokens: &s.tokens,
                logprobs: job.logprobs.then_some(&s.logprobs[..]),
                stop_reason: s.stop_reason.as_str(),
                input_tokens: prompt.len() as u64,
                cached_tokens: job.cached_tokens,
            };
            (Status::Completed, render::completed(&job.head, &c), s.tokens.len() as u64)
        }
        Err((code, msg)) => (Status::Failed, render::failed(&job.head, code, &msg), 0),
    };
    if st.store.finish(id, status, body.clone()) {
        st.stats.tokens_generated.fetch_add(ntok, Relaxed);
        if status == Status::Completed {
            st.stats.input_tokens.fetch_add(input_tokens, Relaxed);
            st.stats.cached_tokens.fetch_add(job.cached_tokens, Relaxed);
            if job.cached_tokens > 0 {
                st.stats.prompt_cache_hits.fetch_add(1, Relaxed);
            }
        }
        Some(body)
    } else {
        current(&st, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(cfg: &LatencyConfig, seed: u64) -> Vec<f64> {
        let mut v: Vec<f64> = (0..4000)
            .map(|n| {
                let (q, r) = latency_plan(cfg, "priority", seed, n);
                (q + r).as_secs_f64()
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    }

    #[test]
    fn lognormal_latency_has_the_window_median_and_spread_and_is_seeded() {
        let cfg: LatencyConfig =
            serde_json::from_str(r#"{"distribution": "lognormal", "sigma": 0.2, "windows": {"priority": 60}, "scale": 0.5}"#).unwrap();
        let v = totals(&cfg, 7);
        let median = v[2000];
        assert!((median - 30.0).abs() < 1.0, "median {median}");
        // exp(1.2816 * 0.2) = 1.29: the 90th percentile of a lognormal with sigma 0.2.
        let ratio = v[3600] / median;
        assert!((1.22..1.36).contains(&ratio), "p90/p50 {ratio}");
        assert_eq!(v, totals(&cfg, 7), "same seed, same latencies");
        assert_ne!(v, totals(&cfg, 8));
    }

    #[test]
    fn uniform_latency_stays_the_default() {
        let cfg = LatencyConfig::default();
        let v = totals(&cfg, 1);
        assert!(v[0] >= 0.8 - 1e-9 && v[3999] <= 1.2 + 1e-9, "{} {}", v[0], v[3999]);
        assert!(serde_json::from_str::<LatencyConfig>(r#"{"distribution": "gamma"}"#).map(|c| c.validate_for_test()).unwrap().is_err());
    }
}
