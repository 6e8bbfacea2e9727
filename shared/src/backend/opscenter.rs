//! OpsCenter backend (`aws-sdk-ssm`): an incident is an OpsItem.
//!
//! Open: `CreateOpsItem` with severity, priority, category, the dedupe key in
//! `/aws/dedup` (OpsCenter itself refuses a second open OpsItem with the same dedup
//! string) and in the searchable `incidentKey`, related ARNs in `/aws/resources`.
//! Notes, impact changes and resolution are `UpdateOpsItem` calls; each note is
//! one `OperationalData` entry (`note <time>`), since OpsItems have no timeline API.
//! The diagnosis runbook starts with `StartAutomationExecution`, its id recorded on
//! the item. Limits (SSM API reference): Title 1,024 chars, Description 2,048,
//! operational data key 128 chars, value 20 KB; user keys must not start with
//! `aws`, `amazon`, `amzn` or `ssm`; Source must not contain `aws`, `amazon`, `amzn`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_ssm::operation::create_ops_item::CreateOpsItemError;
use aws_sdk_ssm::types::{
    OpsItemDataType, OpsItemDataValue, OpsItemFilter, OpsItemFilterKey, OpsItemFilterOperator,
    OpsItemStatus,
};
use tracing::{debug, info};

use super::note_json;
use crate::error::AwsError;
use crate::hash::{stable_hash, token_uuid};
use crate::incident::{
    BackendError, Impact, IncidentBackend, IncidentRef, NewIncident, Note, RunbookRequest,
};
use crate::text::truncate;

const SERVICE: &str = "ssm";
const NAME: &str = "OpsCenter";
/// `Source` of our OpsItems; must not contain `aws`, `amazon` or `amzn`.
pub const SOURCE: &str = "IncidentPipeline";
/// Searchable operational data holding the dedupe key, so [`OpsCenterBackend::find_open`]
/// can filter on it (the `/aws/dedup` value is JSON and AWS-managed).
pub const INCIDENT_KEY_DATA: &str = "incidentKey";
/// Operational data holding the diagnosis runbook execution id.
pub const DIAGNOSIS_EXECUTION_DATA: &str = "diagnosisExecutionId";
const DEDUP_DATA: &str = "/aws/dedup";
const RESOURCES_DATA: &str = "/aws/resources";
const TITLE_MAX: usize = 1024;
const DESCRIPTION_MAX: usize = 2048;
/// Dedup strings longer than this are cut and suffixed with a hash of the whole key.
const DEDUP_MAX: usize = 200;
/// Each note's text is cut to this, well under the 20 KB value limit.
const NOTE_TEXT_MAX: usize = 8_000;
/// Pages of `DescribeOpsItems` read before giving up the search (50 items each).
const FIND_MAX_PAGES: usize = 5;

/// OpsCenter as an [`IncidentBackend`].
#[derive(Debug, Clone)]
pub struct OpsCenterBackend {
    client: aws_sdk_ssm::Client,
}

impl OpsCenterBackend {
    pub fn new(client: aws_sdk_ssm::Client) -> Self {
        OpsCenterBackend { client }
    }

    fn ops_item_id<'a>(&self, incident: &'a IncidentRef) -> Result<&'a str, BackendError> {
        match incident {
            IncidentRef::OpsCenter(id) => Ok(id),
            IncidentRef::IncidentManager(arn) => Err(BackendError::Invalid {
                backend: NAME,
                message: format!("{arn} is an Incident Manager incident, not an OpsItem; INCIDENT_BACKEND is OpsCenter"),
            }),
        }
    }

    async fn update(
        &self,
        incident: &IncidentRef,
        note: Option<&Note>,
        status: Option<OpsItemStatus>,
        impact: Option<Impact>,
        extra: Vec<(String, OpsItemDataValue)>,
    ) -> Result<(), BackendError> {
        let id = self.ops_item_id(incident)?;
        let mut req = self.client.update_ops_item().ops_item_id(id);
        if let Some(note) = note {
            req = req.operational_data(
                note_data_key(note),
                string_data(note_json(note, NOTE_TEXT_MAX)),
            );
        }
        for (k, v) in extra {
            req = req.operational_data(k, v);
        }
        if let Some(s) = status {
            req = req.status(s);
        }
        if let Some(i) = impact {
            req = req.priority(i32::from(i.value())).severity(severity(i));
        }
        req.send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "UpdateOpsItem", e))?;
        Ok(())
    }
}

