//! The test sandbox: no secret of Orion's reaches it, a hung run is killed, output is kept.

use std::time::{Duration, Instant};

use orion_services::testing::{self, TestError};

use crate::support::TempDir;

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn environment() -> Vec<(String, String)> {
    vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ("OPENAI_API_KEY".into(), "sk-live-secret".into()),
        (
            "ORION__DATABASE__URL".into(),
            "postgres://orion:hunter2@db/orion".into(),
        ),
        ("ORION__AUTH__JWT__SECRET".into(), "jwt-secret-value".into()),
        ("GITHUB_TOKEN".into(), "ghp_secret".into()),
    ]
}

#[tokio::test]
async fn the_sandbox_sees_no_secret_from_orions_environment() {
    let dir = TempDir::new();
    let run = testing::run(
        dir.path(),
        &sh("env"),
        Duration::from_secs(10),
        environment(),
    )
    .await
    .unwrap();
    assert!(run.passed, "{run:?}");
    for secret in [
        "sk-live-secret",
        "hunter2",
        "jwt-secret-value",
        "ghp_secret",
        "OPENAI_API_KEY",
        "ORION__",
    ] {
        assert!(
            !run.output.contains(secret),
            "{secret} leaked into the sandbox:\n{}",
            run.output
        );
    }
    assert!(
        run.output.contains("PATH="),
        "the toolchain path passes: {}",
        run.output
    );
    assert!(
        run.output.contains(".orion-sandbox-home"),
        "HOME is private: {}",
        run.output
    );
}

#[tokio::test]
async fn failing_tests_are_reported_with_their_output() {
    let dir = TempDir::new();
    let run = testing::run(
        dir.path(),
        &sh("echo 3 passed; echo 1 failed >&2; exit 3"),
        Duration::from_secs(10),
        environment(),
    )
    .await
    .unwrap();
    assert_eq!(
        (run.passed, run.exit_code, run.timed_out),
        (false, Some(3), false)
    );
    assert_eq!(run.output, "3 passed\n1 failed\n");
}

#[tokio::test]
async fn a_hung_test_run_is_killed_at_its_timeout() {
    let dir = TempDir::new();
    let start = Instant::now();
    let run = testing::run(
        dir.path(),
        &sh("sleep 30 & sleep 30"),
        Duration::from_millis(300),
        environment(),
    )
    .await
    .unwrap();
    assert!(run.timed_out && !run.passed);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let err = testing::run(
        dir.path(),
        &["/no/such/runner".into()],
        Duration::from_secs(5),
        environment(),
    )
    .await
    .unwrap();
    assert_eq!(
        err.exit_code,
        Some(127),
        "exec of a missing program fails inside the sandbox shell"
    );
    assert!(matches!(
        testing::run(dir.path(), &[], Duration::from_secs(1), environment()).await,
        Err(TestError::NoCommand)
    ));
}

#[test]
fn test_commands_are_detected_from_the_repository() {
    let dir = TempDir::new();
    assert_eq!(testing::detect(dir.path()), None);
    std::fs::write(dir.path().join("go.mod"), "module x\n").unwrap();
    assert_eq!(
        testing::detect(dir.path()).unwrap(),
        ["go", "test", "./..."]
    );
    std::fs::write(dir.path().join("pyproject.toml"), "").unwrap();
    assert_eq!(
        testing::detect(dir.path()).unwrap(),
        ["python3", "-m", "pytest", "-q"]
    );
    std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
    assert_eq!(
        testing::detect(dir.path()).unwrap(),
        ["cargo", "test", "--quiet"]
    );
}
