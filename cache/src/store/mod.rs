//! The store: this node's objects, in memory with LRU eviction, over a disk directory.
//!
//! What: [`Store`] holds every object this node is a holder of. Metadata is always in memory;
//! bytes are *resident* (in memory) or only on disk. Reads of a non-resident object load it
//! from disk and check its hashes. Writes go to disk first (write, then rename) and then become
//! resident. Eviction, by resident bytes and by resident object count, least recently used
//! first, drops only the in-memory copy, except without a disk directory, where it drops the
//! object (as upstream's `storage: none`). Deletes leave [`tombstones::Tombstones`].
//!
//! Why: one owner for the node's objects, shared by the Flight face, the peer protocol and
//! repair. The index sits behind one `std` mutex held only for map updates, never across I/O;
//! disk work for one key is serialised by [`Stripes`], so a file is never replaced while it is
//! read or removed.
//!
//! Caveats:
//! - A record found corrupt on read is quarantined and the object dropped locally; the caller
//!   then fetches it from another holder, as it does for any object this node lacks.
//! - `max_disk_bytes` is a quota on object bytes (not file system blocks); a real full disk is
//!   reported as [`CacheError::StorageFull`] too.

pub mod disk;
pub mod tombstones;

use crate::error::{CacheError, CacheResult};
use crate::key::{KeyPattern, ObjectKey};
use crate::object::{ObjectData, ObjectMeta, RecordMeta, SharedObject};
use crate::stripes::Stripes;
use bytes::Bytes;
use disk::Disk;
use lru::LruCache;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tombstones::Tombstones;

/// How the store keeps objects.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The storage directory; `None` keeps objects in memory only.
    pub dir: Option<PathBuf>,
    /// Most bytes kept resident.
    pub max_memory_bytes: u64,
    /// Most objects kept resident; 0 means no limit.
    pub max_objects: usize,
    /// Most object bytes on disk; `None` means as many as the disk holds.
    pub max_disk_bytes: Option<u64>,
    /// Whether record files (and their directory) are fsynced before they are renamed into place.
    pub fsync: bool,
    /// How long tombstones are kept, in milliseconds.
    pub tombstone_ttl_ms: i64,
}

impl Default for StoreConfig {
    /// Memory only, 1 GiB resident, no object limit, tombstones for 24 hours.
    fn default() -> Self {
        StoreConfig {
            dir: None,
            max_memory_bytes: 1 << 30,
            max_objects: 0,
            max_disk_bytes: None,
            fsync: false,
            tombstone_ttl_ms: 24 * 3600 * 1000,
        }
    }
}

/// What loading the storage directory found.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Objects loaded.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Files moved to quarantine, with why.
    pub quarantined: Vec<(PathBuf, String)>,
    /// Stale files removed.
    pub stale_removed: usize,
}

/// How an install ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The object is stored at the given version.
    Stored,
    /// This store already has this version or a newer one; nothing changed.
    Unchanged {
        /// The version held.
        version: u64,
    },
}

/// How appending a received patch ended.
#[derive(Debug)]
pub enum PatchOutcome {
    /// The patch is stored; the object now.
    Applied(SharedObject),
    /// The local copy is not the base the patch follows (or is missing): send the whole object.
    NeedObject,
}

/// Counters and gauges of the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Objects held.
    pub objects: u64,
    /// Objects resident in memory.
    pub resident_objects: u64,
    /// Bytes resident in memory.
    pub resident_bytes: u64,
    /// Object bytes on disk.
    pub disk_bytes: u64,
    /// Evictions from memory since start.
    pub evictions: u64,
    /// Objects loaded from disk into memory since start.
    pub disk_loads: u64,
    /// Tombstones held.
    pub tombstones: u64,
}

#[derive(Debug)]
struct Entry {
    meta: ObjectMeta,
    resident: Option<SharedObject>,
}

#[derive(Debug)]
struct Index {
    objects: HashMap<ObjectKey, Entry>,
    lru: LruCache<ObjectKey, ()>,
    resident_bytes: u64,
    disk_bytes: u64,
    tombstones: Tombstones,
}

/// This node's objects. See the module docs.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    disk: Option<Disk>,
    index: Mutex<Index>,
    stripes: Stripes,
    evictions: AtomicU64,
    disk_loads: AtomicU64,
}

