//! From one joined instruction line to a [`Node`]: keyword, flags, and the
//! arguments split by the rules of each instruction (BuildKit's
//! `split_command.go` and `line_parsers.go`).

use std::ops::Range;

use super::json::{JsonArray, parse_string_array};
use super::unicode::{is_space, is_space_byte, is_split_space, to_lower};
use crate::ast::{Node, Span, Spanned};
use crate::error::Error;

/// What the argument parsers need: the whole joined line (all slices they get
/// borrow from it), the escape character and a way to turn byte ranges of the
/// line into source spans.
pub(crate) struct LineCtx<'a> {
    pub(crate) line: &'a str,
    pub(crate) escape: char,
    pub(crate) span: &'a dyn Fn(Range<usize>) -> Span,
}

impl LineCtx<'_> {
    /// Offset of `sub` (a slice of the line) in the line.
    fn off(&self, sub: &str) -> usize {
        let base = self.line.as_ptr() as usize;
        (sub.as_ptr() as usize)
            .saturating_sub(base)
            .min(self.line.len())
    }

    fn spanned(&self, value: String, range: Range<usize>) -> Spanned<String> {
        Spanned::new(value, (self.span)(range))
    }

    fn slice(&self, sub: &str) -> Spanned<String> {
        let start = self.off(sub);
        self.spanned(sub.to_owned(), start..start + sub.len())
    }
}

const KEYWORDS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// The lower-case instruction name when `cmd` names one (Go's Unicode
/// `strings.ToLower` comparison, with an allocation-free ASCII path).
pub(crate) fn known_keyword(cmd: &str) -> Option<&'static str> {
    if cmd.is_ascii() {
        // The longest keyword has 11 letters.
        if cmd.len() > 11 {
            return None;
        }
        let mut buf = [0u8; 11];
        let lower = &mut buf[..cmd.len()];
        lower.copy_from_slice(cmd.as_bytes());
        lower.make_ascii_lowercase();
        KEYWORDS.iter().copied().find(|k| k.as_bytes() == lower)
    } else {
        let lower = to_lower(cmd);
        KEYWORDS.iter().copied().find(|k| *k == lower)
    }
}

/// Parses one instruction line (`line` is a slice of `ctx.line`).
pub(crate) fn node_from_line(ctx: &LineCtx<'_>, line: &str) -> Result<Node, Error> {
    let t = line.trim_matches(is_space);
    let (cmd, rest) = match t.find(is_split_space) {
        Some(i) => (&t[..i], Some(t[i..].trim_start_matches(is_split_space))),
        None => (t, None),
    };
    let (flags, args) = match rest {
        Some(rest) => {
            let (args, flags) = extract_flags(ctx, rest);
            (flags, args.trim_matches(is_space))
        }
        None => (Vec::new(), &t[t.len()..]),
    };
    let mut node = Node {
        keyword: ctx.slice(cmd),
        flags,
        args: Vec::new(),
        trigger: None,
        json: false,
        heredocs: Vec::new(),
        original: String::new(),
        comments: Vec::new(),
        span: (ctx.span)(ctx.off(t)..ctx.off(t) + t.len()),
    };
    match known_keyword(cmd).unwrap_or_default() {
        "add" | "copy" | "volume" => maybe_json_to_list(ctx, args, &mut node)?,
        "run" | "cmd" | "entrypoint" | "shell" => maybe_json(ctx, args, &mut node)?,
        "from" | "expose" => node.args = whitespace_delimited(ctx, args),
        "env" => node.args = name_val(ctx, args, "ENV")?,
        "label" => node.args = name_val(ctx, args, "LABEL")?,
        "arg" => {
            node.args = parse_words(ctx, args)
                .into_iter()
                .map(|(w, r)| ctx.spanned(w, r))
                .collect();
        }
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !args.is_empty() {
                node.args = vec![ctx.slice(args)];
            }
        }
        "healthcheck" => health_config(ctx, args, &mut node)?,
        "onbuild" => {
            if !args.is_empty() {
                let mut trigger = node_from_line(ctx, args)?;
                trigger.original = args.to_owned();
                node.trigger = Some(Box::new(trigger));
            }
        }
        _ => {
            if !args.is_empty() {
                node.args = vec![ctx.slice(args)];
            }
        }
    }
    Ok(node)
}

