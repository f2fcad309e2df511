//! Claim: the SDK's `pi` example runs end to end against a real cluster, three members and
//! one node agent, as separate processes: as a client it registers `pi-example` (its own
//! executable in the `service` role), opens a session, submits a typed batch, and prints an
//! estimate within 0.05 of π; the agent ran its instances from the same binary. Running it a
//! second time reuses the registered application.
//!
//! The example binary comes from [`chaos_tests::build_example`] (a nested `cargo build -p
//! flame-sdk --example pi`, a no-op when fresh). Every wait is bounded.

use crate::support::*;
use anyhow::{Context, ensure};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(120);

/// Runs the example as a client against `endpoints`; returns its estimate.
async fn estimate(pi: &std::path::Path, endpoints: &str) -> anyhow::Result<f64> {
    let child = Command::new(pi)
        .args([
            "--endpoint",
            endpoints,
            "--tasks",
            "8",
            "--samples",
            "200000",
        ])
        .env_remove("FLAME_ENDPOINT")
        .env_remove("FLAME_INSTANCE_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .context("the example did not finish in time")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pi estimate: "))
        .with_context(|| format!("no estimate in {stdout:?}"))?;
    let value = line.split_whitespace().next().context("a number")?;
    Ok(value.parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pi_example_estimates_pi_on_three_members_and_a_node_agent() -> anyhow::Result<()> {
    let pi = chaos_tests::build_example("pi")?;
    let run = start("chaos-pi-example", &[], &["node-a"]).await?;
    let endpoints: Vec<String> = run.cluster.members().iter().map(|m| m.url()).collect();
    let endpoints = endpoints.join(",");

    let first = estimate(&pi, &endpoints).await?;
    ensure!(
        (first - std::f64::consts::PI).abs() < 0.05,
        "estimate {first}"
    );
    let (launches, _) = run.cluster.agent("node-a")?.launches()?;
    ensure!(launches >= 1, "the agent launched no instance");

    let second = estimate(&pi, &endpoints).await?;
    ensure!(
        second == first,
        "same seeds, same estimate: {first} vs {second}"
    );
    Ok(())
}
