//! What a person does to an incident (from Slack) and what the escalation timer does,
//! as pure decisions: each takes the record and returns a [`Change`] (the new record,
//! its effects, a short reply for the person) or a [`Refusal`] that is safe to show.
//! No I/O: run a change with [`crate::effects::apply_change`], e.g.
//!
//! ```ignore
//! apply_change(&deps, &key, |r, now| respond::acknowledge(respond::existing(r)?, &who, team, now))
//! ```
//!
//! Every change adds a timeline entry naming its actor. Acknowledge and resolve
//! cancel a pending escalation.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::closure;
pub use crate::effects::{Change, Refusal, RefusalKind};
use crate::escalation::{first_escalation, EscalationPolicy};
use crate::hash::token_uuid;
use crate::incident::{Actor, Impact, IncidentRef, NewIncident, Note, Roles};
use crate::lifecycle::{Effect, IncidentRecord, Milestones};
use crate::notification::{
    format_duration, EventType, FindingSummary, IncidentStatus, Notification,
};
use crate::text::truncate;

/// Longest note kept (OpsCenter and Incident Manager notes stay readable).
pub const NOTE_MAX: usize = 2000;
/// Longest declared title (a Slack header holds 150 characters).
pub const TITLE_MAX: usize = 120;

/// The record, or the refusal to show when there is none under the key.
pub fn existing(record: Option<&IncidentRecord>) -> Result<&IncidentRecord, Refusal> {
    record.ok_or_else(|| {
        Refusal::new(
            RefusalKind::NotFound,
            "No incident with that key. Use `/incident list` to see the open ones.",
        )
    })
}

/// Refuses when an incident is open under the key already (for [`declare`]).
pub fn ensure_no_open(record: Option<&IncidentRecord>) -> Result<(), Refusal> {
    match record {
        Some(r) if r.is_open() => Err(Refusal::new(
            RefusalKind::AlreadyExists,
            "An incident with this title was declared a moment ago; it is open already.",
        )),
        _ => Ok(()),
    }
}

fn open(record: &IncidentRecord) -> Result<IncidentRecord, Refusal> {
    if record.is_open() {
        Ok(record.clone())
    } else {
        Err(Refusal::new(
            RefusalKind::NotOpen,
            "This incident is resolved already.",
        ))
    }
}

