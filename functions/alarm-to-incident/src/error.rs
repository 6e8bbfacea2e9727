//! Why an invocation failed, and whether Lambda's retry can help.

use shared::alarm::AlarmError;
use shared::error::{AwsError, Retryable};
use shared::incident::BackendError;
use shared::state::StateError;

/// A failed invocation of alarm-to-incident.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event is not a CloudWatch alarm in a shape we read.
    #[error("bad event: {0}")]
    BadEvent(#[from] AlarmError),
    /// The incident backend (OpsCenter or Incident Manager) failed.
    #[error("incident backend: {0}")]
    Backend(#[from] BackendError),
    #[error(transparent)]
    State(#[from] StateError),
    /// Publishing the notification to SNS failed.
    #[error("notification: {0}")]
    Publish(AwsError),
    /// Other invocations kept changing the incident (or held its lease) through every attempt.
    #[error("incident {key:?} is being changed by another invocation; retry later")]
    Busy { key: String },
}

impl Retryable for HandlerError {
    fn retryable(&self) -> bool {
        match self {
            HandlerError::BadEvent(e) => e.retryable(),
            HandlerError::Backend(e) => e.retryable(),
            HandlerError::State(e) => e.retryable(),
            HandlerError::Publish(e) => e.retryable(),
            HandlerError::Busy { .. } => true,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            HandlerError::BadEvent(e) => e.kind(),
            HandlerError::Backend(e) => e.kind(),
            HandlerError::State(e) => e.kind(),
            HandlerError::Publish(e) => e.kind(),
            HandlerError::Busy { .. } => "Busy",
        }
    }
}

impl HandlerError {
    /// True when running the same step again may succeed: throttling, 5xx, timeouts,
    /// and access denied (fixed by a policy change, after which the step must still run).
    /// A step that failed otherwise (rejected as invalid, resource gone) never will.
    pub fn worth_keeping(&self) -> bool {
        let access = |e: &AwsError| e.failure == shared::error::AwsFailure::AccessDenied;
        match self {
            HandlerError::Backend(BackendError::Aws(e)) | HandlerError::Publish(e) => {
                e.retryable() || access(e)
            }
            HandlerError::State(StateError::Aws(e)) => e.retryable() || access(e),
            other => other.retryable(),
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.lambda_error_type(),
            error_message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::error::AwsFailure;

    fn aws(failure: AwsFailure, code: &str) -> AwsError {
        AwsError {
            service: "ssm",
            operation: "CreateOpsItem",
            failure,
            code: Some(code.into()),
            message: "m".into(),
        }
    }

    #[test]
    fn diagnostic_names_retryability_and_kind() {
        let d: lambda_runtime::Diagnostic = HandlerError::Backend(BackendError::Aws(aws(
            AwsFailure::Throttled,
            "ThrottlingException",
        )))
        .into();
        assert_eq!(d.error_type, "Retryable.Throttled");
        assert_eq!(
            d.error_message,
            "incident backend: ssm CreateOpsItem failed (ThrottlingException): m"
        );
        let d: lambda_runtime::Diagnostic = HandlerError::Busy { key: "k".into() }.into();
        assert_eq!(d.error_type, "Retryable.Busy");
    }

    #[test]
    fn access_denied_is_kept_but_not_retryable() {
        let e = HandlerError::Backend(BackendError::Aws(aws(
            AwsFailure::AccessDenied,
            "AccessDeniedException",
        )));
        assert!(!e.retryable());
        assert!(e.worth_keeping());
        let e = HandlerError::Backend(BackendError::Aws(aws(
            AwsFailure::Rejected,
            "ValidationException",
        )));
        assert!(!e.worth_keeping());
    }
}
