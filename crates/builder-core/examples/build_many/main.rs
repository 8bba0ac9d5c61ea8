//! Many images at once over one cache: `build_many CACHE_DIR REPOSITORY CONTEXT...` builds
//! every CONTEXT concurrently in this process, as one [`BuildGroup`] over the cache in
//! CACHE_DIR, and pushes each as `REPOSITORY/NAME:latest` (NAME: the context directory's
//! name). A step that several contexts share (same base, same instructions before it)
//! runs once; the others find it in the cache. Prints one line per image:
//! `NAME DIGEST RUN CACHED`.
//!
//! ```text
//! cargo run -p builder-core --example build_many -- /var/tmp/cache 127.0.0.1:5000/team svc/*
//! ```

mod many;

fn main() {
    // RUN steps re-execute this binary as their sandbox init: first thing in main.
    builder_core::maybe_run_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: build_many CACHE_DIR REPOSITORY CONTEXT...");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let results = runtime.block_on(many::build_many(
        args[0].as_ref(),
        &args[1],
        &args[2..],
        |name, line| eprintln!("[{name}] {line}"),
    ));
    let mut failed = false;
    for built in results {
        match built.result {
            Ok(r) => println!(
                "{} {} {} {}",
                built.name,
                r.digest.unwrap_or_default(),
                r.steps_run,
                r.steps_cached
            ),
            Err(e) => {
                failed = true;
                eprintln!("{}: error: {e}", built.name);
            }
        }
    }
    std::process::exit(i32::from(failed));
}
