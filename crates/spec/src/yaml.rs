//! A YAML node tree where every node keeps its source location, built from saphyr's event
//! stream. serde-based YAML loses positions; diagnostics need them for every field.

use crate::diag::Diagnostic;
use crate::model::Location;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;

/// A YAML value with its location.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) loc: Location,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    /// A scalar; `plain` is false for quoted or block scalars (which are always strings).
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The text of a scalar.
    pub(crate) fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// True for `null`, `~` or an empty plain scalar.
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true } if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }

    /// The entries of a mapping.
    pub(crate) fn map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items of a sequence.
    pub(crate) fn seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value under a key of a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.map()?
            .iter()
            .find(|(k, _)| k.scalar() == Some(key))
            .map(|(_, v)| v)
    }

    /// What this node is, for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "nothing (null)",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

fn location(file: usize, span: &Span) -> Location {
    let len = span.end.index().saturating_sub(span.start.index());
    Location {
        file,
        line: span.start.line(),
        col: span.start.col() + 1,
        offset: span.start.index(),
        len,
    }
}

enum Frame {
    Seq(Vec<Node>, Location, usize),
    Map(Vec<(Node, Node)>, Option<Node>, Location, usize),
}

/// Parses one YAML document. Syntax errors become a diagnostic and `None`.
pub(crate) fn parse(file: usize, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Node> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(x) => x,
            Err(e) => {
                let m = e.marker();
                let loc = Location {
                    file,
                    line: m.line(),
                    col: m.col() + 1,
                    offset: m.index(),
                    len: 1,
                };
                diags.push(Diagnostic::error("yaml-syntax", format!("YAML syntax error: {}", e.info()), Some(loc))
                    .with_hint("check indentation and that every `key: value` pair has a space after the colon"));
                return None;
            }
        };
        let loc = location(file, &span);
        let finished: Option<(Node, usize)> = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    diags.push(
                        Diagnostic::error(
                            "multiple-documents",
                            "a spec file holds one YAML document",
                            Some(loc),
                        )
                        .with_hint("split the documents into separate files and pass them all"),
                    );
                    return None;
                }
                None
            }
            Event::Scalar(value, style, anchor, _tag) => {
                let plain = style == ScalarStyle::Plain;
                Some((
                    Node {
                        kind: NodeKind::Scalar {
                            value: value.into_owned(),
                            plain,
                        },
                        loc,
                    },
                    anchor,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => Some((
                    Node {
                        kind: n.kind.clone(),
                        loc,
                    },
                    0,
                )),
                None => {
                    diags.push(Diagnostic::error(
                        "yaml-syntax",
                        "alias to an unknown anchor",
                        Some(loc),
                    ));
                    return None;
                }
            },
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(Vec::new(), loc, anchor));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(Vec::new(), None, loc, anchor));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, start, anchor)) => Some((
                    Node {
                        kind: NodeKind::Seq(items),
                        loc: start,
                    },
                    anchor,
                )),
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(entries, _, start, anchor)) => Some((
                    Node {
                        kind: NodeKind::Map(entries),
                        loc: start,
                    },
                    anchor,
                )),
                _ => None,
            },
            _ => None,
        };
        if let Some((node, anchor)) = finished {
            if anchor != 0 {
                anchors.insert(anchor, node.clone());
            }
            match stack.last_mut() {
                Some(Frame::Seq(items, _, _)) => items.push(node),
                Some(Frame::Map(entries, pending_key, _, _)) => match pending_key.take() {
                    None => *pending_key = Some(node),
                    Some(key) => entries.push((key, node)),
                },
                None => root = Some(node),
            }
        }
    }
    if root.is_none() {
        diags.push(
            Diagnostic::error(
                "empty-file",
                "the file is empty",
                Some(Location {
                    file,
                    line: 1,
                    col: 1,
                    offset: 0,
                    len: 1,
                }),
            )
            .with_hint("a fleet spec starts with `phoenix: 1` and `name: ...`"),
        );
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_locations_of_keys_and_values() {
        let mut d = Vec::new();
        let n = parse(0, "a: 1\nb:\n  - x\n  - {c: d}\n", &mut d).unwrap();
        let m = n.map().unwrap();
        assert_eq!(m[1].0.loc.line, 2);
        let b = n.get("b").unwrap().seq().unwrap();
        assert_eq!((b[0].loc.line, b[0].loc.col), (3, 5));
        assert_eq!(b[1].get("c").unwrap().scalar(), Some("d"));
        assert!(d.is_empty());
    }

    #[test]
    fn syntax_errors_are_located() {
        let mut d = Vec::new();
        assert!(parse(0, "a: [1, 2\nb: 3\n", &mut d).is_none());
        assert_eq!(d[0].code, "yaml-syntax");
        assert!(d[0].location.is_some());
    }
}
