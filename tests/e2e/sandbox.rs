//! The sandbox: no secret of Orion's reaches it, a hung run is killed, output is kept; and,
//! through real `test` tasks, hostile suites that try to read the node's secrets, reach the
//! network, write outside their worktree, outlive their run or exhaust the node.

use std::time::{Duration, Instant};

use orion_services::sandbox::{self, Job, Sandbox, SandboxError, Scratch, TestRun};

use crate::support::TempDir;

/// Runs `command` in `dir` in the default sandbox.
async fn sandboxed(
    dir: &std::path::Path,
    command: &[String],
    timeout: Duration,
    environment: Vec<(String, String)>,
) -> Result<TestRun, SandboxError> {
    let scratch = Scratch::new().unwrap();
    Sandbox::default()
        .run(Job {
            dir,
            command,
            timeout,
            network: false,
            environment,
            scratch: &scratch,
        })
        .await
}

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
    let run = sandboxed(
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
        run.output.contains("HOME=/tmp/home"),
        "HOME is private: {}",
        run.output
    );
}

/// A run that says what bubblewrap would say when it fails is still the run's own failure.
#[tokio::test]
async fn a_run_cannot_pass_itself_off_as_a_broken_sandbox() {
    let dir = TempDir::new();
    let run = sandboxed(
        dir.path(),
        &sh("echo 'bwrap: Creating new namespace failed: Operation not permitted'; exit 1"),
        Duration::from_secs(10),
        environment(),
    )
    .await
    .expect("the run's own result");
    assert_eq!((run.passed, run.exit_code), (false, Some(1)));
}

/// A `test` task runs in a copy of the working tree: whatever the suite writes (the
/// repository's `.git`, its files, the node's data directory inside it) stays out of the
/// repository.
#[actix_rt::test]
async fn a_test_task_never_writes_the_repository_it_tests() {
    let repo = crate::support::git_fixture();
    let data = repo.path().join(".orion");
    let before = crate::support::git_rev(&repo.path().join(".git"), "HEAD");
    let script = "ls -a; mkdir -p .git/hooks .orion && echo evil > .git/hooks/pre-commit \
                  && echo '[core] fsmonitor = evil' >> .git/config && echo x > written \
                  && echo pwned > .orion/orion.db";
    let data_dir = data.clone();
    let app = crate::support::TestApp::spawn_with(move |s| {
        s.data_dir = data_dir;
        s.developer.test_command = Some(sh(script));
    })
    .await;
    let id = app
        .submit(serde_json::json!({ "kind": "test", "repo": repo.path().to_string_lossy() }))
        .await;
    let task = app.wait_for(&id, "completed").await;
    let output = task["result"]["output"].as_str().unwrap();
    assert!(
        !output.lines().any(|l| l == ".git" || l == ".orion"),
        "no .git and no data directory in the copy: {output}"
    );
    assert!(!repo.path().join(".git/hooks/pre-commit").exists());
    assert!(!repo.path().join("written").exists());
    assert!(
        !std::fs::read_to_string(repo.path().join(".git/config"))
            .unwrap()
            .contains("fsmonitor")
    );
    let db = std::fs::read(data.join("orion.db")).unwrap();
    assert!(
        db.starts_with(b"SQLite format 3"),
        "the node's database is untouched"
    );
    assert_eq!(
        crate::support::git_rev(&repo.path().join(".git"), "HEAD"),
        before
    );
}

