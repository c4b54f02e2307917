//! File-system snapshots of paths under an instance's data directory, for providers whose data
//! directories this host can read (local processes, bind-mounted containers).
//!
//! A snapshot is a directory holding `manifest.json` (which paths, and whether each existed)
//! and `files/<path>` copies. It is built beside its final place and renamed into it, so a crash
//! never leaves a half-written snapshot under the tag's name. Restoring a path that did not
//! exist when the snapshot was taken removes it.

use crate::{ProviderError, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// What a snapshot directory contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Tag.
    pub tag: String,
    /// Each path, relative to the data directory, and whether it existed.
    pub entries: Vec<ManifestEntry>,
}

/// One path of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the data directory.
    pub path: String,
    /// Whether it existed at snapshot time.
    pub existed: bool,
}

/// Resolves a backup path template (`${data_dir}/db`, `db`, `${data_dir}/${instance}.dump`) to
/// a path relative to `data_dir`.
///
/// # Errors
/// [`ProviderError::PathOutsideDataDir`] when it leaves the data directory or is the data
/// directory itself; [`ProviderError::InvalidSpec`] for an unknown substitution.
pub fn resolve_path(data_dir: &Path, instance: &str, template: &str) -> Result<PathBuf> {
    let outside = || ProviderError::PathOutsideDataDir {
        instance: instance.into(),
        path: template.into(),
        data_dir: data_dir.into(),
    };
    let vars = crate::Vars {
        instance: instance.into(),
        data_dir: data_dir.into(),
        ..Default::default()
    };
    let full = PathBuf::from(vars.apply(template)?);
    let rel = if full.is_absolute() {
        full.strip_prefix(data_dir)
            .map_err(|_| outside())?
            .to_path_buf()
    } else {
        full
    };
    let mut clean = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => clean.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(outside());
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(outside());
    }
    // A symlinked directory on the way must not lead out of the data directory.
    if let (Ok(root), Some(parent)) = (data_dir.canonicalize(), data_dir.join(&clean).parent())
        && let Ok(real) = parent.canonicalize()
        && !real.starts_with(&root)
    {
        return Err(outside());
    }
    Ok(clean)
}

/// Copies `paths` (templates, see [`resolve_path`]) of `data_dir` into the snapshot directory
/// `dest`, replacing whatever was there.
///
/// # Errors
/// Path resolution errors and [`ProviderError::Io`].
pub fn snapshot(
    data_dir: &Path,
    instance: &str,
    paths: &[String],
    tag: &str,
    dest: &Path,
) -> Result<Manifest> {
    let rels = paths
        .iter()
        .map(|p| resolve_path(data_dir, instance, p))
        .collect::<Result<Vec<_>>>()?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| ProviderError::io("create snapshot dir", parent, e))?;
    let tmp = dest.with_extension("partial");
    remove_any(&tmp).map_err(|e| ProviderError::io("clear partial snapshot", &tmp, e))?;
    let files = tmp.join("files");
    fs::create_dir_all(&files).map_err(|e| ProviderError::io("create snapshot dir", &files, e))?;
    let mut entries = Vec::new();
    for rel in rels {
        let src = data_dir.join(&rel);
        let existed = fs::symlink_metadata(&src).is_ok();
        if existed {
            let to = files.join(&rel);
            copy_tree(&src, &to).map_err(|e| ProviderError::io("copy into snapshot", &src, e))?;
        }
        entries.push(ManifestEntry {
            path: rel.to_string_lossy().into_owned(),
            existed,
        });
    }
    let manifest = Manifest {
        tag: tag.into(),
        entries,
    };
    let mpath = tmp.join("manifest.json");
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    fs::write(&mpath, json).map_err(|e| ProviderError::io("write snapshot manifest", &mpath, e))?;
    remove_any(dest).map_err(|e| ProviderError::io("replace snapshot", dest, e))?;
    fs::rename(&tmp, dest).map_err(|e| ProviderError::io("commit snapshot", dest, e))?;
    Ok(manifest)
}

/// Reads the manifest of the snapshot directory `src`; `None` if there is no snapshot there.
///
/// # Errors
/// [`ProviderError::Io`] for an unreadable or corrupt manifest.
pub fn read_manifest(src: &Path) -> Result<Option<Manifest>> {
    let mpath = src.join("manifest.json");
    let bytes = match fs::read(&mpath) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ProviderError::io("read snapshot manifest", &mpath, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ProviderError::io("parse snapshot manifest", &mpath, std::io::Error::other(e)))
}

/// Puts the paths of the snapshot directory `src` back into `data_dir`.
///
/// # Errors
/// [`ProviderError::Io`]; `Ok(None)` when there is no snapshot at `src`.
pub fn restore(data_dir: &Path, src: &Path) -> Result<Option<Manifest>> {
    let Some(manifest) = read_manifest(src)? else {
        return Ok(None);
    };
    for entry in &manifest.entries {
        // The manifest was written by `snapshot`, but check again: it is a file on disk.
        let rel = resolve_path(data_dir, "", &entry.path)?;
        let dst = data_dir.join(&rel);
        remove_any(&dst).map_err(|e| ProviderError::io("remove before restore", &dst, e))?;
        if entry.existed {
            let from = src.join("files").join(&rel);
            copy_tree(&from, &dst).map_err(|e| ProviderError::io("restore", &dst, e))?;
        }
    }
    Ok(Some(manifest))
}

/// Removes a file, symlink or directory tree; nothing there is fine.
fn remove_any(p: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
    }
}

/// Copies a file, symlink (as a symlink) or directory tree to `to`, creating parents.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)
    } else if meta.is_dir() {
        fs::create_dir_all(to)?;
        fs::set_permissions(to, meta.permissions())?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        fs::copy(from, to).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_rejects_escapes() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir_all(&data).unwrap();
        assert_eq!(
            resolve_path(&data, "i", "${data_dir}/db").unwrap(),
            PathBuf::from("db")
        );
        assert_eq!(
            resolve_path(&data, "i", "./x/${instance}").unwrap(),
            PathBuf::from("x/i")
        );
        for bad in [
            "${data_dir}/../x",
            "/etc/passwd",
            "${data_dir}",
            "..",
            "a/../../b",
        ] {
            assert!(resolve_path(&data, "i", bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/etc", data.join("link")).unwrap();
        assert!(resolve_path(&data, "i", "link/passwd").is_err());
    }

    #[test]
    fn snapshot_and_restore_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir_all(data.join("db/sub")).unwrap();
        fs::write(data.join("db/sub/a"), "v1").unwrap();
        fs::write(data.join("keep"), "k1").unwrap();
        let snap = d.path().join("snaps/t1");
        let paths = vec!["${data_dir}/db".to_string(), "new".to_string()];
        let m = snapshot(&data, "i", &paths, "t1", &snap).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert!(!m.entries[1].existed);

        fs::write(data.join("db/sub/a"), "v2").unwrap();
        fs::write(data.join("db/extra"), "x").unwrap();
        fs::write(data.join("new"), "n").unwrap();
        fs::write(data.join("keep"), "k2").unwrap();
        restore(&data, &snap).unwrap().unwrap();
        assert_eq!(fs::read_to_string(data.join("db/sub/a")).unwrap(), "v1");
        assert!(!data.join("db/extra").exists());
        assert!(!data.join("new").exists());
        assert_eq!(
            fs::read_to_string(data.join("keep")).unwrap(),
            "k2",
            "not in the snapshot"
        );
        assert!(
            restore(&data, &d.path().join("snaps/none"))
                .unwrap()
                .is_none()
        );
    }
}
