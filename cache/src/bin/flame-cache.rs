//! `flame-cache`: one object cache, alone or as a peer of the cluster's caches.
//!
//! `flame-cache [flags]` parses the flags (see `flame_cache::config::CacheArgs`), sets up
//! logging (`RUST_LOG`, default `info`) and runs [`flame_cache::serve::serve`] until SIGINT or
//! SIGTERM. `flame-cache certs --out <dir> --node <name>...` writes a CA and a certificate per
//! node, for a cluster whose caches use certificate files instead of the control plane's CA;
//! with `--flight-host <name>...` it also writes `flight.pem` and `flight.key`, a server
//! certificate for the Flight face's TLS (`--tls-cert`, `--tls-key`) that clients verify with
//! `ca.pem` (`FLAME_CA_FILE`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use flame_cache::config::CacheArgs;
use flame_cache::serve::{CacheListeners, serve};
use flame_proto::signal::shutdown_signal;
use std::path::{Path, PathBuf};

/// Flame's object cache: Arrow Flight for clients, QUIC between caches.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: CacheArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a CA and a peer certificate per node (ca.pem, <node>.pem, <node>.key).
    Certs {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// A node to issue a certificate for; repeatable.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// A host name or IP address clients reach the Flight face at; repeatable. Writes
        /// flight.pem and flight.key for it.
        #[arg(long = "flight-host")]
        flight_hosts: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flame-cache: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Certs {
        out,
        nodes,
        flight_hosts,
    }) = cli.command
    {
        return write_certs(&out, &nodes, &flight_hosts);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = cli.args.into_config()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async {
            let listeners = CacheListeners::bind(&config).await?;
            serve(config, listeners, shutdown_signal()).await?;
            anyhow::Ok(())
        })
}

/// Writes `ca.pem` (and `ca.key`), a certificate and key per node, and the Flight server
/// certificate when hosts are named, into `out`.
fn write_certs(out: &Path, nodes: &[String], flight_hosts: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let ca = flame_cache::ca::generate_ca(std::time::SystemTime::now())?;
    let write = |name: String, text: &str| {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("ca.pem".into(), &ca.cert_pem)?;
    write("ca.key".into(), &ca.key_pem)?;
    for node in nodes {
        let (cert, key) = flame_cache::ca::issue_identity(&ca, node)?;
        write(format!("{node}.pem"), &cert)?;
        write(format!("{node}.key"), &key)?;
    }
    if !flight_hosts.is_empty() {
        let hosts: Vec<&str> = flight_hosts.iter().map(String::as_str).collect();
        flame_cache::config::FlightTls::write_issued(&ca, &hosts, out, "flight")?;
        println!("wrote flight.pem and flight.key for {}", hosts.join(", "));
    }
    println!(
        "wrote ca.pem and {} node certificates to {}",
        nodes.len(),
        out.display()
    );
    Ok(())
}
