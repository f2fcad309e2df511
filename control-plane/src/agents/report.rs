//! What an agent tells the leader, turned into replicated commands: heartbeats and `Report`s.
//!
//! What: each `Sync` stream has one worker ([`run`]) fed by a bounded queue of [`Work`]. The
//! worker takes everything queued (up to [`MERGE_REPORTS`] items), merges the reports, and
//! proposes through [`MemberHandle::write`], in this order: `Heartbeat` (if one is due), one
//! `BindCompleted` per bind, `CompleteTasks` for every task outcome (one, or as many as keep
//! each within [`completion_limit`] encoded bytes, so an entry always fits a message), one
//! `UnbindCompleted` per unbind and one `ExecutorReleased` per released executor
//! ([`commands`]). Stale or duplicate outcomes come back as errors inside the outcome (the state
//! machine refuses them without changing anything); they are logged at debug and dropped.
//!
//! Why a worker: proposals wait for a commit; doing them on the stream's own task would stall
//! heartbeat acks and assignments behind them. Merging keeps a slow commit from turning into a
//! queue of small entries.
//!
//! Why merging cannot reorder anything that matters: an outcome always answers an assignment,
//! and an executor's next assignment (a new bind after an unbind, a task after a bind) is only
//! computed after its previous outcome committed, so reports waiting together never hold two
//! dependent outcomes for one executor in an order the merge would invert.
//!
//! Caveats:
//! - Items naming an executor that this member's state does not place on the stream's node are
//!   dropped before proposing (an agent cannot report for another node's executors).
//! - A task output over the payload limit is recorded as a failure whose message names the
//!   limit (the "bad input" rule), never stored.

use crate::member::handle::MemberHandle;
use crate::state::queue::DispatchPolicy;
use crate::state::{BindResult, Command, Outcome, Response, State, TaskResult, encoded_len};
use bytes::Bytes;
use flame_proto::agent::{BindOutcome, Report, TaskOutcome};
use flame_proto::error::FlameError;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Most queued items one round of proposals takes.
pub const MERGE_REPORTS: usize = 64;

/// The return code recorded for an output over the payload limit.
pub const OUTPUT_TOO_LARGE_CODE: i32 = -1;

/// One item of a stream's worker queue.
#[derive(Debug)]
pub enum Work {
    /// Record a heartbeat of the stream's node.
    Heartbeat,
    /// Turn a report into commands.
    Report(Report),
}

/// Proposes the queued work of node `node`'s stream until the queue closes.
pub async fn run(handle: MemberHandle, node: String, mut rx: mpsc::Receiver<Work>) {
    while let Some(first) = rx.recv().await {
        let mut heartbeat = false;
        let mut report = Report::default();
        absorb(first, &mut heartbeat, &mut report);
        for _ in 1..MERGE_REPORTS {
            match rx.try_recv() {
                Ok(work) => absorb(work, &mut heartbeat, &mut report),
                Err(_) => break,
            }
        }
        if heartbeat {
            let command = Command::Heartbeat { node: node.clone() };
            propose(&handle, "Heartbeat", command).await;
        }
        let state = handle.local();
        let limits = &handle.limits;
        let policy = limits.dispatch;
        for command in commands(
            report,
            &state.state,
            &node,
            limits.max_payload_bytes,
            policy,
        ) {
            propose(&handle, kind(&command), command).await;
        }
    }
}

fn absorb(work: Work, heartbeat: &mut bool, into: &mut Report) {
    match work {
        Work::Heartbeat => *heartbeat = true,
        Work::Report(r) => {
            into.binds.extend(r.binds);
            into.tasks.extend(r.tasks);
            into.unbinds.extend(r.unbinds);
            into.released.extend(r.released);
        }
    }
}

fn kind(command: &Command) -> &'static str {
    match command {
        Command::BindCompleted { .. } => "BindCompleted",
        Command::CompleteTasks { .. } => "CompleteTasks",
        Command::UnbindCompleted { .. } => "UnbindCompleted",
        Command::ExecutorReleased { .. } => "ExecutorReleased",
        _ => "command",
    }
}

/// Proposes one command and logs what became of it.
async fn propose(handle: &MemberHandle, kind: &'static str, command: Command) {
    match handle.write(command).await {
        Ok(response) => log_refusals(kind, &response),
        Err(error) => warn!(kind, %error, "could not propose an agent's outcome"),
    }
}

/// Logs the items the state machine refused (stale or duplicate outcomes) at debug.
fn log_refusals(kind: &'static str, response: &Response) {
    match &response.outcome {
        Outcome::TaskUpdates(items) => {
            let mut refused = items.iter().filter_map(|r| r.as_ref().err());
            if let Some(first) = refused.next() {
                let count = 1 + refused.count();
                debug!(kind, count, total = items.len(), %first, "stale task outcomes ignored");
            }
        }
        outcome => {
            if let Some(error) = outcome.error() {
                debug!(kind, %error, "stale outcome ignored");
            }
        }
    }
}

