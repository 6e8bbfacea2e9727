//! Diagnosis where the VPN lives (organization mode): the member account's
//! diagnosis role (deployed by `member.yaml`), assumed with STS through
//! [`shared::member_access::AssumedRoles`] (credentials kept per role until shortly
//! before they expire); the EC2, CloudWatch and Logs clients built on them in the
//! alarm's region. The optional remediation role (ReplaceVpnTunnel only, only on
//! VPNs tagged for it) is assumed only when a replacement is decided.
//!
//! A role that is missing or refuses (no StackSet instance in that account, a trust
//! policy naming another stack) is a [`MemberAccessFailure`], which the handler turns
//! into a finding on the incident: never an error of the runbook.

use async_trait::async_trait;
use shared::member_access::AssumedRoles;
use shared::vpn::MemberAccessFailure;

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

/// The member roles, assumed with STS (credentials cached per role).
pub struct StsMemberAccess {
    assumed: AssumedRoles,
    roles: MemberRoles,
}

impl StsMemberAccess {
    pub fn new(assumed: AssumedRoles, roles: MemberRoles) -> Self {
        StsMemberAccess { assumed, roles }
    }
}

#[async_trait]
impl MemberAccess for StsMemberAccess {
    async fn readers(
        &self,
        account: &str,
        region: &str,
    ) -> Result<MemberClients, MemberAccessFailure> {
        let config = self
            .assumed
            .config(account, region, &self.roles.diagnosis)
            .await?;
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
        let config = self.assumed.config(account, region, name).await?;
        Ok(aws_sdk_ec2::Client::new(&config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::{Region, SdkConfig};
    use aws_smithy_mocks::{Rule, RuleMode};

    const A: &str = "111122223333";
    /// 2026-11-25T10:00:00Z
    const T0: u64 = 1_795_600_800;

    fn start() -> std::time::SystemTime {
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(T0)
    }

    fn assumed(account: &'static str, role: &'static str, key: &'static str) -> Rule {
        shared::testing::assumed_role_rule(account, role, SESSION_NAME, key, (T0 + 3600) as i64)
    }

    fn access(rules: &[&Rule], remediation: Option<&str>) -> StsMemberAccess {
        let sts = shared::mock_client!(aws_sdk_sts, RuleMode::Sequential, rules.iter().copied());
        let base = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(Region::new("eu-central-1"))
            .build();
        StsMemberAccess::new(
            AssumedRoles::new(sts, base, "aws", SESSION_NAME).with_clock(start),
            MemberRoles {
                diagnosis: "incident-pipeline-diagnosis".into(),
                remediation: remediation.map(str::to_string),
            },
        )
    }

    #[tokio::test]
    async fn readers_act_in_the_alarms_region_through_the_diagnosis_role() {
        let diag = assumed(A, "incident-pipeline-diagnosis", "ASIAD");
        let m = access(&[&diag], None);
        let clients = m.readers(A, "eu-west-1").await.unwrap();
        assert_eq!(clients.ec2.config().region().unwrap().as_ref(), "eu-west-1");
        assert_eq!(
            clients.logs.config().region().unwrap().as_ref(),
            "eu-west-1"
        );
        m.readers(A, "us-east-1").await.unwrap();
        assert_eq!(diag.num_calls(), 1, "cached per role");
        let f = m.remediator(A, "eu-west-1").await.unwrap_err();
        assert_eq!(f.code, "NotConfigured");
    }

    #[tokio::test]
    async fn remediation_role_is_its_own_assume() {
        let diag = assumed(A, "incident-pipeline-diagnosis", "ASIAD");
        let rem = assumed(A, "incident-pipeline-remediation", "ASIAR");
        let m = access(&[&diag, &rem], Some("incident-pipeline-remediation"));
        m.readers(A, "eu-west-1").await.unwrap();
        let ec2 = m.remediator(A, "eu-west-1").await.unwrap();
        assert_eq!(ec2.config().region().unwrap().as_ref(), "eu-west-1");
        assert_eq!((diag.num_calls(), rem.num_calls()), (1, 1));
    }
}
