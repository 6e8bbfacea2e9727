//! Shape detection and lenient parsing of the three alarm envelopes.
//!
//! Parsing walks `serde_json::Value` rather than deriving strict structs: AWS leaves
//! fields out, sends `null` where a string is expected, and writes the same field
//! in three casings (DESIGN.md section 3). Every failure names the envelope and the
//! path of the field, and values quoted in errors are cut short.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::insights::{group_by_keys, is_insights_query, parse_query};
use super::region::{partition_of, region_from_display_name};
use super::time::parse_timestamp;
use super::{
    Alarm, AlarmCondition, AlarmState, AnomalyCondition, ArnOrigin, CompositeCondition,
    Contributor, EventShape, InsightsCondition, MathCondition, MetricCondition, MetricIdentity,
    MetricQuery, MuteDetail,
};
use crate::error::Retryable;
use crate::text::truncate;

const DIRECT: &str = "direct alarm action";
const EVENTBRIDGE: &str = "EventBridge event";
const SNS: &str = "SNS alarm message";
const ALARM_DETAIL_TYPE: &str = "CloudWatch Alarm State Change";
/// One time series (contributor) of a multi-time-series alarm changed state.
const CONTRIBUTOR_DETAIL_TYPE: &str = "CloudWatch Alarm Contributor State Change";

/// Why an event could not be read as an alarm. Never retryable: the same bytes will
/// fail the same way, so the event belongs in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlarmError {
    #[error("event is not JSON: {0}")]
    NotJson(String),
    #[error(
        "unrecognized event: got {found}; expected a CloudWatch alarm as a direct Lambda alarm action \
         (`alarmData`), an EventBridge event with detail-type \"CloudWatch Alarm State Change\", \
         or an SNS event (`Records[].Sns.Message`) holding the alarm JSON"
    )]
    UnknownShape { found: String },
    #[error(
        "unsupported EventBridge detail-type {detail_type:?} (source {event_source:?}); \
         expected \"CloudWatch Alarm State Change\" or \"CloudWatch Alarm Contributor State Change\""
    )]
    UnsupportedDetailType {
        detail_type: String,
        event_source: String,
    },
    #[error("{shape}: field `{path}` is missing")]
    MissingField { shape: &'static str, path: String },
    #[error("{shape}: field `{path}` should be {expected}, got {found}")]
    WrongType {
        shape: &'static str,
        path: String,
        expected: &'static str,
        found: String,
    },
    #[error("{shape}: field `{path}` has unknown alarm state {value:?}; expected OK, ALARM or INSUFFICIENT_DATA")]
    InvalidState {
        shape: &'static str,
        path: String,
        value: String,
    },
    #[error("{shape}: field `{path}` is not a timestamp: {value:?}")]
    InvalidTimestamp {
        shape: &'static str,
        path: String,
        value: String,
    },
    #[error("{shape}: field `{path}` is not a CloudWatch alarm ARN: {value:?}")]
    InvalidArn {
        shape: &'static str,
        path: String,
        value: String,
    },
    #[error(
        "SNS alarm message has no `AlarmArn` and the ARN cannot be rebuilt from account, \
         Region and name: {missing}"
    )]
    CannotRebuildArn { missing: String },
    #[error("SNS event has an empty `Records` list; expected at least one record")]
    EmptyRecords,
    #[error("SNS record {index}: `Sns.Message` is not JSON ({reason}); it starts with {start:?}")]
    SnsMessageNotJson {
        index: usize,
        reason: String,
        start: String,
    },
    #[error("SNS record {index}: {inner}")]
    InRecord {
        index: usize,
        inner: Box<AlarmError>,
    },
}

impl Retryable for AlarmError {
    fn retryable(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        "BadInput"
    }
}

type Result<T> = std::result::Result<T, AlarmError>;

/// Parses raw event text (tools, tests) and normalizes it.
pub fn normalize_str(event: &str) -> Result<Vec<Alarm>> {
    let value: Value =
        serde_json::from_str(event).map_err(|e| AlarmError::NotJson(e.to_string()))?;
    normalize(&value)
}

/// Detects the envelope of a raw event and returns the alarm(s) it carries: one for
/// a direct action or an EventBridge event, one per record for SNS.
pub fn normalize(event: &Value) -> Result<Vec<Alarm>> {
    let Some(map) = event.as_object() else {
        return Err(AlarmError::UnknownShape {
            found: describe(event),
        });
    };
    if let Some(records) = map.get("Records") {
        return sns_records(records);
    }
    normalize_single(event, None)
}

/// The alarm in one SNS `Message` (already parsed as JSON) that arrived on
/// `topic_arn`: the classic alarm JSON or an EventBridge event published to the
/// topic. The topic's Region stands in when an old message has no `AlarmArn` and
/// names no Region we know.
pub fn normalize_sns_message(message: &Value, topic_arn: &str) -> Result<Vec<Alarm>> {
    normalize_single(message, Some(topic_arn))
}

/// The shapes that hold exactly one alarm (also what an SNS `Message` may hold);
/// `topic_arn` is the SNS topic that delivered it, if it came through SNS.
fn normalize_single(event: &Value, topic_arn: Option<&str>) -> Result<Vec<Alarm>> {
    let Some(map) = event.as_object() else {
        return Err(AlarmError::UnknownShape {
            found: describe(event),
        });
    };
    let alarm = if map.contains_key("alarmData") {
        direct_action(Obj::root(DIRECT, map))
    } else if map.contains_key("detail-type") {
        eventbridge(Obj::root(EVENTBRIDGE, map))
    } else if map.contains_key("AlarmName") && map.contains_key("NewStateValue") {
        sns_message(Obj::root(SNS, map), topic_arn)
    } else {
        Err(AlarmError::UnknownShape {
            found: describe(event),
        })
    };
    alarm.map(|a| vec![a])
}

