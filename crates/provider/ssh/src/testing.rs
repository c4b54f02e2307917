//! Test hosts for the ssh provider (feature `testing`): each a real `sshd` in a network
//! namespace of its own, reached over a veth pair at its own address, with a login user of its
//! own (its own home, so its own `~/.phoenix`), a generated host key written to a
//! `known_hosts` file and a generated client key in its `authorized_keys`.
//!
//! Needs root and `ip`, `/usr/sbin/sshd`, `ssh`, `ssh-keygen`, `useradd`, `userdel`. Tests call
//! [`unavailable`] first and skip with a printed reason, unless `PHOENIX_REQUIRE_SSH=1` (CI),
//! when they fail instead.
//!
//! Everything a host makes is removed when it is dropped, also when its test fails: every
//! process in its namespace (sshd, its sessions, the agent and units there) is killed by pid,
//! then the namespace (and with it the veth pair), its guard route and the user with its home
//! go. Leftovers of a test process that was killed outright (names carry its pid) are removed
//! by the next one.
//!
//! Addresses: `10.213.X.Y/30` per host (`.1` this side, `.2` the namespace), a range no other
//! network here uses; an `unreachable` route of low priority for the block keeps packets for
//! it from ever leaving by another interface while a link is down.

use crate::{SshConfig, SshTarget, Timeouts};
use phoenix_provider_api::Provider;
use phoenix_provider_api::conformance::Fixture;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The sshd of the test hosts.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Metric of the guard routes (recognises them when cleaning up).
const GUARD_METRIC: &str = "4213";

/// Whether the ssh tests must run (`PHOENIX_REQUIRE_SSH=1`, as CI sets it).
pub fn required() -> bool {
    std::env::var("PHOENIX_REQUIRE_SSH").is_ok_and(|v| v == "1")
}

/// Why test hosts cannot be made here, or `None` when they can.
///
/// # Panics
/// When they cannot and [`required`] is set: a skip must not pass in CI.
pub fn unavailable() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    let why = WHY.get_or_init(|| {
        if !is_root() {
            return Some("not root (test hosts need network namespaces and users)".into());
        }
        for tool in [
            "ip",
            "ssh",
            "ssh-keygen",
            "useradd",
            "userdel",
            "sh",
            "busybox",
        ] {
            if which(tool).is_none() {
                return Some(format!("`{tool}` is not installed"));
            }
        }
        if !Path::new(SSHD).exists() {
            return Some(format!(
                "{SSHD} is missing (Debian's openssh-server installs it)"
            ));
        }
        None
    });
    if let Some(w) = why {
        assert!(
            !required(),
            "PHOENIX_REQUIRE_SSH=1 but the ssh tests cannot run: {w}"
        );
    }
    why.clone()
}

