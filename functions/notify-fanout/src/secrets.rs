//! The Slack secret (destinations and credentials), read from Secrets Manager once
//! per container and kept for a bounded time ([`shared::secrets::Cached`]), so a
//! rotated token is picked up without a redeploy. A refused token drops the cached
//! copy at once ([`SettingsSource::invalidate`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shared::error::Retryable;
use shared::secrets::{Cached, SecretReadError, SecretSource};
use shared::slack::{SettingsError, SlackSettings};
use tracing::info;

/// Why the Slack settings could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Read(#[from] SecretReadError),
    #[error(transparent)]
    Invalid(#[from] SettingsError),
}

impl Retryable for SecretError {
    fn retryable(&self) -> bool {
        match self {
            SecretError::Read(e) => e.retryable(),
            SecretError::Invalid(_) => false,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            SecretError::Read(SecretReadError::Aws(e)) => e.kind(),
            SecretError::Read(SecretReadError::NotText { .. }) | SecretError::Invalid(_) => {
                "BadSlackSecret"
            }
        }
    }
}

/// Gives the current Slack settings.
#[async_trait]
pub trait SettingsSource: Send + Sync {
    async fn settings(&self) -> Result<Arc<SlackSettings>, SecretError>;
    /// Forgets the cached settings (credentials were refused).
    async fn invalidate(&self);
}

/// The Slack secret, cached for `ttl`.
pub struct SettingsCache<S> {
    source: S,
    arn: String,
    settings: Cached<Arc<SlackSettings>>,
}

impl<S: SecretSource> SettingsCache<S> {
    pub fn new(source: S, arn: impl Into<String>, ttl: Duration) -> Self {
        SettingsCache {
            source,
            arn: arn.into(),
            settings: Cached::new(ttl),
        }
    }
}

#[async_trait]
impl<S: SecretSource> SettingsSource for SettingsCache<S> {
    async fn settings(&self) -> Result<Arc<SlackSettings>, SecretError> {
        self.settings
            .get_or_load(|| async {
                let text = self.source.secret_string(&self.arn).await?;
                let settings = Arc::new(SlackSettings::from_secret_json(text.expose())?);
                info!(
                    destinations = settings.destinations.len(),
                    routing_in_secret = settings.routing.is_some(),
                    "Slack secret loaded"
                );
                Ok(settings)
            })
            .await
    }

    async fn invalidate(&self) {
        self.settings.clear().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
    use aws_sdk_secretsmanager::Client;
    use aws_smithy_mocks::mock;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf";
    const SECRET: &str = r#"{"destinations": {"ops": {"type": "webhook", "url": "https://hooks.slack.com/services/T0/B0/sekrit"}}}"#;

    fn ok_rule() -> aws_smithy_mocks::Rule {
        mock!(Client::get_secret_value)
            .match_requests(|r| r.secret_id() == Some(ARN))
            .sequence()
            .output(|| {
                GetSecretValueOutput::builder()
                    .secret_string(SECRET)
                    .build()
            })
            .times(5)
            .build()
    }

    #[tokio::test]
    async fn settings_are_fetched_once_within_ttl() {
        let rule = ok_rule();
        let client = shared::mock_client!(aws_sdk_secretsmanager, [&rule]);
        let cache = SettingsCache::new(client, ARN, Duration::from_secs(300));
        let a = cache.settings().await.unwrap();
        let b = cache.settings().await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.destinations[0].name, "ops");
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn settings_are_fetched_again_after_ttl_or_invalidate() {
        let rule = ok_rule();
        let client = shared::mock_client!(aws_sdk_secretsmanager, [&rule]);
        let cache = SettingsCache::new(client, ARN, Duration::ZERO);
        cache.settings().await.unwrap();
        cache.settings().await.unwrap();
        assert_eq!(rule.num_calls(), 2);

        let rule = ok_rule();
        let client = shared::mock_client!(aws_sdk_secretsmanager, [&rule]);
        let cache = SettingsCache::new(client, ARN, Duration::from_secs(300));
        cache.settings().await.unwrap();
        cache.invalidate().await;
        cache.settings().await.unwrap();
        assert_eq!(rule.num_calls(), 2);
    }

    #[tokio::test]
    async fn invalid_secret_json_never_shows_the_secret() {
        let rule = mock!(Client::get_secret_value).then_output(|| {
            GetSecretValueOutput::builder()
                .secret_string(r#"{"destinations": {"ops": {"type": "bot", "token": "xoxb-sekrit", "channel": 1}}}"#)
                .build()
        });
        let client = shared::mock_client!(aws_sdk_secretsmanager, [&rule]);
        let err = SettingsCache::new(client, ARN, Duration::from_secs(300))
            .settings()
            .await
            .unwrap_err();
        assert!(matches!(err, SecretError::Invalid(_)));
        assert!(!err.to_string().contains("sekrit"), "{err}");
        assert_eq!(err.lambda_error_type(), "NonRetryable.BadSlackSecret");
    }

    #[tokio::test]
    async fn binary_secret_is_rejected_with_arn() {
        let rule =
            mock!(Client::get_secret_value).then_output(|| GetSecretValueOutput::builder().build());
        let client = shared::mock_client!(aws_sdk_secretsmanager, [&rule]);
        let err = SettingsCache::new(client, ARN, Duration::from_secs(300))
            .settings()
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("secret {ARN} has no SecretString (binary secrets are not supported)")
        );
        assert_eq!(err.lambda_error_type(), "NonRetryable.BadSlackSecret");
    }
}
