//! Real remotes: git over HTTPS, through `git http-backend` behind TLS with a certificate
//! authority made for the test. A develop task clones from and pushes to it with a stored
//! token when `vcs.ca_file` trusts the authority; a server whose certificate no trusted
//! authority signed is refused, with a clear error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::security::{bearer, call};
use crate::support::{
    Process, TempDir, TestApp, eventually, first_line, git, git_fixture, git_rev, model_answering,
    openssl, test_authority, token, with_jwt_auth,
};

/// In `dir`: the test's certificate authority and a server certificate it signed
/// ([`test_authority`]), and a self-signed one for the same address that no authority vouches
/// for (`stranger.pem`, `stranger.key`). Returns the authority's file.
pub(crate) fn certificates(dir: &Path) -> PathBuf {
    test_authority(dir);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "stranger.key",
            "-out",
            "stranger.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    dir.join("ca.pem")
}

/// `git http-backend` over HTTPS for the repositories under `root`, demanding `user` and
/// `password`, with the certificate `name` of `certs`; returns the server and its port.
pub(crate) async fn https_git(
    root: &Path,
    certs: &Path,
    name: &str,
    password: &str,
) -> (Process, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/git_http_server.py");
    let mut server = Process(
        std::process::Command::new("python3")
            .arg(script)
            .arg(root)
            .args(["bot", password])
            .arg(certs.join(format!("{name}.pem")))
            .arg(certs.join(format!("{name}.key")))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let port = first_line(&mut server.0, "the HTTPS git server").await;
    (server, port.trim().to_owned())
}

/// A bare copy of the git fixture as `private.git` in a directory of its own.
pub(crate) fn private_repo() -> TempDir {
    let root = TempDir::new();
    let fixture = git_fixture();
    git(
        root.path(),
        &[
            "clone",
            "-q",
            "--bare",
            &fixture.path().to_string_lossy(),
            "private.git",
        ],
    );
    root
}

/// An embedded Orion behind JWT auth, with a fake model that edits the fixture's helper, a
/// test command that passes, credentials sealed, `hosts` allowed, and `vcs` as `adjust` sets
/// it; with an admin's bearer header.
pub(crate) async fn remote_app(
    hosts: Vec<String>,
    adjust: impl FnOnce(&mut orion::settings::Settings) + 'static,
) -> (TestApp, String, wiremock::MockServer) {
    let model =
        model_answering("=== FILE: app/util.py\ndef helper(x):\n    return x * 7\n=== END\n").await;
    let model_url = format!("{}/v1", model.uri());
    let app = TestApp::spawn_with(move |s| {
        with_jwt_auth(s);
        s.security.repo_hosts = Some(hosts);
        s.secrets.credentials_key = Some(
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]).into(),
        );
        s.llm.base_url = Some(model_url);
        s.llm.model = "gpt-test".into();
        s.developer.test_command = Some(vec!["sh".into(), "-c".into(), "true".into()]);
        adjust(s);
    })
    .await;
    (app, bearer(&token("admin")), model)
}

/// Stores the credential `username`/`secret` for remotes under `prefix`.
pub(crate) async fn store_credential(
    app: &TestApp,
    admin: &str,
    prefix: &str,
    username: &str,
    secret: &str,
) {
    let saved = call(
        app,
        "POST",
        "/v1/credentials",
        Some(admin),
        Some(json!({ "repo_prefix": prefix, "username": username, "secret": secret })),
    )
    .await;
    assert_eq!(saved.status, 201, "{}", saved.body);
}

/// Submits a develop task on `repo` and waits until it fails or awaits review; returns its id
/// and the task.
async fn develop(app: &TestApp, admin: &str, repo: &str) -> (String, Value) {
    let created = call(
        app,
        "POST",
        "/v1/tasks",
        Some(admin),
        Some(json!({ "kind": "develop", "repo": repo, "prompt": "septuple the helper" })),
    )
    .await;
    assert_eq!(created.status, 202, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let task: Value = eventually("the task to settle", Duration::from_secs(60), || async {
        let task = call(app, "GET", &format!("/v1/tasks/{id}"), Some(admin), None)
            .await
            .body;
        matches!(task["status"].as_str()?, "failed" | "awaiting_review").then_some(task)
    })
    .await;
    (id, task)
}

#[actix_rt::test]
async fn a_develop_task_clones_and_pushes_over_https_and_an_untrusted_server_is_refused() {
    let root = private_repo();
    let certs = TempDir::new();
    let ca = certificates(certs.path());
    let (_trusted, port) = https_git(root.path(), certs.path(), "server", "token-42").await;
    let (_stranger, stranger_port) =
        https_git(root.path(), certs.path(), "stranger", "token-42").await;
    let hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{stranger_port}"),
    ];
    let (app, admin, _model) = remote_app(hosts, move |s| s.vcs.ca_file = Some(ca)).await;
    for server in [&port, &stranger_port] {
        let prefix = format!("https://127.0.0.1:{server}/");
        store_credential(&app, &admin, &prefix, "bot", "token-42").await;
    }
    let repo = |port: &str| format!("https://127.0.0.1:{port}/private.git");

    // Trusted through vcs.ca_file: cloned, developed, tested and pushed over HTTPS.
    let (id, task) = develop(&app, &admin, &repo(&port)).await;
    assert_eq!(task["status"], "awaiting_review", "{task}");
    assert!(
        git_rev(
            &root.path().join("private.git"),
            &format!("refs/heads/orion/{id}")
        )
        .is_some(),
        "the branch was pushed over HTTPS"
    );

    // The same repository behind a certificate nobody vouches for: refused, saying why.
    let (id, task) = develop(&app, &admin, &repo(&stranger_port)).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["code"], "repo_unreachable", "{task}");
    let message = task["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("vcs.ca_file"), "{message}");
    assert!(
        git_rev(
            &root.path().join("private.git"),
            &format!("refs/heads/orion/{id}")
        )
        .is_none(),
        "nothing reached the untrusted server"
    );
}

