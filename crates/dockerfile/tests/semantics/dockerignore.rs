//! `dockerignore/match_cases.json`, `ignorefile_cases.json` and `context_walk_cases.json`.
//!
//! The walk cases run against an in-memory copy of each case's tree: a model of Go's
//! `filepath.WalkDir` (lexical order, `SkipDir`, a second callback when a directory cannot
//! be read) drives the crate's [`FilterWalk`] the way fsutil's filter callback does, one
//! layer per filter. Directories the case makes unreadable (`chmod 0000`) fail to list.

use std::collections::{BTreeMap, BTreeSet};

use dockerfile::{
    ContextFilter, FilterWalk, IgnoreError, LinkResolver, MatchInfo, PatternMatcher, WalkDecision,
    matches_legacy, read_ignore_file,
};
use libtest_mimic::{Failed, Trial};
use serde_json::Value;

use crate::{check, json, strings};

pub(crate) fn trials() -> Vec<Trial> {
    let mut out = match_cases();
    out.extend(ignorefile_cases());
    out.extend(walk_cases());
    out
}

/// Runs one `MatchCase` once.
fn run_match(case: &Value) -> Result<bool, IgnoreError> {
    let patterns = strings(&case["patterns"]);
    let path = case["path"].as_str().unwrap_or_default();
    let chain = strings(&case["parent_chain"]);
    match case["fn"].as_str().unwrap_or_default() {
        "Matches" => matches_legacy(path, &patterns),
        "MatchesOrParentMatches" => PatternMatcher::new(&patterns)?.matches_or_parent_matches(path),
        "MatchesUsingParentResult" => {
            let pm = PatternMatcher::new(&patterns)?;
            let mut state = false;
            for p in &chain {
                state = pm.matches_using_parent_result_legacy(p, state)?;
            }
            pm.matches_using_parent_result_legacy(path, state)
        }
        "MatchesUsingParentResults" => {
            let pm = PatternMatcher::new(&patterns)?;
            let mut state = MatchInfo::default();
            for p in &chain {
                state = pm.matches_using_parent_results(p, &state)?.1;
            }
            Ok(pm.matches_using_parent_results(path, &state)?.0)
        }
        "MatchesUsingParentResultsNoContext" => Ok(PatternMatcher::new(&patterns)?
            .matches_using_parent_results(path, &MatchInfo::default())?
            .0),
        other => panic!("unknown fn {other}"),
    }
}

fn match_cases() -> Vec<Trial> {
    let data = json("dockerignore/match_cases.json");
    let mut out = Vec::new();
    for case in data["cases"].as_array().into_iter().flatten() {
        let id = case["id"].as_str().unwrap_or_default().to_owned();
        let case = case.clone();
        out.push(Trial::test(
            format!("dockerignore::match::{id}"),
            move || {
                let repeat = case["repeat"].as_u64().unwrap_or(1);
                let mut first_err = None;
                for _ in 0..repeat {
                    let got = run_match(&case);
                    if case["error"].as_bool() == Some(true) {
                        let err = match got {
                            Err(e) => e,
                            Ok(m) => return Err(format!("expected an error, got {m}").into()),
                        };
                        let kind_ok = match case["error_kind"].as_str() {
                            Some("ErrBadPattern") => matches!(err, IgnoreError::BadPattern { .. }),
                            Some("illegal exclusion pattern") => {
                                err == IgnoreError::LoneExclamation
                            }
                            _ => true,
                        };
                        if !kind_ok {
                            return Err(format!("wrong error kind: {err:?}").into());
                        }
                        // Every call must fail the same way.
                        if let Some(prev) = &first_err {
                            check("repeated error", &err, prev)?;
                        }
                        first_err = Some(err);
                    } else {
                        let got = got.map_err(|e| format!("unexpected error: {e}"))?;
                        if let Some(want) = case["matches"].as_bool() {
                            check("matches", got, want)?;
                        }
                    }
                }
                Ok(())
            },
        ));
    }
    for case in data["new_cases"].as_array().into_iter().flatten() {
        let id = case["id"].as_str().unwrap_or_default().to_owned();
        let case = case.clone();
        out.push(Trial::test(format!("dockerignore::new::{id}"), move || {
            let got = PatternMatcher::new(strings(&case["patterns"]));
            if case["error"].as_bool() == Some(true) {
                return match got {
                    Err(_) => Ok(()),
                    Ok(_) => Err("expected an error".into()),
                };
            }
            let pm = got.map_err(|e| e.to_string())?;
            if let Some(n) = case["pattern_count"].as_u64() {
                check("pattern count", pm.patterns().len() as u64, n)?;
            }
            if let Some(x) = case["exclusions"].as_bool() {
                check("exclusions", pm.has_exclusions(), x)?;
            }
            Ok(())
        }));
    }
    // How upstream classifies patterns internally: not behaviour (see SKIPPED.md).
    out.push(
        Trial::test("dockerignore::internal_compile_cases", || Ok(())).with_ignored_flag(true),
    );
    out
}

