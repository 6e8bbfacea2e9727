//! The normalized CloudWatch alarm: one type, whatever envelope carried it.
//!
//! CloudWatch reaches us in three shapes (DESIGN.md section 3): a direct Lambda alarm
//! action, an EventBridge "CloudWatch Alarm State Change" event, and an SNS
//! notification whose `Message` is the classic alarm JSON. [`normalize`] detects the
//! shape and returns one [`Alarm`] per alarm the event holds.

mod parse;
mod time;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use parse::{normalize, normalize_str, AlarmError};
pub use time::parse_timestamp;

/// The state of a CloudWatch alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmState {
    /// Parses the state names CloudWatch uses in every envelope.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OK" => Some(AlarmState::Ok),
            "ALARM" => Some(AlarmState::Alarm),
            "INSUFFICIENT_DATA" => Some(AlarmState::InsufficientData),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

impl fmt::Display for AlarmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which envelope an alarm arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventShape {
    /// CloudWatch invoked the function directly as an alarm action.
    DirectAction,
    /// An EventBridge rule on `CloudWatch Alarm State Change`.
    EventBridge,
    /// An SNS notification with the classic alarm JSON in `Message`.
    Sns,
    /// Read by alarm-to-incident's reconciliation sweep (`DescribeAlarms`), not
    /// delivered: the transition was missed, or a held one is applied at its end.
    DescribeAlarms,
}

/// A metric: namespace, name and dimensions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricIdentity {
    pub namespace: String,
    pub name: String,
    /// Sorted by name; empty when the metric has none.
    pub dimensions: BTreeMap<String, String>,
}

/// A single-metric alarm: the metric and the condition on it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricCondition {
    pub metric: MetricIdentity,
    /// `Minimum`, `Average`, ... or an extended statistic such as `p99`.
    pub statistic: Option<String>,
    pub period_seconds: Option<u32>,
    pub threshold: Option<f64>,
    /// `LessThanThreshold`, ...; only the SNS envelope carries it.
    pub comparison: Option<String>,
    pub evaluation_periods: Option<u32>,
    pub unit: Option<String>,
    pub treat_missing_data: Option<String>,
}

/// One query of a metric-math, anomaly-detection or Metrics Insights alarm.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricQuery {
    pub id: String,
    pub expression: Option<String>,
    pub metric: Option<MetricIdentity>,
    pub statistic: Option<String>,
    pub period_seconds: Option<u32>,
    pub label: Option<String>,
    pub return_data: bool,
}

/// An alarm on an expression rather than on one metric.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MathCondition {
    /// The expression whose result the alarm evaluates (the query with `returnData`).
    pub expression: Option<String>,
    pub queries: Vec<MetricQuery>,
    pub threshold: Option<f64>,
    /// Anomaly-detection alarms compare against a band instead of a threshold.
    pub threshold_metric_id: Option<String>,
    pub comparison: Option<String>,
    pub evaluation_periods: Option<u32>,
}

/// A composite alarm: a rule over other alarms.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompositeCondition {
    pub rule: Option<String>,
    /// ARNs of the child alarms that caused this transition, when the event says.
    pub triggering_children: Vec<String>,
}

/// What the alarm watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AlarmCondition {
    Metric(MetricCondition),
    Math(MathCondition),
    Composite(CompositeCondition),
    /// The event described no metric (e.g. an SNS message without `Trigger`).
    Unknown,
}

/// The alarm mute rule (`AWS::CloudWatch::AlarmMuteRule`) that muted the alarm's
/// actions when it changed state: EventBridge events of a muted alarm still come,
/// with `detail.muteDetail`; its SNS and Lambda actions do not run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MuteDetail {
    /// `mutedByArn`: the mute rule's ARN.
    pub rule_arn: Option<String>,
    /// `muteWindowStart` / `muteWindowEnd`: the current window of the rule.
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
}

/// A CloudWatch alarm state change, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub name: String,
    pub arn: String,
    pub account: String,
    /// Region code (`eu-south-1`), taken from the ARN: SNS gives only a display name.
    pub region: String,
    pub state: AlarmState,
    pub previous_state: Option<AlarmState>,
    pub reason: String,
    /// When the alarm entered `state`. With the ARN, it identifies the transition.
    pub changed_at: DateTime<Utc>,
    pub description: Option<String>,
    pub condition: AlarmCondition,
    pub shape: EventShape,
    /// Set when a mute rule muted the alarm's actions at this transition (EventBridge
    /// only: the muted actions themselves never reach us).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted: Option<MuteDetail>,
}

impl Alarm {
    /// The metric of a single-metric alarm.
    pub fn metric(&self) -> Option<&MetricIdentity> {
        match &self.condition {
            AlarmCondition::Metric(m) => Some(&m.metric),
            _ => None,
        }
    }

    /// Every metric the alarm reads: the one metric, or each metric of an expression.
    pub fn metrics(&self) -> Vec<&MetricIdentity> {
        match &self.condition {
            AlarmCondition::Metric(m) => vec![&m.metric],
            AlarmCondition::Math(m) => m.queries.iter().filter_map(|q| q.metric.as_ref()).collect(),
            _ => vec![],
        }
    }

    /// The value of a dimension on any metric of the alarm.
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.metrics()
            .into_iter()
            .find_map(|m| m.dimensions.get(name).map(String::as_str))
    }

    /// The statistic of a single-metric alarm, e.g. `Minimum`.
    pub fn statistic(&self) -> Option<&str> {
        match &self.condition {
            AlarmCondition::Metric(m) => m.statistic.as_deref(),
            _ => None,
        }
    }

    /// The site-to-site VPN connection the alarm watches, if any.
    pub fn vpn_id(&self) -> Option<&str> {
        self.dimension("VpnId")
    }

    /// Identifies this transition whatever envelope carried it: ARN and state-change
    /// time to the millisecond.
    pub fn transition_id(&self) -> String {
        format!(
            "{}@{}",
            self.arn,
            self.changed_at.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        )
    }

    /// Link to the alarm in the CloudWatch console.
    pub fn console_url(&self) -> String {
        format!(
            "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#alarmsV2:alarm/{name}",
            region = self.region,
            name = crate::text::url_encode(&self.name)
        )
    }
}
