//! `rbuild build`: the options of `docker buildx build` that rbuild supports, parsed and
//! validated up front; `--call outline|targets` answered from the Dockerfile alone.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;

use builder_core::ExportSpec;
use builder_core::registry_client::{self, Platform, Reference};
use clap::Args;
use dockerfile::{
    self, BuildPlan, Dockerfile, PlanOptions, PlanWarning, PlatformSpec, list_targets,
};

use crate::call::{self, CallFunc};
use crate::diag;
use crate::exit::Failure;

const BUILD_HELP: &str = "\
Usage:  {usage}

{about}

Options:
{options}
";

/// Start a build
#[derive(Debug, Clone, Args)]
#[command(
    override_usage = "rbuild build [OPTIONS] PATH",
    help_template = BUILD_HELP,
    about = "Start a build",
    term_width = 0,
    next_line_help = false
)]
pub(crate) struct BuildOpts {
    /// Allow extra privileged entitlement (e.g., "network.host", "security.insecure")
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_parser = parse_entitlement)]
    pub(crate) allow: Vec<String>,

    /// Attestation parameters (format: "type=sbom,generator=image")
    #[arg(long = "attest", value_name = "SPEC", value_parser = parse_attest)]
    pub(crate) attest: Vec<builder_core::AttestSpec>,

    /// Attach attestations as OCI 1.1 referrers (manifests with a subject) instead of index entries
    #[arg(long = "attest-referrers")]
    pub(crate) attest_referrers: bool,

    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", value_parser = parse_build_arg)]
    pub(crate) build_args: Vec<(String, Option<String>)>,

    /// Directory of the build cache (default: "$XDG_CACHE_HOME/rbuild")
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,

    /// External cache sources (e.g., "user/app:cache", "type=registry,ref=user/app:cache")
    #[arg(long = "cache-from", value_name = "SPEC", value_parser = parse_cache_from)]
    pub(crate) cache_from: Vec<builder_core::remote_cache::CacheImportSpec>,

    /// Cache export destinations (e.g., "user/app:cache", "type=registry,ref=user/app:cache,mode=max")
    #[arg(long = "cache-to", value_name = "SPEC", value_parser = parse_cache_to)]
    pub(crate) cache_to: Vec<builder_core::remote_cache::CacheExportSpec>,

    /// Set method for evaluating build ("check", "outline", "targets", "plan") (default "build")
    #[arg(long = "call", value_name = "METHOD", default_value = "build", hide_default_value = true, value_parser = call::parse_call)]
    call: CallFunc,

    /// Shorthand for "--call=check"
    #[arg(long = "check", conflicts_with = "call")]
    check: bool,

    /// Name of the Dockerfile (default: "PATH/Dockerfile"; "-" reads stdin)
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub(crate) file: Option<String>,

    /// Write the image ID to a file (for several platforms without an output: one config digest per line)
    #[arg(long = "iidfile", value_name = "PATH")]
    pub(crate) iidfile: Option<PathBuf>,

    /// Registry reached over plain HTTP (localhost and 127.0.0.1 always are)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]", value_parser = parse_registry_host)]
    pub(crate) insecure_registries: Vec<String>,

    /// Set metadata for an image
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub(crate) labels: Vec<(String, String)>,

    /// Write build result metadata to a file
    #[arg(long = "metadata-file", value_name = "PATH")]
    pub(crate) metadata_file: Option<PathBuf>,

    /// Set the networking mode for the "RUN" instructions during build ("default", "host", "none") (default "default")
    #[arg(long = "network", value_name = "MODE", default_value = "default",
          hide_default_value = true, hide_possible_values = true,
          value_parser = ["default", "host", "none"])]
    pub(crate) network: String,

    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    pub(crate) no_cache: bool,

    /// Output destination (format: "type=local,dest=path")
    #[arg(short = 'o', long = "output", value_name = "SPEC", value_parser = parse_output)]
    pub(crate) outputs: Vec<ExportSpec>,

    /// Set target platform for build
    #[arg(long = "platform", value_name = "PLATFORMS", value_parser = parse_platforms)]
    pub(crate) platforms: Vec<Vec<Platform>>,

    /// Set type of progress output ("auto", "none", "plain", "quiet", "rawjson", "tty"). Use plain to show container output (default "auto")
    #[arg(long = "progress", value_name = "TYPE", default_value = "auto",
          hide_default_value = true, hide_possible_values = true,
          value_parser = ["auto", "none", "plain", "quiet", "rawjson", "tty"])]
    pub(crate) progress: String,

    /// Shorthand for "--attest=type=provenance"
    #[arg(long = "provenance", value_name = "VALUE", value_parser = parse_provenance)]
    pub(crate) provenance: Option<builder_core::AttestSpec>,

    /// Shorthand for "--output=type=registry"
    #[arg(long = "push")]
    pub(crate) push: bool,

    /// Shorthand for "--attest=type=sbom"
    #[arg(long = "sbom", value_name = "VALUE", value_parser = parse_sbom)]
    pub(crate) sbom: Option<builder_core::AttestSpec>,

    /// Secret to expose to the build (format: "id=mysecret[,src=/local/secret]" or "id=mysecret,env=VAR")
    #[arg(long = "secret", value_name = "SPEC", value_parser = parse_secret)]
    pub(crate) secrets: Vec<SecretSpec>,

    /// SSH agent socket or keys to expose to the build (format: "default|<id>[=<socket>|<key>[,<key>]]")
    #[arg(long = "ssh", value_name = "SPEC", value_parser = parse_ssh)]
    pub(crate) ssh: Vec<SshSpec>,

    /// Image identifier (format: "[registry/]repository[:tag]")
    #[arg(short = 't', long = "tag", value_name = "NAME", value_parser = parse_tag)]
    pub(crate) tags: Vec<String>,

    /// Set the target build stage to build
    #[arg(long = "target", value_name = "STAGE")]
    pub(crate) target: Option<String>,

    /// The buildx flags for RUN steps, stages and pulls (see [`crate::dropin`]).
    #[command(flatten)]
    pub(crate) dropin: crate::dropin::DropinOpts,

    /// The build context: a directory, a git URL (`URL.git#ref:subdir`), an HTTP(S)
    /// tarball or Dockerfile URL, or `-` (a tar or a Dockerfile on stdin)
    #[arg(value_name = "PATH | URL | -")]
    pub(crate) context: PathBuf,

    /// The Dockerfile, when a remote context turned out to be one (set by
    /// [`crate::context::resolve`]).
    #[arg(skip)]
    pub(crate) dockerfile_text: Option<String>,
}

