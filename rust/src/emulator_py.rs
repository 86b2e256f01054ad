//! Python binding for the in-process emulator (owned by the emulator work; placeholder for now).
use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
