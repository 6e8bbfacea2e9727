//! The incident lifecycle as a pure decision: given what the state table holds for
//! an incident key and for an alarm, and one alarm transition, what happens.
//!
//! An incident is keyed by its dedupe key; several alarms may feed it. `ALARM` with
//! nothing open opens one; `ALARM` on an open one updates it (or escalates it, when
//! the alarm is more severe than the impact so far); `OK` of one alarm while another
//! still fires lowers the impact back to what is still firing; the incident
//! resolves when every alarm feeding it is `OK`. `OK` and `INSUFFICIENT_DATA` never
//! open anything. A transition is identified by what changed state (the alarm ARN,
//! or the alarm ARN and contributor id for one time series of a multi-time-series
//! alarm: [`crate::alarm::source_id`]) and the state-change time: at or before the
//! last one applied for it, it is a duplicate or stale. Each time series feeds its
//! incident on its own, so contributors never shadow each other.
//!
//! No I/O here: alarm-to-incident turns a [`Decision`] into [`Effect`]s and stores
//! them with the record before running them, so a retry can finish the work.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alarm::{source_id, AlarmState, Contributor};
use crate::classify::RunbookPlan;
use crate::incident::{Actor, Impact, IncidentRef, NewIncident, Note, Roles};
use crate::notification::{
    format_duration, FindingSummary, IncidentStatus, Notification, TimelineEntry,
};
use crate::org::AccountInfo;

/// Timeline entries kept on the record (the oldest are dropped first).
pub const TIMELINE_MAX: usize = 50;

/// One alarm state change, classified.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The dedupe key of the incident the alarm feeds.
    pub key: String,
    pub alarm_arn: String,
    /// The contributor (time series) of a multi-time-series alarm this transition is
    /// about; `None` for an alarm as a whole.
    pub contributor: Option<Contributor>,
    /// The alarm's name for people, with the contributor's attributes for a
    /// contributor ([`crate::alarm::Alarm::label`]).
    pub alarm_name: String,
    pub state: AlarmState,
    pub changed_at: DateTime<Utc>,
    /// The impact the rules give this alarm when it fires.
    pub impact: Impact,
    /// Title and summary of the incident this alarm would open.
    pub title: String,
    pub summary: String,
    pub reason: String,
}

impl Transition {
    /// What changed state: the key of its [`AlarmFeed`] and of its last applied time.
    pub fn source(&self) -> String {
        source_id(
            &self.alarm_arn,
            self.contributor.as_ref().map(|c| c.id.as_str()),
        )
    }
}

/// The last known state of one alarm (or one time series of a multi-time-series
/// alarm) feeding an incident. [`IncidentRecord::alarms`] keys it by
/// [`crate::alarm::source_id`]: the ARN, or `contributor/<id>/<ARN>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmFeed {
    pub name: String,
    pub state: AlarmState,
    pub impact: Impact,
    pub changed_at: DateTime<Utc>,
    /// The contributor id, when this feed is one time series of a multi-time-series
    /// alarm (its key then holds the alarm's ARN too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contributor: Option<String>,
    /// The contributor's attributes (`{"VpnId": "vpn-..."}`), so a transition the
    /// reconciliation sweep infers for it (CloudWatch no longer lists it in `ALARM`)
    /// names and classifies it like its events did. Empty for an alarm, and on records
    /// written before they were kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// What the state table keeps per incident key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub key: String,
    pub status: IncidentStatus,
    /// The backend's incident; `None` until the open effect has run.
    pub incident: Option<IncidentRef>,
    pub title: String,
    pub summary: String,
    /// The impact now (the most severe of the alarms firing).
    pub impact: Impact,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Alarms feeding the incident, by ARN (or by [`crate::alarm::source_id`] for
    /// one time series of a multi-time-series alarm).
    pub alarms: BTreeMap<String, AlarmFeed>,
    /// The diagnosis runbook execution, once started.
    pub runbook_execution: Option<String>,
    pub timeline: Vec<TimelineEntry>,
    /// Account and region the incident belongs to (for notifications sent by
    /// slack-actions, which has no alarm at hand).
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub region: String,
    /// Reporter, owner, team.
    #[serde(default)]
    pub roles: Roles,
    /// When the response reached each stage (detected = `opened_at`, resolved =
    /// `resolved_at`).
    #[serde(default)]
    pub milestones: Milestones,
    /// The diagnosis findings, as recorded by vpn-troubleshoot (latest run).
    #[serde(default)]
    pub findings: Vec<FindingSummary>,
    /// The runbook the rules chose at open, so a person can run it again from Slack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<RunbookPlan>,
    /// The escalation timer while nobody has acknowledged the incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationState>,
    /// The most severe impact the incident reached (for the post-incident summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_impact: Option<Impact>,
    /// The account's name, OU and tags (organization mode only, `shared::org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_info: Option<AccountInfo>,
}

