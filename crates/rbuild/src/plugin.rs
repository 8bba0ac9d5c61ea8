//! rbuild installed as the Docker CLI plugin `docker-buildx`
//! (`~/.docker/cli-plugins/docker-buildx` → rbuild): the commands `docker/setup-buildx-action`
//! and `docker/build-push-action` run. `buildx build`, `du` and `prune` are rbuild's own;
//! `version` and `inspect` describe rbuild as a builder; `create`, `use`, `rm`, `stop` do
//! nothing but say so; `history` is not available (rbuild keeps no build records), which
//! the action reports as a warning.

use std::ffi::OsString;
use std::process::ExitCode;

/// The buildx release whose command line rbuild's flags follow; what `version` reports
/// so that tools gate their flags on it.
pub(crate) const BUILDX_COMPAT: &str = "0.23.0";
/// The BuildKit release rbuild's behaviour is compared with (its Dockerfile frontend).
pub(crate) const BUILDKIT_COMPAT: &str = "v0.32.2";
/// The builder's name in `inspect` and `ls`.
const BUILDER: &str = "rbuild";

/// What plugin mode makes of the command line.
pub(crate) enum Plugin {
    /// Answered here, with this status.
    Done(ExitCode),
    /// An rbuild command line to run (`rbuild build …`).
    Run(Vec<OsString>),
}

/// Whether this process was started as the `docker-buildx` plugin.
pub(crate) fn is_plugin(args: &[OsString]) -> bool {
    args.first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "docker-buildx")
}

fn done(code: u8) -> Plugin {
    Plugin::Done(ExitCode::from(code))
}

fn note(what: &str) {
    eprintln!("rbuild: {what}");
}

/// Handles a `docker-buildx` command line (`args[0]` is the program).
pub(crate) fn dispatch(args: &[OsString]) -> Plugin {
    let mut rest: Vec<OsString> = args.iter().skip(1).cloned().collect();
    // The Docker CLI asks a plugin for its metadata, then runs it as `docker-buildx buildx …`;
    // run directly, the first word is the command.
    if rest
        .first()
        .is_some_and(|a| a == "docker-cli-plugin-metadata")
    {
        println!(
            "{{\"SchemaVersion\":\"0.1.0\",\"Vendor\":\"rbuild\",\"Version\":\"v{BUILDX_COMPAT}\",\
             \"ShortDescription\":\"Docker Buildx (rbuild {})\"}}",
            env!("CARGO_PKG_VERSION")
        );
        return done(0);
    }
    if rest.first().is_some_and(|a| a == "buildx") {
        rest.remove(0);
    }
    // Global flags before the command: `--builder NAME`, `--debug`, `-D`.
    let mut builder = None;
    while let Some(first) = rest.first().and_then(|a| a.to_str()).map(str::to_owned) {
        if first == "--builder" && rest.len() > 1 {
            builder = rest.get(1).and_then(|b| b.to_str()).map(str::to_owned);
            rest.drain(..2);
        } else if let Some(b) = first.strip_prefix("--builder=") {
            builder = Some(b.to_owned());
            rest.remove(0);
        } else if first == "--debug" || first == "-D" {
            rest.remove(0);
        } else {
            break;
        }
    }
    let Some(cmd) = rest.first().and_then(|a| a.to_str()).map(str::to_owned) else {
        print!("{}", usage());
        return done(0);
    };
    let words: Vec<String> = rest
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match cmd.as_str() {
        "build" | "b" | "du" | "prune" => {
            let mut out = vec![OsString::from("rbuild")];
            out.push(if cmd == "b" {
                "build".into()
            } else {
                cmd.into()
            });
            if let Some(b) = builder.filter(|_| rest[0] != "du" && rest[0] != "prune") {
                out.push("--builder".into());
                out.push(b.into());
            }
            out.extend(rest.into_iter().skip(1));
            Plugin::Run(out)
        }
        "version" => {
            println!(
                "rbuild (docker-buildx compatible) v{BUILDX_COMPAT} rbuild-{}",
                env!("CARGO_PKG_VERSION")
            );
            done(0)
        }
        "inspect" => {
            let name = words.iter().find(|w| !w.starts_with('-'));
            if let Some(n) = name.or(builder.as_ref()) {
                if n != BUILDER && !n.starts_with("builder-") {
                    note(&format!(
                        "builder {n:?} stands for rbuild itself (it has no builder instances)"
                    ));
                }
            }
            print!("{}", inspect_text(name.map_or(BUILDER, String::as_str)));
            done(0)
        }
        "ls" => {
            println!("NAME/NODE     DRIVER/ENDPOINT   STATUS    BUILDKIT   PLATFORMS");
            println!("{BUILDER}*       rbuild");
            println!(
                " \\_ {BUILDER}0    \\_ local         running   {BUILDKIT_COMPAT}    {}",
                builder_core::run_platforms().join(", ")
            );
            done(0)
        }
        "create" => {
            // `--name NAME` (or `--name=NAME`): echoed back, as buildx prints the new name.
            let mut name = None;
            let mut it = words.iter();
            while let Some(w) = it.next() {
                if w == "--name" {
                    name = it.next().cloned();
                } else if let Some(n) = w.strip_prefix("--name=") {
                    name = Some(n.to_owned());
                }
            }
            let name = name.unwrap_or_else(|| BUILDER.to_owned());
            note(&format!(
                "buildx create: nothing to create, rbuild builds in-process; {name:?} stands for it"
            ));
            println!("{name}");
            done(0)
        }
        "use" | "rm" | "stop" => {
            note(&format!(
                "buildx {cmd}: nothing to do, rbuild has no builder instances"
            ));
            done(0)
        }
        "history" => {
            eprintln!(
                "ERROR: buildx history is not available with rbuild: it keeps no build records \
                 (use --metadata-file for a build's results)"
            );
            done(1)
        }
        other => {
            eprintln!(
                "ERROR: buildx {other} is not available with rbuild (build, du, prune, version, \
                 inspect, ls, create, use, rm, stop are)"
            );
            done(1)
        }
    }
}

