//! `orion eval context`: context selection measured on a repository's own history.

use crate::output::say;
use std::process::ExitCode;

use anyhow::Context;
use orion_services::code::eval::{EvalOptions, evaluate};

use crate::cli::EvalContextArgs;
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
    let table = |methods: &[orion_services::code::eval::MethodScore]| -> anyhow::Result<()> {
        let mut header = format!("{:<10}", "method");
        for k in &options.ks {
            header.push_str(&format!(" {:>10}", format!("recall@{k}")));
        }
        header.push_str(&format!(" {:>8}", "MRR"));
        say!("{header}");
        for method in methods {
            let mut line = format!("{:<10}", method.method);
            for k in &options.ks {
                line.push_str(&format!(" {:>10.3}", method.recall[k]));
            }
            line.push_str(&format!(" {:>8.3}", method.mrr));
            say!("{line}");
        }
        Ok(())
    };
    say!("files:");
    table(&report.methods)?;
    say!(
        "functions ({} of the commits changed a function of the parent):",
        report.function_commits
    );
    table(&report.function_methods)?;
    Ok(ExitCode::SUCCESS)
}
