//! Unpacking an application package into a directory: `.tar.gz`/`.tgz`, `.zip`, or a copy
//! of a directory (spec section 7.6, step 2).
//!
//! What: [`unpack`] fills an empty destination directory from a package path, refusing any
//! entry that could land outside it, and [`hoist_single_dir`] makes `dst/<top>/...` into
//! `dst/...` when a package wraps everything in one top directory (as `tar czf pkg-1.0/`
//! and source distributions do). [`unpack_named`] does the same for a file whose name says
//! nothing (a download), judging it by the name it came under (a url).
//!
//! The kind is picked from the name's suffix (`.tar.gz`, `.tgz`, `.zip`, case-insensitive),
//! else from the file's first bytes (gzip `1f 8b`, zip `PK\x03\x04`), so a package whose name
//! has no suffix still unpacks; a suffix wins over the content (a `.zip` holding gzip is a
//! corrupt zip, not a tar).
//!
//! Why by hand: the crates' whole-archive helpers skip or sanitise unsafe entries silently;
//! a package with `../x` or an absolute path is refused here with a message naming the entry.
//!
//! Caveats: blocking I/O (run it on a blocking thread). Only regular files, directories,
//! symbolic and hard links are accepted from tar archives; zip symbolic links are refused.
//! Permissions keep the low nine mode bits. [`MAX_UNPACKED_BYTES`] bounds the sizes the
//! entries declare, against decompression bombs.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Most bytes a package may unpack to, by its entries' declared sizes.
pub const MAX_UNPACKED_BYTES: u64 = 8 << 30;

/// The kinds of package [`unpack`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Gzip-compressed tar.
    TarGz,
    /// Zip.
    Zip,
    /// A plain directory, copied.
    Dir,
}

/// Unpacks the package at `src` into the existing, empty directory `dst`. The error text
/// names the package and what is wrong with it.
pub fn unpack(src: &Path, dst: &Path) -> Result<(), String> {
    unpack_named(src, &src.display().to_string(), dst)
}

/// Unpacks the package at `src`, known to its user as `name` (a path or a url), into the
/// existing, empty directory `dst`. `name`'s suffix, else `src`'s first bytes, pick the kind;
/// the error text names `name` and what is wrong.
pub fn unpack_named(src: &Path, name: &str, dst: &Path) -> Result<(), String> {
    let kind = kind_of(src, name)?;
    let outcome = match kind {
        Kind::TarGz => untar(src, dst),
        Kind::Zip => unzip(src, dst),
        Kind::Dir => copy_dir(src, dst).map_err(|e| e.to_string()),
    };
    outcome.map_err(|why| format!("cannot unpack {name}: {why}"))
}

/// Which kind of package `src` is: a directory, else by `name`'s suffix, else by its magic
/// bytes.
fn kind_of(src: &Path, name: &str) -> Result<Kind, String> {
    let meta = std::fs::metadata(src).map_err(|e| format!("package {name} cannot be read: {e}"))?;
    if meta.is_dir() {
        return Ok(Kind::Dir);
    }
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        return Ok(Kind::TarGz);
    }
    if lower.ends_with(".zip") {
        return Ok(Kind::Zip);
    }
    let mut magic = Vec::with_capacity(4);
    File::open(src)
        .and_then(|f| f.take(4).read_to_end(&mut magic))
        .map_err(|e| format!("package {name} cannot be read: {e}"))?;
    match magic.as_slice() {
        [0x1f, 0x8b, ..] => Ok(Kind::TarGz),
        b"PK\x03\x04" => Ok(Kind::Zip),
        _ => Err(format!(
            "package {name} is not a .tar.gz, .tgz or .zip archive (by name or content) nor a directory"
        )),
    }
}

/// Checks that an entry path is relative and stays below the destination.
fn check_entry_path(path: &Path) -> Result<(), String> {
    let safe = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if safe && path.components().next().is_some() {
        Ok(())
    } else {
        Err(format!(
            "entry {:?} escapes the release directory (absolute or with '..'); refused",
            path.display().to_string()
        ))
    }
}

