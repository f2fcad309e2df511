//! Claims about the caches that real node agents run, each against three real members:
//!
//! - an object put through node A's cache is read through node C's, and after node A is
//!   SIGKILLed every object A acknowledged is still readable through the other nodes;
//! - a cache capped at 1 MiB of memory evicts to its disk and serves every object back from
//!   there, and after its agent is SIGKILLed and restarted it serves its persisted objects;
//! - closing a session (and deleting one explicitly) removes its objects on every holder;
//! - 16 concurrent clients each doing 1,000 small puts and gets all read back what they wrote.
//!
//! How: members and agents are OS processes (see `chaos_tests`); the test talks Flight to the
//! caches with `flame_cache::CacheClient` and reads their `flame_cache_*` metrics. Every wait
//! is a bounded poll; counts and sizes are fixed.

use crate::support::*;
use anyhow::{Context, ensure};
use bytes::Bytes;
use chaos_tests::AgentOptions;
use flame_cache::CacheClient;
use flame_proto::v1;
use std::time::Duration;

/// Bound on waits for deletes and restarts to show.
const SETTLE: Duration = Duration::from_secs(30);

/// Distinct, checkable contents for object `i`.
fn payload(i: usize, len: usize) -> Bytes {
    let seed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|j| (seed.rotate_left((j % 64) as u32) as u8) ^ (j as u8))
        .collect()
}

/// A Flight client of agent `name`'s cache.
async fn client(run: &Running, name: &str) -> anyhow::Result<CacheClient> {
    let endpoint = run
        .cluster
        .agent(name)?
        .cache_endpoint()
        .context("the agent runs no cache")?;
    Ok(CacheClient::connect(&endpoint).await?)
}

/// The value of `metric` on agent `name`'s cache.
async fn cache_metric(run: &Running, name: &str, metric: &str) -> anyhow::Result<f64> {
    Ok(run
        .cluster
        .agent(name)?
        .cache_metrics()
        .await?
        .sum(metric, &[]))
}

