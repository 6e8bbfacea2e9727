//! The incident as the pipeline sees it, and the capability every incident backend
//! offers (Incident Manager or OpsCenter).
//!
//! An incident is keyed by its dedupe key (for a VPN: "VPN connection {VpnId} is
//! DOWN"), so several alarms can feed one incident. Backends are adapters; the
//! lifecycle decisions (open, escalate, resolve) are made by alarm-to-incident.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{AwsError, Retryable};

/// Impact 1 (critical) to 5 (no impact), as Incident Manager defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Impact(u8);

impl Impact {
    pub const CRITICAL: Impact = Impact(1);
    pub const HIGH: Impact = Impact(2);
    pub const MEDIUM: Impact = Impact(3);
    pub const LOW: Impact = Impact(4);
    pub const NONE: Impact = Impact(5);

    pub fn new(value: u8) -> Option<Impact> {
        (1..=5).contains(&value).then_some(Impact(value))
    }

    pub fn value(self) -> u8 {
        self.0
    }

    /// True when `self` is worse than `other` (a lower number).
    pub fn is_more_severe_than(self, other: Impact) -> bool {
        self.0 < other.0
    }

    pub fn label(self) -> &'static str {
        match self.0 {
            1 => "Critical",
            2 => "High",
            3 => "Medium",
            4 => "Low",
            _ => "No impact",
        }
    }
}

impl TryFrom<u8> for Impact {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        Impact::new(v)
            .ok_or_else(|| format!("impact must be 1 (critical) to 5 (no impact), got {v}"))
    }
}

impl From<Impact> for u8 {
    fn from(i: Impact) -> u8 {
        i.0
    }
}

impl fmt::Display for Impact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.label())
    }
}

/// Where an incident lives: an Incident Manager incident record or an OpsItem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "backend", content = "id")]
pub enum IncidentRef {
    /// `arn:aws:ssm-incidents::<account>:incident-record/<plan>/<id>`
    IncidentManager(String),
    /// `oi-0123456789ab`
    OpsCenter(String),
}

impl IncidentRef {
    /// Recognizes an incident record ARN or an OpsItem id.
    pub fn parse(s: &str) -> Option<IncidentRef> {
        let s = s.trim();
        if s.starts_with("arn:") && s.contains(":ssm-incidents:") && s.contains(":incident-record/")
        {
            Some(IncidentRef::IncidentManager(s.to_string()))
        } else if s.len() > 3
            && s.starts_with("oi-")
            && s[3..].bytes().all(|b| b.is_ascii_hexdigit())
        {
            Some(IncidentRef::OpsCenter(s.to_string()))
        } else {
            None
        }
    }

    pub fn id(&self) -> &str {
        match self {
            IncidentRef::IncidentManager(s) | IncidentRef::OpsCenter(s) => s,
        }
    }

    /// Link to the incident in the console of `region`.
    pub fn console_url(&self, region: &str) -> String {
        match self {
            IncidentRef::IncidentManager(arn) => format!(
                "https://{region}.console.aws.amazon.com/systems-manager/incidents/incident/{}/home?region={region}",
                crate::text::url_encode(arn)
            ),
            IncidentRef::OpsCenter(id) => format!(
                "https://{region}.console.aws.amazon.com/systems-manager/opsitems/{id}?region={region}"
            ),
        }
    }
}

impl fmt::Display for IncidentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Who did something: a Slack user or an alarm. The roles of the incident process
/// (reporter, owner) and the people in the post-incident summary are actors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// The CloudWatch alarm that opened the incident.
    Alarm { name: String },
    /// A Slack user: `id` is the user id (`U0123ABCD`), `name` what Slack shows.
    Person { id: String, name: String },
}

impl Actor {
    /// Plain text for timelines and the incident backend: `Jane Doe (U0123ABCD)` or
    /// `alarm vpn-tunnel-down`.
    pub fn label(&self) -> String {
        match self {
            Actor::Alarm { name } => format!("alarm {name}"),
            Actor::Person { id, name } if name.is_empty() => id.clone(),
            Actor::Person { id, name } => format!("{name} ({id})"),
        }
    }

