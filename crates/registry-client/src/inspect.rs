//! `rbuild inspect REF [--raw] [--platform P]`: what `docker buildx imagetools inspect`
//! prints, as a value.
//!
//! Without a platform the text is buildx's: `Name`, `MediaType`, `Digest` of what the
//! reference names and, for an index, each manifest with its platform, aligned the way Go's
//! tabwriter aligns them. With a platform, the index entry for it is followed to its image
//! manifest, which is shown with its config and layers, then the image config as indented
//! JSON.

use std::fmt;

use bytes::Bytes;
use oci_spec::image::Descriptor;

use crate::client::Client;
use crate::digest::Digest;
use crate::error::Error;
use crate::manifest::{Manifest, RawManifest};
use crate::platform::Platform;
use crate::reference::Reference;

/// What `inspect` found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Inspection {
    /// The reference, normalised.
    pub reference: Reference,
    /// What it names, as served.
    pub manifest: RawManifest,
    /// With a platform: the image for it.
    pub image: Option<InspectedImage>,
}

/// One platform's image, for `inspect --platform`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InspectedImage {
    /// The platform asked for.
    pub platform: Platform,
    /// The platform as the index lists it (none when the reference named a manifest).
    pub listed_platform: Option<Platform>,
    /// Its image manifest, as served.
    pub manifest: RawManifest,
    /// Its config blob, as served.
    pub config: Bytes,
}

/// Resolve `reference` (and with `platform`, the image for it and its config).
pub async fn inspect(
    client: &Client,
    reference: &Reference,
    platform: Option<&Platform>,
) -> Result<Inspection, Error> {
    let Some(platform) = platform else {
        let manifest = client.resolve(reference).await?;
        return Ok(Inspection {
            reference: reference.clone(),
            manifest,
            image: None,
        });
    };
    let resolved = client.resolve_platform(reference, platform).await?;
    let Manifest::Image(image) = resolved.manifest.parse()? else {
        unreachable!("resolve_platform returns an image manifest");
    };
    let config = client
        .fetch_blob(reference.repository(), image.config())
        .await?;
    let top = resolved
        .index
        .clone()
        .unwrap_or_else(|| resolved.manifest.clone());
    Ok(Inspection {
        reference: reference.clone(),
        manifest: top,
        image: Some(InspectedImage {
            platform: platform.clone(),
            listed_platform: resolved.platform,
            manifest: resolved.manifest,
            config,
        }),
    })
}

