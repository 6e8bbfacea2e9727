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
//!
//! Order: a notification naming its incident (the backend reference) goes to that
//! incident's own thread, so the incident has one top-level message whatever order its
//! notifications arrive in (SNS to Lambda does not keep order; a retried delivery
//! arrives minutes late): a `resolved` before its `opened` starts the thread, and the
//! late `opened` replies in it without reopening the top-level message. Messages that
//! name no incident keep the rule "a resolved thread and an opening message: new
//! thread" on the key's thread, which points at the newest incident's thread.
//!
//! Lost answers: every claim and record names the invocation (its owner token, the
//! Lambda request id), so a claim whose answer was lost, or left by an earlier attempt
//! of the same request, is this invocation's own and it goes on ([`crate::store`]). A
//! message is keyed by its notification id when it has one (the same for every
//! publication of one notification), so a notification published again after a lost
//! answer is delivered once. After a Slack post succeeded, recording it is tried a few
//! more times within the budget: a post whose record is lost would be posted again.
//!
//! Rate: every Slack call waits for its channel's send slot ([`crate::pace`]). An
//! `updated` notification (no mention) arriving within [`COALESCE_WINDOW`] of the
//! thread's last reply is not posted as a reply of its own: it is coalesced into the
//! top-level message, which shows the incident's current state. One Slack call
//! instead of two, nothing dropped.

use chrono::Utc;
use shared::error::Retryable;
use shared::error::Secret;
use shared::incident::Impact;
use shared::slack::{
    render, Destination, Inbound, Milestones, Mode, RenderOptions, RouteFacts, SnsMessage, Target,
    ThreadIntent,
};
use shared::state::Owner;
use tracing::{info, instrument, warn};

use crate::pace::wait_for_slot;
use crate::slack_api::{Budget, PostTo, SlackClient, SlackError, MIN_ATTEMPT};
use crate::store::{
    delivery_key, incident_thread_key, thread_key, Claim, DeliveryRecord, DeliveryStatus,
    PostedThread, StateStore, StoreError, ThreadGuard, ThreadRecord, ThreadWrite,
};

/// How long to wait for another invocation that is posting a thread's first message.
const THREAD_WAIT: std::time::Duration = std::time::Duration::from_millis(400);
/// Rounds of read, wait and claim before giving up on a busy thread: as long as a
/// claim can be held (its holder's 60 s timeout); the budget usually ends it first.
const THREAD_ROUNDS: usize = 150;
/// Rounds of edit and guarded save of a thread's top-level message before giving up
/// (each lost round means another invocation saved a newer state meanwhile).
const TOP_ROUNDS: usize = 8;
/// Waits before each further attempt to record a Slack post that succeeded.
const RECORD_RETRIES: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(200),
    std::time::Duration::from_millis(600),
    std::time::Duration::from_millis(1500),
];
/// An `updated` notification this soon after the thread's last reply is coalesced
/// into the top-level message instead of being posted as a reply of its own.
pub const COALESCE_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// What a delivery needs besides the message.
pub struct Ctx<'a> {
    pub slack: &'a SlackClient,
    pub store: &'a dyn StateStore,
    pub budget: Budget,
    /// `MENTION_MIN_IMPACT`: default threshold of destinations with a mention.
    pub mention_min_impact: Option<Impact>,
    /// The invocation: its token names every claim and record it writes.
    pub owner: &'a Owner,
}

impl Ctx<'_> {
    fn owner(&self) -> &str {
        self.owner.token()
    }
}

/// One message for one destination.
pub struct Job<'a> {
    /// What the delivery record is keyed on: the notification's id when it has one
    /// (every publication of it the same), else the SNS message id.
    pub message_id: &'a str,
    /// The SNS message as received (kept on the thread record as what its top-level
    /// message shows).
    pub message: &'a str,
    /// The SNS topic it came from.
    pub topic_arn: &'a str,
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
    /// An update shown on the top-level message only, soon after another reply.
    Coalesced,
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
    #[error("the Slack channel has no free send slot before the deadline (next in about {wait_seconds} s): retry later")]
    ChannelBusy { wait_seconds: i64 },
}

