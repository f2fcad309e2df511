//! `flmctl cluster status`: every member's own view of the Raft group.
//!
//! What: every given endpoint is asked once for `flame.cluster.v1.Cluster/Status`
//! ([`Connection::member_status`]); then the SDK's [`Connection::cluster_status`] learns the
//! voters and learners and asks each of them. A given endpoint outside the membership keeps its
//! row, so a wrong or dead endpoint shows up. One row per member: id, endpoint, role, term, leader, committed, applied and lag (from
//! the leader's replication view). A member that does not answer shows as `unreachable`; the
//! command fails only when no member answers at all.
//!
//! Why: during an incident the operator needs the whole group at a glance, and the unreachable
//! member is exactly the one to see, not a reason to fail.
//!
//! Caveat: each row is the member's own view at slightly different instants.

use crate::client;
use crate::output::{Rows, or_dash};
use flame_proto::cluster::{MemberStatus, Role};
use flame_sdk::client::{
    ClientError, ClusterStatus, ConnectOptions, Connection, MemberReport, MemberView,
};
use futures::future::join_all;
use serde_json::json;

/// One row before rendering: the member's id when known, its endpoint and its answer.
type Entry = (Option<u64>, String, Result<MemberStatus, String>);

/// Every step is bounded by [`client::ATTEMPT`], so a dead cluster fails fast.
fn options() -> ConnectOptions {
    ConnectOptions {
        deadline: client::ATTEMPT,
        attempt_timeout: client::ATTEMPT,
        ..ConnectOptions::default()
    }
}

/// Why the member at `url` did not answer, `<url>: <why>`, without the retry framing of a
/// single attempt.
fn reason(url: &str, error: ClientError) -> String {
    match error {
        ClientError::NoMember { last, .. } => last,
        other => format!("{url}: {other}"),
    }
}

/// The status rows of the group reachable through `endpoints`.
pub async fn status(endpoints: &[String]) -> anyhow::Result<Rows> {
    let conn = Connection::with_options(endpoints, options())?;
    // Every given endpoint once, at once: a dead cluster fails fast with the real reason, and
    // an endpoint outside the membership still gets its row.
    let asks = endpoints.iter().map(|url| {
        let conn = conn.clone();
        async move {
            (
                url.clone(),
                conn.member_status(url).await.map_err(|e| reason(url, e)),
            )
        }
    });
    let asked = join_all(asks).await;
    if asked.iter().all(|(_, answer)| answer.is_err()) {
        let last = asked
            .iter()
            .filter_map(|(_, answer)| answer.as_ref().err().cloned())
            .next_back()
            .unwrap_or_default();
        return Err(client::nobody_answered(endpoints, &last));
    }
    let group = conn.cluster_status().await?;
    let mut entries: Vec<Entry> = group.members.iter().map(entry).collect();
    for (url, answer) in asked {
        if group.members.iter().any(|m| m.url == url) {
            continue;
        }
        match answer {
            // The same member under another spelling.
            Ok(s) if entries.iter().any(|e| e.0 == Some(s.id)) => {}
            Ok(s) => entries.push((Some(s.id), url, Ok(s))),
            Err(e) => entries.push((None, url, Err(e))),
        }
    }
    Ok(rows(entries, &group))
}

fn entry(member: &MemberReport) -> Entry {
    let answer = match &member.view {
        MemberView::Answered(s) => Ok(s.clone()),
        MemberView::Unreachable(why) => Err(why.clone()),
    };
    (Some(member.id), member.url.clone(), answer)
}

fn rows(mut entries: Vec<Entry>, group: &ClusterStatus) -> Rows {
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
        let lag = id.and_then(|id| group.lag_of(id));
        push_row(&mut rows, id, url, result, lag);
    }
    rows
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
