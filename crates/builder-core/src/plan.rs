//! The CI planner (`rbuild build --call plan`): what a build needs, from the Dockerfile
//! alone, so that a CI pipeline can generate a job matrix (one job per platform) from it.
//!
//! The JSON shape ([`CiPlan`] serialised) is an object with plainly named fields; new
//! fields may be added, existing ones keep their meaning:
//!
//! ```json
//! {
//!   "platforms": ["linux/amd64", "linux/arm64"],
//!   "host_platform": "linux/amd64",
//!   "target": "release",
//!   "targets": [
//!     {"index": 0, "name": "deps", "base": "node:20-slim",
//!      "platforms": ["linux/amd64", "linux/arm64"]},
//!     {"index": 2, "name": "release", "base": "stage:deps",
//!      "platforms": ["linux/amd64", "linux/arm64"]}
//!   ]
//! }
//! ```
//!
//! - `platforms`: the requested target platforms, normalised, duplicates removed, in the
//!   order asked (the host's platform when none was asked): one matrix entry each.
//! - `host_platform`: the platform of the machine that made the plan.
//! - `target`: the stage that is the build's result (its name, or `stage-N`).
//! - `targets`: every stage the build needs for at least one platform, in file order
//!   (each after the stages it reads from); `base` is `scratch`, an image reference, or
//!   `stage:NAME` for a stage built on an earlier one; `platforms` lists the requested
//!   platforms that need the stage (a `FROM` can depend on `TARGETARCH`).

use std::collections::BTreeMap;

use dockerfile::{BuildPlan, Dockerfile, PlanOptions, PlatformSpec, StageBase, StageError};
use serde::Serialize;

/// What a build needs, for CI: see the [module documentation](self) for the JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CiPlan {
    /// The requested platforms (`os/arch[/variant]`), one matrix entry each.
    pub platforms: Vec<String>,
    /// The platform of the machine that made the plan.
    pub host_platform: String,
    /// The stage the build produces.
    pub target: String,
    /// The stages the build needs, in file order.
    pub targets: Vec<PlanTarget>,
}

/// One stage a build needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PlanTarget {
    /// Position among the Dockerfile's stages.
    pub index: usize,
    /// The stage name, or `stage-N` for an unnamed stage.
    pub name: String,
    /// `scratch`, an image reference (expanded), or `stage:NAME`.
    pub base: String,
    /// The requested platforms that need this stage.
    pub platforms: Vec<String>,
}

/// What [`ci_plan`] is asked.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PlanRequest {
    /// Target platforms; empty means the host's.
    pub platforms: Vec<PlatformSpec>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
}

impl PlanRequest {
    /// A request for `platforms` (empty: the host's) with no build args or target.
    #[must_use]
    pub fn new(platforms: Vec<PlatformSpec>) -> Self {
        Self {
            platforms,
            ..Self::default()
        }
    }
}

/// Plans `dockerfile` for every requested platform without building anything.
///
/// # Errors
/// The Dockerfile's stage errors (unknown target, bad `FROM`, stage cycles...).
pub fn ci_plan(dockerfile: &Dockerfile, req: &PlanRequest) -> Result<CiPlan, StageError> {
    let host = PlatformSpec::host();
    let mut platforms: Vec<PlatformSpec> = Vec::new();
    for p in &req.platforms {
        if !platforms.contains(p) {
            platforms.push(p.clone());
        }
    }
    if platforms.is_empty() {
        platforms.push(host.clone());
    }
    let mut target = String::new();
    // Stage index → (name, base, platforms).
    let mut needed: BTreeMap<usize, PlanTarget> = BTreeMap::new();
    for platform in &platforms {
        let mut opts = PlanOptions::new(platform.clone(), host.clone());
        opts.build_args = req.build_args.clone();
        opts.target = req.target.clone();
        let plan = BuildPlan::new(dockerfile, &opts)?;
        let stages = plan.stages();
        target = stages[plan.target()].display_name();
        for &i in plan.reachable() {
            let stage = &stages[i];
            let entry = needed.entry(i).or_insert_with(|| PlanTarget {
                index: i,
                name: stage.display_name(),
                base: match &stage.base {
                    StageBase::Scratch => "scratch".to_owned(),
                    StageBase::Image(r) => r.clone(),
                    StageBase::Stage(b) => format!("stage:{}", stages[*b].display_name()),
                    other => format!("{other:?}"),
                },
                platforms: Vec::new(),
            });
            entry.platforms.push(platform.to_string());
        }
    }
    Ok(CiPlan {
        platforms: platforms.iter().map(ToString::to_string).collect(),
        host_platform: host.to_string(),
        target,
        targets: needed.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn df(text: &str) -> Dockerfile {
        dockerfile::parse_bytes(text.as_bytes()).unwrap()
    }

    #[test]
    fn platforms_and_reachable_stages() {
        let d = df("FROM busybox AS base\n\
             FROM base AS build\nRUN true\n\
             FROM alpine AS unused\n\
             FROM scratch AS release\nCOPY --from=build /x /x\n");
        let req = PlanRequest::new(vec![
            "linux/amd64".parse().unwrap(),
            "linux/arm64".parse().unwrap(),
            "linux/amd64".parse().unwrap(),
        ]);
        let plan = ci_plan(&d, &req).unwrap();
        assert_eq!(plan.platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(plan.target, "release");
        let names: Vec<&str> = plan.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["base", "build", "release"]);
        assert_eq!(plan.targets[1].base, "stage:base");
        assert_eq!(plan.targets[2].base, "scratch");
        assert_eq!(plan.targets[0].platforms, ["linux/amd64", "linux/arm64"]);
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["targets"][0]["base"], "busybox");
    }

    #[test]
    fn per_platform_stages_and_target() {
        let d = df("ARG TARGETARCH\n\
             FROM busybox AS base-amd64\n\
             FROM alpine AS base-arm64\n\
             FROM base-${TARGETARCH} AS final\n\
             FROM scratch AS other\n");
        let mut req = PlanRequest::new(vec![
            "linux/amd64".parse().unwrap(),
            "linux/arm64".parse().unwrap(),
        ]);
        req.target = Some("final".into());
        let plan = ci_plan(&d, &req).unwrap();
        assert_eq!(plan.target, "final");
        let t: Vec<(&str, Vec<String>)> = plan
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.platforms.clone()))
            .collect();
        assert_eq!(
            t,
            [
                ("base-amd64", vec!["linux/amd64".to_owned()]),
                ("base-arm64", vec!["linux/arm64".to_owned()]),
                (
                    "final",
                    vec!["linux/amd64".to_owned(), "linux/arm64".to_owned()]
                ),
            ]
        );
        req.target = Some("nope".into());
        assert!(ci_plan(&d, &req).is_err());
    }

    #[test]
    fn host_when_no_platform() {
        let plan = ci_plan(&df("FROM scratch\n"), &PlanRequest::default()).unwrap();
        assert_eq!(plan.platforms, [PlatformSpec::host().to_string()]);
        assert_eq!(plan.target, "stage-0");
    }
}
