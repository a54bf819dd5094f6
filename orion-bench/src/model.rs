//! `orion bench model`: the in-process model's prompt and generation rates on one thread and
//! on every core, each measured in a child process of its own (`orion bench model --threads
//! N`), beside llama.cpp's on the same file, prompt and threads, in the same run, where
//! llama-cpp-python is installed (the way `orion bench analyze` runs lizard).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::{ModelArgs, median, say};

/// The resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// The figures of one engine at one thread count, measured in a process of its own.
#[derive(serde::Serialize, serde::Deserialize)]
struct Figures {
    loaded_bytes: u64,
    prompt_tokens: usize,
    prompt_tokens_per_s: f64,
    generation_tokens_per_s: f64,
    /// Tokens generated in the last run (Orion stops early at an end token; llama.cpp's
    /// baseline never does).
    generated_tokens: usize,
    /// The long prompt (a file to edit, as a develop task sends): its tokens and rate.
    long_prompt_tokens: usize,
    long_prompt_tokens_per_s: f64,
    /// The token ids each engine read the two prompts as (they must agree).
    prompt_ids: Vec<u32>,
    long_prompt_ids: Vec<u32>,
    /// Orion: its kernels, threads and weights; llama.cpp: its version and the CPU features
    /// it was built for.
    about: String,
}

/// The request every run answers: a prompt of a few dozen tokens, an answer of `tokens`.
fn bench_request(tokens: u32) -> orion_services::llm::ChatRequest {
    use orion_services::llm::{ChatMessage, ChatRequest};
    ChatRequest {
        messages: vec![
            ChatMessage::system("You are a helpful assistant."),
            ChatMessage::user(
                "Write a short story about a lighthouse keeper who finds a message in a bottle, in about two hundred words.",
            ),
        ],
        max_tokens: Some(tokens),
        temperature: None,
        frame: None,
    }
}

/// A prompt of some 450 tokens, as a develop task sends: a file and what to do with it.
fn long_request() -> orion_services::llm::ChatRequest {
    use orion_services::llm::{ChatMessage, ChatRequest};
    let file: String = (1..=24)
        .map(|i| format!("def scale_{i}(x):\n    return x * {i} + {}\n\n", i * i))
        .collect();
    ChatRequest {
        messages: vec![
            ChatMessage::system("You edit Python files. Answer with the whole new file."),
            ChatMessage::user(format!(
                "Task: add a docstring to every function.\n\n=== FILE: scale.py\n{file}=== END\n"
            )),
        ],
        max_tokens: Some(1),
        temperature: None,
        frame: None,
    }
}

/// Loads the model on `threads` threads and takes the median rates of `runs` answers.
fn measure(path: &Path, threads: usize, tokens: u32, runs: usize) -> anyhow::Result<Figures> {
    use orion_services::llm::local::{Layout, LoadedModel, chat_prompt};
    let before = rss_bytes();
    let mut model =
        LoadedModel::load_as(path, Layout::Shipped, threads).map_err(|e| anyhow::anyhow!("{e}"))?;
    let loaded_bytes = rss_bytes().saturating_sub(before);
    let request = bench_request(tokens);
    let (mut prompt, mut generation, mut prompt_tokens) = (Vec::new(), Vec::new(), 0);
    let (mut long, mut long_tokens, mut generated_tokens) = (Vec::new(), 0, 0);
    for _ in 0..runs {
        let generated = model.generate(&request, |_| {})?;
        prompt_tokens = generated.prompt_tokens;
        generated_tokens = generated.completion_tokens;
        prompt.push(generated.prompt_tokens as f64 / generated.prompt_secs);
        generation.push(generated.completion_tokens as f64 / generated.generation_secs);
        let read = model.generate(&long_request(), |_| {})?;
        long_tokens = read.prompt_tokens;
        long.push(read.prompt_tokens as f64 / read.prompt_secs);
    }
    Ok(Figures {
        loaded_bytes,
        prompt_tokens,
        prompt_tokens_per_s: median(&mut prompt),
        generation_tokens_per_s: median(&mut generation),
        generated_tokens,
        long_prompt_tokens: long_tokens,
        long_prompt_tokens_per_s: median(&mut long),
        prompt_ids: model.tokenizer.encode(&chat_prompt(&request)),
        long_prompt_ids: model.tokenizer.encode(&chat_prompt(&long_request())),
        about: model.describe(),
    })
}

/// Runs `command` and reads the JSON line it prints last.
fn figures_of(mut command: Command, what: &str, stdin: &str) -> anyhow::Result<Figures> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("the {what} measurement did not start"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the {what} measurement failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    crate::last_json_line(
        &String::from_utf8_lossy(&out.stdout),
        &format!("the {what} measurement"),
    )
}

/// Orion on `threads` threads, in a child process.
fn orion_in_child(path: &Path, threads: usize, args: &ModelArgs) -> anyhow::Result<Figures> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args([
            "bench",
            "model",
            "--threads",
            &threads.to_string(),
            "--model",
        ])
        .arg(path)
        .args(["--tokens", &args.tokens.to_string()])
        .args(["--runs", &args.runs.max(1).to_string()]);
    figures_of(command, "Orion", "")
}

/// llama.cpp (llama-cpp-python) on `threads` threads, on the same prompt text.
fn llama_cpp(path: &Path, threads: usize, args: &ModelArgs) -> anyhow::Result<Figures> {
    use orion_services::llm::local::chat_prompt;
    let prompts = serde_json::json!({
        "prompt": chat_prompt(&bench_request(args.tokens)),
        "long": chat_prompt(&long_request()),
    });
    let mut command = Command::new("python3");
    command
        .args(["-c", include_str!("llama_cpp_baseline.py")])
        .arg(path)
        .args([
            threads.to_string(),
            args.tokens.to_string(),
            args.runs.max(1).to_string(),
        ]);
    figures_of(command, "llama.cpp", &prompts.to_string())
}