fn sns_records(records: &Value) -> Result<Vec<Alarm>> {
    let Some(records) = records.as_array() else {
        return Err(AlarmError::WrongType {
            shape: "SNS event",
            path: "Records".into(),
            expected: "a list",
            found: describe(records),
        });
    };
    if records.is_empty() {
        return Err(AlarmError::EmptyRecords);
    }
    let mut alarms = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let found = sns_record(index, record).map_err(|e| match e {
            AlarmError::SnsMessageNotJson { .. } | AlarmError::InRecord { .. } => e,
            other => AlarmError::InRecord {
                index,
                inner: Box::new(other),
            },
        })?;
        alarms.extend(found);
    }
    Ok(alarms)
}

fn sns_record(index: usize, record: &Value) -> Result<Vec<Alarm>> {
    let map = record.as_object().ok_or_else(|| AlarmError::WrongType {
        shape: "SNS event",
        path: format!("Records[{index}]"),
        expected: "an object",
        found: describe(record),
    })?;
    let root = Obj {
        shape: "SNS event",
        path: format!("Records[{index}]"),
        map,
    };
    let sns = root.obj("Sns")?;
    let topic_arn = sns.opt_str("TopicArn")?;
    let message = sns.str("Message")?;
    let inner: Value =
        serde_json::from_str(message).map_err(|e| AlarmError::SnsMessageNotJson {
            index,
            reason: e.to_string(),
            start: truncate(message, 60),
        })?;
    // The message may be the classic alarm JSON or an EventBridge event that an
    // EventBridge rule published to the topic; never another SNS envelope.
    normalize_single(&inner, topic_arn)
}

fn direct_action(root: Obj) -> Result<Alarm> {
    let arn = root.str("alarmArn")?.to_string();
    let arn_parts = parse_alarm_arn(&root, "alarmArn", &arn)?;
    let account = root
        .opt_str("accountId")?
        .map_or_else(|| arn_parts.account.clone(), str::to_string);
    let time_hint = root.opt_str("time")?;
    let data = root.obj("alarmData")?;
    from_detail(
        EventShape::DirectAction,
        data,
        arn,
        account,
        arn_parts.region,
        time_hint,
    )
}

fn eventbridge(root: Obj) -> Result<Alarm> {
    let detail_type = root.str("detail-type")?;
    if detail_type != ALARM_DETAIL_TYPE && detail_type != CONTRIBUTOR_DETAIL_TYPE {
        return Err(AlarmError::UnsupportedDetailType {
            detail_type: truncate(detail_type, 100),
            event_source: truncate(root.opt_str("source")?.unwrap_or(""), 100),
        });
    }
    let resources = root.arr("resources")?;
    let arn = match resources.first() {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(AlarmError::WrongType {
                shape: EVENTBRIDGE,
                path: "resources[0]".into(),
                expected: "a string",
                found: describe(other),
            })
        }
        None => {
            return Err(AlarmError::MissingField {
                shape: EVENTBRIDGE,
                path: "resources[0]".into(),
            })
        }
    };
    let arn_parts = parse_alarm_arn(&root, "resources[0]", &arn)?;
    let account = root
        .opt_str("account")?
        .map_or_else(|| arn_parts.account.clone(), str::to_string);
    let time_hint = root.opt_str("time")?;
    let detail = root.obj("detail")?;
    if detail_type == CONTRIBUTOR_DETAIL_TYPE && detail.opt_obj("alarmContributor")?.is_none() {
        // A contributor event without its contributor cannot be told apart from the
        // alarm-level event of the same time: refuse it rather than guess.
        return Err(detail.missing("alarmContributor"));
    }
    from_detail(
        EventShape::EventBridge,
        detail,
        arn,
        account,
        arn_parts.region,
        time_hint,
    )
}

/// The body shared by the direct action (`alarmData`) and EventBridge (`detail`).
fn from_detail(
    shape: EventShape,
    detail: Obj,
    arn: String,
    account: String,
    region: String,
    time_hint: Option<&str>,
) -> Result<Alarm> {
    let name = detail.str("alarmName")?.to_string();
    let state_obj = detail.obj("state")?;
    let state = state_obj.state("value")?;
    let reason = state_obj.opt_str("reason")?.unwrap_or_default().to_string();
    let changed_at = match state_obj.opt_str("timestamp")? {
        Some(ts) => state_obj.timestamp("timestamp", ts)?,
        // The state timestamp is what identifies a transition; the envelope time is
        // only a fallback for hand-made events.
        None => match time_hint {
            Some(ts) => detail.timestamp("time", ts)?,
            None => {
                return Err(AlarmError::MissingField {
                    shape: detail.shape,
                    path: state_obj.child_path("timestamp"),
                })
            }
        },
    };
    let previous_state = match detail.opt_obj("previousState")? {
        Some(prev) => match prev.opt_str("value")? {
            Some(_) => Some(prev.state("value")?),
            None => None,
        },
        None => None,
    };
    let reason_data = state_obj.opt_str("reasonData")?.and_then(parse_reason_data);
    let contributor = match detail.opt_obj("alarmContributor")? {
        Some(c) => Some(contributor(&c)?),
        None => None,
    };
    let configuration = detail.opt_obj("configuration")?;
    let description = match &configuration {
        Some(c) => non_empty(c.opt_str("description")?),
        None => None,
    };
    let condition = match configuration {
        Some(c) => condition_from_configuration(&c, reason_data.as_ref())?,
        None => AlarmCondition::Unknown,
    };
    // A muted alarm's EventBridge event (alarm mute rules): every field optional.
    let muted = match detail.opt_obj("muteDetail")? {
        Some(m) => Some(MuteDetail {
            rule_arn: non_empty(m.opt_str("mutedByArn")?),
            window_start: m
                .opt_str("muteWindowStart")?
                .map(|ts| m.timestamp("muteWindowStart", ts))
                .transpose()?,
            window_end: m
                .opt_str("muteWindowEnd")?
                .map(|ts| m.timestamp("muteWindowEnd", ts))
                .transpose()?,
        }),
        None => None,
    };
    Ok(Alarm {
        name,
        arn,
        account,
        region,
        state,
        previous_state,
        reason,
        changed_at,
        description,
        condition,
        shape,
        contributor,
        arn_origin: ArnOrigin::Event,
        muted,
    })
}

