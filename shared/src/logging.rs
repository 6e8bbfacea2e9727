//! Structured JSON logs through `tracing`.
//!
//! Every line is one JSON object; fields of the enclosing spans (the per-event span
//! carries `alarm` and `incident_key`) are repeated on each line so a Logs Insights
//! query on `incident_key` finds the whole story of an incident.
//! The level follows `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's advanced logging
//! controls), then `RUST_LOG`, default `INFO`. TRACE is refused outside tests:
//! the Lambda runtime logs raw payloads at TRACE.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Builds the JSON subscriber writing to `writer` (stdout in Lambda; a buffer in
/// tests that assert what was logged).
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .flatten_event(true)
        .with_target(false)
        .with_ansi(false)
        .with_writer(writer)
        .finish()
}

/// The filter from `AWS_LAMBDA_LOG_LEVEL` / `RUST_LOG`, never finer than DEBUG.
pub fn filter_from_env() -> EnvFilter {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string())
        .to_ascii_lowercase();
    let level = if level.contains("trace") {
        "debug".to_string()
    } else {
        level
    };
    EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the JSON subscriber on stdout for the process. Call once from `main`.
pub fn init() {
    let subscriber = json_subscriber(filter_from_env(), std::io::stdout);
    // A second call (tests) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_span_fields_on_every_line() {
        let buf = Buf::default();
        let writer = buf.clone();
        let sub = json_subscriber(EnvFilter::new("info"), move || writer.clone());
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(
                "event",
                alarm = "vpn-down",
                incident_key = "VPN connection vpn-1 is DOWN"
            );
            let _g = span.enter();
            tracing::info!(step = "open", "incident opened");
            tracing::warn!("publish retried");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert_eq!(
                line["spans"][0]["incident_key"],
                "VPN connection vpn-1 is DOWN"
            );
            assert_eq!(line["spans"][0]["alarm"], "vpn-down");
        }
        assert_eq!(lines[0]["message"], "incident opened");
        assert_eq!(lines[0]["step"], "open");
        assert_eq!(lines[1]["level"], "WARN");
    }
}
