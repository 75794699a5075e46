//! The `Telemetry` observer hears how each update ended (with the records it read) and how its
//! callback went: each retry, and the delivery's end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use justin_core::{CallbackStatus, Telemetry, UpdateEnd};

use crate::support::{settings, Study, Update};

/// What the observer heard, in order (durations left out: they are real time).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    UpdateEnded(UpdateEnd, u64),
    CallbackRetried,
    CallbackEnded(CallbackStatus),
}

#[derive(Default)]
struct Recording(Mutex<Vec<Heard>>);

impl Telemetry for Recording {
    fn update_ended(&self, end: UpdateEnd, _duration: Duration, rows_read: u64) {
        self.0
            .lock()
            .unwrap()
            .push(Heard::UpdateEnded(end, rows_read));
    }

    fn callback_retried(&self) {
        self.0.lock().unwrap().push(Heard::CallbackRetried);
    }

    fn callback_ended(&self, status: CallbackStatus) {
        self.0.lock().unwrap().push(Heard::CallbackEnded(status));
    }
}

/// The study's service again, observed by a fresh recording.
fn observed(study: &Study) -> (justin_core::Service, Arc<Recording>) {
    let recording = Arc::new(Recording::default());
    let service = study
        .another_process(settings())
        .with_telemetry(recording.clone());
    (service, recording)
}

#[test]
fn a_completed_update_and_its_retried_callback_are_heard_with_the_records_read() {
    let study = Study::new();
    let user = study.add_user("u1");
    for i in 0..3 {
        let d = study.decide(&user, i);
        study.upload(&d, 1.0);
    }
    let (service, heard) = observed(&study);
    study.request_update(1);
    study.notifier.fail_next(2);

    service.run_next_update().unwrap().unwrap();

    assert_eq!(
        *heard.0.lock().unwrap(),
        vec![
            Heard::CallbackRetried,
            Heard::CallbackRetried,
            Heard::CallbackEnded(CallbackStatus::Delivered),
            Heard::UpdateEnded(UpdateEnd::Completed, 3),
        ]
    );
}

#[test]
fn a_failed_update_and_an_undeliverable_callback_are_heard_as_failed() {
    let study = Study::new();
    study.algorithm.set_update(Update::Fail);
    study.notifier.set_unreachable(true);
    let (service, heard) = observed(&study);
    study.request_update(1);

    service.run_next_update().unwrap().unwrap();

    let heard = heard.0.lock().unwrap().clone();
    let attempts = crate::support::callback_policy().attempts as usize;
    assert_eq!(heard.len(), attempts + 1, "{heard:?}");
    assert!(heard[..attempts - 1]
        .iter()
        .all(|h| *h == Heard::CallbackRetried));
    assert_eq!(
        heard[attempts - 1..],
        [
            Heard::CallbackEnded(CallbackStatus::Failed),
            Heard::UpdateEnded(UpdateEnd::Failed, 0),
        ]
    );
}
