//! Diagnosis where the VPN lives (organization mode): the member account's
//! diagnosis role (deployed by `member.yaml`), assumed with STS; its credentials kept
//! per role until shortly before they expire (one container serves many incidents
//! of the same accounts); the EC2, CloudWatch and Logs clients built on them in the
//! alarm's region. The optional remediation role (ReplaceVpnTunnel only, only on
//! VPNs tagged for it) is assumed only when a replacement is decided.
//!
//! A role that is missing or refuses (no StackSet instance in that account, a trust
//! policy naming another stack) is a [`MemberAccessFailure`], which the handler turns
//! into a finding on the incident: never an error of the runbook.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use shared::error::{AwsError, Retryable};
use shared::vpn::MemberAccessFailure;
use tokio::sync::Mutex;
use tracing::info;

/// Credentials are renewed this long before they expire, so no call made with them
/// runs into the expiry.
pub const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The session name the member's CloudTrail shows for every call of the diagnosis.
pub const SESSION_NAME: &str = "incident-pipeline-vpn-troubleshoot";

/// The read-only clients of the diagnosis in one account and region.
#[derive(Debug, Clone)]
pub struct MemberClients {
    pub ec2: aws_sdk_ec2::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

/// Entry into member accounts. [`StsMemberAccess`] in Lambda; tests give fakes.
#[async_trait]
pub trait MemberAccess: Send + Sync {
    /// The diagnosis clients in `account`, `region` (the diagnosis role).
    async fn readers(
        &self,
        account: &str,
        region: &str,
    ) -> Result<MemberClients, MemberAccessFailure>;
    /// The EC2 client that may replace a tunnel there (the remediation role).
    async fn remediator(
        &self,
        account: &str,
        region: &str,
    ) -> Result<aws_sdk_ec2::Client, MemberAccessFailure>;
}

/// The roles to assume in member accounts, by name (the same in every account:
/// the StackSet deploys them with the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRoles {
    /// `MEMBER_DIAGNOSIS_ROLE_NAME`.
    pub diagnosis: String,
    /// `MEMBER_REMEDIATION_ROLE_NAME`; `None`: no remediation in member accounts.
    pub remediation: Option<String>,
}

/// STS AssumeRole with a per-role cache of the credentials.
pub struct StsMemberAccess {
    sts: aws_sdk_sts::Client,
    /// The function's own configuration: timeouts, retries, HTTP client, endpoints.
    base: SdkConfig,
    partition: String,
    roles: MemberRoles,
    cache: Mutex<HashMap<String, Credentials>>,
    now: fn() -> SystemTime,
}

impl StsMemberAccess {
    pub fn new(
        sts: aws_sdk_sts::Client,
        base: SdkConfig,
        partition: &str,
        roles: MemberRoles,
    ) -> Self {
        StsMemberAccess {
            sts,
            base,
            partition: partition.to_string(),
            roles,
            cache: Mutex::new(HashMap::new()),
            now: SystemTime::now,
        }
    }

    /// The same, with another clock (tests of the expiry).
    pub fn with_clock(mut self, now: fn() -> SystemTime) -> Self {
        self.now = now;
        self
    }

    fn role_arn(&self, account: &str, name: &str) -> String {
        format!("arn:{}:iam::{account}:role/{name}", self.partition)
    }

    /// Credentials of `role_arn`: from the cache while they are good for
    /// [`RENEW_BEFORE`] more, else from STS (and cached). The lock is held across
    /// the call so concurrent diagnoses of one account assume the role once.
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
            .role_session_name(SESSION_NAME)
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

    fn config_for(&self, creds: Credentials, region: &str) -> SdkConfig {
        self.base
            .to_builder()
            .region(Region::new(region.to_string()))
            .credentials_provider(SharedCredentialsProvider::new(creds))
            .build()
    }
}

