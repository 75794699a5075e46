//! Model parameters.

pub mod show;
