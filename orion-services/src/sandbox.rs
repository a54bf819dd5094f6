//! Running code Orion did not write (a repository's tests, its setup step) confined.
//!
//! **Mechanism: bubblewrap** (`bwrap`, Debian's `bubblewrap`; `scripts/services.sh` and the
//! Dockerfile install it). It is a small, setuid-free binary that Flatpak and many CI
//! runners depend on, it needs nothing but unprivileged user namespaces, and it keeps the
//! sandbox's shape in one command line that a reader can check. An in-process crate would
//! have to fork from a multi-threaded async process (unsafe, and forbidden in this
//! workspace); hakoniwa's licence (LGPL) would need a check this one does not.
//!
//! A run gets new user, PID (with its own `/proc`), network (loopback only: nothing outside
//! the sandbox is reachable, not even the host's loopback), mount, IPC and UTS namespaces. Its
//! file system: the system (`/usr`, `/etc`, the toolchains named by `PATH` and the
//! toolchain variables) read-only; the worktree and a private scratch directory (`/tmp`,
//! which is also `HOME`) writable; nothing else of the host's files: no data, work or clone
//! directory of the node, no home. The environment is [`ALLOWED_ENV`] only. The run ends when
//! its time is up, and since the PID namespace dies with its first process, nothing it
//! started outlives it (`setsid`, double forks, `nohup`). Limits inside: CPU time, address
//! space, processes, file size (`prlimit`); output is read from both pipes at once into
//! bounded buffers.
//!
//! When the node runs as root, the sandbox's user maps to root outside, which would make it
//! the owner of root's files in the read-only trees: files and directories of `/etc` that
//! others may not read are hidden, and the process limit (which the kernel does not apply to
//! root) is a cgroup's `pids.max` where the pids controller is writable.
//!
//! `sandbox.mode = "none"` runs without isolation (a scrubbed environment and limits only);
//! it exists for hosts that cannot make namespaces, only by explicit configuration, and the
//! node warns at start. Where bubblewrap is missing or cannot make its namespaces, running a
//! repository's code is refused with an error that says so. It never falls back silently.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// What the sandbox inherits of the node's environment: where the toolchains are, nothing
/// else.
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
/// Variables naming toolchain directories, bound read-only when set.
const TOOLCHAIN_DIRS: &[&str] = &[
    "RUSTUP_HOME",
    "GOROOT",
    "JAVA_HOME",
    "PYENV_ROOT",
    "VIRTUAL_ENV",
    "NODE_PATH",
];
/// The system's read-only trees.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc", "/opt",
];
/// Where the scratch directory appears inside.
const SCRATCH: &str = "/tmp";
/// How long past its timeout a run may take to be torn down.
const GRACE: Duration = Duration::from_secs(5);
/// The sandbox's user inside.
const SANDBOX_UID: &str = "65534";
/// The programs around a run, by absolute path: a repository's own `sh` or `prlimit` (in a
/// relative `PATH` entry) is never the one run.
const SH: &str = "/bin/sh";
const PRLIMIT: &str = "/usr/bin/prlimit";
/// Trees scanned for what others may not read, which is hidden inside.
const SCANNED_FOR_SECRETS: &[&str] = &["/etc", "/opt"];

/// `sandbox.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Namespaces with bubblewrap.
    #[default]
    Bwrap,
    /// No isolation: only for hosts that cannot make namespaces, by explicit choice.
    None,
}

/// `[sandbox]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// Whether the setup step (installing a suite's dependencies) may reach the network.
    /// The tests themselves never may.
    pub setup_network: bool,
    /// CPU seconds a run may use.
    pub cpu_secs: u64,
    /// Address space a process may map, in MiB.
    pub memory_mb: u64,
    /// Processes (and threads) at once.
    pub max_processes: u64,
    /// The largest file a run may write, in MiB.
    pub file_mb: u64,
    /// Of each output stream, the last this many bytes are kept.
    pub output_bytes: usize,
    /// The bubblewrap program.
    pub bwrap: PathBuf,
    /// The node's own directories (its data directory): never bound, not even as part of a
    /// toolchain directory.
    #[serde(skip)]
    pub denied: Vec<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Bwrap,
            setup_network: false,
            cpu_secs: 1800,
            memory_mb: 4096,
            max_processes: 512,
            file_mb: 1024,
            output_bytes: 64 * 1024,
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            denied: Vec::new(),
        }
    }
}

