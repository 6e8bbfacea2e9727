//! Publishing lifecycle notifications to the SNS topic, in the Chatbot custom
//! notification schema, with `event_type` and `impact` message attributes for
//! subscription filters.

use async_trait::async_trait;
use shared::error::AwsError;
use shared::notification::Notification;

/// Where notifications go.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one notification; returns the message id.
    async fn publish(&self, notification: &Notification) -> Result<String, AwsError>;
}

/// [`Publisher`] to an SNS topic.
#[derive(Debug, Clone)]
pub struct SnsPublisher {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsPublisher {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        SnsPublisher {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

#[async_trait]
impl Publisher for SnsPublisher {
    async fn publish(&self, notification: &Notification) -> Result<String, AwsError> {
        shared::publish::publish_notification(&self.client, &self.topic_arn, notification).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sns::operation::publish::PublishOutput;
    use aws_smithy_mocks::mock;
    use shared::incident::Impact;
    use shared::notification::{EventType, IncidentStatus};

    pub(crate) fn sample() -> Notification {
        Notification {
            event: EventType::Opened,
            incident_key: "VPN connection vpn-1 is DOWN".into(),
            title: "VPN connection vpn-1 is DOWN".into(),
            summary: "The VPN connection to the remote site is not working.".into(),
            impact: Impact::MEDIUM,
            status: IncidentStatus::Open,
            backend: Some("OpsCenter".into()),
            incident_ref: Some("oi-0123456789ab".into()),
            incident_url: None,
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            alarm: None,
            vpn_id: Some("vpn-1".into()),
            tunnel_ip: None,
            occurred_at: "2026-11-25T10:01:00Z".parse().unwrap(),
            opened_at: None,
            duration_seconds: None,
            next_steps: vec![],
            links: vec![],
            findings: vec![],
            timeline: vec![],
            roles: Default::default(),
            post_incident: None,
        }
    }

    #[tokio::test]
    async fn publish_sends_chatbot_json_with_attributes() {
        let rule = mock!(aws_sdk_sns::Client::publish)
            .match_requests(|r| {
                assert_eq!(
                    r.topic_arn(),
                    Some("arn:aws:sns:eu-west-1:123456789012:incidents")
                );
                let msg: serde_json::Value = serde_json::from_str(r.message().unwrap()).unwrap();
                assert_eq!(msg["version"], "1.0");
                assert_eq!(msg["source"], "custom");
                assert_eq!(msg["metadata"]["threadId"], "VPN connection vpn-1 is DOWN");
                let attrs = r.message_attributes().unwrap();
                assert_eq!(attrs["event_type"].string_value(), Some("opened"));
                assert_eq!(attrs["impact"].string_value(), Some("3"));
                assert_eq!(attrs["impact"].data_type(), "String");
                true
            })
            .then_output(|| PublishOutput::builder().message_id("m-1").build());
        let client = shared::mock_client!(aws_sdk_sns, [&rule]);
        let p = SnsPublisher::new(client, "arn:aws:sns:eu-west-1:123456789012:incidents");
        assert_eq!(p.publish(&sample()).await.unwrap(), "m-1");
        assert_eq!(rule.num_calls(), 1);
    }
}
