//! Tinker-style checkpoint archive hosting: `add_archive` stores bytes and returns a signed,
//! expiring URL `.../_tinker/archives/<name>?expires=<unix>&signature=<hex>`; GET serves it while
//! valid (403 once expired or when the signature is wrong, 404 when unknown). No auth header: the
//! signature is the credential.
use crate::error::ApiError;
use crate::routes::PathParam;
use crate::state::{unix_now_f64, AppState};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

pub struct Archives {
    base_url: String,
    items: RwLock<HashMap<String, Bytes>>,
    // Two independently keyed SipHash instances give a 128-bit keyed signature (HMAC-ish).
    k1: RandomState,
    k2: RandomState,
}

impl Archives {
    pub fn new(base_url: String) -> Archives {
        Archives { base_url, items: RwLock::new(HashMap::new()), k1: RandomState::new(), k2: RandomState::new() }
    }

    fn sign(&self, name: &str, expires: u64) -> String {
        format!("{:016x}{:016x}", self.k1.hash_one((name, expires)), self.k2.hash_one((expires, name)))
    }

    /// Store an archive; returns its absolute signed URL valid for `ttl`.
    pub fn add(&self, name: &str, data: Vec<u8>, ttl: Duration) -> String {
        let mut clean: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
        if clean.is_empty() {
            clean.push_str("archive");
        }
        if !(clean.ends_with(".tar") || clean.ends_with(".tar.gz") || clean.ends_with(".tgz")) {
            clean.push_str(".tar");
        }
        self.items.write().insert(clean.clone(), Bytes::from(data));
        self.url(&clean, ttl)
    }

    /// A signed URL for an already stored archive (a fresh one per resolve, like Tinker).
    pub fn url(&self, name: &str, ttl: Duration) -> String {
        let expires = (unix_now_f64() + ttl.as_secs_f64()).floor() as u64;
        format!("{}/_tinker/archives/{name}?expires={expires}&signature={}", self.base_url, self.sign(name, expires))
    }

    pub fn remove(&self, name: &str) -> bool {
        self.items.write().remove(name).is_some()
    }
}

#[derive(serde::Deserialize)]
pub struct SignedQuery {
    expires: Option<String>,
    signature: Option<String>,
}

fn forbidden(code: &'static str, msg: &str) -> Response<Body> {
    ApiError::new(StatusCode::FORBIDDEN, "access_denied", Some(code), msg).into_response()
}

pub async fn get_archive(
    State(st): State<Arc<AppState>>,
    PathParam(name): PathParam,
    q: Result<Query<SignedQuery>, axum::extract::rejection::QueryRejection>,
) -> Response<Body> {
    let a = &st.archives;
    let Some(data) = a.items.read().get(&name).cloned() else {
        return ApiError::not_found("No such archive").into_response();
    };
    let Ok(Query(q)) = q else { return forbidden("invalid_signature", "Malformed signed URL") };
    let (Some(exp), Some(sig)) = (q.expires, q.signature) else {
        return forbidden("invalid_signature", "Missing expires/signature: this URL is not signed");
    };
    let Ok(exp) = exp.parse::<u64>() else { return forbidden("invalid_signature", "Malformed expires") };
    if !constant_time_eq(sig.as_bytes(), a.sign(&name, exp).as_bytes()) {
        return forbidden("invalid_signature", "Invalid signature for this archive URL");
    }
    if unix_now_f64() >= exp as f64 {
        return forbidden("expired", "Request has expired: this signed archive URL is no longer valid");
    }
    crate::stats::inc(&st.stats.archive_downloads);
    let mut r = Response::new(Body::from(data));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
