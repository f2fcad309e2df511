//! Writes: puts and patches, routed to the key's primary, stored, and replicated before they
//! are acknowledged.
//!
//! The primary is the first Ready cache of the key's ranking that answers. It holds the key's
//! write stripe while it reads the current version, stores the new one, and writes the copies,
//! so the versions of one key advance one at a time and every holder applies them in order.
//! A put of a fresh `<app>/<session>` id starts at version 1 at once; a put of a named key
//! that the primary does not hold first asks the other caches for the newest version they
//! have, so a new primary (after a join or a failure) continues the count.

use super::{CacheNode, MAX_PATCHES, now_ms};
use crate::error::{CacheError, CacheResult};
use crate::key::{ObjectKey, PutTarget};
use crate::object::{ObjectData, ObjectMeta, ValueKind};
use crate::objref::ObjectRef;
use crate::peer::proto::StoreAck;
use crate::placement::Member;
use crate::wire::Payload;
use bytes::Bytes;
use futures::future::join_all;

/// Which write the primary performs.
enum Write {
    Put {
        kind: ValueKind,
        named: bool,
        value: Bytes,
    },
    Patch {
        delta: Bytes,
    },
}

impl CacheNode {
    /// Puts `payload` at `target` (a client's put); returns the reference clients keep.
    pub async fn put(&self, target: PutTarget, payload: Payload) -> CacheResult<ObjectRef> {
        let named = matches!(target, PutTarget::Key(_));
        let key = target.into_key();
        self.check_size(format!("object {key}"), payload.len() as u64)?;
        self.metrics.bytes_in.inc_by(payload.len() as u64);
        let (kind, value) = match payload {
            Payload::Blob(b) => (ValueKind::Blob, b),
            Payload::Table(t) => (ValueKind::Table, t),
        };
        let meta = self.route(&key, Write::Put { kind, named, value }).await?;
        Ok(self.reference(&meta))
    }

    /// Appends `delta` to the object at `key` (a client's patch).
    pub async fn patch(&self, key: ObjectKey, delta: Bytes) -> CacheResult<ObjectRef> {
        self.check_size(format!("patch of {key}"), delta.len() as u64)?;
        self.metrics.bytes_in.inc_by(delta.len() as u64);
        let meta = self.route(&key, Write::Patch { delta }).await?;
        Ok(self.reference(&meta))
    }

    /// The reference to `meta` that clients get: this cache's advertised endpoint.
    fn reference(&self, meta: &ObjectMeta) -> ObjectRef {
        ObjectRef {
            endpoint: self.settings.advertised_endpoint.clone(),
            key: meta.key.to_string(),
            version: meta.version(),
        }
    }

    /// Sends the write to the first reachable Ready cache of the key's ranking, this one
    /// included; a cache that cannot be reached is skipped, an answer (even an error) is final.
    async fn route(&self, key: &ObjectKey, write: Write) -> CacheResult<ObjectMeta> {
        let directory = self.directory();
        let Some(peers) = self.peers.get() else {
            return self.primary(key.clone(), write).await;
        };
        for member in directory.ranked(key).into_iter().filter(|m| m.ready) {
            if directory.is_me(member) {
                return self.primary(key.clone(), write).await;
            }
            if peers.is_down(&member.peer_addr) {
                continue;
            }
            let result = match &write {
                Write::Put { kind, named, value } => {
                    peers
                        .forward_put(&member.peer_addr, key, *kind, *named, value.clone())
                        .await
                }
                Write::Patch { delta } => {
                    peers
                        .forward_patch(&member.peer_addr, key, delta.clone())
                        .await
                }
            };
            match result {
                Err(e) if peers.is_down(&member.peer_addr) => {
                    tracing::warn!(node = %member.node, %key, error = %e, "the primary is unreachable; trying the next cache");
                }
                other => return other,
            }
        }
        // No other Ready cache answers (or none is Ready): this one takes the write.
        self.primary(key.clone(), write).await
    }

    /// Performs a write as the key's primary.
    async fn primary(&self, key: ObjectKey, write: Write) -> CacheResult<ObjectMeta> {
        match write {
            Write::Put { kind, named, value } => self.primary_put(key, kind, named, value).await,
            Write::Patch { delta } => self.primary_patch(key, delta).await,
        }
    }

    /// Put as the primary: next version, stored here, then replicated.
    pub(super) async fn primary_put(
        &self,
        key: ObjectKey,
        kind: ValueKind,
        named: bool,
        value: Bytes,
    ) -> CacheResult<ObjectMeta> {
        self.check_size(format!("object {key}"), value.len() as u64)?;
        let _write = self.writes.lock(&key).await;
        let previous = match self.store.meta(&key) {
            Some(meta) => meta.version(),
            None if named => self.remote_version(&key).await,
            None => 0,
        };
        // Newer than any delete this cache knows of, even one in this very millisecond.
        let stored_at_ms = now_ms().max(self.store.tombstone(&key).map_or(i64::MIN, |at| at + 1));
        let data = ObjectData::new(key, kind, previous + 1, stored_at_ms, value);
        self.store.install(data.clone()).await?;
        self.replicate(&data, false).await?;
        Ok(data.meta)
    }

