//! Snapshots and restores of data-dir paths, through the engine's archive API, so that they
//! work on a remote engine and with images that have no shell.
//!
//! Both run against a *helper* container that mounts the instance's volume and is never
//! started: a container of `phoenix-helper/empty:1`, an empty image imported on first use. It
//! carries [`LABEL_HELPER`](names::LABEL_HELPER), never `phoenix.fleet`, and is removed when
//! the operation ends.
//!
//! A snapshot is a directory `<state dir>/snapshots/<fleet>/<instance>/<tag>/` holding
//! `manifest.json` and one tar archive per path that existed, as the engine gave it. It is
//! written beside its place and renamed into it, so a crash never leaves half a snapshot under
//! the tag's name.
//!
//! Restoring a path that existed first replaces whatever is there with an empty file (an
//! upload of a file over a directory removes the directory: that is how the archive API
//! deletes), then uploads the saved archive over it, so files added since are gone. A path
//! that did not exist but does now has to be deleted, which the archive API cannot do: a
//! short-lived container of the image the instance ran when the snapshot was taken runs
//! `rm -rf` on it. An image without `rm` makes such a restore fail, saying so.

use crate::error::Op;
use crate::names::{self, LABEL_HELPER};
use crate::provider::volume_mount;
use crate::{DockerError, DockerProvider};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    ContainerArchiveInfoOptions, CreateImageOptions, DownloadFromContainerOptions,
    UploadToContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use phoenix_provider_api::{ProviderError, Result, Snapshot, backup, is_safe_name};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The image of helper containers: nothing in it, never run.
const HELPER_IMAGE: &str = "phoenix-helper/empty:1";

/// What a snapshot directory holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    tag: String,
    entries: Vec<Entry>,
    /// The image the instance ran when the snapshot was taken (for `rm` on restore).
    #[serde(default)]
    image: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// Relative to the data dir.
    path: String,
    existed: bool,
}

impl DockerProvider {
    fn snapshot_dir(&self, fleet: &str, instance: &str, tag: &str) -> PathBuf {
        self.state_dir()
            .join("snapshots")
            .join(fleet)
            .join(instance)
            .join(tag)
    }

    pub(crate) fn snapshot_paths(
        &self,
        fleet: &str,
        instance: &str,
        paths: &[String],
        tag: &str,
    ) -> Result<Snapshot> {
        check_names(fleet, instance, tag)?;
        let data_dir = names::data_dir(instance);
        let rels = paths
            .iter()
            .map(|p| backup::resolve_path(&data_dir, instance, p))
            .collect::<Result<Vec<_>>>()?;
        let dest = self.snapshot_dir(fleet, instance, tag);
        let tmp = dest.with_extension("partial");
        let files = tmp.join("files");
        remove_any(&tmp).map_err(|e| ProviderError::io("clear partial snapshot", &tmp, e))?;
        std::fs::create_dir_all(&files)
            .map_err(|e| ProviderError::io("create snapshot dir", &files, e))?;
        let entries = self
            .run(self.download(fleet, instance, &rels, &files))
            .map_err(|e| e.into_provider(Op::Other))?;
        let manifest = Manifest {
            tag: tag.into(),
            entries: entries.0,
            image: entries.1,
        };
        let mpath = tmp.join("manifest.json");
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        std::fs::write(&mpath, json)
            .map_err(|e| ProviderError::io("write snapshot manifest", &mpath, e))?;
        remove_any(&dest).map_err(|e| ProviderError::io("replace snapshot", &dest, e))?;
        std::fs::rename(&tmp, &dest).map_err(|e| ProviderError::io("commit snapshot", &dest, e))?;
        Ok(self.snapshot_of(fleet, instance, &manifest, &dest))
    }

