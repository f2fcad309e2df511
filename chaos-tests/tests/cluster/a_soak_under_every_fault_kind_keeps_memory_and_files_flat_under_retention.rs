//! The soak (not in CI: `#[ignore]`): one cluster, every fault kind in a seeded schedule, for
//! `FLAME_CHAOS_SOAK_SECS` (default 1800), with retention on (closed sessions are purged after
//! 20 s, at most 50 kept), the workload of the seeded runs and all their checkers. It prints the
//! members' resident memory and data-directory sizes over time: under retention both must stay
//! flat (a figure to read, not an assertion: the machine is noisy). Run it with
//!
//! ```sh
//! cargo test -p chaos-tests --test cluster a_soak -- --ignored --nocapture
//! ```
//!
//! `FLAME_CHAOS_SEEDS` picks the seed (the first one; default 1). Needs root, as the seeded
//! runs do.

use super::support::{self, Network};
use anyhow::Context;
use chaos_tests::AgentOptions;
use chaos_tests::nemesis::FaultKind;
use chaos_tests::run::{RunConfig, Sample, run, table};
use std::time::Duration;

/// The members' retention: closed sessions older than 20 s are purged, and at most 50 kept.
const RETENTION: &str =
    "cluster:\n  limits:\n    max_sessions: 50\n    max_closed_session_age_secs: 20\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a 30-minute soak; run by hand (see the module docs)"]
async fn a_soak_under_every_fault_kind() -> anyhow::Result<()> {
    let secs: u64 = match std::env::var("FLAME_CHAOS_SOAK_SECS") {
        Ok(v) => v
            .parse()
            .context("FLAME_CHAOS_SOAK_SECS must be a number")?,
        Err(_) => 1800,
    };
    let seed: u64 = std::env::var("FLAME_CHAOS_SEEDS")
        .ok()
        .and_then(|v| {
            v.split([',', '-'])
                .next()
                .and_then(|s| s.trim().parse().ok())
        })
        .unwrap_or(1);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("retention.yaml");
    std::fs::write(&file, RETENTION)?;
    let network = Network {
        flags: vec![
            "--config".into(),
            file.to_str().context("a UTF-8 path")?.into(),
        ],
        ..Network::default()
    };
    let mut running = support::start_on_network("soak", &["node-a", "node-b"], network).await?;
    let options = AgentOptions::new(&running.binaries);
    let mut config = RunConfig::new(seed, &FaultKind::ALL);
    config.window = Duration::from_secs(secs);
    config.faults = usize::try_from(secs / 4)?;
    config.retention = true;
    config.workload.max_calls = 10_000_000;
    config.terminal_bound = Duration::from_secs(120);
    let report = run(&mut running.cluster, &options, &config).await?;
    println!("{}", table(std::slice::from_ref(&report)));
    println!("{}", samples_table(&report.samples));
    for problem in report.problems() {
        println!("{problem}");
    }
    anyhow::ensure!(report.passed(), "the soak found problems (above)");
    Ok(())
}

/// About a dozen samples evenly over the run, and the last: each member's resident memory and
/// data-directory size, MiB.
fn samples_table(samples: &[Sample]) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header(["at (s)", "members: RSS MiB / data MiB"]);
    let step = (samples.len() / 12).max(1);
    let picked = samples
        .iter()
        .step_by(step)
        .chain(samples.last().filter(|_| samples.len() % step != 1));
    for sample in picked {
        let cells: Vec<String> = sample
            .members
            .iter()
            .map(|(id, rss, data)| {
                let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                format!("m{id} {:.0} / {:.1}", *rss as f64 / 1024.0, mib(*data))
            })
            .collect();
        table.add_row([sample.at.as_secs().to_string(), cells.join(", ")]);
    }
    table.to_string()
}
