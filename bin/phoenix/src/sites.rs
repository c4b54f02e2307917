//! Which provider runs each site's hosts: the [`Router`] one apply drives every site through.

use anyhow::bail;
use phoenix_provider_api::Provider;
use phoenix_provider_api::route::Router;
use phoenix_provider_local::LocalProvider;
use phoenix_spec::{Fleet, ProviderKind};
use std::path::Path;
use std::sync::Arc;

/// A router over the providers of `fleet`'s sites: `local` sites share `local` (this host's
/// agent of the state dir), each Docker endpoint and SSH host gets its own provider. `reading`
/// commands get providers that start and install nothing.
///
/// # Errors
/// A site whose provider this build cannot drive, or whose endpoint is malformed, named.
pub(crate) fn router_for(
    fleet: &Fleet,
    state_dir: &Path,
    local: &Arc<LocalProvider>,
    tolerate_unreachable: bool,
    reading: bool,
) -> anyhow::Result<Router> {
    let mut router = Router::new().tolerate_unreachable(tolerate_unreachable);
    let mut unsupported = Vec::new();
    for site in &fleet.sites {
        for host in 0..site.hosts {
            let provider: Arc<dyn Provider> = match site.provider {
                ProviderKind::Local => local.clone(),
                ProviderKind::Docker => match docker_provider(site, host, state_dir) {
                    Ok(p) => p,
                    Err(e) => {
                        unsupported.push(format!("site `{}`: {e:#}", site.name));
                        break;
                    }
                },
                ProviderKind::Ssh => match ssh_provider(site, host, state_dir, reading) {
                    Ok(p) => p,
                    Err(e) => {
                        unsupported.push(format!("site `{}`: {e:#}", site.name));
                        break;
                    }
                },
                ProviderKind::Kubernetes | ProviderKind::Proxmox => {
                    unsupported.push(format!(
                        "site `{}` uses provider `{}`, which this build of phoenix cannot deploy to yet (local, docker and ssh can)",
                        site.name,
                        site.provider.as_str()
                    ));
                    break;
                }
            };
            router.add(&site.name, host, provider);
        }
    }
    if !unsupported.is_empty() {
        bail!("cannot reach every site:\n  {}", unsupported.join("\n  "));
    }
    Ok(router)
}

/// Host `host` of a docker site: its listed endpoint, or `DOCKER_HOST` / the local socket for
/// a site that lists none. Snapshots and log copies go under `STATE_DIR/docker`.
fn docker_provider(
    site: &phoenix_spec::Site,
    host: u32,
    state_dir: &Path,
) -> anyhow::Result<Arc<dyn Provider>> {
    let dir = state_dir.join("docker");
    let endpoints = site
        .docker
        .as_ref()
        .map(|d| d.endpoints.as_slice())
        .unwrap_or_default();
    let provider = match endpoints.get(host as usize) {
        Some(endpoint) => phoenix_provider_docker::DockerProvider::new(endpoint, &dir)?,
        None => phoenix_provider_docker::DockerProvider::from_env(&dir)?,
    };
    Ok(Arc::new(provider))
}

/// Host `host` of an ssh site, with local copies of its logs under `STATE_DIR/ssh`; for a
/// reading command, one that installs nothing and starts no agent there.
fn ssh_provider(
    site: &phoenix_spec::Site,
    host: u32,
    state_dir: &Path,
    reading: bool,
) -> anyhow::Result<Arc<dyn Provider>> {
    let Some(ssh) = &site.ssh else {
        bail!("it lists no `ssh.hosts`");
    };
    let targets = phoenix_provider_ssh::SshTarget::from_site(
        &ssh.hosts,
        ssh.port,
        ssh.identity.as_deref().map(Path::new),
    )?;
    let Some(target) = targets.into_iter().nth(host as usize) else {
        bail!("it lists no ssh host {host}");
    };
    let config =
        phoenix_provider_ssh::SshConfig::new(target, &state_dir.join("ssh")).read_only(reading);
    Ok(Arc::new(phoenix_provider_ssh::SshProvider::new(config)?))
}
