//! The three kinds of invocation.
//!
//! **Function URL** (Slack's POST): verify the signature (signing secret, 5-minute
//! window), refuse a replayed signature, parse, authorize, then answer within Slack's
//! 3 s: `help`/`list`/`show` at once from the state table, the Add-note button opens
//! the modal at once (`views.open`), every change is queued and answered "On it".
//! Unverified: `401` with a fixed body. Unauthorised: an ephemeral "You are not
//! allowed to …"; nothing is queued or changed.
//!
//! Every verified request the person makes gets an answer they see, also when it is
//! refused: Slack shows the HTTP body of a slash command's answer, but ignores the
//! body of an interactivity answer (buttons, dialogs, shortcuts), so those are told
//! through the payload's `response_url` (ephemeral) and acknowledged with an empty
//! body: unauthorised, not understood (malformed, a button or dialog that is not
//! ours), or a check that could not run (user groups, replay guard). A request that
//! is not verified gets nothing beyond its `401`: its `response_url` may be forged,
//! and answering it would let anyone make this function post to a URL of their
//! choosing (or into a channel with a leaked response URL).
//!
//! **SQS** (the actions queue): each job goes through `shared::effects::apply_change`
//! with the matching `shared::respond` decision; the outcome (or the refusal) is
//! posted to the person's `response_url`. Failures are reported per message (batch
//! item failures), so only they return to the queue, and after five receives to its
//! dead-letter queue. The job's id (the Slack request's) is its owner token: a copy
//! delivered again after the change was applied applies nothing twice, and a write
//! whose answer was lost is recognized as the job's own.
//!
//! **Escalation schedule**: `respond::escalation_fired` for the incident and attempt.
//!
//! **Silences** (`/incident silence`, `silences`, `unsilence`): the list is answered at
//! once from the state table's silence book; setting and lifting one is queued like any
//! change, and the worker writes the book and sets the timer that runs
//! alarm-to-incident's sweep when the silence ends (`shared::hold_timer`).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shared::effects::{apply_change, ChangeOutcome, EffectDeps, EffectError, Refusal, RefusalKind};
use shared::error::{Retryable, Secret};
use shared::hash::token_uuid;
use shared::hold_store::{update_silences, SilenceStore};
use shared::hold_timer::{fire_at, silence_end_name, silence_lifted_name, HoldTimer, LEAD};
use shared::incident::{Actor, Impact};
use shared::respond;
use shared::silence::{is_vpn_id, silence_id, Silence, SilenceRefusal, SilenceTarget};
use shared::slack::authz::{Action, Scope};
use shared::slack::interaction::{
    self, Interaction, NoteModalMetadata, ReplyRoute, Request, Source,
};
use shared::slack::signature::{self, SignedRequest, SigningSecret};
use shared::slack::views::{self, Reply};
use shared::state::Owner;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::Config;
use crate::event::{
    classify, BatchResponse, BodyError, EscalationEvent, EventError, Incoming, ItemFailure,
    SqsEvent, SqsRecord, UrlRequest, UrlResponse,
};
use crate::groups::GroupCache;
use crate::incidents::{self, IncidentReader};
use crate::queue::{Job, JobAction, JobQueue, SilenceSpec};
use crate::replay::ReplayGuard;
use crate::scope;
use crate::secrets::Credentials;
use crate::slack_web::SlackWeb;

/// The fixed answer to anything not verified as coming from Slack.
pub const UNVERIFIED_BODY: &str = "invalid request";
/// The fixed answer when a dependency needed to check a request is unavailable.
pub const UNAVAILABLE_BODY: &str = "temporarily unavailable";
/// What the person is told (through the response URL) when a verified request
/// could not be checked against replays.
pub const UNAVAILABLE_TEXT: &str =
    "The incident app could not check this request right now; nothing was changed. Try again in a moment.";
/// After this many receives a failed job is given up (the queue's maxReceiveCount)
/// and the person is told.
pub const MAX_RECEIVES: u32 = 5;
/// Impact of a declared incident without `--impact`.
pub const DECLARE_DEFAULT_IMPACT: Impact = Impact::MEDIUM;

