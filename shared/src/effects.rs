//! The effect runner: every function that changes an incident goes through it.
//!
//! A change is decided purely (an alarm transition in [`crate::lifecycle`], a
//! person's action in [`crate::respond`]) into the new [`IncidentRecord`] and the
//! [`Effect`]s it implies. The runner writes both to the state table in one
//! conditional write (the item's version), then runs the effects in order, saving
//! progress after each. A failure leaves the rest pending on the item, with the lease
//! released, so a retry (or the next change of the same incident) finishes them
//! before deciding anything new: an incident opened before a failed publish is not
//! opened again, and the notification still goes out. A conflict (someone wrote the
//! item meanwhile) means read again and decide anew.
//!
//! [`apply_change`] is the generic entry point ("change an incident by a pure
//! function"); alarm-to-incident, which also writes the alarm's item in the same
//! transaction, uses [`resume_pending`] and [`run_pending`] directly.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use crate::error::{AwsError, AwsFailure, Retryable};
use crate::escalation::{schedule_name, EscalationTimer, Pager};
use crate::incident::{BackendError, IncidentBackend, IncidentRef};
use crate::lifecycle::{Effect, EscalationState, IncidentRecord};
use crate::notification::{EventType, Notification};
use crate::state::{IncidentItem, StateError, StateStore};

/// The time, injectable for tests of leases and escalation.
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

/// Where lifecycle notifications go.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one notification; returns the message id.
    async fn publish(&self, notification: &Notification) -> Result<String, AwsError>;
}

