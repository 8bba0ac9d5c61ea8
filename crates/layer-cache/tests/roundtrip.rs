//! Round trips and determinism: write → apply → write gives the same digests; digests do
//! not depend on mtimes under SOURCE_DATE_EPOCH nor on the number of threads; GNU tar,
//! gzip, zstd and umoci read what we write, and we read what GNU tar writes.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use layer_cache::{
    ApplyMode, ApplyOptions, Cache, Compression, DevicePolicy, Digest, LayerRecord, LayerRef,
    PackOptions, PackedLayer, Resolve, SourceKind, apply_layer, layer_digests, pack_dir,
};
use rustix::fs::{FileType, Gid, Mode, Uid, XattrFlags, makedev, mknodat};

use crate::util::{Rng, TestResult, os, run, scratch, set_mtime};
use crate::{ensure, with};

pub const EPOCH: i64 = 1_000_000;

/// A `security.capability` value (v2): cap_net_bind_service, effective.
const CAP_NET_BIND: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn chown(p: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        p,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("chown");
}

fn xattr(p: &Path, k: &str, v: &[u8]) {
    rustix::fs::lsetxattr(p, k, v, XattrFlags::empty()).expect("setxattr");
}

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::write(p, data).expect("write");
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A tree with every kind of entry a layer can carry. With `overlay`, it is an overlay
/// upper directory: a whiteout (char 0/0) and an opaque directory.
pub fn build_tree(root: &Path, seed: u64, overlay: bool) {
    let mut rng = Rng::new(seed);
    for d in ["a/b", "sticky", "private", "long"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
    chown(&root.join("private"), 1000, 1000);
    write(&root.join("a/file.txt"), &rng.text(5000), 0o644);
    write(&root.join("a/b/big.bin"), &rng.bytes(700_000), 0o600);
    write(&root.join("a/b/big.txt"), &rng.text(1_500_000), 0o644);
    write(&root.join("empty"), b"", 0o444);
    write(&root.join("suid"), b"#!/bin/sh\n", 0o4755);
    write(&root.join("cap-bin"), &rng.bytes(100), 0o755);
    write(&root.join("hard1"), b"shared inode", 0o640);
    fs::hard_link(root.join("hard1"), root.join("a/hard2")).expect("link");
    symlink("a/file.txt", root.join("link-rel")).expect("symlink");
    symlink("/etc/passwd", root.join("link-abs")).expect("symlink");
    symlink("nowhere", root.join("dangling")).expect("symlink");
    symlink("t".repeat(200), root.join("long-target")).expect("symlink");
    let long = root.join("long").join("d".repeat(120));
    fs::create_dir_all(&long).expect("mkdir");
    write(&long.join("f".repeat(140)), b"long name", 0o644);
    write(&root.join(os(b"caf\xe9")), b"latin-1 name", 0o644);
    write(&root.join("private/owned"), b"1000", 0o600);
    chown(&root.join("private/owned"), 1000, 1000);
    write(&root.join("bigid"), b"large uid", 0o644);
    chown(&root.join("bigid"), 3_000_000, 3_000_001);
    mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    mknodat(
        rustix::fs::CWD,
        root.join("devnull"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        makedev(1, 3),
    )
    .expect("mknod");
    xattr(&root.join("a/file.txt"), "user.note", b"hello");
    xattr(&root.join("cap-bin"), "security.capability", &CAP_NET_BIND);
    xattr(&root.join("a"), "trusted.meta", b"\x00binary\xff");
    if overlay {
        mknodat(
            rustix::fs::CWD,
            root.join("gone"),
            FileType::CharacterDevice,
            Mode::empty(),
            makedev(0, 0),
        )
        .expect("whiteout");
        fs::create_dir(root.join("opaque")).expect("mkdir");
        xattr(&root.join("opaque"), "trusted.overlay.opaque", b"y");
        write(&root.join("opaque/new"), b"only this", 0o644);
    }
    // Every mtime after the epoch, different per file; directories last.
    let mut all = Vec::new();
    collect(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        set_mtime(&p, EPOCH + 1000 + rng.below(1_000_000) as i64);
    }
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).expect("readdir").flatten() {
        let p = e.path();
        if fs::symlink_metadata(&p).expect("lstat").is_dir() {
            collect(&p, out);
        }
        out.push(p);
    }
}

pub fn opts(compression: Compression, source: SourceKind) -> PackOptions {
    let mut o = PackOptions::default();
    o.compression = compression;
    o.source = source;
    o.source_date_epoch = Some(EPOCH + 500_000);
    o
}

fn pack_to(
    dir: &Path,
    o: &PackOptions,
    out: &Path,
) -> Result<PackedLayer, Box<dyn std::error::Error>> {
    let f = fs::File::create(out)?;
    Ok(pack_dir(dir, o, f)?.1)
}

pub fn full_apply() -> ApplyOptions {
    with!(ApplyOptions::default(), devices = DevicePolicy::Create)
}

pub fn write_apply_write_same_digest() -> TestResult {
    let s = scratch();
    let src = s.path().join("src");
    build_tree(&src, 1, true);
    for comp in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let o = opts(comp, SourceKind::OverlayUpper);
        let layer = s.path().join(format!("layer.{comp}"));
        let p1 = pack_to(&src, &o, &layer)?;
        let dst = s.path().join(format!("dst-{comp}"));
        fs::create_dir(&dst)?;
        // The uncompressed round trip also goes through the fallback resolver.
        let resolve = if comp == Compression::None {
            Resolve::Walk
        } else {
            Resolve::Auto
        };
        let a = with!(
            full_apply(),
            mode = ApplyMode::OverlayLayer,
            expected_diff_id = Some(p1.diff_id.clone()),
            resolve = resolve,
        );
        let stats = apply_layer(fs::File::open(&layer)?, &dst, &a)?;
        ensure!(
            stats.compression == comp,
            "sniffed {:?} for {comp}",
            stats.compression
        );
        let p2 = layer_digests(&dst, &o)?;
        ensure!(p1 == p2, "{comp}: first {p1:?}\nagain {p2:?}");
        if comp == Compression::None {
            ensure!(
                p1.diff_id == p1.digest,
                "uncompressed: digest must equal diffID"
            );
        }
        // What the applier produced, checked directly.
        let gone = fs::symlink_metadata(dst.join("gone"))?;
        ensure!(
            gone.file_type_is_char() && gone.rdev() == 0,
            "whiteout not kept as char 0/0"
        );
        let opq = rustix::fs::lgetxattr(
            dst.join("opaque"),
            "trusted.overlay.opaque",
            &mut [0u8; 8][..],
        )?;
        ensure!(opq == 1, "opaque xattr missing");
        let m = fs::metadata(dst.join("suid"))?;
        ensure!(m.mode() & 0o7777 == 0o4755, "suid mode {:o}", m.mode());
        let mut cap = [0u8; 64];
        let n = rustix::fs::getxattr(dst.join("cap-bin"), "security.capability", &mut cap[..])?;
        ensure!(cap[..n] == CAP_NET_BIND, "capability {:?}", &cap[..n]);
        let (h1, h2) = (
            fs::metadata(dst.join("hard1"))?,
            fs::metadata(dst.join("a/hard2"))?,
        );
        ensure!(h1.ino() == h2.ino(), "hard link not kept");
        let big = fs::metadata(dst.join("bigid"))?;
        ensure!(
            big.uid() == 3_000_000 && big.gid() == 3_000_001,
            "ids {} {}",
            big.uid(),
            big.gid()
        );
        ensure!(
            fs::read_link(dst.join("long-target"))?.as_os_str().len() == 200,
            "long target"
        );
    }
    Ok(())
}

