//! The Dockerfile frontend: stages of a [`BuildPlan`] → vertices of a [`Graph`].
//!
//! Keys are derived exactly as the engine derives them when it runs the steps (the same
//! inputs, the same `CacheKey::derive` kinds), from the resolved base images' manifest
//! digests and the context files' content.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dockerfile::{BuildPlan, DepKind, DepSource, Instruction, Scope, StageBase};
use registry_client::Platform;

use super::{Edge, EdgeKind, Graph, GraphResult, ImageResolver, Op, Vertex, keys};
use crate::cachekey::CacheKey;
use crate::copy::{BuildContext, CopyParams, CopySource};
use crate::engine::Error;
use crate::engine::exec::{
    clean_path, join_workdir, oci_variant, source_text, stage_platform, trigger_dep, workdir_path,
};
use crate::fsview::LayeredView;
use crate::image::ImageConfig;
use crate::sandbox::NetworkMode;

/// The build options that enter keys or decide whether a step may run.
#[derive(Debug, Clone)]
pub(crate) struct GraphOptions {
    /// The default network of RUN steps.
    pub(crate) network: NetworkMode,
    /// `--allow network.host`.
    pub(crate) allow_network_host: bool,
    /// `--allow security.insecure`.
    pub(crate) allow_insecure: bool,
    /// `--add-host` entries as RUN keys hold them (see `engine::exec::extra_host_keys`).
    pub(crate) extra_hosts: Vec<String>,
    /// `--ulimit`, `--shm-size`.
    pub(crate) run_limits: crate::sandbox::RunLimits,
}

/// Builds a [`Graph`] from one or more plans (platforms, targets) of one Dockerfile and
/// context, merging equal vertices as it goes.
pub(crate) struct GraphBuilder<'a> {
    resolver: &'a dyn ImageResolver,
    context: Arc<BuildContext>,
    opts: GraphOptions,
    file: String,
    text: String,
    graph: Graph,
    index: HashMap<CacheKey, usize>,
    steps: Vec<StepKey>,
}

/// The filesystem key a stage has after one of its steps: the build's target platform,
/// the stage's index, the instruction's index (`None` for the stage's base), the key.
pub(crate) type StepKey = (String, usize, Option<usize>, CacheKey);

/// A stage's result while its instructions are turned into vertices.
#[derive(Clone)]
struct StageOut {
    /// The last filesystem vertex.
    fs: CacheKey,
    /// The last vertex (filesystem or metadata).
    last: CacheKey,
    config: ImageConfig,
    scope: Scope,
    platform: Platform,
}

impl<'a> GraphBuilder<'a> {
    /// A builder for the Dockerfile `file` with source `text`, reading COPY sources from
    /// `context`.
    pub(crate) fn new(
        resolver: &'a dyn ImageResolver,
        context: Arc<BuildContext>,
        opts: GraphOptions,
        file: &str,
        text: &str,
    ) -> Self {
        GraphBuilder {
            resolver,
            context,
            opts,
            file: file.to_owned(),
            text: text.to_owned(),
            graph: Graph::default(),
            index: HashMap::new(),
            steps: Vec::new(),
        }
    }

    /// The graph so far.
    pub(crate) fn finish(self) -> Graph {
        self.graph
    }

    /// The filesystem key of each stage after each of its steps, in the order they were
    /// added.
    pub(crate) fn steps(&self) -> &[StepKey] {
        &self.steps
    }

    fn add(&mut self, v: Vertex) -> CacheKey {
        self.graph.add(&mut self.index, v)
    }

    fn stage_error(&self, source: dockerfile::StageError) -> Error {
        Error::Stages {
            file: self.file.clone(),
            source: source.into(),
        }
    }

    fn step_error(&self, span: dockerfile::Span, reason: impl Into<String>) -> Error {
        Error::invalid_step(reason).at_step(
            &format!("{}:{}", self.file, span.start_line),
            &source_text(&self.text, span),
        )
    }

    /// The source vertex of image `r` for `platform`; its key.
    async fn image(
        &mut self,
        r: &str,
        platform: &Platform,
    ) -> Result<(CacheKey, ImageConfig), Error> {
        let res = self.resolver.resolve(r, platform).await?;
        let key = keys::image(&res.manifest_digest);
        self.add(Vertex {
            key: key.clone(),
            op: Op::Image {
                reference: r.to_owned(),
                digest: res.manifest_digest.clone(),
            },
            inputs: Vec::new(),
            name: format!("FROM {r}"),
            platform: platform.to_string(),
        });
        Ok((key, res.config))
    }

