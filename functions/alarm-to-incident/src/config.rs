//! Configuration of alarm-to-incident, read once at start-up.
//!
//! | variable | meaning |
//! |---|---|
//! | `INCIDENT_BACKEND` | `OpsCenter` (default) or `IncidentManager` |
//! | `RESPONSE_PLAN_ARN` | Incident Manager response plan (required with `IncidentManager`) |
//! | `NOTIFICATION_TOPIC_ARN` | SNS topic of lifecycle notifications |
//! | `STATE_TABLE_NAME` | DynamoDB state table |
//! | `RUNBOOK_DOCUMENT_NAME` | SSM Automation document the VPN rules start (OpsCenter); optional |
//! | `AUTOMATION_ROLE_ARN` | passed as the runbook's `AutomationAssumeRole`; optional |
//! | `CLASSIFICATION_RULES` | rules JSON (see `shared::classify`); optional |
//! | `CLASSIFICATION_RULES_PARAMETER` | name of an SSM parameter holding the rules JSON; optional |
//! | `ESCALATION_*` | escalation when nobody acknowledges (see `shared::escalation`); off unless `ESCALATION_MIN_IMPACT` is set |
//! | `HOLD_SCHEDULE_GROUP`, `HOLD_SCHEDULER_ROLE_ARN` | the timer at a mute window's end (see `shared::hold_timer`); unset = the scheduled sweep alone |
//! | `ORGANIZATION_ID`, `HOME_ACCOUNT_ID`, `ALLOWED_ACCOUNTS`, `ACCOUNT_DIRECTORY` | organization mode (see `shared::org`); off unless `ORGANIZATION_ID` is set |
//! | `MEMBER_ALARM_READER_ROLE_NAME` | organization mode: the role of each member account (`member.yaml`) the sweep reads its alarms through; empty: member alarms are not swept |

use shared::backend::BackendKind;
use shared::classify::Rules;
use shared::config::{ConfigError, Env};
use shared::error::{AwsError, Retryable};
use shared::escalation::EscalationPolicy;
use shared::hold_timer::HoldTimerConfig;
use shared::org::OrgPolicy;

pub const RULES_VAR: &str = "CLASSIFICATION_RULES";
pub const MEMBER_ALARM_ROLE_VAR: &str = "MEMBER_ALARM_READER_ROLE_NAME";
pub const RULES_PARAMETER_VAR: &str = "CLASSIFICATION_RULES_PARAMETER";

/// Where the classification rules come from.
#[derive(Debug, Clone)]
pub enum RulesSource {
    /// Validated from `CLASSIFICATION_RULES` already.
    Inline(Rules),
    /// Read from this SSM parameter at start-up.
    Parameter(String),
    /// Only the built-in rules.
    Builtin,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub backend: BackendKind,
    pub response_plan_arn: Option<String>,
    pub topic_arn: String,
    pub table: String,
    pub runbook_document: Option<String>,
    pub automation_role_arn: Option<String>,
    pub rules: RulesSource,
    /// Escalation timers for unacknowledged incidents; `None` = off.
    pub escalation: Option<EscalationPolicy>,
    /// Timers at the end of mute windows (targeting this function); `None` = off.
    pub hold_timer: Option<HoldTimerConfig>,
    /// Alarms of a whole organization; `None` = one account.
    pub org: Option<OrgPolicy>,
    /// The member accounts' alarm-reader role (organization mode); `None`: the sweep
    /// reports member alarms as unreadable.
    pub member_alarm_role: Option<String>,
    /// `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda): the dimension of the refusal metric.
    pub function_name: String,
}

/// A start-up failure: configuration, or the rules parameter.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading {RULES_PARAMETER_VAR} parameter {name:?}: {source}")]
    Parameter { name: String, source: AwsError },
}

