//! Participants.

pub mod add;
pub mod change;
pub mod erase;
pub mod show;
pub mod withdraw;