/// `alarmContributor`: `{"id": "6d442278dba546f6", "attributes": {"TableName": "..."}}`.
fn contributor(c: &Obj) -> Result<Contributor> {
    let id = c.str("id")?.trim();
    if !Contributor::valid_id(id) {
        return Err(AlarmError::WrongType {
            shape: c.shape,
            path: c.child_path("id"),
            expected: "a contributor id (1 to 1024 characters, no `/` or spaces)",
            found: describe(&Value::String(id.to_string())),
        });
    }
    let mut attributes = BTreeMap::new();
    if let Some(attrs) = c.opt_obj("attributes")? {
        for (k, v) in attrs.map {
            if v.is_null() {
                continue;
            }
            attributes.insert(k.clone(), scalar_string(c.shape, &attrs.child_path(k), v)?);
        }
    }
    Ok(Contributor {
        id: id.to_string(),
        attributes,
    })
}

/// `reasonData` is itself a JSON string whose keys depend on the alarm type; it is
/// informative only (threshold, triggering children), so unreadable data is ignored.
fn parse_reason_data(s: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn condition_from_configuration(
    config: &Obj,
    reason_data: Option<&Map<String, Value>>,
) -> Result<AlarmCondition> {
    if let Some(rule) = config.opt_str("alarmRule")? {
        let triggering_children = reason_data
            .and_then(|r| r.get("triggeringAlarms"))
            .and_then(Value::as_array)
            .map(|alarms| {
                alarms
                    .iter()
                    .filter_map(|a| a.get("arn").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        return Ok(AlarmCondition::Composite(CompositeCondition {
            rule: Some(rule.to_string()),
            triggering_children,
        }));
    }
    let threshold = reason_data
        .and_then(|r| r.get("threshold"))
        .and_then(Value::as_f64);
    let queries = match config.opt_arr("metrics")? {
        Some(items) => metric_queries(config, "metrics", items)?,
        None => return Ok(AlarmCondition::Unknown),
    };
    let latest = |key: &str| {
        reason_data
            .and_then(|r| r.get(key))
            .and_then(Value::as_array)
            .and_then(|a| a.last())
            .and_then(Value::as_f64)
    };
    Ok(condition_from_queries(
        queries,
        ConditionFacts {
            threshold,
            threshold_metric_id: non_empty(config.opt_str("thresholdMetricId")?),
            // Anomaly alarms: the band and value at the latest datapoint (the lists
            // are oldest first).
            lower_bound: latest("recentLowerThresholds"),
            upper_bound: latest("recentUpperThresholds"),
            value: latest("recentDatapoints"),
            ..ConditionFacts::default()
        },
    ))
}

/// What an alarm compares its queries with, as each source states it (event
/// configuration and `reasonData`, SNS `Trigger`, `DescribeAlarms`): the inputs of
/// [`condition_from_queries`] besides the queries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConditionFacts {
    pub threshold: Option<f64>,
    pub threshold_metric_id: Option<String>,
    pub comparison: Option<String>,
    pub evaluation_periods: Option<u32>,
    pub unit: Option<String>,
    pub treat_missing_data: Option<String>,
    /// The alarm's period when its queries do not carry one (SNS `Trigger.Period`).
    pub period_seconds: Option<u32>,
    /// Anomaly alarms: the band and the value at the latest datapoint (`reasonData`).
    pub lower_bound: Option<f64>,
    pub upper_bound: Option<f64>,
    pub value: Option<f64>,
}

/// `ANOMALY_DETECTION_BAND(m1, 2)`, in any case.
fn is_band(expression: &str) -> bool {
    expression
        .trim_start()
        .get(..22)
        .is_some_and(|head| head.eq_ignore_ascii_case("ANOMALY_DETECTION_BAND"))
}

/// The alarm kind its queries make: a band expression (or a `ThresholdMetricId`) is
/// an anomaly-detection alarm; a `SELECT` query a Metrics Insights alarm; one metric
/// and no expression a plain metric alarm; anything else metric math. One place for
/// every source of alarms (events and `DescribeAlarms`).
pub fn condition_from_queries(mut queries: Vec<MetricQuery>, t: ConditionFacts) -> AlarmCondition {
    if queries.is_empty() {
        return AlarmCondition::Unknown;
    }
    let band_at = queries
        .iter()
        .position(|q| q.expression.as_deref().is_some_and(is_band))
        .or_else(|| {
            let id = t.threshold_metric_id.as_deref()?;
            queries.iter().position(|q| q.id == id)
        });
    if band_at.is_some() || t.threshold_metric_id.is_some() {
        return AlarmCondition::Anomaly(anomaly(queries, band_at, t));
    }
    if let Some(q) = queries
        .iter()
        .find(|q| q.expression.as_deref().is_some_and(is_insights_query))
    {
        return AlarmCondition::Insights(insights(q, t));
    }
    let has_expression = queries.iter().any(|q| q.expression.is_some());
    if queries.len() == 1 && !has_expression {
        let q = queries.remove(0);
        if let Some(metric) = q.metric {
            return AlarmCondition::Metric(MetricCondition {
                metric,
                statistic: q.statistic,
                period_seconds: q.period_seconds,
                threshold: t.threshold,
                comparison: t.comparison,
                evaluation_periods: t.evaluation_periods,
                unit: t.unit,
                treat_missing_data: t.treat_missing_data,
            });
        }
        queries.push(q);
    }
    let expression = queries
        .iter()
        .find(|q| q.return_data && q.expression.is_some())
        .or_else(|| queries.iter().find(|q| q.expression.is_some()))
        .and_then(|q| q.expression.clone());
    AlarmCondition::Math(MathCondition {
        expression,
        queries,
        threshold: t.threshold,
        comparison: t.comparison,
        evaluation_periods: t.evaluation_periods,
    })
}

/// The band is `ANOMALY_DETECTION_BAND(<metric query id>[, <width>])`; the metric is
/// that query's.
fn anomaly(
    queries: Vec<MetricQuery>,
    band_at: Option<usize>,
    t: ConditionFacts,
) -> AnomalyCondition {
    let band = band_at
        .and_then(|i| queries[i].expression.clone())
        .unwrap_or_default();
    let args: Vec<&str> = band
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map(|(inner, _)| inner.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let watched = args
        .first()
        .and_then(|id| queries.iter().find(|q| q.id == *id && q.metric.is_some()))
        .or_else(|| queries.iter().find(|q| q.metric.is_some()));
    // CloudWatch's default width is 2 standard deviations.
    let band_width = match args.get(1) {
        Some(w) => w.parse().ok(),
        None if !band.is_empty() => Some(2.0),
        None => None,
    };
    AnomalyCondition {
        metric: watched.and_then(|q| q.metric.clone()),
        statistic: watched.and_then(|q| q.statistic.clone()),
        period_seconds: watched.and_then(|q| q.period_seconds).or(t.period_seconds),
        band,
        band_width,
        threshold_metric_id: t.threshold_metric_id.or_else(|| {
            band_at
                .map(|i| queries[i].id.clone())
                .filter(|id| !id.is_empty())
        }),
        comparison: t.comparison,
        evaluation_periods: t.evaluation_periods,
        treat_missing_data: t.treat_missing_data,
        lower_bound: t.lower_bound,
        upper_bound: t.upper_bound,
        value: t.value,
        queries,
    }
}

fn insights(q: &MetricQuery, t: ConditionFacts) -> InsightsCondition {
    let query = q.expression.clone().unwrap_or_default();
    let parsed = parse_query(&query);
    InsightsCondition {
        period_seconds: q.period_seconds.or(t.period_seconds),
        threshold: t.threshold,
        comparison: t.comparison,
        evaluation_periods: t.evaluation_periods,
        treat_missing_data: t.treat_missing_data,
        metric: parsed.as_ref().map(|p| MetricIdentity {
            namespace: p.namespace.clone(),
            name: p.metric.clone(),
            dimensions: p.filters.clone(),
        }),
        statistic: parsed.as_ref().map(|p| p.statistic.clone()),
        group_by: match parsed {
            Some(p) => p.group_by,
            None => group_by_keys(&query),
        },
        query,
    }
}

/// Parses `metrics` (camelCase, EventBridge and direct) or `Trigger.Metrics`
/// (PascalCase, SNS); both casings are accepted for every key.
fn metric_queries(parent: &Obj, key: &str, items: &[Value]) -> Result<Vec<MetricQuery>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("{}[{i}]", parent.child_path(key));
            let map = item.as_object().ok_or_else(|| AlarmError::WrongType {
                shape: parent.shape,
                path: path.clone(),
                expected: "an object",
                found: describe(item),
            })?;
            let q = Obj {
                shape: parent.shape,
                path,
                map,
            };
            let (metric, statistic, period_seconds) = match q.opt_obj_ci("metricStat")? {
                Some(stat) => {
                    let metric = match stat.opt_obj_ci("metric")? {
                        Some(m) => Some(metric_identity(&m)?),
                        None => None,
                    };
                    (
                        metric,
                        stat.opt_str_ci("stat")?.map(normalize_statistic),
                        stat.opt_u32_ci("period")?,
                    )
                }
                None => (None, None, q.opt_u32_ci("period")?),
            };
            Ok(MetricQuery {
                id: q.opt_str_ci("id")?.unwrap_or_default().to_string(),
                expression: non_empty(q.opt_str_ci("expression")?),
                metric,
                statistic,
                period_seconds,
                label: non_empty(q.opt_str_ci("label")?),
                return_data: q.opt_bool_ci("returnData")?.unwrap_or(false),
            })
        })
        .collect()
}

/// `{namespace, name, dimensions: {..}}` (EventBridge) or
/// `{Namespace, MetricName, Dimensions: [{name, value}]}` (SNS).
fn metric_identity(m: &Obj) -> Result<MetricIdentity> {
    let name = match m.opt_str("name")? {
        Some(n) => n,
        None => m.str("MetricName")?,
    };
    Ok(MetricIdentity {
        namespace: m.opt_str_ci("namespace")?.unwrap_or_default().to_string(),
        name: name.to_string(),
        dimensions: dimensions(m)?,
    })
}

/// Dimensions as a map (EventBridge, direct; may be `{}`) or as a list of
/// `{"value", "name"}` with lowercase keys (SNS; may be `[]`).
fn dimensions(parent: &Obj) -> Result<BTreeMap<String, String>> {
    let key = if parent.map.contains_key("dimensions") {
        "dimensions"
    } else {
        "Dimensions"
    };
    let path = parent.child_path(key);
    let mut out = BTreeMap::new();
    match parent.map.get(key) {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                out.insert(
                    k.clone(),
                    scalar_string(parent.shape, &format!("{path}.{k}"), v)?,
                );
            }
        }
        Some(Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                let ipath = format!("{path}[{i}]");
                let map = item.as_object().ok_or_else(|| AlarmError::WrongType {
                    shape: parent.shape,
                    path: ipath.clone(),
                    expected: "an object with name and value",
                    found: describe(item),
                })?;
                let d = Obj {
                    shape: parent.shape,
                    path: ipath,
                    map,
                };
                let name = d.str_ci("name")?;
                let value = match d.get_ci("value") {
                    Some(v) => scalar_string(d.shape, &d.child_path("value"), v)?,
                    None => {
                        return Err(AlarmError::MissingField {
                            shape: d.shape,
                            path: d.child_path("value"),
                        })
                    }
                };
                out.insert(name.to_string(), value);
            }
        }
        Some(other) => {
            return Err(AlarmError::WrongType {
                shape: parent.shape,
                path,
                expected: "a map or a list of {name, value}",
                found: describe(other),
            })
        }
    }
    Ok(out)
}

