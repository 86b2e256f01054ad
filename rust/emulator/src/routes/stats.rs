//! `GET /_stats` (no auth; JSON counters) and `POST /_stats/reset`.
use crate::error::json_value;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, StatusCode};
use std::sync::Arc;

pub async fn get(State(st): State<Arc<AppState>>) -> Response<Body> {
    json_value(StatusCode::OK, &st.stats.to_json(st.store.len()))
}

pub async fn reset(State(st): State<Arc<AppState>>) -> Response<Body> {
    st.stats.reset();
    json_value(StatusCode::OK, &st.stats.to_json(st.store.len()))
}