/// One `--secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecretSpec {
    pub(crate) id: String,
    pub(crate) src: Option<String>,
    pub(crate) env: Option<String>,
}

/// One `--ssh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshSpec {
    pub(crate) id: String,
    pub(crate) paths: Vec<String>,
}

fn parse_attest(s: &str) -> Result<builder_core::AttestSpec, String> {
    s.parse().map_err(|e: builder_core::Error| e.to_string())
}

fn parse_provenance(s: &str) -> Result<builder_core::AttestSpec, String> {
    builder_core::AttestSpec::shorthand("provenance", s).map_err(|e| e.to_string())
}

fn parse_sbom(s: &str) -> Result<builder_core::AttestSpec, String> {
    builder_core::AttestSpec::shorthand("sbom", s).map_err(|e| e.to_string())
}

fn parse_entitlement(s: &str) -> Result<String, String> {
    let (name, _) = s.split_once('=').unwrap_or((s, ""));
    match name {
        "network.host" | "security.insecure" | "device" => Ok(s.to_owned()),
        _ => Err("unknown entitlement (network.host, security.insecure, device[=NAME])".to_owned()),
    }
}

/// buildx: `KEY=VALUE`, or `KEY` alone to take the value from the environment.
fn parse_build_arg(s: &str) -> Result<(String, Option<String>), String> {
    match s.split_once('=') {
        Some(("", _)) => Err("empty key".to_owned()),
        Some((k, v)) => Ok((k.to_owned(), Some(v.to_owned()))),
        None if s.is_empty() => Err("empty key".to_owned()),
        None => Ok((s.to_owned(), None)),
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err("empty key".to_owned()),
        Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
        None if s.is_empty() => Err("empty key".to_owned()),
        None => Ok((s.to_owned(), String::new())),
    }
}

fn parse_registry_host(s: &str) -> Result<String, String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (s, None), // bare IPv6
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let host_ok = !host.is_empty()
        && !host.contains('/')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(s.to_owned())
    } else {
        Err("expected HOST[:PORT]".to_owned())
    }
}

