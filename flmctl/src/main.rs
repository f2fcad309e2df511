//! `flmctl`, the Flame command-line tool.
//!
//! It runs the local HA cluster (`flmctl local up`), shows the Raft group (`flmctl cluster
//! status`), lists applications, sessions, executors and nodes (`flmctl list`) and shows one
//! session or application (`flmctl view`), through any member (`--endpoint`, else
//! `FLAME_ENDPOINT`, else `http://127.0.0.1:8080`). It is also a multi-call binary: run under the
//! name `flmping-service` or `flmexec-service` (a symlink), it serves that built-in
//! application's instance, so a local cluster needs no other binary to run `flmping` tasks.
//!
//! `flmctl bench` runs many tasks and reports throughput and latency.
//!
//! Caveat: `view -t|-n`, the write verbs and the other `cluster …` verbs are not here yet.

mod bench;
mod client;
mod cluster;
mod list;
mod local;
mod output;
mod view;

use clap::{ArgGroup, Parser, Subcommand};
use output::Format;

/// The Flame command-line tool.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Members' client API endpoints, comma-separated; any member serves every command.
    #[arg(long, global = true, env = "FLAME_ENDPOINT", default_value = client::DEFAULT_ENDPOINT)]
    endpoint: String,
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
    /// Show one session (with its events) or one application in detail.
    View(ViewArgs),
    /// Run many tasks in a new session and report throughput and latency.
    Bench(bench::BenchArgs),
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
#[command(group(ArgGroup::new("target").required(true).args(["session", "application"])))]
struct ViewArgs {
    /// The session id to show.
    #[arg(short, long)]
    session: Option<String>,
    /// The application name to show.
    #[arg(short, long)]
    application: Option<String>,
    /// Output format; `json` and `yaml` include a session's tasks.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

impl ViewArgs {
    fn target(&self) -> view::Target {
        match (&self.session, &self.application) {
            (Some(id), _) => view::Target::Session(id.clone()),
            (None, name) => view::Target::Application(name.clone().unwrap_or_default()),
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

/// Runs one inspection command on a small runtime and prints its output.
fn inspect(endpoint: &str, command: Command) -> anyhow::Result<()> {
    let endpoints = client::endpoints(endpoint)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Command::View(args) = &command {
        let text = runtime.block_on(view::view(&endpoints, &args.target(), args.output))?;
        output::print(&text);
        return Ok(());
    }
    let (rows, format) = runtime.block_on(async {
        match command {
            Command::Cluster {
                command: ClusterCommand::Status { output },
            } => Ok((cluster::status(&endpoints).await?, output)),
            Command::List(args) => Ok((list::list(&endpoints, args.kind()).await?, args.output)),
            Command::Local { .. } | Command::View(_) | Command::Bench(_) => {
                anyhow::bail!("not a listing command")
            }
        }
    })?;
    output::print(&output::render(&rows, format)?);
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
        Command::Bench(args) => bench::main(&cli.endpoint, args),
        command => {
            // One readable line, never a backtrace: the message already carries the hint.
            if let Err(error) = inspect(&cli.endpoint, command) {
                eprintln!("Error: {error:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
