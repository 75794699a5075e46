//! The watchdog over the in-memory ports with a manual clock: missed decisions by the
//! schedule, overdue uploads, failed and overdue updates, shares, and the verdict shared
//! between processes with one alert per change.

use chrono::{DateTime, TimeDelta, Utc};
use justin_core::monitor::{FindingKind, MonitorSettings, Severity};
use justin_core::{
    ActionRequest, Clock, DecisionType, MonitorReport, MonitorSetup, PlaceBy, Schedule,
    ScheduledTime, Service, UserId,
};

use crate::support::{action_request, settings, upload_request, Study};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// 08:00 and 20:00 UTC, both of the default type.
fn twice_a_day() -> Schedule {
    let at = |h| ScheduledTime {
        decision_type: DecisionType::default(),
        at: chrono::NaiveTime::from_hms_opt(h, 0, 0).unwrap(),
    };
    Schedule::new(PlaceBy::Time, chrono_tz::Tz::UTC, 0, vec![at(8), at(20)]).unwrap()
}

fn watching(study: &Study, settings_: MonitorSettings, alert_url: Option<&str>) -> Service {
    study
        .another_process(settings())
        .with_monitor(MonitorSetup {
            settings: settings_,
            schedule: Some(twice_a_day()),
            alert_url: alert_url.map(str::to_owned),
            reuse_for: chrono::TimeDelta::zero(),
        })
}

fn request(user: &UserId, i: i64, at: &str) -> ActionRequest {
    action_request(user, i, utc(at))
}

fn kinds(report: &MonitorReport) -> Vec<(Severity, FindingKind, Option<&str>, Option<u64>)> {
    report
        .findings
        .iter()
        .map(|f| (f.severity, f.kind, f.participant.as_deref(), f.count))
        .collect()
}

/// Alice and Bob start on 2025-01-01 (the clock's start) and decide at every scheduled time
/// up to `alice_until` and `bob_until` (decision indexes 0, 1, ...: 08:00, 20:00, ...),
/// uploading each.
fn two_participants(study: &Study, service: &Service, alice_until: i64, bob_until: i64) {
    let alice = study.add_user("alice");
    let bob = study.add_user("bob");
    for (user, until) in [(&alice, alice_until), (&bob, bob_until)] {
        for i in 0..until {
            let hour = 8 + 12 * i;
            let at = utc("2025-01-01T00:00:00Z") + TimeDelta::hours(hour);
            // A few minutes early: the nearest scheduled time is still the one meant.
            let r = request(user, i, &(at - TimeDelta::minutes(4)).to_rfc3339());
            let d = service.request_action(r).unwrap().decision;
            service.upload_data(upload_request(&d, 1.0)).unwrap();
        }
    }
}

#[test]
fn a_participant_who_stops_calling_turns_yellow_then_red_and_no_one_else_does() {
    let study = Study::new();
    let service = watching(&study, MonitorSettings::default(), None);
    // Alice decides at the first six times (01-01 08:00 to 01-03 20:00), Bob at the first two.
    two_participants(&study, &service, 6, 2);

    // 01-02 08:20: Bob's 01-02 08:00 is within the 30 min grace.
    study.clock.set(utc("2025-01-02T08:20:00Z"));
    let report = service.monitor_report().unwrap();
    assert_eq!(report.state, Severity::Green, "{report:?}");
    assert_eq!(report.checked_at, utc("2025-01-02T08:20:00Z"));

    // 01-02 08:31: one missed: yellow, since 08:00.
    study.clock.set(utc("2025-01-02T08:31:00Z"));
    let report = service.monitor_report().unwrap();
    assert_eq!(
        kinds(&report),
        [(
            Severity::Yellow,
            FindingKind::MissedDecisions,
            Some("bob"),
            Some(1)
        )]
    );
    assert_eq!(report.findings[0].since, Some(utc("2025-01-02T08:00:00Z")));
    assert_eq!(report.findings[0].decision_type.as_deref(), Some("default"));

    // 01-03 08:31: three in a row: red. Alice decided at every time so far.
    study.clock.set(utc("2025-01-03T08:31:00Z"));
    let report = service.monitor_report().unwrap();
    assert_eq!(report.state, Severity::Red);
    assert_eq!(
        kinds(&report),
        [(
            Severity::Red,
            FindingKind::MissedDecisions,
            Some("bob"),
            Some(3)
        )]
    );
}

