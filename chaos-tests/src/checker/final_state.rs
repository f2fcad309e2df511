//! Checks of the state a run ends in, against its history: nothing acknowledged lost, no task
//! created twice, every task terminal, session counters equal to the states of their tasks,
//! and every member showing the same sessions and tasks.
//!
//! Why each:
//! - *Lost*: an acknowledged `CreateSession`, `CloseSession`, `CreateTask`,
//!   `RegisterApplication` or `UnregisterApplication` whose effect is missing at the end breaks
//!   the one promise a client relies on.
//! - *Duplicates*: every task input carries a tag unique over the run, so two tasks with one
//!   tag are a write applied twice (a retry inside the cluster that created a second task).
//! - *Counters*: `GetSession`'s pending/running/succeed/failed/cancelled are kept incrementally
//!   by apply; they must equal a recount of the session's tasks on every member.
//!
//! Caveat: [`read_final`] reads through one member's client API; every read there is
//! linearizable (a read index from the leader), so it shows everything acknowledged before it.

use crate::history::{Call, History, Outcome, Reply, SessionState, TaskState};
use crate::workload::{session_state, task_row};
use flame_proto::v1;
use flame_proto::v1::frontend_client::FrontendClient;
use std::collections::{BTreeMap, BTreeSet};
use tonic::transport::Channel;

/// A session's counters as `GetSession` reports them: pending, running, succeed, failed,
/// cancelled.
pub type Counters = [i32; 5];

/// What one member shows at the end of a run, for the sessions and applications the history
/// names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Final {
    /// Each session the history tried to create: its state and counters, `None` if absent.
    pub sessions: BTreeMap<String, Option<(SessionState, Counters)>>,
    /// Each present session's tasks as `(id, tag, state)`, ordered by id.
    pub tasks: BTreeMap<String, Vec<(String, String, TaskState)>>,
    /// The registered applications' names.
    pub applications: BTreeSet<String>,
}

impl Final {
    /// Tasks not yet terminal, as `session/id`.
    pub fn not_terminal(&self) -> Vec<String> {
        self.tasks
            .iter()
            .flat_map(|(s, tasks)| {
                tasks
                    .iter()
                    .filter(|t| !t.2.is_terminal())
                    .map(move |t| format!("{s}/{} ({:?})", t.0, t.2))
            })
            .collect()
    }
}

/// Reads the final state of everything `history` names through `channel`.
pub async fn read_final(channel: Channel, history: &History) -> Result<Final, tonic::Status> {
    let mut frontend = FrontendClient::new(channel);
    let mut state = Final::default();
    let sessions: BTreeSet<&String> = history
        .ops
        .iter()
        .filter_map(|o| match &o.call {
            Call::CreateSession { session } => Some(session),
            _ => None,
        })
        .collect();
    for id in sessions {
        let request = v1::GetSessionRequest {
            session_id: id.clone(),
        };
        let session = match frontend.get_session(request).await {
            Ok(s) => s.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                state.sessions.insert(id.clone(), None);
                continue;
            }
            Err(status) => return Err(status),
        };
        state.sessions.insert(
            id.clone(),
            Some((session_state(&session), counters(&session))),
        );
        state
            .tasks
            .insert(id.clone(), list(&mut frontend, id).await?);
    }
    let apps = frontend
        .list_application(v1::ListApplicationRequest {})
        .await?
        .into_inner();
    state.applications = apps
        .applications
        .into_iter()
        .filter_map(|a| a.metadata.map(|m| m.name))
        .collect();
    Ok(state)
}

fn counters(s: &v1::Session) -> Counters {
    s.status.as_ref().map_or([0; 5], |st| {
        [st.pending, st.running, st.succeed, st.failed, st.cancelled]
    })
}

