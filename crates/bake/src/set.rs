//! `--set target.key=value`, with `*` and `?` globs in the target part.

use crate::Error;
use crate::model::{Definition, parse_attrs, parse_ssh};

/// Whether `name` matches the glob `pattern` (`*` any run, `?` one character).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name) || (!name.is_empty() && glob(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Applies `--set`s to the `selected` targets, in order. A list key's first `--set` for a
/// target replaces the list, later ones add to it (as buildx).
pub fn apply_set(def: &mut Definition, selected: &[String], sets: &[String]) -> Result<(), Error> {
    let mut replaced: Vec<(String, String)> = Vec::new();
    for spec in sets {
        let bad = |m: &str| Error::Set {
            spec: spec.clone(),
            message: m.to_owned(),
        };
        let (lhs, value) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected target.key=value"))?;
        let (pattern, key) = lhs
            .split_once('.')
            .ok_or_else(|| bad("expected target.key=value"))?;
        let matched: Vec<&String> = selected
            .iter()
            .filter(|t| glob(pattern.as_bytes(), t.as_bytes()))
            .collect();
        if matched.is_empty() {
            return Err(bad(&format!("no selected target matches {pattern:?}")));
        }
        for name in matched {
            let t = def.target.get_mut(name).expect("selected targets exist");
            let first = !replaced.contains(&(name.clone(), key.to_owned()));
            if first {
                replaced.push((name.clone(), key.to_owned()));
            }
            macro_rules! list {
                ($field:expr, $item:expr) => {{
                    if first {
                        $field.clear();
                    }
                    $field.push($item);
                }};
            }
            let bool_of = |v: &str| match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad("expected true or false")),
            };
            match key {
                "context" => t.context = Some(value.to_owned()),
                "dockerfile" => t.dockerfile = Some(value.to_owned()),
                "dockerfile-inline" => t.dockerfile_inline = Some(value.to_owned()),
                "target" => t.target = Some(value.to_owned()),
                "tags" => list!(t.tags, value.to_owned()),
                "platform" | "platforms" => {
                    if first {
                        t.platforms.clear();
                    }
                    t.platforms.extend(value.split(',').map(str::to_owned));
                }
                "annotations" => list!(t.annotations, value.to_owned()),
                "output" => list!(
                    t.output,
                    parse_attrs(value, Some("type")).map_err(|m| bad(&m))?
                ),
                "cache-from" => list!(
                    t.cache_from,
                    parse_attrs(value, Some("ref")).map_err(|m| bad(&m))?
                ),
                "cache-to" => list!(
                    t.cache_to,
                    parse_attrs(value, Some("ref")).map_err(|m| bad(&m))?
                ),
                "secrets" | "secret" => list!(
                    t.secret,
                    parse_attrs(value, Some("id")).map_err(|m| bad(&m))?
                ),
                "ssh" => list!(t.ssh, parse_ssh(value)),
                "no-cache" => t.no_cache = Some(bool_of(value)?),
                "pull" => t.pull = Some(bool_of(value)?),
                k => {
                    if let Some(a) = k.strip_prefix("args.") {
                        t.args.insert(a.to_owned(), value.to_owned());
                    } else if let Some(l) = k.strip_prefix("labels.") {
                        t.labels.insert(l.to_owned(), value.to_owned());
                    } else if let Some(c) = k.strip_prefix("contexts.") {
                        t.contexts.insert(c.to_owned(), value.to_owned());
                    } else {
                        return Err(bad(&format!("unknown key {k:?}")));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs() {
        assert!(super::glob(b"*", b"api"));
        assert!(super::glob(b"auth-*", b"auth-service"));
        assert!(super::glob(b"a?i", b"api"));
        assert!(!super::glob(b"auth-*", b"user-service"));
    }
}
