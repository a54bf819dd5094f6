//! Forges, end to end, one test per kind (GitHub, GitLab, Gitea): a webhook delivery signed
//! as the forge signs it becomes a task; the task clones from and pushes to an HTTPS remote
//! (`git http-backend` behind TLS); the pull or merge request is opened on a fake forge that
//! answers as the forge's API documents (`tests/fixtures/forges`), the test verdict is set as a
//! commit status and the issue hears of the pull request; an approval in Orion is posted as
//! the forge's approval and the change lands on `main`. A wrong signature is 401 and a replayed
//! delivery 409, and neither makes a task.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::Mac;
use orion_services::forge::{ForgeConfig, ForgeKind, HookRules};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::remotes::{certificates, https_git, remote_app, store_credential};
use crate::security::call;
use crate::support::{TempDir, eventually, git, git_fixture, git_rev};

const SECRET: &str = "hook-secret-0123456789";
const TOKEN: &str = "forge-token";

/// A fixture of `tests/fixtures/forges`, with its placeholders filled.
fn fixture(name: &str, fill: &[(&str, &str)]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/forges")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (key, value) in fill {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    serde_json::from_str(&text).unwrap()
}

/// One request the fake forge received: method, path, the credential header, body.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    credential: String,
    body: Value,
}

/// A forge of `kind` for `acme/widgets` that keeps what it is sent and answers with the
/// fixtures: listings are empty (no run was lost here), every post gets the documented answer.
#[derive(Clone)]
struct FakeForge {
    kind: ForgeKind,
    log: Arc<Mutex<Vec<Received>>>,
    /// Posts to paths that contain this are refused with 403, as a token without the
    /// permission is.
    refuse: Option<&'static str>,
}

impl FakeForge {
    fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// The posts whose path ends with `suffix`.
    fn posts(&self, suffix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with(suffix))
            .collect()
    }
}

impl Respond for FakeForge {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path().to_owned();
        let credential = ["authorization", "private-token"]
            .iter()
            .find_map(|h| request.headers.get(*h))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        self.log.lock().unwrap().push(Received {
            method: request.method.to_string(),
            path: path.clone(),
            credential,
            body,
        });
        if request.method.as_str() == "GET" {
            return ResponseTemplate::new(200).set_body_json(json!([]));
        }
        if self.refuse.is_some_and(|r| path.contains(r)) {
            return ResponseTemplate::new(403)
                .set_body_json(json!({ "message": "Resource not accessible by integration" }));
        }
        let answer = |name: &str| fixture(name, &[]);
        let (status, body) = match self.kind {
            ForgeKind::Github | ForgeKind::Gitea => {
                let prefix = if self.kind == ForgeKind::Github {
                    "github"
                } else {
                    "gitea"
                };
                if path.ends_with("/pulls") {
                    (201, answer(&format!("{prefix}-pull.json")))
                } else if path.contains("/statuses/") {
                    (201, answer(&format!("{prefix}-status.json")))
                } else if path.ends_with("/reviews") {
                    (200, answer(&format!("{prefix}-review.json")))
                } else if path.ends_with("/comments") {
                    (201, answer(&format!("{prefix}-comment.json")))
                } else {
                    return ResponseTemplate::new(404);
                }
            }
            ForgeKind::Gitlab => {
                if path.ends_with("/merge_requests") {
                    (201, answer("gitlab-merge-request.json"))
                } else if path.contains("/statuses/") {
                    (201, answer("gitlab-status.json"))
                } else if path.ends_with("/approve") {
                    (201, answer("gitlab-approval.json"))
                } else if path.ends_with("/notes") {
                    (201, answer("gitlab-note.json"))
                } else {
                    return ResponseTemplate::new(404);
                }
            }
        };
        ResponseTemplate::new(status).set_body_json(body)
    }
}

/// How a forge kind sends its webhooks and names what Orion posts.
struct Flavour {
    kind: ForgeKind,
    /// The API's base path on the fake server.
    api: &'static str,
    /// The webhook fixture of an issue given the `orion` label.
    labelled: &'static str,
    /// The event header and its value for that delivery.
    event: (&'static str, &'static str),
    delivery_header: &'static str,
    /// The credential header Orion must send.
    credential: &'static str,
    /// The repository's path in the API.
    repo: &'static str,
    /// Where the pull request is opened, the issue's comments and the approval go.
    open: &'static str,
    issue_comments: &'static str,
    approval: &'static str,
}