/// An `--output`, read by builder-core's [`ExportSpec`] (only the reason of an error is
/// kept: clap shows the value and the flag).
fn parse_output(s: &str) -> Result<ExportSpec, String> {
    s.parse::<ExportSpec>().map_err(|e| match e {
        builder_core::Error::InvalidOutput { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// A `--cache-from`, judged by builder-core (only the reason of an error is kept).
fn parse_cache_from(s: &str) -> Result<builder_core::remote_cache::CacheImportSpec, String> {
    s.parse().map_err(|e| match e {
        builder_core::Error::InvalidCache { reason, .. } => reason,
        e => e.to_string(),
    })
}

/// A `--cache-to`, judged by builder-core (only the reason of an error is kept).
fn parse_cache_to(s: &str) -> Result<builder_core::remote_cache::CacheExportSpec, String> {
    s.parse().map_err(|e| match e {
        builder_core::Error::InvalidCache { reason, .. } => reason,
        e => e.to_string(),
    })
}

/// `--platform`: one platform or a comma-separated list, read by the registry client's
/// [`Platform::parse_list`] (containerd's grammar; builder-core's and bake's too).
fn parse_platforms(s: &str) -> Result<Vec<Platform>, String> {
    Platform::parse_list(s).map_err(|e| e.to_string())
}

/// buildx's secret spec: `id=ID[,src|source=PATH][,env=VAR][,type=file|env]`.
fn parse_secret(s: &str) -> Result<SecretSpec, String> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut kind = None;
    for field in s.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("invalid field '{field}' must be a key=value pair"))?;
        match k.to_lowercase().as_str() {
            "type" => match v {
                "file" | "env" => kind = Some(v.to_owned()),
                _ => return Err(format!("unsupported secret type {v:?}")),
            },
            "id" => id = Some(v.to_owned()),
            "source" | "src" => src = Some(v.to_owned()),
            "env" => env = Some(v.to_owned()),
            other => return Err(format!("unexpected key '{other}' in '{field}'")),
        }
    }
    if kind.as_deref() == Some("env") && env.is_none() {
        env = src.take();
    }
    let id = match id {
        Some(id) if !id.is_empty() => id,
        _ => return Err("id= is required".to_owned()),
    };
    Ok(SecretSpec { id, src, env })
}

/// `default|<id>[=<socket>|<key>[,<key>]]`.
fn parse_ssh(s: &str) -> Result<SshSpec, String> {
    let (id, rest) = s.split_once('=').unwrap_or((s, ""));
    if id.is_empty() || id.contains(',') {
        return Err("expected default|<id>[=<socket>|<key>[,<key>]]".to_owned());
    }
    let paths: Vec<String> = rest
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(SshSpec {
        id: id.to_owned(),
        paths,
    })
}

/// A Docker image reference (distribution's grammar): `[host[:port]/]path[:tag][@digest]`
/// with a lower-case repository path, checked by the registry client's [`Reference`].
fn parse_tag(s: &str) -> Result<String, String> {
    match s.parse::<Reference>() {
        Ok(_) => Ok(s.to_owned()),
        Err(registry_client::Error::InvalidReference { reason, .. }) => {
            Err(format!("invalid reference format: {reason}"))
        }
        Err(e) => Err(format!("invalid reference format: {e}")),
    }
}

/// The Dockerfile text and the name to show for it.
struct Source {
    name: String,
    bytes: Vec<u8>,
}

fn read_dockerfile(opts: &BuildOpts) -> Result<Source, Failure> {
    if let Some(text) = &opts.dockerfile_text {
        return Ok(Source {
            name: "Dockerfile".into(),
            bytes: text.clone().into_bytes(),
        });
    }
    match opts.file.as_deref() {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).map_err(|e| {
                Failure::build(format!("failed to read dockerfile from stdin: {e}"))
            })?;
            Ok(Source {
                name: "Dockerfile".into(),
                bytes,
            })
        }
        Some(path) => std::fs::read(path)
            .map(|bytes| Source {
                name: path.to_owned(),
                bytes,
            })
            .map_err(|e| Failure::usage(format!("invalid value '{path}' for '--file': {e}"))),
        None => {
            let path = builder_core::default_dockerfile(&opts.context);
            std::fs::read(&path)
                .map(|bytes| Source {
                    name: path.display().to_string(),
                    bytes,
                })
                .map_err(|e| {
                    Failure::build(format!(
                        "failed to read dockerfile: open {}: {e}",
                        path.display()
                    ))
                })
        }
    }
}

