# Molecule host: developer and CI entry points.
#
#   make test     what CI runs (through .ci/run): fmt, clippy, tests
#   make run      serve locally on 127.0.0.1:8080 (SQLite under ./data)
#   make pg       start the private test PostgreSQL; make pg-stop stops it
#
# The test PostgreSQL is managed by scripts/test-postgres.sh (data dir
# $MOLECULE_TEST_PG_DIR, default /tmp/molecule-test-pg; port
# $MOLECULE_TEST_PG_PORT, default 55432). It is left running between runs.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
MAKEFLAGS += --no-builtin-rules

PG_SCRIPT := scripts/test-postgres.sh

.PHONY: deps pg pg-stop test run bench clean

# deps: idempotent machine setup that run, test and bench depend on.
deps:
	@command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found on PATH (install Rust with rustup)" >&2; exit 1; }
# ---- more machine setup goes here; every step must be idempotent ----
#   later: `rustup target add wasm32-wasip2`
#   later: build/pull the Docker images the workspaces need
# ----------------------------------------------------------------------

# pg: start (installing/initialising if needed) the private test PostgreSQL.
pg:
	bash $(PG_SCRIPT) start

# pg-stop: stop the private test PostgreSQL (its data is kept).
pg-stop:
	bash $(PG_SCRIPT) stop

# test: formatting, lints, then the whole test suite against the private
# PostgreSQL (its URL is exported as MOLECULE_TEST_PG_URL).
test: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	url="$$(bash $(PG_SCRIPT) start)"; \
	export MOLECULE_TEST_PG_URL="$$url"; \
	echo "MOLECULE_TEST_PG_URL=$$MOLECULE_TEST_PG_URL"; \
	trap 'echo "Test PostgreSQL left running at $$MOLECULE_TEST_PG_URL; stop it with: make pg-stop"' EXIT; \
	if cargo nextest --version >/dev/null 2>&1; then \
		cargo test --workspace --doc; \
		cargo nextest run --workspace; \
	else \
		cargo test --workspace; \
	fi

# run: build and serve the host in release mode (SQLite under ./data);
# MOLECULE_BIND_ADDR defaults to 127.0.0.1:8080 unless already set.
run: deps
	MOLECULE_BIND_ADDR="$${MOLECULE_BIND_ADDR:-127.0.0.1:8080}" \
		cargo run --release -p molecule-host --bin molecule -- serve

# bench: the store benchmarks (host/benches/store.rs) on SQLite and on the private
# PostgreSQL; criterion's reports land in target/criterion, and a closing table prints
# both medians and the PostgreSQL/SQLite ratio per benchmark.
bench: deps
	url="$$(bash $(PG_SCRIPT) start)"; \
	export MOLECULE_TEST_PG_URL="$$url"; \
	echo "MOLECULE_TEST_PG_URL=$$MOLECULE_TEST_PG_URL"; \
	cargo bench -p molecule-host --bench store

# clean: stop the test PostgreSQL, delete its data dir, and `cargo clean`.
clean:
	bash $(PG_SCRIPT) stop
	d="$${MOLECULE_TEST_PG_DIR:-/tmp/molecule-test-pg}"; d="$${d%/}"; \
	rm -rf -- "$$d" "$$d.lock" "$$d.initdb-tmp"
	cargo clean
