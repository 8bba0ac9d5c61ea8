//! Running real tools from tests, with failures that say everything.

use std::process::{Command, Output};

/// Run `cmd` to completion; panic unless it exits 0, showing the command, its working
/// directory, the exit status, stdout and stderr.
pub fn run(cmd: &mut Command) -> Output {
    let out = output(cmd);
    if !out.status.success() {
        panic!("{}", describe(cmd, &out));
    }
    out
}

/// Run `cmd` to completion and return its output whatever the status (spawn failures
/// panic with the command).
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run `cmd`; its stdout as UTF-8 (panics as [`run`] does).
pub fn run_stdout(cmd: &mut Command) -> String {
    let out = run(cmd);
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{cmd:?}: stdout is not UTF-8: {e}"))
}

/// The text a failed command is reported with.
pub fn describe(cmd: &Command, out: &Output) -> String {
    let cwd = cmd
        .get_current_dir()
        .map(|d| d.display().to_string())
        .or_else(|| {
            std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string())
        })
        .unwrap_or_default();
    format!(
        "command failed: {cmd:?}\n  cwd: {cwd}\n  status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
