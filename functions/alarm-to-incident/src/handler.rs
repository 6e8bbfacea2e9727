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
//!
//! A transition that is muted (an alarm mute rule's window) or silenced (from Slack)
//! is held back ([`shared::hold`]): its watermark is recorded, an open incident gets
//! a timeline note, nothing opens and nobody is paged; the reconciliation sweep
//! ([`crate::sweep`], `{"sweep": ...}` events: scheduled, or a hold's timer) applies it
//! at the hold's end if the alarm still fires. `OK` is never held.
//!
//! Every write carries the invocation's owner token (its Lambda request id, kept by
//! Lambda across its retries): a transaction whose answer was lost is recognized as
//! this invocation's own when read back, and its effects run; a lease left by an
//! earlier attempt of the same request is taken over at once. A transition that
//! changes no incident is written with a check that the incident's item is as read
//! ([`IncidentWrite::Unchanged`]), so a decision made on a stale read is made again.

use serde::Serialize;
use serde_json::Value;
use shared::alarm::{normalize, Alarm, AlarmState};
use shared::classify::{Classification, Rules};
use shared::effects::{
    decided_item, is_conflict, resume_pending, run_pending, EffectDeps, EffectError, Patience,
    Resume,
};
use shared::error::Retryable;
use shared::escalation::EscalationPolicy;
use shared::hold::{held_note, hold_for, Hold};
use shared::hold_store::{update_silences, HoldStore, SilenceStore};
use shared::hold_timer::{fire_at, mute_end_name, HoldTimer, SweepRequest};
use shared::incident::Note;
use shared::lifecycle::{decide, Effect, Transition};
use shared::org::{AccountInfo, OrgPolicy, Refusal};
use shared::silence::{HeldTransition, SilenceBook};
use shared::state::{AlarmItem, IncidentItem, IncidentWrite, Owner};
use tracing::{error, info, info_span, warn, Instrument};

