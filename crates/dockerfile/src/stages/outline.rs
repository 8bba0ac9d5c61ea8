//! What `docker buildx build --call outline|targets` reports, computed without building
//! (BuildKit's `frontend.outline` and `frontend.targets` subrequests).
//!
//! BuildKit evaluates ARG defaults against the base images' environments; without pulling
//! anything, an image's environment is taken to be empty here (plus the default `PATH`).

use std::collections::{BTreeMap, BTreeSet};

use super::{BuildPlan, DepSource, Scope, StageBase, StageError};
use crate::ast::{Dockerfile, Instruction, Mount, Span};

/// The build arguments, secrets and SSH sockets a target uses (`--call outline`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Outline {
    /// The target stage's name; empty when it has none.
    pub name: String,
    /// The target stage's description (comment above its `FROM`).
    pub description: String,
    /// Build args the target uses, in Dockerfile order.
    pub args: Vec<OutlineArg>,
    /// Secrets mounted by `RUN --mount=type=secret`, in Dockerfile order.
    pub secrets: Vec<OutlineMount>,
    /// SSH sockets mounted by `RUN --mount=type=ssh`, in Dockerfile order.
    pub ssh: Vec<OutlineMount>,
}

/// One build arg of an [`Outline`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutlineArg {
    /// The name.
    pub name: String,
    /// The value it takes in this build (empty when unset).
    pub value: String,
    /// The description from the comment above the `ARG`.
    pub description: String,
    /// The `ARG` instruction.
    pub span: Span,
}

/// One secret or SSH mount of an [`Outline`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutlineMount {
    /// The secret or SSH id.
    pub id: String,
    /// Whether the build fails without it.
    pub required: bool,
    /// The `RUN` instruction.
    pub span: Span,
}

/// One stage as `--call targets` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetInfo {
    /// The stage name; empty when it has none.
    pub name: String,
    /// The description from the comment above `FROM`.
    pub description: String,
    /// Whether it is the default target (the last stage).
    pub default: bool,
    /// The base as written (unexpanded).
    pub base: String,
    /// `--platform` as written, empty when absent.
    pub platform: String,
    /// The `FROM` instruction.
    pub span: Span,
}

