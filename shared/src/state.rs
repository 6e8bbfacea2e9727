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

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};

use crate::alarm::AlarmState;
use crate::error::{AwsError, Retryable};
use crate::hold::Hold;
use crate::lifecycle::{Effect, IncidentRecord};
use crate::text::truncate;

pub(crate) const SERVICE: &str = "dynamodb";
/// How long an alarm's last transition is remembered after it happened.
pub const ALARM_RETENTION_DAYS: i64 = 400;
/// How long a resolved incident's record is kept (a re-alarm after that opens anew anyway).
pub const RESOLVED_RETENTION_DAYS: i64 = 90;

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
}

impl IncidentItem {
    /// The same item at the next version.
    pub fn next(&self) -> IncidentItem {
        IncidentItem {
            version: self.version + 1,
            ..self.clone()
        }
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
    /// same transaction, writes `incident` at its version
    /// ([`StateError::IncidentChanged`] if someone wrote it meanwhile).
    async fn apply(
        &self,
        alarm: &AlarmItem,
        incident: Option<&IncidentItem>,
    ) -> Result<(), StateError>;

    /// Writes `item` at its version (progress of pending effects, lease changes).
    async fn save_incident(&self, item: &IncidentItem) -> Result<(), StateError>;
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
            .build()
            .map_err(|e| build_error(&alarm_pk(&alarm.arn), e))
    }

    pub(crate) fn incident_put(&self, item: &IncidentItem) -> Result<Put, StateError> {
        let pk = incident_pk(&item.record.key);
        let b = Put::builder()
            .table_name(&self.table)
            .set_item(Some(incident_item(item)?));
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
    Ok(item)
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
    Ok(IncidentItem {
        version,
        record,
        pending,
        lease_until,
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
        incident: Option<&IncidentItem>,
    ) -> Result<(), StateError> {
        let alarm_conflict = || StateError::AlarmNotNewer {
            arn: alarm.arn.clone(),
            changed_at: iso(alarm.changed_at),
        };
        let Some(incident) = incident else {
            let put = self.alarm_put(alarm)?;
            return match self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(put.item))
                .set_condition_expression(put.condition_expression)
                .set_expression_attribute_values(put.expression_attribute_values)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e)
                    if matches!(
                        e.as_service_error(),
                        Some(PutItemError::ConditionalCheckFailedException(_))
                    ) =>
                {
                    Err(alarm_conflict())
                }
                Err(e) => Err(AwsError::from_sdk(SERVICE, "PutItem", e).into()),
            };
        };
        let items = vec![
            TransactWriteItem::builder()
                .put(self.alarm_put(alarm)?)
                .build(),
            TransactWriteItem::builder()
                .put(self.incident_put(incident)?)
                .build(),
        ];
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
                    e.as_service_error()
                {
                    // Reasons come in the order of the items: [alarm, incident].
                    let codes: Vec<&str> = c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None"))
                        .collect();
                    match (codes.first().copied(), codes.get(1).copied()) {
                        (Some("ConditionalCheckFailed"), _) => return Err(alarm_conflict()),
                        (_, Some("ConditionalCheckFailed" | "TransactionConflict")) => {
                            return Err(StateError::IncidentChanged {
                                key: incident.record.key.clone(),
                                expected: incident.version.saturating_sub(1),
                            })
                        }
                        (Some("TransactionConflict"), _) => return Err(alarm_conflict()),
                        _ => {}
                    }
                }
                Err(AwsError::from_sdk(SERVICE, "TransactWriteItems", e).into())
            }
        }
    }

    async fn save_incident(&self, item: &IncidentItem) -> Result<(), StateError> {
        let put = self.incident_put(item)?;
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Err(StateError::IncidentChanged {
                    key: item.record.key.clone(),
                    expected: item.version.saturating_sub(1),
                })
            }
            Err(e) => Err(AwsError::from_sdk(SERVICE, "PutItem", e).into()),
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
            incident: Option<&IncidentItem>,
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
            if let Some(i) = incident {
                let current = incidents.get(&i.record.key).map(|c| c.version).unwrap_or(0);
                if current + 1 != i.version {
                    return Err(StateError::IncidentChanged {
                        key: i.record.key.clone(),
                        expected: i.version.saturating_sub(1),
                    });
                }
                incidents.insert(i.record.key.clone(), i.clone());
            }
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
        }
    }

    fn num(v: Option<&AttributeValue>) -> &str {
        v.and_then(|v| v.as_n().ok())
            .map(String::as_str)
            .unwrap_or("")
    }

    #[tokio::test]
    async fn apply_without_incident_puts_alarm_conditionally() {
        let put = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(|r| {
                assert_eq!(r.table_name(), Some(TABLE));
                let item = r.item().unwrap();
                assert_eq!(item["pk"].as_s().unwrap(), &format!("alarm#{ARN}"));
                assert_eq!(num(item.get("changed_at_ms")), "1795600860490");
                assert_eq!(
                    item["changed_at"].as_s().unwrap(),
                    "2026-11-25T10:01:00.490Z"
                );
                assert_eq!(item["state"].as_s().unwrap(), "ALARM");
                assert_eq!(item["incident_key"].as_s().unwrap(), KEY);
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
            .then_output(|| PutItemOutput::builder().build());
        let store = DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&put]), TABLE);
        store.apply(&alarm(), None).await.unwrap();
        assert_eq!(put.num_calls(), 1);
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
                true
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let store = DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&tx]), TABLE);
        store.apply(&alarm(), Some(&incident(4))).await.unwrap();
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
        let store = DynamoStateStore::new(
            mock_client!(aws_sdk_dynamodb, [&alarm_first, &incident_second]),
            TABLE,
        );
        let e = store.apply(&alarm(), Some(&incident(2))).await.unwrap_err();
        assert!(matches!(e, StateError::AlarmNotNewer { .. }), "{e}");
        assert_eq!(e.lambda_error_type(), "Retryable.Conflict");
        let e = store.apply(&alarm(), Some(&incident(2))).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "state table: incident \"VPN connection vpn-1 is DOWN\" changed since it was read (expected version 1)"
        );
    }

    #[tokio::test]
    async fn conditional_put_failure_is_conflict_and_throttling_is_retryable() {
        let failed = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder().build(),
            )
        });
        let throttled = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
            PutItemError::generic(
                ErrorMetadata::builder()
                    .code("ProvisionedThroughputExceededException")
                    .message("slow down")
                    .build(),
            )
        });
        let store =
            DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&failed, &throttled]), TABLE);
        let e = store.apply(&alarm(), None).await.unwrap_err();
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
        store.apply(&alarm(), Some(&incident(1))).await.unwrap();
        assert!(matches!(
            store.apply(&alarm(), None).await,
            Err(StateError::AlarmNotNewer { .. })
        ));
        assert!(matches!(
            store.save_incident(&incident(1)).await,
            Err(StateError::IncidentChanged { .. })
        ));
        store.save_incident(&incident(2)).await.unwrap();
        assert_eq!(store.incident_now(KEY).map(|i| i.version), Some(2));
    }
}
