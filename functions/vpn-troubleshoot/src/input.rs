//! The runbook step's input: `{"VpnConnectionId": "vpn-...", "IncidentRecordArn":
//! "arn:...", "OpsItemId": "oi-...", "LookbackMinutes": 60}`, and in organization
//! mode `"AccountId": "111122223333", "Region": "eu-west-1"`: where the VPN is.
//!
//! SSM Automation passes parameters as strings and an unset optional parameter as an
//! empty string, so empty strings count as absent and numbers may come as text.

use serde_json::Value;
use shared::error::Retryable;
use shared::incident::IncidentRef;
use shared::text::truncate;
use shared::vpn::{InvalidVpnId, VpnConnectionId};

use crate::config::MAX_LOOKBACK_MINUTES;

/// A validated input.
#[derive(Debug, Clone, PartialEq)]
pub struct RunbookInput {
    pub vpn_id: VpnConnectionId,
    pub incident: Option<IncidentRef>,
    pub lookback_minutes: Option<u32>,
    /// The Slack thread key, when the caller's incident key differs from the built-in
    /// "VPN connection {VpnId} is DOWN".
    pub incident_key: Option<String>,
    /// The account the VPN is in (organization mode); absent: the function's own.
    pub account: Option<String>,
    /// The region the VPN is in; absent: the function's own.
    pub region: Option<String>,
}

/// Why the input was refused. Never retryable: the caller must change the input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("input must be a JSON object like {{\"VpnConnectionId\": \"vpn-...\", \"OpsItemId\": \"oi-...\"}}, got {0}")]
    NotAnObject(&'static str),
    #[error(
        "input has no VpnConnectionId (the VPN connection to diagnose, e.g. vpn-0a1b2c3d4e5f67890)"
    )]
    MissingVpnId,
    #[error(transparent)]
    InvalidVpnId(#[from] InvalidVpnId),
    #[error("IncidentRecordArn {0:?} is not an Incident Manager incident record ARN (arn:aws:ssm-incidents::<account>:incident-record/<plan>/<id>)")]
    InvalidIncidentRecordArn(String),
    #[error("OpsItemId {0:?} is not an OpsItem id (oi- followed by hexadecimal digits)")]
    InvalidOpsItemId(String),
    #[error(
        "input has both IncidentRecordArn and OpsItemId; give the one of the incident to report to"
    )]
    BothIncidentRefs,
    #[error("IncidentKey {key:?} belongs to account {key_account}, but AccountId is {account}: a diagnosis never reports on another account's incident")]
    AccountMismatch {
        key: String,
        key_account: String,
        account: String,
    },
    #[error(
        "AccountId {account} is not a member account this stack may diagnose (ALLOWED_ACCOUNTS)"
    )]
    AccountNotAllowed { account: String },
    #[error("{field} {value:?} is invalid: {reason}")]
    InvalidField {
        field: &'static str,
        value: String,
        reason: String,
    },
}

impl Retryable for InputError {
    fn retryable(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        "BadInput"
    }
}

/// Validates the event.
pub fn parse(event: &Value) -> Result<RunbookInput, InputError> {
    let obj = event
        .as_object()
        .ok_or(InputError::NotAnObject(json_kind(event)))?;
    let vpn =
        text(obj.get("VpnConnectionId"), "VpnConnectionId")?.ok_or(InputError::MissingVpnId)?;
    let vpn_id = VpnConnectionId::parse(&vpn)?;
    let incident = incident(obj)?;
    let lookback_minutes = match obj.get("LookbackMinutes") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(v) => Some(lookback(v)?),
    };
    let incident_key = text(obj.get("IncidentKey"), "IncidentKey")?.map(|k| truncate(&k, 500));
    let account = match text(obj.get("AccountId"), "AccountId")? {
        Some(a) if !shared::org::is_account_id(&a) => {
            return Err(InputError::InvalidField {
                field: "AccountId",
                value: truncate(&a, 40),
                reason: "expected a 12-digit account id".into(),
            })
        }
        a => a,
    };
    let region = match text(obj.get("Region"), "Region")? {
        Some(r) if !is_region(&r) => {
            return Err(InputError::InvalidField {
                field: "Region",
                value: truncate(&r, 40),
                reason: "expected a region code like eu-west-1".into(),
            })
        }
        r => r,
    };
    if let (Some(key), Some(account)) = (&incident_key, &account) {
        if let Some(owner) = shared::org::key_account(key).filter(|o| o != account) {
            return Err(InputError::AccountMismatch {
                key: truncate(key, 120),
                key_account: owner.to_string(),
                account: account.clone(),
            });
        }
    }
    Ok(RunbookInput {
        vpn_id,
        incident,
        lookback_minutes,
        incident_key,
        account,
        region,
    })
}

