//! `/dashboard/participants`: every registered participant, where they stand and their latest
//! activity.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use justin_core::dashboard::ParticipantActivity;

use super::html::{esc, opt_time, page, time};

/// The participants page, statuses as of `now`.
pub fn render(participants: &[ParticipantActivity], now: DateTime<Utc>) -> String {
    let mut b = format!(
        "<p>{} participants registered (erased ones under their pseudonym). Last decision: the \
         decision time of the latest decision; last upload: when the latest upload arrived. \
         Statuses as of {}.</p>\
         <table id=\"participants\"><thead><tr><th>participant</th><th>status</th>\
         <th>registered</th><th>study start</th><th>study end</th><th>last decision</th>\
         <th>last upload</th></tr></thead><tbody>",
        participants.len(),
        time(now)
    );
    for p in participants {
        let id = esc(&p.user_id);
        let _ = write!(
            b,
            "<tr data-participant=\"{id}\"><td>{id}</td><td data-col=\"status\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td data-col=\"last-decision\">{}</td>\
             <td data-col=\"last-upload\">{}</td></tr>",
            p.status_at(now).as_str(),
            time(p.created_at),
            opt_time(p.study_start),
            opt_time(p.study_end),
            opt_time(p.last_decision),
            opt_time(p.last_upload),
        );
    }
    b.push_str("</tbody></table>");
    page("Participants", &b)
}