/// Whether `key` is absent through `client`.
async fn absent(client: &CacheClient, key: &str) -> anyhow::Result<bool> {
    match client.get_bytes(key).await {
        Ok(_) => Ok(false),
        Err(e) if e.is_not_found() => Ok(true),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_put_through_one_node_are_read_from_another_and_survive_its_sigkill()
-> anyhow::Result<()> {
    let mut run = start("cache-survive", &[], &["node-a", "node-b", "node-c"]).await?;
    wait_for_cache_peers(&run, 2).await?;
    let a = client(&run, "node-a").await?;
    let mut keys = Vec::new();
    for i in 0..40 {
        let r = a.put("app/survive", payload(i, 4096 + i * 997)).await?;
        keys.push(r.key);
    }
    let c = client(&run, "node-c").await?;
    let (_, first) = c.get_bytes(&keys[0]).await?;
    ensure!(first == payload(0, 4096), "node C served different bytes");
    run.cluster.kill_agent("node-a")?;
    let b = client(&run, "node-b").await?;
    for (i, key) in keys.iter().enumerate() {
        let via = if i % 2 == 0 { &b } else { &c };
        let (_, got) = via
            .get_bytes(key)
            .await
            .with_context(|| format!("{key} after node A's SIGKILL{}", agent_logs(&run)))?;
        ensure!(
            got == payload(i, 4096 + i * 997),
            "{key} came back different"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_cache_evicts_to_disk_and_a_restarted_one_serves_its_persisted_objects()
-> anyhow::Result<()> {
    let mut run = start("cache-disk", &[], &[]).await?;
    let mut options = AgentOptions::new(&run.binaries);
    options.extra_flags = ["--cache-max-memory", "1m", "--cache-replicas", "1"]
        .map(String::from)
        .to_vec();
    run.cluster.start_agent("node-a", &options)?;
    let a = poll("node-a's cache", SETTLE, || {
        let run = &run;
        async move { Ok(client(run, "node-a").await.ok()) }
    })
    .await?;
    let mut keys = Vec::new();
    for i in 0..24 {
        keys.push(a.put("app/disk", payload(i, 256 << 10)).await?.key);
    }
    for (i, key) in keys.iter().enumerate() {
        ensure!(a.get_bytes(key).await?.1 == payload(i, 256 << 10), "{key}");
    }
    let evictions = cache_metric(&run, "node-a", "flame_cache_evictions_total").await?;
    let loads = cache_metric(&run, "node-a", "flame_cache_disk_loads_total").await?;
    ensure!(
        evictions > 0.0,
        "24 × 256 KiB under a 1 MiB cap evicted nothing"
    );
    ensure!(
        loads > 0.0,
        "evicted objects were served without reading the disk"
    );

    run.cluster.kill_agent("node-a")?;
    run.cluster.start_agent("node-a", &options)?;
    let a = poll("node-a's restarted cache", SETTLE, || {
        let run = &run;
        async move { Ok(client(run, "node-a").await.ok()) }
    })
    .await?;
    for (i, key) in keys.iter().enumerate() {
        let (_, got) = a.get_bytes(key).await.context("after the restart")?;
        ensure!(got == payload(i, 256 << 10), "{key} came back different");
    }
    let loads = cache_metric(&run, "node-a", "flame_cache_disk_loads_total").await?;
    ensure!(
        loads >= 24.0,
        "the restarted cache read {loads} objects from disk"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_or_deleting_a_session_removes_its_objects_on_every_holder() -> anyhow::Result<()> {
    let names = ["node-a", "node-b", "node-c"];
    let run = start("cache-drop", &[], &names).await?;
    wait_for_cache_peers(&run, 2).await?;
    let follower = run.followers[0];
    ping_session(&run, follower, "doomed").await?;
    let mut clients = Vec::new();
    for name in names {
        clients.push(client(&run, name).await?);
    }
    let mut closed = Vec::new();
    let mut deleted = Vec::new();
    for i in 0..12 {
        let via = &clients[i % 3];
        closed.push(via.put("flmping/doomed", payload(i, 2048)).await?.key);
        deleted.push(via.put("other/explicit", payload(i, 2048)).await?.key);
    }
    let kept = clients[0].put("flmping/kept", payload(99, 64)).await?.key;
    run.cluster
        .frontend(follower)?
        .close_session(v1::CloseSessionRequest {
            session_id: "doomed".into(),
        })
        .await?;
    clients[1].delete("other/explicit").await?;
    poll("every holder dropping both sessions", SETTLE, || {
        let (run, clients, names) = (&run, &clients, &names);
        let keys = closed.iter().chain(&deleted);
        async move {
            for key in keys {
                for c in clients {
                    if !absent(c, key).await? {
                        return Ok(None);
                    }
                }
            }
            for name in names {
                // Only `kept` (and its replica) may remain anywhere.
                if cache_metric(run, name, "flame_cache_objects").await? > 1.0 {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        }
    })
    .await?;
    ensure!(
        !absent(&clients[2], &kept).await?,
        "an open session's object went"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_each_do_1000_small_puts_and_gets() -> anyhow::Result<()> {
    let run = start("cache-load", &[], &["node-a", "node-b"]).await?;
    wait_for_cache_peers(&run, 1).await?;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..16usize {
        let c = client(&run, if w % 2 == 0 { "node-a" } else { "node-b" }).await?;
        workers.spawn(async move {
            let session = format!("app/load-{w}");
            for i in 0..1000 {
                let data = payload(w * 1000 + i, 1024);
                let r = c.put(&session, data.clone()).await?;
                let (_, got) = c.get_bytes(&r.key).await?;
                ensure!(got == data, "{} came back different", r.key);
            }
            anyhow::Ok(())
        });
    }
    let deadline = Duration::from_secs(300);
    let all = async {
        while let Some(done) = workers.join_next().await {
            done??;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(deadline, all)
        .await
        .context("16 × 1,000 puts and gets did not finish in time")??;
    Ok(())
}
