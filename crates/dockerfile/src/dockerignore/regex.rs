//! The part of Go's RE2 syntax that `moby/patternmatcher` can produce.
//!
//! patternmatcher translates a `.dockerignore` pattern into a Go regular expression text
//! and passes some pattern characters through unchanged (`[`, `]`, `^`, `\x` escapes), so
//! the meaning of odd patterns is decided by Go's regexp parser. This module parses that
//! text with Go's rules (Perl flags, no multi-line mode) and answers "does it match
//! anywhere" with a backtracking search over a small instruction program, visiting each
//! (instruction, position) at most once.
//!
//! Supported: literals, `.`, `^`, `$`, groups `(...)`, alternation `|`, the `*`, `+`, `?`
//! repetitions (with the lazy `?` suffix), classes with ranges, negation, POSIX names
//! (`[:alpha:]`) and Perl classes, the escapes `\d\D\s\S\w\W`, `\A\z\b\B`, `\Q...\E`, octal
//! and hex escapes and the C escapes. Unicode classes (`\pL`, `\p{Greek}`) and counted
//! repetitions (`{n,m}`) cannot come out of patternmatcher's translation except through
//! escapes nobody writes in a `.dockerignore`; they are rejected as errors.

/// A regexp that failed to compile (patternmatcher reports `ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegexError(pub(crate) String);

#[derive(Debug, Clone)]
enum Node {
    Empty,
    Char(Pred),
    Assert(Assert),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u8,
        max_one: bool,
    },
}

#[derive(Debug, Clone)]
enum Pred {
    Lit(char),
    /// `.`: anything but a newline.
    Dot,
    /// A class as sorted inclusive ranges (already negated where needed).
    Class(Vec<(char, char)>),
}

