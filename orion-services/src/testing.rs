//! Running a repository's tests in a sandboxed child process.
//!
//! The sandbox: the command runs in the task's clone with a scrubbed environment (only
//! [`ALLOWED_ENV`] passes, so no model key, database URL or token of Orion's reaches code
//! written by a model), a private `HOME` and `TMPDIR`, a CPU-time and file-size limit (`ulimit`),
//! a timeout enforced by coreutils' `timeout`, which runs the command in a process group of
//! its own and kills that whole group (grandchildren included), and captured output (the
//! last [`MAX_OUTPUT_BYTES`]).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// What the sandbox inherits: where the toolchains are, nothing else.
pub const ALLOWED_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "TERM",
    "RUSTUP_HOME",
    "CARGO_HOME",
    "RUSTUP_TOOLCHAIN",
    "GOROOT",
    "GOPATH",
    "GOCACHE",
    "GOMODCACHE",
    "GOFLAGS",
    "JAVA_HOME",
    "PYENV_ROOT",
    "VIRTUAL_ENV",
    "NODE_PATH",
];
/// The output kept: the end, where test runners put their verdict.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// How long past its timeout a run may take to be torn down.
const GRACE: Duration = Duration::from_secs(5);
/// CPU seconds per test run.
const CPU_SECONDS: u32 = 1800;
/// The largest file a test run may write, in 1 KiB blocks.
const FILE_BLOCKS: u32 = 1024 * 1024;

/// How a test run went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRun {
    pub command: Vec<String>,
    pub passed: bool,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Standard output then standard error, cut to the last 64 KiB.
    pub output: String,
    pub duration_ms: u64,
}

/// Why tests could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("no test command configured or detected in the repository")]
    NoCommand,
    #[error("could not start `{command}`: {reason}")]
    CannotStart { command: String, reason: String },
}

/// The test command a repository's files suggest: its first build system's (see
/// [`crate::devops::detect`]).
pub fn detect(dir: &Path) -> Option<Vec<String>> {
    crate::devops::detect(dir)
        .into_iter()
        .next()
        .map(|b| b.test)
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(MAX_OUTPUT_BYTES);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Runs `command` in `dir` inside the sandbox, with `environment` (normally the process's
/// own) filtered to [`ALLOWED_ENV`].
pub async fn run(
    dir: &Path,
    command: &[String],
    timeout: Duration,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<TestRun, TestError> {
    let Some((program, _)) = command.split_first() else {
        return Err(TestError::NoCommand);
    };
    let home = dir.join(".orion-sandbox-home");
    let _ = std::fs::create_dir_all(&home);
    let script = format!(
        "ulimit -t {CPU_SECONDS} 2>/dev/null; ulimit -f {FILE_BLOCKS} 2>/dev/null; exec \"$@\""
    );
    let seconds = format!("{:.3}", timeout.as_secs_f64());
    let mut child = tokio::process::Command::new("timeout");
    child
        .args(["-s", "KILL", &seconds, "sh", "-c"])
        .arg(script)
        .arg("sh")
        .args(command)
        .current_dir(dir)
        .env_clear()
        .envs(
            environment
                .into_iter()
                .filter(|(k, _)| ALLOWED_ENV.contains(&k.as_str())),
        )
        .env("HOME", &home)
        .env("TMPDIR", &home)
        .env("CI", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = child.spawn().map_err(|e| TestError::CannotStart {
        command: program.clone(),
        reason: e.to_string(),
    })?;
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out).await;
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
        out.extend_from_slice(&err);
        out
    };
    // `timeout` ends the run; this outer limit only guards against `timeout` itself hanging.
    let outcome = tokio::time::timeout(timeout + GRACE, async {
        tokio::join!(collect, child.wait())
    })
    .await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let Ok((output, status)) = outcome else {
        let _ = child.kill().await;
        return Ok(timed_out(command, timeout, duration_ms));
    };
    let status = status.map_err(|e| TestError::CannotStart {
        command: program.clone(),
        reason: e.to_string(),
    })?;
    // `timeout` answers 124, or 137, or dies by its own SIGKILL to the group.
    let killed = matches!(status.code(), Some(124 | 137))
        || std::os::unix::process::ExitStatusExt::signal(&status) == Some(9);
    if killed && started.elapsed() >= timeout {
        return Ok(timed_out(command, timeout, duration_ms));
    }
    Ok(TestRun {
        command: command.to_vec(),
        passed: status.success(),
        exit_code: status.code(),
        timed_out: false,
        output: tail(&output),
        duration_ms,
    })
}

fn timed_out(command: &[String], timeout: Duration, duration_ms: u64) -> TestRun {
    TestRun {
        command: command.to_vec(),
        passed: false,
        exit_code: None,
        timed_out: true,
        output: format!("timed out after {} s", timeout.as_secs_f64()),
        duration_ms,
    }
}
