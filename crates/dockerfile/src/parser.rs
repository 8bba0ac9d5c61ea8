//! The line parser (BuildKit's `frontend/dockerfile/parser`) and the typed
//! instruction layer (BuildKit's `frontend/dockerfile/instructions`).

mod bflag;
mod directives;
mod duration;
mod heredoc;
mod instructions;
mod json;
mod mount;
mod quote;
mod split;
mod suggest;
mod unicode;

use std::cell::Cell;
use std::ops::Range;

pub use directives::{DirectiveValue, detect_syntax, parse_directive};
pub use mount::csv_fields;
pub use quote::goquote;

use crate::ast::{Ast, Directive, Dockerfile, Heredoc, Node, Span, Warning};
use crate::error::Error;
use directives::DirectiveParser;
use split::LineCtx;
use unicode::is_space;

/// The longest physical line BuildKit's scanner accepts, in bytes.
pub(crate) const MAX_LINE: usize = 65535;

/// Parses a Dockerfile into typed instructions.
///
/// Runs the line parser ([`parse_ast`]) and turns every node into an
/// [`Instruction`](crate::Instruction); unknown instructions and bad flags are
/// errors here. Warnings are collected in the result.
///
/// ```
/// use dockerfile::Instruction;
///
/// let df = dockerfile::parse("FROM alpine AS base\nRUN --network=none make\n")?;
/// let Instruction::From(from) = &df.instructions[0].value else { unreachable!() };
/// assert_eq!(from.name.as_ref().map(|n| n.as_str()), Some("base"));
/// assert_eq!(df.instructions[1].span.start_line, 2);
///
/// let err = dockerfile::parse("FROM alpine\nCOPY --chwon=1 a b\n").unwrap_err();
/// assert_eq!(err.to_string(), "2:6: unknown flag: --chwon (did you mean chown?)");
/// # Ok::<(), dockerfile::Error>(())
/// ```
pub fn parse(text: &str) -> Result<Dockerfile, Error> {
    let ast = parse_ast(text)?;
    Dockerfile::from_ast(ast)
}

/// Parses raw bytes: like [`parse`], but first checks that the text is UTF-8 and
/// names the line and column where it is not.
pub fn parse_bytes(bytes: &[u8]) -> Result<Dockerfile, Error> {
    parse(check_utf8(bytes)?)
}

fn check_utf8(bytes: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        // The valid prefix is UTF-8, so this cannot fail.
        let text = std::str::from_utf8(good).unwrap_or_default();
        let index = SourceIndex::new(text);
        let at = index.span(text.len()..text.len());
        Error::InvalidUtf8 { span: at }
    })
}

/// The line parser alone: every instruction as a [`Node`], with directives,
/// heredocs, comments and warnings. Unknown instructions are accepted here, as
/// BuildKit's parser does.
pub fn parse_ast(text: &str) -> Result<Ast, Error> {
    Parser::new(text).run()
}

/// Byte offsets of line starts, for turning offsets into lines and columns.
pub(crate) struct SourceIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
    /// The last position computed (offset, line index, column): spans are asked
    /// for mostly left to right, so columns are counted from there.
    last: Cell<(usize, usize, usize)>,
}

