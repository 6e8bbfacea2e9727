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
//! transaction, uses [`resume_pending`] and [`run_pending`] directly. A function
//! that only records facts on the incident (vpn-troubleshoot's diagnosis) uses
//! [`update_record`], which never runs effects and leaves pending ones to their owner.
//!
//! Every write names its [`Owner`] (the invocation), so a write whose answer was lost
//! is recognized as its own when read back ([`crate::state`]) and the run goes on. The
//! lease on pending effects names its holder and ends at the holder's deadline at the
//! latest; the holder releases it on every way out (done, or a step failed); a retry
//! of the same request takes its own lease over at once; anyone else waits, reading
//! again every `busy_wait`, while the lease is held and its own deadline allows
//! ([`Patience`]). A change decided once under an owner token is not decided again
//! when the same request comes back (a redelivered job): [`ChangeOutcome::Repeated`].
//! Each notification gets an id when its change is decided, the same however often
//! it is published, so notify-fanout delivers it once.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use crate::error::{AwsError, AwsFailure, Retryable};
use crate::escalation::{schedule_name, EscalationTimer, Pager};
use crate::hash::token_uuid;
use crate::incident::{BackendError, IncidentBackend, IncidentRef};
use crate::lifecycle::{Effect, EscalationState, IncidentRecord};
use crate::notification::{EventType, Notification};
use crate::state::{IncidentItem, Owner, StateError, StateStore};

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
    /// The longest an invocation owns an incident's pending effects: at least the
    /// function timeout, so two invocations never run them at once. A lease also ends
    /// at its holder's deadline ([`Owner::lease_until`]).
    pub lease: chrono::Duration,
    /// Pause before reading again when another invocation holds the lease.
    pub busy_wait: Duration,
    /// Decisions per change (a conflict decides again) before giving up with a
    /// retryable error.
    pub attempts: u32,
    /// Reads while another invocation holds the lease before giving up with a
    /// retryable error (the owner's deadline may end the wait sooner).
    pub lease_waits: u32,
    /// Time kept before the owner's deadline for the work after a wait: a waiter gives
    /// up when less than this is left.
    pub reserve: chrono::Duration,
}

impl RunnerSettings {
    pub fn new(automation_role_arn: Option<String>) -> RunnerSettings {
        RunnerSettings {
            automation_role_arn,
            lease: chrono::Duration::seconds(90),
            busy_wait: Duration::from_millis(250),
            attempts: 8,
            // 60 s of 250 ms reads: as long as the longest holder can hold (its timeout).
            lease_waits: 240,
            reserve: chrono::Duration::seconds(10),
        }
    }
}

/// How long a change keeps trying while others work on the same incident: a conflict
/// (someone wrote first) decides again, at most `attempts` times; a lease held by
/// another invocation is waited for, one read every `busy_wait`, until it is released
/// or expires, at most `lease_waits` reads and never into the last `reserve` before
/// the owner's deadline. Out of patience: [`EffectError::Busy`] (retryable).
#[derive(Debug)]
pub struct Patience<'a> {
    settings: &'a RunnerSettings,
    owner: &'a Owner,
    key: &'a str,
    conflicts: u32,
    waits: u32,
}

