//! How the process reports: its logs (text on a terminal, JSON lines otherwise, or as chosen)
//! and, when an OTLP endpoint is configured, its traces. See `docs/observability.md`.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Args, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text with colours on a terminal, JSON lines otherwise (a file, a pipe, a log collector).
    Auto,
    /// One JSON object per line, with the fields of the enclosing spans (job id, task id,
    /// attempt, worker id on a task's lines).
    Json,
    /// Human-readable text, coloured only on a terminal.
    Text,
}

/// Logs and traces, shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format: `auto` (text on a terminal, JSON otherwise), `json` or `text`. The level is
    /// set with `RUST_LOG` (default `info,sqlx=warn`).
    #[arg(
        long,
        env = "SHOAL_LOG_FORMAT",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub log_format: LogFormat,
    /// Export traces over OTLP (HTTP/protobuf) to this collector, e.g. `http://localhost:4318`
    /// (`/v1/traces` is added). Tracing is off without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// Which spans are exported (an `EnvFilter` directive, like `RUST_LOG` but apart from it,
    /// so that quieter logs keep the traces whole).
    #[arg(
        long,
        env = "SHOAL_TRACE_FILTER",
        default_value = "info,sqlx=warn",
        global = true
    )]
    pub trace_filter: String,
    /// The `service.name` of exported traces.
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        default_value = "shoal",
        global = true
    )]
    pub otel_service_name: String,
}

/// Flushes exported traces when dropped (at the end of `main`).
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("could not flush traces: {error}");
        }
    }
}

/// The collector's traces URL for an endpoint given as a base URL.
fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    }
}

/// Installs the process's subscriber: the log layer in the chosen format, and an OpenTelemetry
/// layer exporting to `otlp_endpoint` when one is set.
pub fn init(args: &TelemetryArgs) -> anyhow::Result<Telemetry> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let terminal = std::io::stderr().is_terminal();
    let json = match args.log_format {
        LogFormat::Auto => !terminal,
        LogFormat::Json => true,
        LogFormat::Text => false,
    };
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(terminal)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let (traces, provider) = match &args.otlp_endpoint {
        Some(endpoint) if !endpoint.trim().is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(traces_url(endpoint))
                .build()
                .with_context(|| format!("the OTLP exporter for {endpoint}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(args.otel_service_name.clone())
                        .build(),
                )
                .build();
            let spans = EnvFilter::try_new(&args.trace_filter)
                .with_context(|| format!("--trace-filter {:?}", args.trace_filter))?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("shoal"))
                .with_filter(spans);
            shoal_infra::telemetry::trace::set_enabled(true);
            (Some(layer), Some(provider))
        }
        _ => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces"),
            "http://collector:4318/v1/traces"
        );
    }
}
