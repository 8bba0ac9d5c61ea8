//! Every fuzz target over its kept corpus (`fuzz/corpus/TARGET/`) and seeds
//! (`fuzz/seeds/TARGET/`), on a stable toolchain: what the fuzzers found stays fixed.

use std::path::Path;

#[test]
fn every_target_over_its_corpus() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut total = 0;
    for (name, target) in rbuild_fuzz::TARGETS {
        let mut n = 0;
        for dir in [
            here.join("corpus").join(name),
            here.join("seeds").join(name),
        ] {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd {
                let p = e.unwrap().path();
                let data = std::fs::read(&p).unwrap();
                let r = std::panic::catch_unwind(|| target(&data));
                assert!(r.is_ok(), "{name}: {} fails", p.display());
                n += 1;
            }
        }
        assert!(
            n > 0,
            "{name}: no corpus in fuzz/corpus/{name} or fuzz/seeds/{name}"
        );
        total += n;
    }
    eprintln!("{total} corpus inputs passed");
}
