//! `--plot FILE.svg`: the latency-by-percentile plot HdrHistogram users know
//! (x: percentile on a log scale of `1 / (1 - p)`, y: latency), one line per
//! report, hand-written SVG with no dependencies.

use std::fmt::Write as _;

use super::report::{fmt_us, Report};

const W: f64 = 800.0;
const H: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// The x axis spans 0 .. 99.999 % (5 nines).
const NINES: f64 = 5.0;
const POINTS: u32 = 250;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];

/// Renders the percentile curves of `series` (`(label, report)`) as an SVG document.
pub fn svg(title: &str, series: &[(&str, &Report)]) -> String {
    let curves: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, r)| {
            (0..=POINTS)
                .map(|k| {
                    let x = NINES * f64::from(k) / f64::from(POINTS);
                    let p = 100.0 * (1.0 - 10f64.powf(-x));
                    (x, r.latency_at(p).as_secs_f64() * 1e6)
                })
                .collect()
        })
        .collect();
    let top = curves
        .iter()
        .flatten()
        .map(|&(_, y)| y)
        .fold(0.0f64, f64::max);
    let step = nice_step(top.max(1.0) / 5.0);
    let y_max = (top / step).ceil().max(1.0) * step;
    let px = |x: f64| LEFT + x / NINES * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - y / y_max * (H - TOP - BOTTOM);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Grid and axes.
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        #[allow(clippy::cast_precision_loss)] // i < 6
        let x = px(i as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    let mut y = 0.0;
    while y <= y_max + step / 2.0 {
        let yy = py(y);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            escape(&fmt_us(y))
        );
        y += step;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>
<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency</text>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 14.0,
        TOP + (H - TOP - BOTTOM) / 2.0,
        TOP + (H - TOP - BOTTOM) / 2.0
    );
    // Curves and legend.
    for (i, ((label, _), curve)) in series.iter().zip(&curves).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = curve
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        #[allow(clippy::cast_precision_loss)] // a handful of series
        let ly = TOP + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            ly + 4.0,
            escape(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * pow)
        .find(|&v| v >= raw)
        .unwrap_or(10.0 * pow)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_escapes() {
        assert!((nice_step(130.0) - 200.0).abs() < 1e-9);
        assert!((nice_step(0.9) - 1.0).abs() < 1e-9);
        assert_eq!(escape("a?b=1&c=<2>"), "a?b=1&amp;c=&lt;2&gt;");
    }
}