/// BuildKit's `extractBuilderFlags`: leading `--` words, scanned byte by byte
/// (non-ASCII bytes become the Latin-1 character of the same value, as in
/// BuildKit). Returns the rest of the line and the flags.
fn extract_flags<'l>(ctx: &LineCtx<'_>, line: &'l str) -> (&'l str, Vec<Spanned<String>>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let base = ctx.off(line);
    let escape = ctx.escape as u32;
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut start = 0;
    let mut pos = 0;
    // Only ASCII bytes can be spaces here: BuildKit also splits at 0x85/0xA0 bytes,
    // which in UTF-8 text are always inside a character.
    let space = |c: u8| c.is_ascii() && is_space_byte(c);
    while pos <= b.len() {
        let at_end = pos == b.len();
        let mut ch = if at_end { 0 } else { b[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if space(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || b.get(pos + 1) != Some(&b'-') {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
            start = pos;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(ctx.spanned(std::mem::take(&mut word), base + start..base + pos));
            }
            break;
        }
        if phase == Phase::Word {
            if space(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(ctx.spanned(std::mem::take(&mut word), base + start..base + pos));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if u32::from(ch) == escape {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = b[pos];
            }
            word.push(char::from(ch));
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if u32::from(ch) == escape {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = b[pos];
        }
        word.push(char::from(ch));
        pos += 1;
    }
    (&line[line.len()..], words)
}

/// Splits on runs of `[\t\v\f\r ]` (the text is already trimmed).
fn whitespace_delimited(ctx: &LineCtx<'_>, rest: &str) -> Vec<Spanned<String>> {
    rest.split(is_split_space)
        .filter(|w| !w.is_empty())
        .map(|w| ctx.slice(w))
        .collect()
}

fn maybe_json(ctx: &LineCtx<'_>, rest: &str, node: &mut Node) -> Result<(), Error> {
    if rest.is_empty() {
        return Ok(());
    }
    if !json(ctx, rest, node)? {
        node.args = vec![ctx.slice(rest)];
    }
    Ok(())
}

fn maybe_json_to_list(ctx: &LineCtx<'_>, rest: &str, node: &mut Node) -> Result<(), Error> {
    if !json(ctx, rest, node)? {
        node.args = whitespace_delimited(ctx, rest);
    }
    Ok(())
}

/// Exec form: `Ok(true)` when `rest` was a JSON array of strings.
fn json(ctx: &LineCtx<'_>, rest: &str, node: &mut Node) -> Result<bool, Error> {
    let base = ctx.off(rest);
    match parse_string_array(rest) {
        JsonArray::NotJson => Ok(false),
        JsonArray::NotStrings => Err(Error::JsonNotStrings {
            span: (ctx.span)(base..base + rest.len()),
        }),
        JsonArray::Strings(items) => {
            node.args = items
                .into_iter()
                .map(|(s, r)| ctx.spanned(s, base + r.start..base + r.end))
                .collect();
            node.json = true;
            Ok(true)
        }
    }
}

/// HEALTHCHECK: the type word, then the rest like CMD.
fn health_config(ctx: &LineCtx<'_>, rest: &str, node: &mut Node) -> Result<(), Error> {
    let b = rest.as_bytes();
    let space = |c: &u8| c.is_ascii() && is_space_byte(*c);
    let sep = b.iter().position(space).unwrap_or(b.len());
    if sep == 0 {
        return Ok(());
    }
    let next = sep + b[sep..].iter().take_while(|c| space(c)).count();
    let typ = ctx.slice(&rest[..sep]);
    maybe_json(ctx, &rest[next..], node)?;
    node.args.insert(0, typ);
    Ok(())
}

/// BuildKit's `parseWords`: words split on unquoted whitespace; quotes and escapes
/// stay in the words. Returns each word with its byte range in the line.
pub(crate) fn parse_words(ctx: &LineCtx<'_>, rest: &str) -> Vec<(String, Range<usize>)> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let base = ctx.off(rest);
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut start = 0;
    let mut it = rest.char_indices().peekable();
    loop {
        let Some((pos, ch)) = it.next() else {
            if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
                words.push((word, base + start..base + rest.len()));
            }
            break;
        };
        if phase == Phase::Spaces {
            if is_space(ch) {
                continue;
            }
            phase = Phase::Word;
            start = pos;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push((std::mem::take(&mut word), base + start..base + pos));
                }
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == ctx.escape {
                match it.next() {
                    // An escape at the end of the line is dropped.
                    None => {
                        if blank_ok || !word.is_empty() {
                            words.push((word, base + start..base + rest.len()));
                        }
                        break;
                    }
                    Some((_, next)) => {
                        word.push(ch);
                        word.push(next);
                    }
                }
                continue;
            }
            word.push(ch);
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == ctx.escape && quote != '\'' {
            match it.next() {
                None => {
                    if blank_ok || !word.is_empty() {
                        words.push((word, base + start..base + rest.len()));
                    }
                    break;
                }
                Some((_, next)) => {
                    word.push(ch);
                    word.push(next);
                }
            }
            continue;
        }
        word.push(ch);
    }
    words
}

/// ENV/LABEL: `key value sep` triples.
fn name_val(
    ctx: &LineCtx<'_>,
    rest: &str,
    key: &'static str,
) -> Result<Vec<Spanned<String>>, Error> {
    let words = parse_words(ctx, rest);
    let Some((first, _)) = words.first() else {
        return Ok(Vec::new());
    };
    let base = ctx.off(rest);
    if !first.contains('=') {
        // Legacy `KEY value`: the key, then the rest of the line as is.
        let Some(i) = rest.find(is_split_space) else {
            return Err(Error::MissingValue {
                instruction: key,
                span: (ctx.span)(base..base + rest.len()),
            });
        };
        let value = rest[i..].trim_start_matches(is_split_space);
        let end = base + rest.len();
        return Ok(vec![
            ctx.slice(&rest[..i]),
            ctx.slice(value),
            ctx.spanned(String::new(), end..end),
        ]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for (word, range) in words {
        let Some(eq) = word.find('=') else {
            return Err(Error::MissingEquals {
                word,
                span: (ctx.span)(range),
            });
        };
        // Words keep their source text except for a dropped trailing escape, so the
        // `=` sits at the same offset in the line.
        let at = (range.start + eq).min(range.end);
        out.push(ctx.spanned(word[..eq].to_owned(), range.start..at));
        out.push(ctx.spanned(
            word[eq + 1..].to_owned(),
            (at + 1).min(range.end)..range.end,
        ));
        out.push(ctx.spanned("=".to_owned(), at..(at + 1).min(range.end)));
    }
    Ok(out)
}