/// The headers that sign `body` as the forge does, with `secret`.
fn signed(kind: ForgeKind, secret: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let hmac = || {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    };
    match kind {
        ForgeKind::Github => vec![("X-Hub-Signature-256", format!("sha256={}", hmac()))],
        ForgeKind::Gitea => vec![("X-Gitea-Signature", hmac())],
        ForgeKind::Gitlab => vec![("X-Gitlab-Token", secret.to_owned())],
    }
}

/// Sends a webhook delivery; returns the status and the answer.
async fn deliver(base: &str, forge: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut request = awc::Client::new()
        .post(format!("{base}/v1/hooks/{forge}"))
        .insert_header(("Content-Type", "application/json"));
    for (name, value) in headers {
        request = request.insert_header((*name, value.as_str()));
    }
    let mut response = request
        .send_body(body.to_vec())
        .await
        .expect("the gateway answers");
    let bytes = response.body().await.unwrap();
    (
        response.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A bare copy of the git fixture as `acme/widgets.git` under a directory of its own.
fn forge_repo() -> TempDir {
    let root = TempDir::new();
    std::fs::create_dir(root.path().join("acme")).unwrap();
    let fixture = git_fixture();
    git(
        root.path(),
        &[
            "clone",
            "-q",
            "--bare",
            &fixture.path().to_string_lossy(),
            "acme/widgets.git",
        ],
    );
    root
}

async fn tasks_of(app: &crate::support::TestApp, admin: &str) -> Vec<Value> {
    let listed = call(app, "GET", "/v1/tasks", Some(admin), None).await;
    listed.body["items"].as_array().cloned().unwrap_or_default()
}

/// A forge of `kind` named `work` (the API at `api` on a fake server) serving an HTTPS
/// remote `acme/widgets.git`, and an Orion that trusts the remote and holds its credential.
struct Scene {
    root: TempDir,
    app: crate::support::TestApp,
    admin: String,
    model: MockServer,
    fake: FakeForge,
    clone_url: String,
    _server: MockServer,
    _git: crate::support::Process,
    _certs: TempDir,
}

impl Scene {
    async fn new(kind: ForgeKind, api: &str, refuse: Option<&'static str>) -> Self {
        Self::with_repo(forge_repo(), kind, api, refuse).await
    }

    async fn with_repo(
        root: TempDir,
        kind: ForgeKind,
        api: &str,
        refuse: Option<&'static str>,
    ) -> Self {
        let certs = TempDir::new();
        let ca = certificates(certs.path());
        let (git, port) = https_git(root.path(), certs.path(), "server", "token-42").await;
        let host = format!("127.0.0.1:{port}");
        let fake = FakeForge {
            kind,
            log: Default::default(),
            refuse,
        };
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(fake.clone())
            .mount(&server)
            .await;
        let forge = ForgeConfig {
            kind,
            api_url: format!("{}{api}", server.uri()),
            token: TOKEN.into(),
            host: Some(host.clone()),
            remotes: Vec::new(),
            webhook_secret: Some(SECRET.into()),
            hooks: HookRules {
                allowed_users: vec!["alice".into()],
                review_pulls: true,
                ..HookRules::default()
            },
        };
        let (app, admin, model) = remote_app(vec![host.clone()], move |s| {
            s.vcs.ca_file = Some(ca);
            s.forges.insert("work".into(), forge);
        })
        .await;
        store_credential(&app, &admin, &format!("https://{host}/"), "bot", "token-42").await;
        Self {
            root,
            app,
            admin,
            model,
            fake,
            clone_url: format!("https://{host}/acme/widgets.git"),
            _server: server,
            _git: git,
            _certs: certs,
        }
    }

    fn bare(&self) -> std::path::PathBuf {
        self.root.path().join("acme/widgets.git")
    }

    async fn task(&self, id: &str) -> Value {
        call(
            &self.app,
            "GET",
            &format!("/v1/tasks/{id}"),
            Some(&self.admin),
            None,
        )
        .await
        .body
    }

    /// Waits until task `id` is in one of `statuses`; returns it.
    async fn settled(&self, id: &str, statuses: &[&str]) -> Value {
        eventually("the task to settle", Duration::from_secs(60), || async {
            let task = self.task(id).await;
            statuses.contains(&task["status"].as_str()?).then_some(task)
        })
        .await
    }
}

/// The whole flow on one forge kind.
async fn a_labelled_issue_becomes_a_pull_request_that_merges_on_approval(flavour: Flavour) {
    let scene = Scene::new(flavour.kind, flavour.api, None).await;
    let (app, admin, fake) = (&scene.app, scene.admin.as_str(), &scene.fake);
    let clone_url = scene.clone_url.as_str();

    let payload = fixture(flavour.labelled, &[("clone_url", clone_url)]);
    let body = serde_json::to_vec(&payload).unwrap();
    let headers = |secret: &str, delivery: &str| {
        let mut h = signed(flavour.kind, secret, &body);
        h.push((flavour.event.0, flavour.event.1.to_owned()));
        h.push((flavour.delivery_header, delivery.to_owned()));
        h
    };

    // A wrong signature (another secret), and a body changed under a good one: 401, no task.
    let (status, answer) =
        deliver(&app.base, "work", &headers("not-the-secret", "d-1"), &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("hook_unverified")),
        "{answer}"
    );
    // (GitLab signs nothing: its token is the whole check.)
    if flavour.kind != ForgeKind::Gitlab {
        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        let (status, _) = deliver(&app.base, "work", &headers(SECRET, "d-1"), &tampered).await;
        assert_eq!(status, 401, "a body changed after signing");
    }
    // A delivery without its id is malformed.
    let mut unnamed = headers(SECRET, "d-1");
    unnamed.retain(|(name, _)| *name != flavour.delivery_header);
    let (status, answer) = deliver(&app.base, "work", &unnamed, &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("hook_malformed")),
        "{answer}"
    );
    // An unknown forge is 404.
    let (status, answer) = deliver(&app.base, "elsewhere", &headers(SECRET, "d-1"), &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("forge_not_found"))
    );
    let before = tasks_of(app, admin).await.len();

    // The signed delivery: a develop task with the issue's text as its prompt.
    let (status, answer) = deliver(&app.base, "work", &headers(SECRET, "d-2"), &body).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["task"]["id"].as_str().unwrap().to_owned();
    assert_eq!(answer["task"]["kind"], "develop");
    assert_eq!(answer["task"]["repo"], clone_url);
    assert!(
        answer["task"]["prompt"]
            .as_str()
            .unwrap()
            .starts_with("septuple the helper\n\n"),
        "{answer}"
    );
    assert_eq!(
        answer["task"]["origin"],
        json!({ "forge": "work", "repository": "acme/widgets", "thread": "issue", "number": 12 })
    );
    // The same delivery again: 409, and no second task; nor under another delivery id (the
    // id is not signed: the event is what counts).
    let (status, answer) = deliver(&app.base, "work", &headers(SECRET, "d-3"), &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("hook_replayed")),
        "{answer}"
    );
    let (status, answer) = deliver(&app.base, "work", &headers(SECRET, "d-2"), &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("hook_replayed")),
        "{answer}"
    );
    assert_eq!(
        tasks_of(app, admin).await.len(),
        before + 1,
        "one task for the delivery"
    );

    // Cloned and pushed over HTTPS, then mirrored to the forge.
    let task = scene.settled(&id, &["failed", "awaiting_review"]).await;
    assert_eq!(task["status"], "awaiting_review", "{task}");
    let bare = scene.bare();
    let head = git_rev(&bare, &format!("refs/heads/orion/{id}")).expect("the branch was pushed");
    let base = flavour.repo;
    let opened = fake.posts(&format!("{base}{}", flavour.open));
    assert_eq!(opened.len(), 1, "{:?}", fake.received());
    let (source, target) = match flavour.kind {
        ForgeKind::Gitlab => ("source_branch", "target_branch"),
        _ => ("head", "base"),
    };
    assert_eq!(opened[0].body[source], format!("orion/{id}"));
    assert_eq!(opened[0].body[target], "main");
    let statuses = fake.posts(&format!("{base}/statuses/{head}"));
    assert_eq!(statuses.len(), 1, "{:?}", fake.received());
    assert_eq!(statuses[0].body["state"], "success");
    let replies = fake.posts(&format!("{base}{}", flavour.issue_comments));
    assert_eq!(replies.len(), 1, "{:?}", fake.received());
    let reply = replies[0].body["body"].as_str().unwrap();
    let pull_url = opened_url(flavour.kind);
    assert!(
        reply.contains(pull_url),
        "the issue hears of {pull_url}: {reply}"
    );
    assert!(
        fake.received()
            .iter()
            .all(|r| r.credential == flavour.credential),
        "every call carried the forge's credential as it wants it"
    );

    // Approved in Orion: the forge gets the approval, and the change lands on main.
    let pulls = call(app, "GET", "/v1/pulls", Some(admin), None).await.body;
    let pull = pulls["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["task_id"] == id.as_str())
        .expect("the task's pull request")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approved = call(
        app,
        "POST",
        &format!("/v1/pulls/{pull}/reviews"),
        Some(admin),
        Some(json!({ "decision": "approve", "comment": "ship it" })),
    )
    .await;
    assert_eq!(approved.status, 202, "{}", approved.body);
    scene.settled(&id, &["completed"]).await;
    assert_eq!(
        git_rev(&bare, "main").as_deref(),
        Some(head.as_str()),
        "landed on main"
    );
    let approvals = fake.posts(&format!("{base}{}", flavour.approval));
    assert_eq!(approvals.len(), 1, "{:?}", fake.received());
    match flavour.kind {
        ForgeKind::Github => assert_eq!(approvals[0].body["event"], "APPROVE"),
        ForgeKind::Gitea => assert_eq!(approvals[0].body["event"], "APPROVED"),
        ForgeKind::Gitlab => {}
    }
}

