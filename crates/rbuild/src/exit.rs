//! Failures and exit status, decided in one place: 0 success, 1 the build (or the
//! Dockerfile) failed, 2 usage error.

use std::process::ExitCode;

/// Why a command did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A bad flag, value or argument: one line, exit status 2.
    Usage(String),
    /// The build failed: the message is printed as it is (it may span lines, e.g. a
    /// Dockerfile excerpt), exit status 1.
    Build(String),
    /// Nothing more to print; exit with this status (`--call=check` with findings).
    Status(u8),
}

impl Failure {
    pub(crate) fn usage(msg: impl Into<String>) -> Self {
        Self::Usage(msg.into())
    }

    pub(crate) fn build(msg: impl Into<String>) -> Self {
        Self::Build(msg.into())
    }
}

/// Prints the failure, if any, and gives the exit status.
pub(crate) fn report(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Build(msg)) => {
            let msg = msg.trim_end();
            if msg.starts_with("error") {
                eprintln!("{msg}");
            } else {
                eprintln!("error: {msg}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Status(code)) => ExitCode::from(code),
    }
}

/// Help and version go to stdout with status 0; a usage error is reduced to its first
/// line (which names the flag and the value) with status 2.
pub(crate) fn clap_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            print!("{}", e.render());
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprint!("{}", e.render());
            ExitCode::from(2)
        }
        _ => {
            eprintln!("{}", one_line(&e.render().to_string()));
            ExitCode::from(2)
        }
    }
}

/// The first line of a clap error; when it ends with `:` (a list follows, as for missing
/// arguments), the listed items are appended to it.
fn one_line(text: &str) -> String {
    let mut lines = text.lines();
    let mut out = lines.next().unwrap_or("error: invalid usage").to_owned();
    if out.ends_with(':') {
        let items: Vec<&str> = lines
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        if !items.is_empty() {
            out.push(' ');
            out.push_str(&items.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn lists_are_folded_into_the_line() {
        let text =
            "error: the following required arguments were not provided:\n  <PATH>\n\nUsage: x\n";
        assert_eq!(
            one_line(text),
            "error: the following required arguments were not provided: <PATH>"
        );
        assert_eq!(one_line("error: bad\n\nUsage"), "error: bad");
    }
}
