//! One invocation: the SNS records, each recognized, routed and delivered to its
//! destinations concurrently. If any delivery fails the invocation fails, so Lambda
//! retries the event (and finally sends it to the on-failure destination); the
//! destinations that already have the message are skipped on the retry.

use futures::future::join_all;
use lambda_runtime::Diagnostic;
use serde::Serialize;
use serde_json::Value;
use shared::error::Retryable;
use shared::incident::Impact;
use shared::slack::{Inbound, Routing, RoutingError, SnsMessage};
use shared::state::Owner;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::Config;
use crate::deliver::{deliver, Ctx, DeliveryError, Job, Outcome};
use crate::secrets::{SecretError, SettingsSource};
use crate::slack_api::{Budget, SlackClient};
use crate::store::StateStore;

/// What the handler works with; built once in `main`.
pub struct Deps<'a> {
    pub slack: &'a SlackClient,
    pub store: &'a dyn StateStore,
    pub settings: &'a dyn SettingsSource,
    pub config: &'a Config,
}

/// What an invocation did (the function's response; also logged).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub records: usize,
    pub posted: usize,
    pub threads_started: usize,
    pub replied: usize,
    /// Updates shown on the top-level message only (see `deliver::COALESCE_WINDOW`).
    pub coalesced: usize,
    pub already_delivered: usize,
    /// Messages no routing rule sent anywhere.
    pub unrouted: usize,
}

/// Why an invocation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    #[error("not an SNS event: {0}")]
    BadEvent(String),
    #[error(transparent)]
    Settings(#[from] SecretError),
    #[error("SLACK_ROUTING does not fit the Slack secret: {0}")]
    Routing(#[from] RoutingError),
    #[error("{failed} of {attempted} Slack deliveries failed: {details}")]
    Delivery {
        failed: usize,
        attempted: usize,
        details: String,
        retryable: bool,
        kind: &'static str,
    },
}

impl Retryable for HandlerError {
    fn retryable(&self) -> bool {
        match self {
            HandlerError::BadEvent(_) | HandlerError::Routing(_) => false,
            HandlerError::Settings(e) => e.retryable(),
            HandlerError::Delivery { retryable, .. } => *retryable,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            HandlerError::BadEvent(_) => "BadInput",
            HandlerError::Routing(_) => "BadConfig",
            HandlerError::Settings(e) => e.kind(),
            HandlerError::Delivery { kind, .. } => kind,
        }
    }
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Diagnostic {
        Diagnostic {
            error_type: e.lambda_error_type(),
            error_message: e.to_string(),
        }
    }
}

/// One SNS record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsRecord {
    pub message_id: String,
    pub topic_arn: String,
    pub subject: Option<String>,
    pub message: String,
}

/// Reads `Records[].Sns` leniently: `MessageId` and `Message` are required (the id
/// makes deliveries idempotent), the rest optional.
pub fn sns_records(event: &Value) -> Result<Vec<SnsRecord>, HandlerError> {
    let records = event
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            HandlerError::BadEvent("expected `Records`, a list of SNS records".into())
        })?;
    if records.is_empty() {
        return Err(HandlerError::BadEvent("`Records` is empty".into()));
    }
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let sns = r.get("Sns").ok_or_else(|| {
                HandlerError::BadEvent(format!("Records[{i}] has no `Sns` object"))
            })?;
            let field = |k: &str| sns.get(k).and_then(Value::as_str).map(str::to_string);
            Ok(SnsRecord {
                message_id: field("MessageId")
                    .filter(|m| !m.trim().is_empty())
                    .ok_or_else(|| {
                        HandlerError::BadEvent(format!("Records[{i}].Sns.MessageId is missing"))
                    })?,
                message: field("Message").ok_or_else(|| {
                    HandlerError::BadEvent(format!(
                        "Records[{i}].Sns.Message is missing or not text"
                    ))
                })?,
                topic_arn: field("TopicArn").unwrap_or_default(),
                subject: field("Subject"),
            })
        })
        .collect()
}

/// Handles one invocation (`owner`: its request id and deadline).
pub async fn handle(
    deps: &Deps<'_>,
    event: &Value,
    budget: Budget,
    owner: &Owner,
) -> Result<Summary, HandlerError> {
    let result = handle_inner(deps, event, budget, owner).await;
    match &result {
        Ok(summary) => info!(?summary, "invocation done"),
        Err(e) => error!(error = %e, error_type = %e.lambda_error_type(), "invocation failed"),
    }
    result
}

