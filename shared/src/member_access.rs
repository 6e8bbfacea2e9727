//! Entering member accounts (organization mode): a role of the member account
//! (created by `member.yaml`) assumed with STS by a central function, and why that
//! can fail. vpn-troubleshoot diagnoses through the member's diagnosis role;
//! alarm-to-incident's reconciliation sweep reads the member's alarms through its
//! alarm-reader role. Both go through [`AssumedRoles`]: credentials kept per role
//! until shortly before they expire, so one container serving many incidents (or
//! sweeps) of the same accounts assumes each role once an hour, not once a call.
//!
//! A role that is missing or refuses (no StackSet instance in that account, a trust
//! policy naming another stack) is a [`MemberAccessFailure`]: each caller turns it
//! into what its operator must see (a finding on the incident; a line of the sweep's
//! report and a metric), never a crash.

use serde::{Deserialize, Serialize};

/// Why a member account's role could not be assumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberAccessFailure {
    pub account: String,
    pub region: String,
    /// The role that was to be assumed.
    pub role_arn: String,
    /// The STS error code (`AccessDenied`, ...) or a short cause.
    pub code: String,
    pub message: String,
    /// True when trying again later may work (throttling, STS unreachable).
    pub retryable: bool,
}

impl MemberAccessFailure {
    /// `cannot assume arn:aws:iam::111122223333:role/x in 111122223333: AccessDenied`.
    pub fn headline(&self) -> String {
        if self.role_arn.is_empty() {
            format!("cannot diagnose in {}: {}", self.account, self.code)
        } else {
            format!(
                "cannot assume {} in {}: {}",
                self.role_arn, self.account, self.code
            )
        }
    }
}

/// The partition of an ARN (`aws`, `aws-cn`, `aws-us-gov`…): member roles live in
/// the partition of the stack's own resources. `aws` when the ARN has none.
pub fn partition_of(arn: &str) -> String {
    arn.split(':')
        .nth(1)
        .filter(|p| !p.is_empty())
        .unwrap_or("aws")
        .to_string()
}

#[cfg(feature = "aws")]
pub use assumed::{AssumedRoles, RENEW_BEFORE};

#[cfg(feature = "aws")]
mod assumed {
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

    use aws_config::{Region, SdkConfig};
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_credential_types::Credentials;
    use tokio::sync::Mutex;
    use tracing::info;

    use super::MemberAccessFailure;
    use crate::error::{AwsError, Retryable};

    /// Credentials are renewed this long before they expire, so no call made with
    /// them runs into the expiry.
    pub const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

    /// STS AssumeRole into member accounts, with a per-role cache of the credentials.
    pub struct AssumedRoles {
        sts: aws_sdk_sts::Client,
        /// The function's own configuration: timeouts, retries, HTTP client, endpoints.
        base: SdkConfig,
        partition: String,
        /// What the member's CloudTrail shows for every call made with the role.
        session_name: String,
        cache: Mutex<HashMap<String, Credentials>>,
        now: fn() -> SystemTime,
    }

    impl AssumedRoles {
        pub fn new(
            sts: aws_sdk_sts::Client,
            base: SdkConfig,
            partition: &str,
            session_name: &str,
        ) -> Self {
            AssumedRoles {
                sts,
                base,
                partition: partition.to_string(),
                session_name: session_name.to_string(),
                cache: Mutex::new(HashMap::new()),
                now: SystemTime::now,
            }
        }

        /// The same, with another clock (tests of the expiry).
        pub fn with_clock(mut self, now: fn() -> SystemTime) -> Self {
            self.now = now;
            self
        }

        /// `arn:<partition>:iam::<account>:role/<name>`.
        pub fn role_arn(&self, account: &str, name: &str) -> String {
            format!("arn:{}:iam::{account}:role/{name}", self.partition)
        }

        /// The function's configuration acting as role `name` of `account` in
        /// `region`: build any client on it.
        pub async fn config(
            &self,
            account: &str,
            region: &str,
            name: &str,
        ) -> Result<SdkConfig, MemberAccessFailure> {
            let role = self.role_arn(account, name);
            let creds = self.credentials(account, region, &role).await?;
            Ok(self
                .base
                .to_builder()
                .region(Region::new(region.to_string()))
                .credentials_provider(SharedCredentialsProvider::new(creds))
                .build())
        }

