//! Reading secrets from Secrets Manager and keeping them for a bounded time, for
//! every function that holds one (notify-fanout's Slack destinations, slack-actions'
//! signing secret and bot token). A value is read once per container and kept for
//! a TTL, so a rotated secret is picked up without a redeploy.
//!
//! Values stay in [`Secret`]; errors name the secret's ARN, never its content.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::{AwsError, Retryable, Secret};

/// Why a secret's text could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretReadError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("secret {arn} has no SecretString (binary secrets are not supported)")]
    NotText { arn: String },
}

impl Retryable for SecretReadError {
    fn retryable(&self) -> bool {
        match self {
            SecretReadError::Aws(e) => e.retryable(),
            SecretReadError::NotText { .. } => false,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            SecretReadError::Aws(e) => e.kind(),
            SecretReadError::NotText { .. } => "BadSecret",
        }
    }
}

/// Reads a secret's text. Implemented by the Secrets Manager client; tests pass fakes.
#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn secret_string(&self, arn: &str) -> Result<Secret<String>, SecretReadError>;
}

#[async_trait]
impl SecretSource for aws_sdk_secretsmanager::Client {
    async fn secret_string(&self, arn: &str) -> Result<Secret<String>, SecretReadError> {
        let out = self
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("secretsmanager", "GetSecretValue", e))?;
        out.secret_string()
            .map(|s| Secret::new(s.to_string()))
            .ok_or_else(|| SecretReadError::NotText {
                arn: arn.to_string(),
            })
    }
}

/// A value derived from a secret, kept for `ttl` after it was loaded. The lock is
/// held while loading, so concurrent callers make one Secrets Manager call; a
/// failed load keeps nothing, so the next caller tries again.
pub struct Cached<T> {
    ttl: Duration,
    entry: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Cached<T> {
    pub fn new(ttl: Duration) -> Self {
        Cached {
            ttl,
            entry: Mutex::new(None),
        }
    }

    /// The kept value while it is younger than the TTL, otherwise what `load` gives.
    pub async fn get_or_load<E, F, Fut>(&self, load: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut entry = self.entry.lock().await;
        if let Some((at, value)) = entry.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(value.clone());
            }
        }
        let value = load().await?;
        *entry = Some((Instant::now(), value.clone()));
        Ok(value)
    }

    /// Forgets the kept value (e.g. its credentials were refused).
    pub async fn clear(&self) {
        *self.entry.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::operation::get_secret_value::{
        GetSecretValueError, GetSecretValueOutput,
    };
    use aws_sdk_secretsmanager::types::error::ResourceNotFoundException;
    use aws_sdk_secretsmanager::Client;
    use aws_smithy_mocks::mock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf";

    #[tokio::test]
    async fn reads_the_secret_string_of_the_arn_asked_for() {
        let rule = mock!(Client::get_secret_value)
            .match_requests(|r| r.secret_id() == Some(ARN))
            .then_output(|| {
                GetSecretValueOutput::builder()
                    .secret_string("s3cr3t")
                    .build()
            });
        let client = crate::mock_client!(aws_sdk_secretsmanager, [&rule]);
        assert_eq!(client.secret_string(ARN).await.unwrap().expose(), "s3cr3t");
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn binary_secret_is_rejected_with_its_arn() {
        let rule =
            mock!(Client::get_secret_value).then_output(|| GetSecretValueOutput::builder().build());
        let client = crate::mock_client!(aws_sdk_secretsmanager, [&rule]);
        let err = client.secret_string(ARN).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("secret {ARN} has no SecretString (binary secrets are not supported)")
        );
        assert_eq!(err.lambda_error_type(), "NonRetryable.BadSecret");
    }

    #[tokio::test]
    async fn missing_secret_is_a_non_retryable_aws_error() {
        let rule = mock!(Client::get_secret_value).then_error(|| {
            GetSecretValueError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("Secrets Manager can't find the specified secret.")
                    .meta(
                        aws_sdk_secretsmanager::error::ErrorMetadata::builder()
                            .code("ResourceNotFoundException")
                            .message("Secrets Manager can't find the specified secret.")
                            .build(),
                    )
                    .build(),
            )
        });
        let client = crate::mock_client!(aws_sdk_secretsmanager, [&rule]);
        let err = client.secret_string(ARN).await.unwrap_err();
        assert!(!err.retryable());
        assert_eq!(
            err.to_string(),
            "secretsmanager GetSecretValue failed (ResourceNotFoundException): Secrets Manager can't find the specified secret."
        );
    }

    #[tokio::test]
    async fn cached_loads_once_within_the_ttl_and_again_after_clear() {
        let loads = AtomicUsize::new(0);
        let cached = Cached::new(Duration::from_secs(300));
        let load = || async { Ok::<_, SecretReadError>(loads.fetch_add(1, Ordering::SeqCst)) };
        assert_eq!(cached.get_or_load(load).await.unwrap(), 0);
        assert_eq!(cached.get_or_load(load).await.unwrap(), 0);
        cached.clear().await;
        assert_eq!(cached.get_or_load(load).await.unwrap(), 1);
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn cached_loads_again_after_the_ttl_and_keeps_no_failure() {
        let loads = AtomicUsize::new(0);
        let cached = Cached::new(Duration::ZERO);
        let load = || async { Ok::<_, ()>(loads.fetch_add(1, Ordering::SeqCst)) };
        cached.get_or_load(load).await.unwrap();
        cached.get_or_load(load).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2);

        let cached = Cached::<u32>::new(Duration::from_secs(300));
        assert!(cached.get_or_load(|| async { Err("down") }).await.is_err());
        assert_eq!(
            cached.get_or_load(|| async { Ok::<_, &str>(7) }).await,
            Ok(7)
        );
    }
}
