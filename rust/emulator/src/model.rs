//! The one place that names the model implementation: the `sail-model` crate (byte-level n-gram
//! model + LoRA adapters).
pub use sail_model::*;
