//! OpenAI-compatible `POST /v1/completions` (filled in below).
use crate::error::ApiError;
use axum::http::StatusCode;

pub async fn create() -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "invalid_request_error", Some("not_implemented"), "not yet")
}
