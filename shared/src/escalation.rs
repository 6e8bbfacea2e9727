//! Escalation when nobody answers: an incident at or above a configured impact that
//! nobody acknowledged within a configured time is re-notified (an `unanswered`
//! notification, which notify-fanout posts in the thread with the second mention
//! group) and paged on the escalation SNS topic (on-call phones and e-mail), repeating
//! at an interval up to a limit. Acknowledgement or resolution cancels it.
//!
//! The timer is an EventBridge Scheduler one-time schedule (`at(...)`, deleted after
//! it ran) that invokes the slack-actions function with
//! `{"escalation":{"incidentKey":"...","attempt":N}}`; never a sleeping Lambda.
//!
//! | variable | meaning |
//! |---|---|
//! | `ESCALATION_MIN_IMPACT` | 1-5: escalate incidents at this impact or worse; unset = escalation off |
//! | `ESCALATION_AFTER_MINUTES` | first re-notification after this long unacknowledged (15) |
//! | `ESCALATION_REPEAT_MINUTES` | then every this long (15) |
//! | `ESCALATION_MAX_ATTEMPTS` | at most this many re-notifications (3) |
//! | `ESCALATION_TOPIC_ARN` | SNS topic paged on each attempt |
//! | `ESCALATION_TARGET_ARN` | the function the schedules invoke (slack-actions) |
//! | `ESCALATION_SCHEDULER_ROLE_ARN` | role EventBridge Scheduler assumes to invoke it |
//! | `ESCALATION_SCHEDULE_GROUP` | schedule group (`default`) |

use async_trait::async_trait;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Env};
use crate::error::AwsError;
use crate::hash::stable_hash;
use crate::incident::Impact;
use crate::lifecycle::{Effect, IncidentRecord};

pub const MIN_IMPACT_VAR: &str = "ESCALATION_MIN_IMPACT";
pub const AFTER_VAR: &str = "ESCALATION_AFTER_MINUTES";
pub const REPEAT_VAR: &str = "ESCALATION_REPEAT_MINUTES";
pub const MAX_ATTEMPTS_VAR: &str = "ESCALATION_MAX_ATTEMPTS";
pub const TOPIC_VAR: &str = "ESCALATION_TOPIC_ARN";
pub const TARGET_VAR: &str = "ESCALATION_TARGET_ARN";
pub const ROLE_VAR: &str = "ESCALATION_SCHEDULER_ROLE_ARN";
pub const GROUP_VAR: &str = "ESCALATION_SCHEDULE_GROUP";

/// The earliest a schedule is set from now: a due time already past (a late alarm
/// delivery) fires one minute from now rather than being refused by the scheduler.
pub const MIN_LEAD_SECONDS: i64 = 60;
/// SNS `Subject`: at most 100 printable ASCII characters, no line breaks.
pub const SUBJECT_MAX: usize = 100;
/// SNS messages are limited to 256 KiB; a page is read on a phone, keep it short.
pub const PAGE_MESSAGE_MAX: usize = 4000;

/// When and how to escalate, and where the timer and pages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationPolicy {
    /// Incidents at this impact or worse (a lower number) escalate.
    pub min_impact: Impact,
    pub after: Duration,
    pub repeat: Duration,
    pub max_attempts: u32,
    pub topic_arn: String,
    pub target_arn: String,
    pub scheduler_role_arn: String,
    pub schedule_group: String,
}

fn minutes(env: &Env, var: &str, default: i64) -> Result<Duration, ConfigError> {
    let m: i64 = env.parse_or(var, default)?;
    if !(1..=1440).contains(&m) {
        return Err(ConfigError::invalid(
            var,
            &m.to_string(),
            "expected minutes from 1 to 1440",
        ));
    }
    Ok(Duration::minutes(m))
}

