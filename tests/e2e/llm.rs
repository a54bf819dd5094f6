//! The model service against a fake OpenAI endpoint (wiremock speaking the chat-completions
//! wire format): usage and cost, tool calls, retries and Retry-After, fallback, malformed
//! answers, timeouts, the cache (in memory and in real Redis) and the rate limiter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orion_services::llm::limits::RedisRateLimiter;
use orion_services::llm::{
    CallContext, ChatMessage, ChatModel, ChatRequest, LlmError, MemoryCache, OpenAiChat,
    OpenAiConfig, Price, RedisCache, ResponseCache,
};
use serde_json::json;
use wiremock::matchers::{body_partial_json, body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{completion, redis_url, unique};

fn config(server: &MockServer) -> OpenAiConfig {
    let mut config = OpenAiConfig::new(format!("{}/v1", server.uri()), "gpt-test");
    config.api_key = Some("sk-test".into());
    config.base_backoff = Duration::from_millis(10);
    config.max_backoff = Duration::from_secs(2);
    config.timeout = Duration::from_secs(5);
    config.prices.insert(
        "gpt-test".into(),
        Price {
            input_per_million: 2.0,
            output_per_million: 8.0,
        },
    );
    config
}

fn model(config: OpenAiConfig) -> OpenAiChat {
    OpenAiChat::new(config, Arc::new(MemoryCache::new(100))).unwrap()
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::system("You edit code."),
            ChatMessage::user(text),
        ],
        max_tokens: Some(64),
        temperature: Some(0.0),
        frame: None,
    }
}

fn step(attempt: i32) -> CallContext {
    CallContext {
        task: None,
        agent: "developer".into(),
        step: "edit".into(),
        attempt,
    }
}

#[tokio::test]
async fn an_answer_carries_its_usage_and_cost() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(body_partial_json(json!({ "model": "gpt-test", "max_tokens": 64, "messages": [{ "role": "system", "content": "You edit code." }, { "role": "user", "content": "hi" }] })))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", "hello")))
        .expect(1)
        .mount(&server)
        .await;
    let answer = model(config(&server))
        .chat(&step(1), &ask("hi"))
        .await
        .unwrap();
    assert_eq!(
        (
            answer.content.as_str(),
            answer.model.as_str(),
            answer.requests,
            answer.cached
        ),
        ("hello", "gpt-test", 1, false)
    );
    assert_eq!(
        (answer.usage.prompt_tokens, answer.usage.completion_tokens),
        (1200, 300)
    );
    assert!(
        (answer.cost_usd - (1200.0 * 2.0 + 300.0 * 8.0) / 1e6).abs() < 1e-12,
        "{}",
        answer.cost_usd
    );
}

#[tokio::test]
async fn tool_calls_are_read() {
    let server = MockServer::start().await;
    let body = json!({
        "id": "chatcmpl-2", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-test",
        "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": { "role": "assistant", "content": null,
            "tool_calls": [{ "id": "call_1", "type": "function", "function": { "name": "apply_edit", "arguments": "{\"path\":\"src/lib.rs\"}" } }] } }],
        "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 }
    });
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let answer = model(config(&server))
        .chat(&step(1), &ask("edit"))
        .await
        .unwrap();
    assert_eq!(answer.content, "");
    assert_eq!(answer.tool_calls.len(), 1);
    assert_eq!(
        (
            answer.tool_calls[0].name.as_str(),
            answer.tool_calls[0].arguments.as_str()
        ),
        ("apply_edit", "{\"path\":\"src/lib.rs\"}")
    );
}

/// A provider that answers its first request 429 with `Retry-After: retry_after`, and every
/// later one "ok".
async fn refusing_once(retry_after: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", retry_after)
                .set_body_string("slow down"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", "ok")))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let server = refusing_once("1").await;
    let start = Instant::now();
    let answer = model(config(&server))
        .chat(&step(1), &ask("hi"))
        .await
        .unwrap();
    assert_eq!((answer.content.as_str(), answer.requests), ("ok", 2));
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "waited only {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_model_that_keeps_failing_gives_way_to_the_fallback() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({ "model": "gpt-test" })))
        .respond_with(ResponseTemplate::new(503).set_body_string("overloaded"))
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({ "model": "gpt-small" })))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(completion("gpt-small", "from the fallback")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.max_attempts = 3;
    config.fallback_model = Some("gpt-small".into());
    let answer = model(config).chat(&step(1), &ask("hi")).await.unwrap();
    assert_eq!(
        (
            answer.content.as_str(),
            answer.model.as_str(),
            answer.requests
        ),
        ("from the fallback", "gpt-small", 4)
    );
    assert_eq!(answer.cost_usd, 0.0, "the fallback has no price configured");
}

