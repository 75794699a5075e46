//! `/dashboard`: the watchdog's verdict, the study's size and its figures per day.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDate;
use justin_core::dashboard::DashboardDays;
use justin_core::MonitorReport;

use super::html::{esc, num, page, time};
use super::svg::{lines, Series};

/// What the overview shows.
pub struct Overview {
    /// The watchdog's report.
    pub report: MonitorReport,
    /// Participants registered (erased ones included) and of those erased.
    pub participants: (u64, u64),
    /// The newest parameter version.
    pub version: Option<i64>,
    /// The figures per day.
    pub days: DashboardDays,
    /// The zone the days are in.
    pub zone: String,
}

fn severity(s: justin_core::Severity) -> &'static str {
    match s {
        justin_core::Severity::Green => "green",
        justin_core::Severity::Yellow => "yellow",
        justin_core::Severity::Red => "red",
    }
}

fn kind(k: justin_core::FindingKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Days since `first`, as a chart's x.
fn x(first: NaiveDate, day: NaiveDate) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let d = (day - first).num_days() as f64;
    d
}

/// The overview page.
pub fn render(o: &Overview) -> String {
    let mut b = String::new();
    watchdog(&mut b, &o.report);
    let _ = write!(
        b,
        "<h2>Study</h2><dl><dt>Participants registered</dt><dd><span id=\"participants-count\">{}</span> \
         <span class=\"muted\">(erased ones included: {})</span></dd>\
         <dt>Latest parameter version</dt><dd><span id=\"parameter-version\">{}</span></dd>\
         <dt>Days</dt><dd>calendar days in {} by each decision's time</dd></dl>",
        o.participants.0,
        o.participants.1,
        o.version.unwrap_or(0),
        esc(&o.zone)
    );
    per_day(&mut b, &o.days);
    probabilities(&mut b, &o.days);
    clip_share(&mut b, &o.days);
    rewards(&mut b, &o.days);
    page("Study dashboard", &b)
}

fn watchdog(b: &mut String, report: &MonitorReport) {
    let state = severity(report.state);
    let _ = write!(
        b,
        "<h2>Watchdog</h2><p>State: <span id=\"monitor-state\" class=\"state {state}\">{state}</span> \
         <span class=\"muted\">checked at <time id=\"monitor-checked-at\" datetime=\"{checked}\">{checked}</time></span></p>\
         <table id=\"findings\"><thead><tr><th>severity</th><th>what</th><th>participant</th>\
         <th>decision type</th><th>since</th><th>count</th><th>message</th></tr></thead><tbody>",
        checked = time(report.checked_at)
    );
    for f in &report.findings {
        let sev = severity(f.severity);
        let participant = f.participant.as_deref().map(esc);
        let _ = write!(
            b,
            "<tr data-severity=\"{sev}\" data-kind=\"{k}\"{p}><td class=\"{sev}\">{sev}</td><td>{k}</td>\
             <td>{pt}</td><td>{dt}</td><td>{since}</td><td class=\"n\">{count}</td><td>{msg}</td></tr>",
            k = esc(&kind(f.kind)),
            p = participant
                .as_ref()
                .map_or_else(String::new, |p| format!(" data-participant=\"{p}\"")),
            pt = participant.unwrap_or_default(),
            dt = f.decision_type.as_deref().map(esc).unwrap_or_default(),
            since = f.since.map(time).unwrap_or_default(),
            count = f.count.map(|c| c.to_string()).unwrap_or_default(),
            msg = esc(&f.message),
        );
    }
    if report.findings.is_empty() {
        b.push_str("<tr><td colspan=\"7\" class=\"muted\">No findings.</td></tr>");
    }
    b.push_str("</tbody></table>");
}

/// Decisions, available decisions, uploads and reward sum per day, over every type.
struct DayTotals {
    decisions: u64,
    available: u64,
    at_bounds: u64,
    uploads: u64,
}

