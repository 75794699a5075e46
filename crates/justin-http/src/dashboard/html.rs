//! The pieces every dashboard page is made of: escaping, the page frame with its one inline
//! stylesheet, times and numbers as shown.

use chrono::{DateTime, SecondsFormat, Utc};

/// `text` with the five characters HTML gives meaning to replaced by references, safe inside
/// an element and inside a quoted attribute. Every value a client sent goes through it.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time as the pages show it: RFC 3339 in UTC, to the second.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An optional time; "—" without one.
pub fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".to_owned(), time)
}

/// A probability or share with four decimals; "—" without one.
pub fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{x:.4}"))
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
nav a{margin-right:1em}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:2px 6px;\
text-align:left;vertical-align:top}td.n{text-align:right}\
.green{color:#1a7f37}.yellow{color:#9a6700}.red{color:#cf222e}\
.state{font-weight:bold;font-size:1.2em}svg{display:block;margin:.5em 0;max-width:100%}\
details{margin:.3em 0}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}\
dd{margin:0}.muted{color:#666}";

/// A whole page: `title` (plain text, escaped here) and `body` (HTML).
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · JustIn</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"/dashboard\">Overview</a><a href=\"/dashboard/participants\">Participants</a>\
         <a href=\"/dashboard/updates\">Updates</a></nav><h1>{t}</h1>\n{body}\n</body></html>\n",
        t = esc(title)
    )
}
