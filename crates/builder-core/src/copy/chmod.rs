//! `--chmod` values: an octal number up to 07777, or a symbolic mode as chmod(1) takes it
//! (`u=rwX,go=rX`, `+x`, `go-w`, `u=g`), applied with a zero umask as BuildKit does.

use std::fmt;

const SUID: u32 = 0o4000;
const SGID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o0007;
const STANDARD: u32 = 0o6777;
const X_ALL: u32 = 0o111;

/// One step of a symbolic mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Set these bits.
    Add(u32),
    /// Clear these bits.
    Remove(u32),
    /// Set these execute bits if the original mode has any execute bit or is a directory.
    AddX(u32),
    /// Copy the permission triple of one class (`from_shift`: 6 user, 3 group, 0 other)
    /// into the classes in `to` (a mask of 0o700/0o070/0o007), clearing them first for `=`.
    Copy { from_shift: u32, to: u32, op: u8 },
}

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    /// An absolute mode (`0755`), at most 07777.
    Octal(u32),
    /// A symbolic mode and the steps it stands for.
    Symbolic(String, Vec<StepList>),
}

/// The steps of one comma-separated clause (kept per clause for debugging only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepList(Vec<Step>);

/// Why a `--chmod` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChmodError {
    /// Looks numeric but is not an octal number up to 07777 (BuildKit's message).
    NotOctal,
    /// Not a valid symbolic mode.
    Syntax,
}

impl fmt::Display for Chmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chmod::Octal(m) => write!(f, "{m:04o}"),
            Chmod::Symbolic(s, _) => f.write_str(s),
        }
    }
}

impl Chmod {
    /// Parses a `--chmod` value as BuildKit does: `strconv.ParseUint(v, 8, 32)` first (at
    /// most 07777), else a symbolic mode; a value that starts with a digit but is not octal
    /// gets the octal error.
    pub(crate) fn parse(value: &str) -> Result<Chmod, ChmodError> {
        if !value.is_empty() && value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return match u32::from_str_radix(value, 8) {
                Ok(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
                _ => Err(ChmodError::NotOctal),
            };
        }
        if value.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            return Err(ChmodError::NotOctal);
        }
        parse_symbolic(value).map(|steps| Chmod::Symbolic(value.to_owned(), steps))
    }

    /// The mode BuildKit gives directories it creates for the destination: the octal mode
    /// itself, or 0755 for a symbolic one.
    pub(crate) fn created_dir_mode(&self) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(..) => 0o755,
        }
    }

    /// The permission bits (07777) of an entry whose current bits are `mode`.
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(_, clauses) => {
                let orig = mode & 0o7777;
                let mut m = orig;
                for step in clauses.iter().flat_map(|c| c.0.iter()) {
                    match *step {
                        Step::Add(bits) => m |= bits,
                        Step::Remove(bits) => m &= !bits,
                        Step::AddX(bits) => {
                            if orig & X_ALL != 0 || is_dir {
                                m |= bits;
                            }
                        }
                        Step::Copy { from_shift, to, op } => {
                            let value = (m >> from_shift) & 0o7;
                            let spread = |v: u32| ((v << 6) | (v << 3) | v) & to;
                            if op != b'+' {
                                // `-` clears the copied bits, `=` clears the whole class.
                                let clear = if op == b'=' { 0o7 } else { value };
                                m &= !spread(clear);
                            }
                            if op != b'-' {
                                m |= spread(value);
                            }
                        }
                    }
                }
                m & 0o7777
            }
        }
    }
}

