//! The benchmark's one error type: a message saying what failed and what to do about it.
//! The benchmark reports and stops; nothing matches on kinds of failure.

/// A failure of the benchmark or of what it measures, with a message for the person running it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

/// The benchmark's result type.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Adds what was being done to an error.
pub trait Context<T> {
    /// Wraps the error as `"{what}: {error}"`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| BenchError(format!("{}: {e}", what())))
    }
}

/// An error with this message.
pub fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(BenchError(message.into()))
}