    pub(crate) fn restore_snapshot(
        &self,
        fleet: &str,
        instance: &str,
        tag: &str,
    ) -> Result<Snapshot> {
        check_names(fleet, instance, tag)?;
        let dir = self.snapshot_dir(fleet, instance, tag);
        let mpath = dir.join("manifest.json");
        let manifest: Manifest = match std::fs::read(&mpath) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ProviderError::io("parse snapshot manifest", &mpath, std::io::Error::other(e))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProviderError::SnapshotNotFound {
                    fleet: fleet.into(),
                    instance: instance.into(),
                    tag: tag.into(),
                });
            }
            Err(e) => return Err(ProviderError::io("read snapshot manifest", &mpath, e)),
        };
        let data_dir = names::data_dir(instance);
        // The manifest was written by `snapshot`, but check again: it is a file on disk.
        let rels = manifest
            .entries
            .iter()
            .map(|e| backup::resolve_path(&data_dir, instance, &e.path))
            .collect::<Result<Vec<_>>>()?;
        self.run(self.upload(fleet, instance, &manifest, &rels, &dir.join("files")))
            .map_err(|e| e.into_provider(Op::Other))?;
        Ok(self.snapshot_of(fleet, instance, &manifest, &dir))
    }

    fn snapshot_of(&self, fleet: &str, instance: &str, m: &Manifest, dir: &Path) -> Snapshot {
        Snapshot {
            fleet: fleet.into(),
            instance: instance.into(),
            tag: m.tag.clone(),
            paths: m.entries.iter().map(|e| e.path.clone()).collect(),
            location: dir.display().to_string(),
        }
    }

    /// Downloads each of `rels` into `files/<index>.tar`; the entries, and the instance's
    /// image if a container of it exists.
    async fn download(
        &self,
        fleet: &str,
        instance: &str,
        rels: &[PathBuf],
        files: &Path,
    ) -> Result<(Vec<Entry>, Option<String>), DockerError> {
        let d = self.docker().await?;
        let image = self.instance_image(&d, fleet, instance).await?;
        let data_dir = names::data_dir(instance);
        let mut entries: Vec<Entry> = rels
            .iter()
            .map(|r| Entry {
                path: r.to_string_lossy().into_owned(),
                existed: false,
            })
            .collect();
        if !self
            .volume_exists(&d, &names::volume_name(fleet, instance))
            .await?
        {
            return Ok((entries, image));
        }
        let helper = self.create_helper(&d, fleet, instance, None).await?;
        let result = async {
            for (i, rel) in rels.iter().enumerate() {
                let path = data_dir.join(rel).to_string_lossy().into_owned();
                let out = files.join(format!("{i}.tar"));
                entries[i].existed = self.download_one(&d, &helper, &path, &out).await?;
            }
            Ok(())
        }
        .await;
        self.remove_container(&d, &helper).await?;
        result.map(|()| (entries, image))
    }

    /// Saves the archive of `path` in `out`; `false` when there is no such path.
    async fn download_one(
        &self,
        d: &Docker,
        helper: &str,
        path: &str,
        out: &Path,
    ) -> Result<bool, DockerError> {
        let mut stream = d.download_from_container(
            helper,
            Some(DownloadFromContainerOptions { path: path.into() }),
        );
        let mut file = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    if file.is_none() {
                        file = Some(
                            std::fs::File::create(out)
                                .map_err(|e| DockerError::io("write snapshot", out, e))?,
                        );
                    }
                    let f = file.as_mut().expect("created above");
                    f.write_all(&bytes)
                        .map_err(|e| DockerError::io("write snapshot", out, e))?;
                }
                Err(e) => {
                    let e = self.err("copy from the data volume", path)(e);
                    if e.is_not_found() {
                        return Ok(false);
                    }
                    return Err(e);
                }
            }
        }
        match file {
            Some(f) => f
                .sync_all()
                .map_err(|e| DockerError::io("write snapshot", out, e))
                .map(|()| true),
            None => Err(DockerError::Client {
                step: "copy from the data volume",
                object: path.into(),
                cause: "the engine sent an empty archive".into(),
            }),
        }
    }

    /// Puts the snapshot's paths back (see the module docs).
    async fn upload(
        &self,
        fleet: &str,
        instance: &str,
        manifest: &Manifest,
        rels: &[PathBuf],
        files: &Path,
    ) -> Result<(), DockerError> {
        let d = self.docker().await?;
        self.ensure_volume(&d, fleet, instance).await?;
        let data_dir = names::data_dir(instance);
        let helper = self.create_helper(&d, fleet, instance, None).await?;
        let result = async {
            let mut to_delete = Vec::new();
            for (i, (entry, rel)) in manifest.entries.iter().zip(rels).enumerate() {
                let target = data_dir.join(rel);
                let exists = self.exists(&d, &helper, &target).await?;
                if !entry.existed {
                    if exists {
                        to_delete.push(target.to_string_lossy().into_owned());
                    }
                    continue;
                }
                let parent = self.make_parents(&d, &helper, &data_dir, rel).await?;
                let name = rel
                    .file_name()
                    .expect("resolved paths have a last component");
                if exists {
                    let mut t = tar::Builder::new(Vec::new());
                    let mut h = tar::Header::new_gnu();
                    h.set_size(0);
                    h.set_mode(0o644);
                    h.set_entry_type(tar::EntryType::Regular);
                    t.append_data(&mut h, name, std::io::empty())
                        .map_err(|e| DockerError::io("build an archive", &target, e))?;
                    let bytes = t
                        .into_inner()
                        .map_err(|e| DockerError::io("build an archive", &target, e))?;
                    self.put(&d, &helper, &parent, bytes).await?;
                }
                let saved = files.join(format!("{i}.tar"));
                let bytes = std::fs::read(&saved)
                    .map_err(|e| DockerError::io("read snapshot", &saved, e))?;
                self.put(&d, &helper, &parent, bytes).await?;
            }
            Ok(to_delete)
        }
        .await;
        self.remove_container(&d, &helper).await?;
        let to_delete = result?;
        if to_delete.is_empty() {
            return Ok(());
        }
        let image = match &manifest.image {
            Some(i) => Some(i.clone()),
            None => self.instance_image(&d, fleet, instance).await?,
        };
        let Some(image) = image else {
            return Err(DockerError::Client {
                step: "restore",
                object: to_delete.join(", "),
                cause: format!(
                    "the snapshot says these did not exist, and deleting them needs a \
                     container with `rm`, but no image of `{instance}` is known (none ran when \
                     the snapshot was taken)"
                ),
            });
        };
        self.delete_with_rm(&d, fleet, instance, &image, to_delete)
            .await
    }

    /// Runs `rm -rf -- paths` in a helper container of `image` and waits for it.
    async fn delete_with_rm(
        &self,
        d: &Docker,
        fleet: &str,
        instance: &str,
        image: &str,
        paths: Vec<String>,
    ) -> Result<(), DockerError> {
        let what = paths.join(", ");
        let mut args = vec!["-rf".to_string(), "--".to_string()];
        args.extend(paths);
        let id = self
            .create_helper(&d.clone(), fleet, instance, Some((image, args)))
            .await?;
        let result = async {
            d.start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(self.err("start helper", &id))?;
            let mut wait = d.wait_container(&id, None::<WaitContainerOptions>);
            let mut code = 0;
            while let Some(w) = wait.next().await {
                match w {
                    Ok(r) => code = r.status_code,
                    Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => {
                        code = c
                    }
                    Err(e) => return Err(self.err("wait for helper", &id)(e)),
                }
            }
            if code == 0 {
                Ok(())
            } else {
                Err(DockerError::Client {
                    step: "restore: delete",
                    object: what.clone(),
                    cause: format!("`rm -rf` in image `{image}` exited {code}"),
                })
            }
        }
        .await;
        let _ = self.remove_container(d, &id).await;
        result.map_err(|e| match e {
            // The image has no `rm` (or no shell-ish userland at all).
            DockerError::Api { message, .. } if message.contains("executable file not found") => {
                DockerError::Client {
                    step: "restore: delete",
                    object: what.clone(),
                    cause: format!(
                        "image `{image}` has no `rm` to delete paths the snapshot says did \
                         not exist: {message}"
                    ),
                }
            }
            e => e,
        })
    }

    /// Creates a helper container mounting the instance's volume: never started (archive
    /// operations), or running `rm` with `args` in `image`.
    async fn create_helper(
        &self,
        d: &Docker,
        fleet: &str,
        instance: &str,
        rm: Option<(&str, Vec<String>)>,
    ) -> Result<String, DockerError> {
        let archive_only = rm.is_none();
        let (image, entrypoint, cmd) = match rm {
            Some((image, args)) => (image.to_string(), Some(vec!["rm".to_string()]), args),
            None => (
                self.helper_image(d, false).await?,
                None,
                vec!["/phoenix-helper-is-never-started".to_string()],
            ),
        };
        let mut labels = HashMap::new();
        labels.insert(LABEL_HELPER.to_string(), fleet.to_string());
        labels.insert(format!("{LABEL_HELPER}.instance"), instance.to_string());
        let body = ContainerCreateBody {
            image: Some(image),
            entrypoint,
            cmd: Some(cmd),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(vec![volume_mount(fleet, instance)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let create = |body| {
            d.create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
        };
        let made = match create(body.clone()).await {
            Ok(made) => made,
            Err(e) => {
                let e = self.err("create helper container", instance)(e);
                // Someone removed the helper image between our look and our create: import
                // it again, once.
                if !(archive_only && e.is_not_found()) {
                    return Err(e);
                }
                self.helper_image(d, true).await?;
                create(body)
                    .await
                    .map_err(self.err("create helper container", instance))?
            }
        };
        Ok(made.id)
    }

    /// The empty image of helper containers, imported from an empty archive if missing (or
    /// `again`).
    async fn helper_image(&self, d: &Docker, again: bool) -> Result<String, DockerError> {
        if !again && self.image_id(d, HELPER_IMAGE).await?.is_some() {
            return Ok(HELPER_IMAGE.into());
        }
        let (repo, tag) = HELPER_IMAGE.split_once(':').expect("name:tag");
        let empty_tar = vec![0u8; 1024];
        let mut progress = d.create_image(
            Some(CreateImageOptions {
                from_src: Some("-".into()),
                repo: Some(repo.into()),
                tag: Some(tag.into()),
                changes: vec![format!("LABEL {LABEL_HELPER}=image")],
                ..Default::default()
            }),
            Some(bollard::body_full(empty_tar.into())),
            None,
        );
        while let Some(item) = progress.next().await {
            item.map_err(self.err("import helper image", HELPER_IMAGE))?;
        }
        Ok(HELPER_IMAGE.into())
    }

    /// The image a container of `instance` runs (the newest revision's), if one exists.
    async fn instance_image(
        &self,
        d: &Docker,
        fleet: &str,
        instance: &str,
    ) -> Result<Option<String>, DockerError> {
        let mut units = self
            .containers(
                d,
                &[
                    (names::LABEL_FLEET, fleet),
                    (names::LABEL_INSTANCE, instance),
                ],
            )
            .await?;
        units.sort_by_key(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(names::LABEL_REVISION))
                .and_then(|r| r.parse::<u64>().ok())
        });
        Ok(units.pop().and_then(|c| c.image_id))
    }

    /// Whether `path` exists in the helper's view of the volume.
    async fn exists(&self, d: &Docker, helper: &str, path: &Path) -> Result<bool, DockerError> {
        let p = path.to_string_lossy().into_owned();
        match d
            .get_container_archive_info(
                helper,
                Some(ContainerArchiveInfoOptions { path: p.clone() }),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = self.err("look at the data volume", &p)(e);
                if e.is_not_found() { Ok(false) } else { Err(e) }
            }
        }
    }

    /// Creates the missing directories above `rel` (mode 0755, owned by root); returns the
    /// parent directory of `rel`.
    async fn make_parents(
        &self,
        d: &Docker,
        helper: &str,
        data_dir: &Path,
        rel: &Path,
    ) -> Result<PathBuf, DockerError> {
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let comps: Vec<_> = parent_rel.components().collect();
        let mut existing = data_dir.to_path_buf();
        let mut k = 0;
        while k < comps.len() && self.exists(d, helper, &existing.join(comps[k])).await? {
            existing.push(comps[k]);
            k += 1;
        }
        if k < comps.len() {
            let mut t = tar::Builder::new(Vec::new());
            let mut dir = PathBuf::new();
            for c in &comps[k..] {
                dir.push(c);
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o755);
                h.set_entry_type(tar::EntryType::Directory);
                t.append_data(&mut h, &dir, std::io::empty())
                    .map_err(|e| DockerError::io("build an archive", &dir, e))?;
            }
            let bytes = t
                .into_inner()
                .map_err(|e| DockerError::io("build an archive", &existing, e))?;
            self.put(d, helper, &existing, bytes).await?;
        }
        Ok(data_dir.join(parent_rel))
    }

    /// Unpacks the tar `bytes` at `dir`, keeping the owners recorded in it.
    async fn put(
        &self,
        d: &Docker,
        helper: &str,
        dir: &Path,
        bytes: Vec<u8>,
    ) -> Result<(), DockerError> {
        let p = dir.to_string_lossy().into_owned();
        d.upload_to_container(
            helper,
            Some(UploadToContainerOptions {
                path: p.clone(),
                // Left unset: an entry may replace a directory, which is how a restore deletes.
                no_overwrite_dir_non_dir: None,
                copy_uidgid: Some("1".into()),
            }),
            bollard::body_full(bytes.into()),
        )
        .await
        .map_err(self.err("copy into the data volume", &p))
    }
}

fn check_names(fleet: &str, instance: &str, tag: &str) -> Result<()> {
    for (what, name) in [
        ("fleet", fleet),
        ("instance", instance),
        ("snapshot tag", tag),
    ] {
        if !is_safe_name(name) {
            return Err(ProviderError::InvalidSpec {
                unit: instance.into(),
                problem: format!("{what} `{name}` is not [A-Za-z0-9][A-Za-z0-9._-]*"),
            });
        }
    }
    Ok(())
}

/// Removes a file or directory tree; nothing there is fine.
fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
    }
}
