//! Study data.

pub mod history;
pub mod upload;
