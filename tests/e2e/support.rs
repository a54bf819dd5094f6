//! What the tests share: service addresses, fresh databases and prefixes, temporary
//! repositories, the in-process app, and polling with a deadline.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orion::settings::Settings;
use sea_orm::{ConnectionTrait, Database};

/// The NATS server the tests use (`ORION_TEST_NATS_URL` overrides).
pub fn nats_url() -> String {
    std::env::var("ORION_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The Redis the tests use (`ORION_TEST_REDIS_URL` overrides).
pub fn redis_url() -> String {
    std::env::var("ORION_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The Postgres server the tests use, without a database (`ORION_TEST_POSTGRES_URL` overrides).
pub fn postgres_server() -> String {
    std::env::var("ORION_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A chat-completions answer as the OpenAI API sends it: `content` from `model`, for 1200
/// prompt and 300 completion tokens.
pub fn completion(model: &str, content: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500 }
    })
}

/// The first line a child process prints on its standard output (its address, for the
/// servers), within 30 s. The rest of its output is read and dropped, so the child never
/// writes into a closed pipe.
pub async fn first_line(child: &mut std::process::Child, what: &str) -> String {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (first, line) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = first.send(lines.next());
        for _ in lines {}
    });
    tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .unwrap_or_else(|_| panic!("{what} starts"))
        .unwrap_or_else(|_| panic!("{what} printed nothing"))
        .unwrap_or_else(|| panic!("{what} printed nothing"))
        .unwrap()
}

/// `GET url` as JSON; `None` while there is no answer (the server may be starting).
pub async fn get_json(client: &awc::Client, url: String) -> Option<serde_json::Value> {
    let mut response = client.get(url).send().await.ok()?;
    response
        .json::<serde_json::Value>()
        .limit(16 * 1024 * 1024)
        .await
        .ok()
}

/// Submits `task` to the gateway at `base` (202 expected) and returns the new task's id.
pub async fn submit_to(client: &awc::Client, base: &str, task: &serde_json::Value) -> String {
    let mut response = client
        .post(format!("{base}/v1/tasks"))
        .send_json(task)
        .await
        .expect("the gateway answers");
    assert_eq!(
        response.status().as_u16(),
        202,
        "the submission is accepted"
    );
    response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .expect("a task id")
        .to_owned()
}

/// The value of the sample `name` whose labels include every `(key, value)` of `labels` in a
/// Prometheus text exposition; `None` where there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// A fake OpenAI-compatible server whose chat completions all answer `answer` (from
/// `gpt-test`).
pub async fn model_answering(answer: &str) -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(completion("gpt-test", answer)),
        )
        .mount(&server)
        .await;
    server
}

/// The HS256 secret, issuer and audience of the tests that turn auth on.
pub const JWT_SECRET: &str = "orion-test-jwt-secret-0123456789abcdef";
pub const JWT_ISSUER: &str = "https://id.orion.test";
pub const JWT_AUDIENCE: &str = "orion";

/// A JWT signed with `secret` carrying `claims` as they are.
pub fn jwt_with(secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a test token")
}

/// The claims of a valid token for `role`, ten minutes long, subject `test-<role>`.
pub fn claims(role: &str) -> serde_json::Value {
    let now = jsonwebtoken::get_current_timestamp();
    serde_json::json!({
        "sub": format!("test-{role}"), "role": role, "iss": JWT_ISSUER, "aud": JWT_AUDIENCE,
        "iat": now, "exp": now + 600,
    })
}

/// A valid token for `role`.
pub fn token(role: &str) -> String {
    jwt_with(JWT_SECRET, &claims(role))
}

/// An HTTP client that sends a valid token for `role`.
pub fn client_as(role: &str) -> awc::Client {
    awc::Client::builder().bearer_auth(token(role)).finish()
}

/// The environment that turns JWT auth on in a child process, as the tests' tokens expect.
pub fn auth_env() -> Vec<(&'static str, String)> {
    vec![
        ("ORION__AUTH__MODE", "jwt".to_owned()),
        ("ORION__AUTH__JWT__SECRET", JWT_SECRET.to_owned()),
        ("ORION__AUTH__JWT__ISSUER", JWT_ISSUER.to_owned()),
        ("ORION__AUTH__JWT__AUDIENCE", JWT_AUDIENCE.to_owned()),
    ]
}

