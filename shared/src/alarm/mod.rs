//! The normalized CloudWatch alarm: one type, whatever envelope carried it.
//!
//! CloudWatch reaches us in three shapes (DESIGN.md section 3): a direct Lambda alarm
//! action, an EventBridge event ("CloudWatch Alarm State Change", or "CloudWatch
//! Alarm Contributor State Change" for one time series of a multi-time-series
//! alarm), and an SNS notification whose `Message` is the classic alarm JSON.
//! [`normalize`] detects the shape and returns one [`Alarm`] per alarm the event
//! holds.

mod insights;
mod parse;
mod region;
mod time;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use insights::{is_insights_query, parse_query as parse_insights_query, InsightsQuery};
pub use parse::{
    condition_from_queries, normalize, normalize_sns_message, normalize_str, AlarmError,
    ConditionFacts,
};
pub use region::{partition_of, region_from_display_name, RegionCode};
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
    pub comparison: Option<String>,
    pub evaluation_periods: Option<u32>,
}

/// An anomaly-detection alarm: the metric is compared with a band CloudWatch learns
/// from its history (`ANOMALY_DETECTION_BAND(m1, 2)`), not with a fixed threshold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AnomalyCondition {
    /// The metric the band is computed for (the query the band function names).
    pub metric: Option<MetricIdentity>,
    pub statistic: Option<String>,
    pub period_seconds: Option<u32>,
    /// The band expression, e.g. `ANOMALY_DETECTION_BAND(m1, 2)`.
    pub band: String,
    /// The band's width in standard deviations (the function's second argument;
    /// CloudWatch's default is 2).
    pub band_width: Option<f64>,
    /// The id of the band's query (`ThresholdMetricId`), when the event names it.
    pub threshold_metric_id: Option<String>,
    /// `LessThanLowerOrGreaterThanUpperThreshold`, `LessThanLowerThreshold` or
    /// `GreaterThanUpperThreshold`.
    pub comparison: Option<String>,
    pub evaluation_periods: Option<u32>,
    pub treat_missing_data: Option<String>,
    /// The band and the value at the latest datapoint evaluated, when the event's
    /// `reasonData` gives them (EventBridge and direct actions; SNS never does).
    pub lower_bound: Option<f64>,
    pub upper_bound: Option<f64>,
    pub value: Option<f64>,
    pub queries: Vec<MetricQuery>,
}

/// A Metrics Insights alarm: one SQL query, which with `GROUP BY` returns one time
/// series per group; each of those is a contributor with its own state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InsightsCondition {
    /// The query, e.g. `SELECT MIN(TunnelState) FROM "AWS/VPN" GROUP BY VpnId`.
    pub query: String,
    pub period_seconds: Option<u32>,
    pub threshold: Option<f64>,
    pub comparison: Option<String>,
    pub evaluation_periods: Option<u32>,
    pub treat_missing_data: Option<String>,
    /// What the query reads, when it is plain enough to read ([`InsightsQuery`]);
    /// the dimensions are the query's `labelKey = 'value'` filters.
    pub metric: Option<MetricIdentity>,
    /// The statistic of the query's function (`MIN` is `Minimum`).
    pub statistic: Option<String>,
    /// `GROUP BY` keys: non-empty for a multi-time-series alarm.
    pub group_by: Vec<String>,
}

impl InsightsCondition {
    /// True when the alarm watches one time series per group (`GROUP BY`).
    pub fn is_multi_series(&self) -> bool {
        !self.group_by.is_empty()
    }
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
    /// Compared with a learned band rather than a threshold.
    Anomaly(AnomalyCondition),
    /// A Metrics Insights (SQL) query.
    #[serde(rename = "metrics_insights")]
    Insights(InsightsCondition),
    Composite(CompositeCondition),
    /// The event described no metric (e.g. an SNS message without `Trigger`).
    Unknown,
}

