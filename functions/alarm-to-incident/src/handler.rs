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

use serde::Serialize;
use serde_json::Value;
use shared::alarm::{normalize, Alarm, AlarmState};
use shared::classify::Rules;
use shared::effects::{is_conflict, resume_pending, run_pending, EffectDeps, EffectError, Resume};
use shared::error::Retryable;
use shared::escalation::EscalationPolicy;
use shared::lifecycle::{decide, Transition};
use shared::org::{AccountInfo, OrgPolicy, Refusal};
use shared::state::{AlarmItem, IncidentItem};
use tracing::{error, info, info_span, warn, Instrument};

use crate::effects::{complete_record, plan};
use crate::error::HandlerError;

/// Everything the handler uses, built once per container.
pub struct Deps<'a> {
    /// The effect runner's dependencies (backend, state, publisher, clock, timer).
    pub effects: EffectDeps<'a>,
    pub rules: &'a Rules,
    /// The escalation policy, when `ESCALATION_MIN_IMPACT` is set.
    pub escalation: Option<&'a EscalationPolicy>,
    /// The organization mode (`ORGANIZATION_ID` set): which accounts may report, and
    /// how their incidents are kept apart. `None`: one account, as before.
    pub org: Option<&'a OrgPolicy>,
    /// The stack's diagnosis runbook (`RUNBOOK_DOCUMENT_NAME`): a member account's
    /// run of it is told the account and region to diagnose in.
    pub diagnosis_document: Option<&'a str>,
    /// Where refused events are counted (an EMF line on stdout in Lambda).
    pub metrics: &'a dyn RefusalCounter,
}

/// Counts refused events (organization mode). In Lambda: one embedded-metric-format
/// line on stdout per refusal ([`shared::org::refusal_metric_line`]), which
/// CloudWatch Logs turns into the `IncidentPipeline` / `RefusedEvents` metric.
pub trait RefusalCounter: Sync {
    fn count(&self, refusal: &Refusal, alarm: &Alarm);
}

/// The Lambda counter: EMF lines on stdout, named after the function.
pub struct EmfCounter {
    pub function: String,
}

impl RefusalCounter for EmfCounter {
    fn count(&self, refusal: &Refusal, alarm: &Alarm) {
        let line = shared::org::refusal_metric_line(
            &self.function,
            refusal,
            &alarm.account,
            &alarm.name,
            chrono::Utc::now().timestamp_millis(),
        );
        // Not through tracing: EMF needs `_aws` as a top-level JSON object.
        println!("{line}");
    }
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
        let account = match deps.org.map(|org| org.admit(alarm)).transpose() {
            Ok(account) => account,
            Err(refusal) => {
                results.push(refuse(deps, alarm, "", &refusal));
                continue;
            }
        };
        let outcome = process(deps, alarm, account.as_ref()).instrument(span).await.inspect_err(|e| {
            error!(alarm = %alarm.name, error = %e, error_type = %e.lambda_error_type(), "alarm not handled")
        })?;
        results.push(outcome);
    }
    Ok(Response { results })
}

/// Answers a refused alarm: logged, counted, no incident touched, no retry.
fn refuse(deps: &Deps<'_>, alarm: &Alarm, key: &str, refusal: &Refusal) -> Outcome {
    warn!(alarm = %alarm.name, account = %alarm.account, alarm_arn = %alarm.arn, reason = refusal.reason(), error = %refusal, "alarm refused");
    deps.metrics.count(refusal, alarm);
    Outcome {
        alarm: alarm.name.clone(),
        state: alarm.state.to_string(),
        incident_key: key.to_string(),
        action: "refused",
        incident: None,
        resumed: false,
    }
}

async fn process(
    deps: &Deps<'_>,
    alarm: &Alarm,
    account: Option<&AccountInfo>,
) -> Result<Outcome, HandlerError> {
    let mut class = deps.rules.classify(alarm);
    if let (Some(org), Some(account)) = (deps.org, account) {
        class.key = org.incident_key(&account.id, &class.key);
        if !account.home {
            crate::effects::target_member_account(&mut class, alarm, deps.diagnosis_document);
        }
    }
    let mut key = class.key.clone();
    let mut resumed = false;
    for attempt in 0..deps.effects.settings.attempts.max(1) {
        let last = deps.effects.store.alarm(&alarm.arn).await?;
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
        if let (Some(org), Some(item)) = (deps.org, item.as_ref()) {
            if let Err(refusal) = org.check_owner(&key, &item.record.account, &alarm.account) {
                return Ok(refuse(deps, alarm, &key, &refusal));
            }
        }

        if let Some(item) = item.as_ref().filter(|i| !i.pending.is_empty()) {
            if let Resume::Finished(_) = resume_pending(&deps.effects, item).await? {
                resumed = true;
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
        complete_record(&mut record, alarm, &class, &decision.action, account);
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
