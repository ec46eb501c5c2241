# Molecule host: developer and CI entry points.
#
#   make test     what CI runs (through .ci/run): fmt, clippy, tests
#   make test-ui  the console's headless-Chromium tests, with screenshots of every page
#   make run      serve locally on 127.0.0.1:8080 (SQLite under ./data)
#   make plugins  build the extension components (plugins/) for wasm32-wasip2
#   make agent    build the reference agent as a static binary (the process runtime runs it)
#   make image    build the agent image molecule-agent:dev (no registry: FROM nothing + busybox)
#   make host-image  build the host image molecule-host:<version> and :dev (FROM scratch + busybox)
#   make validate-manifests  check deploy/kubernetes against the Kubernetes schemas, offline
#   make pg       start the private test PostgreSQL; make pg-stop stops it
#   make fuzz-api schemathesis against a live host, from its own /openapi.json
#
# The test PostgreSQL is managed by scripts/test-postgres.sh (data dir
# $MOLECULE_TEST_PG_DIR, default /tmp/molecule-test-pg; port
# $MOLECULE_TEST_PG_PORT, default 55432). It is left running between runs.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c

# Builds land in the repository's own target directories whatever the caller's environment says:
# the host, the tests and this Makefile look for the components in plugins/target and for the
# agent in target/, so a CARGO_TARGET_DIR set globally (a common habit) would build them where
# nothing finds them. The suite's own test binaries go to target/ too.
unexport CARGO_TARGET_DIR
.DEFAULT_GOAL := test
MAKEFLAGS += --no-builtin-rules

PG_SCRIPT := scripts/test-postgres.sh

# The wasm32-wasip2 installer lives in the shared toolchain folder beside the repository (CI
# clones the repository next to `shared/`). It tries rustup, else unpacks a bundled std.
WASM_TARGET_INSTALLER := $(CURDIR)/../shared/toolchain/install-wasm-target.sh
PLUGINS_MANIFEST := plugins/Cargo.toml
PLUGINS_OUT := plugins/target/wasm32-wasip2/release

AGENT_TARGET := x86_64-unknown-linux-gnu
AGENT_BINARY := target/$(AGENT_TARGET)/release/molecule-agent

.PHONY: campaign-soak deps wasm-target plugins agent image pg pg-stop test lint-layers test-ui \
	ui-tools run bench bench-tools fuzz-api clean host-image host-test-image validate-manifests \
	campaign-faults campaign-replicas campaign-kill fuzz

# deps: idempotent machine setup that run, test and bench depend on.
deps:
	@command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found on PATH (install Rust with rustup)" >&2; exit 1; }
	@$(MAKE) --no-print-directory plugins
	@if docker info >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory image; \
	elif [[ "$${CI:-}" == "true" ]]; then \
		echo "error: CI needs a Docker engine (docker info failed)" >&2; exit 1; \
	else \
		echo "deps: no Docker engine answers; building the agent for the process runtime only"; \
		$(MAKE) --no-print-directory agent; \
	fi

# wasm-target: make the wasm32-wasip2 standard library available (idempotent).
wasm-target:
	@if [[ -f "$(WASM_TARGET_INSTALLER)" ]]; then \
		bash "$(WASM_TARGET_INSTALLER)"; \
	elif libdir="$$(rustc --print target-libdir --target wasm32-wasip2 2>/dev/null)" && [[ -d "$$libdir" ]]; then \
		:; \
	elif ! rustup target add wasm32-wasip2; then \
		echo "error: the wasm32-wasip2 target is missing: $(WASM_TARGET_INSTALLER) does not exist and 'rustup target add wasm32-wasip2' failed" >&2; \
		exit 1; \
	fi

# plugins: build the default extension components and the test guests (plugins/, a workspace
# of its own) into $(PLUGINS_OUT)/<crate_name>.wasm; the host installs the defaults from there.
plugins: wasm-target
	cargo build --manifest-path $(PLUGINS_MANIFEST) --target wasm32-wasip2 --release
	@echo "plugins: components in $(PLUGINS_OUT)/:"
	@ls -l $(PLUGINS_OUT)/*.wasm | awk '{ n = $$NF; sub(".*/", "", n); printf "  %-28s %7d bytes\n", n, $$5 }'

# agent: the reference agent, statically linked (--target keeps the flag off proc macros).
agent:
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p molecule-agent --target $(AGENT_TARGET)

