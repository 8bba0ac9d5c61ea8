//! Instruction flags (BuildKit's `BFlags`): `--name=value`, boolean `--name`,
//! repeatable flags, unknown flags rejected with a suggestion.

use super::suggest::suggest;
use crate::ast::Spanned;
use crate::error::{Error, FlagProblem};

/// The type of a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--link`, `--link=true`, `--link=false`.
    Bool,
    /// `--from=x`, once.
    String,
    /// `--exclude=x`, repeatable.
    Strings,
}

/// The flags given to one instruction, by name.
#[derive(Debug, Default)]
pub struct Flags<'d> {
    values: Vec<(&'d str, Vec<Spanned<String>>)>,
}

impl Flags<'_> {
    fn get(&self, name: &str) -> Option<&Vec<Spanned<String>>> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The single value of a string flag, if given.
    pub fn string(&self, name: &str) -> Option<Spanned<String>> {
        self.get(name).and_then(|v| v.last().cloned())
    }

    /// A boolean flag: `None` when not given.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.get(name)
            .and_then(|v| v.last())
            .map(|v| v.value == "true")
    }

    /// All values of a repeatable flag, in order.
    pub fn strings(&self, name: &str) -> Vec<Spanned<String>> {
        self.get(name).cloned().unwrap_or_default()
    }

    /// The names of the flags given, sorted.
    pub fn used(&self) -> Vec<String> {
        let mut v: Vec<String> = self.values.iter().map(|(n, _)| (*n).to_owned()).collect();
        v.sort();
        v
    }
}

/// Parses flag words against their definitions.
pub fn parse_flags<'d>(
    instruction: &'static str,
    defs: &[(&'d str, FlagKind)],
    args: &[Spanned<String>],
) -> Result<Flags<'d>, Error> {
    let mut flags = Flags::default();
    for a in args {
        if a.value == "--" {
            // Everything after `--` is not a flag.
            break;
        }
        let bad = |problem| Error::BadFlag {
            problem,
            span: a.span,
        };
        let Some(body) = a.value.strip_prefix("--") else {
            return Err(bad(FlagProblem::NotAFlag {
                word: a.value.clone(),
            }));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let flag = || format!("--{name}");
        let Some(&(def_name, kind)) = defs.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = defs.iter().map(|(n, _)| *n).collect();
            return Err(Error::UnknownFlag {
                flag: flag(),
                instruction,
                suggestion: suggest(name, &names, true),
                span: a.span,
            });
        };
        let i = match flags.values.iter().position(|(n, _)| *n == def_name) {
            Some(i) => i,
            None => {
                flags.values.push((def_name, Vec::new()));
                flags.values.len() - 1
            }
        };
        let entry = &mut flags.values[i].1;
        if !entry.is_empty() && kind != FlagKind::Strings {
            return Err(bad(FlagProblem::Duplicate { flag: flag() }));
        }
        let stored = match (kind, value) {
            (FlagKind::Bool, Some("")) => {
                return Err(bad(FlagProblem::MissingValue { flag: flag() }));
            }
            (FlagKind::Bool, None) => "true".to_owned(),
            (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                "true" => "true".to_owned(),
                "false" => "false".to_owned(),
                _ => {
                    return Err(bad(FlagProblem::NotBoolean {
                        flag: flag(),
                        value: v.to_owned(),
                    }));
                }
            },
            (_, None) => return Err(bad(FlagProblem::MissingValue { flag: flag() })),
            (_, Some(v)) => v.to_owned(),
        };
        // The span of the value: after `--name=` when the flag word is written
        // plainly, else the whole flag. An ASCII value as long as its one-line
        // source is the source itself: quotes and escapes would have shortened it,
        // other bytes would have made it non-ASCII.
        let mut span = a.span;
        let prefix = name.len() + 3;
        let plain = a.value.is_ascii()
            && span.start_line == span.end_line
            && span.end - span.start == a.value.len();
        if value.is_some() && plain && prefix <= a.value.len() {
            span.start += prefix;
            span.start_column += u32::try_from(name.chars().count() + 3).unwrap_or(0);
        }
        entry.push(Spanned::new(stored, span));
    }
    Ok(flags)
}
