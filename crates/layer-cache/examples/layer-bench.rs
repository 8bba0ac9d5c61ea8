//! Times the layer writer and applier (used by `scripts/bench/layer-pack-apply.sh`).
//!
//! ```text
//! layer-bench pack DIR OUT [--level N] [--threads N] [--zstd | --none] [--upper]
//! layer-bench apply LAYER DEST [--overlay]
//! ```
//! Prints one line of `key=value` pairs, including the wall time in seconds.

use std::path::PathBuf;
use std::time::Instant;

use layer_cache::{
    ApplyMode, ApplyOptions, Compression, DevicePolicy, PackOptions, SourceKind, apply_layer,
    pack_dir,
};

fn main() {
    if let Err(e) = run() {
        eprintln!("layer-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let pos: Vec<&String> = {
        let mut v = Vec::new();
        let mut skip = false;
        for a in &args {
            if skip {
                skip = false;
            } else if a == "--level" || a == "--threads" {
                skip = true;
            } else if !a.starts_with("--") {
                v.push(a);
            }
        }
        v
    };
    match pos.as_slice() {
        [cmd, dir, out] if cmd.as_str() == "pack" => {
            let mut o = PackOptions::default();
            if flag("--zstd") {
                o.compression = Compression::Zstd;
            }
            if flag("--none") {
                o.compression = Compression::None;
            }
            o.level = value("--level").map(|l| l.parse()).transpose()?;
            o.threads = value("--threads").map(|t| t.parse()).transpose()?.unwrap_or(0);
            o.source_date_epoch = PackOptions::source_date_epoch_from_env()?;
            if flag("--upper") {
                o.source = SourceKind::OverlayUpper;
            }
            let file = std::fs::File::create(out)?;
            let start = Instant::now();
            let (file, p) = pack_dir(&PathBuf::from(dir), &o, file)?;
            file.sync_all()?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "op=pack secs={secs:.3} entries={} tar_bytes={} blob_bytes={} diff_id={} digest={}",
                p.entries, p.uncompressed_size, p.size, p.diff_id, p.digest
            );
        }
        [cmd, layer, dest] if cmd.as_str() == "apply" => {
            let mut o = ApplyOptions::default();
            o.devices = DevicePolicy::Create;
            if flag("--overlay") {
                o.mode = ApplyMode::OverlayLayer;
            }
            std::fs::create_dir_all(dest)?;
            let start = Instant::now();
            let s = apply_layer(std::fs::File::open(layer)?, &PathBuf::from(dest), &o)?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "op=apply secs={secs:.3} entries={} files={} data_bytes={} compression={} diff_id={}",
                s.entries, s.files, s.data_bytes, s.compression, s.diff_id
            );
        }
        _ => return Err("usage: layer-bench pack DIR OUT [--level N] [--threads N] [--zstd] [--upper] | apply LAYER DEST [--overlay]".into()),
    }
    Ok(())
}