/// What the handler uses, built once per container.
pub struct Deps<'a> {
    pub config: &'a Config,
    pub credentials: &'a dyn Credentials,
    pub replay: &'a dyn ReplayGuard,
    pub slack: &'a dyn SlackWeb,
    pub queue: &'a dyn JobQueue,
    pub incidents: &'a dyn IncidentReader,
    pub groups: &'a GroupCache,
    /// The silences (the state table's silence book).
    pub silences: &'a dyn SilenceStore,
    /// The timer at a silence's end; `None` when `HOLD_SCHEDULE_GROUP` is unset.
    pub hold_timer: Option<&'a dyn HoldTimer>,
    pub effects: EffectDeps<'a>,
}

/// Where this function runs (from the invocation's function ARN): declared incidents
/// belong to this account and Region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub account: String,
    pub region: String,
}

impl Place {
    /// From `arn:aws:lambda:<region>:<account>:function:<name>`.
    pub fn from_function_arn(arn: &str) -> Place {
        let parts: Vec<&str> = arn.split(':').collect();
        Place {
            region: parts.get(3).copied().unwrap_or_default().to_string(),
            account: parts.get(4).copied().unwrap_or_default().to_string(),
        }
    }
}

/// A failure the invocation reports to Lambda.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("escalation of {key:?} attempt {attempt}: {source}")]
    Escalation {
        key: String,
        attempt: u32,
        source: EffectError,
    },
    #[error(
        "escalation event received but escalation is not configured (ESCALATION_MIN_IMPACT unset)"
    )]
    EscalationOff,
}

impl Retryable for HandlerError {
    fn retryable(&self) -> bool {
        match self {
            HandlerError::Event(e) => e.retryable(),
            HandlerError::Escalation { source, .. } => source.retryable(),
            HandlerError::EscalationOff => false,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            HandlerError::Event(e) => e.kind(),
            HandlerError::Escalation { source, .. } => source.kind(),
            HandlerError::EscalationOff => "BadConfig",
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

/// One invocation; `invocation` names it (request id and deadline).
pub async fn handle(
    deps: &Deps<'_>,
    event: Value,
    place: &Place,
    invocation: &Owner,
) -> Result<Value, HandlerError> {
    match classify(event)? {
        Incoming::Url(req) => {
            let response = handle_url(deps, &req, invocation).await;
            Ok(serde_json::to_value(response).unwrap_or_else(|_| json!({"statusCode": 500})))
        }
        Incoming::Queue(batch) => {
            let response = handle_batch(deps, &batch, place, invocation).await;
            Ok(serde_json::to_value(response).unwrap_or_else(|_| json!({"batchItemFailures": []})))
        }
        // Lambda keeps the request id when it retries the schedule's invocation.
        Incoming::Escalation(e) => handle_escalation(deps, &e, invocation).await,
    }
}

// ------------------------------------------------------------------ Function URL

/// An ephemeral message (only the person sees it).
pub fn ephemeral(text: &str) -> Value {
    reply(views::ephemeral(text))
}

fn reply(r: Reply) -> Value {
    serde_json::to_value(&r)
        .unwrap_or_else(|_| json!({"response_type": "ephemeral", "text": r.text}))
}

/// Verifies, authorizes and answers one request from Slack. Never fails: every
/// outcome is an HTTP answer.
pub async fn handle_url(deps: &Deps<'_>, req: &UrlRequest, invocation: &Owner) -> UrlResponse {
    if !req.request_context.http.method.eq_ignore_ascii_case("POST") {
        return UrlResponse::text(405, "method not allowed");
    }
    let body = match req.body_bytes() {
        Ok(b) => b,
        Err(e @ BodyError::TooLarge(_)) => {
            warn!(error = %e, "request refused");
            return UrlResponse::text(413, "request too large");
        }
        Err(e) => {
            warn!(error = %e, "request refused");
            return UrlResponse::text(400, "bad request");
        }
    };
    let secret = match deps.credentials.signing_secret().await {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, kind = e.kind(), "signing secret unavailable: every request is refused");
            return UrlResponse::text(503, UNAVAILABLE_BODY);
        }
    };
    let secret = match SigningSecret::new(secret.expose()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "signing secret unusable: every request is refused");
            return UrlResponse::text(503, UNAVAILABLE_BODY);
        }
    };
    let now = deps.effects.clock.now();
    let signed = SignedRequest::from_headers(
        req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &body,
    );
    let verified = match signature::verify(&secret, &signed, now) {
        Ok(v) => v,
        Err(e) => {
            warn!(reason = %e, "request not verified as coming from Slack");
            return UrlResponse::text(401, UNVERIFIED_BODY);
        }
    };
    match deps
        .replay
        .first_use(&verified.signature, invocation.token(), now)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            warn!(sent_at = %verified.sent_at, "replayed Slack request refused");
            return UrlResponse::text(401, UNVERIFIED_BODY);
        }
        Err(e) => {
            error!(error = %e, "replay guard unavailable; request refused");
            // Verified, so its response URL is Slack's: tell the person why nothing
            // happened (the 503 alone shows them only a generic failure).
            if let Some(url) = interaction::response_url_in(&body) {
                tell(deps, Some(&url), UNAVAILABLE_TEXT).await;
            }
            return UrlResponse::text(503, UNAVAILABLE_BODY);
        }
    }
    let interaction = match interaction::parse(&body) {
        Ok(i) => i,
        Err(e) => {
            info!(reason = %e, "request not understood; nothing changes");
            return answer_unparsed(deps, &body, &e.user_message()).await;
        }
    };
    let span = info_span!(
        "slack_request",
        user = %interaction.caller.user_id,
        action = %interaction.request.action(),
        incident = interaction.request.key().unwrap_or_default(),
    );
    let request_id = token_uuid(&["slack-request", &verified.signature]);
    respond_to(deps, interaction, &request_id)
        .instrument(span)
        .await
}

