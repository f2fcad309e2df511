//! `cluster-bench`: write-path figures of a three-member control plane on loopback, with fsync.
//!
//! Starts three `flame-control-plane` processes (durable: every Raft append and apply is
//! fsynced), then measures against the leader:
//! - sequential `CreateTask` commit latency (p50, p99);
//! - `CreateTask` throughput with 1, 16 and 256 concurrent clients;
//! - batch `CreateTasks` throughput;
//! - leader SIGKILL → first acknowledged write, over several kills (median, max).
//!
//! Usage: `cargo build --release -p flame-control-plane -p flame-bench && \
//!   target/release/cluster-bench [--binary target/release/flame-control-plane] [--kills 10]`

use anyhow::Context;
use chaos_tests::Cluster;
use clap::Parser;
use comfy_table::Table;
use flame_proto::cluster::tasks_client::TasksClient;
use flame_proto::cluster::{CreateTasksRequest, TaskSubmission};
use flame_proto::v1::frontend_client::FrontendClient;
use flame_proto::v1::{CreateSessionRequest, CreateTaskRequest, SessionSpec, TaskSpec};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Write-path benchmark of a three-member control plane.
#[derive(Parser, Debug)]
struct Args {
    /// The control-plane binary (default: next to this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Sequential CreateTask calls.
    #[arg(long, default_value_t = 2000)]
    sequential: u64,
    /// CreateTask calls per throughput run.
    #[arg(long, default_value_t = 30_000)]
    tasks: u64,
    /// Leader kills for the failover figure (0 skips it).
    #[arg(long, default_value_t = 10)]
    kills: usize,
}

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("flame-control-plane"),
    };
    anyhow::ensure!(
        binary.exists(),
        "{} not found; build it or pass --binary",
        binary.display()
    );
    let mut cluster = Cluster::start(&binary, "bench", 3)?;
    let leader = cluster.wait_for_leader(&[1, 2, 3], DEADLINE).await?;
    let channel = cluster.channel(leader)?;
    let mut table = Table::new();
    table.set_header(["measure", "value"]);

    let session = new_session(&channel, "seq").await?;
    let hist = sequential(&channel, &session, args.sequential).await?;
    table.add_row([
        format!("sequential CreateTask latency ({} calls)", args.sequential),
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0,
            hist.max() as f64 / 1000.0
        ),
    ]);
    for clients in [1u64, 16, 256] {
        let session = new_session(&channel, &format!("c{clients}")).await?;
        let rate = concurrent(&cluster, leader, &session, clients, args.tasks).await?;
        table.add_row([
            format!("CreateTask throughput, {clients} clients"),
            format!("{rate:.0} tasks/s"),
        ]);
    }
    let session = new_session(&channel, "batch").await?;
    let rate = batched(&channel, &session, args.tasks * 3, 256, 16).await?;
    table.add_row([
        "CreateTasks (batches of 256, 16 in flight)".to_string(),
        format!("{rate:.0} tasks/s"),
    ]);
    if args.kills > 0 {
        let (median, max) = failover(&mut cluster, args.kills).await?;
        table.add_row([
            format!(
                "leader kill -> first acknowledged write ({} kills)",
                args.kills
            ),
            format!("median {:.0} ms, max {:.0} ms", median * 1e3, max * 1e3),
        ]);
    }
    println!("three members on loopback, durable (fsync on append and apply)\n{table}");
    Ok(())
}

async fn new_session(channel: &Channel, name: &str) -> anyhow::Result<String> {
    let id = format!("bench-{name}");
    FrontendClient::new(channel.clone())
        .create_session(CreateSessionRequest {
            session_id: id.clone(),
            session: Some(SessionSpec {
                application: "flmping".into(),
                ..Default::default()
            }),
        })
        .await
        .context("create session")?;
    Ok(id)
}

fn task(session: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        task: Some(TaskSpec {
            session_id: session.into(),
            input: Some(b"{}".to_vec()),
            output: None,
        }),
    }
}

