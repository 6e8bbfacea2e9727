//! Shape detection and lenient parsing of the three alarm envelopes.
//!
//! Parsing walks `serde_json::Value` rather than deriving strict structs: AWS leaves
//! fields out, sends `null` where a string is expected, and writes the same field
//! in three casings (DESIGN.md section 3). Every failure names the envelope and the
//! path of the field, and values quoted in errors are cut short.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::time::parse_timestamp;
use super::{
    Alarm, AlarmCondition, AlarmState, CompositeCondition, EventShape, MathCondition,
    MetricCondition, MetricIdentity, MetricQuery, MuteDetail,
};
use crate::error::Retryable;
use crate::text::truncate;

const DIRECT: &str = "direct alarm action";
const EVENTBRIDGE: &str = "EventBridge event";
const SNS: &str = "SNS alarm message";
const ALARM_DETAIL_TYPE: &str = "CloudWatch Alarm State Change";

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
         expected \"CloudWatch Alarm State Change\""
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
    normalize_single(event).map(|a| vec![a])
}

/// The shapes that hold exactly one alarm (also what an SNS `Message` may hold).
fn normalize_single(event: &Value) -> Result<Alarm> {
    let Some(map) = event.as_object() else {
        return Err(AlarmError::UnknownShape {
            found: describe(event),
        });
    };
    if map.contains_key("alarmData") {
        direct_action(Obj::root(DIRECT, map))
    } else if map.contains_key("detail-type") {
        eventbridge(Obj::root(EVENTBRIDGE, map))
    } else if map.contains_key("AlarmName") && map.contains_key("NewStateValue") {
        sns_message(Obj::root(SNS, map))
    } else {
        Err(AlarmError::UnknownShape {
            found: describe(event),
        })
    }
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
    records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            sns_record(index, record).map_err(|e| match e {
                AlarmError::SnsMessageNotJson { .. } | AlarmError::InRecord { .. } => e,
                other => AlarmError::InRecord {
                    index,
                    inner: Box::new(other),
                },
            })
        })
        .collect()
}

fn sns_record(index: usize, record: &Value) -> Result<Alarm> {
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
    let message = sns.str("Message")?;
    let inner: Value =
        serde_json::from_str(message).map_err(|e| AlarmError::SnsMessageNotJson {
            index,
            reason: e.to_string(),
            start: truncate(message, 60),
        })?;
    // The message may be the classic alarm JSON or an EventBridge event that an
    // EventBridge rule published to the topic; never another SNS envelope.
    normalize_single(&inner)
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
    if detail_type != ALARM_DETAIL_TYPE {
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
        muted,
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
    Ok(condition_from_queries(
        queries,
        ThresholdInfo {
            threshold,
            threshold_metric_id: config.opt_str("thresholdMetricId")?.map(str::to_string),
            ..ThresholdInfo::default()
        },
    ))
}

#[derive(Default)]
struct ThresholdInfo {
    threshold: Option<f64>,
    threshold_metric_id: Option<String>,
    comparison: Option<String>,
    evaluation_periods: Option<u32>,
    unit: Option<String>,
    treat_missing_data: Option<String>,
}

/// One query with a metric and no expression is a plain metric alarm; anything with
/// an expression (math, anomaly band, Metrics Insights SQL) is a math alarm.
fn condition_from_queries(mut queries: Vec<MetricQuery>, t: ThresholdInfo) -> AlarmCondition {
    if queries.is_empty() {
        return AlarmCondition::Unknown;
    }
    let has_expression = queries.iter().any(|q| q.expression.is_some());
    if queries.len() == 1 && !has_expression && t.threshold_metric_id.is_none() {
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
        threshold_metric_id: t.threshold_metric_id,
        comparison: t.comparison,
        evaluation_periods: t.evaluation_periods,
    })
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

fn sns_message(root: Obj) -> Result<Alarm> {
    let name = root.str("AlarmName")?.to_string();
    let arn = root.str("AlarmArn")?.to_string();
    let arn_parts = parse_alarm_arn(&root, "AlarmArn", &arn)?;
    let account = root
        .opt_str("AWSAccountId")?
        .map_or_else(|| arn_parts.account.clone(), str::to_string);
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
        region: arn_parts.region,
        state,
        previous_state,
        reason,
        changed_at,
        description,
        condition,
        shape: EventShape::Sns,
        muted: None,
    })
}

fn sns_trigger(trigger: &Obj) -> Result<AlarmCondition> {
    let statistic = match trigger.opt_str("ExtendedStatistic")? {
        Some(ext) => Some(ext.to_string()),
        None => trigger.opt_str("Statistic")?.map(normalize_statistic),
    };
    let unit = trigger
        .opt_str("Unit")?
        .filter(|u| !u.is_empty() && *u != "None");
    let info = ThresholdInfo {
        threshold: trigger.opt_f64("Threshold")?,
        threshold_metric_id: non_empty(trigger.opt_str("ThresholdMetricId")?),
        comparison: non_empty(trigger.opt_str("ComparisonOperator")?),
        evaluation_periods: trigger.opt_u32_ci("EvaluationPeriods")?,
        unit: unit.map(str::to_string),
        treat_missing_data: trigger
            .opt_str("TreatMissingData")?
            .and_then(clean_treat_missing),
    };
    let period_seconds = trigger.opt_u32_ci("Period")?;
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
