//! The state table (DynamoDB, env `STATE_TABLE_NAME`, partition key `pk`, TTL
//! `expires_at`): what AWS does not keep for us about alarms and incidents.
//!
//! - `alarm#<alarm ARN>`: the state-change time of the last transition applied for
//!   the alarm (duplicates and late deliveries are at or before it) and the incident
//!   key it fed; when that transition was held back (muted, silenced: see
//!   [`crate::hold`]), the hold (`held`, JSON) and its end (`held_until_ms`). One time
//!   series (contributor) of a multi-time-series alarm has its own item,
//!   `alarm#contributor/<id>/<alarm ARN>` ([`crate::alarm::source_id`]): its events
//!   carry the same time as the alarm-level event and as each other, so one
//!   watermark per alarm would drop all but the first.
//! - `incident#<dedupe key>`: the [`IncidentRecord`] (backend reference, alarms
//!   feeding it with their states and impacts, opened time, timeline), the
//!   [`Effect`]s decided but not yet done, a lease naming until when one invocation
//!   works on them, and a version for optimistic locking.
//!
//! Every write is conditional: the alarm's time only moves forward, and an incident
//! item is replaced only at the version that was read. Applying a transition writes
//! both in one transaction, so two concurrent invocations cannot both apply one
//! change, nor apply two changes from the same incident state.
//!
//! **Owner tokens.** Every write carries the token of the invocation that made it
//! ([`Owner`]: the Lambda request id, which Lambda keeps when it retries an
//! asynchronous event; for a queued Slack action, the job's id), in the same
//! conditional write, so the happy path costs no extra call. A write whose answer is
//! lost (attempt timeout, connection reset, a 5xx after sending) may have committed,
//! and the SDK's retry of a committed write fails its own condition. So after an
//! ambiguous failure or a conditional failure the writer reads the item back and
//! recognizes its own write by its token: an alarm item names its `writer`; an
//! incident item keeps the last writes (`writes`: version and token), the holder of
//! its lease (`lease_holder`) and the last changes decided (`changes`). A lease names
//! its holder, so a retry of the same request takes it over at once, and it lasts at
//! most until the holder's deadline (it cannot run longer). Items of other kinds adopt
//! the same pattern through [`Owner`] and [`crate::error::is_ambiguous`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use tracing::{info, warn};

use crate::alarm::AlarmState;
use crate::error::{is_ambiguous, AwsError, Retryable};
use crate::hold::Hold;
use crate::lifecycle::{Effect, IncidentRecord};
use crate::text::truncate;

pub(crate) const SERVICE: &str = "dynamodb";
/// How long an alarm's last transition is remembered after it happened.
pub const ALARM_RETENTION_DAYS: i64 = 400;
/// How long a resolved incident's record is kept (a re-alarm after that opens anew anyway).
pub const RESOLVED_RETENTION_DAYS: i64 = 90;

/// Writes remembered on an incident item, to recognize an own write after a lost answer
/// even when others wrote after it.
pub const WRITES_KEPT: usize = 8;
/// Changes remembered on an incident item, so a change requested again (a redelivered
/// job) is not applied twice.
pub const CHANGES_KEPT: usize = 16;

/// The invocation a write comes from: a token naming it, and its deadline.
///
/// The token stays the same when the same request is tried again: the Lambda request
/// id (Lambda keeps it across the retries of an asynchronous event), or the id of a
/// queued job (kept across redeliveries). Two invocations never share a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    token: String,
    deadline: Option<DateTime<Utc>>,
}

impl Owner {
    /// `token` names the request; an empty one (never from Lambda) is replaced by a
    /// token unique to this process, so two owners never match by accident.
    pub fn new(token: impl Into<String>, deadline: Option<DateTime<Utc>>) -> Owner {
        static ANONYMOUS: AtomicU64 = AtomicU64::new(0);
        let token = token.into();
        let token = if token.trim().is_empty() {
            format!(
                "anonymous-{}-{}",
                std::process::id(),
                ANONYMOUS.fetch_add(1, Ordering::Relaxed)
            )
        } else {
            token
        };
        Owner { token, deadline }
    }

    /// The owner of a Lambda invocation: its request id and deadline (`Context`).
    pub fn from_invocation(request_id: &str, deadline: SystemTime) -> Owner {
        let deadline = DateTime::<Utc>::from(deadline);
        // lambda_runtime reports 0 (the epoch) when it has no deadline.
        Owner::new(request_id, (deadline.timestamp() > 0).then_some(deadline))
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        self.deadline
    }

    /// Until when a lease taken at `now` lasts: `max` from now, but never past the
    /// owner's deadline, when the invocation stops working on it for sure.
    pub fn lease_until(&self, now: DateTime<Utc>, max: Duration) -> DateTime<Utc> {
        let longest = now + max;
        match self.deadline {
            Some(d) if d > now => d.min(longest),
            _ => longest,
        }
    }

    /// True when less than `margin` is left before the deadline (never without one).
    pub fn nearly_out_of_time(&self, now: DateTime<Utc>, margin: Duration) -> bool {
        self.deadline.is_some_and(|d| d - now < margin)
    }
}

/// The last transition applied for one alarm, or one time series of one.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmItem {
    /// What changed state ([`crate::alarm::source_id`]): the alarm's ARN, or
    /// `contributor/<id>/<ARN>` for one time series of a multi-time-series alarm.
    pub arn: String,
    pub changed_at: DateTime<Utc>,
    pub state: AlarmState,
    /// The dedupe key of the incident the alarm fed (so its `OK` finds it even if
    /// the rules changed meanwhile).
    pub incident_key: String,
    /// Set when this transition was recorded but held back (muted or silenced): it
    /// is applied when the hold ends if the alarm is still in this state.
    pub held: Option<Hold>,
    /// The owner token of the invocation that applied the transition (empty on items
    /// written before tokens were kept).
    pub writer: String,
}

/// One write of an incident item: the version it wrote and the owner token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteMark {
    pub version: u64,
    pub by: String,
}

/// One incident key's item.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentItem {
    /// The version this item has once written; it replaces `version - 1` (or
    /// nothing when 1).
    pub version: u64,
    pub record: IncidentRecord,
    /// Effects decided and not yet done, in order.
    pub pending: Vec<Effect>,
    /// Until when an invocation owns the pending effects.
    pub lease_until: Option<DateTime<Utc>>,
    /// The owner token of that invocation (set with `lease_until`).
    pub lease_holder: Option<String>,
    /// The last writes, oldest first, at most [`WRITES_KEPT`]; the last names the
    /// writer of `version`.
    pub writes: Vec<WriteMark>,
    /// Owner tokens of the last changes decided, oldest first, at most [`CHANGES_KEPT`].
    pub changes: Vec<String>,
}

impl IncidentItem {
    /// The item of a key's change decided by `owner`: the next version of `previous`
    /// (or version 1), with `record` and the `pending` effects, leased to `owner` until
    /// `lease_until` while there are effects to run, the change remembered.
    pub fn decided(
        previous: Option<&IncidentItem>,
        record: IncidentRecord,
        pending: Vec<Effect>,
        owner: &Owner,
        lease_until: DateTime<Utc>,
    ) -> IncidentItem {
        let mut writes = previous.map(|p| p.writes.clone()).unwrap_or_default();
        let mut changes = previous.map(|p| p.changes.clone()).unwrap_or_default();
        let version = previous.map_or(1, |p| p.version + 1);
        push_capped(
            &mut writes,
            WriteMark {
                version,
                by: owner.token.clone(),
            },
            WRITES_KEPT,
        );
        if !changes.iter().any(|c| c == &owner.token) {
            push_capped(&mut changes, owner.token.clone(), CHANGES_KEPT);
        }
        let leased = !pending.is_empty();
        IncidentItem {
            version,
            record,
            pending,
            lease_until: leased.then_some(lease_until),
            lease_holder: leased.then(|| owner.token.clone()),
            writes,
            changes,
        }
    }

