//! The update worker: one thread per process that runs accepted update requests one at a time,
//! in the order they arrived. A request is stored before it is queued, so the database always
//! knows about it; the queue itself is only the hand-over to the worker.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use justin_core::service::error_chain;
use justin_core::{Service, UpdateRequest};

/// The sending side of the update queue.
#[derive(Clone, Debug)]
pub struct UpdateQueue {
    sender: mpsc::Sender<Job>,
}

/// What the worker is asked to do, in order.
#[derive(Debug)]
enum Job {
    Run(UpdateRequest),
    /// Finish what was queued before, then end the thread.
    Stop,
}

/// Why a request could not be queued.
#[derive(Debug, thiserror::Error)]
#[error("the update worker has stopped")]
pub struct WorkerStopped;

impl UpdateQueue {
    /// Hands a stored request to the worker.
    ///
    /// # Errors
    /// When the worker thread has stopped (the process is shutting down).
    pub fn enqueue(&self, request: UpdateRequest) -> Result<(), WorkerStopped> {
        self.sender
            .send(Job::Run(request))
            .map_err(|_| WorkerStopped)
    }

    /// Asks the worker to end once the requests queued so far are done.
    pub fn stop(&self) {
        // A worker that has ended already needs no stop message.
        self.sender.send(Job::Stop).ok();
    }
}

/// Starts the worker. It ends after [`UpdateQueue::stop`], or once every [`UpdateQueue`] clone
/// is dropped, and always after the requests queued before that.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn(service: Arc<Service>) -> std::io::Result<(UpdateQueue, JoinHandle<()>)> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let handle = std::thread::Builder::new()
        .name("justin-update".into())
        .spawn(move || {
            for job in receiver {
                let Job::Run(request) = job else { break };
                if let Err(e) = service.run_update(&request) {
                    log::error!(
                        "update {} could not be recorded: {}",
                        request.id,
                        error_chain(&e)
                    );
                }
            }
        })?;
    Ok((UpdateQueue { sender }, handle))
}
