//! The stores: content (ingest, resume, verification), cache index, stat cache, leases,
//! du and prune.

use std::fs;
use std::io::Write;
use std::time::{Duration, SystemTime};

use layer_cache::{
    BlobRef, Cache, Compression, Digest, EntryRef, Error, Ingest, LayerRecord, UsageKind,
};

use layer_cache::oci_spec;

use crate::ensure;
use crate::util::{Rng, TestResult, scratch};

fn writer(i: Ingest) -> Result<layer_cache::BlobWriter, Box<dyn std::error::Error>> {
    match i {
        Ingest::Writer(w) => Ok(w),
        Ingest::Present(b) => Err(format!("unexpectedly present: {b:?}").into()),
    }
}

pub fn ingest_resumes_and_verifies() -> TestResult {
    let s = scratch();
    let cache = Cache::open(s.path())?;
    let store = cache.content();
    let data = Rng::new(11).bytes(3 << 20);
    let d = Digest::sha256_of(&data);
    // A first fetch dies halfway (the writer is dropped without commit).
    let mut w = writer(store.ingest(&d, Some(data.len() as u64))?)?;
    ensure!(w.offset() == 0, "fresh ingest at {}", w.offset());
    w.write_all(&data[..1_000_000])?;
    drop(w);
    ensure!(
        !store.contains(&d) && store.list()?.is_empty(),
        "a partial blob is visible"
    );
    // The next one resumes.
    let mut w = writer(store.ingest(&d, Some(data.len() as u64))?)?;
    ensure!(w.offset() == 1_000_000, "resume offset {}", w.offset());
    w.write_all(&data[1_000_000..])?;
    let info = w.commit(&d)?;
    ensure!(
        info.size == data.len() as u64 && store.contains(&d),
        "{info:?}"
    );
    store.verify(&d)?;
    ensure!(
        matches!(store.ingest(&d, None)?, Ingest::Present(_)),
        "not present after commit"
    );
    ensure!(fs::read(store.path(&d))? == data, "stored bytes");

    // Wrong bytes: rejected, nothing stored, the partial discarded.
    let other = Digest::sha256_of(b"what the registry promised");
    let mut w = writer(store.ingest(&other, None)?)?;
    w.write_all(b"something else")?;
    let err = w.commit(&other).unwrap_err();
    ensure!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    ensure!(!store.contains(&other), "a mismatching blob was stored");
    ensure!(
        writer(store.ingest(&other, None)?)?.offset() == 0,
        "the bad partial was kept"
    );
    // Too many bytes for the announced size.
    let small = Digest::sha256_of(b"abc");
    let mut w = writer(store.ingest(&small, Some(3))?)?;
    ensure!(
        w.write_all(b"abcd").is_err(),
        "wrote past the expected size"
    );
    drop(w); // releases the ingest lock (a second ingest of the same blob would wait)
    // restart() forgets a partial.
    let mut w = writer(store.ingest(&small, Some(3))?)?;
    w.restart()?;
    w.write_all(b"abc")?;
    w.commit(&small)?;
    // Unknown-digest writer.
    let info = store.put_bytes(b"{\"config\":true}")?;
    ensure!(
        info.digest == Digest::sha256_of(b"{\"config\":true}"),
        "{info:?}"
    );
    let tmp_left = fs::read_dir(s.path().join("ingest"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("tmp-"))
        .count();
    ensure!(tmp_left == 0, "{tmp_left} staged files left behind");
    Ok(())
}

pub fn cache_index_records() -> TestResult {
    let s = scratch();
    let cache = Cache::open(s.path())?;
    let idx = cache.index();
    let key = Digest::sha256_of(b"step key");
    let diff = Digest::sha256_of(b"diff");
    ensure!(idx.get(&key)?.is_none(), "empty index has a record");
    let mut r = LayerRecord::new(diff.clone(), 1234);
    r.blobs.insert(
        Compression::Gzip,
        BlobRef::new(
            Digest::sha256_of(b"gz"),
            Compression::Gzip.oci_media_type(),
            99,
        ),
    );
    idx.put(&key, &r)?;
    ensure!(idx.get(&key)?.as_ref() == Some(&r), "round trip");
    idx.update(&key, |r| {
        let mut r = r?;
        r.blobs.insert(
            Compression::Zstd,
            BlobRef::new(
                Digest::sha256_of(b"zst"),
                Compression::Zstd.oci_media_type(),
                88,
            ),
        );
        Some(r)
    })?;
    let got = idx.get(&key)?.ok_or("record vanished")?;
    ensure!(got.blobs.len() == 2 && got.diff_id == Some(diff), "{got:?}");
    let json = fs::read_to_string(s.path().join(format!("index/sha256-{}.json", key.hex())))?;
    ensure!(
        json.contains("\"gzip\"") && json.contains("\"zstd\""),
        "{json}"
    );
    ensure!(idx.list()?.len() == 1, "list");
    idx.remove(&key)?;
    ensure!(idx.get(&key)?.is_none(), "removed record still there");
    // A corrupt record is an error naming the file, not a silent miss.
    fs::write(
        s.path().join(format!("index/sha256-{}.json", key.hex())),
        b"{",
    )?;
    let err = idx.get(&key).unwrap_err();
    ensure!(err.to_string().contains("index/sha256-"), "{err}");
    Ok(())
}

pub fn stat_cache_skips_unchanged_files() -> TestResult {
    let s = scratch();
    let cache = Cache::open(s.path().join("cache"))?;
    let ctx = s.path().join("ctx");
    fs::create_dir(&ctx)?;
    fs::write(ctx.join("package.json"), b"{\"name\":\"a\"}")?;
    // Entries younger than two seconds are "racily clean" and not persisted: wait.
    std::thread::sleep(Duration::from_millis(2600));
    let name = ctx.display().to_string();
    let mut sc = cache.stat_cache(&name)?;
    let d1 = sc.digest_file(&ctx, "package.json")?;
    ensure!(d1 == Digest::sha256_of(b"{\"name\":\"a\"}"), "digest");
    sc.save()?;
    // Reloaded: a hit without reading. Prove it by checking lookup directly.
    let sc2 = cache.stat_cache(&name)?;
    let md = fs::metadata(ctx.join("package.json"))?;
    ensure!(
        sc2.lookup("package.json", &md) == Some(&d1),
        "not persisted"
    );
    // A change of contents changes size/mtime/ctime: a miss, then the new digest.
    fs::write(ctx.join("package.json"), b"{\"name\":\"b\"}")?;
    let md = fs::metadata(ctx.join("package.json"))?;
    ensure!(
        sc2.lookup("package.json", &md).is_none(),
        "stale hit after a change"
    );
    let mut sc2 = sc2;
    let d2 = sc2.digest_file(&ctx, "package.json")?;
    ensure!(d2 == Digest::sha256_of(b"{\"name\":\"b\"}"), "new digest");
    // Just modified: racily clean, so not persisted.
    sc2.save()?;
    let sc3 = cache.stat_cache(&name)?;
    ensure!(
        sc3.lookup("package.json", &md).is_none(),
        "a racy entry was persisted"
    );
    ensure!(sc2.digest_file(&ctx, "missing").is_err(), "missing file");
    Ok(())
}

fn age(path: &std::path::Path, secs_ago: u64) -> std::io::Result<()> {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    fs::File::open(path)?.set_modified(t)
}

pub fn prune_lru_and_leases() -> TestResult {
    let s = scratch();
    let cache = Cache::open(s.path())?;
    let mut rng = Rng::new(5);
    let mut blobs = Vec::new();
    for i in 0..4u64 {
        let b = cache.content().put_bytes(&rng.bytes(1000))?;
        age(&cache.content().path(&b.digest), 1000 - i * 100)?; // blob 0 is the oldest
        blobs.push(b.digest);
    }
    let du = cache.du()?;
    let b = du.kinds[&UsageKind::Blobs];
    ensure!(b.entries == 4 && b.bytes == 4000, "{du:?}");
    ensure!(du.kinds.len() == UsageKind::ALL.len(), "kinds {du:?}");

    // keep 2500 bytes: the two oldest go.
    let lease = cache.lease()?;
    lease.hold(EntryRef::Blob(blobs[0].clone()))?; // ...but the oldest is held
    let report = cache.prune(Some(2500), false)?;
    let removed: Vec<_> = report.removed.iter().map(|r| r.id.clone()).collect();
    ensure!(
        removed == [blobs[1].to_string(), blobs[2].to_string()],
        "removed {removed:?}"
    );
    ensure!(
        cache.content().contains(&blobs[0]),
        "a held blob was pruned"
    );
    ensure!(report.remaining_bytes == 2000, "{report:?}");
    ensure!(
        cache.du()?.kinds[&UsageKind::Blobs].held_entries == 1,
        "held count"
    );

    // Everything else goes; the held one stays until the lease is dropped.
    cache.prune(None, false)?;
    ensure!(
        cache.content().list()?.len() == 1,
        "{:?}",
        cache.content().list()?
    );
    drop(lease);
    cache.prune(None, false)?;
    ensure!(cache.content().list()?.is_empty(), "released blob survived");

    // Stat caches and other/ go only with `all`.
    let mut sc = cache.stat_cache("ctx")?;
    let f = s.path().join("f");
    fs::write(&f, b"x")?;
    fs::File::options()
        .write(true)
        .open(&f)?
        .set_modified(SystemTime::now() - Duration::from_secs(60))?;
    sc.digest_file(s.path(), "f")?;
    sc.save()?;
    fs::write(cache.other_dir("npm-cache")?.join("x"), b"cached")?;
    cache.prune(None, false)?;
    let du = cache.du()?;
    ensure!(
        du.kinds[&UsageKind::StatCaches].entries == 1 && du.kinds[&UsageKind::Other].entries == 1,
        "{du:?}"
    );
    let lease = cache.lease()?;
    lease.hold(EntryRef::Other("npm-cache".into()))?;
    lease.hold(EntryRef::StatCache("ctx".into()))?;
    cache.prune(None, true)?;
    let du = cache.du()?;
    ensure!(
        du.kinds[&UsageKind::StatCaches].entries == 1 && du.kinds[&UsageKind::Other].entries == 1,
        "held by name: {du:?}"
    );
    drop(lease);
    cache.prune(None, true)?;
    ensure!(cache.du()?.total_bytes == 0, "{:?}", cache.du()?);
    Ok(())
}

pub fn index_records_hold_their_blobs() -> TestResult {
    let s = scratch();
    let cache = Cache::open(s.path())?;
    let blob = cache.content().put_bytes(b"layer bytes")?;
    let key = Digest::sha256_of(b"key");
    let mut r = LayerRecord::new(Digest::sha256_of(b"diff"), 11);
    r.blobs.insert(
        Compression::Gzip,
        BlobRef::new(blob.digest.clone(), "x", blob.size),
    );
    cache.index().put(&key, &r)?;
    let lease = cache.lease()?;
    lease.hold(EntryRef::Index(key.clone()))?;
    cache.prune(None, false)?;
    ensure!(
        cache.content().contains(&blob.digest) && cache.index().get(&key)?.is_some(),
        "held record lost its blob"
    );
    drop(lease);
    // Remove just the blob: the record becomes dangling and goes too.
    fs::remove_file(cache.content().path(&blob.digest))?;
    cache.prune(Some(u64::MAX), false)?;
    ensure!(cache.index().get(&key)?.is_none(), "dangling record kept");
    Ok(())
}

pub fn digest_parsing() -> TestResult {
    let good = format!("sha256:{}", "a".repeat(64));
    ensure!(good.parse::<Digest>()?.to_string() == good, "round trip");
    for bad in [
        "sha256:".to_string(),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "a".repeat(63)),
        format!("md5:{}", "a".repeat(32)),
        format!("sha256:../{}", "a".repeat(61)),
        "a".repeat(64),
    ] {
        ensure!(bad.parse::<Digest>().is_err(), "accepted {bad:?}");
    }
    // The OCI chain ID of a stack.
    let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
    let chain = layer_cache::ChainId::of(&[a.clone(), b.clone()]).ok_or("empty")?;
    let expected = Digest::sha256_of(format!("{a} {b}").as_bytes());
    ensure!(*chain.digest() == expected, "chain id");
    let oci: oci_spec::image::Digest = (&a).into();
    ensure!(oci.to_string() == a.to_string(), "oci-spec conversion");
    Ok(())
}
