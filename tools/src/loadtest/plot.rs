//! The latency plot: one percentile curve per scenario, as HdrHistogram plots draw them (x is
//! the percentile on a log scale of 1/(1-p): 0%, 90%, 99%, 99.9%, ...), y is the latency on a log
//! scale so a 1 KB hit and a 1 MB pass-through fit one figure.
//!
//! Hand-written SVG (about a hundred lines) rather than `plotters`: the figure is a few
//! polylines, grid lines and text labels, and plotters would add a dozen crates (and font
//! handling that the SVG backend only passes through anyway) to the binary for that.

use super::report::{fmt_us, Report};
use std::fmt::Write as _;

const W: f64 = 860.0;
const H: f64 = 500.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// x in decades of 1/(1-p): 0 for 0%, 1 for 90%, ... 5 for 99.999%.
fn decades(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-5);
    (-rest.log10()).clamp(0.0, 5.0)
}

/// The SVG of a report's latency curves.
pub fn svg(report: &Report) -> String {
    let series: Vec<(&str, &[(f64, u64)])> = report
        .scenarios
        .iter()
        .filter(|s| !s.percentile_curve.is_empty())
        .map(|s| (s.scenario.as_str(), s.percentile_curve.as_slice()))
        .collect();
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|(_, v)| *v))
        .fold((u64::MAX, 0u64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi {
        (1, 1000)
    } else {
        (lo.max(1), hi.max(1))
    };
    // Whole decades of µs around the data.
    let y0 = (lo as f64).log10().floor();
    let y1 = ((hi as f64).log10().ceil()).max(y0 + 1.0);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |p: f64| LEFT + decades(p) / 5.0 * pw;
    let py = |us: u64| TOP + ph - ((us.max(1) as f64).log10() - y0) / (y1 - y0) * ph;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="22" font-size="15">Latency by percentile: {} ({} connections{})</text>"#,
        esc(&report.label),
        report.config.connections,
        report
            .config
            .rate
            .map(|r| format!(", {r:.0} req/s"))
            .unwrap_or_default()
    );
    // Grid: x at each decade, y at each decade of µs.
    for (k, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = LEFT + k as f64 / 5.0 * pw;
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    let mut d = y0;
    while d <= y1 + 1e-9 {
        let us = 10f64.powf(d) as u64;
        let y = py(us);
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            esc(&fmt_us(us))
        );
        d += 1.0;
    }
    let _ = writeln!(
        o,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        o,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (log scale)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    for (i, (name, curve)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = curve
            .iter()
            .map(|(p, v)| format!("{:.1},{:.1}", px(*p), py(*v)))
            .collect();
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let lx = LEFT + pw + 14.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            esc(name)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decade_positions() {
        assert_eq!(decades(0.0), 0.0);
        assert!((decades(90.0) - 1.0).abs() < 1e-9);
        assert!((decades(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(decades(100.0), 5.0);
    }

    #[test]
    fn escapes_text() {
        assert_eq!(esc("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
