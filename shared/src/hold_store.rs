//! The state-table items of held transitions and silences, beside the alarm and
//! incident items of [`crate::state`]:
//!
//! - releasing a held transition: the alarm's item is rewritten only if it still holds
//!   the hold that was read (`changed_at_ms = :t AND held_until_ms = :u`), in one
//!   transaction with the incident's item (at its version), so two releasers (a timer
//!   and a sweep) cannot both apply it, and a newer delivery is never undone;
//! - what the reconciliation sweep looks at: open incidents and held alarms, in one
//!   scan of the table;
//! - `silences`: the [`SilenceBook`], one item (`version` for conditional writes,
//!   `book` as JSON, TTL `expires_at` once every silence in it is past its retention).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::{DateTime, Utc};

use crate::error::is_ambiguous;
use crate::error::AwsError;
use crate::lifecycle::IncidentRecord;
use crate::silence::SilenceBook;
use crate::state::{
    alarm_item, alarm_pk, attr_n, attr_s, build_error, corrupt, iso, n, parse_alarm,
    parse_incident, s, AlarmItem, DynamoStateStore, IncidentWrite, Item, StateError, SERVICE,
};

/// The partition key of the silence book.
pub const SILENCES_PK: &str = "silences";
/// Scan pages read per sweep at most (1 MB each): far beyond any table this pipeline
/// keeps; reaching it is an error, never a silent partial sweep.
pub const SCAN_PAGES_MAX: usize = 1000;

/// What the reconciliation sweep checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepCandidates {
    /// Open incidents (their alarms are read).
    pub open: Vec<IncidentRecord>,
    /// Alarms whose last transition is held back.
    pub held: Vec<AlarmItem>,
}

/// Held transitions in the state table.
#[async_trait]
pub trait HoldStore: Send + Sync {
    /// Replaces the alarm item `read` (which holds a transition) by `new` (the same
    /// transition, released or held anew), only if the stored item is still `read`'s
    /// transition and hold ([`StateError::AlarmNotNewer`] otherwise: someone else
    /// released it, or a newer transition arrived), with the incident's item written,
    /// or checked as read, in the same transaction ([`IncidentWrite`]). A write whose
    /// answer was lost is recognized by `new`'s writer.
    async fn release(
        &self,
        read: &AlarmItem,
        new: &AlarmItem,
        incident: IncidentWrite<'_>,
    ) -> Result<(), StateError>;

    /// Open incidents and held alarms.
    async fn sweep_candidates(&self) -> Result<SweepCandidates, StateError>;
}

/// The silence book in the state table.
#[async_trait]
pub trait SilenceStore: Send + Sync {
    /// The book (empty, version 0, when never written).
    async fn silences(&self) -> Result<SilenceBook, StateError>;
    /// Writes `book` at `book.version + 1` if the stored one is still at
    /// `book.version`; `Ok(false)` when someone wrote it meanwhile.
    async fn save_silences(
        &self,
        book: &SilenceBook,
        now: DateTime<Utc>,
    ) -> Result<bool, StateError>;
}

/// Changes the silence book by `change` (read, change, conditional write; read again
/// on a conflict, up to `attempts`). `change` returns what to tell the caller, and
/// whether it changed the book (nothing is written otherwise).
pub async fn update_silences<T, E>(
    store: &dyn SilenceStore,
    now: DateTime<Utc>,
    attempts: u32,
    mut change: impl FnMut(&mut SilenceBook) -> Result<(T, bool), E> + Send,
) -> Result<Result<T, E>, StateError> {
    for _ in 0..attempts.max(1) {
        let mut book = store.silences().await?;
        let (out, changed) = match change(&mut book) {
            Ok(x) => x,
            Err(e) => return Ok(Err(e)),
        };
        if !changed || store.save_silences(&book, now).await? {
            return Ok(Ok(out));
        }
        tracing::info!("silences changed meanwhile; reading them again");
    }
    Err(StateError::IncidentChanged {
        key: SILENCES_PK.to_string(),
        expected: 0,
    })
}

fn release_condition(read: &AlarmItem) -> (String, HashMap<String, AttributeValue>) {
    let until = read.held.as_ref().map_or(0, |h| h.until.timestamp_millis());
    (
        "changed_at_ms = :t AND held_until_ms = :u".to_string(),
        HashMap::from([
            (":t".to_string(), n(read.changed_at.timestamp_millis())),
            (":u".to_string(), n(until)),
        ]),
    )
}

fn not_held(read: &AlarmItem) -> StateError {
    StateError::AlarmNotNewer {
        arn: read.arn.clone(),
        changed_at: iso(read.changed_at),
    }
}

