//! Reading incidents for `/incident list` and `/incident show`: the `incident#<key>`
//! items of the state table (the record alarm-to-incident and the responders keep).
//!
//! `list` scans for open incidents: the table holds one item per alarm, incident,
//! thread, delivery and recent request, so a scan with a filter stays small; it is
//! bounded anyway ([`LIST_MAX`] incidents, [`SCAN_PAGES_MAX`] pages).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use shared::error::AwsError;
use shared::lifecycle::IncidentRecord;
use shared::state::{incident_pk, StateError};

/// At most this many incidents in a list.
pub const LIST_MAX: usize = 50;
/// At most this many scan pages (1 MB each) per list.
pub const SCAN_PAGES_MAX: usize = 10;

/// Read access to incident records.
#[async_trait]
pub trait IncidentReader: Send + Sync {
    /// Open incidents, most recently opened first.
    async fn open_incidents(&self) -> Result<Vec<IncidentRecord>, StateError>;
    /// One incident by its exact key.
    async fn incident(&self, key: &str) -> Result<Option<IncidentRecord>, StateError>;
}

/// Finds the incident a person means: the exact key, else the one open incident
/// whose key or backend id contains `query` (case-insensitive). `None` when nothing
/// or more than one matches.
pub async fn find(
    reader: &dyn IncidentReader,
    query: &str,
) -> Result<Option<IncidentRecord>, StateError> {
    find_in(reader, query, |_| true).await
}

/// [`find`] where a partial match is looked for only among the incidents `visible`
/// accepts (the person's account scope): others neither match nor make a match
/// ambiguous. The exact key is returned whatever `visible` says, so the caller can
/// say why it is not shown.
pub async fn find_in(
    reader: &dyn IncidentReader,
    query: &str,
    visible: impl Fn(&IncidentRecord) -> bool,
) -> Result<Option<IncidentRecord>, StateError> {
    let query = query.trim();
    if query.is_empty() {
        return Ok(None);
    }
    if let Some(r) = reader.incident(query).await? {
        return Ok(Some(r));
    }
    let needle = query.to_lowercase();
    let mut matches: Vec<IncidentRecord> = reader
        .open_incidents()
        .await?
        .into_iter()
        .filter(|r| visible(r))
        .filter(|r| {
            r.key.to_lowercase().contains(&needle)
                || r.incident
                    .as_ref()
                    .is_some_and(|i| i.id().to_lowercase().contains(&needle))
        })
        .collect();
    Ok(if matches.len() == 1 {
        matches.pop()
    } else {
        None
    })
}

/// [`IncidentReader`] on the state table.
#[derive(Debug, Clone)]
pub struct DynamoIncidents {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoIncidents {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoIncidents {
            client,
            table: table.into(),
        }
    }
}

fn record_of(
    pk: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<IncidentRecord, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        pk: shared::text::truncate(pk, 200),
        reason,
    };
    match item.get("record") {
        Some(AttributeValue::S(text)) => serde_json::from_str(text)
            .map_err(|e| corrupt(format!("record is not an incident record: {e}"))),
        _ => Err(corrupt(
            "attribute record is missing or not a string".into(),
        )),
    }
}

