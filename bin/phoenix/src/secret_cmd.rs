//! Secrets (`secrets:` in the spec; `docs/secrets.md`, ADR 010): the secrets key, resolving the
//! values a change needs (stored, generated, read from a file or the environment) before
//! anything changes, and `phoenix secret rotate|list|keygen|rekey`.
//!
//! Values exist in this process only as `SecretValue`s: decrypted from the state store, handed to
//! the provider through `WithSecrets`, never put in a unit spec, a revision, an event, an audit
//! record or a message.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use phoenix_provider_api::secret::{SecretValue, SecretVersions};
use phoenix_spec::secrets::SecretSource;
use phoenix_state::StateStore;
use phoenix_state::secrets::{SecretWrite, SecretsKey};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The environment variable that holds the secrets key itself.
pub(crate) const KEY_ENV: &str = "PHOENIX_SECRETS_KEY";

/// Where the secrets key comes from.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct KeyArgs {
    /// A file holding the secrets key (64 hex digits, or a passphrase of at least 16
    /// characters); default: the key itself in PHOENIX_SECRETS_KEY. Never inside the state dir.
    #[arg(long, value_name = "FILE")]
    pub secrets_key: Option<PathBuf>,
}

/// Reads the secrets key from `--secrets-key FILE`, else `PHOENIX_SECRETS_KEY`; `None` when
/// neither is given.
///
/// # Errors
/// A key file inside the state dir (backing the state dir up would back the key up beside the
/// values it protects), a file that cannot be read, a key that is too short.
pub(crate) fn load_key(args: &KeyArgs, state_dir: &Path) -> anyhow::Result<Option<SecretsKey>> {
    let text = match &args.secrets_key {
        Some(file) => {
            let abs = std::fs::canonicalize(file)
                .with_context(|| format!("cannot read the secrets key file {}", file.display()))?;
            if let Ok(state) = std::fs::canonicalize(state_dir)
                && abs.starts_with(&state)
            {
                bail!(
                    "refusing the secrets key file {}: it is inside the state dir {}, where a copy of the state would carry the key beside the values it protects; keep it elsewhere (docs/secrets.md)",
                    file.display(),
                    state_dir.display()
                );
            }
            refuse_if_readable_by_others(file, &abs)?;
            std::fs::read_to_string(&abs)
                .with_context(|| format!("cannot read the secrets key file {}", file.display()))?
        }
        None => match std::env::var(KEY_ENV) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        },
    };
    let key = SecretsKey::from_material(&text).map_err(|e| match &args.secrets_key {
        Some(f) => anyhow::anyhow!("{e} (in {})", f.display()),
        None => anyhow::anyhow!("{e} (in {KEY_ENV})"),
    })?;
    Ok(Some(key))
}

/// As for the operator key (and as `ssh` does for its keys): a key others can read is no key.
fn refuse_if_readable_by_others(given: &Path, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read the secrets key file {}", given.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "refusing the secrets key file {}: other users can read it (mode {:o}); `chmod 600` it",
            given.display(),
            mode & 0o777
        );
    }
    Ok(())
}

/// What a change needs of the fleet's secrets: the values, their versions, and what to store
/// once the change is confirmed.
#[derive(Default)]
pub(crate) struct Prepared {
    /// Every value the units may use, by name and version: the current ones and the earlier
    /// versions the store keeps, so that a rollback restarts old units with their own values.
    pub values: SecretVersions,
    /// The version of each, for unit fingerprints.
    pub versions: BTreeMap<String, u64>,
    /// New values to store (sealed), written after the change is confirmed and before anything
    /// starts.
    pub writes: Vec<SecretWrite>,
    /// One line per new value, for people (no value).
    pub notes: Vec<String>,
}

impl Prepared {
    /// Stores the new values. Nothing is written for a change that was declined.
    ///
    /// # Errors
    /// As [`StateStore::write_secrets`].
    pub(crate) fn commit(&self, store: &dyn StateStore, fleet: &str) -> anyhow::Result<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        store.write_secrets(fleet, &self.writes)?;
        Ok(())
    }
}

