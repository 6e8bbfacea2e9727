//! Closure: the post-incident summary, built from the incident's own record when it
//! resolves (by its alarms or by a person), posted in the Slack thread and attached
//! to the incident, so the team's retrospective starts from facts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::{Actor, Impact, Roles};
use crate::lifecycle::IncidentRecord;
use crate::notification::{format_duration, FindingSummary, TimelineEntry};
use crate::org::AccountInfo;

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
    /// The member account the incident happened in (organization mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountInfo>,
}

/// One item of the retrospective checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrospectiveItem {
    /// `What happened`, `Impact`, `What went well`, `What to improve`, `Follow-up actions`.
    pub heading: String,
    /// What the record already tells (may be empty: for the team to fill in).
    pub facts: Vec<String>,
}

/// "Nobody acknowledged within" is a lesson beyond this long (the default escalation time).
pub const SLOW_ACK_SECONDS: u64 = 15 * 60;

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_seconds()).unwrap_or(0)
}

fn hhmm(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The post-incident summary of `record`, resolved by `resolved_by` at `at` (or at
/// the record's `resolved_at` when set): the milestones and the times from
/// detection to each, the findings, everyone who acted, and the retrospective
/// checklist pre-filled with what the record shows.
pub fn build(
    record: &IncidentRecord,
    resolved_by: &Actor,
    at: DateTime<Utc>,
) -> PostIncidentSummary {
    let detected_at = record.opened_at;
    let resolved_at = record.resolved_at.unwrap_or(at);
    let m = &record.milestones;
    let since = |t: Option<DateTime<Utc>>| t.map(|t| seconds_between(detected_at, t));
    let time_to_notify_seconds = since(m.notified_at);
    let time_to_acknowledge_seconds = since(m.acknowledged_at);
    let time_to_diagnose_seconds = since(m.diagnosed_at);
    let time_to_resolve_seconds = seconds_between(detected_at, resolved_at);
    let peak_impact = record
        .peak_impact
        .unwrap_or(record.impact)
        .min(record.impact);

    let mut participants: Vec<String> = vec![];
    let mut add = |label: String| {
        if !participants.contains(&label) {
            participants.push(label);
        }
    };
    for actor in record.timeline.iter().filter_map(|e| e.actor.clone()) {
        add(actor);
    }
    add(resolved_by.label());

    let reporter = record
        .roles
        .reporter
        .as_ref()
        .map_or_else(|| "an alarm".to_string(), Actor::label);
    let mut happened = vec![
        format!("{}: {}", record.title, record.summary),
        format!("Detected {} (reported by {reporter}).", hhmm(detected_at)),
    ];
    if let Some(a) = &record.account_info {
        happened.push(format!(
            "In account {}{}, region {}.",
            a.label(),
            a.ou.as_ref()
                .map_or_else(String::new, |ou| format!(" (OU {ou})")),
            record.region
        ));
    }
    let alarms: Vec<&str> = record.alarms.values().map(|a| a.name.as_str()).collect();
    if !alarms.is_empty() {
        happened.push(format!("Alarms involved: {}.", alarms.join(", ")));
    }
    for f in record.findings.iter().filter(|f| f.severity != "info") {
        happened.push(format!("Finding ({}): {}", f.severity, f.title));
    }
    happened.push(format!("Resolved {} by {resolved_by}.", hhmm(resolved_at)));

    let impact = vec![
        format!("Peak impact {peak_impact}."),
        format!("Lasted {}.", format_duration(time_to_resolve_seconds)),
    ];

    let mut went_well = vec![];
    let mut improve = vec![];
    match time_to_notify_seconds {
        Some(s) => went_well.push(format!(
            "The team was notified {} after detection.",
            format_duration(s)
        )),
        None => improve.push("No notification was confirmed as sent.".to_string()),
    }
    match (time_to_acknowledge_seconds, &record.roles.owner) {
        (Some(s), owner) => {
            let who = owner
                .as_ref()
                .map_or_else(String::new, |o| format!(" by {o}"));
            let line = format!("Acknowledged{who} {} after detection.", format_duration(s));
            if s > SLOW_ACK_SECONDS {
                improve.push(line);
            } else {
                went_well.push(line);
            }
        }
        (None, _) => improve.push(format!(
            "Nobody acknowledged within {} (until resolution).",
            format_duration(time_to_resolve_seconds)
        )),
    }
    match time_to_diagnose_seconds {
        Some(s) => went_well.push(format!("Diagnosis took {}.", format_duration(s))),
        None if record.runbook.is_some() || record.runbook_execution.is_some() => {
            improve.push("No diagnosis was recorded on the incident before resolution.".into())
        }
        None => improve.push("No automated diagnosis exists for this kind of incident.".into()),
    }
    let escalations = record
        .timeline
        .iter()
        .filter(|e| e.text.starts_with("Unanswered:"))
        .count();
    if escalations > 0 {
        improve.push(format!(
            "The escalation had to page on-call {escalations} time(s) before anyone answered."
        ));
    }
    if record.roles.owner.is_none() && matches!(resolved_by, Actor::Alarm { .. }) {
        improve
            .push("It resolved by itself with nobody owning it: was the alarm actionable?".into());
    }

    let mut follow_up: Vec<String> = vec![];
    for f in &record.findings {
        let step = f.next_step.trim();
        if !step.is_empty() && !follow_up.iter().any(|s| s == step) {
            follow_up.push(step.to_string());
        }
    }

    let item = |heading: &str, facts: Vec<String>| RetrospectiveItem {
        heading: heading.to_string(),
        facts,
    };
    PostIncidentSummary {
        title: record.title.clone(),
        peak_impact,
        detected_at,
        notified_at: m.notified_at,
        acknowledged_at: m.acknowledged_at,
        diagnosed_at: m.diagnosed_at,
        resolved_at,
        time_to_notify_seconds,
        time_to_acknowledge_seconds,
        time_to_diagnose_seconds,
        time_to_resolve_seconds,
        resolved_by: resolved_by.clone(),
        roles: record.roles.clone(),
        findings: record.findings.clone(),
        participants,
        timeline: record.timeline.clone(),
        retrospective: vec![
            item("What happened", happened),
            item("Impact", impact),
            item("What went well", went_well),
            item("What to improve", improve),
            item("Follow-up actions", follow_up),
        ],
        account: record.account_info.clone(),
    }
}

impl PostIncidentSummary {
    /// Plain text for the incident backend's closing note (OpsCenter, Incident
    /// Manager timeline): milestones, times, roles, findings, participants and the
    /// retrospective checklist.
    pub fn to_text(&self) -> String {
        let mut out = vec![format!("Post-incident summary: {}", self.title)];
        if let Some(a) = &self.account {
            out.push(format!("Account: {}", a.label()));
        }
        out.push(format!("Peak impact: {}", self.peak_impact));
        out.push(String::new());
        out.push("Milestones:".into());
        let mut milestone = |name: &str, at: Option<DateTime<Utc>>, after: Option<u64>| {
            out.push(match (at, after) {
                (Some(t), Some(s)) => format!("- {name}: {} (+{})", hhmm(t), format_duration(s)),
                (Some(t), None) => format!("- {name}: {}", hhmm(t)),
                _ => format!("- {name}: never"),
            });
        };
        milestone("Detected", Some(self.detected_at), None);
        milestone("Notified", self.notified_at, self.time_to_notify_seconds);
        milestone(
            "Acknowledged",
            self.acknowledged_at,
            self.time_to_acknowledge_seconds,
        );
        milestone(
            "Diagnosed",
            self.diagnosed_at,
            self.time_to_diagnose_seconds,
        );
        milestone(
            "Resolved",
            Some(self.resolved_at),
            Some(self.time_to_resolve_seconds),
        );
        out.push(format!(
            "Time to acknowledge: {}. Time to resolve: {}.",
            self.time_to_acknowledge_seconds
                .map_or_else(|| "never acknowledged".to_string(), format_duration),
            format_duration(self.time_to_resolve_seconds)
        ));
        out.push(String::new());
        let role = |a: &Option<Actor>| a.as_ref().map_or_else(|| "none".to_string(), Actor::label);
        out.push(format!(
            "Roles: reporter {}; owner {}; team {}; resolved by {}.",
            role(&self.roles.reporter),
            role(&self.roles.owner),
            self.roles.team.as_deref().unwrap_or("none"),
            self.resolved_by
        ));
        out.push(format!("Participants: {}.", self.participants.join(", ")));
        if !self.findings.is_empty() {
            out.push(String::new());
            out.push("Findings:".into());
            for f in &self.findings {
                out.push(format!("- [{}] {}: {}", f.severity, f.title, f.evidence));
            }
        }
        out.push(String::new());
        out.push("Retrospective:".into());
        for item in &self.retrospective {
            out.push(format!("{}:", item.heading));
            if item.facts.is_empty() {
                out.push("- (for the team to fill in)".into());
            }
            for f in &item.facts {
                out.push(format!("- {f}"));
            }
        }
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::alarm::AlarmState;
    use crate::incident::IncidentRef;
    use crate::lifecycle::{AlarmFeed, Milestones};
    use crate::notification::IncidentStatus;
    use chrono::Duration;

    fn t(s: i64) -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(s)
    }

    fn jane() -> Actor {
        Actor::Person {
            id: "U0JANE".into(),
            name: "Jane Doe".into(),
        }
    }

    fn record() -> IncidentRecord {
        let alarm = Actor::Alarm {
            name: "vpn-tunnel-down".into(),
        };
        IncidentRecord {
            key: "VPN connection vpn-1 is DOWN".into(),
            status: IncidentStatus::Resolved,
            incident: Some(IncidentRef::OpsCenter("oi-0123456789ab".into())),
            title: "VPN connection vpn-1 is DOWN".into(),
            summary: "Both tunnels are down.".into(),
            impact: Impact::MEDIUM,
            opened_at: t(0),
            resolved_at: Some(t(1860)),
            alarms: BTreeMap::from([(
                "arn:a".to_string(),
                AlarmFeed {
                    name: "vpn-tunnel-down".into(),
                    state: AlarmState::Ok,
                    impact: Impact::MEDIUM,
                    changed_at: t(1860),
                    contributor: None,
                    attributes: Default::default(),
                },
            )]),
            runbook_execution: Some("exec-1".into()),
            timeline: vec![
                TimelineEntry { at: t(0), text: "vpn-tunnel-down is ALARM: incident opened".into(), actor: None },
                TimelineEntry { at: t(900), text: "Unanswered: nobody acknowledged the incident for 15m 00s (escalation 1 of 3).".into(), actor: None },
                TimelineEntry { at: t(1200), text: "Jane Doe (U0JANE) acknowledged".into(), actor: Some(jane().label()) },
                TimelineEntry { at: t(1300), text: "Note by Bob".into(), actor: Some("Bob (U0BOB)".into()) },
            ],
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            roles: Roles { reporter: Some(alarm), owner: Some(jane()), team: Some("C0NOC".into()) },
            milestones: Milestones {
                notified_at: Some(t(2)),
                acknowledged_at: Some(t(1200)),
                diagnosed_at: Some(t(95)),
            },
            findings: vec![FindingSummary {
                severity: "critical".into(),
                title: "Both tunnels DOWN".into(),
                evidence: "VgwTelemetry DOWN since 09:59".into(),
                next_step: "Check the customer gateway's IKE settings".into(),
            }],
            runbook: None,
            escalation: None,
            peak_impact: Some(Impact::CRITICAL),
            account_info: None,
        }
    }

    #[test]
    fn build_computes_times_participants_and_retrospective_facts() {
        let s = build(&record(), &jane(), t(5000));
        // resolved_at of the record wins over `at`.
        assert_eq!(s.resolved_at, t(1860));
        assert_eq!(s.time_to_notify_seconds, Some(2));
        assert_eq!(s.time_to_diagnose_seconds, Some(95));
        assert_eq!(s.time_to_acknowledge_seconds, Some(1200));
        assert_eq!(s.time_to_resolve_seconds, 1860);
        assert_eq!(s.peak_impact, Impact::CRITICAL);
        assert_eq!(s.participants, ["Jane Doe (U0JANE)", "Bob (U0BOB)"]);
        let facts = |h: &str| {
            s.retrospective
                .iter()
                .find(|i| i.heading == h)
                .map(|i| i.facts.clone())
                .unwrap()
        };
        assert_eq!(
            s.retrospective
                .iter()
                .map(|i| i.heading.as_str())
                .collect::<Vec<_>>(),
            [
                "What happened",
                "Impact",
                "What went well",
                "What to improve",
                "Follow-up actions"
            ]
        );
        assert_eq!(
            facts("Impact"),
            ["Peak impact 1 (Critical).", "Lasted 31m 00s."]
        );
        assert_eq!(
            facts("What went well"),
            [
                "The team was notified 2s after detection.",
                "Diagnosis took 1m 35s."
            ]
        );
        assert_eq!(
            facts("What to improve"),
            [
                "Acknowledged by Jane Doe (U0JANE) 20m 00s after detection.",
                "The escalation had to page on-call 1 time(s) before anyone answered."
            ]
        );
        assert_eq!(
            facts("Follow-up actions"),
            ["Check the customer gateway's IKE settings"]
        );
        assert!(
            facts("What happened").contains(&"Finding (critical): Both tunnels DOWN".to_string())
        );
    }

    #[test]
    fn unacknowledged_self_resolved_incident_names_the_gaps() {
        let mut r = record();
        r.roles.owner = None;
        r.milestones = Milestones::default();
        r.timeline.truncate(1);
        r.findings.clear();
        r.resolved_at = None;
        let alarm = Actor::Alarm {
            name: "vpn-tunnel-down".into(),
        };
        let s = build(&r, &alarm, t(600));
        assert_eq!(s.time_to_resolve_seconds, 600);
        assert_eq!(s.participants, ["alarm vpn-tunnel-down"]);
        let improve = &s.retrospective[3].facts;
        assert_eq!(
            improve,
            &[
                "No notification was confirmed as sent.",
                "Nobody acknowledged within 10m 00s (until resolution).",
                "No diagnosis was recorded on the incident before resolution.",
                "It resolved by itself with nobody owning it: was the alarm actionable?"
            ]
        );
        let text = s.to_text();
        assert!(text.contains("- Acknowledged: never"), "{text}");
        assert!(
            text.contains("Time to acknowledge: never acknowledged. Time to resolve: 10m 00s."),
            "{text}"
        );
        assert!(
            text.contains("Follow-up actions:\n- (for the team to fill in)"),
            "{text}"
        );
    }

    #[test]
    fn member_account_incident_names_its_account() {
        let mut r = record();
        assert!(!build(&r, &jane(), t(1860)).to_text().contains("Account:"));
        r.account_info = Some(crate::org::AccountInfo {
            id: "111122223333".into(),
            name: Some("payments-prod".into()),
            ou: Some("payments".into()),
            ..Default::default()
        });
        let s = build(&r, &jane(), t(1860));
        let text = s.to_text();
        assert!(text.starts_with("Post-incident summary: VPN connection vpn-1 is DOWN\nAccount: 111122223333 (payments-prod)\nPeak impact"), "{text}");
        assert!(
            s.retrospective[0]
                .facts
                .iter()
                .any(|f| f
                    == "In account 111122223333 (payments-prod) (OU payments), region eu-west-1."),
            "{:?}",
            s.retrospective[0]
        );
    }

    #[test]
    fn to_text_renders_every_section() {
        let text = build(&record(), &jane(), t(1860)).to_text();
        let expected_start = "Post-incident summary: VPN connection vpn-1 is DOWN\n\
Peak impact: 1 (Critical)\n\n\
Milestones:\n\
- Detected: 2026-11-25 10:00:00 UTC\n\
- Notified: 2026-11-25 10:00:02 UTC (+2s)\n\
- Acknowledged: 2026-11-25 10:20:00 UTC (+20m 00s)\n\
- Diagnosed: 2026-11-25 10:01:35 UTC (+1m 35s)\n\
- Resolved: 2026-11-25 10:31:00 UTC (+31m 00s)\n\
Time to acknowledge: 20m 00s. Time to resolve: 31m 00s.\n\n\
Roles: reporter alarm vpn-tunnel-down; owner Jane Doe (U0JANE); team C0NOC; resolved by Jane Doe (U0JANE).\n\
Participants: Jane Doe (U0JANE), Bob (U0BOB).\n\n\
Findings:\n\
- [critical] Both tunnels DOWN: VgwTelemetry DOWN since 09:59\n\n\
Retrospective:\n\
What happened:\n";
        assert!(text.starts_with(expected_start), "{text}");
        assert!(
            text.ends_with("Follow-up actions:\n- Check the customer gateway's IKE settings"),
            "{text}"
        );
    }
}
