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

/// (time queued, time in progress) for one response of `window`, with jitter.
pub fn latency_plan(cfg: &LatencyConfig, window: &str, seed: u64, n: u64) -> (Duration, Duration) {
    let base = cfg.seconds_for(window);
    if base <= 0.0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let u = rng::unit(rng::draw(seed, rng::STREAM_LATENCY, n));
    let total = (base * (1.0 + cfg.jitter * (2.0 * u - 1.0))).clamp(0.0, 1e6);
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
