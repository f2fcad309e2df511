//! The reconciler's decisions for one executor, without processes: which command a snapshot
//! produces, and which outcomes go out when.

use super::*;
use crate::agent::report::ReportBuffer;
use flame_proto::agent::Report;

const EXEC: &str = "exec-1";

fn application() -> v1::Application {
    v1::Application {
        metadata: Some(v1::Metadata {
            id: "flmping".into(),
            name: "flmping".into(),
        }),
        spec: Some(v1::ApplicationSpec {
            command: Some("${FLAME_HOME}/bin/flmping-service".into()),
            ..Default::default()
        }),
        status: None,
    }
}

fn assignment(action: ExecutorAction, session: Option<&str>, tasks: &[u64]) -> ExecutorAssignment {
    ExecutorAssignment {
        executor_id: EXEC.into(),
        action: action as i32,
        binding: session.map(|s| Binding {
            application: Some(application()),
            session_id: s.into(),
            common_data: None,
        }),
        tasks: tasks
            .iter()
            .map(|t| TaskAssignment {
                task_id: *t,
                session_id: session.unwrap_or_default().into(),
                input: None,
            })
            .collect(),
        ..Default::default()
    }
}

/// A slot, its worker's command receiver, a report buffer and a clock.
struct Harness {
    slot: Slot,
    rx: mpsc::UnboundedReceiver<Command>,
    out: ReportBuffer,
    now: Instant,
    generation: u64,
}

impl Harness {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Harness {
            slot: Slot::new(EXEC.into(), 1, tx),
            rx,
            out: ReportBuffer::default(),
            now: Instant::now(),
            generation: 1,
        }
    }

    fn reconcile(&mut self, a: &ExecutorAssignment) -> Option<Command> {
        let mut cx = Cx {
            generation: self.generation,
            now: self.now,
            out: &mut self.out,
        };
        self.slot.reconcile(a, &mut cx);
        self.rx.try_recv().ok()
    }

    /// Delivers a worker event for the last command, then reconciles against `a`.
    fn answer(
        &mut self,
        holds: Option<&str>,
        kind: EventKind,
        a: &ExecutorAssignment,
    ) -> Option<Command> {
        let mut cx = Cx {
            generation: self.generation,
            now: self.now,
            out: &mut self.out,
        };
        let event = Event {
            executor_id: EXEC.into(),
            worker: 1,
            seq: self.slot.seq,
            holds: holds.map(str::to_owned),
            kind,
        };
        assert!(self.slot.on_event(event, &mut cx));
        self.reconcile(a)
    }

    fn report(&mut self) -> Report {
        self.out.take().unwrap_or_default()
    }
}

fn done(task_id: u64) -> EventKind {
    EventKind::TaskDone {
        session_id: "s1".into(),
        task_id,
        outcome: RunOutcome {
            return_code: 0,
            output: None,
            message: None,
        },
        duration_us: 50,
    }
}

#[test]
fn bind_then_tasks_run_once_each_even_when_snapshots_repeat() {
    let mut h = Harness::new();
    let bind = assignment(ExecutorAction::Bind, Some("s1"), &[]);
    assert!(matches!(
        h.reconcile(&bind),
        Some(Command::Bind { report: true, .. })
    ));
    assert!(
        h.reconcile(&bind).is_none(),
        "a resent BIND while binding does nothing"
    );
    let ok = EventKind::Bound {
        session_id: "s1".into(),
        result: Ok(()),
        report: true,
    };
    assert!(h.answer(Some("s1"), ok, &bind).is_none());
    let report = h.report();
    assert_eq!(report.binds.len(), 1);
    assert_eq!(report.binds[0].return_code, 0);
    assert!(h.reconcile(&bind).is_none() && h.report().binds.is_empty());

    let run1 = assignment(ExecutorAction::Run, Some("s1"), &[1]);
    assert!(matches!(
        h.reconcile(&run1),
        Some(Command::Run { task_id: 1, .. })
    ));
    assert!(
        h.answer(Some("s1"), done(1), &run1).is_none(),
        "task 1 is not run again"
    );
    assert_eq!(h.report().tasks.len(), 1);
    assert!(h.reconcile(&run1).is_none());
    assert!(h.report().tasks.is_empty(), "sent once per stream");

    h.generation = 2;
    assert!(h.reconcile(&run1).is_none());
    assert_eq!(h.report().tasks.len(), 1, "resent on a new stream");

    let run2 = assignment(ExecutorAction::Run, Some("s1"), &[2]);
    assert!(matches!(
        h.reconcile(&run2),
        Some(Command::Run { task_id: 2, .. })
    ));
    assert_eq!(h.slot.held().and_then(|e| e.running_task_id), Some(2));
}