/// When the response reached each stage of the incident process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Milestones {
    /// The `opened` notification was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<DateTime<Utc>>,
    /// First acknowledgement by a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// First diagnosis report recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosed_at: Option<DateTime<Utc>>,
}

/// A pending escalation: the one-time schedule that fires `attempt` at `due_at`
/// unless the incident is acknowledged or resolved first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationState {
    /// 1 for the first re-notification, 2 for the first repeat, ...
    pub attempt: u32,
    pub due_at: DateTime<Utc>,
    /// The EventBridge Scheduler schedule's name.
    pub schedule_name: String,
}

impl IncidentRecord {
    pub fn is_open(&self) -> bool {
        self.status == IncidentStatus::Open
    }

    /// How long the incident lasted (or has lasted until `at`), in whole seconds.
    pub fn duration_seconds(&self, at: DateTime<Utc>) -> u64 {
        let end = self.resolved_at.unwrap_or(at);
        u64::try_from((end - self.opened_at).num_seconds()).unwrap_or(0)
    }

    /// Names of the alarms firing now.
    pub fn firing(&self) -> Vec<&str> {
        self.alarms
            .values()
            .filter(|a| a.state == AlarmState::Alarm)
            .map(|a| a.name.as_str())
            .collect()
    }

    fn push_timeline(&mut self, at: DateTime<Utc>, text: String) {
        self.push_entry(at, text, None);
    }

    /// Adds a timeline entry by `actor` (none for the pipeline itself), dropping the
    /// oldest beyond [`TIMELINE_MAX`].
    pub fn push_entry(&mut self, at: DateTime<Utc>, text: String, actor: Option<&Actor>) {
        self.timeline.push(TimelineEntry {
            at,
            text,
            actor: actor.map(Actor::label),
        });
        if self.timeline.len() > TIMELINE_MAX {
            let drop = self.timeline.len() - TIMELINE_MAX;
            self.timeline.drain(..drop);
        }
    }
}

/// What a transition does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The same transition was applied before (another envelope, a retry).
    IgnoreDuplicate,
    /// A later transition of this alarm was applied already (late delivery).
    IgnoreStale {
        last_applied: DateTime<Utc>,
    },
    /// Recorded as the alarm's last transition; no incident changes (`OK` or
    /// `INSUFFICIENT_DATA` with nothing open, or `OK` of an alarm not feeding it).
    Record,
    /// A new incident.
    Open,
    /// The open incident is told (re-alarm, another alarm joining or clearing);
    /// impact unchanged.
    Update,
    Escalate {
        from: Impact,
        to: Impact,
    },
    Deescalate {
        from: Impact,
        to: Impact,
    },
    /// `INSUFFICIENT_DATA` on an open incident: a note, nothing else.
    InsufficientData,
    /// Every alarm feeding the incident is `OK`.
    Resolve {
        duration_seconds: u64,
    },
}

impl Action {
    /// True when the transition is not applied at all (nothing to write).
    pub fn is_ignored(&self) -> bool {
        matches!(self, Action::IgnoreDuplicate | Action::IgnoreStale { .. })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Action::IgnoreDuplicate => "ignore_duplicate",
            Action::IgnoreStale { .. } => "ignore_stale",
            Action::Record => "record",
            Action::Open => "open",
            Action::Update => "update",
            Action::Escalate { .. } => "escalate",
            Action::Deescalate { .. } => "deescalate",
            Action::InsufficientData => "insufficient_data",
            Action::Resolve { .. } => "resolve",
        }
    }
}

/// The decision and the record to store with it (`None`: the record is unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    pub record: Option<IncidentRecord>,
}

