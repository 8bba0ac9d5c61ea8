//! `rbuild imagetools create|inspect`: buildx's `imagetools`. `create` merges manifests and
//! indexes into one index and pushes it (the work is `registry_client::CreateIndex`);
//! `inspect` is `rbuild inspect`.

use std::io::Write as _;

use builder_core::registry_client::{
    Annotation, Client, CreateIndex, Error, Reference, Source, TransferEvent, TransferProgress,
};

use crate::exit::Failure;
use crate::inspect::InspectOpts;

/// Commands to work on images in registry
#[derive(Debug, clap::Args)]
pub(crate) struct ImagetoolsOpts {
    #[command(subcommand)]
    command: ImagetoolsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ImagetoolsCommand {
    /// Create a new image based on source images
    Create(CreateOpts),
    /// Show details of an image in the registry
    Inspect(InspectOpts),
}

/// Create a new image based on source images
#[derive(Debug, clap::Args)]
pub(crate) struct CreateOpts {
    /// Source images: references (`repo:tag`, `repo@sha256:…`), digests, descriptors (JSON)
    #[arg(value_name = "SOURCE")]
    sources: Vec<String>,
    /// Set reference for new image
    #[arg(short = 't', long = "tag", value_name = "REF")]
    tags: Vec<String>,
    /// Append to existing manifest
    #[arg(long)]
    append: bool,
    /// Show final image instead of pushing
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Add annotation to the image (`index:KEY=VALUE`, `manifest-descriptor[PLATFORM]:KEY=VALUE`)
    #[arg(long = "annotation", value_name = "ANNOTATION")]
    annotations: Vec<String>,
    /// Read source descriptor from file
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<std::path::PathBuf>,
    /// Write create result metadata to a file
    #[arg(long = "metadata-file", value_name = "PATH")]
    metadata_file: Option<std::path::PathBuf>,
    /// Set type of progress output (`plain`, `quiet`/`none`; others print as plain)
    #[arg(long, default_value = "auto", value_name = "TYPE")]
    progress: String,
    /// Talk plain HTTP to this registry (localhost and 127.0.0.1 always are)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Filter specified platforms of target image (not implemented)
    #[arg(short = 'p', long = "platform", value_name = "PLATFORM")]
    platforms: Vec<String>,
    /// buildx's --prefer-index (only the default, true, is implemented)
    #[arg(long = "prefer-index", value_name = "BOOL")]
    prefer_index: Option<bool>,
}

pub(crate) fn run(opts: &ImagetoolsOpts) -> Result<(), Failure> {
    match &opts.command {
        ImagetoolsCommand::Create(c) => create(c),
        ImagetoolsCommand::Inspect(i) => crate::inspect::run(i),
    }
}

/// Progress lines on stderr: which blobs were mounted or copied.
struct Plain {
    quiet: bool,
}

impl TransferProgress for Plain {
    fn event(&self, ev: &TransferEvent<'_>) {
        if self.quiet {
            return;
        }
        match ev {
            TransferEvent::Mounted { digest, from } => eprintln!("mounted {digest} from {from}"),
            TransferEvent::Done { digest, total } => eprintln!("copied {digest} ({total} bytes)"),
            _ => {}
        }
    }
}

fn create(opts: &CreateOpts) -> Result<(), Failure> {
    let usage = |e: Error| Failure::usage(e.to_string());
    if !opts.platforms.is_empty() {
        return Err(Failure::usage(
            "imagetools create --platform (filtering the sources' platforms) is not implemented; name the per-platform manifests as sources instead",
        ));
    }
    if opts.prefer_index == Some(false) {
        return Err(Failure::usage(
            "imagetools create --prefer-index=false is not implemented (the result is always an index)",
        ));
    }
    if opts.sources.is_empty() && opts.files.is_empty() && !opts.append {
        return Err(Failure::usage("no sources specified"));
    }
    if !opts.dry_run && opts.tags.is_empty() {
        return Err(Failure::usage(
            "can't push with no tags specified, please set --tag or --dry-run",
        ));
    }
    let mut req = CreateIndex::new().append(opts.append);
    for f in &opts.files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Failure::usage(format!("--file {}: {e}", f.display())))?;
        req = req.source(text.parse::<Source>().map_err(usage)?);
    }
    for s in &opts.sources {
        req = req.source(s.parse::<Source>().map_err(usage)?);
    }
    for t in &opts.tags {
        let r: Reference = t
            .parse()
            .map_err(|e: Error| Failure::usage(format!("--tag: {e}")))?;
        req = req.tag(r);
    }
    for a in &opts.annotations {
        req = req.annotation(a.parse::<Annotation>().map_err(usage)?);
    }
    let mut builder = Client::builder();
    for host in &opts.insecure_registry {
        builder = builder.insecure_registry(host);
    }
    let client = builder.build().map_err(|e| Failure::build(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::build(format!("cannot start the async runtime: {e}")))?;
    let progress = Plain {
        quiet: matches!(opts.progress.as_str(), "quiet" | "none"),
    };
    let fail = |e: Error| match e {
        Error::InvalidCreate { .. } => Failure::usage(e.to_string()),
        e => Failure::build(e.to_string()),
    };
    let index = runtime.block_on(req.resolve(&client)).map_err(fail)?;
    if opts.dry_run {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(index.bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .map_err(|e| Failure::build(format!("writing to stdout: {e}")));
    }
    runtime
        .block_on(req.push(&client, &index, &progress))
        .map_err(fail)?;
    let m = index.manifest();
    if !progress.quiet {
        for t in &opts.tags {
            eprintln!("pushed {} to {t}", m.digest());
        }
    }
    if let Some(p) = &opts.metadata_file {
        let mut repos: Vec<String> = Vec::new();
        for t in &opts.tags {
            let r: Reference = t
                .parse()
                .map_err(|e: Error| Failure::usage(e.to_string()))?;
            let name = r.repository().to_string();
            if !repos.contains(&name) {
                repos.push(name);
            }
        }
        repos.sort();
        let meta = serde_json::json!({
            "containerimage.descriptor": {
                "mediaType": m.media_type(),
                "digest": m.digest().to_string(),
                "size": m.size(),
            },
            "image.name": repos.join(","),
        });
        let text = serde_json::to_string_pretty(&meta).expect("JSON serialises");
        std::fs::write(p, text)
            .map_err(|e| Failure::build(format!("writing --metadata-file {}: {e}", p.display())))?;
    }
    Ok(())
}
