//! The lifecycle notification published on the SNS topic, in the AWS Chatbot /
//! Amazon Q Developer custom notification schema (DESIGN.md section 6), so that
//! Chatbot renders it in Slack and notify-fanout reads it back without loss.
//!
//! Chatbot needs only `version`, `source` and `content.description`; we also set
//! `metadata.threadId` to the incident key (Chatbot threads on it) and carry the
//! whole structured notification in `metadata.additionalContext`, whose values must
//! be strings: the flat fields for people and filters, plus `pipeline` holding the
//! JSON of [`Notification`] for notify-fanout.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::closure::PostIncidentSummary;
use crate::incident::{Impact, Roles};
use crate::org::AccountInfo;

/// The key in `additionalContext` holding the full notification as JSON.
pub const PIPELINE_CONTEXT_KEY: &str = "pipeline";

/// What happened to the incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A new incident.
    Opened,
    /// The alarm fired again or another alarm joined; impact unchanged.
    Updated,
    /// Impact raised (e.g. both tunnels down).
    Escalated,
    /// Impact lowered while another alarm still fires.
    Deescalated,
    /// The diagnosis runbook reported its findings.
    Diagnosed,
    /// An alarm feeding the incident reports INSUFFICIENT_DATA.
    InsufficientData,
    /// A person or a step added a note (remediation, acknowledgement).
    Note,
    /// Every alarm is OK again, or a person resolved it from Slack; the incident is
    /// closed (with the post-incident summary).
    Resolved,
    /// A person took ownership (acknowledged, or took it over from someone else).
    Acknowledged,
    /// Nobody acknowledged the incident in time: the escalation re-notifies.
    Unanswered,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Opened => "opened",
            EventType::Updated => "updated",
            EventType::Escalated => "escalated",
            EventType::Deescalated => "deescalated",
            EventType::Diagnosed => "diagnosed",
            EventType::InsufficientData => "insufficient_data",
            EventType::Note => "note",
            EventType::Resolved => "resolved",
            EventType::Acknowledged => "acknowledged",
            EventType::Unanswered => "unanswered",
        }
    }
}

/// Whether the incident is still open after this event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

/// The alarm behind the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmSummary {
    /// The alarm's name, with the time series for one contributor of a
    /// multi-time-series alarm ([`crate::alarm::Alarm::label`]).
    pub name: String,
    pub arn: String,
    pub state: String,
    pub reason: String,
    pub url: String,
    /// What the alarm watches, in one line ([`crate::alarm::AlarmCondition::summary`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A labelled link a responder clicks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub label: String,
    pub url: String,
}

/// One diagnosis finding, as shown to people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingSummary {
    /// `critical`, `warning` or `info`.
    pub severity: String,
    pub title: String,
    pub evidence: String,
    pub next_step: String,
}

/// A line of the incident's timeline (used by the closing summary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub text: String,
    /// Who acted ([`crate::incident::Actor::label`]), when a person or step did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// One lifecycle change of one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub event: EventType,
    /// The dedupe key; also the Slack thread key.
    pub incident_key: String,
    pub title: String,
    pub summary: String,
    pub impact: Impact,
    pub status: IncidentStatus,
    /// `IncidentManager` or `OpsCenter`.
    pub backend: Option<String>,
    /// Incident record ARN or OpsItem id.
    pub incident_ref: Option<String>,
    pub incident_url: Option<String>,
    pub account: String,
    pub region: String,
    pub alarm: Option<AlarmSummary>,
    pub vpn_id: Option<String>,
    pub tunnel_ip: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub opened_at: Option<DateTime<Utc>>,
    /// For `resolved`: how long the incident lasted.
    pub duration_seconds: Option<u64>,
    pub next_steps: Vec<String>,
    pub links: Vec<Link>,
    pub findings: Vec<FindingSummary>,
    pub timeline: Vec<TimelineEntry>,
    /// Reporter, owner and team of the incident as of this event.
    #[serde(default)]
    pub roles: Roles,
    /// For `resolved`: the post-incident summary built from the incident's timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_incident: Option<PostIncidentSummary>,
    /// The same for every publication of this notification (given when its change was
    /// decided, `shared::effects::decided_item`): a notification published again after a
    /// lost answer is delivered to Slack once (notify-fanout keys its deliveries on it;
    /// absent, on the SNS message id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_id: Option<String>,
    /// The account's name, OU and tags (organization mode only, `shared::org`):
    /// shown on the card, matched by routing rules (`account_tags`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_info: Option<AccountInfo>,
}

