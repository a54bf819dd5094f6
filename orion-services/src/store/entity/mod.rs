//! sea-orm entities, one module per table; the schema itself lives in `migrations/`.

pub mod agent_snapshot;
pub mod api_key;
pub mod audit_log;
pub mod cap_raise;
pub mod effect;
pub mod model_usage;
pub mod pull_request;
pub mod repo_credential;
pub mod review;
pub mod task;
pub mod task_event;
pub mod task_function;