impl Pred {
    fn matches(&self, c: char) -> bool {
        match self {
            Self::Lit(l) => *l == c,
            Self::Dot => c != '\n',
            Self::Class(ranges) => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assert {
    BeginText,
    EndText,
    WordBoundary,
    NotWordBoundary,
}

#[derive(Debug, Clone)]
enum Inst {
    Char(Pred),
    Assert(Assert),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// A compiled regular expression.
#[derive(Debug, Clone)]
pub(crate) struct Regex {
    prog: Vec<Inst>,
}

impl Regex {
    /// Parses `text` with Go's rules.
    pub(crate) fn new(text: &str) -> Result<Self, RegexError> {
        let chars: Vec<char> = text.chars().collect();
        let mut p = Parser {
            chars: &chars,
            pos: 0,
        };
        let node = p.alternation()?;
        if p.pos != chars.len() {
            // Only an unmatched `)` stops the top level early.
            return Err(RegexError("unexpected )".to_owned()));
        }
        let mut prog = Vec::new();
        compile(&node, &mut prog);
        prog.push(Inst::Match);
        Ok(Self { prog })
    }

    /// Whether the expression matches somewhere in `text` (Go's `MatchString`).
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let width = chars.len() + 1;
        let mut visited = vec![false; self.prog.len() * width];
        (0..=chars.len()).any(|start| self.run(&chars, start, &mut visited, width))
    }

    fn run(&self, chars: &[char], start: usize, visited: &mut [bool], width: usize) -> bool {
        let mut stack = vec![(0usize, start)];
        while let Some((pc, pos)) = stack.pop() {
            let seen = &mut visited[pc * width + pos];
            if *seen {
                continue;
            }
            *seen = true;
            match &self.prog[pc] {
                Inst::Match => return true,
                Inst::Char(pred) => {
                    if chars.get(pos).is_some_and(|&c| pred.matches(c)) {
                        stack.push((pc + 1, pos + 1));
                    }
                }
                Inst::Assert(a) => {
                    if assert_holds(*a, chars, pos) {
                        stack.push((pc + 1, pos));
                    }
                }
                Inst::Jmp(t) => stack.push((*t, pos)),
                Inst::Split(a, b) => {
                    stack.push((*b, pos));
                    stack.push((*a, pos));
                }
            }
        }
        false
    }
}

fn is_word(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
}

fn assert_holds(a: Assert, chars: &[char], pos: usize) -> bool {
    let boundary = || {
        let before = pos.checked_sub(1).and_then(|i| chars.get(i));
        is_word(before) != is_word(chars.get(pos))
    };
    match a {
        Assert::BeginText => pos == 0,
        Assert::EndText => pos == chars.len(),
        Assert::WordBoundary => boundary(),
        Assert::NotWordBoundary => !boundary(),
    }
}

fn compile(node: &Node, prog: &mut Vec<Inst>) {
    match node {
        Node::Empty => {}
        Node::Char(p) => prog.push(Inst::Char(p.clone())),
        Node::Assert(a) => prog.push(Inst::Assert(*a)),
        Node::Concat(nodes) => nodes.iter().for_each(|n| compile(n, prog)),
        Node::Alt(nodes) => {
            // split L1, next; L1: a; jmp end; next: split L2, ...
            let mut jumps = Vec::new();
            for (i, n) in nodes.iter().enumerate() {
                if i + 1 < nodes.len() {
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, 0));
                    compile(n, prog);
                    jumps.push(prog.len());
                    prog.push(Inst::Jmp(0));
                    let next = prog.len();
                    prog[split] = Inst::Split(split + 1, next);
                } else {
                    compile(n, prog);
                }
            }
            let end = prog.len();
            for j in jumps {
                prog[j] = Inst::Jmp(end);
            }
        }
        Node::Repeat { node, min, max_one } => match (min, max_one) {
            // x?
            (0, true) => {
                let split = prog.len();
                prog.push(Inst::Split(split + 1, 0));
                compile(node, prog);
                let end = prog.len();
                prog[split] = Inst::Split(split + 1, end);
            }
            // x*
            (0, false) => {
                let split = prog.len();
                prog.push(Inst::Split(split + 1, 0));
                compile(node, prog);
                prog.push(Inst::Jmp(split));
                let end = prog.len();
                prog[split] = Inst::Split(split + 1, end);
            }
            // x+
            _ => {
                let start = prog.len();
                compile(node, prog);
                let split = prog.len();
                prog.push(Inst::Split(start, split + 1));
            }
        },
    }
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

fn err<T>(msg: &str) -> Result<T, RegexError> {
    Err(RegexError(msg.to_owned()))
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn alternation(&mut self) -> Result<Node, RegexError> {
        let mut alts = vec![self.concat()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alts.push(self.concat()?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alt(alts)
        })
    }

    fn concat(&mut self) -> Result<Node, RegexError> {
        let mut items: Vec<Node> = Vec::new();
        // Whether the previous item was a repetition (Go rejects `a**`).
        let mut last_repeat = false;
        while let Some(c) = self.peek() {
            match c {
                '|' | ')' => break,
                '*' | '+' | '?' => {
                    self.pos += 1;
                    if self.peek() == Some('?') {
                        self.pos += 1; // lazy: same language
                    }
                    if last_repeat {
                        return err("invalid nested repetition operator");
                    }
                    let Some(prev) = items.pop() else {
                        return err("missing argument to repetition operator");
                    };
                    items.push(Node::Repeat {
                        node: Box::new(prev),
                        min: u8::from(c == '+'),
                        max_one: c == '?',
                    });
                    last_repeat = true;
                    continue;
                }
                '{' if self.counted_repeat_ahead() => {
                    return err("counted repetition is not supported");
                }
                _ => {}
            }
            last_repeat = false;
            let node = match c {
                '(' => {
                    self.pos += 1;
                    if self.peek() == Some('?') {
                        return err("group flags are not supported");
                    }
                    let inner = self.alternation()?;
                    if self.peek() != Some(')') {
                        return err("missing closing )");
                    }
                    self.pos += 1;
                    inner
                }
                '.' => {
                    self.pos += 1;
                    Node::Char(Pred::Dot)
                }
                '^' => {
                    self.pos += 1;
                    Node::Assert(Assert::BeginText)
                }
                '$' => {
                    self.pos += 1;
                    Node::Assert(Assert::EndText)
                }
                '[' => Node::Char(Pred::Class(self.class()?)),
                '\\' => self.escape_atom()?,
                c => {
                    self.pos += 1;
                    Node::Char(Pred::Lit(c))
                }
            };
            items.push(node);
        }
        Ok(match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap_or(Node::Empty),
            _ => Node::Concat(items),
        })
    }

    /// Whether a `{` here starts `{n}`, `{n,}` or `{n,m}` (otherwise it is a literal).
    fn counted_repeat_ahead(&self) -> bool {
        let rest: String = self.chars[self.pos..].iter().take(32).collect();
        let Some(end) = rest.find('}') else {
            return false;
        };
        let body = &rest[1..end];
        let (a, b) = body.split_once(',').unwrap_or((body, "0"));
        !a.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    }

    fn escape_atom(&mut self) -> Result<Node, RegexError> {
        match self.peek_at(1) {
            Some('A') => {
                self.pos += 2;
                return Ok(Node::Assert(Assert::BeginText));
            }
            Some('z') => {
                self.pos += 2;
                return Ok(Node::Assert(Assert::EndText));
            }
            Some('b') => {
                self.pos += 2;
                return Ok(Node::Assert(Assert::WordBoundary));
            }
            Some('B') => {
                self.pos += 2;
                return Ok(Node::Assert(Assert::NotWordBoundary));
            }
            Some('C') => return err("invalid escape sequence: \\C"),
            Some('Q') => {
                self.pos += 2;
                let mut lits = Vec::new();
                while let Some(c) = self.peek() {
                    if c == '\\' && self.peek_at(1) == Some('E') {
                        self.pos += 2;
                        break;
                    }
                    lits.push(Node::Char(Pred::Lit(c)));
                    self.pos += 1;
                }
                return Ok(Node::Concat(lits));
            }
            Some('p' | 'P') => return err("Unicode classes are not supported"),
            _ => {}
        }
        if let Some(ranges) = self.perl_class() {
            return Ok(Node::Char(Pred::Class(ranges)));
        }
        Ok(Node::Char(Pred::Lit(self.escape_char()?)))
    }

    /// `\d`, `\s`, `\w` and their negations, at the current `\`.
    fn perl_class(&mut self) -> Option<Vec<(char, char)>> {
        let (ranges, negated): (&[(char, char)], bool) = match self.peek_at(1)? {
            'd' => (DIGIT, false),
            'D' => (DIGIT, true),
            's' => (PERL_SPACE, false),
            'S' => (PERL_SPACE, true),
            'w' => (WORD, false),
            'W' => (WORD, true),
            _ => return None,
        };
        self.pos += 2;
        Some(if negated {
            negate(ranges.to_vec())
        } else {
            ranges.to_vec()
        })
    }

    /// One escaped character at the current `\` (Go's `parseEscape`).
    fn escape_char(&mut self) -> Result<char, RegexError> {
        self.pos += 1;
        let Some(c) = self.peek() else {
            return err("trailing backslash at end of expression");
        };
        self.pos += 1;
        match c {
            '1'..='7' if !self.peek().is_some_and(|d| ('0'..='7').contains(&d)) => {
                err("invalid escape sequence")
            }
            '0'..='7' => {
                let mut r = c as u32 - '0' as u32;
                for _ in 1..3 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            r = r * 8 + (d as u32 - '0' as u32);
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                char::from_u32(r).ok_or(RegexError("invalid escape sequence".to_owned()))
            }
            'x' => self.hex_escape(),
            'a' => Ok('\u{7}'),
            'f' => Ok('\u{c}'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            'v' => Ok('\u{b}'),
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c),
            _ => err("invalid escape sequence"),
        }
    }

    fn hex_escape(&mut self) -> Result<char, RegexError> {
        let bad = || RegexError("invalid escape sequence".to_owned());
        if self.peek() == Some('{') {
            self.pos += 1;
            let mut v: u32 = 0;
            let mut n = 0;
            loop {
                let c = self.peek().ok_or_else(bad)?;
                self.pos += 1;
                if c == '}' {
                    break;
                }
                let d = c.to_digit(16).ok_or_else(bad)?;
                v = v.checked_mul(16).ok_or_else(bad)? + d;
                if v > 0x10ffff {
                    return Err(bad());
                }
                n += 1;
            }
            if n == 0 {
                return Err(bad());
            }
            return char::from_u32(v).ok_or_else(bad);
        }
        let hi = self.peek().and_then(|c| c.to_digit(16)).ok_or_else(bad)?;
        let lo = self
            .peek_at(1)
            .and_then(|c| c.to_digit(16))
            .ok_or_else(bad)?;
        self.pos += 2;
        char::from_u32(hi * 16 + lo).ok_or_else(bad)
    }

    /// A bracket expression at the current `[` (Go's `parseClass`).
    fn class(&mut self) -> Result<Vec<(char, char)>, RegexError> {
        self.pos += 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            match self.peek() {
                None => return err("missing closing ]"),
                Some(']') if !first => break,
                _ => {}
            }
            first = false;
            if self.peek() == Some('[') && self.peek_at(1) == Some(':') {
                if let Some(named) = self.named_class()? {
                    ranges.extend(named);
                    continue;
                }
            }
            if self.peek() == Some('\\') {
                if matches!(self.peek_at(1), Some('p' | 'P')) {
                    return err("Unicode classes are not supported");
                }
                if let Some(perl) = self.perl_class() {
                    ranges.extend(perl);
                    continue;
                }
            }
            let lo = self.class_char()?;
            let mut hi = lo;
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                hi = self.class_char()?;
                if hi < lo {
                    return err("invalid character class range");
                }
            }
            ranges.push((lo, hi));
        }
        self.pos += 1; // `]`
        Ok(if negated {
            negate(ranges)
        } else {
            normalize(ranges)
        })
    }

    fn class_char(&mut self) -> Result<char, RegexError> {
        match self.peek() {
            None => err("missing closing ]"),
            Some('\\') => self.escape_char(),
            Some(c) => {
                self.pos += 1;
                Ok(c)
            }
        }
    }

    /// `[:name:]` or `[:^name:]`; `None` when there is no closing `:]`.
    fn named_class(&mut self) -> Result<Option<Vec<(char, char)>>, RegexError> {
        let rest = &self.chars[self.pos + 2..];
        let Some(end) = rest.windows(2).position(|w| w == [':', ']']) else {
            return Ok(None);
        };
        let name: String = rest[..end].iter().collect();
        let (negated, base) = match name.strip_prefix('^') {
            Some(b) => (true, b),
            None => (false, name.as_str()),
        };
        let ranges: &[(char, char)] = match base {
            "alnum" => &[('0', '9'), ('A', 'Z'), ('a', 'z')],
            "alpha" => &[('A', 'Z'), ('a', 'z')],
            "ascii" => &[('\0', '\u{7f}')],
            "blank" => &[('\t', '\t'), (' ', ' ')],
            "cntrl" => &[('\0', '\u{1f}'), ('\u{7f}', '\u{7f}')],
            "digit" => DIGIT,
            "graph" => &[('!', '~')],
            "lower" => &[('a', 'z')],
            "print" => &[(' ', '~')],
            "punct" => &[('!', '/'), (':', '@'), ('[', '`'), ('{', '~')],
            "space" => &[('\t', '\r'), (' ', ' ')],
            "upper" => &[('A', 'Z')],
            "word" => WORD,
            "xdigit" => &[('0', '9'), ('A', 'F'), ('a', 'f')],
            _ => return err("invalid character class range"),
        };
        self.pos += 2 + end + 2;
        Ok(Some(if negated {
            negate(ranges.to_vec())
        } else {
            ranges.to_vec()
        }))
    }
}