    /// The same item at the next version, written by `owner`.
    pub fn next(&self, owner: &Owner) -> IncidentItem {
        let mut next = IncidentItem {
            version: self.version + 1,
            ..self.clone()
        };
        push_capped(
            &mut next.writes,
            WriteMark {
                version: next.version,
                by: owner.token.clone(),
            },
            WRITES_KEPT,
        );
        next
    }

    /// The same item leased to `owner` until `until`.
    pub fn leased_to(mut self, owner: &Owner, until: DateTime<Utc>) -> IncidentItem {
        self.lease_until = Some(until);
        self.lease_holder = Some(owner.token.clone());
        self
    }

    /// The same item with no lease.
    pub fn released(mut self) -> IncidentItem {
        self.lease_until = None;
        self.lease_holder = None;
        self
    }

    /// The owner token that wrote this version, if known.
    pub fn writer(&self) -> Option<&str> {
        self.writes
            .iter()
            .rev()
            .find(|w| w.version == self.version)
            .map(|w| w.by.as_str())
    }

    /// True when the write of `version` by `token` is among the remembered writes.
    pub fn has_write(&self, version: u64, token: &str) -> bool {
        self.writes
            .iter()
            .any(|w| w.version == version && w.by == token)
    }

    /// True when the change requested under `token` was decided on this item.
    pub fn has_change(&self, token: &str) -> bool {
        self.changes.iter().any(|c| c == token)
    }

    /// The holder of a lease that still protects pending effects at `now`, if any. A
    /// lease without pending effects protects nothing.
    pub fn lease_holder_at(&self, now: DateTime<Utc>) -> Option<&str> {
        match (&self.lease_until, &self.lease_holder) {
            (Some(until), holder) if *until > now && !self.pending.is_empty() => {
                Some(holder.as_deref().unwrap_or(""))
            }
            _ => None,
        }
    }
}

fn push_capped<T>(list: &mut Vec<T>, value: T, cap: usize) {
    list.push(value);
    if list.len() > cap {
        let drop = list.len() - cap;
        list.drain(..drop);
    }
}

/// A failure of the state table.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error("state table: alarm {arn} already has a transition applied at or after {changed_at}")]
    AlarmNotNewer { arn: String, changed_at: String },
    #[error(
        "state table: incident {key:?} changed since it was read (expected version {expected})"
    )]
    IncidentChanged { key: String, expected: u64 },
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("state table: item {pk:?} is unreadable: {reason}")]
    Corrupt { pk: String, reason: String },
}

impl Retryable for StateError {
    fn retryable(&self) -> bool {
        match self {
            // Another invocation got there first: reading again decides anew.
            StateError::AlarmNotNewer { .. } | StateError::IncidentChanged { .. } => true,
            StateError::Aws(e) => e.retryable(),
            StateError::Corrupt { .. } => false,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            StateError::AlarmNotNewer { .. } | StateError::IncidentChanged { .. } => "Conflict",
            StateError::Aws(e) => e.kind(),
            StateError::Corrupt { .. } => "CorruptState",
        }
    }
}

/// What alarm-to-incident needs from the state table.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The last transition applied for an alarm.
    async fn alarm(&self, arn: &str) -> Result<Option<AlarmItem>, StateError>;

    /// The item of an incident key.
    async fn incident(&self, key: &str) -> Result<Option<IncidentItem>, StateError>;

    /// Records `alarm` as its alarm's last applied transition, only if it is later
    /// than the one stored ([`StateError::AlarmNotNewer`] otherwise), and, in the
    /// same transaction, writes the incident's new version, or checks that the
    /// incident's item is still as the decision read it
    /// ([`StateError::IncidentChanged`] if someone wrote it meanwhile).
    async fn apply(&self, alarm: &AlarmItem, incident: IncidentWrite<'_>)
        -> Result<(), StateError>;

    /// Writes `item` at its version (progress of pending effects, lease changes).
    async fn save_incident(&self, item: &IncidentItem) -> Result<(), StateError>;
}

/// What a transition does to its incident key's item, in the transaction that records
/// the transition on the alarm's item.
#[derive(Debug, Clone, Copy)]
pub enum IncidentWrite<'a> {
    /// No incident is concerned (the summary of a multi-time-series alarm): the
    /// alarm's item alone.
    NotConcerned,
    /// The transition changes no incident, as decided on the item read at `version`
    /// (`None`: there was no item). The item must still be so: a decision made on a
    /// stale read (an `OK` recorded while another invocation opened the incident it
    /// should have resolved) is refused as a conflict and made again.
    Unchanged { key: &'a str, version: Option<u64> },
    /// The transition writes this new version of the item.
    Put(&'a IncidentItem),
}

/// The partition key of an alarm's item (or of one contributor's: `arn` is then its
/// source id).
pub fn alarm_pk(arn: &str) -> String {
    format!("alarm#{arn}")
}

/// The partition key of an incident key's item.
pub fn incident_pk(key: &str) -> String {
    format!("incident#{key}")
}

/// [`StateStore`] on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

pub(crate) type Item = HashMap<String, AttributeValue>;

impl DynamoStateStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoStateStore {
            client,
            table: table.into(),
        }
    }

    /// The client and table, for the other items of the table kept elsewhere
    /// (`crate::hold_store`).
    pub(crate) fn parts(&self) -> (&aws_sdk_dynamodb::Client, &str) {
        (&self.client, &self.table)
    }

    async fn get(&self, pk: &str) -> Result<Option<Item>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "GetItem", e))?;
        Ok(out.item)
    }

    fn alarm_put(&self, alarm: &AlarmItem) -> Result<Put, StateError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(alarm_item(alarm)))
            .condition_expression("attribute_not_exists(pk) OR changed_at_ms < :t")
            .expression_attribute_values(":t", n(alarm.changed_at.timestamp_millis()))
            // A refused write answers with the item that refused it: its writer tells
            // whether it is our own (answer lost), without another read.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| build_error(&alarm_pk(&alarm.arn), e))
    }

    /// The check that the incident's item is still at `version` (or absent).
    pub(crate) fn incident_unchanged(
        &self,
        key: &str,
        version: Option<u64>,
    ) -> Result<ConditionCheck, StateError> {
        let pk = incident_pk(key);
        let b = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(pk.clone()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let b = match version {
            None => b.condition_expression("attribute_not_exists(pk)"),
            Some(v) => b
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(v)),
        };
        b.build().map_err(|e| build_error(&pk, e))
    }

    pub(crate) fn incident_put(&self, item: &IncidentItem) -> Result<Put, StateError> {
        let pk = incident_pk(&item.record.key);
        let b = Put::builder()
            .table_name(&self.table)
            .set_item(Some(incident_item(item)?))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let b = if item.version <= 1 {
            b.condition_expression("attribute_not_exists(pk)")
        } else {
            b.condition_expression("version = :v")
                .expression_attribute_values(":v", n(item.version - 1))
        };
        b.build().map_err(|e| build_error(&pk, e))
    }
}

