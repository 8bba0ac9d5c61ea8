//! Integration tests of the layer cache, one binary (libtest-mimic), run as root by
//! `scripts/test` (root-only tests are ignored otherwise).
//!
//! - `hostile`: the generated hostile-layer corpus, every archive rejected, nothing outside.
//! - `roundtrip`: determinism and interoperability (GNU tar, gzip, pigz, zstd, umoci,
//!   overlayfs).
//! - `store`: content store, cache index, stat cache, leases, du and prune.
//! - `tamper`: snapshots and blobs changed on disk after commit are refused and rebuilt.
//! - `procs`: crash safety under SIGKILL, concurrent processes, leases across processes.
#![allow(missing_docs, unreachable_pub)] // a test binary, not a library

mod hostile;
mod procs;
mod roundtrip;
mod store;
mod tamper;
mod util;

use libtest_mimic::{Arguments, Failed, Trial};

type Test = fn() -> util::TestResult;

fn main() {
    if let Ok(role) = std::env::var("LAYER_CACHE_TEST_CHILD") {
        if let Err(e) = procs::child_main(&role) {
            eprintln!("child {role}: {e}");
            std::process::exit(1);
        }
        return;
    }
    // (name, needs root, test)
    let tests: &[(&str, bool, Test)] = &[
        ("hostile::dotdot_escape", false, hostile::dotdot_escape),
        (
            "hostile::absolute_paths_and_nul",
            false,
            hostile::absolute_paths_and_nul,
        ),
        (
            "hostile::absolute_symlink_then_file_through_it",
            false,
            hostile::absolute_symlink_then_file_through_it,
        ),
        (
            "hostile::hardlink_to_outside",
            false,
            hostile::hardlink_to_outside,
        ),
        ("hostile::symlink_chains", false, hostile::symlink_chains),
        ("hostile::gzip_bomb", false, hostile::gzip_bomb),
        ("hostile::pax_size_lies", false, hostile::pax_size_lies),
        (
            "hostile::duplicate_entries",
            false,
            hostile::duplicate_entries,
        ),
        (
            "hostile::whiteout_naming_dotdot",
            true,
            hostile::whiteout_naming_dotdot,
        ),
        (
            "hostile::devices_only_when_permitted",
            false,
            hostile::devices_only_when_permitted,
        ),
        (
            "hostile::overlay_xattrs_in_layers_are_refused",
            false,
            hostile::overlay_xattrs_in_layers_are_refused,
        ),
        (
            "hostile::walk_resolver_rejects_the_same",
            false,
            hostile::walk_resolver_rejects_the_same,
        ),
        (
            "roundtrip::write_apply_write_same_digest",
            true,
            roundtrip::write_apply_write_same_digest,
        ),
        (
            "roundtrip::digest_ignores_mtimes_under_source_date_epoch",
            true,
            roundtrip::digest_ignores_mtimes_under_source_date_epoch,
        ),
        (
            "roundtrip::digest_ignores_thread_count",
            true,
            roundtrip::digest_ignores_thread_count,
        ),
        (
            "roundtrip::standard_tools_read_our_streams",
            true,
            roundtrip::standard_tools_read_our_streams,
        ),
        (
            "roundtrip::gnu_tar_interop",
            true,
            roundtrip::gnu_tar_interop,
        ),
        (
            "roundtrip::umoci_unpacks_our_layer",
            true,
            roundtrip::umoci_unpacks_our_layer,
        ),
        (
            "roundtrip::flatten_applies_whiteouts_and_opaque_dirs",
            true,
            roundtrip::flatten_applies_whiteouts_and_opaque_dirs,
        ),
        (
            "tamper::changed_snapshot_is_refused_then_rebuilt",
            true,
            tamper::changed_snapshot_is_refused_then_rebuilt,
        ),
        (
            "tamper::changed_blob_is_removed_not_used",
            false,
            tamper::changed_blob_is_removed_not_used,
        ),
        (
            "roundtrip::snapshots_mount_as_overlay_lowers",
            true,
            roundtrip::snapshots_mount_as_overlay_lowers,
        ),
        (
            "roundtrip::commit_upperdir_registers_the_snapshot",
            true,
            roundtrip::commit_upperdir_registers_the_snapshot,
        ),
        (
            "roundtrip::unhashed_commit_packs_later_to_the_same_layer",
            true,
            roundtrip::unhashed_commit_packs_later_to_the_same_layer,
        ),
        (
            "store::ingest_resumes_and_verifies",
            false,
            store::ingest_resumes_and_verifies,
        ),
        (
            "store::cache_index_records",
            false,
            store::cache_index_records,
        ),
        (
            "store::stat_cache_skips_unchanged_files",
            false,
            store::stat_cache_skips_unchanged_files,
        ),
        (
            "store::prune_lru_and_leases",
            false,
            store::prune_lru_and_leases,
        ),
        (
            "store::index_records_hold_their_blobs",
            false,
            store::index_records_hold_their_blobs,
        ),
        ("store::digest_parsing", false, store::digest_parsing),
        (
            "procs::crash_at_random_points",
            true,
            procs::crash_at_random_points,
        ),
        (
            "procs::concurrent_pull_and_unpack",
            true,
            procs::concurrent_pull_and_unpack,
        ),
        (
            "procs::leases_across_processes",
            false,
            procs::leases_across_processes,
        ),
    ];
    let root = util::is_root();
    let trials = tests
        .iter()
        .map(|&(name, needs_root, f)| {
            Trial::test(name, move || f().map_err(|e| Failed::from(e.to_string())))
                .with_ignored_flag(needs_root && !root)
        })
        .collect();
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
