//! `RUN --mount` options (BuildKit's `commands_runmount.go`).

use super::duration::{parse_go_bool, parse_ram_bytes};
use super::suggest::suggest;
use super::unicode::to_lower;
use crate::ast::{
    BindMount, CacheMount, CacheSharing, Mount, MountSpec, SecretMount, Spanned, SshMount,
    TmpfsMount,
};
use crate::error::{Error, MountProblem};

const KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Splits a one-line CSV value like Go's `encoding/csv` with default settings, as
/// BuildKit reads `--mount` and buildx reads its `key=value,...` flags (`--output`): a
/// field in double quotes may hold commas, `""` in it is one quote.
///
/// ```
/// assert_eq!(
///     dockerfile::csv_fields(r#"type=oci,"name=a:1,a:2""#).unwrap(),
///     ["type=oci", "name=a:1,a:2"]
/// );
/// assert!(dockerfile::csv_fields(r#"type=oci,"dest=x"#).is_err());
/// ```
///
/// # Errors
/// Go's message for a misplaced or unterminated quote, or `EOF` for an empty line.
pub fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let line = line
        .strip_suffix("\r\n")
        .or_else(|| line.strip_suffix('\n'))
        .unwrap_or(line);
    if line.is_empty() {
        return Err("EOF".into());
    }
    let err = |col: usize, what: &str| format!("parse error on line 1, column {}: {what}", col + 1);
    let mut out = Vec::new();
    let mut rest = line;
    let mut pos = 0;
    loop {
        if !rest.starts_with('"') {
            let (field, next) = match rest.find(',') {
                Some(i) => (&rest[..i], Some(i)),
                None => (rest, None),
            };
            if let Some(j) = field.find('"') {
                return Err(err(pos + j, "bare \" in non-quoted-field"));
            }
            out.push(field.to_owned());
            match next {
                Some(i) => {
                    rest = &rest[i + 1..];
                    pos += i + 1;
                    continue;
                }
                None => return Ok(out),
            }
        }
        rest = &rest[1..];
        pos += 1;
        let mut field = String::new();
        loop {
            let Some(i) = rest.find('"') else {
                return Err(err(pos, "extraneous or missing \" in quoted-field"));
            };
            field.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            pos += i + 1;
            if let Some(r) = rest.strip_prefix('"') {
                field.push('"');
                rest = r;
                pos += 1;
            } else if let Some(r) = rest.strip_prefix(',') {
                out.push(field);
                rest = r;
                pos += 1;
                break;
            } else if rest.is_empty() {
                out.push(field);
                return Ok(out);
            } else {
                return Err(err(pos - 1, "extraneous or missing \" in quoted-field"));
            }
        }
    }
}

/// A value that the stage model must expand before it can be used.
fn needs_expansion(v: &str) -> bool {
    v.contains(['$', '\'', '"', '\\', '`'])
}

/// Parses a `--mount` value when the Dockerfile is parsed: CSV, known keys, the
/// `from` rule, and full validation when nothing needs expansion.
pub(crate) fn parse_mount_spec(raw: Spanned<String>) -> Result<MountSpec, Error> {
    let span = raw.span;
    let bad = |problem| Error::Mount { problem, span };
    let fields = csv_fields(&raw.value).map_err(|message| bad(MountProblem::Csv { message }))?;
    let mut parsed = Vec::with_capacity(fields.len());
    let mut literal = true;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (to_lower(k), Some(v.to_owned())),
            None => (to_lower(field), None),
        };
        if let Some(v) = &value {
            if key == "from" {
                if let Some(i) = v.find('$') {
                    if i != v.len() - 1 {
                        return Err(bad(MountProblem::FromVariable));
                    }
                }
            }
            if !KEYS.contains(&key.as_str()) {
                return Err(bad(MountProblem::UnknownKey {
                    suggestion: suggest(&key, &KEYS, true),
                    key,
                    field: field.clone(),
                }));
            }
            literal &= !needs_expansion(v);
        }
        parsed.push((key, value));
    }
    let mut spec = MountSpec {
        raw,
        fields: parsed,
        literal: None,
    };
    if literal {
        let mount = spec.resolve(|v| Ok::<_, String>(v.to_owned()))?;
        spec.literal = Some(mount);
    }
    Ok(spec)
}

