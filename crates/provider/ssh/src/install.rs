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

/// Reads the binary on stdin into a temporary file beside the installed one, checks its
/// SHA-256 against `@HASH@`, and renames it into place (a running agent keeps its old copy).
const UPLOAD: &str = r#"set -e
umask 077
d="$HOME/.phoenix/bin"
mkdir -p "$d"
find "$d" -name ".upload.*" -mmin +10 -exec rm -f {} + 2>/dev/null || true
t="$d/.upload.$$"
cat > "$t"
chmod 755 "$t"
h=$(sha256sum "$t" | cut -d" " -f1)
if [ "$h" != "@HASH@" ]; then rm -f "$t"; echo "the uploaded copy has SHA-256 $h, not @HASH@" >&2; exit 3; fi
mv -f "$t" "$d/phoenix"
s=$(stat -c "%s %y %z %i" "$d/phoenix")
printf "%s\n%s\n" "$h" "$s" > "$d/phoenix.sha256.$$" && mv -f "$d/phoenix.sha256.$$" "$d/phoenix.sha256"
echo "phoenix-sha256: $h""#;

/// `sh -c '<script>'`: the login shell may be any shell; the scripts hold no single quote.
pub(crate) fn sh(script: &str) -> String {
    assert!(!script.contains('\''), "remote scripts are single-quoted");
    format!("sh -c '{script}'")
}

/// The remote command that reports the host's system and installed binary.
pub(crate) fn check_command() -> String {
    sh(CHECK)
}

/// The remote command that installs a binary whose SHA-256 is `hash`.
pub(crate) fn upload_command(hash: &str) -> String {
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "a hex digest");
    sh(&UPLOAD.replace("@HASH@", hash))
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

/// The hash [`upload_command`] reports.
pub(crate) fn parse_upload(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        l.strip_prefix("phoenix-sha256:")
            .map(|v| v.trim().to_owned())
    })
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
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
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
        for script in [check_command(), upload_command("00ff")] {
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
    fn the_upload_refuses_a_corrupt_copy_and_installs_a_good_one() {
        let home = tempfile::tempdir().unwrap();
        let src = home.path().join("src");
        std::fs::write(&src, b"hello").unwrap();
        let hash = local_hash(&src).unwrap();
        let upload = |hash: &str| {
            std::process::Command::new("sh")
                .args(["-c", &UPLOAD.replace("@HASH@", hash)])
                .env("HOME", home.path())
                .stdin(std::fs::File::open(&src).unwrap())
                .output()
                .unwrap()
        };
        let bad = upload("00");
        assert!(!bad.status.success());
        assert!(!home.path().join(REMOTE_BINARY).exists());
        let good = upload(&hash);
        assert!(good.status.success(), "{good:?}");
        assert_eq!(
            parse_upload(&String::from_utf8_lossy(&good.stdout)),
            Some(hash)
        );
        assert_eq!(
            std::fs::read(home.path().join(REMOTE_BINARY)).unwrap(),
            b"hello"
        );
    }
}
