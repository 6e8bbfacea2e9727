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