/// The CPU's model name, for the record.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

/// One thread count's figures, Orion's beside llama.cpp's where it is installed.
#[derive(serde::Serialize)]
struct Row {
    threads: usize,
    orion: Figures,
    llama_cpp: Option<Figures>,
    /// Orion's rates over llama.cpp's.
    generation_vs_llama_cpp: Option<f64>,
    prompt_vs_llama_cpp: Option<f64>,
    long_prompt_vs_llama_cpp: Option<f64>,
}

/// What `orion bench model --json` prints.
#[derive(serde::Serialize)]
struct Report {
    cpu: String,
    model: std::path::PathBuf,
    tokens: u32,
    runs: usize,
    rows: Vec<Row>,
    /// Every target met: loaded model <= 300 MB, generation >= 0.8x and both prompts' rates
    /// >= 0.5x llama.cpp's on every thread count (never met without the baseline).
    targets_met: bool,
}

/// `orion bench model`: Orion's prompt and generation rates on one thread and on every core,
/// each in a fresh process so that its memory figure is its own, beside llama.cpp's in the
/// same run. `default_model` is the configured local model, measured where `--model` names
/// none.
pub fn bench(
    args: ModelArgs,
    default_model: std::path::PathBuf,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let path: std::path::PathBuf = args.model.clone().unwrap_or(default_model);
    let runs = args.runs.max(1);
    if let Some(threads) = args.threads {
        let figures = measure(&path, threads, args.tokens, runs)?;
        say!(out, "{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    anyhow::ensure!(
        path.exists(),
        "no model at {}: run `orion model fetch`",
        path.display()
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let baseline = crate::python_imports("llama_cpp, numpy");
    let text = !args.json;
    if text {
        say!(
            out,
            "model {}, {} tokens a run, median of {runs} runs, each row in a fresh process, on {} ({cores} cores)",
            path.display(),
            args.tokens,
            cpu_name()
        );
        if !baseline {
            say!(
                out,
                "llama-cpp-python is not installed: no baseline (python3 -m pip install llama-cpp-python)"
            );
        }
    }
    let mut counts = vec![1];
    if cores > 1 {
        counts.push(cores);
    }
    let mut rows = Vec::new();
    for t in counts {
        let orion = orion_in_child(&path, t, &args)?;
        if text {
            say!(
                out,
                "orion, {t} thread(s): prompt {:.0} tokens/s ({} tokens), long prompt {:.0} tokens/s ({} tokens), generation {:.1} tokens/s ({} tokens), {:.1} MB resident once loaded ({})",
                orion.prompt_tokens_per_s,
                orion.prompt_tokens,
                orion.long_prompt_tokens_per_s,
                orion.long_prompt_tokens,
                orion.generation_tokens_per_s,
                orion.generated_tokens,
                orion.loaded_bytes as f64 / 1e6,
                orion.about
            );
        }
        let llama = if baseline {
            Some(llama_cpp(&path, t, &args)?)
        } else {
            None
        };
        let generation = llama
            .as_ref()
            .map(|l| orion.generation_tokens_per_s / l.generation_tokens_per_s);
        let prompt = llama
            .as_ref()
            .map(|l| orion.prompt_tokens_per_s / l.prompt_tokens_per_s);
        let long = llama
            .as_ref()
            .map(|l| orion.long_prompt_tokens_per_s / l.long_prompt_tokens_per_s);
        if let (Some(llama), Some(generation), Some(prompt), Some(long), true) =
            (&llama, generation, prompt, long, text)
        {
            say!(
                out,
                "llama.cpp ({}), {t} thread(s): prompt {:.0} tokens/s ({} tokens), long prompt {:.0} tokens/s ({} tokens), generation {:.1} tokens/s ({} tokens), {:.1} MB resident once loaded",
                llama.about,
                llama.prompt_tokens_per_s,
                llama.prompt_tokens,
                llama.long_prompt_tokens_per_s,
                llama.long_prompt_tokens,
                llama.generation_tokens_per_s,
                llama.generated_tokens,
                llama.loaded_bytes as f64 / 1e6
            );
            say!(
                out,
                "{t} thread(s): generation {generation:.2}x llama.cpp (target >= 0.8: {}), prompt {prompt:.2}x and long prompt {long:.2}x (target >= 0.5: {})",
                crate::verdict(generation >= 0.8),
                crate::verdict(prompt >= 0.5 && long >= 0.5)
            );
        }
        rows.push(Row {
            threads: t,
            orion,
            llama_cpp: llama,
            generation_vs_llama_cpp: generation,
            prompt_vs_llama_cpp: prompt,
            long_prompt_vs_llama_cpp: long,
        });
    }
    let targets_met = baseline
        && rows.iter().all(|r| {
            r.orion.loaded_bytes <= 300_000_000
                && r.generation_vs_llama_cpp.is_none_or(|g| g >= 0.8)
                && r.prompt_vs_llama_cpp.is_none_or(|p| p >= 0.5)
                && r.long_prompt_vs_llama_cpp.is_none_or(|p| p >= 0.5)
        });
    if text {
        say!(
            out,
            "targets: {} (loaded model <= 300 MB{})",
            crate::verdict(targets_met),
            if baseline {
                ", generation >= 0.8x and both prompts >= 0.5x llama.cpp on every thread count"
            } else {
                "; the rates need the baseline"
            }
        );
    } else {
        let report = Report {
            cpu: cpu_name(),
            model: path,
            tokens: args.tokens,
            runs,
            rows,
            targets_met,
        };
        say!(out, "{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
