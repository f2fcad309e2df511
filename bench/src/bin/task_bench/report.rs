//! `task-bench`'s figures and how they are printed: a comfy-table per kind (figures, leader
//! metrics) with one column per run, or one JSON document.

use chaos_tests::prometheus::Scrape;
use comfy_table::Table;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Everything measured in one run (one fresh cluster).
#[derive(Debug, Serialize)]
pub struct RunFigures {
    /// Node agents in the cluster.
    pub agents: usize,
    /// Executors Bound to the session before the first task.
    pub executors_bound: usize,
    /// Bound executors per node.
    pub bound_per_node: BTreeMap<String, usize>,
    /// Instance launches over all agents at the end.
    pub launches: usize,
    /// Distinct executors the agents launched instances for.
    pub executors_launched: usize,
    /// The sequential phase.
    pub sequential: Latency,
    /// The throughput phase.
    pub throughput: Throughput,
    /// Leader metrics over the sequential phase.
    pub profile_sequential: Profile,
    /// Leader metrics over the throughput phase.
    pub profile_throughput: Profile,
}

/// Submit-to-result latency of tasks run one at a time, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Tasks run.
    pub tasks: u64,
    /// Tasks that ended other than Succeed.
    pub failed: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Where the time went, from the tasks' events.
    pub stages: Stages,
}

/// A sequential task's stages, from the leader-stamped times (ms) of its events: created →
/// Running (scheduled: `AssignTasks` proposed), Running → terminal (the agent ran it, reported
/// it, `CompleteTasks` proposed), and the remainder of the client's figure (the requests, the
/// last commit and the watch). Each as `[p50, p90, p99]`.
#[derive(Debug, Default, Serialize)]
pub struct Stages {
    /// Tasks whose events showed all three stamps.
    pub tasks: usize,
    /// Created → Running.
    pub queued_ms: [f64; 3],
    /// Running → terminal.
    pub running_ms: [f64; 3],
    /// Client latency minus created → terminal.
    pub remainder_ms: [f64; 3],
}

impl Stages {
    /// From per-task samples in ms.
    pub fn new(queued: Vec<f64>, running: Vec<f64>, remainder: Vec<f64>) -> Stages {
        Stages {
            tasks: queued.len(),
            queued_ms: percentiles(queued),
            running_ms: percentiles(running),
            remainder_ms: percentiles(remainder),
        }
    }
}

/// `[p50, p90, p99]` of `values` (nearest rank; zeros when empty).
fn percentiles(mut values: Vec<f64>) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    [0.5, 0.9, 0.99].map(|q| {
        let rank = ((q * values.len() as f64).ceil() as usize).saturating_sub(1);
        values.get(rank).copied().unwrap_or_default()
    })
}

impl Latency {
    /// From a histogram of microseconds and the stages.
    pub fn new(histogram: &Histogram<u64>, tasks: u64, failed: u64, stages: Stages) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            tasks,
            failed,
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p90_ms: ms(histogram.value_at_quantile(0.9)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
            stages,
        }
    }
}

/// The throughput phase.
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// Tasks submitted.
    pub tasks: u64,
    /// First submission to the last CreateTasks reply.
    pub submit_secs: f64,
    /// First submission to the poll that saw every task terminal.
    pub total_secs: f64,
    /// Tasks that ended Succeed.
    pub succeed: u64,
    /// Tasks that ended Failed.
    pub failed: u64,
    /// Tasks that ended Cancelled.
    pub cancelled: u64,
}

impl Throughput {
    /// Tasks per second, first submission to last completion.
    pub fn rate(&self) -> f64 {
        self.tasks as f64 / self.total_secs
    }
}

/// The leader's metrics over one phase (deltas of two scrapes).
#[derive(Debug, Serialize)]
pub struct Profile {
    /// Tasks run in the phase.
    pub tasks: u64,
    /// The phase's wall time.
    pub wall_secs: f64,
    /// Raft entries the leader's proposer proposed.
    pub entries: f64,
    /// Commands in those proposals.
    pub commands: f64,
    /// Commands per proposed entry.
    pub batch: Spread,
    /// Proposal to response (commit and apply), ms.
    pub commit_ms: Spread,
    /// Time to apply one entry, ms.
    pub apply_ms: Spread,
    /// Seconds spent applying over the phase's wall time.
    pub apply_busy: f64,
    /// Client API requests by method.
    pub requests: BTreeMap<String, Calls>,
}

/// A histogram's mean and the bucket bounds of its p50 and p99.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Spread {
    /// Mean.
    pub mean: Option<f64>,
    /// The smallest bucket bound holding half of the observations.
    pub p50_le: Option<f64>,
    /// The smallest bucket bound holding 99% of the observations.
    pub p99_le: Option<f64>,
}