impl<'a> SourceIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        SourceIndex {
            text,
            starts,
            last: Cell::new((0, 0, 0)),
        }
    }

    fn position(&self, off: usize) -> (u32, u32) {
        let off = off.min(self.text.len());
        let (last_off, last_line, last_col) = self.last.get();
        let line_start = self.starts[last_line];
        let next_start = self
            .starts
            .get(last_line + 1)
            .copied()
            .unwrap_or(usize::MAX);
        let line = if line_start <= off && off < next_start {
            last_line
        } else {
            self.starts.partition_point(|&s| s <= off) - 1
        };
        let (from, col0) = if line == last_line && last_off <= off {
            (last_off, last_col)
        } else {
            (self.starts[line], 0)
        };
        let col = col0 + count_chars(&self.text.as_bytes()[from..off]);
        self.last.set((off, line, col));
        (to_u32(line + 1), to_u32(col + 1))
    }

    pub(crate) fn span(&self, r: Range<usize>) -> Span {
        let (start_line, start_column) = self.position(r.start);
        let (end_line, end_column) = self.position(r.end);
        Span {
            start: r.start,
            end: r.end,
            start_line,
            start_column,
            end_line,
            end_column,
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Characters in a UTF-8 byte slice (bytes that do not continue a sequence).
fn count_chars(b: &[u8]) -> usize {
    if b.is_ascii() {
        b.len()
    } else {
        b.iter().filter(|&&c| (c & 0xc0) != 0x80).count()
    }
}

/// One physical line: content `start..end` (no `\n`), next line at `next`.
#[derive(Clone, Copy)]
struct PhysLine {
    start: usize,
    end: usize,
    next: usize,
}

/// The joined instruction line and where each piece came from.
struct Joined {
    text: String,
    /// (offset in `text`, offset in the source)
    segs: Vec<(usize, usize)>,
}

impl Joined {
    /// Starts a joined line; `segs` is a recycled buffer.
    fn new(src: usize, part: &str, mut segs: Vec<(usize, usize)>) -> Self {
        segs.clear();
        segs.push((0, src));
        Joined {
            text: part.to_owned(),
            segs,
        }
    }

    fn push(&mut self, src: usize, part: &str) {
        if part.is_empty() {
            return;
        }
        self.segs.push((self.text.len(), src));
        self.text.push_str(part);
    }

    fn map_start(&self, o: usize) -> usize {
        let i = self.segs.partition_point(|s| s.0 <= o).saturating_sub(1);
        let (j, s) = self.segs[i];
        s + (o - j)
    }

    fn map_end(&self, o: usize) -> usize {
        let i = self.segs.partition_point(|s| s.0 < o).saturating_sub(1);
        let (j, s) = self.segs[i];
        s + o.saturating_sub(j)
    }

    fn map(&self, r: Range<usize>) -> Range<usize> {
        let start = self.map_start(r.start);
        let end = if r.end <= r.start {
            start
        } else {
            self.map_end(r.end)
        };
        start..end.max(start)
    }
}

struct Parser<'a> {
    text: &'a str,
    index: SourceIndex<'a>,
    pos: usize,
    scanned: usize,
    too_long: Option<Span>,
    escape: char,
    /// Recycled segment buffer of [`Joined`].
    segs: Vec<(usize, usize)>,
}

fn is_comment(line: &str) -> bool {
    line.trim_start_matches(is_space).starts_with('#')
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

/// Removes a line-continuation escape: `(text, true)` when the line ends the
/// instruction, `(text without the escape, false)` when it continues.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    let Some(before) = t.strip_suffix(escape) else {
        return (line, true);
    };
    if before.ends_with(escape) {
        // An escaped escape character is not a continuation.
        return (line, true);
    }
    (before, false)
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            index: SourceIndex::new(text),
            pos: 0,
            scanned: 0,
            too_long: None,
            escape: '\\',
            segs: Vec::new(),
        }
    }

    /// The next physical line, or `None` at the end of the text or at a line
    /// longer than [`MAX_LINE`] (which ends scanning, as in BuildKit).
    fn next_line(&mut self) -> Option<PhysLine> {
        if self.pos >= self.text.len() || self.too_long.is_some() {
            return None;
        }
        let rest = &self.text.as_bytes()[self.pos..];
        let (end, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (self.pos + i, self.pos + i + 1),
            None => (self.text.len(), self.text.len()),
        };
        if end - self.pos > MAX_LINE {
            self.too_long = Some(self.index.span(self.pos..end));
            return None;
        }
        let line = PhysLine {
            start: self.pos,
            end,
            next,
        };
        self.pos = next;
        self.scanned += 1;
        Some(line)
    }

    fn run(mut self) -> Result<Ast, Error> {
        let mut directive_parser = DirectiveParser::new("#");
        let mut directives = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        let mut nodes = Vec::new();
        let mut warnings = Vec::new();

        while let Some(first) = self.next_line() {
            let mut start = first.start;
            if self.scanned == 1 && self.text[start..first.end].starts_with('\u{feff}') {
                start += '\u{feff}'.len_utf8();
            }
            let raw = &self.text[start..first.end];
            if is_comment(raw) {
                let after_hash = match raw.get(1..) {
                    Some(s) => s.to_owned(),
                    None => String::from_utf8_lossy(&raw.as_bytes()[1..]).into_owned(),
                };
                let c = after_hash.trim_matches(is_space);
                if c.is_empty() {
                    comments.clear();
                } else {
                    comments.push(c.to_owned());
                }
            }
            let token = trim_newline(raw).trim_start_matches(is_space);
            let line_span = self.index.span(start..first.end);
            match directive_parser.parse_line(token) {
                Err(directives::Duplicate(name)) => {
                    return Err(Error::DuplicateDirective {
                        name,
                        span: line_span,
                    });
                }
                Ok(Some((name, value))) => {
                    if name == "escape" {
                        self.escape = match value.as_str() {
                            "\\" => '\\',
                            "`" => '`',
                            _ => {
                                return Err(Error::InvalidEscape {
                                    value,
                                    span: line_span,
                                });
                            }
                        };
                    }
                    directives.push(Directive {
                        name,
                        value,
                        span: line_span,
                    });
                    comments.pop();
                }
                Ok(None) => {}
            }
            let token_start = start + (trim_newline(raw).len() - token.len());
            let token = if is_comment(token) {
                &token[..0]
            } else {
                token
            };
            let (part, mut done) = trim_continuation(token, self.escape);
            if done && part.is_empty() {
                continue;
            }
            let mut joined = Joined::new(token_start, part, std::mem::take(&mut self.segs));
            let mut last_end = first.end;
            let mut has_empty = false;
            while !done {
                let Some(cont) = self.next_line() else { break };
                last_end = cont.end;
                let raw = &self.text[cont.start..cont.end];
                if is_comment(raw) {
                    continue;
                }
                let tok = trim_newline(raw);
                if tok.trim_start_matches(is_space).is_empty() {
                    has_empty = true;
                    continue;
                }
                let (part, d) = trim_continuation(tok, self.escape);
                done = d;
                joined.push(cont.start, part);
            }

            let line = joined.text.as_str();
            if has_empty {
                warnings.push(Warning {
                    rule: "NoEmptyContinuation",
                    message: format!("Empty continuation line found in: {line}"),
                    detail: "Empty continuation lines will become errors in a future release",
                    url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
                    span: self.index.span(token_start..last_end),
                });
            }
            let index = &self.index;
            let joined_ref = &joined;
            let to_span = move |r: Range<usize>| index.span(joined_ref.map(r));
            let ctx = LineCtx {
                line,
                escape: self.escape,
                span: &to_span,
            };
            let mut node = split::node_from_line(&ctx, line)?;
            let has_heredoc_marker = line.contains("<<");

            if can_contain_heredoc(&node) && has_heredoc_marker {
                let words = heredoc::heredocs_from_line(line).map_err(|(word, message)| {
                    Error::HeredocSyntax {
                        word,
                        message,
                        span: self.index.span(token_start..last_end),
                    }
                })?;
                for w in words {
                    let body_start = self.pos;
                    let mut content = String::new();
                    let mut terminated = false;
                    while let Some(l) = self.next_line() {
                        last_end = l.end;
                        let mut candidate = trim_newline(&self.text[l.start..l.end]);
                        if w.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == w.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(&self.text[l.start..l.next]);
                    }
                    if !terminated {
                        return Err(Error::UnterminatedHeredoc {
                            name: w.name,
                            span: self.index.span(token_start..last_end.max(token_start)),
                        });
                    }
                    node.heredocs.push(Heredoc {
                        name: w.name,
                        file_descriptor: w.file_descriptor,
                        expand: w.expand,
                        chomp: w.chomp,
                        content,
                        span: self.index.span(body_start..last_end.max(body_start)),
                    });
                }
            }
            node.span = self.index.span(token_start..last_end.max(token_start));
            node.original = joined.text;
            self.segs = joined.segs;
            node.comments = std::mem::take(&mut comments);
            nodes.push(node);
        }

        if nodes.is_empty() {
            let end = self.text.len();
            return Err(Error::NoInstructions {
                span: self.index.span(end..end),
            });
        }
        if let Some(span) = self.too_long {
            return Err(Error::LineTooLong {
                span,
                max: MAX_LINE,
            });
        }
        Ok(Ast {
            directives,
            escape: self.escape,
            nodes,
            warnings,
        })
    }
}

