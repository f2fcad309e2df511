//! Scenario tests of what the state machine keeps for the object cache: the object-drop log
//! (appended when a session closes or an application is unregistered, sequenced, bounded), the
//! cluster CA (the first SetClusterCa wins) and nodes' cache endpoints (replaced by every
//! registration). Persistence of the log and the CA is in `state_persistence`.

use crate::state_support;

use flame_control_plane::state::{Command, MAX_OBJECT_DROPS, Outcome, StateMachine};
use flame_proto::error::FlameError;
use flame_proto::model::{ApplicationSpec, CacheEndpoint, Node, ObjectDrop};
use state_support::*;

fn close(m: &mut StateMachine, id: &str, now_ms: i64) -> Outcome {
    m.apply(now_ms, Command::CloseSession { id: id.into() })
        .outcome
}

fn register_app(m: &mut StateMachine, name: &str) {
    let r = m.apply(
        3,
        Command::RegisterApplication {
            name: name.into(),
            spec: ApplicationSpec::default(),
        },
    );
    assert!(matches!(r.outcome, Outcome::Application(Ok(_))), "{r:?}");
}

fn unregister(m: &mut StateMachine, name: &str, now_ms: i64) -> Outcome {
    m.apply(now_ms, Command::UnregisterApplication { name: name.into() })
        .outcome
}

fn all_drops(m: &StateMachine) -> Vec<ObjectDrop> {
    m.state().object_drops(0, usize::MAX).drops
}

fn drop_of(seq: u64, prefix: &str, at_ms: i64) -> ObjectDrop {
    ObjectDrop {
        seq,
        prefix: prefix.into(),
        at_ms,
    }
}

fn ca(n: u8) -> Command {
    Command::SetClusterCa {
        cert_pem: format!("-----BEGIN CERTIFICATE-----\nCA{n}\n-----END CERTIFICATE-----\n"),
        key_pem: format!("-----BEGIN PRIVATE KEY-----\nK{n}\n-----END PRIVATE KEY-----\n"),
    }
}

#[test]
fn closing_an_open_session_appends_its_prefix_once() {
    let mut m = machine();
    create_session(&mut m, "s1", "flmrun");
    assert!(all_drops(&m).is_empty());
    assert!(matches!(close(&mut m, "s1", 60), Outcome::Session(Ok(_))));
    assert_eq!(all_drops(&m), [drop_of(1, "flmrun/s1", 60)]);
    assert!(m.dirty().object_drops.contains(&1));

    assert!(matches!(close(&mut m, "s1", 70), Outcome::Session(Ok(_))));
    assert_eq!(all_drops(&m), [drop_of(1, "flmrun/s1", 60)]);
    assert!(m.dirty().is_empty(), "a re-close changes nothing");
}

#[test]
fn a_refused_close_appends_nothing() {
    let mut m = machine();
    create_session(&mut m, "s1", "flmrun");
    create_tasks(&mut m, "s1", 1);
    bound_executor(&mut m, "e1", "n1", "s1");
    assign(&mut m, "e1", "s1", 1).expect("assigned");
    let refused = close(&mut m, "s1", 60);
    assert!(matches!(
        refused,
        Outcome::Session(Err(FlameError::Internal(_)))
    ));
    assert!(all_drops(&m).is_empty());
    assert!(matches!(
        close(&mut m, "unknown", 60),
        Outcome::Session(Err(FlameError::NotFound(_)))
    ));
    assert!(all_drops(&m).is_empty());
}

#[test]
fn unregistering_an_application_appends_its_wildcard() {
    let mut m = machine();
    register_app(&mut m, "app");
    create_session(&mut m, "s1", "app");
    let refused = unregister(&mut m, "app", 80);
    assert!(matches!(
        refused,
        Outcome::Done(Err(FlameError::InvalidState(_)))
    ));
    assert!(
        all_drops(&m).is_empty(),
        "a refused unregister drops nothing"
    );
    close(&mut m, "s1", 90);
    assert_eq!(unregister(&mut m, "app", 100), Outcome::Done(Ok(())));
    assert_eq!(
        all_drops(&m),
        [drop_of(1, "app/s1", 90), drop_of(2, "app/*", 100)]
    );
    assert!(matches!(
        unregister(&mut m, "app", 110),
        Outcome::Done(Err(FlameError::NotFound(_)))
    ));
    assert_eq!(all_drops(&m).len(), 2);
}