#[tokio::test]
async fn server_errors_without_a_fallback_end_as_unavailable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .expect(2)
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.max_attempts = 2;
    let err = model(config).chat(&step(1), &ask("hi")).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Unavailable { requests: 2, last } if last.starts_with("500")),
        "{err}"
    );
    assert_eq!(err.code(), "model_unavailable");
}

#[tokio::test]
async fn garbage_answers_fail_at_once_with_a_clear_error() {
    for (what, body) in [
        ("not JSON", "{not json".to_owned()),
        (
            "no usage",
            json!({ "id": "x", "created": 1, "model": "m", "choices": [] }).to_string(),
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
            .expect(1)
            .mount(&server)
            .await;
        let err = model(config(&server))
            .chat(&step(1), &ask("hi"))
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Malformed(_)), "{what}: {err}");
        assert_eq!(err.code(), "model_malformed_response", "{what}");
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad model"))
        .expect(1)
        .mount(&server)
        .await;
    let err = model(config(&server))
        .chat(&step(1), &ask("hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::Rejected { status: 400, message } if message == "bad model"),
        "{err}"
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("gpt-test", "late"))
                .set_delay(Duration::from_secs(2)),
        )
        .expect(2)
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.timeout = Duration::from_millis(200);
    config.max_attempts = 2;
    let err = model(config).chat(&step(1), &ask("hi")).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Unavailable { requests: 2, last } if last.contains("timed out")),
        "{err}"
    );
}

#[tokio::test]
async fn a_repeated_step_is_answered_from_the_cache() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", "once")))
        .expect(2)
        .mount(&server)
        .await;
    let model = model(config(&server));
    let first = model.chat(&step(1), &ask("hi")).await.unwrap();
    let again = model.chat(&step(1), &ask("hi")).await.unwrap();
    assert!(!first.cached && again.cached);
    assert_eq!(
        (again.content.as_str(), again.requests, again.usage),
        ("once", 0, first.usage)
    );
    // Another attempt of the step is another question.
    assert!(!model.chat(&step(2), &ask("hi")).await.unwrap().cached);
    assert_eq!(model.cache_stats(), (1, 2));
    // The same counts on /metrics (each test is a process of its own).
    let text = orion_services::metrics::render();
    let lookups = |outcome| {
        crate::support::metric(
            &text,
            "orion_cache_lookups_total",
            &[("cache", "model_responses"), ("outcome", outcome)],
        )
    };
    assert_eq!((lookups("hit"), lookups("miss")), (Some(1.0), Some(2.0)));
}

/// A full in-memory cache makes room by dropping what it holds, and counts what it dropped.
#[tokio::test]
async fn a_full_cache_counts_what_it_drops() {
    use orion_services::llm::ResponseCache;
    let cache = MemoryCache::new(3);
    for key in ["a", "b", "c"] {
        cache.put(key, "answer").await;
    }
    cache.put("a", "again").await; // a key it holds: no room needed
    assert_eq!(cache.get("a").await.as_deref(), Some("again"));
    cache.put("d", "answer").await;
    assert_eq!(
        (cache.get("b").await, cache.get("d").await.as_deref()),
        (None, Some("answer"))
    );
    let evicted = crate::support::metric(
        &orion_services::metrics::render(),
        "orion_cache_evictions_total",
        &[("cache", "model_responses")],
    );
    assert_eq!(evicted, Some(3.0));
}

#[tokio::test]
async fn the_redis_cache_is_shared_between_processes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", "shared")))
        .expect(1)
        .mount(&server)
        .await;
    let prefix = unique("t");
    let cache = || -> Arc<dyn ResponseCache> {
        Arc::new(RedisCache::connect(&redis_url(), &prefix, 60).unwrap())
    };
    let node_a = OpenAiChat::new(config(&server), cache()).unwrap();
    let node_b = OpenAiChat::new(config(&server), cache()).unwrap();
    assert!(!node_a.chat(&step(1), &ask("hi")).await.unwrap().cached);
    let answer = node_b.chat(&step(1), &ask("hi")).await.unwrap();
    assert!(
        answer.cached,
        "the second node read the first node's answer from Redis"
    );
    assert_eq!(answer.content, "shared");
}

