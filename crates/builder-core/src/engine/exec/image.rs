//! The image of a solved stage: its final configuration, its layers compressed (or only
//! hashed, for the image ID) and its manifest.

use super::*;

/// The image config of a stage's final state for one platform, with its layers' diffIDs.
pub(super) fn final_config(
    ctx: &Ctx,
    state: &StageState,
    platform: &Platform,
    diff_ids: &[Digest],
) -> ImageConfig {
    let mut config = state.config.clone();
    // A base image's inline cache (rbuild's or BuildKit's) is not this image's.
    config.set_field(crate::remote_cache::INLINE_CACHE_FIELD, None);
    config.set_field(crate::remote_cache::BUILDKIT_INLINE_FIELD, None);
    let ids: Vec<String> = diff_ids.iter().map(ToString::to_string).collect();
    config.set_diff_ids(&ids);
    for (k, v) in &ctx.labels {
        config.set_label(k, v);
    }
    config.fill_history_times(&rfc3339(ctx.created_now() as i64, 0));
    let created = match ctx.source_date_epoch {
        Some(t) => rfc3339(t, 0),
        None => config
            .latest_history_created()
            .unwrap_or_else(|| rfc3339(ctx.created_now() as i64, 0)),
    };
    config.set_created(&created);
    let doc = config.as_json();
    let field = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let (os, arch, variant) = (field("os"), field("architecture"), field("variant"));
    if arch.is_none() {
        config.set_platform(
            platform.os(),
            platform.architecture(),
            oci_variant(platform),
        );
    } else if ctx.explicit_platform {
        // As BuildKit: with `--platform`, the image is the target's whatever its base
        // says; the base's variant stays only when os and architecture already matched
        // and the target names none, normalised as containerd does (arm64's default `v8`
        // is no variant: BuildKit 0.32 writes a linux/arm64 image over an arm64/v8 base
        // without one).
        let same = os.as_deref() == Some(platform.os())
            && arch.as_deref() == Some(platform.architecture());
        let variant = match oci_variant(platform) {
            Some(v) => Some(v.to_owned()),
            None if same => variant.filter(|v| !(platform.architecture() == "arm64" && v == "v8")),
            None => None,
        };
        config.set_platform(platform.os(), platform.architecture(), variant.as_deref());
    }
    config
}

/// Turns a stage's final state into one platform's image, with every blob local: layers
/// are pulled or compressed as needed, several at once.
pub(super) async fn assemble(
    ctx: &Arc<Ctx>,
    state: &StageState,
    platform: &Platform,
    step: StepId,
) -> Result<PlatformImage, Error> {
    let stack = &state.layers;
    let blobs = futures_util::future::try_join_all((0..stack.len()).map(|i| async move {
        let _permit = ctx.cpu.acquire().await.map_err(|_| Error::Cancelled)?;
        ctx.blob_for_export(stack, i, step).await
    }))
    .await?;
    let diff_ids: Vec<Digest> = blobs.iter().map(|(_, d)| d.clone()).collect();
    let mut config = final_config(ctx, state, platform, &diff_ids);
    if ctx.inline_cache {
        ctx.set_inline_cache(&mut config, stack, &blobs)?;
    }
    let layers = blobs
        .into_iter()
        .zip(stack)
        .map(|((b, _), layer)| {
            let mut annotations = BTreeMap::new();
            // As BuildKit's rewrite-timestamp: every layer but the base image's.
            if let (Some(t), Some(_)) = (ctx.rewritten_timestamp, &layer.key) {
                annotations.insert("buildkit/rewritten-timestamp".to_owned(), t.to_string());
            }
            BlobRef {
                digest: b.digest.to_string(),
                size: b.size,
                media_type: b.media_type.clone(),
                path: ctx.cache.content().path(&b.digest),
                annotations,
            }
        })
        .collect();
    let p = (
        platform.os().to_owned(),
        platform.architecture().to_owned(),
        oci_variant(platform).map(str::to_owned),
    );
    Ok(PlatformImage::new(p, config.to_vec(), layers))
}

/// The image ID (config digest) of a stage's final state without an output: the layers
/// are hashed where they never were, nothing is compressed.
pub(super) async fn image_id(
    ctx: &Arc<Ctx>,
    state: &StageState,
    platform: &Platform,
) -> Result<String, Error> {
    let stack = &state.layers;
    let diff_ids = futures_util::future::try_join_all((0..stack.len()).map(|i| async move {
        let _permit = ctx.cpu.acquire().await.map_err(|_| Error::Cancelled)?;
        ctx.ensure_diff_id(stack, i).await
    }))
    .await?;
    let config = final_config(ctx, state, platform, &diff_ids);
    Ok(crate::oci::sha256_digest(&config.to_vec()))
}
