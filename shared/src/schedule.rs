//! One-time EventBridge Scheduler schedules (`at(...)`, UTC, no flexible window,
//! deleted after they ran): the timers of escalations ([`crate::escalation`]) and of
//! hold ends ([`crate::hold_timer`]). Creating a schedule that exists already (a
//! retried step: same name, same purpose) succeeds; deleting one that is gone (it
//! ran) succeeds.

use aws_sdk_scheduler::operation::create_schedule::CreateScheduleError;
use aws_sdk_scheduler::operation::delete_schedule::DeleteScheduleError;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};
use chrono::{DateTime, Utc};

use crate::config::ConfigError;
use crate::error::{AwsError, AwsFailure};
use crate::hash::token_uuid;

/// Checks a schedule group name read from `var`: 1 to 64 characters `[0-9A-Za-z-_.]`,
/// as the scheduler requires.
pub fn check_group(var: &str, group: &str) -> Result<(), ConfigError> {
    if group.is_empty()
        || group.len() > 64
        || !group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ConfigError::invalid(
            var,
            group,
            "expected a schedule group name of 1 to 64 characters [0-9A-Za-z-_.]",
        ));
    }
    Ok(())
}

/// `at(yyyy-mm-ddThh:mm:ss)`, the one-time schedule expression (read in the
/// schedule's timezone, which we set to UTC).
pub fn at_expression(at: DateTime<Utc>) -> String {
    format!("at({})", at.format("%Y-%m-%dT%H:%M:%S"))
}

/// A request that could not be built (never retryable).
pub(crate) fn build_failure(operation: &'static str, e: impl std::fmt::Display) -> AwsError {
    AwsError {
        service: "scheduler",
        operation,
        failure: AwsFailure::Rejected,
        code: None,
        message: format!("could not build the request: {e}"),
    }
}

/// Where a one-time schedule goes and as whom.
#[derive(Debug, Clone, Copy)]
pub struct OneTime<'a> {
    pub group: &'a str,
    pub name: &'a str,
    pub at: DateTime<Utc>,
    /// The function invoked, and the role the scheduler assumes to invoke it.
    pub target_arn: &'a str,
    pub role_arn: &'a str,
    /// The event the function receives (JSON).
    pub input: &'a str,
    /// Shown in the console (cut to 512 characters).
    pub description: &'a str,
}

/// Creates the one-time schedule `s.name` in `s.group`.
pub async fn create_one_time(
    client: &aws_sdk_scheduler::Client,
    s: OneTime<'_>,
) -> Result<(), AwsError> {
    let target = Target::builder()
        .arn(s.target_arn)
        .role_arn(s.role_arn)
        .input(s.input)
        .build()
        .map_err(|e| build_failure("CreateSchedule", e))?;
    let window = FlexibleTimeWindow::builder()
        .mode(FlexibleTimeWindowMode::Off)
        .build()
        .map_err(|e| build_failure("CreateSchedule", e))?;
    let result = client
        .create_schedule()
        .name(s.name)
        .group_name(s.group)
        .schedule_expression(at_expression(s.at))
        .schedule_expression_timezone("UTC")
        .flexible_time_window(window)
        .action_after_completion(ActionAfterCompletion::Delete)
        .description(crate::text::truncate(s.description, 512))
        .client_token(token_uuid(&[s.name]))
        .target(target)
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        // Same name = same purpose: a retried step.
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateScheduleError::ConflictException(_))
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(AwsError::from_sdk("scheduler", "CreateSchedule", e)),
    }
}

/// Deletes schedule `name` of `group`; one that is gone already (it ran) is fine.
pub async fn delete_one_time(
    client: &aws_sdk_scheduler::Client,
    group: &str,
    name: &str,
) -> Result<(), AwsError> {
    match client
        .delete_schedule()
        .name(name)
        .group_name(group)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(DeleteScheduleError::ResourceNotFoundException(_))
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(AwsError::from_sdk("scheduler", "DeleteSchedule", e)),
    }
}
