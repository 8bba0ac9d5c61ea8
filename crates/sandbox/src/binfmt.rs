//! Foreign-architecture roots: checks that binfmt_misc will hand their binaries to a QEMU
//! user emulator from inside the sandbox.
//!
//! The entry must have the `F` (fix binary) flag: the kernel then opens the interpreter when
//! the entry is registered, so it is found after `pivot_root`/`chroot` into a root that does
//! not contain it.

use std::fs;
use std::path::Path;

use super::error::SandboxError;

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

/// ELF identification of an architecture (Go/OCI name): class, little-endian, e_machine.
pub(crate) fn elf_machine(arch: &str) -> Option<(u8, bool, u16)> {
    Some(match arch {
        "amd64" => (2, true, 62),
        "386" => (1, true, 3),
        "arm64" => (2, true, 183),
        "arm" => (1, true, 40),
        "ppc64le" => (2, true, 21),
        "s390x" => (2, false, 22),
        "riscv64" => (2, true, 243),
        "mips64le" => (2, true, 8),
        "loong64" => (2, true, 258),
        _ => return None,
    })
}

/// The platforms RUN steps can run on here, as buildx lists a builder's: the host's
/// (with the 32-bit one it runs natively), then each architecture binfmt_misc hands to a
/// QEMU emulator with the `F` flag.
pub fn run_platforms() -> Vec<String> {
    const ALL: &[(&str, &str)] = &[
        ("amd64", "linux/amd64"),
        ("arm64", "linux/arm64"),
        ("riscv64", "linux/riscv64"),
        ("ppc64le", "linux/ppc64le"),
        ("s390x", "linux/s390x"),
        ("386", "linux/386"),
        ("mips64le", "linux/mips64le"),
        ("loong64", "linux/loong64"),
        ("arm", "linux/arm/v7"),
    ];
    let host = host_arch();
    let mut out: Vec<String> = ALL
        .iter()
        .filter(|(a, _)| *a == host)
        .map(|(_, p)| (*p).to_owned())
        .collect();
    for (arch, platform) in ALL {
        if *arch != host && (native(arch) || check_emulator(arch).is_ok()) {
            out.push((*platform).to_owned());
        }
    }
    out
}

/// QEMU's name for an architecture, for messages.
fn qemu_name(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "386" => "i386",
        "arm64" => "aarch64",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        other => other,
    }
}

/// The host's architecture in Go/OCI terms.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Whether the host runs `arch` binaries without emulation.
fn native(arch: &str) -> bool {
    let host = host_arch();
    arch == host || (host == "amd64" && arch == "386") || (host == "arm64" && arch == "arm")
}

