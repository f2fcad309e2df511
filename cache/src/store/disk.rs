//! The cache's disk layout: one file per record, written to a temporary name and renamed, and
//! the scan that reloads them at start-up.
//!
//! Layout under the storage directory:
//!
//! | Path | Content |
//! |---|---|
//! | `objects/<app>/<session>/<id>.v<version>.base` | the base record of `<app>/<session>/<id>` |
//! | `objects/<app>/<session>/<id>.p<version>.patch` | one patch record |
//! | `tmp/` | records being written; emptied at start-up |
//! | `quarantine/` | files found corrupt at start-up, kept for the operator |
//!
//! Every file is `FLMCOBJ\x01`, a little-endian `u32` header length, a postcard [`FileHeader`]
//! (key, kind, time stored, the record's version, size and BLAKE3 hash, and for a patch the
//! base version it follows), then the record's bytes.
//!
//! Why one file per record, named by version: a put writes its new base under a new name and
//! renames it into place, so an object is never half-written; a patch is one more file. A crash
//! between steps leaves files the scan recognises as stale (an older base, patches of another
//! base) and deletes.
//!
//! Caveats:
//! - The scan reads headers only and checks sizes; hashes are checked when a record is read, so
//!   start-up does not read every byte. A file that fails either check is moved to
//!   `quarantine/` and its object is dropped from this node (a replica still has it).
//! - Files are not fsynced unless the cache is configured to (`fsync`); durability against
//!   losing a node comes from the replicas.

use crate::error::{CacheError, CacheResult};
use crate::key::ObjectKey;
use crate::object::{ObjectData, ObjectMeta, RecordMeta, ValueKind, hash};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"FLMCOBJ\x01";
/// Largest header the scan accepts; real ones are a few hundred bytes.
const MAX_HEADER: u32 = 64 * 1024;

/// The header of a record file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    /// The object.
    pub key: ObjectKey,
    /// Blob or table.
    pub kind: ValueKind,
    /// When the object's base was stored.
    pub stored_at_ms: i64,
    /// This record.
    pub record: RecordMeta,
    /// For a patch, the version of the base it follows; for a base, its own version.
    pub base_version: u64,
    /// Whether this is a patch.
    pub patch: bool,
}

/// The storage directory (cheap to clone: a path and a flag).
#[derive(Debug, Clone)]
pub struct Disk {
    root: PathBuf,
    fsync: bool,
}

/// What a start-up scan found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// The objects, complete and consistent.
    pub objects: Vec<ObjectMeta>,
    /// Files moved to `quarantine/`, with why.
    pub quarantined: Vec<(PathBuf, String)>,
    /// Stale files deleted (older bases, orphan patches, leftovers in `tmp/`).
    pub stale_removed: usize,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CacheError {
    let context = context.into();
    move |e| CacheError::io(context, e)
}

