//! Logging and tracing setup. Logs: human-readable lines, or JSON lines with `--log-json`,
//! filtered by `RUST_LOG` (default `info` for Orion's crates, `warn` for the rest), on
//! stderr. Traces: every `tracing` span becomes an OpenTelemetry span when an exporter is
//! configured — OTLP over gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and/or JSON lines
//! in the file `ORION_TRACE_FILE` names (one line per finished span; used by the tests and
//! handy without a collector). The W3C trace context then travels in the bus's message
//! headers, so one trace follows a task across processes.

use std::io::Write;
use std::sync::Mutex;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const DEFAULT_FILTER: &str =
    "warn,orion=info,orion_bus=info,orion_services=info,orion_actors=info,orion_gateway=info";

/// Keeps the tracer provider for a clean shutdown (which flushes batched spans).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporters, on a blocking thread (the OTLP exporter's shutdown
    /// blocks, and must not do so on the actix thread).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs the global subscriber (inside the runtime: the OTLP exporter needs it); logs go
/// to stderr so command output stays clean.
pub fn init(json: bool, quiet: bool, service: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if quiet { "warn" } else { DEFAULT_FILTER }));
    let provider = tracer_provider(service);
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("orion"))
            .with_filter(EnvFilter::new(
                "warn,orion=info,orion_bus=info,orion_services=info,orion_actors=info,orion_gateway=info",
            ))
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(otel);
    // A subscriber already installed (by a test harness) is fine.
    let _ = if json {
        registry.with(fmt.json().with_filter(filter)).try_init()
    } else {
        registry.with(fmt.with_filter(filter)).try_init()
    };
    if provider.is_some() {
        orion_bus::set_trace_source(orion_services::telemetry::current_traceparent);
    }
    Telemetry { provider }
}

use tracing_subscriber::Layer as _;

fn tracer_provider(service: &str) -> Option<SdkTracerProvider> {
    let otlp = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
    let file = std::env::var("ORION_TRACE_FILE").ok();
    if otlp.is_none() && file.is_none() {
        return None;
    }
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if otlp.is_some() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("warning: no OTLP trace export: {e}"),
        }
    }
    if let Some(path) = file {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(file) => {
                builder = builder.with_simple_exporter(FileExporter {
                    file: Mutex::new(file),
                    service: service.to_owned(),
                })
            }
            Err(e) => eprintln!("warning: cannot write traces to {path}: {e}"),
        }
    }
    Some(builder.build())
}

/// Finished spans as JSON lines: service, trace and span ids, parent, name, attributes.
#[derive(Debug)]
struct FileExporter {
    file: Mutex<std::fs::File>,
    service: String,
}

impl SpanExporter for FileExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut text = String::new();
        for span in batch {
            let attributes: serde_json::Map<String, serde_json::Value> = span
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string().into()))
                .collect();
            let line = serde_json::json!({
                "service": self.service,
                "trace_id": span.span_context.trace_id().to_string(),
                "span_id": span.span_context.span_id().to_string(),
                "parent_span_id": span.parent_span_id.to_string(),
                "name": span.name,
                "attributes": attributes,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        let mut file = self
            .file
            .lock()
            .map_err(|_| OTelSdkError::InternalFailure("the trace file lock is poisoned".into()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }
}