/// The first bytes of an ELF executable of `arch` with type `e_type`.
fn sample_header(arch: &str, e_type: u16) -> Option<[u8; 20]> {
    let (class, le, machine) = elf_machine(arch)?;
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = if le { 1 } else { 2 };
    h[6] = 1;
    let (t, m) = if le {
        (e_type.to_le_bytes(), machine.to_le_bytes())
    } else {
        (e_type.to_be_bytes(), machine.to_be_bytes())
    };
    h[16..18].copy_from_slice(&t);
    h[18..20].copy_from_slice(&m);
    Some(h)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// One registered binfmt_misc entry.
#[derive(Debug)]
struct Entry {
    name: String,
    enabled: bool,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Option<Vec<u8>>,
}

fn parse_entry(name: &str, text: &str) -> Option<Entry> {
    let mut e = Entry {
        name: name.to_owned(),
        enabled: false,
        flags: String::new(),
        offset: 0,
        magic: Vec::new(),
        mask: None,
    };
    for line in text.lines() {
        match line.split_once(' ') {
            _ if line == "enabled" => e.enabled = true,
            Some(("flags:", f)) => e.flags = f.trim().to_owned(),
            Some(("offset", o)) => e.offset = o.trim().parse().ok()?,
            Some(("magic", m)) => e.magic = unhex(m.trim())?,
            Some(("mask", m)) => e.mask = Some(unhex(m.trim())?),
            _ => {}
        }
    }
    (!e.magic.is_empty()).then_some(e)
}

fn matches(e: &Entry, header: &[u8]) -> bool {
    let Some(window) = header.get(e.offset..e.offset + e.magic.len()) else {
        return false;
    };
    window.iter().zip(&e.magic).enumerate().all(|(i, (h, m))| {
        let k = e
            .mask
            .as_ref()
            .and_then(|mask| mask.get(i))
            .copied()
            .unwrap_or(0xff);
        h & k == m & k
    })
}

/// Checks that binaries of `arch` can run inside the sandbox: natively, or through an
/// enabled binfmt_misc entry with the `F` flag. The error names the platform and says how
/// to register the emulator.
pub(crate) fn check_emulator(arch: &str) -> Result<(), SandboxError> {
    check_emulator_in(Path::new(BINFMT), arch)
}

fn check_emulator_in(dir: &Path, arch: &str) -> Result<(), SandboxError> {
    if native(arch) {
        return Ok(());
    }
    let platform = format!("linux/{arch}");
    let qemu = qemu_name(arch);
    let how = format!(
        "install QEMU user emulation and register it with the F (fix binary) flag, for \
         example `apt-get install qemu-user-static binfmt-support` on Debian or Ubuntu (it \
         registers qemu-{qemu} with flags F), or write a \
         `:qemu-{qemu}:M::<magic>:<mask>:/usr/bin/qemu-{qemu}-static:F` line to \
         {BINFMT}/register"
    );
    let err = |detail: String| SandboxError::Emulator {
        platform: platform.clone(),
        detail,
    };
    let headers: Vec<[u8; 20]> = [2u16, 3]
        .iter()
        .filter_map(|t| sample_header(arch, *t))
        .collect();
    match fs::read_to_string(dir.join("status")) {
        Ok(s) if s.trim() == "enabled" => {}
        Ok(_) => {
            return Err(err(format!(
                "binfmt_misc is disabled (`echo 1 > {BINFMT}/status`); then {how}"
            )));
        }
        Err(_) => {
            return Err(err(format!(
                "binfmt_misc is not mounted (`mount -t binfmt_misc binfmt_misc {BINFMT}`); \
                 then {how}"
            )));
        }
    }
    let mut entries = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for de in rd.flatten() {
            let name = de.file_name().to_string_lossy().into_owned();
            if name == "status" || name == "register" {
                continue;
            }
            if let Ok(text) = fs::read_to_string(de.path()) {
                if let Some(e) = parse_entry(&name, &text) {
                    if headers.iter().any(|h| matches(&e, h)) {
                        entries.push(e);
                    }
                }
            }
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if entries.iter().any(|e| e.enabled && e.flags.contains('F')) {
        return Ok(());
    }
    Err(err(match entries.first() {
        None => format!("no binfmt_misc entry handles {qemu} ELF binaries; {how}"),
        Some(e) if !e.enabled => format!(
            "the binfmt_misc entry {} is disabled (`echo 1 > {BINFMT}/{}`)",
            e.name, e.name
        ),
        Some(e) => format!(
            "the binfmt_misc entry {} lacks the F (fix binary) flag (flags: {:?}), so its \
             interpreter cannot be found inside the build root; re-register it with flags F \
             (for example `update-binfmts --disable {} && update-binfmts --enable {}` with a \
             qemu-user-static that sets F)",
            e.name, e.flags, e.name, e.name
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("status"), "enabled\n").unwrap();
        for (name, text) in entries {
            fs::write(t.path().join(name), text).unwrap();
        }
        t
    }

    const DEBIAN_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn finds_entries_by_magic() {
        let t = env(&[("qemu-aarch64", DEBIAN_AARCH64)]);
        check_emulator_in(t.path(), "arm64").unwrap();
        let e = check_emulator_in(t.path(), "s390x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux/s390x") && e.contains("qemu-s390x"), "{e}");
        let t = env(&[("qemu-aarch64", &DEBIAN_AARCH64.replace("POF", "PO"))]);
        let e = check_emulator_in(t.path(), "arm64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lacks the F"), "{e}");
        let t = env(&[(
            "qemu-aarch64",
            &DEBIAN_AARCH64.replace("enabled\n", "disabled\n"),
        )]);
        let e = check_emulator_in(t.path(), "arm64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is disabled"), "{e}");
        check_emulator_in(t.path(), host_arch()).unwrap();
    }
}
