//! What notify-fanout remembers between invocations, in the stack's state table:
//! per SNS message and destination, the delivery (`delivery#<message id>#<destination>`),
//! and per incident key and destination, the Slack thread
//! (`thread#<incident key>#<destination>`). Items expire through `expires_at`.
//!
//! Both are claimed with a conditional put before anything is posted, so two
//! concurrent invocations never both post the same message or both start a thread
//! for one incident. A claim carries a lease (`lease_until`, the claiming
//! invocation's Lambda deadline): a claim whose lease has passed belongs to an
//! invocation that died, and may be taken over.
//!
//! Every write names its owner (`owner`: the invocation's Lambda request id, which
//! Lambda keeps across its retries; [`shared::state::Owner`]). A claim's condition
//! also accepts the owner's own claim, so the SDK's retry of a claim whose answer was
//! lost, and Lambda's retry of the same request, take it again instead of waiting for
//! themselves. A refused write answers with the item that refused it (ALL_OLD); after
//! an ambiguous failure (timeout, reset, 5xx) the item is read back; either way a
//! write that is the caller's own is taken as done ([`shared::error::is_ambiguous`]).
//! Releases delete only the owner's own claim.
//!
//! A notification naming its incident (the backend reference) has a thread of its
//! own incident (`thread#<incident key>#<destination>#<incident ref>`), whatever order
//! the incident's messages arrive in; the key's thread item then points at the newest
//! incident's thread, for messages that name no incident.
//!
//! Per channel, the next free Slack send slot (`pace#<channel>`, see
//! [`crate::pace`]) is reserved with a conditional put too, so concurrent invocations
//! share one channel's rate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use shared::error::{is_ambiguous, AwsError, Retryable};
use shared::slack::Milestones;
use tracing::info;

/// The key of a delivery record.
pub fn delivery_key(message_id: &str, destination: &str) -> String {
    format!("delivery#{}#{destination}", key_part(message_id))
}

/// The key of a thread record.
pub fn thread_key(incident_key: &str, destination: &str) -> String {
    format!("thread#{}#{destination}", key_part(incident_key))
}

/// The key of the thread of one incident (its backend reference) of `incident_key`.
pub fn incident_thread_key(incident_key: &str, destination: &str, incident_ref: &str) -> String {
    format!(
        "{}#{}",
        thread_key(incident_key, destination),
        key_part(incident_ref)
    )
}

/// The key of a channel's send slot: a bot destination's channel, or a webhook
/// destination (a webhook posts to one channel).
pub fn pace_key(channel: &str) -> String {
    format!("pace#{}", key_part(channel))
}

/// Longest key part kept as it is. DynamoDB limits a partition key to 2048 bytes;
/// incident keys and alarm ARNs are far shorter, but a key part is never trusted.
const MAX_KEY_PART: usize = 1024;

/// `s` itself, or when too long its start and a hash of the whole (FNV-1a 64), so
/// distinct long keys stay distinct.
fn key_part(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_KEY_PART {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = 960;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let hash = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    std::borrow::Cow::Owned(format!("{}~{hash:016x}", &s[..end]))
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Claimed; nothing posted yet (or the outcome is unknown).
    Sending,
    /// The thread reply is posted; the top-level message still has to be edited.
    Posted,
    /// Nothing left to do.
    Done,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Posted => "posted",
            DeliveryStatus::Done => "done",
        }
    }
}

/// A delivery of one SNS message to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub status: DeliveryStatus,
    /// Epoch seconds after which a `Sending` claim may be taken over.
    pub lease_until: i64,
    /// For `Posted`: the channel and top-level message of the thread replied to.
    pub channel: Option<String>,
    pub thread_ts: Option<String>,
}

/// A Slack thread of one incident in one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRecord {
    /// `None` while the top-level message is being posted (a claim).
    pub posted: Option<PostedThread>,
    pub lease_until: i64,
    /// The owner token of the invocation that wrote it (none on items written before
    /// owners were kept).
    pub owner: Option<String>,
}

/// The top-level message of a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedThread {
    /// Channel ID (from Slack's answer: `chat.update` needs the ID, not a name).
    pub channel: String,
    pub ts: String,
    /// When the incident (or alarm) started: for durations.
    pub opened_at: DateTime<Utc>,
    /// Time of the newest message shown on the top-level message.
    pub updated_at: DateTime<Utc>,
    pub resolved: bool,
    /// The incident's milestones for the closing summary. Optional attributes:
    /// items written before they were kept have none.
    pub milestones: Milestones,
    /// The incident (backend reference) whose thread this is, when known.
    pub incident_ref: Option<String>,
    /// When the last reply was posted in the thread (coalescing of updates).
    pub replied_at: Option<DateTime<Utc>>,
    /// The record's revision: every write of a thread's state is conditional on the
    /// one it read (`ThreadGuard::AtRev`). 0 on items written before revisions.
    pub rev: u64,
    /// The SNS message the top-level message shows now (the newest state), so an
    /// invocation whose edit raced a newer one's can show the newer state again.
    pub card: Option<String>,
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim<T> {
    /// We own the item now.
    Won,
    /// Someone else's item, as it is.
    Taken(T),
}

/// What a thread write must find to succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadGuard {
    /// Our own claim (after posting the top-level message).
    OwnClaim,
    /// The same thread (top-level `ts`) as when we read it.
    SameThread(String),
    /// The same thread, unchanged since we read it at revision `rev`.
    AtRev { ts: String, rev: u64 },
    /// No thread, or a posted one of an incident opened no later than this (the key's
    /// pointer to its newest incident's thread).
    NotNewerThan(DateTime<Utc>),
}

/// The outcome of a thread write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadWrite {
    Written,
    /// The guard did not hold; the record as it is (none: no item).
    Refused(Option<Box<ThreadRecord>>),
}

impl ThreadWrite {
    pub fn written(&self) -> bool {
        matches!(self, ThreadWrite::Written)
    }
}

/// A channel's send slot (epoch milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Reserved: send at this time (now or later).
    At(i64),
    /// Every slot until the caller's latest time is taken; this is the next free one.
    Full { next_free: i64 },
}

/// A failed state-table call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("state table item {pk:?} is malformed: {problem}")]
    Malformed { pk: String, problem: String },
    #[error("state table item {pk:?} changed under us ({expected})")]
    Conflict { pk: String, expected: &'static str },
}