fn same_actor(a: &Actor, b: &Actor) -> bool {
    match (a.slack_user(), b.slack_user()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn note(title: String, text: String, who: Option<&Actor>, at: DateTime<Utc>) -> Note {
    let mut data = BTreeMap::new();
    if let Some(who) = who {
        data.insert("actor".to_string(), who.label());
        if let Some(id) = who.slack_user() {
            data.insert("slackUser".to_string(), id.to_string());
        }
    }
    Note {
        title,
        text,
        at,
        data,
    }
}

/// The VPN connection of the incident, from its runbook parameters (for links).
fn vpn_id(record: &IncidentRecord) -> Option<String> {
    record
        .runbook
        .as_ref()
        .and_then(|p| p.parameters.get("VpnConnectionId"))
        .and_then(|v| v.first())
        .filter(|v| v.starts_with("vpn-"))
        .cloned()
}

/// A notification about `record` for a change made without an alarm at hand (the
/// runner fills the incident reference, its URL and the backend).
pub fn notification(
    record: &IncidentRecord,
    event: EventType,
    summary: String,
    at: DateTime<Utc>,
) -> Notification {
    let resolved = record.status == IncidentStatus::Resolved;
    Notification {
        event,
        incident_key: record.key.clone(),
        title: record.title.clone(),
        summary,
        impact: record.impact,
        status: record.status,
        backend: None,
        incident_ref: None,
        incident_url: None,
        account: record.account.clone(),
        region: record.region.clone(),
        alarm: None,
        vpn_id: vpn_id(record),
        tunnel_ip: None,
        occurred_at: at,
        opened_at: Some(record.opened_at),
        duration_seconds: resolved.then(|| record.duration_seconds(at)),
        next_steps: vec![],
        links: vec![],
        findings: if resolved {
            record.findings.clone()
        } else {
            vec![]
        },
        timeline: if resolved {
            record.timeline.clone()
        } else {
            vec![]
        },
        roles: record.roles.clone(),
        post_incident: None,
        notification_id: None,
        account_info: record.account_info.clone(),
    }
}

fn publish(n: Notification) -> Effect {
    Effect::Publish {
        notification: Box::new(n),
    }
}

/// `who` takes the incident: they become the owner (a different owner hands it
/// over, recorded with both names), the first acknowledgement sets
/// `milestones.acknowledged_at`, a pending escalation is cancelled, and an
/// `acknowledged` notification goes out. `team` (the Slack channel or user group the
/// action came from) becomes the engaged team when given.
pub fn acknowledge(
    record: &IncidentRecord,
    who: &Actor,
    team: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Change, Refusal> {
    let mut r = open(record)?;
    let previous = r.roles.owner.clone();
    if previous.as_ref().is_some_and(|p| same_actor(p, who)) {
        return Err(Refusal::new(
            RefusalKind::AlreadyOwner,
            "You already own this incident.",
        ));
    }
    r.roles.owner = Some(who.clone());
    if let Some(team) = team.map(str::trim).filter(|t| !t.is_empty()) {
        r.roles.team = Some(team.to_string());
    }
    r.milestones.acknowledged_at.get_or_insert(at);
    let (title, text, reply) = match &previous {
        Some(p) => (
            format!("Ownership handed over to {who}"),
            format!("{who} took ownership from {p}."),
            format!("You own this incident now (taken over from {p})."),
        ),
        None => (
            format!("Acknowledged by {who}"),
            format!(
                "{who} acknowledged the incident after {} and owns it.",
                format_duration(record.duration_seconds(at))
            ),
            "You own this incident now.".to_string(),
        ),
    };
    r.push_entry(at, text.clone(), Some(who));
    let mut n = note(title, text.clone(), Some(who), at);
    if let Some(p) = &previous {
        n.data.insert("previousOwner".into(), p.label());
    }
    let mut effects = vec![];
    if r.escalation.is_some() {
        effects.push(Effect::CancelEscalation);
    }
    effects.push(Effect::AddNote { note: n });
    effects.push(publish(notification(&r, EventType::Acknowledged, text, at)));
    Ok(Change {
        record: r,
        effects,
        reply,
    })
}

/// `who` resolves the incident: the backend incident is resolved with the
/// post-incident summary as its note, a pending escalation is cancelled, and a
/// `resolved` notification carries the summary to the thread.
pub fn resolve(record: &IncidentRecord, who: &Actor, at: DateTime<Utc>) -> Result<Change, Refusal> {
    let mut r = open(record)?;
    r.status = IncidentStatus::Resolved;
    r.resolved_at = Some(at);
    let lasted = format_duration(r.duration_seconds(at));
    let text = format!("{who} resolved the incident after {lasted}.");
    r.push_entry(at, text.clone(), Some(who));
    let summary = closure::build(&r, who, at);
    let mut n = note(
        format!("Resolved by {who}"),
        summary.to_text(),
        Some(who),
        at,
    );
    n.data.insert(
        "durationSeconds".into(),
        summary.time_to_resolve_seconds.to_string(),
    );
    let mut effects = vec![];
    if r.escalation.is_some() {
        effects.push(Effect::CancelEscalation);
    }
    effects.push(Effect::Resolve { note: n });
    let mut published = notification(&r, EventType::Resolved, text, at);
    published.post_incident = Some(summary);
    effects.push(publish(published));
    Ok(Change {
        record: r,
        effects,
        reply: format!("Resolved after {lasted}. The post-incident summary is in the thread."),
    })
}

/// `who` asks for the diagnosis runbook to run again (a fresh client token, so SSM
/// starts a new execution).
pub fn rerun_diagnosis(
    record: &IncidentRecord,
    who: &Actor,
    at: DateTime<Utc>,
) -> Result<Change, Refusal> {
    let mut r = open(record)?;
    if let Some(IncidentRef::IncidentManager(_)) = &r.incident {
        return Err(Refusal::new(
            RefusalKind::NoRunbook,
            "Incident Manager runs the diagnosis from its response plan: start it again from the incident's Runbooks tab.",
        ));
    }
    let Some(plan) = r.runbook.clone() else {
        return Err(Refusal::new(
            RefusalKind::NoRunbook,
            "This incident has no diagnosis runbook to run again.",
        ));
    };
    let text = format!("{who} started the diagnosis ({}) again.", plan.document);
    r.push_entry(at, text.clone(), Some(who));
    let client_token = token_uuid(&[&r.key, "rerun", &iso(at), &who.label()]);
    let effects = vec![
        Effect::StartRunbook { plan, client_token },
        Effect::AddNote {
            note: note(
                format!("Diagnosis re-run by {who}"),
                text.clone(),
                Some(who),
                at,
            ),
        },
        publish(notification(&r, EventType::Note, text, at)),
    ];
    Ok(Change {
        record: r,
        effects,
        reply: "Diagnosis started again; the findings will be posted in the thread.".into(),
    })
}

/// `who` adds a note to the timeline (also on a resolved incident, for the
/// retrospective).
pub fn add_note(
    record: &IncidentRecord,
    who: &Actor,
    text: &str,
    at: DateTime<Utc>,
) -> Result<Change, Refusal> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Refusal::new(
            RefusalKind::Invalid,
            "A note needs some text.",
        ));
    }
    let text = truncate(text, NOTE_MAX);
    let mut r = record.clone();
    r.push_entry(at, format!("Note by {who}: {text}"), Some(who));
    let effects = vec![
        Effect::AddNote {
            note: note(format!("Note by {who}"), text.clone(), Some(who), at),
        },
        publish(notification(
            &r,
            EventType::Note,
            format!("{who}: {text}"),
            at,
        )),
    ];
    Ok(Change {
        record: r,
        effects,
        reply: "Note added.".into(),
    })
}

