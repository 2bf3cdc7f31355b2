//! A latency-percentile plot as a small hand-written SVG: latency (log scale, µs) against
//! percentile on the usual "number of nines" axis (0, 90, 99, 99.9, ... %), one polyline from
//! the HDR histogram. Pure string building; no plotting dependency.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const MARGIN: f64 = 60.0;
/// Nines on the x axis: up to 99.999 %.
const NINES_MAX: f64 = 5.0;
/// Points along the curve.
const POINTS: u32 = 200;

/// x position of quantile `q`: -log10(1 - q) nines, clamped to the axis.
fn nines(q: f64) -> f64 {
    (-(1.0 - q).max(1e-12).log10()).clamp(0.0, NINES_MAX)
}

/// The SVG text of the percentile curve of `hist` (values in ns, shown in µs).
pub fn percentile_svg(hist: &Histogram<u64>, title: &str) -> String {
    let us = |ns: u64| (ns.max(1) as f64 / 1000.0).max(0.001);
    let lo = us(hist.min()).log10().floor();
    let hi = us(hist.max()).log10().ceil().max(lo + 1.0);
    let plot_w = WIDTH - 2.0 * MARGIN;
    let plot_h = HEIGHT - 2.0 * MARGIN;
    let x_of = |n: f64| MARGIN + n / NINES_MAX * plot_w;
    let y_of = |v: f64| HEIGHT - MARGIN - (v.log10() - lo) / (hi - lo) * plot_h;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{MARGIN}" y="24" font-size="14">{}</text>"#, escape(title));
    for n in 0..=NINES_MAX as u32 {
        let x = x_of(f64::from(n));
        let label = 100.0 - 100.0 / 10f64.powi(n as i32);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{MARGIN}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}%</text>"##,
            HEIGHT - MARGIN,
            HEIGHT - MARGIN + 18.0
        );
    }
    for decade in lo as i32..=hi as i32 {
        let y = y_of(10f64.powi(decade));
        let _ = writeln!(
            out,
            r##"<line x1="{MARGIN}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} us</text>"##,
            WIDTH - MARGIN,
            MARGIN - 6.0,
            y + 4.0,
            10f64.powi(decade)
        );
    }
    let mut points = String::new();
    for i in 0..=POINTS {
        let n = f64::from(i) / f64::from(POINTS) * NINES_MAX;
        let q = 1.0 - 10f64.powf(-n);
        let _ = write!(points, "{:.1},{:.1} ", x_of(n), y_of(us(hist.value_at_quantile(q))));
    }
    let _ = writeln!(out, r##"<polyline fill="none" stroke="#c33" stroke-width="2" points="{}"/>"##, points.trim_end());
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (max {:.1} us, nines {:.1})</text>"#,
        WIDTH / 2.0,
        HEIGHT - 12.0,
        us(hist.max()),
        nines(1.0 - 1.0 / hist.len().max(1) as f64)
    );
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_axes_and_one_curve() {
        let mut hist = crate::pace::histogram();
        for ns in [10_000u64, 20_000, 30_000, 5_000_000] {
            hist.record(ns).expect("in range");
        }
        let svg = percentile_svg(&hist, "a <b> & c");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("99.9%") && svg.contains("a &lt;b&gt; &amp; c"));
        assert!(svg.contains("1000 us"));
        assert_eq!(nines(0.999), 3.0_f64.min(nines(0.999)));
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
    }
}
