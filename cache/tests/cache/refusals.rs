//! Caches refuse what they must: a peer without a certificate from the cluster CA cannot talk
//! to them, and a holder that sends bytes that do not match their hash is skipped for another.

use crate::support;

use bytes::Bytes;
use flame_cache::config::StaticPeer;
use flame_cache::key::{KeyPattern, ObjectKey};
use flame_cache::object::{ObjectData, ObjectMeta, RecordMeta, SharedObject, ValueKind};
use flame_cache::peer::proto::{OfferAnswer, OfferItem, StoreAck};
use flame_cache::peer::server::PeerService;
use flame_cache::peer::tls::PeerIdentity;
use flame_cache::placement::{Directory, Member};
use flame_cache::{CacheError, CacheResult};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use support::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_with_a_certificate_from_another_ca_is_refused() {
    let mut cluster = Cluster::new(2);
    cluster.start_all().await;
    let key = cluster
        .client(0)
        .await
        .put("app/ssn", Bytes::from_static(b"secret"))
        .await
        .unwrap()
        .key;
    // An outsider that knows the cluster's addresses but has its own CA.
    let mut outsider = Cluster::new(1);
    let mut config = outsider.config(0);
    config.static_peers = cluster
        .slots
        .iter()
        .map(|s| StaticPeer {
            node: s.node.clone(),
            peer_addr: s.peer.to_string(),
            flight_endpoint: format!("grpc://{}", s.flight),
        })
        .collect();
    outsider.start_with(0, config).await;
    let err = outsider.client(0).await.get_bytes(&key).await.unwrap_err();
    assert!(
        !err.is_not_found(),
        "the outsider learns nothing, not even absence: {err}"
    );
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert_eq!(
        cluster.client(0).await.list("").await.unwrap().len(),
        1,
        "the outsider stored nothing in the cluster"
    );
}

/// A peer that claims to hold one object and sends corrupted bytes for it.
struct LyingPeer {
    object: SharedObject,
    reads: AtomicU64,
}

impl PeerService for LyingPeer {
    fn max_payload(&self) -> u64 {
        1 << 30
    }
    fn head(&self, key: &ObjectKey) -> Option<ObjectMeta> {
        (key == &self.object.meta.key).then(|| self.object.meta.clone())
    }
    async fn object(&self, key: &ObjectKey) -> CacheResult<Option<SharedObject>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let mut bad = (*self.object).clone();
        let mut bytes = bad.base.to_vec();
        bytes[0] ^= 0xff;
        bad.base = Bytes::from(bytes);
        Ok((key == &bad.meta.key).then(|| Arc::new(bad)))
    }
    async fn put(&self, _: ObjectKey, _: ValueKind, _: bool, _: Bytes) -> CacheResult<ObjectMeta> {
        Err(CacheError::Internal("not a primary".into()))
    }
    async fn patch(&self, _: ObjectKey, _: Bytes) -> CacheResult<ObjectMeta> {
        Err(CacheError::Internal("not a primary".into()))
    }
    async fn store(&self, _: ObjectData) -> CacheResult<StoreAck> {
        Ok(StoreAck::Unchanged)
    }
    async fn store_patch(
        &self,
        _: ObjectKey,
        _: RecordMeta,
        _: RecordMeta,
        _: Bytes,
    ) -> CacheResult<StoreAck> {
        Ok(StoreAck::Unchanged)
    }
    async fn delete(&self, _: KeyPattern, _: i64) -> CacheResult<u64> {
        Ok(0)
    }
    fn list(&self, _: &str) -> Vec<ObjectMeta> {
        Vec::new()
    }
    fn offer(&self, items: &[OfferItem]) -> Vec<OfferAnswer> {
        items.iter().map(|_| OfferAnswer::Have).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_sends_bytes_with_a_bad_hash_is_skipped() {
    // c0 holds the object; c1 reads it; a liar "f" ranks first for the key.
    let mut cluster = Cluster::new(2);
    cluster.replicas = 1;
    let member = |node: &str| Member {
        node: node.into(),
        flight_endpoint: String::new(),
        peer_addr: String::new(),
        ready: true,
    };
    let directory = Directory::new(member("c1"), vec![member("c0"), member("f")]);
    let id = (0..)
        .map(|i| format!("o{i}"))
        .find(|id| {
            let key = ObjectKey::from_parts("app", "ssn", id).unwrap();
            let ranked: Vec<_> = directory
                .ranked(&key)
                .iter()
                .map(|m| m.node.clone())
                .collect();
            ranked == ["f", "c0", "c1"]
        })
        .unwrap();
    let key = format!("app/ssn/{id}");
    let liar_addr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let liar_peer = liar_addr.local_addr().unwrap();
    let mut c0 = cluster.config(0);
    c0.static_peers.clear();
    cluster.start_with(0, c0).await;
    cluster
        .client(0)
        .await
        .put(&key, Bytes::from_static(b"the real bytes"))
        .await
        .unwrap();
    let object = cluster
        .running(0)
        .node()
        .store()
        .get(&ObjectKey::parse(&key).unwrap())
        .await
        .unwrap()
        .unwrap();
    let liar = Arc::new(LyingPeer {
        object,
        reads: AtomicU64::new(0),
    });
    let tls = Cluster::certs(cluster.dir.path(), &cluster.ca, "f");
    let flame_cache::config::PeerTls::Files { cert, key: k, ca } = tls else {
        unreachable!()
    };
    let identity = PeerIdentity::from_files(&cert, &k, &ca).unwrap();
    let endpoint = flame_cache::peer::endpoint(liar_addr, &identity).unwrap();
    tokio::spawn(flame_cache::peer::server::serve(endpoint, liar.clone()));
    let mut c1 = cluster.config(1);
    c1.static_peers.push(StaticPeer {
        node: "f".into(),
        peer_addr: liar_peer.to_string(),
        flight_endpoint: "grpc://127.0.0.1:1".into(),
    });
    cluster.start_with(1, c1).await;
    let (_, bytes) = cluster.client(1).await.get_bytes(&key).await.unwrap();
    assert_eq!(bytes, Bytes::from_static(b"the real bytes"));
    assert_eq!(
        liar.reads.load(Ordering::SeqCst),
        1,
        "the liar was asked first and skipped"
    );
}
