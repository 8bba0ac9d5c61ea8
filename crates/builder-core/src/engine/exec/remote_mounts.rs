//! Cache mounts in the remote cache: a `RUN --mount=type=cache` directory this runner
//! never had is restored from an imported cache before the step runs (only when the step
//! runs: a cached step needs no mount); after the build, the directories the steps used
//! are packed ([`crate::remote_cache::pack_dir`]) and exported with the cache, uploading
//! only the packs the destination does not have. Mounts the build did not use keep the
//! imported packs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use layer_cache::{BlobRef as CacheBlobRef, EntryRef};
use registry_client::{BlobSource, NoProgress, PushedBlob, Repository};

use super::{Ctx, Error, descriptor};
use crate::cachekey::CacheKey;
use crate::engine::mounts::CACHE_MOUNTS;
use crate::progress::{ProgressEvent, StepId, Stream};
use crate::remote_cache::{PACK_MEDIA_TYPE, blob_path, pack_dir, put_blob, unpack_into};

/// Where an export puts packs.
pub(super) enum PackDest<'a> {
    Registry { repo: &'a Repository },
    Dir(&'a Path),
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::from(layer_cache::Error::Io {
        path: path.to_owned(),
        source: e,
    })
}

fn sha256_file(path: &Path) -> Result<String, Error> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

impl Ctx {
    fn log(&self, id: StepId, line: String) {
        self.emit(ProgressEvent::StepLog {
            id,
            stream: Stream::Stdout,
            data: format!("{line}\n").into_bytes(),
        });
    }

    /// Notes the cache mounts `dirs` of a RUN step, run or cached: a cache export packs
    /// each one this runner has (else carries an imported cache's copy).
    pub(super) fn note_cache_mounts(&self, dirs: &[String]) {
        self.used_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(dirs.iter().cloned());
    }

    /// Before a RUN step runs: each of its cache mounts `dirs` that this runner does not
    /// have and an imported cache has is restored. A restore that fails is a warning (the
    /// step runs with an empty mount).
    pub(super) async fn restore_cache_mounts(
        self: &Arc<Self>,
        dirs: &[String],
        step: StepId,
    ) -> Result<(), Error> {
        for dir in dirs {
            self.used_mounts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(dir.clone());
            let Some((name, packs, repo, src_dir)) = self.remote.find_mount(dir) else {
                continue;
            };
            self.lease.hold(EntryRef::Other(CACHE_MOUNTS.into()))?;
            let root = self.cache.other_dir(CACHE_MOUNTS)?.join(dir);
            let instance = root.join("0");
            if instance.exists() {
                continue;
            }
            let _guard = self
                .key_lock(&CacheKey::derive(None, "restore-mount", dir))
                .await;
            if instance.exists() {
                continue;
            }
            let size: u64 = packs.iter().map(|p| p.size).sum();
            match self
                .restore_one(&root, &instance, &packs, repo.as_ref(), src_dir.as_deref())
                .await
            {
                Ok(()) => self.log(
                    step,
                    format!(
                        "cache mount restored from {name}: {} packs, {}",
                        packs.len(),
                        super::remote::human(size)
                    ),
                ),
                Err(e) => self.emit(ProgressEvent::Warning {
                    message: format!(
                        "cache mount not restored from {name} (the step starts with it \
                         empty): {e}"
                    ),
                    location: None,
                }),
            }
        }
        Ok(())
    }

    async fn restore_one(
        self: &Arc<Self>,
        root: &Path,
        instance: &Path,
        packs: &[CacheBlobRef],
        repo: Option<&Repository>,
        src_dir: Option<&Path>,
    ) -> Result<(), Error> {
        std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
        let tmp = self.tempdir("mount-restore-")?;
        let mut files = Vec::new();
        for (n, p) in packs.iter().enumerate() {
            let want = p.digest.to_string();
            let path = match (repo, src_dir) {
                (Some(repo), _) => {
                    let path = tmp.path().join(format!("pack-{n}"));
                    // Verified against its digest by the client.
                    self.client
                        .pull_blob_to_file(repo, &descriptor(p)?, &path, &NoProgress)
                        .await?;
                    path
                }
                (None, Some(d)) => {
                    let path = blob_path(d, &want);
                    let got = sha256_file(&path)?;
                    if got != want {
                        return Err(super::remote::rejected(p, &format!("holds {got}")));
                    }
                    path
                }
                (None, None) => return Err(Error::invalid_step("a cache without a source")),
            };
            files.push(path);
        }
        let (dest, instance2, root2) = (tmp.path().join("d"), instance.to_owned(), root.to_owned());
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            unpack_into(&files, &dest)?;
            match std::fs::rename(&dest, &instance2) {
                Ok(()) => Ok(()),
                // Another build made it meanwhile: its copy wins.
                Err(_) if instance2.is_dir() => Ok(()),
                Err(e) => Err(io(&root2, e)),
            }
        })
        .await
        .map_err(|e| super::join_error(&e))?
    }

    /// The cache mounts to export: each one the build used, packed from this runner's
    /// copy, and put into `dest`; each imported one the build did not use, as imported
    /// (when `dest` can get its packs). Returns the packs by mount, and the bytes sent
    /// and the bytes the destination had.
    pub(super) async fn export_cache_mounts(
        self: &Arc<Self>,
        dest: PackDest<'_>,
    ) -> Result<(BTreeMap<String, Vec<CacheBlobRef>>, u64, u64), Error> {
        let used: Vec<String> = self
            .used_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut out = BTreeMap::new();
        let (mut sent, mut had) = (0u64, 0u64);
        let tmp = self.tempdir("mount-export-")?;
        for dir in &used {
            self.lease.hold(EntryRef::Other(CACHE_MOUNTS.into()))?;
            let instance = self.cache.other_dir(CACHE_MOUNTS)?.join(dir).join("0");
            if !instance.is_dir() {
                continue;
            }
            let work = tmp.path().join(dir);
            std::fs::create_dir_all(&work).map_err(|e| io(&work, e))?;
            let (inst, work2) = (instance.clone(), work.clone());
            let packs = tokio::task::spawn_blocking(move || pack_dir(&inst, &work2))
                .await
                .map_err(|e| super::join_error(&e))??;
            let mut refs = Vec::new();
            for p in packs {
                let r = CacheBlobRef::new(p.digest.clone(), PACK_MEDIA_TYPE.to_owned(), p.size);
                let new = self.put_pack(&dest, &r, &p.path, None).await?;
                if new {
                    sent += p.size;
                } else {
                    had += p.size;
                }
                refs.push(r);
            }
            out.insert(dir.clone(), refs);
        }
        // Imported mounts this build did not touch travel on as they are.
        for (dir, packs, repo, src_dir) in self.remote.all_mounts() {
            if out.contains_key(&dir) {
                continue;
            }
            let mut ok = true;
            for p in &packs {
                let src = match (&repo, &src_dir) {
                    (Some(r), _) => Source::Repo(r),
                    (None, Some(d)) => Source::File(blob_path(d, &p.digest.to_string())),
                    _ => {
                        ok = false;
                        break;
                    }
                };
                match self.carry_pack(&dest, p, src).await {
                    Ok(true) => had += p.size,
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                out.insert(dir, packs);
            }
        }
        Ok((out, sent, had))
    }

    /// Puts pack `r` (the file `path`) into `dest`; true when it was not there.
    async fn put_pack(
        &self,
        dest: &PackDest<'_>,
        r: &CacheBlobRef,
        path: &Path,
        mount_from: Option<&Repository>,
    ) -> Result<bool, Error> {
        match dest {
            PackDest::Registry { repo } => {
                let digest: registry_client::Digest = r.digest.to_string().parse()?;
                let pushed = self
                    .client
                    .push_blob(
                        repo,
                        &digest,
                        r.size,
                        &BlobSource::File(path.to_owned()),
                        mount_from,
                        &NoProgress,
                    )
                    .await?;
                Ok(pushed == PushedBlob::Uploaded)
            }
            PackDest::Dir(d) => put_blob(d, &r.digest, path),
        }
    }

    /// Puts an imported pack into `dest` without its bytes passing here when they can
    /// stay in the registry. Ok(true) when `dest` has it afterwards.
    async fn carry_pack(
        &self,
        dest: &PackDest<'_>,
        p: &CacheBlobRef,
        src: Source<'_>,
    ) -> Result<bool, Error> {
        match (dest, src) {
            (PackDest::Registry { repo }, Source::Repo(from)) => {
                let digest: registry_client::Digest = p.digest.to_string().parse()?;
                Ok(self.client.mount_blob(repo, &digest, from).await?.is_some())
            }
            (PackDest::Dir(d), Source::File(f)) => {
                put_blob(d, &p.digest, &f)?;
                Ok(true)
            }
            (_, Source::File(f)) => self.put_pack(dest, p, &f, None).await.map(|_| true),
            (PackDest::Dir(_), Source::Repo(_)) => Ok(false),
        }
    }
}

enum Source<'a> {
    Repo(&'a Repository),
    File(PathBuf),
}
