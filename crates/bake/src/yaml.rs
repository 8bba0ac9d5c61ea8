//! A YAML document as a tree of nodes that keep their line and column (yaml-rust2's event
//! parser), aliases resolved and `<<` merge keys applied, as compose files use them.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::{Error, Pos};

/// A YAML node.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A scalar; `plain` when unquoted (then `null`, `~` and the empty string mean null).
    Scalar {
        value: String,
        plain: bool,
        pos: Pos,
    },
    Seq(Vec<Node>, Pos),
    Map(Vec<(String, Node)>, Pos),
}

impl Node {
    pub(crate) fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. } | Node::Seq(_, pos) | Node::Map(_, pos) => *pos,
        }
    }

    /// A null scalar (`~`, `null`, nothing).
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { value, plain: true, .. } if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }

    /// The entry `key` of a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries, _) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short word for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a scalar",
            Node::Seq(..) => "a list",
            Node::Map(..) => "a mapping",
        }
    }
}

fn pos(m: Marker) -> Pos {
    Pos {
        line: m.line() as u32,
        col: m.col() as u32 + 1,
    }
}

enum Frame {
    Seq(Vec<Node>, Pos, usize),
    Map(Vec<(String, Node)>, Pos, usize, Option<(String, Pos)>),
}

#[derive(Default)]
struct Loader {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<(Pos, String)>,
}

impl Loader {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(items, ..)) => items.push(node),
            Some(Frame::Map(entries, _, _, key)) => match key.take() {
                None => match node {
                    Node::Scalar { value, pos, .. } => *key = Some((value, pos)),
                    other => {
                        if self.error.is_none() {
                            self.error =
                                Some((other.pos(), "mapping keys must be scalars".to_owned()));
                        }
                        *key = Some((String::new(), other.pos()));
                    }
                },
                Some((k, kpos)) => {
                    if k == "<<" {
                        merge(entries, node, kpos, &mut self.error);
                    } else if let Some(slot) = entries.iter_mut().find(|(e, _)| *e == k) {
                        slot.1 = node;
                    } else {
                        entries.push((k, node));
                    }
                }
            },
        }
    }
}

/// `<<: *anchor` (or a list of them): the merged mapping's keys that the mapping does not
/// set itself (YAML 1.1's merge key, which compose files rely on).
fn merge(
    entries: &mut Vec<(String, Node)>,
    node: Node,
    at: Pos,
    error: &mut Option<(Pos, String)>,
) {
    let sources = match node {
        Node::Map(..) => vec![node],
        Node::Seq(items, _) => items,
        other => {
            error.get_or_insert((at, format!("'<<' merges a mapping, not {}", other.kind())));
            return;
        }
    };
    for s in sources {
        if let Node::Map(src, _) = s {
            for (k, v) in src {
                if !entries.iter().any(|(e, _)| *e == k) {
                    entries.push((k, v));
                }
            }
        } else {
            error.get_or_insert((at, format!("'<<' merges a mapping, not {}", s.kind())));
        }
    }
}

impl MarkedEventReceiver for Loader {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, style, anchor, _) => {
                let node = Node::Scalar {
                    value,
                    plain: style == TScalarStyle::Plain,
                    pos: pos(mark),
                };
                self.push_node(node, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(Vec::new(), pos(mark), anchor))
            }
            Event::MappingStart(anchor, _) => {
                self.stack
                    .push(Frame::Map(Vec::new(), pos(mark), anchor, None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq(items, p, a)) => (Node::Seq(items, p), a),
                    Some(Frame::Map(entries, p, a, _)) => (Node::Map(entries, p), a),
                    None => return,
                };
                self.push_node(node, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.push_node(node, 0),
                None => {
                    self.error
                        .get_or_insert((pos(mark), "unknown alias".to_owned()));
                }
            },
            _ => {}
        }
    }
}

/// Parses `text` (the first document of `file`).
pub(crate) fn parse(file: &str, text: &str) -> Result<Node, Error> {
    let mut loader = Loader::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut loader, false).map_err(|e| Error::Syntax {
        file: file.to_owned(),
        pos: pos(*e.marker()),
        message: e.info().to_owned(),
    })?;
    if let Some((pos, message)) = loader.error {
        return Err(Error::Syntax {
            file: file.to_owned(),
            pos,
            message,
        });
    }
    Ok(loader
        .root
        .unwrap_or(Node::Map(Vec::new(), Pos { line: 1, col: 1 })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keys_aliases_and_positions() {
        let text = "x: &h\n  a: 1\n  b: 2\ns:\n  <<: *h\n  b: 3\n";
        let root = parse("f.yml", text).unwrap();
        let s = root.get("s").unwrap();
        let get = |k: &str| match s.get(k) {
            Some(Node::Scalar { value, .. }) => value.clone(),
            _ => panic!("{k}"),
        };
        assert_eq!((get("a"), get("b")), ("1".to_owned(), "3".to_owned()));
        assert_eq!(
            root.get("s").unwrap().get("b").unwrap().pos(),
            Pos { line: 6, col: 6 }
        );
        let e = parse("f.yml", "a: [1,\n").unwrap_err().to_string();
        assert!(e.starts_with("f.yml:"), "{e}");
    }
}