#[test]
fn withdrawn_and_ended_participants_are_not_expected_to_decide() {
    let study = Study::new();
    let service = watching(&study, MonitorSettings::default(), None);
    two_participants(&study, &service, 1, 1);
    study.clock.set(utc("2025-01-02T00:00:00Z"));
    service
        .withdraw(&UserId::parse("bob").unwrap(), "moved")
        .unwrap();
    service
        .change_enrollment(
            &UserId::parse("alice").unwrap(),
            &crate::support::window(None, Some(utc("2025-01-02T01:00:00Z"))),
        )
        .unwrap();

    study.clock.set(utc("2025-01-09T00:00:00Z"));
    let report = service.monitor_report().unwrap();

    assert_eq!(report.state, Severity::Green, "{report:?}");
}

#[test]
fn without_a_schedule_no_decision_is_expected() {
    let study = Study::new();
    let service = study
        .another_process(settings())
        .with_monitor(MonitorSetup::default());
    two_participants(&study, &service, 1, 0);
    study.clock.set(utc("2025-02-01T00:00:00Z"));

    assert_eq!(service.monitor_report().unwrap().state, Severity::Green);
}

#[test]
fn decisions_without_an_upload_past_due_are_overdue_outcomes() {
    let study = Study::new();
    let service = watching(&study, MonitorSettings::default(), None);
    let alice = study.add_user("alice");
    let d = service
        .request_action(request(&alice, 0, "2025-01-01T08:00:00Z"))
        .unwrap()
        .decision;

    study.clock.set(utc("2025-01-02T07:59:00Z"));
    let report = service.monitor_report().unwrap();
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::OverdueOutcomes),
        "not due yet: {report:?}"
    );

    study.clock.set(utc("2025-01-02T08:01:00Z"));
    let report = service.monitor_report().unwrap();
    let overdue: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::OverdueOutcomes)
        .collect();
    assert_eq!(overdue.len(), 1, "{report:?}");
    assert_eq!(overdue[0].severity, Severity::Yellow);
    assert_eq!(overdue[0].participant.as_deref(), Some("alice"));
    assert_eq!(overdue[0].since, Some(utc("2025-01-02T08:00:00Z")));

    service.upload_data(upload_request(&d, 1.0)).unwrap();
    let report = service.monitor_report().unwrap();
    assert!(!report
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::OverdueOutcomes));
}

#[test]
fn a_failed_update_is_red_and_an_overdue_one_yellow_then_red() {
    let study = Study::new();
    let settings_ = MonitorSettings {
        update_every: Some(TimeDelta::hours(24)),
        ..MonitorSettings::default()
    };
    let service = watching(&study, settings_, None);
    study.clock.set(utc("2025-01-01T12:00:00Z"));
    let report = service.monitor_report().unwrap();
    assert_eq!(report.state, Severity::Green, "{report:?}");

    // Version 1 was stored at the clock's start: a day and a minute later, yellow.
    study.clock.set(utc("2025-01-02T00:01:00Z"));
    assert_eq!(
        kinds(&service.monitor_report().unwrap()),
        [(Severity::Yellow, FindingKind::UpdateOverdue, None, None)]
    );
    study.clock.set(utc("2025-01-03T00:01:00Z"));
    assert_eq!(service.monitor_report().unwrap().state, Severity::Red);

    study.algorithm.set_update(crate::support::Update::Fail);
    study.request_update(1);
    for _ in 0..3 {
        service.run_next_update().unwrap();
    }
    let report = service.monitor_report().unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::UpdateFailed && f.severity == Severity::Red),
        "{report:?}"
    );

    // A completed update clears both.
    study
        .algorithm
        .set_update(crate::support::Update::MeanReward);
    study.run_update(2);
    assert_eq!(service.monitor_report().unwrap().state, Severity::Green);
}