impl AlarmCondition {
    /// One line saying what the alarm watches, for people (Slack, notes, the
    /// normalize tool); `None` when the event described nothing.
    pub fn summary(&self) -> Option<String> {
        let threshold = |cmp: &Option<String>, t: Option<f64>| -> String {
            match (cmp.as_deref().map(comparison_symbol), t) {
                (Some(c), Some(t)) => format!(" {c} {t}"),
                (None, Some(t)) => format!(", threshold {t}"),
                (Some(c), None) => format!(" {c}"),
                (None, None) => String::new(),
            }
        };
        let over = |e: Option<u32>, p: Option<u32>| match (e, p) {
            (Some(e), Some(p)) => format!(" for {e} × {p} s"),
            (None, Some(p)) => format!(" over {p} s"),
            _ => String::new(),
        };
        let text = match self {
            AlarmCondition::Metric(m) => format!(
                "{} of {}{}{}",
                m.statistic.as_deref().unwrap_or("value"),
                m.metric,
                threshold(&m.comparison, m.threshold),
                over(m.evaluation_periods, m.period_seconds)
            ),
            AlarmCondition::Math(m) => format!(
                "expression {}{}{}",
                m.expression.as_deref().unwrap_or("(none returned)"),
                threshold(&m.comparison, m.threshold),
                over(m.evaluation_periods, None)
            ),
            AlarmCondition::Anomaly(a) => {
                let what = match &a.metric {
                    Some(metric) => format!(
                        "{} of {}",
                        a.statistic.as_deref().unwrap_or("value"),
                        metric
                    ),
                    None => "the metric".to_string(),
                };
                let side = match a.comparison.as_deref() {
                    Some("LessThanLowerThreshold") => "below",
                    Some("GreaterThanUpperThreshold") => "above",
                    _ => "outside",
                };
                let mut s = format!(
                    "{what} {side} the anomaly band {}{}",
                    a.band,
                    over(a.evaluation_periods, a.period_seconds)
                );
                if let (Some(lo), Some(hi)) = (a.lower_bound, a.upper_bound) {
                    s.push_str(&format!("; band {lo} to {hi}"));
                    if let Some(v) = a.value {
                        s.push_str(&format!(", value {v}"));
                    }
                }
                s
            }
            AlarmCondition::Insights(q) => {
                let per = if q.group_by.is_empty() {
                    String::new()
                } else {
                    format!(", one time series per {}", q.group_by.join(", "))
                };
                format!(
                    "Metrics Insights {}{}{}{per}",
                    q.query,
                    threshold(&q.comparison, q.threshold),
                    over(q.evaluation_periods, q.period_seconds)
                )
            }
            AlarmCondition::Composite(c) => {
                format!(
                    "composite rule {}",
                    c.rule.as_deref().unwrap_or("(unknown)")
                )
            }
            AlarmCondition::Unknown => return None,
        };
        Some(text)
    }
}

/// `LessThanThreshold` is `<`, ...; anomaly comparisons read as words.
fn comparison_symbol(cmp: &str) -> &str {
    match cmp {
        "LessThanThreshold" => "<",
        "LessThanOrEqualToThreshold" => "<=",
        "GreaterThanThreshold" => ">",
        "GreaterThanOrEqualToThreshold" => ">=",
        "LessThanLowerOrGreaterThanUpperThreshold" => "outside the band",
        "LessThanLowerThreshold" => "below the band",
        "GreaterThanUpperThreshold" => "above the band",
        other => other,
    }
}

impl fmt::Display for MetricIdentity {
    /// `AWS/VPN TunnelState (VpnId=vpn-1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)?;
        } else {
            write!(f, "{} {}", self.namespace, self.name)?;
        }
        if !self.dimensions.is_empty() {
            let dims: Vec<String> = self
                .dimensions
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, " ({})", dims.join(", "))?;
        }
        Ok(())
    }
}

/// One time series of a multi-time-series (Metrics Insights `GROUP BY`) alarm, as
/// the EventBridge "CloudWatch Alarm Contributor State Change" event names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contributor {
    /// CloudWatch's id of the time series (16 hex digits in AWS's examples).
    pub id: String,
    /// What identifies the series: the `GROUP BY` keys and their values
    /// (`{"VpnId": "vpn-..."}`). Rules read them like dimensions.
    pub attributes: BTreeMap<String, String>,
}

