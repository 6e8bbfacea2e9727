//! The reconciliation sweep: what the pipeline never received, applied late.
//!
//! Direct alarm actions are not delivered while a mute rule mutes an alarm, and any
//! delivery can be lost (an event that failed every retry waits in the failed-events
//! queue). So on a schedule (the template's `SweepIntervalMinutes`), and at the end of
//! every hold (a timer: mute window or silence), the sweep reads the state table (open
//! incidents and held transitions, one scan), reads the alarms behind them with
//! `DescribeAlarms`, and for each alarm:
//!
//! - CloudWatch has a transition newer than the watermark: it is applied like a
//!   delivered one, through the same watermark (a conditional write: a delivery that
//!   got there first wins, and nothing newer is ever undone), and every note about it
//!   says the sweep found it. An `OK` resolves the incident.
//! - the watermark's transition is held and its hold ended: if CloudWatch still shows
//!   that transition, it is applied now (the incident opens, or escalates), unless
//!   another hold covers it (held anew).
//! - otherwise the alarm is in step: nothing happens.
//!
//! One time series (contributor) of a multi-time-series alarm is read with
//! `DescribeAlarmContributors` (one read per alarm, every contributor at once), which
//! lists the contributors in `ALARM` only, and goes through its own watermark
//! (`contributor/<id>/<ARN>`) the same way:
//!
//! - listed: it is in `ALARM` since `StateTransitionedTimestamp`; compared with the
//!   watermark like an alarm (a held one whose hold ended opens then). A listed time
//!   series the pipeline never saw (its event lost) opens its incident, classified by
//!   its attributes as its event would have been.
//! - not listed, so not in `ALARM` (the API documents that it lists no other, and
//!   contributors are only `ALARM` or `OK`): a recorded `ALARM` becomes an `OK`, which
//!   resolves its incident with a note saying the sweep found it, when that is safe to
//!   say: the alarm as a whole turned `OK` after the recorded `ALARM` (then the `OK` is
//!   dated at that moment), or the recorded `ALARM` is at least [`UNLISTED_SETTLE`] old
//!   (AWS documents no ordering between a contributor's event and this list, so a
//!   younger one may simply not be listed yet; the `OK` is then dated at the read).
//!   Otherwise, or while the alarm as a whole has insufficient data (no data is no
//!   evidence of recovery), it is reported (`contributorsWaiting`) and left for the
//!   next sweep; an ended hold of such a contributor is released from the event it
//!   kept ([`shared::hold::Hold::series`]), a later sweep resolving it if need be.
//! - CloudWatch declined to list the alarm's contributors for good (deleted meanwhile,
//!   not a multi-time-series alarm any more, or a role without the permission): they
//!   are reported (`contributorsNotRead`, a warning); an ended hold is released from
//!   its kept event as before.
//!
//! Everything is read before anything is applied, so a throttled or failing read
//! (`DescribeAlarms` or `DescribeAlarmContributors`) applies nothing (retryable error;
//! the next sweep does it all). An alarm that fails to apply does not stop the others;
//! the sweep then fails (retryable) after trying them all.
//!
//! Organization mode: alarms are read where they live, one `DescribeAlarms` batch (and
//! one contributor read per multi-time-series alarm) per account and region; a member
//! account's through its alarm-reader role (`member.yaml`, assumed with STS,
//! credentials cached). A member whose role is missing or refuses (or may not
//! `DescribeAlarms`) is reported (`unreachable`, a warning, and the
//! `SweepUnreachableAccounts` metric) and its alarms are left for the next sweep: it
//! does not stop the sweep of the other accounts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::alarm::{split_source_id, Alarm, AlarmState, Contributor, EventShape};
use shared::effects::{decided_item, is_conflict, resume_pending, run_pending, Patience, Resume};
use shared::error::Retryable;
use shared::hold::hold_for;
use shared::lifecycle::decide;
use shared::silence::SilenceBook;
use shared::state::{AlarmItem, IncidentWrite, Owner};
use tracing::{error, info, info_span, warn, Instrument};

use crate::cloudwatch::{ContributorRead, ListedContributor, ReadError};
use crate::effects::{complete_record, plan, Origin};
use crate::error::HandlerError;
use crate::handler::{mark_origin, Deps, HoldContext};