/// The commands of `report` from node `node`'s agent, in the order they must be applied: binds,
/// one CompleteTasks (refilling under `dispatch`), unbinds, releases. Items for executors that
/// `state` does not place on `node` are dropped; outputs over `max_payload` become failures
/// naming the limit.
pub fn commands(
    report: Report,
    state: &State,
    node: &str,
    max_payload: usize,
    dispatch: DispatchPolicy,
) -> Vec<Command> {
    let ours = |executor_id: &str| {
        let on_node = state
            .executor(executor_id)
            .is_some_and(|e| e.spec.node == node);
        if !on_node {
            debug!(
                executor_id,
                "outcome for an executor not on this node dropped"
            );
        }
        on_node
    };
    let mut out = Vec::new();
    for bind in report.binds.into_iter().filter(|b| ours(&b.executor_id)) {
        out.push(Command::BindCompleted {
            id: bind.executor_id.clone(),
            session_id: bind.session_id.clone(),
            result: bind_result(bind),
        });
    }
    let results: Vec<TaskResult> = report
        .tasks
        .into_iter()
        .filter(|t| ours(&t.executor_id))
        .map(|t| task_result(t, max_payload))
        .collect();
    for results in by_size(results, completion_limit(max_payload)) {
        out.push(Command::CompleteTasks {
            results,
            refill: Some(dispatch),
        });
    }
    for unbind in report.unbinds.into_iter().filter(|u| ours(&u.executor_id)) {
        out.push(Command::UnbindCompleted {
            id: unbind.executor_id,
        });
    }
    for id in report.released.into_iter().filter(|id| ours(id)) {
        out.push(Command::ExecutorReleased { id });
    }
    out
}

/// The most encoded bytes of one CompleteTasks: a full task batch (4 × `max_payload` plus
/// 1 MiB), which the configuration guarantees fits one log entry (review R1: merged reports
/// could otherwise make an entry no message can carry).
pub fn completion_limit(max_payload: usize) -> usize {
    crate::member::limits::decoding_limit(
        max_payload.saturating_mul(crate::member::limits::BATCH_PAYLOAD_FACTOR),
    )
}

/// `results` in order, cut into runs of at most `limit` encoded bytes (a result alone is at
/// most one payload plus its fields, so it always fits).
fn by_size(results: Vec<TaskResult>, limit: usize) -> Vec<Vec<TaskResult>> {
    let mut runs: Vec<Vec<TaskResult>> = Vec::new();
    let mut bytes: usize = 0;
    for result in results {
        let size = encoded_len(&result);
        match runs.last_mut() {
            Some(run) if bytes.saturating_add(size) <= limit => {
                bytes += size;
                run.push(result);
            }
            _ => {
                bytes = size;
                runs.push(vec![result]);
            }
        }
    }
    runs
}

/// A bind outcome as the state machine records it: 0 is success, anything else a failure
/// with the agent's message (or one naming the code).
pub fn bind_result(bind: BindOutcome) -> BindResult {
    if bind.return_code == 0 {
        return BindResult::Ok;
    }
    let code = bind.return_code;
    BindResult::Failed {
        code,
        message: bind
            .message
            .unwrap_or_else(|| format!("bind failed with return code {code}")),
    }
}