/// `eu-west-1`, `us-gov-west-1`, `ap-southeast-3`: lowercase words and a number.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// The incident reference of an event whose other fields may be invalid, so that a
/// refused input can still be reported on its incident.
pub fn incident_of(event: &Value) -> Option<IncidentRef> {
    event.as_object().and_then(|o| incident(o).ok().flatten())
}

fn incident(obj: &serde_json::Map<String, Value>) -> Result<Option<IncidentRef>, InputError> {
    let arn = text(obj.get("IncidentRecordArn"), "IncidentRecordArn")?;
    let ops = text(obj.get("OpsItemId"), "OpsItemId")?;
    match (arn, ops) {
        (Some(_), Some(_)) => Err(InputError::BothIncidentRefs),
        (Some(a), None) => match IncidentRef::parse(&a) {
            Some(r @ IncidentRef::IncidentManager(_)) => Ok(Some(r)),
            _ => Err(InputError::InvalidIncidentRecordArn(truncate(&a, 200))),
        },
        (None, Some(o)) => match IncidentRef::parse(&o) {
            Some(r @ IncidentRef::OpsCenter(_)) => Ok(Some(r)),
            _ => Err(InputError::InvalidOpsItemId(truncate(&o, 200))),
        },
        (None, None) => Ok(None),
    }
}

/// A string field; empty means absent; numbers are not names.
fn text(v: Option<&Value>, field: &'static str) -> Result<Option<String>, InputError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
        Some(other) => Err(InputError::InvalidField {
            field,
            value: truncate(&other.to_string(), 100),
            reason: format!("expected a string, got {}", json_kind(other)),
        }),
    }
}

