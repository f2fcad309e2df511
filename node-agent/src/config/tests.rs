//! Precedence, defaults and error messages of [`AgentConfig::load`].

use super::*;
use std::collections::HashMap;

/// An environment lookup over `vars`.
fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

/// Overrides with one endpoint and a fixed home, so nothing depends on the test binary.
fn minimal() -> Overrides {
    Overrides {
        endpoints: vec!["127.0.0.1:8080".into()],
        flame_home: Some("/opt/flame".into()),
        ..Overrides::default()
    }
}

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, text).unwrap_or_default();
    path
}

#[test]
fn defaults_are_detected_and_derived() -> Result<(), ConfigError> {
    let c = AgentConfig::load(None, env(&[("CUDA_VISIBLE_DEVICES", "0,1")]), &minimal())?;
    assert_eq!(c.endpoints, vec!["http://127.0.0.1:8080".to_owned()]);
    assert_eq!(c.flame_endpoint, None, "instances get the member relay");
    assert_eq!(Some(c.node_name.clone()), hostname());
    assert_eq!(c.capacity.cpu, cpu_count());
    assert_eq!(Some(c.capacity.memory), total_memory());
    assert_eq!(c.capacity.gpu, 2);
    assert!(c.work_dir.is_absolute());
    assert_eq!(c.socket_dir, c.work_dir.join("sockets"));
    assert_eq!(c.max_task_output_bytes, 4 << 20);
    assert_eq!(c.report_flush_interval, DEFAULT_REPORT_FLUSH);
    assert_eq!(c.startup_timeout, DEFAULT_STARTUP_TIMEOUT);
    Ok(())
}

#[test]
fn flags_beat_the_file_which_beats_the_environment() -> Result<(), ConfigError> {
    let dir = tempfile::tempdir().map_err(|source| ConfigError::Read {
        path: "tmp".into(),
        source,
    })?;
    let file = write(
        &dir,
        "node_name: from-file\nendpoints: [a:1, 'http://b:2']\ncapacity: {cpu: 3, memory: 2g}\n\
         max_task_output_bytes: 1m\nreport_flush_ms: 5\n",
    );
    let vars = env(&[
        ("FLAME_NODE_NAME", "from-env"),
        ("FLAME_NODE_GPU", "4"),
        ("FLAME_NODE_CPU", "9"),
        ("FLAME_AGENT_ENDPOINTS", "c:3,d:4"),
        ("FLAME_SOCKET_DIR", "/run/flame"),
    ]);
    let flags = Overrides {
        cpu: Some(7),
        flame_home: Some("/opt/flame".into()),
        ..Overrides::default()
    };
    let c = AgentConfig::load(Some(&file), vars, &flags)?;
    assert_eq!(c.node_name, "from-file");
    assert_eq!(
        c.endpoints,
        vec!["http://a:1".to_owned(), "http://b:2".into()]
    );
    assert_eq!(
        (c.capacity.cpu, c.capacity.memory, c.capacity.gpu),
        (7, 2 << 30, 4)
    );
    assert_eq!(c.socket_dir, PathBuf::from("/run/flame"));
    assert_eq!(c.max_task_output_bytes, 1 << 20);
    assert_eq!(c.report_flush_interval, Duration::from_millis(5));
    Ok(())
}

#[test]
fn errors_name_the_key_flag_and_variable() {
    let no_endpoints = AgentConfig::load(None, env(&[]), &Overrides::default());
    let text = no_endpoints
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains("`endpoints` (--endpoint, FLAME_AGENT_ENDPOINTS)"),
        "{text}"
    );

    let long = Overrides {
        socket_dir: Some(PathBuf::from(format!("/{}", "s".repeat(80)))),
        ..minimal()
    };
    let text = AgentConfig::load(None, env(&[]), &long)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains("`socket_dir`") && text.contains("100-byte"),
        "{text}"
    );

    let bad_env = AgentConfig::load(None, env(&[("FLAME_NODE_CPU", "many")]), &minimal());
    let text = bad_env.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("FLAME_NODE_CPU"), "{text}");

    let bad_memory = Overrides {
        memory: Some("1.5g".into()),
        ..minimal()
    };
    let text = AgentConfig::load(None, env(&[]), &bad_memory)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(text.contains("`capacity.memory` (--memory"), "{text}");
}

#[test]
fn file_errors_name_the_key() -> Result<(), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let unknown = write(&dir, "node_nmae: x\n");
    let text = AgentConfig::load(Some(&unknown), env(&[]), &minimal())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(text.contains("node_nmae"), "{text}");
    let typed = write(&dir, "capacity:\n  cpu: lots\n");
    let text = AgentConfig::load(Some(&typed), env(&[]), &minimal())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(text.contains("key `capacity.cpu`"), "{text}");
    Ok(())
}

#[test]
fn endpoints_are_normalized_and_checked() {
    assert_eq!(normalize_endpoint("h:1/").as_deref(), Ok("http://h:1"));
    assert_eq!(
        normalize_endpoint("https://h:1").as_deref(),
        Ok("https://h:1")
    );
    assert!(normalize_endpoint(" ").is_err());
    assert!(normalize_endpoint("http://").is_err());
}