pub(crate) fn build_error(pk: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Corrupt {
        pk: pk.to_string(),
        reason: format!("could not build the write: {e}"),
    }
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn alarm_item(a: &AlarmItem) -> Item {
    let expires = a.changed_at + Duration::days(ALARM_RETENTION_DAYS);
    let mut item = HashMap::from([
        ("pk".to_string(), s(alarm_pk(&a.arn))),
        ("changed_at".to_string(), s(iso(a.changed_at))),
        (
            "changed_at_ms".to_string(),
            n(a.changed_at.timestamp_millis()),
        ),
        ("state".to_string(), s(a.state.as_str())),
        ("incident_key".to_string(), s(a.incident_key.clone())),
        ("writer".to_string(), s(a.writer.clone())),
        ("expires_at".to_string(), n(expires.timestamp())),
    ]);
    if let Some(h) = &a.held {
        // A hold is plain data (serializing it cannot fail); its end is a number so a
        // scan can find held alarms and a release can name it in its condition.
        item.insert(
            "held".into(),
            s(serde_json::to_string(h).unwrap_or_default()),
        );
        item.insert("held_until_ms".into(), n(h.until.timestamp_millis()));
    }
    item
}

fn incident_item(i: &IncidentItem) -> Result<Item, StateError> {
    let pk = incident_pk(&i.record.key);
    let record = serde_json::to_string(&i.record).map_err(|e| StateError::Corrupt {
        pk: pk.clone(),
        reason: format!("record not serializable: {e}"),
    })?;
    let expires = match i.record.resolved_at {
        Some(r) => r + Duration::days(RESOLVED_RETENTION_DAYS),
        None => i.record.opened_at + Duration::days(ALARM_RETENTION_DAYS),
    };
    let mut item = HashMap::from([
        ("pk".to_string(), s(pk.clone())),
        ("version".to_string(), n(i.version)),
        (
            "status".to_string(),
            s(if i.record.is_open() {
                "open"
            } else {
                "resolved"
            }),
        ),
        ("record".to_string(), s(record)),
        ("expires_at".to_string(), n(expires.timestamp())),
    ]);
    if let Some(r) = &i.record.incident {
        item.insert("incident_ref".into(), s(r.id()));
    }
    if !i.pending.is_empty() {
        let pending = serde_json::to_string(&i.pending).map_err(|e| StateError::Corrupt {
            pk: pk.clone(),
            reason: format!("pending effects not serializable: {e}"),
        })?;
        item.insert("pending".into(), s(pending));
    }
    if let Some(l) = i.lease_until {
        item.insert("lease_until_ms".into(), n(l.timestamp_millis()));
    }
    if let Some(h) = &i.lease_holder {
        item.insert("lease_holder".into(), s(h.clone()));
    }
    if !i.writes.is_empty() {
        let writes = i
            .writes
            .iter()
            .map(|w| s(format!("{}:{}", w.version, w.by)))
            .collect();
        item.insert("writes".into(), AttributeValue::L(writes));
    }
    if !i.changes.is_empty() {
        let changes = i.changes.iter().map(|c| s(c.clone())).collect();
        item.insert("changes".into(), AttributeValue::L(changes));
    }
    Ok(item)
}

/// A list of strings; absent is empty (items written before the attribute existed).
fn attr_strings(item: &Item, pk: &str, name: &str) -> Result<Vec<String>, StateError> {
    match item.get(name) {
        None => Ok(vec![]),
        Some(AttributeValue::L(values)) => values
            .iter()
            .map(|v| match v {
                AttributeValue::S(text) => Ok(text.clone()),
                _ => Err(corrupt(pk, format!("attribute {name} holds a non-string"))),
            })
            .collect(),
        Some(_) => Err(corrupt(pk, format!("attribute {name} is not a list"))),
    }
}

fn parse_writes(item: &Item, pk: &str) -> Result<Vec<WriteMark>, StateError> {
    attr_strings(item, pk, "writes")?
        .into_iter()
        .map(|w| {
            w.split_once(':')
                .and_then(|(v, by)| {
                    Some(WriteMark {
                        version: v.parse().ok()?,
                        by: by.to_string(),
                    })
                })
                .ok_or_else(|| {
                    corrupt(
                        pk,
                        format!("write mark {:?} is not <version>:<token>", truncate(&w, 60)),
                    )
                })
        })
        .collect()
}

pub(crate) fn attr_s<'a>(item: &'a Item, pk: &str, name: &str) -> Result<&'a str, StateError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(corrupt(pk, format!("attribute {name} is not a string"))),
        None => Err(corrupt(pk, format!("attribute {name} is missing"))),
    }
}

pub(crate) fn attr_n(item: &Item, pk: &str, name: &str) -> Result<Option<i64>, StateError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| {
            corrupt(
                pk,
                format!("attribute {name} is not an integer: {}", truncate(v, 40)),
            )
        }),
        Some(_) => Err(corrupt(pk, format!("attribute {name} is not a number"))),
        None => Ok(None),
    }
}

pub(crate) fn corrupt(pk: &str, reason: String) -> StateError {
    StateError::Corrupt {
        pk: truncate(pk, 200),
        reason,
    }
}

pub(crate) fn parse_alarm(arn: &str, item: &Item) -> Result<AlarmItem, StateError> {
    let pk = alarm_pk(arn);
    let ms = attr_n(item, &pk, "changed_at_ms")?
        .ok_or_else(|| corrupt(&pk, "attribute changed_at_ms is missing".into()))?;
    let changed_at = Utc
        .timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| corrupt(&pk, format!("changed_at_ms {ms} is out of range")))?;
    let state_text = attr_s(item, &pk, "state")?;
    let state = AlarmState::parse(state_text).ok_or_else(|| {
        corrupt(
            &pk,
            format!("state {:?} is not an alarm state", truncate(state_text, 40)),
        )
    })?;
    let held = match item.get("held") {
        None => None,
        Some(_) => Some(
            serde_json::from_str(attr_s(item, &pk, "held")?)
                .map_err(|e| corrupt(&pk, format!("held is not a hold: {e}")))?,
        ),
    };
    Ok(AlarmItem {
        arn: arn.to_string(),
        changed_at,
        state,
        incident_key: attr_s(item, &pk, "incident_key")?.to_string(),
        writer: match item.get("writer") {
            None => String::new(),
            Some(_) => attr_s(item, &pk, "writer")?.to_string(),
        },
        held,
    })
}

