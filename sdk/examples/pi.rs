//! `pi`: a Monte-Carlo estimate of π across a Flame session, client and service in one binary.
//!
//! What: run as a client (`pi --endpoint http://127.0.0.1:8080 --tasks 16 --samples 1000000`)
//! it registers (or updates) the application `pi-example`, whose command is this very
//! executable with the argument `service`, opens a session, submits one typed task per seed in
//! one exactly-once batch, gathers the typed outputs and prints the estimate, then closes the
//! session. Run by a node agent (`pi service`, or any run with `FLAME_INSTANCE_ENDPOINT` set)
//! it serves those tasks: input `{samples, seed}` → output `{inside, samples}`, the number of
//! seeded random points of the unit square that fall inside the quarter circle.
//!
//! Why one binary: the application's command is `current_exe()`, so the example needs no
//! install step; the node agent must run on a host where that path exists (as with
//! `flmctl local up` or the chaos tests).
//!
//! Caveat: the estimate is deterministic for a given `--seed`, `--tasks` and `--samples`.

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use flame_sdk::client::{
    ApplicationSpec, ClientError, Connection, SessionOptions, resolve_endpoints,
};
use flame_sdk::service::{self, FlameService, ServiceError, TaskContext};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The application this example registers.
const APPLICATION: &str = "pi-example";

/// One task's input.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Sample {
    /// Points to draw.
    samples: u64,
    /// The RNG seed of this task.
    seed: u64,
}

/// One task's output.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Count {
    /// Points inside the quarter circle.
    inside: u64,
    /// Points drawn.
    samples: u64,
}

/// Counts the points of `input.samples` seeded draws that fall inside the quarter circle.
fn count(input: Sample) -> Count {
    let mut rng = StdRng::seed_from_u64(input.seed);
    let inside = (0..input.samples)
        .filter(|_| {
            let (x, y): (f64, f64) = (rng.random(), rng.random());
            x * x + y * y <= 1.0
        })
        .count() as u64;
    Count {
        inside,
        samples: input.samples,
    }
}

/// The service side: one typed task at a time.
struct PiService;

impl FlameService for PiService {
    async fn on_task_invoke(&mut self, ctx: TaskContext) -> Result<Option<Bytes>, ServiceError> {
        let input: Sample = service::json_input(&ctx)?;
        service::json_output(&count(input))
    }
}

/// Monte-Carlo π on a Flame cluster.
#[derive(Parser, Debug)]
struct Args {
    /// `service`: serve tasks as an instance (the node agent starts it so).
    role: Option<String>,
    /// Comma-separated member URLs; else `FLAME_ENDPOINT`, else `~/.flame/flame.yaml`.
    #[arg(long)]
    endpoint: Option<String>,
    /// The client config file (default `~/.flame/flame.yaml`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Tasks to split the work into.
    #[arg(long, default_value_t = 16)]
    tasks: u64,
    /// Points per task.
    #[arg(long, default_value_t = 1_000_000)]
    samples: u64,
    /// Seed of the first task; task `i` uses `seed + i`.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flame_sdk::logging::init();
    let args = Args::parse();
    let started_by_agent = std::env::var_os(service::INSTANCE_ENDPOINT_ENV).is_some();
    match args.role.as_deref() {
        Some("service") => Ok(service::run(PiService).await?),
        None if started_by_agent => Ok(service::run(PiService).await?),
        None => client(&args).await,
        Some(other) => bail!("unknown role {other:?}; the only role is `service`"),
    }
}

/// The client side: register, open a session, run the batch, print the estimate, close.
async fn client(args: &Args) -> anyhow::Result<()> {
    if args.tasks == 0 || args.samples == 0 {
        bail!("--tasks and --samples must be at least 1");
    }
    let endpoints = resolve_endpoints(args.endpoint.as_deref(), args.config.as_deref())?;
    let conn = Connection::new(&endpoints)?;
    register(&conn).await?;
    let session = conn
        .open_or_create_session(&SessionOptions::new(APPLICATION))
        .await
        .context("cannot open a session")?;
    let inputs: Vec<Sample> = (0..args.tasks)
        .map(|i| Sample {
            samples: args.samples,
            seed: args.seed.wrapping_add(i),
        })
        .collect();
    let outputs = session.invoke_all::<Sample, Count>(&inputs).await;
    session.close().await.context("cannot close the session")?;
    let outputs = outputs.context("the batch failed")?;
    let inside: u64 = outputs.iter().map(|c| c.inside).sum();
    let samples: u64 = outputs.iter().map(|c| c.samples).sum();
    let pi = 4.0 * inside as f64 / samples as f64;
    println!(
        "pi estimate: {pi:.6} ({} tasks, {samples} samples, session {})",
        outputs.len(),
        session.id()
    );
    Ok(())
}

/// Registers `pi-example` running this executable as `service`, or updates it when it exists
/// with another spec (for example a rebuilt binary at another path).
async fn register(conn: &Connection) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    let spec = ApplicationSpec {
        description: Some("Monte-Carlo pi, the Flame Rust SDK example".into()),
        command: Some(exe.display().to_string()),
        arguments: vec!["service".into()],
        ..ApplicationSpec::default()
    };
    match conn.get_application(APPLICATION).await? {
        None => match conn.register_application(APPLICATION, &spec).await {
            // Another client registered it meanwhile: make it ours.
            Err(ClientError::Refused { message, .. }) if message.contains("already exists") => {
                conn.update_application(APPLICATION, &spec).await?
            }
            other => other?,
        },
        Some(app)
            if app.spec.as_ref().and_then(|s| s.command.as_ref()) == spec.command.as_ref() => {}
        Some(_) => conn.update_application(APPLICATION, &spec).await?,
    }
    Ok(())
}