/// How a run went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRun {
    pub command: Vec<String>,
    pub passed: bool,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Standard output then standard error, each cut to its last `sandbox.output_bytes`.
    pub output: String,
    pub duration_ms: u64,
}

/// Why a command could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("no test command configured or detected in the repository")]
    NoCommand,
    #[error("could not start `{command}`: {reason}")]
    CannotStart { command: String, reason: String },
    #[error(
        "the sandbox cannot be made here ({0}); Orion does not run a repository's code \
         unconfined unless told to: install bubblewrap and allow unprivileged user namespaces, \
         or set sandbox.mode = \"none\" (ORION__SANDBOX__MODE=none) to run it without isolation"
    )]
    Unavailable(String),
}

/// The test command a repository's files suggest: its first build system's (see
/// [`crate::devops::detect`]).
pub fn detect(dir: &Path) -> Option<Vec<String>> {
    crate::devops::detect(dir)
        .into_iter()
        .next()
        .map(|b| b.test)
}

/// The setup commands (dependencies) a repository's files suggest.
pub fn detect_setup(dir: &Path) -> Vec<Vec<String>> {
    crate::devops::detect(dir)
        .into_iter()
        .next()
        .map(|b| b.setup)
        .unwrap_or_default()
}

/// A private scratch directory for one task's runs (its setup and its tests share it),
/// removed when dropped.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("orion-sandbox-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("home"))?;
        // Only the node (and so the sandbox's user) may enter it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One command to run.
#[derive(Debug)]
pub struct Job<'a> {
    /// The worktree: the command's directory, writable.
    pub dir: &'a Path,
    pub command: &'a [String],
    pub timeout: Duration,
    /// Network beyond the sandbox's own loopback (the setup step, where allowed).
    pub network: bool,
    /// The node's environment, filtered to [`ALLOWED_ENV`].
    pub environment: Vec<(String, String)>,
    pub scratch: &'a Scratch,
}

/// Runs repository code as configured.
#[derive(Clone, Debug, Default)]
pub struct Sandbox {
    pub config: SandboxConfig,
}

/// Whether this process is root (the sandbox's user then maps to root outside).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// What of `dir` others may not read (its mode lacks the read bit for others, or, for a
/// directory, the search bit), recursively, without following links.
fn unreadable_by_others(dir: &Path, out: &mut Vec<(PathBuf, bool)>) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let mode = meta.permissions().mode();
        if meta.is_dir() {
            if mode & 0o005 != 0o005 {
                out.push((entry.path(), true));
            } else {
                unreadable_by_others(&entry.path(), out);
            }
        } else if meta.is_file() && mode & 0o004 == 0 {
            out.push((entry.path(), false));
        }
    }
}

/// Clears the setuid and setgid bits of every file below `dir` (without following links).
fn strip_set_id_bits(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            strip_set_id_bits(&entry.path());
        } else if meta.is_file() && meta.permissions().mode() & 0o6000 != 0 {
            let mode = meta.permissions().mode() & !0o6000;
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode));
        }
    }
}

/// The last `limit` bytes of a stream, and how many came before them.
async fn tail_of(
    stream: Option<impl tokio::io::AsyncRead + Unpin>,
    limit: usize,
) -> (Vec<u8>, u64) {
    let Some(mut stream) = stream else {
        return (Vec::new(), 0);
    };
    let (mut kept, mut dropped) = (
        std::collections::VecDeque::with_capacity(limit.min(1 << 20)),
        0u64,
    );
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend(&buf[..n]);
                while kept.len() > limit {
                    let excess = kept.len() - limit;
                    kept.drain(..excess);
                    dropped += excess as u64;
                }
            }
        }
    }
    (kept.into_iter().collect(), dropped)
}

