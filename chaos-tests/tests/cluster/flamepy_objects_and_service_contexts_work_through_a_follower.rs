//! Claim: flamepy 0.6.0, unmodified, uses the cluster's object cache through a follower:
//! `flamepy.cache` put/get/update/patch/delete (incremental gets included), an object put
//! through one node's cache read through another's, a 256 MiB round trip, and a
//! `flamepy.service` session whose context (its common data, an object in the cache) a real
//! instance reads and updates, deleted on every cache when the session closes.
//!
//! How: three members and three agents start as OS processes, each agent with its node's cache
//! (replicas 2). Once every cache reaches its two peers, the client script
//! (`python/flamepy_cache_client.py`, `HOME` pointed at an empty directory) runs against a
//! follower with `FLAME_CACHE_ENDPOINT` set to node-a's cache and node-c's cache as the "other"
//! one; the service's instances get their node's cache from their agent. The test requires the
//! script's exit status 0 and its final marker line; the script prints the big round trip's
//! rates (shown with `--nocapture`).

use crate::support::*;
use anyhow::bail;
use chaos_tests::flamepy::{flamepy_python, python_script, run_client_script};
use std::time::Duration;

const AGENTS: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The client script runs a 256 MiB round trip and launches a Python instance.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);
const PASSED: &str = "flamepy cache scenario passed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flamepy_objects_and_service_contexts_work_through_a_follower() -> anyhow::Result<()> {
    let python = flamepy_python()?;
    let run = start("chaos-flamepy-cache", &[], &AGENTS).await?;
    wait_for_cache_peers(&run, 2).await?;
    let follower = run.followers[0];
    let endpoint = run.cluster.member(follower)?.url();
    let cache = |name: &str| -> anyhow::Result<String> {
        run.cluster
            .agent(name)?
            .cache_endpoint()
            .ok_or_else(|| anyhow::anyhow!("{name} runs no cache"))
    };
    let workdir = run.cluster.agent("node-a")?.work_dir.join("py-context-app");
    let text = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let env = [
        ("FLAME_CACHE_ENDPOINT", cache("node-a")?),
        ("CACHE_OTHER_ENDPOINT", cache("node-c")?),
        ("CACHE_PYTHON", text(python.clone())),
        (
            "CACHE_SERVICE",
            text(python_script("flamepy_context_service.py")),
        ),
        ("CACHE_WORKDIR", text(workdir)),
        ("CACHE_APP", "pycache".to_owned()),
        ("CACHE_BIG_MIB", "256".to_owned()),
    ];
    let script = python_script("flamepy_cache_client.py");
    let outcome = run_client_script(&python, &script, &endpoint, &env, SCRIPT_DEADLINE).await;
    match outcome {
        Ok(done) if done.passed(PASSED) => {
            for line in done.stdout.lines() {
                println!("  {line}");
            }
            Ok(())
        }
        Ok(done) => bail!(
            "the flamepy client against follower {follower} failed: {}\n{}",
            done.describe(),
            agent_logs(&run)
        ),
        Err(e) => bail!("{e}\n{}", agent_logs(&run)),
    }
}
