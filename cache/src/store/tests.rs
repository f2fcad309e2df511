//! Tests of the store: durability across reopen, eviction, quotas, tombstones and patches.

use super::*;
use crate::object::ValueKind;

fn key(k: &str) -> ObjectKey {
    ObjectKey::parse(k).unwrap()
}

fn object(k: &str, version: u64, stored_at_ms: i64, len: usize) -> ObjectData {
    ObjectData::new(
        key(k),
        ValueKind::Blob,
        version,
        stored_at_ms,
        Bytes::from(vec![version as u8; len]),
    )
}

fn disk_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        dir: Some(dir.to_owned()),
        ..StoreConfig::default()
    }
}

#[tokio::test]
async fn a_reopened_store_serves_its_persisted_objects() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(disk_config(dir.path()), 0).unwrap();
        store.install(object("a/s/1", 1, 5, 100)).await.unwrap();
        let patched = store
            .get(&key("a/s/1"))
            .await
            .unwrap()
            .unwrap()
            .with_patch(Bytes::from_static(b"p"));
        let patch = patched.meta.patches[0].clone();
        let outcome = store
            .append_patch(
                &key("a/s/1"),
                &patched.meta.base,
                patch,
                Bytes::from_static(b"p"),
            )
            .await
            .unwrap();
        assert!(matches!(outcome, PatchOutcome::Applied(_)));
    }
    let (store, report) = Store::open(disk_config(dir.path()), 0).unwrap();
    assert_eq!((report.objects, report.bytes), (1, 101));
    let back = store.get(&key("a/s/1")).await.unwrap().unwrap();
    assert_eq!(back.meta.version(), 2);
    assert_eq!(back.patches, vec![Bytes::from_static(b"p")]);
    assert_eq!(store.stats().disk_loads, 1);
}

#[tokio::test]
async fn eviction_by_bytes_drops_only_the_memory_copy() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        max_memory_bytes: 250,
        ..disk_config(dir.path())
    };
    let (store, _) = Store::open(config, 0).unwrap();
    for i in 0..5 {
        store
            .install(object(&format!("a/s/{i}"), 1, 0, 100))
            .await
            .unwrap();
    }
    let stats = store.stats();
    assert_eq!((stats.objects, stats.resident_objects), (5, 2));
    assert!(stats.resident_bytes <= 250);
    assert_eq!(stats.evictions, 3);
    let first = store.get(&key("a/s/0")).await.unwrap().unwrap();
    assert_eq!(first.base.len(), 100);
    assert_eq!(
        store.stats().disk_loads,
        1,
        "the evicted object came back from disk"
    );
}

#[tokio::test]
async fn eviction_by_count_keeps_the_most_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        max_objects: 2,
        ..disk_config(dir.path())
    };
    let (store, _) = Store::open(config, 0).unwrap();
    store.install(object("a/s/0", 1, 0, 10)).await.unwrap();
    store.install(object("a/s/1", 1, 0, 10)).await.unwrap();
    store.get(&key("a/s/0")).await.unwrap();
    store.install(object("a/s/2", 1, 0, 10)).await.unwrap();
    store.get(&key("a/s/0")).await.unwrap();
    assert_eq!(
        store.stats().disk_loads,
        0,
        "a/s/0 was used last, so a/s/1 went"
    );
    store.get(&key("a/s/1")).await.unwrap();
    assert_eq!(store.stats().disk_loads, 1);
}

#[tokio::test]
async fn without_a_disk_an_evicted_object_is_gone() {
    let config = StoreConfig {
        max_memory_bytes: 150,
        ..StoreConfig::default()
    };
    let (store, _) = Store::open(config, 0).unwrap();
    store.install(object("a/s/0", 1, 0, 100)).await.unwrap();
    store.install(object("a/s/1", 1, 0, 100)).await.unwrap();
    assert!(store.get(&key("a/s/0")).await.unwrap().is_none());
    assert!(store.get(&key("a/s/1")).await.unwrap().is_some());
    let err = store.install(object("a/s/2", 1, 0, 200)).await.unwrap_err();
    assert!(matches!(err, CacheError::StorageFull(_)), "{err}");
}

