//! The HTTP surface: one module per endpoint family, assembled into one router.
pub mod completions;
pub mod models;
pub mod responses;
pub mod stats;

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

pub fn router(st: Arc<AppState>, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/v1/responses", post(responses::create))
        .route("/v1/responses/{id}", get(responses::get).delete(responses::delete))
        .route("/v1/responses/{id}/cancel", post(responses::cancel))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::get))
        .route("/v1/completions", post(completions::create))
        // Tinker's OpenAI-compatible layout (<TINKER_BASE_URL>/oai/api/v1), so a client pointed at
        // the emulator through TINKER_BASE_URL works unchanged.
        .route("/oai/api/v1/completions", post(completions::create))
        .route("/oai/api/v1/models", get(models::list))
        .route("/_stats", get(stats::get))
        .route("/_stats/reset", post(stats::reset))
        .route("/_tinker/archives/{name}", get(crate::archives::get_archive))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(st.clone());
    api.merge(crate::tinker_rest::routes(st)).fallback(fallback).method_not_allowed_fallback(method_not_allowed)
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", Some("unknown_url"), "Unknown endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", Some("method_not_allowed"), "Method not allowed on this endpoint")
}
