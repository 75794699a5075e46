//! Decisions.

pub mod request;