fn ignorefile_cases() -> Vec<Trial> {
    let data = json("dockerignore/ignorefile_cases.json");
    data["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|case| {
            let id = case["id"].as_str().unwrap_or_default().to_owned();
            let case = case.clone();
            Trial::test(format!("dockerignore::ignorefile::{id}"), move || {
                let got = match case["input"].as_str() {
                    // No file: no patterns.
                    None => Vec::new(),
                    Some(text) => read_ignore_file(text).map_err(|e| e.to_string())?,
                };
                check("patterns", got, strings(&case["expected"]))
            })
        })
        .collect()
}

/// One entry of an in-memory tree.
#[derive(Debug, Clone)]
enum Node {
    File,
    Dir { readable: bool },
    Symlink(String),
}

#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    fn from_case(case: &Value) -> Self {
        let mut t = Self::default();
        for e in case["tree"].as_array().into_iter().flatten() {
            let path = e["path"].as_str().unwrap_or_default().to_owned();
            let node = match e["type"].as_str() {
                Some("dir") => Node::Dir { readable: true },
                Some("symlink") => {
                    Node::Symlink(e["target"].as_str().unwrap_or_default().to_owned())
                }
                _ => Node::File,
            };
            t.nodes.insert(path, node);
        }
        if let Some(chmod) = case["setup"]["chmod"].as_object() {
            for (path, mode) in chmod {
                if mode.as_str() == Some("0000") {
                    t.nodes.insert(path.clone(), Node::Dir { readable: false });
                }
            }
        }
        t
    }

    /// Names directly inside `dir` ("" for the root), sorted like Go's `ReadDir`.
    fn children(&self, dir: &str) -> Vec<String> {
        let names: BTreeSet<String> = self
            .nodes
            .keys()
            .filter_map(|p| {
                let rest = if dir.is_empty() {
                    Some(p.as_str())
                } else {
                    p.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
                };
                rest.filter(|r| !r.contains('/')).map(str::to_owned)
            })
            .collect();
        names.into_iter().collect()
    }
}

impl LinkResolver for Tree {
    type Error = String;

    fn read_link(&self, path: &str) -> Result<Option<Option<String>>, String> {
        Ok(self.nodes.get(path).map(|n| match n {
            Node::Symlink(t) => Some(t.clone()),
            _ => None,
        }))
    }

    fn read_dir(&self, path: &str) -> Result<Option<Vec<String>>, String> {
        let dir = if path == "." { "" } else { path };
        match self.nodes.get(dir) {
            None if !dir.is_empty() => Ok(None),
            Some(Node::Dir { readable: false }) => Err(format!("open {path}: permission denied")),
            _ => Ok(Some(self.children(dir))),
        }
    }
}

/// What a WalkDir callback returns.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    SkipDir,
}

/// The filter layers and the collector at the end.
struct Layers<'a> {
    walks: Vec<FilterWalk<'a>>,
    /// Per layer: directories whose emission the next layer refused (fsutil's `skipFn`).
    refused: Vec<Vec<String>>,
    /// Per layer: the decision for each directory, for read errors.
    hidden: Vec<BTreeSet<String>>,
    out: Vec<String>,
}

impl Layers<'_> {
    fn call(&mut self, k: usize, tree: &Tree, path: &str) -> Result<Flow, String> {
        let node = &tree.nodes[path];
        let is_dir = matches!(node, Node::Dir { .. });
        if k == self.walks.len() {
            self.out.push(match node {
                Node::File => format!("file {path}"),
                Node::Dir { .. } => format!("dir {path}"),
                Node::Symlink(t) => format!("symlink:{t} {path}"),
            });
            return Ok(Flow::Continue);
        }
        let decision = self.walks[k]
            .visit(path, is_dir)
            .map_err(|e| e.to_string())?;
        match decision {
            WalkDecision::SkipDir => Ok(Flow::SkipDir),
            WalkDecision::Hide => {
                if is_dir {
                    self.hidden[k].insert(path.to_owned());
                }
                Ok(Flow::Continue)
            }
            WalkDecision::Keep { parents } => {
                if self.refused[k]
                    .iter()
                    .any(|d| path.starts_with(&format!("{d}/")))
                {
                    return Ok(Flow::SkipDir);
                }
                for p in parents {
                    if self.call(k + 1, tree, &p)? == Flow::SkipDir {
                        self.refused[k].push(p);
                        return Ok(Flow::SkipDir);
                    }
                }
                self.call(k + 1, tree, path)
            }
            _ => Err("unknown decision".to_owned()),
        }
    }

    /// A directory could not be read: fsutil ignores that for hidden directories.
    fn read_error(&mut self, path: &str, err: String) -> Result<(), String> {
        if self.walks.is_empty() || !self.hidden[0].contains(path) {
            return Err(err);
        }
        Ok(())
    }

    /// Go's `filepath.WalkDir` below `dir`.
    fn walk_dir(&mut self, tree: &Tree, dir: &str) -> Result<(), String> {
        let names = match tree.read_dir(if dir.is_empty() { "." } else { dir }) {
            Ok(names) => names.unwrap_or_default(),
            Err(e) => return self.read_error(dir, e),
        };
        for name in names {
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let flow = self.call(0, tree, &path)?;
            let is_dir = matches!(tree.nodes[&path], Node::Dir { .. });
            match (flow, is_dir) {
                (Flow::SkipDir, true) => continue,
                // SkipDir on a file skips the rest of its directory.
                (Flow::SkipDir, false) => break,
                (Flow::Continue, true) => self.walk_dir(tree, &path)?,
                (Flow::Continue, false) => {}
            }
        }
        Ok(())
    }
}

