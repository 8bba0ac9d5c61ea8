//! The hostile-layer corpus: every archive is generated here, applied into a root that sits
//! next to an "outside" directory, and must be rejected with an error naming the entry
//! while nothing outside the root changes.

use std::fs;
use std::path::Path;

use layer_cache::{
    ApplyMode, ApplyOptions, DevicePolicy, Error, ParentSymlinks, Resolve, apply_layer,
};

use crate::util::{Raw, RawTar, TestResult, gzip, listing, scratch};
use crate::{ensure, with};

/// Applies `archive` into `<scratch>/root` with `<scratch>/outside/victim` next to it.
/// Returns the error; fails if it succeeded, names another entry, or touched the outside.
fn expect_rejected(
    archive: &[u8],
    opts: &ApplyOptions,
    entry: &str,
) -> Result<Error, Box<dyn std::error::Error>> {
    let dir = scratch();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&root)?;
    fs::create_dir_all(&outside)?;
    fs::write(outside.join("victim"), b"original")?;
    let before = outside_listing(dir.path());
    let res = apply_layer(archive, &root, opts);
    let after = outside_listing(dir.path());
    ensure!(
        before == after,
        "the outside changed:\nbefore {before:#?}\nafter {after:#?}"
    );
    let err = match res {
        Ok(stats) => {
            return Err(format!("accepted ({stats:?}), expected an error for `{entry}`").into());
        }
        Err(e) => e,
    };
    ensure!(
        err.entry() == Some(entry),
        "error names {:?}, expected {entry:?}: {err}",
        err.entry()
    );
    ensure!(
        err.to_string().contains(entry),
        "message does not show the entry: {err}"
    );
    Ok(err)
}

/// Everything in the scratch directory except the root.
fn outside_listing(base: &Path) -> Vec<(std::path::PathBuf, String)> {
    listing(base)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("root"))
        .collect()
}

fn flatten() -> ApplyOptions {
    ApplyOptions::default()
}

fn overlay() -> ApplyOptions {
    with!(ApplyOptions::default(), mode = ApplyMode::OverlayLayer)
}

pub fn dotdot_escape() -> TestResult {
    let tar = RawTar::default()
        .entry(Raw::file("../escape", b"pwned"))
        .finish();
    let err = expect_rejected(&tar, &flatten(), "../escape")?;
    ensure!(
        matches!(err, Error::Entry { ref source, .. } if matches!(**source, Error::UnsafePath { .. })),
        "{err:?}"
    );
    let tar = RawTar::default()
        .entry(Raw::dir("a"))
        .entry(Raw::file("a/../../escape", b"pwned"))
        .finish();
    expect_rejected(&tar, &overlay(), "a/../../escape")?;
    Ok(())
}

pub fn absolute_paths_and_nul() -> TestResult {
    let tar = RawTar::default()
        .entry(Raw::file("/escape", b"pwned"))
        .finish();
    expect_rejected(&tar, &flatten(), "/escape")?;
    // A NUL can only come in through a PAX path.
    let tar = RawTar::default()
        .pax(&[("path", b"ok\0../../escape")])
        .entry(Raw::file("placeholder", b"x"))
        .finish();
    expect_rejected(&tar, &flatten(), "ok\0../../escape")?;
    Ok(())
}

pub fn absolute_symlink_then_file_through_it() -> TestResult {
    for target in ["/", "/var/tmp", "../outside"] {
        let tar = RawTar::default()
            .entry(Raw::symlink("evil", target))
            .entry(Raw::file("evil/victim", b"pwned"))
            .finish();
        let err = expect_rejected(&tar, &flatten(), "evil/victim")?;
        ensure!(err.to_string().contains("symlink"), "{err}");
        expect_rejected(&tar, &overlay(), "evil/victim")?;
    }
    // With FollowInRoot the symlink is followed, but as if the root were `/`: the file
    // lands inside the root.
    let dir = scratch();
    let root = dir.path().join("root");
    fs::create_dir_all(&root)?;
    let tar = RawTar::default()
        .entry(Raw::symlink("evil", "/etc"))
        .entry(Raw::file("evil/passwd", b"inside"))
        .finish();
    let opts = with!(
        ApplyOptions::default(),
        parent_symlinks = ParentSymlinks::FollowInRoot
    );
    apply_layer(&tar[..], &root, &opts)?;
    ensure!(
        fs::read(root.join("etc/passwd"))? == b"inside",
        "not written inside the root"
    );
    Ok(())
}

