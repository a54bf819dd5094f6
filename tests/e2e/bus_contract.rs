//! The `Bus` contract, one suite run against both transports.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use orion_bus::{
    AgentKind, Body, Bus, BusConfig, BusError, ControlCommand, Envelope, EventType, InProcessBus,
    NatsBus, Priority, ProtocolError, Queue, Subjects, TaskEvent, TaskId,
};

use crate::support::{eventually, nats_url, unique};

const ACK_WAIT: Duration = Duration::from_millis(800);
const MAX_DELIVER: u32 = 3;
const LIMIT: usize = 64 * 1024;
/// How long a test waits for something that must happen.
const DEADLINE: Duration = Duration::from_secs(15);

fn config() -> BusConfig {
    BusConfig {
        ack_wait: ACK_WAIT,
        max_deliver: MAX_DELIVER,
        max_message_bytes: LIMIT,
        ..BusConfig::default()
    }
}

/// A bus under test, and how to clean up after it.
struct Harness {
    bus: Arc<dyn Bus>,
    nats: Option<NatsBus>,
}

impl Harness {
    async fn in_process() -> Self {
        let subjects = Subjects::new(unique("t")).unwrap();
        Self {
            bus: Arc::new(InProcessBus::new(subjects, config())),
            nats: None,
        }
    }

    async fn nats() -> Self {
        let subjects = Subjects::new(unique("t")).unwrap();
        let bus = NatsBus::connect(&nats_url(), subjects, config())
            .await
            .expect("NATS with JetStream is running");
        Self {
            bus: Arc::new(bus.clone()),
            nats: Some(bus),
        }
    }

    async fn finish(self) {
        if let Some(nats) = self.nats {
            nats.delete_streams().await.expect("delete test streams");
        }
    }
}

fn message() -> Envelope {
    Envelope::new(
        "test-node",
        Body::Control(ControlCommand::Cancel {
            task_id: TaskId::new(),
        }),
    )
}

async fn next(deliveries: &mut orion_bus::Deliveries) -> orion_bus::Delivery {
    tokio::time::timeout(DEADLINE, deliveries.next())
        .await
        .expect("a delivery in time")
        .expect("stream open")
}

/// Asserts nothing is delivered within `window` (a bounded wait for an absence).
async fn nothing_within(deliveries: &mut orion_bus::Deliveries, window: Duration) {
    if let Ok(Some(d)) = tokio::time::timeout(window, deliveries.next()).await {
        panic!(
            "unexpected delivery of {} (attempt {})",
            d.envelope.id, d.attempt
        );
    }
}

const WORK: Queue = Queue::Work(AgentKind::Analyzer, Priority::Normal);

async fn each_message_goes_to_one_consumer(h: Harness) {
    let mut a = h.bus.consume(WORK).await.unwrap();
    let mut b = h.bus.consume(WORK).await.unwrap();
    let sent: Vec<Envelope> = (0..12).map(|_| message()).collect();
    for env in &sent {
        h.bus.enqueue(WORK, env).await.unwrap();
    }
    let mut seen = HashSet::new();
    while seen.len() < sent.len() {
        let d = tokio::select! {
            d = next(&mut a) => d,
            d = next(&mut b) => d,
        };
        assert!(
            seen.insert(d.envelope.id),
            "{} delivered twice",
            d.envelope.id
        );
        assert_eq!(d.attempt, 1);
        d.ack().await.unwrap();
    }
    let expected: HashSet<_> = sent.iter().map(|e| e.id).collect();
    assert_eq!(seen, expected);
    // Acknowledged messages are gone: nothing comes back after the ack wait.
    nothing_within(&mut a, ACK_WAIT * 2).await;
    h.finish().await;
}