/// [`unavailable`], printed once per process as a skip; `true` when the caller should return.
pub fn skip() -> bool {
    let Some(why) = unavailable() else {
        return false;
    };
    static SAY: std::sync::Once = std::sync::Once::new();
    SAY.call_once(|| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the ssh tests pass without running: {why}"
        );
    });
    true
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a setup command; its error output on failure.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `useradd` and `userdel` lock /etc/passwd and fail when another holds it: retry.
fn run_retrying(program: &str, args: &[&str]) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..50 {
        match run(program, args) {
            Ok(out) => return Ok(out),
            Err(e) if e.contains("lock") => {
                last = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Serialises making and removing hosts in this process, and (with a lock file) across
/// processes, so that two never pick the same address.
fn setup_lock() -> (std::sync::MutexGuard<'static, ()>, std::fs::File) {
    static LOCK: Mutex<()> = Mutex::new(());
    let here = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/phoenix-ssh-testhosts.lock")
        .expect("open /tmp/phoenix-ssh-testhosts.lock");
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).expect("lock");
    (here, f)
}

/// Name of host `n` of process `pid`: namespace and user `phx<pid>h<n>`, links `...a`
/// (this side) and `...b` (namespace side).
fn name_of(pid: u32, n: u32) -> String {
    format!("phx{pid}h{n}")
}

fn parse_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("phx")?;
    let (pid, n) = rest.split_once('h')?;
    Some((pid.parse().ok()?, n.parse().ok()?))
}

/// The /30 block of host `n` of process `pid`: (this side, namespace side).
fn addresses(pid: u32, n: u32) -> (Ipv4Addr, Ipv4Addr) {
    let block = (pid % 1024) * 16 + n % 16;
    let (x, y) = ((block >> 6) as u8, ((block & 63) * 4) as u8);
    (
        Ipv4Addr::new(10, 213, x, y + 1),
        Ipv4Addr::new(10, 213, x, y + 2),
    )
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A test host: sshd in its own network namespace, with its own login user.
#[derive(Debug)]
pub struct TestHost {
    name: String,
    user: String,
    uid: u32,
    user_made: bool,
    home: PathBuf,
    addr: Ipv4Addr,
    host_addr: Ipv4Addr,
    dir: tempfile::TempDir,
    sshd: Option<Child>,
}

impl TestHost {
    /// Makes a host and waits until its sshd accepts connections.
    ///
    /// # Errors
    /// What failed, when a step of the setup does (what was made is removed again).
    pub fn start() -> Result<TestHost, String> {
        static NEXT: Mutex<u32> = Mutex::new(0);
        let (_l1, _l2) = setup_lock();
        remove_stale();
        let pid = std::process::id();
        let existing = run("ip", &["-4", "-o", "addr"])? + &run("ip", &["-4", "route"])?;
        let n = {
            let mut next = NEXT.lock().unwrap_or_else(PoisonError::into_inner);
            let mut n = *next;
            for _ in 0..16 {
                let (a, _) = addresses(pid, n);
                let net = Ipv4Addr::from(u32::from(a) - 1).to_string();
                let taken = existing.contains(&format!("{net}/30"))
                    || existing.contains(&format!("{a}/"))
                    || existing.contains(&format!("{}/", Ipv4Addr::from(u32::from(a) + 1)));
                if !taken && !Path::new(&format!("/run/netns/{}", name_of(pid, n))).exists() {
                    break;
                }
                n += 1;
            }
            *next = n + 1;
            n
        };
        let name = name_of(pid, n);
        let (host_addr, addr) = addresses(pid, n);
        let dir = tempfile::Builder::new()
            .prefix("phoenix-sshhost-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut host = TestHost {
            user: name.clone(),
            uid: 0,
            user_made: false,
            home: PathBuf::from(format!("/home/{name}")),
            name,
            addr,
            host_addr,
            dir,
            sshd: None,
        };
        // On error, `host` is dropped and removes what was made.
        host.make_network()?;
        host.make_user()?;
        host.start_sshd()?;
        Ok(host)
    }

    fn host_if(&self) -> String {
        format!("{}a", self.name)
    }
    fn ns_if(&self) -> String {
        format!("{}b", self.name)
    }
    fn block(&self) -> String {
        format!("{}/30", Ipv4Addr::from(u32::from(self.host_addr) - 1))
    }

    fn make_network(&mut self) -> Result<(), String> {
        let (ns, a, b) = (self.name.clone(), self.host_if(), self.ns_if());
        run("ip", &["netns", "add", &ns])?;
        run(
            "ip",
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        )?;
        run("ip", &["link", "set", &b, "netns", &ns])?;
        run(
            "ip",
            &["addr", "add", &format!("{}/30", self.host_addr), "dev", &a],
        )?;
        run(
            "ip",
            &[
                "route",
                "add",
                "unreachable",
                &self.block(),
                "metric",
                GUARD_METRIC,
            ],
        )?;
        run("ip", &["link", "set", &a, "up"])?;
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/30", self.addr),
                "dev",
                &b,
            ],
        )?;
        run("ip", &["-n", &ns, "link", "set", &b, "up"])?;
        // Units listen and are probed on the host's own loopback.
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn make_user(&mut self) -> Result<(), String> {
        let home = self.home.display().to_string();
        run_retrying(
            "useradd",
            &["-m", "-d", &home, "-s", "/bin/sh", "-p", "*", &self.user],
        )?;
        self.user_made = true;
        self.uid = run("id", &["-u", &self.user])?
            .trim()
            .parse()
            .map_err(|e| format!("uid of {}: {e}", self.user))?;
        let key = self.dir.path().join("id_ed25519");
        let key_s = key.display().to_string();
        run(
            "ssh-keygen",
            &[
                "-q", "-t", "ed25519", "-N", "", "-C", &self.user, "-f", &key_s,
            ],
        )?;
        let ssh_dir = self.home.join(".ssh");
        std::fs::create_dir_all(&ssh_dir).map_err(|e| format!("{}: {e}", ssh_dir.display()))?;
        std::fs::copy(key.with_extension("pub"), ssh_dir.join("authorized_keys"))
            .map_err(|e| format!("authorized_keys: {e}"))?;
        let owner = format!("{0}:{0}", self.user);
        run("chown", &["-R", &owner, &ssh_dir.display().to_string()])?;
        run("chmod", &["700", &ssh_dir.display().to_string()])?;
        run(
            "chmod",
            &[
                "600",
                &ssh_dir.join("authorized_keys").display().to_string(),
            ],
        )?;
        Ok(())
    }

    fn start_sshd(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let host_key = d.join("ssh_host_ed25519_key");
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                &host_key.display().to_string(),
            ],
        )?;
        let public = std::fs::read_to_string(host_key.with_extension("pub"))
            .map_err(|e| format!("host key: {e}"))?;
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        std::fs::write(
            d.join("known_hosts"),
            format!("{} {}\n", self.addr, public.join(" ")),
        )
        .map_err(|e| format!("known_hosts: {e}"))?;
        let config = format!(
            "ListenAddress {addr}:22\nHostKey {key}\nPidFile {dir}/sshd.pid\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nUsePAM no\nAllowUsers {user}\nPermitRootLogin no\n\
             MaxSessions 64\nMaxStartups 64:30:128\nClientAliveInterval 2\n\
             PermitUserEnvironment yes\n\
             ClientAliveCountMax 3\nLogLevel VERBOSE\n",
            addr = self.addr,
            key = host_key.display(),
            dir = d.display(),
            user = self.user,
        );
        let config_path = d.join("sshd_config");
        std::fs::write(&config_path, config).map_err(|e| format!("sshd_config: {e}"))?;
        // sshd's privilege separation directory (Debian's service creates it at boot).
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = std::fs::File::create(d.join("sshd.log")).map_err(|e| format!("log: {e}"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, SSHD, "-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start sshd: {e}"))?;
        self.sshd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let to = std::net::SocketAddr::from((self.addr, 22));
        loop {
            if std::net::TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.sshd.as_mut().map(Child::try_wait) {
                return Err(format!("sshd exited ({st}): {}", self.sshd_log()));
            }
            if Instant::now() >= deadline {
                return Err(format!("sshd does not listen: {}", self.sshd_log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The login user.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// Its uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }
    /// Its home (the remote `~`, on this machine's file system).
    pub fn home(&self) -> &Path {
        &self.home
    }
    /// The host's address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    /// `user@addr`.
    pub fn login(&self) -> String {
        format!("{}@{}", self.user, self.addr)
    }
    /// The `known_hosts` file that holds the host's key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }
    /// The client key that the host's user accepts.
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }
    /// What sshd logged.
    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The target: `user@addr`, port 22, the test key.
    pub fn target(&self) -> SshTarget {
        SshTarget::parse(&self.login())
            .expect("a valid login")
            .with_port(Some(22))
            .with_identity(Some(&self.identity()))
    }

    /// ssh options that make the client see only this host's key (in `known_hosts`) and the
    /// test key, whatever this machine's ssh configuration says.
    pub fn ssh_options(&self, known_hosts: &Path) -> Vec<OsString> {
        let mut kh = OsString::from("UserKnownHostsFile=");
        kh.push(known_hosts);
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            kh,
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            // AES-GCM first: on CPUs with AES instructions it moves a debug phoenix binary
            // (hundreds of megabytes) in about half the time of ChaCha20.
            "-o".into(),
            "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com".into(),
        ]
    }

    /// A provider configuration for this host, its log cache under `cache_root`, installing
    /// `binary`, with short timeouts (a partition is noticed in about 3 s).
    pub fn config(&self, cache_root: &Path, binary: &Path) -> SshConfig {
        SshConfig::new(self.target(), cache_root)
            .ssh_options(self.ssh_options(&self.known_hosts()))
            .binary(binary)
            .timeouts(Timeouts {
                connect: Duration::from_secs(3),
                call: Duration::from_secs(20),
                alive_interval: Duration::from_secs(1),
                alive_count: 2,
            })
    }

    /// Puts a command `name` running `script` (sh) first on the login user's `PATH` on the host
    /// (through `~/.ssh/environment`, which the test sshd reads): a `uname` that names another
    /// architecture, say.
    ///
    /// # Panics
    /// When the files cannot be written.
    pub fn shadow_command(&self, name: &str, script: &str) {
        let dir = self.home.join(".shadow");
        std::fs::create_dir_all(&dir).expect("shadow dir");
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("shadow command");
        run("chmod", &["755", &path.display().to_string()]).expect("chmod");
        std::fs::write(
            self.home.join(".ssh/environment"),
            format!("PATH={}:/usr/local/bin:/usr/bin:/bin\n", dir.display()),
        )
        .expect("~/.ssh/environment");
    }

    /// Cuts the host off: its end of the link goes down, so packets to it are dropped
    /// without an answer, as in a partition.
    pub fn cut(&self) {
        run(
            "ip",
            &["-n", &self.name, "link", "set", &self.ns_if(), "down"],
        )
        .expect("link down");
    }

    /// Brings its link back, and forgets that the address did not answer (the neighbour
    /// entry), so that the next packet finds it at once.
    pub fn heal(&self) {
        run(
            "ip",
            &["-n", &self.name, "link", "set", &self.ns_if(), "up"],
        )
        .expect("link up");
        let _ = run("ip", &["neigh", "flush", "dev", &self.host_if()]);
    }

    /// Live processes of the login user but sshd's own (`sshd: USER@notty` serves a
    /// connection): (pid, command line).
    pub fn processes(&self) -> Vec<(u32, String)> {
        all_pids()
            .into_iter()
            .filter(|p| proc_uid(*p) == Some(self.uid) && !is_zombie(*p))
            .filter_map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                Some((p, cmd.trim().to_owned()))
            })
            .filter(|(_, cmd)| !cmd.starts_with("sshd"))
            .collect()
    }

    /// Live sshd processes serving the login user's connections (`sshd: USER@notty`).
    pub fn sshd_sessions(&self) -> Vec<u32> {
        all_pids()
            .into_iter()
            .filter(|p| proc_uid(*p) == Some(self.uid) && !is_zombie(*p))
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sshd"))
            })
            .collect()
    }

    /// Live processes of unit `unit_id` (all units when `None`) of the host's agent, found by
    /// the environment the agent gives them.
    pub fn unit_processes(&self, unit_id: Option<&str>) -> Vec<u32> {
        let want = unit_id.map(|u| format!("PHOENIX_UNIT={u}"));
        self.processes()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|env| {
                    env.split(|b| *b == 0).any(|v| match &want {
                        Some(w) => v == w.as_bytes(),
                        None => v.starts_with(b"PHOENIX_UNIT="),
                    })
                })
            })
            .collect()
    }

    /// Whether process `pid` runs in this host's network namespace.
    pub fn in_namespace(&self, pid: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        let ns = std::fs::metadata(format!("/run/netns/{}", self.name));
        let of = std::fs::metadata(format!("/proc/{pid}/ns/net"));
        matches!((ns, of), (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()))
    }

    /// Live agent processes of the host's user.
    pub fn agent_processes(&self) -> Vec<u32> {
        self.processes()
            .into_iter()
            .filter(|(_, cmd)| cmd.contains(" agent --state-dir "))
            .map(|(p, _)| p)
            .collect()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let (_l1, _l2) = setup_lock();
        let mut problems = Vec::new();
        kill_namespace(&self.name, self.uid);
        if let Some(mut sshd) = self.sshd.take() {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = run("ip", &["link", "del", &self.host_if()]);
        let _ = run(
            "ip",
            &[
                "route",
                "del",
                "unreachable",
                &self.block(),
                "metric",
                GUARD_METRIC,
            ],
        );
        if self.user_made
            && let Err(e) = run_retrying("userdel", &["-r", "-f", &self.user])
            && !e.contains("does not exist")
        {
            problems.push(e);
        }
        if Path::new(&format!("/run/netns/{}", self.name)).exists() {
            problems.push(format!("namespace {} is still there", self.name));
        }
        if !problems.is_empty() {
            eprintln!("test host {}: cleanup: {}", self.name, problems.join("; "));
        }
    }
}

