//! The HTTP surface: one module per endpoint family, assembled into one router.
pub mod completions;
pub mod models;
pub mod responses;
pub mod stats;

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path};
use axum::http::request::Parts;
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
        .with_state(st);
    api.fallback(fallback).method_not_allowed_fallback(method_not_allowed)
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", Some("unknown_url"), "Unknown endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        Some("method_not_allowed"),
        "Method not allowed on this endpoint",
    )
}

/// A route's one path parameter, as text. A parameter that is not UTF-8 names nothing: it gets
/// the JSON 404 envelope like any unknown name, rather than axum's plain-text 400.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(_) => Err(ApiError::not_found("Nothing at this path (a path segment is not valid UTF-8)")),
        }
    }
}