fn text(bytes: &[u8], dropped: u64) -> String {
    let body = String::from_utf8_lossy(bytes);
    if dropped > 0 {
        format!("[… {dropped} bytes cut …]\n{body}")
    } else {
        body.into_owned()
    }
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        Self { config }
    }

    /// The `prlimit` words that bound a run.
    fn limits(&self) -> Vec<String> {
        let c = &self.config;
        vec![
            PRLIMIT.into(),
            format!("--cpu={}", c.cpu_secs),
            format!("--as={}", c.memory_mb * 1024 * 1024),
            format!("--nproc={}", c.max_processes),
            format!("--fsize={}", c.file_mb * 1024 * 1024),
            "--".into(),
        ]
    }

    /// The bubblewrap command line around `job` (everything before the job's own words).
    fn bwrap_words(&self, job: &Job<'_>, env: &[(String, String)]) -> Vec<String> {
        let mut words: Vec<String> = vec![self.config.bwrap.display().to_string()];
        words.extend(
            [
                "--unshare-user",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-cgroup-try",
                "--die-with-parent",
                "--new-session",
                "--hostname",
                "orion-sandbox",
                "--uid",
                SANDBOX_UID,
                "--gid",
                SANDBOX_UID,
                "--cap-drop",
                "ALL",
                // No namespaces of its own inside: the kernel surface they open stays shut.
                "--disable-userns",
            ]
            .map(str::to_owned),
        );
        if !job.network {
            words.push("--unshare-net".into());
        }
        let bind = |words: &mut Vec<String>, how: &str, path: &Path| {
            words.extend([
                how.to_owned(),
                path.display().to_string(),
                path.display().to_string(),
            ]);
        };
        for dir in SYSTEM_DIRS {
            bind(&mut words, "--ro-bind-try", Path::new(dir));
        }
        // The toolchains: the directories of PATH outside the system's, and those the
        // toolchain variables name.
        let mut toolchains: Vec<PathBuf> = Vec::new();
        for (key, value) in env {
            if key == "PATH" {
                toolchains.extend(std::env::split_paths(value));
            } else if TOOLCHAIN_DIRS.contains(&key.as_str()) {
                toolchains.push(PathBuf::from(value));
            }
        }
        // A toolchain directory is bound only where it holds no home directory or data of
        // the node's: `/`, a home, or what holds a denied directory would expose them.
        let home = job
            .environment
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| PathBuf::from(v));
        toolchains.retain(|p| {
            p.is_absolute()
                && p.is_dir()
                && p.parent().is_some()
                && !SYSTEM_DIRS.iter().any(|s| p.starts_with(s))
                && home.as_ref().is_none_or(|h| !h.starts_with(p))
                && !self
                    .config
                    .denied
                    .iter()
                    .any(|d| d.starts_with(p) || p.starts_with(d))
        });
        toolchains.sort();
        toolchains.dedup();
        for dir in &toolchains {
            bind(&mut words, "--ro-bind", dir);
        }
        {
            // What others may not read is hidden: the sandbox's user is the node's own user
            // outside (root, where the node is root), so it could read the node's secret
            // files of these trees.
            let mut hidden = Vec::new();
            for tree in SCANNED_FOR_SECRETS {
                unreadable_by_others(Path::new(tree), &mut hidden);
            }
            for (path, is_dir) in hidden {
                if is_dir {
                    words.extend(["--tmpfs".to_owned(), path.display().to_string()]);
                } else {
                    words.extend([
                        "--ro-bind".to_owned(),
                        "/dev/null".to_owned(),
                        path.display().to_string(),
                    ]);
                }
            }
        }
        words.extend(["--proc", "/proc", "--dev", "/dev"].map(str::to_owned));
        words.extend([
            "--bind".to_owned(),
            job.scratch.path().display().to_string(),
            SCRATCH.to_owned(),
        ]);
        bind(&mut words, "--bind", job.dir);
        // The sandbox's own root (where the mount points were made) is read-only too.
        words.extend(["--remount-ro".to_owned(), "/".to_owned()]);
        words.extend([
            "--chdir".to_owned(),
            job.dir.display().to_string(),
            "--".to_owned(),
        ]);
        words
    }

    /// Checks once per process (and program) that bubblewrap can make its namespaces here.
    async fn available(&self) -> Result<(), SandboxError> {
        type Probes = std::sync::Mutex<std::collections::HashMap<PathBuf, Result<(), String>>>;
        static PROBES: std::sync::OnceLock<Probes> = std::sync::OnceLock::new();
        let probes = PROBES.get_or_init(Default::default);
        let known = probes
            .lock()
            .expect("not poisoned")
            .get(&self.config.bwrap)
            .cloned();
        let result = match known {
            Some(result) => result,
            None => {
                let result = self.probe().await;
                probes
                    .lock()
                    .expect("not poisoned")
                    .insert(self.config.bwrap.clone(), result.clone());
                result
            }
        };
        result.map_err(SandboxError::Unavailable)
    }

    /// Runs `true` in the namespaces a run gets.
    async fn probe(&self) -> Result<(), String> {
        let out = tokio::process::Command::new(&self.config.bwrap)
            .args([
                "--unshare-user",
                "--unshare-pid",
                "--unshare-net",
                "--unshare-ipc",
                "--unshare-uts",
                "--die-with-parent",
                "--ro-bind",
                "/",
                "/",
                "--proc",
                "/proc",
                "true",
            ])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| {
                format!(
                    "bubblewrap ({}) cannot be run: {e}",
                    self.config.bwrap.display()
                )
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "bubblewrap cannot make namespaces: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A fresh cgroup whose `pids.max` caps a run's processes (cgroup v1's pids controller
    /// or cgroup v2), or `None` where none can be made.
    fn pids_cgroup(&self) -> Option<PathBuf> {
        let name = format!("orion-sandbox-{}", uuid::Uuid::new_v4().simple());
        for root in [
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            let root = Path::new(root);
            if !root.join("cgroup.procs").exists() {
                continue;
            }
            let group = root.join(&name);
            if std::fs::create_dir(&group).is_err() {
                continue;
            }
            if std::fs::write(
                group.join("pids.max"),
                self.config.max_processes.to_string(),
            )
            .is_ok()
            {
                return Some(group);
            }
            let _ = std::fs::remove_dir(&group);
        }
        None
    }

    /// Runs `job` confined; its output and verdict, or why it could not run.
    pub async fn run(&self, job: Job<'_>) -> Result<TestRun, SandboxError> {
        let Some((program, _)) = job.command.split_first() else {
            return Err(SandboxError::NoCommand);
        };
        // Bound and entered by its absolute path (a relative data directory makes a relative
        // worktree, which would be read against another directory inside).
        let dir = std::path::absolute(job.dir).map_err(|e| SandboxError::CannotStart {
            command: program.clone(),
            reason: format!("{}: {e}", job.dir.display()),
        })?;
        let job = Job { dir: &dir, ..job };
        let mut env: Vec<(String, String)> = job
            .environment
            .iter()
            .filter(|(k, _)| ALLOWED_ENV.contains(&k.as_str()))
            .cloned()
            .collect();
        let mut words: Vec<String> = Vec::new();
        let mut cgroup = None;
        let (home, tmp) = match self.config.mode {
            SandboxMode::Bwrap => {
                self.available().await?;
                words = self.bwrap_words(&job, &env);
                // The kernel does not limit root's processes (`--nproc`): a root node needs a
                // pids cgroup, and refuses to run without one.
                cgroup = self.pids_cgroup();
                if cgroup.is_none() && running_as_root() {
                    return Err(SandboxError::Unavailable(
                        "the node runs as root, whose processes the kernel does not limit, and no \
                         pids cgroup can be made (run the node as another user, or give it a \
                         writable cgroup)"
                            .into(),
                    ));
                }
                (format!("{SCRATCH}/home"), SCRATCH.to_owned())
            }
            SandboxMode::None => (
                job.scratch.path().join("home").display().to_string(),
                job.scratch.path().display().to_string(),
            ),
        };
        words.extend(self.limits());
        words.extend(job.command.iter().cloned());
        // Only absolute directories stay on PATH: a relative one would name the repository.
        for (key, value) in env.iter_mut() {
            if key == "PATH" {
                let kept: Vec<PathBuf> = std::env::split_paths(value)
                    .filter(|p| p.is_absolute())
                    .collect();
                *value = std::env::join_paths(kept)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
            }
        }
        // Writable caches live in the scratch directory, not in the read-only toolchains.
        env.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "CARGO_HOME" | "GOPATH" | "GOCACHE" | "GOMODCACHE"
            )
        });
        env.extend([
            ("CARGO_HOME".to_owned(), format!("{tmp}/cargo")),
            ("GOPATH".to_owned(), format!("{tmp}/go")),
            ("GOCACHE".to_owned(), format!("{tmp}/go-cache")),
        ]);
        let mut child = match &cgroup {
            // The shell joins the cgroup, then becomes bubblewrap: everything inside is in it.
            Some(group) => {
                let mut c = tokio::process::Command::new(SH);
                c.arg("-c")
                    .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
                    .arg(group)
                    .args(&words);
                c
            }
            None => {
                let mut c = tokio::process::Command::new(&words[0]);
                c.args(&words[1..]);
                c
            }
        };
        child
            .current_dir(job.dir)
            .env_clear()
            .envs(env)
            .env("HOME", &home)
            .env("TMPDIR", &tmp)
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = child.spawn().map_err(|e| SandboxError::CannotStart {
            command: program.clone(),
            reason: e.to_string(),
        })?;
        let limit = self.config.output_bytes;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        // Both pipes at once: a suite that fills one while the other is read never blocks.
        let collect = async { tokio::join!(tail_of(stdout, limit), tail_of(stderr, limit)) };
        let outcome =
            tokio::time::timeout(job.timeout, async { tokio::join!(collect, child.wait()) }).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let result = match outcome {
            Ok((((out, out_cut), (err, err_cut)), status)) => {
                let status = status.map_err(|e| SandboxError::CannotStart {
                    command: program.clone(),
                    reason: e.to_string(),
                })?;
                // (bubblewrap's own failures were ruled out by the probe; what the run printed
                // is the run's, whatever it says.)
                let mut output = text(&out, out_cut);
                output.push_str(&text(&err, err_cut));
                Ok(TestRun {
                    command: job.command.to_vec(),
                    passed: status.success(),
                    exit_code: status.code(),
                    timed_out: false,
                    output,
                    duration_ms,
                })
            }
            Err(_) => {
                // Killing bubblewrap kills the sandbox's first process, and with it the PID
                // namespace and everything in it.
                let _ = tokio::time::timeout(GRACE, child.kill()).await;
                Ok(TestRun {
                    command: job.command.to_vec(),
                    passed: false,
                    exit_code: None,
                    timed_out: true,
                    output: format!("timed out after {} s", job.timeout.as_secs_f64()),
                    duration_ms,
                })
            }
        };
        if running_as_root() {
            // Files the run made setuid or setgid would be root's outside: not one stays so.
            strip_set_id_bits(job.dir);
            strip_set_id_bits(job.scratch.path());
        }
        if let Some(group) = cgroup {
            // Empty once the run is over; removing it may wait for the last exit.
            for _ in 0..50 {
                if std::fs::remove_dir(&group).is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        result
    }
}
