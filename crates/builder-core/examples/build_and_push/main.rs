//! The smallest build-and-push program: `build_and_push CONTEXT TAG [CACHE_DIR]` builds
//! CONTEXT/Dockerfile for the host platform, pushes it as TAG and prints the pushed
//! manifest's digest on stdout (progress goes to stderr).
//!
//! ```text
//! cargo run -p builder-core --example build_and_push -- ./app 127.0.0.1:5000/team/app:1
//! ```

mod push;

fn main() {
    // RUN steps re-execute this binary as their sandbox init: first thing in main.
    builder_core::maybe_run_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(context), Some(tag)) = (args.first(), args.get(1)) else {
        eprintln!("usage: build_and_push CONTEXT TAG [CACHE_DIR]");
        std::process::exit(2);
    };
    let cache_dir = args.get(2).map(std::path::PathBuf::from);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(push::build_and_push(context, tag, cache_dir)) {
        Ok(report) => println!("{}", report.digest.unwrap_or_default()),
        Err(e) => {
            eprintln!("error: {e}");
            if let builder_core::Error::Step { output_tail, .. } = &e {
                for line in output_tail {
                    eprintln!("  > {line}");
                }
            }
            std::process::exit(if e.is_usage() { 2 } else { 1 });
        }
    }
}
