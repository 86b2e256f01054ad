//! `GET /v1/models`, `GET /v1/models/{id}`.
use super::PathParam;
use crate::error::{json_value, ApiError};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

fn model_obj(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "sail-lite"})
}

pub async fn list(State(st): State<Arc<AppState>>) -> Response<Body> {
    let data: Vec<Value> = st.models.iter().map(|m| model_obj(m)).collect();
    json_value(StatusCode::OK, &json!({"object": "list", "data": data}))
}

pub async fn get(State(st): State<Arc<AppState>>, PathParam(id): PathParam) -> Response<Body> {
    match st.model(&id) {
        Some(m) => json_value(StatusCode::OK, &model_obj(&m)),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            format!("The model '{id}' does not exist"),
        )
        .with_param("model")
        .into_response(),
    }
}
