//! The two secrets slack-actions reads from Secrets Manager, each once per container
//! and kept for a bounded time (a rotated value is picked up without a redeploy):
//!
//! - the Slack app's **signing secret** (`SLACK_SIGNING_SECRET_ARN`): the secret's
//!   text, or JSON `{"signing_secret": "..."}`;
//! - the **bot token** for `views.open` and `usergroups.users.list`, from the
//!   notify-fanout secret (`SLACK_SECRET_ARN`): the token of its bot destination
//!   named by `SLACK_BOT_DESTINATION`, or of its first bot destination by name.
//!
//! Values stay in [`Secret`]; errors name the secret's ARN, never its content.

use std::time::Duration;

use async_trait::async_trait;
use shared::error::{Retryable, Secret};
use shared::secrets::{Cached, SecretReadError, SecretSource};
use shared::slack::{SettingsError, SlackSettings, Target};
use tracing::info;

/// Why a secret cannot be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Read(#[from] SecretReadError),
    #[error("secret {arn} is empty: put the Slack app's signing secret in it (Basic Information > App Credentials)")]
    Empty { arn: String },
    #[error("secret {arn} is JSON without a non-empty \"signing_secret\" string")]
    NoSigningSecret { arn: String },
    #[error("Slack secret: {0}")]
    Settings(#[from] SettingsError),
    #[error("Slack secret {arn} has no bot destination{}", named.as_deref().map(|n| format!(" named {n:?}")).unwrap_or_default())]
    NoBotToken { arn: String, named: Option<String> },
}

impl Retryable for SecretError {
    fn retryable(&self) -> bool {
        matches!(self, SecretError::Read(e) if e.retryable())
    }
    fn kind(&self) -> &'static str {
        match self {
            SecretError::Read(SecretReadError::Aws(e)) => e.kind(),
            _ => "BadSlackSecret",
        }
    }
}

/// The credentials slack-actions needs.
#[async_trait]
pub trait Credentials: Send + Sync {
    async fn signing_secret(&self) -> Result<Secret<String>, SecretError>;
    async fn bot_token(&self) -> Result<Secret<String>, SecretError>;
}

/// The signing secret from a secret's text: the text itself, or its
/// `signing_secret` field when it is a JSON object.
pub fn parse_signing_secret(arn: &str, text: &str) -> Result<Secret<String>, SecretError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SecretError::Empty {
            arn: arn.to_string(),
        });
    }
    if text.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| SecretError::NoSigningSecret {
                arn: arn.to_string(),
            })?;
        return value
            .get("signing_secret")
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Secret::new(s.to_string()))
            .ok_or_else(|| SecretError::NoSigningSecret {
                arn: arn.to_string(),
            });
    }
    Ok(Secret::new(text.to_string()))
}

/// The bot token of the named bot destination, or of the first one by name.
pub fn bot_token_of(
    arn: &str,
    settings: &SlackSettings,
    named: Option<&str>,
) -> Result<Secret<String>, SecretError> {
    settings
        .destinations
        .iter()
        .filter(|d| named.is_none_or(|n| d.name == n))
        .find_map(|d| match &d.target {
            Target::Bot { token, .. } => Some(token.clone()),
            Target::Webhook { .. } => None,
        })
        .ok_or_else(|| SecretError::NoBotToken {
            arn: arn.to_string(),
            named: named.map(str::to_string),
        })
}

/// Both secrets, each cached for `ttl`.
pub struct SecretsCache<S> {
    source: S,
    signing_arn: String,
    slack_arn: String,
    bot_destination: Option<String>,
    signing: Cached<Secret<String>>,
    bot: Cached<Secret<String>>,
}

impl<S: SecretSource> SecretsCache<S> {
    pub fn new(
        source: S,
        signing_arn: impl Into<String>,
        slack_arn: impl Into<String>,
        bot_destination: Option<String>,
        ttl: Duration,
    ) -> Self {
        SecretsCache {
            source,
            signing_arn: signing_arn.into(),
            slack_arn: slack_arn.into(),
            bot_destination,
            signing: Cached::new(ttl),
            bot: Cached::new(ttl),
        }
    }
}

#[async_trait]
impl<S: SecretSource> Credentials for SecretsCache<S> {
    async fn signing_secret(&self) -> Result<Secret<String>, SecretError> {
        self.signing
            .get_or_load(|| async {
                let text = self.source.secret_string(&self.signing_arn).await?;
                let secret = parse_signing_secret(&self.signing_arn, text.expose())?;
                info!("Slack signing secret loaded");
                Ok(secret)
            })
            .await
    }

