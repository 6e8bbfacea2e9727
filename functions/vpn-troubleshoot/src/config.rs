//! Configuration of vpn-troubleshoot, read once from the environment in `main`.

use shared::backend::BackendKind;
use shared::config::{ConfigError, Env};
use shared::org::OrgPolicy;
use shared::vpn::RemediationPolicy;

use crate::member::MemberRoles;

/// Longest look-back window: a day of one-minute datapoints and tunnel logs.
pub const MAX_LOOKBACK_MINUTES: u32 = 1440;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `NOTIFICATION_TOPIC_ARN`: where the `diagnosed` notification goes.
    pub topic_arn: String,
    /// `INCIDENT_BACKEND`: the backend the findings are recorded in.
    pub backend: BackendKind,
    /// `REMEDIATION_ENABLED` (default false), `REMEDIATION_MIN_DOWN_MINUTES` (default 15).
    pub remediation: RemediationPolicy,
    /// `LOOKBACK_MINUTES` (default 60): metric and log window unless the input sets one.
    pub lookback_minutes: u32,
    /// `STATE_TABLE_NAME` (optional): the state table of alarm-to-incident. When set,
    /// the findings and the diagnosis time are recorded on the incident's item (for
    /// the post-incident summary); unset, the diagnosis only goes to the incident
    /// backend, the topic and the output, as before.
    pub state_table: Option<String>,
    /// Organization mode (`ORGANIZATION_ID` and the rest of `shared::org`): account
    /// names and tags for the notification, member incident keys.
    pub org: Option<OrgPolicy>,
    /// The roles to assume in member accounts (`MEMBER_DIAGNOSIS_ROLE_NAME`, required
    /// in organization mode; `MEMBER_REMEDIATION_ROLE_NAME`, optional).
    pub member_roles: Option<MemberRoles>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let lookback_minutes = minutes(env, "LOOKBACK_MINUTES", 60)?;
        let min_down_minutes = minutes(env, "REMEDIATION_MIN_DOWN_MINUTES", 15)?;
        let org = OrgPolicy::from_env(env)?;
        Ok(Config {
            topic_arn: env.arn("NOTIFICATION_TOPIC_ARN", "sns")?,
            backend: BackendKind::from_env(env)?,
            remediation: RemediationPolicy {
                enabled: env.flag("REMEDIATION_ENABLED", false)?,
                min_down_minutes,
            },
            lookback_minutes,
            state_table: env.optional("STATE_TABLE_NAME"),
            member_roles: match &org {
                None => None,
                Some(_) => Some(MemberRoles {
                    diagnosis: role_name(
                        env,
                        "MEMBER_DIAGNOSIS_ROLE_NAME",
                        env.required(
                            "MEMBER_DIAGNOSIS_ROLE_NAME",
                            "the name of the diagnosis role member.yaml creates in every member account",
                        )?,
                    )?,
                    remediation: match env.optional("MEMBER_REMEDIATION_ROLE_NAME") {
                        Some(n) => Some(role_name(env, "MEMBER_REMEDIATION_ROLE_NAME", n)?),
                        None => None,
                    },
                }),
            },
            org,
        })
    }
}

impl Config {
    /// The AWS partition (`aws`, `aws-cn`, `aws-us-gov`) of the stack, from the
    /// topic ARN: member role ARNs are built in it.
    pub fn partition(&self) -> String {
        shared::member_access::partition_of(&self.topic_arn)
    }
}

/// An IAM role name: 1 to 64 of letters, digits and `+=,.@_-`.
fn role_name(_env: &Env, var: &str, name: String) -> Result<String, ConfigError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(name)
    } else {
        Err(ConfigError::invalid(
            var,
            &name,
            "expected an IAM role name (1 to 64 of letters, digits and +=,.@_-)",
        ))
    }
}

fn minutes(env: &Env, var: &str, default: u32) -> Result<u32, ConfigError> {
    let v = env.parse_or::<u32>(var, default)?;
    if (1..=MAX_LOOKBACK_MINUTES).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::invalid(
            var,
            &v.to_string(),
            format!("expected minutes from 1 to {MAX_LOOKBACK_MINUTES}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:incident-notifications";

    #[test]
    fn from_env_defaults_remediation_off_15_minutes_lookback_60() {
        let c = Config::from_env(&Env::from_pairs([("NOTIFICATION_TOPIC_ARN", TOPIC)])).unwrap();
        assert_eq!(
            c,
            Config {
                topic_arn: TOPIC.into(),
                backend: BackendKind::OpsCenter,
                remediation: RemediationPolicy {
                    enabled: false,
                    min_down_minutes: 15
                },
                lookback_minutes: 60,
                state_table: None,
                org: None,
                member_roles: None,
            }
        );
    }

    #[test]
    fn from_env_reads_every_variable() {
        let c = Config::from_env(&Env::from_pairs([
            ("NOTIFICATION_TOPIC_ARN", TOPIC),
            ("INCIDENT_BACKEND", "IncidentManager"),
            ("REMEDIATION_ENABLED", "true"),
            ("REMEDIATION_MIN_DOWN_MINUTES", "30"),
            ("LOOKBACK_MINUTES", "120"),
            ("STATE_TABLE_NAME", "incident-state"),
        ]))
        .unwrap();
        assert_eq!(c.state_table.as_deref(), Some("incident-state"));
        assert_eq!(c.backend, BackendKind::IncidentManager);
        assert!(c.remediation.enabled);
        assert_eq!(c.remediation.min_down_minutes, 30);
        assert_eq!(c.lookback_minutes, 120);
    }

    #[test]
    fn organization_mode_needs_the_member_diagnosis_role() {
        let org = [
            ("NOTIFICATION_TOPIC_ARN", TOPIC),
            ("ORGANIZATION_ID", "o-a1b2c3d4e5"),
            ("HOME_ACCOUNT_ID", "123456789012"),
        ];
        let err = Config::from_env(&Env::from_pairs(org))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MEMBER_DIAGNOSIS_ROLE_NAME is not set"),
            "{err}"
        );
        let mut env = org.to_vec();
        env.push(("MEMBER_DIAGNOSIS_ROLE_NAME", "role/with/slashes"));
        let err = Config::from_env(&Env::from_pairs(env.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected an IAM role name"), "{err}");
        env.pop();
        env.push(("MEMBER_DIAGNOSIS_ROLE_NAME", "incident-pipeline-diagnosis"));
        let c = Config::from_env(&Env::from_pairs(env)).unwrap();
        assert_eq!(
            c.member_roles,
            Some(MemberRoles {
                diagnosis: "incident-pipeline-diagnosis".into(),
                remediation: None
            })
        );
        assert_eq!(c.org.unwrap().home_account, "123456789012");
    }

    #[test]
    fn from_env_names_the_bad_variable() {
        let err = Config::from_env(&Env::default()).unwrap_err().to_string();
        assert!(err.contains("NOTIFICATION_TOPIC_ARN is not set"), "{err}");
        let err = Config::from_env(&Env::from_pairs([
            ("NOTIFICATION_TOPIC_ARN", TOPIC),
            ("LOOKBACK_MINUTES", "0"),
        ]))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "configuration: environment variable LOOKBACK_MINUTES=\"0\" is invalid: expected minutes from 1 to 1440"
        );
        let err = Config::from_env(&Env::from_pairs([
            ("NOTIFICATION_TOPIC_ARN", TOPIC),
            ("REMEDIATION_ENABLED", "sometimes"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("REMEDIATION_ENABLED"), "{err}");
    }
}
