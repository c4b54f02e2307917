//! The `ssh` provider: units are processes on a remote host, reached with the system's OpenSSH
//! client, supervised there by the same agent as the local provider's (fleet-spec part 2,
//! "Providers per site").
//!
//! [`SshProvider`] checks the host's system (`uname -sm`) against this binary's, installs this
//! binary as `~/.phoenix/bin/phoenix` when the copy there has another SHA-256, and then runs
//! every call as `phoenix provider-remote --state-dir ~/.phoenix` over ssh ([`remote_main`]):
//! one JSON request on stdin ([`wire`]), carried out by a `LocalProvider` on that host, which
//! starts the agent there on demand; one JSON reply on stdout. The calls share one connection
//! (ControlMaster, its socket in a private temporary directory), so each costs a process, not
//! a login. The user's `~/.ssh/config`, agent and `known_hosts` apply; an unknown host key is an
//! error, never accepted.
//!
//! ```no_run
//! use phoenix_provider_api::{Provider, UnitSpec};
//! use phoenix_provider_ssh::{SshConfig, SshProvider, SshTarget};
//!
//! let target = SshTarget::parse("deploy@10.0.0.2")?.with_port(Some(22));
//! let edge = SshProvider::new(SshConfig::new(target, std::path::Path::new(".phoenix/ssh")))?;
//! assert_eq!(edge.endpoint(), "ssh://deploy@10.0.0.2:22");
//! let web = UnitSpec::new("demo", "web", "web-0", 1)
//!     .with_command(["busybox", "httpd", "-f", "-p", "127.0.0.1:${port}"])
//!     .with_ports(["port"]);
//! let status = edge.start(&web)?; // listens on the remote host's loopback
//! println!("{} runs on {} as pid {:?}", status.unit_id, edge.login(), status.pid);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The remote agent is asked to exit as soon as its last unit is stopped, so that a host where
//! nothing of a fleet runs keeps no process of Phoenix's; and an agent started with nothing to
//! run exits by itself after its idle time (30 s unless [`SshConfig::agent_idle_exit`] says
//! otherwise), as a local one does. [`SSH_COMMAND_ENV`] (`PHOENIX_SSH_COMMAND`) replaces the ssh
//! command, as `GIT_SSH_COMMAND` does for git.
//!
//! What a host needs: a POSIX `sh`, coreutils (`uname`, `sha256sum`, `stat`), and a C library
//! this binary runs with (the same distribution family, or a static build). The agent outlives
//! the ssh session that started it; on hosts where systemd-logind kills a user's processes at
//! logout (`KillUserProcesses=yes`), allow the login user to linger (`loginctl enable-linger
//! USER`). A phoenix killed outright leaves its connection's master to exit by itself 15 s later,
//! and an empty directory `phoenix-ssh-*` in the temporary directory.
//!
//! With the `testing` feature, `testing` makes test hosts: sshd in a network namespace with
//! a login user of its own (needs root).
//!
//! Architecture Invariant: this crate runs nothing on the host but `sh` scripts to check and
//! install the binary, and the binary's `provider-remote`; units are only ever started, signalled
//! and reaped by the agent there.

mod error;
mod install;
mod provider;
mod remote;
mod session;
mod target;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use error::SshError;
pub use provider::{SSH_COMMAND_ENV, SshConfig, SshProvider};
pub use remote::{REMOTE_USAGE, remote_main, serve};
pub use session::Timeouts;
pub use target::SshTarget;
