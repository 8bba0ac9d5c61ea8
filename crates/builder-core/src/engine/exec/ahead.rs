//! Packing ahead: when an output needs the image's compressed layers, each layer of the
//! stages the image is made of is packed as soon as its step is done, in the background,
//! while later steps run, instead of all of them after the last step (at most one pack per
//! core at once, as the export's). The export then finds the blobs made
//! ([`Ctx::pack_layer`] runs once per layer under its key lock) and only waits for those
//! still being packed.
//!
//! `RBUILD_PACK_AHEAD=0` turns it off (to measure what it saves).

use std::collections::BTreeSet;
use std::sync::Arc;

use dockerfile::StageBase;

use super::{BuildPlan, Ctx, Layer};
use crate::progress::StepId;

/// The stages whose layers the target stage's image holds: the target and the stages it
/// is built `FROM`, down to an image or scratch.
pub(super) fn image_stages(plan: &BuildPlan) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut idx = plan.target();
    while out.insert(idx) {
        match plan.stages()[idx].base {
            StageBase::Stage(j) => idx = j,
            _ => break,
        }
    }
    out
}

/// Whether packing ahead is on (`RBUILD_PACK_AHEAD` is not `0`).
pub(super) fn enabled() -> bool {
    std::env::var_os("RBUILD_PACK_AHEAD").is_none_or(|v| v != "0")
}

impl Ctx {
    /// Starts packing the top layer of `stack` (made by step `id` of `stage`) in the
    /// background when an output will need it and it has no blob yet.
    pub(super) fn pack_ahead(self: &Arc<Self>, stack: &[Layer], stage: usize, id: StepId) {
        let Some(top) = stack.last() else { return };
        if top.blob.is_some() || top.key.is_none() || !self.ahead_stages.contains(&stage) {
            return;
        }
        let (ctx, stack) = (self.clone(), stack.to_vec());
        let task = tokio::spawn(async move {
            let Ok(_permit) = ctx.cpu.acquire().await else {
                return;
            };
            // A failure is the export's to report: it packs the layer again.
            let _ = ctx.pack_layer(&stack, stack.len() - 1, id).await;
        });
        self.packing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Stops the packs still running (the build ended without needing them).
    pub(super) fn stop_packing(&self) {
        for t in std::mem::take(&mut *self.packing.lock().unwrap_or_else(|e| e.into_inner())) {
            t.abort();
        }
    }
}