impl Disk {
    /// Opens (creating) the storage directory and empties its `tmp/`.
    pub fn open(root: &Path, fsync: bool) -> CacheResult<(Disk, usize)> {
        for sub in ["objects", "tmp", "quarantine"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        let tmp = root.join("tmp");
        let mut removed = 0;
        for entry in fs::read_dir(&tmp)
            .map_err(io(format!("listing {}", tmp.display())))?
            .flatten()
        {
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok((
            Disk {
                root: root.to_owned(),
                fsync,
            },
            removed,
        ))
    }

    fn object_dir(&self, key: &ObjectKey) -> PathBuf {
        self.root.join("objects").join(&key.app).join(&key.session)
    }

    fn base_path(&self, key: &ObjectKey, version: u64) -> PathBuf {
        self.object_dir(key)
            .join(format!("{}.v{version}.base", key.object))
    }

    fn patch_path(&self, key: &ObjectKey, version: u64) -> PathBuf {
        self.object_dir(key)
            .join(format!("{}.p{version}.patch", key.object))
    }

    /// Writes one record file: to `tmp/`, then renamed to `path`.
    fn write_record(&self, path: &Path, header: &FileHeader, data: &[u8]) -> CacheResult<()> {
        let header = postcard::to_allocvec(header)
            .map_err(|e| CacheError::Internal(format!("encoding a file header: {e}")))?;
        let tmp = self.root.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let result = (|| {
            let mut file = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
            let context = format!("writing {}", path.display());
            file.write_all(MAGIC).map_err(io(&context))?;
            file.write_all(&(header.len() as u32).to_le_bytes())
                .map_err(io(&context))?;
            file.write_all(&header).map_err(io(&context))?;
            file.write_all(data).map_err(io(&context))?;
            if self.fsync {
                file.sync_all().map_err(io(&context))?;
            }
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
            }
            fs::rename(&tmp, path).map_err(io(format!("renaming into {}", path.display())))?;
            if self.fsync
                && let Some(parent) = path.parent()
            {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(io(format!("syncing {}", parent.display())))?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn header(meta: &ObjectMeta, record: &RecordMeta, patch: bool) -> FileHeader {
        FileHeader {
            key: meta.key.clone(),
            kind: meta.kind,
            stored_at_ms: meta.stored_at_ms,
            record: record.clone(),
            base_version: meta.base.version,
            patch,
        }
    }

    /// Writes a whole object (patches first, the base last, so a crash in between leaves only
    /// orphan patches), then removes the files of `replaced`, the object it replaces.
    pub fn write_object(
        &self,
        data: &ObjectData,
        replaced: Option<&ObjectMeta>,
    ) -> CacheResult<()> {
        let meta = &data.meta;
        for (record, bytes) in meta.patches.iter().zip(&data.patches) {
            let path = self.patch_path(&meta.key, record.version);
            self.write_record(&path, &Self::header(meta, record, true), bytes)?;
        }
        let path = self.base_path(&meta.key, meta.base.version);
        self.write_record(&path, &Self::header(meta, &meta.base, false), &data.base)?;
        if let Some(old) = replaced {
            self.remove_files(old, Some(meta));
        }
        Ok(())
    }

    /// Writes the last patch of `data`.
    pub fn write_last_patch(&self, data: &ObjectData) -> CacheResult<()> {
        let meta = &data.meta;
        let (Some(record), Some(bytes)) = (meta.patches.last(), data.patches.last()) else {
            return Err(CacheError::Internal(format!(
                "{} has no patch to write",
                meta.key
            )));
        };
        self.write_record(
            &self.patch_path(&meta.key, record.version),
            &Self::header(meta, record, true),
            bytes,
        )
    }

    /// Removes the files of `meta`, except those `keep` also names.
    pub fn remove_files(&self, meta: &ObjectMeta, keep: Option<&ObjectMeta>) {
        let kept = |path: &PathBuf| keep.is_some_and(|k| self.paths(k).contains(path));
        for path in self.paths(meta) {
            if !kept(&path) {
                let _ = fs::remove_file(&path);
            }
        }
        if keep.is_none() {
            // Only succeeds when the session directory is empty, which is what we want.
            let _ = fs::remove_dir(self.object_dir(&meta.key));
        }
    }

    fn paths(&self, meta: &ObjectMeta) -> Vec<PathBuf> {
        std::iter::once(self.base_path(&meta.key, meta.base.version))
            .chain(
                meta.patches
                    .iter()
                    .map(|p| self.patch_path(&meta.key, p.version)),
            )
            .collect()
    }

    /// Reads and checks every record of `meta`.
    pub fn read_object(&self, meta: &ObjectMeta) -> CacheResult<ObjectData> {
        let base = self.read_record(&self.base_path(&meta.key, meta.base.version), &meta.base)?;
        let patches = meta
            .patches
            .iter()
            .map(|p| self.read_record(&self.patch_path(&meta.key, p.version), p))
            .collect::<CacheResult<Vec<_>>>()?;
        Ok(ObjectData {
            meta: meta.clone(),
            base,
            patches,
        })
    }

    fn read_record(&self, path: &Path, expected: &RecordMeta) -> CacheResult<Bytes> {
        let bytes = Bytes::from(fs::read(path).map_err(io(format!("reading {}", path.display())))?);
        let (header, offset) = parse_header(&bytes)
            .map_err(|why| CacheError::Corrupt(format!("{}: {why}", path.display())))?;
        let data = bytes.slice(offset..);
        if header.record != *expected
            || data.len() as u64 != expected.len
            || hash(&data) != expected.hash
        {
            return Err(CacheError::Corrupt(format!(
                "{}: the record does not match its hash",
                path.display()
            )));
        }
        Ok(data)
    }

    /// Moves `path` to `quarantine/`.
    pub fn quarantine(&self, path: &Path) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = self
            .root
            .join("quarantine")
            .join(format!("{}-{name}", uuid::Uuid::new_v4()));
        if fs::rename(path, &target).is_err() {
            let _ = fs::remove_file(path);
        }
    }

    /// Paths of every record file of `meta`, for quarantining an object found corrupt.
    pub fn files_of(&self, meta: &ObjectMeta) -> Vec<PathBuf> {
        self.paths(meta)
    }

    /// Finds every object under `objects/`: see the module docs.
    pub fn scan(&self) -> CacheResult<ScanReport> {
        let mut report = ScanReport::default();
        let objects = self.root.join("objects");
        for app in read_dirs(&objects)? {
            for session in read_dirs(&app)? {
                self.scan_session(&session, &mut report)?;
            }
        }
        Ok(report)
    }

    fn scan_session(&self, dir: &Path, report: &mut ScanReport) -> CacheResult<()> {
        let mut found: BTreeMap<String, Vec<(PathBuf, FileHeader)>> = BTreeMap::new();
        let entries = fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            match read_header(&path) {
                Ok(header) => found
                    .entry(header.key.object.clone())
                    .or_default()
                    .push((path, header)),
                Err(why) => {
                    tracing::error!(path = %path.display(), why, "corrupt cache file moved to quarantine");
                    self.quarantine(&path);
                    report.quarantined.push((path, why));
                }
            }
        }
        for files in found.into_values() {
            let (meta, stale) = assemble(files);
            for path in stale {
                let _ = fs::remove_file(path);
                report.stale_removed += 1;
            }
            report.objects.extend(meta);
        }
        Ok(())
    }
}

/// The subdirectories of `dir`.
fn read_dirs(dir: &Path) -> CacheResult<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?;
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect())
}

/// Parses the magic and header at the start of a record file; returns the data offset.
fn parse_header(bytes: &[u8]) -> Result<(FileHeader, usize), String> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err("not a cache record file (bad magic)".into());
    }
    let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if len > MAX_HEADER || bytes.len() < 12 + len as usize {
        return Err("truncated header".into());
    }
    let header: FileHeader = postcard::from_bytes(&bytes[12..12 + len as usize])
        .map_err(|e| format!("bad header: {e}"))?;
    Ok((header, 12 + len as usize))
}

