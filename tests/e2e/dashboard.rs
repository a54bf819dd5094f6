//! The web dashboard in a real browser: Debian's headless Chromium, driven over the W3C
//! WebDriver protocol by `chromedriver` (a few HTTP calls, below), against the embedded app.

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
    _driver: Process,
    client: awc::Client,
    session: String,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Process(
            Command::new("chromedriver")
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
            _driver: driver,
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
