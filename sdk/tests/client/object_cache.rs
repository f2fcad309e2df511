//! The SDK's object API against a real cache started in this process (a standalone
//! `flame_cache` node on 127.0.0.1 with a temporary storage directory): typed and raw round
//! trips, update, patch with incremental refreshes, deletes by key, session and application,
//! bad keys and an unreachable cache.

use bytes::Bytes;
use flame_cache::config::CacheConfig;
use flame_cache::serve::{CacheListeners, RunningCache, start};
use flame_sdk::cache::{Object, ObjectCache, Refresh};
use flame_sdk::client::{ClientError, FlameError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A standalone cache on an ephemeral port, stopped on [`TestCache::stop`].
struct TestCache {
    _dir: tempfile::TempDir,
    running: RunningCache,
}

impl TestCache {
    async fn start() -> TestCache {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = CacheConfig::new("sdk-test");
        config.flight_addr = "127.0.0.1:0".parse().expect("addr");
        config.peer_addr = "127.0.0.1:0".parse().expect("addr");
        config.store.dir = Some(dir.path().join("store"));
        let listeners = CacheListeners::bind(&config).await.expect("bind");
        let running = start(config, listeners).await.expect("cache starts");
        TestCache { _dir: dir, running }
    }

    async fn handle(&self) -> ObjectCache {
        ObjectCache::connect(self.running.flight_endpoint())
            .await
            .expect("connect")
    }

    async fn stop(self) {
        self.running.shutdown().await;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Context {
    model: String,
    temperature: f64,
    tools: Vec<String>,
}

fn context() -> Context {
    Context {
        model: "m-1".into(),
        temperature: 0.5,
        tools: vec!["search".into(), "calc".into()],
    }
}

#[tokio::test]
async fn a_typed_object_round_trips_under_a_generated_key_and_updates_bump_the_version() {
    let cache = TestCache::start().await;
    let objects = cache.handle().await;

    let r = objects.put_object("app/ssn-1", &context()).await.unwrap();
    let id = r
        .key
        .strip_prefix("app/ssn-1/")
        .expect("generated under the session");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{}", r.key);
    assert_eq!(r.version, 1);
    assert_eq!(r.endpoint, cache.running.flight_endpoint());

    let got: Object<Context> = objects.get_object(&r).await.unwrap();
    assert_eq!(
        (got.base, got.version, got.patches.len()),
        (context(), 1, 0)
    );

    let mut changed = context();
    changed.temperature = 0.9;
    let r2 = objects.update_object(&r, &changed).await.unwrap();
    assert_eq!((r2.key.as_str(), r2.version), (r.key.as_str(), 2));
    let got: Object<Context> = objects.get_object(r2.key.as_str()).await.unwrap();
    assert_eq!((got.base, got.version), (changed, 2));

    // A whole key as the put target names the object.
    let named = objects
        .put_object("app/shared/config", &7u32)
        .await
        .unwrap();
    assert_eq!(named.key, "app/shared/config");
    let got: Object<u32> = objects.get_object("app/shared/config").await.unwrap();
    assert_eq!(got.base, 7);
    cache.stop().await;
}

#[tokio::test]
async fn patches_come_back_in_order_and_refreshes_send_only_what_is_missing() {
    let cache = TestCache::start().await;
    let objects = cache.handle().await;
    let r = objects
        .put_object("app/ssn", &vec!["a".to_owned()])
        .await
        .unwrap();
    objects.patch_object(&r, "b").await.unwrap();
    let r3 = objects.patch_object(&r, "c").await.unwrap();
    assert_eq!(r3.version, 3);

    let mut held: Object<Vec<String>, String> = objects.get_object(&r).await.unwrap();
    assert_eq!(held.version, 3);
    assert_eq!(held.patches, vec!["b", "c"]);
    let all = held.fold(Clone::clone, |mut list, p| {
        list.push(p.clone());
        list
    });
    assert_eq!(all, vec!["a", "b", "c"]);

    assert_eq!(
        objects.refresh_object(&mut held).await.unwrap(),
        Refresh::Unchanged
    );
    objects.patch_object(&r, "d").await.unwrap();
    assert_eq!(
        objects.refresh_object(&mut held).await.unwrap(),
        Refresh::Patched(1)
    );
    assert_eq!(
        (held.version, held.patches.last().unwrap().as_str()),
        (4, "d")
    );

    objects
        .update_object(&r, &vec!["z".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        objects.refresh_object(&mut held).await.unwrap(),
        Refresh::Replaced
    );
    assert_eq!(
        (held.base.clone(), held.patches.len(), held.version),
        (vec!["z".to_owned()], 0, 5)
    );
    cache.stop().await;
}

#[tokio::test]
async fn raw_bytes_round_trip_and_a_non_json_object_is_a_codec_error() {
    let cache = TestCache::start().await;
    let objects = cache.handle().await;
    let pickle = Bytes::from_static(b"\x80\x04\x95pickled");
    let r = objects.put_bytes("app/ssn", pickle.clone()).await.unwrap();
    objects.patch_bytes(&r, &b"+1"[..]).await.unwrap();
    let mut held = objects.get_bytes(&r).await.unwrap();
    assert_eq!(
        (held.base.clone(), held.patches.clone()),
        (pickle, vec![Bytes::from_static(b"+1")])
    );
    objects.patch_bytes(&r, &b"+2"[..]).await.unwrap();
    assert_eq!(
        objects.refresh_bytes(&mut held).await.unwrap(),
        Refresh::Patched(1)
    );

    let err = objects
        .get_object::<Context, Context>(&r)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ObjectCodec { .. }), "{err:?}");
    assert!(err.to_string().contains(&r.key), "{err}");
    cache.stop().await;
}

#[tokio::test]
async fn deletes_take_a_key_a_session_or_an_application() {
    let cache = TestCache::start().await;
    let objects = cache.handle().await;
    let a1 = objects.put_object("app/s1", &1).await.unwrap();
    let a2 = objects.put_object("app/s1", &2).await.unwrap();
    let b = objects.put_object("app/s2", &3).await.unwrap();
    let other = objects.put_object("other/s1", &4).await.unwrap();
    assert_eq!(objects.list_objects("app/").await.unwrap().len(), 3);

    objects.delete_objects(&a1.key).await.unwrap();
    let missing = objects.get_object::<i32, i32>(&a1).await.unwrap_err();
    assert!(missing.is_not_found(), "{missing:?}");
    assert!(objects.get_object::<i32, i32>(&a2).await.is_ok());

    objects.delete_objects("app/s1").await.unwrap();
    assert!(
        objects
            .get_object::<i32, i32>(&a2)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(objects.get_object::<i32, i32>(&b).await.is_ok());

    objects.delete_objects("app/*").await.unwrap();
    assert!(
        objects
            .get_object::<i32, i32>(&b)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let left: Vec<String> = objects
        .list_objects("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(left, vec![other.key]);
    // Deleting nothing is fine.
    objects.delete_objects("app/*").await.unwrap();
    cache.stop().await;
}

#[tokio::test]
async fn bad_keys_and_patterns_are_refused_before_any_call_naming_the_rule() {
    let cache = TestCache::start().await;
    let objects = cache.handle().await;
    let invalid = |err: ClientError, rule: &str| {
        assert!(matches!(err, ClientError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains(rule), "{err}");
    };
    invalid(
        objects.put_object("app", &1).await.unwrap_err(),
        "expected <app>/<session>",
    );
    invalid(
        objects.put_object("app/../x", &1).await.unwrap_err(),
        "`..`",
    );
    invalid(
        objects.get_bytes("app/ssn").await.unwrap_err(),
        "<app>/<session>/<object_id>",
    );
    invalid(objects.patch_object("a//c", &1).await.unwrap_err(), "empty");
    invalid(objects.delete_objects("*").await.unwrap_err(), "expected");
    invalid(
        objects.delete_objects("a/b/c/d").await.unwrap_err(),
        "more than 3",
    );

    let err = objects.patch_object("app/ssn/none", &1).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    cache.stop().await;
}

#[tokio::test]
async fn an_unreachable_cache_is_unavailable_and_a_foreign_scheme_is_invalid() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let connect = ObjectCache::connect(&endpoint);
    let err = tokio::time::timeout(Duration::from_secs(15), connect)
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Flame(FlameError::Unavailable(m)) if m.contains(&port.to_string())),
        "{err:?}"
    );
    let err = ObjectCache::connect("ftp://h:1").await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidEndpoint(_)), "{err:?}");
}

#[tokio::test]
async fn a_tls_cache_is_reached_with_the_ca_of_the_config_files_cache_section() {
    let dir = tempfile::tempdir().unwrap();
    let ca = flame_cache::ca::generate_ca(std::time::SystemTime::now()).unwrap();
    let tls =
        flame_cache::config::FlightTls::write_issued(&ca, &["127.0.0.1"], dir.path(), "flight")
            .unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let mut config = CacheConfig::new("sdk-tls-test");
    config.flight_addr = "127.0.0.1:0".parse().unwrap();
    config.peer_addr = "127.0.0.1:0".parse().unwrap();
    config.flight_tls = Some(tls);
    let listeners = CacheListeners::bind(&config).await.unwrap();
    let running = start(config, listeners).await.unwrap();
    let endpoint = running.flight_endpoint().to_owned();
    assert!(endpoint.starts_with("grpc+tls://"), "{endpoint}");
    let file = dir.path().join("flame.yaml");
    std::fs::write(
        &file,
        format!(
            "current-context: c\ncontexts:\n  - name: c\n    cache:\n      endpoint: {endpoint}\n      tls:\n        ca_file: ca.pem\n"
        ),
    )
    .unwrap();
    let cache = ObjectCache::from_config(None, Some(&file)).await.unwrap();
    let reference = cache.put_object("app/ssn", &context()).await.unwrap();
    let back: Object<Context> = cache.get_object(&reference).await.unwrap();
    assert_eq!(back.base, context());
    running.shutdown().await;
}

#[tokio::test]
async fn from_config_prefers_the_explicit_endpoint() {
    let cache = TestCache::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flame.yaml");
    std::fs::write(
        &config,
        "current-context: c\ncontexts:\n  - name: c\n    cache:\n      endpoint: grpc://127.0.0.1:1\n",
    )
    .unwrap();
    let objects = ObjectCache::from_config(Some(cache.running.flight_endpoint()), Some(&config))
        .await
        .unwrap();
    assert_eq!(objects.endpoint(), cache.running.flight_endpoint());
    cache.stop().await;
}
