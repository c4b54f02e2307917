//! A fixture for tests against a real Docker Engine (`DOCKER_HOST`, else the local socket).
//!
//! Without a reachable engine (or without a busybox binary to build the test image from) the
//! tests print why and pass without running, unless `PHOENIX_REQUIRE_DOCKER=1` (CI), when they
//! fail. Nothing is pulled: the test image `phoenix-test/busybox:1` is built `FROM scratch` out
//! of this host's static busybox through the provider's own build path, while any fixture
//! needs it, and removed after the last one. Every container and volume a fixture's providers
//! make carries `phoenix-test-run=<run>` and is removed when the fixture is dropped.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of this module.

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListVolumesOptions, RemoveContainerOptions, RemoveImageOptions,
};
use phoenix_provider_api::conformance::Fixture;
use phoenix_provider_api::{ContainerSpec, Provider, UnitSpec};
use phoenix_provider_docker::{DockerProvider, Endpoint};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// The image every test unit runs.
pub const TEST_IMAGE: &str = "phoenix-test/busybox:1";
/// Set to `1` to fail, not skip, when no engine can be reached.
pub const REQUIRE_VAR: &str = "PHOENIX_REQUIRE_DOCKER";

/// How many live fixtures use the test image (built by the first, removed by the last).
static IMAGE_USERS: Mutex<usize> = Mutex::new(0);

pub struct DockerFixture {
    pub state: tempfile::TempDir,
    /// The value of `phoenix-test-run` on everything this fixture's providers make.
    pub run: String,
    unavailable: Option<String>,
}

impl DockerFixture {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let state = tempfile::Builder::new()
            .prefix("phx-docker")
            .tempdir()
            .expect("temp dir");
        let run = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut fx = DockerFixture {
            state,
            run,
            unavailable: None,
        };
        if let Err(why) = fx.acquire_image() {
            assert!(
                std::env::var(REQUIRE_VAR).as_deref() != Ok("1"),
                "{REQUIRE_VAR}=1 but the Docker tests cannot run: {why}"
            );
            fx.unavailable = Some(format!(
                "{why} (start dockerd, or set {REQUIRE_VAR}=1 to fail instead of skipping)"
            ));
        }
        fx
    }

    /// A provider of this fixture (labelled with its run).
    pub fn docker(&self) -> DockerProvider {
        DockerProvider::from_env(self.state.path())
            .expect("DOCKER_HOST")
            .with_label("phoenix-test-run", &self.run)
    }

    /// Whether the tests can run; when not, says why once and returns `false`.
    pub fn available(&self) -> bool {
        !phoenix_provider_api::conformance::skipped(self)
    }

    /// `spec` running the test image.
    pub fn with_image(&self, spec: UnitSpec) -> UnitSpec {
        with_container(spec, serde_json::json!({ "image": TEST_IMAGE }))
    }

    fn acquire_image(&self) -> Result<(), String> {
        let p = self.docker();
        let version = p.ping().map_err(|e| e.to_string())?;
        let mut users = IMAGE_USERS.lock().unwrap_or_else(|p| p.into_inner());
        if *users == 0 {
            let ctx = busybox_context().map_err(|e| format!("cannot build {TEST_IMAGE}: {e}"))?;
            let spec = with_container(
                UnitSpec::new("phoenix-test", "busybox", "busybox-0", 1).with_command(["sh"]),
                serde_json::json!({ "image": TEST_IMAGE, "build": ctx.path() }),
            );
            p.resolve_image(&spec)
                .map_err(|e| format!("cannot build {TEST_IMAGE} on Docker {version}: {e}"))?;
        }
        *users += 1;
        Ok(())
    }

    fn release_image(&self) {
        let mut users = IMAGE_USERS.lock().unwrap_or_else(|p| p.into_inner());
        *users -= 1;
        if *users == 0 {
            block_on(|d| async move {
                for image in [TEST_IMAGE, "phoenix-helper/empty:1"] {
                    let _ = d
                        .remove_image(image, None::<RemoveImageOptions>, None)
                        .await;
                }
            });
        }
    }
}

