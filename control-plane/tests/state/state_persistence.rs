//! Persistence of the state machine: what `FlameApp` writes in the apply transaction rebuilds,
//! through `restore`, exactly the state it holds in memory; also through raftlog's
//! `StateMachineStore` across a reopen and a snapshot install, with the published views; the
//! object-drop log (trimmed rows included) and the cluster CA likewise.

use crate::state_support;

use flame_control_plane::state::{
    Command, Effect, FlameApp, FlameTypeConfig, MAX_OBJECT_DROPS, Outcome, Proposal, StateConfig,
    StateMachine, TABLES,
};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use proptest::prelude::*;
use raftlog::{App, StateMachineStore, Storage};
use redb::backends::InMemoryBackend;
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use state_support::small_limits;
use state_support::strategy::commands;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 0), index)
}

fn memory_db() -> Database {
    let db = Database::builder()
        .create_with_backend(InMemoryBackend::new())
        .expect("in-memory redb");
    let txn = db.begin_write().expect("txn");
    for name in TABLES {
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
        txn.open_table(def).expect("table");
    }
    txn.commit().expect("commit");
    db
}

fn restored(db: &Database) -> flame_control_plane::state::State {
    let mut fresh = FlameApp::new();
    let txn = db.begin_read().expect("read");
    fresh.restore(&txn).expect("restore");
    fresh.state().clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn restore_rebuilds_the_applied_state(commands in commands(30)) {
        let db = memory_db();
        let mut app = FlameApp::new();
        let mut plain = StateMachine::new(small_limits());
        let all = std::iter::once((0, Command::EnsureBuiltins)).chain(commands);
        for (i, (now, command)) in all.enumerate() {
            let mut txn = db.begin_write().expect("txn");
            txn.set_durability(Durability::None).expect("durability");
            let proposal = Proposal {
                now_ms: now,
                policy: small_limits(),
                commands: vec![command.clone()],
            };
            let response = app.apply(&txn, &log_id(i as u64 + 1), proposal);
            txn.commit().expect("commit");
            prop_assert_eq!(response.expect("apply"), vec![plain.apply(now, command)]);
            if i % 8 == 0 {
                prop_assert_eq!(&restored(&db), app.state());
            }
        }
        prop_assert_eq!(&restored(&db), app.state());
        prop_assert_eq!(app.state(), plain.state());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Review R2: the retry limits an entry is applied under are its leader's, carried on the
    /// `Proposal`, never the applying member's own. Members configured with other limits (the
    /// machines made with the default and with large ones) answer every command of a random
    /// history exactly as the leader's limits dictate, and so does `FlameApp`, which has none.
    #[test]
    fn every_member_applies_an_entry_under_its_leaders_retry_limits(commands in commands(40)) {
        let leader = small_limits();
        let large = StateConfig {
            bind_retry_limit: 50,
            task_retry_limit: 50,
            max_open_sessions: 50,
            max_tasks_per_session: 50,
        };
        let mut by_leader = StateMachine::new(leader);
        let mut default_member = StateMachine::new(StateConfig::default());
        let mut large_member = StateMachine::new(large);
        let db = memory_db();
        let mut app = FlameApp::new();
        let all = std::iter::once((0, Command::EnsureBuiltins)).chain(commands);
        for (i, (now, command)) in all.enumerate() {
            let expected = by_leader.apply(now, command.clone());
            prop_assert_eq!(&default_member.apply_under(&leader, now, command.clone()), &expected);
            prop_assert_eq!(&large_member.apply_under(&leader, now, command.clone()), &expected);
            let txn = db.begin_write().expect("txn");
            let proposal = Proposal { now_ms: now, policy: leader, commands: vec![command] };
            let response = app.apply(&txn, &log_id(i as u64 + 1), proposal).expect("apply");
            txn.commit().expect("commit");
            prop_assert_eq!(response, vec![expected]);
        }
        prop_assert_eq!(app.state(), by_leader.state());
    }
}

fn entry(index: u64, (now_ms, command): (i64, Command)) -> Entry<FlameTypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Proposal::one(now_ms, command)),
    }
}

/// A small workload: built-ins, two sessions with tasks, one closed.
fn workload() -> Vec<(i64, Command)> {
    let mut out = vec![(1, Command::EnsureBuiltins)];
    out.extend([
        (
            10,
            Command::CreateSession {
                id: "a".into(),
                spec: state_support::spec("flmrun"),
            },
        ),
        (
            11,
            Command::CreateSession {
                id: "b".into(),
                spec: state_support::spec("flmping"),
            },
        ),
        (
            12,
            Command::CreateTasks {
                session_id: "a".into(),
                tasks: vec![flame_control_plane::state::NewTask {
                    input: Some(bytes::Bytes::from_static(b"x")),
                    request_id: Some("r".into()),
                }],
                dispatch: None,
            },
        ),
        (13, Command::CloseSession { id: "b".into() }),
    ]);
    out
}