/// Runs `ssh-keygen` to make a key without a passphrase at `path`; returns its public line.
fn ssh_key(path: &Path, kind: &[&str]) -> String {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", ""])
        .args(kind)
        .arg("-f")
        .arg(path)
        .status()
        .expect("ssh-keygen is installed (scripts/services.sh)");
    assert!(status.success());
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

/// An SSH server of the test's own (Debian's sshd, on a free port, with its own host key,
/// logging to `sshd.log` in `dir`), letting in the holder of `client` (a public key line) as
/// this user, with `first` as the first lines of its configuration (sshd takes the first value
/// of each keyword); returns the server, its port and its host key's public line.
async fn sshd(dir: &Path, client: &str, first: &str) -> (Process, u16, String) {
    let host = ssh_key(&dir.join("host_key"), &["-t", "ed25519"]);
    std::fs::write(dir.join("authorized_keys"), client).unwrap();
    let port = crate::support::free_port();
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let config = format!(
        "{first}LogLevel VERBOSE\nPort {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
         PidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
         AllowUsers {user}\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    // Privilege separation wants its directory (made by the service, which does not run here).
    let _ = std::fs::create_dir_all("/run/sshd");
    let server = Process(
        std::process::Command::new("/usr/sbin/sshd")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .arg("-D")
            .arg("-E")
            .arg(dir.join("sshd.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sshd is installed (scripts/services.sh)"),
    );
    eventually("sshd to listen", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    (server, port, host)
}

#[actix_rt::test]
async fn a_develop_task_clones_and_pushes_over_ssh_and_a_changed_host_key_is_refused() {
    let root = private_repo();
    let keys = TempDir::new();
    let client = ssh_key(
        &keys.path().join("client"),
        &["-t", "rsa", "-b", "2048", "-m", "PEM"],
    );
    let private_key = std::fs::read_to_string(keys.path().join("client")).unwrap();
    let (first_dir, second_dir) = (TempDir::new(), TempDir::new());
    let (_known, port, host_key) = sshd(first_dir.path(), &client, "").await;
    // Another server on the same host, with a key of its own: not the one known for it.
    let (_impostor, impostor_port, _) = sshd(second_dir.path(), &client, "").await;
    // A server that takes passwords only: it must not be sent the private key as one. (Its
    // own host key is listed under another name, so that it is checked for itself.)
    let third_dir = TempDir::new();
    let (_phisher, phisher_port, phisher_key) = sshd(
        third_dir.path(),
        &client,
        "PubkeyAuthentication no\nPasswordAuthentication yes\nPermitRootLogin yes\n",
    )
    .await;
    let known_hosts = keys.path().join("known_hosts");
    let line = |host: &str, public: &str| {
        let mut fields = public.split_whitespace();
        format!(
            "{host} {} {}\n",
            fields.next().unwrap(),
            fields.next().unwrap()
        )
    };
    std::fs::write(
        &known_hosts,
        line(&format!("[127.0.0.1]:{port}"), &host_key) + &line("localhost", &phisher_key),
    )
    .unwrap();

    let hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{impostor_port}"),
        format!("localhost:{phisher_port}"),
    ];
    let (app, admin, _model) =
        remote_app(hosts, move |s| s.vcs.known_hosts = Some(known_hosts)).await;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    for prefix in [
        format!("ssh://127.0.0.1:{port}/"),
        format!("ssh://127.0.0.1:{impostor_port}/"),
        format!("ssh://localhost:{phisher_port}/"),
    ] {
        store_credential(&app, &admin, &prefix, &user, &private_key).await;
    }
    let repo_path = root.path().join("private.git");
    let repo = |port: u16| format!("ssh://{user}@127.0.0.1:{port}{}", repo_path.display());

    // The host key is the one known: cloned, developed, tested and pushed over SSH with the
    // stored private key.
    let (id, task) = develop(&app, &admin, &repo(port)).await;
    assert_eq!(task["status"], "awaiting_review", "{task}");
    assert!(
        git_rev(&repo_path, &format!("refs/heads/orion/{id}")).is_some(),
        "the branch was pushed over SSH"
    );

    // The same host answers with another key: refused before any credential is offered.
    let (id, task) = develop(&app, &admin, &repo(impostor_port)).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["code"], "repo_unreachable", "{task}");
    let message = task["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("vcs.known_hosts"), "{message}");
    assert!(git_rev(&repo_path, &format!("refs/heads/orion/{id}")).is_none());

    // A trusted server that asks for a password gets none: the private key goes only as a
    // key. (sshd logs every password tried.)
    let phishing = format!(
        "ssh://{user}@localhost:{phisher_port}{}",
        repo_path.display()
    );
    let (_, task) = develop(&app, &admin, &phishing).await;
    assert_eq!(task["status"], "failed", "{task}");
    let log = std::fs::read_to_string(third_dir.path().join("sshd.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("port {phisher_port}")) || log.contains("Connection"),
        "the server saw the attempt: {log}"
    );
    assert!(!log.contains("password for"), "a password was tried: {log}");
}
