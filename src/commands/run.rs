//! `orion run`: one task end to end in embedded mode.

use crate::output::say;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use orion_bus::{Task, TaskSpec, TaskStatus};
use orion_services::code::RepoReport;

use crate::app;
use crate::cli::RunArgs;
use crate::settings::Settings;

/// How often the store is read while waiting, besides the events.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How many of the task's new events are read at once.
const EVENTS_PAGE: u64 = 500;

pub async fn run(args: RunArgs, mut settings: Settings) -> anyhow::Result<ExitCode> {
    if let Some(dir) = args.data.data_dir {
        settings.data_dir = dir;
    }
    let name = settings.node_name();
    let services = app::connect(&settings, &name).await?;
    let _node = app::start_node(&services, &settings, &name)?;
    let lifecycle = &services.lifecycle;

    // A local path is made absolute, so any node can find it whatever its working directory.
    let repo = match Path::new(&args.task.repo).canonicalize() {
        Ok(path) => path.to_string_lossy().into_owned(),
        Err(_) => args.task.repo.clone(),
    };
    let t = args.task;
    let mut spec = TaskSpec::new(t.kind, repo, t.prompt, t.git_ref, t.priority)?;
    if let Some(diff) = t.diff {
        spec = spec.with_diff(diff)?;
    }
    let submission = lifecycle
        .submit(spec, None)
        .await
        .context("while submitting the task")?;
    if let Some(e) = submission.queue_error {
        return Err(e).context("while queueing the task");
    }
    let id = submission.task.id;
    eprintln!(
        "task {id}: {} {}",
        submission.task.spec.kind, submission.task.spec.repo
    );

    // The bus only wakes the loop, on this task's events (one missed before the subscription
    // is read at the first tick): what is shown is read from the task log, after the last
    // event shown, so that events committed together (a start and its outcome) are all shown,
    // in order, before the task's end is.
    let bus = lifecycle.bus();
    let mut events = bus.subscribe(&bus.subjects().events_of(id)).await?;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    let (mut shown, mut bus_ended) = (0, false);
    let task = loop {
        tokio::select! {
            next = events.next(), if !bus_ended => bus_ended = next.is_none(),
            _ = poll.tick() => {}
        }
        let task = lifecycle.store().task(id).await?;
        loop {
            let page = lifecycle
                .store()
                .events(Some(id), shown, EVENTS_PAGE)
                .await?;
            for event in &page {
                let detail = if event.data.is_null() {
                    String::new()
                } else {
                    format!(" {}", event.data)
                };
                eprintln!(
                    "  {} {}{detail}",
                    event.at.format("%H:%M:%S%.3f"),
                    event.event_type
                );
                shown = event.seq;
            }
            if page.len() < EVENTS_PAGE as usize {
                break;
            }
        }
        if task.status.is_terminal() || task.status == TaskStatus::AwaitingReview {
            break task;
        }
    };
    if args.json {
        say!("{}", serde_json::to_string_pretty(&task)?);
    } else {
        print_summary(&task)?;
        if task.status == TaskStatus::AwaitingReview {
            print_pull(lifecycle, &task).await?;
        }
    }
    Ok(
        if matches!(
            task.status,
            TaskStatus::Completed | TaskStatus::AwaitingReview
        ) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// The pull request a task waits on, and how to review it.
async fn print_pull(
    lifecycle: &orion_services::lifecycle::Lifecycle,
    task: &Task,
) -> anyhow::Result<()> {
    let events = lifecycle.store().events(Some(task.id), 0, 500).await?;
    let Some(pull) = events
        .iter()
        .rev()
        .find_map(|e| e.data.get("pull").and_then(|p| p.as_str()))
    else {
        return Ok(());
    };
    let pull = lifecycle
        .store()
        .pull(pull.parse().context("while reading the pull request id")?)
        .await?;
    say!(
        "pull request {} on {}: {} files, +{} -{}; tests: {}",
        pull.id,
        pull.branch,
        pull.files_changed,
        pull.insertions,
        pull.deletions,
        pull.tests
            .as_ref()
            .and_then(|t| t.get("passed"))
            .map_or("not run".to_owned(), |p| if p == true {
                "passed".into()
            } else {
                "failed".into()
            })
    );
    say!("{}", pull.diff);
    say!(
        "review it: orion up --data-dir <this data dir>, then orion review approve {} (or request-changes --comment …)",
        pull.id
    );
    Ok(())
}

fn print_summary(task: &Task) -> anyhow::Result<()> {
    say!("task {} {}", task.id, task.status);
    if let Some(error) = &task.error {
        say!("{}: {}", error.code, error.message);
    }
    let Some(result) = &task.result else {
        return Ok(());
    };
    match serde_json::from_value::<RepoReport>(result.clone()) {
        Ok(report) => print_report(&report)?,
        Err(_) => say!(
            "{}",
            serde_json::to_string_pretty(result).unwrap_or_default()
        ),
    }
    Ok(())
}

fn print_report(report: &RepoReport) -> anyhow::Result<()> {
    let s = &report.summary;
    say!(
        "{} files, {} lines ({} code), {} functions, average cyclomatic {:.2}, max {}, {} TODO/FIXME, debt {}h{:02}m",
        s.files,
        s.lines,
        s.code,
        s.functions,
        s.average_cyclomatic,
        s.max_cyclomatic,
        s.todos,
        s.debt_minutes / 60,
        s.debt_minutes % 60
    );
    say!();
    say!(
        "{:<11} {:>6} {:>9} {:>9} {:>8} {:>7} {:>9} {:>6} {:>7}",
        "language",
        "files",
        "lines",
        "code",
        "comment",
        "blank",
        "functions",
        "types",
        "imports"
    );
    for (language, t) in &report.totals {
        say!(
            "{:<11} {:>6} {:>9} {:>9} {:>8} {:>7} {:>9} {:>6} {:>7}",
            language.name(),
            t.files,
            t.lines,
            t.code,
            t.comment,
            t.blank,
            t.functions,
            t.types,
            t.imports
        );
    }
    if !report.complex_functions.is_empty() {
        say!();
        say!("most complex functions (cyclomatic / cognitive / nesting):");
        for f in report.complex_functions.iter().take(10) {
            let m = &f.function;
            say!(
                "  {:>3} {:>4} {:>3}  {}:{} {}",
                m.cyclomatic,
                m.cognitive,
                m.max_nesting,
                f.path,
                m.start_line,
                m.name
            );
        }
    }
    if !report.hotspots.is_empty() {
        say!();
        say!("hotspots (cyclomatic × commits):");
        for h in &report.hotspots {
            say!(
                "  {:>7} = {:>5} × {:<4} {}",
                h.score,
                h.cyclomatic,
                h.churn,
                h.path
            );
        }
    }
    let skipped = report.skipped.total();
    if skipped > 0 {
        say!();
        say!("{skipped} files skipped (too large, binary, generated, minified or unreadable)");
    }
    Ok(())
}
