//! Secrets at rest: each value sealed with XChaCha20-Poly1305 under the operator's secrets key,
//! with a random nonce per value and `fleet`, `name` and `version` as associated data (so a
//! sealed value copied onto another row does not open), stored in the `secrets` table (schema
//! v5). The key is never in the store: it comes from `PHOENIX_SECRETS_KEY` or a key file, and is
//! either 32 random bytes written as 64 hex digits or a passphrase, stretched with Argon2id over a
//! random salt kept beside each value.
//!
//! ```
//! use phoenix_state::secrets::{SecretsKey, open, seal};
//! let key = SecretsKey::from_material("correct horse battery staple").unwrap();
//! let sealed = seal(&key, "demo", "db", 1, "hunter2").unwrap();
//! assert!(!sealed.contains("hunter2"));
//! assert_eq!(open(&key, "demo", "db", 1, &sealed).unwrap(), "hunter2");
//! assert!(open(&key, "demo", "db", 2, &sealed).is_err());
//! ```

use crate::db::{Backend, Fail, Row, Val};
use crate::error::StateError;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Shortest passphrase accepted as a secrets key.
pub const MIN_PASSPHRASE_CHARS: usize = 16;

/// What sealing or opening a secret can fail with. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key material is neither 64 hex digits nor a long enough passphrase.
    #[error(
        "the secrets key is too short: give 64 hex digits (32 random bytes, e.g. from `phoenix secret keygen`) or a passphrase of at least {MIN_PASSPHRASE_CHARS} characters"
    )]
    TooShort,
    /// The value does not open with this key: another key sealed it, or the row was changed.
    #[error(
        "secret `{name}` of fleet {fleet} does not decrypt with this secrets key (a different key sealed it, or its row was changed)"
    )]
    WrongKey {
        /// Fleet.
        fleet: String,
        /// Secret.
        name: String,
    },
    /// The sealed text is not in the format this build writes.
    #[error(
        "secret `{name}` of fleet {fleet} is stored in a format this phoenix cannot read: {reason}"
    )]
    Format {
        /// Fleet.
        fleet: String,
        /// Secret.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The operating system gave no randomness, or the key derivation failed.
    #[error("cannot {step}: {reason}")]
    Crypto {
        /// What was being done.
        step: &'static str,
        /// Why.
        reason: String,
    },
}

enum Material {
    Raw([u8; 32]),
    Passphrase(String),
}

/// The operator's secrets key (never stored in the state store). `Debug` shows nothing of it.
pub struct SecretsKey {
    material: Material,
    /// Keys derived from the passphrase, by salt (one derivation per salt per process).
    derived: Mutex<BTreeMap<[u8; 16], [u8; 32]>>,
    /// The salt this process seals new values with (passphrases only).
    salt: [u8; 16],
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

impl Drop for SecretsKey {
    fn drop(&mut self) {
        if let Material::Raw(k) = &mut self.material {
            k.fill(0);
        }
        if let Ok(mut d) = self.derived.lock() {
            d.values_mut().for_each(|k| k.fill(0));
        }
    }
}

fn random<const N: usize>(step: &'static str) -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| KeyError::Crypto {
        step,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// 32 random bytes as 64 hex digits: a new secrets key.
///
/// # Errors
/// [`KeyError::Crypto`] when the operating system gives no randomness.
pub fn generate_key() -> Result<String, KeyError> {
    Ok(hex::encode(random::<32>("generate a key")?))
}

impl SecretsKey {
    /// A key from what `PHOENIX_SECRETS_KEY` or a key file holds: 64 hex digits are the key
    /// itself; anything else is a passphrase. Surrounding white space (a file's newline) is
    /// not part of it.
    ///
    /// # Errors
    /// [`KeyError::TooShort`] for a passphrase under [`MIN_PASSPHRASE_CHARS`] characters.
    pub fn from_material(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let material = match hex::decode(text) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&bytes);
                Material::Raw(k)
            }
            _ if text.chars().count() >= MIN_PASSPHRASE_CHARS => {
                Material::Passphrase(text.to_string())
            }
            _ => return Err(KeyError::TooShort),
        };
        Ok(SecretsKey {
            material,
            derived: Mutex::new(BTreeMap::new()),
            salt: random::<16>("generate a salt")?,
        })
    }

    /// The cipher key for values sealed with `salt` (ignored for a raw key).
    fn cipher(&self, salt: &[u8; 16]) -> Result<XChaCha20Poly1305, KeyError> {
        let key = match &self.material {
            Material::Raw(k) => *k,
            Material::Passphrase(p) => {
                let mut cache = self
                    .derived
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match cache.get(salt) {
                    Some(k) => *k,
                    None => {
                        let mut out = [0u8; 32];
                        // Argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: the
                        // OWASP minimum), cached per salt so one command derives once.
                        argon2::Argon2::default()
                            .hash_password_into(p.as_bytes(), salt, &mut out)
                            .map_err(|e| KeyError::Crypto {
                                step: "derive the key from the passphrase",
                                reason: e.to_string(),
                            })?;
                        cache.insert(*salt, out);
                        out
                    }
                }
            }
        };
        XChaCha20Poly1305::new_from_slice(&key).map_err(|e| KeyError::Crypto {
            step: "set up the cipher",
            reason: e.to_string(),
        })
    }

    fn kdf(&self) -> &'static str {
        match self.material {
            Material::Raw(_) => "raw",
            Material::Passphrase(_) => "argon2id",
        }
    }
}

