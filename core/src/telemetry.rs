//! Logs, traces and metrics.
//!
//! Logs go to stderr (text or JSON). When an OTLP endpoint is configured, spans are also exported
//! over OTLP/HTTP (protobuf) with a batch processor. Metrics are kept by a Prometheus recorder and
//! served as text at `/metrics` by whoever owns the HTTP server.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Telemetry settings (`[telemetry]` in the config file, `STARLING_TELEMETRY__*` in env).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log filter in `RUST_LOG` syntax; `RUST_LOG` itself wins when set.
    pub log_filter: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// OTLP/HTTP endpoint for traces, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended
    /// unless the URL already names a path). Unset: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_filter: "info,sqlx=warn,sea_orm=warn".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            service_name: "starling".into(),
        }
    }
}

impl TelemetryConfig {
    /// Checks the settings; errors name the field.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if let Some(ep) = &self.otlp_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(crate::config::ConfigError::field(
                "telemetry.otlp_endpoint",
                format!("must be an http:// or https:// URL, got {ep:?}"),
            ));
        }
        EnvFilter::try_new(&self.log_filter).map_err(|e| {
            crate::config::ConfigError::field("telemetry.log_filter", e.to_string())
        })?;
        Ok(())
    }

    fn traces_url(&self) -> Option<String> {
        let ep = self.otlp_endpoint.as_deref()?.trim_end_matches('/');
        let after_scheme = ep.split_once("://").map(|x| x.1).unwrap_or(ep);
        Some(if after_scheme.contains('/') {
            ep.to_owned()
        } else {
            format!("{ep}/v1/traces")
        })
    }
}

/// Keeps telemetry alive; flushes exported spans when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Renders the Prometheus text for `/metrics`.
    pub metrics: PrometheusHandle,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber and metrics recorder. Call once, at start.
pub fn init(cfg: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&cfg.log_filter))?;
    let fmt = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };

    let provider = match cfg.traces_url() {
        Some(url) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("starling"))
            .boxed()
    });

    // W3C trace context travels in bus messages between nodes (see [`inject`], [`extract`]).
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;

    let metrics = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])?
        .install_recorder()?;
    Ok(Telemetry { provider, metrics })
}

/// The current span's trace context as a W3C `traceparent`, if it is being traced.
pub fn inject() -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace in `traceparent` (from another node).
pub fn extract_into(span: &tracing::Span, traceparent: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_url_gets_the_traces_path_once() {
        let mut c = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            ..Default::default()
        };
        assert_eq!(c.traces_url().unwrap(), "http://127.0.0.1:4318/v1/traces");
        c.otlp_endpoint = Some("http://collector/custom/traces".into());
        assert_eq!(c.traces_url().unwrap(), "http://collector/custom/traces");
        c.otlp_endpoint = Some("udp://x".into());
        assert!(c.validate().is_err());
    }
}