#[async_trait]
impl IncidentReader for DynamoIncidents {
    async fn open_incidents(&self) -> Result<Vec<IncidentRecord>, StateError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        for _ in 0..SCAN_PAGES_MAX {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :prefix) AND #status = :open")
                // Both are DynamoDB reserved words.
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#record", "record")
                .expression_attribute_values(":prefix", AttributeValue::S("incident#".into()))
                .expression_attribute_values(":open", AttributeValue::S("open".into()))
                .projection_expression("pk, #status, #record")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("dynamodb", "Scan", e))?;
            for item in page.items() {
                let pk = match item.get("pk") {
                    Some(AttributeValue::S(pk)) => pk.as_str(),
                    _ => "incident#?",
                };
                match record_of(pk, item) {
                    Ok(r) => out.push(r),
                    // One unreadable item must not hide the others.
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable incident item"),
                }
            }
            match page.last_evaluated_key() {
                Some(k) if out.len() < LIST_MAX => start = Some(k.clone()),
                _ => break,
            }
        }
        out.sort_by(|a, b| b.opened_at.cmp(&a.opened_at).then(a.key.cmp(&b.key)));
        out.truncate(LIST_MAX);
        Ok(out)
    }

    async fn incident(&self, key: &str) -> Result<Option<IncidentRecord>, StateError> {
        let pk = incident_pk(key);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "GetItem", e))?;
        out.item.as_ref().map(|i| record_of(&pk, i)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::scan::ScanOutput;
    use aws_sdk_dynamodb::Client;
    use aws_smithy_mocks::{mock, RuleMode};
    use serde_json::json;

    fn record(key: &str, opened: &str, ops_item: &str) -> String {
        json!({
            "key": key, "status": "open", "incident": {"backend": "OpsCenter", "id": ops_item},
            "title": key, "summary": "s", "impact": 3, "opened_at": opened, "resolved_at": null,
            "alarms": {}, "runbook_execution": null, "timeline": []
        })
        .to_string()
    }

    fn item(key: &str, opened: &str, ops_item: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".into(), AttributeValue::S(format!("incident#{key}"))),
            ("status".into(), AttributeValue::S("open".into())),
            (
                "record".into(),
                AttributeValue::S(record(key, opened, ops_item)),
            ),
        ])
    }

    #[tokio::test]
    async fn open_incidents_scans_pages_newest_first_and_skips_corrupt_items() {
        let first = mock!(Client::scan)
            .match_requests(|r| {
                r.table_name() == Some("state")
                    && r.filter_expression() == Some("begins_with(pk, :prefix) AND #status = :open")
                    && r.projection_expression() == Some("pk, #status, #record")
                    && r.expression_attribute_names()
                        .and_then(|n| n.get("#record"))
                        == Some(&"record".to_string())
                    && r.exclusive_start_key().is_none()
            })
            .then_output(|| {
                ScanOutput::builder()
                    .items(item("older", "2026-11-25T09:00:00Z", "oi-000000000001"))
                    .items(HashMap::from([(
                        "pk".into(),
                        AttributeValue::S("incident#broken".into()),
                    )]))
                    .set_last_evaluated_key(Some(HashMap::from([(
                        "pk".into(),
                        AttributeValue::S("incident#older".into()),
                    )])))
                    .build()
            });
        let second = mock!(Client::scan)
            .match_requests(|r| r.exclusive_start_key().is_some())
            .then_output(|| {
                ScanOutput::builder()
                    .items(item("newer", "2026-11-25T10:00:00Z", "oi-000000000002"))
                    .build()
            });
        let client = shared::mock_client!(aws_sdk_dynamodb, [&first, &second]);
        let reader = DynamoIncidents::new(client, "state");
        let keys: Vec<String> = reader
            .open_incidents()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, vec!["newer", "older"]);
        assert_eq!(second.num_calls(), 1);
    }

    #[tokio::test]
    async fn find_uses_the_exact_key_then_a_unique_partial_match() {
        let exact = mock!(Client::get_item)
            .match_requests(|r| {
                r.key().and_then(|k| k.get("pk"))
                    == Some(&AttributeValue::S("incident#newer".into()))
            })
            .then_output(|| {
                GetItemOutput::builder()
                    .set_item(Some(item(
                        "newer",
                        "2026-11-25T10:00:00Z",
                        "oi-000000000002",
                    )))
                    .build()
            });
        let missing = mock!(Client::get_item).then_output(|| GetItemOutput::builder().build());
        let scan = mock!(Client::scan).then_output(|| {
            ScanOutput::builder()
                .items(item(
                    "VPN connection vpn-1 is DOWN",
                    "2026-11-25T09:00:00Z",
                    "oi-00000000000a",
                ))
                .items(item(
                    "VPN connection vpn-2 is DOWN",
                    "2026-11-25T10:00:00Z",
                    "oi-00000000000b",
                ))
                .build()
        });
        let client = shared::mock_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&exact, &missing, &scan]
        );
        let reader = DynamoIncidents::new(client, "state");
        let by_key = find(&reader, "newer").await.unwrap().unwrap();
        assert_eq!(by_key.key, "newer");
        let by_part = find(&reader, "vpn-2").await.unwrap().unwrap();
        assert_eq!(by_part.key, "VPN connection vpn-2 is DOWN");
        let by_ops_item = find(&reader, "OI-00000000000A").await.unwrap().unwrap();
        assert_eq!(by_ops_item.key, "VPN connection vpn-1 is DOWN");
        assert_eq!(find(&reader, "vpn").await.unwrap(), None, "ambiguous");
        assert_eq!(find(&reader, "  ").await.unwrap(), None);
    }
}
