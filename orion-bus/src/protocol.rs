//! Tasks, their states and the messages that move them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ProtocolError;

/// Declares a closed set of lower-case names with one spelling for serde, `Display` and
/// `FromStr`, so the wire, the database and the CLI can never disagree.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $err:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vmeta])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = ProtocolError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($text => Ok($name::$variant),)+ other => Err(ProtocolError::$err(other.to_owned())) }
            }
        }
    };
}

/// Like `named_enum!`, for a set that configuration can extend: besides its built-in names it
/// has `Custom`, a [`CustomKind`] declared at start (see [`CustomKind::declare`]).
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident, $err:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A kind declared in configuration, served by an external agent.
            Custom(CustomKind),
        }

        impl $name {
            /// Every built-in value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ $name::Custom(custom) => custom.as_str() }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = ProtocolError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => CustomKind::find(other)
                        .map($name::Custom)
                        .ok_or_else(|| ProtocolError::$err(other.to_owned())),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

open_enum! {
    /// What a task asks for; each kind is served by one agent kind.
    TaskKind, UnknownTaskKind {
        Develop = "develop", Review = "review", Analyze = "analyze", Test = "test",
        Design = "design", Ci = "ci", Release = "release",
        /// The coordinator picks the kind from the prompt and the kinds' capabilities.
        Auto = "auto",
    }
}

open_enum! {
    /// The roles of Orion's actors. Every kind but the coordinator serves work queues.
    AgentKind, UnknownAgentKind {
        Coordinator = "coordinator", Developer = "developer", Analyzer = "analyzer",
        Testing = "testing", Devops = "devops", Architect = "architect",
    }
}

/// The kinds declared so far; each name is leaked once, so a kind is `Copy` like the
/// built-in ones (a process declares a handful, from its configuration).
static DECLARED: std::sync::RwLock<std::collections::BTreeSet<&'static str>> =
    std::sync::RwLock::new(std::collections::BTreeSet::new());

/// The name of an agent kind declared in configuration (a plugin): it is the task kind and
/// the agent kind at once, served on `<prefix>.work.<name>.<priority>` by any process that
/// speaks the protocol (`docs/agents.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomKind(&'static str);

impl CustomKind {
    /// The longest name.
    pub const MAX_NAME: usize = 32;

    /// Declares kind `name` in this process (a repeat returns the same kind). A name is 1 to
    /// 32 of `a-z`, `0-9`, `-` and `_`, starts with a letter, and is no built-in kind's.
    pub fn declare(name: &str) -> Result<Self, ProtocolError> {
        let invalid = |reason: &str| ProtocolError::InvalidField {
            field: "kind",
            reason: format!("`{name}` {reason}"),
        };
        if name.is_empty()
            || name.len() > Self::MAX_NAME
            || !name.starts_with(|c: char| c.is_ascii_lowercase())
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(invalid(
                "is not a kind name: 1 to 32 of a-z, 0-9, - and _, starting with a letter",
            ));
        }
        let builtin = TaskKind::ALL.iter().any(|k| k.as_str() == name)
            || AgentKind::ALL.iter().any(|k| k.as_str() == name);
        if builtin {
            return Err(invalid("is a built-in kind"));
        }
        if let Some(kind) = Self::find(name) {
            return Ok(kind);
        }
        let mut declared = DECLARED.write().unwrap_or_else(|e| e.into_inner());
        let leaked: &'static str = match declared.get(name) {
            Some(existing) => existing,
            None => Box::leak(name.to_owned().into_boxed_str()),
        };
        declared.insert(leaked);
        Ok(Self(leaked))
    }

    /// The declared kind of that name.
    pub fn find(name: &str) -> Option<Self> {
        let declared = DECLARED.read().unwrap_or_else(|e| e.into_inner());
        declared.get(name).map(|n| Self(n))
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

named_enum! {
    /// How urgently a task should be served under backlog.
    Priority, UnknownPriority { Low = "low", Normal = "normal", High = "high", Urgent = "urgent" }
}

named_enum! {
    /// Where a task is in its life. Legal moves are in [`TaskStatus::can_become`].
    TaskStatus, UnknownStatus {
        Queued = "queued", Assigned = "assigned", Running = "running",
        AwaitingReview = "awaiting_review", AwaitingApproval = "awaiting_approval",
        Completed = "completed", Failed = "failed", Cancelled = "cancelled",
    }
}

named_enum! {
    /// What an event in a task's log records: one per status, plus progress notes.
    EventType, UnknownEventType {
        Queued = "queued", Assigned = "assigned", Running = "running", Progress = "progress",
        AwaitingReview = "awaiting_review", AwaitingApproval = "awaiting_approval",
        Completed = "completed", Failed = "failed", Cancelled = "cancelled",
    }
}

impl TaskKind {
    /// The agent kind that serves this task kind.
    pub fn agent(self) -> AgentKind {
        match self {
            TaskKind::Develop | TaskKind::Review => AgentKind::Developer,
            TaskKind::Analyze => AgentKind::Analyzer,
            TaskKind::Test => AgentKind::Testing,
            TaskKind::Design => AgentKind::Architect,
            TaskKind::Ci | TaskKind::Release => AgentKind::Devops,
            TaskKind::Custom(custom) => AgentKind::Custom(custom),
            // Decided by the coordinator, which stores the chosen kind before routing.
            TaskKind::Auto => AgentKind::Coordinator,
        }
    }
}

impl AgentKind {
    /// The agent kinds that serve work queues (all but the coordinator).
    pub const WORKERS: &'static [AgentKind] = &[
        AgentKind::Developer,
        AgentKind::Analyzer,
        AgentKind::Testing,
        AgentKind::Devops,
        AgentKind::Architect,
    ];
}

