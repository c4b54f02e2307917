//! Secret values on their way to a unit, and nowhere else.
//!
//! A [`UnitSpec`] names the secrets it uses and their versions (so its fingerprint changes
//! when a value does, without revealing the value); the values travel apart, as
//! [`SecretValues`], from whoever resolved them (the binary, which decrypts them from the state
//! store) to the provider that starts the unit, through [`Provider::start_with_secrets`]. A
//! [`WithSecrets`] provider wraps another and adds the values to every start, so the engine,
//! which persists unit specs and writes audit records and events, never sees a value.
//!
//! A provider that supports secrets writes each value the unit uses to
//! [`secret_file`]`(data_dir, name)` with mode 0600 (in a 0700 directory) before it starts the
//! unit, and fills `${secret:NAME}` in `env` from that file, so that a unit restarted by its
//! supervisor later, even by a restarted supervisor, gets the same value without being sent it
//! again.
//!
//! ```
//! use phoenix_provider_api::secret::{SecretValue, SecretValues};
//! let mut values = SecretValues::default();
//! values.insert("db", SecretValue::new("hunter2".into()));
//! assert_eq!(format!("{:?}", values.get("db").unwrap()), "SecretValue(<redacted>)");
//! ```

use crate::{Provider, Result, UnitSpec, UnitStatus};
use phoenix_model::secret_ref::SecretUse;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory under a unit's data dir that holds its secrets' files.
pub const SECRETS_DIR: &str = ".secrets";

/// Where the value of secret `name` is kept for the units of one instance.
pub fn secret_file(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(SECRETS_DIR).join(name)
}

/// One secret's value. `Debug` never shows it, nothing serializes it, and it is wiped from
/// memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        SecretValue(value)
    }

    /// The value, for the one place that hands it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        // Overwrite the bytes (a best effort: copies made by the OS or by callers of `expose`
        // are theirs to manage). `black_box` keeps the writes from being optimised away.
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        for b in bytes.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&bytes);
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Secret values by name.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct SecretValues(BTreeMap<String, SecretValue>);

