//! How a `${...}` substitution names a secret: `${secret:NAME}` (the value) and
//! `${secret_file:NAME}` (the path of a mode-0600 file holding it).

/// How a substitution uses a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretUse {
    /// `${secret:NAME}`: the value itself; only in `env` (an argv is readable by every user of
    /// the host through `/proc/PID/cmdline`).
    Value,
    /// `${secret_file:NAME}`: the path of a mode-0600 file in the data dir holding the value.
    File,
}

/// Prefix of a value substitution.
pub const VALUE_PREFIX: &str = "secret:";
/// Prefix of a file substitution.
pub const FILE_PREFIX: &str = "secret_file:";

/// Whether the substitution variable `var` (the text between `${` and `}`) refers to a secret,
/// and to which.
pub fn reference(var: &str) -> Option<(SecretUse, &str)> {
    if let Some(n) = var.strip_prefix(VALUE_PREFIX) {
        Some((SecretUse::Value, n))
    } else {
        var.strip_prefix(FILE_PREFIX).map(|n| (SecretUse::File, n))
    }
}

/// Every secret named by a substitution in `templates`, sorted and once each.
pub fn referenced<'a>(templates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = templates
        .into_iter()
        .flat_map(crate::subst::references)
        .filter_map(|r| reference(&r.name).map(|(_, n)| n.to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
}