async fn an_unacknowledged_message_is_redelivered(h: Harness) {
    let mut deliveries = h.bus.consume(WORK).await.unwrap();
    let env = message();
    h.bus.enqueue(WORK, &env).await.unwrap();
    let first = next(&mut deliveries).await;
    assert_eq!((first.envelope.id, first.attempt), (env.id, 1));
    // Not acknowledged: after ack_wait it comes again.
    let second = next(&mut deliveries).await;
    assert_eq!((second.envelope.id, second.attempt), (env.id, 2));
    assert_eq!(
        second.envelope, env,
        "the redelivered message is the same message"
    );
    second.ack().await.unwrap();
    nothing_within(&mut deliveries, ACK_WAIT * 2).await;
    h.finish().await;
}

async fn a_rejected_message_is_redelivered_at_once(h: Harness) {
    let mut deliveries = h.bus.consume(WORK).await.unwrap();
    let env = message();
    h.bus.enqueue(WORK, &env).await.unwrap();
    let first = next(&mut deliveries).await;
    first.nak(None).await.unwrap();
    let second = tokio::time::timeout(ACK_WAIT / 2, deliveries.next())
        .await
        .expect("a nak redelivers before the ack wait")
        .unwrap();
    assert_eq!((second.envelope.id, second.attempt), (env.id, 2));
    second.ack().await.unwrap();
    h.finish().await;
}

async fn in_progress_holds_a_message(h: Harness) {
    let mut deliveries = h.bus.consume(WORK).await.unwrap();
    h.bus.enqueue(WORK, &message()).await.unwrap();
    let d = next(&mut deliveries).await;
    // Working for three ack waits while signalling progress: no redelivery meanwhile.
    for _ in 0..6 {
        tokio::time::sleep(ACK_WAIT / 2).await;
        d.in_progress().await.unwrap();
    }
    d.ack().await.unwrap();
    nothing_within(&mut deliveries, ACK_WAIT * 2).await;
    h.finish().await;
}

async fn duplicates_are_queued_once(h: Harness) {
    let mut deliveries = h.bus.consume(WORK).await.unwrap();
    let env = message();
    h.bus.enqueue(WORK, &env).await.unwrap();
    h.bus.enqueue(WORK, &env).await.unwrap();
    let d = next(&mut deliveries).await;
    d.ack().await.unwrap();
    nothing_within(&mut deliveries, ACK_WAIT * 2).await;
    h.finish().await;
}

/// The next dead letter, while the queue is being consumed (dead-lettering happens on the
/// way to a consumer); a delivery meanwhile fails the test.
async fn de_duplication_is_per_queue(h: Harness) {
    let env = message();
    let mut work = h.bus.consume(WORK).await.unwrap();
    let mut results = h.bus.consume(Queue::Results).await.unwrap();
    h.bus.enqueue(WORK, &env).await.unwrap();
    h.bus.enqueue(Queue::Results, &env).await.unwrap();
    let (a, b) = (next(&mut work).await, next(&mut results).await);
    assert_eq!(
        (a.envelope.id, b.envelope.id),
        (env.id, env.id),
        "the same id on two queues is two messages"
    );
    a.ack().await.unwrap();
    b.ack().await.unwrap();
    h.finish().await;
}

async fn dead_letter(
    dead: &mut orion_bus::RawStream,
    deliveries: &mut orion_bus::Deliveries,
) -> serde_json::Value {
    let wait = async {
        tokio::select! {
            m = dead.next() => m.expect("dead letters open"),
            d = deliveries.next() => panic!("unexpected delivery {:?}", d.map(|d| d.envelope.id)),
        }
    };
    let m = tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("a dead letter in time");
    serde_json::from_slice(&m.payload).expect("dead letters are JSON")
}

async fn undecodable_messages_are_dead_lettered(h: Harness) {
    let subjects = h.bus.subjects().clone();
    let mut dead = h.bus.subscribe_raw(&subjects.dead_all()).await.unwrap();
    let mut deliveries = h.bus.consume(WORK).await.unwrap();
    h.bus
        .enqueue_raw(WORK, "garbage-1", Bytes::from_static(b"{not json"), None)
        .await
        .unwrap();
    let mut wrong_version = serde_json::to_value(message()).unwrap();
    wrong_version["v"] = 99.into();
    h.bus
        .enqueue_raw(
            WORK,
            "version-1",
            Bytes::from(wrong_version.to_string()),
            None,
        )
        .await
        .unwrap();
    let first = dead_letter(&mut dead, &mut deliveries).await;
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed message"),
        "{first}"
    );
    assert_eq!(first["subject"], WORK.subject(&subjects));
    assert_eq!(first["payload"], "{not json");
    let second = dead_letter(&mut dead, &mut deliveries).await;
    assert_eq!(second["reason"], "unsupported schema version 99");
    // Neither reached a consumer, and neither comes back.
    nothing_within(&mut deliveries, ACK_WAIT * 2).await;
    h.finish().await;
}