/// Reads a file's header and checks that the file holds exactly the record it announces and
/// that its name matches it.
fn read_header(path: &Path) -> Result<FileHeader, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut start = vec![0_u8; 12];
    file.read_exact(&mut start)
        .map_err(|_| "shorter than a header".to_string())?;
    let len = u32::from_le_bytes([start[8], start[9], start[10], start[11]]);
    if &start[..8] != MAGIC || len > MAX_HEADER {
        return Err("not a cache record file (bad magic)".into());
    }
    start.resize(12 + len as usize, 0);
    file.read_exact(&mut start[12..])
        .map_err(|_| "truncated header".to_string())?;
    let (header, offset) = parse_header(&start)?;
    if size != offset as u64 + header.record.len {
        return Err(format!(
            "size {size} does not match the header's record of {} bytes",
            header.record.len
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expected = if header.patch {
        format!("{}.p{}.patch", header.key.object, header.record.version)
    } else {
        format!("{}.v{}.base", header.key.object, header.record.version)
    };
    if name != expected {
        return Err(format!("its header names {expected}"));
    }
    Ok(header)
}

/// Builds an object from its files: the newest base, then the patches that follow it one
/// version at a time. Returns the object (if it has a base) and the stale files.
fn assemble(files: Vec<(PathBuf, FileHeader)>) -> (Option<ObjectMeta>, Vec<PathBuf>) {
    let newest_base = files
        .iter()
        .filter(|(_, h)| !h.patch)
        .map(|(_, h)| h.record.version)
        .max();
    let Some(base_version) = newest_base else {
        return (None, files.into_iter().map(|(p, _)| p).collect());
    };
    let mut stale = Vec::new();
    let mut base = None;
    let mut patches = BTreeMap::new();
    for (path, header) in files {
        if !header.patch && header.record.version == base_version {
            base = Some(header);
        } else if header.patch
            && header.base_version == base_version
            && header.record.version > base_version
        {
            patches.insert(header.record.version, (path, header));
        } else {
            stale.push(path);
        }
    }
    let Some(base) = base else {
        return (None, stale);
    };
    let mut meta = ObjectMeta {
        key: base.key,
        kind: base.kind,
        stored_at_ms: base.stored_at_ms,
        base: base.record,
        patches: Vec::new(),
    };
    for (version, (path, header)) in patches {
        if version == meta.version() + 1 {
            meta.patches.push(header.record);
        } else {
            stale.push(path);
        }
    }
    (Some(meta), stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(version: u64, bytes: &'static [u8]) -> ObjectData {
        ObjectData::new(
            ObjectKey::parse("app/ssn/obj.1").unwrap(),
            ValueKind::Blob,
            version,
            7,
            Bytes::from_static(bytes),
        )
    }

    #[test]
    fn an_object_written_with_patches_is_found_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, _) = Disk::open(dir.path(), false).unwrap();
        let o = object(1, b"base").with_patch(Bytes::from_static(b"p2"));
        disk.write_object(&o, None).unwrap();
        let o = o.with_patch(Bytes::from_static(b"p3"));
        disk.write_last_patch(&o).unwrap();
        let report = disk.scan().unwrap();
        assert_eq!(report.objects, vec![o.meta.clone()]);
        assert_eq!(disk.read_object(&o.meta).unwrap(), o);
    }

    #[test]
    fn a_replaced_object_leaves_only_its_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, _) = Disk::open(dir.path(), false).unwrap();
        let old = object(1, b"old").with_patch(Bytes::from_static(b"p2"));
        disk.write_object(&old, None).unwrap();
        let new = object(3, b"new");
        disk.write_object(&new, Some(&old.meta)).unwrap();
        let report = disk.scan().unwrap();
        assert_eq!(report.objects, vec![new.meta]);
        assert_eq!(report.stale_removed, 0);
    }

    #[test]
    fn leftovers_of_a_crash_are_stale_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, _) = Disk::open(dir.path(), false).unwrap();
        let old = object(1, b"old");
        disk.write_object(&old, None).unwrap();
        // A crash after writing the newer base but before removing the old one.
        let new = object(2, b"new");
        disk.write_object(&new, None).unwrap();
        let report = disk.scan().unwrap();
        assert_eq!(report.objects, vec![new.meta]);
        assert_eq!(report.stale_removed, 1);
    }

    #[test]
    fn a_truncated_or_foreign_file_is_quarantined_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, _) = Disk::open(dir.path(), false).unwrap();
        let o = object(1, b"0123456789");
        disk.write_object(&o, None).unwrap();
        let path = disk.base_path(&o.meta.key, 1);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        fs::write(path.with_file_name("junk.v1.base"), b"hello").unwrap();
        let report = disk.scan().unwrap();
        assert!(report.objects.is_empty());
        assert_eq!(report.quarantined.len(), 2);
        assert_eq!(
            fs::read_dir(dir.path().join("quarantine")).unwrap().count(),
            2
        );
    }

    #[test]
    fn a_flipped_byte_is_caught_when_the_record_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, _) = Disk::open(dir.path(), false).unwrap();
        let o = object(1, b"0123456789");
        disk.write_object(&o, None).unwrap();
        let path = disk.base_path(&o.meta.key, 1);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert_eq!(disk.scan().unwrap().objects.len(), 1, "sizes still match");
        assert!(matches!(
            disk.read_object(&o.meta),
            Err(CacheError::Corrupt(_))
        ));
    }
}
