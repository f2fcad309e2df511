//! `flmctl cluster status`: every member's own view of the Raft group.
//!
//! What: asks every given endpoint for `flame.cluster.v1.Cluster/Status`, learns the voters and
//! learners from the answers, asks each member not asked yet, and prints one row per member:
//! id, endpoint, role, term, leader, committed, applied and lag (from the leader's replication
//! view). A member that does not answer shows as `unreachable`; the command fails only when no
//! member answers at all.
//!
//! Why: during an incident the operator needs the whole group at a glance, and the unreachable
//! member is exactly the one to see, not a reason to fail.
//!
//! Caveat: each row is the member's own view at slightly different instants.

use crate::client;
use crate::output::{Rows, or_dash};
use flame_proto::cluster::cluster_client::ClusterClient;
use flame_proto::cluster::{MemberStatus, Role, StatusRequest};
use futures::future::join_all;
use serde_json::json;
use std::collections::BTreeMap;

/// One endpoint and what it answered.
type Answer = (String, Result<MemberStatus, String>);

/// Asks one member for its status, bounded by [`client::ATTEMPT`].
async fn ask(url: String) -> Answer {
    let result = async {
        let mut admin = ClusterClient::new(client::channel(&url).map_err(|e| e.to_string())?);
        match tokio::time::timeout(client::ATTEMPT, admin.status(StatusRequest {})).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(format!("{}: {}", status.code(), status.message())),
            Err(_) => Err(format!("no answer within {:?}", client::ATTEMPT)),
        }
    }
    .await;
    (url, result)
}

/// The status rows of the group reachable through `endpoints`.
pub async fn status(endpoints: &[String]) -> anyhow::Result<Rows> {
    let mut answers = join_all(endpoints.iter().cloned().map(ask)).await;
    let ids = membership(&answers);
    let extra: Vec<String> = ids
        .keys()
        .filter(|url| !answers.iter().any(|(asked, _)| asked == *url))
        .cloned()
        .collect();
    answers.extend(join_all(extra.into_iter().map(ask)).await);
    if answers.iter().all(|(_, result)| result.is_err()) {
        let last = answers
            .iter()
            .filter_map(|(url, r)| r.as_ref().err().map(|e| format!("{url}: {e}")))
            .next_back()
            .unwrap_or_default();
        return Err(client::nobody_answered(endpoints, &last));
    }
    Ok(rows(answers, &ids))
}

/// Member API URL → member id, from every answer's voters and learners.
fn membership(answers: &[Answer]) -> BTreeMap<String, u64> {
    let mut ids = BTreeMap::new();
    for status in answers.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        for member in status.voters.iter().chain(&status.learners) {
            if let Ok(url) = flame_sdk::client::endpoints::normalise(&member.api_addr) {
                ids.insert(url, member.id);
            }
        }
    }
    ids
}

/// The leader's answer with the highest term, if any member is the leader.
fn leader(answers: &[Answer]) -> Option<&MemberStatus> {
    answers
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter(|s| s.role == Role::Leader as i32)
        .max_by_key(|s| s.term)
}

fn rows(answers: Vec<Answer>, ids: &BTreeMap<String, u64>) -> Rows {
    let leader = leader(&answers).cloned();
    let mut seen = Vec::new();
    let mut entries = Vec::new();
    for (url, result) in answers {
        let id = result
            .as_ref()
            .ok()
            .map(|s| s.id)
            .or(ids.get(&url).copied());
        if id.is_some() && seen.contains(&id) {
            continue; // The same member under two spellings.
        }
        seen.push(id);
        entries.push((id, url, result));
    }
    entries.sort_by(|a, b| (a.0.is_none(), a.0, &a.1).cmp(&(b.0.is_none(), b.0, &b.1)));
    let mut rows = Rows {
        headers: vec![
            "Id",
            "Endpoint",
            "Role",
            "Term",
            "Leader",
            "Committed",
            "Applied",
            "Lag",
        ],
        ..Rows::default()
    };
    for (id, url, result) in entries {
        let lag = id.and_then(|id| lag_of(leader.as_ref(), id));
        push_row(&mut rows, id, url, result, lag);
    }
    rows
}

/// The leader's view of how far `id` is behind (0 for the leader itself).
fn lag_of(leader: Option<&MemberStatus>, id: u64) -> Option<u64> {
    let leader = leader?;
    if leader.id == id {
        return Some(0);
    }
    leader
        .replication
        .iter()
        .find(|r| r.member_id == id)
        .map(|r| r.lag)
}

fn push_row(
    rows: &mut Rows,
    id: Option<u64>,
    url: String,
    result: Result<MemberStatus, String>,
    lag: Option<u64>,
) {
    match result {
        Ok(s) => {
            let role = role_name(s.role);
            rows.cells.push(vec![
                s.id.to_string(),
                url.clone(),
                role.to_owned(),
                s.term.to_string(),
                or_dash(s.leader_id),
                s.committed.to_string(),
                s.applied.to_string(),
                or_dash(lag),
            ]);
            rows.values.push(json!({
                "id": s.id, "endpoint": url, "role": role, "term": s.term,
                "leader": s.leader_id, "committed": s.committed, "applied": s.applied,
                "lag": lag,
            }));
        }
        Err(error) => {
            let mut cells = vec![or_dash(id), url.clone(), "unreachable".to_owned()];
            cells.extend(std::iter::repeat_n("-".to_owned(), 5));
            rows.cells.push(cells);
            rows.values.push(json!({
                "id": id, "endpoint": url, "role": "unreachable", "lag": lag, "error": error,
            }));
        }
    }
}

/// A member role in lower case.
fn role_name(role: i32) -> &'static str {
    match Role::try_from(role).unwrap_or(Role::Unknown) {
        Role::Unknown => "unknown",
        Role::Learner => "learner",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::Shutdown => "shutdown",
    }
}
