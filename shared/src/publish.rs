//! Publishing a lifecycle notification to the SNS topic: the Chatbot custom
//! notification JSON as the message, `event_type` and `impact` as message attributes
//! so subscriptions can filter. alarm-to-incident and vpn-troubleshoot both publish.

use aws_sdk_sns::types::MessageAttributeValue;

use crate::error::{AwsError, AwsFailure};
use crate::notification::Notification;

/// Publishes `notification` to `topic_arn`; returns the SNS message id.
pub async fn publish_notification(
    client: &aws_sdk_sns::Client,
    topic_arn: &str,
    notification: &Notification,
) -> Result<String, AwsError> {
    let mut request = client
        .publish()
        .topic_arn(topic_arn)
        .message(notification.to_chatbot().to_string());
    for (name, value) in notification.message_attributes() {
        let attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(|e| AwsError {
                service: "sns",
                operation: "Publish",
                failure: AwsFailure::Rejected,
                code: None,
                message: format!("could not build message attribute {name}: {e}"),
            })?;
        request = request.message_attributes(name, attr);
    }
    let out = request
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sns", "Publish", e))?;
    Ok(out.message_id().unwrap_or_default().to_string())
}
