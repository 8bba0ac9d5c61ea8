//! `rbuild inspect REF [--raw] [--platform P]`: what `docker buildx imagetools inspect`
//! prints (the index, its manifests and their platforms); with `--platform`, that image's
//! manifest and config. The work is `registry_client::inspect`.

use std::io::Write as _;

use builder_core::registry_client::{Client, Error, Platform, Reference, inspect_blocking};

use crate::exit::Failure;

/// Show details of an image in the registry
#[derive(Debug, clap::Args)]
pub(crate) struct InspectOpts {
    /// Image reference (`node:20`, `127.0.0.1:5000/app@sha256:…`)
    #[arg(value_name = "NAME")]
    reference: String,
    /// Show the original, unformatted JSON manifest (of the platform's image with --platform)
    #[arg(long)]
    raw: bool,
    /// Follow the index to this platform's image and show its config
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Format the output using a template: '{{json .Provenance}}' or '{{json .SBOM}}' (as buildx imagetools)
    #[arg(long, value_name = "TEMPLATE", conflicts_with_all = ["raw", "platform"])]
    format: Option<String>,
    /// Talk plain HTTP to this registry (localhost and 127.0.0.1 always are)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
}

pub(crate) fn run(opts: &InspectOpts) -> Result<(), Failure> {
    let reference: Reference = opts
        .reference
        .parse()
        .map_err(|e: Error| Failure::usage(e.to_string()))?;
    let platform: Option<Platform> = match &opts.platform {
        Some(p) => Some(
            p.parse()
                .map_err(|e: Error| Failure::usage(format!("--platform: {e}")))?,
        ),
        None => None,
    };
    let mut builder = Client::builder();
    for host in &opts.insecure_registry {
        builder = builder.insecure_registry(host);
    }
    let client = builder.build().map_err(|e| Failure::build(e.to_string()))?;
    if let Some(template) = &opts.format {
        return format(&client, &reference, template);
    }
    let inspection = inspect_blocking(&client, &reference, platform.as_ref())
        .map_err(|e| Failure::build(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    let written = if opts.raw {
        // no newline: the bytes hash to the digest
        out.write_all(inspection.raw())
    } else {
        write!(out, "{inspection}")
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Failure::build(format!("writing to stdout: {e}")))
}

/// `--format '{{json .Provenance}}'` / `'{{json .SBOM}}'`: the image's attestations, as
/// buildx prints them (the work is `builder_core::inspect_attestations`).
fn format(client: &Client, reference: &Reference, template: &str) -> Result<(), Failure> {
    // The template is checked before anything is fetched.
    builder_core::format_attestations(&[builder_core::ImageAttestations::default()], template)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::build(format!("cannot start the async runtime: {e}")))?;
    let images = runtime
        .block_on(builder_core::inspect_attestations(client, reference))
        .map_err(|e| Failure::build(e.to_string()))?;
    let text = builder_core::format_attestations(&images, template)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::build(format!("writing to stdout: {e}")))
}