/// Adds `size` to `total`, failing past [`MAX_UNPACKED_BYTES`].
fn count(total: &mut u64, size: u64) -> Result<(), String> {
    *total = total.saturating_add(size);
    if *total > MAX_UNPACKED_BYTES {
        return Err(format!(
            "it unpacks to more than {MAX_UNPACKED_BYTES} bytes; refused"
        ));
    }
    Ok(())
}

/// Unpacks a gzip-compressed tar archive entry by entry.
fn untar(src: &Path, dst: &Path) -> Result<(), String> {
    let file = File::open(src).map_err(|e| e.to_string())?;
    let gz = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut archive = tar::Archive::new(gz);
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    let corrupt = |e: io::Error| format!("corrupt or truncated archive: {e}");
    let mut total = 0;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        check_entry_path(&path)?;
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        if !matches!(
            kind,
            T::Regular | T::Continuous | T::Directory | T::Symlink | T::Link
        ) {
            return Err(format!(
                "entry {:?} has unsupported type {kind:?}",
                path.display().to_string()
            ));
        }
        count(&mut total, entry.size())?;
        let unpacked = entry
            .unpack_in(dst)
            .map_err(|e| format!("entry {:?}: {e}", path.display().to_string()))?;
        if !unpacked {
            return Err(format!(
                "entry {:?} escapes the release directory; refused",
                path.display().to_string()
            ));
        }
    }
    Ok(())
}

