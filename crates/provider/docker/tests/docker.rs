//! What the docker provider promises beyond the conformance suite, against a real engine
//! (skipped with a printed reason when none can be reached, unless `PHOENIX_REQUIRE_DOCKER=1`).

mod common;

use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use common::{DockerFixture, TEST_IMAGE, block_on, with_container};
use phoenix_provider_api::conformance::{FleetGuard, WAIT, fleet_name, shell, sleeper, wait_for};
use phoenix_provider_api::{Provider, ProviderError, RestartPolicy, UnitState};
use phoenix_provider_docker::DockerProvider;
use std::collections::HashMap;
use std::time::Duration;

/// Containers (any state) carrying `label` (`key=value`).
fn containers_with(label: &str) -> Vec<bollard::models::ContainerSummary> {
    let label = label.to_string();
    block_on(|d| async move {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![label]);
        d.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers")
    })
}

/// A crash between creating a unit's container and starting it (the client dropped, as a
/// killed `phoenix apply` or a daemon restart mid-apply would leave it) leaves one container,
/// which `list` shows and the next start (from a new client, several at once) adopts.
#[test]
fn a_crash_between_create_and_start_leaves_one_container() {
    let fx = DockerFixture::new();
    if !fx.available() {
        return;
    }
    let fleet = fleet_name("crash");
    let spec = fx.with_image(sleeper(&fleet, "app-0", 1).with_ports(["port"]));
    let created = {
        let crashed = fx.docker();
        let st = crashed.create_unit(&spec).expect("create");
        assert_eq!(st.state, UnitState::Stopped, "{st:?}");
        st
        // `crashed` is dropped here without starting anything.
    };
    let p = fx.docker();
    let _g = FleetGuard::new(&p, &fleet);
    let listed = p.list(&fleet).expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].state, UnitState::Stopped);

    let starts: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| fx.docker().start(&spec).expect("start after the crash")))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("start thread"))
            .collect()
    });
    for st in &starts {
        assert_eq!(st.handle, created.handle, "a second container: {starts:?}");
        assert_eq!(st.ports, created.ports, "ports changed on adoption");
    }
    let units = containers_with(&format!("phoenix.fleet={fleet}"));
    assert_eq!(units.len(), 1, "duplicates: {units:?}");
    assert_eq!(p.list(&fleet).expect("list")[0].state, UnitState::Running);
}

/// The container carries the labels `list` relies on and the image id `resolve_image` gave;
/// limits, restart policy, port publishing and the data volume are as the spec says; no helper
/// (snapshot) container carries `phoenix.fleet` or outlives its operation.
#[test]
fn containers_carry_labels_limits_policy_ports_and_volume() {
    let fx = DockerFixture::new();
    if !fx.available() {
        return;
    }
    let fleet = fleet_name("labels");
    let p = fx.docker();
    let _g = FleetGuard::new(&p, &fleet);
    let mut spec = with_container(
        shell(
            &fleet,
            "web-0",
            2,
            "echo hi > \"${data_dir}/f\"; exec sleep 120",
        )
        .with_ports(["http", "admin"])
        .with_restart(RestartPolicy::Always),
        serde_json::json!({ "image": TEST_IMAGE, "cpu_millis": 250, "memory_bytes": 64 << 20 }),
    );
    spec.site = "core-1".into();
    spec.host = 3;
    let image_id = p.resolve_image(&spec).expect("resolve image");
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    let st = p.start(&spec).expect("start");
    let id = st.handle.clone().expect("container id");
    let c = block_on(|d| async move {
        d.inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .expect("inspect")
    });
    let labels = c.config.as_ref().unwrap().labels.clone().unwrap();
    let want = [
        ("phoenix.fleet", fleet.as_str()),
        ("phoenix.unit", "web-0@r2"),
        ("phoenix.instance", "web-0"),
        ("phoenix.service", "web"),
        ("phoenix.revision", "2"),
        ("phoenix.site", "core-1"),
        ("phoenix.host", "3"),
        ("phoenix.image", image_id.as_str()),
        ("phoenix.image-ref", TEST_IMAGE),
    ];
    for (k, v) in want {
        assert_eq!(
            labels.get(k).map(String::as_str),
            Some(v),
            "label {k}: {labels:?}"
        );
    }
    let ports: std::collections::BTreeMap<String, u16> =
        serde_json::from_str(&labels["phoenix.ports"]).unwrap();
    assert_eq!(ports, st.ports);
    assert_eq!(
        c.name.as_deref(),
        Some(&*format!("/phoenix-{fleet}.web-0.r2"))
    );
    assert_eq!(c.image.as_deref(), Some(image_id.as_str()));

    let host = c.host_config.clone().unwrap();
    assert_eq!(host.nano_cpus, Some(250_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.init, Some(true));
    assert_eq!(
        host.restart_policy
            .and_then(|r| r.name)
            .map(|n| n.to_string()),
        Some("always".to_string())
    );
    let bindings = host.port_bindings.unwrap();
    for port in st.ports.values() {
        let b = bindings[&format!("{port}/tcp")].clone().unwrap();
        assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b[0].host_port.as_deref(), Some(&*port.to_string()));
    }
    let mount = c
        .mounts
        .unwrap()
        .into_iter()
        .find(|m| m.destination.as_deref() == Some("/phoenix/data/web-0"))
        .expect("data volume mounted at /phoenix/data/web-0");
    assert_eq!(mount.name, Some(format!("phoenix-{fleet}.web-0")));

    // A snapshot uses a helper container: it never carries `phoenix.fleet` and is gone after.
    phoenix_provider_api::conformance::wait_for_shell_probe(&p, &st, "test -f \"${data_dir}/f\"");
    p.snapshot(&fleet, "web-0", &["f".into()], "t1")
        .expect("snapshot");
    assert_eq!(containers_with(&format!("phoenix.fleet={fleet}")).len(), 1);
    assert!(containers_with(&format!("phoenix.helper={fleet}")).is_empty());
}