    /// Adds the vertices of `plan` (one target, one platform) and its result.
    ///
    /// # Errors
    /// What the engine would report before running the same steps: stage and expansion
    /// errors, images that do not resolve, invalid COPY or mount definitions, steps the
    /// build options do not allow.
    pub(crate) async fn add_plan(
        &mut self,
        plan: &BuildPlan,
        platform: &Platform,
    ) -> Result<(), Error> {
        let mut outs: HashMap<usize, StageOut> = HashMap::new();
        let mut reachable: Vec<usize> = plan.reachable().to_vec();
        reachable.sort_unstable();
        for idx in reachable {
            let out = self.stage(plan, platform, idx, &outs).await?;
            outs.insert(idx, out);
        }
        let target = plan.target();
        let out = outs.get(&target).expect("the target stage is reachable");
        let result = GraphResult {
            target: plan.stages()[target].display_name(),
            platform: platform.to_string(),
            key: out.last.clone(),
            rootfs: out.fs.clone(),
        };
        if !self.graph.results.contains(&result) {
            self.graph.results.push(result);
        }
        Ok(())
    }

    async fn stage(
        &mut self,
        plan: &BuildPlan,
        platform: &Platform,
        idx: usize,
        outs: &HashMap<usize, StageOut>,
    ) -> Result<StageOut, Error> {
        let stage = &plan.stages()[idx];
        let labels = crate::engine::labels::StepLabels::new(stage, plan.stages().len());
        let from_text = source_text(&self.text, stage.span);
        let image_env = |config: &ImageConfig| -> Vec<String> {
            config
                .env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        };
        let mut st = match &stage.base {
            StageBase::Scratch => {
                let target = stage_platform(plan, stage, platform)
                    .map_err(|e| self.step_error(stage.span, e.to_string()))?;
                let config =
                    ImageConfig::scratch(target.os(), target.architecture(), oci_variant(&target));
                let key = self.add(Vertex {
                    key: keys::scratch(&target),
                    op: Op::Scratch,
                    inputs: Vec::new(),
                    name: labels.from(&from_text),
                    platform: target.to_string(),
                });
                StageOut {
                    fs: key.clone(),
                    last: key,
                    scope: plan.image_scope(idx, &image_env(&config)),
                    config,
                    platform: target,
                }
            }
            StageBase::Image(r) => {
                let target = stage_platform(plan, stage, platform)
                    .map_err(|e| self.step_error(stage.span, e.to_string()))?;
                let (key, config) = self
                    .image(r, &target)
                    .await
                    .map_err(|e| self.step_error(stage.span, e.to_string()))?;
                StageOut {
                    fs: key.clone(),
                    last: key,
                    scope: plan.image_scope(idx, &image_env(&config)),
                    config,
                    platform: target,
                }
            }
            StageBase::Stage(j) => {
                let mut s = outs.get(j).cloned().ok_or_else(|| {
                    self.step_error(stage.span, format!("stage {j} is not part of this build"))
                })?;
                s.scope = plan.stage_scope(idx, &s.scope);
                s
            }
            _ => return Err(self.step_error(stage.span, "unsupported stage base")),
        };
        let at = platform.to_string();
        self.steps.push((at.clone(), idx, None, st.fs.clone()));
        // The ONBUILD triggers of the base come first, as the build runs them.
        let triggers = st.config.onbuild();
        st.config.clear_onbuild();
        for (t, trigger) in triggers.into_iter().enumerate() {
            let text = format!("ONBUILD {trigger}");
            let df = dockerfile::parse(&trigger)
                .map_err(|e| self.step_error(stage.span, e.to_string()))?;
            for ins in &df.instructions {
                let step = st.scope.step(ins).map_err(|e| self.stage_error(e))?;
                let dep = trigger_dep(plan, stage, t, &step.instruction)
                    .map_err(|reason| self.step_error(stage.span, reason))?;
                let name = labels.unnumbered(&text);
                self.instruction(plan, idx, outs, &mut st, &step.instruction, dep, name)
                    .await?;
            }
        }
        for (i, ins) in stage.instructions.iter().enumerate() {
            let step = st.scope.step(ins).map_err(|e| self.stage_error(e))?;
            let dep = stage
                .deps
                .iter()
                .find(|d| d.instruction == i && d.kind != DepKind::Onbuild)
                .map(|d| d.source.clone());
            let name = labels.instruction(i, &source_text(&self.text, ins.span));
            self.instruction(plan, idx, outs, &mut st, &step.instruction, dep, name)
                .await?;
            self.steps.push((at.clone(), idx, Some(i), st.fs.clone()));
        }
        Ok(st)
    }

