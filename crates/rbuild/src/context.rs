//! The build context argument as buildx takes it: a directory, a git URL, an HTTP(S) URL
//! or `-` (standard input), fetched by builder-core's [`builder_core::remote_context`].

use builder_core::remote_context::{self, ContextSpec, FetchedContext, GitAuth};

use crate::build::BuildOpts;
use crate::exit::Failure;

/// A remote context fetched, and the options rewritten to build from it: the context is
/// its directory, a relative `-f` is a path inside it (an absolute one stays a local file,
/// as buildx reads it), and a Dockerfile-only source becomes the Dockerfile text.
pub(crate) fn resolve(opts: &BuildOpts) -> Result<Option<(FetchedContext, BuildOpts)>, Failure> {
    let usage = |e: builder_core::Error| Failure::usage(e.to_string());
    let spec = ContextSpec::parse(&opts.context.to_string_lossy()).map_err(usage)?;
    if !spec.is_remote() {
        return Ok(None);
    }
    if spec == ContextSpec::Stdin && opts.file.as_deref() == Some("-") {
        return Err(Failure::usage(
            "invalid argument: can't use stdin for both build context and dockerfile",
        ));
    }
    let (auth, keep) = git_options(opts)?;
    let fetched = remote_context::fetch(&spec, &auth, keep, None).map_err(crate::run::failure)?;
    let mut o = opts.clone();
    o.context = fetched.path().to_owned();
    if let Some(text) = fetched.dockerfile_text() {
        if o.file.is_some() {
            return Err(Failure::usage(format!(
                "the context {} is a Dockerfile, not an archive: drop -f",
                opts.context.display()
            )));
        }
        o.dockerfile_text = Some(text.to_owned());
    } else if let Some(f) = &opts.file {
        if f != "-" && !f.starts_with('/') {
            o.file = Some(fetched.path().join(f).to_string_lossy().into_owned());
        }
    }
    Ok(Some((fetched, o)))
}

/// The credentials for git over HTTP(S) (the `GIT_AUTH_TOKEN`/`GIT_AUTH_HEADER` secrets)
/// and whether a git context keeps its `.git` directory.
pub(crate) fn git_options(opts: &BuildOpts) -> Result<(GitAuth, bool), Failure> {
    let usage = |e: builder_core::Error| Failure::usage(e.to_string());
    let sources: Vec<(String, builder_core::SecretSource)> = opts
        .secrets
        .iter()
        .map(|s| (s.id.clone(), crate::run::secret_source(s)))
        .collect();
    let auth =
        GitAuth::from_secrets(sources.iter().map(|(id, s)| (id.as_str(), s))).map_err(usage)?;
    let keep_arg = opts
        .build_args
        .iter()
        .rev()
        .find(|(k, _)| k == "BUILDKIT_CONTEXT_KEEP_GIT_DIR")
        .and_then(|(_, v)| v.as_deref())
        .is_some_and(|v| crate::call::parse_bool(v).unwrap_or(false));
    Ok((auth, opts.dropin.keep_git_dir || keep_arg))
}

/// `--build-context NAME=VALUE`s handed to the build (git and HTTP ones fetched here).
pub(crate) fn named_contexts(
    opts: &BuildOpts,
    mut b: builder_core::Build,
) -> Result<builder_core::Build, Failure> {
    if opts.dropin.build_contexts.is_empty() {
        return Ok(b);
    }
    let (auth, keep) = git_options(opts)?;
    for v in &opts.dropin.build_contexts {
        let Some((name, value)) = v.split_once('=') else {
            return Err(Failure::usage(format!(
                "invalid context value: {v}, expected key=value"
            )));
        };
        let nc = builder_core::NamedContext::parse_with(value, &auth, keep)
            .map_err(|e| Failure::usage(e.to_string()))?;
        b = b
            .build_context(name, nc)
            .map_err(|e| Failure::usage(e.to_string()))?;
    }
    Ok(b)
}