trait CharDev {
    fn file_type_is_char(&self) -> bool;
}
impl CharDev for fs::Metadata {
    fn file_type_is_char(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.file_type().is_char_device()
    }
}

pub fn digest_ignores_mtimes_under_source_date_epoch() -> TestResult {
    let s = scratch();
    let src = s.path().join("src");
    build_tree(&src, 2, true);
    // Every mtime in the tree is later than this epoch.
    let o = with!(
        opts(Compression::Gzip, SourceKind::OverlayUpper),
        source_date_epoch = Some(EPOCH)
    );
    let before = layer_digests(&src, &o)?;
    let mut all = Vec::new();
    collect(&src, &mut all);
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, EPOCH + 600_000 + i as i64 * 7919);
    }
    let after = layer_digests(&src, &o)?;
    ensure!(
        before == after,
        "mtimes changed the digest:\n{before:?}\n{after:?}"
    );
    // Without the epoch, they must matter (the test can fail).
    let mut no_epoch = o.clone();
    no_epoch.source_date_epoch = None;
    let a = layer_digests(&src, &no_epoch)?;
    set_mtime(&src.join("a/file.txt"), EPOCH + 12345);
    let b = layer_digests(&src, &no_epoch)?;
    ensure!(
        a.diff_id != b.diff_id,
        "mtime ignored without SOURCE_DATE_EPOCH"
    );
    Ok(())
}