pub fn hardlink_to_outside() -> TestResult {
    for target in [
        "../outside/victim",
        "/outside/victim",
        "a/../../outside/victim",
    ] {
        let tar = RawTar::default()
            .entry(Raw::hardlink("link", target))
            .finish();
        let err = expect_rejected(&tar, &flatten(), "link")?;
        ensure!(
            matches!(err, Error::Entry { ref source, .. } if matches!(**source, Error::HardlinkTarget { .. })),
            "{err:?}"
        );
    }
    // Through a symlink in the target's parent.
    let tar = RawTar::default()
        .entry(Raw::symlink("up", ".."))
        .entry(Raw::hardlink("link", "up/outside/victim"))
        .finish();
    expect_rejected(&tar, &flatten(), "link")?;
    // A hard link to a symlink that points outside links the symlink itself, never its
    // target; writing through it afterwards is a duplicate.
    let tar = RawTar::default()
        .entry(Raw::symlink("s", "../outside/victim"))
        .entry(Raw::hardlink("h", "s"))
        .entry(Raw::file("h", b"pwned"))
        .finish();
    expect_rejected(&tar, &flatten(), "h")?;
    Ok(())
}

pub fn symlink_chains() -> TestResult {
    let tar = RawTar::default()
        .entry(Raw::symlink("a", "b"))
        .entry(Raw::symlink("b", "c"))
        .entry(Raw::symlink("c", "../outside"))
        .entry(Raw::file("a/pwned", b"pwned"))
        .finish();
    expect_rejected(&tar, &flatten(), "a/pwned")?;
    expect_rejected(&tar, &overlay(), "a/pwned")?;
    // A loop.
    let tar = RawTar::default()
        .entry(Raw::symlink("x", "y"))
        .entry(Raw::symlink("y", "x"))
        .entry(Raw::file("x/f", b""))
        .finish();
    expect_rejected(&tar, &flatten(), "x/f")?;
    // FollowInRoot: `..` at the root stays at the root; the loop is still an error.
    let follow = with!(
        ApplyOptions::default(),
        parent_symlinks = ParentSymlinks::FollowInRoot
    );
    let err = expect_rejected(&tar, &follow, "x/f")?;
    ensure!(
        err.to_string().contains("symbolic links") || err.to_string().contains("resolve"),
        "{err}"
    );
    let dir = scratch();
    let root = dir.path().join("root");
    fs::create_dir_all(&root)?;
    let tar = RawTar::default()
        .entry(Raw::symlink("a", "b"))
        .entry(Raw::symlink("b", "c"))
        .entry(Raw::symlink("c", "../../../../outside"))
        .entry(Raw::file("a/pwned", b"contained"))
        .finish();
    apply_layer(&tar[..], &root, &follow)?;
    ensure!(
        fs::read(root.join("outside/pwned"))? == b"contained",
        "the chain was not clamped to the root"
    );
    ensure!(
        !dir.path().join("outside").exists(),
        "written outside the root"
    );
    Ok(())
}

pub fn gzip_bomb() -> TestResult {
    // 256 MiB of zeros in one file compress to a few hundred KiB.
    let size = 256u64 << 20;
    let mut tar = RawTar::default();
    tar.header(&Raw {
        size_field: size,
        ..Raw::file("bomb", b"")
    });
    let mut raw = std::mem::take(&mut tar.bytes);
    raw.resize(raw.len() + size as usize, 0);
    raw.extend_from_slice(&[0; 1024]);
    let gz = gzip(&raw);
    drop(raw);
    ensure!(gz.len() < 2 << 20, "bomb is {} bytes", gz.len());
    let opts = with!(ApplyOptions::default(), max_bytes = 16 << 20);
    let err = expect_rejected(&gz, &opts, "bomb")?;
    ensure!(err.to_string().contains("exceeds the limit"), "{err}");
    // The entry-count cap.
    let mut t = RawTar::default();
    let names: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
    for n in &names {
        t.entry(Raw::file(n, b""));
    }
    let opts = with!(ApplyOptions::default(), max_entries = 20);
    expect_rejected(&t.finish(), &opts, "f20")?;
    Ok(())
}

pub fn pax_size_lies() -> TestResult {
    // The PAX size contradicts the ustar size: readers would disagree on where the next
    // header starts.
    let mut t = RawTar::default();
    t.pax(&[("size", b"1024")]);
    t.entry(Raw::file("liar", &[b'A'; 10]));
    t.entry(Raw::file("../smuggled", b"pwned"));
    expect_rejected(&t.finish(), &flatten(), "liar")?;
    // A PAX size beyond the end of the archive.
    let mut t = RawTar::default();
    t.pax(&[("size", b"99999999")]);
    t.header(&Raw {
        size_field: 0,
        ..Raw::file("truncated", b"")
    });
    t.data(b"short");
    let err = expect_rejected(&t.finish(), &flatten(), "truncated")?;
    ensure!(err.to_string().contains("ends"), "{err}");
    // A size on an entry type that has no data (Go skips it, others read it).
    let mut t = RawTar::default();
    t.entry(Raw {
        size_field: 512,
        data: &[b'B'; 512],
        ..Raw::symlink("sized-link", "target")
    });
    expect_rejected(&t.finish(), &flatten(), "sized-link")?;
    // A size that is not a number.
    let mut t = RawTar::default();
    t.pax(&[("size", b"-5"), ("path", b"negative")]);
    t.entry(Raw::file("negative", b""));
    let err = apply_layer(&t.finish()[..], scratch().path(), &flatten()).unwrap_err();
    ensure!(err.to_string().contains("not a number"), "{err}");
    Ok(())
}

