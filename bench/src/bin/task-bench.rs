//! `task-bench`: end-to-end figures of no-op `flmping` tasks through a three-member control
//! plane (durable: every Raft append and apply is fsynced) and real node agents, on loopback.
//!
//! For each agent count in `--agents` (default `1,2`) it starts a fresh cluster: three
//! `flame-control-plane` processes and that many `flame-node-agent` processes, each offering
//! `--executors-per-agent` cores and 1 GiB per core. One `flmping` session asks for 1 core and
//! 1 GiB per executor with `min_instances` = `max_instances` = every core offered, so each agent
//! keeps that many warm `flmping-service` instances (Unix sockets) for the whole run. Then:
//! - **bind**: waits until every executor is Bound to the session; prints how many each node
//!   holds;
//! - **warm-up**: `--warmup` tasks one at a time;
//! - **sequential latency**: `--sequential` tasks one at a time, each `CreateTask` then
//!   `WatchTask` until terminal; p50/p90/p99/max from submit to result (hdrhistogram, ms),
//!   split afterwards (GetTask) by the leader-stamped times of each task's events into created
//!   → Running (scheduling), Running → Succeed (agent, instance, report) and the remainder
//!   (the requests, the last commit and the watch's delivery);
//! - **throughput**: `--tasks` tasks submitted through `flame.cluster.v1.Tasks/CreateTasks` in
//!   batches of `--batch` with `--in-flight` calls at a time, while `GetSession`'s counters are
//!   polled every `--poll-ms`; tasks/s from the first submission to the poll that sees every
//!   task terminal, and how many did not succeed;
//! - **profile**: the leader's Prometheus metrics around each phase: Raft entries and commands
//!   per task, group-commit batch sizes, commit and apply latency.
//!
//! Output: a table of figures and a table of leader metrics, one column per run (or one JSON
//! document with `--json`).
//!
//! Usage (release; the member, agent and `flmping-service` binaries are taken from this
//! executable's directory, or `--bin-dir`):
//!
//! ```sh
//! cargo build --release -p flame-control-plane -p flame-node-agent -p flame-sdk -p flame-bench --bins
//! target/release/task-bench [--agents 1,2] [--tasks 30000] [--sequential 1000] [--json]
//! ```
//!
//! Every wait has a deadline: start-up steps 60 s, a sequential task 30 s, the throughput phase
//! 300 s + 20 ms per task or 60 s without a finished task; errors carry the log tails.
//!
//! Caveats:
//! - Completion is seen by polling, so the throughput window may end up to `--poll-ms` late.
//! - The sequential phase runs first, on a near-empty state; the stages are whole milliseconds
//!   of the leader's clock, stamped when each command was proposed.
//! - Task inputs are empty (flmping returns at once) and carry no client request id.
//! - Members, agents, instances and this client share one machine's CPUs and disk; the figures
//!   include that contention.

#[path = "task_bench/report.rs"]
mod report;

use anyhow::{Context, bail, ensure};
use chaos_tests::prometheus::Scrape;
use chaos_tests::{AgentOptions, Binaries, Cluster, ping_session_spec, poll};
use clap::Parser;
use flame_proto::cluster::tasks_client::TasksClient;
use flame_proto::cluster::{CreateTasksRequest, TaskSubmission};
use flame_proto::v1::{self, frontend_client::FrontendClient};
use hdrhistogram::Histogram;
use report::{Latency, Profile, RunFigures, Stages, Throughput};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// End-to-end no-op task benchmark: members, real node agents and flmping instances.
#[derive(Parser, Debug)]
struct Args {
    /// Agent counts to run, each on a fresh cluster.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    agents: Vec<usize>,
    /// Executors (cores offered, one flmping instance each) per agent.
    #[arg(long, default_value_t = 8)]
    executors_per_agent: u64,
    /// Tasks in the throughput phase.
    #[arg(long, default_value_t = 30_000)]
    tasks: u64,
    /// Tasks per CreateTasks call.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// CreateTasks calls in flight at once.
    #[arg(long, default_value_t = 4)]
    in_flight: u64,
    /// Tasks in the sequential latency phase.
    #[arg(long, default_value_t = 1000)]
    sequential: u64,
    /// Sequential tasks run (and not measured) first.
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// GetSession poll interval while waiting for the throughput tasks, in ms.
    #[arg(long, default_value_t = 25)]
    poll_ms: u64,
    /// Where flame-control-plane, flame-node-agent and flmping-service are (default: next to
    /// this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
}