/// The diagnosis reported its findings (vpn-troubleshoot, or any runbook step that
/// reads the state table): they replace the previous run's, and the first report
/// sets `milestones.diagnosed_at` (the post-incident summary's "time to diagnose").
/// No effects: the reporter publishes and notes the incident itself.
pub fn record_diagnosis(
    record: &IncidentRecord,
    findings: Vec<FindingSummary>,
    at: DateTime<Utc>,
) -> Result<Change, Refusal> {
    let mut r = record.clone();
    r.milestones.diagnosed_at.get_or_insert(at);
    let worst = findings
        .iter()
        .find(|f| f.severity == "critical")
        .or_else(|| findings.first())
        .map_or_else(|| "no findings".to_string(), |f| f.title.clone());
    r.push_entry(
        at,
        format!("Diagnosis reported {} finding(s): {worst}", findings.len()),
        None,
    );
    r.findings = findings;
    Ok(Change {
        record: r,
        effects: vec![],
        reply: "diagnosis recorded".into(),
    })
}

/// The key of an incident declared by a person: `Declared: <title> (<yyyy-mm-dd hh:mm>)`.
pub fn declared_key(title: &str, at: DateTime<Utc>) -> String {
    format!(
        "Declared: {} ({})",
        truncate(title.trim(), TITLE_MAX),
        at.format("%Y-%m-%d %H:%M")
    )
}

/// A person opens an incident no alarm caught: a new open record (reporter = the
/// person) under [`declared_key`], the backend incident, an `opened` notification
/// and the first escalation when the policy applies. Use [`ensure_no_open`] on the
/// record at the key first.
#[allow(clippy::too_many_arguments)]
pub fn declare(
    title: &str,
    who: &Actor,
    team: Option<&str>,
    impact: Impact,
    account: &str,
    region: &str,
    at: DateTime<Utc>,
    policy: Option<&EscalationPolicy>,
) -> Result<Change, Refusal> {
    let title = truncate(title.trim(), TITLE_MAX);
    if title.is_empty() {
        return Err(Refusal::new(
            RefusalKind::Invalid,
            "An incident needs a title: `/incident declare <title>`.",
        ));
    }
    let key = declared_key(&title, at);
    let summary = format!("Declared from Slack by {who}.");
    let mut r = IncidentRecord {
        key: key.clone(),
        status: IncidentStatus::Open,
        incident: None,
        title: title.clone(),
        summary: summary.clone(),
        impact,
        opened_at: at,
        resolved_at: None,
        alarms: BTreeMap::new(),
        runbook_execution: None,
        timeline: vec![],
        account: account.to_string(),
        region: region.to_string(),
        roles: Roles {
            reporter: Some(who.clone()),
            owner: None,
            team: team
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        },
        milestones: Milestones::default(),
        findings: vec![],
        runbook: None,
        escalation: None,
        peak_impact: Some(impact),
        account_info: None,
    };
    r.push_entry(
        at,
        format!("{who} declared the incident with impact {impact}."),
        Some(who),
    );
    let raw = serde_json::json!({
        "declaredBy": who.label(),
        "title": title,
        "impact": impact.value(),
        "at": iso(at),
    });
    let mut details = BTreeMap::from([("declaredBy".to_string(), who.label())]);
    if let Some(team) = &r.roles.team {
        details.insert("team".into(), team.clone());
    }
    let incident = NewIncident {
        key: key.clone(),
        title: title.clone(),
        summary: summary.clone(),
        impact,
        client_token: token_uuid(&[&key, &who.label()]),
        source_arn: format!("slack:{}", who.slack_user().unwrap_or("declared")),
        raw_trigger: raw.to_string(),
        triggered_at: at,
        related: vec![],
        details,
        category: None,
    };
    let mut effects = vec![
        Effect::Open {
            incident: Box::new(incident),
        },
        publish(notification(&r, EventType::Opened, summary, at)),
    ];
    effects.extend(first_escalation(policy, &r, at));
    Ok(Change {
        record: r,
        effects,
        reply: format!("Incident declared: {key}. You are its reporter."),
    })
}

