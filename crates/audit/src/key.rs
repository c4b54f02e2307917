//! The operator's signing key: an ed25519 key in a file only its owner can read.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_consensus::{Signature, SigningKey, VerificationKey};

use crate::AuditError;

/// Prepended to a record's hash before signing, so an audit signature can never be replayed as
/// a signature over anything else (a ledger transaction signed with the same key, say).
const SIGNATURE_DOMAIN: &[u8] = b"phoenix-audit-signature-v1\n";

/// The environment variable that names the operator key file.
pub const KEY_ENV: &str = "PHOENIX_OPERATOR_KEY";

/// The operator's ed25519 key, which signs every audit record the operator's commands write.
///
/// The file holds the 32-byte secret seed as 64 hex digits and a newline, mode 0600 in a
/// directory of mode 0700. Where it is found: [`OperatorKey::default_path`].
pub struct OperatorKey {
    signing: SigningKey,
    path: PathBuf,
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("OperatorKey")
            .field("path", &self.path)
            .field("public_key", &self.public_hex())
            .finish()
    }
}

impl OperatorKey {
    /// Where the operator's key is kept: `$PHOENIX_OPERATOR_KEY` if set, else
    /// `$XDG_CONFIG_HOME/phoenix/operator.key`, else `$HOME/.config/phoenix/operator.key`;
    /// `None` when none of those variables is set.
    pub fn default_path() -> Option<PathBuf> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(path) = var(KEY_ENV) {
            return Some(PathBuf::from(path));
        }
        let config = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(config.join("phoenix").join("operator.key"))
    }

    /// Loads the key at `path`, or creates one there (with its directory) if there is no file.
    /// Returns the key and whether it was created.
    ///
    /// # Errors
    /// As [`OperatorKey::load`] and [`OperatorKey::generate`].
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), AuditError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok((Self::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Self::generate(path)?, true)),
            Err(source) => Err(AuditError::Key {
                path: path.to_owned(),
                reason: format!("cannot read it: {source}"),
            }),
        }
    }

    /// Loads the key at `path`.
    ///
    /// # Errors
    /// [`AuditError::Key`] when the file cannot be read, is readable or writable by anyone but
    /// its owner (as `ssh` refuses such a key), or does not hold a key.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let bad = |reason: String| AuditError::Key {
            path: path.to_owned(),
            reason,
        };
        let meta = fs::metadata(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "it is accessible to other users (mode {mode:o}); run `chmod 600 {}`",
                path.display()
            )));
        }
        let text = fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let seed = decode_hex32(text.trim())
            .ok_or_else(|| bad("it does not hold a key (expected 64 hex digits)".into()))?;
        Ok(Self {
            signing: SigningKey::from(seed),
            path: path.to_owned(),
        })
    }

    /// Creates a new key at `path` (and its directory, mode 0700). Never overwrites a file.
    ///
    /// # Errors
    /// [`AuditError::Key`] when the file exists or cannot be written.
    pub fn generate(path: &Path) -> Result<Self, AuditError> {
        let bad = |reason: String| AuditError::Key {
            path: path.to_owned(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            fs::create_dir_all(dir)
                .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        let signing = SigningKey::new(rand_core::OsRng);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| bad(format!("cannot create it: {e}")))?;
        file.write_all(format!("{}\n", hex(signing.as_bytes())).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| bad(format!("cannot write it: {e}")))?;
        Ok(Self {
            signing,
            path: path.to_owned(),
        })
    }

    /// The file the key was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public key, 64 hex digits: what is allowed in a fleet's chain.
    pub fn public_hex(&self) -> String {
        hex(&self.signing.verification_key().to_bytes())
    }

    /// Signs a record hash (hex); the signature is 128 hex digits.
    pub fn sign_hash(&self, hash: &str) -> String {
        hex(&self.signing.sign(&message(hash)).to_bytes())
    }
}

fn message(hash: &str) -> Vec<u8> {
    let mut m = SIGNATURE_DOMAIN.to_vec();
    m.extend_from_slice(hash.as_bytes());
    m
}

/// Whether `signature` (hex) is `public_key`'s (hex) signature over the record hash `hash`.
pub fn signature_verifies(public_key: &str, hash: &str, signature: &str) -> bool {
    let Some(key) = decode_hex32(public_key).and_then(|k| VerificationKey::try_from(k).ok()) else {
        return false;
    };
    let Some(sig) = decode_hex(signature).and_then(|s| <[u8; 64]>::try_from(s).ok()) else {
        return false;
    };
    key.verify(&Signature::from(sig), &message(hash)).is_ok()
}

/// Whether `text` is a well-formed public key (64 hex digits of a valid ed25519 point).
pub fn is_public_key(text: &str) -> bool {
    decode_hex32(text).is_some_and(|k| VerificationKey::try_from(k).is_ok())
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    decode_hex(text).and_then(|b| <[u8; 32]>::try_from(b).ok())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_loads_again_and_signs_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("operator.key");
        let (key, created) = OperatorKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = OperatorKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(key.public_hex(), again.public_hex());
        let sig = key.sign_hash("abc");
        assert!(signature_verifies(&key.public_hex(), "abc", &sig));
        assert!(!signature_verifies(&key.public_hex(), "abd", &sig));
        assert!(!signature_verifies(&key.public_hex(), "abc", "00"));
        assert!(!signature_verifies("zz", "abc", &sig));
        assert!(is_public_key(&key.public_hex()));
        assert!(!format!("{key:?}").contains(&hex(key.signing.as_bytes())));
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.key");
        OperatorKey::generate(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = OperatorKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(OperatorKey::generate(&path).is_err(), "never overwrites");
    }

    #[test]
    fn garbage_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.key");
        fs::write(&path, "not a key\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = OperatorKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