impl Retryable for StoreError {
    fn retryable(&self) -> bool {
        match self {
            StoreError::Aws(e) => e.retryable(),
            StoreError::Malformed { .. } => false,
            StoreError::Conflict { .. } => true,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            StoreError::Aws(e) => e.kind(),
            StoreError::Malformed { .. } => "StateMalformed",
            StoreError::Conflict { .. } => "StateConflict",
        }
    }
}

/// The state notify-fanout keeps. `now` and leases are epoch seconds; `owner` is the
/// invocation's owner token.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Claims the delivery (new, a `Sending` claim whose lease has passed, or the
    /// owner's own `Sending` claim).
    async fn claim_delivery(
        &self,
        pk: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Claim<DeliveryRecord>, StoreError>;
    /// Writes the delivery record we own.
    async fn put_delivery(
        &self,
        pk: &str,
        record: &DeliveryRecord,
        owner: &str,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Deletes the owner's claim if it is still `Sending` (nothing was posted), so a
    /// retry can proceed at once.
    async fn release_delivery(&self, pk: &str, owner: &str) -> Result<(), StoreError>;

    /// The thread record, read consistently.
    async fn get_thread(&self, pk: &str) -> Result<Option<ThreadRecord>, StoreError>;
    /// Claims the thread: no record, a claim whose lease has passed, the owner's own
    /// claim, or (with `replace_resolved`) the resolved thread with that top-level `ts`.
    async fn claim_thread(
        &self,
        pk: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
        replace_resolved: Option<&str>,
    ) -> Result<Claim<ThreadRecord>, StoreError>;
    /// Writes a posted thread (at `thread.rev`) if `guard` holds.
    async fn put_thread(
        &self,
        pk: &str,
        thread: &PostedThread,
        guard: &ThreadGuard,
        owner: &str,
        now: i64,
    ) -> Result<ThreadWrite, StoreError>;
    /// Deletes the owner's thread claim (the top-level post failed).
    async fn release_thread(&self, pk: &str, owner: &str) -> Result<(), StoreError>;

    /// Reserves the channel's next send slot at or after `now_ms`, if it is no later
    /// than `not_after_ms`; slots are [`StateStore::channel_interval`] apart.
    async fn reserve_slot(
        &self,
        pk: &str,
        owner: &str,
        now_ms: i64,
        not_after_ms: i64,
    ) -> Result<Slot, StoreError>;
    /// The least time between two sends to one channel.
    fn channel_interval(&self) -> std::time::Duration;
}

/// [`StateStore`] on the DynamoDB state table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    delivery_ttl_seconds: i64,
    thread_ttl_seconds: i64,
    channel_interval: std::time::Duration,
    /// Numbers the slot reservations of this container, so each names itself.
    reservations: Arc<AtomicU64>,
}

/// Slack's rate for posting to a channel: about one message per second
/// (DESIGN.md section 6); also applied to `chat.update` of the channel's messages.
pub const CHANNEL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a channel's slot item is kept after its last reservation.
const PACE_TTL_SECONDS: i64 = 86_400;
/// Rounds of read and conditional put before a reservation gives up (contention).
const SLOT_ROUNDS: usize = 16;

const SERVICE: &str = "dynamodb";

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

type Item = HashMap<String, AttributeValue>;

