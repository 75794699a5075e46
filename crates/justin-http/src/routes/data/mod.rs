//! Study data.

pub mod upload;
