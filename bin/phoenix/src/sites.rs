//! Which provider runs each site's hosts: the [`Router`] one apply drives every site through.

use anyhow::bail;
use phoenix_provider_api::Provider;
use phoenix_provider_api::route::Router;
use phoenix_provider_local::LocalProvider;
use phoenix_spec::{Fleet, ProviderKind};
use std::path::Path;
use std::sync::Arc;

/// A router over the providers of `fleet`'s sites: `local` sites share `local` (this host's
/// agent of the state dir), each Docker endpoint and SSH host gets its own provider.
///
/// # Errors
/// A site whose provider this build cannot drive, or whose endpoint is malformed, named.
pub(crate) fn router_for(
    fleet: &Fleet,
    state_dir: &Path,
    local: &Arc<LocalProvider>,
    tolerate_unreachable: bool,
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
                ProviderKind::Ssh => match ssh_provider(site, host, state_dir) {
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

fn docker_provider(
    site: &phoenix_spec::Site,
    host: u32,
    state_dir: &Path,
) -> anyhow::Result<Arc<dyn Provider>> {
    let _ = (site, host, state_dir);
    bail!("the docker provider is not in this build yet")
}

fn ssh_provider(
    site: &phoenix_spec::Site,
    host: u32,
    state_dir: &Path,
) -> anyhow::Result<Arc<dyn Provider>> {
    let _ = (site, host, state_dir);
    bail!("the ssh provider is not in this build yet")
}