async fn poison_messages_are_dead_lettered_after_max_deliver(h: Harness) {
    let subjects = h.bus.subjects().clone();
    let mut dead = h.bus.subscribe_raw(&subjects.dead_all()).await.unwrap();
    let mut deliveries = h.bus.consume(WORK).await.unwrap();
    let env = message();
    h.bus.enqueue(WORK, &env).await.unwrap();
    for attempt in 1..=MAX_DELIVER {
        let d = next(&mut deliveries).await;
        assert_eq!((d.envelope.id, d.attempt), (env.id, attempt));
        d.nak(None).await.unwrap();
    }
    let letter = dead_letter(&mut dead, &mut deliveries).await;
    assert_eq!(
        letter["reason"],
        format!(
            "delivered {MAX_DELIVER} times without acknowledgement (max_deliver = {MAX_DELIVER})"
        )
    );
    assert_eq!(letter["attempts"], MAX_DELIVER + 1);
    nothing_within(&mut deliveries, ACK_WAIT * 2).await;
    h.finish().await;
}

/// A dead letter written while nobody follows them waits for a follower; it goes to one
/// follower at a time, comes again when not acknowledged, and never after it is.
async fn dead_letters_wait_for_a_follower_until_acknowledged(h: Harness) {
    let subjects = h.bus.subjects().clone();
    let mut dead = h.bus.subscribe_raw(&subjects.dead_all()).await.unwrap();
    let mut deliveries = h.bus.consume(WORK).await.unwrap();
    h.bus
        .enqueue_raw(WORK, "garbage-2", Bytes::from_static(b"{not json"), None)
        .await
        .unwrap();
    dead_letter(&mut dead, &mut deliveries).await;
    // Only now does anybody follow: the letter is there, for one of the two followers.
    let mut first = h.bus.follow_dead_letters().await.unwrap();
    let mut second = h.bus.follow_dead_letters().await.unwrap();
    let letter = tokio::time::timeout(DEADLINE, first.next())
        .await
        .expect("the kept dead letter in time")
        .unwrap();
    assert_eq!(letter.subject, subjects.dead(&WORK.subject(&subjects)));
    let body: serde_json::Value = serde_json::from_slice(&letter.body).unwrap();
    assert_eq!(body["payload"], "{not json");
    // Not acknowledged: it comes again after ack_wait, to a follower.
    drop(letter);
    let again = tokio::select! {
        l = first.next() => l,
        l = second.next() => l,
        _ = tokio::time::sleep(DEADLINE) => None,
    }
    .expect("the unacknowledged letter again");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&again.body).unwrap(),
        body
    );
    again.ack().await.unwrap();
    tokio::select! {
        l = first.next() => panic!("an acknowledged letter came back: {:?}", l.map(|l| l.subject)),
        l = second.next() => panic!("an acknowledged letter came back: {:?}", l.map(|l| l.subject)),
        _ = tokio::time::sleep(ACK_WAIT * 2) => {}
    }
    h.finish().await;
}

async fn take(s: &mut orion_bus::EnvelopeStream) -> (String, Envelope) {
    tokio::time::timeout(DEADLINE, s.next())
        .await
        .expect("an event in time")
        .unwrap()
}

fn event(task: TaskId, seq: i64) -> Envelope {
    let event = TaskEvent {
        seq,
        task_id: task,
        event_type: EventType::Progress,
        status: None,
        data: serde_json::json!({ "n": seq }),
        node: Some("test-node".into()),
        at: chrono::Utc::now(),
    };
    Envelope::new("test-node", Body::Event(event))
}

