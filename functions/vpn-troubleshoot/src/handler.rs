//! The runbook step: validate the input, gather the facts, analyse them, apply the
//! guarded remediation, then report the findings on the incident, on the
//! notification topic, on the incident's state-table item (when `STATE_TABLE_NAME`
//! is set: findings and `milestones.diagnosed_at` for the post-incident summary)
//! and as the step's output JSON.
//!
//! Only a refused input is an `Err` (the caller must change it). Everything AWS can
//! get wrong during the diagnosis is part of the report: an unknown VPN id is a
//! finding recorded on the incident, a stopped log query is a partial report, a
//! failed note, publish or state write is stated in the output's `delivery`.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::effects::{update_record, Clock, RecordUpdate, RefusalKind, RunnerSettings};
use shared::error::{AwsError, Retryable};
use shared::incident::{IncidentBackend, IncidentRef, Note};
use shared::notification::{FindingSummary, Notification};
use shared::org::AccountInfo;
use shared::respond;
use shared::state::Owner;
use shared::state::StateStore;
use shared::vpn::{
    analyse, decide_remediation, incident_key, member_unreachable, MemberAccessFailure,
    NotificationContext, Report, VpnConnectionId,
};
use tokio::time::Instant;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::Config;
use crate::gather::{gather, Readers};
use crate::input::{self, InputError, RunbookInput};
use crate::logs_query::{PollSchedule, QueryBudget};
use crate::member::MemberAccess;
use crate::remediate::{remediate, RemediationOutcome};

/// Time kept after the log query for the remediation, the note and the notification.
pub const REPORT_RESERVE: Duration = Duration::from_secs(12);
/// Longest wait for the Logs Insights query, whatever the Lambda timeout.
pub const MAX_LOG_WAIT: Duration = Duration::from_secs(120);
/// When the Logs Insights query is polled in production: soon after it starts, then
/// less and less often, up to once a second (see `PollSchedule::PRODUCTION`).
pub const POLL_SCHEDULE: PollSchedule = PollSchedule::PRODUCTION;

/// Everything the handler needs, built once per container in `main`.
pub struct Deps {
    pub ec2: aws_sdk_ec2::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub sns: aws_sdk_sns::Client,
    pub backend: Box<dyn IncidentBackend>,
    /// The state table (`STATE_TABLE_NAME` set): the diagnosis is recorded on the
    /// incident's item through `shared::effects::update_record` (the record only: steps
    /// other functions left pending stay theirs). `None`: not recorded.
    pub state: Option<Box<dyn StateStore>>,
    /// The time of the state-table change (`diagnosed_at`, leases).
    pub clock: Box<dyn Clock>,
    pub config: Config,
    /// When to poll the Logs Insights query (`POLL_SCHEDULE` in production).
    pub poll: PollSchedule,
    /// Entry into member accounts (organization mode); `None`: only the function's
    /// own account can be diagnosed.
    pub members: Option<Box<dyn MemberAccess>>,
}

/// Where the VPN to diagnose is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// The function's own account and region: its own clients.
    Home,
    /// A member account (organization mode): its diagnosis role.
    Member { account: String, region: String },
}

/// Facts about this invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub now: DateTime<Utc>,
    /// When Lambda stops the invocation.
    pub deadline: Instant,
    pub account: String,
    pub region: String,
    /// The invocation as a writer of the state table (request id and deadline).
    pub owner: Owner,
}

impl Invocation {
    /// From the Lambda context: deadline, and account and region from the function ARN.
    pub fn from_context(ctx: &lambda_runtime::Context, sdk_region: Option<&str>) -> Invocation {
        let left = ctx
            .deadline()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let arn: Vec<&str> = ctx.invoked_function_arn.split(':').collect();
        Invocation {
            now: Utc::now(),
            deadline: Instant::now() + left,
            account: arn
                .get(4)
                .filter(|a| !a.is_empty())
                .unwrap_or(&"unknown")
                .to_string(),
            region: arn
                .get(3)
                .filter(|r| !r.is_empty())
                .copied()
                .or(sdk_region)
                .unwrap_or("unknown")
                .to_string(),
            owner: Owner::from_invocation(&ctx.request_id, ctx.deadline()),
        }
    }
}

/// The runbook step's output.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunbookOutput {
    pub vpn_connection_id: String,
    pub incident: Option<IncidentRef>,
    pub incident_key: String,
    pub report: Report,
    pub remediation: RemediationOutcome,
    pub delivery: Delivery,
}