    /// The Slack user id of a person.
    pub fn slack_user(&self) -> Option<&str> {
        match self {
            Actor::Person { id, .. } => Some(id),
            Actor::Alarm { .. } => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// The roles of the incident process, shown on the incident and on its top-level
/// Slack message: the reporter (the alarm, or the person who declared it), the owner
/// (whoever acknowledged it last) and the team engaged (a Slack channel `C…` or user
/// group `S…` id, or a name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// A link attached to an incident (alarm, VPN connection, console pages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedItem {
    pub title: String,
    /// An ARN or a URL.
    pub target: String,
}

/// Everything a backend needs to open an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewIncident {
    /// The dedupe key: one open incident per key.
    pub key: String,
    pub title: String,
    pub summary: String,
    pub impact: Impact,
    /// Idempotency token derived from the triggering transition, so a retried
    /// delivery cannot open a second incident.
    pub client_token: String,
    /// Where the incident came from, e.g. the alarm ARN.
    pub source_arn: String,
    /// The triggering event as JSON text (cut to the backend's limit by the backend).
    pub raw_trigger: String,
    pub triggered_at: chrono::DateTime<chrono::Utc>,
    pub related: Vec<RelatedItem>,
    /// Structured details (alarm name, VPN id, ...), stored where the backend allows.
    pub details: BTreeMap<String, String>,
    /// OpsCenter category (`Availability`, `Cost`, `Performance`, `Recovery`,
    /// `Security`); Incident Manager has none.
    #[serde(default)]
    pub category: Option<String>,
}

/// An SSM Automation runbook to start for an incident (OpsCenter; Incident Manager
/// starts runbooks from the response plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunbookRequest {
    /// Name or ARN of the Automation document.
    pub document: String,
    /// Document parameters, each a list of values as SSM expects.
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Idempotency seed: the same seed never starts a second execution.
    pub client_token: String,
}

/// A timeline entry: a state change, a diagnosis, a person's note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub title: String,
    pub text: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// Structured data kept with the note where the backend allows.
    pub data: BTreeMap<String, String>,
}

/// A failure of an incident backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("{backend}: {message}")]
    Invalid {
        backend: &'static str,
        message: String,
    },
}

impl Retryable for BackendError {
    fn retryable(&self) -> bool {
        match self {
            BackendError::Aws(e) => e.retryable(),
            BackendError::Invalid { .. } => false,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            BackendError::Aws(e) => e.kind(),
            BackendError::Invalid { .. } => "BadInput",
        }
    }
}

/// The capability every incident backend offers. Implementations must be
/// idempotent where AWS lets them be (client tokens, dedupe strings).
#[async_trait]
pub trait IncidentBackend: Send + Sync {
    /// `IncidentManager` or `OpsCenter`, for logs and notifications.
    fn name(&self) -> &'static str;

    /// The open incident for a dedupe key, if the backend has one.
    async fn find_open(&self, key: &str) -> Result<Option<IncidentRef>, BackendError>;

    /// Opens an incident; a retried call with the same client token returns the
    /// same incident.
    async fn open(&self, incident: &NewIncident) -> Result<IncidentRef, BackendError>;

    /// Changes the impact of an open incident (escalation or de-escalation).
    async fn set_impact(
        &self,
        incident: &IncidentRef,
        impact: Impact,
        note: &Note,
    ) -> Result<(), BackendError>;

    /// Adds a timeline entry.
    async fn add_note(&self, incident: &IncidentRef, note: &Note) -> Result<(), BackendError>;

    /// Resolves the incident, recording `note` (the closing summary).
    async fn resolve(&self, incident: &IncidentRef, note: &Note) -> Result<(), BackendError>;

    /// Starts the diagnosis runbook for an open incident and records the execution
    /// on it. Returns the execution id, or `None` when the backend starts runbooks
    /// itself (Incident Manager: an action of the response plan). The default, for
    /// backends and test fakes that start no runbooks, does nothing.
    async fn start_runbook(
        &self,
        incident: &IncidentRef,
        runbook: &RunbookRequest,
    ) -> Result<Option<String>, BackendError> {
        let _ = (incident, runbook);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impact_accepts_one_to_five_only() {
        assert_eq!(Impact::new(1), Some(Impact::CRITICAL));
        assert_eq!(Impact::new(0), None);
        assert_eq!(Impact::new(6), None);
        assert!(Impact::CRITICAL.is_more_severe_than(Impact::MEDIUM));
        assert_eq!(Impact::MEDIUM.to_string(), "3 (Medium)");
        assert!(serde_json::from_str::<Impact>("7").is_err());
        assert_eq!(serde_json::from_str::<Impact>("2").unwrap(), Impact::HIGH);
    }

    #[test]
    fn incident_ref_parses_arn_and_opsitem() {
        let arn = "arn:aws:ssm-incidents::123456789012:incident-record/vpn-plan/6ec4ba3e-0f5b-4e0a-9d3c-6a3f4c1c9d10";
        assert_eq!(
            IncidentRef::parse(arn),
            Some(IncidentRef::IncidentManager(arn.into()))
        );
        assert_eq!(
            IncidentRef::parse("oi-0a1b2c3d4e5f"),
            Some(IncidentRef::OpsCenter("oi-0a1b2c3d4e5f".into()))
        );
        assert_eq!(IncidentRef::parse("oi-xyz"), None);
        assert_eq!(IncidentRef::parse("vpn-0123"), None);
    }
}
