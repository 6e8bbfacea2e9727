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
//! One time series (contributor) of a multi-time-series alarm is not read:
//! `DescribeAlarms` has only the alarm as a whole. Its ended hold is released from the
//! event the hold kept ([`shared::hold::Hold::series`]), the transition still being
//! the series' latest (an `OK` is never held and would have moved the watermark);
//! the other contributors feeding open incidents are listed in the report and follow
//! their own events.
//!
//! `DescribeAlarms` is read before anything is applied, so a throttled or failing
//! read applies nothing (retryable error; the next sweep does it all). An alarm that
//! fails to apply does not stop the others; the sweep then fails (retryable) after
//! trying them all.
//!
//! Organization mode: alarms are read where they live, one `DescribeAlarms` batch per
//! account and region; a member account's through its alarm-reader role
//! (`member.yaml`, assumed with STS, credentials cached). A member whose role is
//! missing or refuses (or may not `DescribeAlarms`) is reported (`unreachable`, a
//! warning, and the `SweepUnreachableAccounts` metric) and its alarms are left for
//! the next sweep: it does not stop the sweep of the other accounts.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use shared::alarm::{split_source_id, Alarm, AlarmState};
use shared::effects::{decided_item, is_conflict, resume_pending, run_pending, Patience, Resume};
use shared::error::Retryable;
use shared::hold::hold_for;
use shared::lifecycle::decide;
use shared::silence::SilenceBook;
use shared::state::{AlarmItem, IncidentWrite, Owner};
use tracing::{error, info, info_span, warn, Instrument};

use crate::cloudwatch::ReadError;
use crate::effects::{complete_record, plan, Origin};
use crate::error::HandlerError;
use crate::handler::{mark_origin, Deps};

/// `DescribeAlarms` (rpcv2Cbor) carries timestamps as epoch seconds in a double,
/// which the SDK truncates to the millisecond: the events' `state.timestamp` of the same
/// transition may read one millisecond later. Transitions of one alarm are at least an
/// evaluation period apart, so within this they are the same transition.
pub const SAME_INSTANT: chrono::Duration = chrono::Duration::milliseconds(1);

/// What one sweep did, per alarm (the function's answer, and the log).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub reason: String,
    /// Alarms read with `DescribeAlarms`.
    pub checked: usize,
    /// alarm name -> what was done (`applied:<action>`, `released:<action>`,
    /// `held_again`, `watermark`).
    pub changed: BTreeMap<String, String>,
    /// Alarms behind open incidents or holds that CloudWatch does not return (deleted,
    /// another Region, or outside the role's scope).
    pub missing: Vec<String>,
    /// Time series of multi-time-series alarms feeding open incidents, not read
    /// (`DescribeAlarms` has only the alarm as a whole): their own events move them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contributors_not_read: Vec<String>,
    /// Member accounts (and regions) whose alarms could not be read: their role is
    /// missing or refuses. Their alarms wait for the next sweep.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<Unreachable>,
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

/// Runs one sweep, as `owner` (the invocation: its writes carry its token).
pub async fn sweep(
    deps: &Deps<'_>,
    owner: &Owner,
    reason: &str,
    function_arn: &str,
) -> Result<SweepReport, HandlerError> {
    let span = info_span!("sweep", reason = %reason);
    async {
        let now = deps.effects.clock.now();
        let candidates = deps.holds.sweep_candidates().await?;
        let book = deps.silences.silences().await?;
        // Alarm ARN -> stored item, for every alarm worth reading.
        let mut wanted: BTreeMap<String, ()> = BTreeMap::new();
        let mut contributors_not_read = vec![];
        let mut series_released = vec![];
        for r in &candidates.open {
            for source in r.alarms.keys() {
                if split_source_id(source).1.is_some() {
                    contributors_not_read.push(source.clone());
                } else {
                    wanted.insert(source.clone(), ());
                }
            }
        }
        for a in &candidates.held {
            if !a.held.as_ref().is_some_and(|h| h.has_ended(&book, now)) {
                continue;
            }
            if split_source_id(&a.arn).1.is_some() {
                series_released.push(a.clone());
            } else {
                wanted.insert(a.arn.clone(), ());
            }
        }
        contributors_not_read.sort();
        contributors_not_read.dedup();
        let mut report = SweepReport {
            reason: reason.to_string(),
            contributors_not_read,
            ..SweepReport::default()
        };
        let mut failures: Vec<HandlerError> = vec![];
        for read in &series_released {
            let Some(series) = read.held.as_ref().and_then(|h| h.series.as_deref()) else {
                warn!(source = %read.arn, "held contributor transition without its event (held by an older version); left held");
                continue;
            };
            let span = info_span!("alarm", alarm = %series.label(), state = %series.state, incident_key = tracing::field::Empty);
            match release(deps, owner, read, series, &book)
                .instrument(span)
                .await
            {
                Ok(what) => {
                    report.changed.insert(series.label(), what);
                }
                Err(e) => {
                    error!(alarm = %series.label(), error = %e, error_type = %e.lambda_error_type(), "held contributor transition not released; the next sweep tries again");
                    failures.push(e);
                }
            }
        }
        let places = by_place(wanted.keys(), deps.org.is_some());
        if places.is_empty() {
            info!(changed = report.changed.len(), "nothing (else) to reconcile");
            return finish(report, failures);
        }
        // Everything is read first: a failed read of the stack's own account applies
        // nothing; a member account that cannot be read is reported and skipped.
        let mut described: Vec<Alarm> = vec![];
        let mut skipped: BTreeSet<&str> = BTreeSet::new();
        for ((account, region), arns) in &places {
            let mut names: Vec<String> = arns.iter().filter_map(|a| name_of(a)).map(str::to_string).collect();
            names.sort();
            names.dedup();
            match deps.alarms.describe(account, region, &names).await {
                Ok(found) => described.extend(found),
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
                    skipped.extend(arns.iter().map(String::as_str));
                }
            }
        }
        report.checked = described.len();
        let by_arn: BTreeMap<&str, &Alarm> = described.iter().map(|a| (a.arn.as_str(), a)).collect();
        for arn in wanted.keys().filter(|a| !skipped.contains(a.as_str())) {
            let Some(current) = by_arn.get(arn.as_str()) else {
                warn!(alarm = %arn, "alarm not returned by DescribeAlarms (deleted, another Region, or outside the role's scope); left as it is");
                report.missing.push(arn.clone());
                continue;
            };
            let span = info_span!("alarm", alarm = %current.name, state = %current.state, incident_key = tracing::field::Empty);
            match reconcile(deps, owner, current, &book, function_arn)
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
        info!(checked = report.checked, changed = report.changed.len(), missing = report.missing.len(), unreachable = report.unreachable.len(), contributors_not_read = report.contributors_not_read.len(), failed = failures.len(), "sweep done");
        finish(report, failures)
    }
    .instrument(span)
    .await
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
    function_arn: &str,
) -> Result<Option<String>, HandlerError> {
    let now = deps.effects.clock.now();
    let stored = deps.effects.store.alarm(&current.arn).await?;
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
            let ctx = crate::handler::HoldContext {
                function_arn: function_arn.to_string(),
            };
            let outcome =
                crate::handler::process_with(deps, owner, current, &Origin::Sweep, &ctx).await?;
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
            contributor: current.contributor.as_ref().map(|c| c.id.clone()),
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
