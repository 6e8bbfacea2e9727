//! alarm-to-incident: a CloudWatch alarm (direct alarm action, EventBridge or SNS)
//! in, one classified incident out (OpsCenter or Incident Manager), kept in step with
//! the alarm, every change published to the SNS notification topic, an escalation
//! timer set for incidents nobody acknowledges (when configured).

mod cloudwatch;
mod config;
mod effects;
mod error;
mod handler;
#[cfg(test)]
mod org_scenarios;
#[cfg(test)]
mod quiet_tests;
#[cfg(test)]
mod scenarios;
mod sweep;

use lambda_runtime::{service_fn, LambdaEvent};
use shared::config::Env;
use shared::effects::{EffectDeps, RunnerSettings, SnsPublisher, SystemClock};
use shared::escalation::{EscalationTimer, SchedulerTimer};
use shared::hold_timer::{HoldTimer, SchedulerHoldTimer};
use shared::state::{DynamoStateStore, Owner};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    let config = config::Config::from_env(&Env::from_process())?;
    let sdk = shared::aws::load_sdk_config().await;
    let rules = config.load_rules(&aws_sdk_ssm::Client::new(&sdk)).await?;
    let backend =
        shared::backend::from_sdk_config(config.backend, &sdk, config.response_plan_arn.clone());
    let store = DynamoStateStore::new(aws_sdk_dynamodb::Client::new(&sdk), &config.table);
    let publisher = SnsPublisher::new(aws_sdk_sns::Client::new(&sdk), &config.topic_arn);
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    let timer = (config.escalation.as_ref()).map(|p| SchedulerTimer::new(scheduler.clone(), p));
    let hold_timer = (config.hold_timer.as_ref()).map(|c| SchedulerHoldTimer::new(scheduler, c));
    let alarms = cloudwatch::CloudWatchAlarms::from_sdk(&sdk, &config);
    let settings = RunnerSettings::new(config.automation_role_arn.clone());
    tracing::info!(backend = %config.backend, rules = ?rules.names(), escalation = config.escalation.is_some(), "alarm-to-incident ready");
    let effects = EffectDeps {
        backend: backend.as_ref(),
        store: &store,
        publisher: &publisher,
        clock: &SystemClock,
        settings: &settings,
        timer: timer.as_ref().map(|t| t as &dyn EscalationTimer),
        // Pages are sent by the escalation itself (slack-actions), never at open.
        pager: None,
    };
    let metrics = handler::EmfCounter {
        function: config.function_name.clone(),
    };
    let deps = handler::Deps {
        effects,
        rules: &rules,
        escalation: config.escalation.as_ref(),
        holds: &store,
        silences: &store,
        alarms: &alarms,
        hold_timer: hold_timer.as_ref().map(|t| t as &dyn HoldTimer),
        org: config.org.as_ref(),
        diagnosis_document: config.runbook_document.as_deref(),
        metrics: &metrics,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let deps = &deps;
        async move {
            let owner = Owner::from_invocation(&event.context.request_id, event.context.deadline());
            let arn = &event.context.invoked_function_arn;
            handler::handle_invocation(deps, &owner, &event.payload, arn)
                .await
                .map_err(lambda_runtime::Diagnostic::from)
        }
    }))
    .await
}