impl EscalationPolicy {
    /// The policy, or `None` when `ESCALATION_MIN_IMPACT` is unset (escalation off).
    /// With it set, the topic, target and scheduler role ARNs are required.
    pub fn from_env(env: &Env) -> Result<Option<EscalationPolicy>, ConfigError> {
        let Some(raw) = env.optional(MIN_IMPACT_VAR) else {
            return Ok(None);
        };
        let min_impact = raw
            .parse::<u8>()
            .ok()
            .and_then(Impact::new)
            .ok_or_else(|| {
                ConfigError::invalid(
                    MIN_IMPACT_VAR,
                    &raw,
                    "expected an impact from 1 (critical) to 5",
                )
            })?;
        let max_attempts: u32 = env.parse_or(MAX_ATTEMPTS_VAR, 3)?;
        if !(1..=20).contains(&max_attempts) {
            return Err(ConfigError::invalid(
                MAX_ATTEMPTS_VAR,
                &max_attempts.to_string(),
                "expected 1 to 20 attempts",
            ));
        }
        let schedule_group = env
            .optional(GROUP_VAR)
            .unwrap_or_else(|| "default".to_string());
        crate::schedule::check_group(GROUP_VAR, &schedule_group)?;
        Ok(Some(EscalationPolicy {
            min_impact,
            after: minutes(env, AFTER_VAR, 15)?,
            repeat: minutes(env, REPEAT_VAR, 15)?,
            max_attempts,
            topic_arn: env.arn(TOPIC_VAR, "sns")?,
            target_arn: env.arn(TARGET_VAR, "lambda")?,
            scheduler_role_arn: env.arn(ROLE_VAR, "iam")?,
            schedule_group,
        }))
    }

    /// True when `record` should be escalating: open, nobody owns it, impact at or
    /// above the policy's.
    pub fn applies_to(&self, record: &IncidentRecord) -> bool {
        record.is_open()
            && record.roles.owner.is_none()
            && !self.min_impact.is_more_severe_than(record.impact)
    }

    /// The first escalation of `record`, when it applies and none is pending:
    /// `after` past the opening, and not earlier than a minute from `now`.
    pub fn first(&self, record: &IncidentRecord, now: DateTime<Utc>) -> Option<Effect> {
        (self.applies_to(record) && record.escalation.is_none()).then(|| {
            Effect::ScheduleEscalation {
                attempt: 1,
                at: (record.opened_at + self.after).max(now + Duration::seconds(MIN_LEAD_SECONDS)),
            }
        })
    }
}

/// The first escalation effect of `record` under `policy` (none when escalation is off).
pub fn first_escalation(
    policy: Option<&EscalationPolicy>,
    record: &IncidentRecord,
    now: DateTime<Utc>,
) -> Option<Effect> {
    policy.and_then(|p| p.first(record, now))
}

/// The schedule's name for `attempt` of the incident opened at `opened_at` under
/// `key`: `incident-escalation-<16 hex>-<attempt>` (at most 64 characters of
/// `[0-9A-Za-z-_.]`, as the scheduler requires). The opening time is part of the hash
/// so a reopened incident never collides with a stale schedule of the previous one.
pub fn schedule_name(key: &str, opened_at: DateTime<Utc>, attempt: u32) -> String {
    let h = stable_hash(&[key, &opened_at.to_rfc3339_opts(SecondsFormat::Millis, true)]);
    format!("incident-escalation-{:016x}-{attempt}", (h >> 64) as u64)
}

/// What a schedule sends to its target (the slack-actions function).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationEvent {
    pub escalation: EscalationFired,
}

/// The body of [`EscalationEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EscalationFired {
    pub incident_key: String,
    pub attempt: u32,
}

/// Sets and removes escalation timers.
#[async_trait]
pub trait EscalationTimer: Send + Sync {
    /// Creates the one-time schedule `name` that fires `attempt` of `key` at `at`.
    /// Creating a schedule that exists already (a retried step) succeeds.
    async fn schedule(
        &self,
        name: &str,
        key: &str,
        attempt: u32,
        at: DateTime<Utc>,
    ) -> Result<(), AwsError>;

    /// Deletes the schedule `name`; one that is gone already (it ran) is fine.
    async fn cancel(&self, name: &str) -> Result<(), AwsError>;
}

