//! notify-fanout's configuration, read once from the environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SLACK_SECRET_ARN` | Secrets Manager secret: destinations, credentials, optional routing | required |
//! | `STATE_TABLE_NAME` | the stack's state table (threads, deliveries) | required |
//! | `SLACK_ROUTING` | routing rules JSON; overrides the secret's `routing` | every destination gets everything |
//! | `MENTION_MIN_IMPACT` | default mention threshold, 1 (critical) to 5 | 1 |
//! | `SLACK_API_URL` | Slack Web API base URL (a local fake in tests) | `https://slack.com/api` |
//! | `SLACK_SECRET_CACHE_SECONDS` | how long the secret is kept per container | 300 |
//! | `DELIVERY_TTL_DAYS` | how long delivery records are kept | 14 |
//! | `THREAD_TTL_DAYS` | how long a thread is kept after its last message | 30 |
//! | `SLACK_CHANNEL_INTERVAL_MS` | least time between two Slack calls to one channel (`crate::pace`); 0 turns pacing off (benchmarks) | 1000 |

use std::time::Duration;

use shared::config::{ConfigError, Env};
use shared::incident::Impact;
use shared::slack;
use shared::slack::Routing;

/// The function's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub secret_arn: String,
    pub state_table: String,
    pub routing: Option<Routing>,
    pub mention_min_impact: Option<Impact>,
    pub slack_api_url: String,
    pub secret_cache_ttl: Duration,
    pub delivery_ttl_seconds: i64,
    pub thread_ttl_seconds: i64,
    /// Least time between two Slack calls to one channel; zero: not paced.
    pub channel_interval: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let routing = match env.optional("SLACK_ROUTING") {
            None => None,
            Some(json) => Some(
                Routing::from_json(&json)
                    .map_err(|e| ConfigError::invalid("SLACK_ROUTING", &json, e))?,
            ),
        };
        let mention_min_impact = match env.optional("MENTION_MIN_IMPACT") {
            None => None,
            Some(v) => Some(v.parse::<u8>().ok().and_then(Impact::new).ok_or_else(|| {
                ConfigError::invalid(
                    "MENTION_MIN_IMPACT",
                    &v,
                    "expected an impact from 1 (critical) to 5",
                )
            })?),
        };
        let slack_api_url = env.http_url("SLACK_API_URL", slack::DEFAULT_API_URL)?;
        let days = |var: &str, default: u32| -> Result<i64, ConfigError> {
            let d: u32 = env.parse_or(var, default)?;
            if d == 0 || d > 3650 {
                return Err(ConfigError::invalid(
                    var,
                    &d.to_string(),
                    "expected 1 to 3650 days",
                ));
            }
            Ok(i64::from(d) * 86_400)
        };
        Ok(Config {
            secret_arn: env.arn("SLACK_SECRET_ARN", "secretsmanager")?,
            state_table: env.required(
                "STATE_TABLE_NAME",
                "the name of the stack's DynamoDB state table",
            )?,
            routing,
            mention_min_impact,
            slack_api_url,
            secret_cache_ttl: Duration::from_secs(
                env.parse_or("SLACK_SECRET_CACHE_SECONDS", 300u64)?,
            ),
            delivery_ttl_seconds: days("DELIVERY_TTL_DAYS", 14)?,
            thread_ttl_seconds: days("THREAD_TTL_DAYS", 30)?,
            channel_interval: {
                let ms: u64 = env.parse_or("SLACK_CHANNEL_INTERVAL_MS", 1000u64)?;
                if ms > 60_000 {
                    return Err(ConfigError::invalid(
                        "SLACK_CHANNEL_INTERVAL_MS",
                        &ms.to_string(),
                        "expected 0 to 60000 milliseconds",
                    ));
                }
                Duration::from_millis(ms)
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf";

    #[test]
    fn minimal_environment_uses_defaults() {
        let c = Config::from_env(&Env::from_pairs([
            ("SLACK_SECRET_ARN", ARN),
            ("STATE_TABLE_NAME", "state"),
        ]))
        .unwrap();
        assert_eq!(c.slack_api_url, "https://slack.com/api");
        assert_eq!(c.routing, None);
        assert_eq!(c.mention_min_impact, None);
        assert_eq!(c.secret_cache_ttl, Duration::from_secs(300));
        assert_eq!(
            (c.delivery_ttl_seconds, c.thread_ttl_seconds),
            (14 * 86_400, 30 * 86_400)
        );
        assert_eq!(c.channel_interval, Duration::from_secs(1));
    }

    #[test]
    fn full_environment_is_parsed() {
        let c = Config::from_env(&Env::from_pairs([
            ("SLACK_SECRET_ARN", ARN),
            ("STATE_TABLE_NAME", "state"),
            (
                "SLACK_ROUTING",
                r#"{"rules": [{"min_impact": 2, "destinations": ["oncall"]}], "default": ["ops"]}"#,
            ),
            ("MENTION_MIN_IMPACT", "2"),
            ("SLACK_API_URL", "http://127.0.0.1:4010/api"),
            ("SLACK_SECRET_CACHE_SECONDS", "60"),
            ("THREAD_TTL_DAYS", "7"),
            ("SLACK_CHANNEL_INTERVAL_MS", "0"),
        ]))
        .unwrap();
        assert_eq!(c.channel_interval, Duration::ZERO);
        assert_eq!(c.routing.unwrap().default, vec!["ops"]);
        assert_eq!(c.mention_min_impact, Some(Impact::HIGH));
        assert_eq!(c.slack_api_url, "http://127.0.0.1:4010/api");
        assert_eq!(c.secret_cache_ttl, Duration::from_secs(60));
        assert_eq!(c.thread_ttl_seconds, 7 * 86_400);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let base = [("SLACK_SECRET_ARN", ARN), ("STATE_TABLE_NAME", "state")];
        let with = |k: &'static str, v: &'static str| {
            let mut pairs = base.to_vec();
            pairs.push((k, v));
            Config::from_env(&Env::from_pairs(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(with("MENTION_MIN_IMPACT", "0").contains("MENTION_MIN_IMPACT=\"0\""));
        assert!(with("SLACK_ROUTING", "{").contains("SLACK_ROUTING"));
        assert!(with("SLACK_API_URL", "slack.com").contains("SLACK_API_URL"));
        assert!(with("THREAD_TTL_DAYS", "0").contains("THREAD_TTL_DAYS"));
        assert!(with("SLACK_CHANNEL_INTERVAL_MS", "60001").contains("SLACK_CHANNEL_INTERVAL_MS"));
        let missing =
            Config::from_env(&Env::from_pairs([("STATE_TABLE_NAME", "state")])).unwrap_err();
        assert!(
            missing.to_string().contains("SLACK_SECRET_ARN is not set"),
            "{missing}"
        );
    }
}