/// OpsCenter severity is "1" (critical) to "4" (low); impact 5 (no impact) maps to 4.
pub fn severity(impact: Impact) -> String {
    impact.value().min(4).to_string()
}

/// The `/aws/dedup` string for a dedupe key.
pub fn dedup_string(key: &str) -> String {
    if key.chars().count() <= DEDUP_MAX {
        key.to_string()
    } else {
        let prefix: String = key.chars().take(DEDUP_MAX - 33).collect();
        format!("{prefix}#{:032x}", stable_hash(&[key]))
    }
}

fn note_data_key(note: &Note) -> String {
    // Keys are at most 128 characters. Time and a hash of the title make each note
    // its own entry, while the same note written again (a retry) overwrites itself.
    let at = note.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!("note {at} {:08x}", stable_hash(&[&note.title]) as u32)
}

fn string_data(value: String) -> OpsItemDataValue {
    OpsItemDataValue::builder()
        .r#type(OpsItemDataType::String)
        .value(value)
        .build()
}

fn searchable_data(value: String) -> OpsItemDataValue {
    OpsItemDataValue::builder()
        .r#type(OpsItemDataType::SearchableString)
        .value(value)
        .build()
}

/// A user operational data key must not start with a reserved prefix.
fn user_data_key(key: &str) -> String {
    let lower = key.trim_start_matches('/').to_ascii_lowercase();
    if ["aws", "amazon", "amzn", "ssm"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        format!("x-{key}")
    } else {
        key.to_string()
    }
}

fn description(incident: &NewIncident) -> String {
    let mut out = incident.summary.clone();
    if !incident.details.is_empty() {
        out.push_str("\n\n");
        for (k, v) in &incident.details {
            out.push_str(&format!("- **{k}**: {v}\n"));
        }
    }
    let links: Vec<_> = incident
        .related
        .iter()
        .filter(|r| !r.target.starts_with("arn:"))
        .collect();
    if !links.is_empty() {
        out.push('\n');
        for r in links {
            out.push_str(&format!("- [{}]({})\n", r.title, r.target));
        }
    }
    truncate(out.trim_end(), DESCRIPTION_MAX)
}

fn build_error(operation: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Invalid {
        backend: NAME,
        message: format!("could not build the {operation} request: {e}"),
    }
}