impl Contributor {
    /// Whether `id` can be a contributor id here: 1 to 1024 characters (the API's
    /// limit), no `/` (it would make the [`source_id`] ambiguous), no spaces or control
    /// characters (AWS's ids are hex digits). Events and `DescribeAlarmContributors`
    /// are checked alike.
    pub fn valid_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 1024
            && !id.contains(|ch: char| ch == '/' || ch.is_whitespace() || ch.is_control())
    }

    /// `VpnId=vpn-1, TunnelIpAddress=...`, or the id when there are no attributes.
    pub fn describe(&self) -> String {
        if self.attributes.is_empty() {
            return format!("contributor {}", self.id);
        }
        let pairs: Vec<String> = self
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        crate::text::truncate(&pairs.join(", "), 200)
    }
}

/// Where the alarm's ARN came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArnOrigin {
    /// The event carried it.
    #[default]
    Event,
    /// Rebuilt from `AWSAccountId`, the `Region` display name and `AlarmName` (SNS
    /// messages older than `AlarmArn`).
    RegionName,
    /// Rebuilt with the Region of the SNS topic that delivered the message: the
    /// message's `Region` was missing or not a Region name we know.
    TopicRegion,
}

impl ArnOrigin {
    fn is_event(&self) -> bool {
        *self == ArnOrigin::Event
    }
}

/// What changes state: an alarm is identified by its ARN, one time series of a
/// multi-time-series alarm by `contributor/<id>/<alarm ARN>` (the prefix cannot
/// begin an ARN, so the two never collide). Duplicate detection, the state table
/// and the alarms feeding an incident are keyed by it.
pub fn source_id(arn: &str, contributor: Option<&str>) -> String {
    match contributor {
        None => arn.to_string(),
        Some(id) => format!("{CONTRIBUTOR_PREFIX}{id}/{arn}"),
    }
}

const CONTRIBUTOR_PREFIX: &str = "contributor/";

/// CloudWatch's reason for the alarm-level state of a multi-time-series alarm:
/// "6 out of 6 time series evaluated to ALARM" (the only reason it gives them, with no
/// reasonData), so an event that lost its configuration is still recognized.
fn is_time_series_summary(reason: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let words: Vec<&str> = reason.split_whitespace().take(8).collect();
    matches!(
        words.as_slice(),
        [n, "out", "of", m, "time", "series", "evaluated", "to", ..] if number(n) && number(m)
    )
}

