//! End-to-end tests: each starts the built `justin` binary against a fresh database and uses it
//! as a study server would, over HTTP and on the command line.
//!
//! `JUSTIN_TEST_BACKEND` (`postgres`, the default, or `sqlite`) picks the backend of that
//! database, and `make test` runs the suite once with each. A few tests are about PostgreSQL
//! itself and always use it; their names start with `pg_`, and the SQLite run leaves them out
//! with `cargo test -p justin-e2e -- --skip pg_`, so it needs no PostgreSQL server:
//!
//! - `startup::pg_serving_creates_a_missing_database`: a SQLite file is always created;
//! - `jobs::pg_an_update_killed_half_way_...`: it holds the update with `LOCK TABLE` (its
//!   SQLite counterpart is `jobs::sqlite_a_restarted_process_takes_over_...`);
//! - `move_to_postgres::pg_a_sqlite_study_moves_to_postgres_...`: it uses both backends;
//! - `numbers::pg_every_double_...`: they use both backends;
//! - `timestamps::pg_every_timestamp_form_survives_...`: it uses both backends;
//! - `outage::pg_a_postgresql_restart_...`: it stops and starts a PostgreSQL server of its own;
//! - `restart::pg_after_a_postgresql_restart_...`: the same;
//! - `shutdown::pg_sigterm_puts_back_...`: it holds the update with `LOCK TABLE`;
//! - `load_balanced::pg_three_instances_behind_nginx_...`: several processes share one
//!   database, which SQLite does not support (it also needs nginx installed).
//!
//! The test whose name starts with `browser_` (`browser::browser_the_dashboard_...`) needs
//! headless Chromium and ChromeDriver (Debian's `chromium` and `chromium-driver`). The normal
//! runs leave it out with `--skip browser_`; `make test` runs it on its own, on SQLite and on
//! PostgreSQL, when both are installed (scripts/ensure-chromium.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod backup_under_load;
mod beta_bernoulli;
mod browser;
mod commands;
mod connections;
mod corrections;
mod export;
mod flow;
mod imperfect;
mod jobs;
mod lifejacket;
mod load_balanced;
mod move_to_postgres;
mod numbers;
mod outage;
mod parameter_order;
mod private_logs;
mod readiness;
mod replay;
mod reproducibility;
mod restart;
mod restore;
mod shutdown;
mod simulate;
mod startup;
mod thompson;
mod timestamps;
mod trial_life;
mod update_replay;
mod walkthrough;
mod watchdog;
