//! The latency histogram of `flmctl bench --histogram FILE.png`.
//!
//! What: [`buckets`] spreads a run's hdrhistogram (µs) over [`BUCKETS`] equal-width bars from
//! the lowest to the highest latency; [`write_png`] draws them as a [`WIDTH`]×[`HEIGHT`] PNG
//! with plotters' bitmap backend, titled and with labelled axes.
//!
//! Why an embedded font: plotters' usual text path looks fonts up in the system (fontconfig),
//! which a clean machine may not have; here the text is drawn with ab_glyph from DejaVu Sans
//! compiled into the binary, so nothing outside it is needed.
//!
//! Caveat: the range runs to the highest latency, so one slow outlier widens every bar; the
//! percentiles in the report are exact to hdrhistogram's three significant digits.

use anyhow::{anyhow, bail};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

/// Width of the PNG, pixels.
pub const WIDTH: u32 = 800;
/// Height of the PNG, pixels.
pub const HEIGHT: u32 = 480;
/// Bars in the chart.
pub const BUCKETS: usize = 50;
/// The font family the chart's text uses (registered from the embedded font).
const FONT: &str = "sans-serif";

/// One bar: latencies in `[lo_ms, hi_ms)`, and how many tasks had one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Lower bound, ms (inclusive).
    pub lo_ms: f64,
    /// Upper bound, ms (exclusive).
    pub hi_ms: f64,
    /// Tasks in the bar.
    pub count: u64,
}

/// `histogram` (µs) as `n` equal-width bars from its lowest to its highest value; empty when
/// nothing was recorded.
pub fn buckets(histogram: &Histogram<u64>, n: usize) -> Vec<Bucket> {
    if histogram.is_empty() || n == 0 {
        return Vec::new();
    }
    let lo = histogram.min();
    let span = histogram.max().saturating_sub(lo) + 1;
    let width = span.div_ceil(n as u64).max(1);
    let mut bars: Vec<Bucket> = (0..n as u64)
        .map(|i| Bucket {
            lo_ms: (lo + i * width) as f64 / 1000.0,
            hi_ms: (lo + (i + 1) * width) as f64 / 1000.0,
            count: 0,
        })
        .collect();
    for value in histogram.iter_recorded() {
        let at = histogram.lowest_equivalent(value.value_iterated_to());
        let index = (at.saturating_sub(lo) / width).min(n as u64 - 1);
        bars[index as usize].count += value.count_at_value();
    }
    bars
}

/// Makes the embedded font available to plotters (once per process).
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if !ok {
        bail!("the embedded font could not be loaded");
    }
    Ok(())
}

/// Draws `histogram` (µs) as a bar chart titled `title` into the PNG at `path`.
pub fn write_png(path: &Path, histogram: &Histogram<u64>, title: &str) -> anyhow::Result<()> {
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        bail!("only PNG is written; hint: name the file FILE.png");
    }
    register_font()?;
    let bars = buckets(histogram, BUCKETS);
    let x_range = match (bars.first(), bars.last()) {
        (Some(first), Some(last)) => first.lo_ms..last.hi_ms,
        _ => 0.0..1.0,
    };
    let tallest = bars.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| anyhow!("{e}");
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 18))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, 0u64..tallest + tallest / 10 + 1)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("latency (ms)")
        .y_desc("tasks")
        .label_style((FONT, 13))
        .draw()
        .map_err(|e| fail(&e))?;
    let fill = RGBColor(52, 101, 164).filled();
    chart
        .draw_series(
            bars.iter()
                .map(|b| Rectangle::new([(b.lo_ms, 0), (b.hi_ms, b.count)], fill)),
        )
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::runner::new_histogram;

    #[test]
    fn every_value_lands_in_the_bar_of_its_range() {
        let mut h = new_histogram();
        for micros in [1000, 1000, 1500, 2999, 5000] {
            h.record(micros).unwrap();
        }
        let bars = buckets(&h, 4);
        assert_eq!(bars.len(), 4);
        assert_eq!(bars.iter().map(|b| b.count).sum::<u64>(), 5);
        // 1000..=5000 µs in 4 bars of ~1 ms: [1,2) holds three, [2,3) one, the last one.
        let counts: Vec<u64> = bars.iter().map(|b| b.count).collect();
        assert_eq!(counts, [3, 1, 0, 1], "{bars:?}");
        assert_eq!(bars[0].lo_ms, 1.0);
        assert!(bars[3].hi_ms > 5.0, "{bars:?}");
        assert!(bars.windows(2).all(|w| w[0].hi_ms == w[1].lo_ms));
    }

    #[test]
    fn equal_values_fill_the_first_bar_and_nothing_gives_no_bars() {
        let mut h = new_histogram();
        h.record_n(700, 9).unwrap();
        let bars = buckets(&h, 10);
        assert_eq!(bars[0].count, 9);
        assert_eq!(bars.iter().map(|b| b.count).sum::<u64>(), 9);
        assert!(buckets(&new_histogram(), 10).is_empty());
    }

    #[test]
    fn only_png_files_are_written() {
        let error = write_png(Path::new("/tmp/h.svg"), &new_histogram(), "t").unwrap_err();
        assert!(error.to_string().contains("FILE.png"), "{error}");
    }
}
