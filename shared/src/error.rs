//! What every error of the pipeline must say: whether a retry can help.
//!
//! Lambda retries an asynchronous invocation twice and then sends the event to the
//! on-failure destination, so a function returns `Err` both for transient failures
//! (the retry may succeed) and for bad input (the event must reach the dead-letter
//! queue rather than vanish). The error *type* reported to Lambda carries the
//! distinction, e.g. `Retryable.Throttled` or `NonRetryable.BadInput`, so the DLQ
//! message and the logs say at once whether a replay is worth it.

use std::fmt;

#[cfg(feature = "aws")]
use aws_sdk_ssm::error::ProvideErrorMetadata;
#[cfg(feature = "aws")]
use aws_smithy_runtime_api::client::result::SdkError;
#[cfg(feature = "aws")]
use aws_smithy_runtime_api::http::Response;

/// Implemented by every error type of the project.
pub trait Retryable {
    /// True when the same input may succeed later (throttling, 5xx, timeouts).
    fn retryable(&self) -> bool;

    /// A short CamelCase category, e.g. `Throttled`, `BadInput`, `AccessDenied`.
    fn kind(&self) -> &'static str;

    /// The `errorType` reported to the Lambda runtime: `Retryable.<kind>` or
    /// `NonRetryable.<kind>`.
    fn lambda_error_type(&self) -> String {
        let prefix = if self.retryable() {
            "Retryable"
        } else {
            "NonRetryable"
        };
        format!("{prefix}.{}", self.kind())
    }
}

/// Error codes AWS services use for throttling and transient server faults.
/// Sources: the SDK retry classifiers (`aws-runtime` `THROTTLING_ERRORS` and
/// `TRANSIENT_ERRORS`) plus the service-specific codes we call.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "OpsItemLimitExceededException",
];
const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "InternalServiceError",
    "InternalServiceErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];
const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "AuthFailure",
    "KMSAccessDeniedException",
];

/// Why an AWS call failed, reduced to what the caller must decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsFailure {
    /// The service throttled us (retry later).
    Throttled,
    /// Timeout, connection failure or a 5xx (retry later).
    Transient,
    /// Credentials or IAM policy (a retry cannot help; fix the policy).
    AccessDenied,
    /// The service rejected the request as invalid, or the resource does not exist.
    Rejected,
}

impl AwsFailure {
    pub fn retryable(self) -> bool {
        matches!(self, AwsFailure::Throttled | AwsFailure::Transient)
    }

    fn kind(self) -> &'static str {
        match self {
            AwsFailure::Throttled => "Throttled",
            AwsFailure::Transient => "AwsUnavailable",
            AwsFailure::AccessDenied => "AccessDenied",
            AwsFailure::Rejected => "AwsRejected",
        }
    }
}

/// A failed AWS SDK call: which service and operation, the error code and message
/// the service returned, and whether a retry can help. The request itself (which may
/// hold secrets) is never part of it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {operation} failed ({}): {message}", .code.as_deref().unwrap_or("no error code"))]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub failure: AwsFailure,
    pub code: Option<String>,
    pub message: String,
}

impl AwsError {
    /// Classifies an SDK error by its variant, HTTP status and error code.
    #[cfg(feature = "aws")]
    pub fn from_sdk<E>(
        service: &'static str,
        operation: &'static str,
        err: SdkError<E, Response>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (failure, code, message) = match &err {
            SdkError::TimeoutError(_) => {
                (AwsFailure::Transient, None, "request timed out".to_string())
            }
            SdkError::DispatchFailure(e) => (
                AwsFailure::Transient,
                None,
                format!("could not reach the service: {}", describe_dispatch(e)),
            ),
            SdkError::ResponseError(e) => (
                if e.raw().status().is_server_error() {
                    AwsFailure::Transient
                } else {
                    AwsFailure::Rejected
                },
                None,
                format!("unreadable response (HTTP {})", e.raw().status().as_u16()),
            ),
            SdkError::ServiceError(e) => {
                let code = e.err().code().map(str::to_string);
                let status = e.raw().status();
                let failure = classify(code.as_deref(), status.as_u16());
                let message = e
                    .err()
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
                (failure, code, message)
            }
            SdkError::ConstructionFailure(_) => (
                AwsFailure::Rejected,
                None,
                "the request could not be built (invalid parameters)".to_string(),
            ),
            _ => (
                AwsFailure::Transient,
                None,
                "unknown SDK failure".to_string(),
            ),
        };
        AwsError {
            service,
            operation,
            failure,
            code,
            message: crate::text::truncate(&message, 500),
        }
    }

