//! What the end-to-end tests of the `phoenix` binary share: running it against a test's own
//! state dir and operator key (never the user's), asserting success with both outputs shown,
//! free ports, processes that are killed when dropped, and the skip-or-require rule for tests
//! that need a real Docker Engine.
//!
//! Each test file includes this with `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_phoenix");

/// `phoenix ARGS` in `dir`, with its state in `dir/s`, signing with `dir/operator.key`, stdin
/// closed, and none of the user's state, ledger or secrets settings in its environment.
pub(crate) fn phoenix(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--state-dir")
        .arg(dir.join("s"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .env_remove("PHOENIX_STATE_URL")
        .env_remove("PHOENIX_LEDGER_URL")
        .env_remove("PHOENIX_LEDGER_KEY")
        // Each test fleet signs with its own operator key, never the user's own.
        .env("PHOENIX_OPERATOR_KEY", dir.join("operator.key"));
    c
}

/// `out`, after asserting it succeeded; otherwise fails showing `what`, the status and both
/// outputs.
#[track_caller]
pub(crate) fn assert_ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The command's stderr, as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A base port with `n` free ports after it on 127.0.0.1 (bounded tries).
pub(crate) fn free_ports(n: u16) -> u16 {
    for _ in 0..50 {
        let base = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base > 60000 {
            continue;
        }
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports on 127.0.0.1");
}

/// A process this test started, killed (by its pid) when dropped.
pub(crate) struct Started {
    child: Child,
}

impl Started {
    /// Starts `cmd` with stdin closed and both outputs in `log`.
    pub(crate) fn spawn(mut cmd: Command, log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Started { child }
    }

    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to end by itself.
    pub(crate) fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Kills and reaps it (again is harmless).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Docker Engine answers and `/bin/busybox` (Debian busybox-static) is there to build
/// a test image from. Otherwise the test skips, saying why, unless `PHOENIX_REQUIRE_DOCKER=1`
/// (CI sets it), which makes it fail.
pub(crate) fn docker_available() -> bool {
    let up = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let busybox = Path::new("/bin/busybox").exists();
    if !(up && busybox) {
        let why = if up {
            "no /bin/busybox (Debian busybox-static)"
        } else {
            "no Docker Engine answers"
        };
        assert!(
            std::env::var("PHOENIX_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "PHOENIX_REQUIRE_DOCKER=1 but {why}"
        );
        eprintln!("skipped: {why}");
    }
    up && busybox
}

/// Writes `ledger testnet` homes of 4 validators into `dir` (idle blocks every
/// `empty_block_ms`, if given) and returns the base API port: node `i` serves on base + i.
pub(crate) fn testnet(dir: &Path, empty_block_ms: Option<u64>) -> u16 {
    let api = free_ports(4);
    let p2p = free_ports(4);
    let mut c = Command::new(BIN);
    c.args(["ledger", "testnet", "--validators", "4", "--dir"])
        .arg(dir)
        .args(["--api-base-port", &api.to_string()])
        .args(["--p2p-base-port", &p2p.to_string()]);
    if let Some(ms) = empty_block_ms {
        c.args(["--empty-block-ms", &ms.to_string()]);
    }
    assert_ok(c.output().unwrap(), "phoenix ledger testnet");
    api
}

/// Writes a Docker build context in `dir` for an image of Debian's busybox-static alone
/// (nothing can be pulled: `FROM scratch`).
pub(crate) fn busybox_image(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap();
}