// `named_enum!` derives one list for every enum, so the default is spelled out here.
#[allow(clippy::derivable_impls)]
impl Default for Priority {
    fn default() -> Self {
        Priority::Normal
    }
}

/// A status change the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a task cannot go from `{from}` to `{to}`")]
pub struct IllegalTransition {
    pub from: TaskStatus,
    pub to: TaskStatus,
}

impl TaskStatus {
    /// The one table of legal transitions. Everything that moves a task asks here.
    ///
    /// `assigned|running → queued` is the retry path (a lease expired or an agent crashed);
    /// `awaiting_review → running` is a reviewer asking for changes; `running ↔
    /// awaiting_approval` is a budget pause.
    pub fn can_become(self, to: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, to),
            (Queued, Assigned | Failed | Cancelled)
                | (Assigned, Running | Queued | Failed | Cancelled)
                | (
                    Running,
                    AwaitingReview | AwaitingApproval | Completed | Failed | Cancelled | Queued
                )
                | (AwaitingReview, Running | Completed | Failed | Cancelled)
                | (AwaitingApproval, Running | Cancelled)
        )
    }

    /// `Ok` when `self → to` is legal.
    pub fn check(self, to: TaskStatus) -> Result<(), IllegalTransition> {
        if self.can_become(to) {
            Ok(())
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }

    /// A terminal status never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The event recorded when a task enters this status.
    pub fn event(self) -> EventType {
        match self {
            TaskStatus::Queued => EventType::Queued,
            TaskStatus::Assigned => EventType::Assigned,
            TaskStatus::Running => EventType::Running,
            TaskStatus::AwaitingReview => EventType::AwaitingReview,
            TaskStatus::AwaitingApproval => EventType::AwaitingApproval,
            TaskStatus::Completed => EventType::Completed,
            TaskStatus::Failed => EventType::Failed,
            TaskStatus::Cancelled => EventType::Cancelled,
        }
    }
}

/// A task's identity: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| ProtocolError::InvalidTaskId(s.to_owned()))
    }
}

/// Limits on what a task may carry; beyond them a submission is refused, not truncated.
pub mod limits {
    pub const REPO_MAX_BYTES: usize = 4096;
    pub const PROMPT_MAX_BYTES: usize = 64 * 1024;
    /// The largest `input`, as JSON.
    pub const INPUT_MAX_BYTES: usize = 64 * 1024;
    pub const REF_MAX_BYTES: usize = 255;
}

/// What a submitter asks for, validated: a value of this type is always acceptable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub kind: TaskKind,
    /// A local path or a URL of a git repository.
    pub repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The branch, tag or commit to work from; the repository's HEAD when absent.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    /// `<base>..<head>`: work on what changed between two revisions only (an `analyze`
    /// task then scores the change, as a gate before a pull request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Dollars the task's model calls may cost; the configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// What a declared (plugin) kind takes, as its `input_schema` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Where on a forge the task was asked for (a webhook), so its outcome is posted there;
    /// only a verified webhook sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<TaskOrigin>,
    /// Who submitted it (a token's subject, `key:<id>` for an API key): set by the gateway
    /// from the credential, never from a body; spending caps per caller count its calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
}