    async fn bot_token(&self) -> Result<Secret<String>, SecretError> {
        self.bot
            .get_or_load(|| async {
                let text = self.source.secret_string(&self.slack_arn).await?;
                let settings = SlackSettings::from_secret_json(text.expose())?;
                let token =
                    bot_token_of(&self.slack_arn, &settings, self.bot_destination.as_deref())?;
                info!("Slack bot token loaded");
                Ok(token)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
    use aws_sdk_secretsmanager::Client;
    use aws_smithy_mocks::mock;

    const SIGNING_ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:signing-AbCdEf";
    const SLACK_ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf";
    const SLACK_SECRET: &str = r#"{"destinations": {
        "a-hook": {"type": "webhook", "url": "https://hooks.slack.com/services/T0/B0/sekrit"},
        "ops": {"type": "bot", "token": "xoxb-ops", "channel": "C0OPS"},
        "zz": {"type": "bot", "token": "xoxb-zz", "channel": "C0ZZ"}}}"#;

    #[test]
    fn signing_secret_is_the_text_or_its_json_field() {
        assert_eq!(
            parse_signing_secret(SIGNING_ARN, " 8f742231b10e8888abcd99yyyzzz85a5\n")
                .unwrap()
                .expose(),
            "8f742231b10e8888abcd99yyyzzz85a5"
        );
        assert_eq!(
            parse_signing_secret(SIGNING_ARN, r#"{"signing_secret": "abc"}"#)
                .unwrap()
                .expose(),
            "abc"
        );
        let empty = parse_signing_secret(SIGNING_ARN, "  ").unwrap_err();
        assert!(matches!(empty, SecretError::Empty { .. }));
        assert!(!empty.retryable());
        let err = parse_signing_secret(SIGNING_ARN, r#"{"other": "hunter2"}"#).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(matches!(err, SecretError::NoSigningSecret { .. }));
    }

    #[test]
    fn bot_token_is_the_first_bot_destination_or_the_named_one() {
        let settings = SlackSettings::from_secret_json(SLACK_SECRET).unwrap();
        assert_eq!(
            bot_token_of(SLACK_ARN, &settings, None).unwrap().expose(),
            "xoxb-ops"
        );
        assert_eq!(
            bot_token_of(SLACK_ARN, &settings, Some("zz"))
                .unwrap()
                .expose(),
            "xoxb-zz"
        );
        let err = bot_token_of(SLACK_ARN, &settings, Some("a-hook")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Slack secret {SLACK_ARN} has no bot destination named \"a-hook\"")
        );
    }

    #[tokio::test]
    async fn cache_reads_each_secret_once_within_the_ttl() {
        let signing = mock!(Client::get_secret_value)
            .match_requests(|r| r.secret_id() == Some(SIGNING_ARN))
            .then_output(|| {
                GetSecretValueOutput::builder()
                    .secret_string("s3cr3t")
                    .build()
            });
        let slack = mock!(Client::get_secret_value)
            .match_requests(|r| r.secret_id() == Some(SLACK_ARN))
            .then_output(|| {
                GetSecretValueOutput::builder()
                    .secret_string(SLACK_SECRET)
                    .build()
            });
        let client = shared::mock_client!(
            aws_sdk_secretsmanager,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&signing, &slack]
        );
        let cache = SecretsCache::new(
            client,
            SIGNING_ARN,
            SLACK_ARN,
            None,
            Duration::from_secs(300),
        );
        for _ in 0..3 {
            assert_eq!(cache.signing_secret().await.unwrap().expose(), "s3cr3t");
            assert_eq!(cache.bot_token().await.unwrap().expose(), "xoxb-ops");
        }
        assert_eq!(signing.num_calls(), 1);
        assert_eq!(slack.num_calls(), 1);
    }

    #[tokio::test]
    async fn cache_reads_again_after_the_ttl() {
        let signing = mock!(Client::get_secret_value).then_output(|| {
            GetSecretValueOutput::builder()
                .secret_string("s3cr3t")
                .build()
        });
        let client = shared::mock_client!(
            aws_sdk_secretsmanager,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&signing]
        );
        let cache = SecretsCache::new(client, SIGNING_ARN, SLACK_ARN, None, Duration::ZERO);
        cache.signing_secret().await.unwrap();
        cache.signing_secret().await.unwrap();
        assert_eq!(signing.num_calls(), 2);
    }
}
