//! The bridge between the bus and the actors: the one place envelopes become actor messages
//! and deliveries are settled, and where a node drains: it stops taking deliveries, lets
//! those in flight finish, and past a deadline hands the rest back to the bus.

use orion_bus::codes;
use orion_services::metrics::metrics;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tracing::Instrument;

use actix::prelude::*;
use chrono::Utc;
use futures_util::StreamExt;
use orion_bus::{
    AgentKind, AgentReply, Body, Bus, ControlCommand, Deliveries, Delivery, Envelope,
    HEARTBEAT_INTERVAL, Heartbeat, Queue, Request, TaskFailure,
};
use tokio::sync::{Notify, watch};

use crate::agents::AgentActor;
use crate::coordinator::Coordinator;
use crate::messages::{Ask, Cancel, Drain, Stop};
use crate::messages::{
    HandleError, Perform, ReportArrived, ResumeArrived, ReviewArrived, TaskArrived,
};

/// How often a node announces itself on `<p>.health.<node>`.
/// Pause before asking the bus again for a queue it could not open.
const CONSUME_RETRY: Duration = Duration::from_secs(1);
/// Delay before a message whose handler failed for a passing reason is delivered again.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How long a message whose handler found a service down is held here (its delivery kept
/// alive) and retried, before it goes back to the bus.
const OUTAGE_PATIENCE: Duration = Duration::from_secs(300);
/// The longest pause between those retries; they start at `RETRY_DELAY` and double.
const OUTAGE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Bursts of requests answered at once per agent kind, per unit of `concurrency` (answers
/// are short).
const BURSTS_PER_SLOT: usize = 8;
/// The most requests handed to an agent in one message: those that arrived together, up to
/// this many, are answered in one pass of the actor and their replies written together.
const REQUESTS_PER_BURST: usize = 32;
/// Extensions of a delivery missed in a row (one every third of the ack wait) after which
/// the message is taken for lost and its work stopped.
const LOST_AFTER_MISSED: u32 = 2;
/// Deliveries a coordinator on Postgres handles at once per queue, at least, where
/// `[node.kind_concurrency]` names no number for it (the settings apply it): its handlings
/// are short bookkeeping that mostly waits on the store's group commits and the bus's
/// acknowledgements, so few at once would leave the node idle while its queues fill.
pub const COORDINATOR_CONCURRENCY: usize = 64;
/// How long handing back the work in flight may take once a drain's deadline has passed.
const HAND_BACK: Duration = Duration::from_secs(5);

/// What a coordinator on Postgres handles at once per queue where its kind is not named in
/// `kind_concurrency`: the node's `concurrency`, and at least [`COORDINATOR_CONCURRENCY`].
pub fn coordinator_concurrency(concurrency: usize) -> usize {
    concurrency.max(COORDINATOR_CONCURRENCY)
}

/// Deliveries handled at once per queue by `kind` (the coordinator too): its number in
/// `kind_concurrency`, else `concurrency`; at least one.
pub fn concurrency_of(
    kind: AgentKind,
    concurrency: usize,
    kind_concurrency: &HashMap<AgentKind, usize>,
) -> usize {
    kind_concurrency
        .get(&kind)
        .copied()
        .unwrap_or(concurrency)
        .max(1)
}

/// Feeds the queues this node serves to its actors and publishes its heartbeat.
pub struct BusBridge {
    bus: Arc<dyn Bus>,
    node: String,
    coordinator: Option<Addr<Coordinator>>,
    agents: HashMap<AgentKind, Addr<AgentActor>>,
    concurrency: usize,
    /// Per agent kind (the coordinator too), deliveries handled at once where it differs from
    /// `concurrency`.
    kind_concurrency: HashMap<AgentKind, usize>,
    in_flight: Arc<AtomicU32>,
    /// Set once the node takes no new deliveries.
    draining: watch::Sender<bool>,
    /// Set when a drain's deadline passes: what is in flight is handed back.
    abandon: watch::Sender<bool>,
    /// Woken whenever a delivery is settled, or its work dropped unsettled.
    settled: Arc<Notify>,
    /// Its restarts, against the node's restart rate.
    restarts: crate::supervision::RestartLimit,
}

impl actix::Supervised for BusBridge {
    fn restarting(&mut self, _: &mut Self::Context) {
        crate::supervision::restarting(&mut self.restarts, "bridge", &self.node);
    }
}

impl BusBridge {
    pub fn new(
        bus: Arc<dyn Bus>,
        node: String,
        coordinator: Option<Addr<Coordinator>>,
        agents: HashMap<AgentKind, Addr<AgentActor>>,
        concurrency: usize,
        kind_concurrency: HashMap<AgentKind, usize>,
    ) -> Self {
        Self {
            bus,
            node,
            coordinator,
            agents,
            concurrency: concurrency.max(1),
            kind_concurrency,
            in_flight: Arc::default(),
            draining: watch::channel(false).0,
            abandon: watch::channel(false).0,
            settled: Arc::default(),
            restarts: Default::default(),
        }
    }

    /// Consumes `queues` (most urgent first; see [`prioritized`]) and hands each delivery to
    /// `route`, at most `concurrency` at once (at least one, as [`concurrency_of`] gives it).
    fn pump<F, Fut>(
        &self,
        ctx: &mut Context<Self>,
        queues: Vec<Queue>,
        concurrency: usize,
        route: F,
    ) where
        F: Fn(Envelope, tracing::Span, uuid::Uuid) -> Fut + 'static,
        Fut: Future<Output = Result<(), HandleError>> + 'static,
    {
        let bus = self.bus.clone();
        let in_flight = self.in_flight.clone();
        let progress_every = bus.config().ack_wait / 3;
        let mut draining = self.draining.subscribe();
        let abandon = self.abandon.subscribe();
        let settled = self.settled.clone();
        let fut = async move {
            let label = queues[0].label();
            let mut streams = Vec::with_capacity(queues.len());
            for queue in queues {
                streams.push(loop {
                    match bus.consume(queue).await {
                        Ok(d) => break d,
                        Err(e) => {
                            tracing::warn!(?queue, error = %e, "cannot consume; retrying");
                            tokio::time::sleep(CONSUME_RETRY).await;
                        }
                    }
                });
            }
            let deliveries = prioritized(streams);
            let route = &route;
            let in_flight = &in_flight;
            let settled = &settled;
            let abandon = &abandon;
            let label = &label;
            // A drain ends the stream: no new delivery starts; those started run to the end.
            let drained = async move {
                let _ = draining.wait_for(|d| *d).await;
            };
            deliveries
                .take_until(drained)
                .for_each_concurrent(concurrency, |delivery| async move {
                    // Counted until this delivery is settled or its work is dropped (when the
                    // bridge stops or restarts), whichever comes first.
                    let _counted = InFlight::count(in_flight, settled);
                    if delivery.attempt > 1 {
                        metrics().bus_redeliveries.with_label_values(&[label]).inc();
                    }
                    // The handling is a child of the span that sent the message, in whatever
                    // process that was.
                    let envelope = &delivery.envelope;
                    let span = tracing::info_span!(
                        "bus.handle",
                        queue = %label,
                        message = envelope.type_name(),
                        task = envelope.task_id.map(|t| t.to_string()),
                        attempt = delivery.attempt,
                        trace_id = tracing::field::Empty
                    );
                    orion_services::telemetry::follow(&span, envelope.traceparent.as_deref());
                    orion_services::telemetry::record_trace_id(&span);
                    // This delivery's work, however often an outage makes it start over: the
                    // holder of the effects it claims.
                    let run = uuid::Uuid::now_v7();
                    let outcome = patiently(&delivery, progress_every, abandon, || {
                        route(envelope.clone(), span.clone(), run).instrument(span.clone())
                    })
                    .await;
                    settle(&delivery, label, outcome).await;
                })
                .await;
        };
        ctx.spawn(own_task(fut).into_actor(self));
    }
}

/// Runs `work` as a task of its own on this thread, and gives back a future that ends with it
/// (a panic in it goes on from there) and stops it when dropped: when the bridge stops or
/// restarts, its futures are dropped. Each stream the bridge follows runs so, because an
/// actor polls every future of its context whenever any one of them wakes: at thousands of
/// requests a second that polled every queue consumer of the node each time.
fn own_task(work: impl Future<Output = ()> + 'static) -> impl Future<Output = ()> + 'static {
    let (stop, on_drop) = Stop::new();
    let task = tokio::task::spawn_local(futures_util::future::Abortable::new(
        work,
        stop.registration,
    ));
    async move {
        let _stop = on_drop;
        if let Err(e) = task.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Turns within one round of [`prioritized`]: of 15 picks, 8 go to the first (most urgent)
/// stream, 4 to the second, 2 to the third, 1 to the fourth, when all have work waiting.
const ROUND: [usize; 15] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3];

/// Merges streams given most urgent first: each pick goes to the stream whose turn it is in
/// [`ROUND`], or, when that one has nothing ready, to the next in the round that has. Under a
/// backlog the urgent are served first and most, and the least urgent still get a share; a
/// single stream is passed through as it is.
fn prioritized(streams: Vec<Deliveries>) -> Deliveries {
    if streams.len() == 1 {
        return streams.into_iter().next().expect("one stream");
    }
    let mut streams: Vec<Option<Deliveries>> = streams.into_iter().map(Some).collect();
    let round: Vec<usize> = ROUND
        .iter()
        .copied()
        .filter(|i| *i < streams.len())
        .collect();
    let mut turn = 0;
    futures_util::stream::poll_fn(move |cx| {
        for step in 0..round.len() {
            let i = round[(turn + step) % round.len()];
            let Some(stream) = streams[i].as_mut() else {
                continue;
            };
            match stream.poll_next_unpin(cx) {
                std::task::Poll::Ready(Some(delivery)) => {
                    turn = (turn + step + 1) % round.len();
                    return std::task::Poll::Ready(Some(delivery));
                }
                std::task::Poll::Ready(None) => streams[i] = None,
                std::task::Poll::Pending => {}
            }
        }
        if streams.iter().all(Option::is_none) {
            std::task::Poll::Ready(None)
        } else {
            std::task::Poll::Pending
        }
    })
    .boxed()
}

/// Runs the handler `work` makes; while it finds a service down, runs it again after a pause
/// (doubling up to [`OUTAGE_BACKOFF_MAX`], for up to [`OUTAGE_PATIENCE`]) with the delivery
/// kept alive, so an outage of the database or the bus does not use up the message's
/// delivery attempts and send it to the dead letters.
async fn patiently<W, Fut>(
    delivery: &Delivery,
    every: Duration,
    abandon: &watch::Receiver<bool>,
    work: W,
) -> Result<(), HandleError>
where
    W: Fn() -> Fut,
    Fut: Future<Output = Result<(), HandleError>>,
{
    let (mut waited, mut pause) = (Duration::ZERO, RETRY_DELAY);
    loop {
        match hold(delivery, work(), every, abandon.clone()).await {
            Err(HandleError::Unavailable(why)) if waited < OUTAGE_PATIENCE => {
                tracing::warn!(%why, ?pause, "a service is down; holding the message to try again");
                let wait = async {
                    tokio::time::sleep(pause).await;
                    Ok(())
                };
                hold(delivery, wait, every, abandon.clone()).await?;
                waited += pause;
                pause = (pause * 2).min(OUTAGE_BACKOFF_MAX);
            }
            Err(HandleError::Unavailable(why)) => return Err(HandleError::Retry(why)),
            other => return other,
        }
    }
}

/// Runs a handler while telling the bus, every third of the ack wait, that the message is
/// still being worked on, so long work is not redelivered to another node meanwhile. When a
/// drain gives up waiting (`abandon`), the message is handed back instead.
async fn hold<Fut>(
    delivery: &Delivery,
    work: Fut,
    every: Duration,
    mut abandon: watch::Receiver<bool>,
) -> Result<(), HandleError>
where
    Fut: Future<Output = Result<(), HandleError>>,
{
    let handed_back = async move {
        if abandon.wait_for(|a| *a).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let mut handed_back = std::pin::pin!(handed_back);
    let mut work = std::pin::pin!(work);
    let mut missed = 0u32;
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + every,
        every.max(Duration::from_millis(10)),
    );
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = &mut handed_back => {
                return Err(HandleError::Retry("the node is stopping; handed back".into()));
            }
            _ = ticks.tick() => {
                // An extension the bus does not confirm within a tick counts as missed.
                let extended = tokio::time::timeout(every, delivery.in_progress())
                    .await
                    .unwrap_or_else(|_| {
                        Err(orion_bus::BusError::Timeout {
                            subject: "the delivery's extension".into(),
                            after: every,
                        })
                    });
                match extended {
                    Ok(()) => missed = 0,
                    Err(e) => {
                        missed += 1;
                        tracing::warn!(error = %e, missed, "could not extend a delivery");
                        // Two thirds of the ack wait without an extension: the bus may give
                        // the message to another node at any moment, so this run stops.
                        if missed >= LOST_AFTER_MISSED {
                            return Err(HandleError::Retry(
                                "the delivery could not be extended; handed back".into(),
                            ));
                        }
                    }
                }
            }
        }
    }
}

async fn settle(delivery: &Delivery, queue: &str, outcome: Result<(), HandleError>) {
    let counted = match &outcome {
        Ok(()) => "ack",
        Err(HandleError::Drop(_)) => "drop",
        Err(HandleError::Retry(_) | HandleError::Unavailable(_)) => "retry",
    };
    metrics()
        .bus_deliveries
        .with_label_values(&[queue, counted])
        .inc();
    let settled = match outcome {
        Ok(()) => delivery.ack().await,
        Err(HandleError::Drop(reason)) => {
            tracing::warn!(id = %delivery.envelope.id, %reason, "dropping a message that cannot be handled");
            delivery.ack().await
        }
        Err(HandleError::Retry(reason) | HandleError::Unavailable(reason)) => {
            tracing::warn!(id = %delivery.envelope.id, attempt = delivery.attempt, %reason, "will retry a message");
            delivery.nak(Some(RETRY_DELAY)).await
        }
    };
    if let Err(e) = settled {
        tracing::warn!(error = %e, "could not settle a delivery; it will be redelivered");
    }
}

impl BusBridge {
    /// Publishes the node's heartbeat, and reads the depth of the queues it serves.
    fn beat(&self, ctx: &mut Context<Self>) {
        let mut agents: Vec<AgentKind> = self.agents.keys().copied().collect();
        if self.coordinator.is_some() {
            agents.push(AgentKind::Coordinator);
        }
        agents.sort();
        let heartbeat = Heartbeat {
            node: self.node.clone(),
            agents,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            at: Utc::now(),
            draining: *self.draining.borrow(),
        };
        let envelope = Envelope::new(self.node.clone(), Body::Heartbeat(heartbeat));
        let bus = self.bus.clone();
        let subject = bus.subjects().health(&self.node);
        let queues = self.queues();
        ctx.spawn(
            async move {
                if let Err(e) = bus.publish(&subject, &envelope).await {
                    tracing::warn!(error = %e, "could not publish a heartbeat");
                }
                // The depth of the queues this node serves, as the bus sees it, summed over a
                // pool's priorities.
                let mut depths: HashMap<String, (u64, u64)> = HashMap::new();
                for queue in queues {
                    if let Ok(depth) = bus.queue_depth(queue).await {
                        let sum = depths.entry(queue.label()).or_default();
                        sum.0 += depth.pending;
                        sum.1 += depth.in_flight;
                    }
                }
                let gauge = &metrics().queue_depth;
                for (label, (pending, in_flight)) in depths {
                    gauge
                        .with_label_values(&[&label, "pending"])
                        .set(pending as i64);
                    gauge
                        .with_label_values(&[&label, "in_flight"])
                        .set(in_flight as i64);
                }
            }
            .into_actor(self),
        );
    }

    /// The queues this node consumes.
    fn queues(&self) -> Vec<Queue> {
        let mut queues: Vec<Queue> = self
            .agents
            .keys()
            .flat_map(|kind| Queue::work_by_priority(*kind))
            .collect();
        if self.coordinator.is_some() {
            queues.extend([Queue::Coordinators, Queue::Results]);
        }
        queues
    }
}

fn unexpected(envelope: &Envelope) -> HandleError {
    HandleError::Drop(format!(
        "a `{}` message does not belong on this queue",
        envelope.type_name()
    ))
}

fn mailbox(e: MailboxError) -> HandleError {
    HandleError::Retry(format!("actor unavailable: {e}"))
}

impl Actor for BusBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(coordinator) = self.coordinator.clone() {
            let to_coordinator = coordinator.clone();
            let coordinating = concurrency_of(
                AgentKind::Coordinator,
                self.concurrency,
                &self.kind_concurrency,
            );
            self.pump(
                ctx,
                vec![Queue::Coordinators],
                coordinating,
                move |envelope, span, _| {
                    let coordinator = to_coordinator.clone();
                    async move {
                        match envelope.body {
                            Body::TaskSubmitted(task) => coordinator
                                .send(TaskArrived(*task, span))
                                .await
                                .map_err(mailbox)?,
                            Body::Review(review) => coordinator
                                .send(ReviewArrived(review, span))
                                .await
                                .map_err(mailbox)?,
                            Body::Resume(resume) => coordinator
                                .send(ResumeArrived(resume, span))
                                .await
                                .map_err(mailbox)?,
                            _ => Err(unexpected(&envelope)),
                        }
                    }
                },
            );
            self.pump(
                ctx,
                vec![Queue::Results],
                coordinating,
                move |envelope, span, _| {
                    let coordinator = coordinator.clone();
                    async move {
                        match envelope.body {
                            Body::Report(report) => coordinator
                                .send(ReportArrived {
                                    report,
                                    node: envelope.node,
                                    span,
                                })
                                .await
                                .map_err(mailbox)?,
                            _ => Err(unexpected(&envelope)),
                        }
                    }
                },
            );
        }
        for (kind, agent) in self.agents.clone() {
            let concurrency = concurrency_of(kind, self.concurrency, &self.kind_concurrency);
            self.pump(
                ctx,
                Queue::work_by_priority(kind).to_vec(),
                concurrency,
                move |envelope, span, run| {
                    let agent = agent.clone();
                    async move {
                        match envelope.body {
                            Body::Assignment(assignment) if assignment.agent == kind => {
                                // Dropped with this future (the message handed back), it
                                // stops the step's work.
                                let (stop, _stops_the_work) = Stop::new();
                                agent
                                    .send(Perform(*assignment, span, stop, run))
                                    .await
                                    .map_err(mailbox)?
                            }
                            _ => Err(unexpected(&envelope)),
                        }
                    }
                },
            );
        }
        self.listen_for_orders(ctx);
        for (kind, agent) in self.agents.clone() {
            self.answer_requests(ctx, kind, agent);
        }
        // A heartbeat at once (so a starting node is seen without waiting), then at every
        // interval.
        self.beat(ctx);
        ctx.run_interval(HEARTBEAT_INTERVAL, |bridge, ctx| bridge.beat(ctx));
    }
}

