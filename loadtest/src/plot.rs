//! Small SVG line charts: throughput and p99 over time, and latency by percentile.
//!
//! Written directly as SVG rather than with a plotting crate: those lay out text with a
//! font backend (freetype/fontconfig or an embedded font), while SVG text is laid out by
//! whatever displays the chart.

use std::fmt::Write;
use std::path::Path;

use crate::report::Report;

const W: f64 = 720.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
/// Room right of the plot for the legend, at least; more for longer series names.
const RIGHT: f64 = 150.0;
/// Width of a legend character at the chart's 12 px sans-serif, roughly (wide enough
/// for lower-case names and digits).
const LEGEND_CHAR: f64 = 7.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// A series: name and points.
pub type Series = (String, Vec<(f64, f64)>);

/// "Nice" tick step for a range.
fn step(range: f64) -> f64 {
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    mag * if norm < 1.5 {
        1.0
    } else if norm < 3.5 {
        2.0
    } else if norm < 7.5 {
        5.0
    } else {
        10.0
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A line chart. `x_ticks` gives labelled x positions (for the percentile axis); `None`
/// picks numeric ticks.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_ticks: Option<&[(f64, &str)]>,
) -> String {
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let ystep = step(if y1 > 0.0 { y1 } else { 1.0 });
    let y1 = (y1 / ystep).ceil().max(1.0) * ystep;
    let pw = W - LEFT - RIGHT;
    // The legend sits right of the plot: the chart widens rather than cut a long name.
    let longest = series.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0);
    let right = RIGHT.max(36.0 + LEGEND_CHAR * longest as f64 + 10.0);
    let w = LEFT + pw + right;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - y / y1 * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{H}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    // Grid and y ticks.
    let mut y = 0.0;
    while y <= y1 + ystep / 2.0 {
        let py = sy(y);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{py}" x2="{}" y2="{py}" stroke="#ddd"/>"##,
            LEFT + pw
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            py + 4.0,
            trim(y)
        );
        y += ystep;
    }
    // X ticks.
    let ticks: Vec<(f64, String)> = match x_ticks {
        Some(t) => t.iter().map(|(x, l)| (*x, l.to_string())).collect(),
        None => {
            let xs = step(x1 - x0);
            let mut v = Vec::new();
            let mut x = (x0 / xs).ceil() * xs;
            while x <= x1 + 1e-9 {
                v.push((x, trim(x)));
                x += xs;
            }
            v
        }
    };
    for (x, label) in ticks {
        let px = sx(x);
        let _ = write!(
            s,
            r##"<line x1="{px}" y1="{}" x2="{px}" y2="{}" stroke="#999"/>"##,
            TOP + ph,
            TOP + ph + 5.0
        );
        let _ = write!(
            s,
            r#"<text x="{px}" y="{}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            escape(&label)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 10.0,
        escape(x_label)
    );
    let _ = write!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(y_label)
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 14.0 + i as f64 * 18.0;
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
            w - right + 10.0,
            w - right + 30.0
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            w - right + 36.0,
            ly + 4.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn trim(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Percentile on a "number of nines" axis: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3 ...
fn nines(p: f64) -> f64 {
    if p >= 100.0 { 5.0 } else { -(1.0 - p / 100.0).log10() }
}

const NINES_TICKS: [(f64, &str); 6] = [
    (0.0, "0%"),
    (1.0, "90%"),
    (2.0, "99%"),
    (3.0, "99.9%"),
    (4.0, "99.99%"),
    (5.0, "max"),
];

/// Writes `{label}-throughput.svg`, `{label}-p99.svg` and `{label}-latency.svg` for one or
/// more reports (several reports share the charts, one line each).
pub fn write(dir: &Path, label: &str, reports: &[&Report]) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // Whole seconds only: the run's last, partial second would show as a drop to zero.
    let whole = |r: &&Report| {
        let secs = r.summary.duration_s.floor() as u64;
        r.summary
            .timeseries
            .iter()
            .filter(move |p| p.second < secs)
            .cloned()
            .collect::<Vec<_>>()
    };
    let tp: Vec<Series> = reports
        .iter()
        .map(|r| {
            (
                r.label.clone(),
                whole(r).iter().map(|p| (p.second as f64, p.ops as f64)).collect(),
            )
        })
        .collect();
    let p99: Vec<Series> = reports
        .iter()
        .map(|r| {
            let points = whole(r)
                .iter()
                .filter(|p| p.ops > 0)
                .map(|p| (p.second as f64, p.p99_us as f64 / 1000.0))
                .collect();
            (r.label.clone(), points)
        })
        .collect();
    let dist: Vec<Series> = reports
        .iter()
        .map(|r| {
            (
                r.label.clone(),
                r.summary
                    .distribution
                    .iter()
                    .map(|p| (nines(p.percentile), p.latency_us as f64 / 1000.0))
                    .collect(),
            )
        })
        .collect();
    let files = [
        (
            format!("{label}-throughput.svg"),
            line_chart("Throughput", "second", "operations / s", &tp, None),
        ),
        (
            format!("{label}-p99.svg"),
            line_chart("p99 latency per second", "second", "ms", &p99, None),
        ),
        (
            format!("{label}-latency.svg"),
            line_chart("Latency by percentile", "percentile", "ms", &dist, Some(&NINES_TICKS)),
        ),
    ];
    let mut written = Vec::new();
    for (name, svg) in files {
        let path = dir.join(name);
        std::fs::write(&path, svg)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_well_formed_svg_with_every_series() {
        let s = line_chart(
            "T <x>",
            "second",
            "ops",
            &[
                ("a".into(), vec![(0.0, 1.0), (1.0, 3.0)]),
                ("b".into(), vec![(0.0, 2.0)]),
            ],
            None,
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("T &lt;x&gt;"));
        // A long series name widens the chart rather than run off its edge.
        let width = |svg: &str| -> f64 {
            let from = svg.find("width=\"").unwrap() + 7;
            svg[from..from + svg[from..].find('"').unwrap()].parse().unwrap()
        };
        let long = line_chart(
            "T",
            "s",
            "ms",
            &[("dynakv-a-open-antientropy".into(), vec![(0.0, 1.0)])],
            None,
        );
        assert_eq!(width(&s), W);
        assert!(
            width(&long) >= W - RIGHT + 36.0 + 25.0 * LEGEND_CHAR,
            "{}",
            width(&long)
        );
        // Empty input still renders a frame rather than dividing by zero.
        let empty = line_chart("e", "x", "y", &[], None);
        assert!(!empty.contains("NaN") && !empty.contains("inf"));
    }

    #[test]
    fn nice_steps_and_nines() {
        assert_eq!(step(10.0), 2.0);
        assert_eq!(step(1000.0), 200.0);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(nines(100.0), 5.0);
    }
}
