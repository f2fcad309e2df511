//! `flmctl cache list|get|rm` end to end against a real cache started in this process (a
//! standalone `flame_cache` node on 127.0.0.1): listing as a table (golden) and JSON, getting
//! plain and patched objects to stdout and to a file, deleting by key, session and application,
//! finding the cache through `FLAME_CACHE_ENDPOINT` and `--config`, and bad input (bad keys and
//! patterns, a missing object, a dead or TLS endpoint) giving one `Error:` line and a failure
//! status, never a panic.

use crate::support::{flmctl_env, golden};
use flame_cache::config::CacheConfig;
use flame_cache::serve::{CacheListeners, RunningCache, start};
use flame_sdk::cache::ObjectCache;
use serde_json::Value;

/// A standalone cache with a temporary storage directory.
struct TestCache {
    dir: tempfile::TempDir,
    running: RunningCache,
}

impl TestCache {
    async fn start() -> TestCache {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = CacheConfig::new("flmctl-test");
        config.flight_addr = "127.0.0.1:0".parse().expect("addr");
        config.peer_addr = "127.0.0.1:0".parse().expect("addr");
        config.store.dir = Some(dir.path().join("store"));
        let listeners = CacheListeners::bind(&config).await.expect("bind");
        let running = start(config, listeners).await.expect("cache starts");
        TestCache { dir, running }
    }

    fn endpoint(&self) -> &str {
        self.running.flight_endpoint()
    }

    /// `HOME` for flmctl: an empty directory, so no `~/.flame/flame.yaml` is read.
    fn home(&self) -> String {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        home.display().to_string()
    }

    /// Runs `flmctl cache <args> --cache-endpoint <this cache>`.
    fn flmctl(&self, args: &[&str]) -> (bool, String, String) {
        let mut all = vec!["cache"];
        all.extend_from_slice(args);
        all.extend(["--cache-endpoint", self.endpoint()]);
        flmctl_env(&all, &[("HOME", &self.home())])
    }

    /// [`TestCache::flmctl`], which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (success, stdout, stderr) = self.flmctl(args);
        assert!(success, "flmctl cache {args:?} failed: {stderr}");
        stdout
    }

    /// [`TestCache::flmctl`], which must fail with one `Error:` line; returns that line.
    fn fails(&self, args: &[&str]) -> String {
        let (success, stdout, stderr) = self.flmctl(args);
        one_error(args, success, &stdout, &stderr)
    }
}

