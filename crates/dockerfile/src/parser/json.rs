//! The JSON that Dockerfiles use: exec-form string arrays and the `{"syntax": ...}`
//! directive fallback. It follows Go's `encoding/json` as BuildKit calls it
//! (`json.Unmarshal` into `[]any` / `map[string]any`), including what makes that
//! call fail: invalid syntax, nesting deeper than 10000, numbers that overflow a
//! float64, and lone surrogates decoding to U+FFFD. Containers are skipped
//! iteratively, so no input can exhaust the stack.

use std::ops::Range;

const MAX_DEPTH: usize = 10000;

/// Outcome of reading an exec-form argument.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonArray {
    /// Not a JSON array: the shell form applies.
    NotJson,
    /// A valid array with an element that is not a string.
    NotStrings,
    /// The strings, each with its byte range (quotes included) in the input.
    Strings(Vec<(String, Range<usize>)>),
}

/// Reads `text` (leading whitespace allowed) as a JSON array of strings.
pub(crate) fn parse_string_array(text: &str) -> JsonArray {
    let start = text.len() - text.trim_start_matches(super::unicode::is_space).len();
    if !text[start..].starts_with('[') {
        return JsonArray::NotJson;
    }
    let mut p = Parser::new(text, start);
    let Some(items) = p.top_array() else {
        return JsonArray::NotJson;
    };
    if p.overflow {
        return JsonArray::NotJson;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Some(s) => out.push(s),
            None => return JsonArray::NotStrings,
        }
    }
    JsonArray::Strings(out)
}

