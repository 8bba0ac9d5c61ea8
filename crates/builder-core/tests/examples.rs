//! The embedding examples run for real: `examples/build_and_push` pushes to the local
//! registry (scripts/testenv/up.sh), `examples/build_many` builds three images at once over
//! one cache, their shared RUN step running once. The pushed manifests are read back with
//! skopeo. This binary is its own sandbox init (RUN steps re-execute it).

use std::path::Path;
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

#[path = "../examples/build_and_push/push.rs"]
mod push;

#[path = "../examples/build_many/many.rs"]
mod many;

const BASE: &str = "127.0.0.1:5000/library/busybox:latest";

/// The digest of the manifest (or index) the registry serves for `reference`.
fn registry_digest(reference: &str) -> Result<String, Failed> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .map_err(|e| format!("skopeo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "skopeo inspect {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    use sha2::Digest as _;
    Ok(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(&out.stdout))
    ))
}

/// A unique tag, so that runs never see each other's images.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), Failed> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(name), text).map_err(|e| e.to_string().into())
}

fn runtime() -> Result<tokio::runtime::Runtime, Failed> {
    tokio::runtime::Runtime::new().map_err(|e| e.to_string().into())
}

fn build_and_push_pushes_what_it_reports() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ctx = dir.path().join("app");
    write(&ctx, "greeting", "hello from the example\n")?;
    write(
        &ctx,
        "Dockerfile",
        &format!("FROM {BASE}\nCOPY greeting /greeting\nRUN cat /greeting > /copied\n"),
    )?;
    let tag = format!("127.0.0.1:5000/api/example-push:{}", unique());
    let report = runtime()?
        .block_on(push::build_and_push(
            ctx.to_str().ok_or("path")?,
            &tag,
            Some(dir.path().join("cache")),
        ))
        .map_err(|e| e.to_string())?;
    let digest = report.digest.ok_or("a push reported no digest")?;
    let served = registry_digest(&tag)?;
    if served != digest {
        return Err(format!("registry serves {served}, the build reported {digest}").into());
    }
    if report.steps_run < 2 {
        return Err(format!("COPY and RUN should have run: {}", report.steps_run).into());
    }
    Ok(())
}

fn build_many_shares_one_cache() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let repo = format!("127.0.0.1:5000/api/example-many-{}", unique());
    let mut contexts = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let ctx = dir.path().join(name);
        // The first RUN is the same in all three: it runs once, the others find it cached.
        write(
            &ctx,
            "Dockerfile",
            &format!(
                "FROM {BASE}\nRUN echo shared > /shared && sleep 1\nRUN echo {name} > /name\n"
            ),
        )?;
        contexts.push(ctx.display().to_string());
    }
    let results = runtime()?.block_on(many::build_many(
        &dir.path().join("cache"),
        &repo,
        &contexts,
        |_, _| {},
    ));
    if results.len() != 3 {
        return Err(format!("{} results for 3 contexts", results.len()).into());
    }
    let mut run = 0;
    let mut cached = 0;
    for (r, name) in results.into_iter().zip(["alpha", "beta", "gamma"]) {
        if r.name != name {
            return Err(format!("result {} where {name} was expected", r.name).into());
        }
        let report = r.result.map_err(|e| format!("{name}: {e}"))?;
        let digest = report.digest.ok_or("a push reported no digest")?;
        let served = registry_digest(&format!("{repo}/{name}:latest"))?;
        if served != digest {
            return Err(format!("{name}: registry serves {served}, reported {digest}").into());
        }
        run += report.steps_run;
        cached += report.steps_cached;
    }
    // Each build has two RUN steps; of the three shared ones, one ran and two were cached.
    if run != 4 || cached != 2 {
        return Err(format!(
            "expected the shared step to run once: {run} steps run, {cached} cached"
        )
        .into());
    }
    Ok(())
}

fn main() {
    builder_core::maybe_run_init();
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "build_and_push_pushes_what_it_reports",
            build_and_push_pushes_what_it_reports,
        ),
        Trial::test("build_many_shares_one_cache", build_many_shares_one_cache),
    ];
    libtest_mimic::run(&args, trials).exit();
}