/// The most severe impact among the firing alarms, or `current` when none fires
/// (alarms in `INSUFFICIENT_DATA` keep the impact where it was).
fn effective_impact(alarms: &BTreeMap<String, AlarmFeed>, current: Impact) -> Impact {
    alarms
        .values()
        .filter(|a| a.state == AlarmState::Alarm)
        .map(|a| a.impact)
        .min()
        .unwrap_or(current)
}

fn feed(t: &Transition) -> AlarmFeed {
    AlarmFeed {
        name: t.alarm_name.clone(),
        state: t.state,
        impact: t.impact,
        changed_at: t.changed_at,
        contributor: t.contributor.as_ref().map(|c| c.id.clone()),
        attributes: t
            .contributor
            .as_ref()
            .map(|c| c.attributes.clone())
            .unwrap_or_default(),
    }
}

/// Decides what `t` does, given the incident record of its key (if any) and the
/// state-change time of the last transition applied for its alarm or time series
/// ([`Transition::source`]), if any.
pub fn decide(
    record: Option<&IncidentRecord>,
    last_applied: Option<DateTime<Utc>>,
    t: &Transition,
) -> Decision {
    let unchanged = |action| Decision {
        action,
        record: None,
    };
    if let Some(last) = last_applied {
        if t.changed_at == last {
            return unchanged(Action::IgnoreDuplicate);
        }
        if t.changed_at < last {
            return unchanged(Action::IgnoreStale { last_applied: last });
        }
    }
    let open = record.filter(|r| r.is_open());
    let Some(current) = open else {
        return match t.state {
            AlarmState::Alarm => {
                let mut r = IncidentRecord {
                    key: t.key.clone(),
                    status: IncidentStatus::Open,
                    incident: None,
                    title: t.title.clone(),
                    summary: t.summary.clone(),
                    impact: t.impact,
                    opened_at: t.changed_at,
                    resolved_at: None,
                    alarms: [(t.source(), feed(t))].into(),
                    runbook_execution: None,
                    timeline: vec![],
                    account: String::new(),
                    region: String::new(),
                    roles: Roles::default(),
                    milestones: Milestones::default(),
                    findings: vec![],
                    runbook: None,
                    escalation: None,
                    peak_impact: Some(t.impact),
                    account_info: None,
                };
                r.push_timeline(
                    t.changed_at,
                    format!(
                        "{} is ALARM: incident opened with impact {}",
                        t.alarm_name, t.impact
                    ),
                );
                Decision {
                    action: Action::Open,
                    record: Some(r),
                }
            }
            AlarmState::Ok | AlarmState::InsufficientData => unchanged(Action::Record),
        };
    };

    let mut r = current.clone();
    let source = t.source();
    let feeds_it = r.alarms.contains_key(&source);
    let action = match t.state {
        AlarmState::Alarm => {
            let was_firing = r
                .alarms
                .get(&source)
                .is_some_and(|a| a.state == AlarmState::Alarm);
            r.alarms.insert(source.clone(), feed(t));
            let text = if was_firing {
                format!("{} is ALARM again", t.alarm_name)
            } else if feeds_it {
                format!(
                    "{} is ALARM again after {}",
                    t.alarm_name, current.alarms[&source].state
                )
            } else {
                format!("{} joined the incident (impact {})", t.alarm_name, t.impact)
            };
            r.push_timeline(t.changed_at, text);
            impact_change(&mut r, current.impact, Action::Update)
        }
        AlarmState::Ok => {
            if !feeds_it {
                return unchanged(Action::Record);
            }
            r.alarms.insert(source.clone(), feed(t));
            if r.alarms.values().all(|a| a.state == AlarmState::Ok) {
                r.status = IncidentStatus::Resolved;
                r.resolved_at = Some(t.changed_at);
                let duration_seconds = r.duration_seconds(t.changed_at);
                r.push_timeline(
                    t.changed_at,
                    format!(
                        "{} is OK: every alarm is OK, incident resolved after {}",
                        t.alarm_name,
                        format_duration(duration_seconds)
                    ),
                );
                Action::Resolve { duration_seconds }
            } else {
                let still: Vec<&str> = r
                    .alarms
                    .values()
                    .filter(|a| a.state != AlarmState::Ok)
                    .map(|a| a.name.as_str())
                    .collect();
                let text = format!("{} is OK; not OK yet: {}", t.alarm_name, still.join(", "));
                r.push_timeline(t.changed_at, text);
                impact_change(&mut r, current.impact, Action::Update)
            }
        }
        AlarmState::InsufficientData => {
            if feeds_it {
                r.alarms.insert(source.clone(), feed(t));
            }
            r.push_timeline(
                t.changed_at,
                format!("{} has insufficient data", t.alarm_name),
            );
            Action::InsufficientData
        }
    };
    Decision {
        action,
        record: Some(r),
    }
}

