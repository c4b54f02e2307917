//! Parsing `secrets:` (the model is `crate::secrets`): one entry per secret, with exactly one
//! of `generate`, `from_file`, `from_env`.

use super::{D, Fields, name, string, uint};
use crate::diag::{Diagnostic, did_you_mean};
use crate::secrets::{
    Alphabet, DEFAULT_GENERATED_LENGTH, MAX_GENERATED_LENGTH, MIN_GENERATED_LENGTH, Secret,
    SecretSource,
};
use crate::yaml::{Node, NodeKind};

const SECRET_KEYS: &[&str] = &["name", "description", "generate", "from_file", "from_env"];
const SOURCES: [&str; 3] = ["generate", "from_file", "from_env"];

/// Whether substitution variable `var` (written in `what`, at `n`) names a secret, reporting
/// a value (`${secret:NAME}`) anywhere but `env`: an argv or a probe's URL is readable by every
/// user of the host, and is logged. The name itself is checked against `secrets:` by
/// `validate`.
pub(super) fn check_use(n: &Node, var: &str, what: &str, d: &mut D) -> bool {
    let Some((usage, name)) = crate::secrets::reference(var) else {
        return false;
    };
    // `check_subst` names env entries `` `env.KEY` of ... ``.
    if usage == crate::secrets::SecretUse::Value && !what.starts_with("`env.") {
        d.push(
            Diagnostic::error(
                "secret-outside-env",
                format!("`${{{var}}}` in {what}: a secret's value may only be put in `env`"),
                Some(n.loc.clone()),
            )
            .with_hint(format!(
                "pass it in `env`, or use `${{secret_file:{name}}}`, the path of a file holding it"
            )),
        );
    }
    true
}

/// `base` (a `secrets:` entry) without its source keys when `overlay` (an environment's change
/// to it) gives a source of its own, so that the merge holds the overlay's source alone.
pub(super) fn without_source_if_given(base: &Node, overlay: &Node) -> Node {
    let gives_source = SOURCES.iter().any(|k| overlay.get(k).is_some());
    match (&base.kind, gives_source) {
        (NodeKind::Map(entries), true) => Node {
            kind: NodeKind::Map(
                entries
                    .iter()
                    .filter(|(k, _)| !k.scalar().is_some_and(|k| SOURCES.contains(&k)))
                    .cloned()
                    .collect(),
            ),
            loc: base.loc.clone(),
        },
        _ => base.clone(),
    }
}

/// One `secrets:` entry, every problem reported.
pub(super) fn secret(n: &Node, d: &mut D) -> Option<Secret> {
    let f = Fields::new(n, "a secret", SECRET_KEYS, d)?;
    let name = f.required("name", d).and_then(|v| name(v, "a secret", d));
    let what = match &name {
        Some(s) => format!("secret `{s}`"),
        None => "a secret".into(),
    };
    let description = f
        .get("description")
        .and_then(|v| string(v, "`description`", d));
    let given: Vec<(&str, &Node)> = SOURCES
        .iter()
        .filter_map(|k| f.get(k).map(|v| (*k, v)))
        .collect();
    let source = match given.as_slice() {
        [] => {
            d.push(
                Diagnostic::error(
                    "missing-field",
                    format!("{what} says neither `generate`, `from_file` nor `from_env`"),
                    Some(n.loc.clone()),
                )
                .with_hint("e.g. `generate: {length: 32}`, `from_file: ./db.pass` or `from_env: DB_PASSWORD`"),
            );
            None
        }
        [(key, v)] => source(key, v, &what, d),
        [_, (second, v), ..] => {
            d.push(
                Diagnostic::error(
                    "conflicting-fields",
                    format!("{what} gives more than one source (`{second}` as well)"),
                    Some(v.loc.clone()),
                )
                .with_hint("keep one of `generate`, `from_file`, `from_env`"),
            );
            None
        }
    };
    Some(Secret {
        name: name?,
        description,
        source: source?,
        location: n.loc.clone(),
    })
}

fn source(key: &str, v: &Node, what: &str, d: &mut D) -> Option<SecretSource> {
    match key {
        "from_file" => {
            let path = string(v, &format!("`from_file` of {what}"), d)?;
            if path.is_empty() {
                d.push(Diagnostic::error(
                    "bad-value",
                    format!("`from_file` of {what} is empty"),
                    Some(v.loc.clone()),
                ));
                return None;
            }
            Some(SecretSource::File {
                path,
                file: v.loc.file,
            })
        }
        "from_env" => {
            let var = string(v, &format!("`from_env` of {what}"), d)?;
            let ok = !var.is_empty()
                && !var.starts_with(|c: char| c.is_ascii_digit())
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                d.push(
                    Diagnostic::error(
                        "bad-value",
                        format!("`{var}` is not an environment variable name ({what})"),
                        Some(v.loc.clone()),
                    )
                    .with_hint("letters, digits and `_`, not starting with a digit"),
                );
                return None;
            }
            Some(SecretSource::Env { var })
        }
        _ => generate(v, what, d),
    }
}

fn generate(v: &Node, what: &str, d: &mut D) -> Option<SecretSource> {
    let what = format!("`generate` of {what}");
    // `generate: {}` and `generate: true` both mean the defaults.
    if v.scalar() == Some("true") {
        return Some(SecretSource::Generate {
            length: DEFAULT_GENERATED_LENGTH,
            alphabet: Alphabet::default(),
        });
    }
    let f = Fields::new(v, what.clone(), &["length", "alphabet"], d)?;
    let mut length = DEFAULT_GENERATED_LENGTH;
    if let Some(l) = f.get("length") {
        let n = uint(l, &format!("`length` of {what}"), d)?;
        if !(MIN_GENERATED_LENGTH..=MAX_GENERATED_LENGTH).contains(&n) {
            d.push(
                Diagnostic::error(
                    "bad-value",
                    format!("`length` {n} of {what} is out of range"),
                    Some(l.loc.clone()),
                )
                .with_hint(format!(
                    "between {MIN_GENERATED_LENGTH} and {MAX_GENERATED_LENGTH} characters"
                )),
            );
            return None;
        }
        length = n;
    }
    let mut alphabet = Alphabet::default();
    if let Some(a) = f.get("alphabet") {
        let s = string(a, &format!("`alphabet` of {what}"), d)?;
        match Alphabet::parse(&s) {
            Some(x) => alphabet = x,
            None => {
                let hint = match did_you_mean(&s, Alphabet::NAMES) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => format!("one of {}", Alphabet::NAMES.join(", ")),
                };
                d.push(
                    Diagnostic::error(
                        "bad-value",
                        format!("unknown alphabet `{s}` in {what}"),
                        Some(a.loc.clone()),
                    )
                    .with_hint(hint),
                );
                return None;
            }
        }
    }
    Some(SecretSource::Generate { length, alphabet })
}