#[test]
fn an_overlong_default_socket_dir_falls_back_to_a_short_one() {
    let deep = PathBuf::from(format!("/{}", "w".repeat(90)));
    let dir = default_socket_dir(&deep);
    assert!(
        dir.as_os_str().len() <= MAX_SOCKET_DIR_BYTES,
        "{}",
        dir.display()
    );
    assert_eq!(dir, default_socket_dir(&deep), "the fallback is stable");
}

#[test]
fn the_task_timeout_defaults_to_none_and_layers_like_other_keys() -> Result<(), ConfigError> {
    let c = AgentConfig::load(None, env(&[]), &minimal())?;
    assert_eq!(c.task_timeout, None);
    let from_env = AgentConfig::load(None, env(&[("FLAME_TASK_TIMEOUT", "2m")]), &minimal())?;
    assert_eq!(from_env.task_timeout, Some(Duration::from_secs(120)));
    let dir = tempfile::tempdir().map_err(|source| ConfigError::Read {
        path: "tmp".into(),
        source,
    })?;
    let file = write(&dir, "task_timeout: 30s\n");
    let from_file = AgentConfig::load(
        Some(&file),
        env(&[("FLAME_TASK_TIMEOUT", "2m")]),
        &minimal(),
    )?;
    assert_eq!(from_file.task_timeout, Some(Duration::from_secs(30)));
    let flags = Overrides {
        task_timeout: Some("500ms".into()),
        ..minimal()
    };
    let from_flag = AgentConfig::load(Some(&file), env(&[]), &flags)?;
    assert_eq!(from_flag.task_timeout, Some(Duration::from_millis(500)));
    let off = Overrides {
        task_timeout: Some("none".into()),
        ..minimal()
    };
    let none = AgentConfig::load(Some(&file), env(&[]), &off)?;
    assert_eq!(none.task_timeout, None);
    Ok(())
}

#[test]
fn a_malformed_task_timeout_names_the_key_flag_and_variable() {
    let bad = AgentConfig::load(None, env(&[("FLAME_TASK_TIMEOUT", "soon")]), &minimal());
    let text = bad.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("`task_timeout` (--task-timeout, FLAME_TASK_TIMEOUT)")
            && text.contains("\"soon\""),
        "{text}"
    );
}

#[test]
fn the_sidecar_cache_flags_set_the_node_cache_and_the_instances_endpoint() -> Result<(), ConfigError>
{
    let flags = Overrides {
        cache_flight_endpoint: Some("grpc://10.0.0.5:9090".into()),
        cache_peer_addr: Some("10.0.0.5:9091".into()),
        ..minimal()
    };
    let c = AgentConfig::load(None, env(&[]), &flags)?;
    let cache = c.cache.expect("a cache");
    assert_eq!(cache.flight_endpoint, "grpc://10.0.0.5:9090");
    assert_eq!(cache.peer_addr, "10.0.0.5:9091");
    assert_eq!(c.cache_endpoint.as_deref(), Some("grpc://10.0.0.5:9090"));
    let explicit = Overrides {
        cache_endpoint: Some("grpc://other:1".into()),
        ..flags
    };
    let c = AgentConfig::load(None, env(&[]), &explicit)?;
    assert_eq!(c.cache_endpoint.as_deref(), Some("grpc://other:1"));
    assert!(
        AgentConfig::load(None, env(&[]), &minimal())?
            .cache
            .is_none()
    );
    Ok(())
}

#[test]
fn one_cache_flag_alone_or_a_bad_address_is_refused() {
    let only_flight = Overrides {
        cache_flight_endpoint: Some("grpc://10.0.0.5:9090".into()),
        ..minimal()
    };
    let only_peer = Overrides {
        cache_peer_addr: Some("10.0.0.5:9091".into()),
        ..minimal()
    };
    for flags in [only_flight, only_peer] {
        let err = AgentConfig::load(None, env(&[]), &flags).unwrap_err();
        assert!(err.to_string().contains("must be given together"), "{err}");
    }
    let bad = Overrides {
        cache_flight_endpoint: Some("http://10.0.0.5:9090".into()),
        cache_peer_addr: Some("10.0.0.5:9091".into()),
        ..minimal()
    };
    let err = AgentConfig::load(None, env(&[]), &bad).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("--cache-flight-endpoint") && text.contains("cache.flight_endpoint"),
        "{text}"
    );
}

#[test]
fn cpu_overcommit_defaults_to_one_and_refuses_zero_and_absurd_values() -> anyhow::Result<()> {
    assert_eq!(
        AgentConfig::load(None, env(&[]), &minimal())?.cpu_overcommit,
        1
    );
    let from_env = AgentConfig::load(None, env(&[("FLAME_NODE_CPU_OVERCOMMIT", "4")]), &minimal())?;
    assert_eq!(from_env.cpu_overcommit, 4);
    for bad in [0, 65] {
        let flags = Overrides {
            cpu_overcommit: Some(bad),
            ..minimal()
        };
        let text = AgentConfig::load(None, env(&[]), &flags)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            text.contains("`cpu_overcommit` (--cpu-overcommit, FLAME_NODE_CPU_OVERCOMMIT)")
                && text.contains("1 to 64"),
            "{bad}: {text}"
        );
    }
    Ok(())
}
