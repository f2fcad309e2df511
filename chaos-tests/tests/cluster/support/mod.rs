//! Shared steps of the whole-cluster tests: three members and real node agents, a `flmping`
//! session, batch task creation through `flame.cluster.v1.Tasks/CreateTasks`, and bounded
//! polls of the session's counters. `chaos_tests::flamepy` runs flamepy 0.6.0 client scripts;
//! [`failover`] SIGKILLs the leader under such a script and reads its per-call lines.
//!
//! Every wait polls a condition until a deadline; nothing sleeps and then asserts.

use anyhow::{Context, bail};
use chaos_tests::{AgentOptions, Binaries, Cluster, build_binaries, ping_session_spec};
use flame_proto::cluster::tasks_client::TasksClient;
use flame_proto::cluster::{CreateTasksRequest, TaskSubmission};
use flame_proto::v1;
use std::future::Future;
use std::time::Duration;

pub mod failover;

/// Bound on cluster start-up steps (leader election, built-in applications).
pub const STARTUP: Duration = Duration::from_secs(30);

/// A running cluster with its roles when it settled.
pub struct Running {
    /// Members and agents.
    pub cluster: Cluster,
    /// The leader when the cluster settled.
    pub leader: u64,
    /// The other two members.
    pub followers: [u64; 2],
    /// The built binaries.
    pub binaries: Binaries,
    /// The machine, held until the cluster's processes are gone (declared last: fields drop
    /// in order).
    _machine: Exclusive,
}

/// The machine, held by one scenario at a time. The scenarios share one test binary, whose
/// harness runs tests on parallel threads; two clusters on two cores would skew each other's
/// elections and timings, so every scenario that starts processes holds this first.
pub struct Exclusive {
    _guard: tokio::sync::MutexGuard<'static, ()>,
}

/// Waits until no other scenario holds the machine. A scenario that panics releases it (tokio's
/// mutex does not poison), so one failure does not block the rest.
pub async fn exclusive() -> Exclusive {
    static MACHINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    Exclusive {
        _guard: MACHINE.lock().await,
    }
}

/// Builds the binaries, starts three members (with `member_flags`), waits for a leader and the
/// built-in applications, then starts one agent per name in `agents` (4 cores, 8 GiB each).
pub async fn start(name: &str, member_flags: &[&str], agents: &[&str]) -> anyhow::Result<Running> {
    start_with(name, member_flags, agents, AgentOptions::new).await
}

/// [`start`], with the agents' options made by `options` from the built binaries.
pub async fn start_with(
    name: &str,
    member_flags: &[&str],
    agents: &[&str],
    options: impl FnOnce(&Binaries) -> AgentOptions,
) -> anyhow::Result<Running> {
    start_on(name, member_flags, agents, options, None).await
}

/// [`start`] with each member in its own network namespace, so the nemesis can partition them
/// (`chaos_tests::net`; needs root).
pub async fn start_partitionable(name: &str, agents: &[&str]) -> anyhow::Result<Running> {
    let network = Network::default();
    start_on(name, &[], agents, AgentOptions::new, Some(network)).await
}

/// How members on a private network start.
#[derive(Default)]
pub struct Network {
    /// Run the member binary built with fail points (`chaos_tests::build_failpoint_member`).
    pub failpoints: bool,
    /// Environment variables of every member (such as `FAILPOINTS`).
    pub env: Vec<(&'static str, &'static str)>,
    /// Flags of every member (such as `--config <file>`).
    pub flags: Vec<String>,
}

/// [`start_partitionable`] with members started as `network` says.
pub async fn start_on_network(
    name: &str,
    agents: &[&str],
    network: Network,
) -> anyhow::Result<Running> {
    let flags = network.flags.clone();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_on(name, &flags, agents, AgentOptions::new, Some(network)).await
}