async fn events_reach_every_matching_subscriber(h: Harness) {
    let subjects = h.bus.subjects().clone();
    let (mine, other) = (TaskId::new(), TaskId::new());
    let mut all = h.bus.subscribe(&subjects.events_all()).await.unwrap();
    let mut only_mine = h.bus.subscribe(&subjects.events_of(mine)).await.unwrap();
    h.bus.publish_event(&event(other, 1)).await.unwrap();
    h.bus.publish_event(&event(mine, 2)).await.unwrap();
    let (subject, first) = take(&mut all).await;
    assert_eq!(subject, subjects.event(other, EventType::Progress));
    assert_eq!(first.task_id, Some(other));
    let (_, second) = take(&mut all).await;
    assert_eq!(second.task_id, Some(mine));
    let (subject, only) = take(&mut only_mine).await;
    assert_eq!(
        subject,
        format!("{}.events.{mine}.progress", subjects.prefix())
    );
    assert_eq!(only, second);
    h.finish().await;
}

async fn oversized_messages_are_refused(h: Harness) {
    let mut big = event(TaskId::new(), 1);
    if let Body::Event(e) = &mut big.body {
        e.data = serde_json::json!({ "blob": "x".repeat(LIMIT) });
    }
    let err = h.bus.enqueue(WORK, &big).await.unwrap_err();
    assert!(
        matches!(err, BusError::Protocol(ProtocolError::TooLarge { .. })),
        "{err}"
    );
    let err = h.bus.publish_event(&big).await.unwrap_err();
    assert!(
        matches!(err, BusError::Protocol(ProtocolError::TooLarge { .. })),
        "{err}"
    );
    h.finish().await;
}

async fn queue_depth_counts_waiting_and_unacknowledged_work(h: Harness) {
    let mut deliveries = h.bus.consume(WORK).await.unwrap();
    for _ in 0..2 {
        h.bus.enqueue(WORK, &message()).await.unwrap();
    }
    let first = next(&mut deliveries).await;
    let bus = &h.bus;
    let depth = eventually("two messages counted", DEADLINE, || async move {
        let d = bus.queue_depth(WORK).await.ok()?;
        (d.pending + d.in_flight == 2 && d.in_flight >= 1).then_some(d)
    })
    .await;
    assert!(depth.in_flight >= 1, "{depth:?}");
    assert_eq!(
        bus.held(WORK).await.unwrap(),
        2,
        "held: waiting and unacknowledged"
    );
    // A queue that nothing consumes holds what is put on it, and no other queue's.
    let unconsumed = Queue::Work(AgentKind::Analyzer, Priority::Urgent);
    assert_eq!(bus.held(unconsumed).await.unwrap(), 0);
    bus.enqueue(unconsumed, &message()).await.unwrap();
    assert_eq!(bus.held(unconsumed).await.unwrap(), 1);
    assert_eq!(bus.held(WORK).await.unwrap(), 2);
    first.ack().await.unwrap();
    next(&mut deliveries).await.ack().await.unwrap();
    eventually("an empty queue", DEADLINE, || async move {
        let d = bus.queue_depth(WORK).await.ok()?;
        (d == orion_bus::QueueDepth::default() && bus.held(WORK).await.ok()? == 0).then_some(())
    })
    .await;
    h.finish().await;
}

async fn the_trace_context_travels_with_a_message(h: Harness) {
    let mut deliveries = h.bus.consume(WORK).await.unwrap();
    let mut traced = message();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    traced.traceparent = Some(traceparent.to_owned());
    h.bus.enqueue(WORK, &traced).await.unwrap();
    let plain = message();
    h.bus.enqueue(WORK, &plain).await.unwrap();
    let first = next(&mut deliveries).await;
    let second = next(&mut deliveries).await;
    assert_eq!(
        (first.envelope.id, first.envelope.traceparent.as_deref()),
        (traced.id, Some(traceparent))
    );
    assert_eq!(
        (second.envelope.id, second.envelope.traceparent.as_deref()),
        (plain.id, None)
    );
    first.ack().await.unwrap();
    second.ack().await.unwrap();
    h.finish().await;
}