async fn sequential(channel: &Channel, session: &str, n: u64) -> anyhow::Result<Histogram<u64>> {
    let mut client = FrontendClient::new(channel.clone());
    let mut hist = Histogram::<u64>::new(3)?;
    for _ in 0..n {
        let started = Instant::now();
        client.create_task(task(session)).await?;
        hist.record(started.elapsed().as_micros() as u64)?;
    }
    Ok(hist)
}

async fn concurrent(
    cluster: &Cluster,
    leader: u64,
    session: &str,
    clients: u64,
    total: u64,
) -> anyhow::Result<f64> {
    // A few HTTP/2 connections, shared by the clients as real SDK processes would.
    let channels: Vec<Channel> = (0..clients.min(8))
        .map(|_| cluster.channel(leader))
        .collect::<Result<_, _>>()?;
    let per_client = total / clients;
    let started = Instant::now();
    let mut workers = Vec::new();
    for c in 0..clients {
        let mut client = FrontendClient::new(channels[(c % 8) as usize % channels.len()].clone());
        let session = session.to_owned();
        workers.push(tokio::spawn(async move {
            for _ in 0..per_client {
                client.create_task(task(&session)).await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok((per_client * clients) as f64 / started.elapsed().as_secs_f64())
}

async fn batched(
    channel: &Channel,
    session: &str,
    total: u64,
    batch: u64,
    in_flight: u64,
) -> anyhow::Result<f64> {
    let batches = total / batch;
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..in_flight {
        let mut client = TasksClient::new(channel.clone());
        let session = session.to_owned();
        let mine = (w..batches).step_by(in_flight as usize).count();
        workers.push(tokio::spawn(async move {
            for _ in 0..mine {
                let tasks = (0..batch)
                    .map(|_| TaskSubmission {
                        input: Some(b"{}".to_vec()),
                        request_id: String::new(),
                    })
                    .collect();
                client
                    .create_tasks(CreateTasksRequest {
                        session_id: session.clone(),
                        tasks,
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok((batches * batch) as f64 / started.elapsed().as_secs_f64())
}

/// Kills the leader `kills` times; returns the median and max seconds from the kill to the first
/// write a surviving member acknowledged.
async fn failover(cluster: &mut Cluster, kills: usize) -> anyhow::Result<(f64, f64)> {
    let mut samples = Vec::new();
    for round in 0..kills {
        let leader = cluster.wait_for_leader(&[1, 2, 3], DEADLINE).await?;
        let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
        let session = format!("failover-{round}");
        let channel = cluster.channel(survivors[0])?;
        new_session(&channel, &format!("failover-{round}")).await?;
        let clients: Vec<_> = survivors
            .iter()
            .map(|id| cluster.channel(*id).map(FrontendClient::new))
            .collect::<Result<_, _>>()?;
        let killed_at = Instant::now();
        cluster.kill(leader)?;
        let acked = first_ack(clients, &format!("bench-{session}"), killed_at).await?;
        samples.push(acked.as_secs_f64());
        cluster.spawn(leader)?;
        let applied = cluster.status(survivors[0]).await.map_or(0, |s| s.applied);
        cluster.wait_applied(leader, applied, DEADLINE).await?;
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let max = samples.last().copied().unwrap_or_default();
    Ok((median, max))
}

/// Sends writes to every survivor until one is acknowledged; bounded by [`DEADLINE`].
async fn first_ack(
    clients: Vec<FrontendClient<Channel>>,
    session: &str,
    since: Instant,
) -> anyhow::Result<Duration> {
    while since.elapsed() < DEADLINE {
        for mut client in clients.iter().cloned() {
            let mut request = tonic::Request::new(task(session));
            request.set_timeout(Duration::from_millis(200));
            if client.create_task(request).await.is_ok() {
                return Ok(since.elapsed());
            }
        }
    }
    anyhow::bail!("no write was acknowledged within {DEADLINE:?} of the kill")
}
