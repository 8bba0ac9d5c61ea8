//! OCI documents of a built image (manifest, index) and the layout/archive writers.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

/// Media type of an OCI image manifest (the registry client's).
pub const MEDIA_TYPE_MANIFEST: &str = registry_client::OCI_MANIFEST;
/// Media type of an OCI image index (the registry client's).
pub const MEDIA_TYPE_INDEX: &str = registry_client::OCI_INDEX;
/// Media type of a gzip-compressed OCI layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd-compressed OCI layer.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// The annotation naming an image in an OCI layout.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd reads the full image name from.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The annotation of an index entry with the time the layout was written.
const CREATED: &str = "org.opencontainers.image.created";

/// `sha256:<hex>` of some bytes.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A blob of an image and where its bytes are on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// The file holding the (verified) bytes.
    pub path: PathBuf,
    /// The descriptor's annotations in the manifest (e.g. BuildKit's
    /// `buildkit/rewritten-timestamp`); empty for none.
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// One platform's image: config, layers and the manifest that ties them.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// `os/arch[/variant]`.
    pub platform: (String, String, Option<String>),
    /// The config document's bytes.
    pub config: Vec<u8>,
    /// The layers, bottom first.
    pub layers: Vec<BlobRef>,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
}

fn descriptor(media_type: &str, digest: &str, size: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("mediaType".into(), json!(media_type));
    m.insert("digest".into(), json!(digest));
    m.insert("size".into(), json!(size));
    m
}

impl PlatformImage {
    /// Builds the manifest of a config and its layers.
    pub fn new(
        platform: (String, String, Option<String>),
        config: Vec<u8>,
        layers: Vec<BlobRef>,
    ) -> Self {
        let mut m = Map::new();
        m.insert("schemaVersion".into(), json!(2));
        m.insert("mediaType".into(), json!(MEDIA_TYPE_MANIFEST));
        m.insert(
            "config".into(),
            Value::Object(descriptor(
                crate::MEDIA_TYPE_CONFIG,
                &sha256_digest(&config),
                config.len() as u64,
            )),
        );
        let layer_descs: Vec<Value> = layers
            .iter()
            .map(|l| {
                let mut d = descriptor(&l.media_type, &l.digest, l.size);
                if !l.annotations.is_empty() {
                    d.insert("annotations".into(), json!(l.annotations));
                }
                Value::Object(d)
            })
            .collect();
        m.insert("layers".into(), Value::Array(layer_descs));
        let manifest = serde_json::to_vec(&Value::Object(m)).expect("a JSON map serialises");
        Self {
            platform,
            config,
            layers,
            manifest,
        }
    }

    /// Adds annotations to the manifest (its bytes, hence its digest, change).
    pub(crate) fn annotate(&mut self, annotations: &std::collections::BTreeMap<String, String>) {
        let mut doc: Value = serde_json::from_slice(&self.manifest).expect("the manifest is JSON");
        let obj = doc.as_object_mut().expect("a manifest is an object");
        let a = obj.entry("annotations").or_insert_with(|| json!({}));
        for (k, v) in annotations {
            a[k] = json!(v);
        }
        self.manifest = serde_json::to_vec(&doc).expect("JSON serialises");
    }

    /// Digest of the config.
    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config)
    }

    /// Digest of the manifest.
    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    /// The manifest's descriptor, with its platform.
    pub fn descriptor(&self, with_platform: bool) -> Map<String, Value> {
        let mut d = descriptor(
            MEDIA_TYPE_MANIFEST,
            &self.manifest_digest(),
            self.manifest.len() as u64,
        );
        if with_platform {
            let (os, arch, variant) = &self.platform;
            let mut p = Map::new();
            p.insert("architecture".into(), json!(arch));
            p.insert("os".into(), json!(os));
            if let Some(v) = variant {
                p.insert("variant".into(), json!(v));
            }
            d.insert("platform".into(), Value::Object(p));
        }
        d
    }
}

/// The result of a build: one image per platform, and an index when there are several.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The platforms' images, in the order requested.
    pub images: Vec<PlatformImage>,
    /// The index bytes, when more than one platform was built or attestations are
    /// entries of it.
    pub index: Option<Vec<u8>>,
    /// The attestation manifests, one per platform image that has attestations.
    pub attestations: Vec<crate::attest::AttestationManifest>,
    /// The attestations are OCI 1.1 referrers of their images (not in the index).
    pub referrers: bool,
    /// `index-descriptor` annotations: on the image's entry in an OCI layout's
    /// `index.json`.
    pub layout_annotations: std::collections::BTreeMap<String, String>,
}