impl DynamoStore {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        delivery_ttl_seconds: i64,
        thread_ttl_seconds: i64,
    ) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            delivery_ttl_seconds,
            thread_ttl_seconds,
            channel_interval: CHANNEL_INTERVAL,
            reservations: Arc::default(),
        }
    }

    /// Another least time between two sends to one channel (default
    /// [`CHANNEL_INTERVAL`]).
    pub fn with_channel_interval(mut self, interval: std::time::Duration) -> Self {
        self.channel_interval = interval;
        self
    }

    async fn get(&self, pk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "GetItem", e))?;
        Ok(out.item)
    }

    /// A conditional put of a write `ours` recognizes: `Ok(None)` when written (also
    /// when the item that refused it, or the item read back after an ambiguous
    /// failure, is our own write: its answer was lost), `Ok(Some(old item))` when the
    /// condition failed on someone else's (empty when the item is gone).
    async fn put_if(
        &self,
        item: Item,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
        ours: impl Fn(&Item) -> bool + Send,
    ) -> Result<Option<Item>, StoreError> {
        let pk = get_s(&item, "pk").unwrap_or_default().to_string();
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (k, v) in names {
            req = req.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        let e = match req.send().await {
            Ok(_) => return Ok(None),
            Err(e) => e,
        };
        let refused_by = match e.as_service_error() {
            // ALL_OLD: the item that refused the write (none: there was none, or it
            // went meanwhile; the callers that need it read it).
            Some(PutItemError::ConditionalCheckFailedException(c)) => {
                Some(c.item().cloned().unwrap_or_default())
            }
            _ if is_ambiguous(&e) => {
                let error: StoreError = AwsError::from_sdk(SERVICE, "PutItem", e).into();
                return match self.get(&pk).await {
                    Ok(Some(now)) if ours(&now) => {
                        info!(pk = %pk, error = %error, "own write found committed after its answer was lost");
                        Ok(None)
                    }
                    _ => Err(error),
                };
            }
            _ => return Err(AwsError::from_sdk(SERVICE, "PutItem", e).into()),
        };
        match refused_by {
            Some(old) if !old.is_empty() && ours(&old) => {
                info!(pk = %pk, "the write that refused ours is our own (answer lost); done");
                Ok(None)
            }
            other => Ok(other),
        }
    }

    async fn delete_if(
        &self,
        pk: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .condition_expression(condition);
        for (k, v) in names {
            req = req.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        match req.send().await {
            Ok(_) => Ok(()),
            // Not ours any more (or already gone): nothing to release.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(AwsError::from_sdk(SERVICE, "DeleteItem", e).into()),
        }
    }
}

fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn get_n(item: &Item, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn malformed(pk: &str, problem: &str) -> StoreError {
    StoreError::Malformed {
        pk: pk.to_string(),
        problem: problem.to_string(),
    }
}

fn epoch(pk: &str, item: &Item, k: &str) -> Result<DateTime<Utc>, StoreError> {
    get_n(item, k)
        .and_then(|v| DateTime::from_timestamp(v, 0))
        .ok_or_else(|| malformed(pk, &format!("`{k}` is missing or not epoch seconds")))
}

fn delivery_from_item(pk: &str, item: &Item) -> Result<DeliveryRecord, StoreError> {
    let status = match get_s(item, "status") {
        Some("sending") => DeliveryStatus::Sending,
        Some("posted") => DeliveryStatus::Posted,
        Some("done") => DeliveryStatus::Done,
        _ => return Err(malformed(pk, "`status` is not sending, posted or done")),
    };
    Ok(DeliveryRecord {
        status,
        lease_until: get_n(item, "lease_until").unwrap_or(0),
        channel: get_s(item, "channel").map(str::to_string),
        thread_ts: get_s(item, "thread_ts").map(str::to_string),
    })
}

/// An optional epoch-seconds attribute; absent or unreadable is `None` (a figure
/// of the closing summary is never worth failing a delivery for).
fn opt_epoch(item: &Item, k: &str) -> Option<DateTime<Utc>> {
    get_n(item, k).and_then(|v| DateTime::from_timestamp(v, 0))
}

/// The attribute names of [`Milestones`] on a thread item.
const DETECTED_AT: &str = "detected_at";
const NOTIFIED_AT: &str = "notified_at";
const DIAGNOSED_AT: &str = "diagnosed_at";
const INCIDENT_REF: &str = "incident_ref";
const REPLIED_AT: &str = "replied_at";
/// The attribute of a channel's slot item: the next free slot, epoch milliseconds.
const NEXT_AT: &str = "next_at";
/// The owner token of the invocation that wrote an item.
const OWNER: &str = "owner";
/// A thread record's revision, and the message its top-level message shows.
const REV: &str = "rev";
const CARD: &str = "card";
/// The reservation that wrote a slot item (owner token and a number).
const HOLDER: &str = "holder";

fn thread_from_item(pk: &str, item: &Item) -> Result<ThreadRecord, StoreError> {
    let lease_until = get_n(item, "lease_until").unwrap_or(0);
    let posted = match get_s(item, "status") {
        Some("pending") => None,
        Some("posted") => Some(PostedThread {
            channel: get_s(item, "channel")
                .ok_or_else(|| malformed(pk, "`channel` is missing"))?
                .to_string(),
            ts: get_s(item, "ts")
                .ok_or_else(|| malformed(pk, "`ts` is missing"))?
                .to_string(),
            opened_at: epoch(pk, item, "opened_at")?,
            updated_at: epoch(pk, item, "updated_at")?,
            resolved: item
                .get("resolved")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            milestones: Milestones {
                detected_at: opt_epoch(item, DETECTED_AT),
                notified_at: opt_epoch(item, NOTIFIED_AT),
                diagnosed_at: opt_epoch(item, DIAGNOSED_AT),
            },
            incident_ref: get_s(item, INCIDENT_REF).map(str::to_string),
            replied_at: opt_epoch(item, REPLIED_AT),
            rev: get_n(item, REV)
                .and_then(|r| u64::try_from(r).ok())
                .unwrap_or(0),
            card: get_s(item, CARD).map(str::to_string),
        }),
        _ => return Err(malformed(pk, "`status` is not pending or posted")),
    };
    Ok(ThreadRecord {
        posted,
        lease_until,
        owner: get_s(item, OWNER).map(str::to_string),
    })
}

/// True when `item` is a `status` item written by `owner`.
fn owned(item: &Item, status: &str, owner: &str) -> bool {
    get_s(item, "status") == Some(status) && get_s(item, OWNER) == Some(owner)
}

#[async_trait]
impl StateStore for DynamoStore {
    async fn claim_delivery(
        &self,
        pk: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Claim<DeliveryRecord>, StoreError> {
        let item = HashMap::from([
            ("pk".to_string(), s(pk)),
            ("status".to_string(), s(DeliveryStatus::Sending.as_str())),
            ("lease_until".to_string(), n(lease_until)),
            (OWNER.to_string(), s(owner)),
            ("expires_at".to_string(), n(now + self.delivery_ttl_seconds)),
        ]);
        let old = self
            .put_if(
                item,
                "attribute_not_exists(pk) OR (#st = :sending AND (#lease < :now OR #owner = :owner))",
                &[("#st", "status"), ("#lease", "lease_until"), ("#owner", OWNER)],
                vec![
                    (":sending", s("sending")),
                    (":now", n(now)),
                    (":owner", s(owner)),
                ],
                |i| owned(i, "sending", owner),
            )
            .await?;
        match old {
            None => Ok(Claim::Won),
            Some(item) if item.is_empty() => match self.get(pk).await? {
                Some(item) => Ok(Claim::Taken(delivery_from_item(pk, &item)?)),
                None => Err(StoreError::Conflict {
                    pk: pk.to_string(),
                    expected: "claim refused but no item found",
                }),
            },
            Some(item) => Ok(Claim::Taken(delivery_from_item(pk, &item)?)),
        }
    }

    async fn put_delivery(
        &self,
        pk: &str,
        record: &DeliveryRecord,
        owner: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk))
            .item("status", s(record.status.as_str()))
            .item("lease_until", n(record.lease_until))
            .item(OWNER, s(owner))
            .item("expires_at", n(now + self.delivery_ttl_seconds));
        if let Some(c) = &record.channel {
            req = req.item("channel", s(c));
        }
        if let Some(t) = &record.thread_ts {
            req = req.item("thread_ts", s(t));
        }
        // Unconditional: the SDK's retry after a lost answer writes the same again.
        req.send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "PutItem", e))?;
        Ok(())
    }

    async fn release_delivery(&self, pk: &str, owner: &str) -> Result<(), StoreError> {
        self.delete_if(
            pk,
            "#st = :sending AND #owner = :owner",
            &[("#st", "status"), ("#owner", OWNER)],
            vec![(":sending", s("sending")), (":owner", s(owner))],
        )
        .await
    }

    async fn get_thread(&self, pk: &str) -> Result<Option<ThreadRecord>, StoreError> {
        match self.get(pk).await? {
            Some(item) => Ok(Some(thread_from_item(pk, &item)?)),
            None => Ok(None),
        }
    }

    async fn claim_thread(
        &self,
        pk: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
        replace_resolved: Option<&str>,
    ) -> Result<Claim<ThreadRecord>, StoreError> {
        let item = HashMap::from([
            ("pk".to_string(), s(pk)),
            ("status".to_string(), s("pending")),
            ("lease_until".to_string(), n(lease_until)),
            (OWNER.to_string(), s(owner)),
            ("expires_at".to_string(), n(now + self.thread_ttl_seconds)),
        ]);
        let mut condition =
            "attribute_not_exists(pk) OR (#st = :pending AND (#lease < :now OR #owner = :owner))"
                .to_string();
        let mut values = vec![
            (":pending", s("pending")),
            (":now", n(now)),
            (":owner", s(owner)),
        ];
        let mut names = vec![
            ("#st", "status"),
            ("#lease", "lease_until"),
            ("#owner", OWNER),
        ];
        if let Some(old_ts) = replace_resolved {
            condition.push_str(" OR (#st = :posted AND #res = :true AND #ts = :old_ts)");
            values.push((":posted", s("posted")));
            values.push((":true", AttributeValue::Bool(true)));
            values.push((":old_ts", s(old_ts)));
            names.push(("#res", "resolved"));
            names.push(("#ts", "ts"));
        }
        match self
            .put_if(item, &condition, &names, values, |i| {
                owned(i, "pending", owner)
            })
            .await?
        {
            None => Ok(Claim::Won),
            Some(item) if item.is_empty() => match self.get_thread(pk).await? {
                Some(t) => Ok(Claim::Taken(t)),
                None => Err(StoreError::Conflict {
                    pk: pk.to_string(),
                    expected: "claim refused but no item found",
                }),
            },
            Some(item) => Ok(Claim::Taken(thread_from_item(pk, &item)?)),
        }
    }

    async fn put_thread(
        &self,
        pk: &str,
        thread: &PostedThread,
        guard: &ThreadGuard,
        owner: &str,
        now: i64,
    ) -> Result<ThreadWrite, StoreError> {
        let mut item = HashMap::from([
            ("pk".to_string(), s(pk)),
            ("status".to_string(), s("posted")),
            ("channel".to_string(), s(&thread.channel)),
            ("ts".to_string(), s(&thread.ts)),
            ("opened_at".to_string(), n(thread.opened_at.timestamp())),
            ("updated_at".to_string(), n(thread.updated_at.timestamp())),
            (
                "resolved".to_string(),
                AttributeValue::Bool(thread.resolved),
            ),
            ("lease_until".to_string(), n(0)),
            (OWNER.to_string(), s(owner)),
            ("expires_at".to_string(), n(now + self.thread_ttl_seconds)),
        ]);
        let m = &thread.milestones;
        for (k, v) in [
            (DETECTED_AT, m.detected_at),
            (NOTIFIED_AT, m.notified_at),
            (DIAGNOSED_AT, m.diagnosed_at),
            (REPLIED_AT, thread.replied_at),
        ] {
            if let Some(v) = v {
                item.insert(k.to_string(), n(v.timestamp()));
            }
        }
        if let Some(r) = &thread.incident_ref {
            item.insert(INCIDENT_REF.to_string(), s(r));
        }
        item.insert(
            REV.to_string(),
            n(i64::try_from(thread.rev).unwrap_or(i64::MAX)),
        );
        if let Some(card) = &thread.card {
            item.insert(CARD.to_string(), s(card));
        }
        // This very write, found in place: its answer was lost.
        let ours = |i: &Item| {
            owned(i, "posted", owner)
                && get_s(i, "ts") == Some(thread.ts.as_str())
                && get_n(i, "updated_at") == Some(thread.updated_at.timestamp())
                && i.get("resolved").and_then(|v| v.as_bool().ok()) == Some(&thread.resolved)
                && get_n(i, REV).unwrap_or(0) == i64::try_from(thread.rev).unwrap_or(i64::MAX)
        };
        let old = match guard {
            ThreadGuard::OwnClaim => {
                self.put_if(
                    item,
                    "#st = :pending AND #owner = :owner",
                    &[("#st", "status"), ("#owner", OWNER)],
                    vec![(":pending", s("pending")), (":owner", s(owner))],
                    ours,
                )
                .await?
            }
            ThreadGuard::SameThread(ts) => {
                self.put_if(
                    item,
                    "#ts = :ts",
                    &[("#ts", "ts")],
                    vec![(":ts", s(ts))],
                    ours,
                )
                .await?
            }
            ThreadGuard::AtRev { ts, rev } => {
                let (condition, values) = if *rev == 0 {
                    (
                        "#ts = :ts AND attribute_not_exists(#rev)",
                        vec![(":ts", s(ts))],
                    )
                } else {
                    (
                        "#ts = :ts AND #rev = :rev",
                        vec![
                            (":ts", s(ts)),
                            (":rev", n(i64::try_from(*rev).unwrap_or(i64::MAX))),
                        ],
                    )
                };
                self.put_if(
                    item,
                    condition,
                    &[("#ts", "ts"), ("#rev", REV)],
                    values,
                    ours,
                )
                .await?
            }
            ThreadGuard::NotNewerThan(opened_at) => {
                self.put_if(
                    item,
                    "attribute_not_exists(pk) OR (#st = :posted AND #opened <= :opened)",
                    &[("#st", "status"), ("#opened", "opened_at")],
                    vec![
                        (":posted", s("posted")),
                        (":opened", n(opened_at.timestamp())),
                    ],
                    ours,
                )
                .await?
            }
        };
        Ok(match old {
            None => ThreadWrite::Written,
            Some(item) if item.is_empty() => ThreadWrite::Refused(None),
            Some(item) => ThreadWrite::Refused(Some(Box::new(thread_from_item(pk, &item)?))),
        })
    }

    async fn release_thread(&self, pk: &str, owner: &str) -> Result<(), StoreError> {
        self.delete_if(
            pk,
            "#st = :pending AND #owner = :owner",
            &[("#st", "status"), ("#owner", OWNER)],
            vec![(":pending", s("pending")), (":owner", s(owner))],
        )
        .await
    }

    /// Optimistic: take the slot `max(now, next_at)` by writing `next_at` one
    /// interval later, on condition that `next_at` is still what was seen (or free);
    /// a concurrent reservation makes the condition fail and returns the new value.
    /// Each reservation names itself (`holder`): one whose answer was lost is found
    /// in place (refusing the SDK's retry, or read back) and kept, not taken twice.
    async fn reserve_slot(
        &self,
        pk: &str,
        owner: &str,
        now_ms: i64,
        not_after_ms: i64,
    ) -> Result<Slot, StoreError> {
        let interval = i64::try_from(self.channel_interval.as_millis()).unwrap_or(i64::MAX);
        let holder = format!(
            "{owner}#{}",
            self.reservations.fetch_add(1, Ordering::Relaxed)
        );
        let mut seen: Option<i64> = None;
        for _ in 0..SLOT_ROUNDS {
            let (slot, condition, value) = match seen {
                Some(t) if t > now_ms => (t, "#next = :seen", (":seen", n(t))),
                _ => (
                    now_ms,
                    "attribute_not_exists(#next) OR #next <= :now",
                    (":now", n(now_ms)),
                ),
            };
            if slot > not_after_ms {
                return Ok(Slot::Full { next_free: slot });
            }
            let item = HashMap::from([
                ("pk".to_string(), s(pk)),
                (NEXT_AT.to_string(), n(slot.saturating_add(interval))),
                (HOLDER.to_string(), s(&holder)),
                (
                    "expires_at".to_string(),
                    n(now_ms / 1000 + PACE_TTL_SECONDS),
                ),
            ]);
            let mine = |i: &Item| get_s(i, HOLDER) == Some(holder.as_str());
            let old = match self
                .put_if(item, condition, &[("#next", NEXT_AT)], vec![value], mine)
                .await?
            {
                None => return Ok(Slot::At(slot)),
                // No old item in the answer: read it (gone meanwhile: free again).
                Some(old) if old.is_empty() => self.get(pk).await?,
                Some(old) => Some(old),
            };
            seen = match old {
                None => None,
                Some(old) => Some(
                    get_n(&old, NEXT_AT)
                        .ok_or_else(|| malformed(pk, "`next_at` is missing or not a number"))?,
                ),
            };
        }
        Err(StoreError::Conflict {
            pk: pk.to_string(),
            expected: "a free send slot (too many concurrent reservations)",
        })
    }

    fn channel_interval(&self) -> std::time::Duration {
        self.channel_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::delete_item::{DeleteItemError, DeleteItemOutput};
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_smithy_mocks::mock;

    fn store(client: Client) -> DynamoStore {
        DynamoStore::new(client, "state", 14 * 86400, 30 * 86400)
    }

    fn ccf(item: Option<Item>) -> PutItemError {
        PutItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .message("The conditional request failed")
                .set_item(item)
                .build(),
        )
    }

    #[test]
    fn keys_follow_the_contract_and_bound_long_parts() {
        assert_eq!(delivery_key("m-1", "ops"), "delivery#m-1#ops");
        assert_eq!(
            thread_key("VPN connection vpn-1 is DOWN", "oncall"),
            "thread#VPN connection vpn-1 is DOWN#oncall"
        );
        let long_a = "é".repeat(2000);
        let long_b = format!("{}x", "é".repeat(1999));
        let (a, b) = (thread_key(&long_a, "d"), thread_key(&long_b, "d"));
        assert!(a.len() < 1100 && b.len() < 1100);
        assert_ne!(a, b);
        assert_eq!(a, thread_key(&long_a, "d"));
    }

    #[tokio::test]
    async fn claim_delivery_puts_conditional_sending_item_with_ttl() {
        let rule = mock!(Client::put_item)
            .match_requests(|r| {
                let item = r.item().unwrap();
                r.table_name() == Some("state")
                    && item["pk"] == s("delivery#m-1#oncall")
                    && item["status"] == s("sending")
                    && item["lease_until"] == n(1_000_060)
                    && item["expires_at"] == n(1_000_000 + 14 * 86400)
                    && item["owner"] == s("req-1")
                    && r.condition_expression()
                        == Some("attribute_not_exists(pk) OR (#st = :sending AND (#lease < :now OR #owner = :owner))")
                    && r.expression_attribute_values().unwrap()[":now"] == n(1_000_000)
                    && r.expression_attribute_values().unwrap()[":owner"] == s("req-1")
                    && r.return_values_on_condition_check_failure()
                        == Some(&ReturnValuesOnConditionCheckFailure::AllOld)
            })
            .then_output(|| PutItemOutput::builder().build());
        let client = shared::mock_client!(aws_sdk_dynamodb, [&rule]);
        let claim = store(client)
            .claim_delivery(
                &delivery_key("m-1", "oncall"),
                "req-1",
                1_000_000,
                1_000_060,
            )
            .await
            .unwrap();
        assert_eq!(claim, Claim::Won);
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn claim_delivery_refused_returns_existing_record() {
        let old = HashMap::from([
            ("pk".to_string(), s("delivery#m-1#oncall")),
            ("status".to_string(), s("posted")),
            ("channel".to_string(), s("C1")),
            ("thread_ts".to_string(), s("1.0")),
        ]);
        let rule = mock!(Client::put_item).then_error(move || ccf(Some(old.clone())));
        let client = shared::mock_client!(aws_sdk_dynamodb, [&rule]);
        let claim = store(client)
            .claim_delivery("delivery#m-1#oncall", "req-1", 1, 2)
            .await
            .unwrap();
        assert_eq!(
            claim,
            Claim::Taken(DeliveryRecord {
                status: DeliveryStatus::Posted,
                lease_until: 0,
                channel: Some("C1".into()),
                thread_ts: Some("1.0".into()),
            })
        );
    }

    #[tokio::test]
    async fn claim_thread_replacing_resolved_thread_adds_condition_on_old_ts() {
        let rule = mock!(Client::put_item)
            .match_requests(|r| {
                r.condition_expression()
                    == Some("attribute_not_exists(pk) OR (#st = :pending AND (#lease < :now OR #owner = :owner)) OR (#st = :posted AND #res = :true AND #ts = :old_ts)")
                    && r.expression_attribute_values().unwrap()[":old_ts"] == s("111.222")
                    && r.item().unwrap()["status"] == s("pending")
                    && r.item().unwrap()["pk"] == s("thread#VPN vpn-1 is DOWN#oncall")
            })
            .then_output(|| PutItemOutput::builder().build());
        let client = shared::mock_client!(aws_sdk_dynamodb, [&rule]);
        let claim = store(client)
            .claim_thread(
                &thread_key("VPN vpn-1 is DOWN", "oncall"),
                "req-1",
                10,
                70,
                Some("111.222"),
            )
            .await
            .unwrap();
        assert_eq!(claim, Claim::Won);
    }

    #[tokio::test]
    async fn get_thread_reads_consistently_and_parses_posted_thread() {
        let rule = mock!(Client::get_item)
            .match_requests(|r| {
                r.consistent_read() == Some(true) && r.key().unwrap()["pk"] == s("thread#k#d")
            })
            .then_output(|| {
                GetItemOutput::builder()
                    .set_item(Some(HashMap::from([
                        ("pk".to_string(), s("thread#k#d")),
                        ("status".to_string(), s("posted")),
                        ("channel".to_string(), s("C1")),
                        ("ts".to_string(), s("1700000000.000100")),
                        ("opened_at".to_string(), n(1_700_000_000)),
                        ("updated_at".to_string(), n(1_700_000_100)),
                        ("resolved".to_string(), AttributeValue::Bool(true)),
                    ])))
                    .build()
            });
        let client = shared::mock_client!(aws_sdk_dynamodb, [&rule]);
        let t = store(client)
            .get_thread("thread#k#d")
            .await
            .unwrap()
            .unwrap();
        let p = t.posted.unwrap();
        assert_eq!(
            (p.channel.as_str(), p.ts.as_str(), p.resolved),
            ("C1", "1700000000.000100", true)
        );
        assert_eq!(p.opened_at.timestamp(), 1_700_000_000);
        // An item written before milestones were kept reads without them.
        assert_eq!(p.milestones, Milestones::default());
    }

    #[tokio::test]
    async fn thread_milestones_round_trip_as_optional_epoch_attributes() {
        let put = mock!(Client::put_item)
            .match_requests(|r| {
                let item = r.item().unwrap();
                item["detected_at"] == n(1_700_000_000)
                    && item["notified_at"] == n(1_700_000_012)
                    && !item.contains_key("diagnosed_at")
            })
            .then_output(|| PutItemOutput::builder().build());
        let get = mock!(Client::get_item).then_output(|| {
            GetItemOutput::builder()
                .set_item(Some(HashMap::from([
                    ("pk".to_string(), s("thread#k#d")),
                    ("status".to_string(), s("posted")),
                    ("channel".to_string(), s("C1")),
                    ("ts".to_string(), s("1.0")),
                    ("opened_at".to_string(), n(1_700_000_000)),
                    ("updated_at".to_string(), n(1_700_000_100)),
                    ("detected_at".to_string(), n(1_700_000_000)),
                    ("notified_at".to_string(), n(1_700_000_012)),
                    ("diagnosed_at".to_string(), n(1_700_000_090)),
                ])))
                .build()
        });
        let client = shared::mock_client!(aws_sdk_dynamodb, [&put, &get]);
        let st = store(client);
        let ts = |v| DateTime::from_timestamp(v, 0);
        let thread = PostedThread {
            channel: "C1".into(),
            ts: "1.0".into(),
            opened_at: ts(1_700_000_000).unwrap(),
            updated_at: ts(1_700_000_000).unwrap(),
            resolved: false,
            milestones: Milestones {
                detected_at: ts(1_700_000_000),
                notified_at: ts(1_700_000_012),
                diagnosed_at: None,
            },
            incident_ref: None,
            replied_at: None,
            rev: 0,
            card: None,
        };
        assert!(st
            .put_thread("thread#k#d", &thread, &ThreadGuard::OwnClaim, "req-1", 1)
            .await
            .unwrap()
            .written());
        let back = st.get_thread("thread#k#d").await.unwrap().unwrap();
        assert_eq!(
            back.posted.unwrap().milestones,
            Milestones {
                detected_at: ts(1_700_000_000),
                notified_at: ts(1_700_000_012),
                diagnosed_at: ts(1_700_000_090),
            }
        );
        assert_eq!((put.num_calls(), get.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn malformed_thread_item_is_a_clear_non_retryable_error() {
        let rule = mock!(Client::get_item).then_output(|| {
            GetItemOutput::builder()
                .set_item(Some(HashMap::from([("status".to_string(), s("posted"))])))
                .build()
        });
        let client = shared::mock_client!(aws_sdk_dynamodb, [&rule]);
        let err = store(client).get_thread("thread#k#d").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "state table item \"thread#k#d\" is malformed: `channel` is missing"
        );
        assert!(!err.retryable());
    }

    #[tokio::test]
    async fn put_thread_guarded_by_same_ts_reports_conflict_as_false() {
        let rule = mock!(Client::put_item)
            .match_requests(|r| {
                r.condition_expression() == Some("#ts = :ts")
                    && r.item().unwrap()["resolved"] == AttributeValue::Bool(true)
                    && r.item().unwrap()["updated_at"] == n(200)
            })
            .then_error(|| ccf(None));
        let client = shared::mock_client!(aws_sdk_dynamodb, [&rule]);
        let thread = PostedThread {
            channel: "C1".into(),
            ts: "1.0".into(),
            opened_at: DateTime::from_timestamp(100, 0).unwrap(),
            updated_at: DateTime::from_timestamp(200, 0).unwrap(),
            resolved: true,
            milestones: Milestones::default(),
            incident_ref: None,
            replied_at: None,
            rev: 0,
            card: None,
        };
        let saved = store(client)
            .put_thread(
                "thread#k#d",
                &thread,
                &ThreadGuard::SameThread("1.0".into()),
                "req-1",
                300,
            )
            .await
            .unwrap();
        assert!(!saved.written());
    }

    #[tokio::test]
    async fn release_delivery_deletes_only_sending_and_ignores_conditional_failure() {
        let rule = mock!(Client::delete_item)
            .match_requests(|r| {
                r.condition_expression() == Some("#st = :sending AND #owner = :owner")
                    && r.expression_attribute_values().unwrap()[":owner"] == s("req-1")
                    && r.key().unwrap()["pk"] == s("delivery#m#d")
            })
            .then_error(|| {
                DeleteItemError::ConditionalCheckFailedException(
                    ConditionalCheckFailedException::builder().build(),
                )
            });
        let ok = mock!(Client::delete_item).then_output(|| DeleteItemOutput::builder().build());
        let client = shared::mock_client!(aws_sdk_dynamodb, [&rule, &ok]);
        let st = store(client);
        st.release_delivery("delivery#m#d", "req-1").await.unwrap();
        st.release_delivery("delivery#m#d", "req-1").await.unwrap();
        assert_eq!((rule.num_calls(), ok.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn reserve_slot_takes_an_idle_channel_now_and_moves_next_one_interval_on() {
        let rule = mock!(Client::put_item)
            .match_requests(|r| {
                let item = r.item().unwrap();
                item["pk"] == s("pace#C0OPS")
                    && item["next_at"] == n(1_700_000_001_000)
                    && item["holder"].as_s().unwrap().starts_with("req-1#")
                    && item["expires_at"] == n(1_700_000_000 + 86_400)
                    && r.condition_expression()
                        == Some("attribute_not_exists(#next) OR #next <= :now")
                    && r.expression_attribute_names().unwrap()["#next"] == "next_at"
                    && r.expression_attribute_values().unwrap()[":now"] == n(1_700_000_000_000)
            })
            .then_output(|| PutItemOutput::builder().build());
        let client = shared::mock_client!(aws_sdk_dynamodb, [&rule]);
        let slot = store(client)
            .reserve_slot(
                &pace_key("C0OPS"),
                "req-1",
                1_700_000_000_000,
                1_700_000_050_000,
            )
            .await
            .unwrap();
        assert_eq!(slot, Slot::At(1_700_000_000_000));
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn reserve_slot_on_a_busy_channel_takes_the_next_slot_it_saw() {
        let now = 1_700_000_000_000;
        // Another invocation holds the channel until now + 700 ms.
        let busy = mock!(Client::put_item)
            .match_requests(|r| {
                r.condition_expression() == Some("attribute_not_exists(#next) OR #next <= :now")
            })
            .then_error(move || {
                ccf(Some(HashMap::from([
                    ("pk".to_string(), s("pace#C0OPS")),
                    ("next_at".to_string(), n(now + 700)),
                ])))
            });
        let taken = mock!(Client::put_item)
            .match_requests(move |r| {
                r.condition_expression() == Some("#next = :seen")
                    && r.expression_attribute_values().unwrap()[":seen"] == n(now + 700)
                    && r.item().unwrap()["next_at"] == n(now + 1_700)
            })
            .then_output(|| PutItemOutput::builder().build());
        let client = shared::mock_client!(aws_sdk_dynamodb, [&busy, &taken]);
        let slot = store(client)
            .reserve_slot("pace#C0OPS", "req-1", now, now + 10_000)
            .await
            .unwrap();
        assert_eq!(slot, Slot::At(now + 700));
        assert_eq!((busy.num_calls(), taken.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn reserve_slot_beyond_the_latest_time_reserves_nothing() {
        let now = 1_700_000_000_000;
        let busy = mock!(Client::put_item).then_error(move || {
            ccf(Some(HashMap::from([
                ("pk".to_string(), s("pace#C0OPS")),
                ("next_at".to_string(), n(now + 45_000)),
            ])))
        });
        let client = shared::mock_client!(aws_sdk_dynamodb, [&busy]);
        let st = store(client).with_channel_interval(std::time::Duration::from_millis(1500));
        assert_eq!(
            st.channel_interval(),
            std::time::Duration::from_millis(1500)
        );
        let slot = st
            .reserve_slot("pace#C0OPS", "req-1", now, now + 30_000)
            .await
            .unwrap();
        // One conditional put only: the slot seen is past the caller's deadline.
        assert_eq!(
            slot,
            Slot::Full {
                next_free: now + 45_000
            }
        );
        assert_eq!(busy.num_calls(), 1);
    }

    #[tokio::test]
    async fn key_pointer_is_written_only_over_an_older_incident_thread() {
        let rule = mock!(Client::put_item)
            .match_requests(|r| {
                r.condition_expression()
                    == Some("attribute_not_exists(pk) OR (#st = :posted AND #opened <= :opened)")
                    && r.expression_attribute_values().unwrap()[":opened"] == n(1_700_000_000)
                    && r.item().unwrap()["incident_ref"] == s("oi-0123456789ab")
                    && r.item().unwrap()["replied_at"] == n(1_700_000_050)
            })
            .then_error(|| ccf(None));
        let client = shared::mock_client!(aws_sdk_dynamodb, [&rule]);
        let thread = PostedThread {
            channel: "C1".into(),
            ts: "1.0".into(),
            opened_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            updated_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            resolved: false,
            milestones: Milestones::default(),
            incident_ref: Some("oi-0123456789ab".into()),
            replied_at: DateTime::from_timestamp(1_700_000_050, 0),
            rev: 0,
            card: None,
        };
        let written = store(client)
            .put_thread(
                "thread#k#d",
                &thread,
                &ThreadGuard::NotNewerThan(thread.opened_at),
                "req-1",
                1,
            )
            .await
            .unwrap();
        assert!(!written.written());
        assert_eq!(
            incident_thread_key("k", "d", "oi-0123456789ab"),
            "thread#k#d#oi-0123456789ab"
        );
    }

    #[tokio::test]
    async fn throttling_is_retryable_store_error() {
        let rule = mock!(Client::get_item).then_error(|| {
            aws_sdk_dynamodb::operation::get_item::GetItemError::ProvisionedThroughputExceededException(
                aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    .meta(
                        aws_sdk_dynamodb::error::ErrorMetadata::builder()
                            .code("ProvisionedThroughputExceededException")
                            .message("slow down")
                            .build(),
                    )
                    .build(),
            )
        });
        let client = shared::mock_client!(aws_sdk_dynamodb, [&rule]);
        let err = store(client).get_thread("thread#k#d").await.unwrap_err();
        assert!(err.retryable(), "{err}");
        assert_eq!(err.lambda_error_type(), "Retryable.Throttled");
    }

    fn thread_at(ts: &str, updated: i64) -> PostedThread {
        PostedThread {
            channel: "C1".into(),
            ts: ts.into(),
            opened_at: DateTime::from_timestamp(100, 0).unwrap(),
            updated_at: DateTime::from_timestamp(updated, 0).unwrap(),
            resolved: false,
            milestones: Milestones::default(),
            incident_ref: None,
            replied_at: None,
            rev: 0,
            card: None,
        }
    }

    /// The claim's answer was lost: the SDK's retry finds the claim in place and its
    /// condition accepts the owner's own claim, so it is won, not "in progress".
    #[tokio::test]
    async fn claim_whose_answer_was_lost_is_won_on_the_retry_by_its_owner() {
        let lost = mock!(Client::put_item).then_output(|| PutItemOutput::builder().build());
        // Read back after the timeout: the claim is ours.
        let mine = mock!(Client::get_item)
            .match_requests(|r| r.consistent_read() == Some(true))
            .then_output(|| {
                GetItemOutput::builder()
                    .set_item(Some(HashMap::from([
                        ("pk".to_string(), s("delivery#m-1#ops")),
                        ("status".to_string(), s("sending")),
                        ("owner".to_string(), s("req-1")),
                        ("lease_until".to_string(), n(60)),
                    ])))
                    .build()
            });
        let lose =
            shared::testing::LoseAnswers::new(vec![("PutItem", 1, shared::testing::Loss::Timeout)]);
        let client = shared::mock_client_losing!(aws_sdk_dynamodb, [&lost, &mine], lose);
        let claim = store(client)
            .claim_delivery("delivery#m-1#ops", "req-1", 1, 60)
            .await
            .unwrap();
        assert_eq!(claim, Claim::Won);
        assert_eq!((lost.num_calls(), mine.num_calls()), (1, 1));
    }

    /// A claim held by another invocation stays "taken", with its record.
    #[tokio::test]
    async fn claim_refused_by_another_owner_is_taken() {
        let theirs = mock!(Client::put_item).then_error(|| {
            ccf(Some(HashMap::from([
                ("pk".to_string(), s("thread#k#d")),
                ("status".to_string(), s("pending")),
                ("owner".to_string(), s("req-other")),
                ("lease_until".to_string(), n(60)),
            ])))
        });
        let client = shared::mock_client!(aws_sdk_dynamodb, [&theirs]);
        let claim = store(client)
            .claim_thread("thread#k#d", "req-1", 1, 60, None)
            .await
            .unwrap();
        assert_eq!(
            claim,
            Claim::Taken(ThreadRecord {
                posted: None,
                lease_until: 60,
                owner: Some("req-other".into()),
            })
        );
    }

    /// The top-level post is recorded; the answer is lost; the SDK's retry fails the
    /// claim condition on this very record (ALL_OLD): recorded, not "taken over".
    #[tokio::test]
    async fn own_thread_record_refusing_the_retry_counts_as_written() {
        let thread = thread_at("1.0", 100);
        let refused = mock!(Client::put_item)
            .match_requests(|r| {
                r.condition_expression() == Some("#st = :pending AND #owner = :owner")
                    && r.item().unwrap()["owner"] == s("req-1")
            })
            .then_error(|| {
                ccf(Some(HashMap::from([
                    ("pk".to_string(), s("thread#k#d")),
                    ("status".to_string(), s("posted")),
                    ("owner".to_string(), s("req-1")),
                    ("ts".to_string(), s("1.0")),
                    ("updated_at".to_string(), n(100)),
                    ("resolved".to_string(), AttributeValue::Bool(false)),
                ])))
            });
        let client = shared::mock_client!(aws_sdk_dynamodb, [&refused]);
        assert!(store(client)
            .put_thread("thread#k#d", &thread, &ThreadGuard::OwnClaim, "req-1", 1)
            .await
            .unwrap()
            .written());
    }

    /// A reservation whose answer was lost is found in place by its holder: the slot
    /// it took is kept, not a second one reserved.
    #[tokio::test]
    async fn slot_reservation_whose_answer_was_lost_keeps_its_slot() {
        let now = 1_700_000_000_000;
        let holder: std::sync::Arc<std::sync::Mutex<String>> = Default::default();
        let seen = holder.clone();
        let put = mock!(Client::put_item)
            .match_requests(move |r| {
                *seen.lock().unwrap() = r.item().unwrap()["holder"].as_s().unwrap().clone();
                true
            })
            .then_output(|| PutItemOutput::builder().build());
        let read = holder.clone();
        let read_back = mock!(Client::get_item).then_output(move || {
            GetItemOutput::builder()
                .set_item(Some(HashMap::from([
                    ("pk".to_string(), s("pace#C0OPS")),
                    ("next_at".to_string(), n(now + 1_000)),
                    ("holder".to_string(), s(&read.lock().unwrap())),
                ])))
                .build()
        });
        let lose =
            shared::testing::LoseAnswers::new(vec![("PutItem", 1, shared::testing::Loss::Reset)]);
        let client = shared::mock_client_losing!(aws_sdk_dynamodb, [&put, &read_back], lose);
        let slot = store(client)
            .reserve_slot("pace#C0OPS", "req-1", now, now + 10_000)
            .await
            .unwrap();
        assert_eq!(slot, Slot::At(now));
        assert_eq!((put.num_calls(), read_back.num_calls()), (1, 1));
    }

    /// After an ambiguous failure whose write is not found, the error stands.
    #[tokio::test]
    async fn lost_claim_not_found_in_place_is_a_retryable_error() {
        let lost = mock!(Client::put_item).then_output(|| PutItemOutput::builder().build());
        let gone = mock!(Client::get_item).then_output(|| GetItemOutput::builder().build());
        let lose =
            shared::testing::LoseAnswers::new(vec![("PutItem", 1, shared::testing::Loss::Timeout)]);
        let client = shared::mock_client_losing!(aws_sdk_dynamodb, [&lost, &gone], lose);
        let err = store(client)
            .claim_delivery("delivery#m-1#ops", "req-1", 1, 60)
            .await
            .unwrap_err();
        assert_eq!(err.lambda_error_type(), "Retryable.AwsUnavailable");
    }

    /// A thread's state is written only over the revision read; refused, the record
    /// as it is now comes back (ALL_OLD), for the caller to decide again on it.
    #[tokio::test]
    async fn thread_state_write_is_guarded_by_the_revision_read() {
        let mut thread = thread_at("1.0", 200);
        thread.rev = 4;
        thread.card = Some("{\"version\":\"1.0\"}".into());
        let refused = mock!(Client::put_item)
            .match_requests(|r| {
                r.condition_expression() == Some("#ts = :ts AND #rev = :rev")
                    && r.expression_attribute_values().unwrap()[":rev"] == n(3)
                    && r.item().unwrap()["rev"] == n(4)
                    && r.item().unwrap()["card"] == s("{\"version\":\"1.0\"}")
            })
            .then_error(|| {
                ccf(Some(HashMap::from([
                    ("pk".to_string(), s("thread#k#d")),
                    ("status".to_string(), s("posted")),
                    ("owner".to_string(), s("req-other")),
                    ("channel".to_string(), s("C1")),
                    ("ts".to_string(), s("1.0")),
                    ("opened_at".to_string(), n(100)),
                    ("updated_at".to_string(), n(300)),
                    ("resolved".to_string(), AttributeValue::Bool(true)),
                    ("rev".to_string(), n(4)),
                ])))
            });
        let legacy = mock!(Client::put_item)
            .match_requests(|r| {
                r.condition_expression() == Some("#ts = :ts AND attribute_not_exists(#rev)")
            })
            .then_output(|| PutItemOutput::builder().build());
        let client = shared::mock_client!(aws_sdk_dynamodb, [&refused, &legacy]);
        let st = store(client);
        let guard = ThreadGuard::AtRev {
            ts: "1.0".into(),
            rev: 3,
        };
        match st
            .put_thread("thread#k#d", &thread, &guard, "req-1", 1)
            .await
            .unwrap()
        {
            ThreadWrite::Refused(Some(record)) => {
                let now = record.posted.unwrap();
                assert_eq!((now.rev, now.resolved), (4, true));
                assert_eq!(now.updated_at.timestamp(), 300);
            }
            other => panic!("unexpected {other:?}"),
        }
        // An item written before revisions: the guard is "no revision yet".
        let first = ThreadGuard::AtRev {
            ts: "1.0".into(),
            rev: 0,
        };
        assert!(st
            .put_thread("thread#k#d", &thread, &first, "req-1", 1)
            .await
            .unwrap()
            .written());
    }
}