#[async_trait]
impl HoldStore for DynamoStateStore {
    async fn release(
        &self,
        read: &AlarmItem,
        new: &AlarmItem,
        incident: IncidentWrite<'_>,
    ) -> Result<(), StateError> {
        let (client, table) = self.parts();
        let (condition, values) = release_condition(read);
        let alarm = Put::builder()
            .table_name(table)
            .set_item(Some(alarm_item(new)))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| build_error(&alarm_pk(&new.arn), e))?;
        let second = match incident {
            IncidentWrite::NotConcerned => {
                let sent = client
                    .put_item()
                    .table_name(table)
                    .set_item(Some(alarm.item))
                    .set_condition_expression(alarm.condition_expression)
                    .set_expression_attribute_values(alarm.expression_attribute_values)
                    .set_return_values_on_condition_check_failure(
                        alarm.return_values_on_condition_check_failure,
                    )
                    .send()
                    .await;
                let Err(e) = sent else { return Ok(()) };
                if let Some(PutItemError::ConditionalCheckFailedException(c)) = e.as_service_error()
                {
                    let refused_by = c.item().cloned();
                    return self
                        .unless_own_alarm_write(new, not_held(read), refused_by)
                        .await;
                }
                if is_ambiguous(&e) {
                    let error = AwsError::from_sdk(SERVICE, "PutItem", e).into();
                    return self.unless_own_alarm_write(new, error, None).await;
                }
                return Err(AwsError::from_sdk(SERVICE, "PutItem", e).into());
            }
            IncidentWrite::Unchanged { key, version } => TransactWriteItem::builder()
                .condition_check(self.incident_unchanged(key, version)?)
                .build(),
            IncidentWrite::Put(item) => TransactWriteItem::builder()
                .put(self.incident_put(item)?)
                .build(),
        };
        let items = vec![TransactWriteItem::builder().put(alarm).build(), second];
        let sent = client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(e) = sent else { return Ok(()) };
        let mut error = None;
        let mut refused_by: [Option<Item>; 2] = [None, None];
        if let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error()
        {
            let reasons = c.cancellation_reasons();
            let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("None")).collect();
            for (i, r) in reasons.iter().take(2).enumerate() {
                refused_by[i] = r.item().cloned();
            }
            error = match (codes.first().copied(), codes.get(1).copied()) {
                (Some("ConditionalCheckFailed" | "TransactionConflict"), _) => Some(not_held(read)),
                (_, Some("ConditionalCheckFailed" | "TransactionConflict")) => {
                    let (key, expected) = match incident {
                        IncidentWrite::Put(item) => {
                            (item.record.key.clone(), item.version.saturating_sub(1))
                        }
                        IncidentWrite::Unchanged { key, version } => {
                            (key.to_string(), version.unwrap_or(0))
                        }
                        IncidentWrite::NotConcerned => (String::new(), 0),
                    };
                    Some(StateError::IncidentChanged { key, expected })
                }
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
            _ => self.unless_own_alarm_write(new, error, alarm_then).await,
        }
    }

    async fn sweep_candidates(&self) -> Result<SweepCandidates, StateError> {
        let (client, table) = self.parts();
        let mut out = SweepCandidates::default();
        let mut start: Option<Item> = None;
        for _ in 0..SCAN_PAGES_MAX {
            let page = client
                .scan()
                .table_name(table)
                .filter_expression(
                    "(begins_with(pk, :incident) AND #status = :open) OR (begins_with(pk, :alarm) AND attribute_exists(held_until_ms))",
                )
                // `status` is a DynamoDB reserved word.
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":incident", s("incident#"))
                .expression_attribute_values(":open", s("open"))
                .expression_attribute_values(":alarm", s("alarm#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk(SERVICE, "Scan", e))?;
            for item in page.items() {
                let pk = attr_s(item, "?", "pk")?;
                if let Some(key) = pk.strip_prefix("incident#") {
                    match parse_incident(key, item) {
                        Ok(i) => out.open.push(i.record),
                        // One unreadable item must not stop the sweep of the others.
                        Err(e) => {
                            tracing::warn!(error = %e, "sweep skips an unreadable incident item")
                        }
                    }
                } else if let Some(arn) = pk.strip_prefix("alarm#") {
                    match parse_alarm(arn, item) {
                        Ok(a) => out.held.push(a),
                        Err(e) => {
                            tracing::warn!(error = %e, "sweep skips an unreadable alarm item")
                        }
                    }
                }
            }
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(out),
            }
        }
        Err(corrupt(
            "*",
            format!(
                "the state table needs more than {SCAN_PAGES_MAX} scan pages; the sweep stopped"
            ),
        ))
    }
}

