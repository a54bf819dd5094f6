//! Moving tasks: the one place that changes a task's status, records it and announces it.
//!
//! The store is the source of truth; the bus carries the news. A change is committed first
//! (checked transition, version guard, event appended in one transaction) and then
//! published on `<p>.events.<task>.<type>`. A publication that fails (the bus is failing
//! over to another server, say) is made again in the background: the bus carries every event
//! at least once, named by its `seq`; the event is in the log either way, and every reader
//! can replay from it.

use std::sync::Arc;

use orion_bus::{
    Body, Bus, BusError, Envelope, EventType, Queue, Task, TaskEvent, TaskFailure, TaskId,
    TaskSpec, TaskStatus,
};

use crate::store::{NewAudit, Store, StoreError, Transition};

/// How many times a change is re-read and retried after losing a version race.
const CONFLICT_RETRIES: usize = 5;

/// A failure to submit or move a task.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What to record alongside a status change.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub result: Option<serde_json::Value>,
    pub error: Option<TaskFailure>,
    pub count_attempt: bool,
    /// The task's kind from now on (an `auto` task's chosen kind).
    pub kind: Option<orion_bus::TaskKind>,
    pub data: serde_json::Value,
}

impl Change {
    pub fn failed(failure: TaskFailure) -> Self {
        let data = serde_json::json!({ "code": failure.code, "message": failure.message });
        Self {
            error: Some(failure),
            data,
            ..Self::default()
        }
    }

    pub fn completed(result: serde_json::Value) -> Self {
        Self {
            result: Some(result),
            ..Self::default()
        }
    }
}

/// The outcome of a submission.
#[derive(Debug)]
pub struct Submission {
    pub task: Task,
    /// False when the idempotency key was used before and `task` is the earlier one.
    pub created: bool,
    /// Set when the task is stored but could not be queued.
    pub queue_error: Option<LifecycleError>,
}

/// Events sent and not yet confirmed by the bus.
type Outbox = Arc<std::sync::Mutex<Vec<futures_util::future::BoxFuture<'static, ()>>>>;

/// Submits, moves and annotates tasks for one node.
#[derive(Clone)]
pub struct Lifecycle {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    node: String,
    /// Where events' confirmations wait, in a [`Lifecycle::deferring`] copy.
    outbox: Option<Outbox>,
}

impl Lifecycle {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, node: impl Into<String>) -> Self {
        Self {
            store,
            bus,
            node: node.into(),
            outbox: None,
        }
    }

    /// A copy whose events are sent without each awaiting its confirmation in turn: the
    /// confirmations are awaited together by [`Lifecycle::confirmed`], which the caller calls
    /// before it acknowledges the message that caused them. Events are still sent in the
    /// order they are stored.
    pub fn deferring(&self) -> Self {
        Self {
            outbox: Some(Outbox::default()),
            ..self.clone()
        }
    }

    /// Waits for the confirmations of every event this copy sent; one that fails is sent
    /// again in the background, as a failed publication always is.
    pub async fn confirmed(&self) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        let pending = std::mem::take(&mut *outbox.lock().unwrap_or_else(|e| e.into_inner()));
        futures_util::future::join_all(pending).await;
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}

/// Counts a task's arrival in its (new) status in the process's metrics.
fn count(task: &Task) {
    let m = crate::metrics::metrics();
    let (kind, status) = (task.spec.kind.as_str(), task.status.as_str());
    m.task_transitions.with_label_values(&[kind, status]).inc();
    if task.status.is_terminal() {
        let took = (task.updated_at - task.created_at)
            .num_milliseconds()
            .max(0) as f64
            / 1e3;
        m.task_duration
            .with_label_values(&[kind, status])
            .observe(took);
    }
    if let Some(failure) = task
        .error
        .as_ref()
        .filter(|_| task.status == TaskStatus::Failed)
    {
        m.task_failures.with_label_values(&[&failure.code]).inc();
    }
}

impl Lifecycle {
    /// Stores a task and queues it for the coordinators.
    ///
    /// Storing is what must succeed; a failure to queue is returned beside the stored task,
    /// so the caller can say that it is stored and the client can retry with the same
    /// idempotency key (which queues it again) or leave it to a coordinator's reconciliation.
    pub async fn submit(
        &self,
        spec: TaskSpec,
        idempotency_key: Option<&str>,
    ) -> Result<Submission, StoreError> {
        self.submit_audited(spec, idempotency_key, None).await
    }

