//! Charts drawn by the service as inline SVG: no script, no file fetched. Each has
//! `role="img"` and a `<title>`; the page puts a table of its numbers next to it.

use std::fmt::Write as _;

use super::html::esc;

const W: f64 = 720.0;
const H: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Colours of series, in order.
const COLOURS: [&str; 6] = [
    "#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#57606a",
];

/// One series of a chart: points (x, y), with an optional band (x, low, high) drawn under it.
pub struct Series {
    /// The legend's name (plain text).
    pub name: String,
    /// The points, by x.
    pub points: Vec<(f64, f64)>,
    /// A shaded band, such as the quartiles around a median.
    pub band: Vec<(f64, f64, f64)>,
}

/// A line chart of `series` over x in `x_range` and y in `y_range`, with the x axis labelled
/// `x_labels` at its ends (plain text).
pub fn lines(
    title: &str,
    series: &[Series],
    x_range: (f64, f64),
    y_range: (f64, f64),
    x_labels: (&str, &str),
) -> String {
    let (x0, x1) = (
        x_range.0,
        if x_range.1 > x_range.0 {
            x_range.1
        } else {
            x_range.0 + 1.0
        },
    );
    let (y0, y1) = (
        y_range.0,
        if y_range.1 > y_range.0 {
            y_range.1
        } else {
            y_range.0 + 1.0
        },
    );
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let sy = |y: f64| H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg role=\"img\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title>",
        esc(title)
    );
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#999\"/>\
         <text x=\"{lx}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"end\">{y1t}</text>\
         <text x=\"{lx}\" y=\"{b}\" font-size=\"11\" text-anchor=\"end\">{y0t}</text>\
         <text x=\"{LEFT}\" y=\"{xl}\" font-size=\"11\">{xa}</text>\
         <text x=\"{r}\" y=\"{xl}\" font-size=\"11\" text-anchor=\"end\">{xb}</text>",
        b = H - BOTTOM,
        r = W - RIGHT,
        lx = LEFT - 4.0,
        ty = TOP + 8.0,
        xl = H - 10.0,
        y1t = short(y1),
        y0t = short(y0),
        xa = esc(x_labels.0),
        xb = esc(x_labels.1),
    );
    for (i, serie) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        if !serie.band.is_empty() {
            let upper = serie
                .band
                .iter()
                .map(|&(x, _, hi)| format!("{:.1},{:.1}", sx(x), sy(hi)));
            let lower = serie
                .band
                .iter()
                .rev()
                .map(|&(x, lo, _)| format!("{:.1},{:.1}", sx(x), sy(lo)));
            let pts: Vec<String> = upper.chain(lower).collect();
            let _ = write!(
                s,
                "<polygon points=\"{}\" fill=\"{colour}\" fill-opacity=\"0.15\" stroke=\"none\"/>",
                pts.join(" ")
            );
        }
        let pts: Vec<String> = serie
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        if pts.len() == 1 {
            let (x, y) = serie.points[0];
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                sx(x),
                sy(y)
            );
        } else if !pts.is_empty() {
            let _ = write!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"/>",
                pts.join(" ")
            );
        }
        #[allow(clippy::cast_precision_loss)]
        let ly = TOP + 12.0 * i as f64 + 8.0;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"11\" fill=\"{colour}\">{}</text>",
            LEFT + 8.0,
            esc(&serie.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// A scatter plot of points (x, y) in the unit square, with the diagonal y = x.
pub fn scatter_unit(title: &str, points: &[(f64, f64)], x_label: &str, y_label: &str) -> String {
    let size = 260.0;
    let pad = 36.0;
    let scale = |v: f64| pad + v * (size - 2.0 * pad);
    let mut s = format!(
        "<svg role=\"img\" viewBox=\"0 0 {size} {size}\" width=\"{size}\" height=\"{size}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title>\
         <rect x=\"{pad}\" y=\"{pad}\" width=\"{w}\" height=\"{w}\" fill=\"none\" stroke=\"#999\"/>\
         <line x1=\"{pad}\" y1=\"{e}\" x2=\"{e}\" y2=\"{pad}\" stroke=\"#ccc\"/>\
         <text x=\"{mid}\" y=\"{xl}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
         <text x=\"12\" y=\"{mid}\" font-size=\"11\" text-anchor=\"middle\" \
         transform=\"rotate(-90 12 {mid})\">{}</text>",
        esc(title),
        esc(x_label),
        esc(y_label),
        w = size - 2.0 * pad,
        e = size - pad,
        mid = size / 2.0,
        xl = size - 10.0,
    );
    for &(x, y) in points {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#0969da\" fill-opacity=\"0.5\"/>",
            scale(x),
            size - scale(y)
        );
    }
    s.push_str("</svg>");
    s
}

/// A number for an axis label.
fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
