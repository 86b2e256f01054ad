//! Placeholder for Tinker REST API routes (another engineer may add them); merged into the app.
use crate::state::AppState;
use axum::Router;
use std::sync::Arc;

pub fn routes(_state: Arc<AppState>) -> Router {
    Router::new()
}