fn aad(fleet: &str, name: &str, version: u64) -> Vec<u8> {
    // NUL cannot occur in a fleet or secret name, so the parts cannot run into each other.
    format!("phoenix-secret\0{fleet}\0{name}\0{version}").into_bytes()
}

/// Seals `value` of secret `name`, version `version`, of `fleet`: the text stored in the row,
/// `x1$KDF$SALT$NONCE$CIPHERTEXT` (hex).
///
/// # Errors
/// [`KeyError::Crypto`].
pub fn seal(
    key: &SecretsKey,
    fleet: &str,
    name: &str,
    version: u64,
    value: &str,
) -> Result<String, KeyError> {
    let salt = key.salt;
    let nonce: [u8; 24] = random("generate a nonce")?;
    let ad = aad(fleet, name, version);
    let ct = key
        .cipher(&salt)?
        .encrypt(
            &nonce.into(),
            Payload {
                msg: value.as_bytes(),
                aad: &ad,
            },
        )
        .map_err(|_| KeyError::Crypto {
            step: "encrypt",
            reason: "the cipher refused".into(),
        })?;
    Ok(format!(
        "x1${}${}${}${}",
        key.kdf(),
        hex::encode(salt),
        hex::encode(nonce),
        hex::encode(ct)
    ))
}

/// Opens what [`seal`] wrote.
///
/// # Errors
/// [`KeyError::WrongKey`] when the key (or fleet, name, version) is not the one it was sealed
/// with; [`KeyError::Format`] for text that is not a sealed value.
pub fn open(
    key: &SecretsKey,
    fleet: &str,
    name: &str,
    version: u64,
    sealed: &str,
) -> Result<String, KeyError> {
    let format = |reason: &str| KeyError::Format {
        fleet: fleet.into(),
        name: name.into(),
        reason: reason.into(),
    };
    let parts: Vec<&str> = sealed.split('$').collect();
    let [tag, kdf, salt, nonce, ct] = parts.as_slice() else {
        return Err(format("not five `$`-separated fields"));
    };
    if *tag != "x1" {
        return Err(format("unknown format tag"));
    }
    if *kdf != key.kdf() {
        // A value sealed under a passphrase never opens with a raw key and back: say which.
        return Err(KeyError::WrongKey {
            fleet: fleet.into(),
            name: name.into(),
        });
    }
    let salt: [u8; 16] = hex::decode(salt)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| format("bad salt"))?;
    let nonce: [u8; 24] = hex::decode(nonce)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| format("bad nonce"))?;
    let ct = hex::decode(ct).map_err(|_| format("bad ciphertext"))?;
    let ad = aad(fleet, name, version);
    let plain = key
        .cipher(&salt)?
        .decrypt(&nonce.into(), Payload { msg: &ct, aad: &ad })
        .map_err(|_| KeyError::WrongKey {
            fleet: fleet.into(),
            name: name.into(),
        })?;
    String::from_utf8(plain).map_err(|_| format("not UTF-8"))
}