/// Pages the on-call people.
#[async_trait]
pub trait Pager: Send + Sync {
    /// Publishes a plain-text page; returns the message id.
    async fn page(&self, subject: &str, message: &str) -> Result<String, AwsError>;
}

/// [`EscalationTimer`] on EventBridge Scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerTimer {
    client: aws_sdk_scheduler::Client,
    group: String,
    target_arn: String,
    role_arn: String,
}

impl SchedulerTimer {
    pub fn new(client: aws_sdk_scheduler::Client, policy: &EscalationPolicy) -> Self {
        SchedulerTimer {
            client,
            group: policy.schedule_group.clone(),
            target_arn: policy.target_arn.clone(),
            role_arn: policy.scheduler_role_arn.clone(),
        }
    }
}

pub use crate::schedule::at_expression;

use crate::schedule::build_failure;

#[async_trait]
impl EscalationTimer for SchedulerTimer {
    async fn schedule(
        &self,
        name: &str,
        key: &str,
        attempt: u32,
        at: DateTime<Utc>,
    ) -> Result<(), AwsError> {
        let input = serde_json::to_string(&EscalationEvent {
            escalation: EscalationFired {
                incident_key: key.to_string(),
                attempt,
            },
        })
        .map_err(|e| build_failure("CreateSchedule", e))?;
        crate::schedule::create_one_time(
            &self.client,
            crate::schedule::OneTime {
                group: &self.group,
                name,
                at,
                target_arn: &self.target_arn,
                role_arn: &self.role_arn,
                input: &input,
                description: &format!("Escalation {attempt} of incident {key}"),
            },
        )
        .await
    }

    async fn cancel(&self, name: &str) -> Result<(), AwsError> {
        crate::schedule::delete_one_time(&self.client, &self.group, name).await
    }
}

/// [`Pager`] on an SNS topic (e-mail and SMS subscribers read plain text).
#[derive(Debug, Clone)]
pub struct SnsPager {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsPager {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        SnsPager {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

/// An SNS subject: printable ASCII only (others become `?`, line breaks spaces), at
/// most [`SUBJECT_MAX`] characters, never empty.
pub fn sns_subject(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '\r' | '\n' | '\t' => ' ',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect();
    let clean = clean.trim();
    let cut: String = if clean.chars().count() > SUBJECT_MAX {
        let mut c: String = clean.chars().take(SUBJECT_MAX - 3).collect();
        c.push_str("...");
        c
    } else {
        clean.to_string()
    };
    if cut.is_empty() {
        "Incident escalation".into()
    } else {
        cut
    }
}

#[async_trait]
impl Pager for SnsPager {
    async fn page(&self, subject: &str, message: &str) -> Result<String, AwsError> {
        let out = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(sns_subject(subject))
            .message(crate::text::truncate(message, PAGE_MESSAGE_MAX))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sns", "Publish", e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AwsFailure;
    use crate::mock_client;
    use aws_sdk_scheduler::operation::create_schedule::CreateScheduleError;
    use aws_sdk_scheduler::operation::create_schedule::CreateScheduleOutput;
    use aws_sdk_scheduler::operation::delete_schedule::DeleteScheduleError;
    use aws_sdk_scheduler::operation::delete_schedule::DeleteScheduleOutput;
    use aws_sdk_scheduler::types::error::{ConflictException, ResourceNotFoundException};
    use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindowMode};
    use aws_sdk_sns::operation::publish::PublishOutput;
    use aws_smithy_mocks::mock;
    use aws_smithy_types::error::ErrorMetadata;

    const TARGET: &str = "arn:aws:lambda:eu-west-1:123456789012:function:slack-actions";
    const ROLE: &str = "arn:aws:iam::123456789012:role/escalation-scheduler";
    const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:escalation";

    fn env(extra: &[(&'static str, &'static str)]) -> Env {
        let mut v = vec![
            (MIN_IMPACT_VAR, "2"),
            (TOPIC_VAR, TOPIC),
            (TARGET_VAR, TARGET),
            (ROLE_VAR, ROLE),
        ];
        v.extend_from_slice(extra);
        Env::from_pairs(v)
    }