/// Turns JWT auth on in an in-process app's settings, as the tests' tokens expect.
pub fn with_jwt_auth(settings: &mut Settings) {
    settings.auth.mode = orion_gateway::auth::AuthMode::Jwt;
    settings.auth.jwt.secret = Some(JWT_SECRET.into());
    settings.auth.jwt.issuer = Some(JWT_ISSUER.into());
    settings.auth.jwt.audience = Some(JWT_AUDIENCE.into());
}

/// A child process killed when the test ends, however it ends.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on loopback that nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a `nats-server` of the test's own with `args`, once it listens on `port`.
pub async fn nats_server(port: u16, args: &[&std::ffi::OsStr]) -> Process {
    let mut command = std::process::Command::new("nats-server");
    command.args(args);
    listening(command, port, Duration::from_secs(10))
        .await
        .expect("nats-server to listen (it is installed by scripts/services.sh)")
}

/// Starts `command` (its output discarded) and waits until it listens on `port` on
/// loopback; `None` if it exits or does not listen `within`.
pub async fn listening(
    mut command: std::process::Command,
    port: u16,
    within: Duration,
) -> Option<Process> {
    let mut process = Process(
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?,
    );
    let until = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < until {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(process);
        }
        if process.0.try_wait().ok()?.is_some() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// Writes `orion.toml` in `dir` for an Orion process of a test: a gateway on a free loopback
/// port, the fake `model` (as `gpt-test`), and `sh -c <test_script>` as the test command.
pub fn model_config(dir: &Path, model: &wiremock::MockServer, test_script: &str) -> PathBuf {
    let config = dir.join("orion.toml");
    let test_command = serde_json::json!(["sh", "-c", test_script]);
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[llm]\nbase_url = \"{}/v1\"\nmodel = \"gpt-test\"\n[developer]\ntest_command = {test_command}\n",
            model.uri()
        ),
    )
    .expect("write the config");
    config
}

/// A name no other test uses.
pub fn unique(stem: &str) -> String {
    format!("{stem}{}", uuid::Uuid::new_v4().simple())
}