    /// True when the service answered with this error code.
    pub fn is_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// True when a failed request may have taken effect all the same: it was sent and no
/// answer said it was refused. An attempt or operation timeout, an I/O failure or a
/// connection reset after the request left, an unreadable answer, and a 5xx ("the
/// request may or may not have succeeded", DynamoDB's InternalServerError) are
/// ambiguous; a throttling or validation answer, a conditional-check failure, or a
/// request that was never built or sent are not. A conditional write that fails
/// ambiguously is read back before anything else is decided: the write may be there.
#[cfg(feature = "aws")]
pub fn is_ambiguous<E>(err: &SdkError<E, Response>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => !d.is_user(),
        SdkError::ServiceError(e) => e.raw().status().is_server_error(),
        _ => false,
    }
}

#[cfg(feature = "aws")]
fn describe_dispatch(e: &aws_smithy_runtime_api::client::result::DispatchFailure) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_io() {
        "I/O error"
    } else {
        "connection failure"
    }
}

/// Classifies by error code first (services send 400 for throttling), then status.
pub fn classify(code: Option<&str>, status: u16) -> AwsFailure {
    match code {
        Some(c) if THROTTLING_CODES.contains(&c) => AwsFailure::Throttled,
        Some(c) if TRANSIENT_CODES.contains(&c) => AwsFailure::Transient,
        Some(c) if ACCESS_CODES.contains(&c) => AwsFailure::AccessDenied,
        _ if status == 429 => AwsFailure::Throttled,
        _ if status >= 500 => AwsFailure::Transient,
        _ if status == 401 || status == 403 => AwsFailure::AccessDenied,
        _ => AwsFailure::Rejected,
    }
}

impl Retryable for AwsError {
    fn retryable(&self) -> bool {
        self.failure.retryable()
    }
    fn kind(&self) -> &'static str {
        self.failure.kind()
    }
}

/// Wraps a value so that `Debug` and `Display` never show it (tokens, webhook URLs).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The only way to read the value: call sites that expose it are easy to audit.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_throttling_code_with_400_is_throttled() {
        assert_eq!(
            classify(Some("ThrottlingException"), 400),
            AwsFailure::Throttled
        );
        assert!(classify(Some("ThrottlingException"), 400).retryable());
    }

    #[test]
    fn classify_access_denied_is_not_retryable() {
        let f = classify(Some("AccessDeniedException"), 400);
        assert_eq!(f, AwsFailure::AccessDenied);
        assert!(!f.retryable());
    }

    #[test]
    fn classify_unknown_5xx_is_transient_and_4xx_rejected() {
        assert_eq!(classify(None, 503), AwsFailure::Transient);
        assert_eq!(
            classify(Some("ValidationException"), 400),
            AwsFailure::Rejected
        );
        assert_eq!(classify(None, 429), AwsFailure::Throttled);
    }

    #[test]
    fn lambda_error_type_names_retryability_and_kind() {
        let e = AwsError {
            service: "ssm",
            operation: "CreateOpsItem",
            failure: AwsFailure::Throttled,
            code: Some("ThrottlingException".into()),
            message: "Rate exceeded".into(),
        };
        assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
        assert_eq!(
            e.to_string(),
            "ssm CreateOpsItem failed (ThrottlingException): Rate exceeded"
        );
    }

    #[test]
    fn secret_debug_and_display_hide_value() {
        let s = Secret::new("xoxb-123".to_string());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "xoxb-123");
    }
}
