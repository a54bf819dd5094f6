//! Every code a task can fail with (`TaskFailure::code`), in one place: clients switch on
//! them, dashboards count them (`orion_task_failures_total{code}`), the docs list them.

/// The codes, one constant each.
pub mod codes {
    pub const AGENT_PANICKED: &str = "agent_panicked";
    pub const AGENT_UNAVAILABLE: &str = "agent_unavailable";
    pub const APPLY_FAILED: &str = "apply_failed";
    pub const CI_RULES_INVALID: &str = "ci_rules_invalid";
    pub const DEAD_LETTERED: &str = "dead_lettered";
    pub const INTERNAL: &str = "internal";
    pub const INTERRUPTED: &str = "interrupted";
    pub const MERGE_CONFLICT: &str = "merge_conflict";
    pub const MERGE_NOT_APPROVED: &str = "merge_not_approved";
    pub const MISSING_DIFF: &str = "missing_diff";
    pub const MISSING_PROMPT: &str = "missing_prompt";
    pub const MODEL_MALFORMED_RESPONSE: &str = "model_malformed_response";
    pub const MODEL_NOT_CONFIGURED: &str = "model_not_configured";
    pub const MODEL_OUTPUT_UNUSABLE: &str = "model_output_unusable";
    pub const MODEL_REJECTED: &str = "model_rejected";
    pub const MODEL_UNAVAILABLE: &str = "model_unavailable";
    pub const NO_BUILD_SYSTEM: &str = "no_build_system";
    pub const NO_CHANGE: &str = "no_change";
    pub const NO_KIND_CHOSEN: &str = "no_kind_chosen";
    pub const NO_TEST_COMMAND: &str = "no_test_command";
    pub const NOT_A_REPOSITORY: &str = "not_a_repository";
    pub const NOT_A_REQUEST: &str = "not_a_request";
    pub const PUSH_REFUSED: &str = "push_refused";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const REF_UNSUPPORTED: &str = "ref_unsupported";
    pub const REPO_NOT_ALLOWED: &str = "repo_not_allowed";
    pub const REPO_NOT_FOUND: &str = "repo_not_found";
    pub const REPO_UNREACHABLE: &str = "repo_unreachable";
    pub const REPO_UNREADABLE: &str = "repo_unreadable";
    pub const REPO_UNSUPPORTED: &str = "repo_unsupported";
    pub const RESULT_TOO_LARGE: &str = "result_too_large";
    pub const REVISION_NEEDS_MODEL: &str = "revision_needs_model";
    pub const SANDBOX_UNAVAILABLE: &str = "sandbox_unavailable";
    pub const SETUP_FAILED: &str = "setup_failed";
    pub const STEP_UNSUPPORTED: &str = "step_unsupported";
    pub const STORE_UNAVAILABLE: &str = "store_unavailable";
    pub const TESTS_FAILED: &str = "tests_failed";
    pub const TESTS_NOT_RUN: &str = "tests_not_run";
    pub const TESTS_TIMED_OUT: &str = "tests_timed_out";
    pub const UNKNOWN_OPERATION: &str = "unknown_operation";
    pub const UNKNOWN_REVISION: &str = "unknown_revision";
    pub const UNSAFE_EDIT: &str = "unsafe_edit";
    pub const VCS_ERROR: &str = "vcs_error";

    /// Every code, for checks and documentation.
    pub const ALL: &[&str] = &[
        AGENT_PANICKED,
        AGENT_UNAVAILABLE,
        APPLY_FAILED,
        CI_RULES_INVALID,
        DEAD_LETTERED,
        INTERNAL,
        INTERRUPTED,
        MERGE_CONFLICT,
        MERGE_NOT_APPROVED,
        MISSING_DIFF,
        MISSING_PROMPT,
        MODEL_MALFORMED_RESPONSE,
        MODEL_NOT_CONFIGURED,
        MODEL_OUTPUT_UNUSABLE,
        MODEL_REJECTED,
        MODEL_UNAVAILABLE,
        NO_BUILD_SYSTEM,
        NO_CHANGE,
        NO_KIND_CHOSEN,
        NO_TEST_COMMAND,
        NOT_A_REPOSITORY,
        NOT_A_REQUEST,
        PUSH_REFUSED,
        RATE_LIMITED,
        REF_UNSUPPORTED,
        REPO_NOT_ALLOWED,
        REPO_NOT_FOUND,
        REPO_UNREACHABLE,
        REPO_UNREADABLE,
        REPO_UNSUPPORTED,
        RESULT_TOO_LARGE,
        REVISION_NEEDS_MODEL,
        SANDBOX_UNAVAILABLE,
        SETUP_FAILED,
        STEP_UNSUPPORTED,
        STORE_UNAVAILABLE,
        TESTS_FAILED,
        TESTS_NOT_RUN,
        TESTS_TIMED_OUT,
        UNKNOWN_OPERATION,
        UNKNOWN_REVISION,
        UNSAFE_EDIT,
        VCS_ERROR,
    ];
}

#[cfg(test)]
mod tests {
    use super::codes;

    #[test]
    fn codes_are_distinct_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in codes::ALL {
            assert!(seen.insert(code), "{code} twice");
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
    }
}
