//! The clients and caches of one container, built once from the configuration and
//! the SDK configuration; [`Container::deps`] lends them to each invocation.

use shared::backend::from_sdk_config;
use shared::effects::{EffectDeps, RunnerSettings, SnsPublisher, SystemClock};
use shared::escalation::{EscalationTimer, Pager, SchedulerTimer, SnsPager};
use shared::hold_timer::{HoldTimer, SchedulerHoldTimer};
use shared::incident::IncidentBackend;
use shared::state::DynamoStateStore;

use crate::config::Config;
use crate::groups::GroupCache;
use crate::handler::Deps;
use crate::incidents::DynamoIncidents;
use crate::queue::SqsJobQueue;
use crate::replay::DynamoReplayGuard;
use crate::secrets::SecretsCache;
use crate::slack_web::SlackHttp;

/// Everything an invocation needs, owned by the container.
pub struct Container {
    pub config: Config,
    backend: Box<dyn IncidentBackend>,
    store: DynamoStateStore,
    publisher: SnsPublisher,
    settings: RunnerSettings,
    timer: Option<SchedulerTimer>,
    pager: Option<SnsPager>,
    hold_timer: Option<SchedulerHoldTimer>,
    credentials: SecretsCache<aws_sdk_secretsmanager::Client>,
    replay: DynamoReplayGuard,
    incidents: DynamoIncidents,
    queue: SqsJobQueue,
    slack: SlackHttp,
    groups: GroupCache,
}

impl Container {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Result<Container, reqwest::Error> {
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        let sns = aws_sdk_sns::Client::new(sdk);
        let scheduler = aws_sdk_scheduler::Client::new(sdk);
        let timer = config
            .escalation
            .as_ref()
            .map(|p| SchedulerTimer::new(scheduler.clone(), p));
        let hold_timer = config
            .hold_timer
            .as_ref()
            .map(|c| SchedulerHoldTimer::new(scheduler, c));
        let pager = config
            .escalation
            .as_ref()
            .map(|p| SnsPager::new(sns.clone(), &p.topic_arn));
        Ok(Container {
            backend: from_sdk_config(config.backend, sdk, config.response_plan_arn.clone()),
            store: DynamoStateStore::new(dynamodb.clone(), &config.table),
            publisher: SnsPublisher::new(sns, &config.topic_arn),
            settings: RunnerSettings::new(config.automation_role_arn.clone()),
            timer,
            pager,
            hold_timer,
            credentials: SecretsCache::new(
                aws_sdk_secretsmanager::Client::new(sdk),
                &config.signing_secret_arn,
                &config.slack_secret_arn,
                config.bot_destination.clone(),
                config.secret_cache_ttl,
            ),
            replay: DynamoReplayGuard::new(dynamodb.clone(), &config.table),
            incidents: DynamoIncidents::new(dynamodb, &config.table),
            queue: SqsJobQueue::new(aws_sdk_sqs::Client::new(sdk), &config.queue_url),
            slack: SlackHttp::new(&config.slack_api_url, config.response_url_prefixes.clone())?,
            groups: GroupCache::default(),
            config,
        })
    }

    pub fn deps(&self) -> Deps<'_> {
        Deps {
            config: &self.config,
            credentials: &self.credentials,
            replay: &self.replay,
            slack: &self.slack,
            queue: &self.queue,
            incidents: &self.incidents,
            groups: &self.groups,
            silences: &self.store,
            hold_timer: self.hold_timer.as_ref().map(|t| t as &dyn HoldTimer),
            effects: EffectDeps {
                backend: self.backend.as_ref(),
                store: &self.store,
                publisher: &self.publisher,
                clock: &SystemClock,
                settings: &self.settings,
                timer: self.timer.as_ref().map(|t| t as &dyn EscalationTimer),
                pager: self.pager.as_ref().map(|p| p as &dyn Pager),
            },
        }
    }
}
