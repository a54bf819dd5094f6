//! The `orion` binary's one-shot and client commands, run as a user runs them.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{TempDir, TestApp, fixture_repo};

fn orion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run orion")
}

#[test]
fn run_does_one_task_end_to_end_and_reports_it() {
    let repo = fixture_repo();
    let data = TempDir::new();
    let data_dir = data.path().to_string_lossy().into_owned();
    let out = orion(&[
        "run",
        "analyze",
        "--repo",
        &repo.path().to_string_lossy(),
        "--json",
        "--data-dir",
        &data_dir,
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task: Value = serde_json::from_slice(&out.stdout).expect("--json prints the task");
    assert_eq!(task["status"], "completed");
    assert_eq!(task["result"]["totals"]["python"]["functions"], 3);
    let progress = String::from_utf8_lossy(&out.stderr);
    for step in ["queued", "assigned", "running", "completed"] {
        assert!(progress.contains(step), "progress shows {step}: {progress}");
    }
    assert!(
        data.path().join("orion.db").exists(),
        "the task is kept in the data directory"
    );

    // The summary form, and a failing task's exit code.
    let out = orion(&[
        "run",
        "analyze",
        "--repo",
        &repo.path().to_string_lossy(),
        "--data-dir",
        &data_dir,
    ]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        summary
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["rust", "1", "8", "5", "2", "1", "2", "1", "0"]),
        "{summary}"
    );
    let out = orion(&[
        "run",
        "analyze",
        "--repo",
        "/no/such/dir",
        "--data-dir",
        &data_dir,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("repo_not_found"));
}

/// A reader that goes away (`orion run … | head -2`) ends the command quietly: no panic, no
/// backtrace, exit 0. The pipe is closed before Orion writes a byte, so the write surely fails.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let repo = fixture_repo();
    let data = TempDir::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["run", "analyze", "--repo"])
        .arg(repo.path())
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run orion");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(
        !stderr.contains("panicked")
            && !stderr.contains("Broken pipe")
            && !stderr.contains("error"),
        "{stderr}"
    );

    // As a user types it: the two lines, and the pipeline's status is head's and Orion's 0.
    let data = TempDir::new();
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"set -o pipefail; "$0" run analyze --repo "$1" --data-dir "$2" | head -2"#)
        .arg(env!("CARGO_BIN_EXE_orion"))
        .arg(repo.path())
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_arguments_are_refused_with_a_clear_message() {
    let out = orion(&["run", "deploy", "--repo", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task kind `deploy`"));
    let out = orion(&["gateway"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cluster process: set bus.url (or bus.servers) and database.url")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["run", "analyze", "--repo", "."])
        .env("ORION__LLM__PROVIDER", "local")
        .env("ORION__LLM__MODEL_PATH", "/nonexistent/model.gguf")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "llm.provider = \"local\" needs the model file /nonexistent/model.gguf: run `orion model fetch`"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A cluster gateway never runs open; embedded mode runs open on loopback only.
    let out = Command::new(env!("CARGO_BIN_EXE_orion"))
        .arg("gateway")
        .env("ORION__BUS__URL", "nats://127.0.0.1:4222")
        .env(
            "ORION__DATABASE__URL",
            "postgres://postgres@127.0.0.1:5432/none",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refuses to start without auth"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nor without the issuer and audience every token must name.
    for (issuer, audience) in [("", "orion"), ("orion", ""), ("orion", "  ")] {
        let mut gateway = Command::new(env!("CARGO_BIN_EXE_orion"));
        gateway
            .arg("gateway")
            .env("ORION__BUS__URL", "nats://127.0.0.1:4222")
            .env(
                "ORION__DATABASE__URL",
                "postgres://postgres@127.0.0.1:5432/none",
            )
            .env("ORION__AUTH__MODE", "jwt")
            .env(
                "ORION__AUTH__JWT__SECRET",
                "a-secret-of-at-least-thirty-two-bytes",
            );
        if !issuer.is_empty() {
            gateway.env("ORION__AUTH__JWT__ISSUER", issuer);
        }
        if !audience.is_empty() {
            gateway.env("ORION__AUTH__JWT__AUDIENCE", audience);
        }
        let out = gateway.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{issuer:?} {audience:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("requires every token's issuer and audience"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let data = TempDir::new();
    let out = Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["up", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may listen on a loopback address only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = orion(&["--help"]);
    assert!(out.status.success());
    for command in ["up", "run", "gateway", "node", "migrate", "submit", "watch"] {
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(command),
            "--help lists {command}"
        );
    }
}

#[actix_rt::test]
async fn submit_and_watch_talk_to_a_running_gateway() {
    let app = TestApp::spawn().await;
    let repo = fixture_repo();
    let base = app.base.clone();
    let repo_path = repo.path().to_string_lossy().into_owned();
    let submitted = tokio::task::spawn_blocking(move || {
        orion(&[
            "submit",
            "analyze",
            "--repo",
            &repo_path,
            "--server",
            &base,
            "--idempotency-key",
            "cli-1",
        ])
    })
    .await
    .unwrap();
    assert!(submitted.status.success());
    let task: Value = serde_json::from_slice(&submitted.stdout).unwrap();
    let id = task["id"].as_str().unwrap().to_owned();
    app.wait_for(&id, "completed").await;

    let base = app.base.clone();
    let watched = tokio::task::spawn_blocking(move || {
        orion(&[
            "watch", "--task", &id, "--since", "0", "--count", "4", "--server", &base,
        ])
    })
    .await
    .unwrap();
    assert!(
        watched.status.success(),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    let types: Vec<String> = String::from_utf8_lossy(&watched.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(types, ["queued", "assigned", "running", "completed"]);
}

/// `orion bench cluster <args> --json` on the tests' NATS and Postgres: its figures.
fn bench_cluster(args: &[&str]) -> Value {
    let nats = crate::support::nats_url();
    let postgres = crate::support::postgres_server();
    let mut all = vec!["cluster"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--nats", &nats, "--postgres", &postgres]);
    bench_json(&all)
}

/// `orion bench <args> --json`, which must succeed: its figures.
fn bench_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_orion"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `orion bench context` on a repository with history: every figure is there and positive,
/// the prompts are counted, and the history read is the repository's (three commits).
#[test]
fn the_context_benchmark_times_prompts_with_and_without_the_kept_history() {
    let repo = crate::support::git_fixture();
    let f = bench_json(&[
        "context",
        "--repo",
        repo.path().to_str().unwrap(),
        "--prompts",
        "3",
    ]);
    assert_eq!(f["commits_read"], 3, "{f}");
    assert_eq!(f["prompts"], 3, "{f}");
    for key in [
        "history_read_ms",
        "per_prompt_reading_ms",
        "first_prompt_kept_ms",
        "per_prompt_kept_ms",
    ] {
        assert!(f[key].as_f64().unwrap() > 0.0, "{key}: {f}");
    }
    let refused = orion(&["bench", "context", "--repo", "/nonexistent/repository"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not a git repository"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// `orion bench model`, short: Orion's rates on one thread and on every core, each beside
/// llama.cpp's on the same file and prompt in the same run (`scripts/test.sh` installs
/// llama-cpp-python); both read the prompt as the same tokens; the ratios are the quotients.
#[test]
fn the_model_benchmark_runs_beside_llama_cpp() {
    let model = crate::llm::local_model_file();
    let f = bench_json(&[
        "model",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        "16",
        "--runs",
        "1",
    ]);
    let rows = f["rows"].as_array().unwrap();
    assert_eq!(rows[0]["threads"], 1, "{f}");
    for row in rows {
        let (orion, llama) = (&row["orion"], &row["llama_cpp"]);
        for side in [orion, llama] {
            for key in [
                "prompt_tokens_per_s",
                "long_prompt_tokens_per_s",
                "generation_tokens_per_s",
            ] {
                assert!(side[key].as_f64().unwrap() > 0.0, "{key}: {row}");
            }
        }
        for key in ["prompt_ids", "long_prompt_ids"] {
            assert_eq!(
                orion[key], llama[key],
                "the same prompt, tokenized alike: {row}"
            );
        }
        let ids = orion["long_prompt_ids"].as_array().unwrap().len();
        assert_eq!(orion["long_prompt_tokens"], ids, "{row}");
        assert!(orion["long_prompt_tokens"].as_u64().unwrap() > 400, "{row}");
        assert_eq!(llama["generated_tokens"], 16, "{row}");
        assert!(
            (1..=16).contains(&orion["generated_tokens"].as_u64().unwrap()),
            "{row}"
        );
        let rate = |side: &Value, key: &str| side[key].as_f64().unwrap();
        let generation =
            rate(orion, "generation_tokens_per_s") / rate(llama, "generation_tokens_per_s");
        assert!((row["generation_vs_llama_cpp"].as_f64().unwrap() - generation).abs() < 1e-9);
        let prompt = rate(orion, "prompt_tokens_per_s") / rate(llama, "prompt_tokens_per_s");
        assert!((row["prompt_vs_llama_cpp"].as_f64().unwrap() - prompt).abs() < 1e-9);
        let long =
            rate(orion, "long_prompt_tokens_per_s") / rate(llama, "long_prompt_tokens_per_s");
        assert!((row["long_prompt_vs_llama_cpp"].as_f64().unwrap() - long).abs() < 1e-9);
        let loaded = orion["loaded_bytes"].as_u64().unwrap();
        assert!(loaded > 50_000_000 && loaded < 300_000_000, "{row}");
    }
}

/// `orion bench cluster` on the tests' NATS and Postgres, small: every figure and its
/// baseline are printed, positive, and the ratios are the quotients of the figures.
#[test]
fn the_cluster_benchmark_runs_and_reports_its_baselines() {
    let f = bench_cluster(&["--tasks", "30", "--requests", "50"]);
    for key in ["p50_us", "p99_us", "per_s_1", "per_s_32"] {
        for side in ["agent_request", "raw_nats_request"] {
            assert!(f[side][key].as_f64().unwrap() > 0.0, "{side}.{key}: {f}");
        }
    }
    for key in [
        "tasks_per_s",
        "jetstream_publish_per_s",
        "jetstream_pull_ack_per_s",
    ] {
        assert!(f[key].as_f64().unwrap() > 0.0, "{key}: {f}");
    }
    let ratio = f["agent_request"]["p50_us"].as_f64().unwrap()
        / f["raw_nats_request"]["p50_us"].as_f64().unwrap();
    assert!((f["p50_ratio"].as_f64().unwrap() - ratio).abs() < 1e-9);
    let ratio = f["agent_request"]["per_s_32"].as_f64().unwrap()
        / f["raw_nats_request"]["per_s_32"].as_f64().unwrap();
    assert!((f["throughput_32_ratio"].as_f64().unwrap() - ratio).abs() < 1e-9);
    // The 32-in-flight ratio is of the sums over the rounds: it lies between the rounds' own.
    let rounds: Vec<f64> = f["rounds_32_ratio"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    assert_eq!(rounds.len(), 6, "{f}");
    let whole = f["throughput_32_ratio"].as_f64().unwrap();
    let (low, high) = rounds
        .iter()
        .fold((f64::MAX, 0.0f64), |(l, h), r| (l.min(*r), h.max(*r)));
    assert!(
        low > 0.0 && low - 1e-9 <= whole && whole <= high + 1e-9,
        "{f}"
    );
    assert_eq!(f["tasks"], 30);
    assert!(f["idle_node_rss_mb"].as_f64().unwrap() > 1.0, "{f}");
    // 30 tasks may cost NATS or Postgres less than a clock tick; Orion's process not.
    assert!(f["orion_cpu_ms_per_task"].as_f64().unwrap() > 0.0, "{f}");
    for part in ["nats_cpu_ms_per_task", "postgres_cpu_ms_per_task"] {
        assert!(f[part].as_f64().unwrap() >= 0.0, "{part}: {f}");
    }
    // The Celery baseline (scripts/test.sh installs Celery), run before Orion and after it:
    // the same 30 tasks each time, their rate and CPU, and Orion's rate against the faster.
    let runs = f["celery"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{f}");
    for run in runs {
        assert_eq!(run["tasks"], 30, "{f}");
        assert!(run["tasks_per_s"].as_f64().unwrap() > 0.0, "{f}");
        for part in ["client", "worker", "redis"] {
            assert!(run["cpu_ms_per_task"][part].as_f64().unwrap() >= 0.0, "{f}");
        }
        assert!(
            run["cpu_ms_per_task"]["client"].as_f64().unwrap() > 0.0,
            "{f}"
        );
    }
    let fastest = runs
        .iter()
        .map(|run| run["tasks_per_s"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let ratio = f["tasks_per_s"].as_f64().unwrap() / fastest;
    assert!((f["tasks_vs_celery"].as_f64().unwrap() - ratio).abs() < 1e-9);
}

/// `orion bench llm`: node processes of their own, sharing the provider's limits through
/// Redis, are answered no 429 and fail no call, for requests and for tokens; each process
/// keeping its own account (the baseline) sends past the limits and is answered 429s.
#[test]
fn node_processes_share_the_model_limits_through_redis() {
    let redis = crate::support::redis_url();
    let rounds = bench_json(&[
        "llm",
        "--nodes",
        "2",
        "--seconds",
        "6",
        "--concurrency",
        "8",
        "--requests-per-minute",
        "1200",
        "--tokens-per-minute",
        "120000",
        "--redis",
        &redis,
    ]);
    let rounds = rounds.as_array().unwrap();
    assert_eq!(rounds.len(), 4, "{rounds:?}");
    for round in rounds {
        assert!(round["calls_admitted"].as_u64().unwrap() > 0, "{round}");
        match round["limiter"].as_str().unwrap() {
            "shared" => {
                assert_eq!(round["responses_429"], 0, "{round}");
                assert_eq!(round["calls_failed"], 0, "{round}");
            }
            _ => assert!(round["responses_429"].as_u64().unwrap() > 0, "{round}"),
        }
    }
}

/// `--nodes`: a gateway and N node processes per count, each part's CPU per task read from
/// `/proc`; every task completes (the rate is over all of them) and the nodes, the gateway and
/// Postgres each spent CPU on them.
#[test]
fn the_cluster_benchmark_scales_nodes_and_reports_each_parts_cpu() {
    let steps = bench_cluster(&["--nodes", "1,2", "--tasks", "60"]);
    let steps = steps.as_array().unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| s["nodes"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    for step in steps {
        assert_eq!(step["tasks"], 60);
        assert!(step["tasks_per_s"].as_f64().unwrap() > 0.0, "{step}");
        for part in ["gateway", "nodes", "postgres"] {
            assert!(
                step["cpu_ms_per_task"][part].as_f64().unwrap() > 0.0,
                "{part}: {step}"
            );
        }
    }
    let refused = orion(&["bench", "cluster", "--nodes", "0"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--nodes"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn the_analysis_benchmark_runs_and_reports_its_baseline() {
    let repo = fixture_repo();
    let out = orion(&[
        "bench",
        "analyze",
        "--repo",
        &repo.path().to_string_lossy(),
        "--rounds",
        "1",
        "--threads",
        "2",
        "--no-lizard",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            figures["files"].as_u64(),
            figures["lines"].as_u64(),
            figures["threads"].as_u64()
        ),
        (Some(2), Some(15), Some(2))
    );
    for key in [
        "parse_1_thread_lines_per_s",
        "analysis_1_thread_lines_per_s",
        "analysis_n_threads_lines_per_s",
        "analysis_vs_parse",
        "thread_speedup",
    ] {
        assert!(
            figures[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {figures}"
        );
    }
    assert!(figures["lizard_lines_per_s"].is_null());
}

/// Writes `files` (path, content) under `root` and commits them with `message`.
fn commit(root: &std::path::Path, message: &str, files: &[(&str, &str)]) {
    for (path, content) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
    crate::support::git(root, &["add", "-A"]);
    crate::support::git(root, &["commit", "-q", "-m", message]);
}

/// A small shop's history whose answers are known: the commits `eval context` evaluates and
/// what each changed.
fn shop_history(root: &std::path::Path) {
    crate::support::git(root, &["init", "-q", "-b", "main"]);
    let filler: Vec<(String, String)> = (1..=6)
        .map(|i| (format!("gen/g{i}.py"), format!("def g{i}():\n    pass\n")))
        .collect();
    let mut first: Vec<(&str, &str)> = vec![
        (
            "billing/invoice.py",
            "def compute_total(items):\n    return sum(items)\n",
        ),
        (
            "shipping/rates.py",
            "def shipping_rate(weight):\n    return 5\n",
        ),
    ];
    first.extend(filler.iter().map(|(p, c)| (p.as_str(), c.as_str())));
    commit(root, "Start", &first);
    // New files are no answer (the parent lacks them): these two commits are not evaluated.
    commit(
        root,
        "Add logins",
        &[(
            "auth/login.py",
            "def login_user(name, password):\n    return True\n",
        )],
    );
    commit(
        root,
        "Add slugs",
        &[(
            "util/strings.py",
            "def slugify(text):\n    return text.lower()\n",
        )],
    );
    commit(
        root,
        "Fix invoice total rounding",
        &[(
            "billing/invoice.py",
            "def compute_total(items):\n    return round(sum(items), 2)\n",
        )],
    );
    commit(
        root,
        "Shipping rate ignores the weight",
        &[(
            "shipping/rates.py",
            "def shipping_rate(weight):\n    return 5 + weight\n",
        )],
    );
    // Not evaluated: six source files (over 5), and a change to no source file.
    let reformatted: Vec<(String, String)> = filler
        .iter()
        .map(|(p, c)| (p.clone(), format!("{c}\n")))
        .collect();
    let reformatted: Vec<(&str, &str)> = reformatted
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    commit(root, "Reformat the generated helpers", &reformatted);
    commit(root, "Document the project", &[("README.md", "# shop\n")]);
    // The first time these two change together: that must not help rank login.py here.
    commit(
        root,
        "Speed up slugify",
        &[
            (
                "util/strings.py",
                "def slugify(text):\n    return text.casefold()\n",
            ),
            (
                "auth/login.py",
                "def login_user(name, password):\n    return bool(password)\n",
            ),
        ],
    );
}

#[test]
fn eval_context_scores_a_history_whose_answers_are_known_without_leaking_a_commit_into_itself() {
    let repo = TempDir::new();
    let root = repo.path();
    shop_history(root);

    let out = orion(&[
        "eval",
        "context",
        "--repo",
        &root.to_string_lossy(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints the report");
    assert_eq!(report["commits_evaluated"], 3, "{report}");
    let by_subject = |subject: &str| {
        report["commits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["subject"] == subject)
            .unwrap_or_else(|| panic!("{subject} evaluated"))
            .clone()
    };
    let invoice = by_subject("Fix invoice total rounding");
    assert_eq!(invoice["files"], serde_json::json!(["billing/invoice.py"]));
    assert_eq!(invoice["ranks"]["orion"], serde_json::json!([1]));
    assert_eq!(
        by_subject("Shipping rate ignores the weight")["ranks"]["orion"],
        serde_json::json!([1])
    );
    let slugify = by_subject("Speed up slugify");
    assert_eq!(
        slugify["files"],
        serde_json::json!(["auth/login.py", "util/strings.py"])
    );
    assert_eq!(
        slugify["ranks"]["orion"],
        serde_json::json!([null, 1]),
        "login.py has nothing of the task, and no earlier commit changed it with strings.py"
    );
    // The second answer: the functions each commit changed, found in the parent by the
    // analyzer's spans, and ranked among every function of the state.
    assert_eq!(
        invoice["functions"],
        serde_json::json!(["billing/invoice.py::compute_total:1"])
    );
    assert_eq!(invoice["function_ranks"]["orion"], serde_json::json!([1]));
    assert_eq!(
        slugify["functions"],
        serde_json::json!(["auth/login.py::login_user:1", "util/strings.py::slugify:1"])
    );
    assert_eq!(slugify["function_ranks"]["orion"][1], 1, "{slugify}");
    assert_eq!(report["function_commits"], 3, "{report}");
    assert_eq!(report["function_methods"][0]["method"], "orion");
    let orion_scores = &report["methods"][0];
    assert_eq!(orion_scores["method"], "orion");
    // 1 + 1 + 1/2 over three commits.
    assert!((orion_scores["recall"]["1"].as_f64().unwrap() - 2.5 / 3.0).abs() < 1e-9);
    assert_eq!(orion_scores["mrr"], 1.0);

    // The table form names the three methods.
    let out = orion(&[
        "eval",
        "context",
        "--repo",
        &root.to_string_lossy(),
        "--k",
        "1,3",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(table.contains("recall@3"), "{table}");
    assert!(table.contains("functions (3 of the commits"), "{table}");
    for method in ["orion", "bm25", "repo_map"] {
        assert!(table.lines().any(|l| l.starts_with(method)), "{table}");
    }
    let out = orion(&["eval", "context", "--repo", "/no/such/repo"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not inside a git repository"));
}

#[test]
fn eval_corpus_holds_out_one_repository_of_each_pair_and_refuses_a_corpus_that_points_elsewhere() {
    let dir = TempDir::new();
    let base = dir.path();
    let mut corpus = String::new();
    for name in ["shop/one", "shop/two", "shop/three"] {
        let root = base.join("repos").join(name);
        std::fs::create_dir_all(&root).unwrap();
        shop_history(&root);
        let head = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&root)
            .output()
            .unwrap();
        corpus.push_str(&format!(
            "[[repo]]\nname = \"{name}\"\nlanguage = \"Python\"\ncommit = \"{}\"\n\n",
            String::from_utf8_lossy(&head.stdout).trim()
        ));
    }
    let corpus_file = base.join("corpus.toml");
    std::fs::write(&corpus_file, &corpus).unwrap();
    let repos = base.join("repos");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = [
            "eval",
            "corpus",
            "--corpus",
            &corpus_file.to_string_lossy(),
            "--repos",
            &repos.to_string_lossy(),
            "--trials",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        orion(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints the report");
    let splits: Vec<&str> = report["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["split"].as_str().unwrap())
        .collect();
    assert_eq!(
        splits.iter().filter(|s| **s == "held_out").count(),
        1,
        "three of a language: tuning, held out, tuning: {splits:?}"
    );
    assert_eq!(report["search"].as_array().unwrap().len(), 4);
    let held = report["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["split"] == "held_out")
        .unwrap();
    assert_eq!(held["commits_evaluated"], 3, "{held}");
    assert!(
        report["summary"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["split"] == "held_out" && g["group"] == "Python" && g["repos"] == 1),
        "{report}"
    );
    // The table names the sets and the lead.
    let out = run(&[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        table.contains("held_out") && table.contains("lead over BM25"),
        "{table}"
    );

    // A name that climbs out of the repositories' folder, and a clone that is not there.
    std::fs::write(
        &corpus_file,
        "[[repo]]\nname = \"../etc\"\nlanguage = \"Python\"\ncommit = \"0123456\"\n",
    )
    .unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an `owner/name`"));
    // The script that fetches a corpus refuses it too, before it clones anything.
    let fetched = base.join("fetched");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-corpus.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&fetched)
        .arg(&corpus_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an owner/name"));
    assert!(!fetched.exists() && !base.join("etc").exists());
    std::fs::write(
        &corpus_file,
        "[[repo]]\nname = \"shop/four\"\nlanguage = \"Python\"\ncommit = \"0123456789abcdef0123456789abcdef01234567\"\n",
    )
    .unwrap();
    let out = run(&[]);
    let error = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        error.contains("shop/four") && error.contains("git clone"),
        "{error}"
    );
}

/// A secret can come from a file named by `ORION__SECTION__KEY__FILE`: `orion token` signs
/// with the secret in the file, and the token verifies with it.
#[test]
fn a_secret_is_read_from_the_file_its_variable_names() {
    let dir = TempDir::new();
    let file = dir.path().join("jwt-secret");
    let secret = "secret-from-a-file-of-32-bytes-or-more";
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["token", "--role", "operator", "--subject", "ops"])
        .env("ORION__AUTH__JWT__SECRET__FILE", &file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .expect("signed with the file's secret, without its newline")
    .claims;
    assert_eq!(
        (claims["role"].as_str(), claims["sub"].as_str()),
        (Some("operator"), Some("ops"))
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["token", "--role", "operator"])
        .env("ORION__AUTH__JWT__SECRET__FILE", dir.path().join("absent"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("ORION__AUTH__JWT__SECRET__FILE"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// `orion up` ends as every Orion process does: on SIGTERM its node drains, then its server
/// stops, and it exits 0.
#[actix_rt::test]
async fn orion_up_drains_its_node_and_stops_on_sigterm() {
    use std::process::Stdio;
    let data = TempDir::new();
    let out = data.path().join("out");
    let up = Command::new(env!("CARGO_BIN_EXE_orion"))
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("d"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    crate::support::eventually(
        "orion up to listen",
        std::time::Duration::from_secs(30),
        || async {
            std::fs::read_to_string(&out)
                .ok()?
                .contains("Orion listening on")
                .then_some(())
        },
    )
    .await;
    let killed = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let up = std::cell::RefCell::new(up);
    let status = crate::support::eventually(
        "orion up to exit",
        std::time::Duration::from_secs(30),
        || {
            let exited = up.borrow_mut().try_wait().unwrap();
            async move { exited }
        },
    )
    .await;
    assert!(status.success(), "{status:?}");
    let printed = std::fs::read_to_string(&out).unwrap();
    assert!(printed.contains("drained"), "{printed}");
}
