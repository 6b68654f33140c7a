//! The engine's metrics (`crate::engine::metrics`) as CloudWatch Embedded Metric Format lines:
//! one JSON object per metric on stdout, which CloudWatch Logs turns into a metric in the
//! `Steward` namespace with the dimensions `Function` and the metric's own (`Kind`,
//! `Command`). No API call, no agent: the log line is the metric.

use serde_json::json;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

pub const NAMESPACE: &str = "Steward";

/// The layer that writes EMF lines for events on the metrics target.
pub struct EmfLayer {
    function: String,
}

impl EmfLayer {
    /// For the function Lambda names in `AWS_LAMBDA_FUNCTION_NAME` (`local` elsewhere).
    pub fn from_env() -> Self {
        Self {
            function: std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into()),
        }
    }
}

#[derive(Default)]
struct Metric {
    name: String,
    value: f64,
    unit: String,
    dimension: String,
    dimension_value: String,
}

impl Visit for Metric {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "value" {
            self.value = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "metric" => self.name = value.into(),
            "unit" => self.unit = value.into(),
            "dimension" => self.dimension = value.into(),
            "dimension_value" => self.dimension_value = value.into(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "dimension_value" {
            self.dimension_value = format!("{value:?}");
        }
    }
}

/// The EMF object of one metric.
pub fn emf_line(
    function: &str,
    name: &str,
    value: f64,
    unit: &str,
    dimension: &str,
    dimension_value: &str,
    at_ms: i64,
) -> serde_json::Value {
    let mut v = json!({
        "_aws": {
            "Timestamp": at_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                // Per function and kind (or command), and per function across them all (what
                // the alarms watch).
                "Dimensions": [["Function", dimension], ["Function"]],
                "Metrics": [{"Name": name, "Unit": unit}],
            }],
        },
        "Function": function,
    });
    v[dimension] = json!(dimension_value);
    v[name] = json!(value);
    v
}

impl<S: tracing::Subscriber> Layer<S> for EmfLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != crate::engine::metrics::TARGET {
            return;
        }
        let mut m = Metric::default();
        event.record(&mut m);
        if m.name.is_empty() || m.dimension.is_empty() {
            return;
        }
        let line = emf_line(
            &self.function,
            &m.name,
            m.value,
            &m.unit,
            &m.dimension,
            &m.dimension_value,
            chrono::Utc::now().timestamp_millis(),
        );
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_an_emf_object_with_its_dimensions() {
        let v = emf_line(
            "worker",
            "WorkflowsStarted",
            1.0,
            "Count",
            "Kind",
            "onboarding",
            5,
        );
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Steward");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function", "Kind"], ["Function"]])
        );
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0],
            json!({"Name": "WorkflowsStarted", "Unit": "Count"})
        );
        assert_eq!(v["Function"], "worker");
        assert_eq!(v["Kind"], "onboarding");
        assert_eq!(v["WorkflowsStarted"], 1.0);
        assert_eq!(v["_aws"]["Timestamp"], 5);
    }
}

/// Log lines as JSON objects with the fields of every span the event is in at the top level
/// (the invocation's `request_id`, the step's `workflow_id`), so CloudWatch Logs Insights can
/// filter on them directly: `{"level":"INFO","target":…,"message":…,"request_id":…}`.
pub struct JsonLines;

#[derive(Default)]
struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), json!(format!("{value:?}")));
    }
}

impl<S> Layer<S> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert("level".into(), json!(meta.level().as_str()));
        line.insert("target".into(), json!(meta.target()));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<Fields>() {
                    line.extend(f.0.clone());
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        line.extend(fields.0);
        println!("{}", serde_json::Value::Object(line));
    }
}