/// A server that answers each request with a reply naming `who`.
async fn answering(bus: &Arc<dyn Bus>, subject: &str, who: &'static str) {
    let mut requests = bus.serve(subject, "group").await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let reply = Envelope::new(
                who,
                Body::Reply(orion_bus::AgentReply::Answer {
                    value: serde_json::json!({ "by": who, "to": request.envelope.id }),
                }),
            );
            request.reply.reply(&reply).await.unwrap();
        }
    });
}

async fn a_request_is_answered_by_one_server_of_its_group(h: Harness) {
    let subject = h.bus.subjects().rpc(AgentKind::Analyzer);
    answering(&h.bus, &subject, "one").await;
    answering(&h.bus, &subject, "two").await;
    let mut by = HashSet::new();
    for _ in 0..20 {
        let asked = message();
        let answer = h
            .bus
            .request(&subject, &asked, DEADLINE)
            .await
            .expect("an answer");
        let Body::Reply(orion_bus::AgentReply::Answer { value }) = answer.body else {
            panic!("not an answer: {answer:?}");
        };
        assert_eq!(
            value["to"],
            serde_json::json!(asked.id),
            "the answer to this request"
        );
        by.insert(value["by"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        by.len(),
        2,
        "both servers of the group take requests: {by:?}"
    );
    h.finish().await;
}

async fn a_request_without_server_or_answer_fails_with_its_reason(h: Harness) {
    let nobody = h.bus.subjects().rpc(AgentKind::Devops);
    let err = h
        .bus
        .request(&nobody, &message(), DEADLINE)
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::NoResponders(_)), "{err}");
    // A server that takes requests and never answers.
    let silent = h.bus.subjects().rpc(AgentKind::Architect);
    let mut requests = h.bus.serve(&silent, "group").await.unwrap();
    let kept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(request) = requests.next().await {
            held.push(request);
        }
    });
    let err = h
        .bus
        .request(&silent, &message(), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "{err}");
    kept.abort();
    h.finish().await;
}

