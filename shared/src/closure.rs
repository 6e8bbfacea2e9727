//! Closure: the post-incident summary, built from the incident's own record when it
//! resolves (by its alarms or by a person), posted in the Slack thread and attached
//! to the incident, so the team's retrospective starts from facts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::{Actor, Impact, Roles};
use crate::notification::{FindingSummary, TimelineEntry};

/// The facts of one incident, from detection to resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostIncidentSummary {
    pub title: String,
    /// The most severe impact reached.
    pub peak_impact: Impact,
    pub detected_at: DateTime<Utc>,
    pub notified_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub diagnosed_at: Option<DateTime<Utc>>,
    pub resolved_at: DateTime<Utc>,
    /// Seconds from detection to each stage.
    pub time_to_notify_seconds: Option<u64>,
    pub time_to_acknowledge_seconds: Option<u64>,
    pub time_to_diagnose_seconds: Option<u64>,
    pub time_to_resolve_seconds: u64,
    /// The alarm (all OK again) or the person who resolved it.
    pub resolved_by: Actor,
    pub roles: Roles,
    /// The latest diagnosis findings.
    pub findings: Vec<FindingSummary>,
    /// Everyone who acted, in order of first action (labels).
    pub participants: Vec<String>,
    pub timeline: Vec<TimelineEntry>,
    /// The retrospective checklist: each item a question and what the facts already say.
    pub retrospective: Vec<RetrospectiveItem>,
}

/// One item of the retrospective checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrospectiveItem {
    /// `What happened`, `Impact`, `What went well`, `What to improve`, `Follow-up actions`.
    pub heading: String,
    /// What the record already tells (may be empty: for the team to fill in).
    pub facts: Vec<String>,
}
