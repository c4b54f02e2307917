//! Diagnostics: every problem in a spec, located, explained, with a hint.

use crate::model::Location;
use serde::Serialize;
use std::fmt::Write as _;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The spec cannot be used.
    Error,
    /// Usable, but probably not what was meant.
    Warning,
}

/// One problem found in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Severity.
    pub severity: Severity,
    /// Stable machine-readable code, e.g. `unknown-field`, `cycle`, `bad-quantity`.
    pub code: &'static str,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where, when the problem has a place in a file.
    pub location: Option<Location>,
    /// How to fix it ("did you mean `replicas`?").
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at a location.
    pub fn error(
        code: &'static str,
        message: impl Into<String>,
        location: Option<Location>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            location,
            hint: None,
        }
    }
    /// A warning at a location.
    pub fn warning(
        code: &'static str,
        message: impl Into<String>,
        location: Option<Location>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            code,
            message: message.into(),
            location,
            hint: None,
        }
    }
    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every diagnostic of a failed load, with the sources they point into.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} error(s) in the fleet spec", self.error_count())]
pub struct Diagnostics {
    /// The diagnostics, sorted by file, line and column.
    pub items: Vec<Diagnostic>,
    /// `(file name, text)` of each source, indexed by [`Location::file`].
    pub sources: Vec<(String, String)>,
}

impl Diagnostics {
    /// Number of errors (warnings excluded).
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// `FILE:LINE:COL` of a location.
    pub fn position(&self, loc: &Location) -> String {
        let file = self
            .sources
            .get(loc.file)
            .map(|s| s.0.as_str())
            .unwrap_or("<input>");
        format!("{file}:{}:{}", loc.line, loc.col)
    }

    /// Renders every diagnostic the way rustc does: header, `--> FILE:LINE:COL`, the source
    /// line with the span underlined, and the hint.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.items {
            render_one(&mut out, d, &self.sources);
        }
        let errors = self.error_count();
        let warnings = self.items.len() - errors;
        let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
        out
    }
}

fn render_one(out: &mut String, d: &Diagnostic, sources: &[(String, String)]) {
    let sev = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    match &d.location {
        Some(loc) => {
            let (file, text) = sources
                .get(loc.file)
                .map(|(f, t)| (f.as_str(), t.as_str()))
                .unwrap_or(("<input>", ""));
            let _ = writeln!(
                out,
                "{file}:{}:{}: {sev}[{}]: {}",
                loc.line, loc.col, d.code, d.message
            );
            if let Some(line_text) = text.lines().nth(loc.line.saturating_sub(1)) {
                let gutter = loc.line.to_string().len();
                let _ = writeln!(out, "{:gutter$} |", "");
                let _ = writeln!(out, "{} | {}", loc.line, line_text);
                let start = loc.col.saturating_sub(1);
                let visible = line_text.chars().count().saturating_sub(start).max(1);
                let width = loc.len.clamp(1, visible);
                let _ = writeln!(
                    out,
                    "{:gutter$} | {}{}",
                    "",
                    " ".repeat(start),
                    "^".repeat(width)
                );
            }
        }
        None => {
            let _ = writeln!(out, "{sev}[{}]: {}", d.code, d.message);
        }
    }
    if let Some(h) = &d.hint {
        let _ = writeln!(out, "  = help: {h}");
    }
    out.push('\n');
}

/// The closest candidate to `word` by edit distance, if close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let seen: Vec<&'a str> = candidates.into_iter().collect();
    let mut best: Option<(usize, &str)> = None;
    for &c in &seen {
        let d = edit_distance(word, c);
        let limit = (word.len().max(c.len()) / 3).max(1) + usize::from(word.len() > 6);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c).or_else(|| {
        // An abbreviation (`prod` for `production`) is a likely slip too, when it is unambiguous.
        let mut prefixed = candidates_prefixed(word, &seen);
        if prefixed.len() == 1 {
            prefixed.pop()
        } else {
            None
        }
    })
}

fn candidates_prefixed<'a>(word: &str, candidates: &[&'a str]) -> Vec<&'a str> {
    if word.len() < 3 {
        return Vec::new();
    }
    candidates
        .iter()
        .copied()
        .filter(|c| c.starts_with(word) && c.len() > word.len())
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    let mut prev2 = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            // An adjacent transposition (`prot` for `port`) is one typo, not two.
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        prev2.clone_from(&prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("replica", ["replicas", "resources", "role"]),
            Some("replicas")
        );
        assert_eq!(
            did_you_mean("dependson", ["depends_on", "description"]),
            Some("depends_on")
        );
        assert_eq!(did_you_mean("zzzz", ["replicas", "role"]), None);
        assert_eq!(
            did_you_mean("prod", ["production", "staging"]),
            Some("production")
        );
        assert_eq!(did_you_mean("rep", ["replicas", "replica-set"]), None);
    }
}