    /// [`Lifecycle::submit`], with the submission's audit entry stored in the task's own
    /// transaction (see [`crate::store::TaskStore::create_audited_task`]).
    pub async fn submit_audited(
        &self,
        spec: TaskSpec,
        idempotency_key: Option<&str>,
        audit: Option<NewAudit>,
    ) -> Result<Submission, StoreError> {
        let (task, event) = self
            .store
            .create_audited_task(spec, idempotency_key, Some(&self.node), audit)
            .await?;
        let created = event.is_some();
        if created {
            count(&task);
        }
        // The event and the submission go out together, their acknowledgements awaited at
        // once: neither waits on the other. Queued again on a repeated submission: the bus
        // de-duplicates by task id, and a task whose first queueing failed gets a second
        // chance.
        let announced = async {
            if let Some(event) = event {
                self.announce(event).await;
            }
        };
        let queued = async {
            match task.status {
                TaskStatus::Queued => self.enqueue_submitted(&task).await.err(),
                _ => None,
            }
        };
        let ((), queue_error) = tokio::join!(announced, queued);
        Ok(Submission {
            task,
            created,
            queue_error,
        })
    }

    /// Puts a queued task on the coordinators' queue; the message id is the task id and
    /// attempt, so repeating this is harmless.
    pub async fn enqueue_submitted(&self, task: &Task) -> Result<(), LifecycleError> {
        let envelope = Envelope::new(
            self.node.clone(),
            Body::TaskSubmitted(Box::new(task.clone())),
        );
        let id = orion_bus::MessageId::submission(task.id, task.attempts);
        self.bus
            .enqueue_as(Queue::Coordinators, &id, &envelope)
            .await?;
        Ok(())
    }

    /// Moves a task to `to`, re-reading it after a lost version race. Returns `Ok(None)`
    /// when the task is already where it cannot go to `to` from (for instance cancelled
    /// meanwhile): the caller's news is stale, and that is not an error.
    pub async fn advance(
        &self,
        id: TaskId,
        to: TaskStatus,
        change: Change,
    ) -> Result<Option<Task>, LifecycleError> {
        let task = self.store.task(id).await?;
        self.advance_from_if(task, to, change, |_| true).await
    }