impl BuiltImage {
    /// Ties platform images together (an index only for several).
    pub fn new(images: Vec<PlatformImage>) -> Self {
        Self::with_attestations(images, Vec::new(), false)
    }

    /// Ties platform images and their attestation manifests together: as BuildKit, the
    /// attestations are entries of the index (`unknown/unknown`, so there is an index even
    /// for one platform), or, with `referrers`, OCI 1.1 referrers left out of it.
    pub fn with_attestations(
        images: Vec<PlatformImage>,
        attestations: Vec<crate::attest::AttestationManifest>,
        referrers: bool,
    ) -> Self {
        let in_index = !attestations.is_empty() && !referrers;
        let index = (images.len() > 1 || in_index).then(|| {
            let mut m = Map::new();
            m.insert("schemaVersion".into(), json!(2));
            m.insert("mediaType".into(), json!(MEDIA_TYPE_INDEX));
            let mut list: Vec<Value> = images
                .iter()
                .map(|i| Value::Object(i.descriptor(true)))
                .collect();
            if in_index {
                for a in &attestations {
                    let subject = images[a.subject].manifest_digest();
                    list.push(crate::attest::layout::index_entry(a, &subject));
                }
            }
            m.insert("manifests".into(), Value::Array(list));
            serde_json::to_vec(&Value::Object(m)).expect("a JSON map serialises")
        });
        Self {
            images,
            index,
            attestations,
            referrers,
            layout_annotations: std::collections::BTreeMap::new(),
        }
    }

    /// The top-level descriptor: the index, or the single manifest.
    pub fn root_descriptor(&self) -> Map<String, Value> {
        match &self.index {
            Some(ix) => descriptor(MEDIA_TYPE_INDEX, &sha256_digest(ix), ix.len() as u64),
            None => self.images[0].descriptor(false),
        }
    }