pub(crate) fn parse_incident(key: &str, item: &Item) -> Result<IncidentItem, StateError> {
    let pk = incident_pk(key);
    let version = attr_n(item, &pk, "version")?
        .ok_or_else(|| corrupt(&pk, "attribute version is missing".into()))?;
    let version = u64::try_from(version)
        .map_err(|_| corrupt(&pk, format!("version {version} is negative")))?;
    let record: IncidentRecord = serde_json::from_str(attr_s(item, &pk, "record")?)
        .map_err(|e| corrupt(&pk, format!("record is not an incident record: {e}")))?;
    let pending = match item.get("pending") {
        None => vec![],
        Some(_) => serde_json::from_str(attr_s(item, &pk, "pending")?)
            .map_err(|e| corrupt(&pk, format!("pending is not a list of effects: {e}")))?,
    };
    let lease_until = match attr_n(item, &pk, "lease_until_ms")? {
        None => None,
        Some(ms) => Utc.timestamp_millis_opt(ms).single(),
    };
    let lease_holder = match item.get("lease_holder") {
        None => None,
        Some(_) => Some(attr_s(item, &pk, "lease_holder")?.to_string()),
    };
    Ok(IncidentItem {
        version,
        record,
        pending,
        lease_until,
        lease_holder,
        writes: parse_writes(item, &pk)?,
        changes: attr_strings(item, &pk, "changes")?,
    })
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn alarm(&self, arn: &str) -> Result<Option<AlarmItem>, StateError> {
        match self.get(&alarm_pk(arn)).await? {
            None => Ok(None),
            Some(item) => parse_alarm(arn, &item).map(Some),
        }
    }

    async fn incident(&self, key: &str) -> Result<Option<IncidentItem>, StateError> {
        match self.get(&incident_pk(key)).await? {
            None => Ok(None),
            Some(item) => parse_incident(key, &item).map(Some),
        }
    }

    async fn apply(
        &self,
        alarm: &AlarmItem,
        incident: IncidentWrite<'_>,
    ) -> Result<(), StateError> {
        let alarm_conflict = || StateError::AlarmNotNewer {
            arn: alarm.arn.clone(),
            changed_at: iso(alarm.changed_at),
        };
        let (second, key, expected) = match incident {
            IncidentWrite::NotConcerned => return self.put_alarm_alone(alarm).await,
            IncidentWrite::Unchanged { key, version } => (
                TransactWriteItem::builder()
                    .condition_check(self.incident_unchanged(key, version)?)
                    .build(),
                key,
                version.unwrap_or(0),
            ),
            IncidentWrite::Put(item) => (
                TransactWriteItem::builder()
                    .put(self.incident_put(item)?)
                    .build(),
                item.record.key.as_str(),
                item.version.saturating_sub(1),
            ),
        };
        let items = vec![
            TransactWriteItem::builder()
                .put(self.alarm_put(alarm)?)
                .build(),
            second,
        ];
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(e) = sent else { return Ok(()) };
        let mut error = None;
        let mut refused_by: [Option<Item>; 2] = [None, None];
        if let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error()
        {
            // Reasons come in the order of the items: [alarm, incident].
            let reasons = c.cancellation_reasons();
            let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("None")).collect();
            for (i, r) in reasons.iter().take(2).enumerate() {
                refused_by[i] = r.item().cloned();
            }
            error = match (codes.first().copied(), codes.get(1).copied()) {
                (Some("ConditionalCheckFailed"), _) => Some(alarm_conflict()),
                (_, Some("ConditionalCheckFailed" | "TransactionConflict")) => {
                    Some(StateError::IncidentChanged {
                        key: key.to_string(),
                        expected,
                    })
                }
                (Some("TransactionConflict"), _) => Some(alarm_conflict()),
                _ => None,
            };
        }
        let ambiguous = error.is_some() || is_ambiguous(&e);
        let error =
            error.unwrap_or_else(|| AwsError::from_sdk(SERVICE, "TransactWriteItems", e).into());
        if !ambiguous {
            return Err(error);
        }
        // Both items commit together, so either one tells for both.
        let [alarm_then, incident_then] = refused_by;
        match incident {
            IncidentWrite::Put(item) => {
                self.unless_own_incident_write(item, error, incident_then)
                    .await
            }
            IncidentWrite::Unchanged { .. } | IncidentWrite::NotConcerned => {
                self.unless_own_alarm_write(alarm, error, alarm_then).await
            }
        }
    }

    async fn save_incident(&self, item: &IncidentItem) -> Result<(), StateError> {
        let sent = self.send_put(self.incident_put(item)?).await;
        let Err(e) = sent else { return Ok(()) };
        if let Some(PutItemError::ConditionalCheckFailedException(c)) = e.as_service_error() {
            let refused_by = c.item().cloned();
            let error = StateError::IncidentChanged {
                key: item.record.key.clone(),
                expected: item.version.saturating_sub(1),
            };
            return self
                .unless_own_incident_write(item, error, refused_by)
                .await;
        }
        if is_ambiguous(&e) {
            let error = AwsError::from_sdk(SERVICE, "PutItem", e).into();
            return self.unless_own_incident_write(item, error, None).await;
        }
        Err(AwsError::from_sdk(SERVICE, "PutItem", e).into())
    }
}

impl DynamoStateStore {
    /// One conditional item of a transaction (`alarm_put`, `incident_put`) sent alone as
    /// a PutItem, with the same condition and the refused item returned.
    async fn send_put(
        &self,
        put: Put,
    ) -> Result<
        aws_sdk_dynamodb::operation::put_item::PutItemOutput,
        aws_sdk_dynamodb::error::SdkError<PutItemError>,
    > {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_values(put.expression_attribute_values)
            .set_return_values_on_condition_check_failure(
                put.return_values_on_condition_check_failure,
            )
            .send()
            .await
    }

    /// The alarm's item alone, conditional on its time (no incident concerned).
    async fn put_alarm_alone(&self, alarm: &AlarmItem) -> Result<(), StateError> {
        let sent = self.send_put(self.alarm_put(alarm)?).await;
        let Err(e) = sent else { return Ok(()) };
        if let Some(PutItemError::ConditionalCheckFailedException(c)) = e.as_service_error() {
            let refused_by = c.item().cloned();
            let conflict = StateError::AlarmNotNewer {
                arn: alarm.arn.clone(),
                changed_at: iso(alarm.changed_at),
            };
            return self
                .unless_own_alarm_write(alarm, conflict, refused_by)
                .await;
        }
        if is_ambiguous(&e) {
            let error = AwsError::from_sdk(SERVICE, "PutItem", e).into();
            return self.unless_own_alarm_write(alarm, error, None).await;
        }
        Err(AwsError::from_sdk(SERVICE, "PutItem", e).into())
    }

    /// After a conditional failure or an ambiguous one, looks at the incident item as
    /// it is (`refused_by`: the item the condition failed on, when DynamoDB returned it;
    /// else read back): `Ok` when it holds `written` (its version by its writer), the
    /// lost answer's write; `error` otherwise (also when the read fails: the caller's
    /// retry reads again).
    pub(crate) async fn unless_own_incident_write(
        &self,
        written: &IncidentItem,
        error: StateError,
        refused_by: Option<Item>,
    ) -> Result<(), StateError> {
        let Some(by) = written.writer() else {
            return Err(error);
        };
        let now = match refused_by {
            Some(item) => parse_incident(&written.record.key, &item).map(Some),
            None => self.incident(&written.record.key).await,
        };
        match now {
            Ok(Some(now)) if now.has_write(written.version, by) => {
                info!(
                    version = written.version,
                    stored_version = now.version,
                    error = %error,
                    "own write found committed after its answer was lost; continuing"
                );
                Ok(())
            }
            Ok(_) => Err(error),
            Err(read) => {
                warn!(error = %error, read_error = %read, "could not read the incident back after a failed write");
                Err(error)
            }
        }
    }

    /// The same for an alarm item: `Ok` when it holds this transition by this writer.
    pub(crate) async fn unless_own_alarm_write(
        &self,
        written: &AlarmItem,
        error: StateError,
        refused_by: Option<Item>,
    ) -> Result<(), StateError> {
        if written.writer.is_empty() {
            return Err(error);
        }
        let now = match refused_by {
            Some(item) => parse_alarm(&written.arn, &item).map(Some),
            None => self.alarm(&written.arn).await,
        };
        match now {
            Ok(Some(now))
                if now.changed_at == written.changed_at
                    && now.writer == written.writer
                    && now.held == written.held =>
            {
                info!(error = %error, "own alarm write found committed after its answer was lost; continuing");
                Ok(())
            }
            Ok(_) => Err(error),
            Err(read) => {
                warn!(error = %error, read_error = %read, "could not read the alarm back after a failed write");
                Err(error)
            }
        }
    }
}