/// `request_id` names the verified Slack request (a queued change carries it).
async fn respond_to(deps: &Deps<'_>, i: Interaction, request_id: &str) -> UrlResponse {
    let action = i.request.action();
    let access = match person_access(deps, &i.caller.user_id, action).await {
        Ok(a) => a,
        Err(()) => return answer(deps, &i, &ephemeral(scope::CANNOT_CHECK)).await,
    };
    if !access.allowed {
        info!("not allowed; nothing changes");
        return answer(deps, &i, &reply(views::not_allowed(action))).await;
    }
    let org = deps.config.org.as_ref();
    let reach = &access.scope;
    // Every action on an existing incident stays within the person's account scope.
    if let Request::Acknowledge { key }
    | Request::Resolve { key }
    | Request::Rerun { key }
    | Request::OpenNoteModal { key }
    | Request::AddNote { key, .. } = &i.request
    {
        if let Err(text) = scope::check_key(org, reach, deps.incidents, key).await {
            return answer(deps, &i, &ephemeral(&text)).await;
        }
    }
    match &i.request {
        Request::Help => answer(deps, &i, &ephemeral(interaction::USAGE)).await,
        Request::List => match deps.incidents.open_incidents().await {
            Ok(mut records) => {
                records.retain(|r| reach.covers(&scope::incident_account(org, r)));
                let now = deps.effects.clock.now();
                answer(
                    deps,
                    &i,
                    &reply(Reply::ephemeral(views::incident_list(&records, now))),
                )
                .await
            }
            Err(e) => {
                error!(error = %e, "listing incidents failed");
                answer(
                    deps,
                    &i,
                    &ephemeral("Could not read the incidents right now; try again in a moment."),
                )
                .await
            }
        },
        Request::Show { key } => match incidents::find_in(deps.incidents, key, |r| {
            reach.covers(&scope::incident_account(org, r))
        })
        .await
        {
            Ok(Some(record)) if scope::check_incident(org, reach, &record).is_err() => {
                answer(deps, &i, &ephemeral(&scope::not_shown(&record.key))).await
            }
            Ok(Some(record)) => {
                let now = deps.effects.clock.now();
                let message = views::incident_show(&record, now, true);
                answer(deps, &i, &reply(Reply::ephemeral(message))).await
            }
            Ok(None) => {
                let text = format!(
                    "No incident matches `{}`. `/incident list` shows the open ones.",
                    shared::text::truncate(&key.replace('`', "'"), 200)
                );
                answer(deps, &i, &ephemeral(&text)).await
            }
            Err(e) => {
                error!(error = %e, "reading the incident failed");
                answer(
                    deps,
                    &i,
                    &ephemeral("Could not read the incident right now; try again in a moment."),
                )
                .await
            }
        },
        Request::OpenNoteModal { key } => open_note_modal(deps, &i, key).await,
        Request::Silences => match deps.silences.silences().await {
            Ok(book) => {
                let book = scope::visible_silences(org, reach, &book);
                let now = deps.effects.clock.now();
                answer(
                    deps,
                    &i,
                    &reply(Reply::ephemeral(views::silence_list(&book, now))),
                )
                .await
            }
            Err(e) => {
                error!(error = %e, "reading the silences failed");
                answer(
                    deps,
                    &i,
                    &ephemeral("Could not read the silences right now; try again in a moment."),
                )
                .await
            }
        },
        Request::Silence {
            target,
            duration,
            reason,
        } => match resolve_target(deps, target).await {
            Ok(target) => {
                if let Err(text) =
                    scope::check_silence_target(org, reach, deps.incidents, &target).await
                {
                    return answer(deps, &i, &ephemeral(&text)).await;
                }
                let spec = SilenceSpec {
                    target,
                    minutes: duration.num_minutes(),
                    reason: reason.clone(),
                };
                let now = deps.effects.clock.now();
                queue_job(deps, &i, silence_job(&i, request_id, spec, now)).await
            }
            Err(text) => answer(deps, &i, &ephemeral(&text)).await,
        },
        Request::Unsilence { id } => match lift_allowed(deps, reach, id).await {
            Ok(()) => queue_change(deps, &i, request_id).await,
            Err(text) => answer(deps, &i, &ephemeral(&text)).await,
        },
        _ => queue_change(deps, &i, request_id).await,
    }
}

