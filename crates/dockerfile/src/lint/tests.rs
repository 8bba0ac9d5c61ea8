//! One test per rule, from the examples of BuildKit's documentation of that rule
//! (`frontend/dockerfile/docs/rules/*.md`) and `dockerfile_lint_test.go`.

use super::*;
use crate::stages::PlanOptions;

/// The findings for `text` as `(rule, message, line)`, all stages checked.
fn check_with(text: &str, ignore: &[&str], opts: PlanOptions) -> Vec<(String, String, u32)> {
    let ast = crate::parse_ast(text).unwrap();
    let df = crate::parse(text).unwrap();
    let plan = BuildPlan::new(&df, &opts).unwrap();
    let config = LintConfig::for_build(text, None).unwrap();
    let lint_opts = LintOptions {
        all_stages: true,
        ignore_patterns: ignore.iter().map(|s| (*s).to_owned()).collect(),
    };
    lint(&ast, &df, &plan, &config, &lint_opts)
        .into_iter()
        .map(|w| {
            (
                w.rule.name.to_owned(),
                w.message,
                w.span.map_or(0, |s| s.start_line),
            )
        })
        .collect()
}

fn check(text: &str) -> Vec<(String, String, u32)> {
    check_with(text, &[], PlanOptions::default())
}

fn one(rule: &str, message: &str, line: u32) -> Vec<(String, String, u32)> {
    vec![(rule.to_owned(), message.to_owned(), line)]
}

#[test]
fn stage_name_casing() {
    assert_eq!(
        check("FROM alpine AS BuilderBase\n"),
        one(
            "StageNameCasing",
            "Stage name 'BuilderBase' should be lowercase",
            1
        )
    );
    assert!(check("FROM alpine AS builder-base\n").is_empty());
}

#[test]
fn from_as_casing() {
    assert_eq!(
        check("FROM debian:latest as builder\n"),
        one(
            "FromAsCasing",
            "'as' and 'FROM' keywords' casing do not match",
            1
        )
    );
    assert!(check("FROM debian:latest AS deb-builder\n").is_empty());
    assert!(check("from debian:latest as deb-builder\n").is_empty());
}

#[test]
fn no_empty_continuation() {
    let w = check("FROM alpine\nRUN apk add \\\n\n    gnupg \\\n    curl\n");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].0, "NoEmptyContinuation");
    assert_eq!(w[0].1, "Empty continuation line");
}

#[test]
fn consistent_instruction_casing() {
    assert_eq!(
        check("FROM alpine\nRUN echo hello\ncmd [\"echo\", \"hello\"]\n"),
        one(
            "ConsistentInstructionCasing",
            "Command 'cmd' should match the case of the command majority (uppercase)",
            3
        )
    );
    assert_eq!(
        check("from alpine\nrun echo hello\nCmd [\"echo\", \"hello\"]\n"),
        one(
            "ConsistentInstructionCasing",
            "Command 'Cmd' should match the case of the command majority (lowercase)",
            3
        )
    );
    assert!(check("FROM alpine\nRUN echo hello\nCMD [\"echo\", \"hello\"]\n").is_empty());
}

#[test]
fn duplicate_stage_name() {
    assert_eq!(
        check("FROM debian:latest AS builder\nRUN apt-get update\nFROM golang:latest AS builder\n"),
        one(
            "DuplicateStageName",
            "Duplicate stage name \"builder\", stage names should be unique",
            3
        )
    );
}

#[test]
fn reserved_stage_name() {
    assert_eq!(
        check("FROM alpine AS scratch\nFROM alpine AS context\n"),
        vec![
            (
                "ReservedStageName".to_owned(),
                "Stage name should not use the same name as reserved stage \"scratch\"".to_owned(),
                1
            ),
            (
                "ReservedStageName".to_owned(),
                "Stage name should not use the same name as reserved stage \"context\"".to_owned(),
                2
            ),
        ]
    );
    assert!(check("FROM alpine AS builder\n").is_empty());
}

#[test]
fn json_args_recommended() {
    assert_eq!(
        check("FROM alpine\nENTRYPOINT my-program start\n"),
        one(
            "JSONArgsRecommended",
            "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals",
            2
        )
    );
    assert!(check("FROM alpine\nENTRYPOINT [\"my-program\", \"start\"]\n").is_empty());
    // An explicit SHELL (here inherited from the parent stage) means shell form is intended.
    assert!(
        check("FROM alpine AS a\nSHELL [\"/bin/bash\", \"-c\"]\nFROM a\nCMD echo hi\n").is_empty()
    );
}

