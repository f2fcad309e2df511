//! `flmctl bench`: run many tasks through a cluster and report throughput and latency.
//!
//! What: it creates one session (of `flmping` by default), runs `--tasks` tasks, closes the
//! session and prints succeeded/failed counts, wall time, throughput and latency percentiles
//! (a table, or `--json` / `--csv`), optionally a latency-histogram PNG (`--histogram`). Two
//! modes ([`runner`]):
//! - **concurrent** (default): `--concurrency` tasks in flight, each `CreateTask` then
//!   `WatchTask` until terminal; a task's latency is from its submission to the client seeing
//!   its terminal state.
//! - **batch** (`--batch B`): tasks are created through `CreateTasks` in batches of B with
//!   `--concurrency` calls in flight while the session's counters are polled until every task
//!   is terminal (task-bench's throughput phase). A task's latency is then server-side: its
//!   completion time minus its creation time, as the leader stamped them (whole milliseconds),
//!   read with `ListTask` at the end.
//!
//! Why: upstream ships `flmping` as a load client (spec section 13); this is its equivalent
//! against any member, with machine-readable output for comparisons.
//!
//! Caveats: the input of every task is the same JSON `{"duration": <ms>, "pad": "..."}`
//! padded to `--payload` bytes (never shorter than the JSON without padding); the figures
//! include whatever else shares the machine. A failing task is counted and its message shown,
//! not an error of the command.

mod histogram;
mod report;
mod runner;

use anyhow::{Context, anyhow, bail};
use flame_proto::v1;
use flame_sdk::client::{Connection, SessionOptions};
use std::path::PathBuf;
use std::time::Duration;

/// The largest `--payload` accepted; larger inputs are beyond what a task message should carry.
const MAX_PAYLOAD: u64 = 64 << 20;

/// Flags of `flmctl bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Tasks to run (not counting --warmup).
    #[arg(short = 'n', long = "tasks", default_value_t = 1000)]
    tasks: u64,
    /// Tasks in flight (concurrent mode), or CreateTasks calls in flight (with --batch).
    #[arg(short, long, default_value_t = 1)]
    concurrency: u64,
    /// Create tasks through CreateTasks in batches of this size (throughput mode); latency is
    /// then the server's creation-to-completion time of each task.
    #[arg(long)]
    batch: Option<u64>,
    /// Input bytes per task, such as 512, 4KiB or 1m (a padded flmping JSON input).
    #[arg(long, default_value = "0")]
    payload: String,
    /// How long each flmping task runs, in milliseconds.
    #[arg(short, long = "duration", default_value_t = 0)]
    duration_ms: u64,
    /// The application of the session.
    #[arg(long, default_value = "flmping")]
    app: String,
    /// The session's priority.
    #[arg(short = 'P', long, default_value_t = 0)]
    priority: u32,
    /// Keep exactly this many instances (min = max) instead of the scheduler's choice.
    #[arg(long)]
    instances: Option<u32>,
    /// Tasks run first, one submit-and-watch each with --concurrency in flight, not measured.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// A task not terminal this many seconds after its submission counts as failed.
    #[arg(long, default_value_t = 60)]
    task_timeout: u64,
    /// Print one JSON object instead of the table.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print a CSV header and one row instead of the table.
    #[arg(long)]
    csv: bool,
    /// Write a latency histogram to this PNG file.
    #[arg(long, value_name = "FILE.png")]
    histogram: Option<PathBuf>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(short, long)]
    quiet: bool,
}

/// What one run does, validated from [`BenchArgs`].
#[derive(Debug, Clone)]
pub struct Plan {
    /// Measured tasks.
    pub tasks: u64,
    /// Tasks (or CreateTasks calls) in flight.
    pub concurrency: u64,
    /// CreateTasks batch size; `None` is the concurrent mode.
    pub batch: Option<u64>,
    /// The input of every task (`None`: no input).
    pub input: Option<Vec<u8>>,
    /// `--payload` as given, in bytes.
    pub payload: u64,
    /// `--duration` in milliseconds.
    pub duration_ms: u64,
    /// The session's application.
    pub app: String,
    /// Unmeasured tasks run first.
    pub warmup: u64,
    /// Per-task limit from submission to a terminal state.
    pub task_timeout: Duration,
    /// Whether to draw the progress bar.
    pub progress: bool,
}