#[tokio::test]
async fn failing_tests_are_reported_with_their_output() {
    let dir = TempDir::new();
    let run = sandboxed(
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
    let run = sandboxed(
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
    let err = sandboxed(
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
        "exec of a missing program fails inside the sandbox"
    );
    assert!(matches!(
        sandboxed(dir.path(), &[], Duration::from_secs(1), environment()).await,
        Err(SandboxError::NoCommand)
    ));
}

#[test]
fn test_commands_are_detected_from_the_repository() {
    let dir = TempDir::new();
    assert_eq!(sandbox::detect(dir.path()), None);
    std::fs::write(dir.path().join("go.mod"), "module x\n").unwrap();
    assert_eq!(
        sandbox::detect(dir.path()).unwrap(),
        ["go", "test", "./..."]
    );
    std::fs::write(dir.path().join("pyproject.toml"), "").unwrap();
    assert_eq!(
        sandbox::detect(dir.path()).unwrap(),
        ["python3", "-m", "pytest", "-q"]
    );
    std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
    assert_eq!(
        sandbox::detect(dir.path()).unwrap(),
        ["cargo", "test", "--quiet"]
    );
}

/// An `orion up` process holding secrets in its environment, with the hostile fixtures as a
/// repository; its address, its data directory and the repository.
struct HostileNode {
    _process: crate::support::Process,
    base: String,
    data: std::path::PathBuf,
    repo: std::path::PathBuf,
    _dir: TempDir,
}

const MODEL_KEY: &str = "sk-live-model-key-9f8e7d6c5b4a";
const CREDENTIALS_KEY: &str = "c2FuZGJveC1jcmVkZW50aWFscy1rZXktMzItYnl0ZXM=";

async fn hostile_node(test_command: &str, max_processes: u64) -> HostileNode {
    use std::process::{Command, Stdio};
    let dir = TempDir::new();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    for file in ["attack.py", "exhaust.py"] {
        std::fs::copy(fixtures.join(file), repo.join(file)).unwrap();
    }
    let data = dir.path().join("data");
    let stdout = dir.path().join("stdout.log");
    let process = crate::support::Process(
        Command::new(env!("CARGO_BIN_EXE_orion"))
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "warn")
            .env("ORION__LLM__API_KEY", MODEL_KEY)
            .env("ORION__SECRETS__CREDENTIALS_KEY", CREDENTIALS_KEY)
            .env("ORION__DEVELOPER__TEST_COMMAND", test_command)
            .env("ORION__DEVELOPER__TEST_TIMEOUT_SECS", "120")
            .env("ORION__SANDBOX__MAX_PROCESSES", max_processes.to_string())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let base =
        crate::support::eventually("orion up to listen", Duration::from_secs(30), || async {
            let out = std::fs::read_to_string(&stdout).ok()?;
            let line = out.lines().find(|l| l.starts_with("Orion listening on "))?;
            line.split_whitespace().nth(3).map(str::to_owned)
        })
        .await;
    HostileNode {
        _process: process,
        base,
        data,
        repo,
        _dir: dir,
    }
}

impl HostileNode {
    /// Runs a `test` task on the fixtures' repository to its end; the task.
    async fn test_task(&self) -> serde_json::Value {
        let client = awc::Client::new();
        let id = crate::support::submit_to(
            &client,
            &self.base,
            &serde_json::json!({ "kind": "test", "repo": self.repo.to_string_lossy() }),
        )
        .await;
        crate::support::eventually("the test task to end", Duration::from_secs(180), || async {
            let task =
                crate::support::get_json(&client, format!("{}/v1/tasks/{id}", self.base)).await?;
            ["completed", "failed"]
                .contains(&task["status"].as_str()?)
                .then_some(task)
        })
        .await
    }
}

/// Processes whose command line holds `marker`, on the host.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) && !cmdline.contains("attack.py") {
                found.push(cmdline);
            }
        }
    }
    found
}