    /// Patch as the primary: appended here, then replicated.
    pub(super) async fn primary_patch(
        &self,
        key: ObjectKey,
        delta: Bytes,
    ) -> CacheResult<ObjectMeta> {
        let _write = self.writes.lock(&key).await;
        let current = match self.store.get(&key).await? {
            Some(current) => current,
            None => self.fetch_to_store(&key).await?,
        };
        if current.meta.kind == ValueKind::Table {
            return Err(CacheError::InvalidArgument(format!(
                "object {key} is a native Arrow table; only binary objects take patches"
            )));
        }
        if current.meta.patches.len() >= MAX_PATCHES {
            return Err(CacheError::InvalidArgument(format!(
                "object {key} already has {MAX_PATCHES} patches, the most an object may have; put it again to start over"
            )));
        }
        // An object grows with every patch; the limit bounds the whole, so patches cannot
        // build an object no put could have stored.
        self.check_size(
            format!("object {key} with this patch"),
            current.size() + delta.len() as u64,
        )?;
        let next = current.with_patch(delta);
        let (patch, bytes) = (
            next.meta.patches[next.meta.patches.len() - 1].clone(),
            next.patches[next.patches.len() - 1].clone(),
        );
        match self
            .store
            .append_patch(&key, &current.meta.base, patch, bytes)
            .await?
        {
            crate::store::PatchOutcome::Applied(_) => {}
            crate::store::PatchOutcome::NeedObject => {
                self.store.install(next.clone()).await?;
            }
        }
        self.replicate(&next, true).await?;
        Ok(next.meta)
    }

    /// Fetches `key` from another cache and keeps it here (the primary of a patch must hold
    /// the object). Not found anywhere is `NotFound`, as the spec requires for PATCH.
    async fn fetch_to_store(&self, key: &ObjectKey) -> CacheResult<crate::object::SharedObject> {
        let data = self
            .fetch_remote_object(key)
            .await?
            .ok_or_else(|| CacheError::NotFound(key.to_string()))?;
        self.store.install(data.clone()).await?;
        Ok(std::sync::Arc::new(data))
    }

    /// The newest version any other cache holds of `key`, 0 when none does.
    async fn remote_version(&self, key: &ObjectKey) -> u64 {
        let Some((peers, others)) = self.others() else {
            return 0;
        };
        let heads = join_all(others.iter().map(|m| peers.head(&m.peer_addr, key))).await;
        heads
            .into_iter()
            .filter_map(|h| h.ok().flatten())
            .map(|m| m.version())
            .max()
            .unwrap_or(0)
    }

    /// Writes `data` (or only its last patch) to the next holders until
    /// `min(replicas, Ready caches)` caches hold it, this one included.
    pub(super) async fn replicate(&self, data: &ObjectData, patch_only: bool) -> CacheResult<()> {
        let directory = self.directory();
        let wanted = self.settings.replicas.min(directory.ready_count()).max(1) - 1;
        let Some(peers) = self.peers.get().filter(|_| wanted > 0) else {
            return Ok(());
        };
        let key = &data.meta.key;
        let mut candidates: Vec<&Member> = directory
            .ranked(key)
            .into_iter()
            .filter(|m| m.ready && !directory.is_me(m))
            .collect();
        // Caches that failed a moment ago go last rather than out: one transient failure must
        // not make a put fail while that cache is the only other holder left.
        candidates.sort_by_key(|m| peers.is_down(&m.peer_addr));
        let mut next = candidates.iter();
        let (mut stored, mut failures) = (0, Vec::new());
        while stored < wanted {
            let wave: Vec<&&Member> = next.by_ref().take(wanted - stored).collect();
            if wave.is_empty() {
                break;
            }
            let pushes = wave.iter().map(|m| async move {
                let result = if patch_only {
                    peers.store_patch(&m.peer_addr, data).await
                } else {
                    peers.store(&m.peer_addr, data).await
                };
                (m, result)
            });
            for (member, result) in join_all(pushes).await {
                match result {
                    Ok(StoreAck::Stored | StoreAck::Unchanged) => {
                        stored += 1;
                        self.metrics.replica_writes.inc();
                    }
                    Ok(StoreAck::NeedObject) => {
                        failures.push(format!("{}: asked for the whole object", member.node))
                    }
                    Err(e @ (CacheError::Deleted(_) | CacheError::StorageFull(_))) => {
                        return Err(e);
                    }
                    Err(e) => failures.push(format!("{}: {e}", member.node)),
                }
            }
        }
        if stored < wanted {
            return Err(CacheError::Unavailable(format!(
                "object {key} is stored on {} of the {} caches it needs: {}",
                stored + 1,
                wanted + 1,
                if failures.is_empty() {
                    "no other Ready cache is reachable".to_owned()
                } else {
                    failures.join("; ")
                }
            )));
        }
        Ok(())
    }
}
