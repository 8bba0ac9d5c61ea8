//! `rbuild build --call=check`: for each case under `tests/checks/` (the Dockerfile
//! examples of BuildKit's documentation of each rule, with the local registry's busybox
//! for their base images, plus configuration cases), rbuild prints what buildx prints:
//! `Check complete, …` then exactly the reference BuildKit's result (`expected.txt`,
//! recorded by `tests/checks/refresh.sh`), and exits 1 when something was found.
//! Also: JSON in BuildKit's `LintResults` shape, `error=true`, `ignorestatus`, `--check`,
//! and the warnings a normal build prints at its end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/checks")
}

fn rbuild(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(args)
        .current_dir(cwd)
        .env("RBUILD_ROOTLESS", "0")
        .output()
        .expect("run rbuild")
}

/// The case's `args` file as rbuild flags.
fn case_args(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("args"))
        .map(|t| t.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_documented_rule_prints_what_buildkit_prints() {
    let mut names: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("tests/checks")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Dockerfile").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 60, "only {} cases", names.len());
    let mut failures = Vec::new();
    for name in &names {
        let dir = cases_dir().join(name);
        let expected = std::fs::read_to_string(dir.join("expected.txt")).expect("expected.txt");
        let found = expected.matches("\nWARNING: ").count();
        let header = match found {
            0 => String::new(),
            1 => "Check complete, 1 warning has been found!\n".to_owned(),
            n => format!("Check complete, {n} warnings have been found!\n"),
        };
        let error_true = std::fs::read_to_string(dir.join("Dockerfile"))
            .unwrap()
            .starts_with("# check=error=true");
        let want = match (found, error_true) {
            (0, _) => "Check complete, no warnings found.\n".to_owned(),
            (_, true) => format!("{header}{expected}\n"),
            (_, false) => format!("{header}{expected}"),
        };
        let mut args = vec!["build".to_owned(), "--call=check".to_owned()];
        args.extend(case_args(&dir));
        args.push(".".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = rbuild(&dir, &args);
        let status = out.status.code();
        let want_status = Some(i32::from(found > 0));
        if text(&out.stdout) != want || status != want_status {
            failures.push(format!(
                "== {name}: status {status:?} (want {want_status:?})\n--- want\n{want}--- got\n{}--- stderr\n{}",
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every rule that needs no resolved platform is covered by a case that finds it.
    let mut all = String::new();
    for name in &names {
        all.push_str(
            &std::fs::read_to_string(cases_dir().join(name).join("expected.txt")).unwrap(),
        );
    }
    for rule in builder_core_rules() {
        assert!(
            all.contains(&format!("WARNING: {rule}")),
            "no case finds {rule}"
        );
    }
}

/// The rules `--call=check` reports (all of BuildKit's but InvalidBaseImagePlatform, which
/// needs the base image's platform compared at build time).
fn builder_core_rules() -> Vec<&'static str> {
    vec![
        "StageNameCasing",
        "FromAsCasing",
        "NoEmptyContinuation",
        "ConsistentInstructionCasing",
        "DuplicateStageName",
        "ReservedStageName",
        "JSONArgsRecommended",
        "MaintainerDeprecated",
        "UndefinedArgInFrom",
        "WorkdirRelativePath",
        "UndefinedVar",
        "MultipleInstructionsDisallowed",
        "LegacyKeyValueFormat",
        "RedundantTargetPlatform",
        "SecretsUsedInArgOrEnv",
        "InvalidDefaultArgInFrom",
        "FromPlatformFlagConstDisallowed",
        "CopyIgnoredFile",
        "InvalidDefinitionDescription",
        "ExposeProtoCasing",
        "ExposeInvalidFormat",
    ]
}

#[test]
fn error_true_fails_naming_the_rules() {
    let dir = cases_dir().join("error-true");
    let out = rbuild(&dir, &["build", "--check", "."]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "lint violation found for rules: StageNameCasing, ConsistentInstructionCasing, JSONArgsRecommended"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).starts_with("Check complete, 3 warnings have been found!\n"));
}

#[test]
fn ignorestatus_exits_0_with_findings() {
    let dir = cases_dir().join("stage-name-casing-1-bad");
    let out = rbuild(&dir, &["build", "--call=check,ignorestatus=true", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("WARNING: StageNameCasing"));
}

#[test]
fn json_has_buildkits_lint_results_shape() {
    let dir = cases_dir().join("consistent-instruction-casing-1-bad");
    let out = rbuild(&dir, &["build", "--call=check,format=json", "."]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let w = &v["warnings"][0];
    assert_eq!(w["ruleName"], "ConsistentInstructionCasing");
    assert_eq!(
        w["url"],
        "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/"
    );
    assert_eq!(
        w["description"],
        "All commands within the Dockerfile should use the same casing (either upper or lower)"
    );
    assert_eq!(
        w["detail"],
        "Command 'From' should match the case of the command majority (uppercase)"
    );
    assert_eq!(w["location"]["ranges"][0]["start"]["line"], 1);
    assert_eq!(w["location"]["ranges"][0]["end"]["line"], 1);
    assert_eq!(v["sources"][0]["filename"], "Dockerfile");
    assert_eq!(v["sources"][0]["language"], "Dockerfile");
    assert!(v["sources"][0]["data"].is_string());
    assert!(v.get("buildError").is_none());

    let dir = cases_dir().join("error-true");
    let out = rbuild(&dir, &["build", "--call=check,format=json", "."]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        v["buildError"]["message"]
            .as_str()
            .unwrap()
            .starts_with("lint violation found for rules: StageNameCasing")
    );
}

#[test]
fn file_name_as_buildx_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/Dockerfile"), "FROM scratch AS Base\n").unwrap();
    let out = rbuild(dir.path(), &["build", "--check", "./app/"]);
    assert!(
        text(&out.stdout).contains("\napp/Dockerfile:1\n"),
        "{}",
        text(&out.stdout)
    );
    let out = rbuild(
        dir.path(),
        &["build", "--check", "-f", "app/Dockerfile", "app"],
    );
    assert!(text(&out.stdout).contains("\napp/Dockerfile:1\n"));
}

/// A build prints its check findings after the progress, as buildx does, whether it
/// succeeds or fails.
#[test]
fn builds_end_with_the_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("a"), "a").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS Base\ncopy a /a\nCOPY a /b\n",
    )
    .unwrap();
    let cache_arg = cache.to_str().unwrap();
    let out = rbuild(
        &ctx,
        &["build", "--progress=plain", "--cache-dir", cache_arg, "."],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let summary = "\n 2 warnings found:\n \
        - StageNameCasing: Stage name 'Base' should be lowercase (line 1)\n \
        - ConsistentInstructionCasing: Command 'copy' should match the case of the command majority (uppercase) (line 2)\n";
    assert!(err.contains(summary), "{err}");
    assert!(
        err.find("#done").unwrap() < err.find(summary).unwrap(),
        "{err}"
    );

    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS Base\nCOPY missing /a\n",
    )
    .unwrap();
    let out = rbuild(
        &ctx,
        &["build", "--progress=plain", "--cache-dir", cache_arg, "."],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\n 1 warning found:\n - StageNameCasing: Stage name 'Base' should be lowercase (line 1)\n"),
        "{err}"
    );
    // Quiet builds print none.
    let out = rbuild(
        &ctx,
        &["build", "--progress=quiet", "--cache-dir", cache_arg, "."],
    );
    assert!(!text(&out.stderr).contains("warning found"));
}