/// One stored secret: its sealed value and what may be shown of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Fleet.
    pub fleet: String,
    /// Name.
    pub name: String,
    /// 1 for the first value, one more for each new one.
    pub version: u64,
    /// Where the value came from (`generate`, `file`, `env`), for people.
    pub source: String,
    /// What [`seal`] wrote.
    pub sealed: String,
    /// When this version was stored (Unix ms, the store's clock).
    pub updated_at_ms: i64,
}

/// How many earlier versions of each secret are kept (table `secret_versions`) for rollbacks to
/// older revisions. A rollback to a revision whose version was dropped is refused by name.
pub const KEPT_VERSIONS: u64 = 16;

/// A change to one secret for [`crate::StateStore::write_secrets`]: written only if the row
/// still holds `expected_sealed` (`None`: only if there is no row), so two operators never
/// both generate a first value.
///
/// A write of a new version keeps the value it replaces as an earlier version. A write of the
/// same version (a re-encryption under a new key) replaces it without keeping the old sealing;
/// with `earlier` it re-seals a kept earlier version instead of the current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretWrite {
    /// Name.
    pub name: String,
    /// The new version.
    pub version: u64,
    /// Where the value came from.
    pub source: String,
    /// The new sealed value.
    pub sealed: String,
    /// What the row must hold now.
    pub expected_sealed: Option<String>,
    /// Re-seals the kept earlier version `version` (in `secret_versions`), not the current one.
    pub earlier: bool,
}

const COLUMNS: &str = "name, version, source, sealed, updated_at_ms";

fn record(row: &Row, fleet: &str) -> Result<SecretRecord, Fail> {
    let name = row.text(0)?;
    let version = u64::try_from(row.int(1)?).map_err(|_| {
        Fail::State(StateError::CorruptRecord {
            table: "secrets",
            key: format!("{fleet}/{name}"),
            reason: "negative version".into(),
        })
    })?;
    Ok(SecretRecord {
        fleet: fleet.into(),
        version,
        source: row.text(2)?,
        sealed: row.text(3)?,
        updated_at_ms: row.int(4)?,
        name,
    })
}

fn db_error<'a>(step: &'static str, fleet: &'a str) -> impl FnOnce(Fail) -> StateError + 'a {
    move |f| match f {
        Fail::State(e) => e,
        other => other.at(|source| StateError::Secrets {
            step,
            fleet: fleet.to_owned(),
            source,
        }),
    }
}

pub(crate) fn secrets<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Vec<SecretRecord>, StateError> {
    rows(backend, fleet, "secrets")
}

pub(crate) fn secret_history<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Vec<SecretRecord>, StateError> {
    rows(backend, fleet, "secret_versions")
}

fn rows<B: Backend>(
    backend: &B,
    fleet: &str,
    table: &'static str,
) -> Result<Vec<SecretRecord>, StateError> {
    backend
        .read(|tx| {
            tx.query(
                &format!("SELECT {COLUMNS} FROM {table} WHERE fleet = $1 ORDER BY name, version"),
                &[fleet.into()],
            )?
            .iter()
            .map(|r| record(r, fleet))
            .collect()
        })
        .map_err(db_error("read", fleet))
}