#[async_trait]
impl SilenceStore for DynamoStateStore {
    async fn silences(&self) -> Result<SilenceBook, StateError> {
        let (client, table) = self.parts();
        let out = client
            .get_item()
            .table_name(table)
            .key("pk", s(SILENCES_PK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(SilenceBook::default());
        };
        let version = attr_n(&item, SILENCES_PK, "version")?.unwrap_or(0);
        let mut book: SilenceBook = serde_json::from_str(attr_s(&item, SILENCES_PK, "book")?)
            .map_err(|e| corrupt(SILENCES_PK, format!("book is not a silence book: {e}")))?;
        book.version = u64::try_from(version)
            .map_err(|_| corrupt(SILENCES_PK, format!("version {version} is negative")))?;
        Ok(book)
    }

    async fn save_silences(
        &self,
        book: &SilenceBook,
        now: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let (client, table) = self.parts();
        let text = serde_json::to_string(book)
            .map_err(|e| corrupt(SILENCES_PK, format!("book not serializable: {e}")))?;
        let b = client
            .put_item()
            .table_name(table)
            .item("pk", s(SILENCES_PK))
            .item("version", n(book.version + 1))
            .item("book", s(text))
            .item("expires_at", n(book.expires_at(now).timestamp()));
        let b = if book.version == 0 {
            b.condition_expression("attribute_not_exists(pk)")
        } else {
            b.condition_expression("version = :v")
                .expression_attribute_values(":v", n(book.version))
        };
        match b.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(AwsError::from_sdk(SERVICE, "PutItem", e).into()),
        }
    }
}

/// In-memory stores with the same conditions, for handler tests.
#[cfg(any(test, feature = "testing"))]
pub mod memory {
    use std::sync::Mutex;

    use super::*;
    use crate::state::memory::{apply_incident_write, MemoryStateStore};

    fn poisoned() -> StateError {
        corrupt("memory", "lock poisoned".into())
    }

    #[async_trait]
    impl HoldStore for MemoryStateStore {
        async fn release(
            &self,
            read: &AlarmItem,
            new: &AlarmItem,
            incident: IncidentWrite<'_>,
        ) -> Result<(), StateError> {
            let mut alarms = self.alarms.lock().map_err(|_| poisoned())?;
            let mut incidents = self.incidents.lock().map_err(|_| poisoned())?;
            let stored = alarms.get(&read.arn);
            let same = stored.is_some_and(|a| {
                a.changed_at == read.changed_at
                    && a.held.as_ref().map(|h| h.until) == read.held.as_ref().map(|h| h.until)
                    && a.held.is_some()
            });
            if !same {
                return Err(not_held(read));
            }
            apply_incident_write(&mut incidents, &incident)?;
            alarms.insert(new.arn.clone(), new.clone());
            *self.writes.lock().map_err(|_| poisoned())? += 1;
            Ok(())
        }

        async fn sweep_candidates(&self) -> Result<SweepCandidates, StateError> {
            let mut open: Vec<IncidentRecord> = self
                .incidents
                .lock()
                .map_err(|_| poisoned())?
                .values()
                .filter(|i| i.record.is_open())
                .map(|i| i.record.clone())
                .collect();
            open.sort_by(|a, b| a.key.cmp(&b.key));
            let mut held: Vec<AlarmItem> = self
                .alarms
                .lock()
                .map_err(|_| poisoned())?
                .values()
                .filter(|a| a.held.is_some())
                .cloned()
                .collect();
            held.sort_by(|a, b| a.arn.cmp(&b.arn));
            Ok(SweepCandidates { open, held })
        }
    }

    /// A silence book in memory, with the version condition.
    #[derive(Debug, Default)]
    pub struct MemorySilenceStore {
        pub book: Mutex<SilenceBook>,
        /// When set, the next save fails as a conflict (someone wrote meanwhile).
        pub conflict_once: Mutex<bool>,
    }

    impl MemorySilenceStore {
        pub fn now(&self) -> SilenceBook {
            self.book.lock().map(|b| b.clone()).unwrap_or_default()
        }
    }

    #[async_trait]
    impl SilenceStore for MemorySilenceStore {
        async fn silences(&self) -> Result<SilenceBook, StateError> {
            Ok(self.book.lock().map_err(|_| poisoned())?.clone())
        }