/// `DescribeAlarms` (rpcv2Cbor) carries timestamps as epoch seconds in a double,
/// which the SDK truncates to the millisecond: the events' `state.timestamp` of the same
/// transition may read one millisecond later. Transitions of one alarm are at least an
/// evaluation period apart, so within this they are the same transition.
pub const SAME_INSTANT: chrono::Duration = chrono::Duration::milliseconds(1);

/// How old a contributor's recorded `ALARM` must be before its absence from
/// `DescribeAlarmContributors` is taken for an `OK`: AWS documents no ordering between
/// a contributor's event and that list, so a sweep seconds after the event may not see
/// it listed yet. Five evaluations of a 60-second alarm; the scheduled sweep comes
/// every 5 minutes by default, so a lost `OK` is found within about two sweeps.
pub const UNLISTED_SETTLE: chrono::Duration = chrono::Duration::minutes(5);

/// What one sweep did, per alarm (the function's answer, and the log).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub reason: String,
    /// Alarms read with `DescribeAlarms`.
    pub checked: usize,
    /// Time series of multi-time-series alarms compared with
    /// `DescribeAlarmContributors`.
    #[serde(skip_serializing_if = "is_zero")]
    pub contributors_checked: usize,
    /// alarm name (with the contributor's attributes for a time series) -> what was
    /// done (`applied:<action>`, `released:<action>`, `held_again`, `watermark`).
    pub changed: BTreeMap<String, String>,
    /// Alarms behind open incidents or holds that CloudWatch does not return (deleted,
    /// another Region, or outside the role's scope).
    pub missing: Vec<String>,
    /// Time series whose contributors CloudWatch declined to list (and why): their own
    /// events move them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contributors_not_read: Vec<ContributorNote>,
    /// Time series recorded in `ALARM` that CloudWatch no longer lists in `ALARM`, not
    /// taken for `OK` yet (and why); the next sweep looks again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contributors_waiting: Vec<ContributorNote>,
    /// Member accounts (and regions) whose alarms could not be read: their role is
    /// missing or refuses. Their alarms wait for the next sweep.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<Unreachable>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A time series the sweep could not settle, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContributorNote {
    /// `contributor/<id>/<alarm ARN>`.
    pub contributor: String,
    pub reason: String,
}

/// A member account whose alarms the sweep could not read.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreachable {
    pub account: String,
    pub region: String,
    /// `cannot assume arn:…:role/… in 111122223333: AccessDenied`.
    pub reason: String,
    /// The alarms left unread.
    pub alarms: usize,
}

/// The alarm name in an alarm ARN (`arn:…:alarm:<name>`; names may contain `:`).
fn name_of(arn: &str) -> Option<&str> {
    arn.splitn(7, ':').nth(6).filter(|n| !n.is_empty())
}

/// Alarm ARNs grouped by the account and region they live in (organization mode), or
/// all in one group read in the function's own account and region (one account, as
/// before). ARNs without a name are left out.
fn by_place<'a>(
    arns: impl Iterator<Item = &'a String>,
    per_account: bool,
) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for arn in arns.filter(|a| name_of(a).is_some()) {
        let place = if per_account {
            let parts: Vec<&str> = arn.splitn(7, ':').collect();
            let (region, account) = (parts.get(3), parts.get(4));
            (
                account.copied().unwrap_or_default().to_string(),
                region.copied().unwrap_or_default().to_string(),
            )
        } else {
            (String::new(), String::new())
        };
        out.entry(place).or_default().push(arn.clone());
    }
    out
}

/// The time series of multi-time-series alarms the sweep looks at: per alarm ARN, per
/// contributor id, its attributes as last recorded (from the incident's feed or the
/// held event), to name and classify a transition inferred for it.
type Series = BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>;

/// What CloudWatch answered, read before anything is applied.
#[derive(Default)]
struct Reads {
    /// `DescribeAlarms`, every reachable place.
    described: Vec<Alarm>,
    /// `DescribeAlarmContributors`, by alarm ARN.
    contributors: BTreeMap<String, ContributorRead>,
    /// ARNs in places that could not be read.
    skipped: BTreeSet<String>,
}

