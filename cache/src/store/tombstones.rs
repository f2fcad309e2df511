//! Tombstones: the record of deletes, so a copy that missed a delete cannot come back.
//!
//! What: a tombstone says "objects matching this pattern and stored at or before this time are
//! deleted". The store consults it when it installs an object (a replica push, a repair) and
//! refuses covered ones, and applies it to what it holds. Tombstones come from `DELETE`s
//! (broadcast to every cache) and from the control plane's object drops (closed sessions,
//! unregistered applications).
//!
//! Why times and not just "delete now": a holder that was down during a delete still has the
//! object; when it offers the object back, a peer's tombstone refuses it and tells it to drop
//! its copy. A later put under the same name is newer than the tombstone (the primary stamps it
//! after the newest tombstone it knows), so deleting and re-creating an application's objects
//! works.
//!
//! Caveats:
//! - Times come from different clocks (the leader's for drops, the deleting cache's for
//!   `DELETE`s, the primary's for objects); skew larger than the gap between a delete and a
//!   re-put can delete the new object on a node that learns of the delete late.
//! - Tombstones expire after a configured time (default 24 h); a node down for longer can bring
//!   back objects deleted while it was down.
//! - The file is append-only (`<at_ms> <pattern>` per line) and rewritten when expired entries
//!   are dropped.

use crate::error::{CacheError, CacheResult};
use crate::key::{KeyPattern, ObjectKey};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

/// The tombstones a store knows, by pattern, with the newest time of each.
#[derive(Debug, Default)]
pub struct Tombstones {
    entries: HashMap<KeyPattern, i64>,
    by_app: HashMap<String, i64>,
    file: Option<PathBuf>,
}

impl Tombstones {
    /// Loads the tombstones in `file` (if any) newer than `expire_before_ms`.
    pub fn load(file: Option<PathBuf>, expire_before_ms: i64) -> CacheResult<Tombstones> {
        let mut tombstones = Tombstones {
            file,
            ..Tombstones::default()
        };
        let Some(path) = tombstones.file.clone() else {
            return Ok(tombstones);
        };
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(CacheError::io(format!("reading {}", path.display()), e)),
        };
        for line in text.lines() {
            // A torn last line after a crash is skipped, as is anything unparsable.
            let parsed = line.split_once(' ').and_then(|(at, pattern)| {
                Some((at.parse::<i64>().ok()?, KeyPattern::parse(pattern).ok()?))
            });
            if let Some((at, pattern)) = parsed.filter(|(at, _)| *at >= expire_before_ms) {
                tombstones.remember(pattern, at);
            }
        }
        tombstones.rewrite()?;
        Ok(tombstones)
    }

    fn remember(&mut self, pattern: KeyPattern, at_ms: i64) -> bool {
        let app = match &pattern {
            KeyPattern::Object(k) => &k.app,
            KeyPattern::Session { app, .. } | KeyPattern::App(app) => app,
        };
        let newest = self.by_app.entry(app.clone()).or_insert(at_ms);
        *newest = (*newest).max(at_ms);
        let at = self.entries.entry(pattern).or_insert(i64::MIN);
        if *at >= at_ms {
            return false;
        }
        *at = at_ms;
        true
    }

    /// Records a tombstone, appending it to the file. Returns whether it was new information.
    pub fn add(&mut self, pattern: KeyPattern, at_ms: i64) -> CacheResult<bool> {
        let line = format!("{at_ms} {pattern}\n");
        if !self.remember(pattern, at_ms) {
            return Ok(false);
        }
        if let Some(path) = &self.file {
            let context = format!("appending to {}", path.display());
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| CacheError::io(&context, e))?;
            file.write_all(line.as_bytes())
                .map_err(|e| CacheError::io(&context, e))?;
        }
        Ok(true)
    }

    /// The newest tombstone time covering `key`, if any.
    pub fn covering(&self, key: &ObjectKey) -> Option<i64> {
        // Most keys belong to applications with no tombstone at all: one lookup answers them.
        self.by_app.get(&key.app)?;
        let session = KeyPattern::Session {
            app: key.app.clone(),
            session: key.session.clone(),
        };
        [
            KeyPattern::Object(key.clone()),
            session,
            KeyPattern::App(key.app.clone()),
        ]
        .iter()
        .filter_map(|p| self.entries.get(p).copied())
        .max()
    }

    /// Whether an object at `key` stored at `stored_at_ms` is deleted.
    pub fn deletes(&self, key: &ObjectKey, stored_at_ms: i64) -> bool {
        self.covering(key).is_some_and(|at| stored_at_ms <= at)
    }

    /// Forgets tombstones older than `before_ms` and rewrites the file.
    pub fn expire(&mut self, before_ms: i64) -> CacheResult<usize> {
        let len = self.entries.len();
        self.entries.retain(|_, at| *at >= before_ms);
        self.by_app.retain(|_, at| *at >= before_ms);
        let dropped = len - self.entries.len();
        if dropped > 0 {
            self.rewrite()?;
        }
        Ok(dropped)
    }

    /// How many tombstones are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn rewrite(&self) -> CacheResult<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let text: String = self
            .entries
            .iter()
            .map(|(p, at)| format!("{at} {p}\n"))
            .collect();
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, path))
            .map_err(|e| CacheError::io(format!("rewriting {}", path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> ObjectKey {
        ObjectKey::parse(k).unwrap()
    }

    #[test]
    fn a_tombstone_deletes_only_older_objects_it_matches() {
        let mut t = Tombstones::default();
        t.add(KeyPattern::parse("app/ssn").unwrap(), 100).unwrap();
        assert!(t.deletes(&key("app/ssn/x"), 100));
        assert!(!t.deletes(&key("app/ssn/x"), 101), "newer than the delete");
        assert!(!t.deletes(&key("app/other/x"), 1));
        t.add(KeyPattern::parse("app/*").unwrap(), 200).unwrap();
        assert!(t.deletes(&key("app/other/x"), 150));
        assert_eq!(t.covering(&key("app/ssn/x")), Some(200));
    }

    #[test]
    fn tombstones_survive_a_reload_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tombstones");
        let mut t = Tombstones::load(Some(file.clone()), 0).unwrap();
        t.add(KeyPattern::parse("a/s").unwrap(), 10).unwrap();
        t.add(KeyPattern::parse("b/*").unwrap(), 500).unwrap();
        assert!(
            !t.add(KeyPattern::parse("a/s").unwrap(), 5).unwrap(),
            "older than known"
        );
        let mut back = Tombstones::load(Some(file.clone()), 0).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.expire(100).unwrap(), 1);
        assert!(!back.deletes(&key("a/s/x"), 1));
        assert_eq!(Tombstones::load(Some(file), 0).unwrap().len(), 1);
    }

    #[test]
    fn a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tombstones");
        fs::write(&file, "10 a/s\n12 b/").unwrap();
        assert_eq!(Tombstones::load(Some(file), 0).unwrap().len(), 1);
    }
}