fn sns_message(root: Obj, topic_arn: Option<&str>) -> Result<Alarm> {
    let name = root.str("AlarmName")?.to_string();
    let (arn, account, region, arn_origin) = match root.opt_str("AlarmArn")? {
        Some(arn) => {
            let parts = parse_alarm_arn(&root, "AlarmArn", arn)?;
            let account = root
                .opt_str("AWSAccountId")?
                .map_or_else(|| parts.account.clone(), str::to_string);
            (arn.to_string(), account, parts.region, ArnOrigin::Event)
        }
        None => rebuild_arn(&root, &name, topic_arn)?,
    };
    let state = root.state("NewStateValue")?;
    let previous_state = match root.opt_str("OldStateValue")? {
        Some(_) => Some(root.state("OldStateValue")?),
        None => None,
    };
    let changed_at = root.timestamp("StateChangeTime", root.str("StateChangeTime")?)?;
    let reason = root
        .opt_str("NewStateReason")?
        .unwrap_or_default()
        .to_string();
    let description = non_empty(root.opt_str("AlarmDescription")?);

    let condition = if let Some(rule) = root.opt_str("AlarmRule")? {
        let triggering_children = match root.opt_arr("TriggeringChildren")? {
            Some(children) => children
                .iter()
                .filter_map(|c| c.get("Arn").and_then(Value::as_str).map(str::to_string))
                .collect(),
            None => vec![],
        };
        AlarmCondition::Composite(CompositeCondition {
            rule: Some(rule.to_string()),
            triggering_children,
        })
    } else if let Some(trigger) = root.opt_obj("Trigger")? {
        sns_trigger(&trigger)?
    } else {
        AlarmCondition::Unknown
    };

    Ok(Alarm {
        name,
        arn,
        account,
        region,
        state,
        previous_state,
        reason,
        changed_at,
        description,
        condition,
        shape: EventShape::Sns,
        // SNS messages carry no contributor identity (AWS documents none).
        contributor: None,
        arn_origin,
        muted: None,
    })
}

