//! `orion code`: navigation from the command line.

use crate::output::say;
use std::process::ExitCode;

use anyhow::Context;
use orion_services::code::{CodeIntel, TreeSitterIntel, export};

use crate::cli::{CodeCommand, MetricsFormat};

pub async fn run(command: CodeCommand) -> anyhow::Result<ExitCode> {
    match command {
        CodeCommand::Metrics {
            path,
            format,
            cyclomatic,
            cognitive,
            nesting,
        } => {
            let thresholds = export::Thresholds {
                cyclomatic,
                cognitive,
                nesting,
            };
            metrics(path, format, thresholds).await
        }
        CodeCommand::Definition { name, repo } => {
            let found = index(&repo).await?.definition(&name);
            for location in &found {
                say!("{}:{} {}", location.path, location.line, location.kind);
            }
            if found.is_empty() {
                eprintln!("`{name}` is not defined in {}", repo.display());
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        CodeCommand::Outline { path, repo } => {
            for tag in index(&repo).await?.outline(&path) {
                say!("{:>5} {} {}", tag.line, tag.kind, tag.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        CodeCommand::Map { repo, tokens } => {
            let map = index(&repo).await?.repo_map(tokens);
            crate::output::write(format_args!("{}", map.text))?;
            eprintln!(
                "({} files, {} definitions, ~{} tokens)",
                map.files, map.definitions, map.tokens
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The definitions and references of the repository at `repo`.
async fn index(repo: &std::path::Path) -> anyhow::Result<orion_services::code::SymbolIndex> {
    TreeSitterIntel
        .symbols(repo)
        .await
        .with_context(|| format!("while indexing {}", repo.display()))
}

/// `orion code metrics`: every function of the files under `path`.
async fn metrics(
    path: std::path::PathBuf,
    format: MetricsFormat,
    thresholds: export::Thresholds,
) -> anyhow::Result<ExitCode> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let shown = path.display().to_string();
    let rows =
        tokio::task::spawn_blocking(move || orion_services::code::function_rows(&path, threads))
            .await?
            .with_context(|| format!("while measuring {shown}"))?;
    match format {
        MetricsFormat::Csv => crate::output::write(format_args!("{}", export::csv(&rows)))?,
        MetricsFormat::Json => {
            crate::output::write(format_args!("{}\n", serde_json::to_string_pretty(&rows)?))?
        }
        MetricsFormat::Sarif => crate::output::write(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&export::sarif(&rows, thresholds))?
        ))?,
        MetricsFormat::Table => {
            say!(
                "{:>5} {:>5} {:>4} {:>4} {:>4} {:>5}  {}",
                "start",
                "end",
                "ccn",
                "cog",
                "nest",
                "param",
                "file:function"
            );
            for r in &rows {
                let f = &r.function;
                say!(
                    "{:>5} {:>5} {:>4} {:>4} {:>4} {:>5}  {}:{}",
                    f.start_line,
                    f.end_line,
                    f.cyclomatic,
                    f.cognitive,
                    f.max_nesting,
                    f.parameters,
                    r.path,
                    f.name
                );
            }
            eprintln!("({} functions)", rows.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
