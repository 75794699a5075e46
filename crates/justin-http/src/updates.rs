//! The update worker: one thread per process that runs stored update requests one at a time.
//!
//! Requests live in the database, not here: the worker claims the oldest unfinished one
//! through the store, which also makes sure that only one worker of all the processes sharing
//! the database runs an update at any moment. A request accepted by this process wakes the
//! worker at once; requests accepted by other processes, and requests left behind by a
//! process that died, are found by polling. Each poll also delivers callbacks a stopped
//! process left undelivered and reloads the current parameters, so a version another process
//! published is used here too.

use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use justin_core::service::error_chain;
use justin_core::Service;

/// Wakes or stops the update worker.
#[derive(Clone, Debug)]
pub struct UpdateQueue {
    sender: mpsc::Sender<Signal>,
}

#[derive(Debug)]
enum Signal {
    /// A request was stored: look now rather than at the next poll.
    Wake,
    /// Finish the update under way, then end the thread.
    Stop,
}

impl UpdateQueue {
    /// Tells the worker a request was stored. A stopped worker needs no telling: the request
    /// is in the database and the next process to start will run it.
    pub fn wake(&self) {
        self.sender.send(Signal::Wake).ok();
    }

    /// Asks the worker to end once the update under way is done.
    pub fn stop(&self) {
        // A worker that has ended already needs no stop message.
        self.sender.send(Signal::Stop).ok();
    }
}

/// Starts the worker, polling every `poll_interval`.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn(
    service: Arc<Service>,
    poll_interval: Duration,
) -> std::io::Result<(UpdateQueue, JoinHandle<()>)> {
    let (sender, receiver) = mpsc::channel::<Signal>();
    let handle = std::thread::Builder::new()
        .name("justin-update".into())
        .spawn(move || loop {
            if work(&service, &receiver) == Continue::Stop {
                break;
            }
            match receiver.recv_timeout(poll_interval) {
                Ok(Signal::Wake) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            }
        })?;
    Ok((UpdateQueue { sender }, handle))
}

#[derive(Debug, PartialEq, Eq)]
enum Continue {
    Yes,
    Stop,
}

/// Runs every claimable update, delivers leftover callbacks and refreshes the parameters.
/// Failures are logged and retried at the next poll: the database keeps the work. A stop
/// request is honoured between two updates; the ones not started stay in the database.
fn work(service: &Service, signals: &mpsc::Receiver<Signal>) -> Continue {
    loop {
        // The core turns an algorithm's panic into a failed update; this catches the rest
        // (a bug anywhere below), so one bad request cannot stop this process's updates.
        let ran =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| service.run_next_update()))
                .unwrap_or_else(|_| {
                    log::error!("an update panicked; its request is retried at the next poll");
                    Ok(None)
                });
        match ran {
            Ok(Some(_)) => match signals.try_recv() {
                Ok(Signal::Stop) | Err(TryRecvError::Disconnected) => return Continue::Stop,
                Ok(Signal::Wake) | Err(TryRecvError::Empty) => continue,
            },
            Ok(None) => break,
            Err(e) => {
                log::error!(
                    "an update could not run to its end; the next poll looks again: {}",
                    error_chain(&e)
                );
                break;
            }
        }
    }
    if let Err(e) = service.deliver_pending_callbacks() {
        log::error!("delivering pending callbacks failed: {}", error_chain(&e));
    }
    if let Err(e) = service.refresh_parameters() {
        log::warn!(
            "reloading the current parameters failed: {}",
            error_chain(&e)
        );
    }
    Continue::Yes
}