/// `arn:<partition>:cloudwatch:<region>:<account>:alarm:<name>` for an SNS message
/// older than `AlarmArn`: the account from `AWSAccountId`, the Region from its
/// display name (`"EU (Ireland)"`), else from the topic that delivered the message.
fn rebuild_arn(
    root: &Obj,
    name: &str,
    topic_arn: Option<&str>,
) -> Result<(String, String, String, ArnOrigin)> {
    let account = match root.opt_str("AWSAccountId")?.map(str::trim) {
        Some(a) if !a.is_empty() && !a.contains(':') && !a.contains(char::is_whitespace) => {
            a.to_string()
        }
        Some(a) => {
            return Err(AlarmError::CannotRebuildArn {
                missing: format!("`AWSAccountId` is not an account id: {:?}", truncate(a, 60)),
            })
        }
        None => {
            return Err(AlarmError::CannotRebuildArn {
                missing: "`AWSAccountId` is missing".into(),
            })
        }
    };
    let region_name = root.opt_str("Region")?;
    let (region, partition, origin) = match region_name.and_then(region_from_display_name) {
        Some(r) => (r.code.to_string(), r.partition, ArnOrigin::RegionName),
        None => {
            let Some((region, partition)) = topic_arn.and_then(topic_region) else {
                let region_problem = match region_name {
                    Some(r) => format!(
                        "`Region` {:?} is not a Region name we know",
                        truncate(r, 60)
                    ),
                    None => "`Region` is missing".to_string(),
                };
                return Err(AlarmError::CannotRebuildArn {
                    missing: format!(
                        "{region_problem}, and no SNS `TopicArn` gives the Region instead"
                    ),
                });
            };
            tracing::warn!(
                alarm = %truncate(name, 120),
                region_name = region_name.map(|r| truncate(r, 60)).unwrap_or_default(),
                region = %region,
                "SNS alarm message without AlarmArn names no Region we know; \
                 the alarm ARN is rebuilt with the Region of the SNS topic that delivered it"
            );
            (region, partition, ArnOrigin::TopicRegion)
        }
    };
    let arn = format!("arn:{partition}:cloudwatch:{region}:{account}:alarm:{name}");
    Ok((arn, account, region, origin))
}

/// The Region and partition of `arn:<partition>:sns:<region>:<account>:<topic>`.
fn topic_region(topic_arn: &str) -> Option<(String, &'static str)> {
    let parts: Vec<&str> = topic_arn.splitn(6, ':').collect();
    if parts.len() == 6 && parts[0] == "arn" && parts[2] == "sns" && !parts[3].is_empty() {
        let region = parts[3];
        let looks_like_region = region.len() <= 30
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        looks_like_region.then(|| (region.to_string(), partition_of(region)))
    } else {
        None
    }
}

