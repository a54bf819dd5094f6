//! The DevOps agent end to end in embedded mode, against local bare git remotes made from
//! the example repositories: `ci` tasks open a pull request whose workflow names the
//! project's real commands (and those commands pass), `release` tasks write the next
//! version's changelog and tag it on approval.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use yaml_rust2::YamlLoader;

use crate::support::{
    TempDir, TestApp, bare_clone, bare_remote, completion, git, git_rev, pull_of, show,
};

/// Copies `examples/<name>` into a new repository with one commit, and returns a bare clone
/// of it (the remote tasks work against).
pub(crate) fn example_remote(name: &str, message: &str) -> (TempDir, PathBuf, PathBuf) {
    let dir = TempDir::new();
    let work = dir.path().join("work");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
        &work,
    );
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", message]);
    let bare = bare_clone(&dir, &work);
    git(&work, &["remote", "add", "origin", &bare.to_string_lossy()]);
    (dir, work, bare)
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Each job's steps as (name, command) pairs, in order.
fn runs(workflow: &str) -> Vec<(String, Vec<(String, String)>)> {
    let doc = &YamlLoader::load_from_str(workflow).expect("the workflow parses")[0];
    doc["jobs"]
        .as_hash()
        .expect("jobs")
        .iter()
        .map(|(id, job)| {
            let steps = job["steps"]
                .as_vec()
                .expect("steps")
                .iter()
                .filter_map(|s| {
                    Some((
                        s["name"].as_str().unwrap_or_default().to_owned(),
                        s["run"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            (id.as_str().unwrap().to_owned(), steps)
        })
        .collect()
}

async fn approve(app: &TestApp, pull: &Value) {
    let reviews = format!("/v1/pulls/{}/reviews", pull["id"].as_str().unwrap());
    let (status, _, _) = app
        .post_json(&reviews, &json!({ "decision": "approve" }))
        .await;
    assert_eq!(status, 202);
}

#[actix_rt::test]
async fn a_ci_task_opens_a_pull_request_whose_workflow_runs_the_projects_own_commands() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "rust-hello",
            "rust",
            vec![
                "cargo fmt --all --check",
                "cargo clippy --all-targets -- -D warnings",
                "cargo build --all-targets",
                "cargo test --quiet",
            ],
            "ENTRYPOINT [\"/usr/local/bin/hello\"]",
        ),
        (
            "python-hello",
            "python",
            vec![
                "python3 -m pip install --upgrade pip pytest",
                "python3 -m pip install .",
                "python3 -m pytest -q",
            ],
            "CMD [\"hello\"]",
        ),
    ];
    for (example, job, commands, entry) in cases {
        let (dir, _, remote) = example_remote(example, "feat: greet");
        let main_before = git_rev(&remote, "main").unwrap();
        let id = app
            .submit(json!({ "kind": "ci", "repo": remote.to_string_lossy() }))
            .await;
        app.wait_for(&id, "awaiting_review").await;
        let pull = pull_of(&app, &id).await;
        assert_eq!(pull["tests"]["checks"]["workflow"]["jobs"], json!([job]));
        assert_eq!(pull["tests"]["written_by"], "rules");

        let workflow = show(&remote, &format!("orion/{id}:.github/workflows/ci.yml"));
        let jobs = runs(&workflow);
        assert_eq!(jobs.len(), 1, "{workflow}");
        let (id_of_job, steps) = &jobs[0];
        assert_eq!(id_of_job, job);
        let run: Vec<&str> = steps.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(run, commands, "{workflow}");
        let dockerfile = show(&remote, &format!("orion/{id}:Dockerfile"));
        assert!(dockerfile.contains(entry), "{dockerfile}");
        assert_eq!(
            git_rev(&remote, "main").unwrap(),
            main_before,
            "nothing lands before approval"
        );

        // The workflow's test step passes on the branch: its command is the project's own.
        let checkout = dir.path().join("checkout");
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                "-b",
                &format!("orion/{id}"),
                &remote.to_string_lossy(),
                &checkout.to_string_lossy(),
            ],
        );
        let test = &steps
            .iter()
            .find(|(name, _)| name == "Test")
            .expect("a Test step")
            .1;
        let output = std::process::Command::new("sh")
            .args(["-c", test])
            .current_dir(&checkout)
            .env("CARGO_TARGET_DIR", dir.path().join("target"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "`{test}` failed in {example}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        approve(&app, &pull).await;
        let done = app.wait_for(&id, "completed").await;
        assert_eq!(
            done["result"]["head"],
            git_rev(&remote, "main").unwrap().as_str()
        );
        assert_eq!(show(&remote, "main:.github/workflows/ci.yml"), workflow);
    }
}

#[actix_rt::test]
async fn a_release_task_writes_the_next_version_and_tags_it_when_approved() {
    let app = TestApp::spawn().await;
    let (_dir, work, remote) = example_remote("rust-hello", "feat: greet");
    std::fs::write(
        work.join("CHANGELOG.md"),
        "# Changelog\n\n## [1.2.3] - 2026-01-01\n\n- the first release\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "chore(release): v1.2.3"]);
    git(&work, &["tag", "-a", "v1.2.3", "-m", "Release 1.2.3"]);
    let history = [
        ("src/a.txt", "fix: trim the name before greeting"),
        ("src/b.txt", "feat(cli): greet the world by default"),
        ("README.md", "docs: say how to run it"),
        ("src/c.txt", "a commit that is not conventional"),
    ];
    for (file, message) in history {
        std::fs::write(work.join(file), message).unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", message]);
    }
    git(&work, &["push", "-q", "origin", "main", "--tags"]);

    let id = app
        .submit(json!({ "kind": "release", "repo": remote.to_string_lossy() }))
        .await;
    app.wait_for(&id, "awaiting_review").await;
    let pull = pull_of(&app, &id).await;
    let release = &pull["tests"]["release"];
    assert_eq!(
        (
            release["previous"].as_str(),
            release["tag"].as_str(),
            release["bump"].as_str()
        ),
        (Some("v1.2.3"), Some("v1.3.0"), Some("minor"))
    );
    let changelog = show(&remote, &format!("orion/{id}:CHANGELOG.md"));
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let short = |rev: &str| git_rev(&remote, rev).unwrap()[..7].to_owned();
    assert_eq!(
        changelog,
        format!(
            "# Changelog\n\n## [1.3.0] - {today}\n\n### Features\n\n- **cli:** greet the world by default ({})\n\n\
             ### Bug fixes\n\n- trim the name before greeting ({})\n\n## [1.2.3] - 2026-01-01\n\n- the first release\n",
            short("main~2"),
            short("main~3"),
        )
    );
    assert_eq!(
        git_rev(&remote, "refs/tags/v1.3.0"),
        None,
        "no tag before approval"
    );

    approve(&app, &pull).await;
    let done = app.wait_for(&id, "completed").await;
    assert_eq!(done["result"]["tag"], "v1.3.0");
    let main = git_rev(&remote, "main").unwrap();
    assert_eq!(
        git_rev(&remote, "v1.3.0^{commit}").as_deref(),
        Some(main.as_str())
    );
    assert!(show(&remote, "v1.3.0").contains("Release 1.3.0"));

    // Nothing new since the tag: a second release task makes no pull request and no tag.
    let again = app
        .submit(json!({ "kind": "release", "repo": remote.to_string_lossy() }))
        .await;
    let task = app.wait_for(&again, "completed").await;
    assert_eq!(task["result"]["released"], false);
    assert_eq!(task["result"]["previous"], "v1.3.0");
    let (_, pulls) = app.get("/v1/pulls").await;
    assert_eq!(pulls["items"].as_array().unwrap().len(), 1);
}

#[actix_rt::test]
async fn ci_on_a_repository_without_a_build_file_fails_clearly_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (_keep, remote) = bare_remote();
    let main_before = git_rev(&remote, "main").unwrap();
    let id = app
        .submit(json!({ "kind": "ci", "repo": remote.to_string_lossy() }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(task["error"]["code"], "no_build_system");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Cargo.toml, package.json"),
        "{}",
        task["error"]
    );
    assert_eq!(git_rev(&remote, "main").unwrap(), main_before);
    assert_eq!(git_rev(&remote, &format!("orion/{id}")), None);

    let id = app
        .submit(json!({ "kind": "ci", "repo": "/no/such/repository.git" }))
        .await;
    let task = app.wait_for(&id, "failed").await;
    assert_eq!(task["error"]["code"], "repo_unreachable");
}

#[actix_rt::test]
async fn the_models_ci_files_are_used_only_when_they_pass_the_checks() {
    let server = MockServer::start().await;
    let docs_step = "      - name: Docs\n        run: cargo doc --no-deps\n";
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("brief: break it"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "gpt-test",
            "=== FILE: .github/workflows/ci.yml\njobs: [\n=== END\n",
        )))
        .mount(&server)
        .await;
    let base = format!("{}/v1", server.uri());
    let app = TestApp::spawn_with(move |s| {
        s.llm.base_url = Some(base);
        s.llm.model = "gpt-test".into();
    })
    .await;

    // What the rules write, to build the model's "improvement" on.
    let (_a, _, remote) = example_remote("rust-hello", "feat: greet");
    let broken = app
        .submit(json!({ "kind": "ci", "repo": remote.to_string_lossy(), "prompt": "break it" }))
        .await;
    app.wait_for(&broken, "awaiting_review").await;
    let pull = pull_of(&app, &broken).await;
    assert_eq!(pull["tests"]["written_by"], "rules");
    let (_, events) = app.get(&format!("/v1/tasks/{broken}/events")).await;
    let note = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| {
            e["data"]["message"]
                .as_str()
                .filter(|m| m.starts_with("kept the rules' files"))
        })
        .map(str::to_owned)
        .expect("a note saying why the model's version was not used");
    assert!(note.contains("not YAML"), "{note}");
    let rules = show(&remote, &format!("orion/{broken}:.github/workflows/ci.yml"));

    let improved = rules.replace(
        "      - name: Test\n",
        &format!("{docs_step}      - name: Test\n"),
    );
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("brief: add docs"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "gpt-test",
            &format!("=== FILE: .github/workflows/ci.yml\n{improved}=== END\n"),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let (_b, _, remote) = example_remote("rust-hello", "feat: greet");
    let better = app
        .submit(json!({ "kind": "ci", "repo": remote.to_string_lossy(), "prompt": "add docs" }))
        .await;
    app.wait_for(&better, "awaiting_review").await;
    assert_eq!(pull_of(&app, &better).await["tests"]["written_by"], "model");
    let workflow = show(&remote, &format!("orion/{better}:.github/workflows/ci.yml"));
    assert_eq!(workflow, improved);
    let (_, task) = app.get(&format!("/v1/tasks/{better}")).await;
    assert_eq!(
        task["usage"]["calls"], 1,
        "the model call is counted: {task}"
    );
}
