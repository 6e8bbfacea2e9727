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
//!
//! Every write carries the invocation's owner token (its Lambda request id, kept by
//! Lambda across its retries): a transaction whose answer was lost is recognized as
//! this invocation's own when read back, and its effects run; a lease left by an
//! earlier attempt of the same request is taken over at once.

use serde::Serialize;
use serde_json::Value;
use shared::alarm::{normalize, Alarm, AlarmState};
use shared::classify::Rules;
use shared::effects::{
    decided_item, is_conflict, resume_pending, run_pending, EffectDeps, Patience, Resume,
};
use shared::error::Retryable;
use shared::escalation::EscalationPolicy;
use shared::lifecycle::{decide, Transition};
use shared::state::{AlarmItem, IncidentWrite, Owner};
use tracing::{error, info, info_span, Instrument};

use crate::effects::{complete_record, plan};
use crate::error::HandlerError;

/// Everything the handler uses, built once per container.
pub struct Deps<'a> {
    /// The effect runner's dependencies (backend, state, publisher, clock, timer).
    pub effects: EffectDeps<'a>,
    pub rules: &'a Rules,
    /// The escalation policy, when `ESCALATION_MIN_IMPACT` is set.
    pub escalation: Option<&'a EscalationPolicy>,
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

/// Handles one event for `owner` (the invocation): every alarm it carries, in order.
/// The first failure ends the invocation with an error; transitions handled before it
/// are duplicates on retry.
pub async fn handle(
    deps: &Deps<'_>,
    owner: &Owner,
    event: &Value,
) -> Result<Response, HandlerError> {
    let alarms = normalize(event).inspect_err(|e| error!(error = %e, "event rejected"))?;
    let mut results = Vec::with_capacity(alarms.len());
    for alarm in &alarms {
        let span = info_span!("alarm", alarm = %alarm.name, state = %alarm.state, incident_key = tracing::field::Empty);
        let outcome = process(deps, owner, alarm).instrument(span).await.inspect_err(|e| {
            error!(alarm = %alarm.name, error = %e, error_type = %e.lambda_error_type(), "alarm not handled")
        })?;
        results.push(outcome);
    }
    Ok(Response { results })
}

async fn process(deps: &Deps<'_>, owner: &Owner, alarm: &Alarm) -> Result<Outcome, HandlerError> {
    let class = deps.rules.classify(alarm);
    let mut resumed = false;
    let mut patience = Patience::new(deps.effects.settings, owner, &class.key);
    loop {
        let last = deps.effects.store.alarm(&alarm.arn).await?;
        // OK and INSUFFICIENT_DATA go to the incident the alarm fed, even if the
        // rules changed since its ALARM.
        let key = match (&last, alarm.state) {
            (Some(a), AlarmState::Ok | AlarmState::InsufficientData)
                if !a.incident_key.is_empty() =>
            {
                a.incident_key.clone()
            }
            _ => class.key.clone(),
        };
        tracing::Span::current().record("incident_key", key.as_str());
        let item = deps.effects.store.incident(&key).await?;

        if let Some(item) = item.as_ref().filter(|i| !i.pending.is_empty()) {
            match resume_pending(&deps.effects, owner, item).await? {
                Resume::Finished(_) => resumed = true,
                Resume::Busy => patience.wait_for_lease(deps.effects.clock).await?,
                Resume::Conflict => patience.conflict()?,
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
            writer: owner.token().to_string(),
        };
        let Some(mut record) = decision.record.clone() else {
            // Guarded by the incident item as read: decided on a stale read (another
            // invocation opened or changed the incident meanwhile), it is refused.
            let unchanged = IncidentWrite::Unchanged {
                key: &key,
                version: item.as_ref().map(|i| i.version),
            };
            match deps.effects.store.apply(&new_alarm, unchanged).await {
                Ok(()) => {
                    info!(
                        action = decision.action.as_str(),
                        "transition recorded; no incident change"
                    );
                    return Ok(outcome(current_ref));
                }
                Err(e) if is_conflict(&e) => {
                    patience.conflict()?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        };
        complete_record(&mut record, alarm, &class, &decision.action);
        let effects = plan(deps, alarm, &class, &decision.action, &record);
        let now = deps.effects.clock.now();
        let new_item = decided_item(
            deps.effects.settings,
            owner,
            now,
            item.as_ref(),
            record,
            effects,
        );
        match deps
            .effects
            .store
            .apply(&new_alarm, IncidentWrite::Put(&new_item))
            .await
        {
            Ok(()) => {}
            Err(e) if is_conflict(&e) => {
                info!(error = %e, "state changed meanwhile; deciding again");
                patience.conflict()?;
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
        let done = run_pending(&deps.effects, owner, new_item).await?;
        return Ok(outcome(
            done.record.incident.as_ref().map(|r| r.id().to_string()),
        ));
    }
}