/// Parses a symbolic mode: clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` separated by commas,
/// with BSD setmode's rules (including its quirks: `t` narrows an unqualified clause).
fn parse_symbolic(s: &str) -> Result<Vec<StepList>, ChmodError> {
    if s.is_empty() {
        return Err(ChmodError::Syntax);
    }
    let mut out = Vec::new();
    for clause in s.split(',') {
        let b = clause.as_bytes();
        let mut i = 0;
        let mut who = 0u32;
        while i < b.len() {
            match b[i] {
                b'a' => who |= STANDARD,
                b'u' => who |= USER,
                b'g' => who |= GROUP,
                b'o' => who |= OTHER,
                _ => break,
            }
            i += 1;
        }
        if i == b.len() {
            return Err(ChmodError::Syntax);
        }
        let mut steps = Vec::new();
        while i < b.len() {
            let op = b[i];
            if !matches!(op, b'+' | b'-' | b'=') {
                return Err(ChmodError::Syntax);
            }
            i += 1;
            who &= !STICKY;
            let mut equal_done = false;
            let mut perm = 0u32;
            let mut perm_x = 0u32;
            while i < b.len() && !matches!(b[i], b'+' | b'-' | b'=') {
                match b[i] {
                    b'r' => perm |= 0o444,
                    b'w' => perm |= 0o222,
                    b'x' => perm |= X_ALL,
                    b'X' => {
                        if op == b'+' {
                            perm_x = X_ALL;
                        }
                    }
                    b's' => {
                        if who == 0 || who & !OTHER != 0 {
                            perm |= SUID | SGID;
                        }
                    }
                    b't' => {
                        if who == 0 || who & !OTHER != 0 {
                            who |= STICKY;
                            perm |= STICKY;
                        }
                    }
                    c @ (b'u' | b'g' | b'o') => {
                        if perm != 0 {
                            push_op(&mut steps, op, who, perm);
                            perm = 0;
                        }
                        if op == b'=' {
                            equal_done = true;
                        }
                        if perm_x != 0 {
                            steps.push(Step::AddX(select(who, perm_x)));
                            perm_x = 0;
                        }
                        let from_shift = match c {
                            b'u' => 6,
                            b'g' => 3,
                            _ => 0,
                        };
                        let to = if who == 0 {
                            0o777
                        } else {
                            (if who & 0o400 != 0 { 0o700 } else { 0 })
                                | (if who & 0o040 != 0 { 0o070 } else { 0 })
                                | (if who & 0o004 != 0 { 0o007 } else { 0 })
                        };
                        steps.push(Step::Copy { from_shift, to, op });
                    }
                    _ => return Err(ChmodError::Syntax),
                }
                i += 1;
            }
            if perm != 0 || (op == b'=' && !equal_done) {
                push_op(&mut steps, op, who, perm);
            }
            if perm_x != 0 {
                steps.push(Step::AddX(select(who, perm_x)));
            }
        }
        out.push(StepList(steps));
    }
    Ok(out)
}

/// The bits of `perm` a clause for `who` touches (every class when `who` is empty).
fn select(who: u32, perm: u32) -> u32 {
    if who == 0 { perm } else { who & perm }
}

fn push_op(steps: &mut Vec<Step>, op: u8, who: u32, perm: u32) {
    match op {
        b'-' => steps.push(Step::Remove(select(who, perm))),
        b'+' => steps.push(Step::Add(select(who, perm))),
        _ => {
            steps.push(Step::Remove(if who == 0 { STANDARD } else { who }));
            steps.push(Step::Add(select(who, perm)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(s).unwrap().apply(mode, dir)
    }

    #[test]
    fn cp_14_octal_values_and_bounds() {
        assert_eq!(Chmod::parse("0644"), Ok(Chmod::Octal(0o644)));
        assert_eq!(Chmod::parse("0"), Ok(Chmod::Octal(0)));
        assert_eq!(Chmod::parse("7777"), Ok(Chmod::Octal(0o7777)));
        assert_eq!(Chmod::parse("10000"), Err(ChmodError::NotOctal));
        assert_eq!(Chmod::parse("64a"), Err(ChmodError::NotOctal));
        assert_eq!(Chmod::parse("8"), Err(ChmodError::NotOctal));
        assert_eq!(Chmod::parse(""), Err(ChmodError::Syntax));
        assert_eq!(Chmod::parse("u=rwz"), Err(ChmodError::Syntax));
        assert_eq!(Chmod::parse("u"), Err(ChmodError::Syntax));
        assert_eq!(Chmod::parse("null"), Err(ChmodError::Syntax));
    }

    #[test]
    fn cp_14_symbolic_modes_behave_like_chmod() {
        assert_eq!(sym("+x", 0o644, false), 0o755);
        // BuildKit's mode package honours X only with `+` (`u=rwX` is `u=rw`).
        assert_eq!(sym("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(sym("u=rwX,go=rX", 0o700, true), 0o644);
        assert_eq!(sym("=rw,+X", 0o666, false), 0o666);
        assert_eq!(sym("=rw,+X", 0o766, false), 0o777);
        assert_eq!(sym("=rw,+X", 0o600, true), 0o777);
        assert_eq!(sym("-X", 0o777, false), 0o777);
        assert_eq!(sym("go-w", 0o777, false), 0o755);
        assert_eq!(sym("a=r", 0o777, false), 0o444);
        assert_eq!(sym("=", 0o4777, false), 0);
        assert_eq!(sym("u=g", 0o640, false), 0o440);
        assert_eq!(sym("go=u-w", 0o700, false), 0o755);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("+t", 0o755, true), 0o1755);
        assert_eq!(sym("o+t", 0o755, true), 0o755);
        assert_eq!(sym("a-x", 0o755, false), 0o644);
        assert_eq!(sym("u+x,g+w", 0o600, false), 0o720);
        // X looks at the original mode, not at bits added earlier in the same value.
        assert_eq!(sym("u+x,g+X", 0o600, false), 0o700);
    }
}