/// A forge's issue or pull request a task came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOrigin {
    /// The `[forges.<name>]` entry whose webhook asked.
    pub forge: String,
    /// The repository's path on the forge.
    pub repository: String,
    /// `issue` or `pull`.
    pub thread: OriginThread,
    /// The issue's or pull request's number (GitLab's `iid`).
    pub number: u64,
}

/// The kind of thread a task came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginThread {
    Issue,
    Pull,
}

impl TaskSpec {
    /// Checks every field against the protocol's limits.
    pub fn new(
        kind: TaskKind,
        repo: impl Into<String>,
        prompt: Option<String>,
        git_ref: Option<String>,
        priority: Priority,
    ) -> Result<Self, ProtocolError> {
        let repo = repo.into();
        let invalid = |field, reason: &str| ProtocolError::InvalidField {
            field,
            reason: reason.to_owned(),
        };
        if repo.trim().is_empty() {
            return Err(invalid("repo", "must not be empty"));
        }
        if repo.len() > limits::REPO_MAX_BYTES || repo.contains('\0') {
            return Err(invalid("repo", "must be at most 4096 bytes with no NUL"));
        }
        if prompt
            .as_ref()
            .is_some_and(|p| p.len() > limits::PROMPT_MAX_BYTES)
        {
            return Err(invalid("prompt", "must be at most 65536 bytes"));
        }
        if let Some(r) = &git_ref
            && (r.is_empty()
                || r.len() > limits::REF_MAX_BYTES
                || r.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(invalid("ref", "must be 1 to 255 characters without spaces"));
        }
        Ok(Self {
            kind,
            repo,
            prompt,
            git_ref,
            priority,
            diff: None,
            budget_usd: None,
            input: None,
            origin: None,
            submitted_by: None,
        })
    }

    /// Records who submitted it.
    pub fn submitted_by(mut self, caller: impl Into<String>) -> Self {
        self.submitted_by = Some(caller.into());
        self
    }

    /// Records where on a forge the task was asked for.
    pub fn with_origin(mut self, origin: TaskOrigin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Gives the task its `input` (the schema is the gateway's to check; the size is the
    /// protocol's).
    pub fn with_input(mut self, input: serde_json::Value) -> Result<Self, ProtocolError> {
        if input.to_string().len() > limits::INPUT_MAX_BYTES {
            return Err(ProtocolError::InvalidField {
                field: "input",
                reason: "must be at most 65536 bytes of JSON".to_owned(),
            });
        }
        self.input = Some(input);
        Ok(self)
    }

    /// Restricts the task to the change `<base>..<head>`.
    pub fn with_diff(mut self, diff: impl Into<String>) -> Result<Self, ProtocolError> {
        let diff = diff.into();
        let valid = diff.len() <= 2 * limits::REF_MAX_BYTES + 2
            && diff.split_once("..").is_some_and(|(base, head)| {
                let ok = |r: &str| {
                    !r.is_empty()
                        && !r.starts_with('.')
                        && !r.chars().any(|c| c.is_whitespace() || c.is_control())
                };
                ok(base) && ok(head)
            });
        if !valid {
            return Err(ProtocolError::InvalidField {
                field: "diff",
                reason: "must be `<base>..<head>`, two revisions without spaces".to_owned(),
            });
        }
        self.diff = Some(diff);
        Ok(self)
    }

    /// Sets the budget: a positive, finite number of dollars.
    pub fn with_budget(mut self, budget_usd: f64) -> Result<Self, ProtocolError> {
        check_budget(budget_usd)?;
        self.budget_usd = Some(budget_usd);
        Ok(self)
    }

    /// The two revisions of `diff`.
    pub fn diff_range(&self) -> Option<(&str, &str)> {
        self.diff.as_deref().and_then(|d| d.split_once(".."))
    }
}

/// A budget is a positive, finite number of dollars.
pub fn check_budget(budget_usd: f64) -> Result<(), ProtocolError> {
    if budget_usd.is_finite() && budget_usd > 0.0 {
        Ok(())
    } else {
        Err(ProtocolError::InvalidField {
            field: "budget_usd",
            reason: "must be a positive number of dollars".to_owned(),
        })
    }
}

/// Why a task failed, with a stable machine-readable code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub code: String,
    pub message: String,
}

impl TaskFailure {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A task as stored and as shown to clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    #[serde(flatten)]
    pub spec: TaskSpec,
    pub status: TaskStatus,
    /// Optimistic-concurrency version: every stored change increments it.
    pub version: i64,
    /// How many times the task has been handed to an agent.
    pub attempts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskFailure>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One entry of a task's append-only log, as stored and as streamed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// Position in the global log; clients resume from it.
    pub seq: i64,
    pub task_id: TaskId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub at: DateTime<Utc>,
}

/// The coordinator hands a task to an agent pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: Task,
    pub agent: AgentKind,
    pub attempt: i32,
    /// Which part of the task: the work itself, or what a review asked for.
    #[serde(default)]
    pub step: Step,
}

