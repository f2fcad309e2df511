//! Reading a member's Prometheus text (what [`Cluster::metrics`](crate::Cluster::metrics)
//! returns) into numbers a benchmark can print.
//!
//! What: [`Scrape::parse`] keeps every sample line (`name{labels} value`), skipping comments and
//! a leading HTTP response head. [`Scrape::since`] subtracts an earlier scrape series by series,
//! so counters and histograms cover exactly one phase of a run. [`Scrape::sum`] adds the
//! samples of a name whose labels include the given pairs, and [`Scrape::histogram`] gathers a
//! histogram's buckets, sum and count for estimates ([`HistogramSummary::quantile`]).
//!
//! Caveats:
//! - `since` also subtracts gauges, which is meaningful only for monotonic ones (such as the
//!   applied index).
//! - Quantiles are bucket bounds, so they are only as fine as the buckets (the members use
//!   powers of two): "p99 ≤ 6.4 ms", not "p99 = 6.4 ms".

use std::collections::BTreeMap;

/// One sample: a metric name, its labels (sorted by name) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name, such as `flame_proposals_total` or `flame_apply_seconds_bucket`.
    pub name: String,
    /// Label pairs, sorted by label name.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// A series: its name and labels.
type SeriesKey<'a> = (&'a str, &'a [(String, String)]);

/// Every sample of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    samples: Vec<Sample>,
}

/// A histogram's cumulative buckets `(upper bound, count)`, sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSummary {
    /// `(le, cumulative count)`, ascending by bound; the last bound may be infinite.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of the observed values.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl Scrape {
    /// Parses Prometheus or OpenMetrics text; an HTTP response head before the first blank
    /// line is skipped, and lines that are not samples are ignored.
    pub fn parse(text: &str) -> Scrape {
        let body = match text.starts_with("HTTP/") {
            true => text
                .split_once("\r\n\r\n")
                .or_else(|| text.split_once("\n\n"))
                .map_or("", |(_, body)| body),
            false => text,
        };
        let samples = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(parse_sample)
            .collect();
        Scrape { samples }
    }

    /// Every sample.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// This scrape minus `earlier`, series by series (a series absent earlier counts as 0).
    pub fn since(&self, earlier: &Scrape) -> Scrape {
        let before: BTreeMap<SeriesKey<'_>, f64> = earlier
            .samples
            .iter()
            .map(|s| ((s.name.as_str(), s.labels.as_slice()), s.value))
            .collect();
        let samples = self
            .samples
            .iter()
            .map(|s| {
                let old = before
                    .get(&(s.name.as_str(), s.labels.as_slice()))
                    .copied()
                    .unwrap_or(0.0);
                Sample {
                    value: s.value - old,
                    ..s.clone()
                }
            })
            .collect();
        Scrape { samples }
    }

    /// The sum of the samples called `name` whose labels include every pair of `labels`
    /// (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Histogram `name` (without the `_bucket`/`_sum`/`_count` suffix) over the series whose
    /// labels include `labels`, merged; `None` when it has no buckets.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<HistogramSummary> {
        let mut by_bound: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.matching(&format!("{name}_bucket"), labels) {
            let Some(le) = s.labels.iter().find(|(k, _)| k == "le") else {
                continue;
            };
            let bound = parse_value(&le.1)?;
            // f64 bits of non-negative bounds sort like the numbers.
            by_bound.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += s.value;
        }
        if by_bound.is_empty() {
            return None;
        }
        Some(HistogramSummary {
            buckets: by_bound.into_values().collect(),
            sum: self.sum(&format!("{name}_sum"), labels),
            count: self.sum(&format!("{name}_count"), labels),
        })
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }
}

impl HistogramSummary {
    /// The mean observation, if there was any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The smallest bucket bound with at least a share `q` (0..=1) of the observations: an
    /// upper bound of quantile `q`, as fine as the buckets; the largest finite bound when the
    /// quantile lies in the `+Inf` bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count;
        let mut finite = None;
        for &(bound, cumulative) in &self.buckets {
            if bound.is_finite() {
                finite = Some(bound);
            }
            if cumulative >= rank && cumulative > 0.0 {
                return finite;
            }
        }
        finite
    }
}

/// Parses `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let (series, rest) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_once(char::is_whitespace)?,
    };
    let value = parse_value(rest.split_whitespace().next()?)?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    (!name.is_empty()).then(|| Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"` (with `\"`, `\\` and `\n` escapes); sorted by name.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text.trim_start_matches(',');
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels.sort();
    Some(labels)
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "HTTP/1.0 200 OK\r\ncontent-length: 10\r\n\r\n\
        # HELP flame_proposals Raft entries proposed.\n\
        flame_proposals_total 10\n\
        flame_requests_total{method=\"/a/B\",code=\"Ok\"} 3\n\
        flame_requests_total{code=\"NotFound\",method=\"/a/B\"} 1\n\
        flame_x_bucket{le=\"1.0\"} 2\n\
        flame_x_bucket{le=\"2.0\"} 6\n\
        flame_x_bucket{le=\"+Inf\"} 8\n\
        flame_x_sum 12.0\n\
        flame_x_count 8\n\
        # EOF\n";

    #[test]
    fn samples_are_read_and_the_http_head_is_skipped() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.samples().len(), 8);
        assert_eq!(s.sum("flame_proposals_total", &[]), 10.0);
        assert_eq!(s.sum("flame_requests_total", &[("method", "/a/B")]), 4.0);
        assert_eq!(s.sum("flame_requests_total", &[("code", "Ok")]), 3.0);
        assert_eq!(s.sum("content-length:", &[]), 0.0);
    }

    #[test]
    fn histograms_give_means_and_bucket_bounds_as_quantiles() {
        let h = Scrape::parse(TEXT).histogram("flame_x", &[]).unwrap();
        assert_eq!(h.mean(), Some(1.5));
        assert_eq!(h.quantile(0.25), Some(1.0));
        assert_eq!(h.quantile(0.5), Some(2.0));
        assert_eq!(h.quantile(0.99), Some(2.0));
    }

    #[test]
    fn since_subtracts_series_by_series() {
        let before = Scrape::parse("a_total 4\nb{x=\"1\"} 1\n");
        let after = Scrape::parse("a_total 10\nb{x=\"1\"} 3\nc 5\n");
        let d = after.since(&before);
        assert_eq!(d.sum("a_total", &[]), 6.0);
        assert_eq!(d.sum("b", &[("x", "1")]), 2.0);
        assert_eq!(d.sum("c", &[]), 5.0);
    }
}
