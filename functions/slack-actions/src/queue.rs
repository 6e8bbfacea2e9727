//! The actions queue: a state change asked for in Slack, verified and authorized,
//! waiting to be done. The request path sends a [`Job`] and answers Slack at once;
//! the queue worker (the same function, SQS event source) does the change.
//!
//! The job carries the interaction's `response_url`, a credential for posting into
//! the user's conversation for 30 minutes: it stays in [`Secret`] in memory, travels
//! only inside the (encrypted) queue message, and is never logged.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shared::error::{AwsError, Secret};
use shared::incident::{Actor, Impact};
use shared::silence::SilenceTarget;

/// The silence asked for (resolved when the request came in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceSpec {
    pub target: SilenceTarget,
    pub minutes: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a person asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    Acknowledge,
    Resolve,
    Rerun,
    Note,
    Declare,
    /// Set a silence ([`Job::silence`]).
    Silence,
    /// End silence [`Job::text`] now.
    Unsilence,
}

impl JobAction {
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Acknowledge => "acknowledge",
            JobAction::Resolve => "resolve",
            JobAction::Rerun => "rerun",
            JobAction::Note => "note",
            JobAction::Declare => "declare",
            JobAction::Silence => "silence",
            JobAction::Unsilence => "unsilence",
        }
    }
}

/// One queued change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The Slack request's id (from its verified signature): the same for every copy
    /// of the message (a redelivery, or a second copy sent when SendMessage's answer
    /// was lost), so the change is applied once. Absent in jobs queued before it
    /// existed: the SQS message id stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub action: JobAction,
    /// The incident (every action but `declare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_key: Option<String>,
    /// The Slack user who asked.
    pub actor: Actor,
    /// The channel (or user group) the person acted from: the incident's team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The note's text, the declared incident's title, or the silence id to lift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The silence to set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<SilenceSpec>,
    /// The impact asked for when declaring (`--impact N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<Impact>,
    /// Where to tell the person the outcome (absent for a modal submission).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_secret",
        deserialize_with = "de_secret"
    )]
    pub response_url: Option<Secret<String>>,
    pub requested_at: DateTime<Utc>,
}

fn ser_secret<S: Serializer>(v: &Option<Secret<String>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(secret) => s.serialize_some(secret.expose()),
        None => s.serialize_none(),
    }
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret<String>>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

/// Sends jobs to the actions queue.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Queues `job`; returns the message id.
    async fn send(&self, job: &Job) -> Result<String, AwsError>;
}

/// [`JobQueue`] on SQS (`ACTIONS_QUEUE_URL`).
#[derive(Debug, Clone)]
pub struct SqsJobQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsJobQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        SqsJobQueue {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl JobQueue for SqsJobQueue {
    async fn send(&self, job: &Job) -> Result<String, AwsError> {
        let body = serde_json::to_string(job).map_err(|e| AwsError {
            service: "sqs",
            operation: "SendMessage",
            failure: shared::error::AwsFailure::Rejected,
            code: None,
            message: format!("job not serializable: {e}"),
        })?;
        let out = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sqs", "SendMessage", e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::send_message::SendMessageOutput;
    use aws_sdk_sqs::Client;
    use aws_smithy_mocks::mock;
    use chrono::TimeZone;
    use serde_json::json;

    fn job() -> Job {
        Job {
            id: None,
            action: JobAction::Acknowledge,
            incident_key: Some("VPN connection vpn-1 is DOWN".into()),
            actor: Actor::Person {
                id: "U0JANE".into(),
                name: "jane".into(),
            },
            team: Some("C0OPS".into()),
            text: None,
            silence: None,
            impact: None,
            response_url: Some(Secret::new(
                "https://hooks.slack.com/actions/T1/1/abc".into(),
            )),
            requested_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn job_round_trips_and_hides_the_response_url_in_debug() {
        let j = job();
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(
            v,
            json!({"action": "acknowledge", "incident_key": "VPN connection vpn-1 is DOWN",
                   "actor": {"kind": "person", "id": "U0JANE", "name": "jane"}, "team": "C0OPS",
                   "response_url": "https://hooks.slack.com/actions/T1/1/abc",
                   "requested_at": "2023-11-14T22:13:20Z"})
        );
        let back: Job = serde_json::from_value(v).unwrap();
        assert_eq!(back, j);
        assert!(!format!("{j:?}").contains("hooks.slack.com"));
    }

    #[tokio::test]
    async fn send_puts_the_job_json_on_the_queue() {
        let expected = serde_json::to_string(&job()).unwrap();
        let send = mock!(Client::send_message)
            .match_requests(move |r| {
                r.queue_url() == Some("https://sqs.eu-west-1.amazonaws.com/123456789012/actions")
                    && r.message_body() == Some(expected.as_str())
            })
            .then_output(|| SendMessageOutput::builder().message_id("msg-1").build());
        let client = shared::mock_client!(aws_sdk_sqs, [&send]);
        let q = SqsJobQueue::new(
            client,
            "https://sqs.eu-west-1.amazonaws.com/123456789012/actions",
        );
        assert_eq!(q.send(&job()).await.unwrap(), "msg-1");
        assert_eq!(send.num_calls(), 1);
    }
}
