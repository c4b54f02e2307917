//! One fleet over three kinds of site in one apply: a `local` site (this host's agent), a
//! `docker` site (the real Docker Engine, an image built from busybox-static) and an `ssh` site
//! (a real sshd test host in a network namespace), with dependencies that cross them, so each
//! wave waits for the one before on another site. Status, logs, per-site progress and destroy
//! work across all three. Skipped with a printed reason without Docker or without root, `ip`
//! and `sshd`, failing instead when `PHOENIX_REQUIRE_DOCKER=1` / `PHOENIX_REQUIRE_SSH=1`.

mod common;

use common::assert_ok;
use phoenix_provider_ssh::SSH_COMMAND_ENV;
use phoenix_provider_ssh::testing::{TestHost, skip};
use serde_json::Value;
use std::process::{Command, Output};

struct Mixed {
    dir: tempfile::TempDir,
    name: String,
}

impl Mixed {
    fn new(host: &TestHost) -> Self {
        let dir = tempfile::Builder::new().prefix("pxmix").tempdir().unwrap();
        let img = dir.path().join("img");
        common::busybox_image(&img);
        let config = format!(
            "Host *\n  IdentitiesOnly yes\n  GlobalKnownHostsFile /dev/null\n  IdentityFile {}\n  UserKnownHostsFile {}\n",
            host.identity().display(),
            host.known_hosts().display()
        );
        std::fs::write(dir.path().join("ssh_config"), config).unwrap();
        let name = format!("mix-{}", std::process::id());
        let python =
            "[python3, -m, http.server, '${port}', --bind, 127.0.0.1, --directory, '${data_dir}']";
        let spec = format!(
            "phoenix: 1\nname: {name}\nsites:\n\
             \x20 - {{ name: here, tier: core, provider: local, capacity: {{ cpu: 8, memory: 8Gi, storage: 10G }} }}\n\
             \x20 - {{ name: dock, tier: regional, provider: docker, capacity: {{ cpu: 8, memory: 8Gi, storage: 10G }} }}\n\
             \x20 - name: edge\n    tier: edge\n    provider: ssh\n    ssh: {{ hosts: [\"{login}\"] }}\n    capacity: {{ cpu: 8, memory: 8Gi, storage: 10G }}\n\
             services:\n\
             \x20 - name: db\n    placement: {{ sites: [here] }}\n    command: {python}\n    ports: [port]\n    health: {{ http: 'http://127.0.0.1:${{port}}/', timeout: 20s, interval: 100ms }}\n    stop_grace: 2s\n\
             \x20 - name: api\n    replicas: 2\n    placement: {{ sites: [dock] }}\n    depends_on: [db]\n    build: ./img\n    resources: {{ cpu: 100m, memory: 32Mi }}\n    command: [sh, -c, 'echo api ${{instance}} up; exec httpd -f -p ${{port}} -h ${{data_dir}}']\n    ports: [port]\n    health: {{ http: 'http://127.0.0.1:${{port}}/', expect_status: 404, timeout: 20s, interval: 100ms }}\n    stop_grace: 1s\n\
             \x20 - name: gateway\n    placement: {{ sites: [edge] }}\n    depends_on: [api]\n    command: {python}\n    ports: [port]\n    health: {{ http: 'http://127.0.0.1:${{port}}/', timeout: 20s, interval: 100ms }}\n    stop_grace: 2s\n",
            login = host.login(),
        );
        std::fs::write(dir.path().join("fleet.yaml"), spec).unwrap();
        Mixed { dir, name }
    }

