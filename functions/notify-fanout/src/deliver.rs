//! Delivery of one SNS message to one destination, exactly once as far as Slack and
//! the state table allow.
//!
//! 1. Claim `delivery#<message id>#<destination>`. Already `done`: skip (a retry
//!    after a partial failure). `posted`: only the top-level edit is left. Claimed by
//!    a live invocation: fail, retryable.
//! 2. Webhook: post, naming the incident (webhooks cannot thread).
//!    Bot, no incident key (events, text): post top-level.
//!    Bot with an incident key: the first message for the key claims
//!    `thread#<key>#<destination>` and is posted top-level; later messages reply in
//!    its thread, then the top-level message is edited (`chat.update`) to show the
//!    current state. A new incident on a key whose thread is resolved starts a new
//!    thread.
//! 3. Record `done` (or release the claim when nothing was posted, so the retry can
//!    post at once).
//!
//! The thread record also keeps the incident's milestones (detected, first posted,
//! first diagnosis delivered), from which the resolved reply and card render the
//! closing summary.

use chrono::Utc;
use shared::error::Retryable;
use shared::error::Secret;
use shared::incident::Impact;
use shared::slack::{
    render, Destination, Inbound, Milestones, Mode, RenderOptions, RouteFacts, Target, ThreadIntent,
};
use tracing::{info, instrument, warn};

use crate::slack_api::{Budget, PostTo, SlackClient, SlackError, MIN_ATTEMPT};
use crate::store::{
    delivery_key, thread_key, Claim, DeliveryRecord, DeliveryStatus, PostedThread, StateStore,
    StoreError, ThreadGuard, ThreadRecord,
};

/// How long to wait for another invocation that is posting a thread's first message.
const THREAD_WAIT: std::time::Duration = std::time::Duration::from_millis(400);
/// Rounds of read, wait and claim before giving up on a busy thread.
const THREAD_ROUNDS: usize = 8;

/// What a delivery needs besides the message.
pub struct Ctx<'a> {
    pub slack: &'a SlackClient,
    pub store: &'a dyn StateStore,
    pub budget: Budget,
    /// `MENTION_MIN_IMPACT`: default threshold of destinations with a mention.
    pub mention_min_impact: Option<Impact>,
}

/// One message for one destination.
pub struct Job<'a> {
    pub message_id: &'a str,
    pub inbound: &'a Inbound,
    pub facts: &'a RouteFacts,
    pub destination: &'a Destination,
}

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A message of its own (webhook, or a bot message without a thread).
    Posted,
    /// The first message of an incident's thread.
    StartedThread,
    /// A reply in the incident's thread (and the top-level message edited).
    Replied,
    /// Delivered by an earlier attempt: nothing posted.
    AlreadyDelivered,
}

/// Why a delivery failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Slack(#[from] SlackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another invocation is delivering this message to this destination")]
    InProgress,
    #[error("another invocation is still posting the first message of this incident's thread")]
    ThreadBusy,
}

impl Retryable for DeliveryError {
    fn retryable(&self) -> bool {
        match self {
            DeliveryError::Slack(e) => e.retryable(),
            DeliveryError::Store(e) => e.retryable(),
            DeliveryError::InProgress | DeliveryError::ThreadBusy => true,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            DeliveryError::Slack(e) => e.kind(),
            DeliveryError::Store(e) => e.kind(),
            DeliveryError::InProgress | DeliveryError::ThreadBusy => "DeliveryInProgress",
        }
    }
}

impl DeliveryError {
    /// True when Slack refused the destination's credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self, DeliveryError::Slack(e) if e.is_auth())
    }
}

fn now() -> i64 {
    Utc::now().timestamp()
}

fn done() -> DeliveryRecord {
    DeliveryRecord {
        status: DeliveryStatus::Done,
        lease_until: 0,
        channel: None,
        thread_ts: None,
    }
}

/// Delivers `job`, at most once per SNS message and destination.
#[instrument(skip_all, fields(destination = %job.destination.name, target = if job.destination.is_bot() { "bot" } else { "webhook" }))]
pub async fn deliver(ctx: &Ctx<'_>, job: &Job<'_>) -> Result<Outcome, DeliveryError> {
    let pk = delivery_key(job.message_id, &job.destination.name);
    match ctx
        .store
        .claim_delivery(&pk, now(), ctx.budget.lease_until())
        .await?
    {
        Claim::Won => {}
        Claim::Taken(record) => match record.status {
            DeliveryStatus::Done => {
                info!("already delivered by an earlier attempt, skipped");
                return Ok(Outcome::AlreadyDelivered);
            }
            DeliveryStatus::Posted => return resume(ctx, job, &pk, &record).await,
            DeliveryStatus::Sending => return Err(DeliveryError::InProgress),
        },
    }
    let result = send(ctx, job, &pk).await;
    match &result {
        Ok(outcome) => {
            ctx.store.put_delivery(&pk, &done(), now()).await?;
            info!(outcome = ?outcome, "delivered");
        }
        Err(e) => {
            // Nothing (or only the reply, recorded as `posted`) went out: free the
            // claim so the retry does not wait for the lease.
            if let Err(release) = ctx.store.release_delivery(&pk).await {
                warn!(error = %release, "could not release the delivery claim");
            }
            warn!(error = %e, retryable = e.retryable(), "delivery failed");
        }
    }
    result
}

