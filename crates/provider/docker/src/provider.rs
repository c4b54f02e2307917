//! [`DockerProvider`]: the connection to one engine, units as containers, and the [`Provider`]
//! implementation.

use crate::error::Op;
use crate::names::{self, LABEL_FLEET, LABEL_INSTANCE, LABEL_PORTS, LABEL_UNIT};
use crate::{DockerError, Endpoint};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    HostConfig, Mount, MountType, PortBinding, RestartPolicy as DockerRestart,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions, UploadToContainerOptions,
};
use phoenix_provider_api::secret::SecretValues;
use phoenix_provider_api::{
    ContainerSpec, Health, ProbeOutcome, Provider, ProviderError, RestartPolicy, Result, Snapshot,
    UnitSpec, UnitState, UnitStatus, Vars, parse_unit_id,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an ordinary API call may take before the engine counts as not answering.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the first call (version negotiation) may take: an engine that does not answer
/// this fast is reported as unreachable rather than stalling the caller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `start` tries again after losing a race (a name conflict to adopt, a port taken
/// between allocation and start).
const START_ATTEMPTS: usize = 4;
/// How long a container whose name is taken may take to show up in `inspect`.
const NAME_SETTLES: Duration = Duration::from_secs(10);

/// The docker provider: units as containers on one Docker Engine.
///
/// Cheap to keep and safe to share between threads; it holds a lazily opened client (the engine
/// need not run when the provider is made), a one-worker async runtime that every call blocks
/// on, and the ports it handed out. Every other fact is read back from the engine.
///
/// # Guarantees
/// Beyond those of [`Provider`]: starts of one unit from any number of providers, processes or
/// crashed-and-restarted callers leave one container; `list` needs nothing but the engine's
/// labels; snapshots and log copies under the state dir are the only files written.
pub struct DockerProvider {
    endpoint: Endpoint,
    endpoint_text: String,
    state_dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    client: Mutex<Option<Docker>>,
    /// Ports handed out by this provider and not yet released by a stop.
    ports: Mutex<BTreeSet<u16>>,
    /// One build at a time per provider: concurrent starts of one service build once.
    pub(crate) build_lock: tokio::sync::Mutex<()>,
    /// Labels added to every container and volume this provider creates.
    extra_labels: BTreeMap<String, String>,
    /// The host address ports are published on.
    publish_ip: String,
}

impl fmt::Debug for DockerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerProvider")
            .field("endpoint", &self.endpoint_text)
            .field("state_dir", &self.state_dir)
            .field("publish_ip", &self.publish_ip)
            .finish_non_exhaustive()
    }
}

impl DockerProvider {
    /// A provider for the engine at `endpoint` (`unix:///var/run/docker.sock`,
    /// `tcp://host:2375`; see [`Endpoint::parse`]) keeping snapshots and log copies under
    /// `state_dir`. Does not contact the engine: the first call does, and says so if it cannot.
    ///
    /// # Errors
    /// [`DockerError::BadEndpoint`], [`DockerError::Runtime`].
    pub fn new(endpoint: &str, state_dir: &Path) -> Result<Self, DockerError> {
        Self::with_endpoint(Endpoint::parse(endpoint)?, state_dir)
    }

    /// [`DockerProvider::new`] on `DOCKER_HOST`, or the local socket when it is not set.
    ///
    /// # Errors
    /// As [`DockerProvider::new`].
    pub fn from_env(state_dir: &Path) -> Result<Self, DockerError> {
        Self::with_endpoint(Endpoint::from_env()?, state_dir)
    }