#[test]
fn refused_uploads_count_towards_their_share_in_every_process() {
    let study = Study::new();
    let settings_ = MonitorSettings {
        min_share_count: 4,
        ..MonitorSettings::default()
    };
    let service = watching(&study, settings_.clone(), None);
    let other = watching(&study, settings_, None);
    let alice = study.add_user("alice");
    for i in 0..4 {
        let d = service
            .request_action(request(&alice, i, "2025-01-01T00:00:00Z"))
            .unwrap()
            .decision;
        let mut upload = upload_request(&d, 1.0);
        if i == 0 {
            upload.action_prob = justin_core::Probability::new(0.01).unwrap();
            assert!(service.upload_data(upload).is_err());
        } else {
            service.upload_data(upload).unwrap();
        }
    }

    let report = other.monitor_report().unwrap();

    let share: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::RefusedUploadShare)
        .collect();
    assert_eq!(share.len(), 1, "{report:?}");
    assert_eq!(
        (share[0].severity, share[0].count),
        (Severity::Red, Some(1))
    );
}

#[test]
fn of_two_processes_only_the_one_that_moves_the_state_alerts() {
    let study = Study::new();
    let url = Some("http://alerts.example/hook");
    let first = watching(&study, MonitorSettings::default(), url);
    let second = watching(&study, MonitorSettings::default(), url);
    two_participants(&study, &first, 2, 2);

    study.clock.set(utc("2025-01-01T21:00:00Z"));
    for service in [&first, &second] {
        assert!(service.run_monitor_check().unwrap().report.state == Severity::Green);
    }
    assert!(
        study.notifier.alerts().is_empty(),
        "a first green is no news"
    );

    study.clock.set(utc("2025-01-03T09:00:00Z"));
    let a = first.run_monitor_check().unwrap();
    let b = second.run_monitor_check().unwrap();
    assert_eq!((a.changed, b.changed), (true, false));
    assert_eq!((a.alerts_delivered, b.alerts_delivered), (1, 0));
    let alerts = study.notifier.alerts();
    assert_eq!(alerts.len(), 1);
    let (sent_to, payload, delivered) = &alerts[0];
    assert_eq!(sent_to, "http://alerts.example/hook");
    assert!(delivered);
    assert_eq!(payload["event"], "monitor_state_changed");
    assert_eq!(payload["state"], "red");
    assert_eq!(payload["previous"], "green");
    let findings = payload["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2);
    assert!(
        findings.iter().all(|f| f.get("participant").is_none()),
        "{payload}"
    );
    assert!(
        findings.iter().all(|f| f["kind"] == "missed_decisions"),
        "{payload}"
    );

    // Back to green when both decide again: one more alert.
    let (alice, bob) = (
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    for user in [&alice, &bob] {
        first
            .request_action(request(user, 2, "2025-01-03T08:00:00Z"))
            .unwrap();
    }
    second.run_monitor_check().unwrap();
    first.run_monitor_check().unwrap();
    let alerts = study.notifier.alerts();
    assert_eq!(alerts.len(), 2);
    assert_eq!(
        (&alerts[1].1["state"], &alerts[1].1["previous"]),
        (&"green".into(), &"red".into())
    );
}

#[test]
fn an_alert_is_retried_with_backoff_and_one_given_up_is_not_sent_again() {
    let study = Study::new();
    let service = watching(
        &study,
        MonitorSettings::default(),
        Some("http://a.example/"),
    );
    two_participants(&study, &service, 1, 1);
    study.clock.set(utc("2025-01-01T09:00:00Z"));
    service.run_monitor_check().unwrap();

    study.notifier.fail_next(2);
    study.clock.set(utc("2025-01-03T09:00:00Z"));
    let outcome = service.run_monitor_check().unwrap();

    assert_eq!(outcome.alerts_delivered, 1);
    assert_eq!(
        study.clock.sleeps(),
        [
            std::time::Duration::from_millis(100),
            std::time::Duration::from_millis(200)
        ]
    );
    let delivered: Vec<bool> = study.notifier.alerts().iter().map(|a| a.2).collect();
    assert_eq!(delivered, [false, false, true]);

    // Unreachable for every attempt: given up, and not claimed again later.
    study.notifier.set_unreachable(true);
    let (alice, bob) = (
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    for user in [&alice, &bob] {
        for i in 1..5 {
            let at = utc("2025-01-01T08:00:00Z") + TimeDelta::hours(12 * i);
            service.request_action(action_request(user, i, at)).unwrap();
        }
    }
    let outcome = service.run_monitor_check().unwrap();
    assert!(outcome.changed);
    assert_eq!(outcome.alerts_delivered, 0);
    let tries = study.notifier.alerts().len();
    assert_eq!(tries, 3 + 4, "four attempts (the callback policy's)");
    study.notifier.set_unreachable(false);
    study.clock.set(study.clock.now() + TimeDelta::hours(1));
    assert_eq!(service.deliver_pending_alerts().unwrap(), 0);
    assert_eq!(study.notifier.alerts().len(), tries);
}

#[test]
fn an_alert_left_by_a_stopped_process_is_delivered_by_another_after_its_hold() {
    let study = Study::new();
    let url = Some("http://a.example/");
    let stopped = watching(&study, MonitorSettings::default(), url);
    let survivor = watching(&study, MonitorSettings::default(), url);
    two_participants(&study, &stopped, 1, 1);
    study.clock.set(utc("2025-01-01T09:00:00Z"));
    stopped.run_monitor_check().unwrap();

    // The first attempt fails and the process stops before the second.
    study.notifier.fail_next(1);
    stopped.stop_updates();
    study.clock.set(utc("2025-01-03T09:00:00Z"));
    let outcome = stopped.run_monitor_check().unwrap();
    assert_eq!((outcome.changed, outcome.alerts_delivered), (true, 0));

    // Still held: nothing to deliver yet.
    assert_eq!(survivor.deliver_pending_alerts().unwrap(), 0);
    // After the hold (the longest delivery and a margin), the other process delivers it.
    study.clock.set(utc("2025-01-03T09:10:00Z"));
    assert_eq!(survivor.deliver_pending_alerts().unwrap(), 1);
    let alerts = study.notifier.alerts();
    assert_eq!(
        alerts.iter().map(|a| a.2).collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!(alerts[1].1["state"], "red");
    assert_eq!(survivor.deliver_pending_alerts().unwrap(), 0);
}

#[test]
fn the_dashboards_report_is_the_latest_background_check_while_it_is_recent() {
    let study = Study::new();
    let service = study
        .another_process(settings())
        .with_monitor(MonitorSetup {
            settings: MonitorSettings::default(),
            schedule: Some(twice_a_day()),
            alert_url: None,
            reuse_for: TimeDelta::minutes(2),
        });
    two_participants(&study, &service, 6, 6);

    // A background check at 01-02 08:20: green.
    study.clock.set(utc("2025-01-02T08:20:00Z"));
    let checked = service.run_monitor_check().unwrap().report;
    assert_eq!(checked.state, Severity::Green);

    // A minute later the dashboard gets that report.
    study.clock.set(utc("2025-01-02T08:21:00Z"));
    assert_eq!(service.recent_monitor_report().unwrap(), checked);

    // Past reuse_for it checks again: Alice and Bob decided up to 01-03 20:00, so at
    // 01-04 08:31 both missed one.
    study.clock.set(utc("2025-01-04T08:31:00Z"));
    let fresh = service.recent_monitor_report().unwrap();
    assert_eq!(fresh.checked_at, utc("2025-01-04T08:31:00Z"));
    assert_eq!(fresh.state, Severity::Yellow, "{fresh:?}");
    assert_eq!(fresh, service.monitor_report().unwrap());

    // Without reuse_for (no background check) every call checks again.
    let unwatched = watching(&study, MonitorSettings::default(), None);
    unwatched.run_monitor_check().unwrap();
    study.clock.set(utc("2025-01-04T08:32:00Z"));
    assert_eq!(
        unwatched.recent_monitor_report().unwrap().checked_at,
        utc("2025-01-04T08:32:00Z")
    );
}
