//! Scenario tests of `scheduler::explain`, the reason `flmctl view -s` shows for a session
//! that waits for executors: binding, no capacity, below its share, and the rarer fits no
//! node, retry limit and scheduling; and no reason for a session that does not wait.

use crate::scheduler_support;

use flame_control_plane::scheduler::{WaitReason, explain};
use flame_proto::model::Shim;
use scheduler_support::{Opts, World, res};

/// `session`'s reason in `w`, if it waits.
fn why(w: &World, session: &str) -> Option<WaitReason> {
    explain(w.m.state(), &w.config, session).map(|(reason, _, _)| reason)
}

/// A 2-cpu node whose two executors are bound to session `big` (priority `big_priority`),
/// both running a task, and session `small` (priority 0) with 3 Pending tasks.
fn full(big_priority: u32) -> World {
    let mut w = World::default_config();
    w.node("n1", res(2, 16, 0));
    w.app("app", Shim::Host, 100, 60);
    let big = Opts {
        priority: big_priority,
        ..Opts::default()
    };
    w.session("big", "app", big);
    w.bound("e1", "n1", "big");
    w.bound("e2", "n1", "big");
    w.tasks("big", 2);
    w.assign("e1", "big", 1);
    w.assign("e2", "big", 2);
    w.session("small", "app", Opts::default());
    w.tasks("small", 3);
    w
}

#[test]
fn a_session_with_no_pending_work_or_every_executor_it_wants_is_not_waiting() {
    let mut w = full(0);
    assert_eq!(why(&w, "big"), None, "both its tasks run on its executors");
    w.session("idle", "app", Opts::default());
    assert_eq!(why(&w, "idle"), None, "no tasks");
    assert_eq!(why(&w, "missing"), None);
}

#[test]
fn a_session_below_the_share_of_an_equal_priority_session_says_so() {
    let w = full(0);
    let reason = why(&w, "small").expect("small waits");
    assert_eq!(
        reason,
        WaitReason::BelowShare {
            holds: 0,
            holder: "big".into(),
            holder_holds: 2,
            rotation: true,
        }
    );
    assert_eq!(
        reason.to_string(),
        "below its share: it holds 0 executor(s) while session big of equal or lower priority \
         holds 2; one comes to it when idle, or at a task boundary after \
         cluster.rotation_wait_ms"
    );
    let (_, holds, wants) = explain(w.m.state(), &w.config, "small").expect("waits");
    assert_eq!((holds, wants), (0, 3));
}

#[test]
fn a_session_behind_higher_priority_sessions_has_no_capacity() {
    let w = full(5);
    let reason = why(&w, "small").expect("small waits");
    assert!(
        matches!(reason, WaitReason::NoCapacity { .. }),
        "{reason:?}"
    );
    assert!(
        reason
            .to_string()
            .starts_with("no capacity: no room for cpu=1"),
        "{reason}"
    );
}

#[test]
fn a_session_with_room_is_scheduling_then_binding() {
    let mut w = World::default_config();
    w.node("n1", res(2, 16, 0));
    w.app("app", Shim::Host, 100, 60);
    w.session("s", "app", Opts::default());
    w.tasks("s", 1);
    assert_eq!(why(&w, "s"), Some(WaitReason::Scheduling));
    w.step(); // creates an executor and binds it: Binding until its agent reports
    assert_eq!(why(&w, "s"), Some(WaitReason::Binding { starting: 1 }));
    w.agents(&|_| false);
    assert_eq!(why(&w, "s"), None, "bound, with its task on the way");
}

#[test]
fn a_session_larger_than_every_node_fits_no_node() {
    let mut w = World::default_config();
    w.node("n1", res(2, 16, 0));
    w.app("app", Shim::Host, 100, 60);
    let huge = Opts {
        resreq: res(64, 1, 0),
        ..Opts::default()
    };
    w.session("huge", "app", huge);
    w.tasks("huge", 1);
    let reason = why(&w, "huge").expect("waits");
    assert!(
        matches!(reason, WaitReason::FitsNoNode { .. }),
        "{reason:?}"
    );
}

#[test]
fn a_session_whose_binds_keep_failing_stops_at_the_retry_limit() {
    let mut w = World::default_config();
    w.node("n1", res(2, 16, 0));
    w.app("app", Shim::Host, 100, 60);
    w.session("bad", "app", Opts::default());
    w.tasks("bad", 1);
    let limit = w.config.bind_retry_limit;
    // Bounded: each round fails one bind.
    for _ in 0..limit * 4 {
        if matches!(why(&w, "bad"), Some(WaitReason::RetryLimit { .. })) {
            break;
        }
        w.step();
        w.agents(&|s| s == "bad");
    }
    assert_eq!(
        why(&w, "bad"),
        Some(WaitReason::RetryLimit { failures: limit })
    );
}