pub fn digest_ignores_thread_count() -> TestResult {
    let s = scratch();
    let src = s.path().join("src");
    build_tree(&src, 3, false);
    // Enough real data (~10 MB of this machine's binaries, ~80 gzip blocks) that a
    // worker's previous block could leak into its next one: it did, with a reused zlib-rs
    // compressor, and text or random data did not show it.
    let mut total = 0;
    for entry in fs::read_dir("/usr/bin")? {
        let p = entry?.path();
        let md = fs::symlink_metadata(&p)?;
        if !md.is_file() || md.len() > 3 << 20 || total > 10 << 20 {
            continue;
        }
        total += md.len();
        let dest = src.join(p.file_name().ok_or("name")?);
        fs::copy(&p, &dest)?;
        set_mtime(&dest, EPOCH + 1);
    }
    for comp in [Compression::Gzip, Compression::Zstd] {
        let mut seen: Option<PackedLayer> = None;
        for threads in [1, 2, 3, 8, 2, 2] {
            let mut o = opts(comp, SourceKind::Directory);
            o.threads = threads;
            let p = layer_digests(&src, &o)?;
            if let Some(first) = &seen {
                ensure!(
                    *first == p,
                    "{comp} with {threads} threads: {p:?} vs {first:?}"
                );
            }
            seen = Some(p);
        }
    }
    Ok(())
}

/// Our gzip and zstd streams decompress with the standard tools to exactly the tar stream
/// (the diffID), and GNU tar lists it.
pub fn standard_tools_read_our_streams() -> TestResult {
    let s = scratch();
    let src = s.path().join("src");
    build_tree(&src, 4, false);
    for (comp, tool) in [
        (Compression::Gzip, "gzip"),
        (Compression::Gzip, "pigz"),
        (Compression::Zstd, "zstd"),
    ] {
        let out = s.path().join(format!("layer-{tool}"));
        let p = pack_to(&src, &opts(comp, SourceKind::Directory), &out)?;
        let tar = run(Command::new(tool).arg("-dc").arg(&out))?;
        ensure!(
            Digest::sha256_of(&tar) == p.diff_id,
            "{tool} -dc gives another stream"
        );
        ensure!(tar.len() as u64 == p.uncompressed_size, "size");
        let blob = fs::read(&out)?;
        ensure!(
            Digest::sha256_of(&blob) == p.digest && blob.len() as u64 == p.size,
            "blob digest"
        );
    }
    let listing = run(Command::new("tar")
        .arg("-tvf")
        .arg(s.path().join("layer-gzip")))?;
    let listing = String::from_utf8_lossy(&listing);
    ensure!(
        listing.contains(&"f".repeat(140)),
        "long name missing in:\n{listing}"
    );
    ensure!(
        listing.contains("hard1 link to a/hard2"),
        "hard link missing in:\n{listing}"
    );
    Ok(())
}

/// GNU tar extracts our tar into the same tree (same digest when re-packed), and our
/// applier extracts a GNU tar (PAX format, with xattrs) into the same tree.
pub fn gnu_tar_interop() -> TestResult {
    let s = scratch();
    let src = s.path().join("src");
    build_tree(&src, 5, false);
    let o = opts(Compression::None, SourceKind::Directory);
    let ours = s.path().join("ours.tar");
    let p = pack_to(&src, &o, &ours)?;
    let x = s.path().join("gnu-x");
    fs::create_dir(&x)?;
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&ours)
        .arg("-C")
        .arg(&x))?;
    let again = layer_digests(&x, &o)?;
    ensure!(
        again.diff_id == p.diff_id,
        "GNU tar extracted something else:\n{p:?}\n{again:?}"
    );

    let gnu = s.path().join("gnu.tar");
    run(Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--format=pax",
            "--numeric-owner",
            "-cpf",
        ])
        .arg(&gnu)
        .arg("-C")
        .arg(&src)
        .arg("."))?;
    let y = s.path().join("ours-x");
    fs::create_dir(&y)?;
    apply_layer(fs::File::open(&gnu)?, &y, &full_apply())?;
    let mine = layer_digests(&y, &o)?;
    ensure!(
        mine.diff_id == p.diff_id,
        "applying GNU tar's archive differs:\n{p:?}\n{mine:?}"
    );
    Ok(())
}

