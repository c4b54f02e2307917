//! A YAML node tree where every node keeps its source location, built from saphyr's event
//! stream. serde-based YAML loses positions; diagnostics need them for every field.
//!
//! The tree is built with an explicit stack, never by recursion, and its size is bounded:
//! nesting deeper than [`MAX_DEPTH`] and alias expansion beyond [`MAX_ALIASES`],
//! [`MAX_ALIAS_NODES`] or [`MAX_ALIAS_BYTES`] stop the file with a located error. Without the
//! alias bounds, nine anchors of nine aliases each ("billion laughs") expand a 1 KB file into
//! 10^9 nodes; without the depth bound, the tree's recursive `Drop`, `Clone` and overlay merge
//! could overflow the stack. Everything else that walks the tree relies on the depth bound.

use crate::diag::Diagnostic;
use crate::model::Location;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;

/// Deepest nesting of mappings and sequences in a spec file, counting the top-level mapping
/// as 1. A fleet spec needs about 6 (`environments > NAME > services > NAME > resources`);
/// the bound keeps every recursive walk of the tree shallow.
pub const MAX_DEPTH: usize = 64;

/// Most aliases (`*name`) one file may use. Sharing a `resources:` block between a few
/// hundred services stays far below it.
pub const MAX_ALIASES: usize = 10_000;

/// Most nodes (scalars, mappings and sequences) that aliases may add to one file's tree in
/// total: an alias of an anchored mapping of 5 scalars adds 6 nodes each time it is used.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// Most scalar text, in bytes, that aliases may copy in one file in total, so that an alias
/// of one very long string used many times is bounded too.
pub const MAX_ALIAS_BYTES: usize = 16 << 20;

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

/// What a finished node costs when an alias copies it: nodes, scalar bytes and depth (a
/// scalar has depth 0, a collection one more than its deepest child).
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
    depth: usize,
}

impl Size {
    fn add_child(&mut self, child: Size) {
        self.nodes += child.nodes;
        self.bytes += child.bytes;
        self.depth = self.depth.max(child.depth + 1);
    }
}