/// Runs each contract case once per transport, as its own test.
macro_rules! contract {
    ($($case:ident),+ $(,)?) => {
        mod in_process {
            $(#[tokio::test] async fn $case() { super::$case(super::Harness::in_process().await).await })+
        }
        mod nats {
            $(#[tokio::test] async fn $case() { super::$case(super::Harness::nats().await).await })+
        }
    };
}

contract!(
    each_message_goes_to_one_consumer,
    an_unacknowledged_message_is_redelivered,
    a_rejected_message_is_redelivered_at_once,
    in_progress_holds_a_message,
    duplicates_are_queued_once,
    de_duplication_is_per_queue,
    undecodable_messages_are_dead_lettered,
    poison_messages_are_dead_lettered_after_max_deliver,
    dead_letters_wait_for_a_follower_until_acknowledged,
    events_reach_every_matching_subscriber,
    oversized_messages_are_refused,
    queue_depth_counts_waiting_and_unacknowledged_work,
    the_trace_context_travels_with_a_message,
    a_request_is_answered_by_one_server_of_its_group,
    a_request_without_server_or_answer_fails_with_its_reason,
);

/// Whether `subject` is an instance of the AsyncAPI `address` template: a `{name}` segment
/// stands for one token, and a final `{subject}` for the rest (one token or more).
fn instance_of(address: &str, subject: &str) -> bool {
    let (pattern, tokens): (Vec<&str>, Vec<&str>) =
        (address.split('.').collect(), subject.split('.').collect());
    for (i, part) in pattern.iter().enumerate() {
        let Some(token) = tokens.get(i) else {
            return false;
        };
        match *part {
            "{subject}" if i + 1 == pattern.len() => return tokens.len() > i,
            p if p.starts_with('{') && p.ends_with('}') => {}
            p if p != *token => return false,
            _ => {}
        }
    }
    pattern.len() == tokens.len()
}

/// The AsyncAPI CLI's verdict on a document: whether it passed (`--fail-severity error`), and
/// what it said.
fn asyncapi_validate(document: &std::path::Path) -> (bool, String) {
    // The CLI reads a `config/` directory of the working directory (node-config): not ours.
    let cwd = crate::support::TempDir::new();
    let out =
        std::process::Command::new(crate::deploy::tool("asyncapi/node_modules/.bin/asyncapi"))
            .args(["validate", "--fail-severity", "error"])
            .arg(document)
            .current_dir(cwd.path())
            .env("SUPPRESS_NO_CONFIG_WARNING", "1")
            // The CLI sends no usage metrics in CI.
            .env("CI", "true")
            .output()
            .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The AsyncAPI CLI finds no error in `docs/asyncapi.yaml`, and does find one in a copy that
/// claims a version of AsyncAPI that does not exist (so the check can fail).
#[test]
fn the_asyncapi_cli_validates_the_document() {
    let document = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/asyncapi.yaml");
    let (valid, said) = asyncapi_validate(&document);
    assert!(valid && said.contains("is valid"), "{said}");
    let broken = crate::support::TempDir::new();
    let copy = broken.path().join("asyncapi.yaml");
    let text = std::fs::read_to_string(&document).unwrap();
    std::fs::write(
        &copy,
        text.replacen("asyncapi: 3.0.0", "asyncapi: 9.9.9", 1),
    )
    .unwrap();
    let (valid, said) = asyncapi_validate(&copy);
    assert!(
        !valid && said.contains("Version \"9.9.9\" is not supported"),
        "a broken copy passed, or failed for another reason: {said}"
    );
}

/// `docs/asyncapi.yaml` reads as YAML, and its channels are exactly the subjects Orion
/// publishes: every subject the code spells is an address of the document, and every address
/// is one the code spells.
#[test]
fn the_asyncapi_document_reads_and_names_every_subject_orion_publishes() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/asyncapi.yaml"),
    )
    .unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("the document is YAML");
    let addresses: Vec<String> = docs[0]["channels"]
        .as_hash()
        .expect("channels")
        .values()
        .map(|c| c["address"].as_str().expect("an address").to_owned())
        .collect();
    let s = Subjects::new("p").unwrap();
    let mut published = vec![
        s.tasks_submitted(),
        s.results(),
        s.health("n1"),
        s.control("n1"),
    ];
    for agent in orion_bus::AgentKind::WORKERS {
        published.push(s.rpc(*agent));
        for priority in orion_bus::Priority::ALL {
            let work = s.work(*agent, *priority);
            published.push(s.dead(&work));
            published.push(work);
        }
    }
    for event in orion_bus::EventType::ALL {
        published.push(s.event(orion_bus::TaskId::new(), *event));
    }
    published.push(s.dead(&s.results()));
    published.push(s.dead(&s.tasks_submitted()));
    let as_document = |subject: &str| format!("{{prefix}}{}", &subject[1..]);
    for subject in &published {
        assert!(
            addresses
                .iter()
                .any(|a| instance_of(a, &as_document(subject))),
            "{subject} is in no channel of docs/asyncapi.yaml: {addresses:?}"
        );
    }
    for address in &addresses {
        assert!(
            published
                .iter()
                .any(|s| instance_of(address, &as_document(s))),
            "the channel {address} is no subject Orion publishes"
        );
    }
}

/// Processes that start together (a gateway and its nodes) all set up the same streams at
/// once: every one of them connects. Eight connections race on each of twenty fresh prefixes.
#[tokio::test]
async fn processes_that_start_together_all_find_their_streams() {
    let url = nats_url();
    for _ in 0..20 {
        let subjects = Subjects::new(unique("race")).unwrap();
        let connects = (0..8).map(|_| NatsBus::connect(&url, subjects.clone(), config()));
        let buses = futures_util::future::join_all(connects).await;
        let mut first = None;
        for bus in buses {
            let bus = bus.expect("every process that starts together connects");
            first.get_or_insert(bus);
        }
        first
            .unwrap()
            .delete_streams()
            .await
            .expect("delete test streams");
    }
}