/// Runs one sweep, as `owner` (the invocation: its writes carry its token).
pub async fn sweep(
    deps: &Deps<'_>,
    owner: &Owner,
    reason: &str,
    function_arn: &str,
) -> Result<SweepReport, HandlerError> {
    let span = info_span!("sweep", reason = %reason);
    async {
        // Before any read: a contributor not listed was not in ALARM at this moment.
        let read_at = deps.effects.clock.now();
        let candidates = deps.holds.sweep_candidates().await?;
        let book = deps.silences.silences().await?;
        // Whole alarms to reconcile, and time series by their alarm.
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        let mut series: Series = BTreeMap::new();
        for r in &candidates.open {
            for (source, feed) in &r.alarms {
                match split_source_id(source) {
                    (arn, Some(id)) => {
                        let known = series.entry(arn.to_string()).or_default().entry(id.to_string()).or_default();
                        if known.is_empty() {
                            known.clone_from(&feed.attributes);
                        }
                    }
                    (arn, None) => {
                        wanted.insert(arn.to_string());
                    }
                }
            }
        }
        for a in &candidates.held {
            if !a.held.as_ref().is_some_and(|h| h.has_ended(&book, read_at)) {
                continue;
            }
            match split_source_id(&a.arn) {
                (arn, Some(id)) => {
                    let kept = a.held.as_ref().and_then(|h| h.series.as_ref()).and_then(|s| s.contributor.as_ref());
                    let known = series.entry(arn.to_string()).or_default().entry(id.to_string()).or_default();
                    if let Some(c) = kept.filter(|_| known.is_empty()) {
                        known.clone_from(&c.attributes);
                    }
                }
                (arn, None) => {
                    wanted.insert(arn.to_string());
                }
            }
        }
        let mut report = SweepReport {
            reason: reason.to_string(),
            ..SweepReport::default()
        };
        let everything: BTreeSet<&String> = wanted.iter().chain(series.keys()).collect();
        let places = by_place(everything.into_iter(), deps.org.is_some());
        if places.is_empty() {
            info!("nothing to reconcile");
            return Ok(report);
        }
        let reads = read_all(deps, &places, &series, &mut report).await?;
        report.checked = reads.described.len();
        let by_arn: BTreeMap<&str, &Alarm> = reads.described.iter().map(|a| (a.arn.as_str(), a)).collect();
        let ctx = HoldContext {
            function_arn: function_arn.to_string(),
        };
        let mut failures: Vec<HandlerError> = vec![];
        for arn in wanted.iter().filter(|a| !reads.skipped.contains(*a)) {
            let Some(current) = by_arn.get(arn.as_str()) else {
                warn!(alarm = %arn, "alarm not returned by DescribeAlarms (deleted, another Region, or outside the role's scope); left as it is");
                report.missing.push(arn.clone());
                continue;
            };
            let span = info_span!("alarm", alarm = %current.name, state = %current.state, incident_key = tracing::field::Empty);
            match reconcile(deps, owner, current, &book, &ctx)
                .instrument(span)
                .await
            {
                Ok(Some(what)) => {
                    report.changed.insert(current.name.clone(), what);
                }
                Ok(None) => {}
                Err(e) => {
                    error!(alarm = %current.name, error = %e, error_type = %e.lambda_error_type(), "alarm not reconciled; the next sweep tries again");
                    failures.push(e);
                }
            }
        }
        for (arn, contributors) in series.iter().filter(|(a, _)| !reads.skipped.contains(*a)) {
            let Some(parent) = by_arn.get(arn.as_str()) else {
                warn!(alarm = %arn, contributors = contributors.len(), "multi-time-series alarm not returned by DescribeAlarms (deleted, another Region, or outside the role's scope); its time series are left as they are");
                report.missing.push(arn.clone());
                continue;
            };
            let read = reads.contributors.get(arn.as_str());
            // The time series the pipeline knows, and those listed in ALARM it never
            // saw (their events lost): each opens its incident like its event would.
            let mut ids = contributors.clone();
            if let Some(ContributorRead::InAlarm(list)) = read {
                for l in list {
                    ids.entry(l.contributor.id.clone()).or_insert_with(|| l.contributor.attributes.clone());
                }
            }
            for (id, attributes) in &ids {
                report.contributors_checked += 1;
                let contributor = Contributor {
                    id: id.clone(),
                    attributes: attributes.clone(),
                };
                let step = SeriesStep { parent, contributor, read, read_at, book: &book, ctx: &ctx, owner };
                let label = step.label();
                let span = info_span!("alarm", alarm = %label, incident_key = tracing::field::Empty);
                match step.run(deps, &mut report).instrument(span).await {
                    Ok(Some(what)) => {
                        report.changed.insert(label, what);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        error!(alarm = %label, error = %e, error_type = %e.lambda_error_type(), "time series not reconciled; the next sweep tries again");
                        failures.push(e);
                    }
                }
            }
        }
        report.missing.sort();
        report.missing.dedup();
        info!(checked = report.checked, contributors_checked = report.contributors_checked, changed = report.changed.len(), missing = report.missing.len(), unreachable = report.unreachable.len(), contributors_not_read = report.contributors_not_read.len(), contributors_waiting = report.contributors_waiting.len(), failed = failures.len(), "sweep done");
        finish(report, failures)
    }
    .instrument(span)
    .await
}

