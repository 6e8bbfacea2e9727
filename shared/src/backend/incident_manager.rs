//! Incident Manager backend (`aws-sdk-ssmincidents`): an incident is an incident
//! record started from a response plan.
//!
//! Open: `StartIncident` with the response plan, title (up to 200 chars), impact,
//! trigger details (source not starting with `aws.`, up to 50 chars; raw data cut to
//! 10,000 chars), up to 100 related items and a client token, so a retried delivery
//! is answered with the same incident. Later changes: `UpdateIncidentRecord`
//! (impact, `RESOLVED`) and `CreateTimelineEvent` (`Custom Event`), each with a token
//! derived from the change. The response plan starts the diagnosis runbook itself
//! (dynamic parameter `INCIDENT_RECORD_ARN`), so [`IncidentBackend::start_runbook`]
//! does nothing here. Only `open` needs the response plan ARN.

use async_trait::async_trait;
use aws_sdk_ssmincidents::types::{
    AttributeValueList, Condition, Filter, IncidentRecordStatus, ItemIdentifier, ItemType,
    ItemValue, RelatedItem, TriggerDetails,
};
use aws_smithy_types::DateTime;
use tracing::{debug, info};

use super::{note_json, note_token};
use crate::error::AwsError;
use crate::hash::token_uuid;
use crate::incident::{
    BackendError, Impact, IncidentBackend, IncidentRef, NewIncident, Note, RunbookRequest,
};
use crate::text::truncate;

const SERVICE: &str = "ssm-incidents";
const NAME: &str = "IncidentManager";
/// `triggerDetails.source`: must not start with `aws.`, at most 50 characters.
pub const TRIGGER_SOURCE: &str = "custom.incident-pipeline";
/// The timeline event type Incident Manager shows as a custom entry.
pub const TIMELINE_EVENT_TYPE: &str = "Custom Event";
const TITLE_MAX: usize = 200;
const RAW_DATA_MAX: usize = 10_000;
const RELATED_MAX: usize = 100;
const CLIENT_TOKEN_MAX: usize = 128;
/// `eventData` holds at most 12,000 characters; the note text is cut well below.
const NOTE_TEXT_MAX: usize = 6_000;
const FIND_MAX_PAGES: usize = 5;

/// Incident Manager as an [`IncidentBackend`].
#[derive(Debug, Clone)]
pub struct IncidentManagerBackend {
    client: aws_sdk_ssmincidents::Client,
    response_plan_arn: Option<String>,
}

impl IncidentManagerBackend {
    /// `response_plan_arn` is needed only to open incidents; a function that only
    /// adds notes (vpn-troubleshoot) passes `None`.
    pub fn new(client: aws_sdk_ssmincidents::Client, response_plan_arn: Option<String>) -> Self {
        IncidentManagerBackend {
            client,
            response_plan_arn,
        }
    }

    fn record_arn<'a>(&self, incident: &'a IncidentRef) -> Result<&'a str, BackendError> {
        match incident {
            IncidentRef::IncidentManager(arn) => Ok(arn),
            IncidentRef::OpsCenter(id) => Err(BackendError::Invalid {
                backend: NAME,
                message: format!("{id} is an OpsItem, not an Incident Manager incident; INCIDENT_BACKEND is IncidentManager"),
            }),
        }
    }

    async fn timeline_event(
        &self,
        arn: &str,
        token: String,
        note: &Note,
    ) -> Result<(), BackendError> {
        self.client
            .create_timeline_event()
            .client_token(token)
            .incident_record_arn(arn)
            .event_time(to_smithy(note.at))
            .event_type(TIMELINE_EVENT_TYPE)
            .event_data(note_json(note, NOTE_TEXT_MAX))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "CreateTimelineEvent", e))?;
        Ok(())
    }
}

fn to_smithy(t: chrono::DateTime<chrono::Utc>) -> DateTime {
    DateTime::from_millis(t.timestamp_millis())
}

fn invalid(message: String) -> BackendError {
    BackendError::Invalid {
        backend: NAME,
        message,
    }
}

/// Incident Manager's client token is at most 128 characters; longer ones are hashed.
fn client_token(seed: &str) -> String {
    if !seed.is_empty() && seed.len() <= CLIENT_TOKEN_MAX {
        seed.to_string()
    } else {
        token_uuid(&[seed])
    }
}