fn can_contain_heredoc(node: &Node) -> bool {
    let mut n = node;
    if let (Some("onbuild"), Some(t)) = (split::known_keyword(&n.keyword.value), &n.trigger) {
        n = t;
    }
    matches!(
        split::known_keyword(&n.keyword.value),
        Some("add" | "copy" | "run")
    ) && !n.json
}

/// Internal helpers exposed for the conformance tests; not a stable API.
#[doc(hidden)]
pub mod internal {
    pub use super::heredoc::HeredocWord;

    /// BuildKit's `ParseHeredoc` on a single word.
    pub fn parse_heredoc(word: &str) -> Result<Option<HeredocWord>, String> {
        super::heredoc::parse_heredoc(word)
    }

    pub use super::bflag::{FlagKind, Flags, parse_flags};

    /// Go's `time.ParseDuration`, in nanoseconds.
    pub fn parse_go_duration(s: &str) -> Result<i128, String> {
        super::duration::parse_go_duration(s)
    }

    /// BuildKit's `DirectiveParser.ParseAll`: the leading directives of a text.
    pub fn parse_directives(text: &str) -> Result<Vec<(String, String)>, String> {
        let mut p = super::directives::DirectiveParser::new("#");
        let mut out = Vec::new();
        for line in text.lines() {
            match p.parse_line(line) {
                Ok(Some(d)) => out.push(d),
                Ok(None) => {}
                Err(super::directives::Duplicate(name)) => {
                    return Err(format!("only one {name} parser directive can be used"));
                }
            }
        }
        Ok(out)
    }

    /// BuildKit's `heredocsFromLine`: the heredoc names on a joined line.
    pub fn heredoc_names(line: &str) -> Result<Vec<String>, String> {
        super::heredoc::heredocs_from_line(line)
            .map(|v| v.into_iter().map(|h| h.name).collect())
            .map_err(|(_, m)| m)
    }
}
