//! Findings: what the planner has to say about a fleet, each with a stable code.

use serde::Serialize;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The plan cannot be carried out as written, or would be unsafe.
    Error,
    /// Carried out as written it works, but something is probably not what was meant.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// Lower-case name, as in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// The stable finding codes. Tools match on these; messages may change.
pub mod code {
    /// Error: instances of a service cannot be placed; the message names the constraint that
    /// made it impossible (tier, site list, site phase, instance size, exhausted capacity).
    pub const UNPLACEABLE: &str = "unplaceable";
    /// Error: demand exceeds capacity (memory or storage at all, CPU beyond the overcommit
    /// ratio), with the amount and the place (fleet, site, host).
    pub const OVER_CAPACITY: &str = "over-capacity";
    /// Warning: CPU demand exceeds capacity but stays within `policy.cpu_overcommit`.
    pub const CPU_OVERCOMMIT: &str = "cpu-overcommit";
    /// Error: a validator set tolerates no fault (n < 4), or losing one site (or host, when
    /// spread by host) loses more than f = floor((n-1)/3) validators.
    pub const BFT_UNSAFE: &str = "bft-unsafe";
    /// Warning: a stated budget (project or fleet) differs from the computed demand by more
    /// than 1%.
    pub const BUDGET_MISMATCH: &str = "budget-mismatch";
    /// Warning: a spread service could not be spread evenly (per-domain counts differ by more
    /// than one) because some sites or hosts ran out of room.
    pub const SPREAD_UNEVEN: &str = "spread-uneven";
    /// Warning: a spread service whose instances all share one failure domain (site, or host
    /// when spread by host), so losing that one loses the whole service: there are fewer
    /// eligible domains than instances, or the others have no room. The message says how many
    /// domains one instance each would need and how many instances share.
    pub const SPREAD_UNMET: &str = "spread-unmet";
    /// Info: a service is disabled (`enabled: false`): planned and counted, not deployed.
    pub const SERVICE_DISABLED: &str = "service-disabled";
    /// Error: the dependency graph (services and projects together) has a cycle. The spec
    /// validator rejects cycles, so this only appears for fleets built in code.
    pub const DEPENDENCY_CYCLE: &str = "dependency-cycle";
    /// Error: `hosted_on` forms a cycle, so demand has no project to be counted under.
    /// The spec validator rejects this too.
    pub const HOSTED_ON_CYCLE: &str = "hosted-on-cycle";

    /// Every code with its severity and meaning, for documentation and renderers.
    pub const ALL: &[(&str, &str)] = &[
        (
            UNPLACEABLE,
            "instances that cannot be placed, and the constraint that prevents it",
        ),
        (
            OVER_CAPACITY,
            "demand above capacity (CPU: above the overcommit ratio), by how much and where",
        ),
        (
            CPU_OVERCOMMIT,
            "CPU above capacity but within the overcommit ratio",
        ),
        (
            BFT_UNSAFE,
            "a validator set with n < 4, or that loses more than f validators with one site or host",
        ),
        (
            BUDGET_MISMATCH,
            "a stated budget differs from the computed demand by more than 1%",
        ),
        (
            SPREAD_UNEVEN,
            "a spread service whose instances could not be spread evenly",
        ),
        (
            SPREAD_UNMET,
            "a spread service whose instances all land on one site (or host)",
        ),
        (
            SERVICE_DISABLED,
            "a service planned and counted but not deployed (enabled: false)",
        ),
        (
            DEPENDENCY_CYCLE,
            "a cycle through service and project dependencies",
        ),
        (HOSTED_ON_CYCLE, "a cycle through hosted_on"),
    ];
}

/// One thing the planner found, with what it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// Stable code, one of [`code`].
    pub code: &'static str,
    /// What, where and by how much, in one or two sentences.
    pub message: String,
    /// The project it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The service it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The site it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The host (index within the site) it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<u32>,
    /// Where in the spec files the subject is declared, `FILE:LINE:COL`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

impl Finding {
    /// A finding about nothing in particular (the whole fleet).
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        Finding {
            severity,
            code,
            message: message.into(),
            project: None,
            service: None,
            site: None,
            host: None,
            at: None,
        }
    }

    /// About this project.
    pub fn project(mut self, name: &str) -> Self {
        self.project = Some(name.to_string());
        self
    }

    /// About this service.
    pub fn service(mut self, name: &str) -> Self {
        self.service = Some(name.to_string());
        self
    }

    /// About this site.
    pub fn site(mut self, name: &str) -> Self {
        self.site = Some(name.to_string());
        self
    }

    /// About this host of the site.
    pub fn host(mut self, index: u32) -> Self {
        self.host = Some(index);
        self
    }

    /// The deterministic order of findings: most severe first, then by code, then by subject,
    /// then by message.
    fn sort_key(&self) -> impl Ord + '_ {
        (
            self.severity,
            self.code,
            &self.project,
            &self.service,
            &self.site,
            self.host,
            &self.message,
        )
    }
}

/// Sorts findings into their deterministic order and drops exact duplicates.
pub(crate) fn sort(findings: &mut Vec<Finding>) {
    findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    findings.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_errors_first_then_by_code_and_subject() {
        let mut f = vec![
            Finding::new(Severity::Info, code::SERVICE_DISABLED, "x").service("b"),
            Finding::new(Severity::Error, code::UNPLACEABLE, "y").service("b"),
            Finding::new(Severity::Error, code::BFT_UNSAFE, "z").service("a"),
            Finding::new(Severity::Error, code::UNPLACEABLE, "y").service("a"),
            Finding::new(Severity::Error, code::UNPLACEABLE, "y").service("a"),
        ];
        sort(&mut f);
        let got: Vec<_> = f
            .iter()
            .map(|f| (f.code, f.service.as_deref().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (code::BFT_UNSAFE, "a"),
                (code::UNPLACEABLE, "a"),
                (code::UNPLACEABLE, "b"),
                (code::SERVICE_DISABLED, "b")
            ]
        );
    }

    #[test]
    fn serialises_contract_fields_and_skips_empty_subjects() {
        let f = Finding::new(Severity::Warning, code::BUDGET_MISMATCH, "m").project("p");
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"severity": "warning", "code": "budget-mismatch", "message": "m", "project": "p"})
        );
    }
}