    #[allow(clippy::too_many_arguments)]
    async fn instruction(
        &mut self,
        plan: &BuildPlan,
        idx: usize,
        outs: &HashMap<usize, StageOut>,
        st: &mut StageOut,
        ins: &dockerfile::Spanned<Instruction>,
        dep: Option<DepSource>,
        name: String,
    ) -> Result<(), Error> {
        let span = ins.span;
        let platform = st.platform.to_string();
        let fs_vertex = |key: CacheKey, op: Op, mut extra: Vec<Edge>, st: &StageOut| {
            let mut inputs = vec![Edge {
                key: st.fs.clone(),
                kind: EdgeKind::Parent,
            }];
            inputs.append(&mut extra);
            Vertex {
                key,
                op,
                inputs,
                name: name.clone(),
                platform: platform.clone(),
            }
        };
        match &ins.value {
            Instruction::Workdir(w) => {
                let written = join_workdir(st.config.working_dir().as_deref(), &w.value);
                st.config.set_working_dir(&written);
                let dir = clean_path(&written);
                if dir != "/" {
                    let user = st.config.user().unwrap_or_default();
                    let key = keys::workdir(&st.fs, &dir, &user);
                    let op = Op::File {
                        action: "mkdir".into(),
                        instruction: format!("WORKDIR {written}"),
                    };
                    let key = self.add(fs_vertex(key, op, Vec::new(), st));
                    st.fs = key.clone();
                    st.last = key;
                    return Ok(());
                }
            }
            Instruction::Run(r) => {
                let v = self.run(plan, idx, outs, st, r, span).await?;
                let v = fs_vertex(v.0, v.1, v.2, st);
                let key = self.add(v);
                st.fs = key.clone();
                st.last = key;
                return Ok(());
            }
            Instruction::Copy(_) | Instruction::Add(_) => {
                let (key, op, extra) = self.copy(outs, st, ins, dep).await?;
                let key = self.add(fs_vertex(key, op, extra, st));
                st.fs = key.clone();
                st.last = key;
                return Ok(());
            }
            Instruction::User(u) => st.config.set_user(&u.value),
            Instruction::Shell(words) => {
                st.config
                    .set_shell(words.iter().map(|w| w.value.clone()).collect());
            }
            Instruction::Env(kvs) => {
                for kv in kvs {
                    st.config.set_env(&kv.key.value, &kv.value.value);
                }
            }
            // The triggers a later stage built on this one runs.
            Instruction::Onbuild(o) => st.config.add_onbuild(&o.expression),
            Instruction::Label(_)
            | Instruction::Maintainer(_)
            | Instruction::Arg(_)
            | Instruction::Expose(_)
            | Instruction::Volume(_)
            | Instruction::StopSignal(_)
            | Instruction::Cmd(_)
            | Instruction::Entrypoint(_)
            | Instruction::Healthcheck(_) => {}
            Instruction::From(_) => return Err(self.step_error(span, "FROM inside a stage")),
            other => {
                return Err(
                    self.step_error(span, format!("{} is not supported yet", other.keyword()))
                );
            }
        }
        // A configuration change: keyed by the previous vertex and the expanded instruction.
        let instruction = format!("{:?}", ins.value);
        let key = CacheKey::derive(Some(&st.last), "meta", &instruction);
        let key = self.add(Vertex {
            key,
            op: Op::Meta { instruction },
            inputs: vec![Edge {
                key: st.last.clone(),
                kind: EdgeKind::Parent,
            }],
            name,
            platform,
        });
        st.last = key;
        Ok(())
    }