/// Kills every process in namespace `ns` and every process of `uid` (when not 0), by pid,
/// and waits (up to 5 s) until they are gone.
fn kill_namespace(ns: &str, uid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut pids: Vec<u32> = run("ip", &["netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if uid != 0 {
            pids.extend(all_pids().into_iter().filter(|p| proc_uid(*p) == Some(uid)));
        }
        pids.retain(|p| *p != std::process::id() && !is_zombie(*p));
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for p in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(p as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the hosts of test processes that no longer run (killed before their cleanup).
fn remove_stale() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let netns = run("ip", &["netns", "list"]).unwrap_or_default();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let mut names: Vec<String> = netns
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .chain(passwd.lines().filter_map(|l| l.split(':').next()))
            .filter(|n| parse_name(n).is_some_and(|(pid, _)| !pid_alive(pid)))
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let (pid, n) = parse_name(&name).expect("filtered");
            let uid = run("id", &["-u", &name])
                .ok()
                .and_then(|u| u.trim().parse().ok())
                .unwrap_or(0);
            kill_namespace(&name, uid);
            let _ = run("ip", &["netns", "del", &name]);
            let _ = run("ip", &["link", "del", &format!("{name}a")]);
            let (a, _) = addresses(pid, n);
            let block = format!("{}/30", Ipv4Addr::from(u32::from(a) - 1));
            let _ = run(
                "ip",
                &[
                    "route",
                    "del",
                    "unreachable",
                    &block,
                    "metric",
                    GUARD_METRIC,
                ],
            );
            if uid != 0 {
                let _ = run_retrying("userdel", &["-r", "-f", &name]);
            }
            eprintln!("removed test host {name} left by process {pid}");
        }
    });
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

