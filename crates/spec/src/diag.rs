//! Diagnostics: every problem in a spec, located, explained, with a hint.

use crate::model::Location;
use crate::text::count;
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
#[error("{} in the fleet spec", crate::text::count(self.error_count(), "error"))]
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
        let _ = writeln!(
            out,
            "{}, {}",
            count(errors, "error"),
            count(warnings, "warning")
        );
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
                let width = marked_chars(loc, line_text);
                let (shown, caret_at, carets) =
                    excerpt(line_text, loc.col.saturating_sub(1), width);
                let _ = writeln!(out, "{:gutter$} |", "");
                let _ = writeln!(out, "{} | {}", loc.line, shown);
                let _ = writeln!(
                    out,
                    "{:gutter$} | {}{}",
                    "",
                    " ".repeat(caret_at),
                    "^".repeat(carets)
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

/// Longest source line a diagnostic shows, in characters; longer lines are cut to a window
/// around the column, with `…` where text was left out. A 20 KB line (10,000 nested `- `) must
/// not be repeated whole under every error.
pub const MAX_EXCERPT: usize = 120;

/// Characters of context shown before the marked column when a line is cut.
const EXCERPT_BEFORE: usize = 40;

/// How many characters the location marks on its line (at least 1): its length, cut at the
/// end of the line.
fn marked_chars(loc: &Location, line_text: &str) -> usize {
    let rest = line_text
        .chars()
        .count()
        .saturating_sub(loc.col.saturating_sub(1));
    loc.len.min(rest).max(1)
}

/// The part of `line` to show for a mark of `width` characters starting at character `col0`
/// (0-based), with the caret's column in the shown text and the number of carets: the whole
/// line when it is at most [`MAX_EXCERPT`] characters, else a window of that many characters
/// around the mark, `…` marking each cut.
fn excerpt(line: &str, col0: usize, width: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= MAX_EXCERPT {
        return (line.to_string(), col0, width);
    }
    let start = col0.saturating_sub(EXCERPT_BEFORE).min(chars.len());
    let end = (start + MAX_EXCERPT).min(chars.len());
    let mut shown = String::new();
    let mut caret_at = col0 - start;
    if start > 0 {
        shown.push('…');
        caret_at += 1;
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    let carets = width.min(end.saturating_sub(col0)).max(1);
    (shown, caret_at, carets)
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

    fn render_at(text: &str, line: usize, col: usize, len: usize) -> String {
        let offset: usize = text
            .lines()
            .take(line - 1)
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + col
            - 1;
        let d = Diagnostics {
            items: vec![Diagnostic::error(
                "yaml-too-deep",
                "too deep",
                Some(Location {
                    file: 0,
                    line,
                    col,
                    offset,
                    len,
                }),
            )],
            sources: vec![("f.yaml".into(), text.into())],
        };
        d.render()
    }

    /// The source line and the caret line of a rendered diagnostic, gutters removed.
    fn snippet(rendered: &str) -> (String, String) {
        let lines: Vec<&str> = rendered.lines().collect();
        let cut = |l: &str| {
            l.split_once(" | ")
                .map_or(String::new(), |(_, r)| r.to_string())
        };
        (cut(lines[2]), cut(lines[3]))
    }

    #[test]
    fn regression_long_line_is_cut_to_a_window_with_the_caret_in_place() {
        // A 10,000-deep nesting error repeated the whole 20 KB line in the diagnostic.
        let line = "- ".repeat(10_000) + "x";
        let rendered = render_at(&line, 1, 129, 1);
        assert!(rendered.len() < 400, "{} bytes", rendered.len());
        let (shown, carets) = snippet(&rendered);
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        assert_eq!(shown.chars().count(), MAX_EXCERPT + 2);
        let at = carets.find('^').unwrap();
        assert_eq!(carets.trim(), "^");
        // The caret stands under the character at column 129 (a `-`), with 40 before it.
        assert_eq!(shown.chars().nth(at), Some('-'));
        assert_eq!(at, EXCERPT_BEFORE + 1);
    }

    #[test]
    fn long_lines_cut_at_the_start_or_end_only_where_needed() {
        let line = format!("name: {}", "x".repeat(300));
        let (shown, carets) = snippet(&render_at(&line, 1, 7, 300));
        assert!(!shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        assert_eq!(carets.find('^'), Some(6));
        assert_eq!(
            carets.trim().len(),
            MAX_EXCERPT - 6,
            "carets stop at the cut"
        );
        let (shown, carets) = snippet(&render_at(&line, 1, 300, 1));
        assert!(shown.starts_with('…') && !shown.ends_with('…'), "{shown}");
        assert_eq!(shown.chars().nth(carets.find('^').unwrap()), Some('x'));
    }

    #[test]
    fn short_lines_are_shown_whole_and_carets_count_characters() {
        let (shown, carets) = snippet(&render_at("name: \"dém○\"", 1, 7, 9));
        assert_eq!(shown, "name: \"dém○\"");
        assert_eq!(carets, "      ^^^^^^");
    }

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
