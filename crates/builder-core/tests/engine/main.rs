//! The build engine end to end: real Dockerfiles built through `builder_core::Build` against
//! the local registry's busybox and Node images (scripts/testenv/up.sh), results read back
//! with skopeo, umoci, tar and docker. Cases are named after the IDs of
//! `shared/conformance/dockerfile-behaviours.md`; cases left out are listed in
//! `tests/engine/SKIPPED.md` with the reason.
//!
//! This binary is its own sandbox init (RUN steps re-execute it): `main` calls
//! `maybe_run_init` first.
//!
//! Cases that need a feature the engine does not have yet are marked ignored, with the
//! feature as their kind: COPY/ADD (found out by a probe build at start, so they turn on by
//! themselves once the engine has them) and RUN --mount; a few name what the engine lacks.

#[macro_use]
mod util;

mod args;
mod behaviour;
mod copy;
mod env;
mod group;
mod heredoc;
mod http;
mod layers;
mod meta;
mod parse;
mod runtime;
mod stages;

use libtest_mimic::{Arguments, Trial};

use crate::util::R;

/// What a case needs beyond what every engine build has.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    Nothing,
    /// COPY or ADD.
    Copy,
    /// RUN --mount.
    RunMount,
}

/// Whether the engine runs COPY: a tiny build without network or RUN.
fn copy_works() -> bool {
    let c = util::Case::new();
    c.file("a", "a");
    match c.build("FROM scratch\nCOPY a /a\n") {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("not available in this build"),
    }
}

fn run_mount_works() -> bool {
    let c = util::Case::new();
    // Fails at RUN dispatch, before any pull, when mounts are not supported.
    match c.build("FROM scratch\nRUN --mount=type=tmpfs,target=/t true\n") {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("RUN --mount is not supported yet"),
    }
}

