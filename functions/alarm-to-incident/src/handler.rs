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
//! A multi-time-series (Metrics Insights `GROUP BY`) alarm changes state per time
//! series: each contributor event is its own transition and opens or resolves the
//! incident of its series. The alarm-level event of such an alarm ("6 out of 6 time
//! series evaluated to ALARM") summarizes them: it is recorded under the alarm's own
//! watermark and logged, and opens nothing, so the per-series incidents are not
//! joined by an aggregate one ([`SUMMARY_NOTE`]).

use serde::Serialize;
use serde_json::Value;
use shared::alarm::{normalize, Alarm, AlarmState};
use shared::classify::Rules;
use shared::effects::{is_conflict, resume_pending, run_pending, EffectDeps, EffectError, Resume};
use shared::error::Retryable;
use shared::escalation::EscalationPolicy;
use shared::lifecycle::{decide, Transition};
use shared::state::{AlarmItem, IncidentItem};
use tracing::{error, info, info_span, Instrument};

use crate::effects::{complete_record, plan};
use crate::error::HandlerError;

/// Why the alarm-level event of a multi-time-series alarm changes no incident (in the
/// log line and the function's response).
pub const SUMMARY_NOTE: &str = "alarm-level state of a multi-time-series alarm: each time series \
     changes state in its own \"CloudWatch Alarm Contributor State Change\" event, which opens or \
     resolves that series' incident; this summary is recorded and opens nothing (an EventBridge \
     rule routes the contributor events here: docs/DEPLOY.md)";

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
    /// The time series, for one contributor of a multi-time-series alarm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contributor: Option<String>,
    /// Why nothing changed, when that needs saying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
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
        let contributor = alarm.contributor.as_ref().map(|c| c.describe());
        let span = info_span!("alarm", alarm = %alarm.name, state = %alarm.state, contributor = contributor.as_deref(), incident_key = tracing::field::Empty);
        let work = async {
            if alarm.is_multi_series_summary() {
                record_summary(deps, alarm).await
            } else {
                process(deps, alarm).await
            }
        };
        let outcome = work.instrument(span).await.inspect_err(|e| {
            error!(alarm = %alarm.name, error = %e, error_type = %e.lambda_error_type(), "alarm not handled")
        })?;
        results.push(outcome);
    }
    Ok(Response { results })
}

/// The alarm-level event of a multi-time-series alarm: recorded as the alarm's own
/// last transition (so a redelivery is a duplicate), logged with why, and nothing
/// else; its contributors' events carry the incidents.
async fn record_summary(deps: &Deps<'_>, alarm: &Alarm) -> Result<Outcome, HandlerError> {
    let outcome = |action: &'static str| Outcome {
        alarm: alarm.name.clone(),
        state: alarm.state.to_string(),
        incident_key: String::new(),
        action,
        incident: None,
        resumed: false,
        contributor: None,
        note: Some(SUMMARY_NOTE),
    };
    for _ in 0..deps.effects.settings.attempts.max(1) {
        let last = deps.effects.store.alarm(&alarm.arn).await?;
        if let Some(last) = last.filter(|l| alarm.changed_at <= l.changed_at) {
            let action = if alarm.changed_at == last.changed_at {
                "ignore_duplicate"
            } else {
                "ignore_stale"
            };
            info!(action, transition = %alarm.transition_id(), "transition already applied or superseded; ignored");
            return Ok(outcome(action));
        }
        let item = AlarmItem {
            arn: alarm.arn.clone(),
            changed_at: alarm.changed_at,
            state: alarm.state,
            incident_key: String::new(),
        };
        match deps.effects.store.apply(&item, None).await {
            Ok(()) => {
                info!(action = "record_summary", reason = %shared::text::truncate(&alarm.reason, 200), why = SUMMARY_NOTE, "multi-time-series alarm summary recorded; no incident change");
                return Ok(outcome("record_summary"));
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(EffectError::Busy {
        key: alarm.arn.clone(),
    }
    .into())
}

async fn process(deps: &Deps<'_>, alarm: &Alarm) -> Result<Outcome, HandlerError> {
    let class = deps.rules.classify(alarm);
    let mut key = class.key.clone();
    let mut resumed = false;
    // The alarm, or this one time series of a multi-time-series alarm.
    let source = alarm.source_id();
    for attempt in 0..deps.effects.settings.attempts.max(1) {
        let last = deps.effects.store.alarm(&source).await?;
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
        let item = deps.effects.store.incident(&key).await?;

        if let Some(item) = item.as_ref().filter(|i| !i.pending.is_empty()) {
            if let Resume::Finished(_) = resume_pending(&deps.effects, item).await? {
                resumed = true;
            }
            continue;
        }

        let transition = Transition {
            key: key.clone(),
            alarm_arn: alarm.arn.clone(),
            contributor: alarm.contributor.as_ref().map(|c| c.id.clone()),
            alarm_name: alarm.label(),
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
            contributor: alarm.contributor.as_ref().map(|c| c.describe()),
            note: None,
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
            arn: source.clone(),
            changed_at: alarm.changed_at,
            state: alarm.state,
            incident_key: key.clone(),
        };
        let Some(mut record) = decision.record.clone() else {
            match deps.effects.store.apply(&new_alarm, None).await {
                Ok(()) => {
                    info!(
                        action = decision.action.as_str(),
                        "transition recorded; no incident change"
                    );
                    return Ok(outcome(current_ref));
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        complete_record(&mut record, alarm, &class, &decision.action);
        let effects = plan(deps, alarm, &class, &decision.action, &record);
        let new_item = IncidentItem {
            version: item.as_ref().map_or(1, |i| i.version + 1),
            record,
            pending: effects,
            lease_until: Some(deps.effects.clock.now() + deps.effects.settings.lease),
        };
        match deps.effects.store.apply(&new_alarm, Some(&new_item)).await {
            Ok(()) => {}
            Err(e) if is_conflict(&e) => {
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
        let done = run_pending(&deps.effects, new_item).await?;
        return Ok(outcome(
            done.record.incident.as_ref().map(|r| r.id().to_string()),
        ));
    }
    Err(EffectError::Busy { key }.into())
}
