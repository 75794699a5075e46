//! Model updates.

pub mod request;
pub mod status;