impl BusBridge {
    /// Serves `<p>.rpc.<kind>` with the node's agent of that kind, in the queue group of the
    /// kind, so each request is answered by one agent on one node. Requests that arrived
    /// together go to the agent as one burst.
    fn answer_requests(&self, ctx: &mut Context<Self>, kind: AgentKind, agent: Addr<AgentActor>) {
        let bus = self.bus.clone();
        let node = self.node.clone();
        let concurrency = self.concurrency.max(1) * BURSTS_PER_SLOT;
        let served = async move {
            let subject = bus.subjects().rpc(kind);
            let group = format!("agents-{kind}");
            orion_bus::follow(
                "agent requests",
                CONSUME_RETRY,
                || bus.serve(&subject, &group),
                |requests| {
                    let (agent, node) = (agent.clone(), node.clone());
                    requests
                        .ready_chunks(REQUESTS_PER_BURST)
                        .for_each_concurrent(concurrency, move |burst| {
                            let (agent, node) = (agent.clone(), node.clone());
                            async move { answer(agent, &node, burst).await }
                        })
                },
            )
            .await
        };
        ctx.spawn(own_task(served).into_actor(self));
    }

    /// Follows `<p>.control.<node>`: a `drain` order stops the node taking work; a `cancel`
    /// order stops the work of a cancelled task.
    fn listen_for_orders(&self, ctx: &mut Context<Self>) {
        let bus = self.bus.clone();
        let subject = bus.subjects().control(&self.node);
        let me = ctx.address();
        let orders = async move {
            orion_bus::follow(
                "control orders",
                CONSUME_RETRY,
                || bus.subscribe(&subject),
                |mut orders| {
                    let me = me.clone();
                    async move {
                        while let Some((_, envelope)) = orders.next().await {
                            match envelope.body {
                                Body::Control(ControlCommand::Drain) => {
                                    me.do_send(Drain { deadline: None })
                                }
                                Body::Control(ControlCommand::Cancel { task_id }) => {
                                    me.do_send(Cancel(task_id))
                                }
                                other => tracing::info!(
                                    order = ?other,
                                    "ignoring an order this node does not take"
                                ),
                            }
                        }
                    }
                },
            )
            .await
        };
        ctx.spawn(own_task(orders).into_actor(self));
    }
}

