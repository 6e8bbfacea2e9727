//! The two incident backends behind [`IncidentBackend`](crate::incident::IncidentBackend):
//! OpsCenter (the default: Incident Manager is closed to new customers since
//! 2025-11-07) and Incident Manager, chosen by `INCIDENT_BACKEND`.
//!
//! Both are adapters over one SDK client each; the lifecycle decisions (open,
//! escalate, resolve) are made by alarm-to-incident. Both are idempotent where AWS
//! allows it: client tokens derived from what is being done (never random), so a
//! retried invocation repeats the same request instead of doing the work twice.

#[cfg(feature = "aws")]
mod incident_manager;
#[cfg(feature = "aws")]
mod opscenter;

use std::fmt;

#[cfg(feature = "aws")]
use aws_config::SdkConfig;

#[cfg(feature = "aws")]
pub use incident_manager::IncidentManagerBackend;
#[cfg(feature = "aws")]
pub use opscenter::OpsCenterBackend;

use crate::config::{ConfigError, Env};
#[cfg(feature = "aws")]
use crate::hash::token_uuid;
#[cfg(feature = "aws")]
use crate::incident::{IncidentBackend, IncidentRef, Note};

/// The environment variable choosing the backend.
pub const BACKEND_VAR: &str = "INCIDENT_BACKEND";

/// Which incident backend a deployment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// AWS Systems Manager OpsCenter (`CreateOpsItem`); the default.
    #[default]
    OpsCenter,
    /// AWS Systems Manager Incident Manager (`StartIncident` with a response plan).
    IncidentManager,
}

impl BackendKind {
    /// Reads `INCIDENT_BACKEND`: `OpsCenter` (default when unset) or `IncidentManager`,
    /// in any case, with or without separators (`incident-manager`, `opscenter`).
    pub fn from_env(env: &Env) -> Result<BackendKind, ConfigError> {
        match env.optional(BACKEND_VAR) {
            None => Ok(BackendKind::OpsCenter),
            Some(v) => v
                .parse()
                .map_err(|e: String| ConfigError::invalid(BACKEND_VAR, &v, e)),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::OpsCenter => "OpsCenter",
            BackendKind::IncidentManager => "IncidentManager",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match compact.as_str() {
            "opscenter" => Ok(BackendKind::OpsCenter),
            "incidentmanager" => Ok(BackendKind::IncidentManager),
            _ => Err("expected OpsCenter or IncidentManager".to_string()),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds the backend of `kind` from the SDK configuration loaded once in `main`.
/// `response_plan_arn` is needed by Incident Manager to open incidents only; notes,
/// impact changes and resolution work without it (vpn-troubleshoot passes `None`).
#[cfg(feature = "aws")]
pub fn from_sdk_config(
    kind: BackendKind,
    sdk: &SdkConfig,
    response_plan_arn: Option<String>,
) -> Box<dyn IncidentBackend> {
    match kind {
        BackendKind::OpsCenter => Box::new(OpsCenterBackend::new(aws_sdk_ssm::Client::new(sdk))),
        BackendKind::IncidentManager => Box::new(IncidentManagerBackend::new(
            aws_sdk_ssmincidents::Client::new(sdk),
            response_plan_arn,
        )),
    }
}

/// Reads `INCIDENT_BACKEND` and builds that backend (see [`from_sdk_config`]).
#[cfg(feature = "aws")]
pub fn from_env(
    env: &Env,
    sdk: &SdkConfig,
    response_plan_arn: Option<String>,
) -> Result<Box<dyn IncidentBackend>, ConfigError> {
    Ok(from_sdk_config(
        BackendKind::from_env(env)?,
        sdk,
        response_plan_arn,
    ))
}

/// The idempotency token of a note on an incident: the same note (same incident,
/// time and title) written twice is one timeline entry.
#[cfg(feature = "aws")]
pub(crate) fn note_token(incident: &IncidentRef, action: &str, note: &Note) -> String {
    let at = note.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    token_uuid(&[incident.id(), action, &at, &note.title])
}

/// A note as the JSON object stored with the incident: title, text, time, data.
#[cfg(feature = "aws")]
pub(crate) fn note_json(note: &Note, max_text_chars: usize) -> String {
    serde_json::json!({
        "title": note.title,
        "text": crate::text::truncate(&note.text, max_text_chars),
        "at": note.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": note.data,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_kind_defaults_to_opscenter_and_parses_spellings() {
        assert_eq!(
            BackendKind::from_env(&Env::default()),
            Ok(BackendKind::OpsCenter)
        );
        for v in ["IncidentManager", "incident-manager", "INCIDENT_MANAGER"] {
            let env = Env::from_pairs([(BACKEND_VAR, v)]);
            assert_eq!(
                BackendKind::from_env(&env),
                Ok(BackendKind::IncidentManager),
                "{v}"
            );
        }
        let env = Env::from_pairs([(BACKEND_VAR, "opscenter")]);
        assert_eq!(BackendKind::from_env(&env), Ok(BackendKind::OpsCenter));
    }

    #[test]
    fn backend_kind_rejects_unknown_value_naming_variable() {
        let env = Env::from_pairs([(BACKEND_VAR, "PagerDuty")]);
        let err = BackendKind::from_env(&env).unwrap_err().to_string();
        assert_eq!(
            err,
            "configuration: environment variable INCIDENT_BACKEND=\"PagerDuty\" is invalid: expected OpsCenter or IncidentManager"
        );
    }
}
