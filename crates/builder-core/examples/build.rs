//! A minimal embedding example: `build CONTEXT [OUTPUT] [TAG]` builds CONTEXT/Dockerfile for
//! the host platform and writes an OCI layout tar (default `out.tar`).
use builder_core::{Build, ProgressEvent, ProgressSink};

struct Print;

impl ProgressSink for Print {
    fn event(&mut self, ev: &ProgressEvent) {
        match ev {
            ProgressEvent::StepStarted { name, .. } => eprintln!("{name}"),
            ProgressEvent::StepCached { .. } => eprintln!("  CACHED"),
            ProgressEvent::StepLog { data, .. } => eprint!("  {}", String::from_utf8_lossy(data)),
            ProgressEvent::Warning { message, .. } => eprintln!("WARN: {message}"),
            _ => {}
        }
    }
}

fn main() {
    builder_core::maybe_run_init();
    let args: Vec<String> = std::env::args().collect();
    let context = args.get(1).map_or(".", String::as_str);
    let output = args.get(2).map_or("type=oci,dest=out.tar", String::as_str);
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = rt.block_on(async {
        let mut b = Build::new(context)?.output(output.parse()?);
        if let Some(tag) = args.get(3) {
            b = b.tag(tag)?;
        }
        b.run(&mut Print).await
    });
    match result {
        Ok(r) => println!(
            "{} ({} run, {} cached)",
            r.digest.unwrap_or_else(|| r.config_digests.join(", ")),
            r.steps_run,
            r.steps_cached
        ),
        Err(e) => {
            eprintln!("error: {e}");
            if let builder_core::Error::Step { output_tail, .. } = &e {
                for l in output_tail {
                    eprintln!("  > {l}");
                }
            }
            std::process::exit(1);
        }
    }
}