async fn list(
    frontend: &mut FrontendClient<Channel>,
    session: &str,
) -> Result<Vec<(String, String, TaskState)>, tonic::Status> {
    let request = v1::ListTaskRequest {
        session_id: session.to_owned(),
    };
    let mut stream = frontend.list_task(request).await?.into_inner();
    let mut rows = Vec::new();
    while let Some(task) = stream.message().await? {
        rows.extend(task_row(&task));
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Ok(rows)
}

/// Acknowledged changes whose effect `end` does not show. With `retention`, a session that was
/// closed (or may have been) and is gone was purged, not lost, and so were its tasks.
pub fn lost(history: &History, end: &Final, retention: bool) -> Vec<String> {
    let mut lost = Vec::new();
    let purged: BTreeSet<&String> = history
        .ops
        .iter()
        .filter_map(|o| match (&o.call, &o.outcome) {
            (Call::CloseSession { .. }, Outcome::Failed(_)) => None,
            (Call::CloseSession { session }, _) => Some(session),
            _ => None,
        })
        .filter(|s| retention && !matches!(end.sessions.get(*s), Some(Some(_))))
        .collect();
    let unregistered: BTreeMap<&String, &Outcome> = history
        .ops
        .iter()
        .filter_map(|o| match &o.call {
            Call::UnregisterApplication { name } => Some((name, &o.outcome)),
            _ => None,
        })
        .collect();
    for op in history.ops.iter().filter(|o| o.is_ok()) {
        let of_purged = match &op.call {
            Call::CreateSession { session }
            | Call::CloseSession { session }
            | Call::CreateTask { session, .. } => purged.contains(session),
            _ => false,
        };
        let missing = match (&op.call, &op.outcome) {
            _ if of_purged => false,
            (Call::CreateSession { session }, _) => {
                !matches!(end.sessions.get(session), Some(Some(_)))
            }
            (Call::CloseSession { session }, _) => !matches!(
                end.sessions.get(session),
                Some(Some((SessionState::Closed, _)))
            ),
            (Call::CreateTask { session, tag }, Outcome::Ok(Reply::Created(id))) => !end
                .tasks
                .get(session)
                .is_some_and(|tasks| tasks.iter().any(|t| &t.0 == id && &t.1 == tag)),
            (Call::RegisterApplication { name }, _) => {
                let removed = unregistered
                    .get(name)
                    .is_some_and(|o| !matches!(o, Outcome::Failed(_)));
                !removed && !end.applications.contains(name)
            }
            (Call::UnregisterApplication { name }, _) => end.applications.contains(name),
            _ => false,
        };
        if missing {
            lost.push(format!(
                "{:?} acknowledged by member {}",
                op.call, op.member
            ));
        }
    }
    lost
}

/// Tags carried by more than one task.
pub fn duplicates(end: &Final) -> Vec<String> {
    let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for tasks in end.tasks.values() {
        for (id, tag, _) in tasks {
            seen.entry(tag).or_default().push(id);
        }
    }
    seen.into_iter()
        .filter(|(tag, ids)| !tag.is_empty() && ids.len() > 1)
        .map(|(tag, ids)| format!("tag {tag} on tasks {ids:?}"))
        .collect()
}

/// Sessions whose counters differ from a recount of their tasks.
pub fn counter_mismatches(end: &Final) -> Vec<String> {
    let mut wrong = Vec::new();
    for (session, entry) in &end.sessions {
        let Some((_, counters)) = entry else { continue };
        let mut recount = [0i32; 5];
        for (_, _, state) in end.tasks.get(session).into_iter().flatten() {
            recount[*state as usize] += 1;
        }
        if *counters != recount {
            wrong.push(format!(
                "{session}: counters {counters:?}, tasks {recount:?} (pending, running, succeed, failed, cancelled)"
            ));
        }
    }
    wrong
}

/// How `other` differs from `reference` (empty when equal), for members compared at rest.
pub fn differences(reference: &Final, other: &Final) -> Vec<String> {
    let mut diff = Vec::new();
    for (session, entry) in &reference.sessions {
        if other.sessions.get(session) != Some(entry) {
            diff.push(format!(
                "session {session}: {entry:?} vs {:?}",
                other.sessions.get(session)
            ));
        }
        if other.tasks.get(session) != reference.tasks.get(session) {
            diff.push(format!("tasks of {session} differ"));
        }
    }
    if reference.applications != other.applications {
        diff.push("applications differ".into());
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    fn op(call: Call, outcome: Outcome) -> Op {
        Op {
            client: 0,
            member: 2,
            invoke: 0,
            complete: 1,
            call,
            outcome,
        }
    }

    fn ended(tasks: Vec<(&str, &str, TaskState)>, counters: Counters) -> Final {
        let mut end = Final::default();
        end.sessions
            .insert("s".into(), Some((SessionState::Open, counters)));
        let rows = tasks
            .into_iter()
            .map(|(id, tag, st)| (id.to_owned(), tag.to_owned(), st))
            .collect();
        end.tasks.insert("s".into(), rows);
        end
    }

    #[test]
    fn an_acknowledged_task_missing_at_the_end_is_lost_and_an_unknown_one_is_not() {
        let create = |tag: &str| Call::CreateTask {
            session: "s".into(),
            tag: tag.into(),
        };
        let history = History::merge([vec![
            op(create("a"), Outcome::Ok(Reply::Created("1".into()))),
            op(create("b"), Outcome::Ok(Reply::Created("2".into()))),
            op(create("c"), Outcome::Unknown("timeout".into())),
        ]]);
        let end = ended(vec![("1", "a", TaskState::Succeed)], [0, 0, 1, 0, 0]);
        let lost = lost(&history, &end, false);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("\"b\""), "{lost:?}");
    }

    #[test]
    fn an_acknowledged_unregister_whose_application_remains_is_lost() {
        let name = || "app".to_string();
        let history = History::merge([vec![
            op(
                Call::RegisterApplication { name: name() },
                Outcome::Ok(Reply::Done),
            ),
            op(
                Call::UnregisterApplication { name: name() },
                Outcome::Ok(Reply::Done),
            ),
        ]]);
        let mut end = Final::default();
        end.applications.insert(name());
        assert_eq!(lost(&history, &end, false).len(), 1);
        end.applications.clear();
        assert!(lost(&history, &end, false).is_empty());
    }

    #[test]
    fn two_tasks_with_one_tag_are_a_duplicate() {
        let end = ended(
            vec![
                ("1", "a", TaskState::Succeed),
                ("2", "a", TaskState::Succeed),
            ],
            [0, 0, 2, 0, 0],
        );
        assert_eq!(duplicates(&end).len(), 1);
    }

    #[test]
    fn counters_that_disagree_with_the_tasks_are_reported() {
        let end = ended(vec![("1", "a", TaskState::Succeed)], [0, 0, 1, 0, 0]);
        assert!(counter_mismatches(&end).is_empty());
        let end = ended(vec![("1", "a", TaskState::Succeed)], [1, 0, 0, 0, 0]);
        assert_eq!(counter_mismatches(&end).len(), 1);
    }

    #[test]
    fn with_retention_a_closed_session_that_is_gone_was_purged_not_lost() {
        let s = || "s".to_string();
        let history = History::merge([vec![
            op(
                Call::CreateSession { session: s() },
                Outcome::Ok(Reply::Done),
            ),
            op(
                Call::CreateTask {
                    session: s(),
                    tag: "a".into(),
                },
                Outcome::Ok(Reply::Created("1".into())),
            ),
            op(
                Call::CloseSession { session: s() },
                Outcome::Ok(Reply::Done),
            ),
        ]]);
        let mut end = Final::default();
        end.sessions.insert(s(), None);
        assert!(lost(&history, &end, true).is_empty());
        assert_eq!(lost(&history, &end, false).len(), 3);
    }
}