/// An in-memory [`StateStore`] with the same conditions, for tests of handlers.
#[cfg(any(test, feature = "testing"))]
pub mod memory {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    pub struct MemoryStateStore {
        pub alarms: Mutex<HashMap<String, AlarmItem>>,
        pub incidents: Mutex<HashMap<String, IncidentItem>>,
        /// Number of successful writes (apply or save), for assertions.
        pub writes: Mutex<usize>,
    }

    impl MemoryStateStore {
        pub fn incident_now(&self, key: &str) -> Option<IncidentItem> {
            self.incidents.lock().ok()?.get(key).cloned()
        }
        pub fn alarm_now(&self, arn: &str) -> Option<AlarmItem> {
            self.alarms.lock().ok()?.get(arn).cloned()
        }
    }

    fn poisoned() -> StateError {
        StateError::Corrupt {
            pk: String::new(),
            reason: "memory store lock poisoned".into(),
        }
    }

    /// The incident side of a write, under the same conditions as DynamoDB's: nothing,
    /// a check that the item is still at the version read, or a put of the next version.
    /// Checked before the caller writes its alarm item, so a refusal writes nothing.
    pub fn apply_incident_write(
        incidents: &mut HashMap<String, IncidentItem>,
        incident: &IncidentWrite<'_>,
    ) -> Result<(), StateError> {
        match incident {
            IncidentWrite::NotConcerned => {}
            IncidentWrite::Unchanged { key, version } => {
                if incidents.get(*key).map(|c| c.version) != *version {
                    return Err(StateError::IncidentChanged {
                        key: key.to_string(),
                        expected: version.unwrap_or(0),
                    });
                }
            }
            IncidentWrite::Put(i) => {
                let current = incidents.get(&i.record.key).map(|c| c.version).unwrap_or(0);
                if current + 1 != i.version {
                    return Err(StateError::IncidentChanged {
                        key: i.record.key.clone(),
                        expected: i.version.saturating_sub(1),
                    });
                }
                incidents.insert(i.record.key.clone(), (*i).clone());
            }
        }
        Ok(())
    }

    #[async_trait]
    impl StateStore for MemoryStateStore {
        async fn alarm(&self, arn: &str) -> Result<Option<AlarmItem>, StateError> {
            Ok(self
                .alarms
                .lock()
                .map_err(|_| poisoned())?
                .get(arn)
                .cloned())
        }

        async fn incident(&self, key: &str) -> Result<Option<IncidentItem>, StateError> {
            Ok(self
                .incidents
                .lock()
                .map_err(|_| poisoned())?
                .get(key)
                .cloned())
        }

        async fn apply(
            &self,
            alarm: &AlarmItem,
            incident: IncidentWrite<'_>,
        ) -> Result<(), StateError> {
            let mut alarms = self.alarms.lock().map_err(|_| poisoned())?;
            let mut incidents = self.incidents.lock().map_err(|_| poisoned())?;
            if alarms
                .get(&alarm.arn)
                .is_some_and(|a| a.changed_at >= alarm.changed_at)
            {
                return Err(StateError::AlarmNotNewer {
                    arn: alarm.arn.clone(),
                    changed_at: iso(alarm.changed_at),
                });
            }
            apply_incident_write(&mut incidents, &incident)?;
            alarms.insert(alarm.arn.clone(), alarm.clone());
            *self.writes.lock().map_err(|_| poisoned())? += 1;
            Ok(())
        }

        async fn save_incident(&self, item: &IncidentItem) -> Result<(), StateError> {
            let mut incidents = self.incidents.lock().map_err(|_| poisoned())?;
            let current = incidents
                .get(&item.record.key)
                .map(|c| c.version)
                .unwrap_or(0);
            if current + 1 != item.version {
                return Err(StateError::IncidentChanged {
                    key: item.record.key.clone(),
                    expected: item.version.saturating_sub(1),
                });
            }
            incidents.insert(item.record.key.clone(), item.clone());
            *self.writes.lock().map_err(|_| poisoned())? += 1;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::{IncidentRef, Note};
    use crate::mock_client;
    use crate::notification::IncidentStatus;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, TransactionCanceledException,
    };
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_smithy_mocks::mock;
    use aws_smithy_types::error::ErrorMetadata;

    const TABLE: &str = "incident-state";
    const ARN: &str = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down";
    const KEY: &str = "VPN connection vpn-1 is DOWN";

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn alarm() -> AlarmItem {
        AlarmItem {
            arn: ARN.into(),
            changed_at: at("2026-11-25T10:01:00.490Z"),
            state: AlarmState::Alarm,
            incident_key: KEY.into(),
            writer: "req-1".into(),
            held: None,
        }
    }

    fn record() -> IncidentRecord {
        IncidentRecord {
            key: KEY.into(),
            status: IncidentStatus::Open,
            incident: Some(IncidentRef::OpsCenter("oi-0123456789ab".into())),
            title: KEY.into(),
            summary: "s".into(),
            impact: crate::incident::Impact::MEDIUM,
            opened_at: at("2026-11-25T10:01:00.490Z"),
            resolved_at: None,
            alarms: BTreeMap::new(),
            runbook_execution: None,
            timeline: vec![],
            account: String::new(),
            region: String::new(),
            roles: Default::default(),
            milestones: Default::default(),
            findings: vec![],
            runbook: None,
            escalation: None,
            peak_impact: None,
            account_info: None,
        }
    }

    fn incident(version: u64) -> IncidentItem {
        IncidentItem {
            version,
            record: record(),
            pending: vec![Effect::AddNote {
                note: Note {
                    title: "t".into(),
                    text: "x".into(),
                    at: at("2026-11-25T10:02:00Z"),
                    data: BTreeMap::new(),
                },
            }],
            lease_until: Some(at("2026-11-25T10:03:00Z")),
            lease_holder: Some("req-1".into()),
            writes: vec![
                WriteMark {
                    version: version.saturating_sub(1),
                    by: "req-0".into(),
                },
                WriteMark {
                    version,
                    by: "req-1".into(),
                },
            ],
            changes: vec!["req-0".into(), "req-1".into()],
        }
    }

    /// The stored item of `incident(version)` as another invocation wrote it.
    fn written_by_other(version: u64) -> Item {
        let mut other = incident(version);
        other.writes = vec![WriteMark {
            version,
            by: "req-other".into(),
        }];
        incident_item(&other).unwrap()
    }

    fn get_returning(item: Option<Item>) -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(|r| r.consistent_read() == Some(true))
            .then_output(move || GetItemOutput::builder().set_item(item.clone()).build())
    }

