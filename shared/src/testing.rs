//! Test support: SDK clients answered by `aws-smithy-mocks` rules.
//!
//! `aws_smithy_mocks::mock_client!` needs each service crate's `test-util` feature,
//! which would compile every SDK crate a second time (once for tests, once for the
//! binaries). [`mock_client!`](crate::mock_client) builds the same client from
//! public config setters instead.

pub use aws_smithy_mocks;

/// Builds a client of `$sdk` (e.g. `aws_sdk_ssm`) whose calls are answered by the
/// given rules. Default mode is `Sequential`: a request that matches no rule panics,
/// so each rule's `match_requests` is an assertion on what was sent.
#[macro_export]
macro_rules! mock_client {
    ($sdk:ident, $rules:expr) => {
        $crate::mock_client!(
            $sdk,
            $crate::testing::aws_smithy_mocks::RuleMode::Sequential,
            $rules
        )
    };
    ($sdk:ident, $mode:expr, $rules:expr) => {{
        let mut interceptor =
            $crate::testing::aws_smithy_mocks::MockResponseInterceptor::new().rule_mode($mode);
        for rule in $rules {
            interceptor = interceptor.with_rule(rule);
        }
        let config = $sdk::config::Config::builder()
            .behavior_version($sdk::config::BehaviorVersion::latest())
            .region($sdk::config::Region::new("eu-west-1"))
            .credentials_provider($sdk::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .http_client($crate::testing::aws_smithy_mocks::create_mock_http_client())
            .interceptor(interceptor)
            // Retries are tested explicitly; by default a mocked error is final.
            .retry_config($sdk::config::retry::RetryConfig::disabled())
            .build();
        $sdk::Client::from_conf(config)
    }};
}

/// Like [`mock_client!`](crate::mock_client) (sequential rules), with the answers
/// `lose` chooses replaced by a failure ([`LoseAnswers`]): the rule still served the
/// call (the service committed it), the caller never hears so.
#[macro_export]
macro_rules! mock_client_losing {
    ($sdk:ident, $rules:expr, $lose:expr) => {{
        let mut interceptor = $crate::testing::aws_smithy_mocks::MockResponseInterceptor::new()
            .rule_mode($crate::testing::aws_smithy_mocks::RuleMode::Sequential);
        for rule in $rules {
            interceptor = interceptor.with_rule(rule);
        }
        let config = $sdk::config::Config::builder()
            .behavior_version($sdk::config::BehaviorVersion::latest())
            .region($sdk::config::Region::new("eu-west-1"))
            .credentials_provider($sdk::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .http_client($crate::testing::aws_smithy_mocks::create_mock_http_client())
            .interceptor(interceptor)
            // After the mocks: it replaces the answer they gave.
            .interceptor($lose)
            .retry_config($sdk::config::retry::RetryConfig::disabled())
            .build();
        $sdk::Client::from_conf(config)
    }};
}

/// How a lost answer shows to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The attempt timed out (`SdkError::TimeoutError`): the SDK's attempt timeout
    /// fired while the service was still answering.
    Timeout,
    /// The connection broke after the request was sent (`SdkError::DispatchFailure`,
    /// I/O): a reset, or the connection closed without an answer.
    Reset,
}

/// An interceptor that loses the answers of chosen calls: `(operation, n, loss)` loses
/// the answer of the n-th call (1-based) of `operation` (e.g. `"TransactWriteItems"`).
/// The mock rules still serve those calls, so `num_calls` counts them as sent.
#[derive(Debug, Clone, Default)]
pub struct LoseAnswers {
    plan: std::sync::Arc<Vec<(&'static str, usize, Loss)>>,
    calls: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl LoseAnswers {
    pub fn new(plan: Vec<(&'static str, usize, Loss)>) -> LoseAnswers {
        LoseAnswers {
            plan: std::sync::Arc::new(plan),
            calls: Default::default(),
        }
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for LoseAnswers {
    fn name(&self) -> &'static str {
        "LoseAnswers"
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextMut<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use aws_smithy_runtime_api::client::orchestrator::{Metadata, OrchestratorError};
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let Some(op) = cfg.load::<Metadata>().map(|m| m.name().to_string()) else {
            return Ok(());
        };
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            let n = calls.entry(op.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if let Some((_, _, loss)) = self.plan.iter().find(|(o, k, _)| *o == op && *k == n) {
            let error = match loss {
                Loss::Timeout => {
                    OrchestratorError::timeout("the answer did not arrive in time".into())
                }
                Loss::Reset => OrchestratorError::connector(ConnectorError::io(
                    "connection reset by peer after the request was sent".into(),
                )),
            };
            context.inner_mut().set_output_or_error(Err(error));
        }
        Ok(())
    }
}

/// A rule answering `sts:AssumeRole` of `account`'s role `role` (session `session`) with
/// credentials whose access key is `key`, expiring at `expires_secs` (epoch seconds).
pub fn assumed_role_rule(
    account: &'static str,
    role: &'static str,
    session: &'static str,
    key: &'static str,
    expires_secs: i64,
) -> aws_smithy_mocks::Rule {
    aws_smithy_mocks::mock!(aws_sdk_sts::Client::assume_role)
        .match_requests(move |r| {
            r.role_arn() == Some(&format!("arn:aws:iam::{account}:role/{role}"))
                && r.role_session_name() == Some(session)
        })
        .then_output(move || {
            aws_sdk_sts::operation::assume_role::AssumeRoleOutput::builder()
                .credentials(
                    aws_sdk_sts::types::Credentials::builder()
                        .access_key_id(key)
                        .secret_access_key("secret")
                        .session_token("token")
                        .expiration(aws_smithy_types::DateTime::from_secs(expires_secs))
                        .build()
                        .expect("every required field is set"),
                )
                .build()
        })
}
