//! Why an invocation failed, and whether Lambda's retry can help.

use shared::alarm::AlarmError;
use shared::effects::EffectError;
use shared::error::{AwsError, Retryable};
use shared::state::StateError;

/// A failed invocation of alarm-to-incident.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event is not a CloudWatch alarm in a shape we read.
    #[error("bad event: {0}")]
    BadEvent(#[from] AlarmError),
    /// A step of the change (backend, state table, notification, escalation timer).
    #[error(transparent)]
    Effect(#[from] EffectError),
    /// A `{"sweep": ...}` event of another shape.
    #[error("bad sweep request: {0}; expected {{\"sweep\": {{\"reason\": \"...\"}}}}")]
    BadSweep(String),
    /// The sweep could not read the alarms; it applied nothing.
    #[error("reconciliation sweep: reading the alarms failed, nothing was applied: {0}")]
    ReadAlarms(AwsError),
    /// Some alarms of a sweep failed (the others were reconciled).
    #[error("reconciliation sweep: {failed} alarm(s) not reconciled; first: {first}")]
    SweepIncomplete {
        failed: usize,
        first: Box<HandlerError>,
    },
}

impl From<StateError> for HandlerError {
    fn from(e: StateError) -> Self {
        HandlerError::Effect(EffectError::State(e))
    }
}

impl Retryable for HandlerError {
    fn retryable(&self) -> bool {
        match self {
            HandlerError::BadEvent(e) => e.retryable(),
            HandlerError::Effect(e) => e.retryable(),
            HandlerError::BadSweep(_) => false,
            HandlerError::ReadAlarms(e) => e.retryable(),
            HandlerError::SweepIncomplete { first, .. } => first.retryable(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            HandlerError::BadEvent(e) => e.kind(),
            HandlerError::Effect(e) => e.kind(),
            HandlerError::BadSweep(_) => "BadInput",
            HandlerError::ReadAlarms(e) => e.kind(),
            HandlerError::SweepIncomplete { first, .. } => first.kind(),
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
    use shared::error::{AwsError, AwsFailure};
    use shared::incident::BackendError;

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
        let d: lambda_runtime::Diagnostic = HandlerError::Effect(EffectError::Backend(
            BackendError::Aws(aws(AwsFailure::Throttled, "ThrottlingException")),
        ))
        .into();
        assert_eq!(d.error_type, "Retryable.Throttled");
        assert_eq!(
            d.error_message,
            "incident backend: ssm CreateOpsItem failed (ThrottlingException): m"
        );
        let d: lambda_runtime::Diagnostic =
            HandlerError::Effect(EffectError::Busy { key: "k".into() }).into();
        assert_eq!(d.error_type, "Retryable.Busy");
    }

    #[test]
    fn access_denied_is_kept_but_not_retryable() {
        let e = EffectError::Backend(BackendError::Aws(aws(
            AwsFailure::AccessDenied,
            "AccessDeniedException",
        )));
        assert!(!e.retryable());
        assert!(e.worth_keeping());
        let e = EffectError::Backend(BackendError::Aws(aws(
            AwsFailure::Rejected,
            "ValidationException",
        )));
        assert!(!e.worth_keeping());
    }
}