const DIGIT: &[(char, char)] = &[('0', '9')];
const PERL_SPACE: &[(char, char)] = &[('\t', '\n'), ('\u{c}', '\r'), (' ', ' ')];
const WORD: &[(char, char)] = &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];

fn normalize(mut ranges: Vec<(char, char)>) -> Vec<(char, char)> {
    ranges.sort_unstable();
    let mut out: Vec<(char, char)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if (lo as u32) <= (last.1 as u32).saturating_add(1) => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn negate(ranges: Vec<(char, char)>) -> Vec<(char, char)> {
    let mut out = Vec::new();
    let mut next: u32 = 0;
    for (lo, hi) in normalize(ranges) {
        if (lo as u32) > next {
            push_range(&mut out, next, lo as u32 - 1);
        }
        next = hi as u32 + 1;
    }
    push_range(&mut out, next, 0x10ffff);
    out
}

/// Pushes [lo, hi] as chars, leaving out the surrogate gap.
fn push_range(out: &mut Vec<(char, char)>, lo: u32, hi: u32) {
    if lo > hi {
        return;
    }
    let parts = [(lo, hi.min(0xd7ff)), (lo.max(0xe000), hi)];
    for (a, b) in parts {
        if a <= b {
            if let (Some(a), Some(b)) = (char::from_u32(a), char::from_u32(b)) {
                out.push((a, b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(re: &str, s: &str) -> bool {
        Regex::new(re).unwrap().is_match(s)
    }

    #[test]
    fn basics() {
        assert!(m("^[^/]*$", "abc"));
        assert!(!m("^[^/]*$", "a/c"));
        assert!(m("^(.*/)?dir2/[^/]*$", "a/b/dir2/x"));
        assert!(m("^(.*/)?dir2/[^/]*$", "dir2/x"));
        assert!(!m("^(.*/)?dir2/[^/]*$", "adir2/x"));
        assert!(m(r"^a\.\|\)\$\(\}\+\{bc$", "a.|)$(}+{bc"));
        assert!(m(r"^\d$", "5"));
        assert!(!m(r"^\d$", "d"));
        assert!(m("^[]a]$", "]"));
        assert!(m("^[[^/]*]$", "[^]"));
        assert!(m("^[[:alpha:]]$", "q"));
        assert!(!m("^.$", "\n"));
        assert!(m("^[^a]$", "\n"));
        assert!(m("^a|b$", "xb"));
    }

    #[test]
    fn errors() {
        assert!(Regex::new("^[Local-Only]/$").is_err());
        assert!(Regex::new("^[a").is_err());
        assert!(Regex::new("a**").is_err());
        assert!(Regex::new(r"\q").is_err());
        assert!(Regex::new(r"\8").is_err());
        assert!(Regex::new("[[:bogus:]]").is_err());
        assert!(Regex::new("*a").is_err());
        assert!(Regex::new("a)").is_err());
    }

    #[test]
    fn no_blowup() {
        let re = Regex::new("^(.*/)?(.*/)?(.*/)?(.*/)?(.*/)?x$").unwrap();
        assert!(!re.is_match(&"a/".repeat(2000)));
    }
}
