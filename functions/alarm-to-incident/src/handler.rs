//! One invocation: normalize the event, then for each alarm transition decide and
//! apply its lifecycle change exactly once.
//!
//! Per transition: read the alarm's last applied transition and the incident item of
//! its key; finish any effects left pending on the item (by a failed or concurrent
//! invocation) first; decide ([`shared::lifecycle::decide`]); write the decision
//! together with its effects and the alarm's new time in one conditional
//! transaction; then run the effects, saving progress after each. A conflict means
//! another invocation changed the item: read again and decide anew. A failure leaves
//! the remaining effects on the item, so Lambda's retry (or the next alarm of the
//! key) completes them instead of deciding twice: an incident opened before a failed
//! publish is not opened again, and the notification still goes out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::alarm::{normalize, Alarm, AlarmState};
use shared::classify::Rules;
use shared::error::Retryable;
use shared::incident::IncidentBackend;
use shared::lifecycle::{decide, Effect, Transition};
use shared::state::{AlarmItem, IncidentItem, StateError, StateStore};
use tracing::{error, info, info_span, warn, Instrument};

use crate::effects::{execute, plan};
use crate::error::HandlerError;
use crate::publish::Publisher;

/// The time, injectable for tests of leases.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Tunables of the handler.
#[derive(Debug, Clone)]
pub struct Settings {
    pub automation_role_arn: Option<String>,
    /// How long an invocation owns an incident's pending effects; at least the
    /// function timeout, so two invocations never run them at once.
    pub lease: chrono::Duration,
    /// Pause before reading again when another invocation holds the lease.
    pub busy_wait: Duration,
    /// Reads and decisions per transition before giving up with a retryable error.
    pub attempts: u32,
}

impl Settings {
    pub fn new(automation_role_arn: Option<String>) -> Settings {
        Settings {
            automation_role_arn,
            lease: chrono::Duration::seconds(90),
            busy_wait: Duration::from_millis(500),
            attempts: 8,
        }
    }
}

/// Everything the handler uses, built once per container.
pub struct Deps<'a> {
    pub backend: &'a dyn IncidentBackend,
    pub store: &'a dyn StateStore,
    pub publisher: &'a dyn Publisher,
    pub rules: &'a Rules,
    pub settings: &'a Settings,
    pub clock: &'a dyn Clock,
}

/// What happened to one alarm of the event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub alarm: String,
    pub state: String,
    pub incident_key: String,
    pub action: &'static str,
    pub incident: Option<String>,
    /// True when steps left pending by an earlier invocation were finished first.
    pub resumed: bool,
}

/// The function's response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Response {
    pub results: Vec<Outcome>,
}

/// Handles one event: every alarm it carries, in order. The first failure ends the
/// invocation with an error; transitions handled before it are duplicates on retry.
pub async fn handle(deps: &Deps<'_>, event: &Value) -> Result<Response, HandlerError> {
    let alarms = normalize(event).inspect_err(|e| error!(error = %e, "event rejected"))?;
    let mut results = Vec::with_capacity(alarms.len());
    for alarm in &alarms {
        let span = info_span!("alarm", alarm = %alarm.name, state = %alarm.state, incident_key = tracing::field::Empty);
        let outcome = process(deps, alarm).instrument(span).await.inspect_err(|e| {
            error!(alarm = %alarm.name, error = %e, error_type = %e.lambda_error_type(), "alarm not handled")
        })?;
        results.push(outcome);
    }
    Ok(Response { results })
}

fn conflict(e: &StateError) -> bool {
    matches!(
        e,
        StateError::AlarmNotNewer { .. } | StateError::IncidentChanged { .. }
    )
}