impl Notification {
    /// The Chatbot custom notification JSON published to SNS.
    pub fn to_chatbot(&self) -> Value {
        let mut context: BTreeMap<&str, String> = BTreeMap::new();
        context.insert("event", self.event.as_str().into());
        context.insert("incidentKey", self.incident_key.clone());
        context.insert("impact", self.impact.value().to_string());
        context.insert(
            "status",
            match self.status {
                IncidentStatus::Open => "open".into(),
                IncidentStatus::Resolved => "resolved".into(),
            },
        );
        context.insert("account", self.account.clone());
        context.insert("region", self.region.clone());
        if let Some(r) = &self.incident_ref {
            context.insert("incident", r.clone());
        }
        if let Some(a) = &self.alarm {
            context.insert("alarm", a.name.clone());
        }
        if let Some(v) = &self.vpn_id {
            context.insert("vpnId", v.clone());
        }
        context.insert(
            PIPELINE_CONTEXT_KEY,
            serde_json::to_string(self).unwrap_or_default(),
        );

        let mut related: Vec<&str> = vec![];
        if let Some(a) = &self.alarm {
            related.push(&a.arn);
        }
        if let Some(r) = &self.incident_ref {
            related.push(r);
        }
        json!({
            "version": "1.0",
            "source": "custom",
            "id": format!("{}#{}", self.incident_key, self.event.as_str()),
            "content": {
                "textType": "client-markdown",
                "title": format!("{} [Impact {}] {}", status_icon(self), self.impact.value(), self.title),
                "description": self.chatbot_description(),
                "nextSteps": self.next_steps,
                "keywords": [self.event.as_str(), format!("impact-{}", self.impact.value())],
            },
            "metadata": {
                "threadId": self.incident_key,
                "summary": self.title,
                "eventType": self.event.as_str(),
                "relatedResources": related,
                "additionalContext": context,
            }
        })
    }

    fn chatbot_description(&self) -> String {
        let mut out = self.summary.clone();
        if let Some(a) = &self.alarm {
            out.push_str(&format!(
                "\n*Alarm:* {} is {} ({})",
                a.name, a.state, a.reason
            ));
        }
        for f in &self.findings {
            out.push_str(&format!("\n*[{}]* {}: {}", f.severity, f.title, f.evidence));
        }
        if let Some(d) = self.duration_seconds {
            out.push_str(&format!("\n*Duration:* {}", format_duration(d)));
        }
        for l in &self.links {
            out.push_str(&format!("\n<{}|{}>", l.url, l.label));
        }
        out
    }

    /// Reads our own Chatbot message back (notify-fanout). `None` when the message is
    /// a Chatbot message from someone else or carries no pipeline context.
    pub fn from_chatbot(message: &Value) -> Option<Result<Notification, serde_json::Error>> {
        let raw = message
            .get("metadata")?
            .get("additionalContext")?
            .get(PIPELINE_CONTEXT_KEY)?
            .as_str()?;
        Some(serde_json::from_str(raw))
    }

    /// SNS message attributes, so subscriptions can filter on them.
    pub fn message_attributes(&self) -> Vec<(&'static str, String)> {
        vec![
            ("event_type", self.event.as_str().to_string()),
            ("impact", self.impact.value().to_string()),
        ]
    }
}

fn status_icon(n: &Notification) -> &'static str {
    match (n.status, n.event) {
        (IncidentStatus::Resolved, _) => "✅ RESOLVED",
        (_, EventType::Diagnosed) => "🔎 DIAGNOSED",
        (_, EventType::Escalated) => "🔺 ESCALATED",
        _ => "🔴 OPEN",
    }
}

/// `1h 02m 05s`, `3m 10s`, `42s`.
pub fn format_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Notification {
        Notification {
            event: EventType::Opened,
            incident_key: "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN".into(),
            title: "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN".into(),
            summary: "The VPN connection to the remote site is not working.".into(),
            impact: Impact::MEDIUM,
            status: IncidentStatus::Open,
            backend: Some("OpsCenter".into()),
            incident_ref: Some("oi-0123456789ab".into()),
            incident_url: None,
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            alarm: Some(AlarmSummary {
                name: "vpn-tunnel-down".into(),
                arn: "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down".into(),
                state: "ALARM".into(),
                reason: "Threshold Crossed".into(),
                url: "https://example.invalid/alarm".into(),
                condition: None,
            }),
            vpn_id: Some("vpn-0a1b2c3d4e5f67890".into()),
            tunnel_ip: None,
            occurred_at: "2026-11-25T10:01:00Z".parse().unwrap(),
            opened_at: None,
            duration_seconds: None,
            next_steps: vec!["Check the customer gateway".into()],
            links: vec![],
            findings: vec![],
            timeline: vec![],
            roles: Roles::default(),
            post_incident: None,
            notification_id: None,
            account_info: None,
        }
    }

    #[test]
    fn to_chatbot_has_required_fields_and_thread_id() {
        let v = sample().to_chatbot();
        assert_eq!(v["version"], "1.0");
        assert_eq!(v["source"], "custom");
        assert!(v["content"]["description"]
            .as_str()
            .unwrap()
            .starts_with("The VPN connection"));
        assert_eq!(
            v["metadata"]["threadId"],
            "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN"
        );
        assert_eq!(v["metadata"]["additionalContext"]["impact"], "3");
        assert_eq!(
            v["metadata"]["additionalContext"]["vpnId"],
            "vpn-0a1b2c3d4e5f67890"
        );
        // Every additionalContext value is a string, as Chatbot requires.
        for (_, value) in v["metadata"]["additionalContext"].as_object().unwrap() {
            assert!(value.is_string());
        }
    }

    #[test]
    fn from_chatbot_round_trips() {
        let n = sample();
        let back = Notification::from_chatbot(&n.to_chatbot())
            .unwrap()
            .unwrap();
        assert_eq!(back, n);
        assert!(Notification::from_chatbot(&json!({"version": "1.0"})).is_none());
    }

    #[test]
    fn format_duration_is_readable() {
        assert_eq!(format_duration(42), "42s");
        assert_eq!(format_duration(190), "3m 10s");
        assert_eq!(format_duration(3725), "1h 02m 05s");
    }
}