/// The pull request's address in the fixture the fake forge answers with.
fn opened_url(kind: ForgeKind) -> &'static str {
    match kind {
        ForgeKind::Github => "https://github.com/acme/widgets/pull/31",
        ForgeKind::Gitlab => "https://gitlab.example.com/acme/widgets/-/merge_requests/31",
        ForgeKind::Gitea => "https://gitea.example.com/acme/widgets/pulls/31",
    }
}

#[actix_rt::test]
async fn github_a_labelled_issue_becomes_a_pull_request_that_merges_on_approval() {
    a_labelled_issue_becomes_a_pull_request_that_merges_on_approval(Flavour {
        kind: ForgeKind::Github,
        api: "",
        labelled: "github-issue-labeled.json",
        event: ("X-GitHub-Event", "issues"),
        delivery_header: "X-GitHub-Delivery",
        credential: "Bearer forge-token",
        repo: "/repos/acme/widgets",
        open: "/pulls",
        issue_comments: "/issues/12/comments",
        approval: "/pulls/31/reviews",
    })
    .await;
}

#[actix_rt::test]
async fn gitlab_a_labelled_issue_becomes_a_merge_request_that_merges_on_approval() {
    a_labelled_issue_becomes_a_pull_request_that_merges_on_approval(Flavour {
        kind: ForgeKind::Gitlab,
        api: "/api/v4",
        labelled: "gitlab-issue-hook.json",
        event: ("X-Gitlab-Event", "Issue Hook"),
        delivery_header: "X-Gitlab-Event-UUID",
        credential: TOKEN,
        repo: "/api/v4/projects/acme%2Fwidgets",
        open: "/merge_requests",
        issue_comments: "/issues/12/notes",
        approval: "/merge_requests/31/approve",
    })
    .await;
}