fn sns_trigger(trigger: &Obj) -> Result<AlarmCondition> {
    let statistic = match trigger.opt_str("ExtendedStatistic")? {
        Some(ext) => Some(ext.to_string()),
        None => trigger.opt_str("Statistic")?.map(normalize_statistic),
    };
    let unit = trigger
        .opt_str("Unit")?
        .filter(|u| !u.is_empty() && *u != "None");
    let period_seconds = trigger.opt_u32_ci("Period")?;
    let info = ConditionFacts {
        threshold: trigger.opt_f64("Threshold")?,
        threshold_metric_id: non_empty(trigger.opt_str("ThresholdMetricId")?),
        comparison: non_empty(trigger.opt_str("ComparisonOperator")?),
        evaluation_periods: trigger.opt_u32_ci("EvaluationPeriods")?,
        unit: unit.map(str::to_string),
        treat_missing_data: trigger
            .opt_str("TreatMissingData")?
            .and_then(clean_treat_missing),
        period_seconds,
        ..ConditionFacts::default()
    };
    let queries = match trigger.opt_arr("Metrics")? {
        Some(items) if !items.is_empty() => metric_queries(trigger, "Metrics", items)?,
        _ => match trigger.opt_str("MetricName")? {
            Some(_) => vec![MetricQuery {
                id: String::new(),
                expression: None,
                metric: Some(metric_identity(trigger)?),
                statistic,
                period_seconds,
                label: None,
                return_data: true,
            }],
            None => vec![],
        },
    };
    Ok(condition_from_queries(queries, info))
}

/// `"- TreatMissingData:    missing"` (seen in SNS messages) becomes `missing`.
fn clean_treat_missing(s: &str) -> Option<String> {
    let s = s.trim().trim_start_matches('-').trim();
    let s = s.strip_prefix("TreatMissingData:").unwrap_or(s).trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// SNS writes `AVERAGE`, `SAMPLE_COUNT`; EventBridge writes `Average`, `SampleCount`.
fn normalize_statistic(s: &str) -> String {
    match s.to_ascii_uppercase().replace('_', "").as_str() {
        "AVERAGE" => "Average".into(),
        "SUM" => "Sum".into(),
        "MINIMUM" => "Minimum".into(),
        "MAXIMUM" => "Maximum".into(),
        "SAMPLECOUNT" => "SampleCount".into(),
        _ => s.to_string(),
    }
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn scalar_string(shape: &'static str, path: &str, v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(AlarmError::WrongType {
            shape,
            path: path.to_string(),
            expected: "a string",
            found: describe(other),
        }),
    }
}

struct ArnParts {
    region: String,
    account: String,
}

/// `arn:<partition>:cloudwatch:<region>:<account>:alarm:<name>`; the name may
/// itself hold colons.
fn parse_alarm_arn(obj: &Obj, key: &str, arn: &str) -> Result<ArnParts> {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    if parts.len() == 7
        && parts[0] == "arn"
        && parts[2] == "cloudwatch"
        && !parts[3].is_empty()
        && parts[5] == "alarm"
        && !parts[6].is_empty()
    {
        Ok(ArnParts {
            region: parts[3].to_string(),
            account: parts[4].to_string(),
        })
    } else {
        Err(AlarmError::InvalidArn {
            shape: obj.shape,
            path: obj.child_path(key),
            value: truncate(arn, 120),
        })
    }
}

/// A short description of what a value is, for "got ..." in errors.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {}", truncate(&n.to_string(), 40)),
        Value::String(s) => format!("the string {:?}", truncate(s, 60)),
        Value::Array(a) => format!("a list of {} items", a.len()),
        Value::Object(m) if m.is_empty() => "an empty object".into(),
        Value::Object(m) => {
            // Sorted, so the message does not depend on serde_json's map ordering.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let keys: Vec<String> = keys.into_iter().take(8).map(|k| truncate(k, 40)).collect();
            let more = if m.len() > 8 { ", ..." } else { "" };
            format!("an object with keys [{}{more}]", keys.join(", "))
        }
    }
}

