//! `orion bench context`: what choosing a prompt's context costs on a repository, as the
//! Developer does it (the co-change history, the sources, the selection), with the co-change
//! history kept per HEAD commit against reading it again for every prompt (the baseline). The
//! two run alternately, prompt by prompt, in one process; the prompts are the subjects of the
//! repository's newest commits.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use orion_services::code::{self, select::SelectWeights};

use crate::{ContextArgs, median, say};

/// The map budget the Developer gives a prompt.
const MAP_TOKENS: usize = 1200;

/// What `orion bench context` measures.
#[derive(Debug, serde::Serialize)]
pub struct Figures {
    pub repo: std::path::PathBuf,
    /// Commits of history the co-change counts read (at most the churn window).
    pub commits_read: usize,
    pub prompts: usize,
    /// Reading the co-change history once (the baseline's cost in every prompt).
    pub history_read_ms: f64,
    /// A whole prompt's context, reading the history every time (the baseline).
    pub per_prompt_reading_ms: f64,
    /// The first prompt with the history kept (it reads it), then the median of the rest.
    pub first_prompt_kept_ms: f64,
    pub per_prompt_kept_ms: f64,
}

/// One prompt's context as the Developer chooses it, with `cochange` giving the history.
fn one_prompt<C: std::ops::Deref<Target = code::select::CoChange>>(
    root: &Path,
    query: &str,
    cochange: impl FnOnce() -> Option<C>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let cochange = cochange();
    let sources = code::load_sources(root)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let context = code::prompt_context(
        &sources,
        query,
        MAP_TOKENS,
        threads,
        cochange.as_deref(),
        &SelectWeights::default(),
    );
    std::hint::black_box(context);
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

/// Measures the context of `prompts` prompts on the repository at `root`.
pub fn measure(root: &Path, prompts: usize) -> anyhow::Result<Figures> {
    let history = orion_services::vcs::History::open(root)
        .with_context(|| format!("{} is not a git repository", root.display()))?;
    let commits_read = history.commits(orion_services::vcs::CHURN_COMMITS)?.len();
    let queries: Vec<String> = history
        .commits(prompts.max(1))?
        .into_iter()
        .map(|c| c.message.lines().next().unwrap_or_default().to_owned())
        .collect();
    anyhow::ensure!(!queries.is_empty(), "{} has no commits", root.display());
    let (mut reads, mut reading, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    for query in queries.iter().cycle().take(prompts.max(2)) {
        let read = Instant::now();
        std::hint::black_box(code::read_cochange(root));
        reads.push(read.elapsed().as_secs_f64() * 1e3);
        reading.push(one_prompt(root, query, || {
            code::read_cochange(root).map(Box::new)
        })?);
        kept.push(one_prompt(root, query, || code::cochange_of(root))?);
    }
    Ok(Figures {
        repo: root.to_owned(),
        commits_read,
        prompts: kept.len(),
        history_read_ms: median(&mut reads),
        per_prompt_reading_ms: median(&mut reading),
        first_prompt_kept_ms: kept[0],
        per_prompt_kept_ms: median(&mut kept[1..]),
    })
}

/// `orion bench context`.
pub fn context(args: ContextArgs, out: &mut dyn Write) -> anyhow::Result<std::process::ExitCode> {
    let f = measure(&args.repo, args.prompts)?;
    if args.json {
        say!(out, "{}", serde_json::to_string_pretty(&f)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    say!(
        out,
        "{}: {} prompts (its newest commits' subjects), co-change over {} commits",
        f.repo.display(),
        f.prompts,
        f.commits_read
    );
    say!(
        out,
        "reading the co-change history: {:.1} ms (median)",
        f.history_read_ms
    );
    say!(
        out,
        "a prompt's context, the history kept per HEAD commit: {:.1} ms (median; the first prompt, which reads it: {:.1} ms)",
        f.per_prompt_kept_ms,
        f.first_prompt_kept_ms
    );
    say!(
        out,
        "baseline, the history read for every prompt: {:.1} ms (median): the kept history saves {:.0}% of a prompt's context",
        f.per_prompt_reading_ms,
        100.0 * (1.0 - f.per_prompt_kept_ms / f.per_prompt_reading_ms)
    );
    Ok(std::process::ExitCode::SUCCESS)
}
