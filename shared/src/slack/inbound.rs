//! What arrives on the notification topic, recognized without ever failing: the
//! pipeline's own Chatbot notifications, other Chatbot custom notifications, raw
//! CloudWatch alarm messages, EventBridge events published to SNS, and anything
//! else as plain text (never dropped).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::alarm::{normalize_sns_message, Alarm, AlarmState};
use crate::incident::Impact;
use crate::notification::{EventType, IncidentStatus, Notification};

/// An SNS message as notify-fanout receives it.
#[derive(Debug, Clone, Copy)]
pub struct SnsMessage<'a> {
    pub topic_arn: &'a str,
    pub subject: Option<&'a str>,
    pub message: &'a str,
}

/// A Chatbot custom notification that is not ours (or whose pipeline context is
/// unreadable): shown from its `content`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatbotMessage {
    pub title: Option<String>,
    pub description: String,
    pub next_steps: Vec<String>,
    pub event_type: Option<String>,
    pub related: Vec<String>,
    /// Why our own pipeline context could not be read, when it was present.
    pub pipeline_error: Option<String>,
}

/// An EventBridge event (other than an alarm state change) delivered through SNS.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsEvent {
    pub id: Option<String>,
    pub source: String,
    pub detail_type: String,
    pub account: Option<String>,
    pub region: Option<String>,
    pub time: Option<String>,
    pub resources: Vec<String>,
    /// A title, description and severity found in well-known detail shapes
    /// (GuardDuty, Security Hub, AWS Health, ...).
    pub title: Option<String>,
    pub description: Option<String>,
    pub severity: Option<String>,
    pub detail: Value,
}

/// Text that is none of the above.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainMessage {
    pub subject: Option<String>,
    pub body: String,
}

/// One message from the topic, recognized.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// The pipeline's own notification (alarm-to-incident, vpn-troubleshoot).
    Incident(Box<Notification>),
    /// A CloudWatch alarm published straight to SNS (or an alarm EventBridge event).
    Alarm(Box<Alarm>),
    Chatbot(ChatbotMessage),
    Event(Box<AwsEvent>),
    Text(PlainMessage),
}

/// The facts routing rules and the mention policy look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFacts {
    /// `incident`, `alarm`, `chatbot`, `event` or `text`.
    pub kind: &'static str,
    /// Incident: `opened`, `resolved`, ...; alarm: `alarm`, `ok`,
    /// `insufficient_data`; event: the detail-type; chatbot: its `eventType` or
    /// `custom`; text: `text`.
    pub event_type: String,
    /// `incident-pipeline`, `aws.cloudwatch`, the event's `source`, `custom`
    /// (Chatbot) or `sns` (text).
    pub source: String,
    pub account: Option<String>,
    /// The account's tags (its OU's and its own) from the pipeline's notifications
    /// in organization mode (`shared::org`); empty otherwise.
    pub account_tags: BTreeMap<String, String>,
    /// Known for the pipeline's notifications only.
    pub impact: Option<Impact>,
    /// The incident has an owner (someone acknowledged it): people are no longer
    /// called for it.
    pub owned: bool,
}

/// How a message relates to a Slack thread (bot-token destinations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadIntent {
    /// The incident key (our notifications) or the alarm's source id (raw alarms:
    /// the ARN, with the contributor for one time series of a multi-time-series alarm).
    pub key: String,
    /// The message opens an incident: after a resolved one it starts a new thread.
    pub starts: bool,
    /// The incident is over after this message.
    pub resolves: bool,
    pub at: DateTime<Utc>,
}

