//! `flmctl`, the Flame command-line tool.
//!
//! It runs the local HA cluster (`flmctl local up`); shows and changes the Raft group (`flmctl
//! cluster status|add|promote|remove|transfer-leader|snapshot`); lists applications, sessions,
//! executors and nodes (`flmctl list`); shows one session, task, application or node (`flmctl
//! view`); creates and closes sessions (`flmctl create`, `flmctl close`); registers, updates and
//! unregisters applications from YAML (`flmctl register|update|unregister`); and prints shell
//! completions (`flmctl completion`); and lists, reads and deletes objects of the object cache
//! (`flmctl cache list|get|rm`, which find the cache with `--cache-endpoint`, else
//! `FLAME_CACHE_ENDPOINT`, else `cache.endpoint` of `--config`, else `grpc://127.0.0.1:9090`).
//! Every other command works through any member: `--endpoint`,
//! else `FLAME_ENDPOINT`, else the current context of `--config` (default
//! `~/.flame/flame.yaml`), else `http://127.0.0.1:8080`. It is also a multi-call binary: run
//! under the name `flmping-service` or `flmexec-service` (a symlink), it serves that built-in
//! application's instance, so a local cluster needs no other binary to run `flmping` tasks.
//!
//! `flmctl bench` runs many flmping tasks in a new session and reports throughput, latency
//! percentiles and, optionally, a latency-histogram PNG.
//!
//! Writes go through the SDK's `Connection` (leader discovery, retries through failover);
//! reads go to the first member that answers, so a dead cluster fails fast with a hint.
//!
//! Adding a command: one [`Command`] variant and one arm in [`execute`] (which returns the text
//! to print); errors become one `Error: …` line and exit status 1 in `main`.
//!
//! Caveat: upstream's `deploy` and `migrate` are not here.

mod admin;
mod application;
mod bench;
mod cache;
mod client;
mod cluster;
mod home;
mod list;
mod local;
mod output;
mod session;
mod view;

use clap::{ArgGroup, CommandFactory as _, Parser, Subcommand};
use output::Format;
use std::path::PathBuf;

/// The Flame command-line tool.
#[derive(Parser, Debug)]
#[command(version, about, arg_required_else_help = true)]
struct Cli {
    /// Members' client API endpoints, comma-separated; any member serves every command.
    /// Else `FLAME_ENDPOINT`, else the current context of --config, else http://127.0.0.1:8080.
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// The client configuration file (contexts with `cluster.endpoint`) [default:
    /// ~/.flame/flame.yaml, when it exists].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A local cluster on this machine.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// The Raft group of the control plane.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// List applications, sessions, executors or nodes.
    List(ListArgs),
    /// Show one session (with its events), task, application or node in detail.
    View(ViewArgs),
    /// Create a session of an application.
    Create(session::CreateArgs),
    /// Close a session.
    Close(session::CloseArgs),
    /// Register the applications of a YAML file (documents separated by `---`).
    Register(application::RegisterArgs),
    /// Update applications from a YAML file in the `register` format.
    Update(application::UpdateArgs),
    /// Unregister an application (refused while it has open sessions).
    Unregister(application::UnregisterArgs),
    /// Print a shell completion script.
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run many tasks in a new session and report throughput and latency.
    Bench(bench::BenchArgs),
    /// List, read and delete objects of the object cache.
    Cache(cache::CacheArgs),
}

#[derive(Subcommand, Debug)]
enum LocalCommand {
    /// Start three control-plane members in the foreground until Ctrl-C; data is kept.
    Up(local::UpArgs),
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Every member: id, role, term, leader, committed, applied, lag; unreachable ones too.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Add a member as a non-voting learner (by default, wait until it has caught up).
    Add(admin::AddArgs),
    /// Make a learner a voter.
    Promote(admin::MemberArgs),
    /// Remove a voter from the group.
    Remove(admin::MemberArgs),
    /// Hand leadership to another voter and wait until it leads.
    TransferLeader(admin::TransferArgs),
    /// Build a snapshot on the leader now.
    Snapshot,
}

#[derive(clap::Args, Debug)]
#[command(group(ArgGroup::new("target").required(true)
    .args(["application", "session", "executor", "node"])))]
