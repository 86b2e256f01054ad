use pyo3::prelude::*;

mod emulator_py;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    emulator_py::register(m)?;
    Ok(())
}