/// umoci unpacks an OCI image whose layer we wrote.
pub fn umoci_unpacks_our_layer() -> TestResult {
    let s = scratch();
    let src = s.path().join("src");
    build_tree(&src, 6, false);
    let layout = s.path().join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let tmp = s.path().join("layer.tmp");
    let p = pack_to(&src, &opts(Compression::Gzip, SourceKind::Directory), &tmp)?;
    fs::rename(&tmp, blobs.join(p.digest.hex()))?;
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [p.diff_id.to_string()]},
        "history": [{"created_by": "layer-cache test"}]
    })
    .to_string();
    let config_d = Digest::sha256_of(config.as_bytes());
    fs::write(blobs.join(config_d.hex()), &config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_d.to_string(), "size": config.len()},
        "layers": [{"mediaType": p.media_type(), "digest": p.digest.to_string(), "size": p.size}]
    })
    .to_string();
    let manifest_d = Digest::sha256_of(manifest.as_bytes());
    fs::write(blobs.join(manifest_d.hex()), &manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_d.to_string(), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "test"}}]
    })
    .to_string();
    fs::write(layout.join("index.json"), index)?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let bundle = s.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:test", layout.display()))
        .arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    ensure!(
        fs::read(rootfs.join("a/file.txt"))? == fs::read(src.join("a/file.txt"))?,
        "contents"
    );
    ensure!(
        fs::read_link(rootfs.join("link-abs"))? == Path::new("/etc/passwd"),
        "symlink"
    );
    ensure!(
        fs::metadata(rootfs.join("hard1"))?.ino() == fs::metadata(rootfs.join("a/hard2"))?.ino(),
        "hard link"
    );
    Ok(())
}

/// Builds the second layer of the flatten/overlay tests: deletes `a/file.txt`, makes
/// `a/b` opaque with one new file, adds `top`.
fn upper_layer(upper: &Path) {
    fs::create_dir_all(upper.join("a/b")).expect("mkdir");
    mknodat(
        rustix::fs::CWD,
        upper.join("a/file.txt"),
        FileType::CharacterDevice,
        Mode::empty(),
        makedev(0, 0),
    )
    .expect("whiteout");
    xattr(&upper.join("a/b"), "trusted.overlay.opaque", b"y");
    fs::write(upper.join("a/b/new.txt"), b"new").expect("write");
    fs::write(upper.join("top"), b"top").expect("write");
}

