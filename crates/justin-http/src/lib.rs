//! The HTTP adapter of JustIn: actix-web routes over the core's use cases, the configuration,
//! logging, callback delivery and the wiring that starts it all, and the command line ([`run`])
//! that a service binary's `main` calls with its algorithms. The `justin` binary (`main.rs`) is
//! [`run`] with the built-in ones.

pub mod access_log;
mod allocator;
pub mod api_types;
pub mod auth;
pub mod blocking;
pub mod body;
#[cfg(test)]
mod body_numbers;
pub mod callbacks;
mod cli;
pub mod config;
pub mod connection;
pub mod dashboard;
pub mod database;
pub mod error;
pub mod export;
pub mod lifejacket;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod openapi;
pub mod request_metrics;
pub mod routes;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod timestamp;
pub mod updates;

pub use cli::run;
