use std::fs;
use std::path::Path;

use test_support::LocalRegistry;

use super::{file_sum, layers, nonce, oci_out, rbuild_ok, scratch, sha256_hex};

/// Flips one byte of a file, keeping its size and mtime (only its ctime moves).
fn flip_byte(path: &Path) {
    let before = fs::metadata(path).expect("stat");
    let mut bytes = fs::read(path).expect("read");
    let i = bytes.len() / 2;
    bytes[i] ^= 0x55;
    fs::write(path, &bytes).expect("write");
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(before.modified()?))
        .expect("set mtime");
    let after = fs::metadata(path).expect("stat");
    assert_eq!(after.len(), before.len());
    assert_eq!(after.modified().ok(), before.modified().ok());
}

/// A step's layer blob and a base image's layer blob, each changed in the cache after the
/// build stored them (same size, mtime put back), are never exported: the next build from
/// the same cache writes an image whose every blob hashes to its name and whose files are
/// the steps' bytes, the changed blobs gone from the cache or made again intact.
///
/// Without the content store's check (`ContentStore::contains` as a plain `is_file`), the
/// second layout carries the changed bytes and the blob-hash check fails.
#[test]
fn tampered_blobs_in_the_cache_are_not_exported() {
    let reg = LocalRegistry::ensure();
    let dir = scratch("tamper");
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).expect("ctx");
    let n = nonce();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(ctx.join("data.bin"), &data).expect("data");
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nCOPY data.bin /data.bin\nRUN echo {n} > /nonce && cat /data.bin /data.bin > /double\n",
            reg.busybox()
        ),
    )
    .expect("Dockerfile");
    let cache = dir.path().join("cache");
    let first = dir.path().join("first");
    rbuild_ok(&cache, &["-o", &oci_out(&first)], &ctx);
    let want = sha256_hex(&[data.clone(), data].concat());
    assert_eq!(file_sum(&first, "double"), want);
    let ls = layers(&first);
    let cached = |d: &str| {
        cache
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    // the base image's first layer and the RUN step's layer
    let victims = [ls[0].clone(), ls[ls.len() - 1].clone()];
    for v in &victims {
        assert!(cached(v).is_file(), "{v} is not in the cache");
        flip_byte(&cached(v));
    }
    let second = dir.path().join("second");
    rbuild_ok(&cache, &["-o", &oci_out(&second)], &ctx);
    // `layers` checks every blob of the layout against its name
    let again = layers(&second);
    assert_eq!(file_sum(&second, "double"), want);
    assert_eq!(again.len(), ls.len());
    assert_eq!(again[0], ls[0], "the base layer is the registry's");
    for v in &victims {
        let p = cached(v);
        if p.exists() {
            let sum = sha256_hex(&fs::read(&p).expect("read"));
            assert_eq!(
                format!("sha256:{sum}"),
                *v,
                "{} kept its changed bytes",
                p.display()
            );
        }
    }
}
