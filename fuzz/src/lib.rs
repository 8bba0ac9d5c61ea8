//! The checks behind rbuild's fuzz targets, one function per target. Each takes the
//! fuzzer's bytes, must not panic on any input, and asserts the target's invariants. The
//! `fuzz_targets/*.rs` binaries call them under libFuzzer; `tests/corpus.rs` calls them over
//! the kept corpus on a stable toolchain.

use std::collections::BTreeMap;
use std::path::Path;

use dockerfile::{Dockerfile, Instruction, Span};

/// Every target by name, for the corpus test.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("parse", parse),
    ("dockerignore", dockerignore),
    ("shell", shell),
    ("tar", tar),
    ("manifest", manifest),
    ("www_authenticate", www_authenticate),
    ("docker_config", docker_config),
    ("reference", reference),
    ("bake", bake),
];

fn check_span(text: &str, s: Span) {
    assert!(
        s.start <= s.end && s.end <= text.len(),
        "{s:?} outside {} bytes",
        text.len()
    );
    assert!(
        text.is_char_boundary(s.start) && text.is_char_boundary(s.end),
        "{s:?}"
    );
    assert!(s.start_line >= 1 && s.start_column >= 1, "{s:?}");
}

/// The Dockerfile line parser and typed instructions: every span lies inside the input, on
/// character boundaries.
pub fn parse(data: &[u8]) {
    let _ = dockerfile::parse_bytes(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = dockerfile::detect_syntax(text);
    match dockerfile::parse_ast(text) {
        Err(e) => check_span(text, e.span()),
        Ok(ast) => {
            let _ = ast.dump();
            for n in &ast.nodes {
                check_span(text, n.span);
                for a in n.args.iter().chain(&n.flags) {
                    check_span(text, a.span);
                }
                for h in &n.heredocs {
                    check_span(text, h.span);
                }
            }
            match Dockerfile::from_ast(ast) {
                Err(e) => check_span(text, e.span()),
                Ok(df) => {
                    for i in &df.instructions {
                        check_span(text, i.span);
                        match &i.value {
                            Instruction::Onbuild(o) => {
                                let _ = o.trigger();
                            }
                            Instruction::Run(r) => {
                                for m in &r.mounts {
                                    let _ = m.resolve(|v| Ok::<_, String>(v.to_owned()));
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

/// `.dockerignore` text, then paths: the first line of the input splits patterns from
/// paths (`patterns\0paths`). Matching never panics; a pattern list that compiles answers
/// for every path, and the walk filter agrees on plain (non-exception) pattern sets.
pub fn dockerignore(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (patterns, paths) = text.split_once('\0').unwrap_or((&text, "a/b\nx"));
    let Ok(lines) = dockerfile::read_ignore_file(patterns) else {
        return;
    };
    let Ok(m) = dockerfile::PatternMatcher::new(&lines) else {
        return;
    };
    for path in paths.split('\n').take(32) {
        let _ = m.matches_or_parent_matches(path);
        let _ = m.matches_legacy(path);
        let _ = dockerfile::filepath_match(patterns.lines().next().unwrap_or(""), path);
    }
    if let Ok(f) = dockerfile::ContextFilter::new(
        &[] as &[&str],
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    ) {
        for path in paths.split('\n').take(32) {
            let _ = f.is_visible(path);
        }
    }
}

/// Shell-word expansion (`${V:-x}`, `${V#p}`, quotes, escapes) with a few variables set:
/// never panics, and a word without `$`, quotes or escapes expands to itself (less a
/// leading byte-order mark, which BuildKit's scanner drops).
pub fn shell(data: &[u8]) {
    let Ok(word) = std::str::from_utf8(data) else {
        return;
    };
    let env: BTreeMap<String, String> = [
        ("A", "alpha"),
        ("EMPTY", ""),
        ("P", "/usr/local/bin:/usr/bin"),
        ("U", "ünï cødé"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for escape in ['\\', '`'] {
        let lexer = dockerfile::Lexer::new(escape);
        let value = lexer.process_word(word, &env);
        let _ = lexer.process_words(word, &env);
        if !word.contains(['$', '"', '\'', '\\', '`']) {
            // A leading byte-order mark is dropped, as Go's text/scanner drops it.
            let plain = word.strip_prefix('\u{feff}').unwrap_or(word);
            assert_eq!(value.as_deref().ok(), Some(plain), "plain word {word:?}");
        }
    }
}

/// The tar reader and applier: any bytes (plain, gzip or zstd) either apply or fail with an
/// error, and nothing is ever created outside the destination.
pub fn tar(data: &[u8]) {
    let Ok(tmp) = tempfile::tempdir() else {
        return;
    };
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(tmp.path().join("sentinel"), b"s").unwrap();
    let mut opts = layer_cache::ApplyOptions::default();
    opts.max_bytes = 16 << 20;
    opts.max_entries = 10_000;
    opts.ownership = layer_cache::Ownership::Current;
    let _ = layer_cache::apply_layer(data, &dest, &opts);
    let mut outside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside.sort();
    assert_eq!(
        outside,
        ["dest", "sentinel"],
        "an entry escaped the destination"
    );
    assert_eq!(std::fs::read(tmp.path().join("sentinel")).unwrap(), b"s");
    let _ = make_writable(&dest);
}

/// Lets the temporary directory be removed after an archive made read-only directories.
fn make_writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            make_writable(&e.path())?;
        }
    }
    Ok(())
}

/// Manifest and index JSON as a registry serves it, with each media type: parsing never
/// panics, and the digest is the sha256 of the exact bytes.
pub fn manifest(data: &[u8]) {
    for ct in [
        None,
        Some(registry_client::OCI_MANIFEST),
        Some(registry_client::OCI_INDEX),
        Some(registry_client::DOCKER_MANIFEST),
        Some(registry_client::DOCKER_MANIFEST_LIST),
    ] {
        if let Ok(raw) = registry_client::RawManifest::new(bytes::Bytes::copy_from_slice(data), ct)
        {
            assert_eq!(
                raw.digest(),
                &registry_client::Digest::sha256_of(data),
                "digest of the exact bytes"
            );
            let _ = raw.parse();
        }
    }
}

/// `WWW-Authenticate` values and token-service answers: never panic.
pub fn www_authenticate(data: &[u8]) {
    if let Ok(v) = std::str::from_utf8(data) {
        let _ = registry_client::internal::parse_www_authenticate(v);
    }
    let _ = registry_client::internal::parse_token_response(data);
}

/// Docker's `config.json`: parsing and credential lookup never panic, and never run a
/// credential helper (no helper directories are given).
pub fn docker_config(data: &[u8]) {
    let Ok(cfg) = registry_client::DockerConfig::from_slice(data, Path::new("config.json")) else {
        return;
    };
    let cfg = cfg.with_helper_dirs(Vec::new());
    for registry in ["docker.io", "127.0.0.1:5000", "ghcr.io", ""] {
        let _ = cfg.credential_for(registry);
    }
}

/// Image references, repositories and platforms: parsing never panics, and what parses
/// prints as a string that parses back to the same value.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = text.parse::<registry_client::Reference>() {
        let again: registry_client::Reference = r
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} -> {r} does not parse again: {e}"));
        assert_eq!(again, r, "{text:?}");
    }
    let _ = text.parse::<registry_client::Repository>();
    if let Ok(p) = text.parse::<registry_client::Platform>() {
        let again: registry_client::Platform = p
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} -> {p} does not parse again: {e}"));
        assert_eq!(again, p, "{text:?}");
    }
}

/// Bake definitions: the first byte picks the format (HCL, bake JSON or a compose file), the
/// rest is the file. Loading, selecting the default targets, applying a `--set` and printing
/// never panic, and whatever loads selects only targets it defines.
pub fn bake(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let file = match kind % 3 {
        0 => "docker-bake.hcl",
        1 => "docker-bake.json",
        _ => "compose.yaml",
    };
    let env = bake::Env::from_map(
        [("TAG", "v1"), ("SOURCE_DATE_EPOCH", "0")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    );
    let mut def = bake::Definition::default();
    if bake::load_text(file, text, &env, &mut def).is_err() {
        return;
    }
    let names: Vec<String> = def.target.keys().take(4).cloned().collect();
    for asked in [Vec::new(), names] {
        let Ok(selected) = bake::select(&def, &asked) else {
            continue;
        };
        for t in &selected {
            assert!(def.target.contains_key(t), "selected {t:?} is not a target");
        }
        let _ = bake::printed(&def, &asked, &selected);
        let mut set = def.clone();
        let _ = bake::apply_set(&mut set, &selected, &["*.args.X=1".to_owned()]);
    }
}
