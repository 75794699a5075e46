//! End-to-end tests: each starts the built `justin` binary against a fresh PostgreSQL database
//! and uses it as a study server would, over HTTP and on the command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup_under_load;
mod commands;
mod flow;
mod jobs;
mod move_to_postgres;
mod replay;
mod reproducibility;
mod restore;
mod startup;
