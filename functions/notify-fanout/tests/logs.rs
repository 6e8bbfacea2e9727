//! The captured JSON log output of successful, retried and failed deliveries must
//! never hold a token or a webhook URL. Alone in its test binary: `tracing`'s
//! callsite cache is process-wide, and a test running without a subscriber on
//! another thread can disable callsites for this one.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use aws_smithy_mocks::mock;
use notify_fanout::handler::{handle, Deps};
use notify_fanout::secrets::SettingsCache;
use notify_fanout::slack_api::{Budget, SlackClient};
use shared::error::Retryable;
use shared::incident::Impact;
use shared::notification::EventType;
use shared::state::Owner;
use support::*;
use tracing_subscriber::EnvFilter;

const SECRET_ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf";

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
    handle(
        &deps,
        &incident_event("m-1", &opened),
        budget(),
        &Owner::new("", None),
    )
    .await
    .unwrap();
    // Failures: invalid_auth from the API, a 403 from the webhook.
    fake.script("/api/chat.postMessage", [Reply::api_error("invalid_auth")]);
    fake.script(WEBHOOK_PATH, [Reply::status(403, "invalid_token")]);
    let updated = incident(EventType::Updated, Impact::CRITICAL, "2026-11-25T10:02:00Z");
    let err = handle(
        &deps,
        &incident_event("m-2", &updated),
        budget(),
        &Owner::new("", None),
    )
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
    let err = handle(
        &deps_bad,
        &incident_event("m-3", &updated),
        budget(),
        &Owner::new("", None),
    )
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