#[actix_rt::test]
async fn gitea_a_labelled_issue_becomes_a_pull_request_that_merges_on_approval() {
    a_labelled_issue_becomes_a_pull_request_that_merges_on_approval(Flavour {
        kind: ForgeKind::Gitea,
        api: "/api/v1",
        labelled: "gitea-issue-label-updated.json",
        event: ("X-Gitea-Event", "issues"),
        delivery_header: "X-Gitea-Delivery",
        credential: "token forge-token",
        repo: "/api/v1/repos/acme/widgets",
        open: "/pulls",
        issue_comments: "/issues/12/comments",
        approval: "/pulls/31/reviews",
    })
    .await;
}

/// Sends `payload` as GitHub event `event`, signed, as delivery `id`.
async fn github_delivery(base: &str, event: &str, id: &str, payload: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let mut headers = signed(ForgeKind::Github, SECRET, &body);
    headers.push(("X-GitHub-Event", event.to_owned()));
    headers.push(("X-GitHub-Delivery", id.to_owned()));
    deliver(base, "work", &headers, &body).await
}

#[actix_rt::test]
async fn github_a_pull_request_is_reviewed_on_the_forge_and_only_allowed_users_command() {
    let root = forge_repo();
    let bare = root.path().join("acme/widgets.git");
    // Someone's pull request #5: a commit on top of main, under GitHub's ref for it.
    let work = TempDir::new();
    git(work.path(), &["clone", "-q", &bare.to_string_lossy(), "."]);
    std::fs::write(
        work.path().join("app/util.py"),
        "def helper(x):\n    return x // 2\n",
    )
    .unwrap();
    git(work.path(), &["commit", "-q", "-am", "halve the helper"]);
    git(
        work.path(),
        &["push", "-q", "origin", "HEAD:refs/pull/5/head"],
    );
    let base_sha = git_rev(&bare, "main").unwrap();
    let head_sha = git_rev(&bare, "refs/pull/5/head").unwrap();
    let scene = Scene::with_repo(root, ForgeKind::Github, "", None).await;
    let (app, admin, fake) = (&scene.app, scene.admin.as_str(), &scene.fake);
    let clone_url = scene.clone_url.as_str();
    Mock::given(wiremock::matchers::body_string_contains(
        "You review a change",
    ))
    .respond_with(
        ResponseTemplate::new(200).set_body_json(crate::support::completion(
            "gpt-test",
            "=== COMMENT app/util.py:2\nFloor division drops the half.\n=== END\n",
        )),
    )
    .with_priority(1)
    .mount(&scene.model)
    .await;

    // Opened: a review task of exactly the pull request's change, fetched by its ref.
    let opened = fixture(
        "github-pull-request-opened.json",
        &[
            ("clone_url", clone_url),
            ("base_sha", &base_sha),
            ("head_sha", &head_sha),
        ],
    );
    let (status, answer) = github_delivery(&app.base, "pull_request", "p-1", &opened).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["task"]["kind"], "review");
    assert_eq!(answer["task"]["diff"], format!("{base_sha}..{head_sha}"));
    assert_eq!(answer["task"]["ref"], "refs/pull/5/head");
    let id = answer["task"]["id"].as_str().unwrap().to_owned();
    let task = scene.settled(&id, &["failed", "completed"]).await;
    assert_eq!(task["status"], "completed", "{task}");
    let comments = fake.posts("/repos/acme/widgets/pulls/5/comments");
    assert_eq!(comments.len(), 1, "{:?}", fake.received());
    let comment = &comments[0].body;
    assert_eq!(
        (comment["path"].as_str(), comment["line"].as_u64()),
        (Some("app/util.py"), Some(2))
    );
    assert_eq!(comment["commit_id"], head_sha.as_str());
    assert!(
        comment["body"]
            .as_str()
            .unwrap()
            .starts_with("Floor division drops the half.")
    );

    // A payload whose clone URL is another repository than the one the event is about makes
    // no task: the bot's credentials go only where the event is.
    let mut elsewhere = opened.clone();
    elsewhere["repository"]["clone_url"] =
        json!(clone_url.replace("acme/widgets.git", "acme/secrets.git"));
    let (status, answer) = github_delivery(&app.base, "pull_request", "p-3", &elsewhere).await;
    assert_eq!(status, 202);
    assert!(
        answer["ignored"]
            .as_str()
            .unwrap_or_default()
            .contains("acme/secrets"),
        "{answer}"
    );
    // Orion's own pull request is not reviewed again.
    let mut own = opened.clone();
    own["pull_request"]["head"]["ref"] = json!("orion/01a24411-00cf-76e4-812b-69c17cfbc298");
    let (status, answer) = github_delivery(&app.base, "pull_request", "p-2", &own).await;
    assert_eq!(status, 202);
    assert!(
        answer["ignored"].as_str().is_some() && answer["task"].is_null(),
        "{answer}"
    );

    // Only a verified delivery sets a task's origin: a submission may not.
    let forged = call(
        app,
        "POST",
        "/v1/tasks",
        Some(admin),
        Some(json!({
            "kind": "develop", "repo": clone_url, "prompt": "x",
            "origin": { "forge": "work", "repository": "acme/widgets", "thread": "issue", "number": 1 },
        })),
    )
    .await;
    assert_eq!(
        (forged.status, forged.body["code"].as_str()),
        (422, Some("invalid_field"))
    );

    // A command from someone not allowed makes no task; from an allowed user, it does.
    let before = tasks_of(app, admin).await.len();
    let mut comment = fixture("github-issue-comment.json", &[("clone_url", clone_url)]);
    let (status, answer) = github_delivery(&app.base, "issue_comment", "c-1", &comment).await;
    assert_eq!(status, 202);
    let ignored = answer["ignored"].as_str().unwrap_or_default();
    assert!(ignored.contains("mallory"), "{answer}");
    assert_eq!(tasks_of(app, admin).await.len(), before);
    comment["comment"]["user"]["login"] = json!("alice");
    // The same comment delivered twice at the same moment (as a forge's retry racing the
    // first try, under another delivery id): one task, and the other answer is 409.
    let (first, second) = futures_util::join!(
        github_delivery(&app.base, "issue_comment", "c-2", &comment),
        github_delivery(&app.base, "issue_comment", "c-3", &comment),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [202, 409], "{first:?} {second:?}");
    let (status, answer) = if first.0 == 202 { first } else { second };
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["task"]["kind"], "develop");
    assert_eq!(answer["task"]["prompt"], "septuple the helper");
    assert_eq!(answer["task"]["origin"]["number"], 12);
    assert_eq!(tasks_of(app, admin).await.len(), before + 1);
    // Its outcome reaches the issue: the pull request it opened.
    eventually(
        "the issue to hear of the pull request",
        Duration::from_secs(60),
        || async {
            let replies = fake.posts("/repos/acme/widgets/issues/12/comments");
            replies
                .iter()
                .any(|r| {
                    r.body["body"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("/pull/31")
                })
                .then_some(())
        },
    )
    .await;
}