impl Retryable for StartupError {
    fn retryable(&self) -> bool {
        match self {
            StartupError::Config(e) => e.retryable(),
            StartupError::Parameter { source, .. } => source.retryable(),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            StartupError::Config(e) => e.kind(),
            StartupError::Parameter { source, .. } => source.kind(),
        }
    }
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let backend = BackendKind::from_env(env)?;
        let response_plan_arn = match backend {
            BackendKind::IncidentManager => Some(env.arn("RESPONSE_PLAN_ARN", "ssm-incidents")?),
            BackendKind::OpsCenter => env.optional_arn("RESPONSE_PLAN_ARN", "ssm-incidents")?,
        };
        let topic_arn = env.arn("NOTIFICATION_TOPIC_ARN", "sns")?;
        let table = env.required("STATE_TABLE_NAME", "the name of the DynamoDB state table")?;
        let runbook_document = env.optional("RUNBOOK_DOCUMENT_NAME");
        let automation_role_arn = env.optional_arn("AUTOMATION_ROLE_ARN", "iam")?;
        let rules = match (env.optional(RULES_VAR), env.optional(RULES_PARAMETER_VAR)) {
            (Some(_), Some(p)) => {
                return Err(ConfigError::invalid(
                    RULES_PARAMETER_VAR,
                    &p,
                    format!("set either {RULES_VAR} or {RULES_PARAMETER_VAR}, not both"),
                ))
            }
            (Some(json), None) => RulesSource::Inline(
                Rules::from_json(&json, runbook_document.as_deref())
                    .map_err(|e| ConfigError::invalid(RULES_VAR, &json, e))?,
            ),
            (None, Some(name)) => RulesSource::Parameter(name),
            (None, None) => RulesSource::Builtin,
        };
        Ok(Config {
            backend,
            response_plan_arn,
            topic_arn,
            table,
            runbook_document,
            automation_role_arn,
            rules,
            escalation: EscalationPolicy::from_env(env)?,
            hold_timer: HoldTimerConfig::from_env(env)?,
            org: OrgPolicy::from_env(env)?,
            member_alarm_role: env.optional(MEMBER_ALARM_ROLE_VAR),
            function_name: env
                .optional("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| "alarm-to-incident".into()),
        })
    }

