//! `flmctl cache list|get|rm`: the objects of the object cache, through the SDK's
//! [`ObjectCache`].
//!
//! What:
//! - `list [PREFIX] [-o table|json|yaml]`: every object of the cluster whose key starts with
//!   `PREFIX`, by key: `Key Version Size Endpoint` (size is base plus patches; the endpoint is
//!   the cache that answered for it — the listing does not say which caches hold copies).
//! - `get KEY [-o FILE]`: the object's bytes on stdout, or in `FILE` with a one-line summary on
//!   stdout. A patched object is written as its base followed by every patch, in version order,
//!   concatenated — exactly the records the cache stores, with nothing in between — and the
//!   summary (or, on stdout, a note on stderr) says how many patches were appended.
//! - `rm KEY|APP/SESSION|APP/*`: deletes one object, a session's objects or an application's.
//!
//! The cache is `--cache-endpoint`, else `FLAME_CACHE_ENDPOINT`, else `cache.endpoint` of the
//! current context of `--config` (default `~/.flame/flame.yaml`), else
//! `grpc://127.0.0.1:9090` — the SDK's resolution, so flmctl and flamepy reach the same cache.
//!
//! Why the raw bytes: objects are opaque to the cache (flamepy pickles, the Rust SDK writes
//! JSON), so flmctl shows what is stored and leaves decoding to the reader.
//!
//! Caveats: native Arrow tables cannot be read with `get` (an error says so). Keys and patterns
//! are checked before anything is sent; a bad one is one `Error:` line naming the rule.

use crate::output::{self, Format, Rows};
use anyhow::anyhow;
use bytes::Bytes;
use flame_sdk::cache::{Object, ObjectCache, ObjectInfo, resolve_cache_endpoint};
use flame_sdk::client::{ClientError, FlameError};
use serde_json::json;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// `flmctl cache ...`.
#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    /// The cache's Flight endpoint, grpc://HOST:PORT. Else FLAME_CACHE_ENDPOINT, else
    /// `cache.endpoint` of the current context of --config, else grpc://127.0.0.1:9090.
    #[arg(long, global = true)]
    pub cache_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: CacheCommand,
}

