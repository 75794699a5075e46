//! `/api/v1/export`: the analysis table.

pub mod download;