    /// A RUN's key, operation and mount edges.
    async fn run(
        &mut self,
        plan: &BuildPlan,
        idx: usize,
        outs: &HashMap<usize, StageOut>,
        st: &StageOut,
        r: &dockerfile::RunInstruction,
        span: dockerfile::Span,
    ) -> Result<(CacheKey, Op, Vec<Edge>), Error> {
        let platform = &st.platform;
        let env: BTreeMap<String, String> = st
            .scope
            .env()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let def = keys::exec(&self.opts, &st.config, env, platform, r)
            .map_err(|reason| self.step_error(span, reason))?;
        // RUN --mount from= sources: a stage's filesystem or an image.
        let stage_deps = &plan.stages()[idx].deps;
        let mut from_keys = Vec::new();
        let mut edges = Vec::new();
        for m in &r.mounts {
            let Some(from) = crate::engine::mounts::mount_from(m) else {
                from_keys.push(None);
                continue;
            };
            let source = stage_deps
                .iter()
                .find(|d| matches!(d.kind, DepKind::Mount | DepKind::Onbuild) && d.from == from)
                .map_or_else(|| DepSource::Image(from.to_owned()), |d| d.source.clone());
            let key = match source {
                DepSource::Stage(j) => outs.get(&j).map(|o| o.fs.clone()).ok_or_else(|| {
                    self.step_error(span, format!("stage {j} is not part of this build"))
                })?,
                DepSource::Image(r) => {
                    self.image(&r, platform)
                        .await
                        .map_err(|e| self.step_error(span, e.to_string()))?
                        .0
                }
                _ => {
                    return Err(
                        self.step_error(span, format!("mount from {from}: unsupported source"))
                    );
                }
            };
            edges.push(Edge {
                key: key.clone(),
                kind: EdgeKind::Mount,
            });
            from_keys.push(Some(key));
        }
        let mounts = crate::engine::mounts::prepare(&r.mounts, &from_keys, &def.cwd, &self.context)
            .await
            .map_err(|reason| self.step_error(span, reason))?;
        let key = def.key(&self.opts, &st.fs, mounts.key());
        let op = def.op(mounts.key());
        Ok((key, op, edges))
    }

    /// A COPY's or ADD's key, operation and source edge.
    async fn copy(
        &mut self,
        outs: &HashMap<usize, StageOut>,
        st: &StageOut,
        ins: &dockerfile::Spanned<Instruction>,
        dep: Option<DepSource>,
    ) -> Result<(CacheKey, Op, Vec<Edge>), Error> {
        let span = ins.span;
        let workdir = workdir_path(&st.config, &st.platform);
        let (params, action, sources) = match &ins.value {
            Instruction::Copy(c) => (CopyParams::from_copy(c, &workdir), "copy", &c.sources),
            Instruction::Add(a) => (CopyParams::from_add(a, &workdir), "add", &a.sources),
            _ => unreachable!("copy is only called for COPY and ADD"),
        };
        let params = Arc::new(params.map_err(|e| self.step_error(span, e.to_string()))?);
        let from_key = match dep {
            Some(DepSource::Stage(j)) => {
                Some(outs.get(&j).map(|o| o.fs.clone()).ok_or_else(|| {
                    self.step_error(span, format!("stage {j} is not part of this build"))
                })?)
            }
            Some(DepSource::Image(r)) => Some(
                self.image(&r, &st.platform)
                    .await
                    .map_err(|e| self.step_error(span, e.to_string()))?
                    .0,
            ),
            _ => None,
        };
        let inputs = match &from_key {
            None => {
                let (context, params) = (self.context.clone(), params.clone());
                tokio::task::spawn_blocking(move || {
                    crate::copy::cache_inputs(&params, &CopySource::Context(&context))
                })
                .await
                .map_err(|e| self.step_error(span, e.to_string()))?
            }
            Some(key) => crate::copy::cache_inputs(
                &params,
                &CopySource::Layers {
                    view: &LayeredView::default(),
                    key,
                },
            ),
        }
        .map_err(|e| self.step_error(span, e.to_string()))?;
        let key = keys::copy(&st.fs, &inputs);
        let source = match from_key {
            Some(k) => k,
            None => {
                let names: Vec<String> = sources.iter().map(source_name).collect();
                self.add(Vertex {
                    key: keys::context(&inputs),
                    op: Op::Context {
                        sources: names.clone(),
                    },
                    inputs: Vec::new(),
                    name: format!("context {}", names.join(" ")),
                    platform: String::new(),
                })
            }
        };
        let op = Op::File {
            action: action.into(),
            instruction: source_text(&self.text, span),
        };
        Ok((
            key,
            op,
            vec![Edge {
                key: source,
                kind: EdgeKind::Copy,
            }],
        ))
    }
}

fn source_name(s: &dockerfile::Source) -> String {
    match s {
        dockerfile::Source::Path(p) => p.value.clone(),
        dockerfile::Source::Heredoc(h) => format!("<<{}", h.name),
    }
}
