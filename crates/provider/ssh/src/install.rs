//! Putting this phoenix binary on the remote host: the architecture check, the SHA-256
//! comparison, the upload. The remote side is POSIX `sh` and coreutils (`uname`, `sha256sum`,
//! `stat`), which every Linux host has.

use crate::SshError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Where the binary lives on the host, relative to the login user's home.
#[cfg(test)]
pub(crate) const REMOTE_BINARY: &str = ".phoenix/bin/phoenix";

/// The remote command of every provider call.
pub(crate) const REMOTE_CALL: &str =
    r#"exec "$HOME/.phoenix/bin/phoenix" provider-remote --state-dir "$HOME/.phoenix""#;

/// Prints the host's `uname -sm` and the installed binary's SHA-256 (or `absent`). The hash is
/// kept beside the binary with the binary's size, modification and change times (to the
/// nanosecond) and inode, and recomputed only when one of them changes, so that a big (debug)
/// binary is not hashed again on every command. Writing the file changes its change time,
/// which no user can set back.
const CHECK: &str = r#"echo "phoenix-uname: $(uname -sm)"
f="$HOME/.phoenix/bin/phoenix"
if [ -f "$f" ]; then
  s=$(stat -c "%s %y %z %i" "$f")
  if [ -f "$f.sha256" ] && [ "$(sed -n 2p "$f.sha256")" = "$s" ]; then
    h=$(sed -n 1p "$f.sha256")
  else
    h=$(sha256sum "$f" | cut -d" " -f1)
    printf "%s\n%s\n" "$h" "$s" > "$f.sha256.$$" && mv -f "$f.sha256.$$" "$f.sha256"
  fi
  echo "phoenix-sha256: $h"
else
  echo "phoenix-sha256: absent"
fi"#;

/// Reads the binary on stdin into a temporary file beside the installed one and reports the
/// file's number and size. [`COMMIT`] puts it in place once the caller has checked that what it
/// sent (hashed as it went; ssh's MAC guards every byte on the way) is complete and is the
/// binary it meant to send. No hash is computed here: a debug binary takes seconds to hash.
const UPLOAD: &str = r#"set -e
umask 077
d="$HOME/.phoenix/bin"
mkdir -p "$d"
find "$d" -name ".upload.*" -mmin +10 -exec rm -f {} + 2>/dev/null || true
t="$d/.upload.$$"
cat > "$t"
chmod 755 "$t"
echo "phoenix-upload: $$ $(wc -c < "$t")""#;

/// Renames upload `@N@` into place (a running agent keeps its old copy) and records its
/// SHA-256 `@HASH@` beside it, keyed by the new file's size, times and inode.
const COMMIT: &str = r#"set -e
d="$HOME/.phoenix/bin"
mv -f "$d/.upload.@N@" "$d/phoenix"
s=$(stat -c "%s %y %z %i" "$d/phoenix")
printf "%s\n%s\n" "@HASH@" "$s" > "$d/phoenix.sha256.$$"
mv -f "$d/phoenix.sha256.$$" "$d/phoenix.sha256"
echo "phoenix-sha256: @HASH@""#;

/// Removes upload `@N@` (one that was not complete).
const DISCARD: &str = r#"rm -f "$HOME/.phoenix/bin/.upload.@N@""#;

/// `sh -c '<script>'`: the login shell may be any shell; the scripts hold no single quote.
pub(crate) fn sh(script: &str) -> String {
    assert!(!script.contains('\''), "remote scripts are single-quoted");
    format!("sh -c '{script}'")
}

/// The remote command that reports the host's system and installed binary.
pub(crate) fn check_command() -> String {
    sh(CHECK)
}

/// The remote command that receives a binary into a temporary file.
pub(crate) fn upload_command() -> String {
    sh(UPLOAD)
}

/// The remote command that installs upload `n`, whose SHA-256 is `hash`.
pub(crate) fn commit_command(n: u32, hash: &str) -> String {
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "a hex digest");
    sh(&COMMIT
        .replace("@N@", &n.to_string())
        .replace("@HASH@", hash))
}

/// The remote command that removes upload `n`.
pub(crate) fn discard_command(n: u32) -> String {
    sh(&DISCARD.replace("@N@", &n.to_string()))
}

