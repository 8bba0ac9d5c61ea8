use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use test_support::{LocalRegistry, describe, run};

use super::{
    file_sum, mounts_below, nonce, oci_out, processes_with, rbuild, rbuild_ok, scratch, sha256_hex,
};

/// A tmpfs of a given size mounted on a directory (as root); unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, kib: u64) -> Tmpfs {
        fs::create_dir_all(dir).expect("mkdir");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={kib}k,mode=0755"))
            .arg("tmpfs")
            .arg(dir));
        Tmpfs {
            dir: dir.to_owned(),
        }
    }

    /// Frees space: the same file system, made larger.
    fn grow(&self, kib: u64) {
        run(Command::new("mount")
            .args(["-o"])
            .arg(format!("remount,size={kib}k"))
            .arg(&self.dir));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fills the file system of `dir` up to `leave` bytes free (the filler is `dir/filler`).
fn fill(dir: &Path, leave: u64) {
    let free = || {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(dir)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<u64>().ok())
            .expect("df avail")
    };
    let mut f = fs::File::create(dir.join("filler")).expect("filler");
    let chunk = vec![0xa5u8; 64 << 10];
    while free() > leave + chunk.len() as u64 {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}

/// A context whose Dockerfile pulls busybox, copies 2 MiB of incompressible bytes and
/// runs a step that writes them three times (6 MiB): pull, unpack, a step, compression.
fn context(dir: &Path, base: &str) -> (PathBuf, String) {
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).expect("ctx");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let data: Vec<u8> = (0..(2u32 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(ctx.join("data.bin"), &data).expect("data");
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base}\nCOPY data.bin /data.bin\n\
             RUN echo {} > /nonce && cat /data.bin /data.bin /data.bin > /triple\n",
            nonce()
        ),
    )
    .expect("Dockerfile");
    (ctx, sha256_hex(&[&data[..], &data, &data].concat()))
}

/// The error line of a failed build's log.
fn error_line(log: &str) -> String {
    log.lines()
        .rev()
        .find(|l| l.starts_with("error: failed to solve"))
        .unwrap_or("")
        .to_owned()
}

/// Where a build ran out of space, from its error: the phase the failing write belongs to.
fn phase(error: &str) -> &'static str {
    let after = error.split("out of space:").nth(1).unwrap_or(error);
    if after.contains("writing blob") {
        "pull"
    } else if after.contains("tar entry") {
        "unpack"
    } else if after.contains("RUN ") {
        "step"
    } else if after.contains("copy to") {
        "copy"
    } else if after.contains("gzip") || after.contains("write:") {
        "compress"
    } else {
        "other"
    }
}

/// A cache on a tmpfs too small for the build, at sizes that run out of space while
/// pulling, unpacking, running the step and compressing: each build fails with an error
/// that names the cache directory as out of space (exit status 1, no panic), leaves no
/// mount or process, and once the same tmpfs is made larger the same cache builds the
/// right image (every blob hashing to its name, the step's file the right bytes).
///
/// Without `Build::name_full_cache` the error is the bare `ENOSPC` of some file below
/// the cache, and the check on the message fails.
#[test]
fn full_disk_mid_build_then_the_same_cache_builds() {
    let reg = LocalRegistry::ensure();
    let dir = scratch("disk");
    let (ctx, want) = context(dir.path(), &reg.busybox());
    let mut failed_at = Vec::new();
    for kib in [
        600, 1_500, 2_500, 4_000, 5_500, 7_500, 10_000, 13_000, 16_000, 19_000, 22_000,
    ] {
        let mnt = dir.path().join(format!("fs-{kib}"));
        let fs = Tmpfs::mount(&mnt, kib);
        let cache = mnt.join("cache");
        let out = dir.path().join(format!("out-{kib}"));
        let (cmd, o) = rbuild(&cache, &["-o", &oci_out(&out)], &ctx);
        let log = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!log.contains("panicked"), "{}", describe(&cmd, &o));
        if o.status.success() {
            assert_eq!(file_sum(&out, "triple"), want, "{kib} KiB: a wrong image");
        } else {
            assert_eq!(o.status.code(), Some(1), "{}", describe(&cmd, &o));
            let named = format!("the cache directory {} is out of space", cache.display());
            assert!(log.contains(&named), "{kib} KiB: {}", describe(&cmd, &o));
            let line = error_line(&log);
            failed_at.push((kib, phase(&line), line));
        }
        assert_eq!(
            mounts_below(&mnt),
            Vec::<String>::new(),
            "{kib} KiB: mounts left"
        );
        assert_eq!(processes_with(&mnt.to_string_lossy()), Vec::<String>::new());
        fs.grow(256 << 10);
        let out = dir.path().join(format!("again-{kib}"));
        rbuild_ok(&cache, &["-o", &oci_out(&out)], &ctx);
        assert_eq!(
            file_sum(&out, "triple"),
            want,
            "{kib} KiB, space freed: a wrong image"
        );
        drop(fs);
    }
    eprintln!("failed at: {failed_at:#?}");
    let points: std::collections::BTreeSet<_> = failed_at.iter().map(|(_, p, _)| *p).collect();
    for p in ["pull", "unpack", "step", "compress"] {
        assert!(
            points.contains(p),
            "no size ran out of space mid-{p}: {failed_at:#?}"
        );
    }
}

/// A build's steps done (no output), then the disk filled to within 1 MiB: the push of
/// the image (whose step layer is compressed at export, 6 MiB) fails naming the cache
/// directory; with the filler removed the same cache pushes, and the image in the
/// registry has the right bytes.
#[test]
fn full_disk_mid_push_then_the_same_cache_pushes() {
    let reg = LocalRegistry::ensure();
    let dir = scratch("disk-push");
    let (ctx, want) = context(dir.path(), &reg.busybox());
    let mnt = dir.path().join("fs");
    let _fs = Tmpfs::mount(&mnt, 64 << 10);
    let cache = mnt.join("cache");
    rbuild_ok(&cache, &[], &ctx);
    let name = format!("{}/{}:latest", reg.host(), reg.unique_repo("harden-disk"));
    let push = format!("type=image,name={name},push=true");
    fill(&mnt, 1 << 20);
    let (cmd, o) = rbuild(&cache, &["-o", &push], &ctx);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!log.contains("panicked"), "{}", describe(&cmd, &o));
    if !o.status.success() {
        let named = format!("the cache directory {} is out of space", cache.display());
        assert!(log.contains(&named), "{}", describe(&cmd, &o));
    }
    assert_eq!(mounts_below(&mnt), Vec::<String>::new(), "mounts left");
    fs::remove_file(mnt.join("filler")).expect("rm filler");
    rbuild_ok(&cache, &["-o", &push], &ctx);
    let layout = dir.path().join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{}:latest", layout.display())));
    assert_eq!(file_sum(&layout, "triple"), want, "the pushed image");
    assert!(
        !o.status.success(),
        "the push with 1 MiB free should have run out of space: {}",
        describe(&cmd, &o)
    );
}
