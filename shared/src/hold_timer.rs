//! The timer at the end of a hold: when a mute window or a silence ends, a one-time
//! EventBridge Scheduler schedule invokes alarm-to-incident with a [`SweepRequest`],
//! and its reconciliation applies every held transition whose hold ended and whose
//! alarm still fires (the scheduled sweep is the backstop when a timer is lost).
//!
//! Same style as the escalation timers ([`crate::escalation`]): schedules live in
//! their own group (`<stack>-holds`), named `mute-end-<16 hex>` (alarm-to-incident, per
//! mute rule and window end), `silence-end-<16 hex>` and `silence-lifted-<16 hex>`
//! (slack-actions, per silence), each created with `ActionAfterCompletion: DELETE`.
//!
//! | variable | meaning |
//! |---|---|
//! | `HOLD_SCHEDULE_GROUP` | the schedule group; unset = no timers (the sweep alone ends holds) |
//! | `HOLD_SCHEDULER_ROLE_ARN` | role EventBridge Scheduler assumes to invoke alarm-to-incident |
//! | `HOLD_TARGET_ARN` | alarm-to-incident's ARN (slack-actions; alarm-to-incident uses its own) |

use async_trait::async_trait;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Env};
use crate::error::AwsError;
use crate::hash::stable_hash;
use crate::schedule::{create_one_time, delete_one_time, OneTime};

pub const HOLD_GROUP_VAR: &str = "HOLD_SCHEDULE_GROUP";
pub const HOLD_ROLE_VAR: &str = "HOLD_SCHEDULER_ROLE_ARN";
pub const HOLD_TARGET_VAR: &str = "HOLD_TARGET_ARN";

/// A timer fires this long after the hold's end: the alarm's state at the end is
/// what counts, and the scheduler refuses times in the past.
pub const LEAD: Duration = Duration::seconds(60);

/// What the reconciliation sweep receives (scheduled, or at a hold's end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRequest {
    pub sweep: SweepReason,
}

/// Why the sweep runs (logged, and shown in its result).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SweepReason {
    #[serde(default)]
    pub reason: String,
}

/// Where the hold timers go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldTimerConfig {
    pub group: String,
    pub role_arn: String,
    /// alarm-to-incident's ARN, when given (slack-actions).
    pub target_arn: Option<String>,
}

impl HoldTimerConfig {
    /// `None` when `HOLD_SCHEDULE_GROUP` is unset (timers off); with it, the role is
    /// required. alarm-to-incident targets itself; another function adds the target
    /// with [`HoldTimerConfig::with_sweep_target`].
    pub fn from_env(env: &Env) -> Result<Option<HoldTimerConfig>, ConfigError> {
        let Some(group) = env.optional(HOLD_GROUP_VAR) else {
            return Ok(None);
        };
        crate::schedule::check_group(HOLD_GROUP_VAR, &group)?;
        Ok(Some(HoldTimerConfig {
            group,
            role_arn: env.arn(HOLD_ROLE_VAR, "iam")?,
            target_arn: None,
        }))
    }

    /// The same, with alarm-to-incident's ARN (`HOLD_TARGET_ARN`, required).
    pub fn with_sweep_target(self, env: &Env) -> Result<HoldTimerConfig, ConfigError> {
        Ok(HoldTimerConfig {
            target_arn: Some(env.arn(HOLD_TARGET_VAR, "lambda")?),
            ..self
        })
    }
}

/// Sets and removes hold timers.
#[async_trait]
pub trait HoldTimer: Send + Sync {
    /// Creates schedule `name` that runs the sweep of `target` at `at` (not earlier
    /// than [`LEAD`] from now). An existing one of that name (a retry) is fine.
    async fn sweep_at(
        &self,
        target: &str,
        name: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), AwsError>;
    /// Deletes schedule `name`; one that is gone already is fine.
    async fn cancel(&self, name: &str) -> Result<(), AwsError>;
}

/// [`HoldTimer`] on EventBridge Scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerHoldTimer {
    client: aws_sdk_scheduler::Client,
    group: String,
    role_arn: String,
}

impl SchedulerHoldTimer {
    pub fn new(client: aws_sdk_scheduler::Client, config: &HoldTimerConfig) -> Self {
        SchedulerHoldTimer {
            client,
            group: config.group.clone(),
            role_arn: config.role_arn.clone(),
        }
    }
}

#[async_trait]
impl HoldTimer for SchedulerHoldTimer {
    async fn sweep_at(
        &self,
        target: &str,
        name: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), AwsError> {
        let input = serde_json::json!({"sweep": {"reason": reason}}).to_string();
        create_one_time(
            &self.client,
            OneTime {
                group: &self.group,
                name,
                at,
                target_arn: target,
                role_arn: &self.role_arn,
                input: &input,
                description: reason,
            },
        )
        .await
    }

    async fn cancel(&self, name: &str) -> Result<(), AwsError> {
        delete_one_time(&self.client, &self.group, name).await
    }
}

fn hex16(parts: &[&str]) -> String {
    format!("{:016x}", (stable_hash(parts) >> 64) as u64)
}

/// The timer of a mute window's end: one per rule and window (alarms muted by the
/// same window share it).
pub fn mute_end_name(rule_arn: Option<&str>, until: DateTime<Utc>) -> String {
    let until = until.to_rfc3339_opts(SecondsFormat::Millis, true);
    format!("mute-end-{}", hex16(&[rule_arn.unwrap_or(""), &until]))
}

/// The timer of a silence's planned end.
pub fn silence_end_name(id: &str) -> String {
    format!("silence-end-{}", hex16(&[id]))
}

/// The timer set when a silence is lifted early.
pub fn silence_lifted_name(id: &str) -> String {
    format!("silence-lifted-{}", hex16(&[id]))
}