#[test]
fn maintainer_deprecated() {
    assert_eq!(
        check("FROM alpine\nMAINTAINER moby@example.com\n"),
        one(
            "MaintainerDeprecated",
            "Maintainer instruction is deprecated in favor of using label",
            2
        )
    );
    assert!(
        check("FROM alpine\nLABEL org.opencontainers.image.authors=\"moby@example.com\"\n")
            .is_empty()
    );
}

#[test]
fn undefined_arg_in_from() {
    assert_eq!(
        check("ARG TAG=latest\nFROM busybox:${TAG}${VERSION}\n"),
        one(
            "UndefinedArgInFrom",
            "FROM argument 'VERSION' is not declared",
            2
        )
    );
    assert!(check("ARG TAG=latest\nFROM busybox:${TAG}\n").is_empty());
}

#[test]
fn workdir_relative_path() {
    assert_eq!(
        check("FROM alpine\nWORKDIR app\nWORKDIR more\n"),
        one(
            "WorkdirRelativePath",
            "Relative workdir \"app\" can have unexpected results if the base image changes",
            2
        )
    );
    assert!(check("FROM alpine\nWORKDIR /app\nWORKDIR more\n").is_empty());
    assert!(check("FROM alpine AS a\nWORKDIR /app\nFROM a\nWORKDIR sub\n").is_empty());
}

#[test]
fn multiple_instructions_disallowed() {
    // The earlier instruction is reported: it is the one that has no effect.
    assert_eq!(
        check(
            "FROM alpine\nENTRYPOINT [\"echo\", \"Hello, Norway!\"]\nENTRYPOINT [\"echo\", \"Hello, Sweden!\"]\n"
        ),
        one(
            "MultipleInstructionsDisallowed",
            "Multiple ENTRYPOINT instructions should not be used in the same stage because only the last one will be used",
            2
        )
    );
    assert!(check("FROM alpine AS a\nCMD [\"a\"]\nFROM a\nCMD [\"b\"]\n").is_empty());
}

#[test]
fn legacy_key_value_format() {
    assert_eq!(
        check("FROM alpine\nENV DEPS curl git make\n"),
        one(
            "LegacyKeyValueFormat",
            "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
            2
        )
    );
    assert_eq!(
        check("FROM alpine\nLABEL k v\n")[0].1,
        "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"
    );
    assert!(check("FROM alpine\nENV DEPS=\"curl git make\"\n").is_empty());
}

#[test]
fn redundant_target_platform() {
    assert_eq!(
        check("FROM --platform=$TARGETPLATFORM alpine AS builder\n"),
        one(
            "RedundantTargetPlatform",
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
            1
        )
    );
    assert!(check("FROM --platform=$BUILDPLATFORM alpine AS builder\n").is_empty());
}

#[test]
fn secrets_used_in_arg_or_env() {
    assert_eq!(
        check("FROM scratch\nARG AWS_SECRET_ACCESS_KEY\n"),
        one(
            "SecretsUsedInArgOrEnv",
            "Do not use ARG or ENV instructions for sensitive data (ARG \"AWS_SECRET_ACCESS_KEY\")",
            2
        )
    );
    assert_eq!(
        check("FROM scratch\nENV password=bar secret=baz\n").len(),
        2
    );
    assert!(
        check(
            "FROM scratch\nENV PUBLIC_KEY= password_file=x sunflower=foo\nARG AUTH_MODULE_VERSION\n"
        )
        .is_empty()
    );
}

#[test]
fn invalid_default_arg_in_from() {
    assert_eq!(
        check("ARG TAG\nFROM busybox:${TAG}\n"),
        one(
            "InvalidDefaultArgInFrom",
            "Default value for ARG busybox:${TAG} results in empty or invalid base image name",
            2
        )
    );
    assert!(check("ARG TAG=latest\nFROM busybox:${TAG}\n").is_empty());
    assert!(check("ARG VARIANT=\"-alpine\"\nFROM golang:1.22${VARIANT}\n").is_empty());
}

#[test]
fn from_platform_flag_const_disallowed() {
    assert_eq!(
        check("FROM --platform=linux/amd64 alpine AS base\n"),
        one(
            "FromPlatformFlagConstDisallowed",
            "FROM --platform flag should not use constant value \"linux/amd64\"",
            1
        )
    );
    // The stage name says which platform it is for: allowed.
    assert!(check("FROM --platform=linux/amd64 alpine AS build_amd64\n").is_empty());
    assert!(check("FROM --platform=$BUILDPLATFORM alpine\n").is_empty());
}