/// The build args as buildx passes them: `KEY` alone takes the environment's value, or
/// is dropped when the environment has none.
fn build_arg_map(opts: &BuildOpts) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // buildx: SOURCE_DATE_EPOCH from the environment, unless a --build-arg sets it.
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        out.insert("SOURCE_DATE_EPOCH".to_owned(), v);
    }
    for (k, v) in &opts.build_args {
        match v {
            Some(v) => {
                out.insert(k.clone(), v.clone());
            }
            None => {
                if let Ok(v) = std::env::var(k) {
                    out.insert(k.clone(), v);
                }
            }
        }
    }
    out
}

fn parse_dockerfile(src: &Source) -> Result<Dockerfile, Failure> {
    let text = String::from_utf8_lossy(&src.bytes);
    dockerfile::parse_bytes(&src.bytes).map_err(|e| {
        Failure::build(diag::render_error(
            &src.name,
            &text,
            &e.message(),
            Some(e.span()),
        ))
    })
}

fn print_warnings(src: &Source, warnings: &[PlanWarning]) {
    let text = String::from_utf8_lossy(&src.bytes);
    for w in warnings {
        eprintln!(
            "{}",
            diag::render_warning(
                &src.name,
                &text,
                &format!("{}: {}", w.rule, w.message),
                w.span
            )
        );
    }
}

