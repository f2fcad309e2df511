//! `flmctl local up`: a local HA cluster in the foreground.
//!
//! Three control-plane members and one node agent run in this process, each member with its own
//! redb storage under the data directory (default `./.flame/local`), its own client-API and Raft
//! ports, and the usual group formation; the agent registers this host as a node and runs
//! instances under `<data dir>/agent`. Once every member serves the built-in applications, the
//! command prints the endpoints, the leader and what to try next, and on
//! Ctrl-C (SIGINT or SIGTERM) shuts every member down cleanly, keeping the data so the next start
//! resumes where this one stopped.
//!
//! The node's object cache runs too (unless `--no-cache`): Flight on `127.0.0.1:<cache port>`
//! (default 9090, flamepy's default), QUIC peers on the next port, storage under
//! `<data dir>/cache`. Instances get its URL as `FLAME_CACHE_ENDPOINT`, and the command writes
//! `<data dir>/flame.yaml`, a flamepy/flmctl client configuration naming both endpoints.
//!
//! The node offers its cores several times over (`--cpu-overcommit`, by default enough for 8
//! `cpu=1` instances), since a local cluster runs cheap instances; real deployments keep the
//! agent's strict default of 1.
//!
//! It also prepares `FLAME_HOME` under `<data dir>/home` ([`crate::home`]): the built-in
//! services as links to this binary, and (unless `--no-python`) `bin/uv` and flamepy 0.6.0 for
//! `flmrun` and the Runner, from a Python environment built once per machine.
//!
//! Caveat: everything shares one process, so a local cluster shows the protocol, not fault
//! isolation (the chaos tests run members and agents as separate processes).

