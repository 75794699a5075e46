# The commands developers and CI run. CI (.ci/run) calls `make lint check-layers test`.

CARGO ?= cargo
# Extra arguments for `justin reset-db`, `justin restore` and `justin replay`: ARGS=--yes really
# deletes or restores; ARGS=--updates replays the updates.
ARGS ?=
# The server the tests create their databases on (read by the tests too).
JUSTIN_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres

JUSTIN = $(CARGO) run -p justin-http --bin justin --
# Test cases schemathesis generates per API operation and phase in `make fuzz`.
FUZZ_MAX_EXAMPLES ?= 100

# The benchmark (make bench): measured seconds per step, warm-up seconds per step (not counted),
# connections (one step each), users registered first, study rows for the update at scale, and
# any other justin-bench option (BENCH_ARGS=--help lists them; --keep-scratch keeps the logs).
# The dashboard step seeds 1,000 participants × 2,000 decisions on each backend by default
# (BENCH_ARGS="--dashboard-participants 0" leaves it out). The stored-rows step drives the routes
# on a fresh database holding BENCH_STORED_ROWS decisions with their uploads, against one holding
# none (0 leaves it out).
BENCH_SECONDS ?= 10
BENCH_WARMUP ?= 1
BENCH_CONCURRENCY ?= 1,8,64
BENCH_USERS ?= 1000
BENCH_ROWS ?= 1000000
BENCH_STORED_ROWS ?= 10000000
BENCH_ARGS ?=
# Where cargo puts its builds: to run the benchmark binary without cargo re-resolving features,
# and for the example algorithm crate, which shares the workspace's builds of its dependencies.
TARGET_DIR = $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
BENCH_TARGET_DIR = $(TARGET_DIR)
# The worked example of an algorithm crate outside the workspace (docs/algorithms.md): a cargo
# project of its own, built into the workspace's target directory, where the end-to-end tests
# find its binary next to justin.
EXAMPLE_DIR = examples/beta-bernoulli
EXAMPLE_CARGO = cd $(EXAMPLE_DIR) && CARGO_TARGET_DIR="$(abspath $(TARGET_DIR))" $(CARGO)

.PHONY: help run test bench bench-smoke migrate backup reset-db restore erase-user replay monitor export export-lifejacket fmt fmt-check lint check-layers doc clean-test-dbs openapi fuzz lifejacket clients

help:
	@echo "make run             serve the API (config.toml; creates and migrates the database)"
	@echo "make test            every test on SQLite, then on PostgreSQL when one is reachable"
	@echo "make bench           benchmark the release build on PostgreSQL and SQLite, with the pgbench"
	@echo "                     ceiling, an update over BENCH_ROWS rows and the routes over BENCH_STORED_ROWS"
	@echo "                     stored decisions and uploads against none; figures in target/bench/"
	@echo "make bench-smoke     the same for about a second per step, as CI runs it"
	@echo "make migrate         apply pending database migrations"
	@echo "make backup          write a backup of every table into backup.dir"
	@echo "make reset-db        show what a reset would delete; ARGS=--yes deletes (after a backup)"
	@echo "make restore FILE=f  check a backup and show what it would replace; ARGS=--yes restores"
	@echo "make erase-user USER_ID=u  show what erasing a participant would do; ARGS=--yes erases (after a backup)"
	@echo "make replay          re-derive every stored decision; exits non-zero on any mismatch"
	@echo "make replay ARGS=--updates  recompute every parameter version from the rows its update read"
	@echo "make monitor         check the study now (the watchdog's report); exits 0 green, 1 yellow, 2 red, 3 cannot check"
	@echo "make export OUT=f    write the analysis table, one CSV row per decision"
	@echo "make export-lifejacket DIR=d  write the files lifejacket's analysis starts from into a new directory"
	@echo "make fmt             format the code"
	@echo "make fmt-check       check the formatting"
	@echo "make lint            clippy on every crate and target (the example's too), warnings are errors"
	@echo "make check-layers    check that the core, the numeric helpers and the algorithms stay free of"
	@echo "                     adapters, the simulator free of the server, the test kit out of binaries"
	@echo "make doc             build the API documentation"
	@echo "make openapi         write the OpenAPI document the code describes to docs/openapi.json"
	@echo "make fuzz            run schemathesis against a throwaway release server (FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) per operation)"
	@echo "make lifejacket      simulate a thompson study on a throwaway debug server, export it, replay its updates"
	@echo "                     and run lifejacket's checks and analysis on it (docs/analysis.md)"
	@echo "make clients         lint docs/openapi.json, generate a Python client and TypeScript types from it,"
	@echo "                     type-check a typed example and run a study through the Python client (docs/clients.md)"
	@echo "make clean-test-dbs  drop leftover justin_test_* databases on the test server"