/// The part of a task an assignment asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Do the task.
    #[default]
    Work,
    /// Land an approved pull request.
    Merge { pull: Uuid },
    /// Revise a pull request as a reviewer asked.
    Revise { pull: Uuid, comment: String },
    /// Run the repository's tests on a candidate commit (the Testing agent's part of a
    /// `develop` task).
    Test { candidate: Candidate },
    /// Publish a tested candidate as the task's pull request, or end the task with the
    /// tests' failure (the Developer's part after the tests).
    Publish {
        candidate: Candidate,
        verdict: TestVerdict,
    },
}

impl Step {
    /// A short name, for message ids and events.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Work => "work",
            Step::Merge { .. } => "merge",
            Step::Revise { .. } => "revise",
            Step::Test { .. } => "test",
            Step::Publish { .. } => "publish",
        }
    }
}

/// A commit waiting for its tests: reachable on the task's remote at `git_ref` (a ref
/// outside `refs/heads`, so no branch appears before the tests pass).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub git_ref: String,
    pub head: String,
}

/// What the Testing agent found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum TestVerdict {
    /// The tests ran and passed; `run` is the sandbox's record of the run.
    Passed { run: serde_json::Value },
    /// No test command is configured or detected.
    Skipped { reason: String },
    /// The tests failed, timed out or could not run.
    Failed { failure: TaskFailure },
}

/// A reviewer's verdict on a pull request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    RequestChanges,
}

/// A review was submitted: the coordinator resumes the task with a merge or a revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewSubmitted {
    pub task_id: TaskId,
    pub pull: Uuid,
    pub review: Uuid,
    pub decision: Decision,
    pub comment: String,
}

/// A paused task may go on (its budget was raised): the coordinator assigns `step` again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumeTask {
    pub task_id: TaskId,
    pub step: Step,
    pub reason: String,
}

/// How a piece of work went, as an agent reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    Started,
    Progress {
        message: String,
        /// What the step wants recorded beside the message (e.g. why it chose what it did).
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        detail: serde_json::Value,
    },
    Completed {
        result: serde_json::Value,
    },
    /// A pull request is open and waits for a person's review.
    AwaitingReview {
        pull: Uuid,
    },
    /// The next model call would exceed the task's budget, or the spending cap `cap` (of a
    /// day or a month, across tasks): a person raises it (the `step` then resumes) or
    /// cancels the task.
    AwaitingApproval {
        step: Step,
        needed_usd: f64,
        spent_usd: f64,
        budget_usd: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cap: Option<String>,
    },
    Failed {
        failure: TaskFailure,
    },
    /// The task's next step is another agent's: the coordinator routes `step` to `agent`.
    Handoff {
        agent: AgentKind,
        step: Step,
    },
}

/// An agent's report on an assignment, sent to the coordinators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkReport {
    pub task_id: TaskId,
    pub agent: AgentKind,
    pub attempt: i32,
    pub outcome: Outcome,
    /// The task as its assignment carried it: a coordinator moves it from there without
    /// reading it first, and reads it only where it has moved since. Absent in a report
    /// that is not about an assignment it can name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<AssignedAt>,
}

/// A task's status and version as an assignment found them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedAt {
    pub status: TaskStatus,
    pub version: i64,
}

impl AssignedAt {
    /// Where `task` is now.
    pub fn of(task: &Task) -> Self {
        Self {
            status: task.status,
            version: task.version,
        }
    }
}

/// How often a node publishes its heartbeat on `<prefix>.health.<node>`.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A node's periodic sign of life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    pub agents: Vec<AgentKind>,
    pub in_flight: u32,
    pub at: DateTime<Utc>,
    /// The node takes no new work (drained by an operator, or stopping).
    #[serde(default)]
    pub draining: bool,
}