/// A case: its name, its function, what it needs.
type Entry = (&'static str, fn() -> R, Needs);

fn main() {
    builder_core::maybe_run_init();
    let args = Arguments::from_args();
    let cases: Vec<Entry> = vec![
        // 1. parsing
        (
            "par_01_lowercase_keywords",
            parse::par_01_lowercase_keywords,
            Needs::Copy,
        ),
        (
            "par_02_comment_lines_in_continuation",
            parse::par_02_comment_lines_in_continuation,
            Needs::Nothing,
        ),
        (
            "par_03_continuation_adds_no_space",
            parse::par_03_continuation_adds_no_space,
            Needs::Nothing,
        ),
        (
            "par_04_blank_lines_in_continuation",
            parse::par_04_blank_lines_in_continuation,
            Needs::Nothing,
        ),
        (
            "par_05_escape_directive",
            parse::par_05_escape_directive,
            Needs::Nothing,
        ),
        (
            "par_06_directives_only_at_the_top",
            parse::par_06_directives_only_at_the_top,
            Needs::Nothing,
        ),
        (
            "par_07_syntax_directive",
            parse::par_07_syntax_directive,
            Needs::Copy,
        ),
        (
            "par_08_single_quotes_are_shell_form",
            parse::par_08_single_quotes_are_shell_form,
            Needs::Nothing,
        ),
        (
            "par_09_json_array_of_strings_only",
            parse::par_09_json_array_of_strings_only,
            Needs::Nothing,
        ),
        (
            "par_10_unknown_instruction",
            parse::par_10_unknown_instruction,
            Needs::Nothing,
        ),
        (
            "par_11_needs_a_stage",
            parse::par_11_needs_a_stage,
            Needs::Nothing,
        ),
        (
            "par_12_only_arg_before_from",
            parse::par_12_only_arg_before_from,
            Needs::Nothing,
        ),
        (
            "par_13_lowercase_dockerfile_name",
            parse::par_13_lowercase_dockerfile_name,
            Needs::Nothing,
        ),
        (
            "par_14_stage_names",
            parse::par_14_stage_names,
            Needs::Nothing,
        ),
        (
            "par_14_copy_from_stage_case_insensitive",
            parse::par_14_copy_from_stage_case_insensitive,
            Needs::Copy,
        ),
        (
            "par_15_text_after_json_is_shell_form",
            parse::par_15_text_after_json_is_shell_form,
            Needs::Nothing,
        ),
        // 2. ARG
        (
            "arg_01_global_arg_in_from",
            args::arg_01_global_arg_in_from,
            Needs::Nothing,
        ),
        (
            "arg_02_global_arg_needs_redeclaring",
            args::arg_02_global_arg_needs_redeclaring,
            Needs::Nothing,
        ),
        (
            "arg_03_scope_starts_at_declaration",
            args::arg_03_scope_starts_at_declaration,
            Needs::Nothing,
        ),
        (
            "arg_04_overrides_quotes_and_several_per_line",
            args::arg_04_overrides_quotes_and_several_per_line,
            Needs::Nothing,
        ),
        (
            "arg_05_stages_inherit_args",
            args::arg_05_stages_inherit_args,
            Needs::Nothing,
        ),
        (
            "arg_06_env_beats_arg",
            args::arg_06_env_beats_arg,
            Needs::Nothing,
        ),
        (
            "arg_07_args_stay_out_of_the_config",
            args::arg_07_args_stay_out_of_the_config,
            Needs::Nothing,
        ),
        (
            "arg_08_unset_versus_empty",
            args::arg_08_unset_versus_empty,
            Needs::Nothing,
        ),
        (
            "arg_09_default_evaluated_only_when_needed",
            args::arg_09_default_evaluated_only_when_needed,
            Needs::Nothing,
        ),
        (
            "arg_10_expansion_modifiers",
            args::arg_10_expansion_modifiers,
            Needs::Nothing,
        ),
        (
            "arg_11_platform_args_in_global_scope",
            args::arg_11_platform_args_in_global_scope,
            Needs::Copy,
        ),
        (
            "arg_12_platform_args_declared_in_stage",
            args::arg_12_platform_args_declared_in_stage,
            Needs::Nothing,
        ),
        (
            "arg_13_build_platform_stage_keeps_target_args",
            args::arg_13_build_platform_stage_keeps_target_args,
            Needs::Copy,
        ),
        (
            "arg_14_proxy_args_do_not_bust_the_cache",
            args::arg_14_proxy_args_do_not_bust_the_cache,
            Needs::Nothing,
        ),
        ("arg_15_targetstage", args::arg_15_targetstage, Needs::Copy),
        // 3. ENV
        (
            "env_01_replaced_in_place",
            env::env_01_replaced_in_place,
            Needs::Nothing,
        ),
        (
            "env_02_references_use_values_from_before",
            env::env_02_references_use_values_from_before,
            Needs::Nothing,
        ),
        (
            "env_03_legacy_form_takes_the_rest",
            env::env_03_legacy_form_takes_the_rest,
            Needs::Nothing,
        ),
        (
            "env_04_quotes_and_escapes",
            env::env_04_quotes_and_escapes,
            Needs::Nothing,
        ),
        (
            "env_05_expanded_in_later_instructions",
            env::env_05_expanded_in_later_instructions,
            Needs::Copy,
        ),
        (
            "env_06_scratch_default_path",
            env::env_06_scratch_default_path,
            Needs::Nothing,
        ),
        (
            "env_07_inherited_from_stage",
            env::env_07_inherited_from_stage,
            Needs::Nothing,
        ),
        (
            "env_08_printf_text_verbatim",
            env::env_08_printf_text_verbatim,
            Needs::Nothing,
        ),
        (
            "env_09_words_need_equals",
            env::env_09_words_need_equals,
            Needs::Nothing,
        ),
        // 4. heredocs
        (
            "hd_01_run_heredoc",
            heredoc::hd_01_run_heredoc,
            Needs::Nothing,
        ),
        (
            "hd_01_copied_from_the_run_stage",
            heredoc::hd_01_copied_from_the_run_stage,
            Needs::Copy,
        ),
        (
            "hd_02_run_chomp_strips_tabs",
            heredoc::hd_02_run_chomp_strips_tabs,
            Needs::Nothing,
        ),
        (
            "hd_02_copy_chomp_strips_tabs",
            heredoc::hd_02_copy_chomp_strips_tabs,
            Needs::Copy,
        ),
        (
            "hd_03_copy_heredoc_files",
            heredoc::hd_03_copy_heredoc_files,
            Needs::Copy,
        ),
        (
            "hd_04_copy_heredoc_expansion",
            heredoc::hd_04_copy_heredoc_expansion,
            Needs::Copy,
        ),
        (
            "hd_05_run_body_left_to_the_shell",
            heredoc::hd_05_run_body_left_to_the_shell,
            Needs::Nothing,
        ),
        (
            "hd_06_heredocs_with_pipes",
            heredoc::hd_06_heredocs_with_pipes,
            Needs::Nothing,
        ),
        (
            "hd_07_shebang_picks_the_interpreter",
            heredoc::hd_07_shebang_picks_the_interpreter,
            Needs::Nothing,
        ),
        (
            "hd_08_copy_heredoc_chmod_chown",
            heredoc::hd_08_copy_heredoc_chmod_chown,
            Needs::Copy,
        ),
        (
            "hd_09_heredoc_errors",
            heredoc::hd_09_heredoc_errors,
            Needs::Nothing,
        ),
        (
            "hd_10_exec_form_has_no_heredoc",
            heredoc::hd_10_exec_form_has_no_heredoc,
            Needs::Nothing,
        ),
        // 5. COPY
        (
            "cp_01_directory_source_copies_contents",
            copy::cp_01_directory_source_copies_contents,
            Needs::Copy,
        ),
        ("cp_02_wildcards", copy::cp_02_wildcards, Needs::Copy),
        (
            "cp_03_trailing_slash_means_into",
            copy::cp_03_trailing_slash_means_into,
            Needs::Copy,
        ),
        (
            "cp_04_missing_destination_dirs_created",
            copy::cp_04_missing_destination_dirs_created,
            Needs::Copy,
        ),
        (
            "cp_05_relative_destination_uses_workdir",
            copy::cp_05_relative_destination_uses_workdir,
            Needs::Copy,
        ),
        (
            "cp_06_empty_destination_is_workdir",
            copy::cp_06_empty_destination_is_workdir,
            Needs::Copy,
        ),
        (
            "cp_07_sources_cannot_leave_the_context",
            copy::cp_07_sources_cannot_leave_the_context,
            Needs::Copy,
        ),
        (
            "cp_08_named_symlinks_are_followed",
            copy::cp_08_named_symlinks_are_followed,
            Needs::Copy,
        ),
        (
            "cp_09_unmatched_wildcard_with_another_source",
            copy::cp_09_unmatched_wildcard_with_another_source,
            Needs::Copy,
        ),
        (
            "cp_10_chown_resolves_names",
            copy::cp_10_chown_resolves_names,
            Needs::Copy,
        ),
        (
            "cp_11_default_owners",
            copy::cp_11_default_owners,
            Needs::Copy,
        ),
        (
            "cp_12_existing_directory_keeps_its_owner",
            copy::cp_12_existing_directory_keeps_its_owner,
            Needs::Copy,
        ),
        ("cp_13_chmod", copy::cp_13_chmod, Needs::Copy),
        (
            "cp_14_bad_and_symbolic_chmod",
            copy::cp_14_bad_and_symbolic_chmod,
            Needs::Copy,
        ),
        (
            "cp_15_permissions_preserved",
            copy::cp_15_permissions_preserved,
            Needs::Copy,
        ),
        (
            "cp_16_from_stage_index_or_image",
            copy::cp_16_from_stage_index_or_image,
            Needs::Copy,
        ),
        (
            "cp_17_from_paths_are_absolute",
            copy::cp_17_from_paths_are_absolute,
            Needs::Copy,
        ),
        (
            "cp_18_from_must_be_earlier",
            copy::cp_18_from_must_be_earlier,
            Needs::Copy,
        ),
        ("cp_19_exclude", copy::cp_19_exclude, Needs::Copy),
        ("cp_20_parents", copy::cp_20_parents, Needs::Copy),
        (
            "cp_21_link_is_independent",
            copy::cp_21_link_is_independent,
            Needs::Copy,
        ),
        (
            "cp_22_copy_never_unpacks_or_fetches",
            copy::cp_22_copy_never_unpacks_or_fetches,
            Needs::Copy,
        ),
        (
            "cp_23_copying_twice_overwrites",
            copy::cp_23_copying_twice_overwrites,
            Needs::Copy,
        ),
        (
            "cp_24_paths_expand_variables",
            copy::cp_24_paths_expand_variables,
            Needs::Copy,
        ),
        // 6. ADD
        (
            "add_01_local_archives_unpacked",
            copy::add_01_local_archives_unpacked,
            Needs::Copy,
        ),
        (
            "add_02_url_not_unpacked",
            copy::add_02_url_not_unpacked,
            Needs::Copy,
        ),
        (
            "add_03_url_name_mode_mtime",
            copy::add_03_url_name_mode_mtime,
            Needs::Copy,
        ),
        ("add_04_url_chmod", copy::add_04_url_chmod, Needs::Copy),
        ("add_05_checksum", copy::add_05_checksum, Needs::Copy),
        // 7. WORKDIR, USER
        (
            "wd_01_workdir_creates_the_directory",
            runtime::wd_01_workdir_creates_the_directory,
            Needs::Nothing,
        ),
        (
            "wd_02_relative_workdirs_stack",
            runtime::wd_02_relative_workdirs_stack,
            Needs::Nothing,
        ),
        (
            "wd_03_new_workdir_owned_by_user",
            runtime::wd_03_new_workdir_owned_by_user,
            Needs::Nothing,
        ),
        (
            "wd_04_workdir_expands_env",
            runtime::wd_04_workdir_expands_env,
            Needs::Nothing,
        ),
        (
            "wd_absolute_workdir_kept_as_written",
            runtime::wd_absolute_workdir_kept_as_written,
            Needs::Nothing,
        ),
        (
            "usr_01_user_stored_as_written",
            runtime::usr_01_user_stored_as_written,
            Needs::Nothing,
        ),
        (
            "usr_02_user_groups",
            runtime::usr_02_user_groups,
            Needs::Nothing,
        ),
        (
            "usr_02_node_image_user",
            runtime::usr_02_node_image_user,
            Needs::Nothing,
        ),
        // 8. SHELL, RUN, CMD, ENTRYPOINT
        (
            "sh_01_shell_form_wrapped",
            runtime::sh_01_shell_form_wrapped,
            Needs::Nothing,
        ),
        (
            "sh_02_shell_replaces_the_wrapper",
            runtime::sh_02_shell_replaces_the_wrapper,
            Needs::Nothing,
        ),
        (
            "sh_03_shell_must_be_json",
            runtime::sh_03_shell_must_be_json,
            Needs::Nothing,
        ),
        (
            "sh_04_heredoc_with_another_shell",
            runtime::sh_04_heredoc_with_another_shell,
            Needs::Nothing,
        ),
        (
            "cmd_01_exec_form_not_expanded",
            runtime::cmd_01_exec_form_not_expanded,
            Needs::Nothing,
        ),
        (
            "cmd_02_run_ignores_entrypoint",
            runtime::cmd_02_run_ignores_entrypoint,
            Needs::Nothing,
        ),
        (
            "cmd_03_entrypoint_clears_inherited_cmd",
            runtime::cmd_03_entrypoint_clears_inherited_cmd,
            Needs::Nothing,
        ),
        (
            "cmd_04_last_one_counts",
            runtime::cmd_04_last_one_counts,
            Needs::Nothing,
        ),
        (
            "cmd_05_cmd_sets_args_escaped",
            runtime::cmd_05_cmd_sets_args_escaped,
            Needs::Nothing,
        ),
        (
            "cmd_06_empty_cmd_clears",
            runtime::cmd_06_empty_cmd_clears,
            Needs::Nothing,
        ),
        // 13. network
        (
            "net_01_network_none_leaves_loopback",
            runtime::net_01_network_none_leaves_loopback,
            Needs::Nothing,
        ),
        (
            "net_03_sandbox_hostname",
            runtime::net_03_sandbox_hostname,
            Needs::Nothing,
        ),
        (
            "api_sandbox_mode_setter",
            runtime::api_sandbox_mode_setter,
            Needs::Nothing,
        ),
        (
            "net_03_hosts_and_resolv_conf_not_captured",
            runtime::net_03_hosts_and_resolv_conf_not_captured,
            Needs::Nothing,
        ),
        // 9. metadata
        (
            "exp_01_expose_defaults_and_expansion",
            meta::exp_01_expose_defaults_and_expansion,
            Needs::Nothing,
        ),
        (
            "exp_02_expose_ranges",
            meta::exp_02_expose_ranges,
            Needs::Nothing,
        ),
        (
            "vol_01_volume_forms",
            meta::vol_01_volume_forms,
            Needs::Nothing,
        ),
        (
            "vol_02_changes_after_volume_are_kept",
            meta::vol_02_changes_after_volume_are_kept,
            Needs::Nothing,
        ),
        ("lbl_01_labels", meta::lbl_01_labels, Needs::Nothing),
        (
            "lbl_02_labels_only_through_from",
            meta::lbl_02_labels_only_through_from,
            Needs::Copy,
        ),
        (
            "lbl_03_maintainer_sets_author",
            meta::lbl_03_maintainer_sets_author,
            Needs::Nothing,
        ),
        ("sig_01_stopsignal", meta::sig_01_stopsignal, Needs::Nothing),
        (
            "hc_01_healthcheck_forms",
            meta::hc_01_healthcheck_forms,
            Needs::Nothing,
        ),
        (
            "hc_02_healthcheck_none_and_limits",
            meta::hc_02_healthcheck_none_and_limits,
            Needs::Nothing,
        ),
        // 10. ONBUILD
        (
            "ob_01_onbuild_records_a_trigger",
            meta::ob_01_onbuild_records_a_trigger,
            Needs::Nothing,
        ),
        (
            "ob_02_triggers_run_in_the_child_then_clear",
            meta::ob_02_triggers_run_in_the_child_then_clear,
            Needs::Nothing,
        ),
        (
            "ob_03_triggers_fire_once_per_use",
            meta::ob_03_triggers_fire_once_per_use,
            Needs::Nothing,
        ),
        (
            "ob_04_onbuild_fires_for_a_stage",
            meta::ob_04_onbuild_fires_for_a_stage,
            Needs::Nothing,
        ),
        (
            "ob_05_forbidden_triggers",
            meta::ob_05_forbidden_triggers,
            Needs::Nothing,
        ),
        // 11. stages
        (
            "ms_01_only_needed_stages_run",
            stages::ms_01_only_needed_stages_run,
            Needs::Nothing,
        ),
        ("ms_01_with_copy", stages::ms_01_with_copy, Needs::Copy),
        (
            "ms_02_unknown_target_suggests",
            stages::ms_02_unknown_target_suggests,
            Needs::Nothing,
        ),
        (
            "ms_03_from_stage_continues",
            stages::ms_03_from_stage_continues,
            Needs::Nothing,
        ),
        (
            "ms_04_empty_base_name",
            stages::ms_04_empty_base_name,
            Needs::Nothing,
        ),
        (
            "ms_05_scratch_metadata_only",
            stages::ms_05_scratch_metadata_only,
            Needs::Nothing,
        ),
        (
            "ms_06_scratch_image_pulled_back",
            stages::ms_06_scratch_image_pulled_back,
            Needs::Nothing,
        ),
        (
            "ms_07_multi_platform_index",
            stages::ms_07_multi_platform_index,
            Needs::Nothing,
        ),
        (
            "ms_07_multi_platform_index_copy",
            stages::ms_07_multi_platform_index_copy,
            Needs::Copy,
        ),
        // 12. .dockerignore
        (
            "di_01_ignored_files_invisible",
            copy::di_01_ignored_files_invisible,
            Needs::Copy,
        ),
        (
            "di_02_ignored_dockerfile_still_used",
            copy::di_02_ignored_dockerfile_still_used,
            Needs::Copy,
        ),
        (
            "di_03_dockerfile_specific_ignore",
            copy::di_03_dockerfile_specific_ignore,
            Needs::Copy,
        ),
        (
            "di_04_invalid_dockerignore_fails",
            copy::di_04_invalid_dockerignore_fails,
            Needs::Copy,
        ),
        (
            "di_05_patterns_anchored_at_the_root",
            copy::di_05_patterns_anchored_at_the_root,
            Needs::Copy,
        ),
        (
            "di_06_ignored_files_hidden_from_bind_mounts",
            copy::di_06_ignored_files_hidden_from_bind_mounts,
            Needs::RunMount,
        ),
        // 14. layers, history, config
        (
            "lay_01_delete_makes_a_whiteout",
            layers::lay_01_delete_makes_a_whiteout,
            Needs::Nothing,
        ),
        (
            "lay_02_replaced_directory_hides_children",
            layers::lay_02_replaced_directory_hides_children,
            Needs::Nothing,
        ),
        (
            "lay_03_which_instructions_add_layers",
            layers::lay_03_which_instructions_add_layers,
            Needs::Copy,
        ),
        (
            "lay_03_layers_without_copy",
            layers::lay_03_layers_without_copy,
            Needs::Nothing,
        ),
        (
            "hist_01_created_by_texts",
            layers::hist_01_created_by_texts,
            Needs::Copy,
        ),
        (
            "hist_01_created_by_texts_without_copy",
            layers::hist_01_created_by_texts_without_copy,
            Needs::Nothing,
        ),
        (
            "hist_02_other_created_by_shapes",
            layers::hist_02_other_created_by_shapes,
            Needs::Nothing,
        ),
        (
            "hist_03_run_lists_build_args",
            layers::hist_03_run_lists_build_args,
            Needs::Nothing,
        ),
        (
            "cfg_01_base_config_and_history_carry_over",
            layers::cfg_01_base_config_and_history_carry_over,
            Needs::Nothing,
        ),
        (
            "cfg_02_source_date_epoch",
            layers::cfg_02_source_date_epoch,
            Needs::Copy,
        ),
        (
            "cfg_02_source_date_epoch_without_copy",
            layers::cfg_02_source_date_epoch_without_copy,
            Needs::Nothing,
        ),
        (
            "cfg_02_source_date_epoch_rewrite_timestamp",
            layers::cfg_02_source_date_epoch_rewrite_timestamp,
            Needs::Nothing,
        ),
        (
            "cfg_03_empty_values_kept",
            layers::cfg_03_empty_values_kept,
            Needs::Nothing,
        ),
        // engine behaviours
        (
            "warm_rebuild_runs_nothing_and_gives_the_same_digest",
            behaviour::warm_rebuild_runs_nothing_and_gives_the_same_digest,
            Needs::Nothing,
        ),
        (
            "layers_are_compressed_only_for_an_output",
            behaviour::layers_are_compressed_only_for_an_output,
            Needs::Nothing,
        ),
        (
            "stages_sharing_a_base_pull_it_once",
            behaviour::stages_sharing_a_base_pull_it_once,
            Needs::Nothing,
        ),
        (
            "local_output_compresses_nothing",
            behaviour::local_output_compresses_nothing,
            Needs::Nothing,
        ),
        (
            "changed_run_reruns_from_there",
            behaviour::changed_run_reruns_from_there,
            Needs::Nothing,
        ),
        (
            "no_cache_reruns_everything",
            behaviour::no_cache_reruns_everything,
            Needs::Nothing,
        ),
        (
            "failed_run_reports_location_and_output",
            behaviour::failed_run_reports_location_and_output,
            Needs::Nothing,
        ),
        (
            "step_error_tells_a_refused_pull_from_a_failed_command",
            behaviour::step_error_tells_a_refused_pull_from_a_failed_command,
            Needs::Copy,
        ),
        (
            "cancel_during_run_tears_everything_down",
            behaviour::cancel_during_run_tears_everything_down,
            Needs::Nothing,
        ),
        (
            "failed_step_cancels_parallel_stage",
            behaviour::failed_step_cancels_parallel_stage,
            Needs::Copy,
        ),
        (
            "hostile_base_image_is_refused",
            behaviour::hostile_base_image_is_refused,
            Needs::Nothing,
        ),
        (
            "unknown_base_config_fields_survive",
            behaviour::unknown_base_config_fields_survive,
            Needs::Nothing,
        ),
        (
            "oci_tar_and_dir_outputs_agree",
            behaviour::oci_tar_and_dir_outputs_agree,
            Needs::Nothing,
        ),
        (
            "docker_output_loads_and_runs",
            behaviour::docker_output_loads_and_runs,
            Needs::Nothing,
        ),
        (
            "registry_output_round_trips",
            behaviour::registry_output_round_trips,
            Needs::Nothing,
        ),
        (
            "pinned_base_warm_rebuild_needs_no_network",
            behaviour::pinned_base_warm_rebuild_needs_no_network,
            Needs::Nothing,
        ),
        (
            "independent_stages_run_in_parallel",
            behaviour::independent_stages_run_in_parallel,
            Needs::Copy,
        ),
        (
            "identical_steps_run_once_across_platforms",
            behaviour::identical_steps_run_once_across_platforms,
            Needs::Copy,
        ),
        (
            "copy_cache_key_ignores_mtime_but_not_mode",
            behaviour::copy_cache_key_ignores_mtime_but_not_mode,
            Needs::Copy,
        ),
        (
            "group_shared_step_runs_once_across_builds",
            group::shared_step_runs_once_across_builds,
            Needs::Nothing,
        ),
        (
            "group_first_failure_stops_the_group_unless_keep_going",
            group::first_failure_stops_the_group_unless_keep_going,
            Needs::Nothing,
        ),
        (
            "local_output_writes_the_tree",
            behaviour::local_output_writes_the_tree,
            Needs::Nothing,
        ),
    ];
    // The probes cost a build each: only run them when a gated case is selected.
    let wanted = |n: &str| {
        args.filter
            .as_deref()
            .is_none_or(|f| if args.exact { n == f } else { n.contains(f) })
    };
    let probe = |needs: Needs| cases.iter().any(|(n, _, k)| *k == needs && wanted(n));
    let have_copy = !probe(Needs::Copy) || args.list || copy_works();
    let have_mount = !probe(Needs::RunMount) || args.list || run_mount_works();
    let tests = cases
        .into_iter()
        .map(|(name, f, needs)| {
            let missing = match needs {
                Needs::Nothing => None,
                Needs::Copy if !have_copy => Some("needs COPY/ADD in the engine"),
                Needs::RunMount if !have_mount => Some("needs RUN --mount in the engine"),
                _ => None,
            };
            let t = Trial::test(name, f);
            match missing {
                Some(why) => t.with_ignored_flag(true).with_kind(why),
                None => t,
            }
        })
        .collect();
    libtest_mimic::run(&args, tests).exit();
}
