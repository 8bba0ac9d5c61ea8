//! `rbuild debug`: tools to look into builds. `rbuild debug timeline FILE` reads the
//! `--progress=rawjson` output of a build and prints where its wall time went, what ran at
//! once and its critical path (the work is `builder_core::Timeline`).

use std::io::Read;
use std::path::PathBuf;

use crate::exit::Failure;

/// Tools to look into builds
#[derive(Debug, clap::Args)]
pub(crate) struct DebugOpts {
    #[command(subcommand)]
    command: DebugCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DebugCommand {
    /// Print where a build's wall time went, from its --progress=rawjson output ("-": stdin)
    Timeline {
        /// The file holding the rawjson events (the stderr of `rbuild build --progress=rawjson`)
        file: PathBuf,
    },
}

pub(crate) fn run(opts: &DebugOpts) -> Result<(), Failure> {
    match &opts.command {
        DebugCommand::Timeline { file } => {
            let mut text = String::new();
            let read = if file.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text).map(|_| ())
            } else {
                std::fs::read_to_string(file).map(|t| text = t)
            };
            read.map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
            let timeline = builder_core::Timeline::from_json_lines(&text)
                .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
            print!("{}", timeline.report());
            Ok(())
        }
    }
}