/// What the policy lets `user` do with `action`, and on which accounts' incidents.
async fn person_access<'d>(
    deps: &Deps<'d>,
    user: &str,
    action: Action,
) -> Result<scope::Access<'d>, ()> {
    scope::access(
        deps.config,
        deps.credentials,
        deps.slack,
        deps.groups,
        user,
        action,
    )
    .await
}

/// `Err(answer)` when a scoped person may not end silence `id` (an unknown id passes:
/// lifting it says so).
async fn lift_allowed(deps: &Deps<'_>, reach: &Scope<'_>, id: &str) -> Result<(), String> {
    if *reach == Scope::All {
        return Ok(());
    }
    let book = deps.silences.silences().await.map_err(|e| {
        error!(error = %e, "reading the silences failed");
        "Could not read the silences right now; nothing changed. Try again in a moment.".to_string()
    })?;
    match book.get(id) {
        Some(s) => scope::check_lift(deps.config.org.as_ref(), reach, s),
        None => Ok(()),
    }
}

/// What a silence's target means: `vpn:`/`incident:`/`alarm:` say it; else a VPN id,
/// then the exact key of an incident the pipeline knows, else an alarm-name prefix.
/// `Err` is the answer for the person.
async fn resolve_target(deps: &Deps<'_>, raw: &str) -> Result<SilenceTarget, String> {
    let raw = raw.trim();
    let lower = raw.to_ascii_lowercase();
    let after = |p: &str| raw[p.len()..].trim().to_string();
    if lower.starts_with("vpn:") {
        let v = after("vpn:");
        return if is_vpn_id(&v) {
            Ok(SilenceTarget::Vpn(v))
        } else {
            Err(format!(
                "`{}` is not a VPN connection id (`vpn-` and 8 or 17 hex digits).",
                shared::text::truncate(&v.replace('`', "'"), 60)
            ))
        };
    }
    if lower.starts_with("incident:") || lower.starts_with("key:") {
        let k = if lower.starts_with("key:") {
            after("key:")
        } else {
            after("incident:")
        };
        return if k.is_empty() {
            Err("`incident:` needs an incident key after it.".into())
        } else {
            Ok(SilenceTarget::IncidentKey(k))
        };
    }
    if lower.starts_with("alarm:") {
        let p = after("alarm:");
        return if p.is_empty() {
            Err("`alarm:` needs an alarm-name prefix after it.".into())
        } else {
            Ok(SilenceTarget::AlarmPrefix(p))
        };
    }
    if is_vpn_id(raw) {
        return Ok(SilenceTarget::Vpn(raw.to_string()));
    }
    match deps.incidents.incident(raw).await {
        Ok(Some(r)) => Ok(SilenceTarget::IncidentKey(r.key)),
        Ok(None) => Ok(SilenceTarget::AlarmPrefix(raw.to_string())),
        Err(e) => {
            error!(error = %e, "reading the incident failed");
            Err("Could not check what to silence right now; nothing changed. Try again in a moment.".into())
        }
    }
}

