//! SNS -> one Slack incoming webhook, and nothing else (the floor notify-fanout is
//! measured against). The webhook URL comes from `SLACK_WEBHOOK_URL`; each record's
//! `Sns.Message` is posted as the message text.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let url = std::env::var("SLACK_WEBHOOK_URL").map_err(|_| "SLACK_WEBHOOK_URL is not set")?;
    let client = reqwest::Client::new();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (client, url) = (&client, &url);
        async move {
            let records = event.payload["Records"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for record in &records {
                let text = record["Sns"]["Message"].as_str().unwrap_or_default();
                client
                    .post(url.as_str())
                    .json(&json!({ "text": text }))
                    .send()
                    .await?
                    .error_for_status()?;
            }
            Ok::<_, Error>(json!({ "posted": records.len() }))
        }
    }))
    .await
}