fn totals(days: &DashboardDays) -> BTreeMap<NaiveDate, DayTotals> {
    let mut out: BTreeMap<NaiveDate, DayTotals> = BTreeMap::new();
    let blank = || DayTotals {
        decisions: 0,
        available: 0,
        at_bounds: 0,
        uploads: 0,
    };
    for d in &days.decisions {
        let t = out.entry(d.day).or_insert_with(blank);
        t.decisions += d.decisions;
        t.available += d.available;
        t.at_bounds += d.at_lower + d.at_upper;
    }
    for u in &days.uploads {
        out.entry(u.day).or_insert_with(blank).uploads += u.uploads;
    }
    out
}

fn range_labels(days: &BTreeMap<NaiveDate, DayTotals>) -> Option<(NaiveDate, NaiveDate)> {
    Some((*days.keys().next()?, *days.keys().next_back()?))
}

fn per_day(b: &mut String, days: &DashboardDays) {
    let totals = totals(days);
    b.push_str("<h2>Decisions and uploads per day</h2>");
    if let Some((first, last)) = range_labels(&totals) {
        #[allow(clippy::cast_precision_loss)]
        let top = totals
            .values()
            .map(|t| t.decisions.max(t.uploads))
            .max()
            .unwrap_or(0) as f64;
        #[allow(clippy::cast_precision_loss)]
        let series = vec![
            Series {
                name: "decisions".into(),
                points: totals
                    .iter()
                    .map(|(d, t)| (x(first, *d), t.decisions as f64))
                    .collect(),
                band: Vec::new(),
            },
            Series {
                name: "uploads".into(),
                points: totals
                    .iter()
                    .map(|(d, t)| (x(first, *d), t.uploads as f64))
                    .collect(),
                band: Vec::new(),
            },
        ];
        b.push_str(&lines(
            "Decisions and uploads per day",
            &series,
            (0.0, x(first, last)),
            (0.0, top),
            (&first.to_string(), &last.to_string()),
        ));
    }
    b.push_str(
        "<table id=\"per-day\"><thead><tr><th>day</th><th>decisions</th><th>available</th>\
         <th>uploads</th></tr></thead><tbody>",
    );
    for (day, t) in &totals {
        let _ = write!(
            b,
            "<tr data-day=\"{day}\"><td>{day}</td><td class=\"n\" data-col=\"decisions\">{}</td>\
             <td class=\"n\" data-col=\"available\">{}</td><td class=\"n\" data-col=\"uploads\">{}</td></tr>",
            t.decisions, t.available, t.uploads
        );
    }
    b.push_str("</tbody></table>");
}

fn probabilities(b: &mut String, days: &DashboardDays) {
    b.push_str(
        "<h2>P(action = 1) over time</h2><p class=\"muted\">Median per day of the available \
         decisions, the band from the first to the third quartile; one line per parameter \
         version.</p>",
    );
    let Some(first) = days.decisions.iter().map(|d| d.day).min() else {
        b.push_str("<p>No decisions yet.</p>");
        return;
    };
    let last = days.decisions.iter().map(|d| d.day).max().unwrap_or(first);
    let mut types: BTreeMap<&str, BTreeMap<i64, Series>> = BTreeMap::new();
    for d in &days.decisions {
        let Some(q) = d.quartiles else { continue };
        let s = types
            .entry(d.decision_type.as_str())
            .or_default()
            .entry(d.parameter_version)
            .or_insert_with(|| Series {
                name: format!("version {}", d.parameter_version),
                points: Vec::new(),
                band: Vec::new(),
            });
        s.points.push((x(first, d.day), q[1]));
        s.band.push((x(first, d.day), q[0], q[2]));
    }
    for (decision_type, versions) in &types {
        let series: Vec<Series> = versions
            .values()
            .rev()
            .take(6)
            .rev()
            .map(|s| Series {
                name: s.name.clone(),
                points: s.points.clone(),
                band: s.band.clone(),
            })
            .collect();
        let _ = write!(b, "<h3>Decision type {}</h3>", esc(decision_type));
        b.push_str(&lines(
            &format!("P(action = 1) per day, decision type {decision_type}"),
            &series,
            (0.0, x(first, last)),
            (0.0, 1.0),
            (&first.to_string(), &last.to_string()),
        ));
        if versions.len() > 6 {
            b.push_str("<p class=\"muted\">The chart shows the six newest versions; the table has every one.</p>");
        }
    }
    b.push_str(
        "<details><summary>The numbers</summary><table id=\"probabilities\"><thead><tr>\
         <th>day</th><th>decision type</th><th>version</th><th>decisions</th><th>available</th>\
         <th>first quartile</th><th>median</th><th>third quartile</th></tr></thead><tbody>",
    );
    for d in &days.decisions {
        let q = |i: usize| num(d.quartiles.map(|q| q[i]));
        let _ = write!(
            b,
            "<tr data-day=\"{day}\" data-decision-type=\"{t}\" data-version=\"{v}\"><td>{day}</td>\
             <td>{t}</td><td class=\"n\">{v}</td><td class=\"n\">{n}</td><td class=\"n\">{a}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            q(0),
            q(1),
            q(2),
            day = d.day,
            t = esc(&d.decision_type),
            v = d.parameter_version,
            n = d.decisions,
            a = d.available,
        );
    }
    b.push_str("</tbody></table></details>");
}