/// Bound on start-up steps: election, built-in applications, node registration, binding.
const STARTUP: Duration = Duration::from_secs(60);
/// Bound on one sequential task, from submission to its terminal state.
const PER_TASK: Duration = Duration::from_secs(30);
/// The throughput phase fails when no task finishes for this long.
const STALL: Duration = Duration::from_secs(60);
/// The session every phase runs in.
const SESSION: &str = "task-bench";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(!args.agents.is_empty(), "--agents needs at least one count");
    ensure!(
        args.agents.iter().all(|n| *n > 0),
        "agent counts must be at least 1"
    );
    ensure!(
        args.batch > 0 && args.in_flight > 0 && args.executors_per_agent > 0,
        "--batch, --in-flight and --executors-per-agent must be at least 1"
    );
    let binaries = locate_binaries(args.bin_dir.clone())?;
    let mut runs = Vec::new();
    for &agents in &args.agents {
        let figures = run(&args, &binaries, agents)
            .await
            .with_context(|| format!("run with {agents} agent(s)"))?;
        eprintln!("{}", report::summary_line(&figures));
        runs.push(figures);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::json(&args_json(&args), &runs))?
        );
    } else {
        println!("{}", report::header(&args_json(&args)));
        println!("{}", report::figures_table(&runs));
        println!("leader metrics per phase (bucket estimates; see chaos_tests::prometheus)");
        println!("{}", report::profile_table(&runs));
    }
    Ok(())
}

/// The settings that shape the figures, for the output.
fn args_json(args: &Args) -> serde_json::Value {
    serde_json::json!({
        "executors_per_agent": args.executors_per_agent,
        "tasks": args.tasks,
        "batch": args.batch,
        "in_flight": args.in_flight,
        "sequential": args.sequential,
        "warmup": args.warmup,
        "poll_ms": args.poll_ms,
    })
}

/// The member, agent, flmping and flmexec binaries in `dir` (default: this executable's directory).
fn locate_binaries(dir: Option<PathBuf>) -> anyhow::Result<Binaries> {
    let dir = match dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("this executable has no directory")?
            .to_path_buf(),
    };
    let find = |name: &str| {
        let path = dir.join(name);
        ensure!(
            path.is_file(),
            "{} not found; build it with `cargo build --release -p flame-control-plane \
             -p flame-node-agent -p flame-sdk -p flame-bench --bins` or pass --bin-dir",
            path.display()
        );
        Ok(path)
    };
    Ok(Binaries {
        control_plane: find("flame-control-plane")?,
        node_agent: find("flame-node-agent")?,
        flmping_service: find("flmping-service")?,
        flmexec_service: find("flmexec-service")?,
    })
}

/// A running cluster for one run, with its leader and a channel to it.
struct Bench {
    cluster: Cluster,
    leader: u64,
    channel: Channel,
    nodes: Vec<String>,
}

/// One run: a fresh cluster with `agents` agents, then every phase.
async fn run(args: &Args, binaries: &Binaries, agents: usize) -> anyhow::Result<RunFigures> {
    let bench = start(binaries, agents, args.executors_per_agent).await?;
    let executors = agents as u64 * args.executors_per_agent;
    create_session(&bench, executors).await?;
    let bound_per_node = wait_bound(&bench, executors).await?;
    eprintln!("{agents} agent(s): executors bound per node {bound_per_node:?}");
    sequential(&bench, args.warmup)
        .await
        .context("warm-up tasks")?;

    let before = scrape(&bench).await?;
    let started = Instant::now();
    let (histogram, seq_failed, seq_tasks) = sequential(&bench, args.sequential).await?;
    let seq_wall = started.elapsed();
    let middle = scrape(&bench).await?;
    let throughput = throughput(&bench, args).await?;
    let after = scrape(&bench).await?;
    let stages = stages(&bench, &seq_tasks).await?;

    let launches = bench.cluster.agents().iter().try_fold((0, 0), |sum, a| {
        a.launches().map(|(l, e)| (sum.0 + l, sum.1 + e))
    })?;
    Ok(RunFigures {
        agents,
        executors_bound: bound_per_node.values().sum(),
        bound_per_node,
        launches: launches.0,
        executors_launched: launches.1,
        sequential: Latency::new(&histogram, args.sequential, seq_failed, stages),
        profile_sequential: Profile::new(&middle.since(&before), args.sequential, seq_wall),
        profile_throughput: Profile::new(
            &after.since(&middle),
            throughput.tasks,
            Duration::from_secs_f64(throughput.total_secs),
        ),
        throughput,
    })
}