/// Refuses a fleet that declares secrets, for a command that was given no key.
///
/// # Errors
/// When `fleet` declares secrets, naming them and where the key goes.
pub(crate) fn require_no_secrets(fleet: &phoenix_spec::Fleet) -> anyhow::Result<()> {
    if fleet.secrets.is_empty() {
        return Ok(());
    }
    bail!(
        "fleet {} declares secrets ({}) but no secrets key was given: set {KEY_ENV} or pass --secrets-key FILE (docs/secrets.md); nothing was changed",
        fleet.name,
        fleet
            .secrets
            .iter()
            .map(|s| format!("`{}`", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The versions stored for `fleet` (no key needed: a version reveals nothing), for reading
/// commands that compare fingerprints.
///
/// # Errors
/// From the store.
pub(crate) fn stored_versions(
    store: &dyn StateStore,
    fleet: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(store
        .secrets(fleet)?
        .into_iter()
        .map(|r| (r.name, r.version))
        .collect())
}

/// Resolves the secrets of `fleet` for a change: every stored value is decrypted (so a wrong
/// key is refused here, before anything changes), each declared secret gets its value (kept,
/// generated on first use, or read from its file or variable, a new version when that
/// differs), and with `rotate` that secret gets a new value.
///
/// # Errors
/// No key while the fleet declares secrets, a wrong key, an unreadable source, an unknown
/// `rotate` name, or a rotation that would not change the value.
pub(crate) fn prepare(
    store: &dyn StateStore,
    fleet: &phoenix_spec::Fleet,
    key: Option<&SecretsKey>,
    rotate: Option<&str>,
) -> anyhow::Result<Prepared> {
    let rows = store.secrets(&fleet.name)?;
    let mut out = Prepared::default();
    if fleet.secrets.is_empty() && rows.is_empty() {
        return Ok(out);
    }
    let Some(key) = key else {
        // Stored secrets no spec uses any more need no key.
        require_no_secrets(fleet)?;
        return Ok(out);
    };
    let mut current = BTreeMap::new();
    for r in &rows {
        let value = phoenix_state::secrets::open(key, &fleet.name, &r.name, r.version, &r.sealed)
            .map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))?;
        current.insert(r.name.clone(), (r, value));
    }
    for s in &fleet.secrets {
        let rotating = rotate == Some(s.name.as_str());
        let stored = current.get(&s.name);
        let (value, source) = match &s.source {
            SecretSource::Generate { length, alphabet } => match stored {
                Some((_, v)) if !rotating => (v.clone(), "generate"),
                _ => (generate(*length, alphabet.chars())?, "generate"),
            },
            SecretSource::File { path, file } => (read_file(fleet, &s.name, path, *file)?, "file"),
            SecretSource::Env { var } => (
                std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "secret `{}` comes from the environment variable {var}, which is not set (or not UTF-8); nothing was changed",
                        s.name
                    )
                })?,
                "env",
            ),
        };
        let changed = stored.is_none_or(|(_, v)| *v != value);
        if rotating && !changed {
            bail!(
                "secret `{}` is read from its {} on every apply, and that holds the stored value: put the new value there first, then rotate",
                s.name,
                if source == "file" {
                    "file"
                } else {
                    "environment variable"
                }
            );
        }
        let version = match stored {
            Some((r, _)) if changed => r.version + 1,
            Some((r, _)) => r.version,
            None => 1,
        };
        if changed {
            let sealed = phoenix_state::secrets::seal(key, &fleet.name, &s.name, version, &value)?;
            out.writes.push(SecretWrite {
                name: s.name.clone(),
                version,
                source: source.into(),
                sealed,
                expected_sealed: stored.map(|(r, _)| r.sealed.clone()),
                earlier: false,
            });
            out.notes.push(match stored {
                None => format!("secret `{}`: first value (version 1, {source})", s.name),
                Some(_) => format!(
                    "secret `{}`: new value (version {version}, {source})",
                    s.name
                ),
            });
        }
        out.values.insert(&s.name, version, SecretValue::new(value));
        out.versions.insert(s.name.clone(), version);
    }
    // Values still stored for secrets the spec no longer declares, and the earlier versions
    // kept: the replaced units that a failed gate starts again use them.
    for (name, (r, v)) in current {
        if !out.versions.contains_key(&name) {
            out.values.insert(&name, r.version, SecretValue::new(v));
            out.versions.insert(name, r.version);
        } else if out.versions.get(&name) != Some(&r.version) {
            // The stored value becomes an earlier version once this change stores the new one.
            out.values.insert(&name, r.version, SecretValue::new(v));
        }
    }
    for r in store.secret_history(&fleet.name)? {
        let value =
            phoenix_state::secrets::open(key, &fleet.name, &r.name, r.version, &r.sealed)
                .map_err(|e| anyhow::anyhow!("{e} (version {}); nothing was changed", r.version))?;
        out.values
            .insert(&r.name, r.version, SecretValue::new(value));
    }
    Ok(out)
}

