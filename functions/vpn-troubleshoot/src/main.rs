//! Lambda entry point: configuration, SDK clients, the incident backend and the
//! state table (when `STATE_TABLE_NAME` is set) built once per container; each
//! invocation runs `handler::handle`.

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use shared::config::Env;
use shared::effects::SystemClock;
use shared::member_access::AssumedRoles;
use shared::state::{DynamoStateStore, StateStore};
use vpn_troubleshoot::config::Config;
use vpn_troubleshoot::handler::{handle, Deps, Invocation, POLL_SCHEDULE};
use vpn_troubleshoot::member::{MemberAccess, StsMemberAccess, SESSION_NAME};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    let config = Config::from_env(&Env::from_process())?;
    let sdk = shared::aws::load_sdk_config().await;
    let region = sdk.region().map(|r| r.to_string());
    let members = config.member_roles.clone().map(|roles| {
        let partition = config.partition();
        let sts = aws_sdk_sts::Client::new(&sdk);
        let assumed = AssumedRoles::new(sts, sdk.clone(), &partition, SESSION_NAME);
        Box::new(StsMemberAccess::new(assumed, roles)) as Box<dyn MemberAccess>
    });
    let deps = Deps {
        ec2: aws_sdk_ec2::Client::new(&sdk),
        cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk),
        logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
        // Notes only: no response plan needed to write timeline events.
        backend: shared::backend::from_sdk_config(config.backend, &sdk, None),
        state: config.state_table.as_ref().map(|table| {
            let client = aws_sdk_dynamodb::Client::new(&sdk);
            Box::new(DynamoStateStore::new(client, table)) as Box<dyn StateStore>
        }),
        clock: Box::new(SystemClock),
        config,
        poll: POLL_SCHEDULE,
        members,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (deps, region) = (&deps, region.as_deref());
        async move {
            let inv = Invocation::from_context(&event.context, region);
            handle(deps, event.payload, inv)
                .await
                .map_err(Diagnostic::from)
        }
    }))
    .await
}