fn mention<'a>(job: &'a Job<'_>, ctx: &Ctx<'_>) -> Option<&'a shared::slack::Mention> {
    job.destination
        .mention_for(job.facts, ctx.mention_min_impact)
}

async fn send(ctx: &Ctx<'_>, job: &Job<'_>, pk: &str) -> Result<Outcome, DeliveryError> {
    match &job.destination.target {
        Target::Webhook { url } => {
            let opts = RenderOptions {
                mode: Mode::Post,
                mention: mention(job, ctx),
                webhook: true,
                thread_started_at: None,
                milestones: None,
                actions: false,
            };
            ctx.slack
                .post_webhook(url, &render(job.inbound, &opts), &ctx.budget)
                .await?;
            Ok(Outcome::Posted)
        }
        Target::Bot { token, channel } => match job.inbound.thread() {
            None => {
                let opts = RenderOptions {
                    mode: Mode::Post,
                    mention: mention(job, ctx),
                    ..Default::default()
                };
                let to = PostTo {
                    channel,
                    thread_ts: None,
                    broadcast: false,
                };
                let posted = ctx
                    .slack
                    .post_message(token, to, &render(job.inbound, &opts), &ctx.budget)
                    .await?;
                info!(channel = %posted.channel, ts = %posted.ts, "posted");
                Ok(Outcome::Posted)
            }
            Some(intent) => threaded(ctx, job, token, channel, &intent, pk).await,
        },
    }
}

async fn threaded(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    token: &Secret<String>,
    channel: &str,
    intent: &ThreadIntent,
    pk: &str,
) -> Result<Outcome, DeliveryError> {
    let tpk = thread_key(&intent.key, &job.destination.name);
    let lease = ctx.budget.lease_until();
    for _ in 0..THREAD_ROUNDS {
        let now = now();
        let replace = match ctx.store.get_thread(&tpk).await? {
            Some(ThreadRecord {
                posted: Some(t), ..
            }) if !(t.resolved && intent.starts) => {
                return reply(ctx, job, token, &t, intent, pk, &tpk).await;
            }
            // The incident was resolved and this message opens a new one: new thread.
            Some(ThreadRecord {
                posted: Some(t), ..
            }) => Some(t.ts),
            Some(ThreadRecord {
                posted: None,
                lease_until,
            }) if lease_until >= now => {
                if ctx.budget.remaining() < THREAD_WAIT + MIN_ATTEMPT {
                    break;
                }
                info!("thread is being started by another invocation, waiting");
                tokio::time::sleep(THREAD_WAIT).await;
                continue;
            }
            // No thread, or a claim whose invocation died.
            _ => None,
        };
        match ctx
            .store
            .claim_thread(&tpk, now, lease, replace.as_deref())
            .await?
        {
            Claim::Won => return start_thread(ctx, job, token, channel, intent, &tpk, lease).await,
            Claim::Taken(_) => continue,
        }
    }
    Err(DeliveryError::ThreadBusy)
}

async fn start_thread(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    token: &Secret<String>,
    channel: &str,
    intent: &ThreadIntent,
    tpk: &str,
    lease: i64,
) -> Result<Outcome, DeliveryError> {
    let opts = RenderOptions {
        mode: Mode::Post,
        mention: mention(job, ctx),
        actions: job.destination.offers_actions(),
        ..Default::default()
    };
    let to = PostTo {
        channel,
        thread_ts: None,
        broadcast: false,
    };
    let posted = match ctx
        .slack
        .post_message(token, to, &render(job.inbound, &opts), &ctx.budget)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            if let Err(release) = ctx.store.release_thread(tpk, lease).await {
                warn!(error = %release, "could not release the thread claim");
            }
            return Err(e.into());
        }
    };
    let posted_at = Utc::now();
    let thread = PostedThread {
        channel: posted.channel,
        ts: posted.ts,
        opened_at: intent.at,
        updated_at: intent.at,
        resolved: intent.resolves,
        milestones: Milestones {
            detected_at: intent.starts.then_some(intent.at),
            notified_at: Some(posted_at),
            diagnosed_at: is_diagnosis(job).then_some(posted_at),
        },
    };
    if !ctx
        .store
        .put_thread(tpk, &thread, &ThreadGuard::OwnClaim(lease), now())
        .await?
    {
        warn!("thread claim was taken over while posting the first message");
    }
    info!(channel = %thread.channel, ts = %thread.ts, "started the incident's thread");
    Ok(Outcome::StartedThread)
}

fn is_diagnosis(job: &Job<'_>) -> bool {
    job.facts.event_type == "diagnosed"
}