async fn start_on(
    name: &str,
    member_flags: &[&str],
    agents: &[&str],
    options: impl FnOnce(&Binaries) -> AgentOptions,
    network: Option<Network>,
) -> anyhow::Result<Running> {
    let machine = exclusive().await;
    let binaries = build_binaries()?;
    let mut cluster = match network {
        Some(net) => {
            // Built while holding the machine: the build briefly replaces the plain binary.
            let binary = match net.failpoints {
                true => chaos_tests::build_failpoint_member()?,
                false => binaries.control_plane.clone(),
            };
            Cluster::start_partitionable(&binary, name, 3, member_flags, &net.env)?
        }
        None => Cluster::start_with(&binaries.control_plane, name, 3, member_flags)?,
    };
    let leader = match cluster.wait_for_leader(&[1, 2, 3], STARTUP).await {
        Ok(leader) => leader,
        Err(e) => bail!("{e}\n--- member 1 log:\n{}", cluster.log_tail(1, 40)),
    };
    let mut others = [1, 2, 3].into_iter().filter(|id| *id != leader);
    let followers = [
        others.next().context("a first follower")?,
        others.next().context("a second follower")?,
    ];
    let client = cluster.frontend(leader)?;
    poll("the three built-in applications", STARTUP, || {
        let mut client = client.clone();
        async move {
            let list = client.list_application(v1::ListApplicationRequest {}).await;
            Ok(list.ok().filter(|l| l.get_ref().applications.len() == 3))
        }
    })
    .await?;
    let options = options(&binaries);
    for agent in agents {
        cluster.start_agent(agent, &options)?;
    }
    Ok(Running {
        cluster,
        leader,
        followers,
        binaries,
        _machine: machine,
    })
}

/// [`start`] with agents whose `FLAME_HOME` has Python for `flmrun` (the test venv's `uv` and
/// flamepy), as flamepy's Runner needs.
pub async fn start_python(name: &str, agents: &[&str]) -> anyhow::Result<Running> {
    let (uv, lib, _) = chaos_tests::flamepy::flamepy_home_parts()?;
    start_with(name, &[], agents, |binaries| {
        let mut options = AgentOptions::new(binaries);
        options.python = Some((uv, lib));
        options
    })
    .await
}

/// The scenarios' target in `run`: its first follower, agent `agent`'s cache and releases.
pub fn runner_target(
    run: &Running,
    agent: &str,
    scratch: &std::path::Path,
) -> anyhow::Result<chaos_tests::runner::Target> {
    let agent = run.cluster.agent(agent)?;
    Ok(chaos_tests::runner::Target {
        python: chaos_tests::flamepy::flamepy_python()?,
        endpoint: run.cluster.member(run.followers[0])?.url(),
        cache: agent.cache_endpoint().context("the agent runs a cache")?,
        releases: agent.work_dir.join("releases"),
        scratch: scratch.to_owned(),
    })
}

/// [`chaos_tests::poll`] for checks whose errors are `anyhow` errors.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    chaos_tests::poll(what, limit, check).await
}

/// Creates session `id` of `flmping` (1 cpu and 1 GiB per executor, no minimum) via `via`.
pub async fn ping_session(run: &Running, via: u64, id: &str) -> anyhow::Result<()> {
    run.cluster
        .frontend(via)?
        .create_session(v1::CreateSessionRequest {
            session_id: id.into(),
            session: Some(ping_session_spec(0, None)),
        })
        .await?;
    Ok(())
}

/// Creates `count` tasks with `input` in session `id` through member `via`, with the batch
/// `CreateTasks` RPC in batches of at most 1000.
pub async fn create_tasks(
    run: &Running,
    via: u64,
    id: &str,
    count: usize,
    input: &[u8],
) -> anyhow::Result<()> {
    let mut client = TasksClient::new(run.cluster.channel(via)?);
    let mut created = 0;
    while created < count {
        let batch = (count - created).min(1000);
        let request = CreateTasksRequest {
            session_id: id.into(),
            tasks: (created..created + batch)
                .map(|n| TaskSubmission {
                    input: Some(input.to_vec()),
                    request_id: format!("r-{n}"),
                })
                .collect(),
        };
        let reply = client.create_tasks(request).await?;
        if reply.get_ref().tasks.len() != batch {
            bail!(
                "created {} tasks, expected {batch}",
                reply.get_ref().tasks.len()
            );
        }
        created += batch;
    }
    Ok(())
}

/// Session `id`'s counters `(pending, running, succeed, failed)` read through member `via`.
pub async fn counters(run: &Running, via: u64, id: &str) -> anyhow::Result<(i32, i32, i32, i32)> {
    let session = run
        .cluster
        .frontend(via)?
        .get_session(v1::GetSessionRequest {
            session_id: id.into(),
        })
        .await?
        .into_inner();
    let s = session.status.context("a session status")?;
    Ok((s.pending, s.running, s.succeed, s.failed))
}

