//! Several processes: a writer SIGKILLed at random points (≥ 50 times) never leaves
//! anything the cache trusts wrongly; concurrent pulls and unpacks of the same blob and
//! chain happen once; leases are honoured across processes. Children are this test binary
//! re-executed with `LAYER_CACHE_TEST_CHILD` set (see `main`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use layer_cache::{
    ApplyOptions, BlobRef, Cache, ChainId, Compression, DevicePolicy, Digest, EntryRef, Ingest,
    LayerRecord, LayerRef, SourceKind, layer_digests,
};

use crate::roundtrip::opts;
use crate::util::{Rng, TestResult, scratch};
use crate::{ensure, with};

const CHILD: &str = "LAYER_CACHE_TEST_CHILD";

fn child(role: &str, env: &[(&str, String)]) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary"));
    c.env(CHILD, role);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null());
    c
}

fn env_path(k: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(k).unwrap_or_else(|| panic!("{k} not set")))
}

fn env_digest(k: &str) -> Digest {
    std::env::var(k).expect("env").parse().expect("digest")
}

/// Entry point of re-executed children.
pub fn child_main(role: &str) -> Result<(), Box<dyn std::error::Error>> {
    match role {
        "crash" => crash_worker(),
        "puller" => puller(),
        "lease" => {
            let cache = Cache::open(env_path("CACHE"))?;
            let lease = cache.lease()?;
            lease.hold(EntryRef::Blob(env_digest("BLOB")))?;
            println!("held");
            std::io::stdout().flush()?;
            if std::env::var("DIE").is_ok() {
                // Exit without dropping the lease, as a crash would.
                std::process::exit(0);
            }
            std::thread::sleep(Duration::from_secs(600));
            Ok(())
        }
        r => Err(format!("unknown child role {r}").into()),
    }
}

fn apply_opts() -> ApplyOptions {
    with!(ApplyOptions::default(), devices = DevicePolicy::Create)
}

/// A small tree for layer `k` (a few layers recur, so chains are shared between runs).
fn small_tree(dir: &Path, k: u64) -> std::io::Result<()> {
    let mut rng = Rng::new(100 + k);
    fs::create_dir_all(dir.join("etc/app"))?;
    for i in 0..(3 + rng.below(20)) {
        let n = rng.below(200_000) as usize;
        fs::write(dir.join(format!("etc/app/f{i}")), rng.text(n))?;
    }
    std::os::unix::fs::symlink("app/f0", dir.join("etc/link"))?;
    Ok(())
}