pub fn duplicate_entries() -> TestResult {
    // The classic: a symlink to the outside, then a file of the same name.
    let tar = RawTar::default()
        .entry(Raw::symlink("x", "../outside/victim"))
        .entry(Raw::file("x", b"pwned"))
        .finish();
    let err = expect_rejected(&tar, &flatten(), "x")?;
    ensure!(
        matches!(err, Error::Entry { ref source, .. } if matches!(**source, Error::DuplicateEntry)),
        "{err:?}"
    );
    let tar = RawTar::default()
        .entry(Raw::file("f", b"one"))
        .entry(Raw::file("./f", b"two"))
        .finish();
    expect_rejected(&tar, &overlay(), "./f")?;
    let tar = RawTar::default()
        .entry(Raw::dir("d"))
        .entry(Raw::dir("d/"))
        .finish();
    expect_rejected(&tar, &flatten(), "d/")?;
    let tar = RawTar::default()
        .entry(Raw::file(".wh.g", b""))
        .entry(Raw::file(".wh.g", b""))
        .finish();
    expect_rejected(&tar, &flatten(), ".wh.g")?;
    Ok(())
}

pub fn whiteout_naming_dotdot() -> TestResult {
    for name in [".wh...", "a/.wh...", ".wh..", ".wh.", "a/.wh.."] {
        let tar = RawTar::default()
            .entry(Raw::dir("a"))
            .entry(Raw::file(name, b""))
            .finish();
        expect_rejected(&tar, &flatten(), name)?;
        expect_rejected(&tar, &overlay(), name)?;
    }
    // `.wh.` on a name with a `..` path component is caught by the path check.
    let tar = RawTar::default()
        .entry(Raw::file("../.wh.victim", b""))
        .finish();
    expect_rejected(&tar, &flatten(), "../.wh.victim")?;
    Ok(())
}

pub fn devices_only_when_permitted() -> TestResult {
    let dev = Raw {
        typeflag: b'3',
        ..Raw::file("dev/null", b"")
    };
    let tar = RawTar::default().entry(dev.clone()).finish();
    let err = expect_rejected(&tar, &flatten(), "dev/null")?;
    ensure!(
        matches!(err, Error::Entry { ref source, .. } if matches!(**source, Error::DevicesNotPermitted)),
        "{err:?}"
    );
    let dir = scratch();
    let skip = with!(ApplyOptions::default(), devices = DevicePolicy::Skip);
    let stats = apply_layer(&tar[..], dir.path(), &skip)?;
    ensure!(
        stats.skipped == 1 && !dir.path().join("dev/null").exists(),
        "{stats:?}"
    );
    Ok(())
}

pub fn overlay_xattrs_in_layers_are_refused() -> TestResult {
    let mut t = RawTar::default();
    t.pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")]);
    t.entry(Raw::dir("d"));
    expect_rejected(&t.finish(), &overlay(), "d")?;
    Ok(())
}

/// The fallback resolver (one `openat(O_NOFOLLOW)` per component, for kernels or seccomp
/// filters without openat2) rejects the same archives.
pub fn walk_resolver_rejects_the_same() -> TestResult {
    let walk = with!(ApplyOptions::default(), resolve = Resolve::Walk);
    let tar = RawTar::default()
        .entry(Raw::symlink("evil", "/"))
        .entry(Raw::file("evil/victim", b"pwned"))
        .finish();
    expect_rejected(&tar, &walk, "evil/victim")?;
    let tar = RawTar::default()
        .entry(Raw::symlink("a", "b"))
        .entry(Raw::symlink("b", "../outside"))
        .entry(Raw::file("a/pwned", b"pwned"))
        .finish();
    expect_rejected(&tar, &walk, "a/pwned")?;
    let tar = RawTar::default()
        .entry(Raw::symlink("up", ".."))
        .entry(Raw::hardlink("link", "up/outside/victim"))
        .finish();
    expect_rejected(&tar, &walk, "link")?;
    let tar = RawTar::default()
        .entry(Raw::file("f", b"file"))
        .entry(Raw::file("f/below", b"x"))
        .finish();
    let err = expect_rejected(&tar, &walk, "f/below")?;
    ensure!(err.to_string().contains("not a directory"), "{err}");
    // FollowInRoot through the walk: clamped to the root.
    let follow = with!(walk.clone(), parent_symlinks = ParentSymlinks::FollowInRoot);
    let dir = scratch();
    let root = dir.path().join("root");
    fs::create_dir_all(&root)?;
    let tar = RawTar::default()
        .entry(Raw::symlink("a", "../../x/../.."))
        .entry(Raw::file("a/f", b"contained"))
        .finish();
    apply_layer(&tar[..], &root, &follow)?;
    ensure!(
        fs::read(root.join("f"))? == b"contained",
        "not clamped to the root"
    );
    Ok(())
}