#[tokio::test]
async fn the_rate_limiter_spaces_requests() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", "ok")))
        .mount(&server)
        .await;
    let mut config = config(&server);
    // 60 a minute: bursts of 3 (a twentieth), then one a second.
    config.requests_per_minute = 60;
    let model = model(config);
    let start = Instant::now();
    for attempt in 0..5 {
        model.chat(&step(attempt), &ask("hi")).await.unwrap();
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "5 requests at 60/min with bursts of 3 took only {took:?}"
    );
}

/// A node of a cluster whose limits are kept in Redis under `prefix`: its own client and its
/// own connections, sharing nothing with another but the Redis account.
fn shared_node(config: OpenAiConfig, prefix: &str) -> OpenAiChat {
    let limiter = RedisRateLimiter::connect(&redis_url(), prefix).unwrap();
    model(config).with_limiter(Arc::new(limiter))
}

/// Two nodes, one account: the second node's calls wait for the turns the first one took.
#[tokio::test]
async fn nodes_take_turns_in_one_account() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", "ok")))
        .mount(&server)
        .await;
    let prefix = unique("t");
    let mut limited = config(&server);
    // 40 a minute: bursts of 2, then one each 1.5 s.
    limited.requests_per_minute = 40;
    limited.max_queue_wait = Duration::from_secs(2);
    let node_a = shared_node(limited.clone(), &prefix);
    let node_b = shared_node(limited.clone(), &prefix);
    // The burst, spent by the first node.
    node_a.chat(&step(1), &ask("one")).await.unwrap();
    node_a.chat(&step(2), &ask("two")).await.unwrap();
    // The other node's turn is 1.5 s away: it waits for it.
    let start = Instant::now();
    node_b.chat(&step(3), &ask("three")).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(1200),
        "the second node did not wait for the turns the first took: {:?}",
        start.elapsed()
    );
}

/// A call whose turn is further away than the longest wait fails with `rate_limited` at once,
/// and is not sent: here one node's large call holds half a minute's worth of tokens while it is
/// answered, and the other node's next turn is half a minute away.
#[tokio::test]
async fn a_turn_past_the_longest_wait_fails_rate_limited_unsent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("large"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("gpt-test", "ok"))
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("gpt-test", "ok")))
        .mount(&server)
        .await;
    let prefix = unique("t");
    let mut limited = config(&server);
    // 6,000 tokens a minute: 100 a second.
    limited.tokens_per_minute = 6_000;
    limited.max_queue_wait = Duration::from_secs(2);
    let node_a = shared_node(limited.clone(), &prefix);
    let node_b = shared_node(limited, &prefix);
    let large = ChatRequest {
        max_tokens: Some(3_000),
        ..ask("large")
    };
    // An idle account lets it go at once; it holds its ~30 s of tokens until it is answered.
    let held = tokio::spawn(async move { node_a.chat(&step(1), &large).await });
    eventually_received(&server, 1).await;
    let err = node_b
        .chat(&step(1), &ask("small"))
        .await
        .expect_err("a turn past the longest wait");
    assert!(matches!(err, LlmError::RateLimited { .. }), "{err}");
    assert_eq!(err.code(), "rate_limited");
    held.await.unwrap().unwrap();
    let sent = server.received_requests().await.unwrap();
    assert_eq!(sent.len(), 1, "the refused call was not sent");
}

/// Waits until `server` has received at least `n` requests.
async fn eventually_received(server: &MockServer, n: usize) {
    crate::support::eventually("requests received", Duration::from_secs(15), || async {
        let count = server.received_requests().await?.len();
        (count >= n).then_some(())
    })
    .await
}