/// Starts three members, waits for a leader and the built-in applications, then starts the
/// agents and waits until their nodes are Ready.
async fn start(binaries: &Binaries, agents: usize, cores: u64) -> anyhow::Result<Bench> {
    let name = format!("task-bench-{agents}");
    let mut cluster = Cluster::start(&binaries.control_plane, &name, 3)?;
    let leader = match cluster.wait_for_leader(&[1, 2, 3], STARTUP).await {
        Ok(leader) => leader,
        Err(e) => bail!("{e}\n--- member 1 log:\n{}", cluster.log_tail(1, 40)),
    };
    let channel = cluster.channel(leader)?;
    let client = FrontendClient::new(channel.clone());
    poll::<_, anyhow::Error, _, _>("the three built-in applications", STARTUP, || {
        let mut client = client.clone();
        async move {
            let list = client.list_application(v1::ListApplicationRequest {}).await;
            Ok(list.ok().filter(|l| l.get_ref().applications.len() == 3))
        }
    })
    .await?;
    let mut options = AgentOptions::new(binaries);
    options.cpu = cores;
    options.memory = format!("{cores}g");
    let nodes: Vec<String> = (1..=agents).map(|n| format!("node-{n}")).collect();
    for node in &nodes {
        cluster.start_agent(node, &options)?;
    }
    let bench = Bench {
        cluster,
        leader,
        channel,
        nodes,
    };
    if let Err(e) = wait_ready(&bench).await {
        bail!("{e}\n{}", agent_logs(&bench));
    }
    Ok(bench)
}

/// Waits until every agent's node is Ready.
async fn wait_ready(bench: &Bench) -> anyhow::Result<()> {
    let client = FrontendClient::new(bench.channel.clone());
    poll::<_, anyhow::Error, _, _>("every agent's node to be Ready", STARTUP, || {
        let mut client = client.clone();
        async move {
            let Ok(list) = client.list_nodes(v1::ListNodesRequest {}).await else {
                return Ok(None);
            };
            let ready = list
                .into_inner()
                .nodes
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .is_some_and(|s| s.state() == v1::NodeState::Ready)
                })
                .filter_map(|n| n.metadata.as_ref().map(|m| m.name.clone()))
                .collect::<Vec<_>>();
            Ok(bench.nodes.iter().all(|n| ready.contains(n)).then_some(()))
        }
    })
    .await
}

/// Creates the `flmping` session: 1 core and 1 GiB per executor, and exactly `executors` of
/// them (`min_instances` keeps them bound while no task is pending).
async fn create_session(bench: &Bench, executors: u64) -> anyhow::Result<()> {
    let count = u32::try_from(executors).context("too many executors")?;
    FrontendClient::new(bench.channel.clone())
        .create_session(v1::CreateSessionRequest {
            session_id: SESSION.into(),
            session: Some(ping_session_spec(count, Some(count))),
        })
        .await
        .context("create the flmping session")?;
    Ok(())
}

