//! `rbuild`: build container images from Dockerfiles without a daemon.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bake_cmd;
mod build;
mod cache_cmd;
mod call;
mod check;
mod context;
mod debug;
mod diag;
mod dropin;
mod exit;
mod imagetools;
mod info;
mod inspect;
mod plugin;
mod progress;
mod run;

/// Build container images from Dockerfiles, without a daemon.
#[derive(Debug, Parser)]
#[command(
    name = "rbuild",
    version,
    disable_help_subcommand = true,
    arg_required_else_help = true,
    color = clap::ColorChoice::Never,
    help_template = "Usage:  {usage}\n\n{about}\n\nCommands:\n{subcommands}\n\nOptions:\n{options}\n",
    override_usage = "rbuild [OPTIONS] COMMAND"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a build
    Build(Box<build::BuildOpts>),
    /// Build from a file
    Bake(Box<bake_cmd::BakeOpts>),
    Inspect(inspect::InspectOpts),
    Imagetools(imagetools::ImagetoolsOpts),
    Du(cache_cmd::DuOpts),
    Prune(cache_cmd::PruneOpts),
    Info(info::InfoOpts),
    Debug(debug::DebugOpts),
}

fn main() -> ExitCode {
    // A RUN step re-executes this binary as the sandbox's init: that must come first.
    builder_core::maybe_run_init();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let args = if plugin::is_plugin(&args) {
        match plugin::dispatch(&args) {
            plugin::Plugin::Done(code) => return code,
            plugin::Plugin::Run(args) => args,
        }
    } else {
        args
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(&e),
    };
    // Not root: become root of a user namespace of our own before any thread starts
    // (builds, and the cache commands, which delete files the namespace's uids own).
    if matches!(cli.command, Command::Info(_)) {
        // A failure is part of what `info` reports.
        let _ = builder_core::enter_rootless();
    } else if !matches!(
        cli.command,
        Command::Inspect(_) | Command::Imagetools(_) | Command::Debug(_)
    ) {
        if let Err(e) = builder_core::enter_rootless() {
            return exit::report(Err(exit::Failure::build(format!(
                "{e}\n(set {}=0 to run without a user namespace: RUN steps are refused then)",
                builder_core::ROOTLESS_ENV
            ))));
        }
    }
    let result = match cli.command {
        Command::Build(opts) => build::run(&opts),
        Command::Bake(opts) => bake_cmd::run(&opts),
        Command::Inspect(opts) => inspect::run(&opts),
        Command::Imagetools(opts) => imagetools::run(&opts),
        Command::Du(opts) => cache_cmd::du(&opts),
        Command::Prune(opts) => cache_cmd::prune(&opts),
        Command::Info(opts) => info::run(&opts),
        Command::Debug(opts) => debug::run(&opts),
    };
    exit::report(result)
}