/// Runs `rbuild build`.
pub(crate) fn run(opts: &BuildOpts) -> Result<(), Failure> {
    opts.dropin.check()?;
    // A remote context is fetched first; the build then runs from its directory (kept
    // until the build ends).
    let fetched = crate::context::resolve(opts)?;
    let opts = fetched.as_ref().map_or(opts, |(_, o)| o);
    // -q: buildx's quiet progress (and the image ID on stdout).
    let quiet;
    let opts = if opts.dropin.quiet && opts.progress != "quiet" {
        if opts.progress != "auto" {
            return Err(Failure::usage(format!(
                "progress={} and quiet cannot be used together",
                opts.progress
            )));
        }
        let mut o = opts.clone();
        o.progress = "quiet".into();
        quiet = o;
        &quiet
    } else {
        opts
    };
    // The library judges the configuration (outputs, platforms, names) before any work.
    crate::run::validate(opts)?;
    opts.dropin.notes();
    let call = if opts.check {
        CallFunc {
            name: "check".into(),
            json: false,
            format_given: false,
            ignore_status: false,
        }
    } else {
        opts.call.clone()
    };
    let src = read_dockerfile(opts)?;
    if call.name == "check" {
        let text = (opts.file.as_deref() == Some("-") || opts.dockerfile_text.is_some())
            .then(|| String::from_utf8_lossy(&src.bytes).into_owned());
        return crate::check::run(opts, &call, &build_arg_map(opts), text);
    }
    let df = parse_dockerfile(&src)?;
    let text = String::from_utf8_lossy(&src.bytes).into_owned();
    let stage_error = |e: dockerfile::StageError| {
        Failure::build(diag::render_error(&src.name, &text, &e.message(), e.span()))
    };

    if call.name == "targets" {
        let targets = list_targets(&df).map_err(stage_error)?;
        if call.json {
            println!("{}", call::targets_json(&targets, &src.bytes));
        } else {
            print!("{}", call::targets_text(&targets));
        }
        return Ok(());
    }

    if call.name == "plan" {
        let mut req = builder_core::plan::PlanRequest::new(
            opts.platforms
                .iter()
                .flatten()
                .map(builder_core::platform_args)
                .collect(),
        );
        req.build_args = build_arg_map(opts);
        req.target = opts.target.clone();
        let plan = builder_core::plan::ci_plan(&df, &req).map_err(stage_error)?;
        if call.format_given {
            // The graph resolves the base images and hashes the context files COPY reads.
            let text_source =
                (opts.file.as_deref() == Some("-")).then(|| (src.name.clone(), text.clone()));
            let plan = call
                .json
                .then(|| serde_json::to_value(&plan))
                .transpose()
                .map_err(|e| Failure::build(format!("failed to encode the plan: {e}")))?;
            return crate::run::graph(opts, &build_arg_map(opts), text_source, plan);
        }
        let json = serde_json::to_string_pretty(&plan)
            .map_err(|e| Failure::build(format!("failed to encode the plan: {e}")))?;
        println!("{json}");
        return Ok(());
    }

    let target_platform = opts
        .platforms
        .iter()
        .flatten()
        .next()
        .map_or_else(PlatformSpec::host, builder_core::platform_args);
    let mut plan_opts = PlanOptions::new(target_platform, PlatformSpec::host());
    plan_opts.build_args = build_arg_map(opts);
    plan_opts.target = opts.target.clone();
    let plan = BuildPlan::new(&df, &plan_opts).map_err(stage_error)?;

    if call.name == "outline" {
        let outline = plan.outline().map_err(stage_error)?;
        print_warnings(&src, plan.warnings());
        if call.json {
            println!("{}", call::outline_json(&outline, &src.bytes));
        } else {
            print!("{}", call::outline_text(&outline));
        }
        return Ok(());
    }

    // The engine reports the plan's warnings itself, with the build's progress.
    drop(plan);
    let text_source = (opts.file.as_deref() == Some("-") || opts.dockerfile_text.is_some())
        .then(|| (src.name.clone(), text.clone()));
    crate::run::build(opts, &plan_opts.build_args, text_source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for ok in [
            "app",
            "app:1.0",
            "127.0.0.1:5000/library/busybox:latest",
            "localhost/a/b_c__d-e.f:tag_1",
            "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse_tag(ok), Ok(ok.to_owned()), "{ok}");
        }
        for bad in [
            "",
            "App",
            "app:",
            "a//b",
            "-a",
            "app:-x",
            "host:port/app",
            "a@sha256:zz",
            "a@md5:0123456789abcdef0123456789abcdef",
        ] {
            assert!(parse_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platforms() {
        // The grammar is the registry client's (its unit tests); lists and errors here.
        let list = parse_platforms("linux/amd64,Linux/aarch64").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            builder_core::platform_args(&list[1]).to_string(),
            "linux/arm64"
        );
        let e = parse_platforms("linux/amd65").unwrap_err();
        assert!(e.contains("unknown architecture"), "{e}");
    }

    #[test]
    fn outputs() {
        // The grammar is builder-core's (its unit tests); the flag keeps only the reason.
        assert!(matches!(
            parse_output("out").unwrap().kind,
            builder_core::ExportKind::Local { .. }
        ));
        assert_eq!(
            parse_output("type=oci").unwrap_err(),
            "type=oci needs dest="
        );
    }

    #[test]
    fn secrets_and_ssh() {
        let s = parse_secret("id=npm,src=/tmp/npmrc").unwrap();
        assert_eq!(
            (s.id.as_str(), s.src.as_deref()),
            ("npm", Some("/tmp/npmrc"))
        );
        let s = parse_secret("id=tok,env=TOKEN").unwrap();
        assert_eq!(s.env.as_deref(), Some("TOKEN"));
        let s = parse_secret("type=env,id=tok,src=TOKEN").unwrap();
        assert_eq!((s.env.as_deref(), s.src), (Some("TOKEN"), None));
        assert!(parse_secret("src=/x").is_err());
        assert!(parse_secret("id=x,color=red").is_err());
        assert_eq!(parse_ssh("default").unwrap().id, "default");
        assert_eq!(parse_ssh("gh=/k1,/k2").unwrap().paths, ["/k1", "/k2"]);
        assert!(parse_ssh("=x").is_err());
    }

    #[test]
    fn key_values() {
        assert_eq!(
            parse_build_arg("A=b=c").unwrap(),
            ("A".into(), Some("b=c".into()))
        );
        assert_eq!(parse_build_arg("A").unwrap(), ("A".into(), None));
        assert!(parse_build_arg("=x").is_err());
        assert!(parse_label("").is_err());
        assert!(parse_registry_host("reg:5000").is_ok());
        assert!(parse_registry_host("reg:http").is_err());
        assert!(parse_registry_host("http://reg").is_err());
        assert!(parse_entitlement("network.host").is_ok());
        assert!(parse_entitlement("root").is_err());
    }
}
