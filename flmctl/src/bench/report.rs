//! The results of `flmctl bench`: a small table, one JSON object, or a CSV header and row.
//!
//! What: [`Summary`] holds the settings and figures of one run (latencies in milliseconds,
//! from the run's hdrhistogram of µs); [`table`], [`json`] and [`csv`] print it. JSON and CSV
//! share the field names of [`Summary`]; JSON adds `errors`, the first failure messages.
//!
//! Caveat: throughput counts succeeded tasks only, over the whole wall time (first submission
//! to the last terminal task seen).

use super::Plan;
use super::runner::{LatencySource, Outcome};
use crate::output::{self, Rows};
use serde::Serialize;

/// The figures of one run, flat so that CSV can carry them.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `concurrent` or `batch`.
    pub mode: &'static str,
    /// The session's application.
    pub app: String,
    /// Measured tasks.
    pub tasks: u64,
    /// Tasks (concurrent) or CreateTasks calls (batch) in flight.
    pub concurrency: u64,
    /// CreateTasks batch size (batch mode only).
    pub batch: Option<u64>,
    /// Requested input bytes per task.
    pub payload_bytes: u64,
    /// Requested task duration, ms.
    pub duration_ms: u64,
    /// Tasks that ended Succeed.
    pub succeeded: u64,
    /// Tasks that did not.
    pub failed: u64,
    /// Wall time of the measured tasks, seconds.
    pub wall_secs: f64,
    /// Succeeded tasks per second of wall time.
    pub throughput: f64,
    /// `client` (submit to observed terminal) or `server` (created to completed).
    pub latency: &'static str,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Highest latency, ms.
    pub max_ms: f64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// The first failure messages (JSON and table only).
    #[serde(skip)]
    pub errors: Vec<String>,
}

/// µs to ms with µs precision.
fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Summary {
    /// The summary of `outcome`, run as `plan` says.
    pub fn new(plan: &Plan, outcome: &Outcome) -> Summary {
        let h = &outcome.latencies;
        let wall = outcome.wall.as_secs_f64();
        Summary {
            mode: if plan.batch.is_some() {
                "batch"
            } else {
                "concurrent"
            },
            app: plan.app.clone(),
            tasks: plan.tasks,
            concurrency: plan.concurrency,
            batch: plan.batch,
            payload_bytes: plan.payload,
            duration_ms: plan.duration_ms,
            succeeded: outcome.succeeded,
            failed: outcome.failed,
            wall_secs: (wall * 1000.0).round() / 1000.0,
            throughput: if wall > 0.0 {
                (outcome.succeeded as f64 / wall * 10.0).round() / 10.0
            } else {
                0.0
            },
            latency: match outcome.source {
                LatencySource::Client => "client",
                LatencySource::Server => "server",
            },
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean().round() / 1000.0,
            errors: outcome.errors.clone(),
        }
    }

    /// A one-line description of the run, for the histogram's title.
    pub fn title(&self) -> String {
        format!(
            "{} tasks of {} ({}), latency ({}) in ms",
            self.tasks,
            self.app,
            self.mode_text(),
            self.latency
        )
    }

    fn mode_text(&self) -> String {
        match self.batch {
            Some(b) => format!("batches of {b}, {} calls in flight", self.concurrency),
            None => format!("{} in flight", self.concurrency),
        }
    }
}

/// The summary as a two-column table, then the first failure messages, if any.
pub fn table(s: &Summary) -> String {
    let latency = match s.latency {
        "client" => "submit to observed terminal (client)",
        _ => "created to completed (server)",
    };
    let cells = [
        ("Mode", format!("{} ({})", s.mode, s.mode_text())),
        ("Application", s.app.clone()),
        (
            "Input",
            format!(
                "{}B, {} ms per task",
                output::bytes(s.payload_bytes),
                s.duration_ms
            ),
        ),
        ("Succeeded", s.succeeded.to_string()),
        ("Failed", s.failed.to_string()),
        ("Wall time", format!("{:.3} s", s.wall_secs)),
        ("Throughput", format!("{:.1} tasks/s", s.throughput)),
        ("Latency", latency.to_owned()),
        ("p50", format!("{:.3} ms", s.p50_ms)),
        ("p90", format!("{:.3} ms", s.p90_ms)),
        ("p99", format!("{:.3} ms", s.p99_ms)),
        ("max", format!("{:.3} ms", s.max_ms)),
    ];
    let rows = Rows {
        headers: vec!["Result", "Value"],
        cells: cells
            .into_iter()
            .map(|(k, v)| vec![k.to_owned(), v])
            .collect(),
        values: Vec::new(),
    };
    let mut text = output::render(&rows, output::Format::Table).unwrap_or_default();
    if !s.errors.is_empty() {
        text.push_str(&format!("First failures (of {}):\n", s.failed));
        for e in &s.errors {
            text.push_str(&format!("  {e}\n"));
        }
    }
    text
}

/// The summary as one pretty JSON object (with `errors`).
pub fn json(s: &Summary) -> anyhow::Result<String> {
    /// The summary's fields in order, then `errors`.
    #[derive(Serialize)]
    struct WithErrors<'a> {
        #[serde(flatten)]
        summary: &'a Summary,
        errors: &'a [String],
    }
    let value = WithErrors {
        summary: s,
        errors: &s.errors,
    };
    Ok(serde_json::to_string_pretty(&value)? + "\n")
}

/// The summary as a CSV header and one row (without `errors`).
pub fn csv(s: &Summary) -> anyhow::Result<String> {
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    writer.serialize(s)?;
    Ok(String::from_utf8(writer.into_inner()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::runner::new_histogram;
    use std::time::Duration;

    fn summary() -> Summary {
        let plan = crate::bench::Plan {
            tasks: 4,
            concurrency: 2,
            batch: None,
            input: None,
            payload: 4096,
            duration_ms: 0,
            app: "flmping".into(),
            warmup: 0,
            task_timeout: Duration::from_secs(1),
            progress: false,
        };
        let mut latencies = new_histogram();
        for micros in [1000, 2000, 3000] {
            latencies.record(micros).unwrap();
        }
        let outcome = Outcome {
            succeeded: 3,
            failed: 1,
            wall: Duration::from_millis(500),
            latencies,
            source: LatencySource::Client,
            errors: vec!["task t failed: boom".into()],
        };
        Summary::new(&plan, &outcome)
    }

    #[test]
    fn throughput_counts_succeeded_tasks_over_the_wall_time() {
        let s = summary();
        assert_eq!(s.throughput, 6.0);
        // hdrhistogram keeps three significant digits: 3000 µs reads back as up to 3001.
        assert_eq!(s.p50_ms, 2.0);
        assert!((s.max_ms - 3.0).abs() < 0.01, "{}", s.max_ms);
    }

    #[test]
    fn csv_is_one_header_and_one_row_with_the_same_fields() {
        let text = csv(&summary()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("mode,app,tasks,"), "{text}");
        assert_eq!(
            lines[0].split(',').count(),
            lines[1].split(',').count(),
            "{text}"
        );
    }

    #[test]
    fn the_table_lists_the_first_failures_after_the_figures() {
        let text = table(&summary());
        let throughput = text.lines().find(|l| l.contains("Throughput")).unwrap();
        assert_eq!(throughput.split_whitespace().nth(1), Some("6.0"), "{text}");
        assert!(text.ends_with("First failures (of 1):\n  task t failed: boom\n"));
    }
}