impl SecretValues {
    /// Adds (or replaces) a value.
    pub fn insert(&mut self, name: &str, value: SecretValue) {
        self.0.insert(name.to_string(), value);
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.0.get(name)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Names and values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The values `spec` uses (its [`UnitSpec::secrets`]).
    ///
    /// # Errors
    /// [`crate::ProviderError::InvalidSpec`] naming a secret the spec uses and `self` lacks.
    pub fn for_spec(&self, spec: &UnitSpec) -> Result<SecretValues> {
        let mut out = SecretValues::default();
        for name in spec.secrets.keys() {
            match self.0.get(name) {
                Some(v) => out.insert(name, v.clone()),
                None => {
                    return Err(crate::ProviderError::InvalidSpec {
                        unit: spec.unit_id(),
                        problem: format!("secret `{name}` was not resolved before the start"),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Every value a change may hand to a unit, by secret name and version: each secret's current
/// value, and the earlier versions the state store keeps, so that a unit of an older revision
/// (started again by a rollback) gets the value it ran with, not today's.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct SecretVersions(BTreeMap<String, BTreeMap<u64, SecretValue>>);

impl SecretVersions {
    /// Adds (or replaces) version `version` of `name`.
    pub fn insert(&mut self, name: &str, version: u64, value: SecretValue) {
        self.0
            .entry(name.to_string())
            .or_default()
            .insert(version, value);
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values `spec` uses, each at the version its spec pins ([`UnitSpec::secrets`]; an
    /// unpinned `0` takes the newest held).
    ///
    /// # Errors
    /// [`crate::ProviderError::InvalidSpec`] naming a secret, or a version of it, that is not
    /// held (an older version than the store keeps, or a secret never resolved).
    pub fn for_spec(&self, spec: &UnitSpec) -> Result<SecretValues> {
        let mut out = SecretValues::default();
        for (name, version) in &spec.secrets {
            let held = self.0.get(name);
            let value = match *version {
                0 => held.and_then(|v| v.values().next_back()),
                v => held.and_then(|h| h.get(&v)),
            };
            match value {
                Some(v) => out.insert(name, v.clone()),
                None if held.is_some() => {
                    return Err(crate::ProviderError::InvalidSpec {
                        unit: spec.unit_id(),
                        problem: format!(
                            "secret `{name}` version {version} is no longer stored (the state store keeps the newest versions only), so this unit cannot be started with the value it ran with"
                        ),
                    });
                }
                None => {
                    return Err(crate::ProviderError::InvalidSpec {
                        unit: spec.unit_id(),
                        problem: format!("secret `{name}` was not resolved before the start"),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// A provider that hands every unit it starts the values of the secrets the unit uses, at the
/// versions its spec pins. Everything else goes straight to the inner provider.
pub struct WithSecrets {
    inner: Arc<dyn Provider>,
    values: SecretVersions,
}

impl WithSecrets {
    /// `inner`, starting units with `values`.
    pub fn new(inner: Arc<dyn Provider>, values: SecretVersions) -> Self {
        WithSecrets { inner, values }
    }
}

impl Provider for WithSecrets {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }
    fn endpoint_of(&self, site: &str, host: u32) -> String {
        self.inner.endpoint_of(site, host)
    }
    fn reaches(&self, endpoint: &str) -> bool {
        self.inner.reaches(endpoint)
    }
    fn resolve_image(&self, spec: &UnitSpec) -> Result<Option<String>> {
        self.inner.resolve_image(spec)
    }
    fn purge(&self, fleet: &str) -> Result<Vec<String>> {
        self.inner.purge(fleet)
    }
    fn start(&self, spec: &UnitSpec) -> Result<UnitStatus> {
        let values = self.values.for_spec(spec)?;
        self.inner.start_with_secrets(spec, &values)
    }
    fn start_with_secrets(&self, spec: &UnitSpec, secrets: &SecretValues) -> Result<UnitStatus> {
        self.inner.start_with_secrets(spec, secrets)
    }
    fn stop(&self, fleet: &str, unit_id: &str, grace: std::time::Duration) -> Result<()> {
        self.inner.stop(fleet, unit_id, grace)
    }
    fn list(&self, fleet: &str) -> Result<Vec<UnitStatus>> {
        self.inner.list(fleet)
    }
    fn probe(&self, unit: &UnitStatus, health: &crate::Health) -> crate::ProbeOutcome {
        self.inner.probe(unit, health)
    }
    fn snapshot(
        &self,
        fleet: &str,
        instance: &str,
        paths: &[String],
        tag: &str,
    ) -> Result<crate::Snapshot> {
        self.inner.snapshot(fleet, instance, paths, tag)
    }
    fn restore(&self, fleet: &str, instance: &str, tag: &str) -> Result<crate::Snapshot> {
        self.inner.restore(fleet, instance, tag)
    }
    fn log_paths(&self, fleet: &str, selector: &str) -> Result<Vec<PathBuf>> {
        self.inner.log_paths(fleet, selector)
    }
    fn output_tail(&self, unit: &UnitStatus, max_bytes: usize) -> Result<String> {
        self.inner.output_tail(unit, max_bytes)
    }
}

/// Writes `values` into `data_dir`'s secrets directory (0700), each file 0600, replacing what
/// was there: written to a temporary file first and renamed, so a unit never reads half a value.
///
/// # Errors
/// [`crate::ProviderError::Io`] naming the file (never the value).
pub fn write_files(data_dir: &Path, values: &SecretValues) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    if values.is_empty() {
        return Ok(());
    }
    let dir = data_dir.join(SECRETS_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| crate::ProviderError::io("create secrets dir", &dir, e))?;
    // An existing directory keeps its mode on create: tighten it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| crate::ProviderError::io("restrict secrets dir", &dir, e))?;
    for (name, value) in values.iter() {
        let path = secret_file(data_dir, name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| crate::ProviderError::io("write secret file", &tmp, e))?;
        f.write_all(value.expose().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| crate::ProviderError::io("write secret file", &tmp, e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| crate::ProviderError::io("write secret file", &path, e))?;
    }
    Ok(())
}

/// Reads the value of secret `name` from `data_dir` (as [`write_files`] left it).
pub fn read_file(data_dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(secret_file(data_dir, name)).ok()
}

/// The value of substitution variable `var` (`secret:NAME`: the value, read from the unit's
/// file; `secret_file:NAME`: the file's path) for a unit whose data dir is `data_dir`.
pub(crate) fn lookup(data_dir: &Path, var: &str) -> Option<String> {
    match phoenix_model::secret_ref::reference(var)? {
        (SecretUse::File, name) => Some(secret_file(data_dir, name).display().to_string()),
        (SecretUse::Value, name) => read_file(data_dir, name),
    }
}

/// [`crate::Vars::apply`], with `${secret:NAME}` taken from `values` rather than from the
/// unit's file: for providers whose data dir is not on this host (a container's volume).
///
/// # Errors
/// [`crate::ProviderError::InvalidSpec`] naming the first unknown variable (never a value).
pub fn apply_with_values(
    vars: &crate::Vars,
    values: &SecretValues,
    template: &str,
) -> Result<String> {
    phoenix_model::subst::substitute(template, |n| {
        match phoenix_model::secret_ref::reference(n) {
            Some((SecretUse::Value, name)) => values.get(name).map(|v| v.expose().to_string()),
            _ => vars.lookup(n),
        }
    })
    .map_err(|name| crate::ProviderError::InvalidSpec {
        unit: vars.instance.clone(),
        problem: match phoenix_model::secret_ref::reference(&name) {
            Some((_, s)) => format!("secret `{s}` was not handed to the provider"),
            None => format!("unknown substitution `${{{name}}}` in `{template}`"),
        },
    })
}

/// Why `var` could not be substituted, when it names a secret: its file is missing. Names the
/// file, never a value.
pub(crate) fn missing(data_dir: &Path, var: &str) -> Option<String> {
    let (_, name) = phoenix_model::secret_ref::reference(var)?;
    Some(format!(
        "secret `{name}` has no file in the data dir ({}): the unit was not started with its secrets",
        secret_file(data_dir, name).display()
    ))
}

/// Adds to `problems` every use of a secret in `spec` that is not among its
/// [`UnitSpec::secrets`], and every `${secret:NAME}` outside `env`.
pub(crate) fn check_uses(spec: &UnitSpec, problems: &mut Vec<String>) {
    let env: Vec<&str> = spec.env.values().map(String::as_str).collect();
    let mut others: Vec<&str> = spec.command.iter().map(String::as_str).collect();
    for c in spec.health.iter().flat_map(|h| &h.checks) {
        others.extend(c.templates());
    }
    for (in_env, t) in env
        .iter()
        .map(|t| (true, *t))
        .chain(others.iter().map(|t| (false, *t)))
    {
        for r in phoenix_model::subst::references(t) {
            let Some((usage, name)) = phoenix_model::secret_ref::reference(&r.name) else {
                continue;
            };
            if !spec.secrets.contains_key(name) {
                problems.push(format!("secret `{name}` is not among the unit's secrets"));
            } else if usage == SecretUse::Value && !in_env {
                problems.push(format!("`${{{}}}` outside `env`", r.name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn files_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = SecretValues::default();
        v.insert("db", SecretValue::new("one".into()));
        write_files(dir.path(), &v).unwrap();
        v.insert("db", SecretValue::new("two".into()));
        write_files(dir.path(), &v).unwrap();
        assert_eq!(read_file(dir.path(), "db").as_deref(), Some("two"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&secret_file(dir.path(), "db")), 0o600);
        assert_eq!(mode(&dir.path().join(SECRETS_DIR)), 0o700);
    }

    #[test]
    fn a_value_only_in_env_and_only_when_listed() {
        let mut spec = UnitSpec::new("f", "web", "web-0", 1)
            .with_command(["x", "${secret:a}", "${secret_file:a}"])
            .with_env("K", "${secret:b}");
        spec.secrets.insert("a".into(), 1);
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("`${secret:a}` outside `env`"), "{err}");
        assert!(err.contains("secret `b` is not among"), "{err}");
        assert!(!err.contains("secret_file:a"), "{err}");
        let v = crate::Vars::for_spec(&spec, Path::new("/d"), &BTreeMap::new());
        assert_eq!(v.apply("${secret_file:a}").unwrap(), "/d/.secrets/a");
        let err = v.apply("x${secret:a}").unwrap_err().to_string();
        assert!(err.contains("has no file in the data dir"), "{err}");
    }

    #[test]
    fn a_spec_gets_only_what_it_uses() {
        let mut all = SecretValues::default();
        all.insert("a", SecretValue::new("1".into()));
        all.insert("b", SecretValue::new("2".into()));
        let mut spec = UnitSpec::new("f", "web", "web-0", 1);
        spec.secrets.insert("b".into(), 3);
        let got = all.for_spec(&spec).unwrap();
        assert!(got.get("a").is_none());
        assert_eq!(got.get("b").unwrap().expose(), "2");
        spec.secrets.insert("c".into(), 1);
        let err = all.for_spec(&spec).unwrap_err().to_string();
        assert!(err.contains("secret `c`"), "{err}");
    }

    #[test]
    fn a_unit_gets_the_version_its_spec_pins() {
        let mut held = SecretVersions::default();
        held.insert("db", 1, SecretValue::new("old".into()));
        held.insert("db", 2, SecretValue::new("new".into()));
        let mut spec = UnitSpec::new("f", "web", "web-0", 1);
        for (pinned, want) in [(1, "old"), (2, "new"), (0, "new")] {
            spec.secrets.insert("db".into(), pinned);
            assert_eq!(
                held.for_spec(&spec).unwrap().get("db").unwrap().expose(),
                want
            );
        }
        spec.secrets.insert("db".into(), 7);
        let err = held.for_spec(&spec).unwrap_err().to_string();
        assert!(
            err.contains("secret `db` version 7 is no longer stored"),
            "{err}"
        );
        spec.secrets.clear();
        spec.secrets.insert("api".into(), 1);
        let err = held.for_spec(&spec).unwrap_err().to_string();
        assert!(err.contains("secret `api` was not resolved"), "{err}");
    }
}