/// Runs `flmctl bench` against `endpoints` and prints the report. It has its own
/// multi-threaded runtime: the submitters, watchers and progress bar run in parallel.
pub fn run(endpoints: &[String], args: &BenchArgs) -> anyhow::Result<()> {
    let plan = plan(args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(async {
        check_application(endpoints, &args.app).await?;
        let conn = Connection::new(endpoints).map_err(|e| anyhow!("{e}"))?;
        let session = conn
            .create_session(&session_options(args))
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot create a {} session: {e}; hint: is the cluster running \
                     (flmctl local up) and is the application registered (flmctl list -a)?",
                    args.app
                )
            })?;
        let outcome = runner::run(&conn, &session, &plan).await;
        // Closing is best effort: the figures are what the user asked for.
        if let Err(e) = session.close().await {
            tracing::warn!("cannot close session {}: {e}", session.id());
        }
        outcome
    })?;
    let summary = report::Summary::new(&plan, &outcome);
    if let Some(path) = &args.histogram {
        histogram::write_png(path, &outcome.latencies, &summary.title())
            .with_context(|| format!("cannot write the histogram to {}", path.display()))?;
    }
    let text = if args.json {
        report::json(&summary)?
    } else if args.csv {
        report::csv(&summary)?
    } else {
        report::table(&summary)
    };
    crate::output::print(&text);
    Ok(())
}

/// Fails fast, with a hint, when no member answers or `app` is not registered (the SDK would
/// retry for its whole deadline first).
async fn check_application(endpoints: &[String], app: &str) -> anyhow::Result<()> {
    let found = crate::client::first_answer(endpoints, |mut client| {
        let name = app.to_owned();
        async move {
            match client
                .get_application(v1::GetApplicationRequest { name })
                .await
            {
                Ok(_) => Ok(true),
                Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
                Err(status) => Err(status),
            }
        }
    })
    .await?;
    if !found {
        bail!(
            "application '{app}' is not registered; hint: flmctl list -a shows the registered ones"
        );
    }
    Ok(())
}

/// The session `args` ask for.
fn session_options(args: &BenchArgs) -> SessionOptions {
    let mut options = SessionOptions::new(args.app.clone());
    options.priority = args.priority;
    if let Some(n) = args.instances {
        options.min_instances = n;
        options.max_instances = Some(n);
    }
    options
}

/// Validates `args` into a [`Plan`].
fn plan(args: &BenchArgs) -> anyhow::Result<Plan> {
    if args.tasks == 0 || args.concurrency == 0 || args.batch == Some(0) {
        bail!("--tasks, --concurrency and --batch must be at least 1");
    }
    if args.instances == Some(0) {
        bail!("--instances must be at least 1; hint: leave it out to let the scheduler choose");
    }
    let payload = parse_size(&args.payload)?;
    let stderr_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    Ok(Plan {
        tasks: args.tasks,
        concurrency: args.concurrency,
        batch: args.batch,
        input: task_input(args.duration_ms, payload),
        payload,
        duration_ms: args.duration_ms,
        app: args.app.clone(),
        warmup: args.warmup,
        task_timeout: Duration::from_secs(args.task_timeout.max(1)),
        progress: !args.quiet && stderr_is_terminal,
    })
}

/// Parses a `--payload` size such as `512`, `4KiB`, `4k` or `1m` (binary units), at most
/// [`MAX_PAYLOAD`].
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let bytes = flame_proto::model::parse_memory(text.trim()).map_err(|e| {
        anyhow!("invalid --payload: {e}; hint: use bytes or a binary unit, such as 512, 4KiB or 1m")
    })?;
    if bytes > MAX_PAYLOAD {
        bail!("invalid --payload '{text}': at most 64MiB per task");
    }
    Ok(bytes)
}

/// The flmping input for `duration_ms`, padded with a `pad` string to `payload` bytes; `None`
/// when both are 0. A payload smaller than the unpadded JSON gives the unpadded JSON.
pub fn task_input(duration_ms: u64, payload: u64) -> Option<Vec<u8>> {
    if duration_ms == 0 && payload == 0 {
        return None;
    }
    let bare = format!("{{\"duration\":{duration_ms}}}");
    let padded_empty = format!("{{\"duration\":{duration_ms},\"pad\":\"\"}}");
    let Some(pad) = usize::try_from(payload)
        .ok()
        .and_then(|p| p.checked_sub(padded_empty.len()))
    else {
        return Some(bare.into_bytes());
    };
    Some(
        format!(
            "{{\"duration\":{duration_ms},\"pad\":\"{}\"}}",
            "x".repeat(pad)
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_bytes_and_binary_units() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
    }

    #[test]
    fn bad_sizes_are_one_line_errors_naming_the_flag() {
        for bad in ["12XB", "", "k", "-1", "65m", "1.5k"] {
            let error = parse_size(bad).expect_err(bad).to_string();
            assert!(error.contains("--payload"), "{bad}: {error}");
            assert!(!error.contains('\n'), "{bad}: {error}");
        }
    }

    #[test]
    fn inputs_are_padded_to_the_payload_and_parse_as_flmping_requests() {
        assert_eq!(task_input(0, 0), None);
        assert_eq!(task_input(5, 0).unwrap(), br#"{"duration":5}"#);
        assert_eq!(task_input(0, 3).unwrap(), br#"{"duration":0}"#);
        for payload in [30, 4096, 1 << 20] {
            let input = task_input(7, payload).unwrap();
            assert_eq!(input.len() as u64, payload);
            let request = flame_sdk::builtin::ping::PingRequest::parse(Some(&input)).unwrap();
            assert_eq!(request.duration, 7);
        }
    }
}
