//! Where everything lives under a state directory.

use std::path::{Path, PathBuf};

/// The layout of a local provider's state directory:
///
/// ```text
/// DIR/agent.sock                       the agent's Unix socket (JSON lines)
/// DIR/agent/agent.lock                 flock held by the running agent
/// DIR/agent/agent.pid                  its pid
/// DIR/agent/agent.log                  its own stderr
/// DIR/agent/units.json                 its unit table, written atomically
/// DIR/units/<fleet>/<instance>/data    per-instance data dir, kept across restarts and revisions
/// DIR/logs/<fleet>/<unit>.log          stdout+stderr of a unit (`web-0@r3.log`)
/// DIR/backups/<fleet>/<instance>/<tag> snapshots
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    root: PathBuf,
}

impl StatePaths {
    /// The layout under `root`, made absolute against the current directory (the agent and its
    /// clients must agree on it whatever their working directories).
    pub fn new(root: &Path) -> Self {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        StatePaths { root }
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The agent's socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }
    /// The agent's own directory.
    pub fn agent_dir(&self) -> PathBuf {
        self.root.join("agent")
    }
    /// The persisted unit table.
    pub fn units_file(&self) -> PathBuf {
        self.agent_dir().join("units.json")
    }
    /// The lock file held by the running agent.
    pub fn lock_file(&self) -> PathBuf {
        self.agent_dir().join("agent.lock")
    }
    /// The running agent's pid.
    pub fn pid_file(&self) -> PathBuf {
        self.agent_dir().join("agent.pid")
    }
    /// The agent's own log (its stderr when started on demand).
    pub fn agent_log(&self) -> PathBuf {
        self.agent_dir().join("agent.log")
    }
    /// Log directory of a fleet.
    pub fn logs_dir(&self, fleet: &str) -> PathBuf {
        self.root.join("logs").join(fleet)
    }
    /// Log file of a unit.
    pub fn log_file(&self, fleet: &str, unit_id: &str) -> PathBuf {
        self.logs_dir(fleet).join(format!("{unit_id}.log"))
    }
    /// Data directory of an instance.
    pub fn data_dir(&self, fleet: &str, instance: &str) -> PathBuf {
        self.root
            .join("units")
            .join(fleet)
            .join(instance)
            .join("data")
    }
    /// Directory of snapshot `tag` of an instance.
    pub fn snapshot_dir(&self, fleet: &str, instance: &str, tag: &str) -> PathBuf {
        self.root
            .join("backups")
            .join(fleet)
            .join(instance)
            .join(tag)
    }
}