fn clip_share(b: &mut String, days: &DashboardDays) {
    let totals = totals(days);
    b.push_str("<h2>Share at the clip bounds</h2>");
    let Some((first, last)) = range_labels(&totals) else {
        b.push_str("<p>No decisions yet.</p>");
        return;
    };
    #[allow(clippy::cast_precision_loss)]
    let share = |t: &DayTotals| (t.available > 0).then(|| t.at_bounds as f64 / t.available as f64);
    let series = vec![Series {
        name: "share of available decisions at a clip bound".into(),
        points: totals
            .iter()
            .filter_map(|(d, t)| share(t).map(|s| (x(first, *d), s)))
            .collect(),
        band: Vec::new(),
    }];
    b.push_str(&lines(
        "Share of available decisions at the clip bounds per day",
        &series,
        (0.0, x(first, last)),
        (0.0, 1.0),
        (&first.to_string(), &last.to_string()),
    ));
    b.push_str(
        "<details><summary>The numbers</summary><table id=\"clip-share\"><thead><tr><th>day</th>\
         <th>available</th><th>at a bound</th><th>share</th></tr></thead><tbody>",
    );
    for (day, t) in &totals {
        let _ = write!(
            b,
            "<tr data-day=\"{day}\"><td>{day}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>",
            t.available,
            t.at_bounds,
            num(share(t))
        );
    }
    b.push_str("</tbody></table></details>");
}

fn rewards(b: &mut String, days: &DashboardDays) {
    b.push_str("<h2>Rewards over time</h2><p class=\"muted\">Mean reward of the uploads per day (of the decision time they name).</p>");
    let Some(first) = days.uploads.iter().map(|u| u.day).min() else {
        b.push_str("<p>No uploads yet.</p>");
        return;
    };
    let last = days.uploads.iter().map(|u| u.day).max().unwrap_or(first);
    let mut types: BTreeMap<&str, Series> = BTreeMap::new();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for u in &days.uploads {
        if u.uploads == 0 {
            continue;
        }
        #[allow(clippy::cast_precision_loss)]
        let mean = u.reward_sum / u.uploads as f64;
        if mean.is_finite() {
            lo = lo.min(mean);
            hi = hi.max(mean);
            types
                .entry(u.decision_type.as_str())
                .or_insert_with(|| Series {
                    name: format!("decision type {}", u.decision_type),
                    points: Vec::new(),
                    band: Vec::new(),
                })
                .points
                .push((x(first, u.day), mean));
        }
    }
    let series: Vec<Series> = types.into_values().collect();
    if lo.is_finite() {
        b.push_str(&lines(
            "Mean reward per day",
            &series,
            (0.0, x(first, last)),
            (lo.min(0.0), hi),
            (&first.to_string(), &last.to_string()),
        ));
    }
    b.push_str(
        "<details><summary>The numbers</summary><table id=\"rewards\"><thead><tr><th>day</th>\
         <th>decision type</th><th>uploads</th><th>mean reward</th></tr></thead><tbody>",
    );
    for u in &days.uploads {
        #[allow(clippy::cast_precision_loss)]
        let mean = (u.uploads > 0).then(|| u.reward_sum / u.uploads as f64);
        let _ = write!(
            b,
            "<tr data-day=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            u.day,
            u.day,
            esc(&u.decision_type),
            u.uploads,
            num(mean)
        );
    }
    b.push_str("</tbody></table></details>");
}