    pub(crate) fn policy() -> EscalationPolicy {
        EscalationPolicy::from_env(&env(&[])).unwrap().unwrap()
    }

    #[test]
    fn policy_is_off_without_min_impact_and_has_defaults() {
        assert_eq!(EscalationPolicy::from_env(&Env::default()), Ok(None));
        let p = policy();
        assert_eq!(p.min_impact, Impact::HIGH);
        assert_eq!(p.after, Duration::minutes(15));
        assert_eq!(p.repeat, Duration::minutes(15));
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.schedule_group, "default");
        let p = EscalationPolicy::from_env(&env(&[
            (AFTER_VAR, "5"),
            (REPEAT_VAR, "10"),
            (MAX_ATTEMPTS_VAR, "2"),
            (GROUP_VAR, "incidents"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (p.after, p.repeat, p.max_attempts, p.schedule_group.as_str()),
            (Duration::minutes(5), Duration::minutes(10), 2, "incidents")
        );
    }

    #[test]
    fn policy_errors_name_the_variable() {
        let e = |extra: &[(&'static str, &'static str)]| {
            EscalationPolicy::from_env(&env(extra))
                .unwrap_err()
                .to_string()
        };
        assert!(e(&[(MIN_IMPACT_VAR, "0")]).contains("ESCALATION_MIN_IMPACT=\"0\""));
        assert!(e(&[(AFTER_VAR, "0")]).contains("ESCALATION_AFTER_MINUTES=\"0\""));
        assert!(e(&[(REPEAT_VAR, "x")]).contains("ESCALATION_REPEAT_MINUTES=\"x\""));
        assert!(e(&[(MAX_ATTEMPTS_VAR, "50")]).contains("ESCALATION_MAX_ATTEMPTS"));
        assert!(e(&[(GROUP_VAR, "a b")]).contains("ESCALATION_SCHEDULE_GROUP"));
        let missing = EscalationPolicy::from_env(&Env::from_pairs([(MIN_IMPACT_VAR, "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("ESCALATION_TOPIC_ARN is not set"),
            "{missing}"
        );
        assert!(e(&[(TARGET_VAR, TOPIC)]).contains("ESCALATION_TARGET_ARN"));
    }

    #[test]
    fn schedule_name_is_short_valid_and_per_opening() {
        let t0: DateTime<Utc> = "2026-11-25T10:01:00Z".parse().unwrap();
        let n = schedule_name("VPN connection vpn-1 is DOWN (a very long key)", t0, 12);
        assert!(n.len() <= 64, "{n}");
        assert!(n.starts_with("incident-escalation-") && n.ends_with("-12"));
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
        assert_eq!(
            n,
            schedule_name("VPN connection vpn-1 is DOWN (a very long key)", t0, 12)
        );
        assert_ne!(
            schedule_name("k", t0, 1),
            schedule_name("k", t0 + Duration::seconds(1), 1)
        );
    }

    #[tokio::test]
    async fn scheduler_timer_creates_a_one_time_utc_schedule() {
        let create = mock!(aws_sdk_scheduler::Client::create_schedule)
            .match_requests(|r| {
                assert_eq!(r.name(), Some("incident-escalation-0123456789abcdef-1"));
                assert_eq!(r.group_name(), Some("default"));
                assert_eq!(r.schedule_expression(), Some("at(2026-11-25T10:16:00)"));
                assert_eq!(r.schedule_expression_timezone(), Some("UTC"));
                assert_eq!(
                    r.flexible_time_window().map(|w| w.mode()),
                    Some(&FlexibleTimeWindowMode::Off)
                );
                assert_eq!(
                    r.action_after_completion(),
                    Some(&ActionAfterCompletion::Delete)
                );
                let t = r.target().unwrap();
                assert_eq!(t.arn(), TARGET);
                assert_eq!(t.role_arn(), ROLE);
                let input: serde_json::Value = serde_json::from_str(t.input().unwrap()).unwrap();
                assert_eq!(
                    input,
                    serde_json::json!({"escalation": {"incidentKey": "VPN connection vpn-1 is DOWN", "attempt": 1}})
                );
                true
            })
            .then_output(|| CreateScheduleOutput::builder().schedule_arn("arn:x").build().unwrap());
        let conflict = mock!(aws_sdk_scheduler::Client::create_schedule).then_error(|| {
            CreateScheduleError::ConflictException(
                ConflictException::builder()
                    .message("exists")
                    .build()
                    .unwrap(),
            )
        });
        let throttled = mock!(aws_sdk_scheduler::Client::create_schedule).then_error(|| {
            CreateScheduleError::generic(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("slow")
                    .build(),
            )
        });
        let timer = SchedulerTimer::new(
            mock_client!(aws_sdk_scheduler, [&create, &conflict, &throttled]),
            &policy(),
        );
        let at: DateTime<Utc> = "2026-11-25T10:16:00.700Z".parse().unwrap();
        let name = "incident-escalation-0123456789abcdef-1";
        let key = "VPN connection vpn-1 is DOWN";
        timer.schedule(name, key, 1, at).await.unwrap();
        // A retried step finds the schedule there: done.
        timer.schedule(name, key, 1, at).await.unwrap();
        let e = timer.schedule(name, key, 1, at).await.unwrap_err();
        assert_eq!(e.failure, AwsFailure::Throttled);
        assert_eq!(create.num_calls(), 1);
        assert_eq!(conflict.num_calls(), 1);
    }

    #[tokio::test]
    async fn scheduler_timer_delete_treats_not_found_as_done() {
        let delete = mock!(aws_sdk_scheduler::Client::delete_schedule)
            .match_requests(|r| {
                r.name() == Some("incident-escalation-0123456789abcdef-2")
                    && r.group_name() == Some("default")
            })
            .then_output(|| DeleteScheduleOutput::builder().build());
        let gone = mock!(aws_sdk_scheduler::Client::delete_schedule).then_error(|| {
            DeleteScheduleError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("gone")
                    .build()
                    .unwrap(),
            )
        });
        let denied = mock!(aws_sdk_scheduler::Client::delete_schedule).then_error(|| {
            DeleteScheduleError::generic(
                ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("no")
                    .build(),
            )
        });
        let timer = SchedulerTimer::new(
            mock_client!(aws_sdk_scheduler, [&delete, &gone, &denied]),
            &policy(),
        );
        let name = "incident-escalation-0123456789abcdef-2";
        timer.cancel(name).await.unwrap();
        timer.cancel(name).await.unwrap();
        let e = timer.cancel(name).await.unwrap_err();
        assert_eq!(e.failure, AwsFailure::AccessDenied);
        assert_eq!(delete.num_calls(), 1);
    }

    #[tokio::test]
    async fn sns_pager_sends_a_clean_short_subject_and_plain_text() {
        let publish = mock!(aws_sdk_sns::Client::publish)
            .match_requests(|r| {
                assert_eq!(r.topic_arn(), Some(TOPIC));
                let subject = r.subject().unwrap();
                assert_eq!(subject.chars().count(), SUBJECT_MAX);
                assert!(subject.starts_with("[Impact 1] Unanswered: VPN ? down "));
                assert!(subject.ends_with("..."));
                assert_eq!(
                    r.message(),
                    Some("Nobody acknowledged it.\nOpen: https://x")
                );
                assert!(r.message_attributes().is_none());
                true
            })
            .then_output(|| PublishOutput::builder().message_id("p-1").build());
        let pager = SnsPager::new(mock_client!(aws_sdk_sns, [&publish]), TOPIC);
        let subject = format!("[Impact 1] Unanswered: VPN é down\n{}", "x".repeat(200));
        let id = pager
            .page(&subject, "Nobody acknowledged it.\nOpen: https://x")
            .await
            .unwrap();
        assert_eq!(id, "p-1");
        assert_eq!(sns_subject(" \n "), "Incident escalation");
    }
}
