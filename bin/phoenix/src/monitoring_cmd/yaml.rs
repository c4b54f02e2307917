//! A small YAML writer for the files `phoenix monitoring` writes: block mappings and lists in
//! the order given, strings plain where that is unambiguous and double-quoted otherwise, and
//! comments. It only writes; nothing here parses.
//!
//! Why not a serializer crate: the workspace has none, these files are read by people as much as
//! by Prometheus (key order and comments matter), and a double-quoted YAML scalar is a JSON string,
//! so quoting with `serde_json` is exact.

/// A YAML value whose mappings keep their order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Yaml {
    /// A string scalar.
    Str(String),
    /// A block list.
    List(Vec<Yaml>),
    /// A block mapping, in this order.
    Map(Vec<(String, Yaml)>),
    /// A value with comment lines written before it (before its key in a mapping, before its
    /// `-` in a list).
    Commented(String, Box<Yaml>),
}

/// A string scalar.
pub(crate) fn s(text: impl Into<String>) -> Yaml {
    Yaml::Str(text.into())
}

/// A mapping from `(key, value)` pairs, in order.
pub(crate) fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Yaml)>) -> Yaml {
    Yaml::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// A list.
pub(crate) fn list(items: impl IntoIterator<Item = Yaml>) -> Yaml {
    Yaml::List(items.into_iter().collect())
}

/// `value` with `comment` (one or more lines) written before it.
pub(crate) fn commented(comment: impl Into<String>, value: Yaml) -> Yaml {
    Yaml::Commented(comment.into(), Box::new(value))
}

/// The document: `header` as comment lines, then `root`.
pub(crate) fn document(header: &str, root: &Yaml) -> String {
    let mut out = String::new();
    comment(&mut out, 0, header);
    let root = comments_of(&mut out, 0, root);
    match root {
        Yaml::Map(entries) => entries_of(&mut out, 0, entries),
        Yaml::List(items) => items_of(&mut out, 0, items),
        other => {
            let mut text = String::new();
            value_after_key(&mut text, 0, other);
            out.push_str(text.trim_start());
        }
    }
    out
}

/// Writes the comments of `v` (of every level, for a comment on a commented value) at
/// `indent`, and returns the value under them.
fn comments_of<'y>(out: &mut String, indent: usize, mut v: &'y Yaml) -> &'y Yaml {
    while let Yaml::Commented(c, inner) = v {
        comment(out, indent, c);
        v = inner;
    }
    v
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn comment(out: &mut String, indent: usize, text: &str) {
    for line in text.lines() {
        pad(out, indent);
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
    }
}

fn entries_of(out: &mut String, indent: usize, entries: &[(String, Yaml)]) {
    for (k, v) in entries {
        let v = comments_of(out, indent, v);
        pad(out, indent);
        out.push_str(&scalar(k));
        out.push(':');
        value_after_key(out, indent, v);
    }
}

/// Writes what follows `key:` (or `-`): a scalar on the same line, a collection below.
fn value_after_key(out: &mut String, indent: usize, v: &Yaml) {
    match v {
        Yaml::Str(text) => {
            out.push(' ');
            out.push_str(&scalar(text));
            out.push('\n');
        }
        Yaml::List(items) if items.is_empty() => out.push_str(" []\n"),
        Yaml::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Yaml::List(items) => {
            out.push('\n');
            items_of(out, indent + 2, items);
        }
        Yaml::Map(entries) => {
            out.push('\n');
            entries_of(out, indent + 2, entries);
        }
        // The callers write a value's comments before its key or `-` (`comments_of`).
        Yaml::Commented(_, inner) => value_after_key(out, indent, inner),
    }
}

