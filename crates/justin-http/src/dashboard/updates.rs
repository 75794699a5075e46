//! `/dashboard/updates` and `/dashboard/updates/{id}`: the update history with its provenance
//! and callback delivery, and one update's policy before and after.

use std::fmt::Write as _;

use justin_core::service::{UpdateComparison, POLICY_SAMPLE};
use justin_core::UpdateRequest;

use super::html::{esc, num, opt_time, page, time};
use super::svg::scatter_unit;

/// The update history page.
pub fn render_list(updates: &[UpdateRequest]) -> String {
    let mut b = format!(
        "<p>{} update requests, newest first.</p><table id=\"updates\"><thead><tr><th>update</th>\
         <th>status</th><th>version</th><th>received</th><th>started</th><th>finished</th>\
         <th>attempts</th><th>rows read</th><th>learned from</th><th>error</th>\
         <th>callback</th><th>callback attempts</th><th>callback error</th></tr></thead><tbody>",
        updates.len()
    );
    for u in updates {
        let _ = write!(
            b,
            "<tr data-update-id=\"{id}\"><td><a href=\"/dashboard/updates/{id}\">{id}</a></td>\
             <td data-col=\"status\">{}</td><td class=\"n\" data-col=\"version\">{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\" data-col=\"rows-read\">{}</td>\
             <td>{}</td><td>{}</td><td data-col=\"callback\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            u.status.as_str(),
            u.parameter_version.map(|v| v.to_string()).unwrap_or_default(),
            time(u.received_at),
            opt_time(u.started_at),
            opt_time(u.finished_at),
            u.attempts,
            u.provenance
                .as_ref()
                .map(|p| p.rows_read.to_string())
                .unwrap_or_default(),
            u.provenance
                .as_ref()
                .map(|p| esc(&p.included_policies))
                .unwrap_or_default(),
            u.error.as_deref().map(esc).unwrap_or_default(),
            u.callback.status.as_str(),
            u.callback.attempts,
            u.callback.last_error.as_deref().map(esc).unwrap_or_default(),
            id = u.id,
        );
    }
    b.push_str("</tbody></table>");
    page("Updates", &b)
}

/// The numeric leaves of a JSON value, with their paths (`a.b[0]`).
fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_owned(), x));
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                leaves(&format!("{prefix}[{i}]"), item, out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, item, out);
            }
        }
        _ => {}
    }
}

/// `n attempts`, or `1 attempt`.
fn attempts(n: impl Into<u64>) -> String {
    match n.into() {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    }
}

/// One update's page, with the decisions drawn under each version.
pub fn render_one(c: &UpdateComparison, drawn: (u64, u64)) -> String {
    let u = &c.update;
    let mut b =
        format!(
        "<dl><dt>Update</dt><dd>{id}</dd><dt>Status</dt><dd>{}</dd><dt>Received</dt><dd>{}</dd>\
         <dt>Finished</dt><dd>{}</dd><dt>Attempts</dt><dd>{}</dd><dt>Rows read</dt><dd>{}</dd>\
         {}<dt>Error</dt><dd>{}</dd><dt>Callback</dt><dd>{} after {} {}</dd>",
        u.status.as_str(),
        time(u.received_at),
        opt_time(u.finished_at),
        u.attempts,
        u.provenance
            .as_ref()
            .map(|p| p.rows_read.to_string())
            .unwrap_or_default(),
        u.provenance
            .as_ref()
            .and_then(|p| p.imputed)
            .map(|i| format!(
                "<dt>Imputed rewards</dt><dd><span id=\"imputed-rows\">{}</span> of them, \
                 reward {} (decisions made by {} without an outcome)</dd>",
                i.rows,
                i.default_reward,
                time(i.decided_by)
            ))
            .unwrap_or_default(),
        u.error.as_deref().map(esc).unwrap_or_default(),
        u.callback.status.as_str(),
        attempts(u.callback.attempts),
        u.callback.last_error.as_deref().map(esc).unwrap_or_default(),
        id = u.id,
    );
    if let (Some(before), Some(after)) = (&c.before, &c.after) {
        let _ = write!(
            b,
            "<dt>Version before</dt><dd><span id=\"version-before\">{}</span> \
             ({} decisions drawn under it)</dd><dt>Version after</dt><dd>\
             <span id=\"version-after\">{}</span> ({} decisions drawn under it)</dd></dl>",
            before.version, drawn.0, after.version, drawn.1
        );
        parameters(&mut b, &before.values, &after.values);
        policy(&mut b, c, before.version, after.version);
    } else {
        b.push_str("</dl><p>This update produced no parameter version.</p>");
    }
    page(&format!("Update {}", u.id), &b)
}

fn parameters(b: &mut String, before: &serde_json::Value, after: &serde_json::Value) {
    let (mut old, mut new) = (Vec::new(), Vec::new());
    leaves("", before, &mut old);
    leaves("", after, &mut new);
    let old: std::collections::BTreeMap<String, f64> = old.into_iter().collect();
    let new: std::collections::BTreeMap<String, f64> = new.into_iter().collect();
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    b.push_str(
        "<h2>Parameters</h2><table id=\"parameters\"><thead><tr><th>parameter</th><th>before</th>\
         <th>after</th><th>change</th></tr></thead><tbody>",
    );
    for path in paths {
        let (o, n) = (old.get(path).copied(), new.get(path).copied());
        let change = match (o, n) {
            (Some(o), Some(n)) => format!("{:+.6}", n - o),
            _ => "—".into(),
        };
        let show = |x: Option<f64>| x.map_or_else(|| "—".to_owned(), |x| format!("{x}"));
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{change}</td></tr>",
            esc(path),
            show(o),
            show(n)
        );
    }
    b.push_str("</tbody></table>");
}

fn policy(b: &mut String, c: &UpdateComparison, before: i64, after: i64) {
    let _ = write!(
        b,
        "<h2>The policy before and after</h2><p class=\"muted\">P(action = 1) under version \
         {before} and version {after} for the states of the latest {} available decisions drawn \
         under version {before} ({} found).</p>",
        POLICY_SAMPLE,
        c.points.len()
    );
    let points: Vec<(f64, f64)> = c
        .points
        .iter()
        .filter_map(|p| Some((p.before?, p.after?)))
        .collect();
    b.push_str(&scatter_unit(
        &format!("P(action = 1) under version {after} against version {before}"),
        &points,
        &format!("version {before}"),
        &format!("version {after}"),
    ));
    b.push_str(
        "<details><summary>The numbers</summary><table id=\"policy\"><thead><tr><th>participant</th>\
         <th>decision type</th><th>decision</th><th>before</th><th>after</th></tr></thead><tbody>",
    );
    for p in &c.points {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&p.user_id),
            esc(&p.decision_type),
            p.decision_idx,
            num(p.before),
            num(p.after)
        );
    }
    b.push_str("</tbody></table></details>");
}

#[cfg(test)]
mod tests {
    use super::attempts;

    #[test]
    fn one_attempt_is_singular() {
        assert_eq!(attempts(0u32), "0 attempts");
        assert_eq!(attempts(1u32), "1 attempt");
        assert_eq!(attempts(5u32), "5 attempts");
    }
}
