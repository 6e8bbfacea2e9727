//! The handler with its real AWS adapters over `aws-smithy-mocks` (Secrets Manager
//! and DynamoDB) and the fake Slack.

mod support;

use shared::state::Owner;
use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use aws_smithy_mocks::mock;
use notify_fanout::handler::{handle, Deps};
use notify_fanout::secrets::SettingsCache;
use notify_fanout::slack_api::{Budget, SlackClient};
use notify_fanout::store::DynamoStore;
use serde_json::json;
use support::*;

const SECRET_ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf";

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

#[tokio::test]
async fn handler_reads_secret_claims_posts_and_records_through_aws_adapters() {
    let fake = FakeSlack::start().await;
    let secret = json!({"destinations": {"ops": {"type": "webhook", "url": fake.webhook_url()}}})
        .to_string();
    let get_secret = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .match_requests(|r| r.secret_id() == Some(SECRET_ARN))
        .then_output(move || {
            GetSecretValueOutput::builder()
                .secret_string(secret.clone())
                .build()
        });
    let claim = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            let item = r.item().unwrap();
            r.table_name() == Some("state")
                && item["pk"] == s("delivery#m-aws#ops")
                && item["status"] == s("sending")
                && item.contains_key("expires_at")
                && r.condition_expression()
                    .is_some_and(|c| c.starts_with("attribute_not_exists(pk)"))
        })
        .then_output(|| PutItemOutput::builder().build());
    // The webhook's channel slot (about one message per second per channel).
    let slot = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            r.item().unwrap()["pk"] == s("pace#webhook:ops")
                && r.item().unwrap().contains_key("next_at")
                && r.condition_expression() == Some("attribute_not_exists(#next) OR #next <= :now")
        })
        .then_output(|| PutItemOutput::builder().build());
    let done = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| {
            let item = r.item().unwrap();
            item["pk"] == s("delivery#m-aws#ops")
                && item["status"] == s("done")
                && r.condition_expression().is_none()
        })
        .then_output(|| PutItemOutput::builder().build());
    // The same message again: the claim finds the `done` record.
    let claim_again = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|r| r.item().unwrap()["pk"] == s("delivery#m-aws#ops"))
        .then_error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .set_item(Some(HashMap::from([
                        ("pk".to_string(), s("delivery#m-aws#ops")),
                        ("status".to_string(), s("done")),
                    ])))
                    .build(),
            )
        });

    let sm = shared::mock_client!(aws_sdk_secretsmanager, [&get_secret]);
    let ddb = shared::mock_client!(aws_sdk_dynamodb, [&claim, &slot, &done, &claim_again]);
    let settings = SettingsCache::new(sm, SECRET_ARN, Duration::from_secs(300));
    let store = DynamoStore::new(ddb, "state", 14 * 86_400, 30 * 86_400);
    let config = config(&fake);
    let slack = SlackClient::new(&config.slack_api_url).unwrap();
    let deps = Deps {
        slack: &slack,
        store: &store,
        settings: &settings,
        config: &config,
    };
    let event = sns_event("m-aws", Some("Hello"), "Deployment finished");

    let summary = handle(
        &deps,
        &event,
        Budget::after(Duration::from_secs(10)),
        &Owner::new("", None),
    )
    .await
    .unwrap();
    assert_eq!(summary.posted, 1);
    let hooks = fake.requests_to(WEBHOOK_PATH);
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].body["blocks"][0]["text"]["text"], "Hello");

    let summary = handle(
        &deps,
        &event,
        Budget::after(Duration::from_secs(10)),
        &Owner::new("", None),
    )
    .await
    .unwrap();
    assert_eq!(summary.already_delivered, 1);
    assert_eq!(fake.requests_to(WEBHOOK_PATH).len(), 1);
    assert_eq!(
        (
            get_secret.num_calls(),
            claim.num_calls(),
            slot.num_calls(),
            done.num_calls(),
            claim_again.num_calls()
        ),
        (1, 1, 1, 1, 1)
    );
}
