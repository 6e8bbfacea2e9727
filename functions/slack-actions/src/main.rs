//! Lambda entry point: configuration, clients and caches are built once per
//! container; each invocation (Function URL request, SQS batch or escalation
//! schedule) runs [`slack_actions::handler::handle`].

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use shared::config::Env;
use shared::state::Owner;
use slack_actions::config::Config;
use slack_actions::handler::{handle, Place};
use slack_actions::wiring::Container;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    let config = Config::from_env(&Env::from_process())?;
    let sdk = shared::aws::load_sdk_config().await;
    let container = Container::new(config, &sdk)?;
    tracing::info!(
        backend = %container.config.backend,
        escalation = container.config.escalation.is_some(),
        "slack-actions ready"
    );
    let deps = container.deps();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let deps = &deps;
        async move {
            let place = Place::from_function_arn(&event.context.invoked_function_arn);
            let invocation =
                Owner::from_invocation(&event.context.request_id, event.context.deadline());
            handle(deps, event.payload, &place, &invocation)
                .await
                .map_err(Diagnostic::from)
        }
    }))
    .await
}