    fn unchanged(version: Option<u64>) -> IncidentWrite<'static> {
        IncidentWrite::Unchanged { key: KEY, version }
    }

    fn num(v: Option<&AttributeValue>) -> &str {
        v.and_then(|v| v.as_n().ok())
            .map(String::as_str)
            .unwrap_or("")
    }

    #[tokio::test]
    async fn apply_without_incident_change_puts_the_alarm_and_checks_the_incident_as_read() {
        let put = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|tx| {
                let items = tx.transact_items();
                assert_eq!(items.len(), 2);
                // The decision was made on version 6 of the incident: it must still be so.
                let check = items[1].condition_check().unwrap();
                assert_eq!(check.table_name(), TABLE);
                assert_eq!(
                    check.key()["pk"].as_s().unwrap(),
                    &format!("incident#{KEY}")
                );
                assert_eq!(check.condition_expression(), "version = :v");
                assert_eq!(
                    num(check.expression_attribute_values().unwrap().get(":v")),
                    "6"
                );
                let r = items[0].put().unwrap();
                assert_eq!(r.table_name(), TABLE);
                let item = r.item();
                assert_eq!(item["pk"].as_s().unwrap(), &format!("alarm#{ARN}"));
                assert_eq!(num(item.get("changed_at_ms")), "1795600860490");
                assert_eq!(
                    item["changed_at"].as_s().unwrap(),
                    "2026-11-25T10:01:00.490Z"
                );
                assert_eq!(item["state"].as_s().unwrap(), "ALARM");
                assert_eq!(item["incident_key"].as_s().unwrap(), KEY);
                assert_eq!(item["writer"].as_s().unwrap(), "req-1");
                // 400 days after the change.
                assert_eq!(
                    num(item.get("expires_at")),
                    (1_795_600_860 + 400 * 86_400).to_string()
                );
                assert_eq!(
                    r.condition_expression(),
                    Some("attribute_not_exists(pk) OR changed_at_ms < :t")
                );
                assert_eq!(
                    num(r.expression_attribute_values().unwrap().get(":t")),
                    "1795600860490"
                );
                true
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let absent = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|tx| {
                tx.transact_items()[1]
                    .condition_check()
                    .unwrap()
                    .condition_expression()
                    == "attribute_not_exists(pk)"
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let store = DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&put, &absent]), TABLE);
        store.apply(&alarm(), unchanged(Some(6))).await.unwrap();
        store.apply(&alarm(), unchanged(None)).await.unwrap();
        assert_eq!((put.num_calls(), absent.num_calls()), (1, 1));
    }

    /// The race the concurrent storm found: an OK decided on "no incident" while
    /// another invocation opened one for the same alarm. The check on the incident
    /// refuses it; the caller reads again and resolves instead.
    #[tokio::test]
    async fn unchanged_decision_on_a_stale_read_is_a_conflict() {
        let opened_meanwhile = incident_item(&incident(1)).unwrap();
        let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(move || {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .cancellation_reasons(CancellationReason::builder().code("None").build())
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("ConditionalCheckFailed")
                            .set_item(Some(opened_meanwhile.clone()))
                            .build(),
                    )
                    .build(),
            )
        });
        // Read back: the alarm item is not this write (the write did not happen).
        let alarm_back = get_returning(Some(alarm_item(&AlarmItem {
            writer: "req-other".into(),
            ..alarm()
        })));
        let store =
            DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&tx, &alarm_back]), TABLE);
        let e = store.apply(&alarm(), unchanged(None)).await.unwrap_err();
        assert!(
            matches!(e, StateError::IncidentChanged { expected: 0, .. }),
            "{e}"
        );
        assert_eq!(e.lambda_error_type(), "Retryable.Conflict");
    }

    #[tokio::test]
    async fn apply_with_incident_is_one_transaction_with_version_condition() {
        let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                let items = r.transact_items();
                assert_eq!(items.len(), 2);
                let a = items[0].put().unwrap();
                assert_eq!(a.item()["pk"].as_s().unwrap(), &format!("alarm#{ARN}"));
                let i = items[1].put().unwrap();
                assert_eq!(i.table_name(), TABLE);
                assert_eq!(i.item()["pk"].as_s().unwrap(), &format!("incident#{KEY}"));
                assert_eq!(num(i.item().get("version")), "4");
                assert_eq!(i.item()["status"].as_s().unwrap(), "open");
                assert_eq!(i.item()["incident_ref"].as_s().unwrap(), "oi-0123456789ab");
                assert_eq!(num(i.item().get("lease_until_ms")), "1795600980000");
                assert!(i.item()["pending"]
                    .as_s()
                    .unwrap()
                    .contains("\"effect\":\"add_note\""));
                assert_eq!(i.condition_expression(), Some("version = :v"));
                assert_eq!(num(i.expression_attribute_values().unwrap().get(":v")), "3");
                // The owner token travels in the same conditional write.
                assert_eq!(i.item()["lease_holder"].as_s().unwrap(), "req-1");
                let writes: Vec<&str> = i.item()["writes"]
                    .as_l()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_s().unwrap().as_str())
                    .collect();
                assert_eq!(writes, ["3:req-0", "4:req-1"]);
                assert_eq!(i.item()["changes"].as_l().unwrap().len(), 2);
                assert_eq!(a.item()["writer"].as_s().unwrap(), "req-1");
                true
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let store = DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&tx]), TABLE);
        store
            .apply(&alarm(), IncidentWrite::Put(&incident(4)))
            .await
            .unwrap();
        assert_eq!(tx.num_calls(), 1);
    }

    #[tokio::test]
    async fn first_incident_version_requires_absence() {
        let put = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(|r| {
                assert_eq!(r.condition_expression(), Some("attribute_not_exists(pk)"));
                assert!(r.expression_attribute_values().is_none());
                true
            })
            .then_output(|| PutItemOutput::builder().build());
        let store = DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&put]), TABLE);
        store.save_incident(&incident(1)).await.unwrap();
    }

    #[tokio::test]
    async fn cancelled_transaction_names_the_conflict() {
        let cancel = |codes: [&'static str; 2]| {
            mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(move || {
                TransactWriteItemsError::TransactionCanceledException(
                    TransactionCanceledException::builder()
                        .cancellation_reasons(CancellationReason::builder().code(codes[0]).build())
                        .cancellation_reasons(CancellationReason::builder().code(codes[1]).build())
                        .build(),
                )
            })
        };
        let alarm_first = cancel(["ConditionalCheckFailed", "None"]);
        let incident_second = cancel(["None", "ConditionalCheckFailed"]);
        // After each cancellation the item is read back: another invocation's version 2.
        let other = get_returning(Some(written_by_other(2)));
        let other_again = get_returning(Some(written_by_other(2)));
        let store = DynamoStateStore::new(
            mock_client!(
                aws_sdk_dynamodb,
                [&alarm_first, &other, &incident_second, &other_again]
            ),
            TABLE,
        );
        let e = store
            .apply(&alarm(), IncidentWrite::Put(&incident(2)))
            .await
            .unwrap_err();
        assert!(matches!(e, StateError::AlarmNotNewer { .. }), "{e}");
        assert_eq!(e.lambda_error_type(), "Retryable.Conflict");
        let e = store
            .apply(&alarm(), IncidentWrite::Put(&incident(2)))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "state table: incident \"VPN connection vpn-1 is DOWN\" changed since it was read (expected version 1)"
        );
        assert_eq!((other.num_calls(), other_again.num_calls()), (1, 1));
    }

    /// The issue's case: the transaction commits, its answer comes after the SDK's
    /// attempt timeout. Reading the incident back finds this invocation's write.
    #[tokio::test]
    async fn transaction_committed_then_timed_out_is_recognized_as_own_write() {
        let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let mine = incident_item(&incident(4)).unwrap();
        let read_back = mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(|r| {
                r.consistent_read() == Some(true)
                    && r.key().unwrap()["pk"].as_s().unwrap() == &format!("incident#{KEY}")
            })
            .then_output(move || {
                GetItemOutput::builder()
                    .set_item(Some(mine.clone()))
                    .build()
            });
        let lose = crate::testing::LoseAnswers::new(vec![(
            "TransactWriteItems",
            1,
            crate::testing::Loss::Timeout,
        )]);
        let store = DynamoStateStore::new(
            crate::mock_client_losing!(aws_sdk_dynamodb, [&tx, &read_back], lose),
            TABLE,
        );
        store
            .apply(&alarm(), IncidentWrite::Put(&incident(4)))
            .await
            .unwrap();
        assert_eq!((tx.num_calls(), read_back.num_calls()), (1, 1));
    }

    /// moto's answer to the SDK's retry of a committed transaction (and DynamoDB's after
    /// the token's 10 minutes): both conditions fail, on this invocation's own write.
    /// DynamoDB returns the item each refused condition saw (ALL_OLD): no read needed.
    #[tokio::test]
    async fn transaction_cancelled_by_its_own_earlier_attempt_is_own_write() {
        let mine = incident_item(&incident(4)).unwrap();
        let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                r.transact_items().iter().all(|i| {
                    i.put().unwrap().return_values_on_condition_check_failure()
                        == Some(&ReturnValuesOnConditionCheckFailure::AllOld)
                })
            })
            .then_error(move || {
                TransactWriteItemsError::TransactionCanceledException(
                    TransactionCanceledException::builder()
                        .cancellation_reasons(
                            CancellationReason::builder()
                                .code("ConditionalCheckFailed")
                                .set_item(Some(alarm_item(&alarm())))
                                .build(),
                        )
                        .cancellation_reasons(
                            CancellationReason::builder()
                                .code("ConditionalCheckFailed")
                                .set_item(Some(mine.clone()))
                                .build(),
                        )
                        .build(),
                )
            });
        let store = DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&tx]), TABLE);
        store
            .apply(&alarm(), IncidentWrite::Put(&incident(4)))
            .await
            .unwrap();
        assert_eq!(tx.num_calls(), 1);
    }

    /// Without the item in the answer (moto's transactions), the item is read back.
    #[tokio::test]
    async fn transaction_cancelled_without_items_reads_back() {
        let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(|| {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("ConditionalCheckFailed")
                            .build(),
                    )
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("ConditionalCheckFailed")
                            .build(),
                    )
                    .build(),
            )
        });
        let read_back = get_returning(Some(incident_item(&incident(4)).unwrap()));
        let store = DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&tx, &read_back]), TABLE);
        store
            .apply(&alarm(), IncidentWrite::Put(&incident(4)))
            .await
            .unwrap();
        assert_eq!((tx.num_calls(), read_back.num_calls()), (1, 1));
    }

    /// A conflict caused by another invocation's write stays a conflict (read again,
    /// decide anew), and an ambiguous failure whose write is not there stays an error.
    #[tokio::test]
    async fn conflict_or_lost_answer_without_own_write_is_not_taken_for_one() {
        let cancelled = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(|| {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .cancellation_reasons(CancellationReason::builder().code("None").build())
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("ConditionalCheckFailed")
                            .build(),
                    )
                    .build(),
            )
        });
        let other = get_returning(Some(written_by_other(4)));
        let reset = mock!(aws_sdk_dynamodb::Client::put_item)
            .then_output(|| PutItemOutput::builder().build());
        // Read back: still the version before ours (the write never arrived).
        let before = get_returning(Some(incident_item(&incident(3)).unwrap()));
        let lose =
            crate::testing::LoseAnswers::new(vec![("PutItem", 1, crate::testing::Loss::Reset)]);
        let store = DynamoStateStore::new(
            crate::mock_client_losing!(
                aws_sdk_dynamodb,
                [&cancelled, &other, &reset, &before],
                lose
            ),
            TABLE,
        );
        let e = store
            .apply(&alarm(), IncidentWrite::Put(&incident(4)))
            .await
            .unwrap_err();
        assert!(
            matches!(e, StateError::IncidentChanged { expected: 3, .. }),
            "{e}"
        );
        let e = store.save_incident(&incident(4)).await.unwrap_err();
        assert_eq!(e.lambda_error_type(), "Retryable.AwsUnavailable");
        assert!(e.to_string().contains("could not reach the service"), "{e}");
        assert_eq!(
            (
                cancelled.num_calls(),
                other.num_calls(),
                reset.num_calls(),
                before.num_calls()
            ),
            (1, 1, 1, 1)
        );
    }

    /// The SDK's retry of a committed conditional put fails its condition; meanwhile
    /// another invocation already wrote on top (ours was its base): still recognized.
    #[tokio::test]
    async fn put_conflict_caused_by_own_write_under_a_later_one_is_own_write() {
        let mut later = incident(5);
        later.writes = vec![
            WriteMark {
                version: 4,
                by: "req-1".into(),
            },
            WriteMark {
                version: 5,
                by: "req-other".into(),
            },
        ];
        let later = incident_item(&later).unwrap();
        let failed = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(|r| {
                r.condition_expression() == Some("version = :v")
                    && r.return_values_on_condition_check_failure()
                        == Some(&ReturnValuesOnConditionCheckFailure::AllOld)
            })
            .then_error(move || {
                PutItemError::ConditionalCheckFailedException(
                    ConditionalCheckFailedException::builder()
                        .set_item(Some(later.clone()))
                        .build(),
                )
            });
        // The refused put returned the item: no read.
        let store = DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&failed]), TABLE);
        store.save_incident(&incident(4)).await.unwrap();
        assert_eq!(failed.num_calls(), 1);
    }

    /// A 500 after the put was sent ("may or may not have succeeded"): read back, ours.
    #[tokio::test]
    async fn put_answered_500_after_commit_is_read_back() {
        let failed = mock!(aws_sdk_dynamodb::Client::put_item).then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(500).unwrap(),
                aws_smithy_types::body::SdkBody::from(
                    r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#,
                ),
            )
        });
        let read_back = get_returning(Some(incident_item(&incident(4)).unwrap()));
        let store =
            DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&failed, &read_back]), TABLE);
        store.save_incident(&incident(4)).await.unwrap();
        assert_eq!((failed.num_calls(), read_back.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn alarm_write_lost_or_refused_is_recognized_by_its_writer() {
        let lost = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let mine = get_returning(Some(alarm_item(&alarm())));
        let refused = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(|| {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("ConditionalCheckFailed")
                            .build(),
                    )
                    .cancellation_reasons(CancellationReason::builder().code("None").build())
                    .build(),
            )
        });
        let theirs = get_returning(Some(alarm_item(&AlarmItem {
            writer: "req-other".into(),
            ..alarm()
        })));
        let lose = crate::testing::LoseAnswers::new(vec![(
            "TransactWriteItems",
            1,
            crate::testing::Loss::Timeout,
        )]);
        let store = DynamoStateStore::new(
            crate::mock_client_losing!(aws_sdk_dynamodb, [&lost, &mine, &refused, &theirs], lose),
            TABLE,
        );
        store.apply(&alarm(), unchanged(None)).await.unwrap();
        let e = store.apply(&alarm(), unchanged(None)).await.unwrap_err();
        assert!(matches!(e, StateError::AlarmNotNewer { .. }), "{e}");
        assert_eq!(
            (
                lost.num_calls(),
                mine.num_calls(),
                refused.num_calls(),
                theirs.num_calls()
            ),
            (1, 1, 1, 1)
        );
    }

    #[tokio::test]
    async fn failed_read_back_returns_the_write_error() {
        let lost = mock!(aws_sdk_dynamodb::Client::put_item)
            .then_output(|| PutItemOutput::builder().build());
        let unreadable = mock!(aws_sdk_dynamodb::Client::get_item).then_error(|| {
            aws_sdk_dynamodb::operation::get_item::GetItemError::generic(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate of requests exceeds the allowed throughput.")
                    .build(),
            )
        });
        let lose =
            crate::testing::LoseAnswers::new(vec![("PutItem", 1, crate::testing::Loss::Timeout)]);
        let store = DynamoStateStore::new(
            crate::mock_client_losing!(aws_sdk_dynamodb, [&lost, &unreadable], lose),
            TABLE,
        );
        let e = store.save_incident(&incident(4)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "dynamodb PutItem failed (no error code): request timed out"
        );
        assert!(e.retryable());
    }

    #[test]
    fn owner_tokens_leases_and_marks() {
        let now = at("2026-11-25T10:00:00Z");
        let o = Owner::new("req-9", Some(now + Duration::seconds(30)));
        assert_eq!(
            o.lease_until(now, Duration::seconds(90)),
            now + Duration::seconds(30)
        );
        assert_eq!(
            Owner::new("req-9", None).lease_until(now, Duration::seconds(90)),
            now + Duration::seconds(90)
        );
        assert!(o.nearly_out_of_time(now + Duration::seconds(25), Duration::seconds(10)));
        assert!(!o.nearly_out_of_time(now, Duration::seconds(10)));
        // An empty token never matches another one.
        assert_ne!(Owner::new("", None).token(), Owner::new("", None).token());
        let at_epoch = Owner::from_invocation("r", std::time::SystemTime::UNIX_EPOCH);
        assert_eq!(at_epoch.deadline(), None);

        let first = IncidentItem::decided(None, record(), vec![], &o, now);
        assert_eq!((first.version, first.writer()), (1, Some("req-9")));
        assert_eq!(
            (first.lease_until, first.lease_holder.as_deref()),
            (None, None)
        );
        let mut item = first;
        for i in 0..20 {
            item = item.next(&Owner::new(format!("req-{i}"), None));
        }
        assert_eq!(item.writes.len(), WRITES_KEPT);
        assert_eq!(item.writer(), Some("req-19"));
        assert!(item.has_write(21, "req-19") && !item.has_write(1, "req-9"));
        assert!(item.has_change("req-9"));
        let leased = IncidentItem::decided(
            Some(&item),
            record(),
            incident(1).pending,
            &o,
            now + Duration::seconds(30),
        );
        assert_eq!(leased.lease_holder_at(now), Some("req-9"));
        assert_eq!(leased.lease_holder_at(now + Duration::seconds(31)), None);
        assert_eq!(leased.clone().released().lease_holder_at(now), None);
        let mut nothing_pending = leased.clone();
        nothing_pending.pending.clear();
        assert_eq!(nothing_pending.lease_holder_at(now), None);
    }

    #[tokio::test]
    async fn conditional_failure_is_conflict_and_throttling_is_retryable() {
        let failed = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_error(|| {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("ConditionalCheckFailed")
                            .build(),
                    )
                    .cancellation_reasons(CancellationReason::builder().code("None").build())
                    .build(),
            )
        });
        let gone = get_returning(None);
        // Throttled: refused before it ran, nothing to read back.
        let throttled = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
            PutItemError::generic(
                ErrorMetadata::builder()
                    .code("ProvisionedThroughputExceededException")
                    .message("slow down")
                    .build(),
            )
        });
        let store = DynamoStateStore::new(
            mock_client!(aws_sdk_dynamodb, [&failed, &gone, &throttled]),
            TABLE,
        );
        let e = store.apply(&alarm(), unchanged(None)).await.unwrap_err();
        assert!(matches!(e, StateError::AlarmNotNewer { .. }));
        let e = store.save_incident(&incident(3)).await.unwrap_err();
        assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
    }

    #[tokio::test]
    async fn reads_round_trip_what_writes_store() {
        let a = alarm_item(&alarm());
        let i = incident_item(&incident(7)).unwrap();
        let get_alarm = mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(|r| {
                assert_eq!(r.consistent_read(), Some(true));
                assert_eq!(
                    r.key().unwrap()["pk"].as_s().unwrap(),
                    &format!("alarm#{ARN}")
                );
                true
            })
            .then_output(move || GetItemOutput::builder().set_item(Some(a.clone())).build());
        let get_incident = mock!(aws_sdk_dynamodb::Client::get_item)
            .then_output(move || GetItemOutput::builder().set_item(Some(i.clone())).build());
        let missing = mock!(aws_sdk_dynamodb::Client::get_item)
            .then_output(|| GetItemOutput::builder().build());
        let store = DynamoStateStore::new(
            mock_client!(aws_sdk_dynamodb, [&get_alarm, &get_incident, &missing]),
            TABLE,
        );
        assert_eq!(store.alarm(ARN).await.unwrap(), Some(alarm()));
        assert_eq!(store.incident(KEY).await.unwrap(), Some(incident(7)));
        assert_eq!(store.incident("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn corrupt_item_is_a_clear_non_retryable_error() {
        let bad = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
            GetItemOutput::builder()
                .item("pk", AttributeValue::S(format!("incident#{KEY}")))
                .item("version", AttributeValue::N("2".into()))
                .item("record", AttributeValue::S("{not json".into()))
                .build()
        });
        let store = DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&bad]), TABLE);
        let e = store.incident(KEY).await.unwrap_err();
        assert!(!e.retryable());
        assert!(
            e.to_string()
                .starts_with("state table: item \"incident#VPN connection vpn-1 is DOWN\" is unreadable: record is not an incident record"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn resolved_incident_expires_ninety_days_after_resolution() {
        let mut item = incident(2);
        item.record.status = IncidentStatus::Resolved;
        item.record.resolved_at = Some(at("2026-11-25T10:35:00Z"));
        item.pending.clear();
        item.lease_until = None;
        let stored = incident_item(&item).unwrap();
        assert_eq!(
            num(stored.get("expires_at")),
            (1_795_602_900 + 90 * 86_400).to_string()
        );
        assert_eq!(stored["status"].as_s().unwrap(), "resolved");
        assert!(!stored.contains_key("pending") && !stored.contains_key("lease_until_ms"));
    }

    #[tokio::test]
    async fn memory_store_enforces_the_same_conditions() {
        let store = memory::MemoryStateStore::default();
        store
            .apply(&alarm(), IncidentWrite::Put(&incident(1)))
            .await
            .unwrap();
        assert!(matches!(
            store.apply(&alarm(), unchanged(None)).await,
            Err(StateError::AlarmNotNewer { .. })
        ));
        let later = AlarmItem {
            changed_at: alarm().changed_at + Duration::seconds(1),
            ..alarm()
        };
        // Decided on "no incident", but version 1 exists now.
        assert!(matches!(
            store.apply(&later, unchanged(None)).await,
            Err(StateError::IncidentChanged { .. })
        ));
        store.apply(&later, unchanged(Some(1))).await.unwrap();
        assert!(matches!(
            store.save_incident(&incident(1)).await,
            Err(StateError::IncidentChanged { .. })
        ));
        store.save_incident(&incident(2)).await.unwrap();
        assert_eq!(store.incident_now(KEY).map(|i| i.version), Some(2));
    }
}