    /// The digest a user refers to the image by (index or manifest).
    pub fn digest(&self) -> String {
        self.root_descriptor()["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Every blob (JSON documents as bytes, layers as files), without duplicates, in a
    /// stable order.
    fn blobs(&self) -> Vec<(String, BlobBytes<'_>)> {
        let mut out: Vec<(String, BlobBytes<'_>)> = Vec::new();
        fn push<'a>(out: &mut Vec<(String, BlobBytes<'a>)>, digest: String, b: BlobBytes<'a>) {
            if !out.iter().any(|(d, _)| *d == digest) {
                out.push((digest, b));
            }
        }
        for img in &self.images {
            for l in &img.layers {
                push(&mut out, l.digest.clone(), BlobBytes::File(&l.path, l.size));
            }
            push(&mut out, img.config_digest(), BlobBytes::Mem(&img.config));
            push(
                &mut out,
                img.manifest_digest(),
                BlobBytes::Mem(&img.manifest),
            );
        }
        for a in &self.attestations {
            for st in &a.statements {
                push(&mut out, sha256_digest(st), BlobBytes::Mem(st));
            }
            let empty = crate::attest::layout::EMPTY_JSON;
            push(&mut out, sha256_digest(empty), BlobBytes::Mem(empty));
            push(&mut out, a.digest(), BlobBytes::Mem(&a.manifest));
        }
        if let Some(ix) = &self.index {
            push(&mut out, sha256_digest(ix), BlobBytes::Mem(ix));
        }
        out
    }
}

enum BlobBytes<'a> {
    Mem(&'a [u8]),
    File(&'a Path, u64),
}

fn blob_path(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("blobs/{alg}/{hex}")
}

/// Where layout files go: a tar stream or a directory.
trait LayoutSink {
    fn dir(&mut self, path: &str) -> io::Result<()>;
    fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()>;
    fn file(&mut self, path: &str, src: &Path, size: u64) -> io::Result<()>;
}

struct TarSink<W: Write> {
    tar: tar::Builder<W>,
}

fn tar_header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

impl<W: Write> LayoutSink for TarSink<W> {
    fn dir(&mut self, path: &str) -> io::Result<()> {
        let mut h = tar_header(tar::EntryType::Directory, 0, 0o755);
        self.tar
            .append_data(&mut h, format!("{path}/"), io::empty())
    }
    fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut h = tar_header(tar::EntryType::Regular, data.len() as u64, 0o644);
        self.tar.append_data(&mut h, path, data)
    }
    fn file(&mut self, path: &str, src: &Path, size: u64) -> io::Result<()> {
        let f = File::open(src)?;
        let actual = f.metadata()?.len();
        if actual != size {
            return Err(io::Error::other(format!(
                "blob {} has {actual} bytes, expected {size}",
                src.display()
            )));
        }
        let mut h = tar_header(tar::EntryType::Regular, size, 0o644);
        self.tar.append_data(&mut h, path, f)
    }
}

struct DirSink {
    root: PathBuf,
}

impl LayoutSink for DirSink {
    fn dir(&mut self, path: &str) -> io::Result<()> {
        fs::create_dir_all(self.root.join(path))
    }
    fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        write_atomic(&self.root.join(path), data)
    }
    fn file(&mut self, path: &str, src: &Path, _size: u64) -> io::Result<()> {
        let dst = self.root.join(path);
        if dst.exists() {
            return Ok(()); // content addressed: same name, same bytes
        }
        let tmp = dst.with_extension("tmp");
        fs::copy(src, &tmp)?;
        fs::rename(&tmp, &dst)
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}

fn write_layout(
    img: &BuiltImage,
    names: &[String],
    docker: bool,
    created: &str,
    sink: &mut dyn LayoutSink,
) -> io::Result<()> {
    sink.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    // As BuildKit's OCI exporter: a single manifest's entry carries its platform, and each
    // entry the layout's creation time (`org.opencontainers.image.created`).
    let mut root = match &img.index {
        None if !docker => img.images[0].descriptor(true),
        _ => img.root_descriptor(),
    };
    let mut annotations = Map::new();
    for (k, v) in &img.layout_annotations {
        annotations.insert(k.clone(), json!(v));
    }
    if !docker {
        annotations.insert(CREATED.into(), json!(created));
    }
    let mut manifests = Vec::new();
    if names.is_empty() {
        if !annotations.is_empty() {
            root.insert("annotations".into(), Value::Object(annotations.clone()));
        }
        manifests.push(Value::Object(root.clone()));
    }
    for name in names {
        let mut d = root.clone();
        let tag = name
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map_or("latest", |(_, t)| t);
        let mut a = annotations.clone();
        a.insert(CONTAINERD_NAME.into(), json!(name));
        a.insert(REF_NAME.into(), json!(tag));
        d.insert("annotations".into(), Value::Object(a));
        manifests.push(Value::Object(d));
    }
    let index = json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": manifests});
    sink.bytes(
        "index.json",
        &serde_json::to_vec(&index).expect("JSON serialises"),
    )?;
    if docker {
        // docker load reads manifest.json; it accepts layer blobs compressed.
        let i = &img.images[0];
        let layers: Vec<String> = i.layers.iter().map(|l| blob_path(&l.digest)).collect();
        let m = json!([{
            "Config": blob_path(&i.config_digest()),
            "RepoTags": names,
            "Layers": layers,
        }]);
        sink.bytes(
            "manifest.json",
            &serde_json::to_vec(&m).expect("JSON serialises"),
        )?;
    }
    sink.dir("blobs")?;
    sink.dir("blobs/sha256")?;
    for (digest, bytes) in img.blobs() {
        let path = blob_path(&digest);
        match bytes {
            BlobBytes::Mem(b) => sink.bytes(&path, b)?,
            BlobBytes::File(p, size) => sink.file(&path, p, size)?,
        }
    }
    Ok(())
}

/// Writes an OCI image layout as a tar file (`-` for standard output is the caller's job).
pub(crate) fn write_oci_tar(
    img: &BuiltImage,
    names: &[String],
    dest: &Path,
    docker: bool,
    created: &str,
) -> io::Result<()> {
    let tmp = tmp_sibling(dest);
    let result = (|| {
        let f = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let mut sink = TarSink {
            tar: tar::Builder::new(f),
        };
        write_layout(img, names, docker, created, &mut sink)?;
        let mut w = sink.tar.into_inner()?;
        w.flush()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    match result {
        Ok(()) => fs::rename(&tmp, dest),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes an OCI image layout into a directory (created if missing; blobs already there are
/// kept, `index.json` is replaced).
pub(crate) fn write_oci_dir(
    img: &BuiltImage,
    names: &[String],
    dest: &Path,
    created: &str,
) -> io::Result<()> {
    fs::create_dir_all(dest)?;
    write_layout(
        img,
        names,
        false,
        created,
        &mut DirSink {
            root: dest.to_owned(),
        },
    )
}

fn tmp_sibling(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.rbuild-tmp"))
}