#[actix_rt::test]
async fn gitea_a_task_that_fails_says_so_on_its_issue_once() {
    let scene = Scene::new(ForgeKind::Gitea, "/api/v1", None).await;
    let (app, fake) = (&scene.app, &scene.fake);
    let clone_url = scene.clone_url.as_str();
    // A model that answers with no edit at all.
    Mock::given(wiremock::matchers::any())
        .respond_with(
            ResponseTemplate::new(200).set_body_json(crate::support::completion(
                "gpt-test",
                "I would rather not.",
            )),
        )
        .with_priority(1)
        .mount(&scene.model)
        .await;
    let payload = fixture(
        "gitea-issue-label-updated.json",
        &[("clone_url", clone_url)],
    );
    let body = serde_json::to_vec(&payload).unwrap();
    let mut headers = signed(ForgeKind::Gitea, SECRET, &body);
    headers.push(("X-Gitea-Event", "issues".to_owned()));
    headers.push(("X-Gitea-Delivery", "f-1".to_owned()));
    let (status, answer) = deliver(&app.base, "work", &headers, &body).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["task"]["id"].as_str().unwrap().to_owned();
    let task = scene.settled(&id, &["failed"]).await;
    let code = task["error"]["code"].as_str().unwrap().to_owned();
    let replies = fake.posts("/api/v1/repos/acme/widgets/issues/12/comments");
    assert_eq!(replies.len(), 1, "{:?}", fake.received());
    let reply = replies[0].body["body"].as_str().unwrap();
    assert!(
        reply.contains(&id) && reply.contains(&code),
        "the issue hears why: {reply}"
    );
    assert!(
        fake.posts("/pulls").is_empty(),
        "no pull request for a failed task"
    );
}