        /// Credentials of `role_arn`: from the cache while they are good for
        /// [`RENEW_BEFORE`] more, else from STS (and cached). The lock is held across
        /// the call so concurrent callers for one account assume the role once.
        async fn credentials(
            &self,
            account: &str,
            region: &str,
            role_arn: &str,
        ) -> Result<Credentials, MemberAccessFailure> {
            let mut cache = self.cache.lock().await;
            let now = (self.now)();
            if let Some(c) = cache.get(role_arn) {
                if c.expiry().is_some_and(|e| e > now + RENEW_BEFORE) {
                    return Ok(c.clone());
                }
            }
            let failure = |code: String, message: String, retryable: bool| MemberAccessFailure {
                account: account.to_string(),
                region: region.to_string(),
                role_arn: role_arn.to_string(),
                code,
                message,
                retryable,
            };
            let out = self
                .sts
                .assume_role()
                .role_arn(role_arn)
                .role_session_name(&self.session_name)
                .send()
                .await
                .map_err(|e| {
                    let e = AwsError::from_sdk("sts", "AssumeRole", e);
                    let code = e.code.clone().unwrap_or_else(|| e.kind().to_string());
                    failure(code, e.message.clone(), e.retryable())
                })?;
            let Some(c) = out.credentials() else {
                return Err(failure(
                    "NoCredentials".into(),
                    "AssumeRole answered without credentials".into(),
                    true,
                ));
            };
            let expiry = SystemTime::try_from(*c.expiration()).ok();
            let creds = Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_string()),
                expiry,
                "sts-assume-role",
            );
            info!(account, role = role_arn, "member role assumed");
            cache.insert(role_arn.to_string(), creds.clone());
            Ok(creds)
        }

        /// The access key cached for `role_arn` (tests).
        #[cfg(any(test, feature = "testing"))]
        pub async fn cached_key(&self, role_arn: &str) -> Option<String> {
            self.cache
                .lock()
                .await
                .get(role_arn)
                .map(|c| c.access_key_id().to_string())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use aws_sdk_sts::operation::assume_role::AssumeRoleError;
        use aws_smithy_mocks::{mock, Rule, RuleMode};
        use aws_smithy_types::error::ErrorMetadata;

        const A: &str = "111122223333";
        const B: &str = "444455556666";
        const ROLE: &str = "incident-pipeline-diagnosis";
        const SESSION: &str = "incident-pipeline-test";
        /// 2026-11-25T10:00:00Z
        const T0: u64 = 1_795_600_800;

        fn at(secs: u64) -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
        }
        fn start() -> SystemTime {
            at(T0)
        }
        fn later_but_fresh() -> SystemTime {
            at(T0 + 3600 - 6 * 60)
        }
        fn near_expiry() -> SystemTime {
            at(T0 + 3600 - 4 * 60)
        }

        fn assumed(account: &'static str, key: &'static str) -> Rule {
            crate::testing::assumed_role_rule(account, ROLE, SESSION, key, (T0 + 3600) as i64)
        }

        fn roles(rules: &[&Rule], now: fn() -> SystemTime) -> AssumedRoles {
            let sts = crate::mock_client!(aws_sdk_sts, RuleMode::Sequential, rules.iter().copied());
            let base = SdkConfig::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(Region::new("eu-central-1"))
                .build();
            AssumedRoles::new(sts, base, "aws", SESSION).with_clock(now)
        }

        #[tokio::test]
        async fn credentials_are_assumed_once_per_role_until_near_expiry() {
            let a1 = assumed(A, "ASIAA1");
            let b1 = assumed(B, "ASIAB1");
            let r = roles(&[&a1, &b1], start);
            let config = r.config(A, "eu-west-1", ROLE).await.unwrap();
            assert_eq!(config.region().unwrap().as_ref(), "eu-west-1");
            // Same account again: the cache answers, whatever the region.
            r.config(A, "us-east-1", ROLE).await.unwrap();
            r.config(B, "eu-west-1", ROLE).await.unwrap();
            assert_eq!((a1.num_calls(), b1.num_calls()), (1, 1));

            let first = assumed(A, "ASIAA1");
            let a2 = assumed(A, "ASIAA2");
            let r = roles(&[&first, &a2], start);
            r.config(A, "eu-west-1", ROLE).await.unwrap();
            let r = r.with_clock(later_but_fresh);
            r.config(A, "eu-west-1", ROLE).await.unwrap();
            assert_eq!(a2.num_calls(), 0, "still good for more than RENEW_BEFORE");
            let r = r.with_clock(near_expiry);
            r.config(A, "eu-west-1", ROLE).await.unwrap();
            assert_eq!(a2.num_calls(), 1, "renewed before expiry");
            let arn = r.role_arn(A, ROLE);
            assert_eq!(r.cached_key(&arn).await.as_deref(), Some("ASIAA2"));
        }

        #[tokio::test]
        async fn a_refusing_role_is_a_failure_naming_role_account_and_code() {
            let denied = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
                AssumeRoleError::generic(
                    ErrorMetadata::builder()
                        .code("AccessDenied")
                        .message("User: arn:aws:sts::123456789012:assumed-role/central/x is not authorized to perform: sts:AssumeRole")
                        .build(),
                )
            });
            let r = roles(&[&denied], start);
            let f = r.config(A, "eu-west-1", ROLE).await.unwrap_err();
            assert_eq!(
                f.headline(),
                "cannot assume arn:aws:iam::111122223333:role/incident-pipeline-diagnosis in 111122223333: AccessDenied"
            );
            assert!(!f.retryable);
            assert_eq!(f.region, "eu-west-1");
            assert_eq!(
                r.cached_key(&r.role_arn(A, ROLE)).await,
                None,
                "nothing cached on failure"
            );
        }

        #[tokio::test]
        async fn throttled_sts_is_retryable() {
            let throttled = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
                AssumeRoleError::generic(
                    ErrorMetadata::builder()
                        .code("Throttling")
                        .message("Rate exceeded")
                        .build(),
                )
            });
            let r = roles(&[&throttled], start);
            let f = r.config(A, "eu-west-1", ROLE).await.unwrap_err();
            assert!(f.retryable, "{f:?}");
        }
    }
}
