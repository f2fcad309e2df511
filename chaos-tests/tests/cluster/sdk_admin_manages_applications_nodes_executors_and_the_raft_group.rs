//! Claim: the SDK's admin API manages applications, lists nodes and executors and administers
//! the Raft group of a real three-member cluster with one node agent, through a connection
//! that lists every member:
//!
//! 1. register → get round-trips every field (absent optionals stay absent, defaults filled),
//!    a duplicate registration is `ClientError::Refused` naming the duplicate, update replaces
//!    the spec, list shows it, unregister removes it (get is `None`), and a second unregister
//!    is refused as `not found`.
//! 2. The agent's node is listed and got by name (an unknown name is `None`); after a
//!    `flmping` task ran, its executor is listed on that node.
//! 3. `cluster_status` shows three voters, all answering, exactly one leader;
//!    `transfer_leader` moves leadership to a follower (awaited with a deadline);
//!    `trigger_snapshot` returns an index; a killed member is reported unreachable, not as an
//!    error.

use crate::support::*;
use anyhow::{Context, bail, ensure};
use flame_proto::cluster::Role;
use flame_proto::v1::{ApplicationSchema, ApplicationSpec, Environment};
use flame_sdk::client::{ClientError, ClusterStatus, Connection, MemberView, SessionOptions};
use std::time::Duration;

const APP: &str = "sdk-admin-app";
const WAIT: Duration = Duration::from_secs(60);

fn spec(description: &str) -> ApplicationSpec {
    ApplicationSpec {
        description: Some(description.into()),
        labels: vec!["sdk".into(), "admin".into()],
        command: Some("/bin/true".into()),
        arguments: vec!["--flag".into(), "value".into()],
        environments: vec![Environment {
            name: "MODE".into(),
            value: "test".into(),
        }],
        working_directory: Some("/tmp".into()),
        schema: Some(ApplicationSchema {
            input: Some(r#"{"type":"object"}"#.into()),
            output: None,
            common_data: None,
        }),
        ..ApplicationSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_admin_manages_applications_nodes_executors_and_the_raft_group() -> anyhow::Result<()> {
    let mut run = start("chaos-sdk-admin", &[], &["node-a"]).await?;
    let urls: Vec<String> = run.cluster.members().iter().map(|m| m.url()).collect();
    let conn = Connection::new(&urls)?;
    applications(&conn).await?;
    nodes_and_executors(&conn).await?;
    raft_group(&mut run, &conn).await
}

/// Part 1: the application lifecycle.
async fn applications(conn: &Connection) -> anyhow::Result<()> {
    let sent = spec("first");
    conn.register_application(APP, &sent).await?;
    let got = conn.get_application(APP).await?.context("registered")?;
    let stored = got.spec.context("a spec")?;
    let expected = ApplicationSpec {
        max_instances: Some(1_000_000),
        delay_release: Some(60),
        ..sent.clone()
    };
    ensure!(stored == expected, "{stored:?}\n!=\n{expected:?}");
    ensure!(stored.url.is_none(), "an absent url stays absent");

    match conn.register_application(APP, &sent).await {
        Err(ClientError::Refused { message, code, .. }) => {
            ensure!(code != 0 && message.contains("already exists"), "{message}")
        }
        other => bail!("a duplicate registration gave {other:?}"),
    }

    conn.update_application(APP, &spec("second")).await?;
    let updated = conn.get_application(APP).await?.context("still there")?;
    let description = updated.spec.and_then(|s| s.description);
    ensure!(description.as_deref() == Some("second"), "{description:?}");

    let names: Vec<String> = conn
        .list_applications()
        .await?
        .into_iter()
        .filter_map(|a| a.metadata.map(|m| m.name))
        .collect();
    for name in ["flmping", "flmexec", "flmrun", APP] {
        ensure!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }

    conn.unregister_application(APP).await?;
    ensure!(conn.get_application(APP).await?.is_none(), "unregistered");
    match conn.unregister_application(APP).await {
        Err(ClientError::Refused { message, .. }) if message.contains("not found") => Ok(()),
        other => bail!("unregistering an unknown application gave {other:?}"),
    }
}

/// Part 2: the agent's node, and an executor after a task ran.
async fn nodes_and_executors(conn: &Connection) -> anyhow::Result<()> {
    poll("node-a to be listed", WAIT, || async {
        let nodes = conn.list_nodes().await?;
        Ok(nodes
            .iter()
            .any(|n| n.metadata.as_ref().is_some_and(|m| m.name == "node-a"))
            .then_some(()))
    })
    .await?;
    let node = conn.get_node("node-a").await?.context("node-a by name")?;
    let hostname = node.spec.map(|s| s.hostname);
    ensure!(hostname.as_deref() == Some("node-a"), "{hostname:?}");
    ensure!(conn.get_node("no-such-node").await?.is_none());

    let mut options = SessionOptions::new("flmping");
    options.resreq = chaos_tests::ping_session_spec(0, None).resreq;
    let session = conn.create_session(&options).await?;
    tokio::time::timeout(WAIT, session.run(None)).await??;
    let executors = conn.list_executors().await?;
    ensure!(
        executors
            .iter()
            .any(|e| e.spec.as_ref().is_some_and(|s| s.node == "node-a")),
        "no executor on node-a: {executors:?}"
    );
    session.close().await?;
    Ok(())
}

/// The ids of the members that say they lead.
fn leaders(status: &ClusterStatus) -> Vec<u64> {
    status
        .answered()
        .filter(|s| s.role == Role::Leader as i32)
        .map(|s| s.id)
        .collect()
}

/// Part 3: status, leadership transfer, snapshot, an unreachable member.
async fn raft_group(run: &mut Running, conn: &Connection) -> anyhow::Result<()> {
    let status = poll("three answering voters and one leader", WAIT, || async {
        let status = conn.cluster_status().await?;
        let settled = status.members.len() == 3
            && status.members.iter().all(|m| m.voter)
            && status.unreachable().count() == 0
            && leaders(&status).len() == 1;
        Ok(settled.then_some(status))
    })
    .await?;
    let leader = status.leader().context("a leader")?.id;
    let to = status
        .members
        .iter()
        .map(|m| m.id)
        .find(|id| *id != leader)
        .context("a follower")?;

    conn.transfer_leader(to).await?;
    poll(&format!("member {to} to lead"), WAIT, || async {
        let status = conn.cluster_status().await?;
        Ok((leaders(&status) == vec![to]).then_some(()))
    })
    .await?;
    ensure!(conn.leader().await? == run.cluster.member(to)?.url());

    let index = conn.trigger_snapshot().await?;
    ensure!(index > 0, "snapshot index {index}");

    let victim = status
        .members
        .iter()
        .map(|m| m.id)
        .find(|id| *id != to)
        .context("a non-leader")?;
    run.cluster.kill(victim)?;
    let status = conn.cluster_status().await?;
    let down: Vec<u64> = status.unreachable().map(|m| m.id).collect();
    ensure!(
        down == vec![victim],
        "unreachable {down:?}, killed {victim}"
    );
    let answered = status
        .members
        .iter()
        .filter(|m| matches!(m.view, MemberView::Answered(_)))
        .count();
    ensure!(answered == 2, "{status:?}");
    Ok(())
}
