//! A fixture for tests of the local provider: a fresh state directory whose agent is the
//! crate's `phoenix-local-agent` binary with short timings, shut down (stopping every unit) and
//! checked for leftover processes when dropped.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of this module.

use phoenix_provider_api::Provider;
use phoenix_provider_api::conformance::Fixture;
use phoenix_provider_local::protocol::Request;
use phoenix_provider_local::{LocalProvider, reap_spawned_agents};
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_phoenix-local-agent");

pub struct LocalFixture {
    pub dir: tempfile::TempDir,
    pub idle_exit: &'static str,
}

impl LocalFixture {
    pub fn new() -> Self {
        Self::with_idle_exit("5s")
    }

    pub fn with_idle_exit(idle_exit: &'static str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("phx")
            .tempdir()
            .expect("temp dir");
        LocalFixture { dir, idle_exit }
    }

    pub fn agent_command(&self) -> Vec<OsString> {
        [AGENT, "agent", "--state-dir"]
            .iter()
            .map(OsString::from)
            .chain([self.dir.path().into()])
            .chain(
                [
                    "--idle-exit",
                    self.idle_exit,
                    "--restart-backoff",
                    "100ms",
                    "--lock-wait",
                    "500ms",
                ]
                .map(OsString::from),
            )
            .collect()
    }

    pub fn local(&self) -> LocalProvider {
        LocalProvider::with_agent_command(self.dir.path(), self.agent_command())
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The running agent's pid, if any.
    pub fn agent_pid(&self) -> Option<u32> {
        self.local().ping().expect("ping").map(|i| i.pid)
    }
}

impl Fixture for LocalFixture {
    fn provider(&self) -> Box<dyn Provider> {
        Box::new(self.local())
    }
}

impl Drop for LocalFixture {
    fn drop(&mut self) {
        let p = self.local();
        // Start an agent if needed so that it adopts whatever a failed test left, then stop all.
        let _ = p.request(&Request::Ping);
        let _ = p.shutdown_agent(true);
        let left = unit_processes(self.state_dir());
        for pid in &left {
            kill(*pid, rustix::process::Signal::KILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while reap_spawned_agents() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !std::thread::panicking() {
            assert!(left.is_empty(), "unit processes left behind: {left:?}");
        }
    }
}

/// `/proc/<pid>/stat` fields: (state, pgrp, session).
pub fn stat(pid: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f[0].chars().next()?, f[2].parse().ok()?, f[3].parse().ok()?))
}

/// Whether `pid` is a live process (zombies are dead).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(s, _, _)| !matches!(s, 'Z' | 'X'))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live members of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| stat(*p).is_some_and(|(s, g, _)| g == pgid && !matches!(s, 'Z' | 'X')))
        .collect()
}

/// Live processes started by the agent of `state_dir` (by their environment).
pub fn unit_processes(state_dir: &Path) -> Vec<u32> {
    let want = format!(
        "PHOENIX_AGENT_STATE_DIR={}",
        std::path::absolute(state_dir).unwrap().display()
    );
    all_pids()
        .into_iter()
        .filter(|p| alive(*p))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Live processes of the unit `unit_id` (by environment).
pub fn processes_of_unit(state_dir: &Path, unit_id: &str) -> Vec<u32> {
    let want = format!("PHOENIX_UNIT={unit_id}");
    unit_processes(state_dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

pub fn kill(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Waits until `pid` is dead (reaping agents we started meanwhile).
pub fn wait_dead(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        reap_spawned_agents();
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Live agent processes (by command line) of `state_dir`.
pub fn agent_processes(state_dir: &Path) -> Vec<u32> {
    let dir = state_dir.as_os_str().as_encoded_bytes().to_vec();
    all_pids()
        .into_iter()
        .filter(|p| alive(*p))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.first()
                    .is_some_and(|a| a.ends_with(b"phoenix-local-agent"))
                    && args.contains(&dir.as_slice())
            })
        })
        .collect()
}
