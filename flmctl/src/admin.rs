//! `flmctl cluster add|promote|remove|transfer-leader|snapshot`: changing the Raft group.
//!
//! What: each verb is one call of the SDK's [`Connection`] (which finds the leader from any
//! member and retries through a failover) and one line of output: the group's voters and
//! learners after a membership change, the new leader after a transfer, the log index of a
//! snapshot.
//!
//! Why the transfer waits: the server answers after waiting a few seconds for the target, but a
//! caller scripting a rolling restart needs "the target leads now" or a failure, so flmctl polls
//! the group (bounded by [`TRANSFER_WAIT`]) until every answer agrees.
//!
//! Caveat: `promote` and `remove` compute the new voter set from the leader's current one; two
//! operators changing membership at once can overwrite each other (see the SDK's `admin`).

use flame_proto::cluster::{Member, MembershipReply};
use flame_sdk::client::Connection;
use std::time::{Duration, Instant};

/// How long `transfer-leader` waits for the target to lead.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(15);

/// `flmctl cluster add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// The new member's Raft id.
    #[arg(long)]
    id: u64,
    /// The new member's Raft (peer) address, `host:port`.
    #[arg(long)]
    raft_addr: String,
    /// The new member's client API address, `host:port`.
    #[arg(long)]
    api_addr: String,
    /// Return once the learner is added, without waiting for it to catch up.
    #[arg(long)]
    no_wait: bool,
}

/// `flmctl cluster promote` and `flmctl cluster remove`.
#[derive(clap::Args, Debug)]
pub struct MemberArgs {
    /// The member's Raft id.
    #[arg(long)]
    id: u64,
}

/// `flmctl cluster transfer-leader`.
#[derive(clap::Args, Debug)]
pub struct TransferArgs {
    /// The voter that should lead.
    #[arg(long)]
    to: u64,
}

/// `1, 2, 3`, or `-` for none.
fn ids(members: &[Member]) -> String {
    if members.is_empty() {
        return "-".to_owned();
    }
    let ids: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
    ids.join(", ")
}

/// ` (voters: 1, 2, 3; learners: 4)`.
fn group(reply: &MembershipReply) -> String {
    format!(
        "voters: {}; learners: {}",
        ids(&reply.voters),
        ids(&reply.learners)
    )
}

/// Adds a learner; with `--no-wait` the reply does not wait for it to catch up.
pub async fn add(conn: &Connection, args: &AddArgs) -> anyhow::Result<String> {
    let reply = conn
        .add_learner(args.id, &args.raft_addr, &args.api_addr, !args.no_wait)
        .await?;
    let caught_up = if args.no_wait { "" } else { " and caught up" };
    Ok(format!(
        "Member {} was added as a learner{caught_up} ({}).\n",
        args.id,
        group(&reply)
    ))
}

/// Makes a learner a voter.
pub async fn promote(conn: &Connection, args: &MemberArgs) -> anyhow::Result<String> {
    let reply = conn.promote(args.id).await?;
    Ok(format!(
        "Member {} was promoted to voter ({}).\n",
        args.id,
        group(&reply)
    ))
}

/// Removes a voter from the group.
pub async fn remove(conn: &Connection, args: &MemberArgs) -> anyhow::Result<String> {
    let reply = conn.remove_member(args.id).await?;
    Ok(format!(
        "Member {} was removed ({}).\n",
        args.id,
        group(&reply)
    ))
}

/// Asks `--to` to lead, then waits (bounded) until every answering member names it leader.
pub async fn transfer_leader(conn: &Connection, args: &TransferArgs) -> anyhow::Result<String> {
    conn.transfer_leader(args.to).await?;
    let deadline = Instant::now() + TRANSFER_WAIT;
    loop {
        let status = conn.cluster_status().await?;
        let leads = status.leader().map(|s| s.id);
        let agreed = status.answered().all(|s| s.leader_id == Some(args.to));
        if leads == Some(args.to) && agreed {
            return Ok(format!("Member {} is the leader now.\n", args.to));
        }
        if Instant::now() >= deadline {
            let now = leads.map_or_else(|| "none".to_owned(), |id| id.to_string());
            anyhow::bail!(
                "member {} did not become the leader within {TRANSFER_WAIT:?} (leader: {now})",
                args.to
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Builds a snapshot on the leader now.
pub async fn snapshot(conn: &Connection) -> anyhow::Result<String> {
    let index = conn.trigger_snapshot().await?;
    Ok(format!("Snapshot taken at log index {index}.\n"))
}