#[tokio::test]
async fn state_machine_store_persists_publishes_and_installs_snapshots() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let storage = Storage::new(dir.path().join("m1"), "cluster-1");
    let app = FlameApp::new();
    let mut reader = app.reader();
    let mut sm = StateMachineStore::open(&storage, app)?;
    assert_eq!(reader.current().effects.as_ref(), [Effect::Restored]);

    let mut entries = vec![Entry {
        log_id: log_id(1),
        payload: EntryPayload::Blank,
    }];
    for (i, command) in workload().into_iter().enumerate() {
        entries.push(entry(i as u64 + 2, command));
    }
    let last = entries.len() as u64;
    let responses = sm.apply(entries).await?;
    assert!(
        responses[0].is_empty(),
        "a blank entry has no command responses"
    );
    assert!(matches!(&responses[5][0].outcome, Outcome::Session(Ok(s)) if s.id == "b"));

    let view = reader.changed().await.expect("a new view");
    assert_eq!(view.applied_index, last);
    assert_eq!(&view.state, sm.app().state());
    assert!(view.effects.contains(&Effect::SessionClosed {
        session_id: "b".into()
    }));
    assert_eq!(view.state.task("a", 1).map(|t| t.id.get()), Some(1));
    let expected = sm.app().state().clone();
    drop(sm);

    let reopened = StateMachineStore::open(&storage, FlameApp::new())?;
    assert_eq!(reopened.app().state(), &expected);
    let mut reopened = reopened;
    let snapshot = reopened
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await?;

    let other = Storage::new(dir.path().join("m2"), "cluster-1");
    let app = FlameApp::new();
    let mut other_reader = app.reader();
    let mut installed = StateMachineStore::open(&other, app)?;
    assert_eq!(installed.app().state().applications().count(), 0);
    other_reader.changed().await.expect("restored at open");
    installed
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await?;
    assert_eq!(installed.app().state(), &expected);
    let view = other_reader
        .changed()
        .await
        .expect("restored after install");
    assert_eq!(&view.state, &expected);
    assert_eq!(view.effects.as_ref(), [Effect::Restored]);
    Ok(())
}

/// The cache workload: two sessions closed, an application unregistered, and two CAs of which
/// the first wins.
fn cache_workload() -> Vec<(i64, Command)> {
    let ca = |n: u8| {
        (
            24,
            Command::SetClusterCa {
                cert_pem: format!(
                    "-----BEGIN CERTIFICATE-----\nCA{n}\n-----END CERTIFICATE-----\n"
                ),
                key_pem: format!("-----BEGIN PRIVATE KEY-----\nK{n}\n-----END PRIVATE KEY-----\n"),
            },
        )
    };
    let mut out = workload();
    out.extend([
        (
            20,
            Command::RegisterApplication {
                name: "app".into(),
                spec: flame_proto::model::ApplicationSpec::default(),
            },
        ),
        (
            21,
            Command::CreateSession {
                id: "c".into(),
                spec: state_support::spec("app"),
            },
        ),
        (22, Command::CloseSession { id: "c".into() }),
        (23, Command::UnregisterApplication { name: "app".into() }),
        ca(1),
        ca(2),
    ]);
    out
}

#[tokio::test]
async fn object_drops_and_the_cluster_ca_survive_reopen_and_snapshot_install() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let storage = Storage::new(dir.path().join("m1"), "cluster-1");
    let mut sm = StateMachineStore::open(&storage, FlameApp::new())?;
    let entries: Vec<_> = cache_workload()
        .into_iter()
        .enumerate()
        .map(|(i, command)| entry(i as u64 + 1, command))
        .collect();
    sm.apply(entries).await?;
    let prefixes: Vec<String> = sm
        .app()
        .state()
        .object_drops(0, 100)
        .drops
        .into_iter()
        .map(|d| format!("{}@{}", d.prefix, d.at_ms))
        .collect();
    assert_eq!(prefixes, ["flmping/b@13", "app/c@22", "app/*@23"]);
    let ca = sm.app().state().cluster_ca().cloned().expect("a CA");
    assert!(ca.cert_pem.contains("CA1"));
    let expected = sm.app().state().clone();
    drop(sm);

    let mut reopened = StateMachineStore::open(&storage, FlameApp::new())?;
    assert_eq!(reopened.app().state(), &expected);
    assert_eq!(reopened.app().state().object_drop_range(), (1, 3));
    assert_eq!(reopened.app().state().cluster_ca(), Some(&ca));
    let snapshot = reopened
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await?;

    let other = Storage::new(dir.path().join("m2"), "cluster-1");
    let mut installed = StateMachineStore::open(&other, FlameApp::new())?;
    assert!(installed.app().state().cluster_ca().is_none());
    installed
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await?;
    assert_eq!(installed.app().state(), &expected);
    assert_eq!(installed.app().state().cluster_ca(), Some(&ca));
    assert_eq!(installed.app().state().object_drops(0, 100).drops.len(), 3);
    Ok(())
}

#[test]
fn trimmed_object_drops_are_deleted_from_the_table() {
    let db = memory_db();
    let mut app = FlameApp::new();
    let mut commands = vec![Command::EnsureBuiltins];
    for _ in 0..MAX_OBJECT_DROPS + 2 {
        commands.push(Command::RegisterApplication {
            name: "app".into(),
            spec: flame_proto::model::ApplicationSpec::default(),
        });
        commands.push(Command::UnregisterApplication { name: "app".into() });
    }
    let txn = db.begin_write().expect("txn");
    app.apply(
        &txn,
        &log_id(1),
        Proposal {
            now_ms: 7,
            policy: StateConfig::default(),
            commands,
        },
    )
    .expect("apply");
    txn.commit().expect("commit");
    let back = restored(&db);
    assert_eq!(back.object_drop_range(), (3, MAX_OBJECT_DROPS as u64 + 2));
    assert_eq!(&back, app.state());
}