/// [`Publisher`] to the SNS notification topic ([`crate::publish::publish_notification`]).
#[derive(Debug, Clone)]
pub struct SnsPublisher {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsPublisher {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        SnsPublisher {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

#[async_trait]
impl Publisher for SnsPublisher {
    async fn publish(&self, notification: &Notification) -> Result<String, AwsError> {
        crate::publish::publish_notification(&self.client, &self.topic_arn, notification).await
    }
}

/// Tunables of the runner.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Passed to runbooks as `AutomationAssumeRole`.
    pub automation_role_arn: Option<String>,
    /// How long an invocation owns an incident's pending effects; at least the
    /// function timeout, so two invocations never run them at once.
    pub lease: chrono::Duration,
    /// Pause before reading again when another invocation holds the lease.
    pub busy_wait: Duration,
    /// Reads and decisions per change before giving up with a retryable error.
    pub attempts: u32,
}

impl RunnerSettings {
    pub fn new(automation_role_arn: Option<String>) -> RunnerSettings {
        RunnerSettings {
            automation_role_arn,
            lease: chrono::Duration::seconds(90),
            busy_wait: Duration::from_millis(500),
            attempts: 8,
        }
    }
}

/// What the runner uses, built once per container. `timer` and `pager` are `None`
/// when escalation is off: their effects are then skipped with a warning.
#[derive(Clone, Copy)]
pub struct EffectDeps<'a> {
    pub backend: &'a dyn IncidentBackend,
    pub store: &'a dyn StateStore,
    pub publisher: &'a dyn Publisher,
    pub clock: &'a dyn Clock,
    pub settings: &'a RunnerSettings,
    pub timer: Option<&'a dyn EscalationTimer>,
    pub pager: Option<&'a dyn Pager>,
}

/// A failed effect or state access.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EffectError {
    /// The incident backend (OpsCenter or Incident Manager) failed.
    #[error("incident backend: {0}")]
    Backend(#[from] BackendError),
    #[error(transparent)]
    State(#[from] StateError),
    /// Publishing the notification to SNS failed.
    #[error("notification: {0}")]
    Publish(AwsError),
    /// Creating or deleting the escalation schedule failed.
    #[error("escalation timer: {0}")]
    Timer(AwsError),
    /// Publishing to the escalation topic failed.
    #[error("escalation page: {0}")]
    Page(AwsError),
    /// The change function produced a record of another incident (a bug).
    #[error("change of incident {key:?} produced a record keyed {produced:?}")]
    KeyMismatch { key: String, produced: String },
    /// Other invocations kept changing the incident (or held its lease) through every attempt.
    #[error("incident {key:?} is being changed by another invocation; retry later")]
    Busy { key: String },
}

impl Retryable for EffectError {
    fn retryable(&self) -> bool {
        match self {
            EffectError::Backend(e) => e.retryable(),
            EffectError::State(e) => e.retryable(),
            EffectError::Publish(e) | EffectError::Timer(e) | EffectError::Page(e) => e.retryable(),
            EffectError::KeyMismatch { .. } => false,
            EffectError::Busy { .. } => true,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            EffectError::Backend(e) => e.kind(),
            EffectError::State(e) => e.kind(),
            EffectError::Publish(e) | EffectError::Timer(e) | EffectError::Page(e) => e.kind(),
            EffectError::KeyMismatch { .. } => "Internal",
            EffectError::Busy { .. } => "Busy",
        }
    }
}

impl EffectError {
    /// True when running the same step again may succeed: throttling, 5xx, timeouts,
    /// and access denied (fixed by a policy change, after which the step must still run).
    /// A step that failed otherwise (rejected as invalid, resource gone) never will.
    pub fn worth_keeping(&self) -> bool {
        let access = |e: &AwsError| e.failure == AwsFailure::AccessDenied;
        match self {
            EffectError::Backend(BackendError::Aws(e))
            | EffectError::Publish(e)
            | EffectError::Timer(e)
            | EffectError::Page(e) => e.retryable() || access(e),
            EffectError::State(StateError::Aws(e)) => e.retryable() || access(e),
            other => other.retryable(),
        }
    }
}

/// True for the state errors that mean "someone else wrote first: read again".
pub fn is_conflict(e: &StateError) -> bool {
    matches!(
        e,
        StateError::AlarmNotNewer { .. } | StateError::IncidentChanged { .. }
    )
}

/// Runs one effect, updating `record` with what it produced (incident reference,
/// runbook execution id, milestones, escalation state). Effects that need a backend
/// incident are skipped, with a warning, when there is none.
pub async fn execute(
    deps: &EffectDeps<'_>,
    record: &mut IncidentRecord,
    effect: &Effect,
) -> Result<(), EffectError> {
    let need = |record: &IncidentRecord| -> Option<IncidentRef> {
        let r = record.incident.clone();
        if r.is_none() {
            warn!(
                effect = effect.as_str(),
                "no backend incident to act on; step skipped"
            );
        }
        r
    };
    match effect {
        Effect::Open { incident } => {
            let r = deps.backend.open(incident).await?;
            info!(incident = %r, backend = deps.backend.name(), impact = incident.impact.value(), "incident opened");
            record.incident = Some(r);
        }
        Effect::StartRunbook { plan, client_token } => {
            if let Some(r) = need(record) {
                let request = plan.request(
                    &r,
                    deps.settings.automation_role_arn.as_deref(),
                    client_token,
                );
                if let Some(id) = deps.backend.start_runbook(&r, &request).await? {
                    info!(incident = %r, execution = %id, "runbook started");
                    record.runbook_execution = Some(id);
                }
            }
        }
        Effect::SetImpact { impact, note } => {
            if let Some(r) = need(record) {
                deps.backend.set_impact(&r, *impact, note).await?;
                info!(incident = %r, impact = impact.value(), "impact changed");
            }
        }
        Effect::AddNote { note } => {
            if let Some(r) = need(record) {
                deps.backend.add_note(&r, note).await?;
            }
        }
        Effect::Resolve { note } => {
            if let Some(r) = need(record) {
                deps.backend.resolve(&r, note).await?;
                info!(incident = %r, "incident resolved");
            }
        }
        Effect::Publish { notification } => {
            let mut n = (**notification).clone();
            if let Some(r) = &record.incident {
                n.incident_ref = Some(r.id().to_string());
                n.incident_url = Some(r.console_url(&n.region));
            }
            if n.backend.is_none() {
                n.backend = Some(deps.backend.name().to_string());
            }
            let id = deps
                .publisher
                .publish(&n)
                .await
                .map_err(EffectError::Publish)?;
            if n.event == EventType::Opened && record.milestones.notified_at.is_none() {
                record.milestones.notified_at = Some(deps.clock.now());
            }
            info!(event = n.event.as_str(), message_id = %id, "notification published");
        }
        Effect::ScheduleEscalation { attempt, at } => {
            let Some(timer) = deps.timer else {
                warn!(
                    effect = effect.as_str(),
                    "escalation is not configured in this function; step skipped"
                );
                return Ok(());
            };
            if !record.is_open() {
                info!(attempt, "incident no longer open; escalation not scheduled");
                return Ok(());
            }
            let name = schedule_name(&record.key, record.opened_at, *attempt);
            timer
                .schedule(&name, &record.key, *attempt, *at)
                .await
                .map_err(EffectError::Timer)?;
            info!(attempt, due_at = %at, schedule = %name, "escalation scheduled");
            record.escalation = Some(EscalationState {
                attempt: *attempt,
                due_at: *at,
                schedule_name: name,
            });
        }
        Effect::CancelEscalation => {
            let Some(pending) = record.escalation.clone() else {
                return Ok(());
            };
            let Some(timer) = deps.timer else {
                warn!(
                    effect = effect.as_str(),
                    schedule = %pending.schedule_name,
                    "escalation is not configured in this function; schedule left to fire (it finds the incident answered)"
                );
                return Ok(());
            };
            timer
                .cancel(&pending.schedule_name)
                .await
                .map_err(EffectError::Timer)?;
            info!(schedule = %pending.schedule_name, "escalation cancelled");
            record.escalation = None;
        }
        Effect::Page { subject, message } => {
            let Some(pager) = deps.pager else {
                warn!(
                    effect = effect.as_str(),
                    "no escalation topic configured in this function; page skipped"
                );
                return Ok(());
            };
            let id = pager
                .page(subject, message)
                .await
                .map_err(EffectError::Page)?;
            info!(message_id = %id, "on-call paged");
        }
    }
    Ok(())
}

/// Runs the pending effects of `item` (whose lease this invocation holds) in order,
/// saving after each. A step that may succeed later stops the run and keeps it (and
/// the rest) pending, with the lease released for the retry; a step that can never
/// succeed is dropped so the incident is not blocked, and its error is returned
/// once the other steps ran.
pub async fn run_pending(
    deps: &EffectDeps<'_>,
    mut item: IncidentItem,
) -> Result<IncidentItem, EffectError> {
    let mut lasting_error: Option<EffectError> = None;
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

/// What [`resume_pending`] did with an item that had pending effects.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// Another invocation holds the lease; waited `busy_wait`: read again.
    Busy,
    /// Someone else claimed the item first: read again.
    Conflict,
    /// This invocation claimed the lease and finished the effects.
    Finished(IncidentItem),
}

/// Finishes the effects left pending on `item` by a failed or concurrent invocation:
/// waits when another invocation's lease is still running, else claims the lease
/// (a conditional write) and runs them. The caller then reads the item again.
pub async fn resume_pending(
    deps: &EffectDeps<'_>,
    item: &IncidentItem,
) -> Result<Resume, EffectError> {
    let now = deps.clock.now();
    if item.lease_until.is_some_and(|l| l > now) {
        info!(
            pending = item.pending.len(),
            "another invocation is working on the incident; waiting"
        );
        tokio::time::sleep(deps.settings.busy_wait).await;
        return Ok(Resume::Busy);
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
            Ok(Resume::Finished(run_pending(deps, claimed).await?))
        }
        Err(e) if is_conflict(&e) => Ok(Resume::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// A decided change of one incident: the record after it, the effects it implies (in
/// order) and a short reply for the person who asked (ephemeral in Slack).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub record: IncidentRecord,
    pub effects: Vec<Effect>,
    pub reply: String,
}

/// Why a person's action changes nothing; `message` is safe to show them (it names
/// no internals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

/// The reason of a [`Refusal`], for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No incident under that key.
    NotFound,
    /// The incident is resolved already.
    NotOpen,
    /// The person already owns the incident.
    AlreadyOwner,
    /// The incident has no runbook to run again.
    NoRunbook,
    /// The request itself is unusable (empty note or title).
    Invalid,
    /// An incident with that key is open already.
    AlreadyExists,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

/// The result of [`apply_change`].
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeOutcome {
    /// The change was written and its effects ran (`changed` is false when the
    /// change function left the record as it was and asked for nothing: no write).
    Applied {
        record: IncidentRecord,
        reply: String,
        changed: bool,
        /// Steps left pending by an earlier invocation were finished first.
        resumed: bool,
    },
    /// The change function refused; nothing was written.
    Refused(Refusal),
}

/// Changes the incident under `key` by a pure function: reads the item, finishes
/// effects left pending first, calls `change(current record, now)`, writes the new
/// record with the effects conditionally (a conflict reads and decides again), then
/// runs the effects. `change` may be called more than once (on conflicts), so it
/// must be pure. A record that does not exist yet is created (version 1).
pub async fn apply_change<F>(
    deps: &EffectDeps<'_>,
    key: &str,
    mut change: F,
) -> Result<ChangeOutcome, EffectError>
where
    F: FnMut(Option<&IncidentRecord>, DateTime<Utc>) -> Result<Change, Refusal> + Send,
{
    let mut resumed = false;
    for attempt in 0..deps.settings.attempts.max(1) {
        let item = deps.store.incident(key).await?;
        if let Some(item) = item.as_ref().filter(|i| !i.pending.is_empty()) {
            if let Resume::Finished(_) = resume_pending(deps, item).await? {
                resumed = true;
            }
            continue;
        }
        let now = deps.clock.now();
        let current = item.as_ref().map(|i| &i.record);
        let c = match change(current, now) {
            Ok(c) => c,
            Err(refusal) => {
                info!(reason = ?refusal.kind, "change refused");
                return Ok(ChangeOutcome::Refused(refusal));
            }
        };
        if c.record.key != key {
            return Err(EffectError::KeyMismatch {
                key: key.to_string(),
                produced: c.record.key,
            });
        }
        if c.effects.is_empty() && current == Some(&c.record) {
            return Ok(ChangeOutcome::Applied {
                record: c.record,
                reply: c.reply,
                changed: false,
                resumed,
            });
        }
        let new_item = IncidentItem {
            version: item.as_ref().map_or(1, |i| i.version + 1),
            record: c.record,
            pending: c.effects,
            lease_until: Some(now + deps.settings.lease),
        };
        match deps.store.save_incident(&new_item).await {
            Ok(()) => {}
            Err(e) if is_conflict(&e) => {
                info!(attempt, error = %e, "state changed meanwhile; deciding again");
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        info!(steps = new_item.pending.len(), "incident change decided");
        let done = run_pending(deps, new_item).await?;
        return Ok(ChangeOutcome::Applied {
            record: done.record,
            reply: c.reply,
            changed: true,
            resumed,
        });
    }
    Err(EffectError::Busy {
        key: key.to_string(),
    })
}