pub(crate) fn write_secrets<B: Backend>(
    backend: &B,
    fleet: &str,
    writes: &[SecretWrite],
) -> Result<(), StateError> {
    backend
        .write(|tx| {
            for w in writes {
                let now = tx.now_ms()?;
                let version = Val::Int(i64::try_from(w.version).unwrap_or(i64::MAX));
                if w.earlier {
                    let n = tx.execute(
                        "UPDATE secret_versions SET sealed = $1 \
                         WHERE fleet = $2 AND name = $3 AND version = $4 AND sealed = $5",
                        &[
                            w.sealed.as_str().into(),
                            fleet.into(),
                            w.name.as_str().into(),
                            version,
                            w.expected_sealed.as_deref().unwrap_or("").into(),
                        ],
                    )?;
                    if n != 1 {
                        return Err(Fail::State(StateError::SecretChanged {
                            fleet: fleet.to_owned(),
                            name: w.name.clone(),
                        }));
                    }
                    continue;
                }
                let current = tx.query(
                    "SELECT sealed, version FROM secrets WHERE fleet = $1 AND name = $2",
                    &[fleet.into(), w.name.as_str().into()],
                )?;
                let current_version = current.first().map(|r| r.int(1)).transpose()?;
                let current = current.first().map(|r| r.text(0)).transpose()?;
                if current != w.expected_sealed {
                    return Err(Fail::State(StateError::SecretChanged {
                        fleet: fleet.to_owned(),
                        name: w.name.clone(),
                    }));
                }
                // A new version keeps the one it replaces, for rollbacks to older revisions;
                // a re-encryption (same version) must not keep the old key's sealing.
                if current_version.is_some_and(|v| v != version_int(w.version)) {
                    tx.execute(
                        "INSERT INTO secret_versions \
                         (fleet, name, version, source, sealed, updated_at_ms) \
                         SELECT fleet, name, version, source, sealed, updated_at_ms FROM secrets \
                         WHERE fleet = $1 AND name = $2 \
                         ON CONFLICT (fleet, name, version) DO NOTHING",
                        &[fleet.into(), w.name.as_str().into()],
                    )?;
                    tx.execute(
                        "DELETE FROM secret_versions WHERE fleet = $1 AND name = $2 AND version <= $3",
                        &[
                            fleet.into(),
                            w.name.as_str().into(),
                            Val::Int(version_int(w.version.saturating_sub(KEPT_VERSIONS + 1))),
                        ],
                    )?;
                }
                tx.execute(
                    "DELETE FROM secrets WHERE fleet = $1 AND name = $2",
                    &[fleet.into(), w.name.as_str().into()],
                )?;
                tx.execute(
                    "INSERT INTO secrets (fleet, name, version, source, sealed, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        fleet.into(),
                        w.name.as_str().into(),
                        version,
                        w.source.as_str().into(),
                        w.sealed.as_str().into(),
                        Val::Int(now),
                    ],
                )?;
            }
            Ok(())
        })
        .map_err(db_error("write", fleet))
}

fn version_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_with_its_key_and_place() {
        let raw = SecretsKey::from_material(&generate_key().unwrap()).unwrap();
        let other = SecretsKey::from_material(&generate_key().unwrap()).unwrap();
        let pass = SecretsKey::from_material("a passphrase of some length\n").unwrap();
        for key in [&raw, &pass] {
            let a = seal(key, "f", "db", 1, "s3cr3t-value").unwrap();
            let b = seal(key, "f", "db", 1, "s3cr3t-value").unwrap();
            assert_ne!(a, b, "a fresh nonce per value");
            assert!(!a.contains("s3cr3t"));
            assert_eq!(open(key, "f", "db", 1, &a).unwrap(), "s3cr3t-value");
            assert!(matches!(
                open(key, "g", "db", 1, &a),
                Err(KeyError::WrongKey { .. })
            ));
            assert!(matches!(
                open(key, "f", "dc", 1, &a),
                Err(KeyError::WrongKey { .. })
            ));
        }
        let a = seal(&raw, "f", "db", 1, "v").unwrap();
        let err = open(&other, "f", "db", 1, &a).unwrap_err().to_string();
        assert!(err.contains("does not decrypt"), "{err}");
        assert!(open(&pass, "f", "db", 1, &a).is_err());
        assert!(matches!(
            SecretsKey::from_material("short"),
            Err(KeyError::TooShort)
        ));
        assert_eq!(format!("{raw:?}"), "SecretsKey(<redacted>)");
    }
}
