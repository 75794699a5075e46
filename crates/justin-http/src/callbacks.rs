//! Callback delivery over HTTP with ureq: the adapter of the core's `CallbackNotifier` port.
//! An update's callback is sent as [`UpdateCallback`], the type the OpenAPI document declares
//! for it (the same bytes as the core's payload).

use std::time::Duration;

use justin_core::{BoxError, CallbackNotifier, CallbackPayload};

use crate::api_types::UpdateCallback;

/// POSTs callbacks as JSON, each within a timeout.
#[derive(Debug, Clone)]
pub struct HttpNotifier {
    agent: ureq::Agent,
}

impl HttpNotifier {
    /// A notifier whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // A redirect would turn the POST into a GET to a host callback_allowed_hosts
            // never checked; a 3xx counts as not delivered instead.
            .max_redirects(0)
            .build()
            .into();
        Self { agent }
    }
}

impl CallbackNotifier for HttpNotifier {
    fn notify(&self, url: &str, payload: &CallbackPayload) -> Result<(), BoxError> {
        // ureq reports 4xx and 5xx as errors; with redirects off a 3xx comes back as an
        // answer, and the port counts only 2xx as delivered.
        let response = self
            .agent
            .post(url)
            .send_json(UpdateCallback::from(payload))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status} (only 2xx counts as delivered)").into())
        }
    }

    fn notify_alert(&self, url: &str, payload: &serde_json::Value) -> Result<(), BoxError> {
        let response = self.agent.post(url).send_json(payload)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status} (only 2xx counts as delivered)").into())
        }
    }
}
