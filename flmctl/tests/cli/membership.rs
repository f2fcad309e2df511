//! `flmctl cluster add|promote|remove` against member processes started by the chaos-tests
//! harness (a fourth member needs its own process and ports, which `flmctl local up` does not
//! offer): member 4 is added as a learner, promoted to voter and removed again, every step
//! through a follower's endpoint and checked with `flmctl cluster status`. The command lines
//! are compared with `tests/golden/membership.txt` (`UPDATE_GOLDEN=1` rewrites it).

use crate::support::{flmctl, golden, ok, status_until};
use chaos_tests::{Cluster, build_binaries};
use serde_json::Value;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// The role member `id` reports in `rows`.
fn role(rows: &[Value], id: u64) -> Option<&str> {
    rows.iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["role"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_member_is_added_promoted_and_removed_with_flmctl() -> anyhow::Result<()> {
    let binaries = build_binaries()?;
    let mut cluster = Cluster::start(&binaries.control_plane, "flmctl-membership", 3)?;
    let leader = cluster.wait_for_leader(&[1, 2, 3], DEADLINE).await?;
    let via = if leader == 2 { 3 } else { 2 };
    let endpoint = cluster.member(via)?.url();
    let four = cluster.add_member()?;
    let member = cluster.member(four)?;
    let (raft, api) = (member.raft_addr.to_string(), member.api_addr.to_string());
    let id = four.to_string();
    let mut lines = String::new();

    let add = [
        "cluster",
        "add",
        "--id",
        &id,
        "--raft-addr",
        &raft,
        "--api-addr",
        &api,
    ];
    lines.push_str(&ok(&endpoint, &add));
    let rows = status_until(
        &endpoint,
        DEADLINE,
        "member 4 to show as a learner",
        |rows| role(rows, four) == Some("learner"),
    );
    assert_eq!(rows.len(), 4, "{rows:?}");

    lines.push_str(&ok(&endpoint, &["cluster", "promote", "--id", &id]));
    status_until(&endpoint, DEADLINE, "member 4 to vote", |rows| {
        matches!(role(rows, four), Some("follower" | "leader"))
    });

    lines.push_str(&ok(&endpoint, &["cluster", "remove", "--id", &id]));
    status_until(&endpoint, DEADLINE, "member 4 to leave the group", |rows| {
        rows.len() == 3 && role(rows, four).is_none()
    });

    for args in [
        ["cluster", "promote", "--id", "9"],
        ["cluster", "remove", "--id", "9"],
    ] {
        let (success, stdout, stderr) = flmctl(&endpoint, &args);
        assert!(!success && stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        lines.push_str(&stderr);
    }
    golden("membership.txt", &lines);
    Ok(())
}
