//! Logging setup: human-readable lines, or JSON lines with `--log-json`, filtered by
//! `RUST_LOG` (default `info` for Orion's crates, `warn` for the rest).

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str =
    "warn,orion=info,orion_bus=info,orion_services=info,orion_actors=info,orion_gateway=info";

/// Installs the global subscriber; logs go to stderr so command output stays clean.
pub fn init(json: bool, quiet: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if quiet { "warn" } else { DEFAULT_FILTER }));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A subscriber already installed (by a test harness) is fine.
    let _ = result;
}
