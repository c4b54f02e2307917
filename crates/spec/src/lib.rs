//! The Phoenix fleet spec (format 1): the model, YAML parsing with exact source locations,
//! validation that reports every problem at once, environment overlays and a JSON Schema.
//!
//! ```
//! let yaml = "phoenix: 1\nname: demo\nsites: [{name: core-1, tier: core, capacity: {cpu: 4, memory: 8Gi, storage: 100G}}]\nservices: [{name: web, resources: {cpu: 500m}}]\n";
//! let fleet = phoenix_spec::parse_sources(&[("demo.yaml".into(), yaml.into())], None).unwrap();
//! assert_eq!(fleet.services[0].resources.cpu.min, 500);
//! ```
//!
//! Architecture Invariant: this crate does no I/O beyond reading the files it is given.

pub mod diag;
pub mod model;
mod parse;
pub mod quantity;
pub mod schema;
pub mod secrets;
pub mod text;
mod validate;
mod yaml;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use model::*;
pub use parse::MAX_SITES;
/// `${...}` substitutions (in `phoenix-model`, shared with the providers).
pub use phoenix_model::subst;
pub use quantity::Range;
pub use validate::{MAX_HOSTS, MAX_INSTANCES};
pub use yaml::{MAX_ALIAS_BYTES, MAX_ALIAS_NODES, MAX_ALIASES, MAX_DEPTH};

use std::path::Path;

/// Reads and validates spec files; later files extend earlier ones. `env` selects an
/// environment overlay.
///
/// # Errors
/// Every problem found, each located; an unreadable file is a diagnostic too.
pub fn load_files<P: AsRef<Path>>(paths: &[P], env: Option<&str>) -> Result<Fleet, Diagnostics> {
    let mut sources = Vec::new();
    let mut read_errors = Vec::new();
    for p in paths {
        let name = p.as_ref().display().to_string();
        match std::fs::read_to_string(p.as_ref()) {
            Ok(text) => sources.push((name, text)),
            Err(e) => {
                read_errors.push(Diagnostic::error(
                    "unreadable-file",
                    format!("cannot read `{name}`: {e}"),
                    None,
                ));
                sources.push((name, String::new()));
            }
        }
    }
    if !read_errors.is_empty() {
        return Err(Diagnostics {
            items: read_errors,
            sources,
        });
    }
    parse_sources(&sources, env)
}

/// Parses and validates in-memory sources `(file name, text)`.
///
/// Every environment overlay the files define is validated too, not only `env`: each is
/// merged onto the base files and checked like the fleet itself, and its problems are reported
/// with the environment's name, so a broken overlay is found before anyone selects it.
///
/// # Errors
/// Every problem found, each located.
pub fn parse_sources(
    sources: &[(String, String)],
    env: Option<&str>,
) -> Result<Fleet, Diagnostics> {
    let mut diags = Vec::new();
    let collected = parse::collect(sources, &mut diags);
    let fleet = collected
        .as_ref()
        .and_then(|c| parse::build(c, sources, env, &mut diags))
        .and_then(|(f, map)| validate::validate(f, &map, &mut diags));
    if let Some(c) = &collected {
        let others: Vec<&str> = c.environment_names().filter(|e| Some(*e) != env).collect();
        for other in others {
            let mut found = Vec::new();
            if let Some((f, map)) = parse::build(c, sources, Some(other), &mut found) {
                validate::validate(f, &map, &mut found);
            }
            add_environment_diagnostics(&mut diags, found, other);
        }
    }
    diags.sort_by(|a, b| {
        let ka = a.location.as_ref().map(|l| (l.file, l.line, l.col));
        let kb = b.location.as_ref().map(|l| (l.file, l.line, l.col));
        ka.cmp(&kb)
    });
    let has_errors = diags.iter().any(|d| d.severity == Severity::Error);
    match fleet {
        Some(f) if !has_errors => Ok(f),
        _ => Err(Diagnostics {
            items: diags,
            sources: sources.to_vec(),
        }),
    }
}

/// Adds the problems found with environment `env` applied that are not already reported for
/// the fleet itself (a problem of the base files shows up in every environment), each naming
/// the environment.
fn add_environment_diagnostics(diags: &mut Vec<Diagnostic>, found: Vec<Diagnostic>, env: &str) {
    use std::collections::HashSet;
    let known: HashSet<(&str, &str, Option<&model::Location>)> = diags
        .iter()
        .map(|d| (d.code, d.message.as_str(), d.location.as_ref()))
        .collect();
    let named = format!("environment `{env}`");
    let new: Vec<Diagnostic> = found
        .into_iter()
        .filter(|d| !known.contains(&(d.code, d.message.as_str(), d.location.as_ref())))
        .map(|mut d| {
            if !d.message.contains(&named) {
                d.message = format!("{} (with {named})", d.message);
            }
            d
        })
        .collect();
    diags.extend(new);
}
