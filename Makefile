# The commands developers and CI run. CI (.ci/run) calls `make lint check-layers test`.

CARGO ?= cargo
# Extra arguments for `justin reset-db` and `justin restore`: ARGS=--yes really deletes or restores.
ARGS ?=
# The server the tests create their databases on (read by the tests too).
JUSTIN_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres

JUSTIN = $(CARGO) run -p justin-http --bin justin --

.PHONY: help run test migrate backup reset-db restore replay fmt fmt-check lint check-layers doc clean-test-dbs

help:
	@echo "make run             serve the API (config.toml; creates and migrates the database)"
	@echo "make test            build the justin binary, then run every test (needs PostgreSQL)"
	@echo "make migrate         apply pending database migrations"
	@echo "make backup          write a backup of every table into backup.dir"
	@echo "make reset-db        show what a reset would delete; ARGS=--yes deletes (after a backup)"
	@echo "make restore FILE=f  check a backup and show what it would replace; ARGS=--yes restores"
	@echo "make replay          re-derive every stored decision; exits non-zero on any mismatch"
	@echo "make fmt             format the code"
	@echo "make fmt-check       check the formatting"
	@echo "make lint            clippy on every crate and target, warnings are errors"
	@echo "make check-layers    check that the core and the algorithms stay free of adapters"
	@echo "make doc             build the API documentation"
	@echo "make clean-test-dbs  drop leftover justin_test_* databases on the test server"

run:
	$(JUSTIN) serve

# The end-to-end tests in tests/ start the built justin binary, so build it first.
test:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

migrate:
	$(JUSTIN) migrate

backup:
	$(JUSTIN) backup

reset-db:
	$(JUSTIN) reset-db $(ARGS)

restore:
	@test -n "$(FILE)" || { echo "make restore: name the backup, e.g. make restore FILE=backups/justin-backup-....tar ARGS=--yes" >&2; exit 2; }
	$(JUSTIN) restore "$(FILE)" $(ARGS)

replay:
	$(JUSTIN) replay

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

check-layers:
	CARGO="$(CARGO)" bash scripts/check-layers.sh

doc:
	$(CARGO) doc --workspace --no-deps

# Tests drop their databases when they end; a killed test run can leave some behind.
clean-test-dbs:
	@command -v psql >/dev/null 2>&1 || { \
		echo "clean-test-dbs: psql not found; install the PostgreSQL client (postgresql-client)" >&2; \
		exit 1; }
	@printf '%s\n' "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname) \
		FROM pg_database WHERE datname LIKE 'justin\_test\_%' ORDER BY datname \gexec" \
		| psql -X -q -v ON_ERROR_STOP=1 --echo-queries "$(JUSTIN_TEST_DATABASE_URL)"
	@echo "clean-test-dbs: no justin_test_* databases left"
