//! RUN --mount, per-step network and build secrets (issue 9) on the local registry's images.
//!
//! Run with `cargo test -p builder-core --test mounts` (as root, with the test registry of
//! `scripts/testenv/up.sh` on 127.0.0.1:5000). The binary is also the sandbox init and, with
//! `{CHILD_ENV}` set, a child that runs one build (for cross-process cases).
#![allow(missing_docs, unreachable_pub)] // a test binary, not a library

#[macro_use]
mod util;
mod cases;

use libtest_mimic::{Arguments, Trial};

fn main() {
    builder_core::maybe_run_init();
    if let Ok(spec) = std::env::var(util::CHILD_ENV) {
        std::process::exit(util::child_main(&spec));
    }
    let mut args = Arguments::from_args();
    // Builds are heavy: two at a time unless asked otherwise.
    if args.test_threads.is_none() {
        args.test_threads = Some(2);
    }
    let tests = vec![
        Trial::test(
            "mnt_01_context_bind_is_read_only",
            cases::mnt_01_context_bind_is_read_only,
        ),
        Trial::test(
            "mnt_02_rw_bind_from_stage_discards_writes",
            cases::mnt_02_rw_bind_from_stage_discards_writes,
        ),
        Trial::test(
            "bind_from_an_image_and_nested_mounts",
            cases::bind_from_an_image_and_nested_mounts,
        ),
        Trial::test(
            "mnt_02_rw_bind_leaves_the_context_untouched",
            cases::mnt_02_rw_bind_leaves_the_context_untouched,
        ),
        Trial::test(
            "di_06_ignored_files_are_hidden_from_bind_mounts",
            cases::di_06_ignored_files_are_hidden_from_bind_mounts,
        ),
        Trial::test(
            "context_bind_content_is_in_the_cache_key",
            cases::context_bind_content_is_in_the_cache_key,
        ),
        Trial::test(
            "mnt_03_cache_persists_and_stays_out_of_the_image",
            cases::mnt_03_cache_persists_and_stays_out_of_the_image,
        ),
        Trial::test(
            "cache_mount_is_seen_by_the_next_build",
            cases::cache_mount_is_seen_by_the_next_build,
        ),
        Trial::test(
            "mnt_04_cache_owner_and_mode",
            cases::mnt_04_cache_owner_and_mode,
        ),
        Trial::test(
            "cache_seeded_from_a_stage_and_readonly",
            cases::cache_seeded_from_a_stage_and_readonly,
        ),
        Trial::test(
            "cache_sharing_locked_serialises_processes",
            cases::cache_sharing_locked_serialises_processes,
        ),
        Trial::test(
            "npm_ci_second_run_needs_no_network",
            cases::npm_ci_second_run_needs_no_network,
        ),
        Trial::test(
            "mnt_05_tmpfs_is_empty_not_kept_and_sized",
            cases::mnt_05_tmpfs_is_empty_not_kept_and_sized,
        ),
        Trial::test(
            "mnt_06_secret_file_options_and_no_leftovers",
            cases::mnt_06_secret_file_options_and_no_leftovers,
        ),
        Trial::test(
            "mnt_07_secret_as_environment_variable",
            cases::mnt_07_secret_as_environment_variable,
        ),
        Trial::test(
            "secret_is_absent_from_every_exported_byte",
            cases::secret_is_absent_from_every_exported_byte,
        ),
        Trial::test(
            "secret_from_an_environment_variable",
            cases::secret_from_an_environment_variable,
        ),
        Trial::test(
            "ssh_agent_forwarding_from_a_key_file",
            cases::ssh_agent_forwarding_from_a_key_file,
        ),
        Trial::test(
            "ssh_agent_forwarding_from_a_socket",
            cases::ssh_agent_forwarding_from_a_socket,
        ),
        Trial::test(
            "mnt_08_mount_option_errors",
            cases::mnt_08_mount_option_errors,
        ),
        Trial::test(
            "mnt_09_target_expands_variables_from_does_not",
            cases::mnt_09_target_expands_variables_from_does_not,
        ),
        Trial::test(
            "escaping_mount_paths_are_refused",
            cases::escaping_mount_paths_are_refused,
        ),
        Trial::test(
            "mount_targets_through_cache_symlinks_stay_inside",
            cases::mount_targets_through_cache_symlinks_stay_inside,
        ),
        Trial::test(
            "net_01_network_none_leaves_only_loopback",
            cases::net_01_network_none_leaves_only_loopback,
        ),
        Trial::test(
            "net_02_network_host_needs_the_entitlement",
            cases::net_02_network_host_needs_the_entitlement,
        ),
        Trial::test(
            "security_insecure_needs_the_entitlement",
            cases::security_insecure_needs_the_entitlement,
        ),
        Trial::test("nothing_is_left_behind", cases::nothing_is_left_behind),
    ];
    libtest_mimic::run(&args, tests).exit();
}