    /// [`DockerProvider::new`] on a parsed endpoint.
    ///
    /// # Errors
    /// [`DockerError::Runtime`] when the async runtime cannot be created.
    pub fn with_endpoint(endpoint: Endpoint, state_dir: &Path) -> Result<Self, DockerError> {
        // One worker drives the connections; each caller's future runs on the calling thread
        // (`block_on`), so calls from several engine threads proceed side by side.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("phoenix-docker")
            .enable_all()
            .build()
            .map_err(DockerError::Runtime)?;
        Ok(DockerProvider {
            endpoint_text: endpoint.to_string(),
            endpoint,
            state_dir: std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.into()),
            runtime,
            client: Mutex::new(None),
            ports: Mutex::new(BTreeSet::new()),
            build_lock: tokio::sync::Mutex::new(()),
            extra_labels: BTreeMap::new(),
            publish_ip: "127.0.0.1".into(),
        })
    }

    /// Adds `key=value` to the labels of every container and volume this provider creates
    /// (an owner, a test run). `phoenix.*` keys are Phoenix's own and cannot be set here.
    ///
    /// # Panics
    /// If `key` starts with `phoenix.`.
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        assert!(
            !key.starts_with("phoenix."),
            "label `{key}` is reserved for Phoenix"
        );
        self.extra_labels.insert(key.into(), value.into());
        self
    }

    /// Publishes ports on `ip` instead of `127.0.0.1` (a site that says so).
    pub fn with_publish_address(mut self, ip: &str) -> Self {
        self.publish_ip = ip.into();
        self
    }

    /// The engine this provider talks to.
    pub fn docker_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The directory holding snapshots and log copies.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Contacts the engine and returns its version (`28.2.2`): whether the site can be reached,
    /// before anything changes.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] naming the endpoint.
    pub fn ping(&self) -> Result<String> {
        self.run(async {
            let d = self.docker().await?;
            let v = d
                .version()
                .await
                .map_err(self.err("read version", "engine"))?;
            Ok(v.version.unwrap_or_default())
        })
        .map_err(|e: DockerError| e.into_provider(Op::Other))
    }

    /// Creates the container of `spec` without starting it, as [`Provider::start`] does first,
    /// and returns its status (stopped). A caller that dies right after leaves exactly this
    /// container, which `list` shows and the next `start` adopts and starts. An existing
    /// container of the unit is returned as it is.
    ///
    /// # Errors
    /// As [`Provider::start`].
    pub fn create_unit(&self, spec: &UnitSpec) -> Result<UnitStatus> {
        validate(spec)?;
        let unit = spec.unit_id();
        let container = container_spec(spec)?;
        self.run(async {
            let d = self.docker().await?;
            let name = names::container_name(&spec.fleet, &spec.instance, spec.revision);
            for _ in 0..START_ATTEMPTS {
                if let Some(c) = self.inspect(&d, &name).await? {
                    return Ok(c);
                }
                match self
                    .create(&d, spec, container, &name, &Default::default())
                    .await?
                {
                    Created::Yes => {}
                    Created::NameTaken => {
                        if let Some(c) = self.wait_for_container(&d, &name).await? {
                            return Ok(c);
                        }
                    }
                }
            }
            self.inspect(&d, &name).await?.ok_or_else(|| gone(&name))
        })
        .and_then(|c| self.status_of(&c).ok_or_else(|| gone(&unit)))
        .map_err(|e| e.into_provider(Op::Start(&unit)))
    }

    /// Removes the data volumes of every instance of `fleet` (what `destroy --purge` does
    /// after the units are stopped; a plain `destroy` keeps them), and helper containers left
    /// by a crash that would hold them. Returns the volumes removed.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`]; [`ProviderError::Protocol`] for a volume still in use (a
    /// unit of the fleet still runs).
    pub fn remove_volumes(&self, fleet: &str) -> Result<Vec<String>> {
        self.run(self.remove_volumes_async(fleet))
            .map_err(|e| e.into_provider(Op::Other))
    }

    async fn remove_volumes_async(&self, fleet: &str) -> Result<Vec<String>, DockerError> {
        let d = self.docker().await?;
        for h in self.containers(&d, &[(names::LABEL_HELPER, fleet)]).await? {
            if let Some(id) = h.id {
                self.remove_container(&d, &id).await?;
            }
        }
        let mut filters = HashMap::new();
        filters.insert(
            "label",
            vec![format!("{}={fleet}", names::LABEL_VOLUME_FLEET)],
        );
        let list = d
            .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                filters: Some(to_filters(filters)),
            }))
            .await
            .map_err(self.err("list volumes", fleet))?;
        let mut removed = Vec::new();
        for v in list.volumes.unwrap_or_default() {
            match d
                .remove_volume(
                    &v.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
            {
                Ok(()) => removed.push(v.name),
                Err(e) => {
                    let e =
                        DockerError::from_bollard(e, &self.endpoint_text, "remove volume", &v.name);
                    if !e.is_not_found() {
                        return Err(e);
                    }
                }
            }
        }
        removed.sort();
        Ok(removed)
    }

    // -----------------------------------------------------------------------------------------
    // The connection

    /// Runs `f` to completion on the provider's runtime. From inside another Tokio runtime
    /// (where blocking on one is not allowed) it runs on a scoped thread instead.
    pub(crate) fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| self.runtime.block_on(f))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            self.runtime.block_on(f)
        }
    }

    /// A closure turning a client error of `step` on `object` into a [`DockerError`].
    pub(crate) fn err<'a>(
        &'a self,
        step: &'static str,
        object: &'a str,
    ) -> impl FnOnce(bollard::errors::Error) -> DockerError + 'a {
        move |e| DockerError::from_bollard(e, &self.endpoint_text, step, object)
    }

    /// The client, connected and its API version agreed with the engine on first use. A
    /// failed first contact is not remembered, so the next call tries again.
    pub(crate) async fn docker(&self) -> Result<Docker, DockerError> {
        let cached = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(d) = cached {
            return Ok(d);
        }
        let d = self.connect().await?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.clone());
        Ok(d)
    }

    async fn connect(&self) -> Result<Docker, DockerError> {
        let mut version = *bollard::API_DEFAULT_VERSION;
        // bollard's own negotiation asks `/v<newest>/version`, which an older engine refuses
        // ("client version 1.53 is too new. Maximum supported API version is 1.41"): read the
        // maximum from that answer, or the engine's version from a successful one.
        for _ in 0..3 {
            let d = self.client_of_version(&version)?;
            let answer = d.clone().with_timeout(CONNECT_TIMEOUT).version().await;
            let server = match answer {
                Ok(v) => match v.api_version.as_deref().and_then(parse_api_version) {
                    Some(s) if s < version => s,
                    _ => return Ok(d.with_timeout(CALL_TIMEOUT)),
                },
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 400,
                    message,
                }) if max_api_version(&message).is_some() => {
                    max_api_version(&message).expect("checked")
                }
                Err(e) => return Err(self.err("connect", "engine")(e)),
            };
            version = server;
        }
        Err(DockerError::Client {
            step: "agree on an API version",
            object: self.endpoint_text.clone(),
            cause: "the engine's answers keep changing".into(),
        })
    }

    fn client_of_version(&self, v: &bollard::ClientVersion) -> Result<Docker, DockerError> {
        let secs = CALL_TIMEOUT.as_secs();
        let d = match &self.endpoint {
            Endpoint::Unix(path) => Docker::connect_with_unix(&path.to_string_lossy(), secs, v),
            Endpoint::Tcp { host, port } => {
                Docker::connect_with_http(&format!("tcp://{host}:{port}"), secs, v)
            }
        };
        d.map_err(self.err("connect", "engine"))
    }

    // -----------------------------------------------------------------------------------------
    // Containers

    /// Every container (running or not) carrying all of `labels`.
    pub(crate) async fn containers(
        &self,
        d: &Docker,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, DockerError> {
        let mut filters = HashMap::new();
        filters.insert(
            "label",
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
        d.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(to_filters(filters)),
            ..Default::default()
        }))
        .await
        .map_err(self.err("list containers", labels.first().map_or("", |l| l.1)))
    }

    /// The container `name_or_id`, or `None` if there is none.
    pub(crate) async fn inspect(
        &self,
        d: &Docker,
        name_or_id: &str,
    ) -> Result<Option<ContainerInspectResponse>, DockerError> {
        match d
            .inspect_container(name_or_id, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                let e = self.err("inspect container", name_or_id)(e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// The container `name` once it can be inspected. After another client's create took the
    /// name, the engine refuses the name before it shows the container, for a moment.
    async fn wait_for_container(
        &self,
        d: &Docker,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, DockerError> {
        let deadline = Instant::now() + NAME_SETTLES;
        loop {
            if let Some(c) = self.inspect(d, name).await? {
                return Ok(Some(c));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Removes a container (killing it if it runs) and its anonymous volumes; gone already is
    /// fine, and one being removed by someone else is waited for.
    pub(crate) async fn remove_container(&self, d: &Docker, id: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match d.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = self.err("remove container", id)(e);
                if e.is_not_found() {
                    return Ok(());
                }
                if !e.is_status(409) {
                    return Err(e);
                }
                // "removal of container ... is already in progress": wait until it is gone.
                let deadline = Instant::now() + CALL_TIMEOUT;
                while self.inspect(d, id).await?.is_some() {
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(())
            }
        }
    }

    /// Creates the container of `spec` named `name`: resolves the image, allocates ports,
    /// makes sure the data volume exists.
    async fn create(
        &self,
        d: &Docker,
        spec: &UnitSpec,
        container: &ContainerSpec,
        name: &str,
        secrets: &SecretValues,
    ) -> Result<Created, DockerError> {
        let (image_id, image_ref) = self.pinned_or_resolved(d, spec, container).await?;
        let ports = self.allocate_ports(d, &spec.ports).await?;
        let made = async {
            self.ensure_volume(d, &spec.fleet, &spec.instance).await?;
            let body =
                self.container_body(spec, container, &image_id, &image_ref, &ports, secrets)?;
            let opts = CreateContainerOptions {
                name: Some(name.into()),
                ..Default::default()
            };
            match d.create_container(Some(opts), body).await {
                // The secrets' files go into the data volume before the first start.
                Ok(_) => self
                    .put_secrets(d, name, spec, secrets)
                    .await
                    .map(|()| Created::Yes),
                Err(e) => {
                    let e = self.err("create container", name)(e);
                    // Someone else created it first: adopt theirs.
                    if e.is_status(409) {
                        Ok(Created::NameTaken)
                    } else {
                        Err(e)
                    }
                }
            }
        }
        .await;
        if !matches!(made, Ok(Created::Yes)) {
            self.release_ports(ports.values());
        }
        made
    }

    /// Writes the values of `secrets` into the unit's data volume, through the created (not
    /// yet started) container `name`: `.secrets/` (0700) with a 0600 file per secret, as the
    /// local provider lays them out.
    async fn put_secrets(
        &self,
        d: &Docker,
        name: &str,
        spec: &UnitSpec,
        secrets: &SecretValues,
    ) -> Result<(), DockerError> {
        if secrets.is_empty() {
            return Ok(());
        }
        let err = |cause: std::io::Error| DockerError::Client {
            step: "pack the secrets",
            object: spec.unit_id(),
            cause: cause.to_string(),
        };
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o700);
        h.set_size(0);
        t.append_data(
            &mut h,
            phoenix_provider_api::secret::SECRETS_DIR,
            std::io::empty(),
        )
        .map_err(err)?;
        for (n, v) in secrets.iter() {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o600);
            h.set_size(v.expose().len() as u64);
            let path = format!("{}/{n}", phoenix_provider_api::secret::SECRETS_DIR);
            t.append_data(&mut h, path, v.expose().as_bytes())
                .map_err(err)?;
        }
        let bytes = t.into_inner().map_err(err)?;
        let dir = names::data_dir(&spec.instance)
            .to_string_lossy()
            .into_owned();
        d.upload_to_container(
            name,
            Some(UploadToContainerOptions {
                path: dir.clone(),
                no_overwrite_dir_non_dir: None,
                copy_uidgid: None,
            }),
            bollard::body_full(bytes.into()),
        )
        .await
        .map_err(self.err("copy the secrets into the data volume", &dir))
    }

    fn container_body(
        &self,
        spec: &UnitSpec,
        container: &ContainerSpec,
        image_id: &str,
        image_ref: &str,
        ports: &BTreeMap<String, u16>,
        secrets: &SecretValues,
    ) -> Result<ContainerCreateBody, DockerError> {
        let data_dir = names::data_dir(&spec.instance);
        let vars = Vars::for_spec(spec, &data_dir, ports);
        let subst = |t: &str| {
            // `${secret:NAME}` from the values handed over (the files are inside the volume,
            // not on this host); everything else as on any provider.
            phoenix_provider_api::secret::apply_with_values(&vars, secrets, t).map_err(|e| {
                DockerError::Client {
                    step: "substitute",
                    object: spec.unit_id(),
                    cause: e.to_string(),
                }
            })
        };
        // No command: the image's own `CMD` runs.
        let cmd = spec
            .command
            .iter()
            .map(|a| subst(a))
            .collect::<Result<Vec<_>, _>>()?;
        let cmd = (!cmd.is_empty()).then_some(cmd);
        let env = spec
            .env
            .iter()
            .map(|(k, v)| Ok(format!("{k}={}", subst(v)?)))
            .collect::<Result<Vec<_>, DockerError>>()?;
        let mut labels: HashMap<String, String> = self.extra_labels.clone().into_iter().collect();
        for (k, v) in [
            (LABEL_FLEET, spec.fleet.clone()),
            (LABEL_UNIT, spec.unit_id()),
            (LABEL_INSTANCE, spec.instance.clone()),
            (names::LABEL_SERVICE, spec.service.clone()),
            (names::LABEL_REVISION, spec.revision.to_string()),
            (names::LABEL_SITE, spec.site.clone()),
            (names::LABEL_HOST, spec.host.to_string()),
            (
                LABEL_PORTS,
                serde_json::to_string(ports).expect("ports serialise"),
            ),
            (names::LABEL_IMAGE, image_id.to_string()),
            (names::LABEL_IMAGE_REF, image_ref.to_string()),
        ] {
            labels.insert(k.into(), v);
        }
        let port_keys: Vec<String> = ports.values().map(|p| format!("{p}/tcp")).collect();
        let bindings = ports
            .values()
            .map(|p| {
                (
                    format!("{p}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some(self.publish_ip.clone()),
                        host_port: Some(p.to_string()),
                    }]),
                )
            })
            .collect();
        let restart = match spec.restart {
            RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
            RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
            RestartPolicy::Never => RestartPolicyNameEnum::NO,
        };
        let grace_secs = i64::try_from(spec.stop_grace_ms.div_ceil(1000)).unwrap_or(i64::MAX);
        Ok(ContainerCreateBody {
            image: Some(image_id.into()),
            cmd,
            env: Some(env),
            // `user:` is the container's `User`: a name the image's /etc/passwd must know
            // (Docker refuses to start the container otherwise, and the start error says so).
            user: spec.user.clone(),
            labels: Some(labels),
            exposed_ports: Some(port_keys),
            stop_timeout: Some(grace_secs),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                restart_policy: Some(DockerRestart {
                    name: Some(restart),
                    maximum_retry_count: None,
                }),
                nano_cpus: container
                    .cpu_millis
                    .map(|m| i64::try_from(m.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
                memory: container
                    .memory_bytes
                    .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
                mounts: Some(vec![volume_mount(&spec.fleet, &spec.instance)]),
                // Docker's init (tini) as PID 1 passes SIGTERM on to the command, which as
                // PID 1 itself would ignore it unless it installed a handler, and reaps zombies.
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Makes sure the data volume of `instance` exists, labelled as the fleet's.
    ///
    /// # Errors
    /// [`DockerError::Api`] (409) when a volume of that name belongs to another fleet.
    pub(crate) async fn ensure_volume(
        &self,
        d: &Docker,
        fleet: &str,
        instance: &str,
    ) -> Result<String, DockerError> {
        let name = names::volume_name(fleet, instance);
        match d.inspect_volume(&name).await {
            Ok(v) => match v.labels.get(names::LABEL_VOLUME_FLEET) {
                Some(owner) if owner != fleet => Err(DockerError::Api {
                    step: "use volume",
                    object: name.clone(),
                    status: 409,
                    message: format!("the volume belongs to fleet `{owner}`"),
                }),
                _ => Ok(name),
            },
            Err(e) => {
                let e = self.err("inspect volume", &name)(e);
                if !e.is_not_found() {
                    return Err(e);
                }
                let mut labels: HashMap<String, String> =
                    self.extra_labels.clone().into_iter().collect();
                labels.insert(names::LABEL_VOLUME_FLEET.into(), fleet.into());
                labels.insert(LABEL_INSTANCE.into(), instance.into());
                d.create_volume(VolumeCreateRequest {
                    name: Some(name.clone()),
                    labels: Some(labels),
                    ..Default::default()
                })
                .await
                .map_err(self.err("create volume", &name))?;
                Ok(name)
            }
        }
    }

    /// Whether `name` already has a volume.
    pub(crate) async fn volume_exists(&self, d: &Docker, name: &str) -> Result<bool, DockerError> {
        match d.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = self.err("inspect volume", name)(e);
                if e.is_not_found() { Ok(false) } else { Err(e) }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Ports

    /// One free port of this host per name, distinct from every port this provider handed
    /// out and from those any Phoenix container on the engine has.
    async fn allocate_ports(
        &self,
        d: &Docker,
        names: &[String],
    ) -> Result<BTreeMap<String, u16>, DockerError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut taken = BTreeSet::new();
        for c in self.containers_with_key(d, LABEL_UNIT).await? {
            taken.extend(ports_of(&c).into_values());
        }
        self.allocate_from(names, &taken)
    }

    async fn containers_with_key(
        &self,
        d: &Docker,
        key: &str,
    ) -> Result<Vec<ContainerSummary>, DockerError> {
        let mut filters = HashMap::new();
        filters.insert("label", vec![key.to_string()]);
        d.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(to_filters(filters)),
            ..Default::default()
        }))
        .await
        .map_err(self.err("list containers", key))
    }

    fn allocate_from(
        &self,
        names: &[String],
        taken: &BTreeSet<u16>,
    ) -> Result<BTreeMap<String, u16>, DockerError> {
        let mut mine = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        // Listeners stay open until every name has its port, so the kernel never hands the
        // same one out twice in this loop.
        let mut held = Vec::new();
        let mut out = BTreeMap::new();
        for name in names {
            for _ in 0..100 {
                let l = TcpListener::bind("127.0.0.1:0")
                    .map_err(|e| DockerError::io("allocate a port", "127.0.0.1:0", e))?;
                let port = l
                    .local_addr()
                    .map_err(|e| DockerError::io("allocate a port", "127.0.0.1:0", e))?
                    .port();
                held.push(l);
                if !taken.contains(&port) && !mine.contains(&port) {
                    out.insert(name.clone(), port);
                    break;
                }
            }
            if !out.contains_key(name) {
                return Err(DockerError::io(
                    "allocate a port",
                    "127.0.0.1:0",
                    std::io::Error::other("every port the kernel offered is in use"),
                ));
            }
        }
        mine.extend(out.values().copied());
        Ok(out)
    }

    fn release_ports<'a>(&self, ports: impl IntoIterator<Item = &'a u16>) {
        let mut mine = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        for p in ports {
            mine.remove(p);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Status

    /// What a unit container's labels and state say, or `None` for a container that is not a
    /// unit (no or malformed `phoenix.*` labels).
    pub(crate) fn status_of(&self, c: &ContainerInspectResponse) -> Option<UnitStatus> {
        let labels = c.config.as_ref()?.labels.as_ref()?;
        let fleet = labels.get(LABEL_FLEET)?.clone();
        let unit_id = labels.get(LABEL_UNIT)?.clone();
        let (instance, revision) = parse_unit_id(&unit_id)?;
        let ports: BTreeMap<String, u16> = labels
            .get(LABEL_PORTS)
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default();
        let state = c.state.clone().unwrap_or_default();
        let code = state.exit_code.unwrap_or(0);
        let code32 = i32::try_from(code).unwrap_or(i32::MAX);
        let error = state.error.clone().filter(|e| !e.is_empty());
        let finished = state.finished_at.clone().unwrap_or_default();
        let (unit_state, detail) = match state.status {
            Some(ContainerStateStatusEnum::RUNNING) => (UnitState::Running, None),
            Some(ContainerStateStatusEnum::PAUSED) => {
                (UnitState::Stopped, Some("paused".to_string()))
            }
            Some(ContainerStateStatusEnum::RESTARTING) => (
                UnitState::Exited(code32),
                Some(format!("exited with code {code}; restarting")),
            ),
            Some(ContainerStateStatusEnum::EXITED) if state.oom_killed == Some(true) => (
                UnitState::Failed,
                Some("killed: out of its memory limit".to_string()),
            ),
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::CREATED)
                if error.is_some() =>
            {
                (UnitState::Failed, error.clone())
            }
            Some(ContainerStateStatusEnum::EXITED) => (
                UnitState::Exited(code32),
                Some(format!("exited with code {code} at {finished}")),
            ),
            Some(ContainerStateStatusEnum::CREATED) => {
                (UnitState::Stopped, Some("created, not started".to_string()))
            }
            Some(ContainerStateStatusEnum::REMOVING | ContainerStateStatusEnum::STOPPING) => {
                (UnitState::Stopped, Some("being removed".to_string()))
            }
            Some(ContainerStateStatusEnum::DEAD) => (
                UnitState::Failed,
                Some(error.unwrap_or_else(|| "dead".into())),
            ),
            Some(ContainerStateStatusEnum::EMPTY) | None => {
                (UnitState::Failed, Some("no state reported".to_string()))
            }
        };
        Some(UnitStatus {
            unit_id: unit_id.clone(),
            service: labels
                .get(names::LABEL_SERVICE)
                .cloned()
                .unwrap_or_else(|| {
                    instance
                        .rsplit_once('-')
                        .map_or(instance, |(s, _)| s)
                        .to_string()
                }),
            instance: instance.to_string(),
            revision,
            site: labels.get(names::LABEL_SITE).cloned().unwrap_or_default(),
            state: unit_state,
            // A pid of the engine's host means nothing here (the engine may be remote).
            pid: None,
            handle: c.id.clone(),
            ports,
            data_dir: names::data_dir(instance),
            restarts: c
                .restart_count
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            logs: vec![self.log_file(&fleet, &unit_id)],
            detail,
            fleet,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Provider operations

    async fn start_async(
        &self,
        spec: &UnitSpec,
        container: &ContainerSpec,
        secrets: &SecretValues,
    ) -> Result<ContainerInspectResponse, DockerError> {
        let d = self.docker().await?;
        let name = names::container_name(&spec.fleet, &spec.instance, spec.revision);
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let c = match self.inspect(&d, &name).await? {
                Some(c) => c,
                None => match self.create(&d, spec, container, &name, secrets).await? {
                    Created::Yes => self.inspect(&d, &name).await?.ok_or_else(|| gone(&name))?,
                    Created::NameTaken => match self.wait_for_container(&d, &name).await? {
                        Some(c) => c,
                        None => continue,
                    },
                },
            };
            let status = c.state.as_ref().and_then(|s| s.status);
            match status {
                // Running, or between runs under its restart policy: it is supervised already.
                Some(
                    ContainerStateStatusEnum::RUNNING
                    | ContainerStateStatusEnum::RESTARTING
                    | ContainerStateStatusEnum::PAUSED,
                ) => return Ok(c),
                Some(ContainerStateStatusEnum::REMOVING | ContainerStateStatusEnum::STOPPING) => {
                    return Err(DockerError::Api {
                        step: "start container",
                        object: name,
                        status: 409,
                        message: "the container is being stopped and removed".into(),
                    });
                }
                _ => {}
            }
            let id = c.id.clone().unwrap_or_else(|| name.clone());
            match d
                .start_container(
                    &id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
            {
                Ok(()) => return self.inspect(&d, &id).await?.ok_or_else(|| gone(&name)),
                Err(e) => {
                    let e = self.err("start container", &name)(e);
                    if e.is_status(409) {
                        return Err(e);
                    }
                    // It cannot run as it is: keep its logs, remove it, and hand its ports
                    // back; a port someone took meanwhile is worth another try with new ones.
                    let port_taken = matches!(&e, DockerError::Api { message, .. }
                        if message.contains("address already in use")
                            || message.contains("port is already allocated"));
                    if let Some(unit) = self.status_of(&c) {
                        let _ = self.sync_logs(&d, &spec.fleet, &unit.unit_id, &id).await;
                        self.release_ports(unit.ports.values());
                    }
                    self.remove_container(&d, &id).await?;
                    if !port_taken {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| gone(&name)))
    }

    async fn stop_async(
        &self,
        fleet: &str,
        unit_id: &str,
        grace: Duration,
    ) -> Result<(), DockerError> {
        let d = self.docker().await?;
        let secs = i32::try_from(grace.as_millis().div_ceil(1000)).unwrap_or(i32::MAX);
        for c in self
            .containers(&d, &[(LABEL_FLEET, fleet), (LABEL_UNIT, unit_id)])
            .await?
        {
            let Some(id) = c.id.clone() else { continue };
            let long = d.clone().with_timeout(grace + CALL_TIMEOUT);
            let stopped = long
                .stop_container(
                    &id,
                    Some(StopContainerOptions {
                        t: Some(secs),
                        signal: None,
                    }),
                )
                .await;
            if let Err(e) = stopped {
                let e = self.err("stop container", &id)(e);
                if e.is_not_found() {
                    continue;
                }
                // A container being removed already is handled by the removal below.
                if !e.is_status(409) {
                    return Err(e);
                }
            }
            let _ = self.sync_logs(&d, fleet, unit_id, &id).await;
            self.remove_container(&d, &id).await?;
            self.release_ports(ports_of(&c).values());
        }
        Ok(())
    }

    async fn list_async(&self, fleet: &str) -> Result<Vec<UnitStatus>, DockerError> {
        let d = self.docker().await?;
        let mut out = Vec::new();
        for c in self.containers(&d, &[(LABEL_FLEET, fleet)]).await? {
            let Some(id) = c.id else { continue };
            // Removed between the list and now: not there.
            if let Some(full) = self.inspect(&d, &id).await?
                && let Some(st) = self.status_of(&full)
                && st.fleet == fleet
            {
                out.push(st);
            }
        }
        out.sort_by(|a, b| (&a.unit_id, &a.handle).cmp(&(&b.unit_id, &b.handle)));
        Ok(out)
    }
}

/// Whether `create` made the container or found the name taken.
enum Created {
    Yes,
    NameTaken,
}

/// The container vanished between two calls.
fn gone(name: &str) -> DockerError {
    DockerError::Api {
        step: "inspect container",
        object: name.into(),
        status: 409,
        message: "the container disappeared while being started (removed by another client?)"
            .into(),
    }
}

/// [`UnitSpec::validate`], except that a container unit may have no command (its image's
/// `CMD` runs), as the engine allows on docker sites.
fn validate(spec: &UnitSpec) -> Result<()> {
    if spec.command.is_empty() && spec.container.is_some() {
        let mut with_command = spec.clone();
        with_command.command = vec!["the-image-command".into()];
        with_command.validate()
    } else {
        spec.validate()
    }
}

/// The container settings of `spec`, which a docker site needs.
pub(crate) fn container_spec(spec: &UnitSpec) -> Result<&ContainerSpec> {
    match &spec.container {
        Some(c) if c.image.is_some() || c.build.is_some() => Ok(c),
        _ => Err(ProviderError::InvalidSpec {
            unit: spec.unit_id(),
            problem: format!(
                "service `{}` runs on a docker site and needs `image` or `build`",
                spec.service
            ),
        }),
    }
}

/// The volume mount of an instance's data dir.
pub(crate) fn volume_mount(fleet: &str, instance: &str) -> Mount {
    Mount {
        target: Some(names::data_dir(instance).to_string_lossy().into_owned()),
        source: Some(names::volume_name(fleet, instance)),
        typ: Some(MountType::VOLUME),
        ..Default::default()
    }
}

/// The ports recorded on a container's labels.
fn ports_of(c: &ContainerSummary) -> BTreeMap<String, u16> {
    c.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_PORTS))
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default()
}

pub(crate) fn to_filters(f: HashMap<&str, Vec<String>>) -> HashMap<String, Vec<String>> {
    f.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// `1.41` as a client version.
fn parse_api_version(s: &str) -> Option<bollard::ClientVersion> {
    let (major, minor) = s.trim().split_once('.')?;
    Some(bollard::ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// The version in "client version 1.53 is too new. Maximum supported API version is 1.41".
fn max_api_version(message: &str) -> Option<bollard::ClientVersion> {
    let (_, rest) = message.split_once("Maximum supported API version is ")?;
    parse_api_version(rest.split_whitespace().next()?.trim_end_matches('.'))
}

impl Provider for DockerProvider {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn resolve_image(&self, spec: &UnitSpec) -> Result<Option<String>> {
        DockerProvider::resolve_image(self, spec).map(Some)
    }

    fn purge(&self, fleet: &str) -> Result<Vec<String>> {
        self.remove_volumes(fleet)
    }

    /// `docker://unix:///var/run/docker.sock`, `docker://tcp://host:2375`.
    fn endpoint(&self) -> String {
        format!("docker://{}", self.endpoint_text)
    }

    fn start(&self, spec: &UnitSpec) -> Result<UnitStatus> {
        self.start_with_secrets(spec, &Default::default())
    }

    fn start_with_secrets(&self, spec: &UnitSpec, secrets: &SecretValues) -> Result<UnitStatus> {
        validate(spec)?;
        let secrets = secrets.for_spec(spec)?;
        let container = container_spec(spec)?;
        let unit = spec.unit_id();
        self.run(self.start_async(spec, container, &secrets))
            .and_then(|c| self.status_of(&c).ok_or_else(|| gone(&unit)))
            .map_err(|e| e.into_provider(Op::Start(&unit)))
    }

    fn stop(&self, fleet: &str, unit_id: &str, grace: Duration) -> Result<()> {
        self.run(self.stop_async(fleet, unit_id, grace))
            .map_err(|e| e.into_provider(Op::Stop(unit_id)))
    }

    fn list(&self, fleet: &str) -> Result<Vec<UnitStatus>> {
        self.run(self.list_async(fleet))
            .map_err(|e| e.into_provider(Op::Other))
    }

    fn probe(&self, unit: &UnitStatus, health: &Health) -> ProbeOutcome {
        self.probe_unit(unit, health)
    }

    fn snapshot(
        &self,
        fleet: &str,
        instance: &str,
        paths: &[String],
        tag: &str,
    ) -> Result<Snapshot> {
        self.snapshot_paths(fleet, instance, paths, tag)
    }

    fn restore(&self, fleet: &str, instance: &str, tag: &str) -> Result<Snapshot> {
        self.restore_snapshot(fleet, instance, tag)
    }

    fn log_paths(&self, fleet: &str, selector: &str) -> Result<Vec<PathBuf>> {
        self.copy_logs(fleet, selector)
    }

    fn output_tail(&self, unit: &UnitStatus, max_bytes: usize) -> Result<String> {
        // The output lives in Docker: bring the copy on this host up to date first.
        self.copy_logs(&unit.fleet, &unit.instance)?;
        phoenix_provider_api::logs::tail_of_files(&unit.logs, max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_read_from_the_engines_refusal() {
        let v = max_api_version(
            "client version 1.53 is too new. Maximum supported API version is 1.41",
        )
        .unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(max_api_version("page not found").is_none());
        assert!(parse_api_version("1.x").is_none());
    }

    #[test]
    fn a_docker_unit_needs_an_image_or_a_build() {
        let mut spec = UnitSpec::new("f", "web", "web-0", 1).with_command(["x"]);
        let e = container_spec(&spec).unwrap_err().to_string();
        assert!(e.contains("`web`") && e.contains("image"), "{e}");
        spec.container = Some(serde_json::from_str(r#"{"image": "i:1"}"#).unwrap());
        assert!(container_spec(&spec).is_ok());
    }

    #[test]
    fn endpoints_name_the_engine() {
        let d = tempfile::tempdir().unwrap();
        let p = DockerProvider::new("unix:///var/run//docker.sock", d.path()).unwrap();
        assert_eq!(p.endpoint(), "docker://unix:///var/run/docker.sock");
        let p = DockerProvider::new("tcp://Host-1", d.path()).unwrap();
        assert_eq!(p.endpoint(), "docker://tcp://host-1:2375");
    }
}
