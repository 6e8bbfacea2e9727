//! From a lifecycle decision to the work it implies ([`plan`]); `shared::effects`
//! runs it (backend calls, the SNS notification, the escalation timer).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use shared::alarm::{Alarm, AlarmState};
use shared::classify::Classification;
use shared::closure;
use shared::escalation::first_escalation;
use shared::hash::token_uuid;
use shared::hold::{released_note, Hold};
use shared::incident::{Actor, NewIncident, Note, RelatedItem};
use shared::lifecycle::{Action, Effect, IncidentRecord};
use shared::notification::{format_duration, AlarmSummary, EventType, Link, Notification};
use shared::org::AccountInfo;

use crate::handler::Deps;

/// A member account's run of the stack's diagnosis runbook is told where to
/// diagnose: `AccountId` and `Region` of the alarm (vpn-troubleshoot assumes the
/// member's diagnosis role there). Other documents are left as the rules made them
/// (their rules can pass `{Account}` and `{Region}` themselves).
pub fn target_member_account(
    class: &mut Classification,
    alarm: &Alarm,
    diagnosis_document: Option<&str>,
) {
    if let Some(plan) = class.runbook.as_mut() {
        if diagnosis_document.is_some_and(|d| d == plan.document) {
            plan.parameters
                .insert("AccountId".into(), vec![alarm.account.clone()]);
            plan.parameters
                .insert("Region".into(), vec![alarm.region.clone()]);
        }
    }
}

/// What an alarm knows that the pure lifecycle decision does not: at open, the
/// account and region, the reporter (the alarm) and the runbook the rules chose (so a
/// person can run it again from Slack).
pub fn complete_record(
    record: &mut IncidentRecord,
    alarm: &Alarm,
    class: &Classification,
    action: &Action,
    account: Option<&AccountInfo>,
) {
    if matches!(action, Action::Open) {
        record.account_info = account.cloned();
        record.account = alarm.account.clone();
        record.region = alarm.region.clone();
        record.roles.reporter = Some(Actor::Alarm {
            name: alarm.label(),
        });
        record.runbook = class.runbook.clone();
    }
}

/// How a transition reached the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Delivered by CloudWatch (alarm action, EventBridge, SNS).
    Delivered,
    /// Never delivered: the reconciliation sweep found it with `DescribeAlarms` (or,
    /// for a contributor, `DescribeAlarmContributors` listing it in `ALARM`).
    Sweep,
    /// Never delivered: a contributor's return to `OK` the sweep inferred because
    /// `DescribeAlarmContributors`, which lists the contributors in `ALARM` only, no
    /// longer listed it when read at `read_at`.
    Unlisted { read_at: DateTime<Utc> },
    /// Held back (muted, silenced) since `since`; applied at the hold's end.
    Released { since: DateTime<Utc>, hold: Hold },
}

