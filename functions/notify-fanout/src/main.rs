//! Lambda entry point: configuration, clients and the secret cache are built once
//! per container; each invocation runs [`notify_fanout::handler::handle`].

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use notify_fanout::config::Config;
use notify_fanout::handler::{handle, Deps};
use notify_fanout::secrets::SettingsCache;
use notify_fanout::slack_api::{Budget, SlackClient};
use notify_fanout::store::DynamoStore;
use notify_fanout::DEADLINE_RESERVE;
use serde_json::Value;
use shared::config::Env;
use shared::state::Owner;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    let config = Config::from_env(&Env::from_process())?;
    let sdk = shared::aws::load_sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let settings = SettingsCache::new(secrets, config.secret_arn.clone(), config.secret_cache_ttl);
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        config.state_table.clone(),
        config.delivery_ttl_seconds,
        config.thread_ttl_seconds,
    )
    .with_channel_interval(config.channel_interval);
    let slack = SlackClient::new(&config.slack_api_url)?;
    let deps = Deps {
        slack: &slack,
        store: &store,
        settings: &settings,
        config: &config,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let deps = &deps;
        async move {
            let budget = Budget::from_deadline(event.context.deadline(), DEADLINE_RESERVE);
            let owner = Owner::from_invocation(&event.context.request_id, event.context.deadline());
            handle(deps, &event.payload, budget, &owner)
                .await
                .map_err(Diagnostic::from)
        }
    }))
    .await
}