fn proc_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace()
                .next()
                .map(|st| st == "Z" || st == "X")
        })
        .unwrap_or(true)
}

/// One test host shared by every holder of it in this process: made by the first caller,
/// removed when the last holder drops it (so tests running side by side share one sshd and
/// one remote agent, as clients of one real host do).
///
/// # Errors
/// What failed when a host had to be made.
pub fn shared_host() -> Result<Arc<TestHost>, String> {
    static SHARED: Mutex<Weak<TestHost>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(h) = shared.upgrade() {
        return Ok(h);
    }
    let h = Arc::new(TestHost::start()?);
    *shared = Arc::downgrade(&h);
    Ok(h)
}

/// The conformance fixture: providers on one shared [`TestHost`], installing `binary`, with
/// their log caches in a temporary directory of the fixture's own.
#[derive(Debug)]
pub struct SshFixture {
    host: Result<Arc<TestHost>, String>,
    binary: PathBuf,
    cache: tempfile::TempDir,
}

impl SshFixture {
    /// A fixture whose providers install `binary` (a phoenix binary, or the crate's
    /// `phoenix-ssh-remote`). Makes no host when [`unavailable`] says none can be made.
    pub fn new(binary: &Path) -> Self {
        let host = match unavailable() {
            Some(why) => Err(why),
            None => shared_host().map_err(|e| {
                assert!(!required(), "PHOENIX_REQUIRE_SSH=1 but no test host: {e}");
                format!("no test host: {e}")
            }),
        };
        SshFixture {
            host,
            binary: binary.to_path_buf(),
            cache: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The host.
    ///
    /// # Panics
    /// When the fixture is unavailable.
    pub fn host(&self) -> &TestHost {
        self.host.as_ref().expect("an available fixture")
    }

    /// A new provider on the host.
    ///
    /// # Panics
    /// When the fixture is unavailable.
    pub fn ssh(&self) -> crate::SshProvider {
        let config = self
            .host()
            .config(self.cache.path(), &self.binary)
            .agent_idle_exit(Duration::from_secs(5));
        crate::SshProvider::new(config).expect("provider")
    }
}

impl Fixture for SshFixture {
    fn provider(&self) -> Box<dyn Provider> {
        Box::new(self.ssh())
    }

    fn unavailable(&self) -> Option<String> {
        self.host.as_ref().err().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        assert_eq!(parse_name(&name_of(4_194_303, 15)), Some((4_194_303, 15)));
        assert!(name_of(4_194_303, 15).len() < 15, "interface name too long");
        let (a, b) = addresses(1023, 15);
        assert_eq!(
            (a, b),
            (
                "10.213.255.253".parse().unwrap(),
                "10.213.255.254".parse().unwrap()
            )
        );
        let (a, _) = addresses(0, 0);
        assert_eq!(a, Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(parse_name("phxh1"), None);
        assert_eq!(parse_name("root"), None);
    }
}
