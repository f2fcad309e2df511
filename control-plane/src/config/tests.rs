//! Tests of configuration loading and precedence.

use super::*;
use std::collections::HashMap;

fn write(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("write config");
    file
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn upstream_cluster_keys_and_the_raft_section_are_read() {
    let file = write(
        "cluster:\n  name: prod\n  endpoint: http://10.0.0.1:8080\n  resreq: cpu=2,mem=2g\n  \
         policies: [priority]\n  schedule_interval: 250\n  storage: sqlite://flame.db\n  \
         limits:\n    max_sessions: 10\n  recovery:\n    session:\n      retry_limits: 7\n\
         cache:\n  endpoint: grpc://127.0.0.1:9090\n  network_interface: eth0\n\
         raft:\n  id: 2\n  members:\n    - {id: 1, raft_addr: 'a:1', api_addr: 'a:2'}\n    \
         - {id: 2, raft_addr: 'b:1', api_addr: 'b:2'}\n",
    );
    let c = Config::load(Some(file.path()), no_env, &Overrides::default()).expect("valid");
    assert_eq!(c.cluster.name, "prod");
    assert_eq!(c.cluster_id(), "prod");
    assert_eq!(c.cluster.schedule_interval, 250);
    assert_eq!(c.cluster.limits.max_sessions, Some(10));
    assert_eq!(c.cluster.recovery.session.retry_limits, 7);
    assert_eq!(c.cluster.recovery.task.retry_limits, 3);
    assert_eq!(c.default_resreq().cpu, 2);
    assert_eq!(c.cache.endpoint.as_deref(), Some("grpc://127.0.0.1:9090"));
    assert_eq!(c.raft.members.len(), 2);
    assert_eq!(
        c.raft.heartbeat_ms,
        crate::raft::TransportConfig::default().heartbeat_ms
    );
}

#[test]
fn flags_beat_the_file_which_beats_the_environment() {
    let file = write("raft:\n  id: 2\n  data_dir: /from/file\n");
    let env: HashMap<&str, &str> = HashMap::from([
        ("FLAME_RAFT_ID", "3"),
        ("FLAME_DATA_DIR", "/from/env"),
        ("FLAME_CLUSTER_NAME", "envname"),
    ]);
    let lookup = |k: &str| env.get(k).map(|v| v.to_string());
    let c = Config::load(Some(file.path()), lookup, &Overrides::default()).expect("valid");
    assert_eq!(c.raft.id, 2, "file beats env");
    assert_eq!(c.raft.data_dir, PathBuf::from("/from/file"));
    assert_eq!(c.cluster.name, "envname", "env beats defaults");
    let flags = Overrides {
        id: Some(9),
        members: Some("9=x:1/x:2".into()),
        ..Overrides::default()
    };
    let c = Config::load(Some(file.path()), lookup, &flags).expect("valid");
    assert_eq!(c.raft.id, 9, "flags beat the file");
}

#[test]
fn an_unknown_key_is_named_in_the_error() {
    let file = write("cluster:\n  name: x\n  shedule_interval: 5\n");
    let err = Config::load(Some(file.path()), no_env, &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("shedule_interval"), "{err}");
}

#[test]
fn a_mistyped_value_is_named_in_the_error() {
    let file = write("raft:\n  heartbeat_ms: fast\n");
    let err = Config::load(Some(file.path()), no_env, &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("heartbeat_ms"), "{err}");
}

#[test]
fn a_negative_reclaim_grace_is_named_in_the_error() {
    let file = write("cluster:\n  reclaim_grace_ms: -5\n");
    let err = Config::load(Some(file.path()), no_env, &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("reclaim_grace_ms"), "{err}");
}

#[test]
fn a_negative_rotation_wait_is_named_in_the_error() {
    let file = write("cluster:\n  rotation_wait_ms: -1\n");
    let err = Config::load(Some(file.path()), no_env, &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("rotation_wait_ms"), "{err}");
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        ("cluster:\n  policies: [fairshare]\n", "cluster.policies"),
        ("cluster:\n  resreq: cpu=lots\n", "cluster.resreq"),
        ("raft:\n  id: 0\n", "raft.id"),
        (
            "cluster:\n  reclaim_grace_ms: 3600000\n",
            "cluster.reclaim_grace_ms",
        ),
        (
            "cluster:\n  rotation_wait_ms: 86400000\n",
            "cluster.rotation_wait_ms",
        ),
        ("raft:\n  heartbeat_ms: 500\n", "raft.heartbeat_ms"),
        ("raft:\n  snapshot_every: 0\n", "raft.snapshot_every"),
        // 4 × the 4 MiB payload limit + 1 MiB does not fit 16 MiB messages (R1).
        (
            "raft:\n  max_message_bytes: 16777216\n",
            "raft.max_message_bytes",
        ),
        (
            "cluster:\n  limits:\n    max_payload_bytes: 16777216\n",
            "raft.max_message_bytes",
        ),
        (
            "raft:\n  keep_after_snapshot: 0\n",
            "raft.keep_after_snapshot",
        ),
        (
            "raft:\n  id: 5\n  members: [{id: 1, raft_addr: a, api_addr: b}]\n",
            "raft.members",
        ),
    ];
    for (text, key) in cases {
        let file = write(text);
        let err = Config::load(Some(file.path()), no_env, &Overrides::default()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key: k, .. } if k == key),
            "{text:?} gave {err}"
        );
    }
}

#[test]
fn a_bad_members_flag_or_variable_is_explained() {
    let flags = Overrides {
        members: Some("1=onlyone".into()),
        ..Overrides::default()
    };
    let err = Config::load(None, no_env, &flags).unwrap_err();
    assert!(err.to_string().contains("ID=RAFT_ADDR/API_ADDR"), "{err}");
    let env = |k: &str| (k == "FLAME_RAFT_MEMBERS").then(|| "x=a/b".to_string());
    let err = Config::load(None, env, &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("FLAME_RAFT_MEMBERS"), "{err}");
}

#[test]
fn a_missing_file_names_its_path() {
    let err = Config::load(
        Some(Path::new("/no/such/flame.yaml")),
        no_env,
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/no/such/flame.yaml"), "{err}");
}