/// The stages of a Dockerfile as `--call targets` lists them. Only the structure is
/// checked (an instruction other than `ARG` before the first `FROM` is an error).
///
/// # Errors
/// [`StageError::InstructionBeforeFrom`].
pub fn list_targets(dockerfile: &Dockerfile) -> Result<Vec<TargetInfo>, StageError> {
    let mut out: Vec<TargetInfo> = Vec::new();
    for ins in &dockerfile.instructions {
        match &ins.value {
            Instruction::From(f) => out.push(TargetInfo {
                name: f.name.as_ref().map(|n| n.value.clone()).unwrap_or_default(),
                description: f.doc_comment.clone(),
                default: false,
                base: f.image.value.clone(),
                platform: f
                    .platform
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default(),
                span: ins.span,
            }),
            Instruction::Arg(_) => {}
            other if out.is_empty() => {
                return Err(StageError::InstructionBeforeFrom {
                    keyword: other.keyword(),
                    span: ins.span,
                });
            }
            _ => {}
        }
    }
    if let Some(last) = out.last_mut() {
        last.default = true;
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct ArgInfo {
    value: String,
    description: String,
    span: Span,
    deps: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct StageOutline {
    all_args: BTreeMap<String, ArgInfo>,
    used: BTreeSet<String>,
    secrets: BTreeMap<String, OutlineMount>,
    ssh: BTreeMap<String, OutlineMount>,
}

impl BuildPlan {
    /// The outline of the target (`--call outline`): the build args it (and every stage
    /// it needs) uses with their values and descriptions, its secrets and SSH mounts.
    ///
    /// # Errors
    /// What walking the stages' instructions raises ([`StageError::Expand`],
    /// [`StageError::Mount`]), as a build would.
    pub fn outline(&self) -> Result<Outline, StageError> {
        let meta: BTreeMap<String, ArgInfo> = self
            .meta_args
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    ArgInfo {
                        value: m.value.clone().unwrap_or_default(),
                        description: m.doc_comment.clone(),
                        span: m.span,
                        deps: m.deps.clone(),
                    },
                )
            })
            .collect();

        let mut scopes: BTreeMap<usize, Scope> = BTreeMap::new();
        let mut outlines: BTreeMap<usize, StageOutline> = BTreeMap::new();
        for &i in &self.reachable {
            let stage = &self.stages[i];
            let mut scope = match stage.base {
                StageBase::Stage(b) => match scopes.get(&b) {
                    Some(parent) => self.stage_scope(i, parent),
                    None => self.image_scope::<&str>(i, &[]),
                },
                _ => self.image_scope::<&str>(i, &[]),
            };
            let mut o = StageOutline {
                all_args: meta.clone(),
                used: stage.from_args.clone(),
                ..StageOutline::default()
            };
            for ins in &stage.instructions {
                let step = scope.step(ins)?;
                match &step.instruction.value {
                    Instruction::Arg(defs) => {
                        let Instruction::Arg(orig) = &ins.value else {
                            continue;
                        };
                        for (def, resolved) in orig.iter().zip(defs) {
                            let key = &def.name.value;
                            // `ARG X` alone inheriting the global X keeps the global info.
                            let inherited = def.default.is_none()
                                && !self.build_args.contains_key(key)
                                && self.global.get(key).is_some();
                            if !inherited {
                                o.all_args.insert(
                                    key.clone(),
                                    ArgInfo {
                                        value: resolved
                                            .default
                                            .as_ref()
                                            .map(|v| v.value.clone())
                                            .unwrap_or_default(),
                                        description: def.doc_comment.clone(),
                                        span: ins.span,
                                        deps: BTreeSet::new(),
                                    },
                                );
                            }
                            o.used.insert(key.clone());
                        }
                    }
                    Instruction::Run(r) => {
                        for m in r.mounts.iter().filter_map(|m| m.literal.as_ref()) {
                            match m {
                                Mount::Secret(s) => {
                                    let id = s.id.clone().unwrap_or_else(|| {
                                        let t = s.target.as_deref().unwrap_or_default();
                                        t.rsplit('/').next().unwrap_or_default().to_owned()
                                    });
                                    o.secrets.insert(
                                        id.clone(),
                                        OutlineMount {
                                            id,
                                            required: s.required,
                                            span: ins.span,
                                        },
                                    );
                                }
                                Mount::Ssh(s) => {
                                    let id = s.id.clone().unwrap_or_else(|| "default".to_owned());
                                    o.ssh.insert(
                                        id.clone(),
                                        OutlineMount {
                                            id,
                                            required: s.required,
                                            span: ins.span,
                                        },
                                    );
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            scopes.insert(i, scope);
            outlines.insert(i, o);
        }

        let mut args = Vec::new();
        let mut secrets = Vec::new();
        let mut ssh = Vec::new();
        let mut seen_args = BTreeSet::new();
        let mut seen_secrets = BTreeSet::new();
        let mut seen_ssh = BTreeSet::new();
        let mut seen_stages = BTreeSet::new();
        let mut todo = vec![self.target];
        while let Some(s) = todo.pop() {
            if !seen_stages.insert(s) {
                continue;
            }
            let Some(o) = outlines.get(&s) else { continue };
            // Args a used arg's default depended on count as used too.
            let mut used = BTreeSet::new();
            let mut queue: Vec<String> = o.used.iter().cloned().collect();
            while let Some(k) = queue.pop() {
                if used.insert(k.clone()) {
                    if let Some(a) = o.all_args.get(&k) {
                        queue.extend(a.deps.iter().cloned());
                    }
                }
            }
            for k in used {
                if let Some(a) = o.all_args.get(&k) {
                    if seen_args.insert(k.clone()) {
                        args.push(OutlineArg {
                            name: k,
                            value: a.value.clone(),
                            description: a.description.clone(),
                            span: a.span,
                        });
                    }
                }
            }
            for m in o.secrets.values() {
                if seen_secrets.insert(m.id.clone()) {
                    secrets.push(m.clone());
                }
            }
            for m in o.ssh.values() {
                if seen_ssh.insert(m.id.clone()) {
                    ssh.push(m.clone());
                }
            }
            // Visit the base first, then the other stages read from (a stack: push in
            // reverse).
            let stage = &self.stages[s];
            let mut next: Vec<usize> = Vec::new();
            if let StageBase::Stage(b) = stage.base {
                next.push(b);
            }
            next.extend(stage.deps.iter().filter_map(|d| match d.source {
                DepSource::Stage(j) => Some(j),
                DepSource::Image(_) => None,
            }));
            todo.extend(next.into_iter().rev());
        }
        let key = |span: &Span| (span.start_line, span.start_column);
        args.sort_by_key(|a| key(&a.span));
        secrets.sort_by_key(|m| key(&m.span));
        ssh.sort_by_key(|m| key(&m.span));

        let target = &self.stages[self.target];
        Ok(Outline {
            name: target.name.clone().unwrap_or_default(),
            description: target.doc_comment.clone(),
            args,
            secrets,
            ssh,
        })
    }
}