/// A collection being built: its entries so far, its size, where it started and its anchor.
struct Frame {
    kind: FrameKind,
    size: Size,
    loc: Location,
    anchor: usize,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

/// How much alias expansion one file has used so far.
#[derive(Default)]
struct Budget {
    aliases: usize,
    nodes: usize,
    bytes: usize,
}

impl Budget {
    /// Charges one expansion of a node of `size`; on overflow, the diagnostic to report.
    fn charge(&mut self, size: Size, loc: &Location) -> Result<(), Diagnostic> {
        self.aliases += 1;
        self.nodes = self.nodes.saturating_add(size.nodes);
        self.bytes = self.bytes.saturating_add(size.bytes);
        let over = if self.aliases > MAX_ALIASES {
            Some(format!("more than {MAX_ALIASES} aliases"))
        } else if self.nodes > MAX_ALIAS_NODES {
            Some(format!(
                "aliases expanding to more than {MAX_ALIAS_NODES} nodes"
            ))
        } else if self.bytes > MAX_ALIAS_BYTES {
            Some(format!(
                "aliases copying more than {} MiB of text",
                MAX_ALIAS_BYTES >> 20
            ))
        } else {
            None
        };
        match over {
            None => Ok(()),
            Some(what) => Err(Diagnostic::error(
                "yaml-too-large",
                format!("this alias takes the file past its limit of {what}"),
                Some(loc.clone()),
            )
            .with_hint(
                "aliases that nest other aliases grow exponentially (a \"billion laughs\"); \
                 write the shared values out, or share fewer of them",
            )),
        }
    }
}

fn too_deep(loc: Location) -> Diagnostic {
    Diagnostic::error(
        "yaml-too-deep",
        format!("mappings and lists nest more than {MAX_DEPTH} levels deep here"),
        Some(loc),
    )
    .with_hint("a fleet spec needs a handful of levels; check for a runaway `[`, `{` or `- `")
}

/// Parses one YAML document. Syntax errors and inputs beyond the size bounds become a
/// diagnostic and `None`.
pub(crate) fn parse(file: usize, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Node> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, Size)> = HashMap::new();
    let mut budget = Budget::default();
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
                // The scanner's own bound on `[`/`{` nesting (255) is our too-deep error too.
                if e.info() == "recursion limit exceeded" {
                    diags.push(too_deep(loc));
                    return None;
                }
                diags.push(Diagnostic::error("yaml-syntax", format!("YAML syntax error: {}", e.info()), Some(loc))
                    .with_hint("check indentation and that every `key: value` pair has a space after the colon"));
                return None;
            }
        };
        let loc = location(file, &span);
        let finished: Option<(Node, Size, usize)> = match event {
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
                let size = Size {
                    nodes: 1,
                    bytes: value.len(),
                    depth: 0,
                };
                Some((
                    Node {
                        kind: NodeKind::Scalar {
                            value: value.into_owned(),
                            plain,
                        },
                        loc,
                    },
                    size,
                    anchor,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some((n, size)) => {
                    if let Err(d) = budget.charge(*size, &loc) {
                        diags.push(d);
                        return None;
                    }
                    // The copy lands inside every open collection: the file's depth is the
                    // open collections plus the copy's own.
                    if stack.len() + size.depth > MAX_DEPTH {
                        diags.push(too_deep(loc));
                        return None;
                    }
                    Some((
                        Node {
                            kind: n.kind.clone(),
                            loc,
                        },
                        *size,
                        0,
                    ))
                }
                None => {
                    diags.push(Diagnostic::error(
                        "yaml-syntax",
                        "alias to an unknown anchor",
                        Some(loc),
                    ));
                    return None;
                }
            },
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    diags.push(too_deep(loc));
                    return None;
                }
                let kind = if matches!(event, Event::SequenceStart(..)) {
                    FrameKind::Seq(Vec::new())
                } else {
                    FrameKind::Map(Vec::new(), None)
                };
                stack.push(Frame {
                    kind,
                    size: Size {
                        nodes: 1,
                        bytes: 0,
                        depth: 1,
                    },
                    loc,
                    anchor,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => stack.pop().map(|f| {
                let kind = match f.kind {
                    FrameKind::Seq(items) => NodeKind::Seq(items),
                    FrameKind::Map(entries, _) => NodeKind::Map(entries),
                };
                (Node { kind, loc: f.loc }, f.size, f.anchor)
            }),
            _ => None,
        };
        if let Some((node, size, anchor)) = finished {
            if anchor != 0 {
                anchors.insert(anchor, (node.clone(), size));
            }
            match stack.last_mut() {
                Some(frame) => {
                    frame.size.add_child(size);
                    match &mut frame.kind {
                        FrameKind::Seq(items) => items.push(node),
                        FrameKind::Map(entries, pending_key) => match pending_key.take() {
                            None => *pending_key = Some(node),
                            Some(key) => entries.push((key, node)),
                        },
                    }
                }
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

    #[test]
    fn aliases_copy_the_anchored_value_at_the_alias_position() {
        let mut d = Vec::new();
        let n = parse(0, "a: &r {cpu: 1}\nb: *r\n", &mut d).unwrap();
        let b = n.get("b").unwrap();
        assert_eq!(b.get("cpu").and_then(Node::scalar), Some("1"));
        assert_eq!((b.loc.line, b.loc.col), (2, 4));
        assert!(d.is_empty());
    }

    /// Nine levels of nine aliases each: 9^9 (387 million) copies of `lol`.
    fn billion_laughs() -> String {
        let mut s = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..=9 {
            let p = format!("*a{}", i - 1);
            let items = [p.as_str(); 9].join(", ");
            s.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        s
    }

    #[test]
    fn regression_alias_bomb_is_bounded_and_located_at_the_alias() {
        // A billion-laughs file made `phoenix validate` grow to 15 GB in 20 s: every alias was
        // a deep copy, without a limit.
        let text = billion_laughs();
        let mut d = Vec::new();
        assert!(parse(0, &text, &mut d).is_none());
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(d[0].code, "yaml-too-large");
        assert!(d[0].message.contains("100000 nodes"), "{}", d[0].message);
        let loc = d[0].location.as_ref().unwrap();
        let line = text.lines().nth(loc.line - 1).unwrap();
        assert_eq!(
            &line[loc.col - 1..loc.col + 1],
            "*a",
            "points at an alias: {line}"
        );
    }

    #[test]
    fn regression_alias_count_is_bounded() {
        let mut text = String::from("a: &x 1\nb: [");
        text.push_str(&vec!["*x"; MAX_ALIASES + 1].join(", "));
        text.push_str("]\n");
        let mut d = Vec::new();
        assert!(parse(0, &text, &mut d).is_none());
        assert_eq!(d[0].code, "yaml-too-large");
        assert!(d[0].message.contains("aliases"), "{}", d[0].message);
        let mut ok = String::from("a: &x 1\nb: [");
        ok.push_str(&vec!["*x"; MAX_ALIASES].join(", "));
        ok.push_str("]\n");
        assert!(parse(0, &ok, &mut Vec::new()).is_some());
    }

    #[test]
    fn regression_alias_of_a_long_string_is_bounded_in_bytes() {
        let long = "x".repeat(1 << 20);
        let text = format!("a: &x {long}\nb: [{}]\n", vec!["*x"; 17].join(", "));
        let mut d = Vec::new();
        assert!(parse(0, &text, &mut d).is_none());
        assert!(d[0].message.contains("MiB"), "{}", d[0].message);
    }

    #[test]
    fn regression_deep_nesting_is_an_error_at_the_too_deep_node() {
        // 10,000 nested block sequences on one line (`- - - ...`) and 10,000 flow sequences:
        // both must stop at MAX_DEPTH with the column of the first node that is too deep.
        for (text, step) in [
            ("- ".repeat(10_000) + "x\n", 2),
            ("[".repeat(10_000) + &"]".repeat(10_000) + "\n", 1),
        ] {
            let mut d = Vec::new();
            assert!(parse(0, &text, &mut d).is_none());
            assert_eq!(d.len(), 1, "{d:#?}");
            assert_eq!(d[0].code, "yaml-too-deep");
            let loc = d[0].location.as_ref().unwrap();
            assert_eq!(loc.line, 1);
            if step == 2 {
                assert_eq!(loc.col, MAX_DEPTH * step + 1);
            } else {
                // saphyr scans up to 1024 characters ahead inside `[`, where it stops at 255
                // flow levels before emitting the events that would reach MAX_DEPTH.
                assert!(loc.col > MAX_DEPTH && loc.col <= 256, "{loc:?}");
            }
        }
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(0, &ok, &mut Vec::new()).is_some());
    }

    #[test]
    fn regression_aliases_cannot_nest_deeper_than_the_bound() {
        // Each anchor holds the previous one in a list: depth grows by one per line without
        // any line being deep itself.
        let mut text = String::from("a0: &a0 [x]\n");
        for i in 1..=MAX_DEPTH {
            text.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        let mut d = Vec::new();
        assert!(parse(0, &text, &mut d).is_none());
        assert_eq!(d[0].code, "yaml-too-deep");
        assert_eq!(d[0].location.as_ref().unwrap().line, MAX_DEPTH);
    }
}