        async fn save_silences(
            &self,
            book: &SilenceBook,
            _now: DateTime<Utc>,
        ) -> Result<bool, StateError> {
            let mut conflict = self.conflict_once.lock().map_err(|_| poisoned())?;
            let mut stored = self.book.lock().map_err(|_| poisoned())?;
            if *conflict || stored.version != book.version {
                *conflict = false;
                return Ok(false);
            }
            *stored = SilenceBook {
                version: book.version + 1,
                ..book.clone()
            };
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::AlarmState;
    use crate::hold::{Hold, HoldCause};
    use crate::mock_client;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
    use aws_sdk_dynamodb::operation::scan::ScanOutput;
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_smithy_mocks::mock;

    const TABLE: &str = "incident-state";
    const ARN: &str = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down";

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn held() -> AlarmItem {
        AlarmItem {
            arn: ARN.into(),
            changed_at: at("2026-11-25T10:01:00.490Z"),
            state: AlarmState::Alarm,
            incident_key: "k".into(),
            held: Some(Hold {
                cause: HoldCause::Mute {
                    rule_arn: Some(
                        "arn:aws:cloudwatch:eu-west-1:123456789012:alarm-mute-rule:nightly".into(),
                    ),
                    window_start: None,
                    window_end: Some(at("2026-11-25T11:00:00Z")),
                },
                until: at("2026-11-25T11:00:00Z"),
                series: None,
            }),
            writer: "req-sweep".into(),
        }
    }

    #[tokio::test]
    async fn release_requires_the_hold_that_was_read() {
        let put = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(|r| {
                let item = r.item().unwrap();
                assert_eq!(item["pk"].as_s().unwrap(), &format!("alarm#{ARN}"));
                assert!(!item.contains_key("held") && !item.contains_key("held_until_ms"));
                assert_eq!(
                    r.condition_expression(),
                    Some("changed_at_ms = :t AND held_until_ms = :u")
                );
                let v = r.expression_attribute_values().unwrap();
                assert_eq!(v[":t"].as_n().unwrap(), "1795600860490");
                assert_eq!(v[":u"].as_n().unwrap(), "1795604400000");
                true
            })
            .then_output(|| PutItemOutput::builder().build());
        let gone = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder().build(),
            )
        });
        // Refused without the item: read back; still held (not this release's write).
        let still_held = held();
        let read_back = mock!(aws_sdk_dynamodb::Client::get_item).then_output(move || {
            aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder()
                .set_item(Some(alarm_item(&still_held)))
                .build()
        });
        let store = DynamoStateStore::new(
            mock_client!(aws_sdk_dynamodb, [&put, &gone, &read_back]),
            TABLE,
        );
        let released = AlarmItem {
            held: None,
            ..held()
        };
        store
            .release(&held(), &released, IncidentWrite::NotConcerned)
            .await
            .unwrap();
        let e = store
            .release(&held(), &released, IncidentWrite::NotConcerned)
            .await
            .unwrap_err();
        assert!(matches!(e, StateError::AlarmNotNewer { .. }), "{e}");
        assert_eq!(read_back.num_calls(), 1);
    }

    #[tokio::test]
    async fn held_alarm_items_round_trip_and_the_sweep_scan_finds_them() {
        let item = alarm_item(&held());
        assert_eq!(item["held_until_ms"].as_n().unwrap(), "1795604400000");
        let scanned = item.clone();
        let scan = mock!(aws_sdk_dynamodb::Client::scan)
            .match_requests(|r| {
                r.table_name() == Some(TABLE)
                    && r.consistent_read() == Some(true)
                    && r.filter_expression()
                        .unwrap()
                        .contains("attribute_exists(held_until_ms)")
            })
            .then_output(move || ScanOutput::builder().items(scanned.clone()).build());
        let store = DynamoStateStore::new(mock_client!(aws_sdk_dynamodb, [&scan]), TABLE);
        let c = store.sweep_candidates().await.unwrap();
        assert_eq!(c.held, vec![held()]);
        assert!(c.open.is_empty());
    }

    #[tokio::test]
    async fn silence_book_is_written_at_the_next_version_only() {
        let get = mock!(aws_sdk_dynamodb::Client::get_item)
            .then_output(|| GetItemOutput::builder().build());
        let first = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(|r| {
                r.condition_expression() == Some("attribute_not_exists(pk)")
                    && r.item().unwrap()["version"].as_n().unwrap() == "1"
            })
            .then_output(|| PutItemOutput::builder().build());
        let conflict = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(|r| r.condition_expression() == Some("version = :v"))
            .then_error(|| {
                PutItemError::ConditionalCheckFailedException(
                    ConditionalCheckFailedException::builder().build(),
                )
            });
        let store = DynamoStateStore::new(
            mock_client!(aws_sdk_dynamodb, [&get, &first, &conflict]),
            TABLE,
        );
        let now = at("2026-11-25T10:00:00Z");
        let book = store.silences().await.unwrap();
        assert_eq!(book.version, 0);
        assert!(store.save_silences(&book, now).await.unwrap());
        let later = SilenceBook { version: 1, ..book };
        assert!(!store.save_silences(&later, now).await.unwrap());
    }
}
