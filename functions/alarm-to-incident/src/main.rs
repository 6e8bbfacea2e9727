//! alarm-to-incident: a CloudWatch alarm (direct alarm action, EventBridge or SNS)
//! in, one classified incident out (OpsCenter or Incident Manager), kept in step with
//! the alarm, every change published to the SNS notification topic.

mod config;
mod effects;
mod error;
mod handler;
mod publish;
#[cfg(test)]
mod scenarios;

use lambda_runtime::{service_fn, LambdaEvent};
use shared::config::Env;
use shared::state::DynamoStateStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    let config = config::Config::from_env(&Env::from_process())?;
    let sdk = shared::aws::load_sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let rules = config.load_rules(&ssm).await?;
    let backend =
        shared::backend::from_sdk_config(config.backend, &sdk, config.response_plan_arn.clone());
    let store = DynamoStateStore::new(aws_sdk_dynamodb::Client::new(&sdk), &config.table);
    let publisher = publish::SnsPublisher::new(aws_sdk_sns::Client::new(&sdk), &config.topic_arn);
    let settings = handler::Settings::new(config.automation_role_arn.clone());
    tracing::info!(backend = %config.backend, rules = ?rules.names(), "alarm-to-incident ready");
    let deps = handler::Deps {
        backend: backend.as_ref(),
        store: &store,
        publisher: &publisher,
        rules: &rules,
        settings: &settings,
        clock: &handler::SystemClock,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let deps = &deps;
        async move {
            handler::handle(deps, &event.payload)
                .await
                .map_err(lambda_runtime::Diagnostic::from)
        }
    }))
    .await
}