#[test]
fn seqs_are_consecutive_and_pages_are_bounded() {
    let mut m = machine();
    for i in 0..5 {
        let id = format!("s{i}");
        create_session(&mut m, &id, "flmping");
        close(&mut m, &id, 100 + i);
    }
    let seqs: Vec<u64> = all_drops(&m).iter().map(|d| d.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let page = m.state().object_drops(0, 2);
    assert_eq!((page.first_seq, page.last_seq), (1, 5));
    assert_eq!(
        page.drops,
        [drop_of(1, "flmping/s0", 100), drop_of(2, "flmping/s1", 101)]
    );
    let rest = m.state().object_drops(3, 10);
    assert_eq!(rest.drops.iter().map(|d| d.seq).collect::<Vec<_>>(), [4, 5]);
    assert!(m.state().object_drops(5, 10).drops.is_empty());
    assert!(m.state().object_drops(u64::MAX, 10).drops.is_empty());
    assert!(m.state().object_drops(0, 0).drops.is_empty());
    let empty = machine().state().object_drops(0, 10);
    assert_eq!(
        (empty.first_seq, empty.last_seq, empty.drops.len()),
        (0, 0, 0)
    );
}

#[test]
fn the_log_keeps_only_the_newest_max_object_drops() {
    let mut m = machine();
    let total = MAX_OBJECT_DROPS as u64 + 3;
    for i in 0..total {
        register_app(&mut m, "app");
        assert_eq!(unregister(&mut m, "app", i as i64), Outcome::Done(Ok(())));
    }
    let (first, last) = m.state().object_drop_range();
    assert_eq!((first, last), (4, total));
    assert!(
        m.dirty().object_drops.contains(&3),
        "the trimmed drop is deleted in the same apply"
    );
    let page = m.state().object_drops(0, 2);
    assert_eq!(
        page.drops,
        [drop_of(4, "app/*", 3), drop_of(5, "app/*", 4)],
        "a reader that is behind gets the oldest retained drops and can see the gap"
    );
    assert_eq!(all_drops(&m).len(), MAX_OBJECT_DROPS);
}

#[test]
fn the_first_cluster_ca_wins() {
    let mut m = machine();
    assert!(m.state().cluster_ca().is_none());
    assert_eq!(m.apply(0, ca(1)).outcome, Outcome::ClusterCa(Ok(true)));
    assert!(m.dirty().cluster_ca);
    let stored = m.state().cluster_ca().cloned().expect("a CA");
    assert!(stored.cert_pem.contains("CA1") && stored.key_pem.contains("K1"));

    let second = m.apply(0, ca(2));
    assert_eq!(second.outcome, Outcome::ClusterCa(Ok(false)));
    assert!(second.effects.is_empty() && m.dirty().is_empty());
    assert_eq!(m.state().cluster_ca(), Some(&stored));
    assert!(!format!("{stored:?}").contains("K1"), "Debug hides the key");
}

#[test]
fn a_malformed_cluster_ca_is_refused() {
    let mut m = machine();
    let r = m.apply(
        0,
        Command::SetClusterCa {
            cert_pem: String::new(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n".into(),
        },
    );
    assert!(matches!(
        r.outcome,
        Outcome::ClusterCa(Err(FlameError::InvalidArgument(_)))
    ));
    assert!(m.state().cluster_ca().is_none());
    assert_eq!(m.apply(0, ca(1)).outcome, Outcome::ClusterCa(Ok(true)));
}

#[test]
fn a_re_registration_replaces_the_cache_with_the_node_description() {
    let mut m = machine();
    let mut described = node("n1");
    described.cache = Some(CacheEndpoint {
        flight_endpoint: "grpc://10.0.0.5:9090".into(),
        peer_addr: "10.0.0.5:9091".into(),
    });
    let register = |node: Node| Command::RegisterNode {
        node,
        agent_id: "a1".into(),
    };
    m.apply(5, register(described.clone()));
    assert_eq!(
        m.state().node("n1").and_then(|n| n.cache.clone()),
        described.cache
    );
    let r = m.apply(5, register(node("n1")));
    assert!(
        matches!(&r.outcome, Outcome::Node(Ok(n)) if n.cache.is_none()),
        "{r:?}"
    );
    assert!(
        m.state().node("n1").is_some_and(|n| n.cache.is_none()),
        "an agent restarted without a cache clears it"
    );
}
