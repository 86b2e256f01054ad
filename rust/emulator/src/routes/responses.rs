//! `POST /v1/responses`, `GET|DELETE /v1/responses/{id}`, `POST /v1/responses/{id}/cancel`.
use super::PathParam;
use crate::error::{json_response, ApiError};
use crate::faults;
use crate::jobs::{self, Job};
use crate::model::SamplingParams;
use crate::render;
use crate::rng;
use crate::state::{id_string, parse_id, unix_now, AppState};
use crate::stats::{inc, FaultKind};
use crate::store::{Head, Reserve, Status, View};
use crate::validate;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode};
use std::sync::Arc;

/// Lets the request log name the response a request touched.
#[derive(Clone)]
pub struct RespId(pub Box<str>);

fn with_id(mut r: Response<Body>, id: &str) -> Response<Body> {
    r.extensions_mut().insert(RespId(id.into()));
    r
}

fn view_response(v: View, code: StatusCode) -> Response<Body> {
    match v {
        View::Body(b) => json_response(code, b),
        View::Live(s, h) => json_response(code, render::live(&h, s)),
    }
}

fn not_found(id: &str) -> Response<Body> {
    ApiError::not_found(format!("No response with id '{id}' (unknown, deleted or expired)")).with_param("response_id").into_response()
}

pub async fn create(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response<Body> {
    let body = match body {
        Ok(b) => b,
        Err(r) => return validate::body_rejection(r).into_response(),
    };
    let req = match validate::create(&st, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let key = match validate::idempotency_key(&headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let live = st.live();
    let (n, id) = st.next_response();
    let id_str = id_string(id);
    let head = Arc::new(Head {
        id,
        id_str: id_str.clone().into_boxed_str(),
        created_at: unix_now(),
        model: req.model.clone(),
        background: req.background,
        metadata_json: req.metadata_json,
        max_output_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
    });
    st.store.insert(head.clone(), key.as_deref());
    if let Some(key) = &key {
        let hash = st.store.hash_body(&body);
        loop {
            match st.store.reserve(key, hash, id) {
                Reserve::New => break,
                Reserve::Conflict => {
                    st.store.discard(id);
                    inc(&st.stats.idempotency_conflicts);
                    return ApiError::invalid(
                        "Idempotency-Key",
                        "idempotency_error",
                        "This Idempotency-Key was already used with a different request body",
                    )
                    .with_param("Idempotency-Key")
                    .into_response();
                }
                Reserve::Replay(other) => {
                    st.store.discard(id);
                    match st.store.get(other, st.retention()) {
                        Some(v) => {
                            inc(&st.stats.idempotent_replays);
                            let code = match &v {
                                View::Live(s, h) if h.background && !s.is_final() => StatusCode::ACCEPTED,
                                _ => StatusCode::OK,
                            };
                            return with_id(view_response(v, code), &id_string(other));
                        }
                        None => {
                            // The response behind the key expired: the key is free again.
                            st.store.unreserve(key, other);
                            st.store.insert(head.clone(), Some(key));
                        }
                    }
                }
            }
        }
    }
    st.store.started();
    let seed = req.seed.unwrap_or_else(|| rng::draw(st.seed, rng::STREAM_SAMPLE, n));
    let (queued_for, runs_for) = jobs::latency_plan(&live.latency, &req.window, st.seed, n);
    let fail = faults::fails_after_acceptance(&live.faults, st.seed, n);
    let cached_tokens = st.prefix_cache.serve(&req.model, req.prompt_cache_key.as_deref(), &req.prompt);
    if fail {
        st.stats.fault(FaultKind::Fail);
    }
    let job = Job {
        head: head.clone(),
        prompt: req.prompt,
        params: SamplingParams {
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            stop_token_ids: req.stop_token_ids,
            stop_strings: req.stop_strings,
            seed,
        },
        lora: req.lora,
        logprobs: req.logprobs,
        fail,
        cached_tokens,
        queued_for,
        runs_for,
    };
    let task = tokio::spawn(jobs::run(st.clone(), job));
    if req.background {
        return with_id(json_response(StatusCode::ACCEPTED, render::live(&head, Status::Queued)), &id_str);
    }
    // Foreground: answer when done. The job runs in its own task so a client that hangs up does
    // not leave the response stuck.
    match task.await {
        Ok(Some(b)) => with_id(json_response(StatusCode::OK, b), &id_str),
        _ => not_found(&id_str),
    }
}

pub async fn get(State(st): State<Arc<AppState>>, PathParam(id): PathParam) -> Response<Body> {
    inc(&st.stats.polls);
    let Some(n) = parse_id(&id) else { return not_found(&id) };
    match st.store.get_for_poll(n, st.retention()) {
        Some(v) => with_id(view_response(v, StatusCode::OK), &id),
        None => not_found(&id),
    }
}

pub async fn cancel(State(st): State<Arc<AppState>>, PathParam(id): PathParam) -> Response<Body> {
    inc(&st.stats.cancels_received);
    let Some(n) = parse_id(&id) else { return not_found(&id) };
    match st.store.cancel(n, st.retention()) {
        Some((v, effective)) => {
            if effective {
                inc(&st.stats.cancels_effective);
            }
            with_id(view_response(v, StatusCode::OK), &id)
        }
        None => not_found(&id),
    }
}

pub async fn delete(State(st): State<Arc<AppState>>, PathParam(id): PathParam) -> Response<Body> {
    let Some(n) = parse_id(&id) else { return not_found(&id) };
    if st.store.remove(n) {
        let v = serde_json::json!({"id": id, "object": "response.deleted", "deleted": true});
        with_id(crate::error::json_value(StatusCode::OK, &v), &id)
    } else {
        not_found(&id)
    }
}