#[async_trait]
impl IncidentBackend for OpsCenterBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The open (or in progress) OpsItem whose `incidentKey` is `key`.
    async fn find_open(&self, key: &str) -> Result<Option<IncidentRef>, BackendError> {
        let data_filter = serde_json::json!({"key": INCIDENT_KEY_DATA, "value": key}).to_string();
        let filters = vec![
            OpsItemFilter::builder()
                .key(OpsItemFilterKey::OperationalData)
                .operator(OpsItemFilterOperator::Equal)
                .values(data_filter)
                .build()
                .map_err(|e| build_error("DescribeOpsItems", e))?,
            OpsItemFilter::builder()
                .key(OpsItemFilterKey::Status)
                .operator(OpsItemFilterOperator::Equal)
                .values("Open")
                .values("InProgress")
                .build()
                .map_err(|e| build_error("DescribeOpsItems", e))?,
        ];
        let mut next_token: Option<String> = None;
        for _ in 0..FIND_MAX_PAGES {
            let out = self
                .client
                .describe_ops_items()
                .set_ops_item_filters(Some(filters.clone()))
                .max_results(50)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk(SERVICE, "DescribeOpsItems", e))?;
            let found = out
                .ops_item_summaries()
                .iter()
                .filter(|s| {
                    matches!(
                        s.status(),
                        Some(OpsItemStatus::Open | OpsItemStatus::InProgress) | None
                    )
                })
                .filter_map(|s| s.ops_item_id())
                .find_map(IncidentRef::parse);
            if found.is_some() {
                return Ok(found);
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => next_token = Some(t.to_string()),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Creates the OpsItem, or returns the open one of the key. No search first: the
    /// `/aws/dedup` string makes OpsCenter refuse a second open (or in progress) OpsItem
    /// of the key, and its `OpsItemAlreadyExistsException` names the existing one, which
    /// is returned; only a refusal that names none falls back to [`Self::find_open`].
    /// (A search before every creation cost one SSM round trip on the path to the first
    /// Slack message, about 40 ms in region: bench/NOTES.md, issue 18.)
    async fn open(&self, incident: &NewIncident) -> Result<IncidentRef, BackendError> {
        let dedup = serde_json::json!({ "dedupString": dedup_string(&incident.key) }).to_string();
        let mut req = self
            .client
            .create_ops_item()
            .title(truncate(&incident.title, TITLE_MAX))
            .description(description(incident))
            .source(SOURCE)
            .priority(i32::from(incident.impact.value()))
            .severity(severity(incident.impact))
            .operational_data(DEDUP_DATA, searchable_data(dedup))
            .operational_data(INCIDENT_KEY_DATA, searchable_data(incident.key.clone()))
            .operational_data("sourceArn", searchable_data(incident.source_arn.clone()))
            .operational_data(
                "triggeredAt",
                string_data(
                    incident
                        .triggered_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
            )
            .operational_data(
                "trigger",
                string_data(truncate(&incident.raw_trigger, 16_000)),
            );
        let resources: Vec<serde_json::Value> = incident
            .related
            .iter()
            .filter(|r| r.target.starts_with("arn:"))
            .map(|r| serde_json::json!({ "arn": r.target }))
            .collect();
        if !resources.is_empty() {
            req = req.operational_data(
                RESOURCES_DATA,
                searchable_data(serde_json::Value::from(resources).to_string()),
            );
        }
        for (k, v) in &incident.details {
            req = req.operational_data(user_data_key(k), searchable_data(truncate(v, 4_000)));
        }
        if let Some(c) = &incident.category {
            req = req.category(c);
        }
        match req.send().await {
            Ok(out) => match out.ops_item_id().and_then(IncidentRef::parse) {
                Some(r) => Ok(r),
                None => Err(BackendError::Invalid {
                    backend: NAME,
                    message: format!(
                        "CreateOpsItem answered without a valid OpsItem id ({:?})",
                        out.ops_item_id().map(|s| truncate(s, 40))
                    ),
                }),
            },
            Err(err) => {
                if let Some(CreateOpsItemError::OpsItemAlreadyExistsException(e)) =
                    err.as_service_error()
                {
                    if let Some(r) = e.ops_item_id().and_then(IncidentRef::parse) {
                        info!(ops_item = %r, "OpsCenter deduplicated the OpsItem; using the existing one");
                        return Ok(r);
                    }
                    if let Some(r) = self.find_open(&incident.key).await? {
                        info!(ops_item = %r, "OpsCenter deduplicated the OpsItem without naming it; using the open one of the key");
                        return Ok(r);
                    }
                }
                Err(AwsError::from_sdk(SERVICE, "CreateOpsItem", err).into())
            }
        }
    }

    async fn set_impact(
        &self,
        incident: &IncidentRef,
        impact: Impact,
        note: &Note,
    ) -> Result<(), BackendError> {
        debug!(ops_item = %incident, impact = impact.value(), "changing OpsItem priority and severity");
        self.update(incident, Some(note), None, Some(impact), vec![])
            .await
    }

    async fn add_note(&self, incident: &IncidentRef, note: &Note) -> Result<(), BackendError> {
        self.update(incident, Some(note), None, None, vec![]).await
    }

    async fn resolve(&self, incident: &IncidentRef, note: &Note) -> Result<(), BackendError> {
        self.update(
            incident,
            Some(note),
            Some(OpsItemStatus::Resolved),
            None,
            vec![],
        )
        .await
    }

    /// `StartAutomationExecution` with a client token derived from the request's seed
    /// and the OpsItem (a retry is answered with the same execution), then the
    /// execution id is recorded on the OpsItem.
    async fn start_runbook(
        &self,
        incident: &IncidentRef,
        runbook: &RunbookRequest,
    ) -> Result<Option<String>, BackendError> {
        let id = self.ops_item_id(incident)?.to_string();
        let parameters: HashMap<String, Vec<String>> =
            runbook.parameters.clone().into_iter().collect();
        let out = self
            .client
            .start_automation_execution()
            .document_name(&runbook.document)
            .set_parameters(Some(parameters))
            .client_token(token_uuid(&[&id, &runbook.client_token]))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "StartAutomationExecution", e))?;
        let Some(execution_id) = out.automation_execution_id().map(str::to_string) else {
            return Err(BackendError::Invalid {
                backend: NAME,
                message: format!(
                    "StartAutomationExecution of {} answered without an execution id",
                    runbook.document
                ),
            });
        };
        let mut extra = vec![(
            DIAGNOSIS_EXECUTION_DATA.to_string(),
            searchable_data(execution_id.clone()),
        )];
        let details: BTreeMap<&str, &str> = [
            ("document", runbook.document.as_str()),
            ("executionId", execution_id.as_str()),
        ]
        .into_iter()
        .collect();
        extra.push((
            "diagnosisRunbook".to_string(),
            string_data(serde_json::to_string(&details).unwrap_or_default()),
        ));
        self.update(incident, None, None, None, extra).await?;
        info!(ops_item = %id, execution_id = %execution_id, document = %runbook.document, "diagnosis runbook started");
        Ok(Some(execution_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::RelatedItem;
    use crate::mock_client;
    use aws_sdk_ssm::operation::create_ops_item::CreateOpsItemOutput;
    use aws_sdk_ssm::operation::describe_ops_items::{
        DescribeOpsItemsError, DescribeOpsItemsOutput,
    };
    use aws_sdk_ssm::operation::start_automation_execution::StartAutomationExecutionOutput;
    use aws_sdk_ssm::operation::update_ops_item::{UpdateOpsItemError, UpdateOpsItemOutput};
    use aws_sdk_ssm::types::error::{OpsItemAlreadyExistsException, OpsItemNotFoundException};
    use aws_sdk_ssm::types::OpsItemSummary;
    use aws_smithy_mocks::mock;
    use aws_smithy_types::error::ErrorMetadata;

    use crate::error::Retryable;

    const KEY: &str = "VPN connection vpn-0f1e2d3c4b5a69788 is DOWN";

    fn new_incident() -> NewIncident {
        NewIncident {
            key: KEY.into(),
            title: KEY.into(),
            summary: "The VPN connection to the remote site is not working.".into(),
            impact: Impact::MEDIUM,
            client_token: "tok".into(),
            source_arn: "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down".into(),
            raw_trigger: "{\"alarm\":1}".into(),
            triggered_at: "2026-11-25T10:01:00.490Z".parse().unwrap(),
            related: vec![
                RelatedItem {
                    title: "VPN connection".into(),
                    target:
                        "arn:aws:ec2:eu-west-1:123456789012:vpn-connection/vpn-0f1e2d3c4b5a69788"
                            .into(),
                },
                RelatedItem {
                    title: "Alarm".into(),
                    target: "https://eu-west-1.console.aws.amazon.com/cloudwatch/home".into(),
                },
            ],
            details: [("vpnId".to_string(), "vpn-0f1e2d3c4b5a69788".to_string())].into(),
            category: Some("Availability".into()),
        }
    }

    fn note() -> Note {
        Note {
            title: "Both tunnels down".into(),
            text: "vpn-both-tunnels-down is ALARM".into(),
            at: "2026-11-25T10:20:00.733Z".parse().unwrap(),
            data: BTreeMap::new(),
        }
    }

    fn data<'a>(
        d: Option<&'a HashMap<String, OpsItemDataValue>>,
        k: &str,
    ) -> (&'a str, OpsItemDataType) {
        let v = d
            .and_then(|d| d.get(k))
            .unwrap_or_else(|| panic!("operational data {k} missing"));
        (
            v.value().unwrap_or_default(),
            v.r#type().cloned().unwrap_or(OpsItemDataType::String),
        )
    }

    fn no_open_item() -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_ssm::Client::describe_ops_items)
            .match_requests(|r| {
                let f = r.ops_item_filters();
                assert_eq!(f[0].key(), &OpsItemFilterKey::OperationalData);
                assert_eq!(
                    f[0].values(),
                    [format!("{{\"key\":\"incidentKey\",\"value\":\"{KEY}\"}}")]
                );
                assert_eq!(f[1].key(), &OpsItemFilterKey::Status);
                assert_eq!(f[1].values(), ["Open", "InProgress"]);
                true
            })
            .then_output(|| DescribeOpsItemsOutput::builder().build())
    }

    #[tokio::test]
    async fn open_creates_ops_item_with_dedup_severity_and_resources() {
        let create = mock!(aws_sdk_ssm::Client::create_ops_item)
            .match_requests(|r| {
                assert_eq!(r.title(), Some(KEY));
                assert_eq!(r.source(), Some("IncidentPipeline"));
                assert_eq!(r.priority(), Some(3));
                assert_eq!(r.severity(), Some("3"));
                assert_eq!(r.category(), Some("Availability"));
                let d = r.operational_data();
                assert_eq!(
                    data(d, "/aws/dedup"),
                    (format!("{{\"dedupString\":\"{KEY}\"}}").as_str(), OpsItemDataType::SearchableString)
                );
                assert_eq!(data(d, "incidentKey").0, KEY);
                assert_eq!(
                    data(d, "/aws/resources").0,
                    "[{\"arn\":\"arn:aws:ec2:eu-west-1:123456789012:vpn-connection/vpn-0f1e2d3c4b5a69788\"}]"
                );
                assert_eq!(data(d, "vpnId").0, "vpn-0f1e2d3c4b5a69788");
                let desc = r.description().unwrap();
                assert!(desc.starts_with("The VPN connection to the remote site is not working."), "{desc}");
                assert!(desc.contains("[Alarm](https://eu-west-1.console.aws.amazon.com/cloudwatch/home)"), "{desc}");
                true
            })
            .then_output(|| CreateOpsItemOutput::builder().ops_item_id("oi-0123456789ab").build());
        let search = no_open_item();
        let client = mock_client!(aws_sdk_ssm, [&create, &search]);
        let r = OpsCenterBackend::new(client)
            .open(&new_incident())
            .await
            .unwrap();
        assert_eq!(r, IncidentRef::OpsCenter("oi-0123456789ab".into()));
        assert_eq!(create.num_calls(), 1);
        // The dedup string guards the creation: no search round trip before it.
        assert_eq!(search.num_calls(), 0);
    }

    #[tokio::test]
    async fn open_searches_by_key_when_the_refusal_names_no_item() {
        let refused = mock!(aws_sdk_ssm::Client::create_ops_item).then_error(|| {
            CreateOpsItemError::OpsItemAlreadyExistsException(
                OpsItemAlreadyExistsException::builder().build(),
            )
        });
        let found = mock!(aws_sdk_ssm::Client::describe_ops_items).then_output(|| {
            DescribeOpsItemsOutput::builder()
                .ops_item_summaries(
                    OpsItemSummary::builder()
                        .ops_item_id("oi-00000000abcd")
                        .status(OpsItemStatus::Open)
                        .build(),
                )
                .build()
        });
        let client = mock_client!(aws_sdk_ssm, [&refused, &found]);
        let r = OpsCenterBackend::new(client)
            .open(&new_incident())
            .await
            .unwrap();
        assert_eq!(r.id(), "oi-00000000abcd");
        assert_eq!((refused.num_calls(), found.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn open_fails_when_the_refusal_names_no_item_and_none_is_open() {
        let refused = mock!(aws_sdk_ssm::Client::create_ops_item).then_error(|| {
            CreateOpsItemError::OpsItemAlreadyExistsException(
                OpsItemAlreadyExistsException::builder()
                    .message("An OpsItem with this dedup string exists")
                    .meta(
                        ErrorMetadata::builder()
                            .code("OpsItemAlreadyExistsException")
                            .message("An OpsItem with this dedup string exists")
                            .build(),
                    )
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_ssm, [&refused, &no_open_item()]);
        let e = OpsCenterBackend::new(client)
            .open(&new_incident())
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("CreateOpsItem failed (OpsItemAlreadyExistsException)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn open_adopts_item_named_by_already_exists_error() {
        let create = mock!(aws_sdk_ssm::Client::create_ops_item).then_error(|| {
            CreateOpsItemError::OpsItemAlreadyExistsException(
                OpsItemAlreadyExistsException::builder()
                    .ops_item_id("oi-0000000000ff")
                    .build(),
            )
        });
        let search = no_open_item();
        let client = mock_client!(aws_sdk_ssm, [&create, &search]);
        let r = OpsCenterBackend::new(client)
            .open(&new_incident())
            .await
            .unwrap();
        assert_eq!(r.id(), "oi-0000000000ff");
        assert_eq!(search.num_calls(), 0);
    }

    #[tokio::test]
    async fn find_open_follows_pages() {
        let page1 = mock!(aws_sdk_ssm::Client::describe_ops_items)
            .match_requests(|r| r.next_token().is_none())
            .then_output(|| DescribeOpsItemsOutput::builder().next_token("p2").build());
        let page2 = mock!(aws_sdk_ssm::Client::describe_ops_items)
            .match_requests(|r| r.next_token() == Some("p2"))
            .then_output(|| {
                DescribeOpsItemsOutput::builder()
                    .ops_item_summaries(
                        OpsItemSummary::builder()
                            .ops_item_id("oi-00000000beef")
                            .build(),
                    )
                    .build()
            });
        let client = mock_client!(aws_sdk_ssm, [&page1, &page2]);
        let r = OpsCenterBackend::new(client).find_open(KEY).await.unwrap();
        assert_eq!(
            r.map(|r| r.id().to_string()),
            Some("oi-00000000beef".to_string())
        );
    }

    #[tokio::test]
    async fn set_impact_updates_priority_severity_and_records_note() {
        let update = mock!(aws_sdk_ssm::Client::update_ops_item)
            .match_requests(|r| {
                assert_eq!(r.ops_item_id(), Some("oi-0123456789ab"));
                assert_eq!(r.priority(), Some(1));
                assert_eq!(r.severity(), Some("1"));
                assert_eq!(r.status(), None);
                let (v, _) = data(r.operational_data(), &note_data_key(&note()));
                let v: serde_json::Value = serde_json::from_str(v).unwrap();
                assert_eq!(v["title"], "Both tunnels down");
                assert_eq!(v["text"], "vpn-both-tunnels-down is ALARM");
                true
            })
            .then_output(|| UpdateOpsItemOutput::builder().build());
        let client = mock_client!(aws_sdk_ssm, [&update]);
        OpsCenterBackend::new(client)
            .set_impact(
                &IncidentRef::OpsCenter("oi-0123456789ab".into()),
                Impact::CRITICAL,
                &note(),
            )
            .await
            .unwrap();
        assert_eq!(update.num_calls(), 1);
    }

    #[tokio::test]
    async fn resolve_sets_status_resolved() {
        let update = mock!(aws_sdk_ssm::Client::update_ops_item)
            .match_requests(|r| {
                assert_eq!(r.status(), Some(&OpsItemStatus::Resolved));
                assert_eq!(r.priority(), None);
                assert!(r
                    .operational_data()
                    .unwrap()
                    .contains_key(&note_data_key(&note())));
                true
            })
            .then_output(|| UpdateOpsItemOutput::builder().build());
        let client = mock_client!(aws_sdk_ssm, [&update]);
        OpsCenterBackend::new(client)
            .resolve(&IncidentRef::OpsCenter("oi-0123456789ab".into()), &note())
            .await
            .unwrap();
        assert_eq!(update.num_calls(), 1);
    }

    #[tokio::test]
    async fn start_runbook_passes_parameters_uuid_token_and_records_execution() {
        let start = mock!(aws_sdk_ssm::Client::start_automation_execution)
            .match_requests(|r| {
                assert_eq!(r.document_name(), Some("VpnDiagnosis"));
                let p = r.parameters().unwrap();
                assert_eq!(
                    p["VpnConnectionId"],
                    vec!["vpn-0f1e2d3c4b5a69788".to_string()]
                );
                assert_eq!(p["OpsItemId"], vec!["oi-0123456789ab".to_string()]);
                assert_eq!(
                    r.client_token(),
                    Some(token_uuid(&["oi-0123456789ab", "seed-1"]).as_str())
                );
                true
            })
            .then_output(|| {
                StartAutomationExecutionOutput::builder()
                    .automation_execution_id("exec-1")
                    .build()
            });
        let record = mock!(aws_sdk_ssm::Client::update_ops_item)
            .match_requests(|r| {
                assert_eq!(
                    data(r.operational_data(), "diagnosisExecutionId").0,
                    "exec-1"
                );
                true
            })
            .then_output(|| UpdateOpsItemOutput::builder().build());
        let client = mock_client!(aws_sdk_ssm, [&start, &record]);
        let runbook = RunbookRequest {
            document: "VpnDiagnosis".into(),
            parameters: [
                (
                    "VpnConnectionId".to_string(),
                    vec!["vpn-0f1e2d3c4b5a69788".to_string()],
                ),
                ("OpsItemId".to_string(), vec!["oi-0123456789ab".to_string()]),
            ]
            .into(),
            client_token: "seed-1".into(),
        };
        let id = OpsCenterBackend::new(client)
            .start_runbook(&IncidentRef::OpsCenter("oi-0123456789ab".into()), &runbook)
            .await
            .unwrap();
        assert_eq!(id.as_deref(), Some("exec-1"));
        assert_eq!(record.num_calls(), 1);
    }

    #[tokio::test]
    async fn throttling_is_retryable_and_access_denied_is_not() {
        let throttled = mock!(aws_sdk_ssm::Client::update_ops_item).then_error(|| {
            UpdateOpsItemError::generic(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
        });
        let denied = mock!(aws_sdk_ssm::Client::describe_ops_items).then_error(|| {
            DescribeOpsItemsError::generic(
                ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("User is not authorized to perform: ssm:DescribeOpsItems")
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_ssm, [&throttled, &denied]);
        let backend = OpsCenterBackend::new(client);
        let e = backend
            .add_note(&IncidentRef::OpsCenter("oi-0123456789ab".into()), &note())
            .await
            .unwrap_err();
        assert!(e.retryable());
        assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
        let e = backend.find_open(KEY).await.unwrap_err();
        assert!(!e.retryable());
        assert_eq!(
            e.to_string(),
            "ssm DescribeOpsItems failed (AccessDeniedException): User is not authorized to perform: ssm:DescribeOpsItems"
        );
    }

    #[tokio::test]
    async fn not_found_is_rejected_and_wrong_ref_kind_is_invalid() {
        let missing = mock!(aws_sdk_ssm::Client::update_ops_item).then_error(|| {
            UpdateOpsItemError::OpsItemNotFoundException(
                OpsItemNotFoundException::builder()
                    .message("no such")
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_ssm, [&missing]);
        let backend = OpsCenterBackend::new(client);
        let e = backend
            .add_note(&IncidentRef::OpsCenter("oi-0123456789ab".into()), &note())
            .await
            .unwrap_err();
        assert!(!e.retryable());
        let e = backend
            .add_note(
                &IncidentRef::IncidentManager(
                    "arn:aws:ssm-incidents::1:incident-record/p/x".into(),
                ),
                &note(),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not an OpsItem"), "{e}");
    }

    #[test]
    fn dedup_string_cuts_long_keys_with_hash() {
        assert_eq!(dedup_string("short"), "short");
        let long = "k".repeat(500);
        let d = dedup_string(&long);
        assert_eq!(d.chars().count(), 200);
        assert_ne!(dedup_string(&format!("{long}x")), d);
    }

    #[test]
    fn severity_maps_impact_five_to_four() {
        assert_eq!(severity(Impact::CRITICAL), "1");
        assert_eq!(severity(Impact::NONE), "4");
    }

    #[test]
    fn user_data_key_avoids_reserved_prefixes() {
        assert_eq!(user_data_key("vpnId"), "vpnId");
        assert_eq!(user_data_key("awsRegion"), "x-awsRegion");
        assert_eq!(user_data_key("/ssm/x"), "x-/ssm/x");
    }
}
