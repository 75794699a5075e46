//! Participants.

pub mod add;