/// Sets the record's impact from the firing alarms; escalation or de-escalation when
/// it moved, `otherwise` when not.
fn impact_change(r: &mut IncidentRecord, before: Impact, otherwise: Action) -> Action {
    let after = effective_impact(&r.alarms, before);
    r.impact = after;
    r.peak_impact = Some(r.peak_impact.map_or(after, |p| p.min(after)));
    if after.is_more_severe_than(before) {
        Action::Escalate {
            from: before,
            to: after,
        }
    } else if before.is_more_severe_than(after) {
        Action::Deescalate {
            from: before,
            to: after,
        }
    } else {
        otherwise
    }
}

/// One step of work decided for an incident, stored with the record before it
/// runs (so a retry, or the next invocation for the key, can finish it) and removed
/// once done. Self-contained: running it needs no original event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Open the backend incident (idempotent by client token / dedupe key) and
    /// store its reference on the record.
    Open {
        incident: Box<NewIncident>,
    },
    /// Start the diagnosis runbook for the open incident and store the execution id.
    StartRunbook {
        plan: RunbookPlan,
        client_token: String,
    },
    SetImpact {
        impact: Impact,
        note: Note,
    },
    AddNote {
        note: Note,
    },
    Resolve {
        note: Note,
    },
    /// Publish the notification; incident reference, URL and backend are filled from
    /// the record when it runs.
    Publish {
        notification: Box<Notification>,
    },
    /// Create the one-time schedule that fires escalation `attempt` at `at`, and
    /// store it on the record.
    ScheduleEscalation {
        attempt: u32,
        at: DateTime<Utc>,
    },
    /// Delete the pending escalation schedule (acknowledged or resolved).
    CancelEscalation,
    /// Publish to the escalation topic (on-call phones and e-mail).
    Page {
        subject: String,
        message: String,
    },
}