/// `length` characters drawn uniformly from `alphabet` (rejection sampling, so no character is
/// likelier than another).
fn generate(length: u32, alphabet: &[u8]) -> anyhow::Result<String> {
    let n = alphabet.len();
    // The largest multiple of n that fits in a byte: bytes at or above it are drawn again.
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(length as usize);
    let mut buf = [0u8; 64];
    while out.len() < length as usize {
        getrandom::fill(&mut buf).context("the operating system gave no randomness")?;
        for &b in &buf {
            if (b as usize) < limit && out.len() < length as usize {
                out.push(alphabet[b as usize % n] as char);
            }
        }
    }
    Ok(out)
}

fn read_file(
    fleet: &phoenix_spec::Fleet,
    name: &str,
    path: &str,
    file: usize,
) -> anyhow::Result<String> {
    let p = Path::new(path);
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        let spec_dir = fleet
            .files
            .get(file)
            .and_then(|f| Path::new(f).parent().map(Path::to_path_buf))
            .unwrap_or_default();
        spec_dir.join(p)
    };
    let text = std::fs::read_to_string(&full).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} (the value of secret `{name}`): {e}; nothing was changed",
            full.display()
        )
    })?;
    // One trailing newline is how editors and `echo` end a file, not part of the value.
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        bail!(
            "{} (the value of secret `{name}`) is empty; nothing was changed",
            full.display()
        );
    }
    Ok(text.to_string())
}

/// `phoenix secret ...`.
#[derive(Subcommand, Clone, Debug)]
pub(crate) enum SecretCommand {
    /// Give a secret a new value (generated again, or read again from its file or variable)
    /// and restart, through the engine, the units that use it; asks first, like `apply`.
    Rotate(RotateArgs),
    /// The fleet's secrets: source, version and when the value was stored (never the value).
    List(ListArgs),
    /// Write a new random secrets key (64 hex digits) to FILE, mode 0600.
    Keygen {
        /// Where to write it; must not exist.
        file: PathBuf,
    },
    /// Re-encrypt every stored secret of the fleet with a new key (the values and versions
    /// stay, so nothing restarts).
    Rekey(RekeyArgs),
}

/// `phoenix secret rotate`.
#[derive(Args, Clone, Debug)]
pub(crate) struct RotateArgs {
    /// Spec files (later files extend earlier ones), then the secret: `FILE... NAME`.
    #[arg(required = true, num_args = 2.., value_names = ["FILE", "NAME"])]
    pub args: Vec<String>,
    /// Environment overlay.
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub change: crate::deploy_cmd::ChangeArgs,
}

/// `phoenix secret list`.
#[derive(Args, Clone, Debug)]
pub(crate) struct ListArgs {
    /// Spec files naming the fleet.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = crate::deploy_cmd::ReportFormat::Table)]
    pub output: crate::deploy_cmd::ReportFormat,
    #[command(flatten)]
    pub state: crate::deploy_cmd::StateArgs,
}

/// `phoenix secret rekey`.
#[derive(Args, Clone, Debug)]
pub(crate) struct RekeyArgs {
    /// Spec files naming the fleet.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The file holding the new key (the current one is --secrets-key or PHOENIX_SECRETS_KEY).
    #[arg(long, value_name = "FILE")]
    pub new_key: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub state: crate::deploy_cmd::StateArgs,
}

/// Runs `phoenix secret ...`.
pub(crate) fn run(cmd: SecretCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretCommand::Rotate(args) => crate::deploy_cmd::rotate_secret(args),
        SecretCommand::List(args) => list(args),
        SecretCommand::Keygen { file } => keygen(&file),
        SecretCommand::Rekey(args) => rekey(args),
    }
}