/// A question to an agent pool on `<p>.rpc.<agent>`, answered by one of its agents on any
/// node (`orion_actors::ask`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRequest {
    pub agent: AgentKind,
    /// What is asked: `ping`, or an operation the agent kind knows.
    pub op: String,
    #[serde(default)]
    pub args: serde_json::Value,
}

/// An agent's answer to an [`AgentRequest`]: `{"outcome": "answer", "value": …}` or
/// `{"outcome": "refused", "failure": …}`.
///
/// Read by hand, in one pass with the fields in any order (serde's derive for a tagged enum
/// buffers the whole object first). As with the derive, a field the outcome does not name is
/// skipped, however it is spelled and however often it comes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AgentReply {
    Answer { value: serde_json::Value },
    Refused { failure: TaskFailure },
}

impl<'de> Deserialize<'de> for AgentReply {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum Field {
            Outcome,
            Value,
            Failure,
            #[serde(other)]
            Other,
        }
        #[derive(Clone, Copy, Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Outcome {
            Answer,
            Refused,
        }
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = AgentReply;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an agent's reply")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AgentReply, A::Error> {
                let mut outcome: Option<Outcome> = None;
                // Before `outcome`, a value or a failure is kept as JSON: which of them the
                // reply names is not known yet.
                let (mut value, mut failure): (
                    Option<serde_json::Value>,
                    Option<serde_json::Value>,
                ) = (None, None);
                let mut read_failure: Option<TaskFailure> = None;
                // A field given twice is refused only if the outcome names it.
                let (mut value_twice, mut failure_twice) = (false, false);
                while let Some(field) = map.next_key::<Field>()? {
                    match (field, outcome) {
                        (Field::Outcome, None) => outcome = Some(map.next_value()?),
                        (Field::Outcome, Some(_)) => {
                            return Err(A::Error::duplicate_field("outcome"));
                        }
                        (Field::Value, None | Some(Outcome::Answer)) => {
                            value_twice |= value.replace(map.next_value()?).is_some();
                        }
                        (Field::Failure, None) => {
                            failure_twice |= failure.replace(map.next_value()?).is_some();
                        }
                        (Field::Failure, Some(Outcome::Refused)) => {
                            failure_twice |= failure.is_some() || read_failure.is_some();
                            read_failure = Some(map.next_value()?);
                        }
                        (Field::Value, Some(Outcome::Refused))
                        | (Field::Failure, Some(Outcome::Answer))
                        | (Field::Other, _) => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                match outcome {
                    Some(Outcome::Answer) if value_twice => Err(A::Error::duplicate_field("value")),
                    Some(Outcome::Refused) if failure_twice => {
                        Err(A::Error::duplicate_field("failure"))
                    }
                    Some(Outcome::Answer) => Ok(AgentReply::Answer {
                        value: value.ok_or_else(|| A::Error::missing_field("value"))?,
                    }),
                    Some(Outcome::Refused) => {
                        let failure = match (read_failure, failure) {
                            (Some(failure), _) => failure,
                            (None, Some(early)) => {
                                TaskFailure::deserialize(early).map_err(A::Error::custom)?
                            }
                            (None, None) => return Err(A::Error::missing_field("failure")),
                        };
                        Ok(AgentReply::Refused { failure })
                    }
                    None => Err(A::Error::missing_field("outcome")),
                }
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// An order to a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ControlCommand {
    Cancel { task_id: TaskId },
    Drain,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_read_in_any_order_and_a_wrong_one_is_refused() {
        let failure = TaskFailure::new("unknown_operation", "no");
        for reply in [
            AgentReply::Answer {
                value: serde_json::json!({ "node": "n", "nested": [1, { "outcome": "refused" }] }),
            },
            AgentReply::Refused { failure },
        ] {
            let written = serde_json::to_value(&reply).unwrap();
            assert_eq!(
                serde_json::from_value::<AgentReply>(written.clone()).unwrap(),
                reply
            );
            // The outcome last, and a field this build does not know.
            let mut fields: Vec<(String, serde_json::Value)> =
                written.as_object().unwrap().clone().into_iter().collect();
            fields.sort_by_key(|(name, _)| name == "outcome");
            fields.insert(
                0,
                ("later".into(), serde_json::json!({ "outcome": "answer" })),
            );
            let text = format!(
                "{{{}}}",
                fields
                    .iter()
                    .map(|(name, value)| format!("{name:?}:{value}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            assert!(
                text.ends_with(&format!("{}}}", written["outcome"])),
                "{text}"
            );
            assert_eq!(serde_json::from_str::<AgentReply>(&text).unwrap(), reply);
        }
        // A field the outcome does not name is skipped, as serde's derive skips it.
        for (lenient, read) in [
            (
                r#"{"outcome":"answer","value":1,"failure":null}"#,
                AgentReply::Answer { value: 1.into() },
            ),
            (
                r#"{"failure":"not one","value":1,"failure":2,"outcome":"answer"}"#,
                AgentReply::Answer { value: 1.into() },
            ),
            (
                r#"{"value":1,"value":[],"outcome":"refused","value":2,"failure":{"code":"c","message":"m"}}"#,
                AgentReply::Refused {
                    failure: TaskFailure::new("c", "m"),
                },
            ),
        ] {
            assert_eq!(
                serde_json::from_str::<AgentReply>(lenient).unwrap(),
                read,
                "{lenient}"
            );
        }
        for wrong in [
            r#"{"outcome":"answer"}"#,
            r#"{"outcome":"refused","value":1}"#,
            r#"{"outcome":"shrug","value":1}"#,
            r#"{"value":1}"#,
            r#"{"outcome":"answer","value":1,"value":2}"#,
            r#"{"value":1,"value":2,"outcome":"answer"}"#,
            r#"{"failure":{"code":"c","message":"m"},"outcome":"refused","failure":{"code":"c","message":"m"}}"#,
            r#"{"failure":"not one","outcome":"refused"}"#,
        ] {
            assert!(
                serde_json::from_str::<AgentReply>(wrong).is_err(),
                "{wrong} was read"
            );
        }
    }

    #[test]
    fn every_name_round_trips() {
        for k in TaskKind::ALL {
            assert_eq!(k.as_str().parse::<TaskKind>().unwrap(), *k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), *s);
        }
        assert_eq!(
            "deploy".parse::<TaskKind>(),
            Err(ProtocolError::UnknownTaskKind("deploy".into()))
        );
    }

    #[test]
    fn a_declared_kind_is_a_task_kind_and_an_agent_kind() {
        let kind = CustomKind::declare("wordcount-test").unwrap();
        assert_eq!(CustomKind::declare("wordcount-test").unwrap(), kind);
        let task: TaskKind = serde_json::from_value(serde_json::json!("wordcount-test")).unwrap();
        assert_eq!(task, TaskKind::Custom(kind));
        assert_eq!(task.agent(), AgentKind::Custom(kind));
        assert_eq!(
            serde_json::to_value(task.agent()).unwrap(),
            "wordcount-test"
        );
        assert_eq!(
            "wordcount-test".parse::<AgentKind>().unwrap().as_str(),
            "wordcount-test"
        );
        for bad in [
            "",
            "Upper",
            "9lives",
            "a.b",
            "develop",
            "devops",
            "auto",
            &"x".repeat(33),
        ] {
            assert!(CustomKind::declare(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(serde_json::from_value::<TaskKind>(serde_json::json!("undeclared")).is_err());
    }

    #[test]
    fn terminal_states_are_final() {
        for from in TaskStatus::ALL.iter().filter(|s| s.is_terminal()) {
            for to in TaskStatus::ALL {
                assert!(from.check(*to).is_err(), "{from} -> {to} must be illegal");
            }
        }
    }

    #[test]
    fn the_happy_path_and_its_detours_are_legal() {
        use TaskStatus::*;
        let path = [
            Queued,
            Assigned,
            Running,
            AwaitingReview,
            Running,
            AwaitingApproval,
            Running,
            Completed,
        ];
        for pair in path.windows(2) {
            pair[0].check(pair[1]).unwrap();
        }
        assert_eq!(
            Queued.check(Running),
            Err(IllegalTransition {
                from: Queued,
                to: Running
            })
        );
        assert!(Queued.check(Completed).is_err());
        assert!(AwaitingApproval.check(Completed).is_err());
    }

    #[test]
    fn spec_validation_names_the_field() {
        let err = TaskSpec::new(TaskKind::Analyze, "  ", None, None, Priority::Normal).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::InvalidField { field: "repo", .. }
        ));
        let err = TaskSpec::new(
            TaskKind::Analyze,
            ".",
            None,
            Some("a b".into()),
            Priority::Normal,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::InvalidField { field: "ref", .. }
        ));
    }
}
