//! Images: resolving a unit's image to the id it runs, pulling what the engine lacks, and
//! building contexts.

use crate::error::Op;
use crate::names::{self, LABEL_BUILD_FLEET, LABEL_CONTEXT};
use crate::provider::{container_spec, to_filters};
use crate::{DockerError, DockerProvider};
use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptions, CreateImageOptions, ListImagesOptions, RemoveImageOptions,
};
use futures_util::StreamExt;
use phoenix_provider_api::{ContainerSpec, Result, UnitSpec};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a pull or a build may take.
const LONG_CALL: Duration = Duration::from_secs(30 * 60);

impl DockerProvider {
    /// The id (`sha256:...`) of the image `spec` runs on this engine: `container.image`
    /// (pulled when the engine lacks it), or the image built from `container.build`, which is
    /// built only when no image of the context's content hash exists yet.
    ///
    /// The engine calls this for every unit placed on a docker site and puts the id in the
    /// unit's fingerprint, so that a tag that now names another image, or a changed build
    /// context, is a change that rolls out; `start` runs the same id and records it in the
    /// [`LABEL_IMAGE`](names::LABEL_IMAGE) label.
    ///
    /// # Errors
    /// [`ProviderError::InvalidSpec`](phoenix_provider_api::ProviderError::InvalidSpec) without
    /// image or build; [`ProviderError::Spawn`](phoenix_provider_api::ProviderError::Spawn)
    /// when the image cannot be pulled or the build fails; `Unavailable` when the engine
    /// cannot be reached.
    pub fn resolve_image(&self, spec: &UnitSpec) -> Result<String> {
        let container = container_spec(spec)?;
        self.run(async {
            let d = self.docker().await?;
            self.resolve(&d, spec, container).await
        })
        .map(|(id, _)| id)
        .map_err(|e| e.into_provider(Op::Start(&spec.unit_id())))
    }

