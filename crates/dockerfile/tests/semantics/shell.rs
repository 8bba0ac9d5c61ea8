//! `shell/envVarTest`, `shell/wordsTest` and `shell/lex_cases.json`.

use std::collections::BTreeMap;

use dockerfile::{Lexer, vars_from_env_list};
use libtest_mimic::Trial;

use crate::{check, json, read, strings};

pub(crate) fn trials() -> Vec<Trial> {
    let mut out = env_var_test();
    out.extend(words_test());
    out.extend(lex_cases());
    out
}

fn env_var_test() -> Vec<Trial> {
    let env = vars_from_env_list(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let text = read("shell/envVarTest");
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.trim().split('|').map(str::trim).collect();
        assert_eq!(fields.len(), 3, "envVarTest line {line_no}: {raw:?}");
        let (platform, input, expected) = (fields[0], fields[1].to_owned(), fields[2].to_owned());
        let name = format!("shell::envVarTest::line_{line_no:03}");
        let env = env.clone();
        let trial = Trial::test(name, move || {
            let got = Lexer::default().process_word(&input, &env);
            if expected == "error" {
                match got {
                    Err(_) => Ok(()),
                    Ok(v) => Err(format!("{input:?}: expected an error, got {v:?}").into()),
                }
            } else {
                check(&input, got.map_err(|e| e.to_string()), Ok(expected))
            }
        });
        // `W` rows describe Windows (case-insensitive variable names).
        out.push(trial.with_ignored_flag(platform == "W"));
    }
    out
}

fn words_test() -> Vec<Trial> {
    let text = read("shell/wordsTest");
    let mut env: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line_no = i + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            env.push(rest.trim_start_matches(' ').to_owned());
            continue;
        }
        if line.is_empty() {
            // Only the final newline gives an empty piece.
            assert_eq!(
                line_no,
                text.split('\n').count(),
                "blank line {line_no} in wordsTest"
            );
            continue;
        }
        let (left, right) = line
            .split_once('|')
            .unwrap_or_else(|| panic!("wordsTest line {line_no}: no '|'"));
        let input = left.trim().to_owned();
        let expected: Vec<String> = right
            .trim_start_matches(' ')
            .split(',')
            .map(str::to_owned)
            .collect();
        let vars = vars_from_env_list(&env);
        out.push(Trial::test(
            format!("shell::wordsTest::line_{line_no:02}"),
            move || {
                let got = Lexer::default()
                    .process_words(&input, &vars)
                    .unwrap_or_else(|_| vec!["error".to_owned()]);
                check(&input, got, expected)
            },
        ));
    }
    out
}

fn lex_cases() -> Vec<Trial> {
    let data = json("shell/lex_cases.json");
    let mut out = Vec::new();
    let mut counters: BTreeMap<String, usize> = BTreeMap::new();
    for case in data["cases"].as_array().into_iter().flatten() {
        let test = case["test"].as_str().unwrap_or("case").to_owned();
        let n = counters.entry(test.clone()).or_default();
        *n += 1;
        let name = format!("shell::lex_cases::{test}::{n:02}");
        let case = case.clone();
        out.push(Trial::test(name, move || {
            let input = case["input"].as_str().unwrap_or_default();
            let env = vars_from_env_list(strings(&case["env"]));
            let got = Lexer::default().process(input, &env);
            if case["error"].as_bool() == Some(true) {
                let err = match got {
                    Err(e) => e,
                    Ok(v) => return Err(format!("{input:?}: expected an error, got {v:?}").into()),
                };
                if let Some(part) = case["error_contains"].as_str() {
                    let msg = err.to_string();
                    if !msg.contains(part) {
                        return Err(format!("error {msg:?} does not contain {part:?}").into());
                    }
                }
                return Ok(());
            }
            let got = got.map_err(|e| e.to_string())?;
            check(
                "value",
                got.value.as_str(),
                case["expected"].as_str().unwrap_or_default(),
            )?;
            if !case["matched"].is_null() {
                check(
                    "matched",
                    got.matched.iter().cloned().collect(),
                    strings(&case["matched"]),
                )?;
            }
            if !case["unmatched"].is_null() {
                check(
                    "unmatched",
                    got.unmatched.iter().cloned().collect(),
                    strings(&case["unmatched"]),
                )?;
            }
            Ok(())
        }));
    }
    for (i, case) in data["get_env_cases"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let case = case.clone();
        out.push(Trial::test(
            format!("shell::lex_cases::TestGetEnv::{:02}", i + 1),
            move || {
                let vars = vars_from_env_list(strings(&case["env"]));
                let name = case["name"].as_str().unwrap_or_default();
                check(
                    name,
                    vars.get(name).map_or("", String::as_str),
                    case["expected_value"].as_str().unwrap_or_default(),
                )
            },
        ));
    }
    out
}
