//! The web dashboard in a real browser: Debian's headless Chromium, driven over the W3C
//! WebDriver protocol by `chromedriver` (a few HTTP calls, below), against the embedded app.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    Process, TestApp, bare_remote, completion, eventually, fixture_repo, free_port, git_rev, show,
    token, with_jwt_auth,
};

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session on a chromedriver of its own.
struct Browser {
    driver: Process,
    client: awc::Client,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    }
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        // In a process group of its own, which the browsers it starts join: dropping the
        // session ends them all, whether or not the test got to close its session.
        let driver = Process(
            Command::new("chromedriver")
                .process_group(0)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver is installed (scripts/services.sh installs it)"),
        );
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let base = format!("http://127.0.0.1:{port}");
        eventually(
            "chromedriver to be ready",
            Duration::from_secs(20),
            || async {
                let mut response = client.get(format!("{base}/status")).send().await.ok()?;
                let status: Value = response.json().await.ok()?;
                (status["value"]["ready"] == true).then_some(())
            },
        )
        .await;
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
            },
        } } });
        let mut response = client
            .post(format!("{base}/session"))
            .send_json(&capabilities)
            .await
            .unwrap();
        let created: Value = response.json().await.unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Self {
            driver,
            client,
            session: format!("{base}/session/{session}"),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url),
        };
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .unwrap();
        let value: Value = response.json().limit(64 << 20).await.unwrap();
        let value = value["value"].clone();
        // Looking for an element that is not there yet is part of waiting; any other refusal
        // (an element that cannot be clicked, a script that throws) fails the test.
        if value.get("error").is_some() && path != "/element" {
            panic!("WebDriver refused {method} {path}: {value}");
        }
        value
    }

    async fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` in the page and returns what it returns.
    async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Waits for an element matching `css` and returns its WebDriver id.
    async fn find(&self, css: &str) -> String {
        eventually(
            &format!("`{css}` on the page"),
            Duration::from_secs(30),
            || async {
                let found = self
                    .call(
                        "POST",
                        "/element",
                        Some(json!({ "using": "css selector", "value": css })),
                    )
                    .await;
                found[ELEMENT].as_str().map(str::to_owned)
            },
        )
        .await
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Waits until the text of the first element matching `css` satisfies `check`.
    async fn text_when(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            json!(css)
        );
        eventually(what, Duration::from_secs(30), || async {
            let text = self.eval(&script).await;
            text.as_str().filter(|t| check(t)).map(str::to_owned)
        })
        .await
    }

    /// Saves a screenshot where `ORION_SCREENSHOTS` points (how the README's was made).
    async fn screenshot(&self, name: &str) {
        let png = self.call("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a screenshot"))
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        if let Ok(dir) = std::env::var("ORION_SCREENSHOTS") {
            std::fs::write(std::path::Path::new(&dir).join(name), bytes).unwrap();
        }
    }

    async fn submit(&self, kind: &str, repo: &str, prompt: Option<&str>) -> String {
        // A select takes typed text as a person's keyboard would give it.
        self.type_into("#f-kind", kind).await;
        self.type_into("#f-repo", repo).await;
        if let Some(prompt) = prompt {
            self.type_into("#f-prompt", prompt).await;
        }
        self.click("form[aria-label='Submit a task'] button[type=submit]")
            .await;
        // The page moves to the new task's own.
        eventually("the task's page", Duration::from_secs(30), || async {
            let hash = self.eval("return location.hash").await;
            hash.as_str()
                .and_then(|h| h.strip_prefix("#/tasks/"))
                .map(str::to_owned)
        })
        .await
    }
}

#[actix_rt::test]
async fn the_dashboard_submits_watches_live_and_approves_a_pull_request() {
    let model = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion(
                    "gpt-test",
                    "=== FILE: app/util.py\ndef helper(x):\n    return x * 2\n=== END\n",
                ))
                // Slow enough that the answer arrives while the page watches.
                .set_delay(Duration::from_millis(2500)),
        )
        .mount(&model)
        .await;
    let base_url = format!("{}/v1", model.uri());
    let app = TestApp::spawn_with(move |s| {
        s.llm.base_url = Some(base_url);
        s.llm.model = "gpt-test".into();
        s.developer.test_command = Some(vec![
            "sh".into(),
            "-c".into(),
            "grep -q 'x \\* 2' app/util.py".into(),
        ]);
    })
    .await;
    let browser = Browser::start().await;
    browser.go(&format!("{}/#/tasks", app.base)).await;

    // An analyze task through the form: its events and its report appear on its page.
    let repo = fixture_repo();
    let analyze = browser
        .submit("analyze", &repo.path().to_string_lossy(), None)
        .await;
    browser.find("ol.timeline li[data-type=completed]").await;
    browser
        .text_when("main table", "the totals table", |t| t.contains("rust"))
        .await;
    let (_, task) = app.get(&format!("/v1/tasks/{analyze}")).await;
    assert_eq!(task["status"], "completed");
    // An ended task with no prompt and no model usage: nothing absent shows as "null".
    assert_eq!(
        browser
            .eval("return document.querySelector('main').innerText.includes('null')")
            .await,
        false,
        "{}",
        browser
            .eval("return document.querySelector('main').innerText")
            .await
    );

    // A develop task: the page, loaded while the model thinks, receives the rest live.
    browser.go(&format!("{}/#/tasks", app.base)).await;
    let (_keep, remote) = bare_remote();
    let develop = browser
        .submit(
            "develop",
            &remote.to_string_lossy(),
            Some("double the helper"),
        )
        .await;
    browser.find("ol.timeline").await;
    let already = browser
        .eval("window.timeline = document.querySelector('ol.timeline'); return !!window.timeline.querySelector('li[data-type=awaiting_review]')")
        .await;
    assert_eq!(already, false, "the page is up before the pull request is");
    browser
        .find("ol.timeline li[data-type=awaiting_review]")
        .await;
    assert_eq!(
        browser
            .eval("return document.querySelector('ol.timeline li[data-type=awaiting_review]').parentNode === window.timeline")
            .await,
        true,
        "the event arrived over the stream, into the timeline already on the page"
    );
    browser.screenshot("task.png").await;
    browser
        .click("ol.timeline li[data-type=awaiting_review] a")
        .await;
    let diff = browser
        .text_when("pre.diff", "the diff", |t| t.contains("return x * 2"))
        .await;
    assert!(diff.contains("-    return x"), "{diff}");
    let verdict = browser
        .text_when("[data-testid=verdict]", "the test verdict", |t| {
            !t.is_empty()
        })
        .await;
    assert_eq!(verdict, "passed");
    browser.screenshot("dashboard.png").await;
    let main_before = git_rev(&remote, "main").unwrap();
    browser.click("form[aria-label=Review] button").await;
    let done = app.wait_for(&develop, "completed").await;
    assert_ne!(git_rev(&remote, "main").unwrap(), main_before);
    assert_eq!(
        done["result"]["head"],
        git_rev(&remote, "main").unwrap().as_str()
    );
    assert!(show(&remote, "main:app/util.py").contains("x * 2"));

    // The list names the two tasks, made within the same minute, apart: by the random tail
    // of each id, not the time at its head.
    browser.go(&format!("{}/#/tasks", app.base)).await;
    browser
        .text_when("main table", "the task list", |t| t.contains("develop"))
        .await;
    let links = browser
        .eval("return [...document.querySelectorAll('main table a[href^=\"#/tasks/\"]')].map((a) => [a.getAttribute('href').slice(8), a.textContent])")
        .await;
    let links = links.as_array().unwrap();
    assert_eq!(links.len(), 2, "{links:?}");
    for link in links {
        let (id, shown) = (link[0].as_str().unwrap(), link[1].as_str().unwrap());
        assert!(
            shown.len() >= 8 && id.replace('-', "").ends_with(shown),
            "{id} shown as {shown}"
        );
    }
    assert_ne!(links[0][1], links[1][1], "two tasks, two short ids");
    browser.call("DELETE", "", None).await;
}

#[actix_rt::test]
async fn with_auth_on_the_dashboard_asks_for_a_token_and_offers_what_the_role_may_do() {
    let app = TestApp::spawn_with(with_jwt_auth).await;
    let browser = Browser::start().await;
    browser.go(&format!("{}/#/tasks", app.base)).await;
    // Unauthenticated: the API answers 401 and the page asks for a token.
    browser.find("#token").await;
    browser.type_into("#token", &token("viewer")).await;
    browser.click("form button[type=submit]").await;
    browser
        .text_when("#who", "the signed-in caller", |t| t.ends_with("viewer"))
        .await;
    browser.find("section[aria-label='Task list']").await;
    assert_eq!(
        browser
            .eval("return document.querySelector('#f-kind') === null")
            .await,
        true,
        "a viewer is not offered the submit form"
    );
    browser.click("#signout").await;
    browser.find("#token").await;
    browser.type_into("#token", &token("submitter")).await;
    browser.click("form button[type=submit]").await;
    browser
        .text_when("#who", "the signed-in submitter", |t| {
            t.ends_with("submitter")
        })
        .await;
    browser.find("#f-kind").await;
    // A bad token is refused with the API's reason, and nothing is signed in.
    browser.click("#signout").await;
    browser.type_into("#token", "not-a-token").await;
    browser.click("form button[type=submit]").await;
    let error = browser
        .text_when("p.error", "the refusal", |t| !t.is_empty())
        .await;
    assert!(!error.is_empty());
    assert_eq!(
        browser
            .eval("return localStorage.getItem('orion.token')")
            .await,
        Value::Null
    );
    browser.call("DELETE", "", None).await;
}

#[actix_rt::test]
async fn the_api_page_shows_every_operation_and_tries_one_with_the_callers_token() {
    let app = TestApp::spawn_with(with_jwt_auth).await;
    let (_, document) = app.get("/v1/openapi.json").await;
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|methods| methods.as_object().unwrap().len())
        .sum();
    let browser = Browser::start().await;
    browser.go(&format!("{}/docs", app.base)).await;
    browser.find("section.op").await;
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('section.op').length")
            .await,
        json!(operations),
        "one section per operation of the served document"
    );
    // Without a token, a protected operation is refused, as the API refuses it.
    let me = browser
        .eval(
            "return [...document.querySelectorAll('section.op')].findIndex(s => \
             s.querySelector('h2').textContent.trim() === 'GET /v1/me')",
        )
        .await
        .as_i64()
        .unwrap();
    assert!(me >= 0, "GET /v1/me is on the page");
    browser
        .click(&format!("#op-{me} button[type=submit]"))
        .await;
    browser
        .text_when(&format!("#op-{me}-out"), "the refusal", |t| {
            t.starts_with("401")
        })
        .await;
    // With one, it answers the caller.
    browser.type_into("#token", &token("viewer")).await;
    browser
        .click(&format!("#op-{me} button[type=submit]"))
        .await;
    let answer = browser
        .text_when(&format!("#op-{me}-out"), "the answer", |t| {
            t.starts_with("200")
        })
        .await;
    assert!(answer.contains("\"role\": \"viewer\""), "{answer}");
}

/// A repository of `dirs` folders of `per_dir` Python modules each: every module imports the
/// next one in its folder, and the first of each folder the first of the next, the last
/// folder's the first folder's (a cycle through every folder).
fn module_repository(dirs: usize, per_dir: usize) -> crate::support::TempDir {
    let repo = crate::support::TempDir::new();
    for d in 0..dirs {
        let dir = repo.path().join(format!("pkg{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("__init__.py"), "").unwrap();
        for m in 0..per_dir {
            let mut text = String::new();
            if m + 1 < per_dir {
                text.push_str(&format!("from pkg{d} import m{}\n", m + 1));
            }
            if m == 0 {
                text.push_str(&format!("from pkg{} import m0\n", (d + 1) % dirs));
            }
            text.push_str(&format!("\ndef f{m}(x):\n    return x + {m}\n"));
            std::fs::write(dir.join(format!("m{m}.py")), text).unwrap();
        }
    }
    crate::support::git(repo.path(), &["init", "-q", "-b", "main"]);
    crate::support::git(repo.path(), &["add", "."]);
    crate::support::git(repo.path(), &["commit", "-q", "-m", "modules"]);
    repo
}

impl Browser {
    /// The page at `hash`, once `ready` (a CSS selector) is on it.
    async fn page(&self, base: &str, hash: &str, ready: &str) {
        self.go(&format!("{base}/{hash}")).await;
        self.find(ready).await;
    }

    /// The number in attribute `attr` of the first element matching `css`.
    async fn number(&self, css: &str, attr: &str) -> u64 {
        let script = format!(
            "const e = document.querySelector({}); return e ? Number(e.getAttribute({})) : null;",
            json!(css),
            json!(attr)
        );
        self.eval(&script)
            .await
            .as_u64()
            .unwrap_or_else(|| panic!("{css} [{attr}]"))
    }

    /// axe-core's serious and critical violations on the page as it is now (rule, impact,
    /// how many elements), and how many rules it checked.
    async fn axe(&self, axe: &str) -> (Vec<Value>, u64) {
        self.eval(axe).await;
        let out = self
            .call(
                "POST",
                "/execute/async",
                Some(json!({ "script": "const done = arguments[arguments.length - 1]; axe.run(document, { resultTypes: ['violations'] }).then((r) => done({ violations: r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, target: v.nodes[0] && v.nodes[0].target })), rules: r.passes.length + r.violations.length + r.incomplete.length + r.inapplicable.length }), (e) => done({ error: String(e) }));", "args": [] })),
            )
            .await;
        assert!(out["error"].is_null(), "{out}");
        let serious = out["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["impact"] == "serious" || v["impact"] == "critical")
            .cloned()
            .collect();
        (serious, out["rules"].as_u64().unwrap_or(0))
    }

    async fn resize(&self, width: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": 1000 })),
        )
        .await;
    }
}

/// Every page of the dashboard, with data from real tasks (two analyses, a design of a small
/// repository with a cycle and of one of 1,000 modules, a develop task with the fake model and
/// its pull request): the dependency graph and the charts are drawn with the numbers the API
/// gives, and axe-core finds no serious or critical violation on any page, at 1280 and at 390
/// pixels wide (screenshots of each where `ORION_SCREENSHOTS` points).
#[actix_rt::test]
async fn every_page_draws_its_charts_and_passes_axe() {
    let axe = std::fs::read_to_string(crate::deploy::tool("axe/axe.min.js")).unwrap();
    let model = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "gpt-test",
            "=== FILE: app/util.py\ndef helper(x):\n    return x * 2\n=== END\n",
        )))
        .mount(&model)
        .await;
    let base_url = format!("{}/v1", model.uri());
    let app = TestApp::spawn_with(move |s| {
        s.llm.base_url = Some(base_url);
        s.llm.model = "gpt-test".into();
        s.developer.test_command = Some(vec!["true".into()]);
        s.llm.prices.insert(
            "gpt-test".into(),
            orion_services::llm::Price {
                input_per_million: 2.0,
                output_per_million: 8.0,
            },
        );
    })
    .await;
    let repo = crate::support::git_fixture();
    std::fs::write(
        repo.path().join("app/util.py"),
        "from app import core\n\ndef helper(x):\n    return x\n",
    )
    .unwrap();
    crate::support::git(repo.path(), &["commit", "-q", "-am", "cycle"]);
    let repo_path = repo.path().to_string_lossy().into_owned();
    let first = app
        .submit(json!({ "kind": "analyze", "repo": repo_path }))
        .await;
    app.wait_for(&first, "completed").await;
    let analyze = app
        .submit(json!({ "kind": "analyze", "repo": repo_path }))
        .await;
    let analyzed = app.wait_for(&analyze, "completed").await;
    let design = app
        .submit(json!({ "kind": "design", "repo": repo_path }))
        .await;
    let designed = app.wait_for(&design, "completed").await;
    let big = module_repository(20, 50);
    let big_design = app
        .submit(json!({ "kind": "design", "repo": big.path().to_string_lossy() }))
        .await;
    let big_designed = app.wait_for(&big_design, "completed").await;
    let (_keep, remote) = bare_remote();
    let develop = app
        .submit(json!({ "kind": "develop", "repo": remote.to_string_lossy(), "prompt": "double the helper" }))
        .await;
    app.wait_for(&develop, "awaiting_review").await;
    let pull = crate::support::pull_of(&app, &develop).await;
    let pull_id = pull["id"].as_str().unwrap().to_owned();

    let browser = Browser::start().await;
    let base = app.base.clone();
    let pages = [
        ("tasks", "#/tasks".to_owned(), "main table"),
        (
            "analysis",
            format!("#/tasks/{analyze}"),
            "figure[data-points]",
        ),
        ("design", format!("#/tasks/{design}"), "section.graph svg"),
        (
            "design-1000",
            format!("#/tasks/{big_design}"),
            "section.graph svg",
        ),
        ("develop", format!("#/tasks/{develop}"), "figure[data-bars]"),
        ("pulls", "#/pulls".to_owned(), "main table"),
        ("pull", format!("#/pulls/{pull_id}"), "pre.diff"),
        ("agents", "#/agents".to_owned(), "main table"),
        ("usage", "#/usage".to_owned(), "figure[data-bars]"),
    ];
    let mut report = Vec::new();
    for width in [1280, 390] {
        browser.resize(width).await;
        for (name, hash, ready) in &pages {
            browser.page(&base, hash, ready).await;
            let (serious, rules) = browser.axe(&axe).await;
            assert!(
                serious.is_empty(),
                "{name} at {width} px: {}",
                serde_json::to_string_pretty(&serious).unwrap()
            );
            assert!(rules > 20, "axe ran its rules on {name}: {rules}");
            report.push(format!(
                "{name}@{width}: 0 serious or critical of {rules} rules"
            ));
            // The part the page is about in view: its chart, graph or table.
            browser
                .eval(&format!(
                    "document.querySelector({}).scrollIntoView()",
                    json!(ready)
                ))
                .await;
            browser.screenshot(&format!("{name}-{width}.png")).await;
        }
    }

    // The analysis: two analyses on the trend (one point each for debt, two lines of
    // complexity), the histogram's eight buckets, and the time in queued, assigned, running.
    browser
        .page(&base, &format!("#/tasks/{analyze}"), "figure[data-points]")
        .await;
    let trend: Vec<u64> = serde_json::from_value(
        browser
            .eval("return [...document.querySelectorAll('figure[data-points]')].map((f) => Number(f.dataset.points))")
            .await,
    )
    .unwrap();
    assert_eq!(trend, [2, 4], "debt: 2 points; complexity: 2 lines of 2");
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('figure[data-points] circle.point').length")
            .await,
        6
    );
    let functions = analyzed["result"]["summary"]["functions"].as_u64().unwrap();
    let histogram = browser
        .eval("const f = [...document.querySelectorAll('figure')].find((f) => f.textContent.includes('functions by cyclomatic')); return f ? [Number(f.dataset.bars), f.querySelectorAll('rect.bar').length] : null")
        .await;
    assert_eq!(
        histogram,
        json!([8, 8]),
        "eight buckets of {functions} functions"
    );
    let steps = browser
        .eval("return [...document.querySelectorAll('svg.steps rect.bar')].map((r) => r.querySelector('title').textContent.split(':')[0])")
        .await;
    assert_eq!(steps, json!(["queued", "assigned", "running"]));

    // The small design: every module a node, both imports of the cycle in red.
    browser
        .page(&base, &format!("#/tasks/{design}"), "section.graph svg")
        .await;
    let graph = &designed["result"]["languages"]["python"];
    let nodes = graph["nodes"].as_array().unwrap().len() as u64;
    assert_eq!(browser.number("section.graph", "data-nodes").await, nodes);
    assert_eq!(browser.number("section.graph", "data-cycle-edges").await, 2);
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('section.graph path.edge.cycle').length")
            .await,
        2
    );
    assert!(
        browser
            .text_when("details.graph-text", "the graph as text", |t| t
                .contains("app/util.py imports app/core.py"))
            .await
            .contains("app/core.py imports app/util.py")
    );

    // 1,000 modules: one node per folder until a folder is opened (by keyboard), then all.
    browser
        .page(&base, &format!("#/tasks/{big_design}"), "section.graph svg")
        .await;
    let modules = big_designed["result"]["languages"]["python"]["nodes"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert!(modules >= 1000, "{modules}");
    assert_eq!(browser.number("section.graph", "data-nodes").await, 20);
    assert_eq!(
        browser.number("section.graph", "data-cycle-edges").await,
        20,
        "the cycle through every folder"
    );
    browser
        .eval("const g = document.querySelector('section.graph g.node.group'); g.focus(); g.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));")
        .await;
    let opened = browser.number("section.graph", "data-nodes").await;
    let per_folder = modules / 20;
    assert_eq!(
        opened,
        19 + per_folder,
        "one folder opened: its modules, and 19 folders"
    );
    browser
        .eval("[...document.querySelectorAll('.graph-controls button')].find((b) => b.textContent === 'Expand all').click()")
        .await;
    assert_eq!(browser.number("section.graph", "data-nodes").await, modules);
    let layers = browser.number("section.graph", "data-layers").await;
    assert!(layers >= 2, "{layers}");
    // Zoom and pan move the drawing; they do not lay the graph out again (a marked node
    // stays the same element).
    let moved = browser
        .eval("const svg = document.querySelector('section.graph svg'); const node = svg.querySelector('g.node'); node.dataset.mark = 'kept'; [...document.querySelectorAll('.graph-controls button')].find((b) => b.textContent === 'Zoom in').click(); svg.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowLeft', bubbles: true })); return [svg.querySelector('g').getAttribute('transform'), svg.querySelector('g.node').dataset.mark || null]")
        .await;
    assert_eq!(
        moved,
        serde_json::json!(["translate(40 0) scale(1.2)", "kept"]),
        "{moved}"
    );
    let (serious, _) = browser.axe(&axe).await;
    assert!(serious.is_empty(), "1,000 modules expanded: {serious:?}");

    // Usage: spend by day, tokens by model (prompt and completion), tasks by status.
    browser.page(&base, "#/usage", "figure[data-bars]").await;
    let bars = browser
        .eval("return [...document.querySelectorAll('figure[data-bars]')].map((f) => Number(f.dataset.bars))")
        .await;
    assert_eq!(bars[0], 1, "one day of spend: {bars}");
    assert_eq!(bars[1], 2, "one model, prompt and completion: {bars}");
    // Tasks by status: one day, as many bars as statuses the tasks are in.
    let (_, tasks) = app.get("/v1/tasks?limit=500").await;
    let statuses: std::collections::HashSet<&str> = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(bars[2], statuses.len() as u64, "{bars}");
    eprintln!("{}", report.join("\n"));
}