/// Unpacks a zip archive entry by entry.
fn unzip(src: &Path, dst: &Path) -> Result<(), String> {
    let file = File::open(src).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| format!("corrupt zip archive: {e}"))?;
    let mut total = 0;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format!("corrupt zip archive at entry {i}: {e}"))?;
        let name = entry
            .name()
            .map_err(|e| format!("corrupt zip entry name at entry {i}: {e}"))?
            .into_owned();
        check_entry_path(&PathBuf::from(&name))?;
        let Some(rel) = entry.enclosed_name() else {
            return Err(format!(
                "entry {name:?} escapes the release directory; refused"
            ));
        };
        if entry.is_symlink() {
            return Err(format!(
                "entry {name:?} is a symbolic link; refused in zip packages"
            ));
        }
        let out = dst.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            continue;
        }
        count(&mut total, entry.size())?;
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut file = File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        io::copy(&mut entry, &mut file).map_err(|e| format!("corrupt zip entry {name:?}: {e}"))?;
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode & 0o777))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Copies directory `src` into `dst`: directories, regular files (with permissions) and
/// symbolic links as links.
fn copy_dir(src: &Path, dst: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let to = dst.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir(&to)?;
            copy_dir(&entry.path(), &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &to)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// When `dir` holds exactly one entry and it is a directory, moves that directory's content
/// up into `dir`.
pub fn hoist_single_dir(dir: &Path) -> io::Result<()> {
    let entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    let [only] = entries.as_slice() else {
        return Ok(());
    };
    if !only.file_type()?.is_dir() {
        return Ok(());
    }
    let parked = dir.with_extension("hoist");
    std::fs::rename(only.path(), &parked)?;
    std::fs::remove_dir(dir)?;
    std::fs::rename(&parked, dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A `.tar.gz` with `entries` (path, contents), paths written raw into the header so
    /// unsafe ones can be made.
    fn tar_gz(path: &Path, entries: &[(&str, &[u8])]) -> io::Result<()> {
        let gz = flate2::write::GzEncoder::new(File::create(path)?, flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, data) in entries {
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder.append(&header, *data)?;
        }
        builder.into_inner()?.finish()?.flush()
    }

    #[test]
    fn tar_gz_unpacks_with_modes_and_a_single_top_dir_is_hoisted() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let pkg = tmp.path().join("app.tgz");
        tar_gz(&pkg, &[("app-1.0/bin/run.sh", b"#!/bin/sh\necho hi\n")])?;
        let dst = tmp.path().join("src");
        std::fs::create_dir(&dst)?;
        assert_eq!(unpack(&pkg, &dst), Ok(()));
        hoist_single_dir(&dst)?;
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dst.join("bin/run.sh"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        Ok(())
    }

    #[test]
    fn tar_entries_with_dot_dot_or_absolute_paths_are_refused_and_write_nothing_outside()
    -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        for (i, bad) in ["../escape.sh", "/tmp/abs-escape.sh", "a/../../b"]
            .iter()
            .enumerate()
        {
            let pkg = tmp.path().join(format!("bad{i}.tar.gz"));
            tar_gz(&pkg, &[(bad, b"x")])?;
            let dst = tmp.path().join(format!("dst{i}"));
            std::fs::create_dir(&dst)?;
            let err = unpack(&pkg, &dst).err().unwrap_or_default();
            assert!(
                err.contains("escapes the release directory"),
                "{bad}: {err}"
            );
        }
        assert!(!tmp.path().join("escape.sh").exists());
        Ok(())
    }

    #[test]
    fn garbage_named_tar_gz_or_zip_is_reported_as_corrupt() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        for name in ["junk.tar.gz", "junk.zip"] {
            let pkg = tmp.path().join(name);
            std::fs::write(&pkg, b"this is not an archive at all")?;
            let err = unpack(&pkg, tmp.path()).err().unwrap_or_default();
            assert!(err.contains("corrupt") && err.contains(name), "{err}");
        }
        Ok(())
    }

    #[test]
    fn zip_unpacks_files_and_refuses_escaping_entries() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let write_zip = |path: &Path, name: &str| -> zip::result::ZipResult<()> {
            let mut w = zip::ZipWriter::new(File::create(path)?);
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
            w.start_file(name, opts)?;
            w.write_all(b"#!/bin/sh\n")?;
            w.finish()?;
            Ok(())
        };
        let good = tmp.path().join("good.zip");
        write_zip(&good, "bin/tool").map_err(io::Error::other)?;
        let dst = tmp.path().join("g");
        std::fs::create_dir(&dst)?;
        assert_eq!(unpack(&good, &dst), Ok(()));
        assert!(dst.join("bin/tool").is_file());
        let bad = tmp.path().join("bad.zip");
        write_zip(&bad, "../evil").map_err(io::Error::other)?;
        let err = unpack(&bad, &dst).err().unwrap_or_default();
        assert!(err.contains("escapes the release directory"), "{err}");
        Ok(())
    }

    #[test]
    fn names_without_a_suffix_are_unpacked_by_their_magic_bytes() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let tgz = tmp.path().join("blob-a");
        tar_gz(&tgz, &[("pyproject.toml", b"[project]\n")])?;
        let dst = tmp.path().join("a");
        std::fs::create_dir(&dst)?;
        assert_eq!(unpack_named(&tgz, "grpc://h:1/app/pkg/demo", &dst), Ok(()));
        assert!(dst.join("pyproject.toml").is_file());

        let zipped = tmp.path().join("blob-b");
        let mut w = zip::ZipWriter::new(File::create(&zipped)?);
        w.start_file("bin/tool", zip::write::SimpleFileOptions::default())
            .map_err(io::Error::other)?;
        w.write_all(b"#!/bin/sh\n")?;
        w.finish().map_err(io::Error::other)?;
        let dst = tmp.path().join("b");
        std::fs::create_dir(&dst)?;
        assert_eq!(
            unpack_named(&zipped, "grpc://h:1/app/pkg/tool", &dst),
            Ok(())
        );
        assert!(dst.join("bin/tool").is_file());

        // The suffix wins over the content, and errors name the url, not the file.
        let err = unpack_named(&tgz, "grpc://h:1/app/pkg/x.zip", &dst)
            .err()
            .unwrap_or_default();
        assert!(
            err.starts_with("cannot unpack grpc://h:1/app/pkg/x.zip: corrupt zip"),
            "{err}"
        );
        let plain = tmp.path().join("blob-c");
        std::fs::write(&plain, b"PK")?;
        let err = unpack_named(&plain, "grpc://h:1/app/pkg/c", &dst)
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("grpc://h:1/app/pkg/c is not a .tar.gz, .tgz or .zip archive"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn plain_files_that_are_not_archives_are_refused_by_name() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let pkg = tmp.path().join("service.bin");
        std::fs::write(&pkg, b"x")?;
        let err = unpack(&pkg, tmp.path()).err().unwrap_or_default();
        assert!(
            err.contains("is not a .tar.gz, .tgz or .zip archive"),
            "{err}"
        );
        Ok(())
    }
}
