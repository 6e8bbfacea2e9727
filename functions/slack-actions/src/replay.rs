//! The replay guard: a verified Slack request is accepted once. Slack's signature
//! covers the timestamp and the body, so it names one request; the first use writes
//! `replay#<signature>` to the state table with a conditional put, and a second use
//! of the same signature (a captured request sent again within the 5-minute window
//! the timestamp check allows) finds it there.
//!
//! The item expires after [`REPLAY_TTL_SECONDS`] (DynamoDB TTL on `expires_at`). TTL
//! deletion is lazy, so the condition also lets an expired item be overwritten; by
//! then the timestamp check refuses the request anyway.
//!
//! The item names the invocation that wrote it (`owner`, its request id): when the
//! put's answer is lost and the SDK's retry fails the condition on that very item,
//! the request is still the first use, not a replay.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};
use shared::error::AwsError;

/// Longer than the 300 s either side of now that the timestamp check accepts.
pub const REPLAY_TTL_SECONDS: i64 = 600;

/// Records that a signature was used.
#[async_trait]
pub trait ReplayGuard: Send + Sync {
    /// `true` the first time a signature is seen (by `owner`, this invocation's
    /// token), `false` afterwards.
    async fn first_use(
        &self,
        signature: &str,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, AwsError>;
}

/// The partition key of a used signature.
pub fn replay_pk(signature: &str) -> String {
    format!("replay#{signature}")
}

/// [`ReplayGuard`] on the state table.
#[derive(Debug, Clone)]
pub struct DynamoReplayGuard {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoReplayGuard {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoReplayGuard {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl ReplayGuard for DynamoReplayGuard {
    async fn first_use(
        &self,
        signature: &str,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, AwsError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(replay_pk(signature)))
            .item(
                "expires_at",
                AttributeValue::N((now.timestamp() + REPLAY_TTL_SECONDS).to_string()),
            )
            .item("owner", AttributeValue::S(owner.to_string()))
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", AttributeValue::N(now.timestamp().to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(c)) => {
                    // Our own first use, whose answer was lost, is still ours.
                    let theirs = c.item().and_then(|i| i.get("owner"));
                    Ok(theirs == Some(&AttributeValue::S(owner.to_string())))
                }
                _ => Err(AwsError::from_sdk("dynamodb", "PutItem", e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_sdk_dynamodb::Client;
    use aws_smithy_mocks::mock;
    use chrono::TimeZone;
    use shared::error::Retryable;

    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_531_420_618, 0).unwrap()
    }

    #[tokio::test]
    async fn first_use_writes_the_signature_conditionally_with_ttl() {
        let put = mock!(Client::put_item)
            .match_requests(|r| {
                r.table_name() == Some("state")
                    && r.item().and_then(|i| i.get("pk"))
                        == Some(&AttributeValue::S(format!("replay#{SIG}")))
                    && r.item().and_then(|i| i.get("expires_at"))
                        == Some(&AttributeValue::N("1531421218".into()))
                    && r.condition_expression()
                        == Some("attribute_not_exists(pk) OR expires_at < :now")
                    && r.expression_attribute_values().and_then(|v| v.get(":now"))
                        == Some(&AttributeValue::N("1531420618".into()))
                    && r.item().and_then(|i| i.get("owner"))
                        == Some(&AttributeValue::S("req-1".into()))
                    && r.return_values_on_condition_check_failure()
                        == Some(&ReturnValuesOnConditionCheckFailure::AllOld)
            })
            .then_output(|| PutItemOutput::builder().build());
        let client = shared::mock_client!(aws_sdk_dynamodb, [&put]);
        let guard = DynamoReplayGuard::new(client, "state");
        assert!(guard.first_use(SIG, "req-1", now()).await.unwrap());
        assert_eq!(put.num_calls(), 1);
    }

    fn used_by(owner: &'static str) -> aws_smithy_mocks::Rule {
        mock!(Client::put_item).then_error(move || {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .message("The conditional request failed")
                    .item("pk", AttributeValue::S(replay_pk(SIG)))
                    .item("owner", AttributeValue::S(owner.into()))
                    .build(),
            )
        })
    }

    #[tokio::test]
    async fn second_use_is_a_replay() {
        let put = used_by("req-1");
        let client = shared::mock_client!(aws_sdk_dynamodb, [&put]);
        let guard = DynamoReplayGuard::new(client, "state");
        assert!(!guard.first_use(SIG, "req-2", now()).await.unwrap());
    }

    /// The put committed, its answer was lost, the SDK's retry failed the condition on
    /// the item this invocation wrote: still the first use, not a replay.
    #[tokio::test]
    async fn own_first_use_whose_answer_was_lost_is_not_a_replay() {
        let put = used_by("req-1");
        let client = shared::mock_client!(aws_sdk_dynamodb, [&put]);
        let guard = DynamoReplayGuard::new(client, "state");
        assert!(guard.first_use(SIG, "req-1", now()).await.unwrap());
    }

    #[tokio::test]
    async fn throttling_is_a_retryable_error_not_a_verdict() {
        let put = mock!(Client::put_item).then_error(|| {
            PutItemError::generic(
                aws_sdk_dynamodb::error::ErrorMetadata::builder()
                    .code("ProvisionedThroughputExceededException")
                    .message("slow down")
                    .build(),
            )
        });
        let client = shared::mock_client!(aws_sdk_dynamodb, [&put]);
        let err = DynamoReplayGuard::new(client, "state")
            .first_use(SIG, "req-1", now())
            .await
            .unwrap_err();
        assert!(err.retryable());
        assert_eq!(err.operation, "PutItem");
    }
}
