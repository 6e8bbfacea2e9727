//! The handler with its real AWS adapters over `aws-smithy-mocks` (Secrets Manager
//! and DynamoDB) and the fake Slack; and the captured JSON log output of
//! successful, retried and failed deliveries, which must never hold a token or a
//! webhook URL.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
use shared::error::Retryable;
use shared::incident::Impact;
use shared::notification::EventType;
use support::*;
use tracing_subscriber::EnvFilter;

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
    let ddb = shared::mock_client!(aws_sdk_dynamodb, [&claim, &done, &claim_again]);
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

    let summary = handle(&deps, &event, Budget::after(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(summary.posted, 1);
    let hooks = fake.requests_to(WEBHOOK_PATH);
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].body["blocks"][0]["text"]["text"], "Hello");

    let summary = handle(&deps, &event, Budget::after(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(summary.already_delivered, 1);
    assert_eq!(fake.requests_to(WEBHOOK_PATH).len(), 1);
    assert_eq!(
        (
            get_secret.num_calls(),
            claim.num_calls(),
            done.num_calls(),
            claim_again.num_calls()
        ),
        (1, 1, 1, 1)
    );
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_contain_tokens_or_webhook_urls() {
    let buf = Buf::default();
    let writer = buf.clone();
    // DEBUG, the finest level the deployed function allows, including the HTTP stack.
    let subscriber =
        shared::logging::json_subscriber(EnvFilter::new("debug"), move || writer.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeSlack::start().await;
    let settings = FixedSettings::new(&secret_json(&fake, None));
    let store = MemoryStore::default();
    let config = config(&fake);
    let slack = SlackClient::new(&config.slack_api_url).unwrap();
    let deps = Deps {
        slack: &slack,
        store: &store,
        settings: &settings,
        config: &config,
    };
    let budget = || Budget::after(Duration::from_secs(10));

    // Success on both destinations, with a retried 500 on the webhook.
    fake.script(WEBHOOK_PATH, [Reply::status(500, "")]);
    let opened = incident(EventType::Opened, Impact::CRITICAL, "2026-11-25T10:01:00Z");
    handle(&deps, &incident_event("m-1", &opened), budget())
        .await
        .unwrap();
    // Failures: invalid_auth from the API, a 403 from the webhook.
    fake.script("/api/chat.postMessage", [Reply::api_error("invalid_auth")]);
    fake.script(WEBHOOK_PATH, [Reply::status(403, "invalid_token")]);
    let updated = incident(EventType::Updated, Impact::CRITICAL, "2026-11-25T10:02:00Z");
    let err = handle(&deps, &incident_event("m-2", &updated), budget())
        .await
        .unwrap_err();
    assert!(!err.retryable());

    // A secret that does not parse, with a token in it, through the real cache.
    let bad_secret = format!(
        r#"{{"destinations": {{"x": {{"type": "bot", "token": "{TOKEN}", "channel": 42}}}}}}"#
    );
    let rule = mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_output(move || {
        GetSecretValueOutput::builder()
            .secret_string(bad_secret.clone())
            .build()
    });
    let sm = shared::mock_client!(aws_sdk_secretsmanager, [&rule]);
    let cache = SettingsCache::new(sm, SECRET_ARN, Duration::from_secs(300));
    let deps_bad = Deps {
        settings: &cache,
        ..deps
    };
    let err = handle(&deps_bad, &incident_event("m-3", &updated), budget())
        .await
        .unwrap_err();
    assert_eq!(err.lambda_error_type(), "NonRetryable.BadSlackSecret");
    assert!(!err.to_string().contains(TOKEN));

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty());
    for secret in [
        TOKEN,
        "TESTTOKENSECRET",
        "WEBHOOKSECRETPATH",
        WEBHOOK_PATH,
        fake.webhook_url().as_str(),
    ] {
        assert!(
            !logs.contains(secret),
            "log output contains {secret:?}:\n{logs}"
        );
    }
    // The logs still tell the story: per-record span with the incident key, the
    // retry, the failures with Slack's codes.
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let with_key = lines
        .iter()
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["incident_key"] == INCIDENT_KEY))
        })
        .count();
    assert!(with_key >= 4, "{logs}");
    assert!(lines
        .iter()
        .any(|l| l["message"] == "Slack call failed, retrying" && l["operation"] == "webhook"));
    assert!(logs.contains("error invalid_auth"));
    assert!(logs.contains("rejected with HTTP 403 (invalid_token)"));
    assert!(lines.iter().any(|l| l["message"] == "invocation failed"));
}