/// The alarm ARN and contributor id of a [`source_id`].
pub fn split_source_id(source: &str) -> (&str, Option<&str>) {
    // Contributor ids hold no `/` (the parser refuses them), so the first one ends it.
    if let Some((id, arn)) = source
        .strip_prefix(CONTRIBUTOR_PREFIX)
        .and_then(|rest| rest.split_once('/'))
    {
        if arn.starts_with("arn:") {
            return (arn, Some(id));
        }
    }
    (source, None)
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
    /// The time series this transition is about, for a contributor event of a
    /// multi-time-series alarm; `None` for the alarm as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contributor: Option<Contributor>,
    /// Where `arn` came from (rebuilt for SNS messages that lack `AlarmArn`).
    #[serde(default, skip_serializing_if = "ArnOrigin::is_event")]
    pub arn_origin: ArnOrigin,
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

    /// Every metric the alarm reads: the one metric, each metric of an expression or
    /// of an anomaly band, or what a Metrics Insights query reads.
    pub fn metrics(&self) -> Vec<&MetricIdentity> {
        match &self.condition {
            AlarmCondition::Metric(m) => vec![&m.metric],
            AlarmCondition::Math(m) => m.queries.iter().filter_map(|q| q.metric.as_ref()).collect(),
            AlarmCondition::Anomaly(a) => {
                a.queries.iter().filter_map(|q| q.metric.as_ref()).collect()
            }
            AlarmCondition::Insights(q) => q.metric.iter().collect(),
            AlarmCondition::Composite(_) | AlarmCondition::Unknown => vec![],
        }
    }

    /// The value of a dimension: the contributor's attribute of that name (the time
    /// series this transition is about), else the dimension on any metric the alarm
    /// reads.
    pub fn dimension(&self, name: &str) -> Option<&str> {
        if let Some(v) = self
            .contributor
            .as_ref()
            .and_then(|c| c.attributes.get(name))
        {
            return Some(v);
        }
        self.metrics()
            .into_iter()
            .find_map(|m| m.dimensions.get(name).map(String::as_str))
    }

    /// The statistic of a single-metric, anomaly or Metrics Insights alarm, e.g. `Minimum`.
    pub fn statistic(&self) -> Option<&str> {
        match &self.condition {
            AlarmCondition::Metric(m) => m.statistic.as_deref(),
            AlarmCondition::Anomaly(a) => a.statistic.as_deref(),
            AlarmCondition::Insights(q) => q.statistic.as_deref(),
            _ => None,
        }
    }

    /// What changed state: the alarm, or one of its contributors ([`source_id`]).
    pub fn source_id(&self) -> String {
        source_id(&self.arn, self.contributor.as_ref().map(|c| c.id.as_str()))
    }

    /// The alarm's name, with the contributor's attributes for a contributor event:
    /// `vpn-tunnels (VpnId=vpn-0a1b...)`.
    pub fn label(&self) -> String {
        match &self.contributor {
            None => self.name.clone(),
            Some(c) => format!("{} ({})", self.name, c.describe()),
        }
    }

    /// True for the alarm-level state change of a multi-time-series alarm ("6 out of
    /// 6 time series evaluated to ALARM"): its contributors change state on their
    /// own and each is delivered as its own event, so the summary is not a
    /// transition of any one time series.
    pub fn is_multi_series_summary(&self) -> bool {
        self.contributor.is_none()
            && (matches!(&self.condition, AlarmCondition::Insights(q) if q.is_multi_series())
                || is_time_series_summary(&self.reason))
    }

    /// The site-to-site VPN connection the alarm watches, if any.
    pub fn vpn_id(&self) -> Option<&str> {
        self.dimension("VpnId")
    }

    /// Identifies this transition whatever envelope carried it: what changed state
    /// ([`Alarm::source_id`]: the ARN, with the contributor for a contributor event,
    /// whose alarm-level event has the same time) and the state-change time to the
    /// millisecond.
    pub fn transition_id(&self) -> String {
        format!(
            "{}@{}",
            self.source_id(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ids_of_alarms_and_contributors_split_back_and_never_collide() {
        let arn = "arn:aws:cloudwatch:eu-west-1:1:alarm:a/b contributor/x";
        assert_eq!(source_id(arn, None), arn);
        assert_eq!(split_source_id(arn), (arn, None));
        let c = source_id(arn, Some("3f9a1c7e5b2d8046"));
        assert_eq!(c, format!("contributor/3f9a1c7e5b2d8046/{arn}"));
        assert_eq!(split_source_id(&c), (arn, Some("3f9a1c7e5b2d8046")));
        // An ARN never starts like a contributor's source id.
        assert_ne!(source_id(&c, None), source_id(arn, Some("x")));
        assert_eq!(
            split_source_id("contributor/x/not-an-arn"),
            ("contributor/x/not-an-arn", None)
        );
    }

    #[test]
    fn the_alarm_level_reason_of_a_multi_time_series_alarm_is_recognized() {
        assert!(is_time_series_summary(
            "6 out of 6 time series evaluated to ALARM"
        ));
        assert!(is_time_series_summary(
            "0 out of 12 time series evaluated to ALARM"
        ));
        assert!(!is_time_series_summary(
            "Threshold Crossed: 1 out of the last 1 datapoints [0.0 (25/11/26 10:00:00)] was less than the threshold (1.0)"
        ));
        assert!(!is_time_series_summary(
            "x out of 6 time series evaluated to ALARM"
        ));
        assert!(!is_time_series_summary(""));
    }
}