fn build_filters(case: &Value, tree: &Tree) -> Result<Vec<ContextFilter>, String> {
    let mut filters = Vec::new();
    for f in case["filters"].as_array().into_iter().flatten() {
        let include = strings(&f["include_patterns"]);
        let exclude = strings(&f["exclude_patterns"]);
        let filter = if f["follow_paths"].is_null() {
            ContextFilter::new(&include, &exclude).map_err(|e| e.to_string())?
        } else {
            let follow = strings(&f["follow_paths"]);
            ContextFilter::with_follow_paths(&include, &exclude, &follow, tree).map_err(
                |e| match e {
                    Ok(e) => e.to_string(),
                    Err(e) => e,
                },
            )?
        };
        filters.push(filter);
    }
    Ok(filters)
}

fn run_walk(case: &Value) -> Result<Vec<String>, String> {
    let tree = Tree::from_case(case);
    let filters = build_filters(case, &tree)?;
    let mut layers = Layers {
        walks: filters.iter().map(ContextFilter::walk).collect(),
        refused: vec![Vec::new(); filters.len()],
        hidden: vec![BTreeSet::new(); filters.len()],
        out: Vec::new(),
    };
    layers.walk_dir(&tree, "")?;
    Ok(layers.out)
}

fn walk_cases() -> Vec<Trial> {
    let data = json("dockerignore/context_walk_cases.json");
    let mut out = Vec::new();
    for case in data["walk_cases"].as_array().into_iter().flatten() {
        let id = case["id"].as_str().unwrap_or_default().to_owned();
        let case = case.clone();
        out.push(Trial::test(
            format!("dockerignore::walk::{id}"),
            move || {
                if case["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("invalid pattern"))
                {
                    // "creating the filter fails".
                    let tree = Tree::from_case(&case);
                    return match build_filters(&case, &tree) {
                        Err(_) => Ok(()),
                        Ok(_) => Err("expected the filter to be rejected".into()),
                    };
                }
                let got = run_walk(&case);
                match case["error"].as_str() {
                    Some(want) => match got {
                        Err(e) if e.contains(want) => Ok(()),
                        Err(e) => Err(format!("error {e:?}, want {want:?}").into()),
                        Ok(w) => Err(format!("expected an error, got walk {w:?}").into()),
                    },
                    None => check("walk", got?, strings(&case["expected_walk"])),
                }
            },
        ));
    }
    for (i, case) in data["open_cases"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let id = case["id"].as_str().unwrap_or_default().to_owned();
        let case = case.clone();
        out.push(Trial::test(
            format!("dockerignore::open::{id}::{i}"),
            move || -> Result<(), Failed> {
                let tree = Tree::from_case(&case);
                let filters = build_filters(&case, &tree)?;
                for open in case["opens"].as_array().into_iter().flatten() {
                    let path = open["path"].as_str().unwrap_or_default();
                    let mut visible = tree.nodes.contains_key(path);
                    for f in &filters {
                        visible = visible && f.is_visible(path).map_err(|e| e.to_string())?;
                    }
                    check(path, visible, open["exists"].as_bool().unwrap_or(false))?;
                }
                Ok(())
            },
        ));
    }
    for case in data["build_cases"].as_array().into_iter().flatten() {
        let id = case["id"].as_str().unwrap_or_default().to_owned();
        // Whole builds: covered by the builder's tests (see SKIPPED.md).
        out.push(
            Trial::test(format!("dockerignore::build::{id}"), || Ok(())).with_ignored_flag(true),
        );
    }
    out
}