/// Where the findings went.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub incident: String,
    pub notification: String,
    /// The diagnosis on the incident's state-table item; absent without `STATE_TABLE_NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_table: Option<StateDelivery>,
}

/// Whether the findings and the diagnosis time reached the incident's state item
/// (what the post-incident summary is built from).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDelivery {
    pub recorded: bool,
    pub detail: String,
}

/// A refused invocation.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Input(#[from] InputError),
}

impl Retryable for HandlerError {
    fn retryable(&self) -> bool {
        match self {
            HandlerError::Input(e) => e.retryable(),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            HandlerError::Input(e) => e.kind(),
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.lambda_error_type(),
            error_message: e.to_string(),
        }
    }
}

/// Handles one runbook invocation.
pub async fn handle(
    deps: &Deps,
    event: Value,
    inv: Invocation,
) -> Result<RunbookOutput, HandlerError> {
    let org = deps.config.org.as_ref();
    let home = org.map_or(inv.account.as_str(), |o| o.home_account.as_str());
    let input = match input::parse(&event).and_then(|i| allowed(org, home, i)) {
        Ok(i) => i,
        Err(e) => {
            refused(deps, &event, &e, inv.now).await;
            return Err(e.into());
        }
    };
    let region = input.region.clone().unwrap_or_else(|| inv.region.clone());
    let place = match &input.account {
        Some(account) if account != home => Place::Member {
            account: account.clone(),
            region: region.clone(),
        },
        // The home account's VPNs are diagnosed with the function's own role, in
        // the stack's region (as in a single-account stack).
        _ => Place::Home,
    };
    let key = input.incident_key.clone().unwrap_or_else(|| {
        let key = incident_key(&input.vpn_id);
        match (org, &input.account) {
            (Some(org), Some(account)) => org.incident_key(account, &key),
            _ => key,
        }
    });
    let span = info_span!(
        "diagnosis",
        incident_key = %key,
        vpn_id = %input.vpn_id,
        account = input.account.as_deref().unwrap_or(home),
        incident = input.incident.as_ref().map(|i| i.id().to_string()).unwrap_or_default()
    );
    Ok(diagnose(deps, input, key, inv, place)
        .instrument(span)
        .await)
}

/// In organization mode with an allow-list, the input's account must be the home
/// account or an allowed member (the same list alarm-to-incident admits).
fn allowed(
    org: Option<&shared::org::OrgPolicy>,
    home: &str,
    input: RunbookInput,
) -> Result<RunbookInput, InputError> {
    let allowed = org.and_then(|o| o.allowed.as_ref());
    match (&input.account, allowed) {
        (Some(a), Some(list)) if a != home && !list.contains(a) => {
            Err(InputError::AccountNotAllowed { account: a.clone() })
        }
        _ => Ok(input),
    }
}

/// Records a refused input on its incident when the input names one.
async fn refused(deps: &Deps, event: &Value, e: &InputError, now: DateTime<Utc>) {
    warn!(error = %e, "input refused");
    let Some(incident) = input::incident_of(event) else {
        return;
    };
    let note = Note {
        title: "VPN diagnosis could not start".to_string(),
        text: format!("The diagnosis runbook was given an invalid input: {e}"),
        at: now,
        data: [("error".to_string(), e.lambda_error_type())]
            .into_iter()
            .collect(),
    };
    if let Err(be) = deps.backend.add_note(&incident, &note).await {
        error!(incident = %incident, error = %be, "could not record the refused input on the incident");
    }
}