/// A provider's `Retry-After`, answered to one node, holds the calls of every node of the
/// account until it has passed: the other node's call is not sent into the known 429.
#[tokio::test]
async fn a_retry_after_seen_by_one_node_pauses_the_other() {
    let server = refusing_once("2").await;
    let prefix = unique("t");
    let mut once = config(&server);
    once.max_attempts = 1;
    let node_a = shared_node(once.clone(), &prefix);
    let node_b = shared_node(once, &prefix);
    let refused = Instant::now();
    let err = node_a.chat(&step(1), &ask("first")).await.unwrap_err();
    assert_eq!(err.code(), "model_unavailable", "{err}");
    let answer = node_b.chat(&step(1), &ask("second")).await.unwrap();
    assert_eq!(answer.content, "ok");
    assert!(
        refused.elapsed() >= Duration::from_millis(1800),
        "the other node sent within the pause: {:?}",
        refused.elapsed()
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

/// The local model the suite runs: `scripts/test.sh` fetches it (`orion model fetch`) into
/// the machine's model cache and names it in `ORION_TEST_MODEL`.
pub fn local_model_file() -> std::path::PathBuf {
    let path = std::env::var("ORION_TEST_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new("/var/tmp/orion-models")
                .join(orion_services::llm::LOCAL_MODEL_FILE)
        });
    assert!(
        path.exists(),
        "{} is missing: run `cargo run -- model fetch --dir {}` (scripts/test.sh does)",
        path.display(),
        path.parent().unwrap().display()
    );
    path
}

#[test]
fn the_local_model_reads_its_tokenizer_from_the_file_and_answers_the_same_way_twice() {
    use orion_services::llm::local::LoadedModel;
    let mut model = LoadedModel::load(&local_model_file()).expect("the GGUF loads");
    let text = "Hello, world! fn main() { println!(\"hi\"); }\n\t12345 — naïve café 🙂";
    let ids = model.tokenizer.encode(text);
    assert_eq!(model.tokenizer.decode(&ids), text, "encoding loses nothing");
    assert!(ids.len() < text.len(), "merges apply: {} tokens", ids.len());
    let marked = model.tokenizer.encode("<|im_start|>user\nhi<|im_end|>");
    assert_eq!(
        marked[0],
        model.tokenizer.id("<|im_start|>").unwrap(),
        "control tokens match whole"
    );
    // A word 20,000 letters long and 2,000 control tokens: merged in pieces and found in
    // one pass (the merge was quadratic in a word's length, and the search in the tokens).
    let end = model.tokenizer.id("<|im_end|>").unwrap();
    let long = format!("{}{}", "ab".repeat(10_000), "<|im_end|>x".repeat(2_000));
    let ids = model.tokenizer.encode(&long);
    assert_eq!(ids.iter().filter(|i| **i == end).count(), 2_000);
    assert_eq!(
        model.tokenizer.decode(&ids),
        format!("{}{}", "ab".repeat(10_000), "x".repeat(2_000))
    );
    let request = ChatRequest {
        messages: vec![orion_services::llm::ChatMessage::user(
            "What is the capital of France? Answer with the city's name.",
        )],
        max_tokens: Some(24),
        temperature: None,
        frame: None,
    };
    let mut streamed = String::new();
    let first = model
        .generate(&request, |piece| streamed.push_str(piece))
        .unwrap();
    assert_eq!(streamed, first.text, "the pieces streamed make the answer");
    let second = model.generate(&request, |_| {}).unwrap();
    assert_eq!(first.text, second.text, "greedy decoding is deterministic");
    assert!(first.completion_tokens > 0 && first.completion_tokens <= 24);
}

/// The quantized kernels against the float reference (every weight dequantized to f32,
/// activations unquantized, portable code): the reference answers a question right, so the
/// network is wired right; the kernels' logits point the same way and their answer is the
/// reference's; and more threads split the rows, not the sums, so they answer the same.
#[test]
fn the_quantized_model_follows_its_float_reference_on_any_thread_count() {
    use orion_services::llm::local::{Layout, LoadedModel};
    let path = local_model_file();
    let request = ChatRequest {
        messages: vec![ChatMessage::user(
            "What is the capital of France? Answer with the city's name.",
        )],
        max_tokens: Some(8),
        temperature: None,
        frame: None,
    };
    let mut reference = LoadedModel::load_as(&path, Layout::Reference, 2).expect("the GGUF loads");
    let truth = reference.generate(&request, |_| {}).unwrap();
    assert!(
        truth.text.contains("Paris"),
        "the reference says {:?}",
        truth.text
    );
    let exact = reference.first_logits(&request).unwrap();
    drop(reference);
    let mut one = LoadedModel::load_as(&path, Layout::Shipped, 1).unwrap();
    let quantized = one.first_logits(&request).unwrap();
    let cosine = {
        let dot: f64 = exact
            .iter()
            .zip(&quantized)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / norm(&exact) / norm(&quantized)
    };
    assert!(cosine > 0.999, "the logits' cosine is {cosine}");
    let answer = one.generate(&request, |_| {}).unwrap();
    assert_eq!(
        answer.text, truth.text,
        "the quantized model answers as the reference"
    );
    let mut two = LoadedModel::load_as(&path, Layout::Shipped, 2).unwrap();
    assert_eq!(
        two.first_logits(&request).unwrap(),
        quantized,
        "bit for bit on two threads"
    );
    assert_eq!(two.generate(&request, |_| {}).unwrap().text, answer.text);
}

/// Orion writes the edit frame around what the local model says, so the answer is edit
/// blocks of the files asked for whatever tokens this CPU's kernels make the model pick;
/// and the same framed request twice gives the same answer on one machine.
#[test]
fn the_local_model_answers_inside_the_edit_frame_and_the_same_way_twice() {
    use orion_services::llm::frame::parse_edits;
    use orion_services::llm::local::LoadedModel;
    let mut model = LoadedModel::load(&local_model_file()).expect("the GGUF loads");
    let files = vec!["hello/__init__.py".to_owned(), "README.md".to_owned()];
    let request = ChatRequest {
        messages: vec![
            ChatMessage::system(orion_actors::EDIT_FORMAT),
            ChatMessage::user(
                "Task: add a function farewell(name) to hello/__init__.py and mention it in README.md.\n\n\
                 === FILE: hello/__init__.py\ndef greet(name):\n    return f\"Hello, {name}!\"\n=== END\n",
            ),
        ],
        max_tokens: Some(96),
        temperature: Some(0.0),
        frame: Some(orion_services::llm::EditFrame {
            files: files.clone(),
        }),
    };
    let mut streamed = String::new();
    let first = model
        .generate(&request, |piece| streamed.push_str(piece))
        .unwrap();
    let edits = parse_edits(&first.text)
        .unwrap_or_else(|why| panic!("{:?} does not parse: {why}", first.text));
    assert!(
        edits.iter().all(|e| files.contains(&e.path)),
        "only the files asked for: {edits:?}"
    );
    assert_eq!(edits[0].path, "hello/__init__.py", "{:?}", first.text);
    assert!(
        streamed.starts_with("=== FILE: hello/__init__.py\n"),
        "{streamed:?}"
    );
    assert!(first.completion_tokens > 0 && first.completion_tokens <= 96);
    let second = model.generate(&request, |_| {}).unwrap();
    assert_eq!(
        first.text, second.text,
        "greedy decoding repeats on one machine"
    );
}

/// `llm.local_temperature` and `llm.local_max_tokens` apply over what the agents ask for:
/// the answer stops at the configured length, and sampling (seeded) still repeats itself.
#[actix_rt::test]
async fn the_local_model_answers_with_the_configured_temperature_and_length() {
    let mut settings = crate::support::test_settings();
    settings.llm.provider = orion::settings::LlmProvider::Local;
    settings.llm.model_path = Some(local_model_file());
    settings.llm.local_temperature = Some(0.9);
    settings.llm.local_max_tokens = Some(6);
    let model = orion::app::chat_model(&settings, orion_bus::AgentKind::Developer)
        .unwrap()
        .expect("the local model is chosen");
    let request = ChatRequest {
        messages: vec![ChatMessage::user(
            "Write a long poem about the sea, the wind and the stars.",
        )],
        max_tokens: Some(512),
        temperature: Some(0.0),
        frame: None,
    };
    let first = model.chat(&step(1), &request).await.unwrap();
    let second = model.chat(&step(1), &request).await.unwrap();
    assert_eq!(
        first.usage.completion_tokens, 6,
        "stopped at the configured length: {:?}",
        first.content
    );
    assert_eq!(first.content, second.content, "seeded sampling repeats");
    assert_eq!(first.cost_usd, 0.0);
}
