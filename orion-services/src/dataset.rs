//! Training data from reviewed pull requests (`orion dataset export`): what the agents asked a
//! model and the change a person approved, as JSON lines a fine-tuning job takes.
//!
//! A task's pull request has one version per model call that wrote it (the first, then one
//! per revision a reviewer asked for); each call is recorded in the effects ledger with the
//! request it sent. For every pull request approved within the window:
//!
//! - `chat` (OpenAI's chat fine-tuning format): one line, the messages of the call that wrote
//!   the approved version and its answer as the assistant's turn;
//! - `preference` (OpenAI's preference format): one line per version sent back, the first
//!   call's messages as the input, the approved answer preferred over the sent-back one.
//!
//! Every text passes through [`crate::secrets::redact_known`] first: the deployment's own
//! secrets, and credentials the repository's files or the task's words carried, do not reach
//! the file.

use std::io::Write;

use chrono::{DateTime, Utc};
use orion_bus::Decision;
use serde_json::{Value, json};

use crate::store::{PullStore, Store, StoreError};

/// The shape of the lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Chat,
    Preference,
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Exported {
    /// Pull requests approved in the window.
    pub pulls: usize,
    /// Lines written.
    pub examples: usize,
    /// Approved pull requests with no recorded request (made before requests were recorded).
    pub skipped: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not write the dataset: {0}")]
    Write(#[from] std::io::Error),
}

/// One recorded model call: its messages (redacted) and its answer (redacted).
struct Call {
    messages: Vec<Value>,
    answer: String,
}

fn call_of(recorded: &Value, known: &[String]) -> Option<Call> {
    let redact = |text: &str| crate::secrets::redact_known(text, known).into_owned();
    let messages = recorded["request"]
        .as_array()?
        .iter()
        .map(|m| {
            Some(json!({
                "role": m["role"].as_str()?,
                "content": redact(m["content"].as_str()?),
            }))
        })
        .collect::<Option<Vec<_>>>()?;
    let answer = redact(recorded["content"].as_str()?);
    Some(Call { messages, answer })
}

fn assistant(content: &str) -> Value {
    json!({ "role": "assistant", "content": content })
}

/// Writes the examples of the pull requests approved in `[from, to)` to `out`, one JSON
/// object a line, with each of `known` (the secrets the deployment holds in clear) and every
/// credential [`crate::secrets::redact`] finds redacted.
pub async fn export(
    store: &dyn Store,
    known: &[String],
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    format: Format,
    out: &mut dyn Write,
) -> Result<Exported, DatasetError> {
    let mut exported = Exported::default();
    // Every pull request, a page at a time.
    let mut pulls = Vec::new();
    loop {
        let before = pulls.last().map(|p: &crate::store::PullRequest| p.id);
        let page = PullStore::list_pulls(store, None, before, crate::store::MAX_PAGE).await?;
        if page.is_empty() {
            break;
        }
        pulls.extend(page);
    }
    // Oldest first: a file written twice over the same window reads the same.
    for pull in pulls.into_iter().rev() {
        let reviews = store.reviews(pull.id).await?;
        let Some(approval) = reviews.iter().find(|r| r.decision == Decision::Approve) else {
            continue;
        };
        if from.is_some_and(|from| approval.created_at < from)
            || to.is_some_and(|to| approval.created_at >= to)
        {
            continue;
        }
        exported.pulls += 1;
        let calls: Vec<Call> = store
            .effects_of_kind(pull.task_id, "model_call")
            .await?
            .iter()
            .filter_map(|(_, recorded)| call_of(recorded, known))
            .collect();
        let (Some(first), Some(approved)) = (calls.first(), calls.last()) else {
            exported.skipped += 1;
            continue;
        };
        match format {
            Format::Chat => {
                let mut messages = approved.messages.clone();
                messages.push(assistant(&approved.answer));
                writeln!(out, "{}", json!({ "messages": messages }))?;
                exported.examples += 1;
            }
            Format::Preference => {
                for sent_back in &calls[..calls.len() - 1] {
                    let line = json!({
                        "input": { "messages": first.messages },
                        "preferred_output": [assistant(&approved.answer)],
                        "non_preferred_output": [assistant(&sent_back.answer)],
                    });
                    writeln!(out, "{line}")?;
                    exported.examples += 1;
                }
            }
        }
    }
    out.flush()?;
    Ok(exported)
}
