//! `flame-node-agent`: the per-node agent of a Flame cluster.
//!
//! Parses the configuration (flags over a `--config` YAML file over `FLAME_*` variables), sets
//! up logging (`RUST_LOG`, default `info`, to stderr) and runs
//! [`flame_node_agent::cache::run`] until SIGINT or SIGTERM, which leave and stop every
//! instance before the process exits. The node's object cache runs in the same process unless
//! `--no-cache` is given or a cache beside the agent is named (`--cache-flight-endpoint`). A
//! configuration error or a refused registration exits non-zero with one clear message.

use anyhow::Context;
use clap::Parser;
use flame_node_agent::cache::EmbeddedCacheArgs;
use flame_node_agent::config::{AgentConfig, Overrides};
use flame_proto::signal::shutdown_signal;
use std::path::PathBuf;

/// The per-node agent of a Flame cluster: registers the node with the control plane and runs
/// the application instances the leader assigns to it.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (YAML; see the `config` module docs for the keys).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(flatten)]
    cache: EmbeddedCacheArgs,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, no backtrace: the messages name the key, flag or member at fault.
            eprintln!("flame-node-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses the configuration, sets up logging and runs the agent until SIGINT or SIGTERM.
fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = AgentConfig::load(
        cli.config.as_deref(),
        |k| std::env::var(k).ok(),
        &cli.overrides,
    )?;
    let cache = cli.cache.config(&config)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(flame_node_agent::cache::run(
            config,
            cache,
            shutdown_signal(),
            Default::default(),
        ))?;
    Ok(())
}
