//! The one place that names the model implementation (the `sail-model` crate; a local stand-in
//! with the same API while that crate is being written).
pub use crate::model_stub::*;
