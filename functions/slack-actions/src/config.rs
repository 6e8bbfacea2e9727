//! Configuration of slack-actions, read once at start-up.
//!
//! | variable | meaning |
//! |---|---|
//! | `SLACK_SIGNING_SECRET_ARN` | Secrets Manager secret: the Slack app's signing secret |
//! | `SLACK_SECRET_ARN` | the notify-fanout Slack secret (its bot token calls `views.open`, `usergroups.users.list`) |
//! | `SLACK_BOT_DESTINATION` | the bot destination of that secret to use; optional (first bot destination) |
//! | `SLACK_ACTION_POLICY` | who may do what (`shared::slack::authz`); unset = nobody may do anything |
//! | `SLACK_API_URL` | Slack Web API base; default `https://slack.com/api` |
//! | `SLACK_RESPONSE_URL_PREFIXES` | comma-separated prefixes a `response_url` must start with; default `https://hooks.slack.com/` |
//! | `SLACK_SECRET_CACHE_SECONDS` | how long both secrets are cached; default 300 |
//! | `STATE_TABLE_NAME` | the state table (incident records, used request signatures) |
//! | `ACTIONS_QUEUE_URL` | the SQS queue of changes to do |
//! | `NOTIFICATION_TOPIC_ARN` | the lifecycle notification topic |
//! | `INCIDENT_BACKEND`, `RESPONSE_PLAN_ARN` | as for alarm-to-incident (declare opens incidents) |
//! | `AUTOMATION_ROLE_ARN` | the runbook's `AutomationAssumeRole` (re-run diagnosis); optional |
//! | `ESCALATION_*` | the escalation policy (`shared::escalation`); unset `ESCALATION_MIN_IMPACT` = off |
//! | `HOLD_SCHEDULE_GROUP`, `HOLD_SCHEDULER_ROLE_ARN`, `HOLD_TARGET_ARN` | the timer at a silence's end (`shared::hold_timer`), which runs alarm-to-incident's sweep; unset group = the scheduled sweep alone |
//! | `ORGANIZATION_ID`, `HOME_ACCOUNT_ID`, `ACCOUNT_DIRECTORY` | organization mode (`shared::org`): the accounts and tags the policy's `scopes` match |

use std::time::Duration;

use shared::backend::BackendKind;
use shared::config::{ConfigError, Env};
use shared::escalation::EscalationPolicy;
use shared::hold_timer::HoldTimerConfig;
use shared::org::OrgPolicy;
use shared::slack;
use shared::slack::authz::ActionPolicy;

pub const DEFAULT_RESPONSE_URL_PREFIX: &str = "https://hooks.slack.com/";