/// Reads every place: `DescribeAlarms` of the alarms there, then
/// `DescribeAlarmContributors` of the multi-time-series ones it returned. A failed
/// read of the stack's own account fails the sweep (nothing applied); a member
/// account that cannot be read is reported and skipped.
async fn read_all(
    deps: &Deps<'_>,
    places: &BTreeMap<(String, String), Vec<String>>,
    series: &Series,
    report: &mut SweepReport,
) -> Result<Reads, HandlerError> {
    let mut reads = Reads::default();
    for ((account, region), arns) in places {
        let names = |arns: &mut dyn Iterator<Item = &String>| {
            let mut names: Vec<String> = arns
                .filter_map(|a| name_of(a))
                .map(str::to_string)
                .collect();
            names.sort();
            names.dedup();
            names
        };
        let read = async {
            let described = deps
                .alarms
                .describe(account, region, &names(&mut arns.iter()))
                .await?;
            // Only the multi-time-series alarms that exist: a missing one is reported as such.
            let parents: Vec<&String> = arns
                .iter()
                .filter(|a| series.contains_key(*a) && described.iter().any(|d| &d.arn == *a))
                .collect();
            let contributors = if parents.is_empty() {
                BTreeMap::new()
            } else {
                deps.alarms
                    .contributors(account, region, &names(&mut parents.into_iter()))
                    .await?
            };
            Ok::<_, ReadError>((described, contributors))
        };
        match read.await {
            Ok((described, by_name)) => {
                for arn in arns.iter().filter(|a| series.contains_key(*a)) {
                    if let Some(r) = name_of(arn).and_then(|n| by_name.get(n)) {
                        reads.contributors.insert(arn.clone(), r.clone());
                    }
                }
                reads.described.extend(described);
            }
            Err(ReadError::Home(e)) => return Err(HandlerError::ReadAlarms(e)),
            Err(ReadError::Member(f)) => {
                warn!(account = %account, region = %region, role = %f.role_arn, code = %f.code, error = %f.message, alarms = arns.len(), "member account's alarms not readable; they wait for the next sweep");
                deps.metrics.count_unreachable(account, region, &f.code);
                report.unreachable.push(Unreachable {
                    account: account.clone(),
                    region: region.clone(),
                    reason: f.headline(),
                    alarms: arns.len(),
                });
                reads.skipped.extend(arns.iter().cloned());
            }
        }
    }
    Ok(reads)
}

/// One time series of a read multi-time-series alarm, brought in step.
struct SeriesStep<'a> {
    /// The alarm as `DescribeAlarms` returned it.
    parent: &'a Alarm,
    /// Its id, with the attributes last recorded.
    contributor: Contributor,
    /// What `DescribeAlarmContributors` answered for the alarm.
    read: Option<&'a ContributorRead>,
    read_at: DateTime<Utc>,
    book: &'a SilenceBook,
    ctx: &'a HoldContext,
    /// The invocation: its writes carry its token.
    owner: &'a Owner,
}

