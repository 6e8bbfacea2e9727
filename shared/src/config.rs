//! Reading configuration from the environment, once, at start-up.
//!
//! Each function has its own typed config struct built from an [`Env`]; every
//! failure names the variable and, for a bad value, the value (cut short) and what
//! was expected. Environment variables hold names and ARNs, never secret values:
//! secrets are fetched from Secrets Manager by the function that needs them.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use crate::error::Retryable;
use crate::text::truncate;

/// A configuration problem found at start-up. Never retryable: the deployment must change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: environment variable {var} is not set ({expected})")]
    Missing { var: String, expected: String },
    #[error("configuration: environment variable {var}={value:?} is invalid: {reason}")]
    Invalid {
        var: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    pub fn invalid(var: &str, value: &str, reason: impl Display) -> Self {
        ConfigError::Invalid {
            var: var.to_string(),
            value: truncate(value, 200),
            reason: reason.to_string(),
        }
    }
}

impl Retryable for ConfigError {
    fn retryable(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        "BadConfig"
    }
}

/// A source of variables: the process environment in production, a map in tests.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// Snapshot of the process environment.
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment made of the given pairs (tests, tools).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value, if set and not blank.
    pub fn optional(&self, var: &str) -> Option<String> {
        self.vars
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// The value, or an error saying what the variable should hold.
    pub fn required(&self, var: &str, expected: &str) -> Result<String, ConfigError> {
        self.optional(var).ok_or_else(|| ConfigError::Missing {
            var: var.to_string(),
            expected: expected.to_string(),
        })
    }

    /// Parses the value with `FromStr`, or returns `default` when unset.
    pub fn parse_or<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.optional(var) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| ConfigError::invalid(var, &v, e)),
        }
    }

    /// A boolean flag: `true`/`false`, `1`/`0`, `yes`/`no` (any case); `default` when unset.
    pub fn flag(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(var) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::invalid(var, &v, "expected true or false")),
            },
        }
    }

    /// An http(s) URL (a service endpoint such as the Slack API); `default` when unset.
    pub fn http_url(&self, var: &str, default: &str) -> Result<String, ConfigError> {
        let url = self.optional(var).unwrap_or_else(|| default.to_string());
        if url.starts_with("https://") || url.starts_with("http://") {
            Ok(url)
        } else {
            Err(ConfigError::invalid(var, &url, "expected an http(s) URL"))
        }
    }

    /// A required ARN, checked for the `arn:` prefix and the expected service.
    pub fn arn(&self, var: &str, service: &str) -> Result<String, ConfigError> {
        let v = self.required(var, &format!("the ARN of a {service} resource"))?;
        check_arn(var, &v, service)?;
        Ok(v)
    }

    /// An optional ARN, checked like [`Env::arn`] when set.
    pub fn optional_arn(&self, var: &str, service: &str) -> Result<Option<String>, ConfigError> {
        match self.optional(var) {
            None => Ok(None),
            Some(v) => {
                check_arn(var, &v, service)?;
                Ok(Some(v))
            }
        }
    }
}

fn check_arn(var: &str, value: &str, service: &str) -> Result<(), ConfigError> {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    if parts.len() == 6 && parts[0] == "arn" && parts[2] == service {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            var,
            value,
            format!("expected an ARN of the form arn:<partition>:{service}:<region>:<account>:<resource>"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_missing_names_the_variable() {
        let env = Env::from_pairs([("OTHER", "x")]);
        let err = env.required("TOPIC_ARN", "the topic ARN").unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration: environment variable TOPIC_ARN is not set (the topic ARN)"
        );
        assert!(!err.retryable());
    }

    #[test]
    fn blank_value_counts_as_unset() {
        let env = Env::from_pairs([("X", "  ")]);
        assert_eq!(env.optional("X"), None);
    }

    #[test]
    fn parse_or_bad_number_names_variable_and_value() {
        let env = Env::from_pairs([("LOOKBACK_MINUTES", "ten")]);
        let err = env.parse_or::<u32>("LOOKBACK_MINUTES", 30).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration: environment variable LOOKBACK_MINUTES=\"ten\" is invalid: invalid digit found in string"
        );
        assert_eq!(
            Env::default().parse_or::<u32>("LOOKBACK_MINUTES", 30),
            Ok(30)
        );
    }

    #[test]
    fn flag_accepts_common_spellings_and_rejects_others() {
        let env = Env::from_pairs([("A", "Yes"), ("B", "0"), ("C", "maybe")]);
        assert_eq!(env.flag("A", false), Ok(true));
        assert_eq!(env.flag("B", true), Ok(false));
        assert!(env
            .flag("C", false)
            .unwrap_err()
            .to_string()
            .contains("C=\"maybe\""));
        assert_eq!(env.flag("D", true), Ok(true));
    }

    #[test]
    fn http_url_defaults_and_rejects_other_schemes() {
        let env = Env::from_pairs([("LOCAL", " http://127.0.0.1:9000/api "), ("BAD", "ftp://x")]);
        assert_eq!(
            env.http_url("LOCAL", "https://slack.com/api").as_deref(),
            Ok("http://127.0.0.1:9000/api")
        );
        assert_eq!(
            env.http_url("UNSET", "https://slack.com/api").as_deref(),
            Ok("https://slack.com/api")
        );
        let err = env.http_url("BAD", "https://slack.com/api").unwrap_err();
        assert!(err.to_string().contains("BAD=\"ftp://x\""), "{err}");
        assert!(err.to_string().contains("expected an http(s) URL"), "{err}");
    }

    #[test]
    fn arn_checks_service() {
        let env = Env::from_pairs([
            ("T", "arn:aws:sns:eu-west-1:123456789012:topic"),
            ("U", "arn:aws:sqs:eu-west-1:123456789012:q"),
        ]);
        assert!(env.arn("T", "sns").is_ok());
        let err = env.arn("U", "sns").unwrap_err().to_string();
        assert!(err.contains("U=\"arn:aws:sqs"), "{err}");
        assert!(env.optional_arn("V", "sns").unwrap().is_none());
    }
}