/// Waits until at least `count` tasks of session `id` succeeded (read through `via`); returns
/// the counters then.
pub async fn succeeded_at_least(
    run: &Running,
    via: u64,
    id: &str,
    count: usize,
    limit: Duration,
) -> anyhow::Result<(i32, i32, i32, i32)> {
    poll(
        &format!("{count} tasks of {id} to succeed"),
        limit,
        || async move {
            let c = counters(run, via, id).await.ok();
            Ok(c.filter(|c| usize::try_from(c.2).unwrap_or(0) >= count))
        },
    )
    .await
}

/// Waits until every one of the `count` tasks of session `id` has succeeded, and nothing is
/// pending, running or failed (read through `via`). On timeout the error carries the last
/// counters seen and the tails of the logs.
pub async fn all_succeeded(
    run: &Running,
    via: u64,
    id: &str,
    count: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let want = (0, 0, i32::try_from(count)?, 0);
    let last = std::sync::Mutex::new(None);
    let outcome = poll(
        &format!("all {count} tasks of {id} to succeed"),
        limit,
        || {
            let last = &last;
            async move {
                let c = counters(run, via, id).await.ok();
                if let (Some(c), Ok(mut seen)) = (c, last.lock()) {
                    *seen = Some(c);
                }
                Ok((c == Some(want)).then_some(()))
            }
        },
    )
    .await;
    if let Err(e) = outcome {
        let last = last.lock().ok().and_then(|l| *l);
        let agents: Vec<String> = run
            .cluster
            .agents()
            .iter()
            .map(|a| format!("--- agent {} log:\n{}", a.name, a.log_tail(20)))
            .collect();
        bail!(
            "{e}; last (pending, running, succeed, failed) = {last:?}\n--- member {via} log:\n{}\n{}",
            run.cluster.log_tail(via, 30),
            agents.join("\n")
        );
    }
    Ok(())
}

/// Every task of session `id`, read through member `via`.
pub async fn list_tasks(run: &Running, via: u64, id: &str) -> anyhow::Result<Vec<v1::Task>> {
    let mut stream = run
        .cluster
        .frontend(via)?
        .list_task(v1::ListTaskRequest {
            session_id: id.into(),
        })
        .await?
        .into_inner();
    let mut tasks = Vec::new();
    while let Some(task) = stream.message().await? {
        tasks.push(task);
    }
    Ok(tasks)
}

/// Total `(launches, executors)` over every agent (see `Agent::launches`).
pub fn launches(run: &Running) -> anyhow::Result<(usize, usize)> {
    let mut total = (0, 0);
    for agent in run.cluster.agents() {
        let (l, e) = agent.launches()?;
        total = (total.0 + l, total.1 + e);
    }
    Ok(total)
}

/// The number of tasks from env `FLAME_CHAOS_TASKS`, else `default`.
pub fn task_count(default: usize) -> anyhow::Result<usize> {
    match std::env::var("FLAME_CHAOS_TASKS") {
        Ok(v) => v.parse().context("FLAME_CHAOS_TASKS must be a number"),
        Err(_) => Ok(default),
    }
}

/// Waits until every agent's cache reaches `peers` other caches (its `flame_cache_peers`
/// gauge): each has its peer certificate from the cluster CA and the others in its view.
pub async fn wait_for_cache_peers(run: &Running, peers: usize) -> anyhow::Result<()> {
    for agent in run.cluster.agents() {
        let what = format!("{}'s cache reaching {peers} peers", agent.name);
        poll(&what, STARTUP, || async move {
            let reached = match agent.cache_metrics().await {
                Ok(scrape) => scrape.sum("flame_cache_peers", &[]) as usize,
                Err(_) => 0,
            };
            Ok((reached >= peers).then_some(()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n--- agent log:\n{}", agent.log_tail(30)))?;
    }
    Ok(())
}

/// Every agent's log tail, for failure messages.
pub fn agent_logs(run: &Running) -> String {
    let mut text = String::new();
    for agent in run.cluster.agents() {
        let tail = agent.log_tail(30);
        text.push_str(&format!("\n--- agent {} log:\n{tail}", agent.name));
    }
    text
}
