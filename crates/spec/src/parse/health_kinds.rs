//! The health-check kinds that go beyond the contract's `http`, `tcp` and `command` (extensions,
//! documented in `docs/spec-extensions.md`): `json` (a JSON document holding expected values),
//! `metrics` (a Prometheus exposition with enough metric families) and `ledger` (a ledger node
//! that is synced and taking part).

use super::{D, Fields, check_subst, string, time_ms, uint};
use crate::diag::Diagnostic;
use crate::model::HealthCheck;
use crate::yaml::Node;

/// The health keys this module reads.
pub(super) const KEYS: [&str; 3] = ["json", "metrics", "ledger"];

const JSON_KEYS: &[&str] = &["url", "expect"];
const METRICS_KEYS: &[&str] = &["url", "min_families"];
const LEDGER_KEYS: &[&str] = &["api", "min_peers", "max_lag", "advance_within"];

/// The default of `ledger.advance_within`: comfortably more than a testnet's idle block interval
/// (1 s), so that an idle but healthy network still shows a new block within one probe.
const ADVANCE_WITHIN_MS: u64 = 3_000;
/// The longest `advance_within`: one probe attempt must stay short enough to be interrupted.
const MAX_ADVANCE_WITHIN_MS: u64 = 60_000;

/// Reads `json`, `metrics` and `ledger` from the health block `f` and pushes their checks.
pub(super) fn extra_checks(
    f: &Fields<'_>,
    what: &str,
    ports: &[String],
    checks: &mut Vec<HealthCheck>,
    d: &mut D,
) {
    if let Some(v) = f.get("json") {
        // One document or a list of them (e.g. `/health` and `/api/info`).
        match v.seq() {
            Some(items) => {
                for i in items {
                    checks.extend(json_check(i, what, ports, d));
                }
            }
            None => checks.extend(json_check(v, what, ports, d)),
        }
    }
    if let Some(v) = f.get("metrics") {
        checks.extend(metrics_check(v, what, ports, d));
    }
    if let Some(v) = f.get("ledger") {
        checks.extend(ledger_check(v, what, ports, d));
    }
}

fn http_url(n: &Node, key: &str, what: &str, ports: &[String], d: &mut D) -> Option<String> {
    let url = string(n, &format!("`health.{key}`"), d)?;
    check_subst(n, &url, ports, &format!("`health.{key}` of {what}"), d);
    if !url.starts_with("http://") {
        d.push(
            Diagnostic::error(
                "bad-value",
                format!("`{url}` is not an http:// URL"),
                Some(n.loc.clone()),
            )
            .with_hint(
                "probes speak plain HTTP from this host, e.g. `http://127.0.0.1:${port}/health`",
            ),
        );
        return None;
    }
    Some(url)
}

fn json_check(n: &Node, what: &str, ports: &[String], d: &mut D) -> Option<HealthCheck> {
    let f = Fields::new(n, format!("`health.json` of {what}"), JSON_KEYS, d)?;
    let url = http_url(f.required("url", d)?, "json.url", what, ports, d);
    let expect_node = f.required("expect", d)?;
    let Some(entries) = expect_node.map() else {
        d.push(
            Diagnostic::error(
                "wrong-type",
                format!(
                    "expected a mapping of path to value for `health.json.expect` of {what}, found {}",
                    expect_node.describe()
                ),
                Some(expect_node.loc.clone()),
            )
            .with_hint("e.g. `expect: {status: Healthy, version: \"1.4.2\"}`"),
        );
        return None;
    };
    let mut expect = Vec::new();
    for (k, v) in entries {
        let Some(path) = k.scalar() else {
            d.push(Diagnostic::error(
                "wrong-type",
                "a path in `health.json.expect` must be text",
                Some(k.loc.clone()),
            ));
            continue;
        };
        if path.is_empty() || path.split('.').any(str::is_empty) {
            d.push(
                Diagnostic::error(
                    "bad-value",
                    format!("`{path}` is not a path into a JSON document"),
                    Some(k.loc.clone()),
                )
                .with_hint("name fields with dots, e.g. `status` or `build.version`"),
            );
            continue;
        }
        let Some(value) = v.scalar() else {
            d.push(
                Diagnostic::error(
                    "wrong-type",
                    format!(
                        "the expected value of `{path}` must be text, a number or a boolean, found {}",
                        v.describe()
                    ),
                    Some(v.loc.clone()),
                )
                .with_hint("a check compares one value; write one entry per field"),
            );
            continue;
        };
        check_subst(
            v,
            value,
            ports,
            &format!("`health.json.expect` of {what}"),
            d,
        );
        expect.push((path.to_string(), value.to_string()));
    }
    if entries.is_empty() {
        d.push(
            Diagnostic::error(
                "missing-field",
                format!("`health.json.expect` of {what} expects nothing"),
                Some(expect_node.loc.clone()),
            )
            .with_hint("name at least one field, e.g. `expect: {status: Healthy}`"),
        );
        return None;
    }
    Some(HealthCheck::Json { url: url?, expect })
}

fn metrics_check(n: &Node, what: &str, ports: &[String], d: &mut D) -> Option<HealthCheck> {
    // `metrics: URL` is the short form: at least one family.
    if n.scalar().is_some() {
        let url = http_url(n, "metrics", what, ports, d)?;
        return Some(HealthCheck::Metrics {
            url,
            min_families: 1,
        });
    }
    let f = Fields::new(n, format!("`health.metrics` of {what}"), METRICS_KEYS, d)?;
    let url = http_url(f.required("url", d)?, "metrics.url", what, ports, d);
    let min_families = match f.get("min_families") {
        Some(v) => uint(v, "`health.metrics.min_families`", d)?,
        None => 1,
    };
    Some(HealthCheck::Metrics {
        url: url?,
        min_families,
    })
}

fn ledger_check(n: &Node, what: &str, ports: &[String], d: &mut D) -> Option<HealthCheck> {
    let f = Fields::new(n, format!("`health.ledger` of {what}"), LEDGER_KEYS, d)?;
    let api = http_url(f.required("api", d)?, "ledger.api", what, ports, d);
    let min_peers = match f.get("min_peers") {
        Some(v) => uint(v, "`health.ledger.min_peers`", d),
        None => Some(0),
    };
    let max_lag = match f.get("max_lag") {
        Some(v) => uint(v, "`health.ledger.max_lag`", d).map(u64::from),
        None => Some(10),
    };
    let advance_within_ms = match f.get("advance_within") {
        Some(v) => match time_ms(v, "`health.ledger.advance_within`", d) {
            Some(ms) if (1..=MAX_ADVANCE_WITHIN_MS).contains(&ms) => Some(ms),
            Some(_) => {
                d.push(
                    Diagnostic::error(
                        "bad-value",
                        "`health.ledger.advance_within` must be more than 0 and at most 60s",
                        Some(v.loc.clone()),
                    )
                    .with_hint("a few block intervals, e.g. `advance_within: 3s`"),
                );
                None
            }
            None => None,
        },
        None => Some(ADVANCE_WITHIN_MS),
    };
    Some(HealthCheck::Ledger {
        api: api?,
        min_peers: min_peers?,
        max_lag: max_lag?,
        advance_within_ms: advance_within_ms?,
    })
}
