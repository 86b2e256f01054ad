# The two commands a new user needs: `make demo` and `make test`.
# Everything else is set up on demand in .venv (Python deps) and target/ (Rust crates).
VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip
CARGO    ?= cargo
DEPS     := $(VENV)/.deps-installed
BUILT    := $(VENV)/.sail-lite-built
RUST_SRC := $(shell find rust -name '*.rs' -o -name Cargo.toml) Cargo.toml pyproject.toml

.PHONY: demo test test-rust test-python lint build deps soak bench clean

demo: build
	$(PY) -m sail_lite demo

test: lint test-rust test-python

test-rust:
	$(CARGO) test --workspace --release

# Static checks: lint and format of the Python package, strict types (the extension through its
# stub, which stubtest keeps honest), and the Rust workspace's fmt and clippy (its tests and simulations too).
lint: build
	$(VENV)/bin/ruff check python/sail_lite
	$(VENV)/bin/ruff format --check python/sail_lite
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest sail_lite._core
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --release --all-targets -- -D warnings

# Long soaks are behind the `soak` marker (run by `make soak`).
test-python: build
	$(PY) -m pytest -q -m "not soak"

soak: build
	$(PY) -m pytest -q -m soak tests

bench: build
	$(MAKE) -C benches all

build: $(BUILT)

$(BUILT): $(DEPS) $(RUST_SRC)
	$(VENV)/bin/maturin develop --release --quiet
	touch $@

deps: $(DEPS)

$(DEPS): .ci/requirements-test.txt .ci/requirements-cookbook.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r .ci/requirements-test.txt
	$(PIP) install --quiet --no-deps -r .ci/requirements-cookbook.txt
	touch $@

clean:
	rm -rf target $(VENV) .pytest_cache