fn silence_job(i: &Interaction, request_id: &str, spec: SilenceSpec, now: DateTime<Utc>) -> Job {
    Job {
        id: Some(request_id.to_string()),
        action: JobAction::Silence,
        incident_key: None,
        actor: i.caller.actor(),
        team: i.caller.channel_id.clone(),
        text: None,
        silence: Some(spec),
        impact: None,
        response_url: i.caller.response_url.clone(),
        requested_at: now,
    }
}

/// Answers a verified request that could not be understood (nothing changes): a
/// slash command in the HTTP body, which Slack shows the person; an interactivity
/// payload through its `response_url`, since Slack ignores the body of those answers
/// (and a dialog's submission must be answered empty, which closes it).
async fn answer_unparsed(deps: &Deps<'_>, body: &[u8], text: &str) -> UrlResponse {
    match interaction::reply_route(body) {
        ReplyRoute::Body => UrlResponse::json(200, &ephemeral(text)),
        ReplyRoute::ResponseUrl(url) => {
            if url.is_none() {
                info!("the request carries no response_url; the person cannot be told");
            }
            tell(deps, url.as_ref(), text).await;
            UrlResponse::ack()
        }
    }
}

/// Tells the person `message`: a slash command's answer is the HTTP body; a button's
/// goes to its `response_url` (Slack ignores the body of a button's answer); a modal
/// submission is answered with an empty body (the modal closes).
async fn answer(deps: &Deps<'_>, i: &Interaction, message: &Value) -> UrlResponse {
    match i.source {
        Source::Command => UrlResponse::json(200, message),
        // A modal closes on the empty answer; what the person must know goes to the
        // response URL of the message the modal was opened from.
        Source::Button | Source::Modal => {
            if let Some(url) = &i.caller.response_url {
                if let Err(e) = deps.slack.respond(url, message).await {
                    warn!(error = %e, "could not answer through response_url");
                }
            }
            UrlResponse::ack()
        }
    }
}

async fn open_note_modal(deps: &Deps<'_>, i: &Interaction, key: &str) -> UrlResponse {
    let Some(trigger) = i.caller.trigger_id.as_deref() else {
        return answer(
            deps,
            i,
            &ephemeral(
                "Slack sent no trigger to open the note dialog; use `/incident note <key> <text>`.",
            ),
        )
        .await;
    };
    let metadata = NoteModalMetadata {
        key: key.to_string(),
        channel_id: i.caller.channel_id.clone(),
        message_ts: i.caller.message_ts.clone(),
        response_url: i.caller.response_url.as_ref().map(|u| u.expose().clone()),
    };
    // The incident's title above the input; the key when the record cannot be read.
    let title = match deps.incidents.incident(key).await {
        Ok(Some(r)) => r.title,
        _ => key.to_string(),
    };
    let opened = match deps.credentials.bot_token().await {
        Ok(token) => deps
            .slack
            .open_view(&token, trigger, &views::note_modal(&metadata, &title))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match opened {
        Ok(()) => UrlResponse::ack(),
        Err(e) => {
            warn!(error = %e, "could not open the note dialog");
            answer(
                deps,
                i,
                &ephemeral("Could not open the note dialog; use `/incident note <key> <text>`."),
            )
            .await
        }
    }
}

fn job_of(i: &Interaction, request_id: &str, now: DateTime<Utc>) -> Option<Job> {
    let (action, key, text, impact) = match &i.request {
        Request::Acknowledge { key } => (JobAction::Acknowledge, Some(key), None, None),
        Request::Resolve { key } => (JobAction::Resolve, Some(key), None, None),
        Request::Rerun { key } => (JobAction::Rerun, Some(key), None, None),
        Request::AddNote { key, text } => (JobAction::Note, Some(key), Some(text.clone()), None),
        Request::Declare { title, impact } => {
            (JobAction::Declare, None, Some(title.clone()), *impact)
        }
        Request::Unsilence { id } => (JobAction::Unsilence, None, Some(id.clone()), None),
        _ => return None,
    };
    Some(Job {
        id: Some(request_id.to_string()),
        action,
        incident_key: key.cloned(),
        actor: i.caller.actor(),
        team: i.caller.channel_id.clone(),
        text,
        silence: None,
        impact,
        response_url: i.caller.response_url.clone(),
        requested_at: now,
    })
}

async fn queue_change(deps: &Deps<'_>, i: &Interaction, request_id: &str) -> UrlResponse {
    let now = deps.effects.clock.now();
    let Some(job) = job_of(i, request_id, now) else {
        return answer(deps, i, &ephemeral(interaction::USAGE)).await;
    };
    queue_job(deps, i, job).await
}

async fn queue_job(deps: &Deps<'_>, i: &Interaction, job: Job) -> UrlResponse {
    match deps.queue.send(&job).await {
        Ok(id) => {
            info!(message_id = %id, job = job.action.as_str(), "change queued");
            answer(deps, i, &reply(views::on_it(doing(job.action)))).await
        }
        Err(e) => {
            error!(error = %e, "could not queue the change");
            answer(
                deps,
                i,
                &ephemeral(
                    "Could not take the request right now; nothing changed. Try again in a moment.",
                ),
            )
            .await
        }
    }
}

/// What a job does, as the person is told ("On it: taking ownership").
fn doing(action: JobAction) -> &'static str {
    match action {
        JobAction::Acknowledge => "taking ownership",
        JobAction::Resolve => "resolving the incident",
        JobAction::Rerun => "starting the diagnosis again",
        JobAction::Note => "adding your note",
        JobAction::Declare => "declaring the incident",
        JobAction::Silence => "setting the silence",
        JobAction::Unsilence => "ending the silence",
    }
}

