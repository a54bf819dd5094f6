//! `orion eval context`: context selection measured on a repository's own history;
//! `orion eval corpus`: on a corpus of repositories, weights chosen on a tuning set and
//! reported on a held-out one.

use crate::output::say;
use std::process::ExitCode;

use anyhow::Context;
use orion_services::code::corpus::{self, Corpus, CorpusOptions, OBJECTIVE_K};
use orion_services::code::eval::{EvalOptions, MethodScore, evaluate};

use crate::cli::{EvalContextArgs, EvalCorpusArgs};
use crate::settings::Settings;

pub fn context(args: EvalContextArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.ks.is_empty() && args.ks.iter().all(|k| *k > 0),
        "--k takes cut-offs of 1 or more, like 1,5,10"
    );
    let mut options = EvalOptions {
        commits: args.commits,
        ks: args.ks,
        weights: settings.context,
        ..EvalOptions::default()
    };
    if let Some(threads) = args.threads {
        options.threads = threads.max(1);
    }
    let report = evaluate(&args.repo, &options)
        .with_context(|| format!("while evaluating {}", args.repo.display()))?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        "{} commits evaluated ({} source files at the newest), {:.1} s",
        report.commits_evaluated,
        report.files,
        report.seconds
    );
    say!("files:");
    table(&options.ks, &report.methods)?;
    say!(
        "functions ({} of the commits changed a function of the parent):",
        report.function_commits
    );
    table(&options.ks, &report.function_methods)?;
    Ok(ExitCode::SUCCESS)
}

/// Each method's recall at each cut-off and MRR, a line each.
fn table(ks: &[usize], methods: &[MethodScore]) -> anyhow::Result<()> {
    let mut header = format!("{:<10}", "method");
    for k in ks {
        header.push_str(&format!(" {:>10}", format!("recall@{k}")));
    }
    header.push_str(&format!(" {:>8}", "MRR"));
    say!("{header}");
    for method in methods {
        let mut line = format!("{:<10}", method.method);
        for k in ks {
            line.push_str(&format!(" {:>10.3}", method.recall[k]));
        }
        line.push_str(&format!(" {:>8.3}", method.mrr));
        say!("{line}");
    }
    Ok(())
}

pub fn corpus(args: EvalCorpusArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.corpus)
        .with_context(|| format!("while reading {}", args.corpus.display()))?;
    let corpus = Corpus::parse(&text)?;
    let options = CorpusOptions {
        repos: args.repos,
        commits: args.commits,
        trials: args.trials,
        seed: args.seed,
        weights: settings.context,
        threads: args
            .threads
            .map_or_else(orion_services::code::all_cores, |t| t.max(1)),
    };
    // Progress goes to standard error, so that `--json` output stays one document.
    let report = corpus::run(&corpus, &options, |line| eprintln!("{line}"))?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let k = OBJECTIVE_K;
    say!(
        "weights chosen on the tuning set ({} settings, seed {}): {:?}",
        report.trials + 1,
        report.seed,
        report.weights
    );
    say!(
        "  tuning-set file recall@{k}: {:.3} (the configured weights: {:.3})",
        report.objective,
        report.start_objective
    );
    say!(
        "{:<24} {:<11} {:<8} {:>7} {:>6} | files R@{k}: {:>6} {:>6} {:>6} MRR: {:>6} {:>6} | functions R@{k}: {:>6} {:>6} {:>6} MRR: {:>6} {:>6}",
        "repository",
        "language",
        "set",
        "commits",
        "fn",
        "orion",
        "bm25",
        "map",
        "orion",
        "bm25",
        "orion",
        "bm25",
        "map",
        "orion",
        "bm25"
    );
    for r in &report.repos {
        say!(
            "{:<24} {:<11} {:<8} {:>7} {:>6} |            {:>6.3} {:>6.3} {:>6.3}      {:>6.3} {:>6.3} |                {:>6.3} {:>6.3} {:>6.3}      {:>6.3} {:>6.3}",
            r.name,
            r.language,
            r.split.as_str(),
            r.commits_evaluated,
            r.function_commits,
            r.file_recall("orion"),
            r.file_recall("bm25"),
            r.file_recall("repo_map"),
            r.file_mrr("orion"),
            r.file_mrr("bm25"),
            r.function_recall("orion"),
            r.function_recall("bm25"),
            r.function_recall("repo_map"),
            r.function_mrr("orion"),
            r.function_mrr("bm25"),
        );
    }
    say!(
        "{:<8} {:<11} {:>5} | files R@{k}: {:>6} {:>6} | lead over BM25 (points): {:>6} {:>5} {:>6} | functions R@{k}: {:>6} {:>6} {:>6}",
        "set",
        "group",
        "repos",
        "orion",
        "bm25",
        "mean",
        "sd",
        "least",
        "orion",
        "bm25",
        "map"
    );
    for g in &report.summary {
        say!(
            "{:<8} {:<11} {:>5} |            {:>6.3} {:>6.3} |                          {:>6.1} {:>5.1} {:>6.1} |                {:>6.3} {:>6.3} {:>6.3}",
            g.split.as_str(),
            g.group,
            g.repos,
            g.file_recall["orion"],
            g.file_recall["bm25"],
            g.lead_mean,
            g.lead_sd,
            g.lead_min,
            g.function_recall["orion"],
            g.function_recall["bm25"],
            g.function_recall["repo_map"],
        );
    }
    say!("{:.1} s", report.seconds);
    Ok(ExitCode::SUCCESS)
}