async fn handle_inner(
    deps: &Deps<'_>,
    event: &Value,
    budget: Budget,
    owner: &Owner,
) -> Result<Summary, HandlerError> {
    let records = sns_records(event)?;
    let settings = deps.settings.settings().await?;
    if let Some(r) = &deps.config.routing {
        settings.validate_routing(r)?;
    }
    let routing = settings.effective_routing(deps.config.routing.as_ref());
    let ctx = Ctx {
        slack: deps.slack,
        store: deps.store,
        budget,
        mention_min_impact: deps.config.mention_min_impact,
        owner,
    };
    let mut summary = Summary {
        records: records.len(),
        ..Summary::default()
    };
    let mut failures: Vec<(String, DeliveryError)> = vec![];
    let mut attempted = 0;
    for record in &records {
        let inbound = Inbound::parse(SnsMessage {
            topic_arn: &record.topic_arn,
            subject: record.subject.as_deref(),
            message: &record.message,
        });
        let facts = inbound.facts(&record.topic_arn);
        let span = info_span!(
            "record",
            message_id = %record.message_id,
            incident_key = %inbound.log_key(),
            kind = facts.kind,
            event_type = %facts.event_type,
            impact = facts.impact.map(Impact::value),
        );
        let results = deliver_record(&ctx, &settings, &routing, record, &inbound, &facts)
            .instrument(span)
            .await;
        if results.is_empty() {
            summary.unrouted += 1;
        }
        for (destination, result) in results {
            attempted += 1;
            match result {
                Ok(Outcome::Posted) => summary.posted += 1,
                Ok(Outcome::StartedThread) => summary.threads_started += 1,
                Ok(Outcome::Replied) => summary.replied += 1,
                Ok(Outcome::Coalesced) => summary.coalesced += 1,
                Ok(Outcome::AlreadyDelivered) => summary.already_delivered += 1,
                Err(e) => failures.push((destination, e)),
            }
        }
    }
    if failures.is_empty() {
        return Ok(summary);
    }
    if failures.iter().any(|(_, e)| e.is_auth()) {
        // The token or webhook may have been rotated: read the secret again next time.
        deps.settings.invalidate().await;
    }
    let retryable = failures.iter().any(|(_, e)| e.retryable());
    let kind = failures
        .iter()
        .find(|(_, e)| e.retryable() == retryable)
        .map_or("SlackDelivery", |(_, e)| e.kind());
    Err(HandlerError::Delivery {
        failed: failures.len(),
        attempted,
        details: failures
            .iter()
            .map(|(d, e)| format!("{d}: {e}"))
            .collect::<Vec<_>>()
            .join("; "),
        retryable,
        kind,
    })
}

async fn deliver_record(
    ctx: &Ctx<'_>,
    settings: &shared::slack::SlackSettings,
    routing: &Routing,
    record: &SnsRecord,
    inbound: &Inbound,
    facts: &shared::slack::RouteFacts,
) -> Vec<(String, Result<Outcome, DeliveryError>)> {
    if let Inbound::Chatbot(c) = inbound {
        if let Some(e) = &c.pipeline_error {
            warn!(error = %e, "pipeline context of a Chatbot message is unreadable; shown from its content");
        }
    }
    let route = routing.route(facts);
    if route.destinations.is_empty() {
        info!(rules = ?route.rules, "no destination for this message");
        return vec![];
    }
    info!(destinations = ?route.destinations, rules = ?route.rules, "routed");
    let deliveries = route.destinations.iter().filter_map(|name| {
        // Routing was validated against the secret, so every name resolves.
        let destination = settings.destination(name)?;
        let job = Job {
            message_id: delivery_id(record, inbound),
            message: &record.message,
            topic_arn: &record.topic_arn,
            inbound,
            facts,
            destination,
        };
        Some(async move { (name.clone(), deliver(ctx, &job).await) })
    });
    join_all(deliveries).await
}

/// What a delivery is keyed on: the pipeline notification's id when it has one (the
/// same however often it was published), else the SNS message id.
fn delivery_id<'a>(record: &'a SnsRecord, inbound: &'a Inbound) -> &'a str {
    match inbound {
        Inbound::Incident(n) => n
            .notification_id
            .as_deref()
            .filter(|id| !id.trim().is_empty())
            .unwrap_or(&record.message_id),
        _ => &record.message_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sns_records_reads_fields_leniently() {
        let event = json!({"Records": [{"EventSource": "aws:sns", "Sns": {
            "MessageId": "m-1", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:t", "Subject": null, "Message": "hi"}}]});
        assert_eq!(
            sns_records(&event).unwrap(),
            vec![SnsRecord {
                message_id: "m-1".into(),
                topic_arn: "arn:aws:sns:eu-west-1:123456789012:t".into(),
                subject: None,
                message: "hi".into(),
            }]
        );
    }

    #[test]
    fn sns_records_rejects_what_cannot_be_delivered_idempotently() {
        let err = |v: Value| sns_records(&v).unwrap_err().to_string();
        assert_eq!(
            err(json!({"detail": {}})),
            "not an SNS event: expected `Records`, a list of SNS records"
        );
        assert_eq!(
            err(json!({"Records": []})),
            "not an SNS event: `Records` is empty"
        );
        assert_eq!(
            err(json!({"Records": [{"Sns": {"Message": "x"}}]})),
            "not an SNS event: Records[0].Sns.MessageId is missing"
        );
        let e = sns_records(&json!({"Records": [{}]})).unwrap_err();
        assert_eq!(e.lambda_error_type(), "NonRetryable.BadInput");
    }

    #[test]
    fn diagnostic_carries_retryability_and_message() {
        let e = HandlerError::Delivery {
            failed: 1,
            attempted: 2,
            details: "oncall: Slack chat.postMessage: error invalid_auth".into(),
            retryable: false,
            kind: "SlackAuth",
        };
        let d = Diagnostic::from(e);
        assert_eq!(d.error_type, "NonRetryable.SlackAuth");
        assert_eq!(
            d.error_message,
            "1 of 2 Slack deliveries failed: oncall: Slack chat.postMessage: error invalid_auth"
        );
    }
}