/// An alarm ARN or a console link is `OTHER`; any other ARN (the VPN connection) is
/// an `INVOLVED_RESOURCE`, which the response plan can pass to its runbook
/// (dynamic parameter `INVOLVED_RESOURCES`).
fn related_item(title: &str, target: &str) -> Result<RelatedItem, BackendError> {
    let (kind, value) = if target.starts_with("arn:") {
        if target.contains(":cloudwatch:") {
            (ItemType::Other, ItemValue::Arn(target.to_string()))
        } else {
            (
                ItemType::InvolvedResource,
                ItemValue::Arn(target.to_string()),
            )
        }
    } else {
        (ItemType::Other, ItemValue::Url(target.to_string()))
    };
    let identifier = ItemIdentifier::builder()
        .r#type(kind)
        .value(value)
        .build()
        .map_err(|e| invalid(format!("could not build a related item: {e}")))?;
    Ok(RelatedItem::builder()
        .identifier(identifier)
        .title(truncate(title, 200))
        .build())
}

#[async_trait]
impl IncidentBackend for IncidentManagerBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Incident Manager keeps no dedupe key on the record (its dedup is the response
    /// plan's `DedupeString` plus client tokens), so this finds an `OPEN` record whose
    /// title is the key (cut to 200 chars, as titles are). The state table, not this
    /// search, is the pipeline's source of truth.
    async fn find_open(&self, key: &str) -> Result<Option<IncidentRef>, BackendError> {
        let title = truncate(key, TITLE_MAX);
        let filter = Filter::builder()
            .key("status")
            .condition(Condition::Equals(AttributeValueList::StringValues(vec![
                "OPEN".into(),
            ])))
            .build()
            .map_err(|e| {
                invalid(format!(
                    "could not build the ListIncidentRecords filter: {e}"
                ))
            })?;
        let mut next_token: Option<String> = None;
        for _ in 0..FIND_MAX_PAGES {
            let out = self
                .client
                .list_incident_records()
                .filters(filter.clone())
                .max_results(100)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk(SERVICE, "ListIncidentRecords", e))?;
            if let Some(found) = out
                .incident_record_summaries()
                .iter()
                .find(|s| s.title() == title && *s.status() == IncidentRecordStatus::Open)
            {
                return Ok(IncidentRef::parse(found.arn()));
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => next_token = Some(t.to_string()),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    async fn open(&self, incident: &NewIncident) -> Result<IncidentRef, BackendError> {
        let Some(plan) = &self.response_plan_arn else {
            return Err(invalid(
                "RESPONSE_PLAN_ARN is not configured: Incident Manager starts incidents from a response plan".into(),
            ));
        };
        let trigger = TriggerDetails::builder()
            .source(TRIGGER_SOURCE)
            .set_trigger_arn(
                incident
                    .source_arn
                    .starts_with("arn:")
                    .then(|| incident.source_arn.clone()),
            )
            .timestamp(to_smithy(incident.triggered_at))
            .raw_data(truncate(&incident.raw_trigger, RAW_DATA_MAX))
            .build()
            .map_err(|e| invalid(format!("could not build the trigger details: {e}")))?;
        let related = incident
            .related
            .iter()
            .take(RELATED_MAX)
            .map(|r| related_item(&r.title, &r.target))
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .start_incident()
            .client_token(client_token(&incident.client_token))
            .response_plan_arn(plan)
            .title(truncate(&incident.title, TITLE_MAX))
            .impact(i32::from(incident.impact.value()))
            .trigger_details(trigger)
            .set_related_items((!related.is_empty()).then_some(related))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "StartIncident", e))?;
        let arn = out.incident_record_arn();
        info!(incident = %arn, "incident started");
        IncidentRef::parse(arn).ok_or_else(|| {
            invalid(format!(
                "StartIncident answered with an unexpected ARN {:?}",
                truncate(arn, 200)
            ))
        })
    }

    async fn set_impact(
        &self,
        incident: &IncidentRef,
        impact: Impact,
        note: &Note,
    ) -> Result<(), BackendError> {
        let arn = self.record_arn(incident)?;
        self.client
            .update_incident_record()
            .client_token(note_token(incident, "impact", note))
            .arn(arn)
            .impact(i32::from(impact.value()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "UpdateIncidentRecord", e))?;
        self.timeline_event(arn, note_token(incident, "note", note), note)
            .await
    }

    async fn add_note(&self, incident: &IncidentRef, note: &Note) -> Result<(), BackendError> {
        let arn = self.record_arn(incident)?;
        self.timeline_event(arn, note_token(incident, "note", note), note)
            .await
    }

    /// Writes the closing note, then sets the status to `RESOLVED`.
    async fn resolve(&self, incident: &IncidentRef, note: &Note) -> Result<(), BackendError> {
        let arn = self.record_arn(incident)?;
        self.timeline_event(arn, note_token(incident, "note", note), note)
            .await?;
        self.client
            .update_incident_record()
            .client_token(note_token(incident, "resolve", note))
            .arn(arn)
            .status(IncidentRecordStatus::Resolved)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "UpdateIncidentRecord", e))?;
        Ok(())
    }

    /// The response plan's runbook action starts the diagnosis with the incident ARN;
    /// starting it here too would run it twice.
    async fn start_runbook(
        &self,
        incident: &IncidentRef,
        runbook: &RunbookRequest,
    ) -> Result<Option<String>, BackendError> {
        self.record_arn(incident)?;
        debug!(incident = %incident, document = %runbook.document, "runbook left to the response plan");
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::Retryable;
    use crate::incident::RelatedItem as OurRelatedItem;
    use crate::mock_client;
    use aws_sdk_ssmincidents::operation::create_timeline_event::CreateTimelineEventOutput;
    use aws_sdk_ssmincidents::operation::list_incident_records::ListIncidentRecordsOutput;
    use aws_sdk_ssmincidents::operation::start_incident::{
        StartIncidentError, StartIncidentOutput,
    };
    use aws_sdk_ssmincidents::operation::update_incident_record::UpdateIncidentRecordOutput;
    use aws_sdk_ssmincidents::types::IncidentRecordSummary;
    use aws_smithy_mocks::mock;
    use aws_smithy_types::error::ErrorMetadata;

    const PLAN: &str = "arn:aws:ssm-incidents::123456789012:response-plan/vpn-plan";
    const ARN: &str = "arn:aws:ssm-incidents::123456789012:incident-record/vpn-plan/6ec4ba3e-0f5b-4e0a-9d3c-6a3f4c1c9d10";
    const KEY: &str = "VPN connection vpn-0f1e2d3c4b5a69788 is DOWN";

    fn new_incident() -> NewIncident {
        NewIncident {
            key: KEY.into(),
            title: KEY.into(),
            summary: "The VPN connection to the remote site is not working.".into(),
            impact: Impact::MEDIUM,
            client_token: "0f6a1d7e-2b4c-4d8e-9a1b-3c5d7e9f1a2b".into(),
            source_arn: "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down".into(),
            raw_trigger: "x".repeat(12_000),
            triggered_at: "2026-11-25T10:01:00.490Z".parse().unwrap(),
            related: vec![
                OurRelatedItem {
                    title: "Alarm".into(),
                    target: "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down"
                        .into(),
                },
                OurRelatedItem {
                    title: "VPN connection".into(),
                    target:
                        "arn:aws:ec2:eu-west-1:123456789012:vpn-connection/vpn-0f1e2d3c4b5a69788"
                            .into(),
                },
                OurRelatedItem {
                    title: "Alarm in the console".into(),
                    target: "https://eu-west-1.console.aws.amazon.com/cloudwatch/home".into(),
                },
            ],
            details: BTreeMap::new(),
            category: None,
        }
    }

    fn note() -> Note {
        Note {
            title: "Resolved".into(),
            text: "All alarms OK after 34m".into(),
            at: "2026-11-25T10:35:00.211Z".parse().unwrap(),
            data: [("durationSeconds".to_string(), "2040".to_string())].into(),
        }
    }

    fn incident_ref() -> IncidentRef {
        IncidentRef::IncidentManager(ARN.into())
    }

    #[tokio::test]
    async fn open_starts_incident_with_plan_token_trigger_and_related_items() {
        let start = mock!(aws_sdk_ssmincidents::Client::start_incident)
            .match_requests(|r| {
                assert_eq!(r.response_plan_arn(), Some(PLAN));
                assert_eq!(
                    r.client_token(),
                    Some("0f6a1d7e-2b4c-4d8e-9a1b-3c5d7e9f1a2b")
                );
                assert_eq!(r.title(), Some(KEY));
                assert_eq!(r.impact(), Some(3));
                let t = r.trigger_details().unwrap();
                assert_eq!(t.source(), "custom.incident-pipeline");
                assert_eq!(
                    t.trigger_arn(),
                    Some("arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down")
                );
                assert_eq!(t.timestamp().to_millis().unwrap(), 1_795_600_860_490);
                assert_eq!(t.raw_data().unwrap().chars().count(), 10_000);
                let items = r.related_items();
                assert_eq!(items.len(), 3);
                let kinds: Vec<_> = items
                    .iter()
                    .map(|i| i.identifier().unwrap().r#type().clone())
                    .collect();
                assert_eq!(
                    kinds,
                    vec![ItemType::Other, ItemType::InvolvedResource, ItemType::Other]
                );
                assert_eq!(
                    items[1].identifier().unwrap().value(),
                    Some(&ItemValue::Arn(
                        "arn:aws:ec2:eu-west-1:123456789012:vpn-connection/vpn-0f1e2d3c4b5a69788"
                            .into()
                    ))
                );
                assert!(matches!(
                    items[2].identifier().unwrap().value(),
                    Some(ItemValue::Url(_))
                ));
                true
            })
            .then_output(|| {
                StartIncidentOutput::builder()
                    .incident_record_arn(ARN)
                    .build()
                    .unwrap()
            });
        let client = mock_client!(aws_sdk_ssmincidents, [&start]);
        let r = IncidentManagerBackend::new(client, Some(PLAN.into()))
            .open(&new_incident())
            .await
            .unwrap();
        assert_eq!(r, incident_ref());
    }

    #[tokio::test]
    async fn open_without_plan_is_invalid_but_notes_work() {
        let event = mock!(aws_sdk_ssmincidents::Client::create_timeline_event)
            .match_requests(|r| {
                assert_eq!(r.incident_record_arn(), Some(ARN));
                assert_eq!(r.event_type(), Some("Custom Event"));
                assert_eq!(
                    r.event_time().unwrap().to_millis().unwrap(),
                    1_795_602_900_211
                );
                let data: serde_json::Value =
                    serde_json::from_str(r.event_data().unwrap()).unwrap();
                assert_eq!(data["title"], "Resolved");
                assert_eq!(data["data"]["durationSeconds"], "2040");
                assert_eq!(
                    r.client_token(),
                    Some(note_token(&incident_ref(), "note", &note()).as_str())
                );
                true
            })
            .then_output(|| {
                CreateTimelineEventOutput::builder()
                    .incident_record_arn(ARN)
                    .event_id("e1")
                    .build()
                    .unwrap()
            });
        let client = mock_client!(aws_sdk_ssmincidents, [&event]);
        let backend = IncidentManagerBackend::new(client, None);
        let e = backend.open(&new_incident()).await.unwrap_err();
        assert!(!e.retryable());
        assert!(
            e.to_string()
                .contains("RESPONSE_PLAN_ARN is not configured"),
            "{e}"
        );
        backend.add_note(&incident_ref(), &note()).await.unwrap();
        assert_eq!(event.num_calls(), 1);
    }

    #[tokio::test]
    async fn set_impact_updates_record_then_adds_timeline_event() {
        let update = mock!(aws_sdk_ssmincidents::Client::update_incident_record)
            .match_requests(|r| {
                assert_eq!(r.arn(), Some(ARN));
                assert_eq!(r.impact(), Some(1));
                assert_eq!(r.status(), None);
                assert_eq!(
                    r.client_token(),
                    Some(note_token(&incident_ref(), "impact", &note()).as_str())
                );
                true
            })
            .then_output(|| UpdateIncidentRecordOutput::builder().build());
        let event = mock!(aws_sdk_ssmincidents::Client::create_timeline_event).then_output(|| {
            CreateTimelineEventOutput::builder()
                .incident_record_arn(ARN)
                .event_id("e1")
                .build()
                .unwrap()
        });
        let client = mock_client!(aws_sdk_ssmincidents, [&update, &event]);
        IncidentManagerBackend::new(client, None)
            .set_impact(&incident_ref(), Impact::CRITICAL, &note())
            .await
            .unwrap();
        assert_eq!((update.num_calls(), event.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn resolve_writes_note_then_status_resolved() {
        let event = mock!(aws_sdk_ssmincidents::Client::create_timeline_event).then_output(|| {
            CreateTimelineEventOutput::builder()
                .incident_record_arn(ARN)
                .event_id("e1")
                .build()
                .unwrap()
        });
        let update = mock!(aws_sdk_ssmincidents::Client::update_incident_record)
            .match_requests(|r| {
                assert_eq!(r.status(), Some(&IncidentRecordStatus::Resolved));
                assert_eq!(r.impact(), None);
                true
            })
            .then_output(|| UpdateIncidentRecordOutput::builder().build());
        let client = mock_client!(aws_sdk_ssmincidents, [&event, &update]);
        IncidentManagerBackend::new(client, None)
            .resolve(&incident_ref(), &note())
            .await
            .unwrap();
        assert_eq!((event.num_calls(), update.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn find_open_matches_title_of_open_records() {
        let list = mock!(aws_sdk_ssmincidents::Client::list_incident_records)
            .match_requests(|r| {
                let f = &r.filters()[0];
                assert_eq!(f.key(), "status");
                assert_eq!(
                    f.condition(),
                    Some(&Condition::Equals(AttributeValueList::StringValues(vec![
                        "OPEN".into()
                    ])))
                );
                true
            })
            .then_output(|| {
                let summary = |arn: &str, title: &str| {
                    IncidentRecordSummary::builder()
                        .arn(arn)
                        .title(title)
                        .status(IncidentRecordStatus::Open)
                        .impact(3)
                        .creation_time(DateTime::from_secs(0))
                        .build()
                        .unwrap()
                };
                ListIncidentRecordsOutput::builder()
                    .incident_record_summaries(summary(
                        "arn:aws:ssm-incidents::123456789012:incident-record/vpn-plan/other",
                        "Something else",
                    ))
                    .incident_record_summaries(summary(ARN, KEY))
                    .build()
                    .unwrap()
            });
        let client = mock_client!(aws_sdk_ssmincidents, [&list]);
        let r = IncidentManagerBackend::new(client, None)
            .find_open(KEY)
            .await
            .unwrap();
        assert_eq!(r, Some(incident_ref()));
    }

    #[tokio::test]
    async fn start_errors_are_classified() {
        let throttled = mock!(aws_sdk_ssmincidents::Client::start_incident).then_error(|| {
            StartIncidentError::generic(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("slow down")
                    .build(),
            )
        });
        let denied = mock!(aws_sdk_ssmincidents::Client::start_incident).then_error(|| {
            StartIncidentError::generic(
                ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("not authorized to perform ssm-incidents:StartIncident")
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_ssmincidents, [&throttled, &denied]);
        let backend = IncidentManagerBackend::new(client, Some(PLAN.into()));
        let e = backend.open(&new_incident()).await.unwrap_err();
        assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
        let e = backend.open(&new_incident()).await.unwrap_err();
        assert_eq!(e.lambda_error_type(), "NonRetryable.AccessDenied");
        assert_eq!(
            e.to_string(),
            "ssm-incidents StartIncident failed (AccessDeniedException): not authorized to perform ssm-incidents:StartIncident"
        );
    }

    #[tokio::test]
    async fn start_runbook_is_left_to_response_plan() {
        let client = mock_client!(aws_sdk_ssmincidents, Vec::<&aws_smithy_mocks::Rule>::new());
        let runbook = RunbookRequest {
            document: "VpnDiagnosis".into(),
            parameters: BTreeMap::new(),
            client_token: "x".into(),
        };
        let r = IncidentManagerBackend::new(client, None)
            .start_runbook(&incident_ref(), &runbook)
            .await
            .unwrap();
        assert_eq!(r, None);
    }

    #[test]
    fn long_client_token_is_hashed_to_fit() {
        assert_eq!(client_token("abc"), "abc");
        assert_eq!(client_token(&"a".repeat(300)).len(), 36);
    }
}
