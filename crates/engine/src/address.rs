//! Addresses of other services' instances in a unit's templates (`${address:S:PORT}`,
//! `${addresses:S:PORT}`): which units a unit is bound to, and filling their addresses in.
//!
//! A unit is bound to *units* (`db-0@r3`), not to ports: a unit keeps its ports for its whole
//! life, so the ids say everything about the addresses, and they can be predicted before an
//! apply starts anything (a unit this apply starts is `db-0@r0`, "of the revision applied"),
//! which ports cannot. Whether a dependent must change is then a comparison of ids (see
//! ADR 009). Everything here is pure.

use phoenix_provider_api::{HealthCheck, UnitSpec, UnitStatus, parse_unit_id};
use phoenix_spec::subst::{ADDRESS_SEPARATOR, address_ref, references, substitute};
use std::collections::BTreeMap;

/// The services whose addresses `spec`'s templates use, each with whether every instance is
/// meant (`addresses:`) or only the first (`address:`).
pub fn uses(spec: &UnitSpec) -> BTreeMap<String, bool> {
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    for t in templates(spec) {
        for r in references(t) {
            if let Some(Ok(a)) = address_ref(&r.name) {
                let all = out.entry(a.service.to_string()).or_default();
                *all |= a.all;
            }
        }
    }
    out
}

fn templates(spec: &UnitSpec) -> Vec<&str> {
    let mut out: Vec<&str> = spec.command.iter().map(String::as_str).collect();
    out.extend(spec.env.values().map(String::as_str));
    out.extend(spec.reload.iter().map(String::as_str));
    for c in spec.health.iter().flat_map(|h| &h.checks) {
        out.extend(c.templates());
    }
    out
}

/// Rewrites every `${address:S}` / `${addresses:S}` without a port to name `S`'s first
/// declared port (`first_port(S)`), so that filling it in later needs only the units' ports.
pub fn with_explicit_ports(spec: &mut UnitSpec, first_port: impl Fn(&str) -> Option<String>) {
    let fix = |t: &str| -> String {
        let mut out = String::with_capacity(t.len());
        let mut last = 0;
        for r in references(t) {
            if let Some(Ok(a)) = address_ref(&r.name)
                && a.port.is_none()
                && let Some(p) = first_port(a.service)
            {
                let kind = if a.all { "addresses" } else { "address" };
                out.push_str(&t[last..r.offset]);
                out.push_str(&format!("${{{kind}:{}:{p}}}", a.service));
                last = r.offset + r.len;
            }
        }
        out.push_str(&t[last..]);
        out
    };
    map_templates(spec, fix);
}

/// Fills in `${spec_dir}` (a built-in the engine knows and providers do not).
pub fn with_spec_dir(spec: &mut UnitSpec, dir: &str) {
    map_templates(spec, |t| t.replace("${spec_dir}", dir));
}

fn map_templates(spec: &mut UnitSpec, f: impl Fn(&str) -> String) {
    for a in &mut spec.command {
        *a = f(a);
    }
    for v in spec.env.values_mut() {
        *v = f(v);
    }
    for a in &mut spec.reload {
        *a = f(a);
    }
    for c in spec.health.iter_mut().flat_map(|h| &mut h.checks) {
        // Every text `HealthCheck::templates` lists, rewritten in place.
        match c {
            HealthCheck::Http { url, .. } | HealthCheck::Metrics { url, .. } => *url = f(url),
            HealthCheck::Tcp { address } => *address = f(address),
            HealthCheck::Command { argv } => {
                for a in argv {
                    *a = f(a);
                }
            }
            HealthCheck::Json { url, expect } => {
                *url = f(url);
                for (_, v) in expect {
                    *v = f(v);
                }
            }
            HealthCheck::Ledger { api, .. } => *api = f(api),
        }
    }
}

/// `bindings` with `@r0` (the unit's own revision) written as `@r<revision>`, so that those of
/// a running unit compare with ids seen now.
pub fn normalized(
    bindings: &BTreeMap<String, Vec<String>>,
    revision: u64,
) -> BTreeMap<String, Vec<String>> {
    bindings
        .iter()
        .map(|(s, ids)| {
            let ids = ids
                .iter()
                .map(|id| match parse_unit_id(id) {
                    Some((inst, 0)) => phoenix_provider_api::unit_id(inst, revision),
                    _ => id.clone(),
                })
                .collect();
            (s.clone(), ids)
        })
        .collect()
}

/// An address reference of a unit that no running unit can fill in. Never worth retrying as
/// is: the units it is bound to have to run first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot fill in `${{{reference}}}` of {unit}: bound to {bound_to:?}, none of which runs with that port"
)]
pub struct Unfillable {
    /// The reference, as written between `${` and `}`.
    pub reference: String,
    /// The unit whose spec holds it.
    pub unit: String,
    /// The units it is bound to.
    pub bound_to: Vec<String>,
}

