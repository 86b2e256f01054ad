//! Python binding for the in-process emulator: `sail_lite._core.EmulatorServer`.
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use sail_emulator::{EmulatorConfig, EmulatorHandle, StartError};
use std::time::Duration;

/// A running local Sail server. `EmulatorServer(config_json)` starts it; `shutdown()` stops it.
#[pyclass(frozen, module = "sail_lite._core")]
pub struct EmulatorServer {
    handle: EmulatorHandle,
}

#[pymethods]
impl EmulatorServer {
    #[new]
    fn new(py: Python<'_>, config_json: &str) -> PyResult<Self> {
        let cfg = EmulatorConfig::from_json(config_json).map_err(PyValueError::new_err)?;
        let handle = py.detach(|| EmulatorHandle::start_detailed(cfg)).map_err(|e| match e {
            StartError::Config(m) => PyValueError::new_err(m),
            StartError::Bind(m) => PyOSError::new_err(m),
            StartError::Runtime(m) => PyRuntimeError::new_err(m),
        })?;
        Ok(EmulatorServer { handle })
    }

    #[getter]
    fn host(&self) -> String {
        self.handle.local_addr().ip().to_string()
    }

    #[getter]
    fn port(&self) -> u16 {
        self.handle.local_addr().port()
    }

    #[getter]
    fn base_url(&self) -> String {
        self.handle.base_url().to_string()
    }

    fn stats_json(&self) -> String {
        self.handle.stats().to_string()
    }

    fn reset_stats(&self) {
        self.handle.reset_stats()
    }

    /// Apply a JSON merge patch to the live `latency` / `faults` / `retention_seconds`.
    fn update(&self, patch_json: &str) -> PyResult<()> {
        let patch: serde_json::Value =
            serde_json::from_str(patch_json).map_err(|e| PyValueError::new_err(format!("update: invalid JSON: {e}")))?;
        self.handle.update(patch).map_err(PyValueError::new_err)
    }

    /// Host `data` as a Tinker-style archive; returns its signed URL, valid for `ttl_seconds`.
    fn add_archive(&self, name: &str, data: &[u8], ttl_seconds: f64) -> PyResult<String> {
        if !(ttl_seconds.is_finite() && ttl_seconds >= 0.0) {
            return Err(PyValueError::new_err("ttl_seconds must be a finite number >= 0"));
        }
        let ttl = Duration::from_secs_f64(ttl_seconds.min(1e10));
        Ok(self.handle.add_archive(name, data.to_vec(), ttl))
    }

    fn is_running(&self) -> bool {
        self.handle.is_running()
    }

    fn shutdown(&self, py: Python<'_>) {
        py.detach(|| self.handle.shutdown())
    }

    fn __repr__(&self) -> String {
        format!("EmulatorServer(base_url={:?})", self.handle.base_url())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<EmulatorServer>()?;
    Ok(())
}