#[tokio::test]
async fn a_put_over_the_disk_quota_is_storage_full_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        max_disk_bytes: Some(150),
        ..disk_config(dir.path())
    };
    let (store, _) = Store::open(config, 0).unwrap();
    store.install(object("a/s/0", 1, 0, 100)).await.unwrap();
    let err = store.install(object("a/s/1", 1, 0, 100)).await.unwrap_err();
    assert!(err.to_string().contains("quota"), "{err}");
    assert!(store.meta(&key("a/s/1")).is_none());
    assert!(!dir.path().join("objects/a/s/1.v1.base").exists());
    // Replacing the object with one of the same size still fits.
    store.install(object("a/s/0", 2, 0, 100)).await.unwrap();
    assert_eq!(store.stats().disk_bytes, 100);
}

#[tokio::test]
async fn an_older_or_equal_version_leaves_the_newer_copy() {
    let (store, _) = Store::open(StoreConfig::default(), 0).unwrap();
    store.install(object("a/s/0", 3, 0, 1)).await.unwrap();
    assert_eq!(
        store.install(object("a/s/0", 2, 0, 1)).await.unwrap(),
        Installed::Unchanged { version: 3 }
    );
    assert_eq!(store.meta(&key("a/s/0")).unwrap().version(), 3);
}

#[tokio::test]
async fn a_delete_removes_files_and_refuses_older_copies_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(disk_config(dir.path()), 0).unwrap();
    store.install(object("a/s/0", 1, 10, 5)).await.unwrap();
    store.install(object("a/t/0", 1, 10, 5)).await.unwrap();
    let deleted = store
        .delete(&KeyPattern::parse("a/s").unwrap(), 20)
        .await
        .unwrap();
    assert_eq!(deleted, vec![key("a/s/0")]);
    assert!(!dir.path().join("objects/a/s").exists());
    assert!(store.meta(&key("a/t/0")).is_some());
    let err = store.install(object("a/s/0", 1, 15, 5)).await.unwrap_err();
    assert!(matches!(err, CacheError::Deleted(_)), "{err}");
    store.install(object("a/s/0", 1, 21, 5)).await.unwrap();
    // The tombstone outlives a restart.
    drop(store);
    let (store, _) = Store::open(disk_config(dir.path()), 0).unwrap();
    assert!(store.is_deleted(&key("a/s/9"), 20));
}

#[tokio::test]
async fn a_patch_for_another_base_asks_for_the_whole_object() {
    let (store, _) = Store::open(StoreConfig::default(), 0).unwrap();
    let o = object("a/s/0", 1, 0, 4)
        .with_patch(Bytes::from_static(b"x"))
        .with_patch(Bytes::from_static(b"y"));
    let last = o.meta.patches[1].clone();
    let missing = store
        .append_patch(
            &key("a/s/0"),
            &o.meta.base,
            last.clone(),
            Bytes::from_static(b"y"),
        )
        .await
        .unwrap();
    assert!(matches!(missing, PatchOutcome::NeedObject));
    store.install(object("a/s/0", 1, 0, 4)).await.unwrap();
    let gap = store
        .append_patch(&key("a/s/0"), &o.meta.base, last, Bytes::from_static(b"y"))
        .await
        .unwrap();
    assert!(
        matches!(gap, PatchOutcome::NeedObject),
        "v3 cannot follow v1"
    );
    let bad = o.meta.patches[0].clone();
    let err = store
        .append_patch(&key("a/s/0"), &o.meta.base, bad, Bytes::from_static(b"z"))
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::Corrupt(_)));
}

#[tokio::test]
async fn a_record_corrupted_on_disk_is_quarantined_and_reads_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        max_memory_bytes: 0,
        ..disk_config(dir.path())
    };
    let (store, _) = Store::open(config, 0).unwrap();
    store.install(object("a/s/0", 1, 0, 64)).await.unwrap();
    let path = dir.path().join("objects/a/s/0.v1.base");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    assert!(store.get(&key("a/s/0")).await.unwrap().is_none());
    assert!(store.meta(&key("a/s/0")).is_none());
    assert_eq!(
        std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count(),
        1
    );
}