use crate::cloudwatch::AlarmReader;
use crate::effects::{complete_record, note_data, plan, Origin};
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
    /// Held transitions and the sweep's scan (the state table).
    pub holds: &'a dyn HoldStore,
    /// The silences set from Slack (the state table).
    pub silences: &'a dyn SilenceStore,
    /// `DescribeAlarms`, for the reconciliation sweep.
    pub alarms: &'a dyn AlarmReader,
    /// The timer at a mute window's end; `None` when `HOLD_SCHEDULE_GROUP` is unset.
    pub hold_timer: Option<&'a dyn HoldTimer>,
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
    /// A member account whose alarms the sweep could not read (`code`: why).
    fn count_unreachable(&self, account: &str, region: &str, code: &str);
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

    fn count_unreachable(&self, account: &str, region: &str, code: &str) {
        let line = shared::org::unreachable_metric_line(
            &self.function,
            account,
            region,
            code,
            chrono::Utc::now().timestamp_millis(),
        );
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

/// Handles alarm events of request `owner` without knowing this function's ARN (no
/// mute timers): tests.
#[cfg(test)]
pub async fn handle(
    deps: &Deps<'_>,
    owner: &Owner,
    event: &Value,
) -> Result<Response, HandlerError> {
    handle_alarms(deps, owner, event, &HoldContext::default()).await
}

/// One invocation of the function (`owner`: its request id and deadline): a
/// reconciliation sweep (`{"sweep": ...}`, from the schedule or a hold's timer) or
/// alarm events. `function_arn` is this function's own ARN (the target of the timers
/// it sets).
pub async fn handle_invocation(
    deps: &Deps<'_>,
    owner: &Owner,
    event: &Value,
    function_arn: &str,
) -> Result<Value, HandlerError> {
    if event.get("sweep").is_some() {
        let request: SweepRequest = serde_json::from_value(event.clone())
            .map_err(|e| HandlerError::BadSweep(e.to_string()))?;
        let report = crate::sweep::sweep(deps, owner, &request.sweep.reason, function_arn).await?;
        return Ok(serde_json::to_value(report).unwrap_or_default());
    }
    let ctx = HoldContext {
        function_arn: function_arn.to_string(),
    };
    let response = handle_alarms(deps, owner, event, &ctx).await?;
    Ok(serde_json::to_value(response).unwrap_or_default())
}

/// Handles one event: every alarm it carries, in order. The first failure ends the
/// invocation with an error; transitions handled before it are duplicates on retry.
async fn handle_alarms(
    deps: &Deps<'_>,
    owner: &Owner,
    event: &Value,
    ctx: &HoldContext,
) -> Result<Response, HandlerError> {
    let alarms = normalize(event).inspect_err(|e| error!(error = %e, "event rejected"))?;
    let mut results = Vec::with_capacity(alarms.len());
    for alarm in &alarms {
        let contributor = alarm.contributor.as_ref().map(|c| c.describe());
        let span = info_span!("alarm", alarm = %alarm.name, state = %alarm.state, contributor = contributor.as_deref(), incident_key = tracing::field::Empty);
        let work = async {
            if alarm.is_multi_series_summary() {
                record_summary(deps, owner, alarm).await
            } else {
                process_with(deps, owner, alarm, &Origin::Delivered, ctx).await
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
async fn record_summary(
    deps: &Deps<'_>,
    owner: &Owner,
    alarm: &Alarm,
) -> Result<Outcome, HandlerError> {
    // In organization mode a foreign account's summary is refused like its alarms.
    if let Some(Err(refusal)) = deps.org.map(|org| org.admit(alarm)) {
        return Ok(refuse(deps, alarm, "", &refusal));
    }
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
            held: None,
            writer: owner.token().to_string(),
        };
        match deps
            .effects
            .store
            .apply(&item, IncidentWrite::NotConcerned)
            .await
        {
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

/// What a held transition needs besides the alarm: this function's ARN (the timer's
/// target).
#[derive(Debug, Clone, Default)]
pub struct HoldContext {
    pub function_arn: String,
}

/// The alarm's classification and, in organization mode, its account: checked
/// (`shared::org`), its incident key prefixed for a member account, the diagnosis
/// runbook told the account and region. `Err`: the alarm is refused.
pub(crate) fn classify(
    deps: &Deps<'_>,
    alarm: &Alarm,
) -> Result<(Classification, Option<AccountInfo>), Refusal> {
    let account = deps.org.map(|org| org.admit(alarm)).transpose()?;
    let mut class = deps.rules.classify(alarm);
    if let (Some(org), Some(account)) = (deps.org, account.as_ref()) {
        class.key = org.incident_key(&account.id, &class.key);
        if !account.home {
            crate::effects::target_member_account(&mut class, alarm, deps.diagnosis_document);
        }
    }
    Ok((class, account))
}

/// Answers a refused alarm: logged, counted, no incident touched, no retry.
pub(crate) fn refuse(deps: &Deps<'_>, alarm: &Alarm, key: &str, refusal: &Refusal) -> Outcome {
    warn!(alarm = %alarm.name, account = %alarm.account, alarm_arn = %alarm.arn, reason = refusal.reason(), error = %refusal, "alarm refused");
    deps.metrics.count(refusal, alarm);
    Outcome {
        alarm: alarm.name.clone(),
        state: alarm.state.to_string(),
        incident_key: key.to_string(),
        action: "refused",
        incident: None,
        resumed: false,
        contributor: alarm.contributor.as_ref().map(|c| c.describe()),
        note: None,
    }
}

/// Decides and applies one transition exactly once (or holds it back). In
/// organization mode the alarm's account is checked first, whatever brought the
/// transition (an event, the sweep, a hold's end).
pub(crate) async fn process_with(
    deps: &Deps<'_>,
    owner: &Owner,
    alarm: &Alarm,
    origin: &Origin,
    ctx: &HoldContext,
) -> Result<Outcome, HandlerError> {
    let (class, account) = match classify(deps, alarm) {
        Ok(c) => c,
        Err(refusal) => return Ok(refuse(deps, alarm, "", &refusal)),
    };
    let mut resumed = false;
    let mut patience = Patience::new(deps.effects.settings, owner, &class.key);
    // The alarm, or this one time series of a multi-time-series alarm.
    let source = alarm.source_id();
    loop {
        // One round for the three reads the decision needs: the alarm's last
        // transition, the incident item of the rules' key (the key for every state
        // but a recovery, checked below) and the silences (no hold concerns an OK).
        // Read one after the other they cost three DynamoDB round trips on the way to
        // Slack (bench/NOTES.md, issue 18).
        let silences = async {
            if alarm.state == AlarmState::Ok {
                Ok(SilenceBook::default())
            } else {
                deps.silences.silences().await
            }
        };
        let (last, by_rules, book) = tokio::try_join!(
            deps.effects.store.alarm(&source),
            deps.effects.store.incident(&class.key),
            silences,
        )?;
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
        let item = if key == class.key {
            by_rules
        } else {
            deps.effects.store.incident(&key).await?
        };
        if let (Some(org), Some(item)) = (deps.org, item.as_ref()) {
            if let Err(refusal) = org.check_owner(&key, &item.record.account, &alarm.account) {
                return Ok(refuse(deps, alarm, &key, &refusal));
            }
        }

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
            contributor: alarm.contributor.clone(),
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
            // A retry of a held transition finishes what holding it implies.
            if let Some(held) = last
                .as_ref()
                .filter(|l| l.changed_at == alarm.changed_at)
                .and_then(|l| l.held.as_ref())
            {
                after_hold(deps, alarm, &key, held, ctx).await?;
            }
            return Ok(outcome(current_ref));
        }
        if let Some(hold) = hold_for(alarm, &key, &book, deps.effects.clock.now()) {
            match hold_transition(deps, owner, alarm, &key, item.as_ref(), &hold).await {
                Ok(()) => {}
                Err(HandlerError::Effect(EffectError::State(e))) if is_conflict(&e) => {
                    patience.conflict()?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            after_hold(deps, alarm, &key, &hold, ctx).await?;
            let action = if hold.silence_id().is_some() {
                "held_silenced"
            } else {
                "held_muted"
            };
            info!(action, hold = %hold.describe(), until = %hold.until, "transition recorded and held back; nobody paged");
            return Ok(Outcome {
                action,
                ..outcome(current_ref)
            });
        }
        let new_alarm = AlarmItem {
            arn: source.clone(),
            changed_at: alarm.changed_at,
            state: alarm.state,
            incident_key: key.clone(),
            held: None,
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
        complete_record(
            &mut record,
            alarm,
            &class,
            &decision.action,
            account.as_ref(),
        );
        mark_origin(&mut record, alarm, origin);
        let effects = plan(deps, alarm, &class, &decision.action, &record, origin);
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

/// Says in the timeline entry the decision just added how the transition came: found
/// by the sweep, or applied at the end of a hold.
pub(crate) fn mark_origin(
    record: &mut shared::lifecycle::IncidentRecord,
    alarm: &Alarm,
    origin: &Origin,
) {
    let Some(text) = origin.note(alarm) else {
        return;
    };
    match origin {
        Origin::Sweep | Origin::Unlisted { .. } => {
            if let Some(last) = record.timeline.last_mut() {
                last.text = format!("{} ({})", last.text, text.trim_end_matches('.'));
            }
        }
        _ => {
            // Before the decision's own entry: the hold came first.
            let at = record.timeline.last().map_or(alarm.changed_at, |e| e.at);
            let entry = shared::notification::TimelineEntry {
                at,
                text,
                actor: None,
            };
            let i = record.timeline.len().saturating_sub(1);
            record.timeline.insert(i, entry);
        }
    }
}

/// Records a held transition: the alarm's watermark with its hold and, on the
/// incident the alarm would change when one is open, a timeline note and a note in
/// the backend (no notification: nobody is paged). A conflict is returned as such
/// (read again).
async fn hold_transition(
    deps: &Deps<'_>,
    owner: &Owner,
    alarm: &Alarm,
    key: &str,
    item: Option<&IncidentItem>,
    hold: &Hold,
) -> Result<(), HandlerError> {
    let new_alarm = AlarmItem {
        // The alarm, or this one time series of a multi-time-series alarm.
        arn: alarm.source_id(),
        changed_at: alarm.changed_at,
        state: alarm.state,
        incident_key: key.to_string(),
        held: Some(hold.clone()),
        writer: owner.token().to_string(),
    };
    let Some(open) = item.filter(|i| i.record.is_open()) else {
        // Decided on "nothing open" as read: guarded like any unchanged incident.
        let unchanged = IncidentWrite::Unchanged {
            key,
            version: item.map(|i| i.version),
        };
        deps.effects.store.apply(&new_alarm, unchanged).await?;
        return Ok(());
    };
    let text = held_note(&alarm.label(), alarm.state, hold);
    let mut record = open.record.clone();
    record.push_entry(alarm.changed_at, text.clone(), None);
    let mut data = note_data(alarm);
    data.insert("heldBy".into(), hold.describe());
    data.insert("heldUntil".into(), hold.until.to_rfc3339());
    let pending = vec![Effect::AddNote {
        note: Note {
            title: format!("{} is {} (held back)", alarm.label(), alarm.state),
            text,
            at: alarm.changed_at,
            data,
        },
    }];
    let now = deps.effects.clock.now();
    let new_item = decided_item(
        deps.effects.settings,
        owner,
        now,
        Some(open),
        record,
        pending,
    );
    deps.effects
        .store
        .apply(&new_alarm, IncidentWrite::Put(&new_item))
        .await?;
    run_pending(&deps.effects, owner, new_item).await?;
    Ok(())
}

/// What follows holding a transition, idempotent so a retry (where the transition is
/// a duplicate) finishes it: a silence counts it; a mute window gets its timer.
async fn after_hold(
    deps: &Deps<'_>,
    alarm: &Alarm,
    key: &str,
    hold: &Hold,
    ctx: &HoldContext,
) -> Result<(), HandlerError> {
    let now = deps.effects.clock.now();
    if let Some(id) = hold.silence_id() {
        let held = HeldTransition {
            alarm_name: alarm.label(),
            alarm_arn: alarm.arn.clone(),
            state: alarm.state,
            changed_at: alarm.changed_at,
            incident_key: key.to_string(),
        };
        let attempts = deps.effects.settings.attempts;
        let _ = update_silences(deps.silences, now, attempts, |book| {
            Ok::<_, ()>(((), book.record_held(id, held.clone())))
        })
        .await?;
        return Ok(());
    }
    let Some(timer) = deps.hold_timer else {
        info!("no hold timer configured; the scheduled sweep ends the mute hold");
        return Ok(());
    };
    if ctx.function_arn.is_empty() {
        warn!("this function's ARN is unknown; the scheduled sweep ends the mute hold");
        return Ok(());
    }
    let rule = match &hold.cause {
        shared::hold::HoldCause::Mute { rule_arn, .. } => rule_arn.as_deref(),
        shared::hold::HoldCause::Silence { .. } => None,
    };
    let name = mute_end_name(rule, hold.until);
    timer
        .sweep_at(
            &ctx.function_arn,
            &name,
            fire_at(hold.until, now),
            &format!("mute window of {} ended", rule.unwrap_or("a mute rule")),
        )
        .await
        .map_err(|e| HandlerError::Effect(EffectError::Timer(e)))?;
    info!(schedule = %name, "sweep scheduled at the mute window's end");
    Ok(())
}