/// The escalation timer fired `attempt`. Nothing happens when the incident is
/// resolved, owned (acknowledged), or the attempt is not the pending one (stale: a
/// cancelled or superseded schedule). Otherwise: an `unanswered` notification (the
/// thread's second mention group), a page on the escalation topic, and the next
/// attempt scheduled while fewer than `max_attempts` were sent. An incident no longer
/// at the policy's impact stops escalating.
pub fn escalation_fired(
    record: &IncidentRecord,
    attempt: u32,
    at: DateTime<Utc>,
    policy: &EscalationPolicy,
) -> Result<Change, Refusal> {
    let unchanged = |why: &str| Change {
        record: record.clone(),
        effects: vec![],
        reply: why.to_string(),
    };
    if !record.is_open() {
        return Ok(unchanged("incident resolved; nothing to escalate"));
    }
    if record.roles.owner.is_some() {
        return Ok(unchanged("incident acknowledged; nothing to escalate"));
    }
    if record.escalation.as_ref().map(|e| e.attempt) != Some(attempt) {
        return Ok(unchanged(
            "escalation attempt is not the pending one; ignored",
        ));
    }
    let mut r = record.clone();
    r.escalation = None;
    if !policy.applies_to(&r) {
        r.push_entry(
            at,
            format!(
                "Escalation stopped: impact {} is below the escalation threshold {}.",
                r.impact, policy.min_impact
            ),
            None,
        );
        return Ok(Change {
            record: r,
            effects: vec![],
            reply: "impact below the escalation threshold; escalation stopped".into(),
        });
    }
    let waited = format_duration(record.duration_seconds(at));
    let text = format!(
        "Unanswered: nobody acknowledged the incident for {waited} (escalation {attempt} of {}).",
        policy.max_attempts
    );
    r.push_entry(at, text.clone(), None);
    let mut message = vec![
        format!("Incident: {}", r.title),
        format!("Impact: {}", r.impact),
        format!(
            "Opened: {} ({waited} ago), nobody acknowledged it.",
            iso(r.opened_at)
        ),
        format!("Escalation {attempt} of {}.", policy.max_attempts),
        format!("Key: {}", r.key),
    ];
    if let Some(i) = &r.incident {
        message.push(format!("Incident: {}", i.console_url(&r.region)));
    }
    if !r.account.is_empty() {
        message.push(format!("Account {} region {}", r.account, r.region));
    }
    message.push("Acknowledge it in Slack to stop these pages.".into());
    let mut effects = vec![
        publish(notification(&r, EventType::Unanswered, text, at)),
        Effect::Page {
            subject: format!(
                "[Impact {}] Unanswered incident: {}",
                r.impact.value(),
                r.title
            ),
            message: message.join("\n"),
        },
    ];
    if attempt < policy.max_attempts {
        effects.push(Effect::ScheduleEscalation {
            attempt: attempt + 1,
            at: at + policy.repeat,
        });
    }
    Ok(Change {
        record: r,
        effects,
        reply: format!("escalation {attempt} sent"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::RunbookPlan;
    use crate::escalation::{AFTER_VAR, MIN_IMPACT_VAR, ROLE_VAR, TARGET_VAR, TOPIC_VAR};
    use crate::lifecycle::EscalationState;
    use chrono::Duration;
    use proptest::prelude::*;

    pub(crate) fn at(minute: i64) -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minute)
    }

    fn jane() -> Actor {
        Actor::Person {
            id: "U0JANE".into(),
            name: "Jane Doe".into(),
        }
    }

    fn bob() -> Actor {
        Actor::Person {
            id: "U0BOB".into(),
            name: "Bob".into(),
        }
    }

    pub(crate) fn policy() -> EscalationPolicy {
        EscalationPolicy::from_env(&crate::config::Env::from_pairs([
            (MIN_IMPACT_VAR, "2"),
            (AFTER_VAR, "15"),
            (TOPIC_VAR, "arn:aws:sns:eu-west-1:123456789012:escalation"),
            (
                TARGET_VAR,
                "arn:aws:lambda:eu-west-1:123456789012:function:slack-actions",
            ),
            (ROLE_VAR, "arn:aws:iam::123456789012:role/scheduler"),
        ]))
        .unwrap()
        .unwrap()
    }

    /// An open critical OpsCenter incident opened at 10:00 by an alarm, with a runbook.
    pub(crate) fn record() -> IncidentRecord {
        let mut r = IncidentRecord {
            key: "VPN connection vpn-1 is DOWN".into(),
            status: IncidentStatus::Open,
            incident: Some(IncidentRef::OpsCenter("oi-0123456789ab".into())),
            title: "VPN connection vpn-1 is DOWN".into(),
            summary: "Both tunnels are down.".into(),
            impact: Impact::CRITICAL,
            opened_at: at(0),
            resolved_at: None,
            alarms: BTreeMap::new(),
            runbook_execution: Some("exec-1".into()),
            timeline: vec![],
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            roles: Roles {
                reporter: Some(Actor::Alarm {
                    name: "vpn-tunnel-down".into(),
                }),
                owner: None,
                team: None,
            },
            milestones: Milestones {
                notified_at: Some(at(0) + Duration::seconds(2)),
                acknowledged_at: None,
                diagnosed_at: None,
            },
            findings: vec![],
            runbook: Some(RunbookPlan {
                document: "VpnDiagnosis".into(),
                parameters: BTreeMap::from([(
                    "VpnConnectionId".to_string(),
                    vec!["vpn-1".to_string()],
                )]),
            }),
            escalation: Some(EscalationState {
                attempt: 1,
                due_at: at(15),
                schedule_name: "incident-escalation-0123456789abcdef-1".into(),
            }),
            peak_impact: Some(Impact::CRITICAL),
            account_info: None,
        };
        r.push_entry(
            at(0),
            "vpn-tunnel-down is ALARM: incident opened".into(),
            None,
        );
        r
    }

    fn kinds(effects: &[Effect]) -> Vec<&'static str> {
        effects.iter().map(Effect::as_str).collect()
    }

    fn published(effects: &[Effect]) -> Vec<&Notification> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Publish { notification } => Some(notification.as_ref()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn acknowledge_makes_owner_cancels_escalation_and_publishes() {
        let c = acknowledge(&record(), &jane(), Some("C0NOC"), at(4)).unwrap();
        assert_eq!(c.record.roles.owner, Some(jane()));
        assert_eq!(c.record.roles.team.as_deref(), Some("C0NOC"));
        assert_eq!(c.record.milestones.acknowledged_at, Some(at(4)));
        assert_eq!(
            kinds(&c.effects),
            ["cancel_escalation", "add_note", "publish"]
        );
        let n = published(&c.effects)[0];
        assert_eq!(n.event, EventType::Acknowledged);
        assert_eq!(n.roles.owner, Some(jane()));
        assert_eq!(n.vpn_id.as_deref(), Some("vpn-1"));
        assert_eq!(
            n.summary,
            "Jane Doe (U0JANE) acknowledged the incident after 4m 00s and owns it."
        );
        let last = c.record.timeline.last().unwrap();
        assert_eq!(last.actor.as_deref(), Some("Jane Doe (U0JANE)"));
        assert_eq!(last.at, at(4));
        assert_eq!(c.reply, "You own this incident now.");
        match &c.effects[1] {
            Effect::AddNote { note } => {
                assert_eq!(note.title, "Acknowledged by Jane Doe (U0JANE)");
                assert_eq!(note.data["slackUser"], "U0JANE");
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn acknowledge_by_someone_else_hands_over_and_keeps_first_ack_time() {
        let first = acknowledge(&record(), &jane(), None, at(4)).unwrap().record;
        let c = acknowledge(&first, &bob(), None, at(9)).unwrap();
        assert_eq!(c.record.roles.owner, Some(bob()));
        assert_eq!(c.record.milestones.acknowledged_at, Some(at(4)));
        // The pure record still names the schedule (the runner clears it when the
        // cancel runs), so the hand-over asks to cancel it too; cancelling is idempotent.
        assert_eq!(
            kinds(&c.effects),
            ["cancel_escalation", "add_note", "publish"]
        );
        assert_eq!(
            c.record.timeline.last().unwrap().text,
            "Bob (U0BOB) took ownership from Jane Doe (U0JANE)."
        );
        assert_eq!(
            c.reply,
            "You own this incident now (taken over from Jane Doe (U0JANE))."
        );
        match c.effects.iter().find(|e| e.as_str() == "add_note") {
            Some(Effect::AddNote { note }) => {
                assert_eq!(note.title, "Ownership handed over to Bob (U0BOB)");
                assert_eq!(note.data["previousOwner"], "Jane Doe (U0JANE)");
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn acknowledge_refuses_the_owner_again_and_a_resolved_incident() {
        let mut owned = record();
        owned.escalation = None;
        owned.roles.owner = Some(Actor::Person {
            id: "U0JANE".into(),
            name: "jane (renamed)".into(),
        });
        let e = acknowledge(&owned, &jane(), None, at(5)).unwrap_err();
        assert_eq!(e.kind, RefusalKind::AlreadyOwner);
        assert_eq!(e.to_string(), "You already own this incident.");
        let mut resolved = record();
        resolved.status = IncidentStatus::Resolved;
        let e = acknowledge(&resolved, &jane(), None, at(5)).unwrap_err();
        assert_eq!(e.kind, RefusalKind::NotOpen);
        assert_eq!(existing(None).unwrap_err().kind, RefusalKind::NotFound);
    }

    #[test]
    fn acknowledge_without_pending_escalation_cancels_nothing() {
        let mut r = record();
        r.escalation = None;
        let c = acknowledge(&r, &jane(), None, at(1)).unwrap();
        assert_eq!(kinds(&c.effects), ["add_note", "publish"]);
    }

    #[test]
    fn resolve_closes_with_summary_note_and_post_incident() {
        let acked = acknowledge(&record(), &jane(), None, at(4)).unwrap().record;
        let c = resolve(&acked, &jane(), at(30)).unwrap();
        assert_eq!(c.record.status, IncidentStatus::Resolved);
        assert_eq!(c.record.resolved_at, Some(at(30)));
        assert_eq!(
            kinds(&c.effects),
            ["cancel_escalation", "resolve", "publish"]
        );
        let Effect::Resolve { note } = &c.effects[1] else {
            panic!("no resolve");
        };
        assert_eq!(note.title, "Resolved by Jane Doe (U0JANE)");
        assert!(
            note.text
                .starts_with("Post-incident summary: VPN connection vpn-1 is DOWN"),
            "{}",
            note.text
        );
        assert_eq!(note.data["durationSeconds"], "1800");
        let n = published(&c.effects)[0];
        assert_eq!(n.event, EventType::Resolved);
        assert_eq!(n.status, IncidentStatus::Resolved);
        assert_eq!(n.duration_seconds, Some(1800));
        let s = n.post_incident.as_ref().unwrap();
        assert_eq!(s.time_to_acknowledge_seconds, Some(240));
        assert_eq!(s.resolved_by, jane());
        assert_eq!(note.text, s.to_text());
        assert_eq!(
            c.reply,
            "Resolved after 30m 00s. The post-incident summary is in the thread."
        );
        assert_eq!(
            resolve(&c.record, &jane(), at(31)).unwrap_err().kind,
            RefusalKind::NotOpen
        );
    }

    #[test]
    fn rerun_starts_runbook_with_fresh_token_or_refuses() {
        let c = rerun_diagnosis(&record(), &bob(), at(7)).unwrap();
        assert_eq!(kinds(&c.effects), ["start_runbook", "add_note", "publish"]);
        let Effect::StartRunbook { plan, client_token } = &c.effects[0] else {
            panic!("no runbook");
        };
        assert_eq!(plan.document, "VpnDiagnosis");
        let again = rerun_diagnosis(&record(), &bob(), at(8)).unwrap();
        let Effect::StartRunbook {
            client_token: other,
            ..
        } = &again.effects[0]
        else {
            panic!("no runbook");
        };
        assert_ne!(client_token, other);
        assert_eq!(client_token.len(), 36);
        assert_eq!(published(&c.effects)[0].event, EventType::Note);
        assert_eq!(
            c.record.timeline.last().unwrap().text,
            "Bob (U0BOB) started the diagnosis (VpnDiagnosis) again."
        );

        let mut none = record();
        none.runbook = None;
        let e = rerun_diagnosis(&none, &bob(), at(7)).unwrap_err();
        assert_eq!(e.kind, RefusalKind::NoRunbook);
        assert_eq!(
            e.message,
            "This incident has no diagnosis runbook to run again."
        );
        let mut im = record();
        im.incident = Some(IncidentRef::IncidentManager(
            "arn:aws:ssm-incidents::1:incident-record/p/x".into(),
        ));
        assert_eq!(
            rerun_diagnosis(&im, &bob(), at(7)).unwrap_err().kind,
            RefusalKind::NoRunbook
        );
    }

    #[test]
    fn add_note_records_text_or_refuses_empty() {
        let c = add_note(&record(), &bob(), "  Called the ISP, ticket 4711  ", at(6)).unwrap();
        assert_eq!(kinds(&c.effects), ["add_note", "publish"]);
        let Effect::AddNote { note } = &c.effects[0] else {
            panic!("no note");
        };
        assert_eq!(note.text, "Called the ISP, ticket 4711");
        assert_eq!(note.title, "Note by Bob (U0BOB)");
        assert_eq!(
            published(&c.effects)[0].summary,
            "Bob (U0BOB): Called the ISP, ticket 4711"
        );
        assert_eq!(
            c.record.timeline.last().unwrap().actor.as_deref(),
            Some("Bob (U0BOB)")
        );
        assert_eq!(
            add_note(&record(), &bob(), " ", at(6)).unwrap_err().kind,
            RefusalKind::Invalid
        );
        let long = add_note(&record(), &bob(), &"x".repeat(5000), at(6)).unwrap();
        let Effect::AddNote { note } = &long.effects[0] else {
            panic!("no note");
        };
        assert_eq!(note.text.chars().count(), NOTE_MAX);
    }

    #[test]
    fn declare_opens_a_record_reported_by_the_person_and_escalates_when_due() {
        let p = policy();
        let c = declare(
            " Payments API slow ",
            &jane(),
            Some("S0ONCALL"),
            Impact::HIGH,
            "123456789012",
            "eu-west-1",
            at(3),
            Some(&p),
        )
        .unwrap();
        assert_eq!(
            c.record.key,
            "Declared: Payments API slow (2026-11-25 10:03)"
        );
        assert_eq!(c.record.roles.reporter, Some(jane()));
        assert_eq!(c.record.roles.team.as_deref(), Some("S0ONCALL"));
        assert_eq!(c.record.roles.owner, None);
        assert_eq!(c.record.peak_impact, Some(Impact::HIGH));
        assert!(c.record.is_open());
        assert_eq!(
            kinds(&c.effects),
            ["open", "publish", "schedule_escalation"]
        );
        let Effect::Open { incident } = &c.effects[0] else {
            panic!("no open");
        };
        assert_eq!(incident.title, "Payments API slow");
        assert_eq!(incident.source_arn, "slack:U0JANE");
        assert_eq!(incident.impact, Impact::HIGH);
        assert_eq!(
            c.effects[2],
            Effect::ScheduleEscalation {
                attempt: 1,
                at: at(18)
            }
        );
        assert_eq!(published(&c.effects)[0].event, EventType::Opened);
        // Low impact: no escalation; no policy: none either.
        let low = declare("x", &jane(), None, Impact::LOW, "1", "r", at(3), Some(&p)).unwrap();
        assert_eq!(kinds(&low.effects), ["open", "publish"]);
        let off = declare("x", &jane(), None, Impact::CRITICAL, "1", "r", at(3), None).unwrap();
        assert_eq!(kinds(&off.effects), ["open", "publish"]);
        assert_eq!(
            declare("  ", &jane(), None, Impact::LOW, "1", "r", at(3), None)
                .unwrap_err()
                .kind,
            RefusalKind::Invalid
        );
        assert_eq!(
            ensure_no_open(Some(&c.record)).unwrap_err().kind,
            RefusalKind::AlreadyExists
        );
        assert_eq!(ensure_no_open(None), Ok(()));
    }

    #[test]
    fn escalation_fired_notifies_pages_and_schedules_next() {
        let p = policy();
        let c = escalation_fired(&record(), 1, at(15), &p).unwrap();
        assert_eq!(
            kinds(&c.effects),
            ["publish", "page", "schedule_escalation"]
        );
        assert_eq!(c.record.escalation, None);
        assert_eq!(
            c.effects[2],
            Effect::ScheduleEscalation {
                attempt: 2,
                at: at(30)
            }
        );
        let n = published(&c.effects)[0];
        assert_eq!(n.event, EventType::Unanswered);
        assert_eq!(
            n.summary,
            "Unanswered: nobody acknowledged the incident for 15m 00s (escalation 1 of 3)."
        );
        let Effect::Page { subject, message } = &c.effects[1] else {
            panic!("no page");
        };
        assert_eq!(
            subject,
            "[Impact 1] Unanswered incident: VPN connection vpn-1 is DOWN"
        );
        assert!(message.contains(
            "https://eu-west-1.console.aws.amazon.com/systems-manager/opsitems/oi-0123456789ab"
        ));
        // The last attempt schedules nothing more.
        let mut last = record();
        last.escalation.as_mut().unwrap().attempt = 3;
        let c = escalation_fired(&last, 3, at(45), &p).unwrap();
        assert_eq!(kinds(&c.effects), ["publish", "page"]);
    }

    #[test]
    fn escalation_fired_stale_or_below_threshold_does_nothing() {
        let p = policy();
        let c = escalation_fired(&record(), 2, at(30), &p).unwrap();
        assert!(c.effects.is_empty());
        assert_eq!(c.record, record());
        let mut low = record();
        low.impact = Impact::MEDIUM;
        let c = escalation_fired(&low, 1, at(15), &p).unwrap();
        assert!(c.effects.is_empty());
        assert_eq!(c.record.escalation, None);
    }

    #[test]
    fn record_diagnosis_keeps_first_time_and_latest_findings() {
        let f = |sev: &str, title: &str| FindingSummary {
            severity: sev.into(),
            title: title.into(),
            evidence: "e".into(),
            next_step: "n".into(),
        };
        let c = record_diagnosis(
            &record(),
            vec![f("info", "Logs read"), f("critical", "Both tunnels DOWN")],
            at(2),
        )
        .unwrap();
        assert!(c.effects.is_empty());
        assert_eq!(c.record.milestones.diagnosed_at, Some(at(2)));
        assert_eq!(c.record.findings.len(), 2);
        assert_eq!(
            c.record.timeline.last().unwrap().text,
            "Diagnosis reported 2 finding(s): Both tunnels DOWN"
        );
        let again = record_diagnosis(&c.record, vec![f("warning", "IKE flapping")], at(9)).unwrap();
        assert_eq!(again.record.milestones.diagnosed_at, Some(at(2)));
        assert_eq!(again.record.findings, vec![f("warning", "IKE flapping")]);
    }

    fn arb_record() -> impl Strategy<Value = (IncidentRecord, u32)> {
        (
            prop::bool::ANY,
            prop::option::of(prop_oneof![Just(jane()), Just(bob())]),
            prop::option::of(1u32..5),
            1u8..=5,
            1u32..5,
        )
            .prop_map(|(resolved, owner, pending, impact, attempt)| {
                let mut r = record();
                if resolved {
                    r.status = IncidentStatus::Resolved;
                    r.resolved_at = Some(at(20));
                }
                r.roles.owner = owner;
                r.impact = Impact::new(impact).unwrap_or(Impact::LOW);
                r.escalation = pending.map(|a| EscalationState {
                    attempt: a,
                    due_at: at(15),
                    schedule_name: format!("s-{a}"),
                });
                (r, attempt)
            })
    }

    proptest! {
        /// Escalation never fires for an acknowledged or resolved incident, and an
        /// acknowledgement or resolution always cancels a pending one.
        #[test]
        fn escalation_never_fires_for_answered_incidents((r, attempt) in arb_record(), minute in 0i64..120) {
            let p = policy();
            let c = escalation_fired(&r, attempt, at(minute), &p).unwrap();
            let fired = c.effects.iter().any(|e| matches!(e, Effect::Page { .. } | Effect::Publish { .. } | Effect::ScheduleEscalation { .. }));
            if !r.is_open() || r.roles.owner.is_some() {
                prop_assert!(!fired);
                prop_assert_eq!(&c.record, &r);
            }
            if fired {
                prop_assert_eq!(r.escalation.as_ref().map(|e| e.attempt), Some(attempt));
                prop_assert!(!p.min_impact.is_more_severe_than(r.impact));
            }
            if let Ok(a) = acknowledge(&r, &jane(), None, at(minute)) {
                prop_assert_eq!(a.effects.contains(&Effect::CancelEscalation), r.escalation.is_some());
                // The acknowledged record never escalates, whatever attempt fires.
                let after = escalation_fired(&a.record, attempt, at(minute + 15), &p).unwrap();
                prop_assert!(after.effects.is_empty());
                prop_assert!(p.first(&a.record, at(minute)).is_none());
            }
            if let Ok(res) = resolve(&r, &jane(), at(minute)) {
                prop_assert_eq!(res.effects.contains(&Effect::CancelEscalation), r.escalation.is_some());
                prop_assert!(escalation_fired(&res.record, attempt, at(minute + 15), &p).unwrap().effects.is_empty());
            }
        }
    }
}