use anyhow::Context;
use flame_control_plane::config::{Config, MemberConfig, Overrides};
use flame_control_plane::{Listeners, serve, shutdown_signal};
use flame_node_agent::cache::EmbeddedCacheArgs;
use flame_node_agent::config::{AgentConfig, Overrides as AgentOverrides};
use flame_proto::cluster::StatusRequest;
use flame_proto::cluster::cluster_client::ClusterClient;
use flame_proto::v1::GetApplicationRequest;
use flame_proto::v1::frontend_client::FrontendClient;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Flags of `flmctl local up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Data directory; members keep their storage under it.
    #[arg(long, default_value = "./.flame/local", env = "FLAME_LOCAL_DIR")]
    data_dir: PathBuf,
    /// Client API port of member 1; members 2 and 3 use the next two.
    #[arg(long, default_value_t = 8080)]
    api_port: u16,
    /// Raft port of member 1; members 2 and 3 use the next two.
    #[arg(long, default_value_t = 9080)]
    raft_port: u16,
    /// Cluster name (and id) written into the data.
    #[arg(long, default_value = "flame-local")]
    cluster_name: String,
    /// Flight port of the object cache; its QUIC peer port is the next one.
    #[arg(long, default_value_t = 9090)]
    cache_port: u16,
    /// Run no object cache.
    #[arg(long)]
    no_cache: bool,
    /// cpu=1 instances the node offers per core (default: enough for 8 such instances).
    #[arg(long)]
    cpu_overcommit: Option<u32>,
    /// Prepare no Python for flmrun and the Runner (uv and flamepy under FLAME_HOME).
    #[arg(long)]
    no_python: bool,
    /// The Python interpreter instances use (its venv gets uv and flamepy 0.6.0 once).
    #[arg(long, default_value = "python3", env = "FLAME_PYTHON3")]
    python3: std::ffi::OsString,
}

/// Executor slots for `cpu=1` instances a local cluster offers at least, by default: a local
/// cluster runs cheap instances (flmping, agents, tool calls), not one per core.
const LOCAL_SLOTS: u32 = 8;

/// The cpu overcommit of `local up`: as asked, else enough for [`LOCAL_SLOTS`] on this host.
fn local_overcommit(asked: Option<u32>) -> u32 {
    asked.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = u32::try_from(cores).unwrap_or(u32::MAX);
        LOCAL_SLOTS.div_ceil(cores).max(1)
    })
}

/// Prints a line to stdout, ignoring a closed pipe: a reader that went away must not turn a
/// clean shutdown into a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// The built-in service this binary was invoked as, if any.
pub fn builtin_service_name() -> Option<&'static str> {
    let argv0 = std::env::args_os().next()?;
    let name = std::path::Path::new(&argv0)
        .file_name()?
        .to_str()?
        .to_owned();
    crate::home::BUILTINS.into_iter().find(|b| *b == name)
}

/// Serves a built-in application's instance on `FLAME_INSTANCE_ENDPOINT`.
pub fn run_builtin_service(name: &str) -> anyhow::Result<()> {
    flame_sdk::logging::init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match name {
            "flmping-service" => {
                flame_sdk::service::run(flame_sdk::builtin::ping::PingService::new()).await
            }
            _ => flame_sdk::service::run(flame_sdk::builtin::exec::ExecService::new()).await,
        }
    })?;
    Ok(())
}

fn member_configs(args: &UpArgs) -> anyhow::Result<Vec<Config>> {
    let members: Vec<MemberConfig> = (0..3u16)
        .map(|i| MemberConfig {
            id: u64::from(i) + 1,
            raft_addr: format!("127.0.0.1:{}", args.raft_port + i),
            api_addr: format!("127.0.0.1:{}", args.api_port + i),
        })
        .collect();
    members
        .iter()
        .map(|m| {
            let overrides = Overrides {
                id: Some(m.id),
                api_addr: Some(m.api_addr.clone()),
                raft_addr: Some(m.raft_addr.clone()),
                data_dir: Some(args.data_dir.join(format!("member-{}", m.id))),
                cluster_name: Some(args.cluster_name.clone()),
                ..Overrides::default()
            };
            let mut config = Config::load(None, |_| None, &overrides)?;
            config.raft.members = members.clone();
            config.cluster.endpoint = format!("http://{}", members[0].api_addr);
            config.validate()?;
            Ok(config)
        })
        .collect()
}

/// The local agent: this host as a node, instances under `<data dir>/agent`, built-ins from
/// `home`.
fn agent_config(args: &UpArgs, home: &std::path::Path) -> anyhow::Result<AgentConfig> {
    let overrides = AgentOverrides {
        endpoints: (0..3u16)
            .map(|i| format!("127.0.0.1:{}", args.api_port + i))
            .collect(),
        work_dir: Some(std::path::absolute(args.data_dir.join("agent"))?),
        flame_home: Some(home.to_path_buf()),
        cpu_overcommit: Some(local_overcommit(args.cpu_overcommit)),
        ..AgentOverrides::default()
    };
    Ok(AgentConfig::load(
        None,
        |k| std::env::var(k).ok(),
        &overrides,
    )?)
}

/// Runs `flmctl local up` until Ctrl-C.
pub fn up(args: UpArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,flame_control_plane=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let configs = member_configs(&args)?;
    let python3 = (!args.no_python).then_some(&args.python3);
    let (home, python) = crate::home::prepare(&args.data_dir, python3)?;
    let home = Home { path: home, python };
    tokio::runtime::Runtime::new()?.block_on(run(args, configs, home))
}

/// The `FLAME_HOME` a local cluster's instances get, and the Python it offers.
struct Home {
    /// The directory.
    path: PathBuf,
    /// Python for flmrun and the Runner, or why there is none.
    python: anyhow::Result<crate::home::PythonHome>,
}

async fn run(args: UpArgs, configs: Vec<Config>, home: Home) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut members = Vec::new();
    for config in configs {
        let listeners = Listeners::bind(&config).await?;
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        members.push(tokio::spawn(serve(config, listeners, shutdown)));
    }
    let mut agent_config = agent_config(&args, &home.path)?;
    let cache = cache_args(&args).config(&agent_config)?;
    let cache = flame_node_agent::cache::start_embedded(&mut agent_config, cache)
        .await
        .with_context(|| {
            format!(
                "the object cache cannot start on ports {} and {} (choose others with \
                 --cache-port, or run none with --no-cache)",
                args.cache_port,
                args.cache_port.wrapping_add(1)
            )
        })?;
    let cache_endpoint = agent_config.cache_endpoint.clone();
    let agent = {
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::spawn(flame_node_agent::agent::run(agent_config, shutdown))
    };
    let endpoint = format!("http://127.0.0.1:{}", args.api_port);
    // A member that fails to start (storage of another cluster, say) ends its task at once;
    // report that instead of waiting for a leader that cannot be elected.
    let leader = tokio::select! {
        leader = wait_for_leader(&endpoint, Duration::from_secs(20)) => leader?,
        (result, index, _) = futures::future::select_all(members.iter_mut()) => {
            let _ = stop_tx.send(true);
            let reason = match result {
                Ok(Ok(())) => "it stopped".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            anyhow::bail!("member {} could not start: {reason}", index + 1);
        }
    };
    wait_for_builtins(&args, Duration::from_secs(20)).await?;
    let client_config = write_client_config(&args, &endpoint, cache_endpoint.as_deref())?;
    print_banner(
        &args,
        leader,
        &home,
        cache_endpoint.as_deref(),
        &client_config,
    );
    out!("Press Ctrl-C to stop; the data is kept for the next start.");
    // The agent ends early only on a fatal error (its node refused, say); then the cluster
    // stops too, rather than serve sessions that no node will ever run.
    let mut agent = agent;
    let agent_result = tokio::select! {
        () = shutdown_signal() => {
            out!("Stopping…");
            let _ = stop_tx.send(true);
            agent.await
        }
        result = &mut agent => {
            out!("The node agent stopped; stopping the cluster…");
            let _ = stop_tx.send(true);
            result
        }
    };
    if let Some(cache) = cache {
        cache.shutdown().await;
    }
    for member in members {
        member.await??;
    }
    agent_result?.context("the node agent failed")?;
    out!("Stopped.");
    Ok(())
}

async fn wait_for_leader(endpoint: &str, deadline: Duration) -> anyhow::Result<u64> {
    let started = Instant::now();
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?.connect_lazy();
    let mut client = ClusterClient::new(channel);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    while started.elapsed() < deadline {
        poll.tick().await;
        if let Ok(status) = client.status(StatusRequest {}).await
            && let Some(leader) = status.into_inner().leader_id
        {
            return Ok(leader);
        }
    }
    anyhow::bail!("no leader was elected within {deadline:?}; see the log above")
}

/// Waits until every member has applied the built-in applications, which the leader registers
/// once elected: reads are served from each member's own applied state, so announcing the
/// cluster earlier lets a client that asks a lagging member find no `flmping`.
async fn wait_for_builtins(args: &UpArgs, deadline: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let names: Vec<String> = flame_control_plane::state::builtin_applications()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for port in (0..3u16).map(|i| args.api_port + i) {
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut client =
            FrontendClient::new(tonic::transport::Endpoint::from_shared(endpoint)?.connect_lazy());
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        for name in &names {
            loop {
                poll.tick().await;
                let request = GetApplicationRequest { name: name.clone() };
                if client.get_application(request).await.is_ok() {
                    break;
                }
                if started.elapsed() > deadline {
                    anyhow::bail!(
                        "member on port {port} has not applied the built-in application \
                         '{name}' within {deadline:?}; see the log above"
                    );
                }
            }
        }
    }
    Ok(())
}

/// The embedded cache's flags: loopback ports, storage under the data directory.
fn cache_args(args: &UpArgs) -> EmbeddedCacheArgs {
    let loopback = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    EmbeddedCacheArgs {
        no_cache: args.no_cache,
        cache_listen: Some(loopback(args.cache_port)),
        cache_peer_listen: Some(loopback(args.cache_port.wrapping_add(1))),
        cache_storage: Some(args.data_dir.join("cache")),
        ..EmbeddedCacheArgs::default()
    }
}

/// Writes `<data dir>/flame.yaml`: one context naming the cluster and the cache, in the format
/// of `~/.flame/flame.yaml` (spec 8.1) that flamepy and flmctl read.
fn write_client_config(
    args: &UpArgs,
    endpoint: &str,
    cache: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let mut context = serde_json::json!({
        "name": args.cluster_name,
        "cluster": { "endpoint": endpoint },
    });
    if let Some(cache) = cache {
        context["cache"] = serde_json::json!({ "endpoint": cache });
    }
    let text = serde_yaml_ng::to_string(&serde_json::json!({
        "current-context": args.cluster_name,
        "contexts": [context],
    }))?;
    let path = std::path::absolute(args.data_dir.join("flame.yaml"))?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Prints what is up and where: members, leader, cache, FLAME_HOME, the client configuration.
fn print_banner(
    args: &UpArgs,
    leader: u64,
    home: &Home,
    cache_endpoint: Option<&str>,
    client_config: &std::path::Path,
) {
    let endpoint = format!("http://127.0.0.1:{}", args.api_port);
    out!(
        "Flame local cluster {:?} is up (data in {}).",
        args.cluster_name,
        args.data_dir.display()
    );
    let urls: Vec<String> = (0..3u16)
        .map(|i| format!("http://127.0.0.1:{}", args.api_port + i))
        .collect();
    for (i, url) in urls.iter().enumerate() {
        out!("  member {}: {url}", i + 1);
    }
    out!("  leader: member {leader}");
    // flmctl and the Rust SDK take every member and move on when one dies; flamepy takes one
    // address, which operators point at all members (docs/architecture.md, "Clients").
    out!(
        "  every member, for flmctl and the Rust SDK: FLAME_ENDPOINT={}",
        urls.join(",")
    );
    if let Some(cache) = cache_endpoint {
        out!("  object cache: {cache}");
    }
    out!("  FLAME_HOME for instances: {}", home.path.display());
    match &home.python {
        Ok(p) => out!(
            "  Python for flmrun and the Runner: python{} with flamepy {} and uv ({})",
            p.version,
            crate::home::FLAMEPY_VERSION,
            p.env.display()
        ),
        Err(e) => out!(
            "  Python for flmrun and the Runner: not prepared ({e:#}); flmping and shell \
             tasks work without it"
        ),
    }
    out!(
        "  client configuration: {} (copy it to ~/.flame/flame.yaml for flamepy)",
        client_config.display()
    );
    out!("");
    out!(
        "Try: FLAME_ENDPOINT={endpoint} python3 -c 'import flamepy; print([a.name for a in flamepy.list_applications()])'"
    );
}