#[actix_rt::test]
async fn a_hostile_suite_reaches_no_secret_no_network_no_file_and_leaves_nothing_behind() {
    let marker = format!("{}", u64::from(std::process::id()) * 1000 + 7);
    // The suite is told where everything is: what it must not reach is no secret.
    let port_placeholder = "PORT";
    let command = |port: &str, data: &str| {
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        serde_json::to_string(&[
            "python3",
            "attack.py",
            port,
            data,
            &marker,
            &hex(MODEL_KEY),
            &hex(CREDENTIALS_KEY),
        ])
        .unwrap()
    };
    // The gateway's port is known only once the node listens: a first node learns it, the
    // suite runs on a second whose port it is told (the first still listens: it is a target).
    let probe = hostile_node(&command(port_placeholder, "/nowhere"), 512).await;
    let port = probe.base.rsplit(':').next().unwrap().to_owned();
    let data = probe.data.to_string_lossy().into_owned();
    let node = hostile_node(&command(&port, &data), 512).await;
    let task = node.test_task().await;
    assert_eq!(
        task["status"], "completed",
        "the suite's result is reported: {task}"
    );
    let output = task["result"]["output"].as_str().unwrap();
    assert!(task["result"]["passed"].as_bool().unwrap(), "{output}");
    for what in [
        "nested namespaces",
        "environment",
        "/proc environ and cmdline",
        "other processes",
        "node files",
        "TCP to the host",
        "network interfaces",
        "writes outside the worktree",
    ] {
        assert!(
            output.contains(&format!("BLOCKED {what}\n")),
            "{what}:\n{output}"
        );
    }
    assert!(!output.contains("LEAK"), "{output}");
    assert!(output.contains("STARTED lingering processes"), "{output}");
    // Nothing it started is left, and nothing it wrote is outside its worktree; the run's
    // copy of the repository and its scratch are gone, setuid copies with them, and the
    // repository itself is as it was.
    assert_eq!(processes_with(&format!(".{marker}")), Vec::<String>::new());
    assert!(!node.repo.join(format!("setuid-{marker}")).exists());
    let work = node.data.join("work/tests");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", work.display());
    for path in [
        probe.data.join(format!("escape-{marker}")),
        node.repo.parent().unwrap().join(format!("escape-{marker}")),
        std::path::PathBuf::from(format!("/var/tmp/escape-{marker}")),
        std::path::PathBuf::from(format!("/root/escape-{marker}")),
    ] {
        assert!(!path.exists(), "{} was written", path.display());
    }
}

#[actix_rt::test]
async fn a_fork_bomb_a_memory_hog_and_100_mb_of_stderr_are_bounded() {
    let node = hostile_node(r#"["python3", "exhaust.py"]"#, 64).await;
    let started = Instant::now();
    let task = node.test_task().await;
    assert_eq!(task["status"], "completed", "{task}");
    let output = task["result"]["output"].as_str().unwrap();
    assert!(
        output.contains("BLOCKED fork bomb: refused after"),
        "{output}"
    );
    assert!(output.contains("BLOCKED memory hog"), "{output}");
    assert!(output.contains("stdout after 100 MB of stderr"), "{output}");
    assert!(!output.contains("LEAK"), "{output}");
    assert!(
        output.len() < 200 * 1024,
        "the output is bounded: {} bytes",
        output.len()
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "no deadlock: {:?}",
        started.elapsed()
    );
    // The node is unaffected: it answers, and runs the next task.
    let health = awc::Client::new()
        .get(format!("{}/healthz", node.base))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
}

/// The examples' own suites pass inside the sandbox: Python with pytest, Rust with cargo.
#[actix_rt::test]
async fn the_examples_python_and_rust_suites_pass_in_the_sandbox() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for (example, command) in [
        ("python-hello", vec!["python3", "-m", "pytest", "-q"]),
        ("rust-hello", vec!["cargo", "test", "--quiet", "--offline"]),
    ] {
        let dir = TempDir::new();
        let copy = dir.path().join(example);
        crate::devops::copy_dir(&root.join(example), &copy);
        let command: Vec<String> = command.into_iter().map(str::to_owned).collect();
        let run = sandboxed(
            &copy,
            &command,
            Duration::from_secs(300),
            std::env::vars().collect(),
        )
        .await
        .unwrap();
        assert!(run.passed, "{example}: {}", run.output);
    }
}