async fn process(deps: &Deps<'_>, alarm: &Alarm) -> Result<Outcome, HandlerError> {
    let class = deps.rules.classify(alarm);
    let mut key = class.key.clone();
    let mut resumed = false;
    for attempt in 0..deps.settings.attempts.max(1) {
        let last = deps.store.alarm(&alarm.arn).await?;
        // OK and INSUFFICIENT_DATA go to the incident the alarm fed, even if the
        // rules changed since its ALARM.
        key = match (&last, alarm.state) {
            (Some(a), AlarmState::Ok | AlarmState::InsufficientData)
                if !a.incident_key.is_empty() =>
            {
                a.incident_key.clone()
            }
            _ => class.key.clone(),
        };
        tracing::Span::current().record("incident_key", key.as_str());
        let item = deps.store.incident(&key).await?;

        if let Some(item) = item.as_ref().filter(|i| !i.pending.is_empty()) {
            let now = deps.clock.now();
            if item.lease_until.is_some_and(|l| l > now) {
                info!(
                    attempt,
                    pending = item.pending.len(),
                    "another invocation is working on the incident; waiting"
                );
                tokio::time::sleep(deps.settings.busy_wait).await;
                continue;
            }
            let claimed = IncidentItem {
                lease_until: Some(now + deps.settings.lease),
                ..item.next()
            };
            match deps.store.save_incident(&claimed).await {
                Ok(()) => {
                    info!(
                        pending = claimed.pending.len(),
                        "finishing steps left by an earlier invocation"
                    );
                    run_pending(deps, claimed).await?;
                    resumed = true;
                }
                Err(e) if conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
            continue;
        }

        let transition = Transition {
            key: key.clone(),
            alarm_arn: alarm.arn.clone(),
            alarm_name: alarm.name.clone(),
            state: alarm.state,
            changed_at: alarm.changed_at,
            impact: class.impact,
            title: class.title.clone(),
            summary: class.summary.clone(),
            reason: alarm.reason.clone(),
        };
        let decision = decide(
            item.as_ref().map(|i| &i.record),
            last.as_ref().map(|a| a.changed_at),
            &transition,
        );
        let outcome = |incident: Option<String>| Outcome {
            alarm: alarm.name.clone(),
            state: alarm.state.to_string(),
            incident_key: key.clone(),
            action: decision.action.as_str(),
            incident,
            resumed,
        };
        let current_ref = item
            .as_ref()
            .and_then(|i| i.record.incident.as_ref())
            .map(|r| r.id().to_string());
        if decision.action.is_ignored() {
            info!(action = decision.action.as_str(), transition = %alarm.transition_id(), "transition already applied or superseded; ignored");
            return Ok(outcome(current_ref));
        }
        let new_alarm = AlarmItem {
            arn: alarm.arn.clone(),
            changed_at: alarm.changed_at,
            state: alarm.state,
            incident_key: key.clone(),
        };
        let Some(record) = decision.record.clone() else {
            match deps.store.apply(&new_alarm, None).await {
                Ok(()) => {
                    info!(
                        action = decision.action.as_str(),
                        "transition recorded; no incident change"
                    );
                    return Ok(outcome(current_ref));
                }
                Err(e) if conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let effects = plan(deps, alarm, &class, &decision.action, &record);
        let new_item = IncidentItem {
            version: item.as_ref().map_or(1, |i| i.version + 1),
            record,
            pending: effects,
            lease_until: Some(deps.clock.now() + deps.settings.lease),
        };
        match deps.store.apply(&new_alarm, Some(&new_item)).await {
            Ok(()) => {}
            Err(e) if conflict(&e) => {
                info!(attempt, error = %e, "state changed meanwhile; deciding again");
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        info!(
            action = decision.action.as_str(),
            impact = new_item.record.impact.value(),
            steps = new_item.pending.len(),
            "lifecycle change decided"
        );
        let done = run_pending(deps, new_item).await?;
        return Ok(outcome(
            done.record.incident.as_ref().map(|r| r.id().to_string()),
        ));
    }
    Err(HandlerError::Busy { key })
}

/// Runs the pending effects of `item` (whose lease this invocation holds) in order,
/// saving after each. A step that may succeed later stops the run and keeps it (and
/// the rest) pending, with the lease released for the retry; a step that can never
/// succeed is dropped so the incident is not blocked, and its error is returned
/// once the other steps ran.
async fn run_pending(
    deps: &Deps<'_>,
    mut item: IncidentItem,
) -> Result<IncidentItem, HandlerError> {
    let mut lasting_error: Option<HandlerError> = None;
    while let Some(effect) = item.pending.first().cloned() {
        let mut record = item.record.clone();
        match execute(deps, &mut record, &effect).await {
            Ok(()) => {
                item.record = record;
                item.pending.remove(0);
            }
            Err(e) if e.worth_keeping() => {
                warn!(step = effect.as_str(), error = %e, "step failed; left pending for a retry");
                let released = IncidentItem {
                    lease_until: None,
                    ..item.next()
                };
                if let Err(se) = deps.store.save_incident(&released).await {
                    warn!(error = %se, "could not release the lease; it expires by itself");
                }
                return Err(e);
            }
            Err(e) => {
                error!(step = effect.as_str(), error = %e, "step failed and cannot succeed on retry; dropped");
                item.pending.remove(0);
                if matches!(effect, Effect::Open { .. }) {
                    // Without an incident the runbook cannot start.
                    item.pending
                        .retain(|p| !matches!(p, Effect::StartRunbook { .. }));
                }
                lasting_error.get_or_insert(e);
            }
        }
        item = IncidentItem {
            lease_until: if item.pending.is_empty() {
                None
            } else {
                item.lease_until
            },
            ..item.next()
        };
        deps.store.save_incident(&item).await?;
    }
    match lasting_error {
        Some(e) => Err(e),
        None => Ok(item),
    }
}