// ------------------------------------------------------------------ SQS worker

/// Does each queued change; reports the ones that failed. `invocation` gives the
/// deadline; each job writes under its own id.
pub async fn handle_batch(
    deps: &Deps<'_>,
    batch: &SqsEvent,
    place: &Place,
    invocation: &Owner,
) -> BatchResponse {
    let mut out = BatchResponse::default();
    for record in &batch.records {
        let span = info_span!("job", message_id = %record.message_id);
        if !run_record(deps, record, place, invocation)
            .instrument(span)
            .await
        {
            out.batch_item_failures.push(ItemFailure {
                item_identifier: record.message_id.clone(),
            });
        }
    }
    out
}

/// `true` when the job is done (or refused: a refusal is an answer, not a failure).
async fn run_record(
    deps: &Deps<'_>,
    record: &SqsRecord,
    place: &Place,
    invocation: &Owner,
) -> bool {
    let job: Job = match serde_json::from_str(&record.body) {
        Ok(j) => j,
        Err(e) => {
            error!(error = %e, "queue message is not a job; it goes to the dead-letter queue");
            return false;
        }
    };
    let owner = Owner::new(
        job.id.clone().unwrap_or_else(|| record.message_id.clone()),
        invocation.deadline(),
    );
    let key_for_log = job.incident_key.clone().unwrap_or_default();
    let span = info_span!("change", incident = %key_for_log, job = job.action.as_str());
    async {
        match run_job(deps, &owner, &job, place).await {
            Ok(reply) => {
                tell(deps, job.response_url.as_ref(), &reply).await;
                true
            }
            Err(e) => {
                let last = !e.retryable() || record.receive_count() >= MAX_RECEIVES;
                error!(error = %e, kind = e.lambda_error_type(), receive_count = record.receive_count(), "change failed");
                if last {
                    tell(deps, job.response_url.as_ref(), "Sorry, that did not work; the on-call engineers have been told (the request is in the dead-letter queue).").await;
                }
                false
            }
        }
    }
    .instrument(span)
    .await
}

async fn tell(deps: &Deps<'_>, url: Option<&Secret<String>>, text: &str) {
    if let Some(url) = url {
        if let Err(e) = deps.slack.respond(url, &ephemeral(text)).await {
            warn!(error = %e, "could not post the outcome to response_url");
        }
    }
}