#[derive(Debug, Clone)]
pub struct Config {
    pub signing_secret_arn: String,
    pub slack_secret_arn: String,
    pub bot_destination: Option<String>,
    pub policy: ActionPolicy,
    pub slack_api_url: String,
    pub response_url_prefixes: Vec<String>,
    pub secret_cache_ttl: Duration,
    pub table: String,
    pub queue_url: String,
    pub topic_arn: String,
    pub backend: BackendKind,
    pub response_plan_arn: Option<String>,
    pub automation_role_arn: Option<String>,
    pub escalation: Option<EscalationPolicy>,
    /// Timers at silences' ends (targeting alarm-to-incident); `None` = off.
    pub hold_timer: Option<HoldTimerConfig>,
    /// Organization mode: the home account and the account directory, which the
    /// policy's `scopes` match incidents' accounts against. `None`: one account.
    pub org: Option<OrgPolicy>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let backend = BackendKind::from_env(env)?;
        let response_plan_arn = match backend {
            BackendKind::IncidentManager => Some(env.arn("RESPONSE_PLAN_ARN", "ssm-incidents")?),
            BackendKind::OpsCenter => env.optional_arn("RESPONSE_PLAN_ARN", "ssm-incidents")?,
        };
        let slack_api_url = env.http_url("SLACK_API_URL", slack::DEFAULT_API_URL)?;
        let prefixes_raw = env
            .optional("SLACK_RESPONSE_URL_PREFIXES")
            .unwrap_or_else(|| DEFAULT_RESPONSE_URL_PREFIX.to_string());
        let response_url_prefixes: Vec<String> = prefixes_raw
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        if response_url_prefixes.is_empty()
            || response_url_prefixes.iter().any(|p| {
                !(p.starts_with("https://") || p.starts_with("http://")) || !p.ends_with('/')
            })
        {
            return Err(ConfigError::invalid(
                "SLACK_RESPONSE_URL_PREFIXES",
                &prefixes_raw,
                "expected comma-separated http(s) URL prefixes, each ending with /",
            ));
        }
        Ok(Config {
            signing_secret_arn: env.arn("SLACK_SIGNING_SECRET_ARN", "secretsmanager")?,
            slack_secret_arn: env.arn("SLACK_SECRET_ARN", "secretsmanager")?,
            bot_destination: env.optional("SLACK_BOT_DESTINATION"),
            policy: ActionPolicy::from_env(env)?,
            slack_api_url,
            response_url_prefixes,
            secret_cache_ttl: Duration::from_secs(
                env.parse_or("SLACK_SECRET_CACHE_SECONDS", 300u64)?,
            ),
            table: env.required("STATE_TABLE_NAME", "the name of the DynamoDB state table")?,
            queue_url: env.required("ACTIONS_QUEUE_URL", "the URL of the SQS actions queue")?,
            topic_arn: env.arn("NOTIFICATION_TOPIC_ARN", "sns")?,
            backend,
            response_plan_arn,
            automation_role_arn: env.optional_arn("AUTOMATION_ROLE_ARN", "iam")?,
            escalation: EscalationPolicy::from_env(env)?,
            hold_timer: HoldTimerConfig::from_env(env)?
                .map(|c| c.with_sweep_target(env))
                .transpose()?,
            org: OrgPolicy::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "SLACK_SIGNING_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:signing-AbC",
            ),
            (
                "SLACK_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbC",
            ),
            ("STATE_TABLE_NAME", "state"),
            (
                "ACTIONS_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/actions",
            ),
            (
                "NOTIFICATION_TOPIC_ARN",
                "arn:aws:sns:eu-west-1:123456789012:notifications",
            ),
        ]
    }

    #[test]
    fn defaults_deny_everything_and_call_slack_com() {
        let c = Config::from_env(&Env::from_pairs(base())).unwrap();
        assert_eq!(c.slack_api_url, "https://slack.com/api");
        assert_eq!(c.response_url_prefixes, vec!["https://hooks.slack.com/"]);
        assert_eq!(c.secret_cache_ttl, Duration::from_secs(300));
        assert_eq!(c.backend, BackendKind::OpsCenter);
        assert_eq!(c.policy, ActionPolicy::deny_all());
        assert!(c.escalation.is_none());
        assert_eq!(c.bot_destination, None);
    }

    #[test]
    fn incident_manager_needs_the_response_plan() {
        let mut env = base();
        env.push(("INCIDENT_BACKEND", "IncidentManager"));
        let err = Config::from_env(&Env::from_pairs(env)).unwrap_err();
        assert!(err.to_string().contains("RESPONSE_PLAN_ARN"), "{err}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value, expected) in [
            (
                "SLACK_RESPONSE_URL_PREFIXES",
                "hooks.slack.com",
                "SLACK_RESPONSE_URL_PREFIXES",
            ),
            (
                "SLACK_RESPONSE_URL_PREFIXES",
                "https://hooks.slack.com",
                "SLACK_RESPONSE_URL_PREFIXES",
            ),
            ("SLACK_API_URL", "slack.com/api", "SLACK_API_URL"),
            (
                "SLACK_ACTION_POLICY",
                "{\"acknowledge\": {\"users\": [\"nobody\"]}}",
                "SLACK_ACTION_POLICY",
            ),
            (
                "SLACK_SIGNING_SECRET_ARN",
                "arn:aws:sns:eu-west-1:123456789012:x",
                "SLACK_SIGNING_SECRET_ARN",
            ),
        ] {
            let mut env: Vec<(&str, &str)> =
                base().into_iter().filter(|(k, _)| *k != var).collect();
            env.push((var, value));
            let err = Config::from_env(&Env::from_pairs(env)).unwrap_err();
            assert!(err.to_string().contains(expected), "{var}: {err}");
        }
    }

    #[test]
    fn missing_queue_url_is_an_error() {
        let env: Vec<(&str, &str)> = base()
            .into_iter()
            .filter(|(k, _)| *k != "ACTIONS_QUEUE_URL")
            .collect();
        let err = Config::from_env(&Env::from_pairs(env)).unwrap_err();
        assert!(err.to_string().contains("ACTIONS_QUEUE_URL"), "{err}");
    }
}