/// A build context becomes an image tagged by its content; the same content resolves to the
/// same id without a rebuild, changed content to another; a unit with no command runs the
/// image's `CMD`; `remove_built_images` removes them.
#[test]
fn build_contexts_are_built_once_per_content() {
    let fx = DockerFixture::new();
    if !fx.available() {
        return;
    }
    let fleet = fleet_name("build");
    let p = fx.docker();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {TEST_IMAGE}\nCOPY greeting /greeting\n\
             CMD [\"sh\", \"-c\", \"cp /greeting /phoenix/data/web-0/seen; exec sleep 120\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(ctx.path().join("greeting"), "one\n").unwrap();
    let mut spec = with_container(
        phoenix_provider_api::UnitSpec::new(&fleet, "web", "web-0", 1),
        serde_json::json!({ "build": ctx.path() }),
    );
    spec.restart = RestartPolicy::Never;
    spec.stop_grace_ms = 0;
    let built = remove_built_on_drop(&p, &fleet);
    let first = p.resolve_image(&spec).expect("build");
    assert_eq!(p.resolve_image(&spec).expect("resolve again"), first);
    {
        let _g = FleetGuard::new(&p, &fleet);
        let st = p.start(&spec).expect("start a unit with no command");
        assert_eq!(st.state, UnitState::Running, "{st:?}");
        phoenix_provider_api::conformance::wait_for_shell_probe(
            &p,
            &st,
            "grep -qx one \"${data_dir}/seen\"",
        );
    }
    std::fs::write(ctx.path().join("greeting"), "two\n").unwrap();
    let second = p.resolve_image(&spec).expect("rebuild");
    assert_ne!(second, first, "changed context, same image");
    let removed = p.remove_built_images(&fleet).expect("remove built images");
    assert_eq!(removed.len(), 2, "{removed:?}");
    let prefix = format!("phoenix-build/{fleet}-web:");
    assert!(
        removed.iter().all(|t| t.starts_with(&prefix)),
        "{removed:?}"
    );
    drop(built);
}

/// Removes the images built for `fleet` when dropped, pass or fail.
fn remove_built_on_drop<'a>(p: &'a DockerProvider, fleet: &'a str) -> impl Drop + 'a {
    struct G<'a>(&'a DockerProvider, &'a str);
    impl Drop for G<'_> {
        fn drop(&mut self) {
            let _ = self.0.remove_built_images(self.1);
        }
    }
    G(p, fleet)
}