/// Runs one job as `owner` (the job's id); `Ok(reply)` is what the person is told (the
/// change's reply or the refusal).
pub async fn run_job(
    deps: &Deps<'_>,
    owner: &Owner,
    job: &Job,
    place: &Place,
) -> Result<String, EffectError> {
    let who = job.actor.clone();
    let team = job.team.clone();
    // Defence in depth: the worker works out the person's account scope itself (the
    // request path checked it too) and checks the incident it is about to change.
    let reach = match job_scope(deps, job).await {
        Ok(s) => s,
        Err(text) => return Ok(text),
    };
    let org = deps.config.org.as_ref();
    let outcome = match job.action {
        JobAction::Silence => return set_silence(deps, job, &reach).await,
        JobAction::Unsilence => return lift_silence(deps, job, &reach).await,
        JobAction::Declare => {
            let title = job.text.clone().unwrap_or_default();
            // The key comes from the request time, so a retried job finds its incident.
            let key = respond::declared_key(&title, job.requested_at);
            let impact = job.impact.unwrap_or(DECLARE_DEFAULT_IMPACT);
            let policy = deps.config.escalation.as_ref();
            apply_change(&deps.effects, owner, &key, |r, now| {
                respond::ensure_no_open(r)?;
                respond::declare(
                    &title,
                    &who,
                    team.as_deref(),
                    impact,
                    &place.account,
                    &place.region,
                    now,
                    policy,
                )
            })
            .await?
        }
        action => {
            let key = job.incident_key.clone().unwrap_or_default();
            let text = job.text.clone().unwrap_or_default();
            apply_change(&deps.effects, owner, &key, |r, now| {
                let r = respond::existing(r)?;
                scope::check_incident(org, &reach, r)
                    .map_err(|m| Refusal::new(RefusalKind::OutOfScope, m))?;
                match action {
                    JobAction::Acknowledge => respond::acknowledge(r, &who, team.as_deref(), now),
                    JobAction::Resolve => respond::resolve(r, &who, now),
                    JobAction::Rerun => respond::rerun_diagnosis(r, &who, now),
                    _ => respond::add_note(r, &who, &text, now),
                }
            })
            .await?
        }
    };
    Ok(match outcome {
        ChangeOutcome::Applied { reply, .. } => {
            info!("change applied");
            reply
        }
        ChangeOutcome::Repeated { .. } => {
            info!("the job was done by an earlier delivery; nothing applied twice");
            format!(
                "Done ({}). Your request arrived twice; it was carried out once.",
                doing(job.action)
            )
        }
        ChangeOutcome::Refused(r) => {
            info!(reason = ?r.kind, "change refused");
            r.message
        }
    })
}

/// The account scope of the job's person for its action: every account when the
/// policy has no `scopes` (nothing is read), else worked out from the policy and the
/// person's groups now. `Err(answer)`: refused (not a person) or memberships
/// unreadable; nothing changes and the person is told.
async fn job_scope<'d>(deps: &Deps<'d>, job: &Job) -> Result<Scope<'d>, String> {
    let action = match job.action {
        JobAction::Declare => return Ok(Scope::All),
        JobAction::Acknowledge => Action::Acknowledge,
        JobAction::Resolve => Action::Resolve,
        JobAction::Rerun => Action::Rerun,
        JobAction::Note => Action::Note,
        JobAction::Silence | JobAction::Unsilence => Action::Silence,
    };
    if !deps.config.policy.is_scoped() {
        return Ok(Scope::All);
    }
    let Actor::Person { id, .. } = &job.actor else {
        warn!("a queued change without a person under an account-scoped policy; refused");
        return Err("That change names no Slack user; nothing changed.".into());
    };
    match person_access(deps, id, action).await {
        Ok(a) => Ok(a.scope),
        Err(()) => Err(format!("{} Nothing changed.", scope::CANNOT_CHECK)),
    }
}

// ------------------------------------------------------------------ silences

fn silence_state_error(e: shared::state::StateError) -> EffectError {
    EffectError::State(e)
}