#[test]
fn copy_ignored_file() {
    let text = "FROM scratch\nCOPY ./tmp/foo.txt /app/\nADD tmp /t\nCOPY other /o\n";
    assert_eq!(
        check_with(text, &["tmp"], PlanOptions::default()),
        vec![
            (
                "CopyIgnoredFile".to_owned(),
                "Attempting to Copy file \"tmp/foo.txt\" that is excluded by .dockerignore"
                    .to_owned(),
                2
            ),
            (
                "CopyIgnoredFile".to_owned(),
                "Attempting to Add file \"tmp\" that is excluded by .dockerignore".to_owned(),
                3
            ),
        ]
    );
    // Exclusions make the check give up; the context root only counts for `*`-like patterns.
    assert!(check_with(text, &["tmp", "!tmp/foo.txt"], PlanOptions::default()).is_empty());
    assert!(
        check_with(
            "FROM scratch\nCOPY . .\n",
            &[".git"],
            PlanOptions::default()
        )
        .is_empty()
    );
    assert_eq!(
        check_with("FROM scratch\nCOPY . .\n", &["*"], PlanOptions::default()).len(),
        1
    );
}

#[test]
fn invalid_definition_description() {
    let text = "# check=experimental=InvalidDefinitionDescription\n# bar this is the bar\nARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n";
    assert_eq!(
        check(text),
        vec![
            (
                "InvalidDefinitionDescription".to_owned(),
                "Comment for ARG should follow the format: `# foo <description>`".to_owned(),
                3
            ),
            (
                "InvalidDefinitionDescription".to_owned(),
                "Comment for FROM should follow the format: `# base <description>`".to_owned(),
                5
            ),
        ]
    );
    // Experimental: off unless enabled.
    assert!(check("# bar this is the bar\nARG foo=bar\nFROM scratch\n").is_empty());
}

#[test]
fn expose_proto_casing() {
    assert_eq!(
        check("FROM scratch\nEXPOSE 80/TcP\n"),
        one(
            "ExposeProtoCasing",
            "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase",
            2
        )
    );
    assert!(check("FROM scratch\nEXPOSE 80/tcp 53/udp 8080\n").is_empty());
}

#[test]
fn expose_invalid_format() {
    assert_eq!(
        check("FROM scratch\nEXPOSE 127.0.0.1:80:80\n"),
        one(
            "ExposeInvalidFormat",
            "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'",
            2
        )
    );
    assert_eq!(
        check("FROM scratch\nEXPOSE 5000:5000 [::1]:8080:8080\n").len(),
        2
    );
    assert!(check("FROM scratch\nEXPOSE 80\n").is_empty());
}

#[test]
fn config_parsing_and_inline_skips() {
    let c = LintConfig::parse("skip=JSONArgsRecommended,StageNameCasing;error=true").unwrap();
    assert!(c.error && !c.enabled(&JSON_ARGS_RECOMMENDED) && c.enabled(&MAINTAINER_DEPRECATED));
    assert!(LintConfig::parse("skip").is_err());
    assert!(LintConfig::parse("bogus=1").is_err());
    assert!(LintConfig::parse("error=maybe").is_err());
    assert!(LintConfig::parse("skip=all").unwrap().skip_all);
    // A `# check=` comment above an instruction skips rules for it only.
    let text = "FROM scratch\n# check=skip=JSONArgsRecommended // wanted\nCMD a\nENTRYPOINT b\n";
    assert_eq!(check(text).len(), 1);
    assert_eq!(check(text)[0].2, 4);
    // The build argument replaces the directive.
    let c = LintConfig::for_build("# check=skip=all\nFROM scratch\n", Some("error=true")).unwrap();
    assert!(!c.skip_all && c.error);
}

#[test]
fn references() {
    for ok in [
        "busybox",
        "busybox:latest",
        "127.0.0.1:5000/library/busybox:1.0",
        "a/b__c-d.e",
        "localhost/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(is_valid_reference(ok), "{ok}");
    }
    for bad in [
        "",
        "busybox:",
        "Busybox",
        "a//b",
        "-a",
        "busybox:-x",
        "a@sha256:12",
    ] {
        assert!(!is_valid_reference(bad), "{bad}");
    }
}