/// Where bubblewrap cannot be had, repository code is refused, saying how to run it anyway;
/// `sandbox.mode = "none"` runs it, and a node so configured says so at start.
#[actix_rt::test]
async fn without_bubblewrap_repository_code_is_refused_never_run_unconfined() {
    let dir = TempDir::new();
    let scratch = Scratch::new().unwrap();
    let command = vec!["true".to_owned()];
    let job = || Job {
        dir: dir.path(),
        command: &command,
        timeout: Duration::from_secs(10),
        network: false,
        environment: std::env::vars().collect(),
        scratch: &scratch,
    };
    let missing = Sandbox::new(sandbox::SandboxConfig {
        bwrap: "/nonexistent/bwrap".into(),
        ..Default::default()
    });
    let refused = missing.run(job()).await.unwrap_err();
    assert!(matches!(refused, SandboxError::Unavailable(_)), "{refused}");
    assert!(
        refused.to_string().contains("sandbox.mode = \"none\""),
        "{refused}"
    );
    let unconfined = Sandbox::new(sandbox::SandboxConfig {
        mode: sandbox::SandboxMode::None,
        bwrap: "/nonexistent/bwrap".into(),
        ..Default::default()
    });
    assert!(unconfined.run(job()).await.unwrap().passed);

    // A test task on a node without bubblewrap fails with the reason.
    let repo = crate::support::fixture_repo();
    let app = crate::support::TestApp::spawn_with(|s| {
        s.sandbox.bwrap = "/nonexistent/bwrap".into();
        s.developer.test_command = Some(vec!["true".into()]);
    })
    .await;
    let id = app
        .submit(serde_json::json!({ "kind": "test", "repo": repo.path().to_string_lossy() }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(task["error"]["code"], "sandbox_unavailable", "{task}");

    // A node told to run without isolation says so when it starts.
    use std::process::{Command, Stdio};
    let data = TempDir::new();
    let (out, err) = (data.path().join("out"), data.path().join("err"));
    let _up = crate::support::Process(
        Command::new(env!("CARGO_BIN_EXE_orion"))
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path().join("d"))
            .env("RUST_LOG", "warn")
            .env("ORION__SANDBOX__MODE", "none")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap(),
    );
    crate::support::eventually("the warning", Duration::from_secs(30), || async {
        let logged = std::fs::read_to_string(&err).ok()?;
        logged
            .contains("sandbox.mode = \"none\": repositories' tests run without isolation")
            .then_some(())
    })
    .await;
}

/// The setup step (a suite's dependencies) gets the network only where
/// `sandbox.setup_network` allows it; the tests never do.
#[actix_rt::test]
async fn only_an_allowed_setup_step_reaches_the_network_never_the_tests() {
    // Fails, naming them, where any interface but loopback is there.
    let isolated: Vec<String> = [
        "python3",
        "-c",
        "import socket, sys\nnames = [n for _, n in socket.if_nameindex() if n != 'lo']\nprint('interfaces:', names)\nsys.exit(1 if names else 0)",
    ]
    .map(str::to_owned)
    .to_vec();
    let repo = crate::support::fixture_repo();
    // Embedded and without auth, a setup step on the network could call the API as an
    // admin: refused at start.
    let mut open = crate::support::test_settings();
    let open_dir = TempDir::new();
    open.data_dir = open_dir.path().to_owned();
    open.sandbox.setup_network = true;
    let refused = orion::app::start_embedded(&open)
        .await
        .err()
        .expect("refused");
    assert!(
        refused.to_string().contains("sandbox.setup_network"),
        "{refused}"
    );
    for allowed in [false, true] {
        let (setup, test) = (isolated.clone(), isolated.clone());
        let app = crate::support::TestApp::spawn_with(move |s| {
            crate::support::with_jwt_auth(s);
            s.sandbox.setup_network = allowed;
            s.developer.setup_command = Some(setup);
            s.developer.test_command = Some(test);
        })
        .await;
        let admin = crate::support::client_as("admin");
        let id = crate::support::submit_to(
            &admin,
            &app.base,
            &serde_json::json!({ "kind": "test", "repo": repo.path().to_string_lossy() }),
        )
        .await;
        let task =
            crate::support::eventually("the test task to end", Duration::from_secs(60), || async {
                let task =
                    crate::support::get_json(&admin, app.url(&format!("/v1/tasks/{id}"))).await?;
                ["completed", "failed"]
                    .contains(&task["status"].as_str()?)
                    .then_some(task)
            })
            .await;
        if allowed {
            // The setup step saw the host's interfaces (and so refused to go on, by design).
            assert_eq!(task["error"]["code"], "setup_failed", "{task}");
            assert!(
                task["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("interfaces: ['"),
                "{task}"
            );
        } else {
            assert_eq!(task["status"], "completed", "{task}");
            assert_eq!(
                task["result"]["passed"], true,
                "the tests saw loopback only: {task}"
            );
        }
    }
}