    fn run(&self, args: &[&str]) -> Output {
        let ssh = format!("ssh -F {}", self.dir.path().join("ssh_config").display());
        common::phoenix(self.dir.path(), args)
            .env(SSH_COMMAND_ENV, ssh)
            .output()
            .unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Output {
        assert_ok(self.run(args), &format!("phoenix {args:?}"))
    }

    fn containers(&self) -> usize {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=phoenix.fleet={}", self.name))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    }
}

impl Drop for Mixed {
    fn drop(&mut self) {
        let _ = self.run(&["destroy", "fleet.yaml", "--yes", "--purge"]);
        let images = Command::new("docker")
            .args(["images", "-q", "--filter"])
            .arg(format!("reference=phoenix-build/{}-*", self.name))
            .output();
        if let Ok(images) = images {
            for id in String::from_utf8_lossy(&images.stdout).lines() {
                let _ = Command::new("docker").args(["rmi", "-f", id]).output();
            }
        }
    }
}

#[test]
fn one_apply_spans_a_local_a_docker_and_an_ssh_site() {
    if !common::docker_available() || skip() {
        return;
    }
    let host = TestHost::start().unwrap_or_else(|e| panic!("test host: {e}"));
    let f = Mixed::new(&host);
    let out = f.ok(&["apply", "fleet.yaml", "--yes"]);
    let err = common::stderr(&out);

    // The waves go in dependency order across the sites, each site's progress shown.
    let at = |text: &str| {
        err.find(text)
            .unwrap_or_else(|| panic!("`{text}` not in the output:\n{err}"))
    };
    assert!(at("started db-0@r1") < at("started api-0@r1"), "{err}");
    assert!(at("started api-1@r1") < at("started gateway-0@r1"), "{err}");
    assert!(err.contains("on dock"), "per-site progress: {err}");
    assert!(
        err.contains("dock: 2/2 healthy"),
        "per-site progress: {err}"
    );

    // Status across the three: every instance running and healthy on its own site.
    let st: Value =
        serde_json::from_slice(&f.ok(&["status", "fleet.yaml", "-o", "json"]).stdout).unwrap();
    let mut seen: Vec<(String, String)> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert!(
                i["state"] == "running" && i["healthy"] == true,
                "running and healthy: {i:#}"
            );
            (
                i["instance"].as_str().unwrap().to_string(),
                i["site"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("api-0".to_string(), "dock".to_string()),
            ("api-1".into(), "dock".into()),
            ("db-0".into(), "here".into()),
            ("gateway-0".into(), "edge".into()),
        ]
    );
    assert_eq!(f.containers(), 2, "exactly the declared containers");
    assert_eq!(
        host.unit_processes(None).len(),
        1,
        "one process on the ssh host"
    );

    // Logs of each site through its provider.
    let api = f.ok(&["logs", "api-1"]);
    assert!(
        String::from_utf8_lossy(&api.stdout).contains("api api-1 up"),
        "{}",
        String::from_utf8_lossy(&api.stdout)
    );
    for service in ["db", "gateway"] {
        let logs = f.ok(&["logs", service]);
        assert!(
            String::from_utf8_lossy(&logs.stdout).contains("\"GET / HTTP/1.1\" 200"),
            "{service}: {}",
            String::from_utf8_lossy(&logs.stdout)
        );
    }

    // Again: nothing to do anywhere.
    let again = f.ok(&["apply", "fleet.yaml", "--yes"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&again.stdout),
        common::stderr(&again)
    );
    assert!(text.contains("everything runs as desired"), "{text}");

    // A new revision on every site, then a rollback to the first: both across the three,
    // and the history holds each.
    let spec = std::fs::read_to_string(f.dir.path().join("fleet.yaml")).unwrap();
    let v2 = spec.replace(
        "    ports: [port]\n",
        "    ports: [port]\n    env: { REV: \"2\" }\n",
    );
    assert_ne!(v2, spec);
    std::fs::write(f.dir.path().join("fleet.yaml"), &v2).unwrap();
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let revisions = |st: &Value| -> Vec<u64> {
        let mut r: Vec<u64> = st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["revision"].as_u64().unwrap())
            .collect();
        r.dedup();
        r
    };
    let st: Value =
        serde_json::from_slice(&f.ok(&["status", "fleet.yaml", "-o", "json"]).stdout).unwrap();
    assert_eq!(revisions(&st), [2], "{st:#}");
    f.ok(&["rollback", "fleet.yaml", "--yes"]);
    let st: Value =
        serde_json::from_slice(&f.ok(&["status", "fleet.yaml", "-o", "json"]).stdout).unwrap();
    assert_eq!(revisions(&st), [3], "the rollback is revision 3: {st:#}");
    assert!(
        st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["healthy"] == true),
        "{st:#}"
    );
    assert_eq!(f.containers(), 2, "no container left from revision 2");
    assert_eq!(
        host.unit_processes(None).len(),
        1,
        "one process on the ssh host"
    );
    let history: Value =
        serde_json::from_slice(&f.ok(&["history", "fleet.yaml", "-o", "json"]).stdout).unwrap();
    assert_eq!(
        history["revisions"].as_array().map(Vec::len),
        Some(3),
        "{history:#}"
    );

    // Destroy leaves nothing on any site.
    f.ok(&["destroy", "fleet.yaml", "--yes"]);
    assert_eq!(f.containers(), 0, "containers left");
    assert!(
        host.unit_processes(None).is_empty(),
        "processes left on the ssh host"
    );
    let st: Value =
        serde_json::from_slice(&f.ok(&["status", "fleet.yaml", "-o", "json"]).stdout).unwrap();
    assert!(
        st["extra"].as_array().is_none_or(Vec::is_empty),
        "nothing extra: {st:#}"
    );
}
