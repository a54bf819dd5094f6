//! `orion bench model`: the in-process model's prompt and generation rates, in the layout
//! Orion runs and, as the baseline, with the weights as shipped; each measurement in a child
//! process (`orion bench model --layout …`) of its own.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::{ModelArgs, say};

/// The resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// The figures of one layout at one thread count, measured in a process of its own (candle
/// sizes its thread pools once per process, from `CANDLE_NUM_THREADS`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Figures {
    loaded_bytes: u64,
    prompt_tokens_per_s: f64,
    generation_tokens_per_s: f64,
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

/// Loads the model in `layout` and takes the median rates of `runs` answers.
fn measure(
    path: &Path,
    layout: orion_services::llm::local::Layout,
    tokens: u32,
    runs: usize,
) -> anyhow::Result<Figures> {
    use orion_services::llm::local::LoadedModel;
    let before = rss_bytes();
    let mut model = LoadedModel::load_as(path, layout).map_err(|e| anyhow::anyhow!("{e}"))?;
    let loaded_bytes = rss_bytes().saturating_sub(before);
    let request = bench_request(tokens);
    let (mut prompt, mut generation) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let generated = model.generate(&request, |_| {})?;
        prompt.push(generated.prompt_tokens as f64 / generated.prompt_secs);
        generation.push(generated.completion_tokens as f64 / generated.generation_secs);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(Figures {
        loaded_bytes,
        prompt_tokens_per_s: median(&mut prompt),
        generation_tokens_per_s: median(&mut generation),
    })
}

/// Runs one measurement in a child process with `threads` inference threads.
fn measure_in_child(
    path: &Path,
    layout: &str,
    threads: usize,
    args: &ModelArgs,
) -> anyhow::Result<Figures> {
    let out = Command::new(std::env::current_exe()?)
        .args(["bench", "model", "--layout", layout, "--model"])
        .arg(path)
        .args(["--tokens", &args.tokens.to_string()])
        .args(["--runs", &args.runs.max(1).to_string()])
        .env("CANDLE_NUM_THREADS", threads.to_string())
        .output()?;
    if !out.status.success() {
        bail!(
            "the {layout} measurement failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("the {layout} measurement printed {line:?}"))
}

/// `orion bench model`: the local model's prompt and generation rates on one thread and on
/// every core, in the layout Orion runs and, as the baseline, with the weights as shipped;
/// each measurement in a fresh process, so that its memory figure is its own.
/// `default_model` is the configured local model, measured where `--model` names none.
pub fn bench(
    args: ModelArgs,
    default_model: std::path::PathBuf,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use orion_services::llm::local::Layout;
    let path: std::path::PathBuf = args.model.clone().unwrap_or(default_model);
    let runs = args.runs.max(1);
    if let Some(layout) = &args.layout {
        let layout = match layout.as_str() {
            "fast" => Layout::Fast,
            "shipped" => Layout::AsShipped,
            other => bail!("unknown layout {other:?}: fast or shipped"),
        };
        let figures = measure(&path, layout, args.tokens, runs)?;
        say!(out, "{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    anyhow::ensure!(
        path.exists(),
        "no model at {}: run `orion model fetch`",
        path.display()
    );
    say!(
        out,
        "model {}, {} tokens a run, median of {runs} runs, each row in a fresh process",
        path.display(),
        args.tokens
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut one_thread = Vec::new();
    let mut orion_memory = 0;
    for (name, layout) in [
        ("orion (Q4_1 held as Q8_0)", "fast"),
        ("baseline (weights as shipped)", "shipped"),
    ] {
        for threads in [1, cores] {
            let f = measure_in_child(&path, layout, threads, &args)?;
            say!(
                out,
                "{name}, {threads} thread(s): prompt {:.0} tokens/s, generation {:.1} tokens/s, {:.1} MB resident once loaded",
                f.prompt_tokens_per_s,
                f.generation_tokens_per_s,
                f.loaded_bytes as f64 / 1e6
            );
            if threads == 1 {
                one_thread.push(f.generation_tokens_per_s);
                if layout == "fast" {
                    orion_memory = f.loaded_bytes;
                }
            }
        }
    }
    say!(
        out,
        "generation on one thread: {:.2}x the baseline",
        one_thread[0] / one_thread[1]
    );
    say!(
        out,
        "targets: generation on one thread >= 25 tokens/s ({}), loaded model <= 300 MB ({})",
        if one_thread[0] >= 25.0 {
            "met"
        } else {
            "NOT met"
        },
        if orion_memory <= 300_000_000 {
            "met"
        } else {
            "NOT met"
        },
    );
    Ok(())
}