impl Store {
    /// Opens the store, reloading every object in the storage directory; `now_ms` dates the
    /// expiry of old tombstones.
    pub fn open(config: StoreConfig, now_ms: i64) -> CacheResult<(Store, LoadReport)> {
        let mut report = LoadReport::default();
        let (disk, metas, tombstone_file) = match &config.dir {
            Some(dir) => {
                let (disk, tmp_removed) = Disk::open(dir, config.fsync)?;
                let scan = disk.scan()?;
                report.quarantined = scan.quarantined;
                report.stale_removed = scan.stale_removed + tmp_removed;
                (Some(disk), scan.objects, Some(dir.join("tombstones")))
            }
            None => (None, Vec::new(), None),
        };
        let tombstones = Tombstones::load(tombstone_file, now_ms - config.tombstone_ttl_ms)?;
        let mut index = Index {
            objects: HashMap::with_capacity(metas.len()),
            lru: LruCache::unbounded(),
            resident_bytes: 0,
            disk_bytes: 0,
            tombstones,
        };
        for meta in metas {
            report.objects += 1;
            report.bytes += meta.size();
            index.disk_bytes += meta.size();
            index.objects.insert(
                meta.key.clone(),
                Entry {
                    meta,
                    resident: None,
                },
            );
        }
        let store = Store {
            config,
            disk,
            index: Mutex::new(index),
            stripes: Stripes::default(),
            evictions: AtomicU64::new(0),
            disk_loads: AtomicU64::new(0),
        };
        Ok((store, report))
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping every request would, so a poisoned lock is used as is.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The storage directory, if any.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.config.dir.as_deref()
    }

    /// Whether objects outlive the process.
    pub fn is_durable(&self) -> bool {
        self.disk.is_some()
    }

    /// The meta of `key`, if held.
    pub fn meta(&self, key: &ObjectKey) -> Option<ObjectMeta> {
        self.index().objects.get(key).map(|e| e.meta.clone())
    }

