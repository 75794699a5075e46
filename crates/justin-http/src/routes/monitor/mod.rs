//! `/api/v1/monitor`: the watchdog's report.

pub mod show;