impl SeriesStep<'_> {
    /// The time series' transition to `state` at `at`, as the pipeline's [`Alarm`]:
    /// the alarm's description and condition (for the rules), the contributor's identity.
    fn alarm(
        &self,
        contributor: Contributor,
        state: AlarmState,
        at: DateTime<Utc>,
        reason: String,
    ) -> Alarm {
        Alarm {
            state,
            previous_state: None,
            reason,
            changed_at: at,
            shape: EventShape::DescribeAlarms,
            contributor: Some(contributor),
            muted: None,
            ..self.parent.clone()
        }
    }

    fn source(&self) -> String {
        shared::alarm::source_id(&self.parent.arn, Some(&self.contributor.id))
    }

    fn label(&self) -> String {
        let listed = self.listed().map(|l| &l.contributor);
        let c = listed
            .filter(|c| !c.attributes.is_empty())
            .unwrap_or(&self.contributor);
        format!("{} ({})", self.parent.name, c.describe())
    }

    fn listed(&self) -> Option<&ListedContributor> {
        match self.read {
            Some(ContributorRead::InAlarm(list)) => list
                .iter()
                .find(|l| l.contributor.id == self.contributor.id),
            _ => None,
        }
    }

    async fn run(
        &self,
        deps: &Deps<'_>,
        report: &mut SweepReport,
    ) -> Result<Option<String>, HandlerError> {
        let stored = deps.effects.store.alarm(&self.source()).await?;
        let note = |reason: String| ContributorNote {
            contributor: self.source(),
            reason,
        };
        let list = match self.read {
            Some(ContributorRead::InAlarm(list)) => list,
            Some(ContributorRead::NotRead { code, message }) => {
                warn!(code = %code, error = %message, "DescribeAlarmContributors declined this alarm; its time series follow their own events");
                report.contributors_not_read.push(note(format!(
                    "DescribeAlarmContributors: {code}: {message}"
                )));
                return self.release_kept(deps, stored.as_ref()).await;
            }
            None => {
                report
                    .contributors_not_read
                    .push(note("DescribeAlarmContributors not read".into()));
                return self.release_kept(deps, stored.as_ref()).await;
            }
        };
        if let Some(listed) = list
            .iter()
            .find(|l| l.contributor.id == self.contributor.id)
        {
            // In ALARM now. Without its time (optional in the API): the recorded ALARM
            // when there is one (the same transition), else the read.
            let at = match (&listed.since, &stored) {
                (Some(t), _) => *t,
                (None, Some(s)) if s.state == AlarmState::Alarm => s.changed_at,
                (None, _) => self.read_at,
            };
            let current = self.alarm(
                listed.contributor.clone(),
                AlarmState::Alarm,
                at,
                listed.reason.clone(),
            );
            return reconcile(deps, self.owner, &current, self.book, self.ctx).await;
        }
        // Not listed: not in ALARM now.
        let Some(s) = stored.filter(|s| s.state != AlarmState::Ok) else {
            return Ok(None);
        };
        let parent = self.parent;
        let turned_ok_after =
            parent.state == AlarmState::Ok && parent.changed_at > s.changed_at + SAME_INSTANT;
        let settled = self.read_at - s.changed_at >= UNLISTED_SETTLE;
        let wait = if turned_ok_after {
            None
        } else if parent.state == AlarmState::InsufficientData {
            Some(format!(
                "not listed in ALARM, but {} has insufficient data: no evidence that it recovered",
                parent.name
            ))
        } else if !settled {
            Some(format!(
                "not listed in ALARM, but its ALARM of {} is younger than {} minutes: it may not be listed yet",
                s.changed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                UNLISTED_SETTLE.num_minutes()
            ))
        } else {
            None
        };
        if let Some(why) = wait {
            info!(reason = %why, "time series not listed in ALARM; left for the next sweep");
            report.contributors_waiting.push(note(why));
            return self.release_kept(deps, Some(&s)).await;
        }
        let since = if turned_ok_after {
            parent.changed_at
        } else {
            self.read_at
        };
        let contributor = match s
            .held
            .as_ref()
            .and_then(|h| h.series.as_ref())
            .and_then(|a| a.contributor.clone())
        {
            Some(kept) if self.contributor.attributes.is_empty() => kept,
            _ => self.contributor.clone(),
        };
        let reason = format!(
            "Not listed by DescribeAlarmContributors (which lists the contributors in ALARM) at {}",
            self.read_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let ok = self.alarm(contributor, AlarmState::Ok, since, reason);
        let origin = Origin::Unlisted {
            read_at: self.read_at,
        };
        let outcome =
            crate::handler::process_with(deps, self.owner, &ok, &origin, self.ctx).await?;
        if outcome.action == "ignore_stale" || outcome.action == "ignore_duplicate" {
            // A delivery got there first.
            return Ok(None);
        }
        info!(
            action = outcome.action,
            "time series no longer in ALARM; its OK applied"
        );
        Ok(Some(format!("applied:{}", outcome.action)))
    }

    /// The time series' ended hold, released from the event it kept when CloudWatch
    /// could not settle it (the transition is still the series' latest: an `OK` is
    /// never held and would have moved the watermark).
    async fn release_kept(
        &self,
        deps: &Deps<'_>,
        stored: Option<&AlarmItem>,
    ) -> Result<Option<String>, HandlerError> {
        let Some(read) = stored.filter(|s| {
            s.held
                .as_ref()
                .is_some_and(|h| h.has_ended(self.book, self.read_at))
        }) else {
            return Ok(None);
        };
        let Some(series) = read.held.as_ref().and_then(|h| h.series.as_deref()) else {
            warn!(source = %read.arn, "held contributor transition without its event (held by an older version); left held");
            return Ok(None);
        };
        release(deps, self.owner, read, series, self.book)
            .await
            .map(Some)
    }
}

