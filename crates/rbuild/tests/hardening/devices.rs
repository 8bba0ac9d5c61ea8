use std::fs;
use std::process::Command;

use test_support::{LocalRegistry, describe, output};

use super::{nonce, scratch};

/// runc CVE-2025-31133: rbuild runs where `/dev/null` is not the null device (an outer
/// container or host whose `/dev/null` was swapped for a regular file: here a bind mount in
/// a private mount namespace made with `unshare`). rbuild binds the host's device nodes
/// into the step and masks `/proc/kcore` and friends with `/dev/null`; it must refuse the
/// swapped one (the build fails naming `/dev/null`) rather than let the step write to the
/// file through `/dev/null` or a masked path.
///
/// Without `check_device` in the sandbox init the step runs and the file holds "owned".
#[test]
fn a_swapped_dev_null_is_not_bound_into_steps() {
    let reg = LocalRegistry::ensure();
    let dir = scratch("devnull");
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).expect("ctx");
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo {} >/dev/null; echo owned > /dev/null; echo owned > /proc/kcore; \
             echo owned > /proc/keys; echo ran\n",
            reg.busybox(),
            nonce()
        ),
    )
    .expect("Dockerfile");
    let fake = dir.path().join("fake-null");
    fs::write(&fake, "").expect("fake");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" /dev/null && shift && exec "$@""#)
        .arg("sh")
        .arg(&fake)
        .arg(env!("CARGO_BIN_EXE_rbuild"))
        .args(["build", "--progress=plain", "--no-cache", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .arg(&ctx);
    let out = output(&mut cmd);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        fs::read_to_string(&fake).expect("fake"),
        "",
        "the step wrote through the swapped /dev/null: {}",
        describe(&cmd, &out)
    );
    assert!(
        !out.status.success(),
        "the build ran: {}",
        describe(&cmd, &out)
    );
    assert!(
        log.contains("/dev/null") && log.contains("not the null device"),
        "{}",
        describe(&cmd, &out)
    );
}