/// When a timer for a hold ending at `end` fires: [`LEAD`] after it, and not earlier
/// than [`LEAD`] from `now`.
pub fn fire_at(end: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    (end + LEAD).max(now + LEAD)
}

/// A [`HoldTimer`] that records its calls, for handler tests.
#[cfg(any(test, feature = "testing"))]
pub mod fakes {
    use std::sync::Mutex;

    use super::*;

    /// One call: `("sweep_at", target, name, at, reason)` or `("cancel", "", name, None, "")`.
    pub type HoldTimerCall = (String, String, String, Option<DateTime<Utc>>, String);

    #[derive(Debug, Default)]
    pub struct RecordingHoldTimer {
        pub calls: Mutex<Vec<HoldTimerCall>>,
        /// Fails the next call with this error.
        pub fail_next: Mutex<Option<AwsError>>,
    }

    impl RecordingHoldTimer {
        pub fn calls(&self) -> Vec<HoldTimerCall> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }
        fn failure(&self) -> Result<(), AwsError> {
            match self.fail_next.lock().ok().and_then(|mut f| f.take()) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }

    #[async_trait]
    impl HoldTimer for RecordingHoldTimer {
        async fn sweep_at(
            &self,
            target: &str,
            name: &str,
            at: DateTime<Utc>,
            reason: &str,
        ) -> Result<(), AwsError> {
            self.failure()?;
            if let Ok(mut c) = self.calls.lock() {
                c.push((
                    "sweep_at".into(),
                    target.into(),
                    name.into(),
                    Some(at),
                    reason.into(),
                ));
            }
            Ok(())
        }
        async fn cancel(&self, name: &str) -> Result<(), AwsError> {
            self.failure()?;
            if let Ok(mut c) = self.calls.lock() {
                c.push((
                    "cancel".into(),
                    String::new(),
                    name.into(),
                    None,
                    String::new(),
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_client;
    use aws_sdk_scheduler::operation::create_schedule::CreateScheduleOutput;
    use aws_smithy_mocks::mock;

    const ROLE: &str = "arn:aws:iam::123456789012:role/holds";
    const TARGET: &str = "arn:aws:lambda:eu-west-1:123456789012:function:alarm-to-incident";

    #[test]
    fn config_is_off_without_group_and_checked_with_it() {
        assert_eq!(HoldTimerConfig::from_env(&Env::default()), Ok(None));
        let e = HoldTimerConfig::from_env(&Env::from_pairs([(HOLD_GROUP_VAR, "g")])).unwrap_err();
        assert!(e.to_string().contains(HOLD_ROLE_VAR), "{e}");
        let env = Env::from_pairs([(HOLD_GROUP_VAR, "stack-holds"), (HOLD_ROLE_VAR, ROLE)]);
        let c = HoldTimerConfig::from_env(&env).unwrap().unwrap();
        assert_eq!(
            (c.group.as_str(), c.target_arn.clone()),
            ("stack-holds", None)
        );
        assert!(c
            .with_sweep_target(&env)
            .unwrap_err()
            .to_string()
            .contains(HOLD_TARGET_VAR));
        assert!(HoldTimerConfig::from_env(&Env::from_pairs([(HOLD_GROUP_VAR, "a b")])).is_err());
    }

    #[test]
    fn names_are_short_stable_and_distinct() {
        let t: DateTime<Utc> = "2026-11-25T11:00:00Z".parse().unwrap();
        let a = mute_end_name(Some("arn:r"), t);
        assert_eq!(a, mute_end_name(Some("arn:r"), t));
        assert_ne!(a, mute_end_name(Some("arn:r"), t + Duration::hours(24)));
        assert!(a.starts_with("mute-end-") && a.len() == 25, "{a}");
        assert_ne!(silence_end_name("s-1"), silence_lifted_name("s-1"));
        assert!(silence_lifted_name("s-00000001").len() <= 64);
        let now = t + Duration::minutes(5);
        assert_eq!(fire_at(t, now), now + LEAD);
        assert_eq!(
            fire_at(now + Duration::hours(1), now),
            now + Duration::hours(1) + LEAD
        );
    }

    #[tokio::test]
    async fn sweep_timer_is_a_one_time_schedule_with_the_sweep_input() {
        let create = mock!(aws_sdk_scheduler::Client::create_schedule)
            .match_requests(|r| {
                let target = r.target().unwrap();
                r.name() == Some("mute-end-1")
                    && r.group_name() == Some("stack-holds")
                    && r.schedule_expression() == Some("at(2026-11-25T11:01:00)")
                    && r.schedule_expression_timezone() == Some("UTC")
                    && target.arn() == TARGET
                    && target.role_arn() == ROLE
                    && target.input() == Some(r#"{"sweep":{"reason":"mute window ended"}}"#)
            })
            .then_output(|| {
                CreateScheduleOutput::builder()
                    .schedule_arn("arn:s")
                    .build()
                    .unwrap()
            });
        let config = HoldTimerConfig {
            group: "stack-holds".into(),
            role_arn: ROLE.into(),
            target_arn: None,
        };
        let timer = SchedulerHoldTimer::new(mock_client!(aws_sdk_scheduler, [&create]), &config);
        timer
            .sweep_at(
                TARGET,
                "mute-end-1",
                "2026-11-25T11:01:00Z".parse().unwrap(),
                "mute window ended",
            )
            .await
            .unwrap();
        assert_eq!(create.num_calls(), 1);
        let fired: SweepRequest = serde_json::from_str(r#"{"sweep":{"reason":"x"}}"#).unwrap();
        assert_eq!(fired.sweep.reason, "x");
    }
}
