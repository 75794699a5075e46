//! Decisions the study server made itself.

pub mod record;