/// `thread` with this delivery's milestone added (the first diagnosis delivered,
/// now), or `None` when it adds none.
fn stamped(thread: &PostedThread, job: &Job<'_>) -> Option<PostedThread> {
    if !is_diagnosis(job) || thread.milestones.diagnosed_at.is_some() {
        return None;
    }
    let mut t = thread.clone();
    t.milestones.diagnosed_at = Some(Utc::now());
    Some(t)
}

async fn reply(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    token: &Secret<String>,
    thread: &PostedThread,
    intent: &ThreadIntent,
    pk: &str,
    tpk: &str,
) -> Result<Outcome, DeliveryError> {
    let opts = RenderOptions {
        mode: Mode::Reply,
        mention: mention(job, ctx),
        webhook: false,
        thread_started_at: Some(thread.opened_at),
        milestones: Some(thread.milestones),
        actions: false,
    };
    // Escalations and unanswered re-notifications also show in the channel: they
    // may carry the mention.
    let to = PostTo {
        channel: &thread.channel,
        thread_ts: Some(&thread.ts),
        broadcast: matches!(job.facts.event_type.as_str(), "escalated" | "unanswered"),
    };
    let posted = ctx
        .slack
        .post_message(token, to, &render(job.inbound, &opts), &ctx.budget)
        .await?;
    info!(thread_ts = %thread.ts, ts = %posted.ts, "replied in the incident's thread");
    let record = DeliveryRecord {
        status: DeliveryStatus::Posted,
        lease_until: 0,
        channel: Some(thread.channel.clone()),
        thread_ts: Some(thread.ts.clone()),
    };
    ctx.store.put_delivery(pk, &record, now()).await?;
    update_top_level(ctx, job, token, thread, intent, tpk).await?;
    Ok(Outcome::Replied)
}

/// Edits the thread's top-level message to show the state after this message, and
/// records the milestone this message adds.
async fn update_top_level(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    token: &Secret<String>,
    stored: &PostedThread,
    intent: &ThreadIntent,
    tpk: &str,
) -> Result<(), DeliveryError> {
    let stamp = stamped(stored, job);
    let thread = stamp.as_ref().unwrap_or(stored);
    // Messages arrive out of order: never show an older state, nor reopen a
    // resolved incident with a late update (a new incident starts a new thread).
    // The resolution is the incident's last state whatever its time: it may come
    // from an alarm whose state changed before another alarm's later update (an
    // alarm storm showed the top-level message left OPEN after the resolution).
    let resolves_now = intent.resolves && !thread.resolved;
    if (intent.at < thread.updated_at && !resolves_now) || (thread.resolved && !intent.resolves) {
        info!("top-level message already shows a newer state, left as is");
        if stamp.is_some() {
            save_thread(ctx, tpk, thread).await?;
        }
        return Ok(());
    }
    let opts = RenderOptions {
        mode: Mode::Card,
        mention: None,
        webhook: false,
        thread_started_at: Some(thread.opened_at),
        milestones: Some(thread.milestones),
        actions: job.destination.offers_actions(),
    };
    match ctx
        .slack
        .update_message(
            token,
            &thread.channel,
            &thread.ts,
            &render(job.inbound, &opts),
            &ctx.budget,
        )
        .await
    {
        Ok(()) => info!(ts = %thread.ts, "top-level message updated"),
        Err(e) if e.retryable() => return Err(e.into()),
        // e.g. message_not_found (deleted by someone), cant_update_message: the reply
        // is in the thread; nothing a retry could fix.
        Err(e) => warn!(error = %e, "top-level message could not be edited"),
    }
    let updated = PostedThread {
        updated_at: intent.at,
        resolved: intent.resolves,
        ..thread.clone()
    };
    save_thread(ctx, tpk, &updated).await
}

/// Writes the thread record back, unless the thread was replaced meanwhile.
async fn save_thread(ctx: &Ctx<'_>, tpk: &str, thread: &PostedThread) -> Result<(), DeliveryError> {
    if !ctx
        .store
        .put_thread(
            tpk,
            thread,
            &ThreadGuard::SameThread(thread.ts.clone()),
            now(),
        )
        .await?
    {
        info!("thread was replaced meanwhile; its record is left to the newer thread");
    }
    Ok(())
}

/// The reply went out on an earlier attempt; only the top-level edit is left.
async fn resume(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    pk: &str,
    record: &DeliveryRecord,
) -> Result<Outcome, DeliveryError> {
    info!("reply was posted by an earlier attempt; finishing the top-level update");
    if let (Some(intent), Target::Bot { token, .. }) =
        (job.inbound.thread(), &job.destination.target)
    {
        let tpk = thread_key(&intent.key, &job.destination.name);
        match ctx.store.get_thread(&tpk).await? {
            Some(ThreadRecord {
                posted: Some(t), ..
            }) if Some(&t.ts) == record.thread_ts.as_ref() => {
                update_top_level(ctx, job, token, &t, &intent, &tpk).await?;
            }
            _ => info!("the thread changed since; top-level update skipped"),
        }
    }
    ctx.store.put_delivery(pk, &done(), now()).await?;
    Ok(Outcome::Replied)
}
