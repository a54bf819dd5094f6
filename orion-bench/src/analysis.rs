//! `orion bench analyze`: the analysis's speed against baselines measured in the same run.
//!
//! All files are read into memory first, so every measurement parses exactly the same bytes
//! and none of them pays for disk reads. Each measurement runs `rounds` times; the fastest
//! round counts (the least disturbed by the rest of the machine).

use crate::say;
use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use orion_services::code::{Source, analyze_sources, load_sources, parse_only};
use serde::Serialize;

use crate::AnalyzeArgs;

#[derive(Debug, Serialize)]
struct Figures {
    files: usize,
    lines: usize,
    threads: usize,
    parse_1_thread_lines_per_s: f64,
    analysis_1_thread_lines_per_s: f64,
    /// analysis ÷ bare parse, one thread (target ≥ 0.6).
    analysis_vs_parse: f64,
    analysis_n_threads_lines_per_s: f64,
    /// n threads ÷ one thread (target ≥ 1.7 with two threads).
    thread_speedup: f64,
    lizard_lines_per_s: Option<f64>,
    /// Orion's analysis ÷ lizard, both on `threads` threads (target ≥ 2).
    analysis_vs_lizard: Option<f64>,
}

fn fastest(rounds: usize, mut run: impl FnMut()) -> Duration {
    (0..rounds.max(1))
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn per_second(lines: usize, took: Duration) -> f64 {
    lines as f64 / took.as_secs_f64().max(f64::EPSILON)
}

/// lizard on the same files (where the machine has it): its lines per second, fastest round.
fn lizard(
    root: &std::path::Path,
    sources: &[Source],
    lines: usize,
    threads: usize,
    rounds: usize,
) -> Option<f64> {
    if !crate::python_imports("lizard") {
        return None;
    }
    // The file list lives in a folder removed however this returns.
    let dir = crate::TempDir::new().ok()?;
    let list = dir.path().join("files");
    let mut file = std::fs::File::create(&list).ok()?;
    for s in sources {
        writeln!(file, "{}", s.path).ok()?;
    }
    drop(file);
    let took = fastest(rounds, || {
        let _ = Command::new("python3")
            .args(["-m", "lizard", "-t", &threads.to_string(), "-f"])
            .arg(&list)
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    });
    Some(per_second(lines, took))
}

/// Runs the analysis bench; writes its figures to `out`.
pub fn analyze(args: AnalyzeArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let sources = load_sources(&args.repo)
        .with_context(|| format!("while reading {}", args.repo.display()))?;
    anyhow::ensure!(
        !sources.is_empty(),
        "no supported source files under {}",
        args.repo.display()
    );
    let lines: usize = sources
        .iter()
        .map(|s| s.bytes.iter().filter(|&&b| b == b'\n').count())
        .sum();
    let rounds = args.rounds;

    let mut sink = 0usize;
    let parse_1 = fastest(rounds, || sink += parse_only(&sources, 1));
    let full_1 = fastest(rounds, || sink += analyze_sources(&sources, 1).len());
    let full_n = fastest(rounds, || sink += analyze_sources(&sources, threads).len());
    std::hint::black_box(sink);
    let lizard = if args.no_lizard {
        None
    } else {
        lizard(&args.repo, &sources, lines, threads, rounds)
    };

    let full_n_rate = per_second(lines, full_n);
    let figures = Figures {
        files: sources.len(),
        lines,
        threads,
        parse_1_thread_lines_per_s: per_second(lines, parse_1).round(),
        analysis_1_thread_lines_per_s: per_second(lines, full_1).round(),
        analysis_vs_parse: (parse_1.as_secs_f64() / full_1.as_secs_f64().max(f64::EPSILON) * 100.0)
            .round()
            / 100.0,
        analysis_n_threads_lines_per_s: full_n_rate.round(),
        thread_speedup: (full_1.as_secs_f64() / full_n.as_secs_f64().max(f64::EPSILON) * 100.0)
            .round()
            / 100.0,
        lizard_lines_per_s: lizard.map(f64::round),
        analysis_vs_lizard: lizard.map(|l| (full_n_rate / l * 100.0).round() / 100.0),
    };
    if args.json {
        say!(out, "{}", serde_json::to_string_pretty(&figures)?);
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        out,
        "{} files, {} lines, fastest of {rounds} rounds",
        figures.files,
        figures.lines
    );
    let mut row = |what: &str, rate: f64, note: String| -> anyhow::Result<()> {
        say!(out, "{what:<34} {rate:>12.0} lines/s  {note}");
        Ok(())
    };
    row(
        "bare tree-sitter parse, 1 thread",
        figures.parse_1_thread_lines_per_s,
        "(baseline)".into(),
    )?;
    row(
        "full analysis, 1 thread",
        figures.analysis_1_thread_lines_per_s,
        format!(
            "{:.2}× the bare parse (target ≥ 0.6)",
            figures.analysis_vs_parse
        ),
    )?;
    row(
        &format!("full analysis, {threads} threads"),
        figures.analysis_n_threads_lines_per_s,
        format!(
            "{:.2}× one thread (target ≥ 1.7 on 2)",
            figures.thread_speedup
        ),
    )?;
    match (figures.lizard_lines_per_s, figures.analysis_vs_lizard) {
        (Some(rate), Some(ratio)) => row(
            &format!("lizard, {threads} threads"),
            rate,
            format!("Orion's analysis is {ratio:.2}× lizard (target ≥ 2)"),
        )?,
        _ => say!(
            out,
            "lizard: not installed or skipped (pip install lizard to compare)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