run:
	$(JUSTIN) serve

# Two halves; the end-to-end tests start the built justin binary and the example's binary,
# hence the builds first (--locked: the example's Cargo.lock must be up to date). The SQLite
# half needs nothing installed: every unit test (the example's too), the SQLite adapter's
# conformance suite, the HTTP suite and the end-to-end tests on SQLite (without those named
# pg_, which are about PostgreSQL itself). The PostgreSQL half runs the PostgreSQL adapter's
# suite, the HTTP suite and every end-to-end test on PostgreSQL; one of those
# (load_balanced::pg_...) also needs nginx, which scripts/ensure-nginx.sh installs from Debian's
# packages when it is missing and this runs as root (or says how to install it). Without a
# reachable server the PostgreSQL half is reported as not run, except under CI=true, where it
# is required. Both halves leave out the browser test (browser_...), which runs last, on SQLite
# and then on PostgreSQL when reachable, where headless Chromium and ChromeDriver are installed
# (scripts/ensure-chromium.sh; .ci/run installs them); without them it is reported as not run,
# except under CI=true, where it is required.
test:
	$(CARGO) build --workspace --bins
	$(EXAMPLE_CARGO) build --locked
	JUSTIN_TEST_BACKEND=sqlite $(CARGO) test --workspace --exclude justin-store --exclude justin-e2e
	$(EXAMPLE_CARGO) test --locked
	JUSTIN_TEST_BACKEND=sqlite $(CARGO) test -p justin-e2e -- --skip pg_ --skip browser_
	@if bash scripts/pg-reachable.sh "$(JUSTIN_TEST_DATABASE_URL)"; then \
		set -e; \
		bash scripts/ensure-nginx.sh; \
		JUSTIN_TEST_BACKEND=postgres $(CARGO) test -p justin-store -p justin-e2e -- --skip browser_; \
		JUSTIN_TEST_BACKEND=postgres $(CARGO) test -p justin-http --test api; \
	elif [ "$$CI" = "true" ]; then \
		echo "make test: PostgreSQL is unreachable at $(JUSTIN_TEST_DATABASE_URL) and CI=true requires the PostgreSQL half" >&2; \
		exit 1; \
	else \
		echo "make test: PostgreSQL half NOT RUN: nothing answers at $(JUSTIN_TEST_DATABASE_URL); set JUSTIN_TEST_DATABASE_URL to a server where this user may CREATE DATABASE to run it"; \
	fi
	@if bash scripts/ensure-chromium.sh; then \
		set -e; \
		JUSTIN_TEST_BACKEND=sqlite $(CARGO) test -p justin-e2e browser_; \
		if bash scripts/pg-reachable.sh "$(JUSTIN_TEST_DATABASE_URL)"; then \
			JUSTIN_TEST_BACKEND=postgres $(CARGO) test -p justin-e2e browser_; \
		fi; \
	elif [ "$$CI" = "true" ]; then \
		echo "make test: CI=true requires the browser test: install with \`apt-get install chromium chromium-driver\`" >&2; \
		exit 1; \
	else \
		echo "make test: browser test NOT RUN: install with \`apt-get install chromium chromium-driver\`"; \
	fi

# Not part of `make test`: timing never decides a test. Builds the release justin binary and the
# load generator, then runs every step against a fresh PostgreSQL database (dropped at the end)
# and a fresh SQLite file; exits non-zero on any error answer, transport error or failed step.
bench:
	$(CARGO) build --release -p justin-http -p justin-bench --bin justin --bin justin-bench
	$(BENCH_TARGET_DIR)/release/justin-bench --seconds $(BENCH_SECONDS) --warmup $(BENCH_WARMUP) \
		--concurrency $(BENCH_CONCURRENCY) --users $(BENCH_USERS) --rows $(BENCH_ROWS) \
		--stored-rows $(BENCH_STORED_ROWS) --pg-url "$(JUSTIN_TEST_DATABASE_URL)" --out-dir target/bench --label bench $(BENCH_ARGS)

# CI's proof that the benchmark still works: every step for about a second, on the debug build
# `make test` has just made (the same cargo command, so nothing is built again).
bench-smoke:
	$(CARGO) build --workspace --bins
	$(BENCH_TARGET_DIR)/debug/justin-bench --seconds 1 --warmup 0.2 --concurrency 1,8,64 \
		--users 50 --rows 10000 --dashboard-participants 20 --dashboard-decisions 50 \
		--dashboard-requests 5 --algorithm-rounds 1 --stored-rows 20000 --pg-url "$(JUSTIN_TEST_DATABASE_URL)" \
		--out-dir target/bench --label smoke $(BENCH_ARGS)