impl Handler<Cancel> for BusBridge {
    type Result = ();

    fn handle(&mut self, msg: Cancel, _: &mut Self::Context) {
        for agent in self.agents.values() {
            agent.do_send(crate::messages::CancelTask(msg.0));
        }
    }
}

/// Hands a burst of requests to the agent in one message and sends back its answers.
async fn answer(agent: Addr<AgentActor>, node: &str, burst: Vec<Request>) {
    let mut asked = Vec::with_capacity(burst.len());
    let mut answered = Vec::with_capacity(burst.len());
    for request in burst {
        let cause = request.envelope.id;
        match request.envelope.body {
            Body::Request(question) => {
                asked.push(question);
                answered.push((cause, request.reply, None));
            }
            other => {
                let refusal = AgentReply::Refused {
                    failure: TaskFailure::new(
                        codes::NOT_A_REQUEST,
                        format!("`{}` is not a request", other.type_name()),
                    ),
                };
                answered.push((cause, request.reply, Some(refusal)));
            }
        }
    }
    let unavailable = |why: String| AgentReply::Refused {
        failure: TaskFailure::new(codes::AGENT_UNAVAILABLE, why),
    };
    let mut replies = match asked.len() {
        0 => Vec::new(),
        n => match agent.send(Ask(asked)).await {
            Ok(replies) => replies,
            Err(e) => vec![unavailable(format!("actor unavailable: {e}")); n],
        },
    }
    .into_iter();
    for (cause, replier, refusal) in answered {
        let reply = refusal
            .or_else(|| replies.next())
            .unwrap_or_else(|| unavailable("the agent gave no answer".into()));
        let mut envelope = Envelope::new(node.to_owned(), Body::Reply(reply));
        envelope.causation_id = Some(cause);
        if let Err(e) = replier.reply(&envelope).await {
            tracing::warn!(error = %e, "could not answer a request");
        }
    }
}