fn items_of(out: &mut String, indent: usize, items: &[Yaml]) {
    for item in items {
        let item = comments_of(out, indent, item);
        pad(out, indent);
        out.push('-');
        match item {
            // `- key: value` with the other keys aligned under the first.
            Yaml::Map(entries) if !entries.is_empty() => {
                let mut text = String::new();
                entries_of(&mut text, indent + 2, entries);
                out.push(' ');
                out.push_str(&text[indent + 2..]);
            }
            other => value_after_key(out, indent, other),
        }
    }
}

/// A string as a YAML scalar: plain when no YAML 1.1 or 1.2 reader could take it for anything
/// but that string; single-quoted when it has no control characters (only `'` is escaped
/// there, as `''`, so PromQL stays readable); else double-quoted (a JSON string is a valid
/// double-quoted YAML scalar).
pub(crate) fn scalar(text: &str) -> String {
    if plain_is_safe(text) {
        text.to_string()
    } else if !text.is_empty() && !text.chars().any(char::is_control) {
        format!("'{}'", text.replace('\'', "''"))
    } else {
        serde_json::to_string(text).expect("a string serializes")
    }
}

fn plain_is_safe(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "nan", "inf",
    ];
    let Some(first) = text.chars().next() else {
        return false;
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '@');
    // A digit first could be a number (`1e3`, `0x10`, `1_000`), unless it is a duration.
    let starts_well =
        first.is_ascii_alphabetic() || matches!(first, '/' | '_') || is_duration(text);
    starts_well && text.chars().all(allowed) && !WORDS.contains(&text.to_ascii_lowercase().as_str())
}

/// `15s`, `5m`, `100ms`: a Prometheus duration, which no YAML reader takes for a number.
fn is_duration(text: &str) -> bool {
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && matches!(&text[digits..], "ms" | "s" | "m" | "h" | "d" | "w" | "y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_plain_only_when_unambiguous() {
        for plain in [
            "web",
            "/metrics",
            "5m",
            "100ms",
            "job_name",
            "alerts.yml",
            "a-b@r3",
        ] {
            assert_eq!(scalar(plain), plain);
        }
        for quoted in [
            "",
            "yes",
            "No",
            "on",
            "true",
            "null",
            "~",
            "1",
            "1.5",
            "0x10",
            "127.0.0.1:80",
            "a b",
            "a: b",
            "#x",
            "-x",
            "{{ $labels.instance }}",
            "x\ny",
            "é",
            ".inf",
            "*a",
            "it's",
            "a\tb",
        ] {
            let q = scalar(quoted);
            assert!(q.starts_with(['\'', '"']), "{quoted:?} -> {q}");
            let unquoted = match q.strip_prefix('\'') {
                Some(single) => single.strip_suffix('\'').unwrap().replace("''", "'"),
                None => serde_json::from_str::<String>(&q).unwrap(),
            };
            assert_eq!(unquoted, quoted, "{quoted:?} -> {q}");
        }
    }

    #[test]
    fn nested_mappings_lists_and_comments() {
        let doc = map([
            ("global", map([("scrape_interval", s("15s"))])),
            ("rule_files", list([s("alerts.yml")])),
            ("empty", list([])),
            (
                "jobs",
                list([
                    commented(
                        "first job\nsecond line",
                        map([
                            ("job_name", s("a/b")),
                            ("targets", list([s("127.0.0.1:1"), s("127.0.0.1:2")])),
                            ("labels", map([("fleet", s("demo"))])),
                        ]),
                    ),
                    map([("job_name", s("c"))]),
                ]),
            ),
            ("note", commented("why", s("x"))),
        ]);
        assert_eq!(
            document("header", &doc),
            "# header\n\
             global:\n  scrape_interval: 15s\n\
             rule_files:\n  - alerts.yml\n\
             empty: []\n\
             jobs:\n  # first job\n  # second line\n  - job_name: a/b\n    targets:\n      - '127.0.0.1:1'\n      - '127.0.0.1:2'\n    labels:\n      fleet: demo\n  - job_name: c\n\
             # why\nnote: x\n"
        );
    }
}
