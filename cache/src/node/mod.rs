//! [`CacheNode`]: one cache of the cluster, the coordinator between clients, the local store
//! and the other caches.
//!
//! What a client call does on the cache it reaches (any cache serves any object):
//!
//! | Call | Path |
//! |---|---|
//! | put, patch | to the key's primary (the first reachable Ready cache of its ranking, maybe this one), which orders the version, stores, and writes the copy to the next holders before answering (`write`) |
//! | get | this cache's copy if it holds one; else the first holder down the ranking that has it, fetched over QUIC (`read`) |
//! | delete | here, then broadcast to every other cache; each keeps a tombstone |
//! | list | this cache's objects merged with every reachable cache's |
//!
//! In the background, repair (`repair`) offers every held object to its current holders,
//! sends copies to those that lack one, and drops copies this cache no longer needs to hold.
//! The control plane's object drops (closed sessions, unregistered applications) arrive
//! through [`CacheNode::apply_drop`].
//!
//! Why a coordinator: the Flight face and the peer protocol both need exactly these rules; the
//! node owns them once.
//!
//! Caveats:
//! - A put is acknowledged once `min(replicas, Ready caches)` caches hold it. Its primary is
//!   chosen from this cache's directory; two caches with different views can briefly pick
//!   different primaries for one key, and concurrent writes to that key through them may then
//!   produce the same version twice (the later repair keeps one).
//! - Times (`stored_at_ms`, tombstones) are read from this machine's clock.

mod read;
mod repair;
mod service;
mod write;

use crate::error::{CacheError, CacheResult};
use crate::key::{KeyPattern, ObjectKey};
use crate::metrics::CacheMetrics;
use crate::object::ObjectMeta;
use crate::peer::client::Peers;
use crate::placement::{Directory, Member};
use crate::store::Store;
use crate::stripes::Stripes;
use futures::future::join_all;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;
use tracing::warn;

pub use read::Served;

/// The most patches one object may have (upstream's disk store has the same cap).
pub const MAX_PATCHES: usize = 1000;

/// How a cache node behaves.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Copies of each object, on distinct caches, before a put is acknowledged.
    pub replicas: usize,
    /// Largest object (value, delta or native table), in bytes.
    pub max_object_size: u64,
    /// The Flight URL written into `ObjectRef`s and handed to clients.
    pub advertised_endpoint: String,
}

/// One cache of the cluster. See the module docs.
#[derive(Debug)]
pub struct CacheNode {
    store: Arc<Store>,
    peers: OnceLock<Peers>,
    directory: watch::Receiver<Arc<Directory>>,
    settings: NodeSettings,
    writes: Stripes,
    metrics: Arc<CacheMetrics>,
}

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl CacheNode {
    /// A node over `store` with the cluster view `directory`. It talks to other caches once
    /// [`CacheNode::set_peers`] gave it a peer client (a standalone cache never gets one).
    pub fn new(
        store: Arc<Store>,
        directory: watch::Receiver<Arc<Directory>>,
        settings: NodeSettings,
        metrics: Arc<CacheMetrics>,
    ) -> CacheNode {
        CacheNode {
            store,
            peers: OnceLock::new(),
            directory,
            settings,
            writes: Stripes::default(),
            metrics,
        }
    }

    /// Gives the node its peer client (once; later calls are ignored). Until then it serves
    /// only its own objects and takes every write itself.
    pub fn set_peers(&self, peers: Peers) {
        let _ = self.peers.set(peers);
    }

    /// Closes the peer endpoint (at shutdown): peers see this cache go away at once.
    pub fn close_peers(&self) {
        if let Some(peers) = self.peers.get() {
            peers.close();
        }
    }

    /// How many other caches this one can reach now: those in its view, once its QUIC peer
    /// endpoint is up (0 before).
    pub fn reachable_peers(&self) -> usize {
        match self.peers.get() {
            Some(_) => self.directory().others().count(),
            None => 0,
        }
    }

    /// A receiver that sees every change of the cluster view.
    pub fn watch_directory(&self) -> watch::Receiver<Arc<Directory>> {
        self.directory.clone()
    }

    /// The local store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<CacheMetrics> {
        &self.metrics
    }

    /// The settings.
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// The current cluster view.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.borrow().clone()
    }

    /// The peer client and the other caches of the current view, when there are any.
    fn others(&self) -> Option<(&Peers, Vec<Member>)> {
        let peers = self.peers.get()?;
        let others: Vec<Member> = self.directory().others().cloned().collect();
        (!others.is_empty()).then_some((peers, others))
    }

    /// Deletes what `pattern` covers on every cache: here, then on every other cache it can
    /// reach. Returns how many objects were deleted in all.
    pub async fn delete(&self, pattern: &KeyPattern) -> CacheResult<u64> {
        let at_ms = now_ms();
        let mut count = self.store.delete(pattern, at_ms).await?.len() as u64;
        if let Some((peers, others)) = self.others() {
            let calls = others
                .iter()
                .map(|m| async move { (m, peers.delete(&m.peer_addr, pattern, at_ms).await) });
            for (member, result) in join_all(calls).await {
                match result {
                    Ok(n) => count += n,
                    Err(e) => {
                        warn!(node = %member.node, %pattern, error = %e, "a cache missed a delete; its tombstone-less copies are removed by repair")
                    }
                }
            }
        }
        Ok(count)
    }

    /// Applies one of the control plane's object drops here only (every cache polls them
    /// itself): `prefix` is `<app>/<session>` or `<app>/*`.
    pub async fn apply_drop(&self, prefix: &str, at_ms: i64) -> CacheResult<usize> {
        let pattern = KeyPattern::parse(prefix)?;
        Ok(self.store.delete(&pattern, at_ms).await?.len())
    }

    /// Every object of the cluster under `prefix`, one meta per key (the newest version seen),
    /// sorted by key. Caches that cannot be reached are left out.
    pub async fn list(&self, prefix: &str) -> CacheResult<Vec<ObjectMeta>> {
        let mut merged: BTreeMap<ObjectKey, ObjectMeta> = BTreeMap::new();
        let mut add = |metas: Vec<ObjectMeta>| {
            for meta in metas {
                match merged.get(&meta.key) {
                    Some(known) if known.version() >= meta.version() => {}
                    _ => {
                        merged.insert(meta.key.clone(), meta);
                    }
                }
            }
        };
        add(self.store.list(prefix));
        if let Some((peers, others)) = self.others() {
            let calls = others.iter().map(|m| peers.list(&m.peer_addr, prefix));
            for result in join_all(calls).await {
                match result {
                    Ok(metas) => add(metas),
                    Err(e) => warn!(error = %e, "a cache could not be listed"),
                }
            }
        }
        Ok(merged.into_values().collect())
    }

    /// Fails a write whose object is larger than the limit.
    fn check_size(&self, what: String, size: u64) -> CacheResult<()> {
        if size > self.settings.max_object_size {
            return Err(CacheError::TooLarge {
                what,
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: usize::try_from(self.settings.max_object_size).unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }
}