fn upper_tree(dir: &Path, k: u64) -> std::io::Result<()> {
    fs::create_dir_all(dir.join("etc/app"))?;
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("etc/app/f1"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )?;
    rustix::fs::lsetxattr(
        dir.join("etc"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )?;
    fs::write(
        dir.join(format!("etc/upper-{k}")),
        vec![b'u'; 50_000 * k as usize],
    )?;
    Ok(())
}

fn crash_worker() -> Result<(), Box<dyn std::error::Error>> {
    let cache = Cache::open(env_path("CACHE"))?;
    let work = env_path("WORK");
    let seed: u64 = std::env::var("SEED")?.parse()?;
    let mut rng = Rng::new(seed);
    for i in 0.. {
        match rng.below(4) {
            0 => {
                let n = rng.below(600_000) as usize;
                let data = rng.bytes(n);
                let mut w = cache.content().writer()?;
                for piece in data.chunks(16 << 10) {
                    w.write_all(piece)?;
                }
                w.finish()?;
            }
            1 => {
                let k = rng.below(6);
                let data = Rng::new(1000 + k).bytes(200_000 + 50_000 * k as usize);
                let d = Digest::sha256_of(&data);
                if let Ingest::Writer(mut w) =
                    cache.content().ingest(&d, Some(data.len() as u64))?
                {
                    for piece in data[w.offset() as usize..].chunks(8 << 10) {
                        w.write_all(piece)?;
                    }
                    w.commit(&d)?;
                }
            }
            2 => {
                let (k1, k2) = (rng.below(4), 1 + rng.below(3));
                let dir = work.join(format!("{}-{i}", std::process::id()));
                let (d1, d2) = (dir.join("l1"), dir.join("l2"));
                small_tree(&d1, k1)?;
                upper_tree(&d2, k2)?;
                let comp = if rng.below(2) == 0 {
                    Compression::Gzip
                } else {
                    Compression::Zstd
                };
                let p1 = cache.pack_dir(&d1, &opts(comp, SourceKind::Directory), None)?;
                let p2 = cache.pack_dir(&d2, &opts(comp, SourceKind::OverlayUpper), None)?;
                let layers = [
                    LayerRef::new(p1.digest.clone(), p1.diff_id.clone()),
                    LayerRef::new(p2.digest.clone(), p2.diff_id.clone()),
                ];
                // With a lease the two layers are unpacked in parallel threads.
                let lease = if rng.below(2) == 0 {
                    Some(cache.lease()?)
                } else {
                    None
                };
                let top = cache.unpack_chain(&layers, &apply_opts(), lease.as_ref())?;
                let mut r = LayerRecord::new(p2.diff_id.clone(), p2.uncompressed_size);
                r.blobs.insert(
                    comp,
                    BlobRef::new(p2.digest.clone(), p2.media_type(), p2.size),
                );
                r.chain_id = Some(top.chain_id);
                cache
                    .index()
                    .put(&Digest::sha256_of(format!("key {k1} {k2}").as_bytes()), &r)?;
                fs::remove_dir_all(&dir)?;
            }
            _ => {
                let mut sc = cache.stat_cache("ctx")?;
                sc.digest_file(&work, "stat-input")?;
                sc.save()?;
            }
        }
    }
    Ok(())
}

/// Checks that everything the cache reports is intact.
fn verify_cache(cache: &Cache) -> TestResult {
    for b in cache.content().list()? {
        cache
            .content()
            .verify(&b.digest)
            .map_err(|e| format!("blob {}: {e}", b.digest))?;
    }
    let check = opts(Compression::None, SourceKind::OverlayUpper);
    for s in cache.snapshots().list()? {
        let p = layer_digests(&s.path, &check)?;
        ensure!(
            p.diff_id == s.diff_id,
            "snapshot {} holds {} not {}",
            s.chain_id,
            p.diff_id,
            s.diff_id
        );
        // Layers unpacked in parallel (with a lease) commit in any order: a kill between a
        // child's commit and its parent's leaves the child without its parent, which is
        // refused as a lower (never used) until the parent is unpacked again.
        let lowers = match cache.snapshots().lowerdirs(&s.chain_id) {
            Err(layer_cache::Error::MissingParent { parent, .. })
                if cache.snapshots().get(&parent)?.is_none() =>
            {
                continue;
            }
            r => r?,
        };
        ensure!(
            lowers.len() == 1 + usize::from(s.parent.is_some()),
            "chain of {}",
            s.chain_id
        );
        ensure!(
            s.chain_id == ChainId::child(s.parent.as_ref(), &s.diff_id),
            "chain id"
        );
    }
    for (key, r) in cache.index().list()? {
        ensure!(!r.blobs.is_empty(), "record {key} without blobs");
    }
    Ok(())
}

pub fn crash_at_random_points() -> TestResult {
    let s = scratch();
    let cache_dir = s.path().join("cache");
    let work = s.path().join("work");
    fs::create_dir_all(&work)?;
    fs::write(work.join("stat-input"), b"context file")?;
    let cache = Cache::open(&cache_dir)?;
    let mut rng = Rng::new(42);
    let runs = 60;
    for run in 0..runs {
        let mut c = child(
            "crash",
            &[
                ("CACHE", cache_dir.display().to_string()),
                ("WORK", work.display().to_string()),
                ("SEED", run.to_string()),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
        std::thread::sleep(Duration::from_millis(20 + rng.below(600)));
        let status = c.try_wait()?;
        c.kill()?; // SIGKILL
        c.wait()?;
        if let Some(st) = status {
            let mut err = String::new();
            c.stderr.take().map(|mut e| e.read_to_string(&mut err));
            return Err(format!("run {run}: the worker stopped by itself ({st}): {err}").into());
        }
        verify_cache(&cache).map_err(|e| format!("after kill {run}: {e}"))?;
    }
    // The crashes did leave work behind, and the cache reports it.
    let du = cache.du()?;
    ensure!(
        du.kinds[&layer_cache::UsageKind::Snapshots].entries > 0,
        "no snapshot was ever completed: {du:?}"
    );
    ensure!(
        du.kinds[&layer_cache::UsageKind::Blobs].entries > 0,
        "no blob: {du:?}"
    );
    // A prune removes every leftover of the killed processes.
    cache.prune(None, true)?;
    for d in ["ingest", "snapshots", "index"] {
        let left: Vec<_> = fs::read_dir(cache_dir.join(d))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        ensure!(left.is_empty(), "{d} keeps {left:?}");
    }
    ensure!(cache.du()?.total_bytes == 0, "{:?}", cache.du()?);
    Ok(())
}

fn puller() -> Result<(), Box<dyn std::error::Error>> {
    let cache = Cache::open(env_path("CACHE"))?;
    let mut out = Vec::new();
    let mut parent: Option<ChainId> = None;
    for n in ["1", "2"] {
        let file = env_path(&format!("LAYER{n}"));
        let d = env_digest(&format!("DIGEST{n}"));
        let diff = env_digest(&format!("DIFF{n}"));
        let ingested = match cache.content().ingest(&d, None)? {
            Ingest::Present(_) => false,
            Ingest::Writer(mut w) => {
                let data = fs::read(&file)?;
                for piece in data[w.offset() as usize..].chunks(64 << 10) {
                    w.write_all(piece)?;
                    std::thread::sleep(Duration::from_millis(3));
                }
                w.commit(&d)?;
                true
            }
        };
        let (snap, unpacked) = cache.snapshots().unpack(
            parent.as_ref(),
            &diff,
            || cache.content().open_blob(&d),
            &apply_opts(),
        )?;
        parent = Some(snap.chain_id);
        out.push(format!("{n}:{ingested}:{unpacked}"));
    }
    println!("{}", out.join(" "));
    Ok(())
}

pub fn concurrent_pull_and_unpack() -> TestResult {
    let s = scratch();
    let cache_dir = s.path().join("cache");
    let cache = Cache::open(&cache_dir)?;
    let mut env = vec![("CACHE", cache_dir.display().to_string())];
    let mut layers = Vec::new();
    for (n, k) in [("1", 1u64), ("2", 2)] {
        let src = s.path().join(format!("src{n}"));
        if n == "1" {
            small_tree(&src, k)?;
        } else {
            upper_tree(&src, k)?;
        }
        let kind = if n == "1" {
            SourceKind::Directory
        } else {
            SourceKind::OverlayUpper
        };
        let file = s.path().join(format!("layer{n}"));
        let p = layer_cache::pack_dir(
            &src,
            &opts(Compression::Gzip, kind),
            fs::File::create(&file)?,
        )?
        .1;
        env.push((
            ["LAYER1", "LAYER2"][layers.len()],
            file.display().to_string(),
        ));
        env.push((["DIGEST1", "DIGEST2"][layers.len()], p.digest.to_string()));
        env.push((["DIFF1", "DIFF2"][layers.len()], p.diff_id.to_string()));
        layers.push(p);
    }
    let kids: Vec<Child> = (0..6)
        .map(|_| {
            child("puller", &env)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for k in kids {
        let out = k.wait_with_output()?;
        ensure!(
            out.status.success(),
            "puller failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for word in String::from_utf8(out.stdout)?.split_whitespace() {
            let mut parts = word.split(':');
            let (n, ing, unp) = (parts.next(), parts.next(), parts.next());
            if ing == Some("true") {
                *counts
                    .entry(format!("ingest{}", n.unwrap_or("?")))
                    .or_default() += 1;
            }
            if unp == Some("true") {
                *counts
                    .entry(format!("unpack{}", n.unwrap_or("?")))
                    .or_default() += 1;
            }
        }
    }
    let expected: BTreeMap<String, usize> = ["ingest1", "ingest2", "unpack1", "unpack2"]
        .iter()
        .map(|k| (k.to_string(), 1))
        .collect();
    ensure!(
        counts == expected,
        "each blob and layer must be done exactly once: {counts:?}"
    );
    verify_cache(&cache)?;
    ensure!(
        cache.snapshots().list()?.len() == 2 && cache.content().list()?.len() == 2,
        "store contents"
    );
    Ok(())
}

pub fn leases_across_processes() -> TestResult {
    let s = scratch();
    let cache_dir = s.path().join("cache");
    let cache = Cache::open(&cache_dir)?;
    let blob = cache.content().put_bytes(b"held by another process")?;
    let env = [
        ("CACHE", cache_dir.display().to_string()),
        ("BLOB", blob.digest.to_string()),
    ];
    // A live holder in another process protects the blob.
    let mut live = child("lease", &env).stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(live.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
    ensure!(line.trim() == "held", "child said {line:?}");
    cache.prune(None, true)?;
    let kept = cache.content().contains(&blob.digest);
    live.kill()?;
    live.wait()?;
    ensure!(kept, "pruned a blob held by a running process");
    // A holder that died without releasing does not protect anything.
    let dead = child(
        "lease",
        &[env[0].clone(), env[1].clone(), ("DIE", "1".into())],
    )
    .output()?;
    ensure!(
        dead.status.success() && String::from_utf8_lossy(&dead.stdout).trim() == "held",
        "{dead:?}"
    );
    ensure!(
        fs::read_dir(cache_dir.join("leases"))?.count() > 0,
        "the dead lease left no trace to clean"
    );
    cache.prune(None, true)?;
    ensure!(
        !cache.content().contains(&blob.digest),
        "a dead lease still protects"
    );
    ensure!(
        fs::read_dir(cache_dir.join("leases"))?.count() == 0,
        "dead lease files kept"
    );
    Ok(())
}