    /// The metas of every object whose key starts with `prefix`, sorted by key.
    pub fn list(&self, prefix: &str) -> Vec<ObjectMeta> {
        let mut out: Vec<ObjectMeta> = self
            .index()
            .objects
            .values()
            .filter(|e| e.meta.key.has_prefix(prefix))
            .map(|e| e.meta.clone())
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The newest tombstone time covering `key`, if any.
    pub fn tombstone(&self, key: &ObjectKey) -> Option<i64> {
        self.index().tombstones.covering(key)
    }

    /// Whether a tombstone deletes an object at `key` stored at `stored_at_ms`.
    pub fn is_deleted(&self, key: &ObjectKey, stored_at_ms: i64) -> bool {
        self.index().tombstones.deletes(key, stored_at_ms)
    }

    /// The object at `key` with its bytes, loading it from disk when it is not resident.
    /// `Ok(None)` when it is not held (or its files turned out corrupt).
    pub async fn get(&self, key: &ObjectKey) -> CacheResult<Option<SharedObject>> {
        if let Some(hit) = self.resident(key) {
            return Ok(Some(hit));
        }
        let _stripe = self.stripes.lock(key).await;
        if let Some(hit) = self.resident(key) {
            return Ok(Some(hit));
        }
        let (Some(meta), Some(_)) = (self.meta(key), &self.disk) else {
            return Ok(None);
        };
        match self.load(meta.clone()).await {
            Ok(data) => {
                self.disk_loads.fetch_add(1, Ordering::Relaxed);
                let data = Arc::new(data);
                let mut index = self.index();
                if let Some(entry) = index.objects.get_mut(key).filter(|e| e.meta == meta) {
                    entry.resident = Some(data.clone());
                    index.resident_bytes += data.size();
                    index.lru.put(key.clone(), ());
                    self.evict(&mut index);
                }
                Ok(Some(data))
            }
            Err(CacheError::Corrupt(why)) => {
                tracing::error!(key = %key, why, "a stored object is corrupt; dropping this node's copy");
                if let Some(disk) = &self.disk {
                    disk.files_of(&meta).iter().for_each(|p| disk.quarantine(p));
                }
                self.forget(key, &meta);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn resident(&self, key: &ObjectKey) -> Option<SharedObject> {
        let mut index = self.index();
        let hit = index.objects.get(key)?.resident.clone()?;
        index.lru.promote(key);
        Some(hit)
    }

    async fn load(&self, meta: ObjectMeta) -> CacheResult<ObjectData> {
        let Some(disk) = self.disk.clone() else {
            return Err(CacheError::Internal("a disk read without a disk".into()));
        };
        tokio::task::spawn_blocking(move || disk.read_object(&meta))
            .await
            .map_err(|e| CacheError::Internal(format!("a disk read task failed: {e}")))?
    }

    fn forget(&self, key: &ObjectKey, meta: &ObjectMeta) {
        let mut index = self.index();
        if index.objects.get(key).is_some_and(|e| e.meta == *meta) {
            self.remove_entry(&mut index, key);
        }
    }

    fn remove_entry(&self, index: &mut Index, key: &ObjectKey) -> Option<Entry> {
        let entry = index.objects.remove(key)?;
        if let Some(data) = &entry.resident {
            index.resident_bytes -= data.size();
            index.lru.pop(key);
        }
        if self.disk.is_some() {
            index.disk_bytes = index.disk_bytes.saturating_sub(entry.meta.size());
        }
        Some(entry)
    }

    /// Drops resident copies, least recently used first, until both limits hold.
    fn evict(&self, index: &mut Index) {
        let over = |i: &Index| {
            i.resident_bytes > self.config.max_memory_bytes
                || (self.config.max_objects > 0 && i.lru.len() > self.config.max_objects)
        };
        while over(index) {
            let Some((key, ())) = index.lru.pop_lru() else {
                break;
            };
            self.evictions.fetch_add(1, Ordering::Relaxed);
            if self.disk.is_none() {
                // Nothing else holds the bytes: the object is gone from this node.
                if let Some(entry) = index.objects.remove(&key) {
                    index.resident_bytes -= entry.resident.map_or(0, |d| d.size());
                }
                continue;
            }
            if let Some(data) = index.objects.get_mut(&key).and_then(|e| e.resident.take()) {
                index.resident_bytes -= data.size();
            }
        }
    }

    /// Checks the quota and the tombstones before a write of `data` replacing `old_size`
    /// bytes; reserves the disk bytes.
    fn admit(&self, index: &mut Index, data: &ObjectData, old_size: u64) -> CacheResult<()> {
        let key = &data.meta.key;
        if let Some(at) = index
            .tombstones
            .covering(key)
            .filter(|at| data.meta.stored_at_ms <= *at)
        {
            return Err(CacheError::Deleted(format!(
                "object {key} was deleted at {at} ms, after it was stored at {} ms",
                data.meta.stored_at_ms
            )));
        }
        if self.disk.is_none() && data.size() > self.config.max_memory_bytes {
            return Err(CacheError::StorageFull(format!(
                "object {key} of {} bytes exceeds the cache's memory of {} bytes and there is no disk to hold it",
                data.size(),
                self.config.max_memory_bytes
            )));
        }
        if let Some(max) = self.config.max_disk_bytes.filter(|_| self.disk.is_some()) {
            let after = index.disk_bytes.saturating_sub(old_size) + data.size();
            if after > max {
                return Err(CacheError::StorageFull(format!(
                    "object {key} of {} bytes does not fit: the cache's disk quota of {max} bytes has {} bytes free",
                    data.size(),
                    max.saturating_sub(index.disk_bytes)
                )));
            }
        }
        if self.disk.is_some() {
            index.disk_bytes = index.disk_bytes.saturating_sub(old_size) + data.size();
        }
        Ok(())
    }

    /// Stores a whole object at its version, replacing an older one. A copy at the same or a
    /// newer version already held is kept ([`Installed::Unchanged`]).
    pub async fn install(&self, data: ObjectData) -> CacheResult<Installed> {
        let key = data.meta.key.clone();
        let _stripe = self.stripes.lock(&key).await;
        let old = self.meta(&key);
        if let Some(old) = old.as_ref().filter(|o| o.version() >= data.meta.version()) {
            return Ok(Installed::Unchanged {
                version: old.version(),
            });
        }
        let old_size = old.as_ref().map_or(0, ObjectMeta::size);
        self.admit(&mut self.index(), &data, old_size)?;
        let data = Arc::new(data);
        if let Some(disk) = self.disk.clone() {
            let (written, old_meta) = (data.clone(), old.clone());
            let result =
                tokio::task::spawn_blocking(move || disk.write_object(&written, old_meta.as_ref()))
                    .await
                    .map_err(|e| CacheError::Internal(format!("a disk write task failed: {e}")))
                    .and_then(|r| r);
            if let Err(e) = result {
                let mut index = self.index();
                index.disk_bytes = index.disk_bytes.saturating_sub(data.size()) + old_size;
                return Err(e);
            }
        }
        self.commit(&key, data);
        Ok(Installed::Stored)
    }

    /// Makes `data` the held, resident copy of `key`.
    fn commit(&self, key: &ObjectKey, data: SharedObject) {
        let mut index = self.index();
        let resident_before = index
            .objects
            .get(key)
            .and_then(|e| e.resident.as_ref())
            .map_or(0, |d| d.size());
        index.resident_bytes = index.resident_bytes - resident_before + data.size();
        index.objects.insert(
            key.clone(),
            Entry {
                meta: data.meta.clone(),
                resident: Some(data),
            },
        );
        index.lru.put(key.clone(), ());
        self.evict(&mut index);
    }

    /// Appends a patch to the held copy of `key`, which must be exactly at `base` with
    /// `patches_before` patches (its version one less than the patch's).
    pub async fn append_patch(
        &self,
        key: &ObjectKey,
        base: &RecordMeta,
        patch: RecordMeta,
        bytes: Bytes,
    ) -> CacheResult<PatchOutcome> {
        if patch.len != bytes.len() as u64 || crate::object::hash(&bytes) != patch.hash {
            return Err(CacheError::Corrupt(format!(
                "patch v{} of {key} does not match its hash",
                patch.version
            )));
        }
        let _stripe = self.stripes.lock(key).await;
        let current = match self.meta(key) {
            Some(m) if m.base == *base && m.version() + 1 == patch.version => m,
            Some(m) if m.version() >= patch.version && m.base == *base => {
                // A repeat of a patch already applied.
                return Ok(self
                    .get_unlocked(key)
                    .await?
                    .map_or(PatchOutcome::NeedObject, PatchOutcome::Applied));
            }
            _ => return Ok(PatchOutcome::NeedObject),
        };
        let Some(object) = self.get_unlocked(key).await? else {
            return Ok(PatchOutcome::NeedObject);
        };
        let mut next = (*object).clone();
        next.meta.patches.push(patch);
        next.patches.push(bytes);
        self.admit(&mut self.index(), &next, current.size())?;
        let next = Arc::new(next);
        if let Some(disk) = self.disk.clone() {
            let written = next.clone();
            let result = tokio::task::spawn_blocking(move || disk.write_last_patch(&written))
                .await
                .map_err(|e| CacheError::Internal(format!("a disk write task failed: {e}")))
                .and_then(|r| r);
            if let Err(e) = result {
                let mut index = self.index();
                index.disk_bytes = index.disk_bytes.saturating_sub(next.size()) + current.size();
                return Err(e);
            }
        }
        self.commit(key, next.clone());
        Ok(PatchOutcome::Applied(next))
    }

    /// [`Store::get`] for a caller that already holds the key's stripe.
    async fn get_unlocked(&self, key: &ObjectKey) -> CacheResult<Option<SharedObject>> {
        if let Some(hit) = self.resident(key) {
            return Ok(Some(hit));
        }
        let Some(meta) = self.meta(key).filter(|_| self.disk.is_some()) else {
            return Ok(None);
        };
        let data = self.load(meta).await?;
        Ok(Some(Arc::new(data)))
    }

    /// Records a tombstone for `pattern` at `at_ms` and deletes the objects it covers. Returns
    /// the keys deleted.
    pub async fn delete(&self, pattern: &KeyPattern, at_ms: i64) -> CacheResult<Vec<ObjectKey>> {
        let removed: Vec<Entry> = {
            let mut index = self.index();
            index.tombstones.add(pattern.clone(), at_ms)?;
            let keys: Vec<ObjectKey> = index
                .objects
                .values()
                .filter(|e| pattern.matches(&e.meta.key) && e.meta.stored_at_ms <= at_ms)
                .map(|e| e.meta.key.clone())
                .collect();
            keys.iter()
                .filter_map(|k| self.remove_entry(&mut index, k))
                .collect()
        };
        let keys = removed.iter().map(|e| e.meta.key.clone()).collect();
        for entry in removed {
            self.remove_files(&entry.meta).await;
        }
        Ok(keys)
    }

    /// Removes the files of a forgotten object, sparing any a newer copy of the key uses.
    async fn remove_files(&self, meta: &ObjectMeta) {
        let Some(disk) = &self.disk else {
            return;
        };
        let _stripe = self.stripes.lock(&meta.key).await;
        let current = self.meta(&meta.key);
        disk.remove_files(meta, current.as_ref());
    }

    /// Drops this node's copy of `key` if it is still at `version` (placement moved it).
    pub async fn drop_copy(&self, key: &ObjectKey, version: u64) -> bool {
        let entry = {
            let mut index = self.index();
            if index
                .objects
                .get(key)
                .is_none_or(|e| e.meta.version() != version)
            {
                return false;
            }
            self.remove_entry(&mut index, key)
        };
        if let Some(entry) = entry {
            self.remove_files(&entry.meta).await;
        }
        true
    }

    /// Forgets tombstones older than `before_ms`.
    pub fn expire_tombstones(&self, before_ms: i64) -> CacheResult<usize> {
        self.index().tombstones.expire(before_ms)
    }

    /// Counters and gauges.
    pub fn stats(&self) -> StoreStats {
        let index = self.index();
        StoreStats {
            objects: index.objects.len() as u64,
            resident_objects: index.lru.len() as u64,
            resident_bytes: index.resident_bytes,
            disk_bytes: index.disk_bytes,
            evictions: self.evictions.load(Ordering::Relaxed),
            disk_loads: self.disk_loads.load(Ordering::Relaxed),
            tombstones: index.tombstones.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests;