impl Inbound {
    /// Recognizes an SNS message. Never fails: what is not recognized is text.
    pub fn parse(sns: SnsMessage<'_>) -> Inbound {
        let text = || {
            Inbound::Text(PlainMessage {
                subject: sns
                    .subject
                    .map(str::to_string)
                    .filter(|s| !s.trim().is_empty()),
                body: sns.message.to_string(),
            })
        };
        let Ok(value) = serde_json::from_str::<Value>(sns.message) else {
            return text();
        };
        let Some(map) = value.as_object() else {
            return text();
        };
        if is_chatbot(map) {
            return match Notification::from_chatbot(&value) {
                Some(Ok(n)) => Inbound::Incident(Box::new(n)),
                Some(Err(e)) => Inbound::Chatbot(chatbot(map, Some(e.to_string()))),
                None => Inbound::Chatbot(chatbot(map, None)),
            };
        }
        // The classic alarm JSON or an alarm EventBridge event; one alarm per message.
        // The topic stands in for the Region of an old message without `AlarmArn`.
        if let Ok(mut alarms) = normalize_sns_message(&value, sns.topic_arn) {
            if alarms.len() == 1 {
                if let Some(alarm) = alarms.pop() {
                    return Inbound::Alarm(Box::new(alarm));
                }
            }
        }
        if let Some(event) = aws_event(map) {
            return Inbound::Event(Box::new(event));
        }
        text()
    }

    /// What routing and the mention policy decide on. `topic_arn` supplies the
    /// account when the message has none.
    pub fn facts(&self, topic_arn: &str) -> RouteFacts {
        let topic_account = arn_account(topic_arn);
        match self {
            Inbound::Incident(n) => RouteFacts {
                kind: "incident",
                event_type: n.event.as_str().to_string(),
                source: "incident-pipeline".into(),
                account: Some(n.account.clone())
                    .filter(|a| !a.is_empty())
                    .or(topic_account),
                account_tags: n
                    .account_info
                    .as_ref()
                    .map(|a| a.tags.clone())
                    .unwrap_or_default(),
                impact: Some(n.impact),
                owned: n.roles.owner.is_some(),
            },
            Inbound::Alarm(a) => RouteFacts {
                kind: "alarm",
                event_type: a.state.as_str().to_ascii_lowercase(),
                source: "aws.cloudwatch".into(),
                account: Some(a.account.clone())
                    .filter(|a| !a.is_empty())
                    .or(topic_account),
                account_tags: BTreeMap::new(),
                impact: None,
                owned: false,
            },
            Inbound::Chatbot(c) => RouteFacts {
                kind: "chatbot",
                event_type: c.event_type.clone().unwrap_or_else(|| "custom".into()),
                source: "custom".into(),
                account: topic_account,
                account_tags: BTreeMap::new(),
                impact: None,
                owned: false,
            },
            Inbound::Event(e) => RouteFacts {
                kind: "event",
                event_type: e.detail_type.clone(),
                source: e.source.clone(),
                account: e.account.clone().or(topic_account),
                account_tags: BTreeMap::new(),
                impact: None,
                owned: false,
            },
            Inbound::Text(_) => RouteFacts {
                kind: "text",
                event_type: "text".into(),
                source: "sns".into(),
                account: topic_account,
                account_tags: BTreeMap::new(),
                impact: None,
                owned: false,
            },
        }
    }

    /// The thread this message belongs to, for incidents and alarms (not for an
    /// incident without a key: all of those would share one thread).
    pub fn thread(&self) -> Option<ThreadIntent> {
        let intent = match self {
            Inbound::Incident(n) => Some(ThreadIntent {
                key: n.incident_key.clone(),
                starts: n.event == EventType::Opened,
                resolves: n.status == IncidentStatus::Resolved,
                at: n.occurred_at,
            }),
            // One thread per alarm, or per time series of a multi-time-series alarm.
            Inbound::Alarm(a) => Some(ThreadIntent {
                key: a.source_id(),
                starts: a.state == AlarmState::Alarm,
                resolves: a.state == AlarmState::Ok,
                at: a.changed_at,
            }),
            _ => None,
        };
        intent.filter(|t| !t.key.trim().is_empty())
    }

    /// The incident key for logs (`-` when the message has none).
    pub fn log_key(&self) -> String {
        self.thread().map_or_else(|| "-".to_string(), |t| t.key)
    }
}