#[actix_rt::test]
async fn a_forge_that_refuses_a_status_is_not_asked_again_and_the_task_goes_on() {
    let scene = Scene::new(ForgeKind::Github, "", Some("/statuses/")).await;
    let created = call(
        &scene.app,
        "POST",
        "/v1/tasks",
        Some(&scene.admin),
        Some(
            json!({ "kind": "develop", "repo": scene.clone_url, "prompt": "septuple the helper" }),
        ),
    )
    .await;
    assert_eq!(created.status, 202, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let task = scene.settled(&id, &["failed", "awaiting_review"]).await;
    assert_eq!(task["status"], "awaiting_review", "{task}");
    let head = git_rev(&scene.bare(), &format!("refs/heads/orion/{id}")).unwrap();
    // Refused once (403: the token may not set statuses), and the refusal is the effect's
    // recorded outcome: no later run waits on the claim or asks the forge again.
    assert_eq!(
        scene
            .fake
            .posts(&format!("/repos/acme/widgets/statuses/{head}"))
            .len(),
        1
    );
    let recorded = scene
        .app
        .services
        .lifecycle
        .store()
        .effect(id.parse().unwrap(), &format!("forge:status:{head}"))
        .await
        .unwrap()
        .expect("the status effect is recorded");
    assert!(
        recorded["refused"].as_str().unwrap().contains("403"),
        "{recorded}"
    );
    // The pull request was opened all the same.
    assert_eq!(scene.fake.posts("/repos/acme/widgets/pulls").len(), 1);
}