impl Fixture for DockerFixture {
    fn provider(&self) -> Box<dyn Provider> {
        Box::new(self.docker())
    }
    fn prepare(&self, spec: UnitSpec) -> UnitSpec {
        self.with_image(spec)
    }
    fn listen_host(&self) -> &str {
        // Inside the container; the port is published on this host's loopback only.
        "0.0.0.0"
    }
    fn unavailable(&self) -> Option<String> {
        self.unavailable.clone()
    }
}

impl Drop for DockerFixture {
    fn drop(&mut self) {
        if self.unavailable.is_some() {
            return;
        }
        let label = format!("phoenix-test-run={}", self.run);
        let left = block_on(|d| async move {
            let mut filters = HashMap::new();
            filters.insert("label".to_string(), vec![label]);
            let containers = d
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters.clone()),
                    ..Default::default()
                }))
                .await
                .unwrap_or_default();
            let mut left = Vec::new();
            for c in containers {
                left.extend(c.names.unwrap_or_default());
                if let Some(id) = c.id {
                    let _ = d
                        .remove_container(
                            &id,
                            Some(RemoveContainerOptions {
                                force: true,
                                v: true,
                                link: false,
                            }),
                        )
                        .await;
                }
            }
            let volumes = d
                .list_volumes(Some(ListVolumesOptions {
                    filters: Some(filters),
                }))
                .await
                .ok()
                .and_then(|v| v.volumes)
                .unwrap_or_default();
            for v in volumes {
                let _ = d
                    .remove_volume(
                        &v.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await;
            }
            left
        });
        self.release_image();
        if !std::thread::panicking() {
            assert!(left.is_empty(), "containers left behind: {left:?}");
        }
    }
}

/// `spec` with the container settings `json` (built through serde, so that fields added to
/// `ContainerSpec` later keep their defaults here).
pub fn with_container(mut spec: UnitSpec, json: serde_json::Value) -> UnitSpec {
    let c: ContainerSpec = serde_json::from_value(json).expect("container spec");
    spec.container = Some(c);
    spec
}

/// Runs `f` with a client of the engine on a runtime of its own.
pub fn block_on<T, F: std::future::Future<Output = T>>(f: impl FnOnce(Docker) -> F) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = Endpoint::from_env().expect("DOCKER_HOST");
    rt.block_on(async move {
        let d = match &endpoint {
            Endpoint::Unix(p) => {
                Docker::connect_with_unix(&p.to_string_lossy(), 60, &api_version())
            }
            Endpoint::Tcp { host, port } => {
                Docker::connect_with_http(&format!("tcp://{host}:{port}"), 60, &api_version())
            }
        }
        .expect("client");
        f(d).await
    })
}

/// An API version every engine since Docker 20.10 (1.41) and before 29 (which dropped
/// versions below 1.44) accepts; the fixture's own cleanup calls need nothing newer.
fn api_version() -> bollard::ClientVersion {
    let v = std::env::var("PHOENIX_TEST_DOCKER_API").unwrap_or_else(|_| "1.41".into());
    let (major, minor) = v
        .split_once('.')
        .expect("PHOENIX_TEST_DOCKER_API is MAJOR.MINOR");
    bollard::ClientVersion {
        major_version: major.parse().expect("major"),
        minor_version: minor.parse().expect("minor"),
    }
}

/// A build context making a busybox image from scratch out of this host's static busybox.
fn busybox_context() -> Result<tempfile::TempDir, String> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("no busybox on this host (apt-get install busybox-static)")?;
    if !is_static(&busybox) {
        return Err(format!(
            "{} is not statically linked (apt-get install busybox-static)",
            busybox.display()
        ));
    }
    let ctx = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::copy(&busybox, ctx.path().join("busybox")).map_err(|e| e.to_string())?;
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .map_err(|e| e.to_string())?;
    Ok(ctx)
}

/// Whether an ELF file has no program interpreter (no `PT_INTERP`: statically linked).
fn is_static(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at =
        |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes")) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        at + 4 <= bytes.len() && u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) != 3
    })
}