    /// The classification rules, reading the SSM parameter if configured so
    /// (`GetParameter` with decryption, so a `SecureString` works too).
    pub async fn load_rules(&self, ssm: &aws_sdk_ssm::Client) -> Result<Rules, StartupError> {
        let name = match &self.rules {
            RulesSource::Inline(r) => return Ok(r.clone()),
            RulesSource::Builtin => return Ok(Rules::builtin(self.runbook_document.as_deref())),
            RulesSource::Parameter(name) => name,
        };
        let out = ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| StartupError::Parameter {
                name: name.clone(),
                source: AwsError::from_sdk("ssm", "GetParameter", e),
            })?;
        let text = out.parameter().and_then(|p| p.value()).unwrap_or_default();
        Rules::from_json(text, self.runbook_document.as_deref())
            .map_err(|e| ConfigError::invalid(RULES_PARAMETER_VAR, name, e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ssm::operation::get_parameter::GetParameterOutput;
    use aws_sdk_ssm::types::Parameter;
    use aws_smithy_mocks::mock;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "NOTIFICATION_TOPIC_ARN",
                "arn:aws:sns:eu-west-1:123456789012:incidents",
            ),
            ("STATE_TABLE_NAME", "incident-state"),
        ]
    }

    #[test]
    fn defaults_to_opscenter_and_builtin_rules() {
        let c = Config::from_env(&Env::from_pairs(base())).unwrap();
        assert_eq!(c.backend, BackendKind::OpsCenter);
        assert_eq!(c.table, "incident-state");
        assert!(matches!(c.rules, RulesSource::Builtin));
        assert_eq!(c.response_plan_arn, None);
    }

    #[test]
    fn incident_manager_requires_response_plan() {
        let mut env = base();
        env.push(("INCIDENT_BACKEND", "IncidentManager"));
        let e = Config::from_env(&Env::from_pairs(env.clone())).unwrap_err();
        assert!(
            e.to_string().contains("RESPONSE_PLAN_ARN is not set"),
            "{e}"
        );
        env.push((
            "RESPONSE_PLAN_ARN",
            "arn:aws:ssm-incidents::123456789012:response-plan/vpn",
        ));
        let c = Config::from_env(&Env::from_pairs(env)).unwrap();
        assert_eq!(
            c.response_plan_arn.as_deref(),
            Some("arn:aws:ssm-incidents::123456789012:response-plan/vpn")
        );
    }

    #[test]
    fn missing_topic_and_bad_rules_name_the_variable() {
        let e = Config::from_env(&Env::from_pairs([("STATE_TABLE_NAME", "t")])).unwrap_err();
        assert!(
            e.to_string().contains("NOTIFICATION_TOPIC_ARN is not set"),
            "{e}"
        );
        let mut env = base();
        env.push((RULES_VAR, r#"[{"impact": 7, "title": "x"}]"#));
        let e = Config::from_env(&Env::from_pairs(env))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CLASSIFICATION_RULES="), "{e}");
        assert!(e.contains("impact must be 1 (critical) to 5"), "{e}");
    }

    #[test]
    fn escalation_is_off_by_default_and_validated_when_on() {
        let c = Config::from_env(&Env::from_pairs(base())).unwrap();
        assert_eq!(c.escalation, None);
        let mut env = base();
        env.push(("ESCALATION_MIN_IMPACT", "2"));
        let e = Config::from_env(&Env::from_pairs(env.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ESCALATION_TOPIC_ARN is not set"), "{e}");
        env.extend([
            (
                "ESCALATION_TOPIC_ARN",
                "arn:aws:sns:eu-west-1:123456789012:escalation",
            ),
            (
                "ESCALATION_TARGET_ARN",
                "arn:aws:lambda:eu-west-1:123456789012:function:slack-actions",
            ),
            (
                "ESCALATION_SCHEDULER_ROLE_ARN",
                "arn:aws:iam::123456789012:role/escalation-scheduler",
            ),
            ("ESCALATION_AFTER_MINUTES", "10"),
        ]);
        let p = Config::from_env(&Env::from_pairs(env))
            .unwrap()
            .escalation
            .unwrap();
        assert_eq!(p.min_impact.value(), 2);
        assert_eq!(p.after, chrono::Duration::minutes(10));
    }

    #[test]
    fn both_rule_sources_is_an_error() {
        let mut env = base();
        env.push((RULES_VAR, "[]"));
        env.push((RULES_PARAMETER_VAR, "/incidents/rules"));
        let e = Config::from_env(&Env::from_pairs(env))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
    }

    #[tokio::test]
    async fn rules_parameter_is_read_with_decryption_and_validated() {
        let mut env = base();
        env.push((RULES_PARAMETER_VAR, "/incidents/rules"));
        let c = Config::from_env(&Env::from_pairs(env)).unwrap();
        let get = mock!(aws_sdk_ssm::Client::get_parameter)
            .match_requests(|r| r.name() == Some("/incidents/rules") && r.with_decryption() == Some(true))
            .then_output(|| {
                GetParameterOutput::builder()
                    .parameter(
                        Parameter::builder()
                            .value(r#"[{"name": "all", "match": {"alarmName": "."}, "impact": 2, "title": "{AlarmName}"}]"#)
                            .build(),
                    )
                    .build()
            });
        let bad = mock!(aws_sdk_ssm::Client::get_parameter).then_output(|| {
            GetParameterOutput::builder()
                .parameter(Parameter::builder().value("{").build())
                .build()
        });
        let ssm = shared::mock_client!(aws_sdk_ssm, [&get, &bad]);
        let rules = c.load_rules(&ssm).await.unwrap();
        assert_eq!(rules.names()[0], "all");
        let e = c.load_rules(&ssm).await.unwrap_err();
        assert!(!e.retryable());
        assert!(
            e.to_string()
                .contains("CLASSIFICATION_RULES_PARAMETER=\"/incidents/rules\""),
            "{e}"
        );
    }
}