/// The report, or the first failure when any alarm failed (after trying them all).
fn finish(
    report: SweepReport,
    mut failures: Vec<HandlerError>,
) -> Result<SweepReport, HandlerError> {
    match failures.len() {
        0 => Ok(report),
        n => Err(HandlerError::SweepIncomplete {
            failed: n,
            first: Box::new(failures.remove(0)),
        }),
    }
}

/// Brings one alarm in step with what CloudWatch says; `Some(what)` when something
/// changed.
async fn reconcile(
    deps: &Deps<'_>,
    owner: &Owner,
    current: &Alarm,
    book: &SilenceBook,
    ctx: &HoldContext,
) -> Result<Option<String>, HandlerError> {
    let now = deps.effects.clock.now();
    // The alarm's watermark, or its time series' (`contributor/<id>/<ARN>`).
    let stored = deps.effects.store.alarm(&current.source_id()).await?;
    match &stored {
        Some(s) if current.changed_at < s.changed_at - SAME_INSTANT => Ok(None),
        Some(s) if current.changed_at <= s.changed_at + SAME_INSTANT => match &s.held {
            Some(h) if h.has_ended(book, now) => {
                release(deps, owner, s, current, book).await.map(Some)
            }
            _ => Ok(None),
        },
        // Newer than anything recorded. Same state as recorded and applied: only a
        // reason or evaluation update (or a whole cycle missed while it kept its
        // state): the watermark moves, nobody is told.
        Some(s) if s.state == current.state && s.held.is_none() => {
            let moved = AlarmItem {
                changed_at: current.changed_at,
                writer: owner.token().to_string(),
                ..s.clone()
            };
            // No incident changes, and none was read: the alarm's item alone.
            match deps
                .effects
                .store
                .apply(&moved, IncidentWrite::NotConcerned)
                .await
            {
                Ok(()) => Ok(Some("watermark".into())),
                Err(e) if is_conflict(&e) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
        _ => {
            let outcome =
                crate::handler::process_with(deps, owner, current, &Origin::Sweep, ctx).await?;
            info!(action = outcome.action, "missed transition applied");
            Ok(Some(format!("applied:{}", outcome.action)))
        }
    }
}

/// Applies the held transition `read` (still CloudWatch's current one) now that its
/// hold ended, as if it arrived at the hold's end; or holds it anew when another hold
/// covers it now.
async fn release(
    deps: &Deps<'_>,
    owner: &Owner,
    read: &AlarmItem,
    current: &Alarm,
    book: &SilenceBook,
) -> Result<String, HandlerError> {
    let Some(hold) = read.held.clone() else {
        return Ok("in_step".into());
    };
    let now = deps.effects.clock.now();
    let (class, account) = match crate::handler::classify(deps, current) {
        Ok(c) => c,
        Err(refusal) => {
            crate::handler::refuse(deps, current, &read.incident_key, &refusal);
            return Ok("refused".into());
        }
    };
    let mut resumed_once = false;
    let mut patience = Patience::new(deps.effects.settings, owner, &read.incident_key);
    let mut attempt = 0;
    loop {
        // Read again after a conflict: someone may have released it, or delivered newer.
        let stored = deps.effects.store.alarm(&read.arn).await?;
        if stored.as_ref() != Some(read) && attempt > 0 {
            return Ok("released_elsewhere".into());
        }
        attempt += 1;
        let key = match current.state {
            AlarmState::Alarm => class.key.clone(),
            _ => read.incident_key.clone(),
        };
        tracing::Span::current().record("incident_key", key.as_str());
        // Applied at the moment the hold ended (deterministic for every releaser).
        let at = hold.ends_at(book).max(read.changed_at).min(now);
        let mut applied = current.clone();
        applied.changed_at = at;
        if let Some(again) = hold_for(&applied, &key, book, now) {
            let new = AlarmItem {
                held: Some(again.clone()),
                writer: owner.token().to_string(),
                ..read.clone()
            };
            match deps
                .holds
                .release(read, &new, IncidentWrite::NotConcerned)
                .await
            {
                Ok(()) => {
                    info!(hold = %again.describe(), "hold ended but another covers it; held anew");
                    return Ok("held_again".into());
                }
                Err(e) if is_conflict(&e) => {
                    patience.conflict()?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let item = deps.effects.store.incident(&key).await?;
        if let Some(item) = item.as_ref().filter(|i| !i.pending.is_empty()) {
            match resume_pending(&deps.effects, owner, item).await? {
                Resume::Finished(_) => resumed_once = true,
                Resume::Busy => patience.wait_for_lease(deps.effects.clock).await?,
                Resume::Conflict => patience.conflict()?,
            }
            continue;
        }
        let transition = shared::lifecycle::Transition {
            key: key.clone(),
            alarm_arn: current.arn.clone(),
            contributor: current.contributor.clone(),
            alarm_name: current.label(),
            state: current.state,
            changed_at: at,
            impact: class.impact,
            title: class.title.clone(),
            summary: class.summary.clone(),
            reason: current.reason.clone(),
        };
        // The watermark is this very transition: no duplicate check here.
        let decision = decide(item.as_ref().map(|i| &i.record), None, &transition);
        let released = AlarmItem {
            incident_key: key.clone(),
            held: None,
            writer: owner.token().to_string(),
            ..read.clone()
        };
        let origin = Origin::Released {
            since: read.changed_at,
            hold: hold.clone(),
        };
        let Some(mut record) = decision.record.clone() else {
            // Guarded by the incident item as read (a stale read decides again).
            let unchanged = IncidentWrite::Unchanged {
                key: &key,
                version: item.as_ref().map(|i| i.version),
            };
            match deps.holds.release(read, &released, unchanged).await {
                Ok(()) => return Ok(format!("released:{}", decision.action.as_str())),
                Err(e) if is_conflict(&e) => {
                    patience.conflict()?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        };
        complete_record(
            &mut record,
            &applied,
            &class,
            &decision.action,
            account.as_ref(),
        );
        mark_origin(&mut record, &applied, &origin);
        let effects = plan(deps, &applied, &class, &decision.action, &record, &origin);
        let new_item = decided_item(
            deps.effects.settings,
            owner,
            now,
            item.as_ref(),
            record,
            effects,
        );
        match deps
            .holds
            .release(read, &released, IncidentWrite::Put(&new_item))
            .await
        {
            Ok(()) => {}
            Err(e) if is_conflict(&e) => {
                patience.conflict()?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        info!(
            action = decision.action.as_str(),
            resumed = resumed_once,
            "held transition applied at the end of its hold"
        );
        run_pending(&deps.effects, owner, new_item).await?;
        return Ok(format!("released:{}", decision.action.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_names_come_from_arns_with_colons_kept() {
        assert_eq!(
            name_of("arn:aws:cloudwatch:eu-west-1:1:alarm:a:b c"),
            Some("a:b c")
        );
        assert_eq!(name_of("arn:aws:cloudwatch:eu-west-1:1:alarm:"), None);
        assert_eq!(name_of("nonsense"), None);
    }

    #[test]
    fn alarms_are_read_per_account_and_region_in_organization_mode_only() {
        let arns: Vec<String> = [
            "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:a",
            "arn:aws:cloudwatch:eu-central-1:444455556666:alarm:b",
            "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:c",
            "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:",
        ]
        .map(String::from)
        .to_vec();
        let org = by_place(arns.iter(), true);
        assert_eq!(
            org.keys().cloned().collect::<Vec<_>>(),
            vec![
                ("111122223333".to_string(), "eu-west-1".to_string()),
                ("444455556666".to_string(), "eu-central-1".to_string())
            ]
        );
        assert_eq!(org[&("111122223333".into(), "eu-west-1".into())].len(), 2);
        let one = by_place(arns.iter(), false);
        assert_eq!(one.len(), 1);
        assert_eq!(one[&(String::new(), String::new())].len(), 3);
    }
}