#[derive(Default)]
struct Flat {
    kind: String,
    from: String,
    source: String,
    target: String,
    readonly: bool,
    size: Option<u64>,
    id: String,
    sharing: Option<CacheSharing>,
    required: bool,
    env: Option<String>,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl MountSpec {
    /// Expands every value with `expand` and builds the typed mount, with
    /// BuildKit's validation (types, booleans, sizes, octal modes, ids, the secret
    /// and cache rules).
    pub fn resolve<E: std::fmt::Display>(
        &self,
        mut expand: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<Mount, Error> {
        let span = self.raw.span;
        let bad = |problem| Error::Mount { problem, span };
        let invalid = |key: &str, value: &str| {
            bad(MountProblem::InvalidValue {
                key: key.to_owned(),
                value: value.to_owned(),
            })
        };
        let mut m = Flat {
            kind: "bind".into(),
            ..Flat::default()
        };
        let mut ro_auto = true;
        let secret_or_ssh = |m: &Flat| m.kind == "secret" || m.kind == "ssh";
        for (key, value) in &self.fields {
            let Some(raw_value) = value else {
                match key.as_str() {
                    "readonly" | "ro" => {
                        m.readonly = true;
                        ro_auto = false;
                    }
                    "readwrite" | "rw" => {
                        m.readonly = false;
                        ro_auto = false;
                    }
                    "required" if secret_or_ssh(&m) => m.required = true,
                    "required" => {
                        return Err(bad(MountProblem::KeyNotForType {
                            key: key.clone(),
                            mount_type: m.kind.clone(),
                        }));
                    }
                    _ => {
                        return Err(bad(MountProblem::NotKeyValue { field: key.clone() }));
                    }
                }
                continue;
            };
            let value = expand(raw_value).map_err(|e| {
                bad(MountProblem::Expansion {
                    key: key.clone(),
                    value: raw_value.clone(),
                    message: e.to_string(),
                })
            })?;
            match key.as_str() {
                "type" => {
                    let v = to_lower(&value);
                    if !["bind", "cache", "tmpfs", "secret", "ssh"].contains(&v.as_str()) {
                        return Err(bad(MountProblem::UnknownType { value }));
                    }
                    m.kind = v;
                }
                "from" => m.from = value,
                "source" | "src" => m.source = value,
                "target" | "dst" | "destination" => m.target = value,
                "readonly" | "ro" => {
                    m.readonly = parse_go_bool(&value).ok_or_else(|| invalid(key, &value))?;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = !parse_go_bool(&value).ok_or_else(|| invalid(key, &value))?;
                    ro_auto = false;
                }
                "required" => {
                    if !secret_or_ssh(&m) {
                        return Err(bad(MountProblem::KeyNotForType {
                            key: key.clone(),
                            mount_type: m.kind.clone(),
                        }));
                    }
                    m.required = parse_go_bool(&value).ok_or_else(|| invalid(key, &value))?;
                }
                "size" => {
                    if m.kind != "tmpfs" {
                        return Err(bad(MountProblem::KeyNotForType {
                            key: key.clone(),
                            mount_type: m.kind.clone(),
                        }));
                    }
                    m.size = Some(parse_ram_bytes(&value).ok_or_else(|| invalid(key, &value))?);
                }
                "id" => m.id = value,
                "sharing" => {
                    m.sharing = Some(match to_lower(&value).as_str() {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => return Err(bad(MountProblem::UnknownSharing { value })),
                    });
                }
                "mode" => {
                    m.mode = Some(parse_go_uint(&value, 8).ok_or_else(|| invalid(key, &value))?);
                }
                "uid" => {
                    m.uid = Some(parse_go_uint(&value, 10).ok_or_else(|| invalid(key, &value))?);
                }
                "gid" => {
                    m.gid = Some(parse_go_uint(&value, 10).ok_or_else(|| invalid(key, &value))?);
                }
                "env" => m.env = Some(value),
                _ => {
                    return Err(bad(MountProblem::UnknownKey {
                        suggestion: suggest(key, &KEYS, true),
                        key: key.clone(),
                        field: format!("{key}={raw_value}"),
                    }));
                }
            }
        }
        let file_info = matches!(m.kind.as_str(), "secret" | "ssh" | "cache");
        if !file_info {
            for (k, set) in [
                ("mode", m.mode.is_some()),
                ("uid", m.uid.is_some()),
                ("gid", m.gid.is_some()),
            ] {
                if set {
                    return Err(bad(MountProblem::FileInfoNotAllowed {
                        key: k,
                        mount_type: m.kind.clone(),
                    }));
                }
            }
        }
        if ro_auto {
            m.readonly = !matches!(m.kind.as_str(), "cache" | "tmpfs");
        }
        if m.kind == "secret" {
            if !m.from.is_empty() {
                return Err(bad(MountProblem::SecretFrom));
            }
            if m.sharing.is_some() {
                return Err(bad(MountProblem::SecretSharing));
            }
            if m.source.is_empty() && m.target.is_empty() && m.id.is_empty() {
                return Err(bad(MountProblem::SecretNoId));
            }
            if !m.source.is_empty() && !m.id.is_empty() {
                return Err(bad(MountProblem::SecretSourceAndId));
            }
        }
        if m.sharing.is_some() && m.kind != "cache" {
            return Err(bad(MountProblem::SharingNotCache {
                mount_type: m.kind.clone(),
            }));
        }
        Ok(match m.kind.as_str() {
            "cache" => Mount::Cache(CacheMount {
                target: m.target,
                id: non_empty(m.id),
                sharing: m.sharing.unwrap_or_default(),
                from: non_empty(m.from),
                source: non_empty(m.source),
                readonly: m.readonly,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
            }),
            "tmpfs" => Mount::Tmpfs(TmpfsMount {
                target: m.target,
                size: m.size,
            }),
            "secret" => Mount::Secret(SecretMount {
                // `source` names the secret when `id` is not given.
                id: non_empty(m.id).or_else(|| non_empty(m.source)),
                target: non_empty(m.target),
                env: m.env,
                required: m.required,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
            }),
            "ssh" => Mount::Ssh(SshMount {
                id: non_empty(m.id),
                target: non_empty(m.target),
                required: m.required,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
            }),
            _ => Mount::Bind(BindMount {
                target: m.target,
                source: non_empty(m.source),
                from: non_empty(m.from),
                readonly: m.readonly,
            }),
        })
    }
}

/// Go's `strconv.ParseUint(s, base, 32)`.
fn parse_go_uint(s: &str, base: u32) -> Option<u32> {
    if s.is_empty() || s.starts_with(['+', '-']) {
        return None;
    }
    u32::from_str_radix(s, base).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::Span;

    fn spec(s: &str) -> Result<MountSpec, Error> {
        parse_mount_spec(Spanned::new(s.to_owned(), Span::default()))
    }

    #[test]
    fn csv() {
        assert_eq!(csv_fields("a=b,c").unwrap(), ["a=b", "c"]);
        assert_eq!(csv_fields("\"a=b,c\",d").unwrap(), ["a=b,c", "d"]);
        assert_eq!(csv_fields("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert_eq!(csv_fields("a,").unwrap(), ["a", ""]);
        assert!(csv_fields("a\"b").is_err());
        assert!(csv_fields("\"ab").is_err());
        assert!(csv_fields("\"a\"b").is_err());
        assert!(csv_fields("").is_err());
    }

    #[test]
    fn mounts() {
        let m = spec("type=cache,target=/root/.cache,sharing=locked,mode=0755").unwrap();
        let Some(Mount::Cache(c)) = m.literal else {
            panic!("{m:?}")
        };
        assert_eq!(
            (c.sharing, c.mode, c.readonly),
            (CacheSharing::Locked, Some(0o755), false)
        );
        let m = spec("target=/src,from=build").unwrap();
        assert!(matches!(
            m.literal,
            Some(Mount::Bind(BindMount { readonly: true, .. }))
        ));
        let m = spec("type=secret,id=npm,required").unwrap();
        assert!(matches!(
            m.literal,
            Some(Mount::Secret(SecretMount { required: true, .. }))
        ));
        let m = spec("type=cache,target=$HOME/.cache").unwrap();
        assert!(m.literal.is_none());
        let e = spec("type=cache,targte=/x").unwrap_err();
        assert!(e.to_string().contains("unexpected key 'targte'"), "{e}");
        assert!(e.to_string().contains("did you mean target?"), "{e}");
        assert!(spec("type=nfs").is_err());
        assert!(spec("type=bind,mode=0700,target=/x").is_err());
        assert!(spec("type=secret,from=x,id=y").is_err());
        assert!(spec("type=tmpfs,target=/t,size=lots").is_err());
        assert!(spec("from=$X/y").is_err());
        assert!(spec("type=cache,sharing=never,target=/x").is_err());
        assert!(spec("type=bind,sharing=locked,target=/x").is_err());
    }
}
