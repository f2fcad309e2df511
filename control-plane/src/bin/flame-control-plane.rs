//! `flame-control-plane`: one member of Flame's Raft-replicated control plane.
//!
//! Parses the configuration (file, `FLAME_*` variables, flags), sets up logging and runs
//! [`flame_control_plane::serve`] until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use flame_control_plane::config::{Config, Overrides};
use flame_control_plane::{Listeners, serve, shutdown_signal};
use std::path::PathBuf;

/// One member of Flame's replicated control plane.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (upstream's flame-cluster.yaml keys plus a `raft` section).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Fail points named in `FAILPOINTS`, in test builds only: the points are compiled out
    // without the feature, and the fail crate panics on a malformed `FAILPOINTS`.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(
        cli.config.as_deref(),
        |k| std::env::var(k).ok(),
        &cli.overrides,
    )?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async {
            let listeners = Listeners::bind(&config).await?;
            serve(config, listeners, shutdown_signal()).await?;
            anyhow::Ok(())
        })
}
