//! X-Ray subsegments for the calls that leave the function: each span on the target
//! [`REMOTE`] (an IdP, Slack or vault command, a DynamoDB transaction) becomes a subsegment of
//! the invocation's segment, sent to the X-Ray daemon Lambda runs beside the function
//! (`AWS_XRAY_DAEMON_ADDRESS`, UDP). The trace and parent come from the invocation's
//! `_X_AMZN_TRACE_ID`, which the Lambda runtime sets for each event; an unsampled invocation
//! sends nothing. Outside Lambda (no daemon address) the layer does nothing.

use serde_json::json;
use std::net::UdpSocket;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The target of spans that are remote calls.
pub const REMOTE: &str = "steward::remote";

/// Trace and parent ids of the current invocation, from an `_X_AMZN_TRACE_ID` value
/// (`Root=1-…;Parent=…;Sampled=1`); `None` when it is not sampled or incomplete.
pub fn trace_header(value: &str) -> Option<(String, String)> {
    let mut root = None;
    let mut parent = None;
    let mut sampled = false;
    for part in value.split(';') {
        match part.trim().split_once('=') {
            Some(("Root", v)) => root = Some(v.to_string()),
            Some(("Parent", v)) => parent = Some(v.to_string()),
            Some(("Sampled", v)) => sampled = v == "1",
            _ => {}
        }
    }
    Some((root?, parent?)).filter(|_| sampled)
}

/// One subsegment document, as the daemon takes it.
pub fn subsegment(
    name: &str,
    trace: &(String, String),
    start: f64,
    end: f64,
    error: bool,
) -> serde_json::Value {
    json!({
        "name": name,
        "id": hex::encode(rand::random::<[u8; 8]>()),
        "trace_id": trace.0,
        "parent_id": trace.1,
        "start_time": start,
        "end_time": end,
        "type": "subsegment",
        "namespace": "remote",
        "error": error,
    })
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// When the span started, and what to call its subsegment: the `command` field when it has
/// one (`idp.create_client`), else the span's name.
struct Started(f64, Option<String>);

struct CommandField(Option<String>);

impl Visit for CommandField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "command" {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}
struct Failed;

struct ErrorField(bool);

impl Visit for ErrorField {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "error" && value {
            self.0 = true;
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// Sends a subsegment for each remote-call span when it closes.
pub struct XrayLayer {
    socket: UdpSocket,
    daemon: String,
    /// The invocation's trace header (`_X_AMZN_TRACE_ID`, which the runtime sets per event).
    trace: fn() -> Option<String>,
}

fn trace_from_env() -> Option<String> {
    std::env::var("_X_AMZN_TRACE_ID").ok()
}

impl XrayLayer {
    /// The layer for the daemon at `AWS_XRAY_DAEMON_ADDRESS`; `None` outside Lambda.
    pub fn from_env() -> Option<Self> {
        let daemon = std::env::var("AWS_XRAY_DAEMON_ADDRESS").ok()?;
        Self::to(&daemon)
    }

    /// The layer for the daemon at `daemon` (`host:port`).
    pub fn to(daemon: &str) -> Option<Self> {
        let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(Self {
            socket,
            daemon: daemon.to_string(),
            trace: trace_from_env,
        })
    }

    /// The same layer, reading the trace header from `trace` (tests).
    pub fn with_trace(mut self, trace: fn() -> Option<String>) -> Self {
        self.trace = trace;
        self
    }

    fn send(&self, doc: &serde_json::Value) {
        let packet = format!("{{\"format\": \"json\", \"version\": 1}}\n{doc}");
        // Best effort, as the X-Ray SDKs do: tracing must never fail a call.
        let _ = self.socket.send_to(packet.as_bytes(), &self.daemon);
    }
}

impl<S> Layer<S> for XrayLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if attrs.metadata().target() == REMOTE
            && let Some(span) = ctx.span(id)
        {
            let mut command = CommandField(None);
            attrs.record(&mut command);
            span.extensions_mut().insert(Started(now(), command.0));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let mut error = ErrorField(false);
        values.record(&mut error);
        if error.0
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(Failed);
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let ext = span.extensions();
        let Some(Started(start, command)) = ext.get::<Started>() else {
            return;
        };
        let Some(trace) = (self.trace)().and_then(|v| trace_header(&v)) else {
            return;
        };
        let name = command.as_deref().unwrap_or(span.name());
        let doc = subsegment(name, &trace, *start, now(), ext.get::<Failed>().is_some());
        self.send(&doc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_header_gives_root_and_parent_when_sampled() {
        let h = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        assert_eq!(
            trace_header(h),
            Some((
                "1-5759e988-bd862e3fe1be46a994272793".into(),
                "53995c3f42cd8ad8".into()
            ))
        );
        assert_eq!(trace_header(&h.replace("Sampled=1", "Sampled=0")), None);
        assert_eq!(trace_header("Root=1-5759e988-bd86;Sampled=1"), None);
    }

    #[test]
    fn a_remote_call_reaches_the_daemon_as_a_subsegment() {
        use tracing_subscriber::layer::SubscriberExt;
        let daemon = UdpSocket::bind("127.0.0.1:0").unwrap();
        daemon
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let layer = XrayLayer::to(&daemon.local_addr().unwrap().to_string())
            .unwrap()
            .with_trace(|| {
                Some(
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                        .into(),
                )
            });
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: REMOTE, "command", command = "idp.create_client", error = tracing::field::Empty);
            let _entered = span.enter();
            span.record("error", true);
        });
        let mut buf = [0u8; 4096];
        let n = daemon.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let (header, body) = text.split_once('\n').unwrap();
        assert_eq!(header, "{\"format\": \"json\", \"version\": 1}");
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(doc["name"], "idp.create_client");
        assert_eq!(doc["trace_id"], "1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(doc["parent_id"], "53995c3f42cd8ad8");
        assert_eq!(doc["type"], "subsegment");
        assert_eq!(doc["namespace"], "remote");
        assert_eq!(doc["error"], true);
        assert!(doc["end_time"].as_f64().unwrap() >= doc["start_time"].as_f64().unwrap());
        assert_eq!(doc["id"].as_str().unwrap().len(), 16);
    }
}