/// `json.Unmarshal(text, &map[string]any{})` then `m[key].(string)`.
pub(crate) fn object_string_member(text: &str, key: &str) -> Option<String> {
    let mut p = Parser::new(text, 0);
    let found = p.top_object(key)?;
    if p.overflow {
        return None;
    }
    found
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    overflow: bool,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, pos: usize) -> Self {
        Parser {
            s: text.as_bytes(),
            text,
            pos,
            overflow: false,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn at_end(&mut self) -> bool {
        self.ws();
        self.pos == self.s.len()
    }

    /// A whole-input array; each element is `Some(string)` or `None` for a
    /// non-string. `None` overall on a syntax error.
    #[allow(clippy::type_complexity)]
    fn top_array(&mut self) -> Option<Vec<Option<(String, Range<usize>)>>> {
        self.ws();
        if !self.eat(b'[') {
            return None;
        }
        let mut items = Vec::new();
        self.ws();
        if !self.eat(b']') {
            loop {
                self.ws();
                if self.s.get(self.pos) == Some(&b'"') {
                    let start = self.pos;
                    let v = self.string()?;
                    items.push(Some((v, start..self.pos)));
                } else {
                    self.skip_value(1)?;
                    items.push(None);
                }
                self.ws();
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b']') {
                    break;
                }
                return None;
            }
        }
        if !self.at_end() {
            return None;
        }
        Some(items)
    }

    /// A whole-input object (or `null`); the string value of `key` (last
    /// occurrence wins), `Some(None)` when absent or not a string.
    fn top_object(&mut self, key: &str) -> Option<Option<String>> {
        self.ws();
        if self.s[self.pos..].starts_with(b"null") {
            self.pos += 4;
            return self.at_end().then_some(None);
        }
        if !self.eat(b'{') {
            return None;
        }
        let mut found = None;
        self.ws();
        if !self.eat(b'}') {
            loop {
                self.ws();
                if self.s.get(self.pos) != Some(&b'"') {
                    return None;
                }
                let k = self.string()?;
                self.ws();
                if !self.eat(b':') {
                    return None;
                }
                self.ws();
                let is_key = k == key;
                if self.s.get(self.pos) == Some(&b'"') {
                    let v = self.string()?;
                    if is_key {
                        found = Some(v);
                    }
                } else {
                    self.skip_value(1)?;
                    if is_key {
                        found = None;
                    }
                }
                self.ws();
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b'}') {
                    break;
                }
                return None;
            }
        }
        if !self.at_end() {
            return None;
        }
        Some(found)
    }

    /// Skips one value without recursion; `depth` is the nesting level of the
    /// container holding it.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        // Stack of open containers: b'[' or b'{'.
        let mut stack: Vec<u8> = Vec::new();
        loop {
            self.ws();
            // A value.
            match *self.s.get(self.pos)? {
                b'"' => {
                    self.string()?;
                }
                b'[' | b'{' => {
                    let open = self.s[self.pos];
                    self.pos += 1;
                    if depth + stack.len() + 1 > MAX_DEPTH {
                        return None;
                    }
                    stack.push(open);
                    self.ws();
                    let close = if open == b'[' { b']' } else { b'}' };
                    if self.eat(close) {
                        stack.pop();
                    } else {
                        if open == b'{' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&open) = stack.last() else {
                    return Some(());
                };
                self.ws();
                if self.eat(b',') {
                    if open == b'{' {
                        self.ws();
                        self.member_key()?;
                    }
                    break;
                }
                let close = if open == b'[' { b']' } else { b'}' };
                if self.eat(close) {
                    stack.pop();
                    continue;
                }
                return None;
            }
        }
    }

    fn member_key(&mut self) -> Option<()> {
        self.ws();
        if self.s.get(self.pos) != Some(&b'"') {
            return None;
        }
        self.string()?;
        self.ws();
        self.eat(b':').then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        self.eat(b'-');
        match self.s.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if matches!(self.s.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return None;
            }
        }
        // Go decodes numbers into float64 and fails on overflow.
        let v: f64 = self.text[start..self.pos].parse().ok()?;
        if v.is_infinite() {
            self.overflow = true;
        }
        Some(())
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.s.get(at..at + 4)?;
        let mut v = 0u32;
        for &b in h {
            v = v * 16 + (b as char).to_digit(16)?;
        }
        Some(v)
    }

    /// A string starting at the opening quote; returns it decoded.
    fn string(&mut self) -> Option<String> {
        debug_assert_eq!(self.s[self.pos], b'"');
        self.pos += 1;
        let mut out = String::new();
        let mut run = self.pos;
        loop {
            let b = *self.s.get(self.pos)?;
            match b {
                b'"' => {
                    out.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    out.push_str(&self.text[run..self.pos]);
                    let e = *self.s.get(self.pos + 1)?;
                    self.pos += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\x08'),
                        b'f' => out.push('\x0c'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let r = self.hex4(self.pos)?;
                            self.pos += 4;
                            if (0xd800..0xe000).contains(&r) {
                                // A surrogate: valid only as a high-low pair.
                                let pair = (self.s.get(self.pos) == Some(&b'\\')
                                    && self.s.get(self.pos + 1) == Some(&b'u'))
                                .then(|| self.hex4(self.pos + 2))
                                .flatten();
                                match pair {
                                    Some(lo)
                                        if (0xd800..0xdc00).contains(&r)
                                            && (0xdc00..0xe000).contains(&lo) =>
                                    {
                                        let c = 0x10000 + ((r - 0xd800) << 10) + (lo - 0xdc00);
                                        out.push(char::from_u32(c)?);
                                        self.pos += 6;
                                    }
                                    _ => out.push('\u{fffd}'),
                                }
                            } else {
                                out.push(char::from_u32(r)?);
                            }
                        }
                        _ => return None,
                    }
                    run = self.pos;
                }
                0..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &str) -> Vec<String> {
        match parse_string_array(s) {
            JsonArray::Strings(v) => v.into_iter().map(|(s, _)| s).collect(),
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn arrays() {
        assert_eq!(strings("[]"), Vec::<String>::new());
        assert_eq!(strings(" [ \"a\" , \"b\" ] "), ["a", "b"]);
        assert_eq!(
            strings(r#"["\ud83d\ude00\ud800x"]"#),
            ["\u{1f600}\u{fffd}x"]
        );
        assert_eq!(parse_string_array("['a']"), JsonArray::NotJson);
        assert_eq!(parse_string_array("[\"a\"] x"), JsonArray::NotJson);
        assert_eq!(parse_string_array("[\"a\", 1e400]"), JsonArray::NotJson);
        assert_eq!(
            parse_string_array("[\"a\", [1, {\"b\": [null]}]]"),
            JsonArray::NotStrings
        );
        assert_eq!(parse_string_array("[01]"), JsonArray::NotJson);
        assert_eq!(parse_string_array("[\"a\nb\"]"), JsonArray::NotJson);
        let deep = "[".repeat(20000);
        assert_eq!(parse_string_array(&deep), JsonArray::NotJson);
        let ok_deep = format!("[{}{}]", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_string_array(&ok_deep), JsonArray::NotStrings);
    }

    #[test]
    fn objects() {
        assert_eq!(
            object_string_member(r#"{"syntax": "foo", "bar": ["abc"]}"#, "syntax"),
            Some("foo".into())
        );
        assert_eq!(object_string_member(r#"{"syntax": "foo""#, "syntax"), None);
        assert_eq!(object_string_member("null", "syntax"), None);
    }
}