/// The `cache` verbs.
#[derive(clap::Subcommand, Debug)]
pub enum CacheCommand {
    /// List objects: key, version, size and the answering cache's endpoint.
    List {
        /// Only keys starting with this prefix, such as `myapp/` or `myapp/ssn-1/`.
        prefix: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Write an object's bytes to stdout or a file (a patched object: its base followed by
    /// every patch, concatenated).
    Get {
        /// The object's key, `<app>/<session>/<object_id>`.
        key: String,
        /// Write to this file instead of stdout, and print a summary.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete one object (`<app>/<session>/<id>`), a session's (`<app>/<session>`) or an
    /// application's (`<app>/*`).
    Rm {
        /// A key, `<app>/<session>` or `<app>/*`.
        pattern: String,
    },
}

/// The one-line error for a failed cache call, with a hint where the user can act.
fn explain(err: ClientError, endpoint: &str) -> anyhow::Error {
    let hint = "hint: pass --cache-endpoint grpc://HOST:PORT, set FLAME_CACHE_ENDPOINT or set \
                cache.endpoint in the current context of --config";
    match err {
        ClientError::InvalidEndpoint(_) | ClientError::Config(_) => anyhow!("{err}; {hint}"),
        ClientError::Flame(FlameError::Unavailable(ref why)) if why.starts_with("cannot reach") => {
            anyhow!("{err}; is a cache running at {endpoint}? {hint}")
        }
        other => anyhow!("{other}"),
    }
}

/// Runs one `cache` verb, writing to stdout (and a note to stderr for `get` of a patched
/// object on stdout).
pub async fn run(args: CacheArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let explicit = args.cache_endpoint.as_deref();
    let endpoint =
        resolve_cache_endpoint(explicit, config).map_err(|e| explain(e, "(unresolved)"))?;
    let cache = ObjectCache::connect(&endpoint)
        .await
        .map_err(|e| explain(e, &endpoint))?;
    let failed = |e| explain(e, &endpoint);
    match args.command {
        CacheCommand::List { prefix, output } => {
            let objects = cache
                .list_objects(prefix.as_deref().unwrap_or(""))
                .await
                .map_err(failed)?;
            output::print(&output::render(&rows(objects), output)?);
        }
        CacheCommand::Get { key, output } => {
            let object = cache.get_bytes(key.as_str()).await.map_err(failed)?;
            get(&object, output.as_deref())?;
        }
        CacheCommand::Rm { pattern } => {
            cache.delete_objects(&pattern).await.map_err(failed)?;
            output::print(&deleted(&pattern));
        }
    }
    Ok(())
}

/// The listing's rows.
fn rows(objects: Vec<ObjectInfo>) -> Rows {
    let mut rows = Rows {
        headers: vec!["Key", "Version", "Size", "Endpoint"],
        ..Rows::default()
    };
    for object in objects {
        rows.cells.push(vec![
            object.key.clone(),
            object.version.to_string(),
            output::bytes(object.size),
            object.endpoint.clone(),
        ]);
        rows.values.push(json!({
            "key": object.key, "version": object.version, "size": object.size,
            "endpoint": object.endpoint,
        }));
    }
    rows
}

/// Writes `object` (base, then patches) to `file`, or to stdout; see the module docs.
fn get(object: &Object<Bytes>, file: Option<&Path>) -> anyhow::Result<()> {
    let parts = std::iter::once(&object.base).chain(&object.patches);
    let size: usize = parts.clone().map(|p| p.len()).sum();
    let patched = match object.patches.len() {
        0 => String::new(),
        1 => " (its base and 1 patch, concatenated)".to_owned(),
        n => format!(" (its base and {n} patches, concatenated)"),
    };
    match file {
        Some(path) => {
            let mut data = Vec::with_capacity(size);
            parts.for_each(|p| data.extend_from_slice(p));
            std::fs::write(path, data)
                .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
            output::print(&format!(
                "Wrote {size} bytes of {} version {}{patched} to {}.\n",
                object.key,
                object.version,
                path.display()
            ));
        }
        None => {
            let mut out = std::io::stdout().lock();
            for part in parts {
                // A closed pipe (`| head`) is not an error.
                if out.write_all(part).is_err() {
                    return Ok(());
                }
            }
            let _ = out.flush();
            if !patched.is_empty() {
                eprintln!(
                    "note: wrote {size} bytes of {} version {}{patched}",
                    object.key, object.version
                );
            }
        }
    }
    Ok(())
}

/// What `rm` prints for `pattern` (already checked by the SDK).
fn deleted(pattern: &str) -> String {
    match pattern.split('/').count() {
        3 => format!("Object {pattern} was deleted.\n"),
        _ if pattern.ends_with("/*") => format!("Objects of application {pattern} were deleted.\n"),
        _ => format!("Objects of session {pattern} were deleted.\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rm_names_what_the_pattern_covered() {
        assert_eq!(deleted("a/s/o"), "Object a/s/o was deleted.\n");
        assert_eq!(deleted("a/s"), "Objects of session a/s were deleted.\n");
        assert_eq!(deleted("a/*"), "Objects of application a/* were deleted.\n");
    }

    #[test]
    fn list_rows_show_human_sizes_and_keep_exact_ones_in_json() {
        let rows = rows(vec![ObjectInfo {
            key: "a/s/o".into(),
            version: 2,
            size: 3 << 20,
            endpoint: "grpc://h:1".into(),
        }]);
        assert_eq!(rows.cells[0], vec!["a/s/o", "2", "3Mi", "grpc://h:1"]);
        assert_eq!(rows.values[0]["size"], 3 << 20);
    }
}