#[test]
fn failed_binds_back_off_and_are_reported_with_their_code() {
    let mut h = Harness::new();
    let bind = assignment(ExecutorAction::Bind, Some("s1"), &[]);
    assert!(h.reconcile(&bind).is_some());
    let failed = EventKind::Bound {
        session_id: "s1".into(),
        result: Err(BindError::shim("command not found")),
        report: true,
    };
    assert!(
        h.answer(None, failed, &bind).is_none(),
        "no immediate retry"
    );
    let report = h.report();
    assert_eq!(report.binds.first().map(|b| b.return_code), Some(11));
    assert!(h.reconcile(&bind).is_none());
    h.now += BIND_BACKOFF_CAP;
    assert!(
        matches!(h.reconcile(&bind), Some(Command::Bind { .. })),
        "retried after backoff"
    );
}

#[test]
fn release_interrupts_a_running_task_and_is_reported_once() {
    let mut h = Harness::new();
    let run = assignment(ExecutorAction::Run, Some("s1"), &[1]);
    // No instance yet: a RUN relaunches without reporting a bind.
    assert!(matches!(
        h.reconcile(&run),
        Some(Command::Bind { report: false, .. })
    ));
    let ok = EventKind::Bound {
        session_id: "s1".into(),
        result: Ok(()),
        report: false,
    };
    assert!(matches!(
        h.answer(Some("s1"), ok, &run),
        Some(Command::Run { .. })
    ));
    assert!(h.report().binds.is_empty());
    let release = assignment(ExecutorAction::Release, None, &[]);
    assert!(matches!(
        h.reconcile(&release),
        Some(Command::Release { .. })
    ));
    // The interrupted task's event, then the release's.
    let mut cx = Cx {
        generation: 1,
        now: h.now,
        out: &mut h.out,
    };
    let interrupted = Event {
        executor_id: EXEC.into(),
        worker: 1,
        seq: h.slot.seq - 1,
        holds: None,
        kind: EventKind::Interrupted,
    };
    h.slot.on_event(interrupted, &mut cx);
    assert_eq!(h.slot.work, Work::Releasing);
    assert!(h.answer(None, EventKind::Released, &release).is_none());
    assert_eq!(h.report().released, vec![EXEC.to_owned()]);
    assert!(h.reconcile(&release).is_none() && h.out.is_empty());
    assert!(h.slot.ended() && h.slot.held().is_none());
}

#[test]
fn unbind_without_an_instance_is_reported_at_once() {
    let mut h = Harness::new();
    let unbind = assignment(ExecutorAction::Unbind, Some("s1"), &[]);
    assert!(h.reconcile(&unbind).is_none());
    let report = h.report();
    assert_eq!(
        report.unbinds.first().map(|u| u.session_id.as_str()),
        Some("s1")
    );
    assert!(h.reconcile(&unbind).is_none() && h.out.is_empty());
}

#[test]
fn a_failed_relaunch_fails_the_next_task_with_the_bind_message() {
    let mut h = Harness::new();
    let run = assignment(ExecutorAction::Run, Some("s1"), &[1, 2]);
    assert!(matches!(
        h.reconcile(&run),
        Some(Command::Bind { report: false, .. })
    ));
    let failed = EventKind::Bound {
        session_id: "s1".into(),
        result: Err(BindError::shim("boom")),
        report: false,
    };
    assert!(h.answer(None, failed, &run).is_none(), "backing off");
    let report = h.report();
    assert_eq!(report.tasks.len(), 1);
    assert_eq!(report.tasks[0].task_id, 1);
    assert_eq!(
        report.tasks[0].message.as_deref(),
        Some("shim creation failed: boom")
    );
    assert!(report.binds.is_empty());
}

/// `assignment` with the application's labels set to `labels`.
fn labelled(action: ExecutorAction, labels: &[&str]) -> ExecutorAssignment {
    let mut a = assignment(action, Some("s1"), &[]);
    if let Some(spec) = a
        .binding
        .as_mut()
        .and_then(|b| b.application.as_mut())
        .and_then(|app| app.spec.as_mut())
    {
        spec.labels = labels.iter().map(|l| (*l).to_owned()).collect();
    }
    a
}

#[test]
fn a_bind_carries_the_task_timeout_label_to_the_worker() {
    let mut h = Harness::new();
    let bind = labelled(
        ExecutorAction::Bind,
        &["team=a", "flame.task-timeout=300ms"],
    );
    let Some(Command::Bind { launch, .. }) = h.reconcile(&bind) else {
        panic!("expected a bind");
    };
    assert_eq!(
        launch.task_timeout,
        task_timeout::LabelTimeout::After(Duration::from_millis(300))
    );
}

#[test]
fn a_malformed_task_timeout_label_fails_the_bind_naming_label_and_value() {
    let mut h = Harness::new();
    let bind = labelled(ExecutorAction::Bind, &["flame.task-timeout=soon"]);
    assert!(h.reconcile(&bind).is_none(), "nothing is launched");
    let report = h.report();
    let outcome = report.binds.first().cloned().unwrap_or_default();
    assert_eq!(outcome.return_code, 19);
    let message = outcome.message.unwrap_or_default();
    assert!(
        message.starts_with("invalid label flame.task-timeout=soon: "),
        "{message}"
    );
}