/// One delivery in flight: counted while it lives; dropping it, however its work ended,
/// uncounts it and wakes whoever waits for the node to settle.
struct InFlight<'a> {
    count: &'a AtomicU32,
    settled: &'a Notify,
}

impl<'a> InFlight<'a> {
    fn count(count: &'a AtomicU32, settled: &'a Notify) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self { count, settled }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.settled.notify_waiters();
    }
}

/// Resolves once nothing is in flight.
async fn idle(in_flight: &AtomicU32, settled: &Notify) {
    loop {
        let notified = settled.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if in_flight.load(Ordering::Relaxed) == 0 {
            return;
        }
        notified.await;
    }
}

impl Handler<Drain> for BusBridge {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, drain: Drain, ctx: &mut Self::Context) -> Self::Result {
        if !self.draining.send_replace(true) {
            tracing::info!(node = %self.node, in_flight = self.in_flight.load(Ordering::Relaxed), "draining: taking no new work");
            self.beat(ctx);
        }
        let (in_flight, settled) = (self.in_flight.clone(), self.settled.clone());
        let abandon = self.abandon.clone();
        Box::pin(async move {
            let Some(deadline) = drain.deadline else {
                return idle(&in_flight, &settled).await;
            };
            if tokio::time::timeout(deadline, idle(&in_flight, &settled))
                .await
                .is_err()
            {
                tracing::warn!(
                    in_flight = in_flight.load(Ordering::Relaxed),
                    "drain deadline passed: handing back the work in flight"
                );
                abandon.send_replace(true);
                let _ = tokio::time::timeout(HAND_BACK, idle(&in_flight, &settled)).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_named_in_kind_concurrency_takes_its_number_the_coordinator_too() {
        let kinds = HashMap::from([(AgentKind::Coordinator, 16), (AgentKind::Developer, 1)]);
        assert_eq!(concurrency_of(AgentKind::Coordinator, 4, &kinds), 16);
        assert_eq!(concurrency_of(AgentKind::Developer, 4, &kinds), 1);
        assert_eq!(concurrency_of(AgentKind::Analyzer, 4, &kinds), 4);
        assert_eq!(
            concurrency_of(AgentKind::Coordinator, 4, &HashMap::new()),
            4
        );
        // Never none at all, whatever the settings say.
        assert_eq!(concurrency_of(AgentKind::Analyzer, 0, &HashMap::new()), 1);
    }

    /// What runs on a task of its own stops when the future that stands for it is dropped,
    /// and a panic in it reaches whoever awaits that future.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_on_its_own_task_stops_with_its_future_and_its_panic_goes_on() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let ticks = Arc::new(AtomicU32::new(0));
                let counting = {
                    let ticks = ticks.clone();
                    async move {
                        loop {
                            ticks.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                        }
                    }
                };
                let running = own_task(counting);
                while ticks.load(Ordering::SeqCst) < 3 {
                    tokio::task::yield_now().await;
                }
                drop(running);
                tokio::task::yield_now().await;
                let stopped_at = ticks.load(Ordering::SeqCst);
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(ticks.load(Ordering::SeqCst), stopped_at, "it ran on");

                let panicking = own_task(async { panic!("boom in a stream") });
                let panicked = tokio::task::spawn_local(panicking).await.unwrap_err();
                assert_eq!(
                    orion_services::panic_text(panicked.into_panic().as_ref()),
                    "boom in a stream"
                );
            })
            .await;
    }

    /// A delivery whose work is dropped before it is settled, as when the bridge stops or
    /// restarts, is no longer counted in flight, and a drain waiting for the node to settle
    /// wakes.
    #[tokio::test(flavor = "current_thread")]
    async fn a_delivery_dropped_mid_work_is_no_longer_in_flight() {
        use futures_util::FutureExt;
        let (count, settled) = (AtomicU32::new(0), Notify::new());
        let mut work = Box::pin(async {
            let _counted = InFlight::count(&count, &settled);
            std::future::pending::<()>().await
        });
        assert!(work.as_mut().now_or_never().is_none());
        assert_eq!(count.load(Ordering::Relaxed), 1);
        let mut drained = Box::pin(idle(&count, &settled));
        assert!(
            drained.as_mut().now_or_never().is_none(),
            "one is in flight"
        );
        drop(work);
        assert_eq!(count.load(Ordering::Relaxed), 0);
        tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .expect("the drain saw the node settle");
    }
}