    /// Removes the images built for `fleet` (`phoenix-build/...`, or the tag a spec gave its
    /// build); images still used by a container stay. Returns the tags removed.
    ///
    /// # Errors
    /// `Unavailable` when the engine cannot be reached.
    pub fn remove_built_images(&self, fleet: &str) -> Result<Vec<String>> {
        self.run(async {
            let d = self.docker().await?;
            let mut filters = HashMap::new();
            filters.insert("label", vec![format!("{LABEL_BUILD_FLEET}={fleet}")]);
            let images = d
                .list_images(Some(ListImagesOptions {
                    filters: Some(to_filters(filters)),
                    ..Default::default()
                }))
                .await
                .map_err(self.err("list images", fleet))?;
            let mut removed = Vec::new();
            for image in images {
                for tag in image.repo_tags {
                    match d
                        .remove_image(&tag, None::<RemoveImageOptions>, None)
                        .await
                        .map_err(self.err("remove image", &tag))
                    {
                        Ok(_) => removed.push(tag),
                        Err(e) if e.is_not_found() || e.is_status(409) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            removed.sort();
            Ok(removed)
        })
        .map_err(|e: DockerError| e.into_provider(Op::Other))
    }

    /// `(image id, reference)` to run: the id the engine pinned in the spec
    /// ([`ContainerSpec::image_id`], what the unit's fingerprint says) when this engine has
    /// that image, else [`DockerProvider::resolve`]'s (a build on another endpoint gives
    /// another id).
    pub(crate) async fn pinned_or_resolved(
        &self,
        d: &Docker,
        spec: &UnitSpec,
        container: &ContainerSpec,
    ) -> Result<(String, String), DockerError> {
        if let Some(pinned) = &container.image_id {
            match d.inspect_image(pinned).await {
                Ok(i) => {
                    let reference = container
                        .image
                        .clone()
                        .or_else(|| i.repo_tags.and_then(|t| t.into_iter().next()))
                        .unwrap_or_else(|| pinned.clone());
                    return Ok((i.id.unwrap_or_else(|| pinned.clone()), reference));
                }
                Err(e) => {
                    let e = self.err("inspect image", pinned)(e);
                    if !e.is_not_found() {
                        return Err(e);
                    }
                }
            }
        }
        self.resolve(d, spec, container).await
    }

    /// `(image id, reference)` of the unit's image.
    pub(crate) async fn resolve(
        &self,
        d: &Docker,
        spec: &UnitSpec,
        container: &ContainerSpec,
    ) -> Result<(String, String), DockerError> {
        match (&container.build, &container.image) {
            (Some(context), tag) => {
                self.build(d, &spec.fleet, &spec.service, context, tag.as_deref())
                    .await
            }
            (None, Some(image)) => {
                let id = match self.image_id(d, image).await? {
                    Some((id, _)) => id,
                    None => {
                        self.pull(d, image).await?;
                        self.image_id(d, image)
                            .await?
                            .ok_or_else(|| DockerError::ImageUnavailable {
                                image: image.clone(),
                                cause: "pulled, but the engine still does not have it".into(),
                            })?
                            .0
                    }
                };
                Ok((id, image.clone()))
            }
            (None, None) => unreachable!("container_spec checked that there is one"),
        }
    }

    /// The id and labels of image `name`, or `None` if the engine has no such image.
    pub(crate) async fn image_id(
        &self,
        d: &Docker,
        name: &str,
    ) -> Result<Option<(String, HashMap<String, String>)>, DockerError> {
        match d.inspect_image(name).await {
            Ok(i) => {
                let labels = i.config.and_then(|c| c.labels).unwrap_or_default();
                Ok(i.id.map(|id| (id, labels)))
            }
            Err(e) => {
                let e = self.err("inspect image", name)(e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn pull(&self, d: &Docker, image: &str) -> Result<(), DockerError> {
        let (from, tag) = split_reference(image);
        let long = d.clone().with_timeout(LONG_CALL);
        let mut progress = long.create_image(
            Some(CreateImageOptions {
                from_image: Some(from),
                tag,
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                return Err(match self.err("pull image", image)(e) {
                    e @ DockerError::Unreachable { .. } => e,
                    e => DockerError::ImageUnavailable {
                        image: image.into(),
                        cause: e.to_string(),
                    },
                });
            }
        }
        Ok(())
    }

    /// Builds `context` unless an image of its content hash exists; `(id, tag)`.
    async fn build(
        &self,
        d: &Docker,
        fleet: &str,
        service: &str,
        context: &Path,
        tag: Option<&str>,
    ) -> Result<(String, String), DockerError> {
        let (archive, hash) = {
            let context = context.to_path_buf();
            // Reading a large context is blocking work; keep it off the runtime's worker.
            tokio::task::spawn_blocking(move || context_archive(&context))
                .await
                .map_err(|e| DockerError::Build {
                    context: PathBuf::new(),
                    detail: format!("reading the context failed: {e}"),
                })??
        };
        let tag = tag.map(str::to_string).unwrap_or_else(|| {
            format!(
                "phoenix-build/{}-{}:{}",
                names::repo_component(fleet),
                names::repo_component(service),
                &hash[..16]
            )
        });
        let _one_at_a_time = self.build_lock.lock().await;
        if let Some((id, labels)) = self.image_id(d, &tag).await?
            && labels.get(LABEL_CONTEXT) == Some(&hash)
        {
            return Ok((id, tag));
        }
        let mut labels = HashMap::new();
        labels.insert(LABEL_CONTEXT.to_string(), hash.clone());
        labels.insert(LABEL_BUILD_FLEET.to_string(), fleet.to_string());
        let options = BuildImageOptions {
            t: Some(tag.clone()),
            rm: true,
            forcerm: true,
            labels: Some(labels),
            ..Default::default()
        };
        let long = d.clone().with_timeout(LONG_CALL);
        let mut output = long.build_image(options, None, Some(bollard::body_full(archive.into())));
        let mut tail: VecDeque<String> = VecDeque::new();
        let failed = |detail: String, tail: &VecDeque<String>| DockerError::Build {
            context: context.to_path_buf(),
            detail: if tail.is_empty() {
                detail
            } else {
                format!(
                    "{detail}\n{}",
                    tail.iter().cloned().collect::<Vec<_>>().join("\n")
                )
            },
        };
        while let Some(item) = output.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream {
                        for line in text.lines().filter(|l| !l.trim().is_empty()) {
                            if tail.len() == 20 {
                                tail.pop_front();
                            }
                            tail.push_back(line.to_string());
                        }
                    }
                    if let Some(msg) = info.error_detail.and_then(|e| e.message) {
                        return Err(failed(msg, &tail));
                    }
                }
                Err(e) => {
                    return Err(match self.err("build image", &tag)(e) {
                        e @ DockerError::Unreachable { .. } => e,
                        e => failed(e.to_string(), &tail),
                    });
                }
            }
        }
        let (id, _) = self
            .image_id(d, &tag)
            .await?
            .ok_or_else(|| failed(format!("the build did not produce `{tag}`"), &tail))?;
        Ok((id, tag))
    }
}

/// `name[:tag]` or `name@digest` split for a pull: `(name, Some(tag))`, with `latest` when
/// there is no tag (an empty tag would pull every tag of the repository).
fn split_reference(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_string(), None);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => {
            let name = &image[..image.len() - tag.len() - 1];
            (name.to_string(), Some(tag.to_string()))
        }
        None => (image.to_string(), Some("latest".to_string())),
    }
}

/// The build context `dir` as a tar archive (entries sorted, no owners or times: the same files
/// give the same bytes), and the SHA-256 of that archive in hex, which names the build.
///
/// The whole folder is sent; `.dockerignore` is not read yet.
///
/// # Errors
/// [`DockerError::Build`] without a `Dockerfile`; [`DockerError::Io`] for unreadable files.
pub(crate) fn context_archive(dir: &Path) -> Result<(Vec<u8>, String), DockerError> {
    if !dir.join("Dockerfile").is_file() {
        return Err(DockerError::Build {
            context: dir.into(),
            detail: "the build context has no `Dockerfile`".into(),
        });
    }
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files)?;
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    for rel in &files {
        let full = dir.join(rel);
        tar.append_path_with_name(&full, rel)
            .map_err(|e| DockerError::io("add to the build context", &full, e))?;
    }
    let bytes = tar
        .into_inner()
        .map_err(|e| DockerError::io("finish the build context", dir, e))?;
    let hash = names::hex(&Sha256::digest(&bytes));
    Ok((bytes, hash))
}

/// Every path under `dir/rel`, relative to `dir`, depth first in name order.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), DockerError> {
    let here = dir.join(rel);
    let mut entries = std::fs::read_dir(&here)
        .map_err(|e| DockerError::io("read the build context", &here, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| DockerError::io("read the build context", &here, e))?;
    entries.sort();
    for name in entries {
        let rel = rel.join(&name);
        let meta = std::fs::symlink_metadata(dir.join(&rel))
            .map_err(|e| DockerError::io("read the build context", dir.join(&rel), e))?;
        out.push(rel.clone());
        if meta.is_dir() {
            walk(dir, &rel, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_for_pulls() {
        assert_eq!(
            split_reference("busybox"),
            ("busybox".into(), Some("latest".into()))
        );
        assert_eq!(
            split_reference("registry:5000/team/app:1.2"),
            ("registry:5000/team/app".into(), Some("1.2".into()))
        );
        assert_eq!(
            split_reference("registry:5000/team/app"),
            ("registry:5000/team/app".into(), Some("latest".into()))
        );
        assert_eq!(
            split_reference("app@sha256:abc"),
            ("app@sha256:abc".into(), None)
        );
    }

    #[test]
    fn context_hash_follows_content_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a"), "1").unwrap();
        let (tar1, h1) = context_archive(d.path()).unwrap();
        // Touching a file (a new mtime) is no change.
        std::fs::write(d.path().join("sub/a"), "1").unwrap();
        let (tar2, h2) = context_archive(d.path()).unwrap();
        assert_eq!((h1.clone(), tar1), (h2, tar2));
        std::fs::write(d.path().join("sub/a"), "2").unwrap();
        assert_ne!(context_archive(d.path()).unwrap().1, h1);

        let names: Vec<String> = tar::Archive::new(&context_archive(d.path()).unwrap().0[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile", "sub", "sub/a"]);

        std::fs::remove_file(d.path().join("Dockerfile")).unwrap();
        let e = context_archive(d.path()).unwrap_err().to_string();
        assert!(e.contains("Dockerfile"), "{e}");
    }
}
