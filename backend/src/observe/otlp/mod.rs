//! `[observe.otlp]`: OpenTelemetry spans of a message's path across the nodes of a cluster,
//! exported over OTLP/gRPC. Off by default (`endpoint` empty): then no tracer exists, and the
//! message path checks one `OnceLock` (an atomic load) before anything else (`span.rs`).
//!
//! When on, spans go to the SDK's batch processor: a bounded queue (`queue_spans_max`, spans
//! past it are dropped by the SDK, never waited for) drained by its own thread in batches of
//! `batch_spans_max` every `export_interval_ms`, each export bounded by `export_timeout_ms`.
//! The gRPC client (tonic) runs on the backend's runtime.

mod span;

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanLimits};
use serde::{Deserialize, Serialize};

pub(crate) use span::{MsgSpan, Traceparent};

/// The process's tracer, set once by [`start`] when `endpoint` is set.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer, when tracing is on. One atomic load: the message path's whole cost when off.
#[inline]
pub(crate) fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// `[observe.otlp]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The OTLP/gRPC collector, `http://host:4317`; empty: tracing is off.
    pub endpoint: String,
    /// `service.name` of every span (the node's `cluster.node_id` is `service.instance.id`).
    pub service_name: String,
    /// Share of messages traced, 0 to 1, decided once where a message's trace starts (the node
    /// its sender is on); the other nodes follow that decision (parent-based).
    pub sample_ratio: f64,
    /// One export's deadline, in milliseconds; a collector that does not answer within it
    /// loses that batch.
    pub export_timeout_ms: u64,
    /// How often queued spans are exported, in milliseconds (sooner when a batch is full).
    pub export_interval_ms: u64,
    /// Spans waiting for export, at most; past it new spans are dropped.
    pub queue_spans_max: usize,
    /// Spans in one export request, at most.
    pub batch_spans_max: usize,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            service_name: "ringchat".to_owned(),
            sample_ratio: 0.01,
            export_timeout_ms: 10_000,
            export_interval_ms: 1_000,
            queue_spans_max: 8_192,
            batch_spans_max: 512,
        }
    }
}

impl OtlpConfig {
    pub fn enabled(&self) -> bool {
        !self.endpoint.is_empty()
    }

    /// Every problem of the section, as `key: problem` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.endpoint.is_empty() {
            let ok = (self.endpoint.starts_with("http://")
                || self.endpoint.starts_with("https://"))
                && self.endpoint.parse::<tonic::transport::Uri>().is_ok();
            if !ok {
                out.push("observe.otlp.endpoint: expected an http:// or https:// URL of an OTLP/gRPC collector, such as http://127.0.0.1:4317".into());
            }
            if self.endpoint.starts_with("https://") {
                out.push("observe.otlp.endpoint: https:// is not supported yet; use http:// to a collector on the node's private network".into());
            }
        }
        if self.service_name.is_empty() || self.service_name.len() > 128 {
            out.push("observe.otlp.service_name: 1 to 128 bytes".into());
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            out.push("observe.otlp.sample_ratio: must be between 0 and 1".into());
        }
        let mut range = |v: u64, lo: u64, hi: u64, key: &str| {
            if !(lo..=hi).contains(&v) {
                out.push(format!("observe.otlp.{key}: must be between {lo} and {hi}"));
            }
        };
        range(self.export_timeout_ms, 1, 600_000, "export_timeout_ms");
        range(self.export_interval_ms, 10, 600_000, "export_interval_ms");
        range(self.queue_spans_max as u64, 1, 1 << 20, "queue_spans_max");
        range(self.batch_spans_max as u64, 1, 1 << 16, "batch_spans_max");
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("observe.otlp: the exporter could not be built: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("observe.otlp: tracing was started already")]
    Started,
}

/// Exports spans while held; dropping it exports what is queued (bounded by the export
/// timeout) and stops the exporter. Drop it before the runtime it was started on.
pub struct Otlp {
    provider: SdkTracerProvider,
    timeout: Duration,
}

impl std::fmt::Debug for Otlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otlp").finish_non_exhaustive()
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        if let Err(err) = self.provider.shutdown_with_timeout(self.timeout) {
            tracing::warn!(%err, "observe.otlp: spans still queued at exit were not all exported");
        }
    }
}

/// Starts tracing when `config.endpoint` is set (`None` otherwise: off); `instance`: this
/// node's name. The gRPC client is made on `runtime`, which must outlive the returned guard.
pub fn start(
    config: &OtlpConfig,
    instance: &str,
    runtime: &tokio::runtime::Handle,
) -> Result<Option<Otlp>, OtlpError> {
    if !config.enabled() {
        return Ok(None);
    }
    if TRACER.get().is_some() {
        return Err(OtlpError::Started);
    }
    let timeout = Duration::from_millis(config.export_timeout_ms);
    let exporter = {
        // tonic's lazy channel spawns its worker on the runtime entered here.
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(timeout)
            .build()?
    };
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(config.queue_spans_max)
        .with_max_export_batch_size(config.batch_spans_max.min(config.queue_spans_max))
        .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let mut resource = Resource::builder_empty().with_service_name(config.service_name.clone());
    if !instance.is_empty() {
        resource =
            resource.with_attribute(KeyValue::new("service.instance.id", instance.to_owned()));
    }
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_span_limits(SpanLimits::default())
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("ringchat");
    TRACER.set(tracer).map_err(|_| OtlpError::Started)?;
    // The endpoint may carry credentials (`user:password@`); viewers read the logs.
    let endpoint = crate::live::credentials_hidden(&config.endpoint);
    tracing::info!(%endpoint, sample_ratio = config.sample_ratio, "observe.otlp: exporting spans of messages' paths across nodes");
    Ok(Some(Otlp { provider, timeout }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_bad_keys_are_named() {
        let c = OtlpConfig::default();
        assert!(!c.enabled());
        assert!(c.problems().is_empty());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(start(&c, "n1", rt.handle()).unwrap().is_none());
        assert!(tracer().is_none(), "no tracer when off");
        let bad = OtlpConfig {
            endpoint: "collector:4317".into(),
            service_name: String::new(),
            sample_ratio: 1.5,
            export_timeout_ms: 0,
            queue_spans_max: 0,
            ..OtlpConfig::default()
        };
        let all = bad.problems().join("\n");
        for key in [
            "observe.otlp.endpoint",
            "observe.otlp.service_name",
            "observe.otlp.sample_ratio",
            "observe.otlp.export_timeout_ms",
            "observe.otlp.queue_spans_max",
        ] {
            assert!(all.contains(key), "{key} missing from:\n{all}");
        }
        let on = OtlpConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            ..OtlpConfig::default()
        };
        assert!(on.enabled() && on.problems().is_empty());
    }
}
