//! OpenTelemetry export of the server's tracing spans over OTLP/gRPC, built
//! only with the cargo feature `otlp` (`cargo build --release --features
//! otlp`). The spans are the ones the logs show (`node`, `rpc`,
//! `partition`, `group`); they go to a collector in batches, beside the
//! logs, never instead of them.

use anyhow::{Context, Result};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The exporter; [`Otlp::shutdown`] sends what is still buffered.
pub struct Otlp {
    provider: SdkTracerProvider,
}

impl Otlp {
    /// An exporter to the collector at `endpoint` (e.g.
    /// `http://collector:4317`), naming the service `strata` and the node
    /// `node_id`. Must be called inside the tokio runtime (the gRPC client
    /// runs on it).
    pub fn start(endpoint: &str, node_id: Option<u64>) -> Result<Otlp> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .with_context(|| format!("set up the OTLP exporter to {endpoint}"))?;
        let mut resource = Resource::builder().with_service_name("strata");
        if let Some(id) = node_id {
            resource = resource.with_attribute(KeyValue::new("strata.node", id as i64));
        }
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
        Ok(Otlp { provider })
    }

    /// A tracing layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("strata"))
    }

    /// Exports what is buffered and stops.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("OTLP exporter: {err}");
        }
    }
}