/// Client API calls of one method.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Calls {
    /// Calls answered.
    pub count: f64,
    /// Calls answered with another code than Ok.
    pub not_ok: f64,
    /// Mean latency (for streams: to the response headers), ms.
    pub mean_ms: Option<f64>,
}

impl Profile {
    /// From the delta `d` of two leader scrapes around a phase of `tasks` tasks.
    pub fn new(d: &Scrape, tasks: u64, wall: Duration) -> Profile {
        let three = |name: &str, scale: f64| {
            d.histogram(name, &[])
                .map_or(Spread::default(), |h| Spread {
                    mean: h.mean().map(|v| v * scale),
                    p50_le: h.quantile(0.5).map(|v| v * scale),
                    p99_le: h.quantile(0.99).map(|v| v * scale),
                })
        };
        let apply_sum = d.sum("flame_apply_seconds_sum", &[]);
        Profile {
            tasks,
            wall_secs: wall.as_secs_f64(),
            entries: d.sum("flame_proposals_total", &[]),
            commands: d.sum("flame_proposal_batch_size_sum", &[]),
            batch: three("flame_proposal_batch_size", 1.0),
            commit_ms: three("flame_proposal_commit_seconds", 1000.0),
            apply_ms: three("flame_apply_seconds", 1000.0),
            apply_busy: apply_sum / wall.as_secs_f64().max(1e-9),
            requests: requests(d),
        }
    }
}

/// Requests by method in a scrape delta, methods with none left out.
fn requests(d: &Scrape) -> BTreeMap<String, Calls> {
    let mut methods: Vec<&str> = d
        .samples()
        .iter()
        .filter(|s| s.name == "flame_requests_total" && s.value > 0.0)
        .filter_map(|s| s.labels.iter().find(|(k, _)| k == "method"))
        .map(|(_, v)| v.as_str())
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods
        .into_iter()
        .map(|m| {
            let count = d.sum("flame_requests_total", &[("method", m)]);
            let ok = d.sum("flame_requests_total", &[("method", m), ("code", "Ok")]);
            let mean = d
                .histogram("flame_request_seconds", &[("method", m)])
                .and_then(|h| h.mean())
                .map(|s| s * 1000.0);
            let calls = Calls {
                count,
                not_ok: count - ok,
                mean_ms: mean,
            };
            (m.to_owned(), calls)
        })
        .collect()
}

/// One line after each run, on stderr.
pub fn summary_line(r: &RunFigures) -> String {
    format!(
        "{} agent(s), {} executors bound: sequential p50 {:.2} ms p99 {:.2} ms; throughput \
         {:.0} tasks/s ({} tasks in {:.1} s, {} not Succeed)",
        r.agents,
        r.executors_bound,
        r.sequential.p50_ms,
        r.sequential.p99_ms,
        r.throughput.rate(),
        r.throughput.tasks,
        r.throughput.total_secs,
        r.throughput.failed + r.throughput.cancelled,
    )
}

/// The settings line above the tables.
pub fn header(settings: &serde_json::Value) -> String {
    format!(
        "three members on loopback, durable (fsync on append and apply); real node agents and \
         flmping instances; settings {settings}"
    )
}

fn run_name(r: &RunFigures) -> String {
    match r.agents {
        1 => "1 agent".to_owned(),
        n => format!("{n} agents"),
    }
}

/// Adds a row: `label`, then `cell(run)` for every run.
fn row(table: &mut Table, runs: &[RunFigures], label: &str, cell: impl Fn(&RunFigures) -> String) {
    let mut cells = vec![label.to_owned()];
    cells.extend(runs.iter().map(cell));
    table.add_row(cells);
}

