//! AWS SDK configuration, loaded once per container.
//!
//! Endpoints come from the SDK's standard settings (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_<SERVICE>`), so the same binary talks to AWS or to local
//! emulators without a code branch.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Per-attempt timeout: well under the shortest function timeout, so a hung call
/// is retried by the SDK before Lambda kills the invocation.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-operation timeout including SDK retries.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Loads region, credentials and endpoints from the environment, with our timeouts
/// and the SDK's standard retry mode (3 attempts, exponential backoff with jitter).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}
