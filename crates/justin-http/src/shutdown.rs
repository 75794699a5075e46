//! Stopping gracefully on SIGTERM (what systemd, Docker and Kubernetes send) or SIGINT
//! (Ctrl-C): stop accepting connections, let the requests in flight finish, then give the
//! update under way what is left of `server.shutdown_grace_secs` before it is put back for the
//! next start. [`StopSignal`] carries the moment the stop began from the signal to the thread
//! that waits for the server.

use std::future::poll_fn;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::rt::signal::unix::{signal, SignalKind};

/// When the stop began, set once by whoever stops the server first.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<OnceLock<Instant>>);

impl StopSignal {
    /// Records that the stop begins now; later calls keep the first moment.
    pub fn begin(&self) {
        // A second stop (say SIGINT after SIGTERM) does not move the deadline.
        self.0.get_or_init(Instant::now);
    }

    /// The end of the grace period: `grace` after the stop began, or from now when nobody
    /// recorded a beginning (the server ended on its own).
    pub fn deadline(&self, grace: Duration) -> Instant {
        self.0.get().copied().unwrap_or_else(Instant::now) + grace
    }
}

/// Starts a thread that waits for SIGTERM or SIGINT, then stops `server` gracefully: no new
/// connections, requests in flight get up to `grace`.
///
/// # Errors
/// When the signal handlers cannot be installed or the thread cannot start.
pub fn stop_on_signals(
    server: ServerHandle,
    stop: StopSignal,
    grace: Duration,
) -> std::io::Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("justin-signals".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let handlers = signal(SignalKind::terminate())
                    .and_then(|t| signal(SignalKind::interrupt()).map(|i| (t, i)));
                let (mut terminate, mut interrupt) = match handlers {
                    Ok(handlers) => {
                        ready_tx.send(Ok(())).ok();
                        handlers
                    }
                    Err(e) => {
                        ready_tx.send(Err(e)).ok();
                        return;
                    }
                };
                let name = poll_fn(|cx| {
                    if terminate.poll_recv(cx).is_ready() {
                        return Poll::Ready("SIGTERM");
                    }
                    if interrupt.poll_recv(cx).is_ready() {
                        return Poll::Ready("SIGINT");
                    }
                    Poll::Pending
                })
                .await;
                stop.begin();
                log::info!(
                    "{name} received: stopping; no new connections are accepted, requests in \
                     flight and the update under way get up to {}s",
                    grace.as_secs()
                );
                server.stop(true).await;
            });
        })?;
    ready_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the signal thread ended at once")))
}