fn usage() -> String {
    "Usage:  docker buildx [OPTIONS] COMMAND\n\n\
     Extended build capabilities with BuildKit (provided by rbuild)\n\n\
     Commands:\n  \
     build       Start a build\n  \
     create      Does nothing: rbuild has no builder instances\n  \
     du          Disk usage\n  \
     inspect     Inspect the builder\n  \
     ls          List builders\n  \
     prune       Remove build cache\n  \
     rm          Does nothing: rbuild has no builder instances\n  \
     stop        Does nothing: rbuild has no builder instances\n  \
     use         Does nothing: rbuild has no builder instances\n  \
     version     Show buildx version information\n"
        .to_owned()
}

/// `buildx inspect` as buildx prints it (the lines the actions parse: Name, Driver, the
/// node's Name, Endpoint, Status, BuildKit version, Platforms).
fn inspect_text(name: &str) -> String {
    let platforms = builder_core::run_platforms().join(", ");
    format!(
        "Name:          {name}\n\
         Driver:        rbuild\n\
         \n\
         Nodes:\n\
         Name:             {name}0\n\
         Endpoint:         local\n\
         Status:           running\n\
         BuildKit version: {BUILDKIT_COMPAT}\n\
         Platforms:        {platforms}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn plugin_name_decides() {
        assert!(is_plugin(&args(&[
            "/home/u/.docker/cli-plugins/docker-buildx"
        ])));
        assert!(!is_plugin(&args(&["/usr/bin/rbuild"])));
    }

    #[test]
    fn build_lines_become_rbuild_lines() {
        let Plugin::Run(a) = dispatch(&args(&[
            "docker-buildx",
            "buildx",
            "--builder",
            "builder-1",
            "build",
            "--iidfile",
            "/tmp/iid",
            ".",
        ])) else {
            panic!("not run");
        };
        assert_eq!(
            a,
            args(&[
                "rbuild",
                "build",
                "--builder",
                "builder-1",
                "--iidfile",
                "/tmp/iid",
                "."
            ])
        );
    }
}