/// Waits until `executors` executors are Bound to the session; returns how many each node
/// holds. On timeout the error lists every executor's node and state.
async fn wait_bound(bench: &Bench, executors: u64) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut client = FrontendClient::new(bench.channel.clone());
    let deadline = Instant::now() + STARTUP;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        if let Ok(list) = client.list_executor(v1::ListExecutorRequest {}).await {
            last = list.into_inner().executors;
            let bound = bound_per_node(&last);
            if bound.values().sum::<usize>() as u64 >= executors {
                return Ok(bound);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let states: Vec<String> = last
        .iter()
        .map(|x| {
            let node = x.spec.as_ref().map_or("?", |s| s.node.as_str());
            let state = x.status.as_ref().map(|s| s.state().as_str_name());
            format!("{node}:{}", state.unwrap_or("?"))
        })
        .collect();
    bail!(
        "timed out after {STARTUP:?} waiting for {executors} executors bound to {SESSION}; \
         executors (node:state) {states:?}\n{}",
        agent_logs(bench)
    )
}

/// Bound executors of the session, counted per node.
fn bound_per_node(executors: &[v1::Executor]) -> BTreeMap<String, usize> {
    let mut per_node = BTreeMap::new();
    for x in executors {
        let Some(status) = &x.status else { continue };
        if status.state() == v1::ExecutorState::ExecutorBound
            && status.session_id.as_deref() == Some(SESSION)
        {
            let node = x.spec.as_ref().map_or("?", |s| s.node.as_str());
            *per_node.entry(node.to_owned()).or_insert(0) += 1;
        }
    }
    per_node
}

/// Runs `count` tasks one at a time (CreateTask, then WatchTask until terminal); returns the
/// submit-to-result latencies in µs, how many tasks did not succeed, and each task's id and
/// latency.
async fn sequential(
    bench: &Bench,
    count: u64,
) -> anyhow::Result<(Histogram<u64>, u64, Vec<(String, Duration)>)> {
    let mut client = FrontendClient::new(bench.channel.clone());
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let (mut failed, mut tasks) = (0, Vec::new());
    for n in 0..count {
        let started = Instant::now();
        let (id, state) = tokio::time::timeout(PER_TASK, one_task(&mut client))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "sequential task {n} did not finish within {PER_TASK:?}\n{}",
                    agent_logs(bench)
                )
            })??;
        let took = started.elapsed();
        histogram.record(took.as_micros().max(1) as u64)?;
        if state != v1::TaskState::Succeed {
            failed += 1;
        }
        tasks.push((id, took));
    }
    Ok((histogram, failed, tasks))
}

/// Creates one task and watches it until it is terminal; returns its id and terminal state.
async fn one_task(client: &mut FrontendClient<Channel>) -> anyhow::Result<(String, v1::TaskState)> {
    let task = client
        .create_task(v1::CreateTaskRequest {
            task: Some(v1::TaskSpec {
                session_id: SESSION.into(),
                input: None,
                output: None,
            }),
        })
        .await
        .context("CreateTask")?
        .into_inner();
    let id = task.metadata.context("a task without metadata")?.id;
    let mut stream = client
        .watch_task(v1::WatchTaskRequest {
            task_id: id.clone(),
            session_id: SESSION.into(),
        })
        .await
        .context("WatchTask")?
        .into_inner();
    while let Some(task) = stream.message().await.context("WatchTask stream")? {
        let state = task.status.map(|s| s.state());
        if let Some(
            state @ (v1::TaskState::Succeed | v1::TaskState::Failed | v1::TaskState::Cancelled),
        ) = state
        {
            return Ok((id, state));
        }
    }
    bail!("the WatchTask stream of task {id} ended before the task was terminal")
}

/// The stages of the sequential `tasks` (id, client latency), from the leader-stamped times
/// of their events (GetTask after the phase): code 0 created, 1 Running, 2 Succeed.
async fn stages(bench: &Bench, tasks: &[(String, Duration)]) -> anyhow::Result<Stages> {
    let mut client = FrontendClient::new(bench.channel.clone());
    let (mut queued, mut running, mut remainder) = (Vec::new(), Vec::new(), Vec::new());
    for (id, took) in tasks {
        let task = client
            .get_task(v1::GetTaskRequest {
                task_id: id.clone(),
                session_id: SESSION.into(),
            })
            .await
            .with_context(|| format!("GetTask {id}"))?
            .into_inner();
        let events = task.status.map(|s| s.events).unwrap_or_default();
        let at = |code| {
            events
                .iter()
                .rfind(|e| e.code == code)
                .map(|e| e.creation_time)
        };
        let created = events.iter().find(|e| e.code == 0).map(|e| e.creation_time);
        let (Some(created), Some(run), Some(done)) = (created, at(1), at(2)) else {
            continue;
        };
        queued.push((run - created) as f64);
        running.push((done - run) as f64);
        remainder.push(took.as_secs_f64() * 1e3 - (done - created) as f64);
    }
    Ok(Stages::new(queued, running, remainder))
}

/// The session's counters: `(pending, running, succeed, failed, cancelled)`.
async fn counters(channel: &Channel) -> anyhow::Result<[u64; 5]> {
    let session = FrontendClient::new(channel.clone())
        .get_session(v1::GetSessionRequest {
            session_id: SESSION.into(),
        })
        .await
        .context("GetSession")?
        .into_inner();
    let s = session.status.context("a session without status")?;
    let n = |v: i32| u64::try_from(v).unwrap_or(0);
    Ok([s.pending, s.running, s.succeed, s.failed, s.cancelled].map(n))
}