impl<'a> Patience<'a> {
    pub fn new(settings: &'a RunnerSettings, owner: &'a Owner, key: &'a str) -> Patience<'a> {
        Patience {
            settings,
            owner,
            key,
            conflicts: 0,
            waits: 0,
        }
    }

    fn busy(&self) -> EffectError {
        EffectError::Busy {
            key: self.key.to_string(),
        }
    }

    /// Someone wrote first: `Ok` to read and decide again.
    pub fn conflict(&mut self) -> Result<(), EffectError> {
        self.conflicts += 1;
        if self.conflicts >= self.settings.attempts.max(1) {
            return Err(self.busy());
        }
        Ok(())
    }

    /// Another invocation holds the lease: waits `busy_wait`, then `Ok` to read again.
    pub async fn wait_for_lease(&mut self, clock: &dyn Clock) -> Result<(), EffectError> {
        if self.waits >= self.settings.lease_waits
            || self
                .owner
                .nearly_out_of_time(clock.now(), self.settings.reserve)
        {
            warn!(
                waits = self.waits,
                "another invocation still holds the incident's lease; giving up for a retry"
            );
            return Err(self.busy());
        }
        if self.waits == 0 {
            info!("another invocation is working on the incident; waiting for it");
        }
        self.waits += 1;
        tokio::time::sleep(self.settings.busy_wait).await;
        Ok(())
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

/// Runs the pending effects of `item` (whose lease `owner` holds) in order, saving
/// after each. A step that may succeed later stops the run and keeps it (and the rest)
/// pending, with the lease released for the retry; a step that can never succeed is
/// dropped so the incident is not blocked, and its error is returned once the other
/// steps ran. The last save releases the lease.
pub async fn run_pending(
    deps: &EffectDeps<'_>,
    owner: &Owner,
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
                let released = item.next(owner).released();
                if let Err(se) = deps.store.save_incident(&released).await {
                    warn!(error = %se, "could not release the lease; it ends at this invocation's deadline");
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
        item = item.next(owner);
        if item.pending.is_empty() {
            item = item.released();
        }
        save_progress(deps, &item).await?;
    }
    match lasting_error {
        Some(e) => Err(e),
        None => Ok(item),
    }
}

/// Saves the run's progress (the step just done, or the release). The store
/// recognizes its own write after a lost answer; a failure that is not a conflict is
/// tried once more (the step ran: its removal should stick, else the next holder runs
/// it again). A conflict means the lease was lost (past the deadline): stop.
async fn save_progress(deps: &EffectDeps<'_>, item: &IncidentItem) -> Result<(), EffectError> {
    match deps.store.save_incident(item).await {
        Ok(()) => Ok(()),
        Err(e) if is_conflict(&e) => Err(e.into()),
        Err(e) => {
            warn!(error = %e, version = item.version, "could not save the run's progress; trying once more");
            deps.store.save_incident(item).await.map_err(|again| {
                warn!(error = %again, "progress not saved; the lease ends at this invocation's deadline");
                again.into()
            })
        }
    }
}

/// What [`resume_pending`] did with an item that had pending effects.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// Another invocation holds the lease: wait ([`Patience::wait_for_lease`]) and read again.
    Busy,
    /// Someone else claimed the item first: read again.
    Conflict,
    /// This invocation claimed the lease and finished the effects.
    Finished(Box<IncidentItem>),
}

/// Finishes the effects left pending on `item` by a failed or concurrent invocation:
/// [`Resume::Busy`] while another invocation's lease is held, else claims the lease (a
/// conditional write) and runs them. A lease held under `owner`'s own token is an
/// earlier attempt of this same request (Lambda's retry): taken over at once. The
/// caller then reads the item again.
pub async fn resume_pending(
    deps: &EffectDeps<'_>,
    owner: &Owner,
    item: &IncidentItem,
) -> Result<Resume, EffectError> {
    let now = deps.clock.now();
    match item.lease_holder_at(now) {
        Some(holder) if holder != owner.token() => return Ok(Resume::Busy),
        Some(_) => info!("the lease is this request's own (an earlier attempt); taking it over"),
        None => {}
    }
    let claimed = item
        .next(owner)
        .leased_to(owner, owner.lease_until(now, deps.settings.lease));
    match deps.store.save_incident(&claimed).await {
        Ok(()) => {
            info!(
                pending = claimed.pending.len(),
                "finishing steps left by an earlier invocation"
            );
            Ok(Resume::Finished(Box::new(
                run_pending(deps, owner, claimed).await?,
            )))
        }
        Err(e) if is_conflict(&e) => Ok(Resume::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// The item of a change decided by `owner` on `previous` (none: the key's first),
/// leased to `owner` for its effects. Each notification to publish gets its id here
/// (incident key, version, position): published again after a lost answer, it is
/// still the same notification, and notify-fanout delivers it once.
pub fn decided_item(
    settings: &RunnerSettings,
    owner: &Owner,
    now: DateTime<Utc>,
    previous: Option<&IncidentItem>,
    record: IncidentRecord,
    mut effects: Vec<Effect>,
) -> IncidentItem {
    let version = previous.map_or(1, |p| p.version + 1);
    for (i, effect) in effects.iter_mut().enumerate() {
        if let Effect::Publish { notification } = effect {
            if notification.notification_id.is_none() {
                notification.notification_id = Some(token_uuid(&[
                    "notification",
                    &record.key,
                    &version.to_string(),
                    &i.to_string(),
                ]));
            }
        }
    }
    IncidentItem::decided(
        previous,
        record,
        effects,
        owner,
        owner.lease_until(now, settings.lease),
    )
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
    /// The incident belongs to an account outside the person's Slack scope.
    OutOfScope,
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
        record: Box<IncidentRecord>,
        reply: String,
        changed: bool,
        /// Steps left pending by an earlier invocation were finished first.
        resumed: bool,
    },
    /// The same request's change was decided by an earlier attempt (a redelivery of
    /// the same job): not decided again; its steps are done (`resumed`: finished now).
    Repeated {
        record: Box<IncidentRecord>,
        resumed: bool,
    },
    /// The change function refused; nothing was written.
    Refused(Refusal),
}

/// Changes the incident under `key` by a pure function: reads the item, finishes
/// effects left pending first, calls `change(current record, now)`, writes the new
/// record with the effects conditionally (a conflict reads and decides again), then
/// runs the effects. `change` may be called more than once (on conflicts), so it
/// must be pure. A record that does not exist yet is created (version 1). A change
/// `owner` decided before (the same request again) is not decided twice:
/// [`ChangeOutcome::Repeated`].
pub async fn apply_change<F>(
    deps: &EffectDeps<'_>,
    owner: &Owner,
    key: &str,
    mut change: F,
) -> Result<ChangeOutcome, EffectError>
where
    F: FnMut(Option<&IncidentRecord>, DateTime<Utc>) -> Result<Change, Refusal> + Send,
{
    let mut resumed = false;
    let mut patience = Patience::new(deps.settings, owner, key);
    loop {
        let item = deps.store.incident(key).await?;
        if let Some(item) = item.as_ref().filter(|i| !i.pending.is_empty()) {
            match resume_pending(deps, owner, item).await? {
                Resume::Finished(_) => resumed = true,
                Resume::Busy => patience.wait_for_lease(deps.clock).await?,
                Resume::Conflict => patience.conflict()?,
            }
            continue;
        }
        if let Some(done) = item.as_ref().filter(|i| i.has_change(owner.token())) {
            info!(
                version = done.version,
                "this request's change was applied by an earlier attempt; not applied again"
            );
            return Ok(ChangeOutcome::Repeated {
                record: Box::new(done.record.clone()),
                resumed,
            });
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
                record: Box::new(c.record),
                reply: c.reply,
                changed: false,
                resumed,
            });
        }
        let new_item = decided_item(
            deps.settings,
            owner,
            now,
            item.as_ref(),
            c.record,
            c.effects,
        );
        match deps.store.save_incident(&new_item).await {
            Ok(()) => {}
            Err(e) if is_conflict(&e) => {
                info!(error = %e, "state changed meanwhile; deciding again");
                patience.conflict()?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        info!(steps = new_item.pending.len(), "incident change decided");
        let done = run_pending(deps, owner, new_item).await?;
        return Ok(ChangeOutcome::Applied {
            record: Box::new(done.record),
            reply: c.reply,
            changed: true,
            resumed,
        });
    }
}

/// The result of [`update_record`].
#[derive(Debug, Clone, PartialEq)]
pub enum RecordUpdate {
    /// The record as stored now (`changed` is false when the change function left
    /// it as it was: no write).
    Updated {
        record: Box<IncidentRecord>,
        changed: bool,
    },
    /// The change function refused; nothing was written.
    Refused(Refusal),
}

/// Changes only the record of the incident under `key`, for a function that records
/// facts (a diagnosis) and has no business running anyone's effects: reads the item,
/// calls `change(current record, now)` and writes the new record at the next version
/// with the pending steps and the lease exactly as read, so the steps stay for the
/// invocation that owns them. No effect is ever run, and `change` returns a record,
/// not a [`Change`], so it cannot ask for one.
///
/// While another invocation holds the lease over pending steps nothing is written: its
/// next conditional save would fail after its step ran, and the step (a publish: a
/// duplicate Slack post) would run again. The read is repeated while the lease is held
/// ([`Patience`]), then [`EffectError::Busy`] (retryable). A conflict (someone wrote
/// meanwhile) reads again and calls `change` again, so it must be pure. A record that
/// does not exist yet is created (version 1, nothing pending).
pub async fn update_record<F>(
    store: &dyn StateStore,
    clock: &dyn Clock,
    settings: &RunnerSettings,
    owner: &Owner,
    key: &str,
    mut change: F,
) -> Result<RecordUpdate, EffectError>
where
    F: FnMut(Option<&IncidentRecord>, DateTime<Utc>) -> Result<IncidentRecord, Refusal> + Send,
{
    let mut patience = Patience::new(settings, owner, key);
    loop {
        let item = store.incident(key).await?;
        let now = clock.now();
        if let Some(holder) = item
            .as_ref()
            .and_then(|i| i.lease_holder_at(now))
            .filter(|h| *h != owner.token())
        {
            info!(
                holder,
                "another invocation holds the incident's lease; waiting before writing"
            );
            patience.wait_for_lease(clock).await?;
            continue;
        }
        let current = item.as_ref().map(|i| &i.record);
        let record = match change(current, now) {
            Ok(r) => r,
            Err(refusal) => {
                info!(reason = ?refusal.kind, "record change refused");
                return Ok(RecordUpdate::Refused(refusal));
            }
        };
        if record.key != key {
            return Err(EffectError::KeyMismatch {
                key: key.to_string(),
                produced: record.key,
            });
        }
        if current == Some(&record) {
            return Ok(RecordUpdate::Updated {
                record: Box::new(record),
                changed: false,
            });
        }
        let new_item = match &item {
            Some(read) => IncidentItem {
                record,
                ..read.next(owner)
            },
            None => IncidentItem::decided(None, record, Vec::new(), owner, now),
        };
        match store.save_incident(&new_item).await {
            Ok(()) => {
                info!(
                    version = new_item.version,
                    pending = new_item.pending.len(),
                    "incident record updated; pending steps left to their owner"
                );
                return Ok(RecordUpdate::Updated {
                    record: Box::new(new_item.record),
                    changed: true,
                });
            }
            Err(e) if is_conflict(&e) => {
                info!(error = %e, "state changed meanwhile; reading again");
                patience.conflict()?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Recording fakes of the runner's dependencies, for tests of this crate and of
/// the functions (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod fakes {
    use std::sync::Mutex;

    use super::*;
    use crate::incident::{Impact, NewIncident, Note, RunbookRequest};

    /// A clock that stays where it is set.
    #[derive(Debug)]
    pub struct FixedClock(pub Mutex<DateTime<Utc>>);

    impl FixedClock {
        pub fn at(t: DateTime<Utc>) -> Self {
            FixedClock(Mutex::new(t))
        }
        pub fn set(&self, t: DateTime<Utc>) {
            if let Ok(mut c) = self.0.lock() {
                *c = t;
            }
        }
    }

    impl Clock for FixedClock {
        fn now(&self) -> DateTime<Utc> {
            self.0.lock().map(|c| *c).unwrap_or_else(|_| Utc::now())
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records notifications; fails once per error queued with `fail_next`.
    #[derive(Debug, Default)]
    pub struct RecordingPublisher {
        pub sent: Mutex<Vec<Notification>>,
        pub failures: Mutex<Vec<AwsError>>,
    }

    impl RecordingPublisher {
        pub fn fail_next(&self, e: AwsError) {
            lock(&self.failures).push(e);
        }
        pub fn sent(&self) -> Vec<Notification> {
            lock(&self.sent).clone()
        }
    }

    #[async_trait]
    impl Publisher for RecordingPublisher {
        async fn publish(&self, n: &Notification) -> Result<String, AwsError> {
            if let Some(e) = lock(&self.failures).pop() {
                return Err(e);
            }
            let mut sent = lock(&self.sent);
            sent.push(n.clone());
            Ok(format!("msg-{}", sent.len()))
        }
    }

    /// One call to a [`RecordingTimer`].
    #[derive(Debug, Clone, PartialEq)]
    pub enum TimerCall {
        Schedule {
            name: String,
            key: String,
            attempt: u32,
            at: DateTime<Utc>,
        },
        Cancel {
            name: String,
        },
    }

    /// Records timer calls; fails once per error queued in `failures`.
    #[derive(Debug, Default)]
    pub struct RecordingTimer {
        pub calls: Mutex<Vec<TimerCall>>,
        pub failures: Mutex<Vec<AwsError>>,
    }

    impl RecordingTimer {
        pub fn calls(&self) -> Vec<TimerCall> {
            lock(&self.calls).clone()
        }
    }

    #[async_trait]
    impl EscalationTimer for RecordingTimer {
        async fn schedule(
            &self,
            name: &str,
            key: &str,
            attempt: u32,
            at: DateTime<Utc>,
        ) -> Result<(), AwsError> {
            if let Some(e) = lock(&self.failures).pop() {
                return Err(e);
            }
            lock(&self.calls).push(TimerCall::Schedule {
                name: name.into(),
                key: key.into(),
                attempt,
                at,
            });
            Ok(())
        }
        async fn cancel(&self, name: &str) -> Result<(), AwsError> {
            if let Some(e) = lock(&self.failures).pop() {
                return Err(e);
            }
            lock(&self.calls).push(TimerCall::Cancel { name: name.into() });
            Ok(())
        }
    }

    /// Records pages as (subject, message).
    #[derive(Debug, Default)]
    pub struct RecordingPager {
        pub pages: Mutex<Vec<(String, String)>>,
    }

    impl RecordingPager {
        pub fn pages(&self) -> Vec<(String, String)> {
            lock(&self.pages).clone()
        }
    }

    #[async_trait]
    impl Pager for RecordingPager {
        async fn page(&self, subject: &str, message: &str) -> Result<String, AwsError> {
            let mut pages = lock(&self.pages);
            pages.push((subject.into(), message.into()));
            Ok(format!("page-{}", pages.len()))
        }
    }

    /// An OpsCenter-like backend that records calls as short strings
    /// (`open <key>`, `note <title>`, `resolve <title>`, `runbook <document>`,
    /// `impact <n>`) and answers with `oi-000000000001`.
    #[derive(Debug, Default)]
    pub struct RecordingBackend {
        pub calls: Mutex<Vec<String>>,
        pub notes: Mutex<Vec<Note>>,
    }

    impl RecordingBackend {
        pub fn calls(&self) -> Vec<String> {
            lock(&self.calls).clone()
        }
        pub fn notes(&self) -> Vec<Note> {
            lock(&self.notes).clone()
        }
    }

    #[async_trait]
    impl IncidentBackend for RecordingBackend {
        fn name(&self) -> &'static str {
            "OpsCenter"
        }
        async fn find_open(&self, _key: &str) -> Result<Option<IncidentRef>, BackendError> {
            Ok(None)
        }
        async fn open(&self, incident: &NewIncident) -> Result<IncidentRef, BackendError> {
            lock(&self.calls).push(format!("open {}", incident.key));
            Ok(IncidentRef::OpsCenter("oi-000000000001".into()))
        }
        async fn set_impact(
            &self,
            _incident: &IncidentRef,
            impact: Impact,
            note: &Note,
        ) -> Result<(), BackendError> {
            lock(&self.calls).push(format!("impact {}", impact.value()));
            lock(&self.notes).push(note.clone());
            Ok(())
        }
        async fn add_note(&self, _incident: &IncidentRef, note: &Note) -> Result<(), BackendError> {
            lock(&self.calls).push(format!("note {}", note.title));
            lock(&self.notes).push(note.clone());
            Ok(())
        }
        async fn resolve(&self, _incident: &IncidentRef, note: &Note) -> Result<(), BackendError> {
            lock(&self.calls).push(format!("resolve {}", note.title));
            lock(&self.notes).push(note.clone());
            Ok(())
        }
        async fn start_runbook(
            &self,
            _incident: &IncidentRef,
            runbook: &RunbookRequest,
        ) -> Result<Option<String>, BackendError> {
            lock(&self.calls).push(format!(
                "runbook {} {}",
                runbook.document, runbook.client_token
            ));
            Ok(Some("exec-2".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fakes::*;
    use super::*;
    use crate::classify::RunbookPlan;
    use crate::escalation::EscalationPolicy;
    use crate::incident::{Actor, Impact};
    use crate::respond;
    use crate::state::memory::MemoryStateStore;

    const KEY: &str = "VPN connection vpn-1 is DOWN";

    /// A request of its own (a token no other request has).
    fn anyone() -> Owner {
        Owner::new("", None)
    }

    fn t(minute: i64) -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::minutes(minute)
    }

    fn jane() -> Actor {
        Actor::Person {
            id: "U0JANE".into(),
            name: "Jane Doe".into(),
        }
    }

    fn policy() -> EscalationPolicy {
        EscalationPolicy::from_env(&crate::config::Env::from_pairs([
            (crate::escalation::MIN_IMPACT_VAR, "2"),
            (crate::escalation::TOPIC_VAR, "arn:aws:sns:eu-west-1:1:esc"),
            (
                crate::escalation::TARGET_VAR,
                "arn:aws:lambda:eu-west-1:1:function:slack-actions",
            ),
            (crate::escalation::ROLE_VAR, "arn:aws:iam::1:role/scheduler"),
        ]))
        .unwrap()
        .unwrap()
    }

    struct World {
        backend: RecordingBackend,
        store: MemoryStateStore,
        publisher: RecordingPublisher,
        clock: FixedClock,
        settings: RunnerSettings,
        timer: RecordingTimer,
        pager: RecordingPager,
    }

    impl World {
        fn new() -> World {
            let mut settings = RunnerSettings::new(Some("arn:aws:iam::1:role/automation".into()));
            settings.busy_wait = Duration::ZERO;
            World {
                backend: RecordingBackend::default(),
                store: MemoryStateStore::default(),
                publisher: RecordingPublisher::default(),
                clock: FixedClock::at(t(0)),
                settings,
                timer: RecordingTimer::default(),
                pager: RecordingPager::default(),
            }
        }
        fn deps(&self) -> EffectDeps<'_> {
            EffectDeps {
                backend: &self.backend,
                store: &self.store,
                publisher: &self.publisher,
                clock: &self.clock,
                settings: &self.settings,
                timer: Some(&self.timer),
                pager: Some(&self.pager),
            }
        }
        fn events(&self) -> Vec<&'static str> {
            self.publisher
                .sent()
                .iter()
                .map(|n| n.event.as_str())
                .collect()
        }
        async fn declare(&self) -> IncidentRecord {
            let key = respond::declared_key("VPN down", t(0));
            let p = policy();
            let out = apply_change(&self.deps(), &anyone(), &key, |r, now| {
                respond::ensure_no_open(r)?;
                respond::declare(
                    "VPN down",
                    &jane(),
                    Some("C0NOC"),
                    Impact::CRITICAL,
                    "1",
                    "eu-west-1",
                    now,
                    Some(&p),
                )
            })
            .await
            .unwrap();
            match out {
                ChangeOutcome::Applied {
                    record,
                    changed: true,
                    ..
                } => *record,
                o => panic!("unexpected {o:?}"),
            }
        }
    }

    #[tokio::test]
    async fn declare_then_acknowledge_runs_effects_and_keeps_state() {
        let w = World::new();
        let r = w.declare().await;
        let key = r.key.clone();
        assert_eq!(
            r.incident,
            Some(IncidentRef::OpsCenter("oi-000000000001".into()))
        );
        // The runner stamps the opened notification and stores the escalation.
        assert_eq!(r.milestones.notified_at, Some(t(0)));
        let esc = r.escalation.clone().unwrap();
        assert_eq!((esc.attempt, esc.due_at), (1, t(15)));
        assert_eq!(
            w.timer.calls(),
            [TimerCall::Schedule {
                name: esc.schedule_name.clone(),
                key: key.clone(),
                attempt: 1,
                at: t(15)
            }]
        );
        assert_eq!(w.events(), ["opened"]);
        assert_eq!(
            w.publisher.sent()[0].incident_ref.as_deref(),
            Some("oi-000000000001")
        );
        assert_eq!(w.publisher.sent()[0].backend.as_deref(), Some("OpsCenter"));

        w.clock.set(t(4));
        let out = apply_change(&w.deps(), &anyone(), &key, |r, now| {
            respond::acknowledge(respond::existing(r)?, &jane(), None, now)
        })
        .await
        .unwrap();
        let ChangeOutcome::Applied {
            record,
            reply,
            changed,
            resumed,
        } = out
        else {
            panic!("refused");
        };
        assert!(changed && !resumed);
        assert_eq!(reply, "You own this incident now.");
        assert_eq!(record.escalation, None);
        assert_eq!(
            w.timer.calls()[1],
            TimerCall::Cancel {
                name: esc.schedule_name
            }
        );
        assert_eq!(w.events(), ["opened", "acknowledged"]);
        let stored = w.store.incident_now(&key).unwrap();
        assert!(stored.pending.is_empty() && stored.lease_until.is_none());
        assert_eq!(stored.record, *record);

        // Same person again: refused, nothing written.
        let writes = *w.store.writes.lock().unwrap();
        let out = apply_change(&w.deps(), &anyone(), &key, |r, now| {
            respond::acknowledge(respond::existing(r)?, &jane(), None, now)
        })
        .await
        .unwrap();
        assert!(matches!(
            out,
            ChangeOutcome::Refused(Refusal {
                kind: RefusalKind::AlreadyOwner,
                ..
            })
        ));
        assert_eq!(*w.store.writes.lock().unwrap(), writes);

        // The schedule that fires anyway (deleted too late) changes nothing.
        let p = policy();
        let out = apply_change(&w.deps(), &anyone(), &key, |r, now| {
            respond::escalation_fired(respond::existing(r)?, 1, now, &p)
        })
        .await
        .unwrap();
        assert!(matches!(out, ChangeOutcome::Applied { changed: false, .. }));
        assert!(w.pager.pages().is_empty());
        assert_eq!(*w.store.writes.lock().unwrap(), writes);
    }

    #[tokio::test]
    async fn unanswered_incident_escalates_pages_and_reschedules() {
        let w = World::new();
        let r = w.declare().await;
        w.clock.set(t(15));
        let p = policy();
        let out = apply_change(&w.deps(), &anyone(), &r.key, |r, now| {
            respond::escalation_fired(respond::existing(r)?, 1, now, &p)
        })
        .await
        .unwrap();
        let ChangeOutcome::Applied { record, .. } = out else {
            panic!("refused");
        };
        assert_eq!(w.events(), ["opened", "unanswered"]);
        assert_eq!(w.pager.pages().len(), 1);
        assert_eq!(
            w.pager.pages()[0].0,
            "[Impact 1] Unanswered incident: VPN down"
        );
        let next = record.escalation.unwrap();
        assert_eq!((next.attempt, next.due_at), (2, t(30)));
        assert!(next.schedule_name.ends_with("-2"));
    }

    #[tokio::test]
    async fn missing_record_is_refused_and_nothing_is_written() {
        let w = World::new();
        let out = apply_change(&w.deps(), &anyone(), "nope", |r, now| {
            respond::add_note(respond::existing(r)?, &jane(), "x", now)
        })
        .await
        .unwrap();
        assert_eq!(
            out,
            ChangeOutcome::Refused(Refusal::new(
                RefusalKind::NotFound,
                "No incident with that key. Use `/incident list` to see the open ones."
            ))
        );
        assert_eq!(*w.store.writes.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn failed_publish_is_kept_pending_and_finished_before_the_next_change() {
        let w = World::new();
        let r = w.declare().await;
        w.publisher.fail_next(AwsError {
            service: "sns",
            operation: "Publish",
            failure: AwsFailure::Throttled,
            code: Some("Throttling".into()),
            message: "Rate exceeded".into(),
        });
        w.clock.set(t(2));
        let e = apply_change(&w.deps(), &anyone(), &r.key, |r, now| {
            respond::add_note(respond::existing(r)?, &jane(), "ISP called", now)
        })
        .await
        .unwrap_err();
        assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
        let item = w.store.incident_now(&r.key).unwrap();
        assert_eq!(
            item.pending.iter().map(Effect::as_str).collect::<Vec<_>>(),
            ["publish"]
        );
        assert_eq!(item.lease_until, None);

        // The next change finishes the note's publish first, then applies itself.
        w.clock.set(t(3));
        let out = apply_change(&w.deps(), &anyone(), &r.key, |r, now| {
            respond::acknowledge(respond::existing(r)?, &jane(), None, now)
        })
        .await
        .unwrap();
        assert!(matches!(out, ChangeOutcome::Applied { resumed: true, .. }));
        assert_eq!(w.events(), ["opened", "note", "acknowledged"]);
        assert_eq!(
            w.backend
                .calls()
                .iter()
                .filter(|c| c.starts_with("note Note by"))
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn held_lease_waits_then_gives_up_busy_and_expired_lease_is_taken_over() {
        let w = World::new();
        let r = w.declare().await;
        let mut item = w.store.incident_now(&r.key).unwrap();
        item.pending = vec![Effect::CancelEscalation];
        item.lease_until = Some(t(1));
        w.store
            .incidents
            .lock()
            .unwrap()
            .insert(r.key.clone(), item);
        let note = |r: Option<&IncidentRecord>, now| {
            respond::add_note(respond::existing(r)?, &jane(), "x", now)
        };
        let e = apply_change(&w.deps(), &anyone(), &r.key, note)
            .await
            .unwrap_err();
        assert_eq!(e.lambda_error_type(), "Retryable.Busy");
        assert_eq!(w.timer.calls().len(), 1);
        w.clock.set(t(2));
        let out = apply_change(&w.deps(), &anyone(), &r.key, note)
            .await
            .unwrap();
        let ChangeOutcome::Applied {
            record, resumed, ..
        } = out
        else {
            panic!("refused");
        };
        assert!(resumed);
        assert_eq!(record.escalation, None);
        assert!(matches!(w.timer.calls()[1], TimerCall::Cancel { .. }));
    }

    #[tokio::test]
    async fn rerun_starts_the_runbook_with_the_configured_role() {
        let w = World::new();
        let r = w.declare().await;
        let mut item = w.store.incident_now(&r.key).unwrap();
        item.record.runbook = Some(RunbookPlan {
            document: "VpnDiagnosis".into(),
            parameters: [(
                "AutomationAssumeRole".to_string(),
                vec!["{AutomationAssumeRole}".to_string()],
            )]
            .into(),
        });
        w.store
            .incidents
            .lock()
            .unwrap()
            .insert(r.key.clone(), item);
        let out = apply_change(&w.deps(), &anyone(), &r.key, |r, now| {
            respond::rerun_diagnosis(respond::existing(r)?, &jane(), now)
        })
        .await
        .unwrap();
        let ChangeOutcome::Applied { record, .. } = out else {
            panic!("refused");
        };
        assert_eq!(record.runbook_execution.as_deref(), Some("exec-2"));
        assert!(w
            .backend
            .calls()
            .iter()
            .any(|c| c.starts_with("runbook VpnDiagnosis ")));
    }

    #[tokio::test]
    async fn without_timer_or_pager_escalation_steps_are_skipped() {
        let w = World::new();
        let deps = EffectDeps {
            timer: None,
            pager: None,
            ..w.deps()
        };
        let mut r = respond::declare(
            "x",
            &jane(),
            None,
            Impact::CRITICAL,
            "1",
            "r",
            t(0),
            Some(&policy()),
        )
        .unwrap()
        .record;
        execute(
            &deps,
            &mut r,
            &Effect::ScheduleEscalation {
                attempt: 1,
                at: t(15),
            },
        )
        .await
        .unwrap();
        assert_eq!(r.escalation, None);
        execute(
            &deps,
            &mut r,
            &Effect::Page {
                subject: "s".into(),
                message: "m".into(),
            },
        )
        .await
        .unwrap();
        assert!(w.timer.calls().is_empty() && w.pager.pages().is_empty());
    }

    #[tokio::test]
    async fn key_mismatch_is_an_error_not_a_write() {
        let w = World::new();
        let e = apply_change(&w.deps(), &anyone(), "other", |_, now| {
            respond::declare("x", &jane(), None, Impact::LOW, "1", "r", now, None)
        })
        .await
        .unwrap_err();
        assert_eq!(e.lambda_error_type(), "NonRetryable.Internal");
        assert_eq!(*w.store.writes.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn sns_publisher_sends_chatbot_json_with_attributes() {
        use aws_sdk_sns::operation::publish::PublishOutput;
        use aws_smithy_mocks::mock;
        let rule = mock!(aws_sdk_sns::Client::publish)
            .match_requests(|r| {
                assert_eq!(
                    r.topic_arn(),
                    Some("arn:aws:sns:eu-west-1:123456789012:incidents")
                );
                let msg: serde_json::Value = serde_json::from_str(r.message().unwrap()).unwrap();
                assert_eq!(msg["version"], "1.0");
                assert_eq!(msg["metadata"]["threadId"], KEY);
                let attrs = r.message_attributes().unwrap();
                assert_eq!(attrs["event_type"].string_value(), Some("acknowledged"));
                assert_eq!(attrs["impact"].string_value(), Some("1"));
                true
            })
            .then_output(|| PublishOutput::builder().message_id("m-1").build());
        let p = SnsPublisher::new(
            crate::mock_client!(aws_sdk_sns, [&rule]),
            "arn:aws:sns:eu-west-1:123456789012:incidents",
        );
        let mut r = respond::declare("x", &jane(), None, Impact::CRITICAL, "1", "r", t(0), None)
            .unwrap()
            .record;
        r.key = KEY.into();
        let n = respond::notification(&r, EventType::Acknowledged, "s".into(), t(1));
        assert_eq!(p.publish(&n).await.unwrap(), "m-1");
        assert_eq!(rule.num_calls(), 1);
    }

    /// A [`MemoryStateStore`] with another invocation acting at scripted moments.
    #[derive(Default)]
    struct Contended {
        inner: MemoryStateStore,
        reads: std::sync::Mutex<u32>,
        /// At this read, the lease holder finishes its steps first (pending cleared,
        /// lease released, one version later).
        release_at_read: Option<u32>,
        /// Before the first save, someone else writes the item (a note, one version later).
        interfere_once: std::sync::Mutex<bool>,
        /// The first save fails (an error that is not a conflict; nothing written).
        fail_save_once: std::sync::Mutex<bool>,
    }

    #[async_trait]
    impl StateStore for Contended {
        async fn alarm(&self, arn: &str) -> Result<Option<crate::state::AlarmItem>, StateError> {
            self.inner.alarm(arn).await
        }
        async fn incident(&self, key: &str) -> Result<Option<IncidentItem>, StateError> {
            let n = {
                let mut r = self.reads.lock().unwrap();
                *r += 1;
                *r
            };
            if self.release_at_read == Some(n) {
                let mut i = self.inner.incident_now(key).unwrap().released();
                i.pending.clear();
                i.record.runbook_execution = Some("exec-owner".into());
                self.inner.save_incident(&i.next(&anyone())).await?;
            }
            self.inner.incident(key).await
        }
        async fn apply(
            &self,
            alarm: &crate::state::AlarmItem,
            incident: crate::state::IncidentWrite<'_>,
        ) -> Result<(), StateError> {
            self.inner.apply(alarm, incident).await
        }
        async fn save_incident(&self, item: &IncidentItem) -> Result<(), StateError> {
            if std::mem::take(&mut *self.fail_save_once.lock().unwrap()) {
                return Err(StateError::Aws(AwsError {
                    service: "dynamodb",
                    operation: "PutItem",
                    failure: AwsFailure::Transient,
                    code: None,
                    message: "request timed out".into(),
                }));
            }
            if std::mem::take(&mut *self.interfere_once.lock().unwrap()) {
                let mut i = self.inner.incident_now(&item.record.key).unwrap();
                i.record
                    .push_entry(t(1), "Note by someone else".into(), None);
                self.inner.save_incident(&i.next(&anyone())).await?;
            }
            self.inner.save_incident(item).await
        }
    }

    /// The item of an open incident with a step of alarm-to-incident left pending.
    fn item_with_pending(lease_until: Option<DateTime<Utc>>) -> IncidentItem {
        let mut record = respond::declare(
            "VPN down",
            &jane(),
            None,
            Impact::CRITICAL,
            "1",
            "eu-west-1",
            t(0),
            None,
        )
        .unwrap()
        .record;
        record.key = KEY.into();
        IncidentItem {
            version: 3,
            record,
            pending: vec![
                Effect::ScheduleEscalation {
                    attempt: 1,
                    at: t(15),
                },
                Effect::CancelEscalation,
            ],
            lease_holder: lease_until.map(|_| "req-holder".to_string()),
            lease_until,
            writes: vec![],
            changes: vec![],
        }
    }

    fn diagnosed(
        r: Option<&IncidentRecord>,
        now: DateTime<Utc>,
    ) -> Result<IncidentRecord, Refusal> {
        let mut r = respond::existing(r)?.clone();
        r.milestones.diagnosed_at.get_or_insert(now);
        r.push_entry(now, "Diagnosis reported 0 finding(s)".into(), None);
        Ok(r)
    }

    fn settings(attempts: u32) -> RunnerSettings {
        RunnerSettings {
            busy_wait: Duration::ZERO,
            attempts,
            ..RunnerSettings::new(None)
        }
    }

    #[tokio::test]
    async fn update_record_keeps_pending_steps_and_expired_lease_and_runs_nothing() {
        let w = World::new();
        w.clock.set(t(5));
        let read = item_with_pending(Some(t(4)));
        w.store
            .incidents
            .lock()
            .unwrap()
            .insert(KEY.into(), read.clone());
        let out = update_record(&w.store, &w.clock, &settings(3), &anyone(), KEY, diagnosed)
            .await
            .unwrap();
        let stored = w.store.incident_now(KEY).unwrap();
        assert_eq!(stored.version, 4);
        assert_eq!(
            stored.pending, read.pending,
            "the steps stay for their owner"
        );
        assert_eq!(stored.lease_until, Some(t(4)));
        assert_eq!(stored.record.milestones.diagnosed_at, Some(t(5)));
        assert_eq!(stored.record.timeline.len(), read.record.timeline.len() + 1);
        assert_eq!(
            out,
            RecordUpdate::Updated {
                record: Box::new(stored.record.clone()),
                changed: true
            }
        );
        assert!(w.timer.calls().is_empty());
        assert!(w.publisher.sent().is_empty());
        assert!(w.backend.calls().is_empty());
        assert!(w.pager.pages().is_empty());

        // The same change again leaves the record as it is: no write.
        let writes = *w.store.writes.lock().unwrap();
        let same = update_record(&w.store, &w.clock, &settings(3), &anyone(), KEY, |r, _| {
            Ok(respond::existing(r)?.clone())
        })
        .await
        .unwrap();
        assert!(matches!(same, RecordUpdate::Updated { changed: false, .. }));
        assert_eq!(*w.store.writes.lock().unwrap(), writes);
    }

    #[tokio::test]
    async fn update_record_waits_for_the_lease_holder_then_writes_on_its_result() {
        let w = World::new();
        let store = Contended {
            release_at_read: Some(3),
            ..Contended::default()
        };
        store
            .inner
            .incidents
            .lock()
            .unwrap()
            .insert(KEY.into(), item_with_pending(Some(t(1))));
        let out = update_record(&store, &w.clock, &settings(5), &anyone(), KEY, diagnosed)
            .await
            .unwrap();
        assert!(matches!(out, RecordUpdate::Updated { changed: true, .. }));
        assert_eq!(*store.reads.lock().unwrap(), 3, "two waits, then the write");
        let stored = store.inner.incident_now(KEY).unwrap();
        // Version 3 read, 4 written by the holder, 5 by the update.
        assert_eq!(stored.version, 5);
        assert!(stored.pending.is_empty() && stored.lease_until.is_none());
        assert_eq!(
            stored.record.runbook_execution.as_deref(),
            Some("exec-owner"),
            "written on top of the holder's result"
        );
        assert_eq!(stored.record.milestones.diagnosed_at, Some(t(0)));
        assert_eq!(*store.inner.writes.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn update_record_never_writes_under_a_held_lease_and_gives_up_busy() {
        let w = World::new();
        w.store
            .incidents
            .lock()
            .unwrap()
            .insert(KEY.into(), item_with_pending(Some(t(1))));
        let mut calls = 0;
        let e = update_record(
            &w.store,
            &w.clock,
            &settings(3),
            &anyone(),
            KEY,
            |r, now| {
                calls += 1;
                diagnosed(r, now)
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.lambda_error_type(), "Retryable.Busy");
        assert!(matches!(e, EffectError::Busy { ref key } if key == KEY));
        assert_eq!(calls, 0, "nothing decided under someone else's lease");
        assert_eq!(*w.store.writes.lock().unwrap(), 0);
        assert_eq!(
            w.store.incident_now(KEY).unwrap(),
            item_with_pending(Some(t(1)))
        );
    }

    #[tokio::test]
    async fn update_record_conflict_reads_again_and_reapplies_the_change() {
        let w = World::new();
        let store = Contended {
            interfere_once: std::sync::Mutex::new(true),
            ..Contended::default()
        };
        let read = item_with_pending(None);
        store
            .inner
            .incidents
            .lock()
            .unwrap()
            .insert(KEY.into(), read.clone());
        let mut calls = 0;
        let out = update_record(&store, &w.clock, &settings(3), &anyone(), KEY, |r, now| {
            calls += 1;
            diagnosed(r, now)
        })
        .await
        .unwrap();
        assert_eq!(calls, 2);
        let stored = store.inner.incident_now(KEY).unwrap();
        assert_eq!(stored.version, 5);
        assert_eq!(stored.pending, read.pending);
        let texts: Vec<&str> = stored
            .record
            .timeline
            .iter()
            .map(|e| e.text.as_str())
            .collect();
        assert_eq!(
            texts[texts.len() - 2..],
            ["Note by someone else", "Diagnosis reported 0 finding(s)"]
        );
        assert!(matches!(out, RecordUpdate::Updated { changed: true, .. }));
    }

    #[tokio::test]
    async fn update_record_refusal_and_key_mismatch_write_nothing() {
        let w = World::new();
        let out = update_record(&w.store, &w.clock, &settings(3), &anyone(), KEY, diagnosed)
            .await
            .unwrap();
        assert!(matches!(
            out,
            RecordUpdate::Refused(Refusal {
                kind: RefusalKind::NotFound,
                ..
            })
        ));
        w.store
            .incidents
            .lock()
            .unwrap()
            .insert(KEY.into(), item_with_pending(None));
        let e = update_record(
            &w.store,
            &w.clock,
            &settings(3),
            &anyone(),
            KEY,
            |r, now| {
                let mut r = diagnosed(r, now)?;
                r.key = "other".into();
                Ok(r)
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.lambda_error_type(), "NonRetryable.Internal");
        assert_eq!(*w.store.writes.lock().unwrap(), 0);
    }

    fn world_deps<'a>(w: &'a World, store: &'a dyn StateStore) -> EffectDeps<'a> {
        EffectDeps { store, ..w.deps() }
    }

    #[tokio::test]
    async fn a_waiting_change_goes_on_as_soon_as_the_lease_is_released() {
        let w = World::new();
        let store = Contended {
            release_at_read: Some(4),
            ..Contended::default()
        };
        store
            .inner
            .incidents
            .lock()
            .unwrap()
            .insert(KEY.into(), item_with_pending(Some(t(1))));
        let out = apply_change(&world_deps(&w, &store), &anyone(), KEY, |r, now| {
            respond::add_note(respond::existing(r)?, &jane(), "ISP called", now)
        })
        .await
        .unwrap();
        assert!(matches!(
            out,
            ChangeOutcome::Applied {
                changed: true,
                resumed: false,
                ..
            }
        ));
        assert_eq!(
            *store.reads.lock().unwrap(),
            4,
            "three reads under the lease, then the change"
        );
        assert!(
            w.timer.calls().is_empty(),
            "the holder's steps are not run by the waiter"
        );
        assert_eq!(w.events(), ["note"]);
    }

    #[tokio::test]
    async fn the_same_request_takes_its_own_lease_over_and_decides_nothing_twice() {
        let w = World::new();
        let request = Owner::new("req-job-1", None);
        let r = w.declare().await;
        // The first attempt of req-job-1 decided a note and died before publishing.
        let item = w.store.incident_now(&r.key).unwrap();
        let change = respond::add_note(&item.record, &jane(), "ISP called", t(1)).unwrap();
        let decided = decided_item(
            &w.settings,
            &request,
            t(1),
            Some(&item),
            change.record,
            change.effects,
        );
        assert_eq!(decided.lease_holder.as_deref(), Some("req-job-1"));
        w.store.save_incident(&decided).await.unwrap();
        let mut calls = 0;
        let out = apply_change(&w.deps(), &request, &r.key, |r, now| {
            calls += 1;
            respond::add_note(respond::existing(r)?, &jane(), "ISP called", now)
        })
        .await
        .unwrap();
        assert!(
            matches!(out, ChangeOutcome::Repeated { resumed: true, .. }),
            "{out:?}"
        );
        assert_eq!(calls, 0, "decided once, by the first attempt");
        assert_eq!(w.events(), ["opened", "note"]);
        let notes = w
            .backend
            .calls()
            .iter()
            .filter(|c| c.starts_with("note Note by"))
            .count();
        assert_eq!(notes, 1);
        let stored = w.store.incident_now(&r.key).unwrap();
        assert!(stored.pending.is_empty() && stored.lease_holder.is_none());
    }

    #[tokio::test]
    async fn notification_ids_are_given_at_decision_and_kept_when_published_again() {
        let w = World::new();
        let r = w.declare().await;
        let first_id = w.publisher.sent()[0].notification_id.clone().unwrap();
        w.publisher.fail_next(AwsError {
            service: "sns",
            operation: "Publish",
            failure: AwsFailure::Transient,
            code: None,
            message: "request timed out".into(),
        });
        w.clock.set(t(2));
        apply_change(&w.deps(), &anyone(), &r.key, |r, now| {
            respond::add_note(respond::existing(r)?, &jane(), "ISP called", now)
        })
        .await
        .unwrap_err();
        let pending_id = match &w.store.incident_now(&r.key).unwrap().pending[0] {
            Effect::Publish { notification } => notification.notification_id.clone().unwrap(),
            e => panic!("unexpected {e:?}"),
        };
        // The next change publishes the pending one first, under the id it was given.
        apply_change(&w.deps(), &anyone(), &r.key, |r, now| {
            respond::acknowledge(respond::existing(r)?, &jane(), None, now)
        })
        .await
        .unwrap();
        let sent = w.publisher.sent();
        assert_eq!(w.events(), ["opened", "note", "acknowledged"]);
        assert_eq!(
            sent[1].notification_id.as_deref(),
            Some(pending_id.as_str())
        );
        let ids: std::collections::BTreeSet<_> = sent
            .iter()
            .map(|n| n.notification_id.clone().unwrap())
            .collect();
        assert_eq!(ids.len(), 3, "one id per notification");
        assert!(ids.contains(&first_id));
    }

    #[tokio::test]
    async fn a_progress_save_that_fails_once_is_tried_again_and_the_step_not_rerun() {
        let w = World::new();
        let store = Contended::default();
        let owner = Owner::new("req-1", None);
        let mut record = item_with_pending(None).record;
        record.escalation = None;
        record.incident = Some(IncidentRef::OpsCenter("oi-000000000001".into()));
        let item = IncidentItem::decided(
            None,
            record,
            vec![Effect::AddNote {
                note: crate::incident::Note {
                    title: "t".into(),
                    text: "x".into(),
                    at: t(0),
                    data: Default::default(),
                },
            }],
            &owner,
            t(1),
        );
        store.inner.save_incident(&item).await.unwrap();
        *store.fail_save_once.lock().unwrap() = true;
        let done = run_pending(&world_deps(&w, &store), &owner, item)
            .await
            .unwrap();
        assert_eq!(w.backend.calls(), ["note t"]);
        let stored = store.inner.incident_now(KEY).unwrap();
        assert_eq!(stored, done);
        assert!(stored.pending.is_empty() && stored.lease_until.is_none());
    }
}