fn fleet_of(files: &[PathBuf]) -> anyhow::Result<Result<phoenix_spec::Fleet, ExitCode>> {
    let mut sources = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        sources.push((f.display().to_string(), text));
    }
    match phoenix_spec::parse_sources(&sources, None) {
        Ok(fleet) => Ok(Ok(fleet)),
        Err(d) => {
            eprint!("{}", d.render());
            Ok(Err(ExitCode::from(1)))
        }
    }
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let fleet = match fleet_of(&args.files)? {
        Ok(f) => f,
        Err(code) => return Ok(code),
    };
    let store =
        phoenix_state::open_read_only(&args.state.state_dir, args.state.state_url.as_deref())
            .with_context(|| {
                format!(
                    "opening the state store in {}",
                    args.state.state_dir.display()
                )
            })?;
    let rows: BTreeMap<String, phoenix_state::secrets::SecretRecord> = store
        .secrets(&fleet.name)?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let mut names: Vec<String> = fleet.secrets.iter().map(|s| s.name.clone()).collect();
    names.extend(rows.keys().filter(|k| fleet.secret(k).is_none()).cloned());
    let entries: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            let r = rows.get(n);
            let declared = fleet.secret(n).map(|s| match &s.source {
                SecretSource::Generate { .. } => "generate".to_string(),
                SecretSource::File { path, .. } => format!("file {path}"),
                SecretSource::Env { var } => format!("env {var}"),
            });
            serde_json::json!({
                "name": n,
                "source": declared,
                "version": r.map(|r| r.version),
                "stored": r.is_some(),
                "updated_at": r.and_then(|r| jiff::Timestamp::from_millisecond(r.updated_at_ms).ok()).map(|t| t.to_string()),
            })
        })
        .collect();
    match args.output {
        crate::deploy_cmd::ReportFormat::Json => crate::print_out(&format!(
            "{}\n",
            serde_json::to_string_pretty(
                &serde_json::json!({"fleet": fleet.name, "secrets": entries})
            )?
        ))?,
        crate::deploy_cmd::ReportFormat::Table => {
            let mut text = format!(
                "{:<24} {:<28} {:>7}  UPDATED\n",
                "SECRET", "SOURCE", "VERSION"
            );
            for e in &entries {
                text.push_str(&format!(
                    "{:<24} {:<28} {:>7}  {}\n",
                    e["name"].as_str().unwrap_or(""),
                    e["source"].as_str().unwrap_or("(no longer declared)"),
                    e["version"].as_u64().map_or("-".into(), |v| v.to_string()),
                    e["updated_at"]
                        .as_str()
                        .unwrap_or("not stored yet (the next apply stores it)"),
                ));
            }
            crate::print_out(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn keygen(file: &Path) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = phoenix_state::secrets::generate_key()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create {} (it must not exist yet)", file.display()))?;
    f.write_all(format!("{key}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", file.display()))?;
    eprintln!(
        "wrote a new secrets key to {} (mode 0600): back it up outside the state dir; without it the stored secrets cannot be read",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn rekey(args: RekeyArgs) -> anyhow::Result<ExitCode> {
    let fleet = match fleet_of(&args.files)? {
        Ok(f) => f,
        Err(code) => return Ok(code),
    };
    let old = load_key(&args.key, &args.state.state_dir)?.with_context(|| {
        format!("no current secrets key: set {KEY_ENV} or pass --secrets-key FILE")
    })?;
    let new = load_key(
        &KeyArgs {
            secrets_key: Some(args.new_key.clone()),
        },
        &args.state.state_dir,
    )?
    .context("no new key")?;
    let store = phoenix_state::open(&args.state.state_dir, args.state.state_url.as_deref())
        .with_context(|| {
            format!(
                "opening the state store in {}",
                args.state.state_dir.display()
            )
        })?;
    let rows = store.secrets(&fleet.name)?;
    let earlier = store.secret_history(&fleet.name)?;
    // Every value (the earlier versions kept for rollbacks too) is opened before any is
    // written, and all are written in one transaction: a wrong current key changes nothing.
    let mut writes = Vec::new();
    for (r, is_earlier) in rows
        .iter()
        .map(|r| (r, false))
        .chain(earlier.iter().map(|r| (r, true)))
    {
        let v = phoenix_state::secrets::open(&old, &fleet.name, &r.name, r.version, &r.sealed)
            .map_err(|e| anyhow::anyhow!("{e} (version {}); nothing was changed", r.version))?;
        writes.push(SecretWrite {
            name: r.name.clone(),
            version: r.version,
            source: r.source.clone(),
            sealed: phoenix_state::secrets::seal(&new, &fleet.name, &r.name, r.version, &v)?,
            expected_sealed: Some(r.sealed.clone()),
            earlier: is_earlier,
        });
    }
    store.write_secrets(&fleet.name, &writes)?;
    eprintln!(
        "re-encrypted {} secret(s) of fleet {} ({} earlier version(s) kept for rollbacks) with the key in {}; from now on pass that key",
        rows.len(),
        earlier.len(),
        fleet.name,
        args.new_key.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_have_the_length_and_alphabet_asked_for() {
        for alphabet in [
            phoenix_spec::secrets::Alphabet::Hex,
            phoenix_spec::secrets::Alphabet::Alphanumeric,
            phoenix_spec::secrets::Alphabet::Base64url,
        ] {
            let v = generate(100, alphabet.chars()).unwrap();
            assert_eq!(v.len(), 100);
            assert!(v.bytes().all(|b| alphabet.chars().contains(&b)), "{v}");
        }
        assert_ne!(generate(32, b"ab").unwrap(), generate(32, b"ab").unwrap());
    }
}