/// `${data_dir}` outlives the unit's containers (destroy without `--purge`); `remove_volumes`
/// removes it.
#[test]
fn data_volumes_outlive_units_until_removed() {
    let fx = DockerFixture::new();
    if !fx.available() {
        return;
    }
    let fleet = fleet_name("volumes");
    let p = fx.docker();
    let _g = FleetGuard::new(&p, &fleet);
    let st = p
        .start(&fx.with_image(shell(
            &fleet,
            "db-0",
            1,
            "echo kept > \"${data_dir}/m\"; exec sleep 120",
        )))
        .expect("start");
    phoenix_provider_api::conformance::wait_for_shell_probe(&p, &st, "test -f \"${data_dir}/m\"");
    p.stop(&fleet, &st.unit_id, Duration::ZERO).expect("stop");
    assert!(p.list(&fleet).expect("list").is_empty());
    let again = p
        .start(&fx.with_image(sleeper(&fleet, "db-0", 2)))
        .expect("start again");
    phoenix_provider_api::conformance::wait_for_shell_probe(
        &p,
        &again,
        "grep -qx kept \"${data_dir}/m\"",
    );
    match p.remove_volumes(&fleet) {
        Err(ProviderError::Protocol { detail, .. }) => {
            assert!(detail.contains("in use"), "{detail}")
        }
        other => panic!("removed a volume in use: {other:?}"),
    }
    p.stop(&fleet, &again.unit_id, Duration::ZERO)
        .expect("stop");
    assert_eq!(
        p.remove_volumes(&fleet).expect("remove volumes"),
        [format!("phoenix-{fleet}.db-0")]
    );
    assert!(p.remove_volumes(&fleet).expect("again").is_empty());
}

/// `phoenix logs -f` follows a unit through `log_paths` and `print_logs`: every line once, in
/// order, and the copy stays after the unit is gone.
#[test]
fn logs_are_followed_through_the_copies() {
    let fx = DockerFixture::new();
    if !fx.available() {
        return;
    }
    let fleet = fleet_name("follow");
    let p = fx.docker();
    let _g = FleetGuard::new(&p, &fleet);
    let st = p
        .start(&fx.with_image(shell(
            &fleet,
            "tick-0",
            1,
            "i=0; while [ $i -lt 25 ]; do echo \"tick $i\"; i=$((i+1)); sleep 0.05; done; exec sleep 120",
        )))
        .expect("start");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut out = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            wait_for("25 ticks", WAIT, || {
                let text: String = p
                    .log_paths(&fleet, "tick")
                    .unwrap()
                    .iter()
                    .filter_map(|f| std::fs::read_to_string(f).ok())
                    .collect();
                text.contains("tick 24").then_some(())
            });
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        phoenix_provider_api::logs::print_logs(
            || p.log_paths(&fleet, "tick").unwrap_or_default(),
            &mut out,
            true,
            Duration::from_millis(30),
            &|| stop.load(std::sync::atomic::Ordering::SeqCst),
        )
        .expect("print logs");
    });
    let text = String::from_utf8(out).unwrap();
    let want: String = (0..25).map(|i| format!("tick-0@r1 | tick {i}\n")).collect();
    assert_eq!(text, want);
    p.stop(&fleet, &st.unit_id, Duration::ZERO).expect("stop");
    let kept = p.log_paths(&fleet, "tick-0").expect("log paths");
    assert_eq!(kept.len(), 1);
    assert!(
        std::fs::read_to_string(&kept[0])
            .unwrap()
            .contains("tick 24")
    );
}

/// An engine that is not there is `Unavailable`, naming the endpoint and what to do; nothing
/// waits long for it. Needs no engine.
#[test]
fn an_engine_that_is_not_there_is_unavailable() {
    let state = tempfile::tempdir().unwrap();
    for endpoint in ["unix:///nonexistent/phoenix-test.sock", "tcp://127.0.0.1:1"] {
        let p = DockerProvider::new(endpoint, state.path()).unwrap();
        let spec = with_container(
            sleeper("f", "app-0", 1),
            serde_json::json!({ "image": TEST_IMAGE }),
        );
        let started = std::time::Instant::now();
        for err in [
            p.start(&spec).unwrap_err(),
            p.list("f").unwrap_err(),
            p.stop("f", "app-0@r1", Duration::ZERO).unwrap_err(),
            p.ping().unwrap_err(),
        ] {
            assert!(err.is_retryable(), "{err:?}");
            let msg = err.to_string();
            assert!(
                matches!(err, ProviderError::Unavailable { .. })
                    && msg.contains(endpoint.trim_start_matches("unix://"))
                    && msg.contains("dockerd"),
                "{msg}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            p.log_paths("f", "").unwrap().is_empty(),
            "logs without an engine"
        );
        // Called from inside another Tokio runtime (where blocking on one would panic).
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inside = rt.block_on(async { p.list("f") });
        assert!(
            matches!(inside, Err(ProviderError::Unavailable { .. })),
            "{inside:?}"
        );
    }
}
