//! Readiness: the service is ready while storage answers, and not while the most recent write
//! failed for want of disk space, until a write succeeds or the hold has passed.

use justin_core::service::DISK_FULL_HOLD;
use justin_core::DomainError;
use justin_core::Enrollment;

use crate::support::{user, Study};

fn not_ready(study: &Study) -> bool {
    matches!(study.service.ready(), Err(DomainError::Unavailable(_)))
}

#[test]
fn a_store_that_does_not_answer_is_not_ready() {
    let study = Study::new();
    study.service.ready().unwrap();
    study.store.set_unavailable(true);
    assert!(not_ready(&study));
    study.store.set_unavailable(false);
    study.service.ready().unwrap();
}

#[test]
fn a_write_refused_for_want_of_space_holds_readiness_off_until_a_write_succeeds() {
    let study = Study::new();
    study.store.set_disk_full(true);
    let refused = study
        .service
        .add_user(&user("alice"), &Enrollment::default());
    assert!(matches!(refused, Err(DomainError::Store(_))), "{refused:?}");
    assert!(not_ready(&study));

    // Space is back, but nothing says so until a write succeeds.
    study.store.set_disk_full(false);
    assert!(not_ready(&study));
    study
        .service
        .add_user(&user("alice"), &Enrollment::default())
        .unwrap();
    study.service.ready().unwrap();
}

#[test]
fn readiness_returns_after_the_hold_when_no_write_comes() {
    let study = Study::new();
    study.store.set_disk_full(true);
    assert!(study
        .service
        .add_user(&user("alice"), &Enrollment::default())
        .is_err());
    let hold = DISK_FULL_HOLD.to_std().unwrap();

    study
        .clock
        .advance(hold - std::time::Duration::from_millis(1));
    assert!(not_ready(&study), "still within the hold");
    study.clock.advance(std::time::Duration::from_millis(1));
    study.service.ready().unwrap();
}

#[test]
fn other_failed_writes_leave_readiness_alone() {
    let study = Study::new();
    study.add_user("alice");
    assert!(study
        .service
        .add_user(&user("alice"), &Enrollment::default())
        .is_err());
    study.service.ready().unwrap();
}