async fn diagnose(
    deps: &Deps,
    input: RunbookInput,
    key: String,
    inv: Invocation,
    place: Place,
) -> RunbookOutput {
    let vpn = &input.vpn_id;
    let lookback = input
        .lookback_minutes
        .unwrap_or(deps.config.lookback_minutes);
    let budget = QueryBudget {
        poll: deps.poll,
        deadline: inv
            .deadline
            .checked_sub(REPORT_RESERVE)
            .unwrap_or_else(Instant::now)
            .min(Instant::now() + MAX_LOG_WAIT),
    };
    let (report, remediation) = match &place {
        Place::Home => {
            let readers = Readers {
                ec2: &deps.ec2,
                cloudwatch: &deps.cloudwatch,
                logs: &deps.logs,
            };
            let (report, decision) =
                diagnose_with(deps, readers, vpn, lookback, &inv, budget).await;
            let remediation = remediate(&deps.ec2, vpn, &decision).await;
            (report, remediation)
        }
        Place::Member { account, region } => match member_readers(deps, account, region).await {
            Err(failure) => {
                warn!(account = %account, region = %region, error = %failure.headline(), message = %failure.message, "member account not reachable; reported as a finding");
                let report = member_unreachable(vpn, inv.now, lookback, &failure);
                let remediation = RemediationOutcome::NotAttempted {
                    reason: failure.headline(),
                };
                (report, remediation)
            }
            Ok(clients) => {
                let readers = Readers {
                    ec2: &clients.ec2,
                    cloudwatch: &clients.cloudwatch,
                    logs: &clients.logs,
                };
                let (report, decision) =
                    diagnose_with(deps, readers, vpn, lookback, &inv, budget).await;
                let remediation = match (&decision, deps.members.as_deref()) {
                    (shared::vpn::RemediationDecision::Replace { .. }, Some(m)) => {
                        match m.remediator(account, region).await {
                            Ok(ec2) => remediate(&ec2, vpn, &decision).await,
                            Err(f) => RemediationOutcome::NotAttempted {
                                reason: f.headline(),
                            },
                        }
                    }
                    _ => remediate(&clients.ec2, vpn, &decision).await,
                };
                (report, remediation)
            }
        },
    };
    let remediation_line = remediation.describe(vpn);

    let mut note = report.to_note();
    note.text.push_str(&format!("\n{remediation_line}\n"));
    note.data.insert(
        "remediation".to_string(),
        serde_json::to_value(&remediation)
            .ok()
            .and_then(|v| v.get("outcome").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default(),
    );
    let incident_delivery = match &input.incident {
        None => "skipped: the input names no IncidentRecordArn or OpsItemId".to_string(),
        Some(incident) => match deps.backend.add_note(incident, &note).await {
            Ok(()) => format!("recorded on {} {incident}", deps.backend.name()),
            Err(e) => {
                error!(error = %e, "could not record the diagnosis on the incident");
                format!("failed ({}): {e}", e.lambda_error_type())
            }
        },
    };

    let (account, region) = match &place {
        Place::Home => (
            deps.config
                .org
                .as_ref()
                .map_or_else(|| inv.account.clone(), |o| o.home_account.clone()),
            inv.region.clone(),
        ),
        Place::Member { account, region } => (account.clone(), region.clone()),
    };
    let account_info = deps.config.org.as_ref().map(|o| AccountInfo {
        home: account == o.home_account,
        ..o.directory.lookup(&account)
    });
    let ctx = NotificationContext {
        incident_key: key.clone(),
        incident: input.incident.clone(),
        account,
        region,
        occurred_at: inv.now,
        account_info,
    };
    let mut notification = report.to_notification(&ctx);
    let findings = notification.findings.clone();
    if !matches!(remediation, RemediationOutcome::NotAttempted { .. }) {
        notification
            .summary
            .push_str(&format!(" {remediation_line}"));
    }
    let notification_delivery =
        match publish(&deps.sns, &deps.config.topic_arn, &notification).await {
            Ok(id) => format!("published to the notification topic (message {id})"),
            Err(e) => {
                error!(error = %e, "could not publish the diagnosis");
                format!("failed ({}): {e}", e.lambda_error_type())
            }
        };

    let state_delivery = record_on_state(deps, &inv.owner, &key, findings).await;

    RunbookOutput {
        vpn_connection_id: vpn.to_string(),
        incident: input.incident,
        incident_key: key,
        report,
        remediation,
        delivery: Delivery {
            incident: incident_delivery,
            notification: notification_delivery,
            state_table: state_delivery,
        },
    }
}

/// Gathers the facts with `readers`, analyses them and decides the remediation.
async fn diagnose_with(
    deps: &Deps,
    readers: Readers<'_>,
    vpn: &VpnConnectionId,
    lookback: u32,
    inv: &Invocation,
    budget: QueryBudget,
) -> (Report, shared::vpn::RemediationDecision) {
    let facts = gather(readers, vpn, lookback, inv.now, budget).await;
    let report = analyse(&facts);
    info!(
        headline = %report.headline,
        findings = ?report.codes(),
        complete = report.complete,
        "diagnosis done"
    );
    let decision = decide_remediation(&facts, &report, deps.config.remediation);
    (report, decision)
}

/// The member account's diagnosis clients, or why there are none.
async fn member_readers(
    deps: &Deps,
    account: &str,
    region: &str,
) -> Result<crate::member::MemberClients, MemberAccessFailure> {
    match deps.members.as_deref() {
        Some(m) => m.readers(account, region).await,
        None => Err(MemberAccessFailure {
            account: account.to_string(),
            region: region.to_string(),
            role_arn: String::new(),
            code: "NotConfigured".into(),
            message:
                "this stack diagnoses only its own account and region: organization mode is off \
                      (ORGANIZATION_ID and MEMBER_DIAGNOSIS_ROLE_NAME not set)"
                    .into(),
            retryable: false,
        }),
    }
}

/// Records the findings and the diagnosis time on the incident's state item (when
/// the state table is configured). The report is the product: a missing incident
/// (a manual run for a VPN without one) or a failed write never fails the run; it is
/// logged and stated in the output. Only the record is written: steps another
/// function left pending on the item (open, runbook, publish, escalation) are left
/// to it, and while it holds the item's lease the write waits (bounded) for it.
async fn record_on_state(
    deps: &Deps,
    owner: &Owner,
    key: &str,
    findings: Vec<FindingSummary>,
) -> Option<StateDelivery> {
    let store = deps.state.as_deref()?;
    let settings = RunnerSettings::new(None);
    // `record_diagnosis` decides no effects: the record is all there is to write.
    let outcome = update_record(
        store,
        deps.clock.as_ref(),
        &settings,
        owner,
        key,
        |record, now| {
            respond::record_diagnosis(respond::existing(record)?, findings.clone(), now)
                .map(|change| change.record)
        },
    )
    .await;
    Some(match outcome {
        Ok(RecordUpdate::Updated { record, changed }) => {
            let at = record
                .milestones
                .diagnosed_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            info!(diagnosed_at = %at, findings = record.findings.len(), changed, "diagnosis recorded on the incident's state item");
            StateDelivery {
                recorded: true,
                detail: format!("recorded on the incident's state item (diagnosed at {at})"),
            }
        }
        Ok(RecordUpdate::Refused(r)) if r.kind == RefusalKind::NotFound => {
            info!("no incident under this key in the state table (a manual run?); diagnosis not recorded there");
            StateDelivery {
                recorded: false,
                detail: "skipped: no incident under this key in the state table".to_string(),
            }
        }
        Ok(RecordUpdate::Refused(r)) => {
            warn!(reason = ?r.kind, "the state table refused the diagnosis");
            StateDelivery {
                recorded: false,
                detail: format!("refused: {r}"),
            }
        }
        Err(e) => {
            warn!(
                error = %e,
                error_kind = e.kind(),
                retryable = e.retryable(),
                "could not record the diagnosis on the incident's state item; the report stands"
            );
            StateDelivery {
                recorded: false,
                detail: format!("failed ({}): {e}", e.lambda_error_type()),
            }
        }
    })
}

/// Publishes the notification in the Chatbot schema with its message attributes.
pub async fn publish(
    sns: &aws_sdk_sns::Client,
    topic: &str,
    n: &Notification,
) -> Result<String, AwsError> {
    shared::publish::publish_notification(sns, topic, n).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_takes_account_region_and_deadline_from_the_context() {
        let mut ctx = lambda_runtime::Context::default();
        ctx.invoked_function_arn =
            "arn:aws:lambda:eu-west-1:123456789012:function:vpn-troubleshoot".into();
        let in_30s = SystemTime::now() + Duration::from_secs(30);
        ctx.deadline = in_30s
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let inv = Invocation::from_context(&ctx, Some("us-east-1"));
        assert_eq!(inv.account, "123456789012");
        assert_eq!(inv.region, "eu-west-1");
        let left = inv.deadline.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(28) && left <= Duration::from_secs(30),
            "{left:?}"
        );
    }

    #[test]
    fn invocation_without_arn_or_deadline_falls_back() {
        let inv = Invocation::from_context(&lambda_runtime::Context::default(), Some("us-east-1"));
        assert_eq!(inv.account, "unknown");
        assert_eq!(inv.region, "us-east-1");
        // A past deadline leaves no time: the log query is then skipped, not awaited.
        assert!(inv.deadline <= Instant::now());
    }
}