# image: molecule-agent:dev from busybox-static and the static agent (idempotent; skips the
# import when the image already carries this binary's digest).
image:
	bash scripts/build-agent-image.sh

# host-image: molecule-host:<version of host/Cargo.toml> and molecule-host:dev from the static
# host, the default components, the org and workspace templates and busybox-static, built FROM
# scratch (nothing pulled); runs as uid 10001 with a /health HEALTHCHECK. Idempotent: skips the
# build when the image's label already carries the digest of these files. deploy/single-machine
# runs it; the deploy spec (tests/tests/deploy.rs) brings that recipe up from host-test-image.
host-image: plugins
	bash scripts/build-host-image.sh

# host-test-image: molecule-host:test, the same image from the debug `molecule` binary (and the
# shared libraries it links) that `make test` has already built, for the deploy spec: a second,
# static release build would add 15-20 minutes to CI.
host-test-image: plugins
	cargo build -p molecule-host --bin molecule
	MOLECULE_HOST_BINARY=target/debug/molecule bash scripts/build-host-image.sh

# validate-manifests: deploy/kubernetes (and its examples) against the Kubernetes API schemas
# with kubernetes-validate --strict (pinned, installed once into target/k8s-venv; it ships the
# schemas, so validating needs no network).
KUBERNETES_VALIDATE_VERSION := 1.37.0
K8S_VENV := target/k8s-venv
validate-manifests:
	@if ! "$(K8S_VENV)/bin/kubernetes-validate" --version 2>/dev/null | grep -qxF "$(KUBERNETES_VALIDATE_VERSION)"; then \
		echo "validate-manifests: installing kubernetes-validate $(KUBERNETES_VALIDATE_VERSION) into $(K8S_VENV)"; \
		python3 -m venv "$(K8S_VENV)"; \
		"$(K8S_VENV)/bin/pip" install --quiet "kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)"; \
	fi
	"$(K8S_VENV)/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml deploy/kubernetes/examples/*.yaml
	@echo "validate-manifests: deploy/kubernetes is valid"

# pg: start (installing/initialising if needed) the private test PostgreSQL.
pg:
	bash $(PG_SCRIPT) start

# pg-stop: stop the private test PostgreSQL (its data is kept).
pg-stop:
	bash $(PG_SCRIPT) stop

# test: formatting, lints, the plugins' native unit tests, then the whole test suite
# against the private PostgreSQL (its URL is exported as MOLECULE_TEST_PG_URL).
# (bench-tools for nginx: the replica campaign's short form puts its replicas behind it.)
test: deps ui-tools bench-tools validate-manifests
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p molecule-guest -p molecule-policy --target wasm32-wasip2 -- -D warnings
	cargo fmt --manifest-path $(PLUGINS_MANIFEST) --all -- --check
	cargo clippy --manifest-path $(PLUGINS_MANIFEST) --target wasm32-wasip2 -- -D warnings
	cargo clippy --manifest-path $(PLUGINS_MANIFEST) --all-targets -- -D warnings
	cargo test --manifest-path $(PLUGINS_MANIFEST)
	url="$$(bash $(PG_SCRIPT) start)"; \
	export MOLECULE_TEST_PG_URL="$$url"; \
	echo "MOLECULE_TEST_PG_URL=$$MOLECULE_TEST_PG_URL"; \
	trap 'echo "Test PostgreSQL left running at $$MOLECULE_TEST_PG_URL; stop it with: make pg-stop"' EXIT; \
	leftovers="$$(docker ps -aq --filter label=molecule.test.host 2>/dev/null || true)"; \
	if [[ -n "$$leftovers" ]]; then docker rm -f -v $$leftovers >/dev/null; fi; \
	cargo build -p molecule-host --bin molecule; \
	if docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory host-test-image; fi; \
	if cargo nextest --version >/dev/null 2>&1; then \
		cargo test --workspace --doc; \
		cargo nextest run --workspace; \
	else \
		cargo test --workspace; \
	fi; \
	left="$$(docker ps -aq --filter label=molecule.test.host 2>/dev/null || true)"; \
	if [[ -n "$$left" ]]; then echo "error: the suite left containers behind: $$left" >&2; exit 1; fi; \
	echo "no test container left behind"