fn when_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Adds the silence (its id comes from the request, so a retried job finds it) and
/// sets the timer at its end.
async fn set_silence(deps: &Deps<'_>, job: &Job, reach: &Scope<'_>) -> Result<String, EffectError> {
    let Some(spec) = &job.silence else {
        return Ok("That silence request was incomplete; nothing changed.".into());
    };
    let org = deps.config.org.as_ref();
    if let Err(text) = scope::check_silence_target(org, reach, deps.incidents, &spec.target).await {
        return Ok(text);
    }
    let now = deps.effects.clock.now();
    let silence = Silence {
        id: silence_id(&spec.target, &job.actor, job.requested_at),
        target: spec.target.clone(),
        created_by: job.actor.clone(),
        created_at: job.requested_at.min(now),
        ends_at: job.requested_at + chrono::Duration::minutes(spec.minutes),
        reason: spec.reason.clone(),
        lifted: None,
        held: vec![],
        held_count: 0,
        // A scoped person's silence holds their accounts' alarms only.
        accounts: scope::silence_accounts(org, reach),
    };
    let attempts = deps.effects.settings.attempts;
    let stored = update_silences(deps.silences, now, attempts, |book| {
        let before = book.clone();
        let s = book.add(silence.clone(), now)?.clone();
        Ok::<_, SilenceRefusal>((s, *book != before))
    })
    .await
    .map_err(silence_state_error)?;
    let s = match stored {
        Ok(s) => s,
        Err(refusal) => return Ok(refusal.to_string()),
    };
    let timer_note = match (deps.hold_timer, deps.config.hold_timer.as_ref()) {
        (Some(timer), Some(c)) => {
            let target = c.target_arn.as_deref().unwrap_or_default();
            timer
                .sweep_at(
                    target,
                    &silence_end_name(&s.id),
                    fire_at(s.ends_at, now),
                    &format!("silence {} ended", s.id),
                )
                .await
                .map_err(EffectError::Timer)?;
            ""
        }
        _ => " (no timer is configured: the scheduled sweep applies what it held back)",
    };
    info!(silence = %s.id, target = %s.target.describe(), until = %s.ends_at, "silence set");
    Ok(format!(
        "🔕 Silenced {} until {} (`{}`{}). Matching alarms are recorded but page nobody; if one still fires when the silence ends, its incident opens then{}. `/incident unsilence {}` ends it early.",
        s.target.describe(),
        when_text(s.ends_at),
        s.id,
        s.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default(),
        timer_note,
        s.id
    ))
}

/// Ends the silence now; what it held back is applied by the sweep a minute later.
async fn lift_silence(
    deps: &Deps<'_>,
    job: &Job,
    reach: &Scope<'_>,
) -> Result<String, EffectError> {
    let id = job.text.clone().unwrap_or_default();
    if *reach != Scope::All {
        let book = deps
            .silences
            .silences()
            .await
            .map_err(silence_state_error)?;
        if let Some(s) = book.get(&id) {
            if let Err(text) = scope::check_lift(deps.config.org.as_ref(), reach, s) {
                return Ok(text);
            }
        }
    }
    let now = deps.effects.clock.now();
    let attempts = deps.effects.settings.attempts;
    let lifted = update_silences(deps.silences, now, attempts, |book| {
        let before = book.clone();
        let s = book.lift(&id, &job.actor, now)?.clone();
        Ok::<_, SilenceRefusal>((s, *book != before))
    })
    .await
    .map_err(silence_state_error)?;
    let s = match lifted {
        Ok(s) => s,
        Err(refusal) => return Ok(refusal.to_string()),
    };
    if let (Some(timer), Some(c)) = (deps.hold_timer, deps.config.hold_timer.as_ref()) {
        let target = c.target_arn.as_deref().unwrap_or_default();
        timer
            .sweep_at(
                target,
                &silence_lifted_name(&s.id),
                now + LEAD,
                &format!("silence {} lifted", s.id),
            )
            .await
            .map_err(EffectError::Timer)?;
        timer
            .cancel(&silence_end_name(&s.id))
            .await
            .map_err(EffectError::Timer)?;
    }
    info!(silence = %s.id, "silence lifted");
    Ok(format!(
        "🔔 Silence `{}` ({}) ended. What it held back and still fires opens within a couple of minutes ({} transition(s) held back).",
        s.id,
        s.target.describe(),
        s.held_count
    ))
}

// ------------------------------------------------------------------ escalation

async fn handle_escalation(
    deps: &Deps<'_>,
    e: &EscalationEvent,
    invocation: &Owner,
) -> Result<Value, HandlerError> {
    let span = info_span!("escalation", incident = %e.incident_key, attempt = e.attempt);
    async {
        let policy = deps
            .config
            .escalation
            .as_ref()
            .ok_or(HandlerError::EscalationOff)?;
        let outcome = apply_change(&deps.effects, invocation, &e.incident_key, |r, now| {
            respond::escalation_fired(respond::existing(r)?, e.attempt, now, policy)
        })
        .await
        .map_err(|source| HandlerError::Escalation {
            key: e.incident_key.clone(),
            attempt: e.attempt,
            source,
        })?;
        let (changed, note) = match outcome {
            ChangeOutcome::Applied { changed, reply, .. } => (changed, reply),
            ChangeOutcome::Repeated { .. } => (false, "handled by an earlier attempt".into()),
            ChangeOutcome::Refused(r) => (false, r.message),
        };
        info!(escalated = changed, outcome = %note, "escalation timer handled");
        Ok(json!({"escalated": changed, "outcome": note}))
    }
    .instrument(span)
    .await
}