/// The figures, one column per run.
pub fn figures_table(runs: &[RunFigures]) -> Table {
    let mut t = Table::new();
    let mut header = vec!["measure".to_owned()];
    header.extend(runs.iter().map(run_name));
    t.set_header(header);
    row(&mut t, runs, "executors bound (per node)", |r| {
        let per: Vec<String> = r
            .bound_per_node
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect();
        format!("{} ({})", r.executors_bound, per.join(", "))
    });
    row(
        &mut t,
        runs,
        "instance launches / executors launched",
        |r| format!("{} / {}", r.launches, r.executors_launched),
    );
    let ms = |v: f64| format!("{v:.2} ms");
    row(&mut t, runs, "sequential tasks (not Succeed)", |r| {
        format!("{} ({})", r.sequential.tasks, r.sequential.failed)
    });
    row(&mut t, runs, "sequential p50", |r| ms(r.sequential.p50_ms));
    row(&mut t, runs, "sequential p90", |r| ms(r.sequential.p90_ms));
    row(&mut t, runs, "sequential p99", |r| ms(r.sequential.p99_ms));
    row(&mut t, runs, "sequential max", |r| ms(r.sequential.max_ms));
    row(&mut t, runs, "sequential mean", |r| {
        ms(r.sequential.mean_ms)
    });
    let stage = |v: &[f64; 3]| format!("{:.0} / {:.0} / {:.0}", v[0], v[1], v[2]);
    row(
        &mut t,
        runs,
        "seq. created -> Running, ms p50/p90/p99",
        |r| stage(&r.sequential.stages.queued_ms),
    );
    row(
        &mut t,
        runs,
        "seq. Running -> Succeed, ms p50/p90/p99",
        |r| stage(&r.sequential.stages.running_ms),
    );
    row(
        &mut t,
        runs,
        "seq. remainder (RPCs, last commit, watch)",
        |r| stage(&r.sequential.stages.remainder_ms),
    );
    row(&mut t, runs, "throughput tasks/s", |r| {
        format!("{:.0}", r.throughput.rate())
    });
    row(&mut t, runs, "first submit -> all terminal", |r| {
        format!("{:.2} s", r.throughput.total_secs)
    });
    row(&mut t, runs, "all CreateTasks acknowledged", |r| {
        let rate = r.throughput.tasks as f64 / r.throughput.submit_secs;
        format!("{:.2} s ({rate:.0} tasks/s)", r.throughput.submit_secs)
    });
    row(&mut t, runs, "succeed / failed / cancelled", |r| {
        let tp = &r.throughput;
        format!("{} / {} / {}", tp.succeed, tp.failed, tp.cancelled)
    });
    t
}

/// The leader's metrics, one column per run and phase.
pub fn profile_table(runs: &[RunFigures]) -> Table {
    let phases: Vec<(String, &Profile)> = runs
        .iter()
        .flat_map(|r| {
            [
                (
                    format!("{}: sequential", run_name(r)),
                    &r.profile_sequential,
                ),
                (
                    format!("{}: throughput", run_name(r)),
                    &r.profile_throughput,
                ),
            ]
        })
        .collect();
    let mut t = Table::new();
    let mut header = vec!["leader metric".to_owned()];
    header.extend(phases.iter().map(|(name, _)| name.clone()));
    t.set_header(header);
    let mut add = |label: &str, cell: &dyn Fn(&Profile) -> String| {
        let mut cells = vec![label.to_owned()];
        cells.extend(phases.iter().map(|(_, p)| cell(p)));
        t.add_row(cells);
    };
    let per_task = |v: f64, p: &Profile| format!("{:.3}", v / p.tasks.max(1) as f64);
    add("tasks", &|p| p.tasks.to_string());
    add("entries proposed / task", &|p| per_task(p.entries, p));
    add("commands / task", &|p| per_task(p.commands, p));
    add("entries / s", &|p| {
        format!("{:.0}", p.entries / p.wall_secs)
    });
    add("commands / entry: mean, p50 ≤, p99 ≤", &|p| {
        three(&p.batch, 1)
    });
    add("commit ms: mean, p50 ≤, p99 ≤", &|p| {
        three(&p.commit_ms, 2)
    });
    add("apply ms / entry: mean, p50 ≤, p99 ≤", &|p| {
        three(&p.apply_ms, 3)
    });
    add("applying, share of wall time", &|p| {
        format!("{:.0}%", p.apply_busy * 100.0)
    });
    let mut methods: Vec<&String> = phases.iter().flat_map(|(_, p)| p.requests.keys()).collect();
    methods.sort_unstable();
    methods.dedup();
    for m in methods {
        let short = m.rsplit('/').next().unwrap_or(m);
        add(&format!("{short}: calls (not Ok), mean ms"), &|p| {
            p.requests.get(m).map_or("-".to_owned(), |c| {
                let mean = c.mean_ms.map_or("-".to_owned(), |v| format!("{v:.2}"));
                format!("{:.0} ({:.0}), {mean}", c.count, c.not_ok)
            })
        });
    }
    t
}

fn three(spread: &Spread, decimals: usize) -> String {
    [spread.mean, spread.p50_le, spread.p99_le]
        .iter()
        .map(|v| v.map_or("-".to_owned(), |v| format!("{v:.decimals$}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every run as one JSON document, with the settings.
pub fn json(settings: &serde_json::Value, runs: &[RunFigures]) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["throughput"]["tasks_per_s"] = serde_json::json!(r.throughput.rate());
            v
        })
        .collect();
    serde_json::json!({ "settings": settings, "runs": runs })
}