/// A fresh Postgres database, dropped by [`PgDatabase::drop_now`].
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let name = unique("orion_test_");
        let admin = Database::connect(format!("{}/postgres", postgres_server()))
            .await
            .expect("connect to Postgres");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create database");
        Self {
            url: format!("{}/{name}", postgres_server()),
            name,
        }
    }

    pub async fn drop_now(self) {
        let admin = Database::connect(format!("{}/postgres", postgres_server()))
            .await
            .expect("connect to Postgres");
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop database");
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("orion-test-"));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir.canonicalize().expect("canonical temp dir"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.0.join("orion.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small repository with known measures: see [`FIXTURE_RUST`] and [`FIXTURE_PYTHON`].
pub fn fixture_repo() -> TempDir {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::create_dir_all(dir.path().join("target")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), FIXTURE_RUST).unwrap();
    std::fs::write(dir.path().join("tool.py"), FIXTURE_PYTHON).unwrap();
    // Skipped by rule: build output, hidden folders, and files over 1 MiB (counted as skipped).
    std::fs::write(dir.path().join("generated.py"), "x = 1\n".repeat(200_000)).unwrap();
    std::fs::write(dir.path().join("target/gen.rs"), "fn generated() {}\n").unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/hook.py"), "def hook():\n    pass\n").unwrap();
    dir
}

/// 8 lines: 5 code, 2 comment, 1 blank; 2 functions (one is a method).
pub const FIXTURE_RUST: &str = "// A counter.\nstruct C(u32);\n\nimpl C {\n    /* bump */\n    fn bump(&mut self) { self.0 += 1; } // inline\n}\nfn main() {}\n";
/// 7 lines: 5 code, 1 comment, 1 blank; 3 functions (one nested).
pub const FIXTURE_PYTHON: &str = "# tool\ndef outer(x):\n    def inner(y):\n        return y\n\n    return inner(x)\ndef other(): pass\n";

/// Settings for a test app: the embedded defaults with `config/test.toml` on top.
pub fn test_settings() -> Settings {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/test.toml");
    Settings::load(Some(&file)).expect("test settings load")
}

/// Polls `check` until it yields a value or `deadline` passes.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls a gateway at `base` until task `id` is `status`, within `deadline`; the task.
pub async fn wait_for_status(
    client: &awc::Client,
    base: &str,
    id: &str,
    status: &str,
    deadline: Duration,
) -> serde_json::Value {
    eventually(&format!("task {id} to be {status}"), deadline, || async {
        let task = get_json(client, format!("{base}/v1/tasks/{id}")).await?;
        (task["status"] == status).then_some(task)
    })
    .await
}

/// The whole app in this process: embedded mode on SQLite and the in-process bus.
pub struct TestApp {
    pub base: String,
    pub client: awc::Client,
    pub services: orion::app::Services,
    pub node: orion_actors::NodeHandle,
    pub data: TempDir,
}

impl TestApp {
    /// Starts Orion as `orion up` does, on port 0, with a fresh data directory.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        // Logs go to the test's captured output, shown when it fails.
        let _ = orion::telemetry::init(false, false, "orion-test");
        let data = TempDir::new();
        let mut settings = test_settings();
        settings.data_dir = data.path().to_owned();
        adjust(&mut settings);
        let orion::app::Embedded {
            services,
            node,
            gateway,
        } = orion::app::start_embedded(&settings)
            .await
            .expect("start embedded Orion");
        let base = format!("http://{}", gateway.addr);
        actix_rt::spawn(gateway.server);
        Self {
            base,
            client: awc::Client::new(),
            services,
            node,
            data,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET and parse JSON, returning status and body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let mut response = self.client.get(self.url(path)).send().await.expect("GET");
        let body = response.body().limit(16 * 1024 * 1024).await.expect("body");
        (
            response.status().as_u16(),
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// GET a text document (e.g. `/metrics`): status, content type and body.
    pub async fn get_text(&self, path: &str) -> (u16, String, String) {
        let mut response = self.client.get(self.url(path)).send().await.expect("GET");
        let body = response.body().limit(16 * 1024 * 1024).await.expect("body");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (
            response.status().as_u16(),
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// POST JSON, returning status, content type and body.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, String, serde_json::Value) {
        self.post_raw(path, "application/json", body.to_string().into_bytes())
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, String, serde_json::Value) {
        let mut response = self
            .client
            .post(self.url(path))
            .insert_header(("Content-Type", content_type))
            .send_body(body)
            .await
            .expect("POST");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.body().await.expect("body");
        (
            response.status().as_u16(),
            content_type,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Submits a task and returns its id.
    pub async fn submit(&self, body: serde_json::Value) -> String {
        let (status, _, task) = self.post_json("/v1/tasks", &body).await;
        assert_eq!(status, 202, "submission answered {task}");
        task["id"].as_str().expect("task id").to_owned()
    }

    /// Waits until the task reaches `status`, and returns it.
    pub async fn wait_for(&self, id: &str, status: &str) -> serde_json::Value {
        eventually(
            &format!("task {id} to be {status}"),
            Duration::from_secs(30),
            || async {
                let (_, task) = self.get(&format!("/v1/tasks/{id}")).await;
                (task["status"] == status).then_some(task)
            },
        )
        .await
    }
}

/// Runs git in `dir` with a fixed identity, failing the test if git fails.
pub fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Orion Test")
        .env("GIT_AUTHOR_EMAIL", "test@orion.invalid")
        .env("GIT_COMMITTER_NAME", "Orion Test")
        .env("GIT_COMMITTER_EMAIL", "test@orion.invalid")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("git is installed");
    assert!(status.success(), "git {args:?} failed");
}

/// A Python function with known complexity: cyclomatic 13 (1 + for, if, and, while, if, or,
/// elif, if, or, or, for, if), cognitive 18 (for 1, if 2, and 1, while 3, if 4, or 1, elif 1,
/// if 1, or-sequence 1, for 1, if 2), nesting 4.
pub const TANGLED: &str = "def tangled(a, b, c):\n    for x in a:\n        if x and b:\n            while c:\n                if x > 1 or c > 2:\n                    c -= 1\n                elif x:\n                    break\n    if a or b or c:\n        return 1\n    for y in b:\n        if y:\n            return y\n    return 0\n";

/// A git repository with history: `app/core.py` changed in three commits (a hotspot),
/// `app/util.py` in one; `app/core.py` imports `app/util.py`.
pub fn git_fixture() -> TempDir {
    let dir = fixture_repo();
    let root = dir.path();
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::write(root.join("app/__init__.py"), "").unwrap();
    std::fs::write(root.join("app/util.py"), "def helper(x):\n    return x\n").unwrap();
    std::fs::write(
        root.join("app/core.py"),
        "from app.util import helper\n\ndef run(v):\n    return helper(v)\n",
    )
    .unwrap();
    std::fs::write(root.join(".gitignore"), "generated.py\nignored/\n").unwrap();
    std::fs::create_dir_all(root.join("ignored")).unwrap();
    std::fs::write(root.join("ignored/skip.py"), "def skipped():\n    pass\n").unwrap();
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "first"]);
    std::fs::write(
        root.join("app/core.py"),
        format!("from app.util import helper\n\ndef run(v):\n    return helper(v)\n\n{TANGLED}"),
    )
    .unwrap();
    git(root, &["commit", "-q", "-am", "tangle"]);
    std::fs::write(
        root.join("app/core.py"),
        format!(
            "from app.util import helper\n\ndef run(v):\n    return helper(v) + 1\n\n{TANGLED}"
        ),
    )
    .unwrap();
    git(root, &["commit", "-q", "-am", "tweak"]);
    dir
}

/// The commit `name` names in the (bare) repository `remote`, if any.
pub fn git_rev(remote: &Path, name: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(remote)
        .args(["rev-parse", "--verify", "-q", name])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The candidate refs of task `id` on `remote` (`refs/orion/candidates/<id>-<commit>`).
pub fn candidate_refs(remote: &Path, id: &str) -> Vec<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(remote)
        .args([
            "for-each-ref",
            "--format=%(refname)",
            "refs/orion/candidates/",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "git for-each-ref");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|r| r.starts_with(&orion_services::vcs::candidate_prefix(id)))
        .map(str::to_owned)
        .collect()
}

/// A bare remote cloned from [`git_fixture`], in a directory kept alive by the first value.
pub fn bare_remote() -> (TempDir, PathBuf) {
    let fixture = git_fixture();
    let dir = TempDir::new();
    let bare = bare_clone(&dir, fixture.path());
    (dir, bare)
}

/// A bare copy of the git fixture as `acme/widgets.git` in a directory of its own: a
/// repository a forge entry serves through its `remotes` prefix (the directory, with a
/// slash), as `acme/widgets`.
pub fn forge_remote() -> (TempDir, PathBuf) {
    let fixture = git_fixture();
    let dir = TempDir::new();
    std::fs::create_dir(dir.path().join("acme")).unwrap();
    let bare = bare_clone_as(&dir, fixture.path(), "acme/widgets.git");
    (dir, bare)
}

/// A bare clone of the repository at `work`, as `remote.git` in `dir`.
pub fn bare_clone(dir: &TempDir, work: &Path) -> PathBuf {
    bare_clone_as(dir, work, "remote.git")
}

/// A bare clone of the repository at `work`, as `name` in `dir`.
fn bare_clone_as(dir: &TempDir, work: &Path, name: &str) -> PathBuf {
    let bare = dir.path().join(name);
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            &work.to_string_lossy(),
            &bare.to_string_lossy(),
        ],
    );
    bare
}

/// The text of `spec` (`<rev>:<path>`, or a revision) in the bare repository `remote`.
pub fn show(remote: &Path, spec: &str) -> String {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(remote)
        .args(["show", spec])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pull request of a task, found through the task's events.
pub async fn pull_of(app: &TestApp, task: &str) -> serde_json::Value {
    let (_, events) = app.get(&format!("/v1/tasks/{task}/events")).await;
    let pull = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find_map(|e| e["data"]["pull"].as_str().map(str::to_owned))
        .expect("a pull");
    app.get(&format!("/v1/pulls/{pull}")).await.1
}

/// Runs `openssl` with `args` in `dir`, failing the test if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed (scripts/services.sh)");
    assert!(status.success(), "openssl {args:?}");
}

/// In `dir`: a certificate authority made for the test (`ca.pem`, `ca.key`) and a server
/// certificate it signed for `localhost` and 127.0.0.1, for serving TLS (`server.pem`,
/// `server.key`), valid for a day.
pub fn test_authority(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=orion-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// Runs `command` to its end and returns what it printed; its error output when it failed.
pub fn stdout_of(command: &mut std::process::Command) -> String {
    let out = command.output().expect("run the command");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}