/// Checks a failed run: non-zero exit, nothing on stdout, one `Error:` line, no panic.
fn one_error(args: &[&str], success: bool, stdout: &str, stderr: &str) -> String {
    assert!(!success, "flmctl {args:?} succeeded: {stdout}");
    assert!(stdout.is_empty(), "{args:?}: {stdout}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("Error: "), "{args:?}: {stderr}");
    stderr.to_owned()
}

/// Puts the objects the tests read: two in `demo/s1` (one with two patches), one in
/// `demo/s2` and one of another application.
async fn fill(cache: &TestCache) -> ObjectCache {
    let objects = ObjectCache::connect(cache.endpoint())
        .await
        .expect("connect");
    objects.put_bytes("demo/s1/a", "hello").await.unwrap();
    objects.put_bytes("demo/s1/b", "base;").await.unwrap();
    objects.patch_bytes("demo/s1/b", "p1;").await.unwrap();
    objects.patch_bytes("demo/s1/b", "p2;").await.unwrap();
    objects
        .put_bytes("demo/s2/c", vec![7u8; 3000])
        .await
        .unwrap();
    objects.put_bytes("other/s1/d", "d").await.unwrap();
    objects
}

/// The listing with the cache's endpoint named and runs of spaces collapsed.
fn masked(text: &str, endpoint: &str) -> String {
    text.replace(endpoint, "<cache>")
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_every_object_as_a_table_and_json_with_a_prefix() {
    let cache = TestCache::start().await;
    fill(&cache).await;
    let table = cache.ok(&["list"]);
    golden("cache_list.txt", &masked(&table, cache.endpoint()));

    let json: Vec<Value> =
        serde_json::from_str(&cache.ok(&["list", "demo/s1/", "-o", "json"])).expect("json");
    let rows: Vec<(&str, u64, u64)> = json
        .iter()
        .map(|o| {
            let n = |f: &str| o[f].as_u64().unwrap_or_else(|| panic!("{f}: {o}"));
            (o["key"].as_str().expect("key"), n("version"), n("size"))
        })
        .collect();
    assert_eq!(rows, vec![("demo/s1/a", 1, 5), ("demo/s1/b", 3, 11)]);
    assert_eq!(json[0]["endpoint"], cache.endpoint());
    let yaml = cache.ok(&["list", "nobody/", "-o", "yaml"]);
    assert_eq!(yaml.trim(), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_writes_the_bytes_and_a_patched_object_as_base_then_patches() {
    let cache = TestCache::start().await;
    fill(&cache).await;
    let (success, stdout, stderr) = cache.flmctl(&["get", "demo/s1/a"]);
    assert!(success, "{stderr}");
    assert_eq!((stdout.as_str(), stderr.as_str()), ("hello", ""));

    let (success, stdout, stderr) = cache.flmctl(&["get", "demo/s1/b"]);
    assert!(success, "{stderr}");
    assert_eq!(stdout, "base;p1;p2;");
    assert_eq!(
        stderr,
        "note: wrote 11 bytes of demo/s1/b version 3 (its base and 2 patches, concatenated)\n"
    );

    let file = cache.dir.path().join("b.out");
    let file_arg = file.display().to_string();
    let summary = cache.ok(&["get", "demo/s1/b", "-o", &file_arg]);
    assert_eq!(
        summary,
        format!(
            "Wrote 11 bytes of demo/s1/b version 3 (its base and 2 patches, concatenated) to {file_arg}.\n"
        )
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"base;p1;p2;");
    let big = cache.dir.path().join("c.out");
    cache.ok(&["get", "demo/s2/c", "--output", &big.display().to_string()]);
    assert_eq!(std::fs::read(&big).unwrap(), vec![7u8; 3000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_deletes_a_key_a_session_and_an_application() {
    let cache = TestCache::start().await;
    fill(&cache).await;
    let keys = |cache: &TestCache| -> Vec<String> {
        let json: Vec<Value> =
            serde_json::from_str(&cache.ok(&["list", "-o", "json"])).expect("json");
        json.iter()
            .map(|o| o["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        cache.ok(&["rm", "demo/s1/a"]),
        "Object demo/s1/a was deleted.\n"
    );
    let err = cache.fails(&["get", "demo/s1/a"]);
    assert!(
        err.contains("demo/s1/a") && err.contains("not found"),
        "{err}"
    );
    assert_eq!(
        cache.ok(&["rm", "demo/s1"]),
        "Objects of session demo/s1 were deleted.\n"
    );
    assert_eq!(keys(&cache), vec!["demo/s2/c", "other/s1/d"]);
    assert_eq!(
        cache.ok(&["rm", "demo/*"]),
        "Objects of application demo/* were deleted.\n"
    );
    assert_eq!(keys(&cache), vec!["other/s1/d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_clear_error_line_and_a_failure_status() {
    let cache = TestCache::start().await;
    let mut lines = String::new();
    for args in [
        &["get", "demo/s1"][..],
        &["get", "demo/../x"],
        &["get", "demo/s1/a/b"],
        &["rm", "*"],
        &["rm", "demo//x"],
        &["get", "demo/s1/missing"],
    ] {
        lines.push_str(&format!("{args:?}: {}", cache.fails(args)));
    }
    golden("cache_errors.txt", &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_foreign_endpoint_fails_with_a_hint() {
    let cache = TestCache::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = format!("grpc://{dead}");
    let home = cache.home();
    let env = [("HOME", home.as_str())];
    for endpoint in [dead.as_str(), "grpcs://127.0.0.1:1", "ftp://x"] {
        let args = ["cache", "list", "--cache-endpoint", endpoint];
        let (success, stdout, stderr) = flmctl_env(&args, &env);
        let err = one_error(&args, success, &stdout, &stderr);
        assert!(err.contains("hint: pass --cache-endpoint"), "{err}");
    }
    let args = ["cache", "list", "--cache-endpoint", &dead];
    let err = flmctl_env(&args, &env).2;
    assert!(err.contains("cannot reach the cache at"), "{err}");
    let err = flmctl_env(&["cache", "list", "--cache-endpoint", "ftp://h:1"], &env).2;
    assert!(err.contains("ftp:// is not a cache endpoint"), "{err}");
    // A TLS endpoint is dialled (with TLS), so a dead one is unreachable, not refused.
    let err = flmctl_env(
        &["cache", "list", "--cache-endpoint", "grpcs://127.0.0.1:1"],
        &env,
    )
    .2;
    assert!(err.contains("cannot reach the cache at grpcs://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_found_through_the_environment_and_the_config_file() {
    let cache = TestCache::start().await;
    fill(&cache).await;
    let home = cache.home();
    let list = ["cache", "list", "other/", "-o", "json"];
    let keys = |stdout: &str| {
        let json: Vec<Value> = serde_json::from_str(stdout).expect("json");
        json.iter()
            .map(|o| o["key"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let env = [
        ("HOME", home.as_str()),
        ("FLAME_CACHE_ENDPOINT", cache.endpoint()),
    ];
    let (success, stdout, stderr) = flmctl_env(&list, &env);
    assert!(success, "{stderr}");
    assert_eq!(keys(&stdout), vec!["other/s1/d"]);

    let config = cache.dir.path().join("flame.yaml");
    let yaml = format!(
        "current-context: t\ncontexts:\n  - name: t\n    cluster:\n      endpoint: http://127.0.0.1:1\n    cache:\n      endpoint: {}\n",
        cache.endpoint()
    );
    std::fs::write(&config, yaml).unwrap();
    let config_arg = config.display().to_string();
    let mut args = vec!["--config", config_arg.as_str()];
    args.extend_from_slice(&list);
    let (success, stdout, stderr) = flmctl_env(&args, &[("HOME", home.as_str())]);
    assert!(success, "{stderr}");
    assert_eq!(keys(&stdout), vec!["other/s1/d"]);

    // The flag beats the environment, which beats the file.
    let dead = [
        ("HOME", home.as_str()),
        ("FLAME_CACHE_ENDPOINT", "grpc://127.0.0.1:1"),
    ];
    let (success, _, stderr) = flmctl_env(&args, &dead);
    assert!(!success && stderr.contains("127.0.0.1:1"), "{stderr}");
    args.extend(["--cache-endpoint", cache.endpoint()]);
    let (success, _, stderr) = flmctl_env(&args, &dead);
    assert!(success, "{stderr}");
}
