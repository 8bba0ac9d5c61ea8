//! `ADD <git URL> <dest>`: the repository (a ref, a subdirectory, `--keep-git-dir`) is
//! fetched with the git context code, which refuses refs starting with `-` and
//! subdirectories that leave the checkout, then copied to `<dest>` as `COPY . <dest>`
//! from it would: its files are the step's cache key.

use super::*;
use crate::remote_context::{ContextSpec, GitAuth, GitUrl};

/// A fetched `ADD` source: its URL as written and the checkout (removed when dropped).
pub(super) struct GitSource {
    pub(super) url: String,
    _checkout: crate::remote_context::FetchedContext,
}

/// For an `ADD` of one git repository: the COPY that stands for it and the fetched
/// checkout to copy from (kept until the step ran). `None` for any other instruction.
pub(super) async fn git_add(
    ctx: &Arc<Ctx>,
    ins: &Spanned<Instruction>,
) -> Result<
    Option<(
        Spanned<Instruction>,
        Arc<crate::copy::BuildContext>,
        GitSource,
    )>,
    Error,
> {
    let Instruction::Add(a) = &ins.value else {
        return Ok(None);
    };
    let git: Vec<&str> = a
        .sources
        .iter()
        .filter_map(|s| match s {
            dockerfile::Source::Path(p) if crate::copy::params::is_git(&p.value) => {
                Some(p.value.as_str())
            }
            _ => None,
        })
        .collect();
    let url = match (git.as_slice(), a.sources.len()) {
        ([], _) => return Ok(None),
        ([one], 1) => *one,
        _ => {
            return Err(Error::invalid_step(
                "ADD of a git repository takes it as its only source",
            ));
        }
    };
    if a.checksum.is_some() {
        return Err(Error::invalid_step(format!(
            "ADD --checksum with the git repository {url} is not supported by rbuild"
        )));
    }
    let g: GitUrl = url.parse()?;
    let keep = a.keep_git_dir.unwrap_or(false);
    let tmp = ctx.tmp.clone();
    let fetched = tokio::task::spawn_blocking(move || {
        crate::remote_context::fetch(&ContextSpec::Git(g), &GitAuth::default(), keep, Some(&tmp))
    })
    .await
    .map_err(|e| join_error(&e))??;
    // The checkout is not cached by path: its stat cache would only grow.
    let stats = ctx.cache.stat_cache("context:add-git")?;
    let bc = crate::copy::BuildContext::open(fetched.path(), None, stats)
        .map_err(|e| Error::invalid_step(format!("ADD {url}: {e}")))?;
    let mut text = String::from("COPY");
    if let Some(c) = &a.chown {
        text.push_str(&format!(" --chown={}", c.value));
    }
    if let Some(c) = &a.chmod {
        text.push_str(&format!(" --chmod={}", c.value));
    }
    if a.link {
        text.push_str(" --link");
    }
    for e in &a.exclude {
        text.push_str(&format!(" --exclude={}", e.value));
    }
    let dest = serde_json::to_string(&a.dest.value).expect("a string serialises");
    text.push_str(&format!(" [\".\", {dest}]\n"));
    let df =
        dockerfile::parse(&text).map_err(|e| Error::invalid_step(format!("ADD {url}: {e}")))?;
    let mut copy = df
        .instructions
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid_step(format!("ADD {url}: no COPY made")))?;
    copy.span = ins.span;
    let source = GitSource {
        url: url.to_owned(),
        _checkout: fetched,
    };
    Ok(Some((copy, Arc::new(bc), source)))
}