/// Fills in the address references of `spec` from the units it is bound to, as `live` (the
/// provider's list) reports their ports: `127.0.0.1:PORT` for each (every provider here
/// publishes named ports on the loopback or host address the engine reaches them at).
/// A bound unit that is gone stands in for the running unit of the same instance, if any (a
/// rollback restarts old units under new ids' feet); its address then is that unit's.
///
/// # Errors
/// [`Unfillable`]: a reference to a service the unit is not bound to, or whose bound instances
/// none runs, or without the port named.
pub fn render(spec: &UnitSpec, live: &[UnitStatus]) -> Result<UnitSpec, Unfillable> {
    if spec.bindings.is_empty() {
        return Ok(spec.clone());
    }
    let bound = normalized(&spec.bindings, spec.revision);
    let address_of = |id: &str, port: &str| -> Option<String> {
        let by_id = live
            .iter()
            .find(|u| u.unit_id == id && u.state.is_running());
        let instance = parse_unit_id(id).map(|(i, _)| i);
        let unit = by_id.or_else(|| {
            live.iter()
                .filter(|u| Some(u.instance.as_str()) == instance && u.state.is_running())
                .max_by_key(|u| u.revision)
        })?;
        unit.ports.get(port).map(|p| format!("127.0.0.1:{p}"))
    };
    let mut problem: Option<Unfillable> = None;
    let fill = |t: &str| -> String {
        // Only address references are filled in here; the rest stay for the provider.
        let r = substitute(t, |name| match address_ref(name) {
            Some(Ok(a)) => {
                let port = a.port?;
                let ids = bound.get(a.service)?;
                let ids: Vec<&String> = if a.all {
                    ids.iter().collect()
                } else {
                    ids.iter().take(1).collect()
                };
                let addrs: Option<Vec<String>> =
                    ids.iter().map(|id| address_of(id, port)).collect();
                addrs
                    .filter(|a| !a.is_empty())
                    .map(|a| a.join(ADDRESS_SEPARATOR))
            }
            _ => Some(format!("${{{name}}}")),
        });
        r.unwrap_or_else(|_| t.to_string())
    };
    // `substitute` stops at the first unknown name; find it for the message.
    for t in templates(spec) {
        if fill(t) == t
            && let Some(r) = references(t)
                .into_iter()
                .find(|r| matches!(address_ref(&r.name), Some(Ok(_))))
        {
            problem.get_or_insert_with(|| Unfillable {
                reference: r.name.clone(),
                unit: spec.unit_id(),
                bound_to: address_ref(&r.name)
                    .and_then(Result::ok)
                    .and_then(|a| bound.get(a.service))
                    .cloned()
                    .unwrap_or_default(),
            });
        }
    }
    if let Some(p) = problem {
        return Err(p);
    }
    let mut out = spec.clone();
    map_templates(&mut out, fill);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_provider_api::UnitState;
    use std::path::PathBuf;

    fn running(id: &str, port: u16) -> UnitStatus {
        let (instance, revision) = parse_unit_id(id).unwrap();
        UnitStatus {
            unit_id: id.into(),
            fleet: "f".into(),
            service: instance.rsplit_once('-').unwrap().0.into(),
            instance: instance.into(),
            revision,
            site: String::new(),
            state: UnitState::Running,
            pid: None,
            handle: None,
            ports: [("pg".to_string(), port)].into(),
            data_dir: PathBuf::new(),
            restarts: 0,
            logs: Vec::new(),
            detail: None,
        }
    }

    #[test]
    fn one_address_is_the_first_bound_unit_and_all_are_joined_in_order() {
        let mut spec = UnitSpec::new("f", "app", "app-0", 5).with_command([
            "app",
            "--db=${address:db}",
            "--all=${addresses:db}",
            "--port=${port}",
        ]);
        with_explicit_ports(&mut spec, |s| (s == "db").then(|| "pg".to_string()));
        assert_eq!(spec.command[1], "--db=${address:db:pg}");
        assert_eq!(uses(&spec), [("db".to_string(), true)].into());
        spec.bindings
            .insert("db".into(), vec!["db-0@r0".into(), "db-1@r3".into()]);
        let live = [running("db-1@r3", 5001), running("db-0@r5", 5000)];
        let out = render(&spec, &live).unwrap();
        assert_eq!(out.command[1], "--db=127.0.0.1:5000");
        assert_eq!(out.command[2], "--all=127.0.0.1:5000,127.0.0.1:5001");
        assert_eq!(out.command[3], "--port=${port}", "left for the provider");
    }

    #[test]
    fn a_bound_unit_that_is_gone_stands_for_its_instance_else_it_is_an_error() {
        let mut spec = UnitSpec::new("f", "app", "app-0", 5).with_command(["${address:db:pg}"]);
        spec.bindings.insert("db".into(), vec!["db-0@r4".into()]);
        let out = render(&spec, &[running("db-0@r3", 7000)]).unwrap();
        assert_eq!(out.command[0], "127.0.0.1:7000");
        let err = render(&spec, &[]).unwrap_err();
        assert_eq!(
            err,
            Unfillable {
                reference: "address:db:pg".into(),
                unit: "app-0@r5".into(),
                bound_to: vec!["db-0@r4".into()],
            }
        );
        assert!(err.to_string().contains("${address:db:pg}"), "{err}");
    }

    #[test]
    fn own_revision_ids_normalize_to_the_units_revision() {
        let b: BTreeMap<String, Vec<String>> = [(
            "db".to_string(),
            vec!["db-0@r0".to_string(), "db-1@r2".to_string()],
        )]
        .into();
        assert_eq!(normalized(&b, 7)["db"], vec!["db-0@r7", "db-1@r2"]);
    }
}