/// Submits `--tasks` tasks in batches while polling the counters until all are terminal.
async fn throughput(bench: &Bench, args: &Args) -> anyhow::Result<Throughput> {
    let base = counters(&bench.channel).await?;
    let started = Instant::now();
    let submit = submit(
        bench.channel.clone(),
        args.tasks,
        args.batch,
        args.in_flight,
    );
    let wait = wait_terminal(bench, base, args.tasks, args.poll_ms);
    tokio::pin!(submit, wait);
    let mut submitted = None;
    let (last, total) = loop {
        tokio::select! {
            // A failed submission ends the phase at once (dropping `wait`).
            done = &mut submit, if submitted.is_none() => submitted = Some(done?),
            last = &mut wait => break (last?, started.elapsed()),
        }
    };
    // Every task can be terminal a moment before the last CreateTasks reply arrives.
    let submitted = match submitted {
        Some(d) => d,
        None => submit.await?,
    };
    Ok(Throughput {
        tasks: args.tasks,
        submit_secs: submitted.as_secs_f64(),
        total_secs: total.as_secs_f64(),
        succeed: last[2] - base[2],
        failed: last[3] - base[3],
        cancelled: last[4] - base[4],
    })
}

/// Creates `total` tasks with CreateTasks, `batch` per call and `in_flight` calls at once;
/// returns how long it took until the last call was acknowledged. Dropping the future aborts
/// the calls.
async fn submit(
    channel: Channel,
    total: u64,
    batch: u64,
    in_flight: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let batches = total.div_ceil(batch);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..in_flight {
        let mut client = TasksClient::new(channel.clone());
        workers.spawn(async move {
            for b in (w..batches).step_by(in_flight as usize) {
                let size = batch.min(total - b * batch);
                let request = CreateTasksRequest {
                    session_id: SESSION.into(),
                    tasks: (0..size).map(|_| TaskSubmission::default()).collect(),
                };
                let reply = client
                    .create_tasks(request)
                    .await
                    .with_context(|| format!("CreateTasks call {b} of {batches}"))?;
                let created = reply.get_ref().tasks.len() as u64;
                ensure!(
                    created == size,
                    "CreateTasks created {created} of {size} tasks"
                );
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a submitter panicked")??;
    }
    Ok(started.elapsed())
}

/// Polls the counters until `tasks` more tasks than in `base` are terminal; fails when
/// nothing finishes for [`STALL`]. Returns the last counters.
async fn wait_terminal(
    bench: &Bench,
    base: [u64; 5],
    tasks: u64,
    poll_ms: u64,
) -> anyhow::Result<[u64; 5]> {
    let mut ticker = tokio::time::interval(Duration::from_millis(poll_ms.max(1)));
    // At least 50 tasks/s on average, or the phase fails.
    let limit = Duration::from_secs(300) + Duration::from_millis(20 * tasks);
    let started = Instant::now();
    let (mut done, mut progressed) = (0, started);
    let mut last = base;
    loop {
        ticker.tick().await;
        if let Ok(c) = counters(&bench.channel).await {
            last = c;
        }
        let now_done = (2..5).map(|i| last[i].saturating_sub(base[i])).sum::<u64>();
        if now_done > done {
            (done, progressed) = (now_done, Instant::now());
        }
        if done >= tasks {
            return Ok(last);
        }
        if progressed.elapsed() > STALL || started.elapsed() > limit {
            bail!(
                "gave up after {:?} (limit {limit:?}, or {STALL:?} without a finished task): \
                 {done} of {tasks} terminal, counters \
                 (pending, running, succeed, failed, cancelled) = {last:?}\n--- leader log:\n{}\n{}",
                started.elapsed(),
                bench.cluster.log_tail(bench.leader, 30),
                agent_logs(bench)
            );
        }
    }
}

/// Scrapes the leader's metrics.
async fn scrape(bench: &Bench) -> anyhow::Result<Scrape> {
    let text = bench
        .cluster
        .metrics(bench.leader)
        .await
        .with_context(|| format!("scrape member {}'s metrics", bench.leader))?;
    Ok(Scrape::parse(&text))
}

/// The tails of every agent's log, for error messages.
fn agent_logs(bench: &Bench) -> String {
    bench
        .cluster
        .agents()
        .iter()
        .map(|a| format!("--- agent {} log:\n{}", a.name, a.log_tail(20)))
        .collect::<Vec<_>>()
        .join("\n")
}