/// A JSON object with the envelope name and path, so errors say exactly where.
struct Obj<'a> {
    shape: &'static str,
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn root(shape: &'static str, map: &'a Map<String, Value>) -> Self {
        Obj {
            shape,
            path: String::new(),
            map,
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`, treating `null` as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Like `get`, also trying the PascalCase spelling of a camelCase key.
    fn get_ci(&self, key: &str) -> Option<&'a Value> {
        self.get(key).or_else(|| self.get(&pascal(key)))
    }

    fn wrong(&self, key: &str, expected: &'static str, v: &Value) -> AlarmError {
        AlarmError::WrongType {
            shape: self.shape,
            path: self.child_path(key),
            expected,
            found: describe(v),
        }
    }

    fn missing(&self, key: &str) -> AlarmError {
        AlarmError::MissingField {
            shape: self.shape,
            path: self.child_path(key),
        }
    }

    fn typed_str(&self, key: &str, v: Option<&'a Value>) -> Result<Option<&'a str>> {
        match v {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.typed_str(key, self.get(key))
    }

    fn opt_str_ci(&self, key: &str) -> Result<Option<&'a str>> {
        self.typed_str(key, self.get_ci(key))
    }

    fn str(&self, key: &str) -> Result<&'a str> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    fn str_ci(&self, key: &str) -> Result<&'a str> {
        self.opt_str_ci(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_obj(&self, key: &str) -> Result<Option<Obj<'a>>> {
        self.typed_obj(key, self.get(key))
    }

    fn opt_obj_ci(&self, key: &str) -> Result<Option<Obj<'a>>> {
        self.typed_obj(key, self.get_ci(key))
    }

    fn typed_obj(&self, key: &str, v: Option<&'a Value>) -> Result<Option<Obj<'a>>> {
        match v {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                shape: self.shape,
                path: self.child_path(key),
                map,
            })),
            Some(other) => Err(self.wrong(key, "an object", other)),
        }
    }

    fn obj(&self, key: &str) -> Result<Obj<'a>> {
        self.opt_obj(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_arr(&self, key: &str) -> Result<Option<&'a [Value]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.as_slice())),
            Some(other) => Err(self.wrong(key, "a list", other)),
        }
    }

    fn arr(&self, key: &str) -> Result<&'a [Value]> {
        self.opt_arr(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            // Some producers quote numbers.
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(v @ Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.wrong(key, "a number", v)),
            Some(other) => Err(self.wrong(key, "a number", other)),
        }
    }

    /// Periods reach 86400 (a `u16` overflows there) and may arrive quoted.
    fn opt_u32_ci(&self, key: &str) -> Result<Option<u32>> {
        let k = if self.get(key).is_some() {
            key.to_string()
        } else {
            pascal(key)
        };
        match self.get(&k) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.wrong(&k, "a whole number", v)),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(v @ Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.wrong(&k, "a whole number", v)),
            Some(other) => Err(self.wrong(&k, "a whole number", other)),
        }
    }

    fn opt_bool_ci(&self, key: &str) -> Result<Option<bool>> {
        match self.get_ci(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    fn state(&self, key: &str) -> Result<AlarmState> {
        let value = self.str(key)?;
        AlarmState::parse(value).ok_or_else(|| AlarmError::InvalidState {
            shape: self.shape,
            path: self.child_path(key),
            value: truncate(value, 60),
        })
    }

    fn timestamp(&self, key: &str, value: &str) -> Result<DateTime<Utc>> {
        parse_timestamp(value).ok_or_else(|| AlarmError::InvalidTimestamp {
            shape: self.shape,
            path: self.child_path(key),
            value: truncate(value, 60),
        })
    }
}

fn pascal(key: &str) -> String {
    let mut c = key.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An SNS alarm message as CloudWatch wrote them before `AlarmArn` existed.
    fn old_message(region: Option<&str>, account: Option<&str>) -> Value {
        let mut m = json!({
            "AlarmName": "edge: cpu (prod)", "AlarmDescription": "Created from EC2 Console",
            "NewStateValue": "ALARM", "NewStateReason": "Threshold Crossed: 1 datapoint (100.0) was greater than or equal to the threshold (90.0).",
            "StateChangeTime": "2013-10-09T18:04:38.882+0000", "OldStateValue": "OK",
            "Trigger": {"MetricName": "CPUUtilization", "Namespace": "AWS/EC2", "Statistic": "AVERAGE", "Unit": null,
                        "Dimensions": [{"name": "InstanceId", "value": "i-a7f950df"}], "Period": 300,
                        "EvaluationPeriods": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold", "Threshold": 90.0}
        });
        if let Some(r) = region {
            m["Region"] = json!(r);
        }
        if let Some(a) = account {
            m["AWSAccountId"] = json!(a);
        }
        m
    }

    fn in_sns(message: &Value, topic: Option<&str>) -> Value {
        let mut sns =
            json!({"Type": "Notification", "MessageId": "m", "Message": message.to_string()});
        if let Some(t) = topic {
            sns["TopicArn"] = json!(t);
        }
        json!({"Records": [{"EventSource": "aws:sns", "Sns": sns}]})
    }

    fn one(event: &Value) -> Alarm {
        let mut alarms = normalize(event).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(alarms.len(), 1);
        alarms.remove(0)
    }

    #[test]
    fn arn_is_rebuilt_from_every_spelling_of_the_region_in_every_partition() {
        for (region, arn) in [
            (
                "US (Virginia)",
                "arn:aws:cloudwatch:us-east-1:221645429527:alarm:edge: cpu (prod)",
            ),
            (
                "US - N. Virginia",
                "arn:aws:cloudwatch:us-east-1:221645429527:alarm:edge: cpu (prod)",
            ),
            (
                "US East (N. Virginia)",
                "arn:aws:cloudwatch:us-east-1:221645429527:alarm:edge: cpu (prod)",
            ),
            (
                "EU (Ireland)",
                "arn:aws:cloudwatch:eu-west-1:221645429527:alarm:edge: cpu (prod)",
            ),
            (
                "Europe (Ireland)",
                "arn:aws:cloudwatch:eu-west-1:221645429527:alarm:edge: cpu (prod)",
            ),
            (
                "EU (Milan)",
                "arn:aws:cloudwatch:eu-south-1:221645429527:alarm:edge: cpu (prod)",
            ),
            (
                "Asia Pacific (Tokyo)",
                "arn:aws:cloudwatch:ap-northeast-1:221645429527:alarm:edge: cpu (prod)",
            ),
            (
                "China (Ningxia)",
                "arn:aws-cn:cloudwatch:cn-northwest-1:221645429527:alarm:edge: cpu (prod)",
            ),
            (
                "AWS GovCloud (US-East)",
                "arn:aws-us-gov:cloudwatch:us-gov-east-1:221645429527:alarm:edge: cpu (prod)",
            ),
        ] {
            let a = one(&old_message(Some(region), Some("221645429527")));
            assert_eq!(a.arn, arn, "{region}");
            assert_eq!(a.arn_origin, ArnOrigin::RegionName);
            assert_eq!(a.account, "221645429527");
            // The rebuilt ARN reads back as the same alarm.
            let parts: Vec<&str> = a.arn.splitn(7, ':').collect();
            assert_eq!(
                (parts[3], parts[6]),
                (a.region.as_str(), "edge: cpu (prod)")
            );
        }
    }

    #[test]
    fn unknown_region_takes_the_topic_region_in_and_out_of_the_records_envelope() {
        let m = old_message(Some("Atlantis (North)"), Some("221645429527"));
        let a = one(&in_sns(
            &m,
            Some("arn:aws:sns:ap-southeast-2:221645429527:alarms"),
        ));
        assert_eq!(a.region, "ap-southeast-2");
        assert_eq!(a.arn_origin, ArnOrigin::TopicRegion);
        assert_eq!(
            a.arn,
            "arn:aws:cloudwatch:ap-southeast-2:221645429527:alarm:edge: cpu (prod)"
        );
        // No Region at all, GovCloud topic: the topic's partition too.
        let m = old_message(None, Some("221645429527"));
        let b = normalize_sns_message(&m, "arn:aws-us-gov:sns:us-gov-west-1:221645429527:alarms")
            .unwrap()
            .remove(0);
        assert_eq!(
            b.arn,
            "arn:aws-us-gov:cloudwatch:us-gov-west-1:221645429527:alarm:edge: cpu (prod)"
        );
    }

    #[test]
    fn nothing_to_rebuild_from_is_a_clear_error() {
        let no_region = in_sns(&old_message(Some("Atlantis (North)"), Some("1")), None);
        let e = normalize(&no_region).unwrap_err().to_string();
        assert_eq!(
            e,
            "SNS record 0: SNS alarm message has no `AlarmArn` and the ARN cannot be rebuilt from account, \
             Region and name: `Region` \"Atlantis (North)\" is not a Region name we know, and no SNS `TopicArn` gives the Region instead"
        );
        let e = normalize(&old_message(None, Some("1")))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("`Region` is missing, and no SNS `TopicArn` gives the Region instead"),
            "{e}"
        );
        let e = normalize(&old_message(Some("EU (Ireland)"), None))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("`AWSAccountId` is missing"), "{e}");
        let e = normalize(&old_message(Some("EU (Ireland)"), Some("12:34"))).unwrap_err();
        assert!(
            e.to_string()
                .contains("`AWSAccountId` is not an account id: \"12:34\""),
            "{e}"
        );
        assert!(!e.retryable());
        // A topic ARN that is not one does not count.
        let m = old_message(Some("Atlantis (North)"), Some("1"));
        assert!(normalize_sns_message(&m, "not-an-arn").is_err());
    }

    #[test]
    fn an_alarm_arn_wins_over_the_region_name() {
        let mut m = old_message(Some("US - N. Virginia"), Some("221645429527"));
        m["AlarmArn"] = json!("arn:aws:cloudwatch:eu-west-1:221645429527:alarm:edge: cpu (prod)");
        let a = one(&m);
        assert_eq!(a.region, "eu-west-1");
        assert_eq!(a.arn_origin, ArnOrigin::Event);
    }

    #[test]
    fn contributor_event_without_its_contributor_is_refused() {
        let e = json!({"version": "0", "detail-type": "CloudWatch Alarm Contributor State Change",
            "source": "aws.cloudwatch", "account": "1", "time": "2026-11-25T10:00:00Z",
            "resources": ["arn:aws:cloudwatch:eu-west-1:1:alarm:x"],
            "detail": {"alarmName": "x", "state": {"value": "ALARM", "timestamp": "2026-11-25T10:00:00.000+0000"}}});
        assert_eq!(
            normalize(&e).unwrap_err().to_string(),
            "EventBridge event: field `detail.alarmContributor` is missing"
        );
        let mut bad = e.clone();
        bad["detail"]["alarmContributor"] = json!({"id": "", "attributes": {}});
        assert!(normalize(&bad)
            .unwrap_err()
            .to_string()
            .contains("`detail.alarmContributor.id` should be a contributor id"));
        bad["detail"]["alarmContributor"] = json!({"id": "a/b", "attributes": {}});
        assert!(
            normalize(&bad).is_err(),
            "a `/` would make the source id ambiguous"
        );
        let mut ok = e;
        ok["detail"]["alarmContributor"] =
            json!({"id": "c1", "attributes": {"VpnId": "vpn-1", "Skip": null, "N": 3}});
        let a = one(&ok);
        let c = a.contributor.unwrap();
        assert_eq!(c.attributes.len(), 2);
        assert_eq!(c.attributes["N"], "3");
    }

    #[test]
    fn other_detail_types_are_still_refused_by_name() {
        let e = json!({"detail-type": "CloudWatch Alarm Configuration Change", "source": "aws.cloudwatch",
                       "resources": [], "detail": {}});
        let msg = normalize(&e).unwrap_err().to_string();
        assert!(
            msg.starts_with(
                "unsupported EventBridge detail-type \"CloudWatch Alarm Configuration Change\""
            ),
            "{msg}"
        );
        assert!(
            msg.contains("\"CloudWatch Alarm Contributor State Change\""),
            "{msg}"
        );
    }

    #[test]
    fn sns_metrics_insights_trigger_is_an_insights_alarm() {
        let mut m = old_message(Some("EU (Ireland)"), Some("1"));
        m["Trigger"] = json!({"Period": 60, "EvaluationPeriods": 1, "ComparisonOperator": "LessThanThreshold",
            "Threshold": 1.0, "TreatMissingData": "- TreatMissingData:    notBreaching",
            "Metrics": [{"Expression": "SELECT MAX(TunnelState) FROM SCHEMA(\"AWS/VPN\", VpnId) WHERE VpnId = 'vpn-1'",
                         "Id": "q1", "ReturnData": true}]});
        let a = one(&m);
        let AlarmCondition::Insights(q) = &a.condition else {
            panic!("{:?}", a.condition)
        };
        assert_eq!(q.period_seconds, Some(60));
        assert_eq!(q.threshold, Some(1.0));
        assert_eq!(q.treat_missing_data.as_deref(), Some("notBreaching"));
        assert_eq!(q.statistic.as_deref(), Some("Maximum"));
        assert!(!q.is_multi_series(), "no GROUP BY: one time series");
        assert!(!a.is_multi_series_summary());
        // The WHERE equality reads as the dimension.
        assert_eq!(a.vpn_id(), Some("vpn-1"));
        // A query this reader cannot follow keeps its text.
        m["Trigger"]["Metrics"][0]["Expression"] = json!("SELECT MEDIAN(x) FROM y");
        let AlarmCondition::Insights(q) = one(&m).condition else {
            panic!("not insights")
        };
        assert_eq!(
            (q.query.as_str(), q.metric, q.statistic),
            ("SELECT MEDIAN(x) FROM y", None, None)
        );
    }
}
