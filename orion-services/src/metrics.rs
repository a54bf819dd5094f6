//! Prometheus metrics of one process, all named `orion_…`: what the tasks, agents, bus, model
//! and HTTP layer did, and the process's own CPU, memory and file descriptors.
//!
//! One registry per process (the `prometheus` default registry, which also carries the
//! process collector on Linux); the gateway serves it on `/metrics`, a node on
//! `node.metrics_listen`.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, TextEncoder, exponential_buckets,
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
};

/// Every metric Orion records.
pub struct Metrics {
    /// Tasks entering a status, by kind.
    pub task_transitions: IntCounterVec,
    /// From submission to a terminal status, by kind and status.
    pub task_duration: HistogramVec,
    /// Failed tasks by their error code.
    pub task_failures: IntCounterVec,
    /// One agent step (an assignment), by agent, step and outcome.
    pub step_duration: HistogramVec,
    /// Assignments being worked on now, by agent.
    pub in_flight: IntGaugeVec,
    /// Agent actors restarted by their supervisor.
    pub agent_restarts: IntCounterVec,
    /// Deliveries settled by a node's bridge, by queue and outcome (ack, retry, drop).
    pub bus_deliveries: IntCounterVec,
    /// Deliveries that were not the message's first, by queue.
    pub bus_redeliveries: IntCounterVec,
    /// Messages waiting (`pending`) and delivered but unacknowledged (`in_flight`), by the
    /// queues a node serves, as of its last heartbeat.
    pub queue_depth: IntGaugeVec,
    /// Model calls by model and outcome (ok, cached, error).
    pub model_requests: IntCounterVec,
    /// Tokens by model and kind (prompt, completion).
    pub model_tokens: IntCounterVec,
    /// Spending by model, in micro-dollars (integer, so sums are exact).
    pub model_cost_microdollars: IntCounterVec,
    /// HTTP requests by route pattern, method and status.
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// Open WebSocket subscriptions.
    pub ws_subscribers: IntGauge,
    /// Look-ups of a cache, by cache and outcome (hit, miss).
    pub cache_lookups: IntCounterVec,
    /// Entries a cache dropped to make room, by cache.
    pub cache_evictions: IntCounterVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let seconds = exponential_buckets(0.005, 4.0, 10)?; // 5 ms … ~22 min
    Ok(Metrics {
        task_transitions: register_int_counter_vec!(
            "orion_task_transitions_total",
            "Tasks entering a status, by kind",
            &["kind", "status"]
        )?,
        task_duration: register_histogram_vec!(
            "orion_task_duration_seconds",
            "Time from submission to a terminal status",
            &["kind", "status"],
            seconds.clone()
        )?,
        task_failures: register_int_counter_vec!(
            "orion_task_failures_total",
            "Failed tasks by error code",
            &["code"]
        )?,
        step_duration: register_histogram_vec!(
            "orion_step_duration_seconds",
            "One agent step (an assignment), by agent, step and outcome",
            &["agent", "step", "outcome"],
            seconds.clone()
        )?,
        in_flight: register_int_gauge_vec!(
            "orion_in_flight_assignments",
            "Assignments being worked on, by agent",
            &["agent"]
        )?,
        agent_restarts: register_int_counter_vec!(
            "orion_agent_restarts_total",
            "Agent actors restarted by their supervisor",
            &["agent"]
        )?,
        bus_deliveries: register_int_counter_vec!(
            "orion_bus_deliveries_total",
            "Deliveries settled, by queue and outcome",
            &["queue", "outcome"]
        )?,
        bus_redeliveries: register_int_counter_vec!(
            "orion_bus_redeliveries_total",
            "Deliveries that were not a message's first, by queue",
            &["queue"]
        )?,
        queue_depth: register_int_gauge_vec!(
            "orion_queue_depth",
            "Messages waiting or unacknowledged in a queue, by queue and state",
            &["queue", "state"]
        )?,
        model_requests: register_int_counter_vec!(
            "orion_model_requests_total",
            "Model calls by model and outcome (ok, cached, error)",
            &["model", "outcome"]
        )?,
        model_tokens: register_int_counter_vec!(
            "orion_model_tokens_total",
            "Model tokens by model and kind (prompt, completion)",
            &["model", "kind"]
        )?,
        model_cost_microdollars: register_int_counter_vec!(
            "orion_model_cost_microdollars_total",
            "Model spending by model, in millionths of a US dollar",
            &["model"]
        )?,
        http_requests: register_int_counter_vec!(
            "orion_http_requests_total",
            "HTTP requests by route, method and status",
            &["route", "method", "status"]
        )?,
        http_duration: register_histogram_vec!(
            "orion_http_request_duration_seconds",
            "HTTP request duration by route",
            &["route"],
            seconds
        )?,
        ws_subscribers: register_int_gauge!(
            "orion_ws_subscribers",
            "Open WebSocket subscriptions"
        )?,
        cache_lookups: register_int_counter_vec!(
            "orion_cache_lookups_total",
            "Cache look-ups by cache and outcome (hit, miss)",
            &["cache", "outcome"]
        )?,
        cache_evictions: register_int_counter_vec!(
            "orion_cache_evictions_total",
            "Entries a cache dropped to make room, by cache",
            &["cache"]
        )?,
    })
}

static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| build().expect("Orion's metrics are registered once, with valid names"));

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Everything in the registry, in the Prometheus text format.
pub fn render() -> String {
    LazyLock::force(&METRICS);
    let mut text = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut text) {
        tracing::warn!(error = %e, "could not encode the metrics");
    }
    String::from_utf8(text).unwrap_or_default()
}

/// Counts an open WebSocket subscription until the returned guard is dropped, however the
/// session ends.
pub fn ws_subscriber() -> impl Drop {
    struct Subscribed;
    impl Drop for Subscribed {
        fn drop(&mut self) {
            metrics().ws_subscribers.dec();
        }
    }
    metrics().ws_subscribers.inc();
    Subscribed
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