/// [`inspect`] for callers without an async runtime (a command line): runs it on a
/// runtime of its own. Called from inside a tokio runtime it refuses (blocking there
/// would stall that runtime).
pub fn inspect_blocking(
    client: &Client,
    reference: &Reference,
    platform: Option<&Platform>,
) -> Result<Inspection, Error> {
    let fail = |reason: String| Error::Transport {
        registry: reference.registry().to_owned(),
        repository: reference.repository().path().to_owned(),
        operation: "inspect".to_owned(),
        source: reason.into(),
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(fail(
            "inspect_blocking called inside an async runtime; use inspect".to_owned(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(inspect(client, reference, platform))
}

impl Inspection {
    /// What `--raw` prints: the exact bytes of the manifest (of the platform's image
    /// manifest with `--platform`), without a trailing newline, so they hash to the digest.
    pub fn raw(&self) -> &[u8] {
        match &self.image {
            Some(i) => i.manifest.bytes(),
            None => self.manifest.bytes(),
        }
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut top = Block::default();
        top.row("Name:", self.reference.to_string());
        top.row("MediaType:", self.manifest.media_type().to_owned());
        top.row("Digest:", self.manifest.digest().to_string());
        f.write_str(&top.render())?;

        if let Some(image) = &self.image {
            return self.fmt_image(f, image);
        }
        let Ok(Manifest::Index(index)) = self.manifest.parse() else {
            return Ok(());
        };
        let mut head = Block::default();
        head.row("", String::new());
        head.row("Manifests:", String::new());
        f.write_str(&head.render())?;
        let mut list = Block::default();
        for (i, m) in index.manifests().iter().enumerate() {
            if i > 0 {
                list.row("", String::new());
            }
            list.row("  Name:", self.entry_name(m));
            list.row("  MediaType:", m.media_type().to_string());
            if let Some(p) = m.platform() {
                list.row("  Platform:", format_oci_platform(p));
                if let Some(v) = p.os_version().as_deref().filter(|v| !v.is_empty()) {
                    list.row("  OSVersion:", v.to_owned());
                }
                if let Some(features) = p.os_features().as_ref().filter(|v| !v.is_empty()) {
                    list.row("  OSFeatures:", features.join(", "));
                }
                if let Some(urls) = m.urls().as_ref().filter(|v| !v.is_empty()) {
                    list.row("  URLs:", urls.join(", "));
                }
                if let Some(annotations) = m.annotations().as_ref().filter(|a| !a.is_empty()) {
                    list.row("  Annotations:", String::new());
                    f.write_str(&list.render())?;
                    list = Block::default();
                    let mut sorted: Vec<_> = annotations.iter().collect();
                    sorted.sort();
                    let mut ann = Block::default();
                    for (k, v) in sorted {
                        ann.row(&format!("    {k}:"), v.clone());
                    }
                    f.write_str(&ann.render())?;
                }
            }
        }
        f.write_str(&list.render())
    }
}

impl Inspection {
    fn entry_name(&self, m: &Descriptor) -> String {
        match Digest::try_from(m.digest()) {
            Ok(d) => self.reference.pinned(d).to_string(),
            Err(_) => format!("{}@{}", self.reference, m.digest()),
        }
    }

    fn fmt_image(&self, f: &mut fmt::Formatter<'_>, image: &InspectedImage) -> fmt::Result {
        f.write_str("\nManifest:\n")?;
        let mut b = Block::default();
        let d = image.manifest.digest().clone();
        b.row("  Name:", self.reference.pinned(d).to_string());
        b.row("  MediaType:", image.manifest.media_type().to_owned());
        let shown = image.listed_platform.as_ref().unwrap_or(&image.platform);
        b.row("  Platform:", shown.to_string());
        if let Ok(Manifest::Image(m)) = image.manifest.parse() {
            b.row(
                "  Config:",
                format!("{} ({} bytes)", m.config().digest(), m.config().size()),
            );
            for (i, layer) in m.layers().iter().enumerate() {
                let label = if i == 0 { "  Layers:" } else { "" };
                b.row(
                    label,
                    format!(
                        "{} ({} bytes, {})",
                        layer.digest(),
                        layer.size(),
                        layer.media_type()
                    ),
                );
            }
        }
        f.write_str(&b.render())?;
        f.write_str("\nConfig:\n")?;
        match serde_json::from_slice::<serde_json::Value>(&image.config) {
            Ok(v) => {
                let pretty = serde_json::to_string_pretty(&v).map_err(|_| fmt::Error)?;
                for line in pretty.lines() {
                    writeln!(f, "  {line}")?;
                }
                Ok(())
            }
            Err(_) => writeln!(f, "  ({} bytes, not JSON)", image.config.len()),
        }
    }
}

/// `os/arch[/variant]` exactly as the index lists it (containerd's `platforms.Format`).
fn format_oci_platform(p: &oci_spec::image::Platform) -> String {
    let mut s = format!("{}/{}", p.os(), p.architecture());
    if let Some(v) = p.variant().as_deref().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// Rows of `label<TAB>value`, aligned as Go's `tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)`
/// aligns one flushed block: every label padded to the longest plus one space.
#[derive(Default)]
struct Block {
    rows: Vec<(String, String)>,
}

impl Block {
    fn row(&mut self, label: &str, value: String) {
        self.rows.push((label.to_owned(), value));
    }

    fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            + 1;
        let mut out = String::new();
        for (label, value) in &self.rows {
            out.push_str(label);
            out.extend(std::iter::repeat_n(' ', width - label.chars().count()));
            out.push_str(value);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDX: &str = r#"{"manifests":[{"digest":"sha256:403caa49fd98ac64af4240284677ec0cca33bbd34dd19f3fc5b5dbc01e60da92","mediaType":"application/vnd.oci.image.manifest.v1+json","platform":{"architecture":"amd64","os":"linux"},"size":565},{"digest":"sha256:b9f9f45f260a2a6a87fcd01275117944f882be9e23b4ea8b9d0f7fe0e19d7f9c","mediaType":"application/vnd.oci.image.manifest.v1+json","platform":{"architecture":"arm64","os":"linux","variant":"v8"},"size":565}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#;

    #[test]
    fn index_as_buildx_prints_it() {
        let manifest = RawManifest::new(Bytes::from(IDX), None).unwrap();
        let i = Inspection {
            reference: "127.0.0.1:5000/library/node:20-slim".parse().unwrap(),
            manifest,
            image: None,
        };
        let d = i.manifest.digest();
        let want = format!(
            "Name:      127.0.0.1:5000/library/node:20-slim
MediaType: application/vnd.oci.image.index.v1+json
Digest:    {d}
           
Manifests: 
  Name:      127.0.0.1:5000/library/node:20-slim@sha256:403caa49fd98ac64af4240284677ec0cca33bbd34dd19f3fc5b5dbc01e60da92
  MediaType: application/vnd.oci.image.manifest.v1+json
  Platform:  linux/amd64
             
  Name:      127.0.0.1:5000/library/node:20-slim@sha256:b9f9f45f260a2a6a87fcd01275117944f882be9e23b4ea8b9d0f7fe0e19d7f9c
  MediaType: application/vnd.oci.image.manifest.v1+json
  Platform:  linux/arm64/v8
"
        );
        assert_eq!(i.to_string(), want);
        assert_eq!(i.raw(), IDX.as_bytes());
    }
}
