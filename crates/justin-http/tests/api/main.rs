//! The HTTP API test suite: each test starts the real wiring (`justin_http::startup::start`)
//! in-process on port 0 against a fresh PostgreSQL database and talks to it over HTTP, holding
//! it to the contract's exact statuses and messages. One binary, so the suite links once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod action;
mod auth;
mod commands;
mod contract;
mod corrections;
mod dashboard;
mod decision_threads;
mod decision_types;
mod export;
mod health;
mod helpers;
mod host_decision;
mod hostile;
mod metrics;
mod missing;
mod monitor;
mod openapi;
mod outcome_window;
mod participants;
mod reproducibility;
mod safety;
mod slow_clients;
mod stopping;
mod template;
mod timestamps;
mod trial;
mod update;
mod upload;
mod users;