migrate:
	$(JUSTIN) migrate

backup:
	$(JUSTIN) backup

reset-db:
	$(JUSTIN) reset-db $(ARGS)

restore:
	@test -n "$(FILE)" || { echo "make restore: name the backup, e.g. make restore FILE=backups/justin-backup-....tar ARGS=--yes" >&2; exit 2; }
	$(JUSTIN) restore "$(FILE)" $(ARGS)

# USER_ID, not USER: the shell's USER names the login.
erase-user:
	@test -n "$(USER_ID)" || { echo "make erase-user: name the participant, e.g. make erase-user USER_ID=u1 ARGS=--yes" >&2; exit 2; }
	$(JUSTIN) erase-user $(ARGS) -- "$(USER_ID)"

replay:
	$(JUSTIN) replay $(ARGS)

# The watchdog's report for cron: exit 0 green, 1 yellow, 2 red, 3 when it cannot check.
# ARGS=--json prints the body GET /api/v1/monitor answers.
monitor:
	@$(JUSTIN) monitor $(ARGS)

# The analysis table, one CSV row per decision: make export OUT=study.csv
OUT ?= study.csv
export:
	$(JUSTIN) export --out $(OUT)

# The files an adaptivity-aware analysis (lifejacket) starts from, in a new or empty directory
# (needs a [schedule]; docs/analysis.md): make export-lifejacket DIR=study-export
export-lifejacket:
	@test -n "$(DIR)" || { echo "make export-lifejacket: name a new or empty directory, e.g. make export-lifejacket DIR=study-export" >&2; exit 2; }
	$(JUSTIN) export --for lifejacket "$(DIR)"

fmt:
	$(CARGO) fmt --all
	cd $(EXAMPLE_DIR) && $(CARGO) fmt

fmt-check:
	$(CARGO) fmt --all -- --check
	cd $(EXAMPLE_DIR) && $(CARGO) fmt -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(EXAMPLE_CARGO) clippy --locked --all-targets -- -D warnings

check-layers:
	CARGO="$(CARGO)" bash scripts/check-layers.sh

doc:
	$(CARGO) doc --workspace --no-deps

# The committed copy of the served document; a test fails when they differ. Written through a
# temporary file so a failed build leaves the old copy in place.
openapi:
	$(JUSTIN) openapi > docs/openapi.json.tmp || { rm -f docs/openapi.json.tmp; exit 1; }
	mv docs/openapi.json.tmp docs/openapi.json

# Not part of `make test`: it needs Python and network access to PyPI the first time.
fuzz:
	CARGO="$(CARGO)" FUZZ_MAX_EXAMPLES="$(FUZZ_MAX_EXAMPLES)" bash scripts/fuzz.sh

# A simulated thompson study through the whole analysis hand-off: export, replay of the updates,
# conversion and lifejacket (docs/analysis.md). Needs Python 3 and, the first time, PyPI for
# the pinned analysis/requirements.txt (into .venv-analysis/). LJ_* variables: scripts/lifejacket.sh.
lifejacket:
	CARGO="$(CARGO)" bash scripts/lifejacket.sh

# What a study server's team generates from docs/openapi.json, checked end to end
# (docs/clients.md): the pinned Redocly lint, a Python client (openapi-python-client, pinned in
# clients/requirements.txt, into .venv-clients/) and TypeScript types (openapi-typescript and
# typescript, pinned in clients/package-lock.json, into clients/node_modules/) generated into
# target/clients/, `tsc --strict` on clients/example.ts, and clients/study_flow.py through the
# Python client against two throwaway debug servers. Needs Python 3, Node.js and npm and, the
# first time, PyPI and the npm registry.
clients:
	CARGO="$(CARGO)" bash scripts/clients.sh

# Tests drop their databases when they end; a killed test run can leave some behind.
clean-test-dbs:
	@command -v psql >/dev/null 2>&1 || { \
		echo "clean-test-dbs: psql not found; install the PostgreSQL client (postgresql-client)" >&2; \
		exit 1; }
	@printf '%s\n' "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname) \
		FROM pg_database WHERE datname LIKE 'justin\_test\_%' ORDER BY datname \gexec" \
		| psql -X -q -v ON_ERROR_STOP=1 --echo-queries "$(JUSTIN_TEST_DATABASE_URL)"
	@echo "clean-test-dbs: no justin_test_* databases left"