# lint-layers: the host's layer rule (no module imports a module above it; host/tests/layers.rs).
# make test runs it with the rest of the suite.
lint-layers:
	cargo test -p molecule-host --test layers

# UI_SCREENSHOTS: where the console tests write their PNGs (one per page visited).
UI_SCREENSHOTS ?= $(CURDIR)/target/ui-screenshots

# test-ui: the operator console in headless Chromium (tests/tests/ui): sign-in, the demo org
# import watched live, a workspace's files and plugins, the classifier swap with its shadow
# report, the drift queue. Runs the real host with agents as local processes.
test-ui: deps ui-tools
	mkdir -p "$(UI_SCREENSHOTS)"
	MOLECULE_UI_SCREENSHOTS="$(UI_SCREENSHOTS)" cargo test -p molecule-e2e --test ui
	@echo "test-ui: screenshots in $(UI_SCREENSHOTS):"
	@ls -1 "$(UI_SCREENSHOTS)"/*.png | sed 's|^|  |'

# ui-tools: Debian's chromium and chromedriver for the console tests (idempotent, same style
# as bench-tools: apt-get update only when an install fails the first time).
ui-tools:
	@sudo=""; [[ "$$(id -u)" == 0 ]] || sudo="sudo"; \
	apt_install() { \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$$@" || \
		{ $$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$$@"; }; \
	}; \
	if ! [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then apt_install chromium chromium-driver; fi; \
	echo "ui-tools: $$(/usr/bin/chromedriver --version | head -n1)"

# run: build and serve the host in release mode (SQLite under ./data) and import the demo
# org (org-templates/demo) at start; importing is idempotent, so restarts create nothing twice.
# MOLECULE_BIND_ADDR defaults to 127.0.0.1:8080 and MOLECULE_ORG__IMPORT_ON_START to demo
# unless already set (set it empty to start without an org). Without MOLECULE_ADMIN_TOKEN or
# ADMIN_TOKEN an admin token is generated once into data/admin-token (0600) and printed: the
# demo's agents hold tokens from the first second, which closes a fresh install's open mode.
# The operator console's URL is printed too (and logged by the host as `console=`).
# MOLECULE_RUNTIME__TEMPLATES_DIR defaults to workspace-templates/ (the catalogue the console's
# Create form offers, and the templates the demo org's developers and researcher use).
run: deps
	mkdir -p data
	if [[ -z "$${MOLECULE_ADMIN_TOKEN:-$${ADMIN_TOKEN:-}}" ]]; then \
		if [[ ! -s data/admin-token ]]; then \
			(umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > data/admin-token); \
		fi; \
		export MOLECULE_ADMIN_TOKEN="$$(cat data/admin-token)"; \
		echo "admin token: $$MOLECULE_ADMIN_TOKEN (saved in data/admin-token)"; \
	fi; \
	echo "console: http://$${MOLECULE_BIND_ADDR:-127.0.0.1:8080}/ (sign in with the admin token)"; \
	MOLECULE_BIND_ADDR="$${MOLECULE_BIND_ADDR:-127.0.0.1:8080}" \
	MOLECULE_RUNTIME__AGENT_BINARY="$${MOLECULE_RUNTIME__AGENT_BINARY:-$(CURDIR)/$(AGENT_BINARY)}" \
	MOLECULE_ORG__IMPORT_ON_START="$${MOLECULE_ORG__IMPORT_ON_START-demo}" \
	MOLECULE_RUNTIME__TEMPLATES_DIR="$${MOLECULE_RUNTIME__TEMPLATES_DIR:-$(CURDIR)/workspace-templates}" \
		cargo run --release -p molecule-host --bin molecule -- serve

# bench: the store benchmarks (host/benches/store.rs) on SQLite and on the private
# PostgreSQL; criterion's reports land in target/criterion, and a closing table prints
# both medians and the PostgreSQL/SQLite ratio per benchmark. Then the extension benchmarks
# and the lifecycle load bench (tests/benches/lifecycle.rs: create → online for 10
# workspaces on process and Docker, and the 100-trigger restart storm), then the org import
# bench (tests/benches/org_import.rs: a 1,000-workspace template on SQLite and PostgreSQL),
# the plugin install bench (tests/benches/plugin_install.rs: WASM classifier and policy
# against the native fallbacks), the A2A proxy bench (tests/benches/a2a_proxy.rs: wrk
# against the echo agent directly, through nginx and through the host's
# POST /workspaces/{id}/a2a; p50/p90/p99, req/s and the host/direct and host/nginx ratios),
# the replica bench (tests/benches/replicas.rs: req/s through 1, 2 and 3 replicas of the
# release binary behind nginx, and event fan-out latency to another replica's /ws), and the
# scheduler bench (tests/benches/schedules.rs: 10,000 schedules due in the same second, fired
# to a loopback agent, on SQLite and PostgreSQL), and the memory search bench
# (tests/benches/memories.rs: p50/p99 of ranked, substring and missing searches over 100,000
# memories on SQLite and PostgreSQL).
bench: deps bench-tools
	url="$$(bash $(PG_SCRIPT) start)"; \
	export MOLECULE_TEST_PG_URL="$$url"; \
	echo "MOLECULE_TEST_PG_URL=$$MOLECULE_TEST_PG_URL"; \
	cargo bench -p molecule-host --bench store && \
	cargo bench -p molecule-host --bench extensions && \
	cargo bench -p molecule-e2e --bench lifecycle && \
	cargo bench -p molecule-e2e --bench org_import && \
	cargo bench -p molecule-e2e --bench plugin_install && \
	cargo bench -p molecule-e2e --bench a2a_proxy && \
	cargo build --release -p molecule-host --bin molecule && \
	cargo bench -p molecule-e2e --bench replicas && \
	cargo bench -p molecule-e2e --bench schedules && \
	cargo bench -p molecule-e2e --bench memories

# bench-tools: what the A2A proxy bench drives, from Debian's packages (idempotent): nginx
# (nginx-light, else nginx) and the wrk load generator. apt-get update runs only when an
# install fails the first time (a stale or empty package list).
bench-tools:
	@sudo=""; [[ "$$(id -u)" == 0 ]] || sudo="sudo"; \
	apt_install() { \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$$@" || \
		{ $$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$$@"; }; \
	}; \
	command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || apt_install nginx-light || apt_install nginx; \
	command -v wrk >/dev/null 2>&1 || apt_install wrk; \
	echo "bench-tools: $$(PATH="$$PATH:/usr/sbin" command -v nginx) $$(command -v wrk)"

# fuzz-api: schemathesis (pinned, installed once into target/fuzz-venv) against a live host on
# a free 127.0.0.1 port with a throw-away SQLite data dir and the process runtime, driven by the
# host's own GET /openapi.json; fails on any 5xx and on any answer (status, content type,
# headers, body) the description does not allow. FUZZ_MAX_EXAMPLES (default 50) bounds the
# test cases per operation; FUZZ_SEED replays a run. See scripts/fuzz-api.sh.
fuzz-api:
	bash scripts/fuzz-api.sh

# campaign-soak: the soak (tests/tests/soak.rs) at full size: one hour, 200 workspaces on the
# process runtime heartbeating, delegating and having files written; the host's RSS, open
# descriptors, tokio tasks and database size sampled each minute, printed as a table and drawn
# in target/soak/soak.svg. make test runs the same file for 60 s with 20 workspaces.
# SOAK_WORKSPACES, SOAK_SECONDS and SOAK_SAMPLE_SECS override the shape.
campaign-soak: deps
	cargo build -p molecule-host --bin molecule
	SOAK_WORKSPACES="$${SOAK_WORKSPACES:-200}" SOAK_SECONDS="$${SOAK_SECONDS:-3600}" \
	SOAK_SAMPLE_SECS="$${SOAK_SAMPLE_SECS:-60}" \
		cargo test -p molecule-e2e --test soak -- --nocapture

# campaign-faults: the runtime fault campaign (tests/tests/runtime_faults.rs): an agent container
# killed from outside, the Docker engine cut off behind a socket proxy and restored, agents that
# never answer or answer garbage, the data dir's disk full (a tmpfs; needs root). Prints the
# figures (time to detect the kill, to recover after the engine returns, errors in the disk-full
# window) as a table. make test runs the same file.
campaign-faults: deps
	log="$$(mktemp)"; \
	status=0; cargo test -p molecule-e2e --test runtime_faults -- --nocapture 2>&1 | tee "$$log" || status=$$?; \
	echo; echo "campaign-faults figures:"; \
	grep -h '^figure: ' "$$log" | sed 's/^figure: //' | awk -F' = ' '{ printf "  %-48s %s\n", $$1, $$2 }'; \
	rm -f "$$log"; exit $$status

# campaign-replicas: the replica campaign (tests/tests/replica_campaign.rs) at length: three
# replicas behind nginx on a throw-away PostgreSQL under a mixed load, one SIGKILLed and
# restarted every few seconds (REPLICA_CAMPAIGN_KILLS, default 30; REPLICA_CAMPAIGN_KILL_EVERY_MS,
# default 4000), then PostgreSQL restarted; prints failed requests, missed events, lease
# handovers and recovery times. make test runs it with 3 kills.
campaign-replicas: deps bench-tools
	cargo build -p molecule-host --bin molecule
	log="$$(mktemp)"; \
	status=0; REPLICA_CAMPAIGN_KILLS="$${REPLICA_CAMPAIGN_KILLS:-30}" \
		cargo test -p molecule-e2e --test replica_campaign -- --nocapture 2>&1 | tee "$$log" || status=$$?; \
	echo; echo "campaign-replicas figures:"; \
	grep -h '^figure: ' "$$log" | sed 's/^figure: //' | awk -F' = ' '{ printf "  %-56s %s\n", $$1, $$2 }'; \
	rm -f "$$log"; exit $$status

# campaign-kill: the kill-anywhere campaign (tests/tests/kill_anywhere.rs) at length: a host
# process under a real workload (org imports of 200 workspaces, plugin installs, delegations,
# file writes, secrets, restarts) SIGKILLed at random moments KILL_CAMPAIGN_KILLS times (default
# 50) per backend, restarted on the same data dir and database, its invariants checked after
# each restart. Prints "N kills, M invariant violations" per backend with each violation's seed
# and kill index; KILL_CAMPAIGN_SEED=<seed> KILL_CAMPAIGN_ONLY=<index> replays one kill.
# make test runs it with 3 kills.
campaign-kill: deps
	cargo build -p molecule-host --bin molecule
	url="$$(bash $(PG_SCRIPT) start)"; \
	export MOLECULE_TEST_PG_URL="$$url"; \
	log="$$(mktemp)"; \
	status=0; KILL_CAMPAIGN_KILLS="$${KILL_CAMPAIGN_KILLS:-50}" \
		cargo test -p molecule-e2e --test kill_anywhere killing_the_host_anywhere -- --nocapture 2>&1 | tee "$$log" || status=$$?; \
	echo; echo "campaign-kill figures:"; \
	grep -hE '^\[(sqlite|postgres)\] ([0-9]+ kills|  )' "$$log" | sed 's/^/  /'; \
	rm -f "$$log"; exit $$status

# fuzz: the coverage-guided campaign (cargo-fuzz and libFuzzer; needs `cargo +nightly`) over
# the host's parsers and boundary checks (fuzz/fuzz_targets/): installs the pinned cargo-fuzz
# once, runs each target for FUZZ_RUNS executions (default 1000000) on its checked-in corpus
# (fuzz/corpus/<target>/), one after another, minimises the corpus with `cargo fuzz cmin`, and
# prints executions, exec/s, corpus size and crashes per target. A crash's input lands in
# fuzz/artifacts/<target>/; once fixed, save it under fuzz/regressions/<target>/ so make test
# (host/tests/fuzz_corpora.rs) replays it. FUZZ_TARGETS picks targets; see fuzz/run.sh.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_RUNS ?= 1000000
fuzz:
	@cargo +nightly --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal || { \
		echo "error: make fuzz needs a nightly toolchain (libFuzzer's coverage flags) and rustup could not install one" >&2; exit 1; }
	@cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $(CARGO_FUZZ_VERSION)" || \
		cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked
	FUZZ_RUNS=$(FUZZ_RUNS) bash fuzz/run.sh

# clean: stop the test PostgreSQL, delete its data dir, and `cargo clean` (both workspaces).
clean:
	bash $(PG_SCRIPT) stop
	d="$${MOLECULE_TEST_PG_DIR:-/tmp/molecule-test-pg}"; d="$${d%/}"; \
	rm -rf -- "$$d" "$$d.lock" "$$d.initdb-tmp"
	cargo clean
	cargo clean --manifest-path $(PLUGINS_MANIFEST)