/// A task outcome as the state machine records it; an output over `max_payload` bytes turns
/// the outcome into a failure whose message names the limit.
pub fn task_result(t: TaskOutcome, max_payload: usize) -> TaskResult {
    let size = t.output.as_ref().map_or(0, Vec::len);
    if size > max_payload {
        let error = FlameError::TooLarge {
            what: "task output".into(),
            size,
            limit: max_payload,
        };
        return TaskResult {
            executor_id: t.executor_id,
            session_id: t.session_id,
            task_id: t.task_id,
            return_code: OUTPUT_TOO_LARGE_CODE,
            output: None,
            message: Some(error.to_string()),
            duration_us: t.duration_us,
        };
    }
    TaskResult {
        executor_id: t.executor_id,
        session_id: t.session_id,
        task_id: t.task_id,
        return_code: t.return_code,
        output: t.output.map(Bytes::from),
        message: t.message,
        duration_us: t.duration_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateMachine;
    use flame_proto::agent::UnbindOutcome;
    use flame_proto::model::{Node, NodeState, ResourceRequirement, Shim};

    fn state_with_executor(node: &str, id: &str) -> StateMachine {
        let mut m = StateMachine::new(Default::default());
        m.apply(
            1,
            Command::RegisterNode {
                node: Node {
                    name: node.into(),
                    hostname: node.into(),
                    state: NodeState::Unknown,
                    capacity: ResourceRequirement::default(),
                    allocatable: ResourceRequirement::default(),
                    arch: String::new(),
                    os: String::new(),
                    addresses: Vec::new(),
                    last_heartbeat_ms: 0,
                    cache: None,
                },
                agent_id: "a".into(),
            },
        );
        let r = m.apply(
            1,
            Command::CreateExecutor {
                id: id.into(),
                node: node.into(),
                resreq: ResourceRequirement::default(),
                shim: Shim::Host,
            },
        );
        assert!(r.outcome.error().is_none(), "{r:?}");
        m
    }

    fn outcome(executor: &str, task: u64, output: &[u8]) -> TaskOutcome {
        TaskOutcome {
            executor_id: executor.into(),
            session_id: "s".into(),
            task_id: task,
            return_code: 0,
            output: Some(output.to_vec()),
            message: None,
            duration_us: 0,
        }
    }

    #[test]
    fn a_report_becomes_binds_then_one_complete_tasks_then_unbinds_then_releases() {
        let m = state_with_executor("n1", "e1");
        let report = Report {
            tasks: vec![outcome("e1", 1, b"a"), outcome("e1", 2, b"b")],
            binds: vec![BindOutcome {
                executor_id: "e1".into(),
                session_id: "s".into(),
                return_code: 12,
                message: Some("enter failed".into()),
            }],
            unbinds: vec![UnbindOutcome {
                executor_id: "e1".into(),
                session_id: "s".into(),
            }],
            released: vec!["e1".into()],
        };
        let out = commands(report, m.state(), "n1", 1024, DispatchPolicy::default());
        let kinds: Vec<&str> = out.iter().map(kind).collect();
        assert_eq!(
            kinds,
            [
                "BindCompleted",
                "CompleteTasks",
                "UnbindCompleted",
                "ExecutorReleased"
            ]
        );
        let Command::BindCompleted { result, .. } = &out[0] else {
            panic!("not a bind: {:?}", out[0]);
        };
        assert_eq!(
            result,
            &BindResult::Failed {
                code: 12,
                message: "enter failed".into()
            }
        );
        let Command::CompleteTasks { results, .. } = &out[1] else {
            panic!("not a completion: {:?}", out[1]);
        };
        assert_eq!(results.len(), 2);
    }

    #[test]
    fn outcomes_for_executors_of_other_nodes_are_dropped() {
        let m = state_with_executor("n1", "e1");
        let report = Report {
            tasks: vec![outcome("e1", 1, b"a"), outcome("elsewhere", 2, b"b")],
            released: vec!["elsewhere".into()],
            ..Report::default()
        };
        let out = commands(report, m.state(), "n1", 1024, DispatchPolicy::default());
        assert_eq!(out.len(), 1);
        assert!(
            commands(
                Report::default(),
                m.state(),
                "n1",
                1024,
                DispatchPolicy::default()
            )
            .is_empty()
        );
        let foreign = Report {
            released: vec!["e1".into()],
            ..Report::default()
        };
        assert!(commands(foreign, m.state(), "n2", 1024, DispatchPolicy::default()).is_empty());
    }

    #[test]
    fn sixty_four_merged_reports_of_four_mib_outputs_make_completions_within_the_limit() {
        let m = state_with_executor("n1", "e1");
        let max_payload = 4 << 20;
        let output = vec![7u8; max_payload];
        let report = Report {
            tasks: (1..=64).map(|task| outcome("e1", task, &output)).collect(),
            ..Report::default()
        };
        let out = commands(
            report,
            m.state(),
            "n1",
            max_payload,
            DispatchPolicy::default(),
        );
        let limit = completion_limit(max_payload);
        let mut tasks = Vec::new();
        for command in &out {
            let Command::CompleteTasks { results, .. } = command else {
                panic!("not a completion: {command:?}");
            };
            assert!(
                command.encoded_bytes() <= limit,
                "{} > {limit}",
                command.encoded_bytes()
            );
            tasks.extend(results.iter().map(|r| r.task_id));
        }
        assert_eq!(
            tasks,
            (1..=64).collect::<Vec<u64>>(),
            "every outcome once, in order"
        );
        assert!(out.len() >= 16, "{} commands", out.len());
    }

    #[test]
    fn an_output_over_the_limit_becomes_a_failure_naming_the_limit() {
        let r = task_result(outcome("e1", 1, &[0; 11]), 10);
        assert_eq!(r.return_code, OUTPUT_TOO_LARGE_CODE);
        assert_eq!(r.output, None);
        let message = r.message.unwrap_or_default();
        assert!(
            message.contains("task output") && message.contains("10"),
            "{message}"
        );
        let ok = task_result(outcome("e1", 1, &[0; 10]), 10);
        assert_eq!(ok.return_code, 0);
        assert_eq!(ok.output.map(|b| b.len()), Some(10));
    }

    #[test]
    fn a_failed_bind_without_a_message_names_its_code() {
        let bind = BindOutcome {
            executor_id: "e".into(),
            session_id: "s".into(),
            return_code: 11,
            message: None,
        };
        assert_eq!(
            bind_result(bind),
            BindResult::Failed {
                code: 11,
                message: "bind failed with return code 11".into()
            }
        );
    }
}