    /// [`Lifecycle::advance`] from `task` as the caller has just read it (read again only
    /// after a lost race), and only while the task is as `still` wants it: the caller's
    /// reasons to move it are checked again against every read, not the first only (a race
    /// lost to another writer may have paused, reclaimed or moved the task meanwhile).
    pub async fn advance_from_if(
        &self,
        task: Task,
        to: TaskStatus,
        change: Change,
        still: impl Fn(&Task) -> bool,
    ) -> Result<Option<Task>, LifecycleError> {
        let (id, mut task) = (task.id, task);
        for _ in 0..CONFLICT_RETRIES {
            if task.status.check(to).is_err() || !still(&task) {
                tracing::debug!(task = %id, from = %task.status, %to, "transition no longer applies");
                return Ok(None);
            }
            let transition = self.transition(task.id, task.status, task.version, to, &change);
            match self.store.transition(transition).await {
                Ok((moved, event)) => {
                    count(&moved);
                    self.announce(event).await;
                    return Ok(Some(moved));
                }
                Err(StoreError::Conflict { .. }) | Err(StoreError::IllegalTransition(_)) => {
                    task = self.store.task(id).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict {
            task: id,
            expected: task.version,
            actual: task.version + 1,
        }
        .into())
    }

    /// The store's change of task `id` from `from` at `version` to `to`, as this node's.
    fn transition(
        &self,
        id: TaskId,
        from: TaskStatus,
        version: i64,
        to: TaskStatus,
        change: &Change,
    ) -> Transition {
        Transition {
            task: id,
            expected_version: version,
            from,
            to,
            result: change.result.clone(),
            error: change.error.clone(),
            count_attempt: change.count_attempt,
            kind: change.kind,
            data: change.data.clone(),
            node: Some(self.node.clone()),
        }
    }

    /// Moves task `id` from `from` at `version`, as a message about it said it was, through
    /// `steps` in order, written together where the store can, without reading the task:
    /// each step applies only where the task is at the status and version the step before
    /// it leaves. Returns the task after the last step, where it applied (the steps before
    /// it applied too, or another writer made them: the last step's guard says the task was
    /// where they lead); `None` when it did not (the task moved since the message, or is
    /// gone), for the caller to read the task and decide. The steps that applied are recorded
    /// and announced either way.
    pub async fn advance_known(
        &self,
        id: TaskId,
        from: TaskStatus,
        version: i64,
        steps: &[(TaskStatus, Change)],
    ) -> Result<Option<Task>, LifecycleError> {
        let mut chain = Vec::with_capacity(steps.len());
        let mut at = from;
        for (offset, (to, change)) in (0..).zip(steps) {
            if at.check(*to).is_err() {
                return Ok(None);
            }
            chain.push(self.transition(id, at, version + offset, *to, change));
            at = *to;
        }
        // Every step that applied is announced, even after one that failed for an outage:
        // the chain's steps may have committed in different groups.
        let (mut last, mut outage) = (None, None);
        for outcome in self.store.transitions(chain).await {
            last = match outcome {
                Ok((moved, event)) => {
                    count(&moved);
                    self.announce(event).await;
                    Some(moved)
                }
                Err(
                    StoreError::Conflict { .. }
                    | StoreError::IllegalTransition(_)
                    | StoreError::NotFound(_),
                ) => None,
                Err(e) => {
                    outage.get_or_insert(e);
                    None
                }
            };
        }
        match outage {
            Some(e) => Err(e.into()),
            None => Ok(last),
        }
    }

    /// Moves a task to `to`, or finds it there already: a coordinator that crashed between
    /// moving a task and queueing its next step, or lost the race to another, queues the step
    /// again (its message id makes that harmless). `None`: the task is elsewhere, and the
    /// caller's news is stale.
    pub async fn advance_or_find(
        &self,
        id: TaskId,
        to: TaskStatus,
        change: Change,
    ) -> Result<Option<Task>, LifecycleError> {
        let task = self.store.task(id).await?;
        self.advance_or_find_from(task, to, change).await
    }

    /// [`Lifecycle::advance_or_find`] from `task` as the caller has it (a message's copy,
    /// say): read again only where it moved since.
    pub async fn advance_or_find_from(
        &self,
        task: Task,
        to: TaskStatus,
        change: Change,
    ) -> Result<Option<Task>, LifecycleError> {
        let id = task.id;
        if let Some(task) = self.advance_from_if(task, to, change, |_| true).await? {
            return Ok(Some(task));
        }
        let current = self.store.task(id).await?;
        Ok((current.status == to).then_some(current))
    }

    /// Records a progress note on a task.
    pub async fn note(
        &self,
        id: TaskId,
        data: serde_json::Value,
    ) -> Result<TaskEvent, LifecycleError> {
        let event = self
            .store
            .append_event(id, EventType::Progress, data, Some(&self.node))
            .await?;
        self.announce(event.clone()).await;
        Ok(event)
    }

    async fn announce(&self, event: TaskEvent) {
        let envelope = Envelope::new(self.node.clone(), Body::Event(event.clone()));
        let Some(outbox) = &self.outbox else {
            if let Err(e) = self.bus.publish_event(&envelope).await {
                publish_failed(&self.bus, &self.node, e, event);
            }
            return;
        };
        match self.bus.send_event(&envelope).await {
            Ok(confirmation) => {
                let (bus, node) = (self.bus.clone(), self.node.clone());
                let confirmed = Box::pin(async move {
                    if let Err(e) = confirmation.await {
                        publish_failed(&bus, &node, e, event);
                    }
                });
                outbox
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(confirmed);
            }
            Err(e) => publish_failed(&self.bus, &self.node, e, event),
        }
    }
}

/// An event the bus did not take is published again in the background.
fn publish_failed(bus: &Arc<dyn Bus>, node: &str, error: BusError, event: TaskEvent) {
    tracing::info!(%error, task = %event.task_id, seq = event.seq, "could not publish an event yet; trying again");
    tokio::spawn(republish(bus.clone(), node.to_owned(), event));
}

/// How long an event that could not be published is tried again.
const REPUBLISH_FOR: std::time::Duration = std::time::Duration::from_secs(90);

/// Publishes `event` until the bus takes it, with a growing pause, for at most
/// [`REPUBLISH_FOR`]; then it is left to the task log. Each try is a message of its own: a
/// failed one may have arrived all the same, and a server that failed over may answer for a
/// message id it no longer holds, so the events stream carries an event at least once, named
/// by its `seq` (readers that count pass copies over).
async fn republish(bus: Arc<dyn Bus>, node: String, event: TaskEvent) {
    let give_up = tokio::time::Instant::now() + REPUBLISH_FOR;
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        tokio::time::sleep(pause).await;
        let envelope = Envelope::new(node.clone(), Body::Event(event.clone()));
        match bus.publish_event(&envelope).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() + pause >= give_up => {
                tracing::warn!(error = %e, task = %event.task_id, seq = event.seq, "could not publish an event; it stays in the task log");
                return;
            }
            Err(_) => pause = (pause * 2).min(std::time::Duration::from_secs(5)),
        }
    }
}