impl Retryable for DeliveryError {
    fn retryable(&self) -> bool {
        match self {
            DeliveryError::Slack(e) => e.retryable(),
            DeliveryError::Store(e) => e.retryable(),
            DeliveryError::InProgress
            | DeliveryError::ThreadBusy
            | DeliveryError::ChannelBusy { .. } => true,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            DeliveryError::Slack(e) => e.kind(),
            DeliveryError::Store(e) => e.kind(),
            DeliveryError::InProgress | DeliveryError::ThreadBusy => "DeliveryInProgress",
            DeliveryError::ChannelBusy { .. } => "SlackChannelBusy",
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
    // A message for a thread reads the thread's item in the same round as its claim
    // (one DynamoDB round trip less on the way to Slack: bench/NOTES.md, issue 18).
    // Only a read: what it decides is still taken by the thread's conditional claim
    // or guarded save, and a read left unused (the claim was taken) changes nothing.
    let thread_item = thread_item_of(job);
    let read_thread = async {
        match &thread_item {
            Some(tpk) => Some(ctx.store.get_thread(tpk).await),
            None => None,
        }
    };
    let (claim, thread) = tokio::join!(
        ctx.store
            .claim_delivery(&pk, ctx.owner(), now(), ctx.budget.lease_until()),
        read_thread
    );
    match claim? {
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
    let result = send(ctx, job, &pk, thread).await;
    match &result {
        Ok(outcome) => {
            record_delivery(ctx, &pk, &done()).await?;
            info!(outcome = ?outcome, "delivered");
        }
        Err(e) => {
            // Nothing (or only the reply, recorded as `posted`) went out: free the
            // claim so the retry does not wait for the lease.
            if let Err(release) = ctx.store.release_delivery(&pk, ctx.owner()).await {
                warn!(error = %release, "could not release the delivery claim");
            }
            warn!(error = %e, retryable = e.retryable(), "delivery failed");
        }
    }
    result
}

/// Records a delivery after its Slack post succeeded. The record is what keeps a
/// retry from posting again, so a failure is tried again a few times while the budget
/// lasts (the write is idempotent) before it is given up.
async fn record_delivery(
    ctx: &Ctx<'_>,
    pk: &str,
    record: &DeliveryRecord,
) -> Result<(), DeliveryError> {
    let mut waits = RECORD_RETRIES.iter();
    loop {
        match ctx.store.put_delivery(pk, record, ctx.owner(), now()).await {
            Ok(()) => return Ok(()),
            Err(e) => match waits.next() {
                Some(wait) if e.retryable() && ctx.budget.remaining() > *wait + MIN_ATTEMPT => {
                    warn!(error = %e, "could not record the delivery after posting; trying again");
                    tokio::time::sleep(*wait).await;
                }
                _ => return Err(e.into()),
            },
        }
    }
}

/// Records the thread a top-level post started, with the same persistence as
/// [`record_delivery`]; `false` when the claim was no longer ours.
async fn record_thread(
    ctx: &Ctx<'_>,
    tpk: &str,
    thread: &PostedThread,
) -> Result<bool, DeliveryError> {
    let mut waits = RECORD_RETRIES.iter();
    loop {
        match ctx
            .store
            .put_thread(tpk, thread, &ThreadGuard::OwnClaim, ctx.owner(), now())
            .await
        {
            Ok(written) => return Ok(written.written()),
            Err(e) => match waits.next() {
                Some(wait) if e.retryable() && ctx.budget.remaining() > *wait + MIN_ATTEMPT => {
                    warn!(error = %e, "could not record the new thread after posting; trying again");
                    tokio::time::sleep(*wait).await;
                }
                _ => return Err(e.into()),
            },
        }
    }
}

fn mention<'a>(job: &'a Job<'_>, ctx: &Ctx<'_>) -> Option<&'a shared::slack::Mention> {
    job.destination
        .mention_for(job.facts, ctx.mention_min_impact)
}

/// A thread's item read ahead of [`threaded`]'s first round.
type ThreadRead = Option<Result<Option<ThreadRecord>, StoreError>>;

/// The thread item `job` goes to, if it is threaded (a bot destination and a message
/// of an incident).
fn thread_item_of(job: &Job<'_>) -> Option<String> {
    match &job.destination.target {
        Target::Bot { .. } => job.inbound.thread().map(|intent| thread_pk(job, &intent)),
        Target::Webhook { .. } => None,
    }
}

async fn send(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    pk: &str,
    thread: ThreadRead,
) -> Result<Outcome, DeliveryError> {
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
            wait_for_slot(ctx.store, job.destination, &ctx.budget, ctx.owner()).await?;
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
                wait_for_slot(ctx.store, job.destination, &ctx.budget, ctx.owner()).await?;
                let posted = ctx
                    .slack
                    .post_message(token, to, &render(job.inbound, &opts), &ctx.budget)
                    .await?;
                info!(channel = %posted.channel, ts = %posted.ts, "posted");
                Ok(Outcome::Posted)
            }
            Some(intent) => threaded(ctx, job, token, channel, &intent, pk, thread).await,
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
    mut read_ahead: ThreadRead,
) -> Result<Outcome, DeliveryError> {
    let incident = incident_ref(job.inbound);
    let tpk = thread_pk(job, intent);
    let lease = ctx.budget.lease_until();
    for _ in 0..THREAD_ROUNDS {
        let now = now();
        let read = match read_ahead.take() {
            Some(read) => read,
            None => ctx.store.get_thread(&tpk).await,
        };
        let replace = match read? {
            // An incident's own thread is its thread whatever the order of its
            // messages; on the key's thread, an opening message after a resolution is
            // a new incident.
            Some(ThreadRecord {
                posted: Some(t), ..
            }) if incident.is_some() || !(t.resolved && intent.starts) => {
                return reply(ctx, job, token, &t, intent, pk, &tpk).await;
            }
            // The incident was resolved and this message opens a new one: new thread.
            Some(ThreadRecord {
                posted: Some(t), ..
            }) => Some(t.ts),
            // Someone else's claim (an own one, left by an earlier attempt of this
            // request, is claimed again at once).
            Some(ThreadRecord {
                posted: None,
                lease_until,
                owner,
            }) if lease_until >= now && owner.as_deref() != Some(ctx.owner()) => {
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
            .claim_thread(&tpk, ctx.owner(), now, lease, replace.as_deref())
            .await?
        {
            Claim::Won => return start_thread(ctx, job, token, channel, intent, &tpk).await,
            Claim::Taken(_) => continue,
        }
    }
    Err(DeliveryError::ThreadBusy)
}

/// The incident a message names (its backend reference), if any.
fn incident_ref(inbound: &Inbound) -> Option<&str> {
    match inbound {
        Inbound::Incident(n) => n
            .incident_ref
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty()),
        _ => None,
    }
}

/// The thread item of a message: its incident's own thread when it names one, else
/// the key's thread.
fn thread_pk(job: &Job<'_>, intent: &ThreadIntent) -> String {
    match incident_ref(job.inbound) {
        Some(r) => incident_thread_key(&intent.key, &job.destination.name, r),
        None => thread_key(&intent.key, &job.destination.name),
    }
}

async fn start_thread(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    token: &Secret<String>,
    channel: &str,
    intent: &ThreadIntent,
    tpk: &str,
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
    let sent = async {
        wait_for_slot(ctx.store, job.destination, &ctx.budget, ctx.owner()).await?;
        Ok::<_, DeliveryError>(
            ctx.slack
                .post_message(token, to, &render(job.inbound, &opts), &ctx.budget)
                .await?,
        )
    };
    let posted = match sent.await {
        Ok(p) => p,
        Err(e) => {
            if let Err(release) = ctx.store.release_thread(tpk, ctx.owner()).await {
                warn!(error = %release, "could not release the thread claim");
            }
            return Err(e);
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
        incident_ref: incident_ref(job.inbound).map(str::to_string),
        replied_at: None,
        rev: 1,
        card: Some(job.message.to_string()),
    };
    if !record_thread(ctx, tpk, &thread).await? {
        warn!("thread claim was taken over while posting the first message");
    }
    info!(channel = %thread.channel, ts = %thread.ts, "started the incident's thread");
    if thread.incident_ref.is_some() {
        point_key_at(ctx, job, intent, &thread).await;
    }
    Ok(Outcome::StartedThread)
}

/// Points the key's thread item at this incident's new thread unless it already
/// points at a newer incident's, so messages naming no incident (a diagnosis run by
/// hand) reply in it. Best effort: the message is posted and recorded already.
async fn point_key_at(ctx: &Ctx<'_>, job: &Job<'_>, intent: &ThreadIntent, thread: &PostedThread) {
    let kpk = thread_key(&intent.key, &job.destination.name);
    match ctx
        .store
        .put_thread(
            &kpk,
            thread,
            &ThreadGuard::NotNewerThan(thread.opened_at),
            ctx.owner(),
            now(),
        )
        .await
    {
        Ok(ThreadWrite::Written) => {}
        Ok(ThreadWrite::Refused(_)) => {
            info!("the key's thread is a newer incident's; left as is")
        }
        Err(e) => warn!(error = %e, "could not point the key's thread at the incident's thread"),
    }
}

fn is_diagnosis(job: &Job<'_>) -> bool {
    job.facts.event_type == "diagnosed"
}

/// `thread` with this delivery's milestone added (the first diagnosis delivered,
/// now; or the detection, when the opening message arrives after the thread started),
/// or `None` when it adds none.
fn stamped(thread: &PostedThread, job: &Job<'_>, intent: &ThreadIntent) -> Option<PostedThread> {
    let diagnosis = is_diagnosis(job) && thread.milestones.diagnosed_at.is_none();
    let late_opening = intent.starts && thread.milestones.detected_at.is_none();
    if !diagnosis && !late_opening {
        return None;
    }
    let mut t = thread.clone();
    if diagnosis {
        t.milestones.diagnosed_at = Some(Utc::now());
    }
    if late_opening {
        t.milestones.detected_at = Some(intent.at);
        t.opened_at = t.opened_at.min(intent.at);
    }
    Some(t)
}

/// An `updated` notification without a mention, soon after the thread's last reply:
/// shown on the top-level message only.
fn coalesces(ctx: &Ctx<'_>, job: &Job<'_>, thread: &PostedThread) -> bool {
    job.facts.event_type == "updated"
        && mention(job, ctx).is_none()
        && thread.replied_at.is_some_and(|t| {
            Utc::now().signed_duration_since(t).num_milliseconds()
                < i64::try_from(COALESCE_WINDOW.as_millis()).unwrap_or(i64::MAX)
        })
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
    if coalesces(ctx, job, thread) {
        info!(thread_ts = %thread.ts, "update coalesced into the top-level message (a reply was posted moments ago)");
        update_top_level(ctx, job, token, thread, intent, tpk, None).await?;
        return Ok(Outcome::Coalesced);
    }
    // A late message of a resolved incident (its opening, delivered after the
    // resolution) is recorded in the thread but pings nobody.
    let late = thread.resolved && !intent.resolves;
    let opts = RenderOptions {
        mode: Mode::Reply,
        mention: mention(job, ctx).filter(|_| !late),
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
    wait_for_slot(ctx.store, job.destination, &ctx.budget, ctx.owner()).await?;
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
    record_delivery(ctx, pk, &record).await?;
    update_top_level(ctx, job, token, thread, intent, tpk, Some(Utc::now())).await?;
    Ok(Outcome::Replied)
}

/// Edits the thread's top-level message to show the state after this message, and
/// records the milestone this message adds and `replied` (the time of the reply it
/// just posted), on the thread record as read (`stored`, at its revision).
///
/// Concurrent deliveries of one incident race for the top-level message: the save of
/// the new state is guarded by the revision read, so of two edits only one saves
/// first; the other reads the record again. If the record now holds a newer state,
/// the edit this delivery made may have landed after the newer one's: the newer
/// state is shown again from the message kept on the record (`card`). The last
/// invocation to finish has always seen every saved state, so the top-level message
/// ends showing the newest.
async fn update_top_level(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    token: &Secret<String>,
    stored: &PostedThread,
    intent: &ThreadIntent,
    tpk: &str,
    replied: Option<chrono::DateTime<Utc>>,
) -> Result<(), DeliveryError> {
    let mut current = stored.clone();
    let mut edited = false;
    for _ in 0..TOP_ROUNDS {
        let mut thread = stamped(&current, job, intent).unwrap_or_else(|| current.clone());
        if let Some(at) = replied {
            thread.replied_at = thread.replied_at.max(Some(at));
        }
        // Messages arrive out of order: never show an older state, nor reopen a
        // resolved incident with a late update (a new incident starts a new thread).
        // The resolution is the incident's last state whatever its time: it may come
        // from an alarm whose state changed before another alarm's later update (an
        // alarm storm showed the top-level message left OPEN after the resolution).
        let resolves_now = intent.resolves && !thread.resolved;
        let older = (intent.at < thread.updated_at && !resolves_now)
            || (thread.resolved && !intent.resolves);
        let next = if older {
            if edited {
                // Our edit may have replaced the newer one: show the newer again.
                info!("a newer state was saved while this one was shown; showing it again");
                show_card(ctx, job, token, &thread).await?;
            } else {
                info!("top-level message already shows a newer state, left as is");
            }
            if thread == current {
                return Ok(());
            }
            thread
        } else {
            let opts = card_options(job, &thread);
            edit_top_level(ctx, job, token, &thread, &render(job.inbound, &opts)).await?;
            edited = true;
            PostedThread {
                updated_at: intent.at,
                resolved: intent.resolves,
                card: Some(job.message.to_string()),
                ..thread
            }
        };
        match save_thread(ctx, job, intent, tpk, next, current.rev).await? {
            None => return Ok(()),
            Some(now) => current = now,
        }
    }
    Err(DeliveryError::ThreadBusy)
}

fn card_options(job: &Job<'_>, thread: &PostedThread) -> RenderOptions<'static> {
    RenderOptions {
        mode: Mode::Card,
        mention: None,
        webhook: false,
        thread_started_at: Some(thread.opened_at),
        milestones: Some(thread.milestones),
        actions: job.destination.offers_actions(),
    }
}

/// `chat.update` of the thread's top-level message, paced.
async fn edit_top_level(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    token: &Secret<String>,
    thread: &PostedThread,
    message: &shared::slack::Message,
) -> Result<(), DeliveryError> {
    wait_for_slot(ctx.store, job.destination, &ctx.budget, ctx.owner()).await?;
    match ctx
        .slack
        .update_message(token, &thread.channel, &thread.ts, message, &ctx.budget)
        .await
    {
        Ok(()) => info!(ts = %thread.ts, "top-level message updated"),
        Err(e) if e.retryable() => return Err(e.into()),
        // e.g. message_not_found (deleted by someone), cant_update_message: the reply
        // is in the thread; nothing a retry could fix.
        Err(e) => warn!(error = %e, "top-level message could not be edited"),
    }
    Ok(())
}

/// Shows on the top-level message the state the thread record holds (its `card`).
async fn show_card(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    token: &Secret<String>,
    thread: &PostedThread,
) -> Result<(), DeliveryError> {
    let Some(card) = &thread.card else {
        warn!("the thread record keeps no message to show (written before it was kept)");
        return Ok(());
    };
    let inbound = Inbound::parse(SnsMessage {
        topic_arn: job.topic_arn,
        subject: None,
        message: card,
    });
    let opts = card_options(job, thread);
    edit_top_level(ctx, job, token, thread, &render(&inbound, &opts)).await
}

/// Writes the thread record (the next revision of `at_rev`), unless it changed since
/// it was read at `at_rev`: then `Some(the record as it is now)`. A thread replaced
/// meanwhile (another top-level message) is left to the newer thread: `None`. An
/// incident's own thread is also written to the key's thread item while that points at
/// it, so messages naming no incident see its current state.
async fn save_thread(
    ctx: &Ctx<'_>,
    job: &Job<'_>,
    intent: &ThreadIntent,
    tpk: &str,
    thread: PostedThread,
    at_rev: u64,
) -> Result<Option<PostedThread>, DeliveryError> {
    let thread = PostedThread {
        rev: at_rev + 1,
        ..thread
    };
    let guard = ThreadGuard::AtRev {
        ts: thread.ts.clone(),
        rev: at_rev,
    };
    match ctx
        .store
        .put_thread(tpk, &thread, &guard, ctx.owner(), now())
        .await?
    {
        ThreadWrite::Written => {}
        ThreadWrite::Refused(Some(record))
            if record.posted.as_ref().is_some_and(|p| p.ts == thread.ts) =>
        {
            let now = record.posted.unwrap_or(thread);
            info!(
                rev = now.rev,
                "the thread's record changed meanwhile; reading it again"
            );
            return Ok(Some(now));
        }
        ThreadWrite::Refused(_) => {
            info!("thread was replaced meanwhile; its record is left to the newer thread");
            return Ok(None);
        }
    }
    let kpk = thread_key(&intent.key, &job.destination.name);
    if kpk != tpk {
        // Best effort, as when the thread started: the incident's own item is saved.
        let same = ThreadGuard::SameThread(thread.ts.clone());
        if let Err(e) = ctx
            .store
            .put_thread(&kpk, &thread, &same, ctx.owner(), now())
            .await
        {
            warn!(error = %e, "could not update the key's thread item");
        }
    }
    Ok(None)
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
        let tpk = thread_pk(job, &intent);
        match ctx.store.get_thread(&tpk).await? {
            Some(ThreadRecord {
                posted: Some(t), ..
            }) if Some(&t.ts) == record.thread_ts.as_ref() => {
                update_top_level(ctx, job, token, &t, &intent, &tpk, None).await?;
            }
            _ => info!("the thread changed since; top-level update skipped"),
        }
    }
    record_delivery(ctx, pk, &done()).await?;
    Ok(Outcome::Replied)
}
