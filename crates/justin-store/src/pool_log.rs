//! The connection pool's error log. While PostgreSQL is unreachable, the pool's background
//! threads fail to connect many times a second, and libpq's messages span several lines
//! ("connection to server at ... failed: Connection refused\n\tIs the server running ..."). This
//! handler logs each error on one line and at most one line per [`INTERVAL`]; the next line
//! says how many errors were left out since the last one logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one pool error is logged per interval.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// An r2d2 error handler that logs one line per error, at most one per [`INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct PoolErrorLog {
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// When the last line was logged.
    logged_at: Option<Instant>,
    /// Errors since then that were not logged.
    suppressed: u64,
}

/// `text` on one line: its lines joined with "; ", each trimmed, empty ones dropped.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

impl PoolErrorLog {
    /// The line to log for `error` seen at `now`, or `None` when it is counted instead.
    fn line(&self, now: Instant, error: &str) -> Option<String> {
        let mut window = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window
            .logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < INTERVAL)
        {
            window.suppressed += 1;
            return None;
        }
        let suppressed = std::mem::take(&mut window.suppressed);
        window.logged_at = Some(now);
        let mut line = format!("connection pool: {}", one_line(error));
        if suppressed > 0 {
            line.push_str(&format!(
                " ({suppressed} more pool errors since the last one logged)"
            ));
        }
        Some(line)
    }
}

impl<E: std::error::Error> r2d2::HandleError<E> for PoolErrorLog {
    fn handle_error(&self, error: E) {
        if let Some(line) = self.line(Instant::now(), &error.to_string()) {
            log::error!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBPQ: &str = "connection to server at \"127.0.0.1\", port 5432 failed: \
        Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?\n";

    #[test]
    fn a_multi_line_error_is_logged_on_one_line() {
        let log = PoolErrorLog::default();
        let line = log.line(Instant::now(), LIBPQ).unwrap();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(
            line,
            "connection pool: connection to server at \"127.0.0.1\", port 5432 failed: \
             Connection refused; Is the server running on that host and accepting TCP/IP \
             connections?"
        );
    }

    #[test]
    fn a_burst_logs_one_line_per_interval_and_counts_the_rest() {
        let log = PoolErrorLog::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(log.line(at(0), LIBPQ).is_some());
        // Dozens of errors within the second: none logged.
        for ms in (10..1000).step_by(20) {
            assert_eq!(log.line(at(ms), LIBPQ), None);
        }
        let next = log.line(at(1000), LIBPQ).unwrap();
        assert!(
            next.ends_with("(50 more pool errors since the last one logged)"),
            "{next}"
        );
        assert_eq!(log.line(at(1500), LIBPQ), None);
        let quiet = log.line(at(5000), "timed out").unwrap();
        assert!(
            quiet.ends_with("(1 more pool errors since the last one logged)"),
            "{quiet}"
        );
        assert_eq!(
            log.line(at(7000), "timed out").unwrap(),
            "connection pool: timed out"
        );
    }
}
