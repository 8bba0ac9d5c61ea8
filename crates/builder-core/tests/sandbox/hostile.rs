//! Hostile roots: base images and steps that plant symlinks and device nodes where the
//! sandbox mounts or writes (`/proc`, `/dev`, `/etc/hosts`, `/etc/resolv.conf`, the
//! parents of mount-point stubs). Nothing may be redirected to the host: every case keeps a
//! "victim" directory on the host and checks it is untouched.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use builder_core::ModeRequest;
use libtest_mimic::Failed;

use super::{
    R, base_layer, check, eq, exec, host_arch, ok, overlay, run_dirs, sandbox, spec, workdir,
};

/// A host directory with `resolv.conf` and `hosts` that no run may touch.
struct Victim {
    dir: tempfile::TempDir,
}

impl Victim {
    fn new() -> Self {
        let dir = workdir();
        for f in ["resolv.conf", "hosts", "null"] {
            fs::write(dir.path().join(f), "victim\n").unwrap();
        }
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn untouched(&self) -> R {
        let mut names: Vec<String> = fs::read_dir(self.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        eq(
            names,
            vec!["hosts".to_owned(), "null".into(), "resolv.conf".into()],
            "victim directory entries",
        )?;
        for f in ["resolv.conf", "hosts", "null"] {
            eq(
                fs::read_to_string(self.path().join(f))?,
                "victim\n".to_owned(),
                &format!("victim {f}"),
            )?;
        }
        Ok(())
    }
}

/// A step replaces `/etc` (which holds the resolv.conf and hosts stubs of a directory root)
/// with a symlink to a host directory. Undoing the stubs afterwards must not follow it: the
/// host's files stay.
pub(super) fn undo_does_not_follow_symlinks_a_step_planted() -> R {
    let base = base_layer(host_arch());
    let sb = sandbox(ModeRequest::Chroot);
    let victim = Victim::new();
    let run = run_dirs();
    let script = format!(
        "set -e; mv /etc /etc.moved; ln -s {} /etc; echo done",
        victim.path().display()
    );
    let out = ok(&sb, &spec([base], &run, &script))?;
    eq(out.as_str(), "done\n", "step output")?;
    victim.untouched()
}

/// A base image whose `/proc` or `/dev` is a symlink (absolute, to a host directory) or a
/// device node: the run is refused naming the path, and nothing reaches the host.
pub(super) fn symlinked_system_dirs_are_refused() -> R {
    let base = base_layer(host_arch());
    let sb = overlay();
    for (dir, kind) in [
        ("proc", "symlink"),
        ("dev", "symlink"),
        ("sys", "symlink"),
        ("dev", "node"),
    ] {
        let victim = Victim::new();
        let img = workdir();
        let p = img.path().join(dir);
        if kind == "symlink" {
            symlink(victim.path(), &p)?;
        } else {
            make_node(&p)?;
        }
        let run = run_dirs();
        let r = exec(
            &sb,
            &spec(
                [img.path().to_path_buf(), base.clone()],
                &run,
                "ls /proc /dev",
            ),
        );
        match r {
            Ok(o) => {
                return Err(format!(
                    "/{dir} as a {kind}: the run started ({}): {}{}",
                    o.status, o.stdout, o.stderr
                )
                .into());
            }
            Err(e) => check(e.to_string().contains(&format!("/{dir}")), || {
                format!("/{dir} as a {kind}: {e}")
            })?,
        }
        victim.untouched()?;
    }
    Ok(())
}

/// A base image whose `/etc/hosts`, `/etc/resolv.conf` and `/dev/null` point at host files
/// (absolute symlinks, symlinks that climb with `..`) or are device nodes: the step sees the
/// private copies (or a clear refusal), writes through them reach no host file.
pub(super) fn planted_etc_files_cannot_redirect_writes() -> R {
    let base = base_layer(host_arch());
    for req in [ModeRequest::Overlay, ModeRequest::Chroot] {
        let sb = sandbox(req);
        for kind in ["absolute", "climbing", "node"] {
            let victim = Victim::new();
            let img = workdir();
            fs::create_dir_all(img.path().join("etc"))?;
            fs::create_dir_all(img.path().join("dev"))?;
            for (name, dir) in [("hosts", "etc"), ("resolv.conf", "etc"), ("null", "dev")] {
                let p = img.path().join(dir).join(name);
                let to = victim.path().join(name);
                match kind {
                    "absolute" => symlink(&to, &p)?,
                    "climbing" => symlink(
                        Path::new("../../../../../../../..").join(to.strip_prefix("/")?),
                        &p,
                    )?,
                    _ => make_node(&p)?,
                }
            }
            let run = run_dirs();
            let s = spec(
                [img.path().to_path_buf(), base.clone()],
                &run,
                "echo owned > /etc/hosts; echo owned > /etc/resolv.conf; echo owned > /dev/null; \
                 echo ran",
            );
            match exec(&sb, &s) {
                Ok(o) => eq(
                    (o.status.success(), o.stdout.as_str()),
                    (true, "ran\n"),
                    &format!("{req:?} {kind}: {}", o.stderr),
                )?,
                // a symlink that climbs out of the root is refused by name
                Err(e) if kind == "climbing" => {
                    check(e.to_string().contains("outside the root"), || {
                        format!("{req:?} {kind}: {e}")
                    })?
                }
                Err(e) => return Err(format!("{req:?} {kind}: {e}").into()),
            }
            victim.untouched()?;
        }
    }
    Ok(())
}

/// A character device node (1:3, like /dev/null) at `p`.
fn make_node(p: &Path) -> Result<(), Failed> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .map_err(|e| format!("mknod {}: {e}", p.display()).into())
}