#[async_trait]
impl MemberAccess for StsMemberAccess {
    async fn readers(
        &self,
        account: &str,
        region: &str,
    ) -> Result<MemberClients, MemberAccessFailure> {
        let role = self.role_arn(account, &self.roles.diagnosis);
        let config = self.config_for(self.credentials(account, region, &role).await?, region);
        Ok(MemberClients {
            ec2: aws_sdk_ec2::Client::new(&config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
            logs: aws_sdk_cloudwatchlogs::Client::new(&config),
        })
    }

    async fn remediator(
        &self,
        account: &str,
        region: &str,
    ) -> Result<aws_sdk_ec2::Client, MemberAccessFailure> {
        let Some(name) = &self.roles.remediation else {
            return Err(MemberAccessFailure {
                account: account.to_string(),
                region: region.to_string(),
                role_arn: String::new(),
                code: "NotConfigured".into(),
                message:
                    "MEMBER_REMEDIATION_ROLE_NAME is not set: no remediation in member accounts"
                        .into(),
                retryable: false,
            });
        };
        let role = self.role_arn(account, name);
        let config = self.config_for(self.credentials(account, region, &role).await?, region);
        Ok(aws_sdk_ec2::Client::new(&config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sts::operation::assume_role::{AssumeRoleError, AssumeRoleOutput};
    use aws_smithy_mocks::{mock, Rule, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;
    use aws_smithy_types::DateTime as SmithyTime;

    const A: &str = "111122223333";
    const B: &str = "444455556666";
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

    fn assumed(account: &'static str, role: &'static str, key: &'static str) -> Rule {
        mock!(aws_sdk_sts::Client::assume_role)
            .match_requests(move |r| {
                r.role_arn() == Some(&format!("arn:aws:iam::{account}:role/{role}"))
                    && r.role_session_name() == Some(SESSION_NAME)
            })
            .then_output(move || {
                AssumeRoleOutput::builder()
                    .credentials(
                        aws_sdk_sts::types::Credentials::builder()
                            .access_key_id(key)
                            .secret_access_key("secret")
                            .session_token("token")
                            .expiration(SmithyTime::from_secs((T0 + 3600) as i64))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
    }

    fn access(rules: &[&Rule], now: fn() -> SystemTime) -> StsMemberAccess {
        let sts = shared::mock_client!(aws_sdk_sts, RuleMode::Sequential, rules.iter().copied());
        let base = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(Region::new("eu-central-1"))
            .build();
        StsMemberAccess::new(
            sts,
            base,
            "aws",
            MemberRoles {
                diagnosis: "incident-pipeline-diagnosis".into(),
                remediation: None,
            },
        )
        .with_clock(now)
    }

    #[tokio::test]
    async fn credentials_are_assumed_once_per_account_until_near_expiry() {
        let a1 = assumed(A, "incident-pipeline-diagnosis", "ASIAA1");
        let b1 = assumed(B, "incident-pipeline-diagnosis", "ASIAB1");
        let m = access(&[&a1, &b1], start);
        let clients = m.readers(A, "eu-west-1").await.unwrap();
        assert_eq!(clients.ec2.config().region().unwrap().as_ref(), "eu-west-1");
        // Same account again: the cache answers, whatever the region.
        m.readers(A, "us-east-1").await.unwrap();
        m.readers(B, "eu-west-1").await.unwrap();
        assert_eq!((a1.num_calls(), b1.num_calls()), (1, 1));

        // A new container: assumes once, keeps the credentials while they are fresh.
        let first = assumed(A, "incident-pipeline-diagnosis", "ASIAA1");
        let a2 = assumed(A, "incident-pipeline-diagnosis", "ASIAA2");
        let m2 = access(&[&first, &a2], start);
        m2.readers(A, "eu-west-1").await.unwrap();
        assert_eq!(first.num_calls(), 1);
        let m2 = StsMemberAccess {
            now: later_but_fresh,
            ..m2
        };
        m2.readers(A, "eu-west-1").await.unwrap();
        assert_eq!(a2.num_calls(), 0, "still good for more than RENEW_BEFORE");
        let m2 = StsMemberAccess {
            now: near_expiry,
            ..m2
        };
        m2.readers(A, "eu-west-1").await.unwrap();
        assert_eq!(a2.num_calls(), 1, "renewed before expiry");
        let cached = m2.cache.lock().await;
        assert_eq!(
            cached["arn:aws:iam::111122223333:role/incident-pipeline-diagnosis"].access_key_id(),
            "ASIAA2"
        );
    }

    #[tokio::test]
    async fn a_refusing_role_is_a_failure_naming_role_account_and_code() {
        let denied = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
            AssumeRoleError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("User: arn:aws:sts::123456789012:assumed-role/central/x is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::111122223333:role/incident-pipeline-diagnosis")
                    .build(),
            )
        });
        let m = access(&[&denied], start);
        let f = m.readers(A, "eu-west-1").await.unwrap_err();
        assert_eq!(
            f.headline(),
            "cannot assume arn:aws:iam::111122223333:role/incident-pipeline-diagnosis in 111122223333: AccessDenied"
        );
        assert!(!f.retryable);
        assert_eq!(f.region, "eu-west-1");
        assert!(m.cache.lock().await.is_empty(), "nothing cached on failure");
    }

    #[tokio::test]
    async fn throttled_sts_is_retryable_and_no_remediation_role_is_not_configured() {
        let throttled = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
            AssumeRoleError::generic(
                ErrorMetadata::builder()
                    .code("Throttling")
                    .message("Rate exceeded")
                    .build(),
            )
        });
        let m = access(&[&throttled], start);
        let f = m.readers(A, "eu-west-1").await.unwrap_err();
        assert!(f.retryable, "{f:?}");
        let f = m.remediator(A, "eu-west-1").await.unwrap_err();
        assert_eq!(f.code, "NotConfigured");
    }

    #[tokio::test]
    async fn remediation_role_is_its_own_assume() {
        let diag = assumed(A, "incident-pipeline-diagnosis", "ASIAD");
        let rem = assumed(A, "incident-pipeline-remediation", "ASIAR");
        let sts = shared::mock_client!(aws_sdk_sts, RuleMode::Sequential, [&diag, &rem]);
        let base = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let m = StsMemberAccess::new(
            sts,
            base,
            "aws",
            MemberRoles {
                diagnosis: "incident-pipeline-diagnosis".into(),
                remediation: Some("incident-pipeline-remediation".into()),
            },
        )
        .with_clock(start);
        m.readers(A, "eu-west-1").await.unwrap();
        let ec2 = m.remediator(A, "eu-west-1").await.unwrap();
        assert_eq!(ec2.config().region().unwrap().as_ref(), "eu-west-1");
        assert_eq!((diag.num_calls(), rem.num_calls()), (1, 1));
    }
}