/// What [`upload_command`] printed: the upload's number and size.
pub(crate) fn parse_upload(stdout: &str) -> Option<(u32, u64)> {
    let rest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("phoenix-upload:"))?;
    let mut it = rest.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The hash [`commit_command`] reports.
pub(crate) fn parse_commit(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        l.strip_prefix("phoenix-sha256:")
            .map(|v| v.trim().to_owned())
    })
}

/// What [`check_command`] printed: `uname -sm`, and the installed binary's SHA-256 if any.
pub(crate) fn parse_check(stdout: &str) -> Option<(String, Option<String>)> {
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
    };
    let uname = field("phoenix-uname:")?;
    let hash = field("phoenix-sha256:")?;
    Some((uname, (hash != "absent").then_some(hash)))
}

/// This binary's system as `OS ARCH` (`linux x86_64`).
pub(crate) fn local_system() -> String {
    format!("{} {}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Whether a host whose `uname -sm` is `uname` runs binaries built for `os`/`arch` (Rust's
/// names, as in [`std::env::consts`]).
pub(crate) fn runs_here(uname: &str, os: &str, arch: &str) -> bool {
    let mut it = uname.split_whitespace();
    let (Some(sys), Some(m)) = (it.next(), it.next()) else {
        return false;
    };
    let os_ok = match os {
        "macos" => sys.eq_ignore_ascii_case("darwin"),
        other => sys.eq_ignore_ascii_case(other),
    };
    let little = cfg!(target_endian = "little");
    let arch_ok = match arch {
        "x86_64" => matches!(m, "x86_64" | "amd64"),
        "x86" => matches!(m, "i386" | "i486" | "i586" | "i686"),
        "aarch64" => matches!(m, "aarch64" | "arm64"),
        "arm" => m.starts_with("arm") && m != "arm64",
        "powerpc64" => {
            if little {
                m == "ppc64le"
            } else {
                m == "ppc64"
            }
        }
        other => m == other,
    };
    os_ok && arch_ok
}

/// A reader that hashes what passes through it: the binary as it is sent.
pub(crate) struct Hashing<R> {
    inner: R,
    state: std::sync::Arc<Mutex<(Sha256, u64)>>,
}

impl<R: Read> Hashing<R> {
    /// Wraps `inner`; the hash and byte count so far are read through the returned handle.
    pub(crate) fn new(inner: R) -> (Self, std::sync::Arc<Mutex<(Sha256, u64)>>) {
        let state = std::sync::Arc::new(Mutex::new((Sha256::new(), 0)));
        (
            Hashing {
                inner,
                state: state.clone(),
            },
            state,
        )
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.0.update(&buf[..n]);
        st.1 += n as u64;
        Ok(n)
    }
}

/// Hex of a finished hash.
pub(crate) fn hex(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of the file at `path`, hex; computed once per process for a given size and
/// modification time.
///
/// # Errors
/// [`SshError::Local`] when the file cannot be read.
pub(crate) fn local_hash(path: &Path) -> Result<String, SshError> {
    type Key = (PathBuf, u64, Option<SystemTime>);
    static CACHE: Mutex<BTreeMap<Key, String>> = Mutex::new(BTreeMap::new());
    let err = |step: &'static str, e: std::io::Error| SshError::Local {
        step,
        path: path.display().to_string(),
        cause: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(|e| err("read the phoenix binary", e))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Some(h) = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return Ok(h.clone());
    }
    let mut f = std::fs::File::open(path).map_err(|e| err("read the phoenix binary", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| err("read the phoenix binary", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex = hex(hasher);
    CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key, hex.clone());
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures() {
        assert!(runs_here("Linux x86_64", "linux", "x86_64"));
        assert!(runs_here("Linux aarch64", "linux", "aarch64"));
        assert!(runs_here("Darwin arm64", "macos", "aarch64"));
        assert!(!runs_here("Linux aarch64", "linux", "x86_64"));
        assert!(!runs_here("FreeBSD amd64", "linux", "x86_64"));
        assert!(!runs_here("Linux armv7l", "linux", "aarch64"));
        assert!(runs_here("Linux armv7l", "linux", "arm"));
        assert!(!runs_here("", "linux", "x86_64"));
    }

    #[test]
    fn check_output() {
        let out = "motd junk\nphoenix-uname: Linux x86_64\nphoenix-sha256: abc123\n";
        assert_eq!(
            parse_check(out),
            Some(("Linux x86_64".into(), Some("abc123".into())))
        );
        let out = "phoenix-uname: Linux x86_64\nphoenix-sha256: absent\n";
        assert_eq!(parse_check(out), Some(("Linux x86_64".into(), None)));
        assert_eq!(parse_check("sh: 1: uname: not found"), None);
    }

    #[test]
    fn scripts_run_in_sh() {
        // They are single-quoted for the login shell and must parse as POSIX sh.
        for script in [
            check_command(),
            upload_command(),
            commit_command(7, "00ff"),
            discard_command(7),
        ] {
            let inner = script
                .strip_prefix("sh -c '")
                .and_then(|s| s.strip_suffix('\''))
                .unwrap();
            let st = std::process::Command::new("sh")
                .args(["-n", "-c", inner])
                .status()
                .unwrap();
            assert!(st.success(), "{inner}");
        }
    }

    #[test]
    fn the_check_reports_and_caches_the_installed_hash() {
        let home = tempfile::tempdir().unwrap();
        let run = || {
            let out = std::process::Command::new("sh")
                .args(["-c", CHECK])
                .env("HOME", home.path())
                .output()
                .unwrap();
            parse_check(&String::from_utf8_lossy(&out.stdout)).unwrap()
        };
        assert_eq!(run().1, None);
        let bin = home.path().join(REMOTE_BINARY);
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, b"hello").unwrap();
        let want = local_hash(&bin).unwrap();
        assert_eq!(
            want,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(run().1.as_deref(), Some(want.as_str()));
        assert!(bin.with_extension("sha256").exists());
        // Replaced: hashed again, not read from the cache, even with the same size and inode
        // number (the times differ; they tick every few milliseconds).
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::remove_file(&bin).unwrap();
        std::fs::write(&bin, b"other").unwrap();
        assert_ne!(run().1.as_deref(), Some(want.as_str()));
    }

    #[test]
    fn an_upload_is_installed_only_when_committed() {
        let home = tempfile::tempdir().unwrap();
        let sh_run = |script: &str, stdin: Option<&Path>| {
            let inner = script
                .strip_prefix("sh -c '")
                .and_then(|s| s.strip_suffix('\''))
                .unwrap()
                .to_owned();
            let mut c = std::process::Command::new("sh");
            c.args(["-c", &inner]).env("HOME", home.path());
            if let Some(p) = stdin {
                c.stdin(std::fs::File::open(p).unwrap());
            }
            let out = c.output().unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let src = home.path().join("src");
        std::fs::write(&src, b"hello").unwrap();
        let (hash, _) = {
            let (mut r, state) = Hashing::new(std::fs::File::open(&src).unwrap());
            std::io::copy(&mut r, &mut std::io::sink()).unwrap();
            drop(r);
            let st = std::sync::Arc::try_unwrap(state)
                .unwrap()
                .into_inner()
                .unwrap();
            (hex(st.0), st.1)
        };
        assert_eq!(hash, local_hash(&src).unwrap());
        let (n, size) = parse_upload(&sh_run(&upload_command(), Some(&src))).unwrap();
        assert_eq!(size, 5);
        assert!(
            !home.path().join(REMOTE_BINARY).exists(),
            "installed before the commit"
        );
        let out = sh_run(&commit_command(n, &hash), None);
        assert_eq!(parse_commit(&out), Some(hash.clone()));
        assert_eq!(
            std::fs::read(home.path().join(REMOTE_BINARY)).unwrap(),
            b"hello"
        );
        // The check now reads the recorded hash.
        let out = std::process::Command::new("sh")
            .args(["-c", CHECK])
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert_eq!(
            parse_check(&String::from_utf8_lossy(&out.stdout))
                .unwrap()
                .1,
            Some(hash)
        );
        let (n, _) = parse_upload(&sh_run(&upload_command(), Some(&src))).unwrap();
        sh_run(&discard_command(n), None);
        let left: Vec<_> = std::fs::read_dir(home.path().join(".phoenix/bin"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".upload"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