impl Origin {
    /// What the notes and the timeline say about it, if anything.
    pub fn note(&self, alarm: &Alarm) -> Option<String> {
        match self {
            Origin::Delivered => None,
            Origin::Sweep => Some(format!(
                "Found by the reconciliation sweep: CloudWatch reports {} {} since {}; the pipeline never received that transition.",
                alarm.label(),
                alarm.state,
                alarm.changed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            Origin::Unlisted { read_at } => Some(format!(
                "Found by the reconciliation sweep: CloudWatch no longer lists {} among the alarm's contributors in ALARM (DescribeAlarmContributors at {}), so it is OK; the pipeline never received that transition.",
                alarm.label(),
                read_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            Origin::Released { since, hold } => {
                Some(format!("{}.", released_note(&alarm.label(), alarm.state, *since, hold)))
            }
        }
    }
}

/// The effects of `action`, which produced `record`, in the order they run.
pub fn plan(
    deps: &Deps<'_>,
    alarm: &Alarm,
    class: &Classification,
    action: &Action,
    record: &IncidentRecord,
    origin: &Origin,
) -> Vec<Effect> {
    let note = |title: String, text: String| Note {
        title,
        text,
        at: alarm.changed_at,
        data: note_data(alarm),
    };
    // A transition the sweep found or a hold released says so wherever it is told.
    let told = |text: String| match origin.note(alarm) {
        Some(o) => format!("{text} {o}"),
        None => text,
    };
    let firing = record.firing().join(", ");
    let mut effects = vec![];
    // An open incident whose backend incident was never created (the open step
    // failed for good earlier) gets another chance first.
    let reopen = record.incident.is_none() && record.is_open() && !matches!(action, Action::Open);
    let opens = matches!(action, Action::Open) || reopen;
    if opens {
        effects.push(Effect::Open {
            incident: Box::new(new_incident(alarm, class, record)),
        });
    }
    let now = deps.effects.clock.now();
    let mut post_incident = None;
    let (event, summary) = match action {
        Action::IgnoreDuplicate | Action::IgnoreStale { .. } | Action::Record => return vec![],
        Action::Open => {
            if let Some(o) = origin.note(alarm) {
                effects.push(Effect::AddNote {
                    note: note(format!("{} is {}", alarm.label(), alarm.state), o),
                });
            }
            (EventType::Opened, told(record.summary.clone()))
        }
        Action::Update => {
            let text = told(match alarm.state {
                AlarmState::Ok => {
                    format!("{} is OK. Still not OK: {}.", alarm.label(), not_ok(record))
                }
                _ => format!("{} is {}: {}", alarm.label(), alarm.state, alarm.reason),
            });
            effects.push(Effect::AddNote {
                note: note(
                    format!("{} is {}", alarm.label(), alarm.state),
                    text.clone(),
                ),
            });
            (EventType::Updated, text)
        }
        Action::Escalate { from, to } | Action::Deescalate { from, to } => {
            let raised = to.is_more_severe_than(*from);
            let text = told(if raised {
                format!(
                    "{} is {}: {}. Impact raised from {from} to {to}.",
                    alarm.label(),
                    alarm.state,
                    alarm.reason
                )
            } else {
                format!(
                    "{} is {}. Impact lowered from {from} to {to}; still firing: {}.",
                    alarm.label(),
                    alarm.state,
                    if firing.is_empty() { "none" } else { &firing }
                )
            });
            let verb = if raised { "raised" } else { "lowered" };
            effects.push(Effect::SetImpact {
                impact: *to,
                note: note(format!("Impact {verb} to {to}"), text.clone()),
            });
            if raised {
                effects.extend(first_escalation(deps.escalation, record, now));
            }
            let event = if raised {
                EventType::Escalated
            } else {
                EventType::Deescalated
            };
            (event, text)
        }
        Action::InsufficientData => {
            let text = told(format!(
                "{} has insufficient data: {}",
                alarm.label(),
                alarm.reason
            ));
            effects.push(Effect::AddNote {
                note: note(
                    format!("{} has insufficient data", alarm.label()),
                    text.clone(),
                ),
            });
            (EventType::InsufficientData, text)
        }
        Action::Resolve { duration_seconds } => {
            let text = told(format!(
                "Every alarm is OK; the incident lasted {} ({} is OK: {}).",
                format_duration(*duration_seconds),
                alarm.label(),
                alarm.reason
            ));
            let by = Actor::Alarm {
                name: alarm.label(),
            };
            let summary = closure::build(record, &by, alarm.changed_at);
            let mut n = note(
                "Resolved: every alarm is OK".into(),
                format!("{text}\n\n{}", summary.to_text()),
            );
            n.data
                .insert("durationSeconds".into(), duration_seconds.to_string());
            if record.escalation.is_some() {
                effects.push(Effect::CancelEscalation);
            }
            effects.push(Effect::Resolve { note: n });
            post_incident = Some(summary);
            (EventType::Resolved, text)
        }
    };
    let mut n = notification(deps, alarm, class, action, record, event, summary);
    n.post_incident = post_incident;
    effects.push(Effect::Publish {
        notification: Box::new(n),
    });
    // The runbook starts after the message: the notification does not carry its
    // execution, and starting it (plus recording it on the OpsItem) took about 110 ms
    // on the way to Slack (bench/NOTES.md, issue 18). A retry after a failed start
    // resumes from it, so the message is not published again.
    if opens {
        if let Some(plan) = &class.runbook {
            effects.push(Effect::StartRunbook {
                plan: plan.clone(),
                client_token: alarm.transition_id(),
            });
        }
    }
    if matches!(action, Action::Open) {
        effects.extend(first_escalation(deps.escalation, record, now));
    }
    effects
}

fn not_ok(record: &IncidentRecord) -> String {
    let names: Vec<String> = record
        .alarms
        .values()
        .filter(|a| a.state != AlarmState::Ok)
        .map(|a| format!("{} ({})", a.name, a.state))
        .collect();
    names.join(", ")
}

pub fn note_data(alarm: &Alarm) -> BTreeMap<String, String> {
    let mut d = BTreeMap::from([
        ("alarmName".to_string(), alarm.name.clone()),
        ("alarmArn".to_string(), alarm.arn.clone()),
        ("state".to_string(), alarm.state.to_string()),
        (
            "reason".to_string(),
            shared::text::truncate(&alarm.reason, 1000),
        ),
        (
            "stateChangeTime".to_string(),
            alarm
                .changed_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
    ]);
    if let Some(v) = alarm.vpn_id() {
        d.insert("vpnId".into(), v.into());
    }
    if let Some(c) = &alarm.contributor {
        d.insert("contributorId".into(), c.id.clone());
        d.insert("contributor".into(), c.describe());
    }
    d
}

/// `arn:<partition>:...` of the alarm, for ARNs we build.
fn partition(alarm: &Alarm) -> &str {
    alarm
        .arn
        .split(':')
        .nth(1)
        .filter(|p| !p.is_empty())
        .unwrap_or("aws")
}

fn vpn_links(alarm: &Alarm) -> Vec<Link> {
    let mut links = vec![Link {
        label: "Alarm in CloudWatch".into(),
        url: alarm.console_url(),
    }];
    if let Some(vpn) = alarm.vpn_id() {
        links.push(Link {
            label: format!("VPN connection {vpn}"),
            url: format!(
                "https://{r}.console.aws.amazon.com/vpcconsole/home?region={r}#VpnConnectionDetails:VpnConnectionId={vpn}",
                r = alarm.region
            ),
        });
    }
    links
}

fn new_incident(alarm: &Alarm, class: &Classification, record: &IncidentRecord) -> NewIncident {
    let mut related = vec![RelatedItem {
        title: format!("CloudWatch alarm {}", alarm.label()),
        target: alarm.arn.clone(),
    }];
    if let Some(vpn) = alarm.vpn_id() {
        related.push(RelatedItem {
            title: format!("VPN connection {vpn}"),
            target: format!(
                "arn:{}:ec2:{}:{}:vpn-connection/{vpn}",
                partition(alarm),
                alarm.region,
                alarm.account
            ),
        });
    }
    related.extend(vpn_links(alarm).into_iter().map(|l| RelatedItem {
        title: l.label,
        target: l.url,
    }));
    let mut details = BTreeMap::from([
        ("alarmName".to_string(), alarm.name.clone()),
        ("classificationRule".to_string(), class.rule.clone()),
    ]);
    if let Some(v) = alarm.vpn_id() {
        details.insert("vpnId".into(), v.into());
    }
    if let Some(ip) = alarm.dimension("TunnelIpAddress") {
        details.insert("tunnelIpAddress".into(), ip.into());
    }
    if let Some(c) = &alarm.contributor {
        details.insert("contributorId".into(), c.id.clone());
        details.insert("contributor".into(), c.describe());
    }
    // Organization mode: whose incident it is, searchable in OpsCenter (operational
    // data) and linked from Incident Manager (a related item).
    if let Some(account) = &record.account_info {
        details.insert("accountId".into(), account.id.clone());
        if let Some(name) = &account.name {
            details.insert("accountName".into(), name.clone());
        }
        if let Some(ou) = &account.ou {
            details.insert("organizationalUnit".into(), ou.clone());
        }
        related.push(RelatedItem {
            title: format!("AWS account {}", account.label()),
            target: format!(
                "https://console.aws.amazon.com/organizations/v2/home/accounts/{}",
                account.id
            ),
        });
    }
    NewIncident {
        key: record.key.clone(),
        title: record.title.clone(),
        summary: record.summary.clone(),
        impact: record.impact,
        // One token per opening transition: a retried delivery reuses it, an
        // incident opened after the previous one resolved gets a new one.
        client_token: token_uuid(&[&record.key, &alarm.transition_id()]),
        source_arn: alarm.arn.clone(),
        raw_trigger: serde_json::to_string(alarm).unwrap_or_default(),
        triggered_at: alarm.changed_at,
        related,
        details,
        category: class.category.clone(),
    }
}

fn notification(
    deps: &Deps<'_>,
    alarm: &Alarm,
    class: &Classification,
    action: &Action,
    record: &IncidentRecord,
    event: EventType,
    summary: String,
) -> Notification {
    let resolved = matches!(action, Action::Resolve { .. });
    Notification {
        event,
        incident_key: record.key.clone(),
        title: record.title.clone(),
        summary,
        impact: record.impact,
        status: record.status,
        backend: Some(deps.effects.backend.name().to_string()),
        incident_ref: None,
        incident_url: None,
        account: alarm.account.clone(),
        region: alarm.region.clone(),
        alarm: Some(AlarmSummary {
            name: alarm.label(),
            arn: alarm.arn.clone(),
            state: alarm.state.to_string(),
            reason: alarm.reason.clone(),
            url: alarm.console_url(),
            condition: alarm.condition.summary(),
        }),
        vpn_id: alarm.vpn_id().map(str::to_string),
        tunnel_ip: alarm.dimension("TunnelIpAddress").map(str::to_string),
        occurred_at: alarm.changed_at,
        opened_at: Some(record.opened_at),
        duration_seconds: match action {
            Action::Resolve { duration_seconds } => Some(*duration_seconds),
            _ => None,
        },
        next_steps: if resolved {
            vec![]
        } else {
            class.next_steps.clone()
        },
        links: vpn_links(alarm),
        findings: vec![],
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