fn lookback(v: &Value) -> Result<u32, InputError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (1..=u64::from(MAX_LOOKBACK_MINUTES)).contains(&n) => Ok(n as u32),
        _ => Err(InputError::InvalidField {
            field: "LookbackMinutes",
            value: truncate(&v.to_string(), 100),
            reason: format!("expected whole minutes from 1 to {MAX_LOOKBACK_MINUTES}"),
        }),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str = "arn:aws:ssm-incidents::123456789012:incident-record/vpn-plan/6ec4ba3e-0f5b-4e0a-9d3c-6a3f4c1c9d10";

    #[test]
    fn parse_runbook_input_with_incident_record() {
        let i = parse(&json!({"VpnConnectionId": "vpn-0a1b2c3d4e5f67890", "IncidentRecordArn": ARN, "LookbackMinutes": 90})).unwrap();
        assert_eq!(i.vpn_id.as_str(), "vpn-0a1b2c3d4e5f67890");
        assert_eq!(i.incident, Some(IncidentRef::IncidentManager(ARN.into())));
        assert_eq!(i.lookback_minutes, Some(90));
        assert_eq!(i.incident_key, None);
    }

    #[test]
    fn parse_ssm_style_strings_and_empty_optionals() {
        let i = parse(&json!({
            "VpnConnectionId": "vpn-0a1b2c3d",
            "IncidentRecordArn": "",
            "OpsItemId": "oi-0123456789ab",
            "LookbackMinutes": "30",
            "IncidentKey": ""
        }))
        .unwrap();
        assert_eq!(
            i.incident,
            Some(IncidentRef::OpsCenter("oi-0123456789ab".into()))
        );
        assert_eq!(i.lookback_minutes, Some(30));
        let manual =
            parse(&json!({"VpnConnectionId": "vpn-0a1b2c3d", "LookbackMinutes": ""})).unwrap();
        assert_eq!(manual.incident, None);
        assert_eq!(manual.lookback_minutes, None);
    }

    #[test]
    fn parse_refuses_with_specific_errors() {
        let cases = [
            (json!([1]), "input must be a JSON object"),
            (json!({}), "input has no VpnConnectionId"),
            (
                json!({"VpnConnectionId": ""}),
                "input has no VpnConnectionId",
            ),
            (
                json!({"VpnConnectionId": "vpn-12"}),
                "invalid VPN connection id \"vpn-12\"",
            ),
            (
                json!({"VpnConnectionId": 42}),
                "VpnConnectionId \"42\" is invalid: expected a string, got a number",
            ),
            (
                json!({"VpnConnectionId": "vpn-0a1b2c3d", "IncidentRecordArn": "oi-0123"}),
                "is not an Incident Manager incident record ARN",
            ),
            (
                json!({"VpnConnectionId": "vpn-0a1b2c3d", "OpsItemId": ARN}),
                "is not an OpsItem id",
            ),
            (
                json!({"VpnConnectionId": "vpn-0a1b2c3d", "OpsItemId": "oi-0123", "IncidentRecordArn": ARN}),
                "both IncidentRecordArn and OpsItemId",
            ),
            (
                json!({"VpnConnectionId": "vpn-0a1b2c3d", "LookbackMinutes": 5000}),
                "LookbackMinutes \"5000\" is invalid: expected whole minutes from 1 to 1440",
            ),
            (
                json!({"VpnConnectionId": "vpn-0a1b2c3d", "LookbackMinutes": -1}),
                "LookbackMinutes \"-1\" is invalid",
            ),
        ];
        for (event, want) in cases {
            let err = parse(&event).unwrap_err();
            assert!(err.to_string().contains(want), "{event}: {err}");
            assert_eq!(err.lambda_error_type(), "NonRetryable.BadInput");
        }
    }

    #[test]
    fn parse_member_account_and_region() {
        let i = parse(&json!({"VpnConnectionId": "vpn-0a1b2c3d", "AccountId": "111122223333", "Region": "eu-west-1",
                              "IncidentKey": "111122223333/VPN connection vpn-0a1b2c3d is DOWN"}))
        .unwrap();
        assert_eq!(i.account.as_deref(), Some("111122223333"));
        assert_eq!(i.region.as_deref(), Some("eu-west-1"));
        let none =
            parse(&json!({"VpnConnectionId": "vpn-0a1b2c3d", "AccountId": "", "Region": ""}))
                .unwrap();
        assert_eq!((none.account, none.region), (None, None));
        for (event, want) in [
            (
                json!({"VpnConnectionId": "vpn-0a1b2c3d", "AccountId": "1111"}),
                "AccountId \"1111\" is invalid: expected a 12-digit account id",
            ),
            (
                json!({"VpnConnectionId": "vpn-0a1b2c3d", "Region": "EU (Ireland)"}),
                "Region \"EU (Ireland)\" is invalid",
            ),
            (
                json!({"VpnConnectionId": "vpn-0a1b2c3d", "AccountId": "444455556666",
                       "IncidentKey": "111122223333/VPN connection vpn-0a1b2c3d is DOWN"}),
                "belongs to account 111122223333, but AccountId is 444455556666",
            ),
        ] {
            let e = parse(&event).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert!(!e.retryable());
        }
        assert!(is_region("us-gov-west-1") && is_region("ap-southeast-3") && !is_region("eu-west"));
    }

    #[test]
    fn sample_events_parse() {
        for (name, text) in [
            (
                "runbook-opsitem",
                include_str!("../events/runbook-opsitem.json"),
            ),
            (
                "runbook-incident-manager",
                include_str!("../events/runbook-incident-manager.json"),
            ),
            ("manual", include_str!("../events/manual.json")),
        ] {
            let event: Value = serde_json::from_str(text).unwrap();
            let i = parse(&event).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(i.vpn_id.as_str(), "vpn-0a1b2c3d4e5f67890", "{name}");
        }
    }

    #[test]
    fn incident_of_survives_a_bad_vpn_id() {
        let event = json!({"VpnConnectionId": "vpn-nothex!", "OpsItemId": "oi-0123456789ab"});
        assert!(parse(&event).is_err());
        assert_eq!(
            incident_of(&event),
            Some(IncidentRef::OpsCenter("oi-0123456789ab".into()))
        );
        assert_eq!(incident_of(&json!("x")), None);
    }
}