struct ListArgs {
    /// List applications.
    #[arg(short, long)]
    application: bool,
    /// List sessions.
    #[arg(short, long)]
    session: bool,
    /// List executors.
    #[arg(short, long)]
    executor: bool,
    /// List nodes.
    #[arg(short, long)]
    node: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

#[derive(clap::Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["session", "application", "node"])))]
struct ViewArgs {
    /// The session id to show (with `-t`, the session of the task).
    #[arg(short, long)]
    session: Option<String>,
    /// The task id to show; needs `-s`.
    #[arg(short, long, requires = "session")]
    task: Option<String>,
    /// The application name to show.
    #[arg(short, long)]
    application: Option<String>,
    /// The node name to show.
    #[arg(short, long)]
    node: Option<String>,
    /// Output format; `json` and `yaml` include a session's tasks.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

impl ViewArgs {
    fn target(&self) -> view::Target {
        match (&self.session, &self.task, &self.application, &self.node) {
            (Some(session), Some(task), _, _) => view::Target::Task {
                session: session.clone(),
                task: task.clone(),
            },
            (Some(id), None, _, _) => view::Target::Session(id.clone()),
            (None, _, Some(name), _) => view::Target::Application(name.clone()),
            (None, _, None, name) => view::Target::Node(name.clone().unwrap_or_default()),
        }
    }
}

impl ListArgs {
    fn kind(&self) -> list::Kind {
        match (self.application, self.session, self.executor) {
            (true, _, _) => list::Kind::Applications,
            (_, true, _) => list::Kind::Sessions,
            (_, _, true) => list::Kind::Executors,
            _ => list::Kind::Nodes,
        }
    }
}

/// Where a command finds the cluster.
struct Target {
    /// `--endpoint`, when given.
    endpoint: Option<String>,
    /// `--config`, when given.
    config: Option<PathBuf>,
}

impl Target {
    /// The members' endpoints, resolved as the SDK does.
    fn endpoints(&self) -> anyhow::Result<Vec<String>> {
        client::resolve(self.endpoint.as_deref(), self.config.as_deref())
    }

    /// An SDK connection for writes (leader discovery, retries through failover).
    fn connection(&self) -> anyhow::Result<flame_sdk::client::Connection> {
        client::connection(&self.endpoints()?)
    }
}

/// Runs one `cluster` command and returns what it prints.
async fn cluster(target: &Target, command: ClusterCommand) -> anyhow::Result<String> {
    if let ClusterCommand::Status { output } = command {
        return output::render(&cluster::status(&target.endpoints()?).await?, output);
    }
    let conn = target.connection()?;
    match command {
        ClusterCommand::Add(args) => admin::add(&conn, &args).await,
        ClusterCommand::Promote(args) => admin::promote(&conn, &args).await,
        ClusterCommand::Remove(args) => admin::remove(&conn, &args).await,
        ClusterCommand::TransferLeader(args) => admin::transfer_leader(&conn, &args).await,
        ClusterCommand::Snapshot => admin::snapshot(&conn).await,
        ClusterCommand::Status { .. } => unreachable!("handled above"),
    }
}

/// Runs one command and returns what it prints.
async fn execute(target: &Target, command: Command) -> anyhow::Result<String> {
    match command {
        Command::Cluster { command } => cluster(target, command).await,
        Command::List(args) => {
            let rows = list::list(&target.endpoints()?, args.kind()).await?;
            output::render(&rows, args.output)
        }
        Command::View(args) => view::view(&target.endpoints()?, &args.target(), args.output).await,
        Command::Create(args) => session::create(&target.connection()?, &args).await,
        Command::Close(args) => session::close(&target.connection()?, &args).await,
        Command::Register(args) => application::register(&target.connection()?, &args).await,
        Command::Update(args) => application::update(&target.connection()?, &args).await,
        Command::Unregister(args) => application::unregister(&target.connection()?, &args).await,
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "flmctl", &mut script);
            Ok(String::from_utf8(script)?)
        }
        Command::Local { .. } => anyhow::bail!("`local` runs in the foreground, not here"),
        Command::Bench(_) => anyhow::bail!("`bench` runs on its own runtime, not here"),
        Command::Cache(_) => anyhow::bail!("`cache` writes its own output, not here"),
    }
}

/// Runs `command` on a small runtime and prints its output.
fn run(target: &Target, command: Command) -> anyhow::Result<()> {
    if let Command::Bench(args) = command {
        return bench::run(&target.endpoints()?, &args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Command::Cache(args) = command {
        return runtime.block_on(cache::run(args, target.config.as_deref()));
    }
    output::print(&runtime.block_on(execute(target, command))?);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if let Some(service) = local::builtin_service_name() {
        return local::run_builtin_service(service);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Local {
            command: LocalCommand::Up(args),
        } => local::up(args),
        command => {
            let target = Target {
                endpoint: cli.endpoint,
                config: cli.config,
            };
            // One readable line, never a backtrace: the message already carries the hint.
            if let Err(error) = run(&target, command) {
                eprintln!("Error: {error:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
