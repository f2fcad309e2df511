//! `flmctl`, the Flame command-line tool.
//!
//! Today it runs the local HA cluster (`flmctl local up`). It is also a multi-call binary: run
//! under the name `flmping-service` or `flmexec-service` (a symlink), it serves that built-in
//! application's instance, so a local cluster needs no other binary to run `flmping` tasks.
//!
//! Caveat: the inspection and administration verbs (`list`, `view`, `cluster …`, `bench`) come
//! with the SDK issue.

mod local;

use clap::{Parser, Subcommand};

/// The Flame command-line tool.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
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
}

#[derive(Subcommand, Debug)]
enum LocalCommand {
    /// Start three control-plane members in the foreground until Ctrl-C; data is kept.
    Up(local::UpArgs),
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
    }
}
