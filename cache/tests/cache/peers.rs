//! Caches that know each other: objects put through one cache are read through any other,
//! stored on two caches before the put returns, survive the loss of a cache, come back from
//! disk after a restart, and are deleted everywhere.

use crate::support;

use bytes::Bytes;
use flame_cache::Fetched;
use support::Cluster;

fn value(i: usize, len: usize) -> Bytes {
    Bytes::from((0..len).map(|j| (i * 31 + j) as u8).collect::<Vec<_>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_one_cache_is_on_two_caches_and_read_from_any() {
    let mut cluster = Cluster::new(3);
    cluster.start_all().await;
    let a = cluster.client(0).await;
    let mut refs = Vec::new();
    for i in 0..20 {
        refs.push((a.put("app/ssn", value(i, 1000 + i)).await.unwrap(), i));
    }
    for (r, i) in &refs {
        assert_eq!(
            cluster.holders(&r.key).len(),
            2,
            "{} is on two caches when the put returns",
            r.key
        );
        for c in 0..3 {
            let (version, bytes) = cluster.client(c).await.get_bytes(&r.key).await.unwrap();
            assert_eq!(
                (version, bytes),
                (1, value(*i, 1000 + i)),
                "read of {} through cache {c}",
                r.key
            );
        }
    }
    let misses: u64 = (0..3)
        .map(|c| cluster.running(c).node().metrics().misses.get())
        .sum();
    assert!(
        misses > 0,
        "some reads were served by a cache that fetched from a peer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_object_survives_the_loss_of_a_cache() {
    let mut cluster = Cluster::new(3);
    cluster.start_all().await;
    let b = cluster.client(1).await;
    let mut refs = Vec::new();
    for i in 0..30 {
        refs.push((b.put("app/ssn", value(i, 200)).await.unwrap(), i));
    }
    cluster.stop(0).await;
    let c = cluster.client(2).await;
    for (r, i) in &refs {
        assert_eq!(
            c.get_bytes(&r.key).await.unwrap().1,
            value(*i, 200),
            "{} after cache 0 stopped",
            r.key
        );
    }
    // Writes go on too, to the caches that are left.
    let r = c.put("app/ssn", value(99, 10)).await.unwrap();
    assert_eq!(b.get_bytes(&r.key).await.unwrap().1, value(99, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cache_serves_its_persisted_objects() {
    let mut cluster = Cluster::new(1);
    cluster.start_all().await;
    let r = cluster
        .client(0)
        .await
        .put("app/ssn", value(1, 5000))
        .await
        .unwrap();
    let patched = cluster
        .client(0)
        .await
        .patch(&r.key, Bytes::from_static(b"delta"))
        .await
        .unwrap();
    assert_eq!(patched.version, 2);
    cluster.stop(0).await;
    cluster.start(0).await;
    match cluster.client(0).await.get(&r.key, 1).await.unwrap() {
        Fetched::Blob {
            version,
            base,
            patches,
        } => {
            assert_eq!(version, 2);
            assert!(base.is_none(), "a client at version 1 gets only the patch");
            assert_eq!(patches, vec![(2, Bytes::from_static(b"delta"))]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(cluster.running(0).node().store().stats().disk_loads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_session_removes_its_objects_on_every_holder() {
    let mut cluster = Cluster::new(3);
    cluster.start_all().await;
    let a = cluster.client(0).await;
    let mut keys = Vec::new();
    for i in 0..12 {
        keys.push(a.put("app/doomed", value(i, 64)).await.unwrap().key);
    }
    let kept = a.put("app/kept", value(0, 64)).await.unwrap().key;
    cluster.client(2).await.delete("app/doomed").await.unwrap();
    for key in &keys {
        assert!(
            cluster.holders(key).is_empty(),
            "{key} is gone from every cache"
        );
        assert!(a.get_bytes(key).await.unwrap_err().is_not_found());
    }
    assert_eq!(cluster.holders(&kept).len(), 2);
    assert_eq!(a.list("app/").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_moves_between_caches_in_parallel_ranges() {
    let mut cluster = Cluster::new(2);
    cluster.replicas = 1;
    cluster.start_all().await;
    let big = value(7, 40 << 20);
    let r = cluster
        .client(0)
        .await
        .put("app/ssn", big.clone())
        .await
        .unwrap();
    let holder = cluster.holders(&r.key)[0];
    let other = 1 - holder;
    let (_, back) = cluster.client(other).await.get_bytes(&r.key).await.unwrap();
    assert!(
        back == big,
        "40 MiB read through the other cache is byte-exact"
    );
    let fetches = cluster
        .running(other)
        .node()
        .metrics()
        .peer_fetch_bytes
        .get();
    assert_eq!(fetches, 40 << 20);
}