impl Effect {
    pub fn as_str(&self) -> &'static str {
        match self {
            Effect::Open { .. } => "open",
            Effect::StartRunbook { .. } => "start_runbook",
            Effect::SetImpact { .. } => "set_impact",
            Effect::AddNote { .. } => "add_note",
            Effect::Resolve { .. } => "resolve",
            Effect::Publish { .. } => "publish",
            Effect::ScheduleEscalation { .. } => "schedule_escalation",
            Effect::CancelEscalation => "cancel_escalation",
            Effect::Page { .. } => "page",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "arn:aws:cloudwatch:eu-west-1:1:alarm:any-tunnel";
    const B: &str = "arn:aws:cloudwatch:eu-west-1:1:alarm:both-tunnels";

    fn at(minute: u32) -> DateTime<Utc> {
        format!("2026-11-25T10:{minute:02}:00Z").parse().unwrap()
    }

    fn t(arn: &str, state: AlarmState, minute: u32) -> Transition {
        let (name, impact) = if arn == B {
            ("both-tunnels", Impact::CRITICAL)
        } else {
            ("any-tunnel", Impact::MEDIUM)
        };
        Transition {
            key: "VPN connection vpn-1 is DOWN".into(),
            alarm_arn: arn.into(),
            contributor: None,
            alarm_name: name.into(),
            state,
            changed_at: at(minute),
            impact,
            title: "VPN connection vpn-1 is DOWN".into(),
            summary: "The VPN connection to the remote site is not working.".into(),
            reason: "Threshold Crossed".into(),
        }
    }

    /// Applies a decision like the handler does: the alarm's last applied time moves
    /// unless ignored; the record is replaced when the decision carries one.
    #[derive(Default, Debug)]
    struct Sim {
        record: Option<IncidentRecord>,
        last: BTreeMap<String, DateTime<Utc>>,
        opens: usize,
    }

    impl Sim {
        fn deliver(&mut self, tr: &Transition) -> Action {
            let d = decide(
                self.record.as_ref(),
                self.last.get(&tr.source()).copied(),
                tr,
            );
            if d.action == Action::Open {
                assert!(
                    !self.record.as_ref().is_some_and(|r| r.is_open()),
                    "opened a second incident"
                );
                self.opens += 1;
            }
            if !d.action.is_ignored() {
                self.last.insert(tr.source(), tr.changed_at);
            }
            if let Some(r) = d.record {
                self.record = Some(r);
            }
            d.action
        }
        fn open(&self) -> &IncidentRecord {
            self.record
                .as_ref()
                .filter(|r| r.is_open())
                .expect("an open incident")
        }
    }

    #[test]
    fn alarm_with_nothing_open_opens() {
        let d = decide(None, None, &t(A, AlarmState::Alarm, 1));
        assert_eq!(d.action, Action::Open);
        let r = d.record.unwrap();
        assert_eq!(r.status, IncidentStatus::Open);
        assert_eq!(r.impact, Impact::MEDIUM);
        assert_eq!(r.opened_at, at(1));
        assert_eq!(r.incident, None);
        assert_eq!(r.alarms[A].state, AlarmState::Alarm);
        assert_eq!(
            r.timeline[0].text,
            "any-tunnel is ALARM: incident opened with impact 3 (Medium)"
        );
    }

    #[test]
    fn realarm_updates_and_never_opens_second() {
        let mut s = Sim::default();
        assert_eq!(s.deliver(&t(A, AlarmState::Alarm, 1)), Action::Open);
        assert_eq!(s.deliver(&t(A, AlarmState::Alarm, 2)), Action::Update);
        assert_eq!(s.opens, 1);
        assert_eq!(
            s.open().timeline.last().unwrap().text,
            "any-tunnel is ALARM again"
        );
    }

    #[test]
    fn same_transition_again_is_duplicate() {
        let mut s = Sim::default();
        s.deliver(&t(A, AlarmState::Alarm, 1));
        let before = s.record.clone();
        assert_eq!(
            s.deliver(&t(A, AlarmState::Alarm, 1)),
            Action::IgnoreDuplicate
        );
        assert_eq!(s.record, before);
    }

    #[test]
    fn late_alarm_after_ok_is_stale_and_opens_nothing() {
        let mut s = Sim::default();
        assert_eq!(s.deliver(&t(A, AlarmState::Ok, 5)), Action::Record);
        assert_eq!(
            s.deliver(&t(A, AlarmState::Alarm, 1)),
            Action::IgnoreStale {
                last_applied: at(5)
            }
        );
        assert_eq!(s.record, None);
        assert_eq!(s.opens, 0);
    }

    #[test]
    fn both_tunnels_escalates_then_deescalates_then_resolves() {
        let mut s = Sim::default();
        s.deliver(&t(A, AlarmState::Alarm, 1));
        assert_eq!(
            s.deliver(&t(B, AlarmState::Alarm, 20)),
            Action::Escalate {
                from: Impact::MEDIUM,
                to: Impact::CRITICAL
            }
        );
        assert_eq!(s.open().impact, Impact::CRITICAL);
        assert_eq!(
            s.deliver(&t(B, AlarmState::Ok, 30)),
            Action::Deescalate {
                from: Impact::CRITICAL,
                to: Impact::MEDIUM
            }
        );
        assert_eq!(s.open().impact, Impact::MEDIUM);
        assert_eq!(
            s.deliver(&t(A, AlarmState::Ok, 35)),
            Action::Resolve {
                duration_seconds: 34 * 60
            }
        );
        let r = s.record.as_ref().unwrap();
        assert_eq!(r.status, IncidentStatus::Resolved);
        assert_eq!(r.resolved_at, Some(at(35)));
        assert_eq!(r.timeline.len(), 4);
        assert_eq!(
            r.timeline[3].text,
            "any-tunnel is OK: every alarm is OK, incident resolved after 34m 00s"
        );
    }

    #[test]
    fn less_severe_alarm_joining_is_update() {
        let mut s = Sim::default();
        s.deliver(&t(B, AlarmState::Alarm, 1));
        assert_eq!(s.deliver(&t(A, AlarmState::Alarm, 2)), Action::Update);
        assert_eq!(s.open().impact, Impact::CRITICAL);
        assert_eq!(
            s.open().timeline[1].text,
            "any-tunnel joined the incident (impact 3 (Medium))"
        );
        // The less severe one clearing changes nothing but the note.
        assert_eq!(s.deliver(&t(A, AlarmState::Ok, 3)), Action::Update);
        assert_eq!(s.open().impact, Impact::CRITICAL);
    }

    #[test]
    fn ok_with_nothing_open_or_not_feeding_is_recorded_only() {
        assert_eq!(
            decide(None, None, &t(A, AlarmState::Ok, 1)),
            Decision {
                action: Action::Record,
                record: None
            }
        );
        let mut s = Sim::default();
        s.deliver(&t(A, AlarmState::Alarm, 1));
        assert_eq!(s.deliver(&t(B, AlarmState::Ok, 2)), Action::Record);
        assert!(!s.open().alarms.contains_key(B));
    }

    #[test]
    fn insufficient_data_notes_open_incident_and_opens_nothing() {
        assert_eq!(
            decide(None, None, &t(A, AlarmState::InsufficientData, 1)).action,
            Action::Record
        );
        let mut s = Sim::default();
        s.deliver(&t(A, AlarmState::Alarm, 1));
        s.deliver(&t(B, AlarmState::Alarm, 2));
        assert_eq!(
            s.deliver(&t(B, AlarmState::InsufficientData, 3)),
            Action::InsufficientData
        );
        // Missing data keeps the impact and does not resolve.
        assert_eq!(s.open().impact, Impact::CRITICAL);
        assert_eq!(s.open().alarms[B].state, AlarmState::InsufficientData);
        assert_eq!(s.deliver(&t(A, AlarmState::Ok, 4)), Action::Update);
        assert!(s.record.as_ref().unwrap().is_open());
        // Once the last alarm is OK, it resolves.
        assert!(matches!(
            s.deliver(&t(B, AlarmState::Ok, 5)),
            Action::Resolve { .. }
        ));
    }

    #[test]
    fn alarm_after_resolution_opens_new_incident() {
        let mut s = Sim::default();
        s.deliver(&t(A, AlarmState::Alarm, 1));
        s.deliver(&t(A, AlarmState::Ok, 2));
        assert_eq!(s.deliver(&t(A, AlarmState::Alarm, 3)), Action::Open);
        let r = s.open();
        assert_eq!(r.opened_at, at(3));
        assert_eq!(r.timeline.len(), 1);
        assert_eq!(s.opens, 2);
    }

    fn contributor(id: &str, state: AlarmState, minute: u32) -> Transition {
        Transition {
            contributor: Some(Contributor {
                id: id.into(),
                attributes: BTreeMap::from([("VpnId".to_string(), id.to_string())]),
            }),
            alarm_name: format!("any-tunnel (VpnId={id})"),
            ..t(A, state, minute)
        }
    }

    #[test]
    fn contributors_of_one_alarm_feed_separately_and_never_shadow_each_other() {
        let mut s = Sim::default();
        assert_eq!(
            s.deliver(&contributor("c1", AlarmState::Alarm, 1)),
            Action::Open
        );
        // Same alarm, same time, another time series: a change of its own, not a
        // duplicate of the first.
        assert_eq!(
            s.deliver(&contributor("c2", AlarmState::Alarm, 1)),
            Action::Update
        );
        let keys: Vec<&String> = s.open().alarms.keys().collect();
        assert_eq!(
            keys,
            vec![
                &format!("contributor/c1/{A}"),
                &format!("contributor/c2/{A}")
            ]
        );
        assert_eq!(
            s.open().alarms[&format!("contributor/c1/{A}")]
                .contributor
                .as_deref(),
            Some("c1")
        );
        // Its attributes are kept, so a transition inferred later can name it.
        assert_eq!(
            s.open().alarms[&format!("contributor/c1/{A}")].attributes["VpnId"],
            "c1"
        );
        // The alarm-level event of the same time is yet another source.
        assert_eq!(
            decide(
                s.record.as_ref(),
                s.last.get(A).copied(),
                &t(A, AlarmState::Alarm, 1)
            )
            .action,
            Action::Update
        );
        // One series back to OK leaves the incident open for the other.
        assert_eq!(
            s.deliver(&contributor("c1", AlarmState::Ok, 2)),
            Action::Update
        );
        assert!(matches!(
            s.deliver(&contributor("c2", AlarmState::Ok, 3)),
            Action::Resolve { .. }
        ));
        assert_eq!(
            s.record.as_ref().unwrap().timeline.last().unwrap().text,
            "any-tunnel (VpnId=c2) is OK: every alarm is OK, incident resolved after 2m 00s"
        );
    }

    #[test]
    fn timeline_is_bounded() {
        let mut s = Sim::default();
        s.deliver(&t(A, AlarmState::Alarm, 0));
        for m in 1..59 {
            s.deliver(&t(A, AlarmState::Alarm, m));
        }
        assert_eq!(s.open().timeline.len(), TIMELINE_MAX);
        assert_eq!(s.open().timeline.last().unwrap().at, at(58));
    }

    #[test]
    fn effect_round_trips_as_tagged_json() {
        let e = Effect::AddNote {
            note: Note {
                title: "x".into(),
                text: "y".into(),
                at: at(1),
                data: BTreeMap::new(),
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["effect"], "add_note");
        assert_eq!(serde_json::from_value::<Effect>(v).unwrap(), e);
    }

    /// Transitions of two alarms (any-tunnel impact 3, both-tunnels impact 1), one
    /// state per (alarm, minute) as CloudWatch would, delivered in any order, each
    /// possibly several times (other envelopes, retries).
    fn deliveries() -> impl Strategy<Value = (Vec<Transition>, Vec<usize>)> {
        let transition = (prop::bool::ANY, 0u32..30, 0u8..5).prop_map(|(b, minute, s)| {
            let state = match s {
                0 | 1 => AlarmState::Alarm,
                2 | 3 => AlarmState::Ok,
                _ => AlarmState::InsufficientData,
            };
            t(if b { B } else { A }, state, minute)
        });
        prop::collection::vec(transition, 1..12)
            .prop_map(|mut ts| {
                ts.sort_by_key(|x| (x.alarm_arn.clone(), x.changed_at));
                ts.dedup_by_key(|x| (x.alarm_arn.clone(), x.changed_at));
                ts
            })
            .prop_flat_map(|ts| {
                let n = ts.len();
                (Just(ts), prop::collection::vec(0..n, 1..30))
            })
    }

    proptest! {
        #[test]
        fn no_delivery_order_opens_two_incidents_for_one_key((ts, order) in deliveries()) {
            let mut s = Sim::default();
            for &i in &order {
                // Sim::deliver asserts that no Open happens while one is open.
                s.deliver(&ts[i]);
            }
            // Duplicates change nothing: delivering only first occurrences ends the same.
            let mut firsts = vec![];
            for &i in &order {
                if !firsts.contains(&i) {
                    firsts.push(i);
                }
            }
            let mut d = Sim::default();
            for &i in &firsts {
                d.deliver(&ts[i]);
            }
            prop_assert_eq!(&s.record, &d.record);
            prop_assert_eq!(s.opens, d.opens);

            // The latest delivered transition of each alarm is always applied.
            let mut latest: BTreeMap<&str, &Transition> = BTreeMap::new();
            for &i in &order {
                let tr = &ts[i];
                if latest.get(tr.alarm_arn.as_str()).is_none_or(|l| l.changed_at < tr.changed_at) {
                    latest.insert(&tr.alarm_arn, tr);
                }
            }
            let no_missing_data = order.iter().all(|&i| ts[i].state != AlarmState::InsufficientData);
            if no_missing_data {
                // Open exactly when some alarm's latest state is ALARM, at the impact
                // of the most severe of those.
                let firing: Vec<Impact> = latest.values().filter(|l| l.state == AlarmState::Alarm).map(|l| l.impact).collect();
                let open = s.record.as_ref().filter(|r| r.is_open());
                prop_assert_eq!(open.is_some(), !firing.is_empty());
                if let Some(r) = open {
                    prop_assert_eq!(Some(r.impact), firing.iter().min().copied());
                }
            }
        }
    }
}
