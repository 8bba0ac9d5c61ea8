//! Go's character classes, which BuildKit's parser is written against.

use unicode_general_category::{GeneralCategory as Gc, get_general_category};

/// Go's `unicode.IsSpace` (the same set as Rust's White_Space property).
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `unicode.IsSpace(rune(b))` applied to one byte, as BuildKit's flag and
/// HEALTHCHECK scanners do: bytes 0x85 and 0xA0 count as spaces.
pub(crate) fn is_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// The character class `[\t\v\f\r ]` (BuildKit's `reWhitespace`).
pub(crate) fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Go regexp's `\s`: `[\t\n\f\r ]`.
pub(crate) fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the
/// ASCII space.
pub(crate) fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_ascii() {
        return c.is_ascii_graphic();
    }
    !matches!(
        get_general_category(c),
        Gc::Control
            | Gc::Format
            | Gc::Surrogate
            | Gc::PrivateUse
            | Gc::Unassigned
            | Gc::SpaceSeparator
            | Gc::LineSeparator
            | Gc::ParagraphSeparator
    )
}

/// Go's `unicode.IsLetter` (general category L).
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(
        get_general_category(c),
        Gc::UppercaseLetter
            | Gc::LowercaseLetter
            | Gc::TitlecaseLetter
            | Gc::ModifierLetter
            | Gc::OtherLetter
    )
}

/// Go's `unicode.IsDigit` (general category Nd).
pub(crate) fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    get_general_category(c) == Gc::DecimalNumber
}

/// Go's `strings.ToLower` (simple case mapping, one character for one).
pub(crate) fn to_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars().map(simple_lower).collect()
}

/// Go's `strings.ToUpper` (simple case mapping).
pub(crate) fn to_upper(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_uppercase();
    }
    s.chars().map(simple_upper).collect()
}

fn simple_lower(c: char) -> char {
    let mut it = c.to_lowercase();
    match (it.next(), it.next()) {
        (Some(l), None) => l,
        // U+0130 (İ) is the only character whose full lower-case mapping is longer;
        // its simple mapping is 'i'.
        (Some(l), Some(_)) => l,
        _ => c,
    }
}

fn simple_upper(c: char) -> char {
    let mut it = c.to_uppercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        // Full mappings such as 'ß' -> "SS" have no simple mapping: Go keeps them.
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_classes() {
        assert!(is_print('é'));
        assert!(is_print('♥'));
        assert!(is_print(' '));
        assert!(!is_print('\u{a0}'));
        assert!(!is_print('\u{7f}'));
        assert!(!is_print('\u{200b}'));
        assert!(!is_print('\u{e000}'));
    }

    #[test]
    fn case_mapping_like_go() {
        assert_eq!(to_lower("FROM"), "from");
        assert_eq!(to_lower("İ"), "i");
        assert_eq!(to_upper("straße"), "STRAßE");
        assert!(is_letter('ä') && !is_letter('1') && is_digit('٣'));
    }
}