fn is_chatbot(map: &Map<String, Value>) -> bool {
    map.get("version").is_some_and(Value::is_string)
        && map.get("source").is_some_and(Value::is_string)
        && map.get("content").is_some_and(Value::is_object)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => cur.get(i)?,
            Err(_) => cur.get(*p)?,
        };
    }
    cur.as_str().map(str::trim).filter(|s| !s.is_empty())
}

fn chatbot(map: &Map<String, Value>, pipeline_error: Option<String>) -> ChatbotMessage {
    let root = Value::Object(map.clone());
    let strings = |path: &[&str]| -> Vec<String> {
        let mut cur = &root;
        for p in path {
            match cur.get(*p) {
                Some(v) => cur = v,
                None => return vec![],
            }
        }
        cur.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    ChatbotMessage {
        title: str_at(&root, &["content", "title"]).map(str::to_string),
        description: str_at(&root, &["content", "description"])
            .unwrap_or_default()
            .to_string(),
        next_steps: strings(&["content", "nextSteps"]),
        event_type: str_at(&root, &["metadata", "eventType"]).map(str::to_string),
        related: strings(&["metadata", "relatedResources"]),
        pipeline_error,
    }
}

fn aws_event(map: &Map<String, Value>) -> Option<AwsEvent> {
    let detail_type = map.get("detail-type")?.as_str()?.trim();
    let source = map.get("source")?.as_str()?.trim();
    if detail_type.is_empty() || source.is_empty() {
        return None;
    }
    let detail = map.get("detail").cloned().unwrap_or(Value::Null);
    let s = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
    let title = str_at(&detail, &["title"])
        .or_else(|| str_at(&detail, &["findings", "0", "Title"]))
        .or_else(|| str_at(&detail, &["eventTypeCode"]))
        .map(str::to_string);
    let description = str_at(&detail, &["description"])
        .or_else(|| str_at(&detail, &["findings", "0", "Description"]))
        .or_else(|| str_at(&detail, &["eventDescription", "0", "latestDescription"]))
        .map(str::to_string);
    let severity = match detail.get("severity") {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => str_at(&detail, &["findings", "0", "Severity", "Label"]).map(str::to_string),
    };
    Some(AwsEvent {
        id: s("id"),
        source: source.to_string(),
        detail_type: detail_type.to_string(),
        account: s("account"),
        region: s("region"),
        time: s("time"),
        resources: map
            .get("resources")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        title,
        description,
        severity,
        detail,
    })
}

/// The account of an ARN (`arn:aws:sns:eu-west-1:123456789012:topic`).
pub fn arn_account(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        .then(|| account.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "arn:aws:sns:eu-west-1:111122223333:incident-notifications";

    fn parse(subject: Option<&str>, message: &str) -> Inbound {
        Inbound::parse(SnsMessage {
            topic_arn: TOPIC,
            subject,
            message,
        })
    }

    #[test]
    fn plain_text_becomes_text_with_topic_account() {
        let i = parse(Some("Hello"), "Deployment finished");
        assert_eq!(
            i,
            Inbound::Text(PlainMessage {
                subject: Some("Hello".into()),
                body: "Deployment finished".into()
            })
        );
        let f = i.facts(TOPIC);
        assert_eq!(
            (f.kind, f.event_type.as_str(), f.source.as_str()),
            ("text", "text", "sns")
        );
        assert_eq!(f.account.as_deref(), Some("111122223333"));
        assert!(i.thread().is_none());
    }

    #[test]
    fn our_notification_threads_by_incident_key_unless_the_key_is_blank() {
        let mut n: Notification = serde_json::from_value(serde_json::json!({
            "event": "opened", "incident_key": "VPN connection vpn-1 is DOWN", "title": "t", "summary": "s",
            "impact": 2, "status": "open", "backend": null, "incident_ref": null, "incident_url": null,
            "account": "123456789012", "region": "eu-west-1", "alarm": null, "vpn_id": null, "tunnel_ip": null,
            "occurred_at": "2026-11-25T10:01:00Z", "opened_at": null, "duration_seconds": null,
            "next_steps": [], "links": [], "findings": [], "timeline": []
        }))
        .unwrap();
        let i = parse(None, &n.to_chatbot().to_string());
        let t = i.thread().unwrap();
        assert_eq!(
            (t.key.as_str(), t.starts, t.resolves),
            ("VPN connection vpn-1 is DOWN", true, false)
        );
        let f = i.facts(TOPIC);
        assert_eq!(
            (f.kind, f.event_type.as_str(), f.impact),
            ("incident", "opened", Impact::new(2))
        );
        n.incident_key = "  ".into();
        assert!(parse(None, &n.to_chatbot().to_string()).thread().is_none());
    }

    #[test]
    fn json_that_is_nothing_known_is_text_too() {
        assert!(matches!(parse(None, r#"{"hello": 1}"#), Inbound::Text(_)));
        assert!(matches!(parse(None, "[1,2]"), Inbound::Text(_)));
        assert!(matches!(parse(None, ""), Inbound::Text(_)));
    }

    #[test]
    fn classic_alarm_json_is_an_alarm_threaded_by_arn() {
        let msg = r#"{"AlarmName":"vpn-tunnel-down","AlarmDescription":null,"AWSAccountId":"123456789012",
            "NewStateValue":"OK","NewStateReason":"back","StateChangeTime":"2026-11-25T10:31:00.000+0000",
            "Region":"EU (Ireland)","AlarmArn":"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down",
            "OldStateValue":"ALARM","Trigger":{"MetricName":"TunnelState","Namespace":"AWS/VPN","Statistic":"MINIMUM",
            "Dimensions":[{"value":"vpn-0a1b2c3d4e5f67890","name":"VpnId"}],"Period":60,"EvaluationPeriods":3,
            "ComparisonOperator":"LessThanThreshold","Threshold":1.0}}"#;
        let i = parse(Some("OK: \"vpn-tunnel-down\""), msg);
        let Inbound::Alarm(a) = &i else {
            panic!("{i:?}")
        };
        assert_eq!(a.vpn_id(), Some("vpn-0a1b2c3d4e5f67890"));
        let t = i.thread().unwrap();
        assert_eq!(
            t.key,
            "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down"
        );
        assert!(t.resolves && !t.starts);
        let f = i.facts(TOPIC);
        assert_eq!(
            (f.kind, f.event_type.as_str(), f.source.as_str()),
            ("alarm", "ok", "aws.cloudwatch")
        );
        assert_eq!(f.account.as_deref(), Some("123456789012"));
    }

    #[test]
    fn old_alarm_message_without_arn_is_an_alarm_not_text() {
        // Older CloudWatch messages: no AlarmArn, Region as an old display name.
        let msg = r#"{"AlarmName":"edge cpu (eu)","AlarmDescription":null,"AWSAccountId":"123456789012",
            "NewStateValue":"ALARM","NewStateReason":"Threshold Crossed","StateChangeTime":"2015-07-17T15:18:01.441+0000",
            "Region":"EU - Ireland","OldStateValue":"OK","Trigger":{"MetricName":"CPUUtilization",
            "Namespace":"AWS/EC2","Statistic":"AVERAGE","Unit":null,"Dimensions":[],"Period":300,
            "EvaluationPeriods":1,"ComparisonOperator":"GreaterThanThreshold","Threshold":90.0}}"#;
        let i = parse(Some("ALARM: \"edge cpu (eu)\" in EU - Ireland"), msg);
        let Inbound::Alarm(a) = &i else {
            panic!("{i:?}")
        };
        assert_eq!(
            a.arn,
            "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:edge cpu (eu)"
        );
        assert_eq!(i.thread().unwrap().key, a.arn);
        // A Region name nobody knows: the topic's Region (TOPIC is in eu-west-1).
        let unknown = msg.replace("EU - Ireland", "Atlantis (North)");
        let Inbound::Alarm(b) = parse(None, &unknown) else {
            panic!("not an alarm")
        };
        assert_eq!(b.region, "eu-west-1");
        assert_eq!(b.arn_origin, crate::alarm::ArnOrigin::TopicRegion);
    }

    #[test]
    fn contributor_alarm_event_threads_per_time_series() {
        let event = |id: &str, vpn: &str| {
            serde_json::json!({"version": "0", "id": "e", "detail-type": "CloudWatch Alarm Contributor State Change",
                "source": "aws.cloudwatch", "account": "123456789012", "time": "2026-11-25T10:00:00Z",
                "region": "eu-west-1", "resources": ["arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnels"],
                "detail": {"alarmName": "vpn-tunnels", "alarmContributor": {"id": id, "attributes": {"VpnId": vpn}},
                    "state": {"value": "ALARM", "reason": "Threshold Crossed", "timestamp": "2026-11-25T10:00:00.000+0000"},
                    "configuration": {"metrics": [{"id": "m1", "expression": "SELECT MIN(TunnelState) FROM \"AWS/VPN\" GROUP BY VpnId",
                        "returnData": true, "period": 60}]}}})
            .to_string()
        };
        let a = parse(None, &event("1a2b3c4d5e6f7a8b", "vpn-1"));
        let b = parse(None, &event("8b7a6f5e4d3c2b1a", "vpn-2"));
        let (ka, kb) = (a.thread().unwrap().key, b.thread().unwrap().key);
        assert_ne!(ka, kb);
        assert_eq!(
            ka,
            "contributor/1a2b3c4d5e6f7a8b/arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnels"
        );
    }

    #[test]
    fn eventbridge_non_alarm_event_is_an_event_with_extracted_title() {
        let msg = r#"{"version":"0","id":"e1","detail-type":"GuardDuty Finding","source":"aws.guardduty",
            "account":"123456789012","time":"2026-11-25T10:00:00Z","region":"eu-west-1","resources":[],
            "detail":{"severity":8,"title":"Unusual API call","description":"An API was called from a known bad IP."}}"#;
        let Inbound::Event(e) = parse(None, msg) else {
            panic!()
        };
        assert_eq!(e.title.as_deref(), Some("Unusual API call"));
        assert_eq!(e.severity.as_deref(), Some("8"));
        assert_eq!(e.source, "aws.guardduty");
    }

    #[test]
    fn broken_alarm_eventbridge_event_is_still_shown_as_event() {
        let msg = r#"{"detail-type":"CloudWatch Alarm State Change","source":"aws.cloudwatch","detail":{}}"#;
        let i = parse(None, msg);
        assert!(
            matches!(&i, Inbound::Event(e) if e.detail_type == "CloudWatch Alarm State Change"),
            "{i:?}"
        );
    }

    #[test]
    fn foreign_chatbot_message_and_unreadable_pipeline_context() {
        let msg = r#"{"version":"1.0","source":"custom","content":{"description":"Build failed","title":"CI",
            "nextSteps":["retry"]},"metadata":{"eventType":"build","additionalContext":{"pipeline":"{not json"}}}"#;
        let Inbound::Chatbot(c) = parse(None, msg) else {
            panic!()
        };
        assert_eq!(c.title.as_deref(), Some("CI"));
        assert_eq!(c.next_steps, vec!["retry".to_string()]);
        assert_eq!(c.event_type.as_deref(), Some("build"));
        assert!(c.pipeline_error.is_some());
    }

    #[test]
    fn arn_account_needs_twelve_digits() {
        assert_eq!(arn_account(TOPIC).as_deref(), Some("111122223333"));
        assert_eq!(arn_account("arn:aws:sns:eu-west-1::t"), None);
        assert_eq!(arn_account("nonsense"), None);
    }
}