pub fn flatten_applies_whiteouts_and_opaque_dirs() -> TestResult {
    let s = scratch();
    let (l1, l2) = (s.path().join("l1"), s.path().join("l2"));
    build_tree(&l1, 7, false);
    upper_layer(&l2);
    let (f1, f2) = (s.path().join("l1.tgz"), s.path().join("l2.tgz"));
    pack_to(&l1, &opts(Compression::Gzip, SourceKind::Directory), &f1)?;
    pack_to(&l2, &opts(Compression::Gzip, SourceKind::OverlayUpper), &f2)?;
    let out = s.path().join("out");
    fs::create_dir(&out)?;
    apply_layer(fs::File::open(&f1)?, &out, &full_apply())?;
    apply_layer(fs::File::open(&f2)?, &out, &full_apply())?;
    ensure!(!out.join("a/file.txt").exists(), "whiteout not applied");
    let mut names: Vec<_> = fs::read_dir(out.join("a/b"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    ensure!(
        names == ["new.txt"],
        "opaque dir keeps lower files: {names:?}"
    );
    ensure!(
        out.join("a/hard2").exists() && out.join("top").exists(),
        "other files"
    );
    ensure!(
        fs::symlink_metadata(out.join("a/b"))?.is_dir()
            && rustix::fs::lgetxattr(out.join("a/b"), "trusted.overlay.opaque", &mut [0u8; 4][..])
                .is_err(),
        "flatten must not leave overlay metadata"
    );
    Ok(())
}

/// The snapshots of a two-layer chain, mounted with overlayfs, show the merged file system.
pub fn snapshots_mount_as_overlay_lowers() -> TestResult {
    let s = scratch();
    let cache = Cache::open(s.path().join("cache"))?;
    let (l1, l2) = (s.path().join("l1"), s.path().join("l2"));
    build_tree(&l1, 8, false);
    upper_layer(&l2);
    let p1 = cache.pack_dir(&l1, &opts(Compression::Gzip, SourceKind::Directory), None)?;
    let p2 = cache.pack_dir(
        &l2,
        &opts(Compression::Zstd, SourceKind::OverlayUpper),
        None,
    )?;
    let layers = [
        LayerRef::new(p1.digest.clone(), p1.diff_id.clone()),
        LayerRef::new(p2.digest.clone(), p2.diff_id.clone()),
    ];
    // Under a lease both layers are unpacked at once.
    let lease = cache.lease()?;
    let top = cache.unpack_chain(&layers, &full_apply(), Some(&lease))?;
    let lowers = cache.snapshots().lowerdirs(&top.chain_id)?;
    ensure!(lowers.len() == 2 && lowers[0] == top.path, "{lowers:?}");
    let mnt = s.path().join("mnt");
    fs::create_dir(&mnt)?;
    let lowerdir = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={lowerdir}"))
        .arg(&mnt))?;
    let check = (|| -> TestResult {
        ensure!(
            !mnt.join("a/file.txt").exists(),
            "whiteout not honoured by overlayfs"
        );
        let names: Vec<_> = fs::read_dir(mnt.join("a/b"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        ensure!(names == ["new.txt"], "opaque dir: {names:?}");
        ensure!(
            fs::read(mnt.join("top"))? == b"top" && mnt.join("a/hard2").exists(),
            "merged view"
        );
        Ok(())
    })();
    run(Command::new("umount").arg(&mnt))?;
    check?;
    // The same blobs flattened give the same tree as the mount showed.
    let flat = s.path().join("flat");
    fs::create_dir(&flat)?;
    cache.flatten_chain(&layers, &flat, &full_apply())?;
    ensure!(
        !flat.join("a/file.txt").exists() && flat.join("a/b/new.txt").exists(),
        "flatten"
    );
    // The snapshots flattened without compressing give the same tree.
    let from_snaps = s.path().join("from-snapshots");
    fs::create_dir(&from_snaps)?;
    let pack = opts(Compression::None, SourceKind::OverlayUpper);
    for dir in lowers.iter().rev() {
        layer_cache::flatten_layer_dir(dir, &from_snaps, &full_apply(), &pack)?;
    }
    ensure!(
        crate::util::listing(&from_snaps) == crate::util::listing(&flat),
        "snapshot flatten differs:\n{:?}\n{:?}",
        crate::util::listing(&from_snaps),
        crate::util::listing(&flat)
    );
    Ok(())
}

/// A build step's upper directory becomes a snapshot by rename, not by unpacking again.
pub fn commit_upperdir_registers_the_snapshot() -> TestResult {
    let s = scratch();
    let cache = Cache::open(s.path().join("cache"))?;
    let base = s.path().join("base");
    build_tree(&base, 9, false);
    let p1 = cache.pack_dir(&base, &opts(Compression::Gzip, SourceKind::Directory), None)?;
    let parent = cache.unpack_chain(
        &[LayerRef::new(p1.digest.clone(), p1.diff_id.clone())],
        &full_apply(),
        None,
    )?;
    let upper = s.path().join("cache/upper-step-1");
    upper_layer(&upper);
    let o = opts(Compression::Gzip, SourceKind::OverlayUpper);
    let (packed, snap) =
        cache.commit_upperdir(&upper, Some(&parent.chain_id), &o, &full_apply(), None)?;
    ensure!(!upper.exists(), "upper dir was not moved into the store");
    ensure!(
        snap.parent.as_ref() == Some(&parent.chain_id) && snap.diff_id == packed.diff_id,
        "{snap:?}"
    );
    ensure!(cache.content().contains(&packed.digest), "blob missing");
    ensure!(
        cache.snapshots().lowerdirs(&snap.chain_id)?.len() == 2,
        "chain"
    );
    // The registered directory packs to the same layer.
    ensure!(
        layer_digests(&snap.path, &o)?.diff_id == packed.diff_id,
        "snapshot content"
    );
    Ok(())
}

/// A step's layer committed unhashed is only renamed into the store; hashed and packed
/// later from its snapshot it is the very layer an immediate commit makes, and a snapshot
/// changed since it was hashed is refused without storing anything.
pub fn unhashed_commit_packs_later_to_the_same_layer() -> TestResult {
    let s = scratch();
    let o = opts(Compression::Gzip, SourceKind::OverlayUpper);
    let base = s.path().join("base");
    build_tree(&base, 9, false);
    let setup = |name: &str| -> Result<_, Box<dyn std::error::Error>> {
        let cache = Cache::open(s.path().join(name))?;
        let p = cache.pack_dir(&base, &opts(Compression::Gzip, SourceKind::Directory), None)?;
        let parent = cache.unpack_chain(
            &[LayerRef::new(p.digest.clone(), p.diff_id.clone())],
            &full_apply(),
            None,
        )?;
        let upper = s.path().join(name).join("upper");
        upper_layer(&upper);
        Ok((cache, parent.chain_id, upper))
    };
    let (cache, parent, upper) = setup("now")?;
    let (packed_now, _) = cache.commit_upperdir(&upper, Some(&parent), &o, &full_apply(), None)?;

    let (cache, parent, upper) = setup("later")?;
    let blobs_before = cache.content().list()?.len();
    let id = Digest::sha256_of(b"step 1, run 1");
    let snap = cache.commit_upperdir_unhashed(&upper, Some(&parent), &id, None)?;
    ensure!(
        !upper.exists(),
        "the upper dir was not moved into the store"
    );
    ensure!(
        cache.content().list()?.len() == blobs_before,
        "an unhashed commit stored a blob"
    );
    ensure!(
        snap.parent.as_ref() == Some(&parent) && snap.diff_id == id,
        "{snap:?}"
    );
    let chain = snap.chain_id.clone();
    let hashed = cache.hash_snapshot(&chain, &o)?;
    ensure!(
        hashed.diff_id == packed_now.diff_id
            && hashed.uncompressed_size == packed_now.uncompressed_size,
        "{hashed:?} vs {packed_now:?}"
    );
    ensure!(
        cache.content().list()?.len() == blobs_before,
        "hashing stored a blob"
    );
    let seen = std::cell::RefCell::new(Vec::new());
    let packed = cache.pack_snapshot(&chain, Some(&hashed.diff_id), &o, None, &|n| {
        seen.borrow_mut().push(n);
    })?;
    ensure!(packed == packed_now, "{packed:?} vs {packed_now:?}");
    let seen = seen.into_inner();
    ensure!(
        seen.windows(2).all(|w| w[0] < w[1]) && seen.last() == Some(&packed.uncompressed_size),
        "progress {seen:?} for a {} byte stream",
        packed.uncompressed_size
    );
    ensure!(cache.content().contains(&packed.digest), "blob not stored");

    // A record of the layer without diffID or blob stays while its snapshot does.
    let key = Digest::sha256_of(b"step");
    cache
        .index()
        .put(&key, &LayerRecord::unhashed(chain.clone()))?;
    cache.prune(Some(u64::MAX), false)?;
    ensure!(
        cache.index().get(&key)?.is_some(),
        "a record whose snapshot is there was pruned as dangling"
    );

    // The snapshot changed: no blob, a diffID error.
    fs::write(snap.path.join("intruder"), b"x")?;
    let blobs = cache.content().list()?.len();
    let zstd = opts(Compression::Zstd, SourceKind::OverlayUpper);
    match cache.pack_snapshot(&chain, Some(&hashed.diff_id), &zstd, None, &|_| {}) {
        Err(layer_cache::Error::DiffIdMismatch { expected, .. }) if expected == hashed.diff_id => {}
        other => ensure!(false, "a changed snapshot packed: {other:?}"),
    }
    ensure!(
        cache.content().list()?.len() == blobs,
        "a mismatching blob was stored"
    );

    // Once the snapshot is gone, the record is dangling and goes.
    fs::remove_dir_all(snap.path.parent().expect("snapshot dir"))?;
    cache.prune(Some(u64::MAX), false)?;
    ensure!(cache.index().get(&key)?.is_none(), "dangling record kept");
    Ok(())
}
