//! Site-to-site VPN tunnel-log records (CloudWatch Logs, JSON output format) and
//! what they say about IKE and DPD.
//!
//! A record looks like `{"event_timestamp": 1764064860, "details": "AWS tunnel
//! payload decryption was unsuccessful due to invalid Pre-shared Key",
//! "dpd_enabled": true, "nat_t_detected": false, "ike_phase1_state": "down",
//! "ike_phase2_state": "down", "tunnel_ip": "203.0.113.10"}`. The documentation also
//! names the fields `VpnLogCreationTimestamp`, `TunnelOutsideIPAddress`,
//! `TunnelDPDEnabled`, `TunnelCGWNATTDetectionStatus`, `TunnelIKEPhase1State`,
//! `TunnelIKEPhase2State`, `VpnLogDetail`; both spellings are read.
//!
//! The input comes from a log group anyone with write access can fill, so the parser
//! never panics: wrong types become `None`, long text is cut, an unparseable line is
//! an error value, and a timestamp may be epoch seconds, epoch milliseconds, or text.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::text::truncate;

/// Longest `details` text kept from one record.
pub const MAX_DETAILS_CHARS: usize = 500;
/// CloudWatch Logs events are at most 256 KiB; anything longer is not a tunnel log.
const MAX_LINE_BYTES: usize = 256 * 1024;

/// IKE phase state as the tunnel log reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IkeState {
    Established,
    Rekeying,
    Negotiating,
    Down,
    #[serde(other)]
    Unknown,
}

impl IkeState {
    pub fn parse(s: &str) -> IkeState {
        match s.trim().to_ascii_lowercase().as_str() {
            "established" | "up" => IkeState::Established,
            "rekeying" => IkeState::Rekeying,
            "negotiating" => IkeState::Negotiating,
            "down" => IkeState::Down,
            _ => IkeState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IkeState::Established => "established",
            IkeState::Rekeying => "rekeying",
            IkeState::Negotiating => "negotiating",
            IkeState::Down => "down",
            IkeState::Unknown => "unknown",
        }
    }

    /// Established or rekeying an established SA.
    pub fn is_up(self) -> bool {
        matches!(self, IkeState::Established | IkeState::Rekeying)
    }
}

/// What a record's `details` text reports, from the messages AWS documents
/// ("Contents of Site-to-Site VPN logs") and the IKEv2 notify types (RFC 7296).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogEvent {
    /// Invalid pre-shared key, AUTHENTICATION_FAILED.
    Phase1AuthFailure,
    /// No proposal chosen for the IKE SA (encryption, integrity, DH group, IKE version).
    Phase1ProposalMismatch,
    /// No proposal chosen for the IPsec (child) SA.
    Phase2ProposalMismatch,
    /// TS_UNACCEPTABLE: the traffic selectors (local/remote networks) differ.
    TrafficSelectorMismatch,
    /// The peer stopped answering dead peer detection.
    DpdTimeout,
    /// Anything else (state changes, DPD requests, rekeys).
    Other,
}

impl LogEvent {
    pub fn is_error(self) -> bool {
        self != LogEvent::Other
    }
}

/// One parsed tunnel-log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelLogRecord {
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub tunnel_ip: Option<String>,
    #[serde(default)]
    pub vpn_connection_id: Option<String>,
    #[serde(default)]
    pub details: String,
    #[serde(default)]
    pub dpd_enabled: Option<bool>,
    #[serde(default)]
    pub nat_t_detected: Option<bool>,
    #[serde(default)]
    pub ike_phase1_state: Option<IkeState>,
    #[serde(default)]
    pub ike_phase2_state: Option<IkeState>,
    pub event: LogEvent,
    /// The Logs Insights `@logStream`, when the record came from a query.
    #[serde(default)]
    pub log_stream: Option<String>,
}

/// Why a line or value is not a tunnel-log record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("longer than a CloudWatch Logs event ({0} bytes)")]
    TooLarge(usize),
    #[error("a JSON {0}, not an object")]
    NotAnObject(&'static str),
    #[error("no tunnel-log field (details, ike_phase1_state, ike_phase2_state)")]
    NotATunnelLog,
}

/// Parses one log line (the JSON text of a record).
pub fn parse_line(line: &str) -> Result<TunnelLogRecord, LogParseError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LogParseError::TooLarge(line.len()));
    }
    let value: Value = serde_json::from_str(line.trim())
        .map_err(|e| LogParseError::NotJson(truncate(&e.to_string(), 120)))?;
    parse_record(&value)
}

/// Parses one record given as a JSON value.
pub fn parse_record(value: &Value) -> Result<TunnelLogRecord, LogParseError> {
    let obj = match value {
        Value::Object(o) => o,
        Value::Array(_) => return Err(LogParseError::NotAnObject("array")),
        Value::String(_) => return Err(LogParseError::NotAnObject("string")),
        Value::Number(_) => return Err(LogParseError::NotAnObject("number")),
        Value::Bool(_) => return Err(LogParseError::NotAnObject("boolean")),
        Value::Null => return Err(LogParseError::NotAnObject("null")),
    };
    let details = field(obj, &["details", "VpnLogDetail"]).map(text);
    let p1 = field(obj, &["ike_phase1_state", "TunnelIKEPhase1State"]).and_then(state);
    let p2 = field(obj, &["ike_phase2_state", "TunnelIKEPhase2State"]).and_then(state);
    if details.is_none() && p1.is_none() && p2.is_none() {
        return Err(LogParseError::NotATunnelLog);
    }
    let details = details.unwrap_or_default();
    let event = classify_details(&details, p1);
    Ok(TunnelLogRecord {
        at: field(
            obj,
            &["event_timestamp", "VpnLogCreationTimestamp", "@timestamp"],
        )
        .and_then(timestamp),
        tunnel_ip: field(obj, &["tunnel_ip", "TunnelOutsideIPAddress"]).and_then(ip),
        vpn_connection_id: field(obj, &["vpn_connection_id", "VpnConnectionId"])
            .and_then(Value::as_str)
            .and_then(|s| super::VpnConnectionId::parse(s).ok())
            .map(String::from),
        details,
        dpd_enabled: field(obj, &["dpd_enabled", "TunnelDPDEnabled"]).and_then(boolean),
        nat_t_detected: field(obj, &["nat_t_detected", "TunnelCGWNATTDetectionStatus"])
            .and_then(boolean),
        ike_phase1_state: p1,
        ike_phase2_state: p2,
        event,
        log_stream: field(obj, &["@logStream"])
            .and_then(Value::as_str)
            .map(|s| truncate(s, 512)),
    })
}

fn field<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| obj.get(*n))
        .filter(|v| !v.is_null())
}

/// Any value as one line of text, control characters replaced, cut short.
fn text(v: &Value) -> String {
    let raw = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let cleaned: String = truncate(&raw, MAX_DETAILS_CHARS)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned.trim().to_string()
}

fn state(v: &Value) -> Option<IkeState> {
    v.as_str().map(IkeState::parse)
}

fn ip(v: &Value) -> Option<String> {
    let s = v.as_str()?.trim();
    s.parse::<IpAddr>().ok().map(|a| a.to_string())
}

fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Epoch seconds or milliseconds (numbers or digit strings; values from 1e11 on are
/// milliseconds: 1e11 seconds is the year 5138), RFC 3339, or `YYYY-MM-DD hh:mm:ss[.fff]`
/// in UTC (the Logs Insights `@timestamp` format).
fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                epoch(i as f64)
            } else {
                n.as_f64().and_then(epoch)
            }
        }
        Value::String(s) => {
            let s = s.trim();
            if s.len() > 64 {
                return None;
            }
            if let Ok(f) = s.parse::<f64>() {
                return epoch(f);
            }
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            [
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f UTC",
            ]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .map(|n| n.and_utc())
        }
        _ => None,
    }
}

fn epoch(value: f64) -> Option<DateTime<Utc>> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let millis = if value >= 1e11 { value } else { value * 1000.0 };
    // Beyond year 9999 chrono has no answer; the bound also keeps the cast exact.
    if millis > 253_402_300_799_000.0 {
        return None;
    }
    DateTime::from_timestamp_millis(millis as i64)
}

/// Classifies a record's `details` text. `phase1` (the record's phase 1 state) tells a
/// phase 2 "no proposal chosen" from a phase 1 one when the text does not say.
pub fn classify_details(details: &str, phase1: Option<IkeState>) -> LogEvent {
    let d = details.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| d.contains(w));
    if has(&[
        "declaring peer dead",
        "peer is not responsive",
        "peer timed out",
        "dpd timeout",
        "dpd timed out",
        "dpd time-out",
    ]) {
        LogEvent::DpdTimeout
    } else if has(&[
        "pre-shared key",
        "preshared key",
        "pre shared key",
        "authentication_failed",
        "authentication failed",
        "auth failed",
        "invalid psk",
        "psk mismatch",
    ]) {
        LogEvent::Phase1AuthFailure
    } else if has(&[
        "traffic selector",
        "ts_unacceptable",
        "invalid_selectors",
        "invalid selectors",
    ]) {
        LogEvent::TrafficSelectorMismatch
    } else if has(&[
        "no proposal",
        "no_proposal_chosen",
        "proposal mismatch",
        "invalid_ke_payload",
        "invalid ke payload",
    ]) {
        let phase2_words = has(&[
            "phase 2",
            "phase2",
            "child_sa",
            "child sa",
            "ipsec sa",
            "notifying with",
        ]);
        let phase1_words = has(&["phase 1", "phase1", "ike_sa", "ike sa", "by aws"]);
        if phase2_words && !phase1_words {
            LogEvent::Phase2ProposalMismatch
        } else if phase1_words {
            LogEvent::Phase1ProposalMismatch
        } else if phase1.is_some_and(IkeState::is_up) {
            LogEvent::Phase2ProposalMismatch
        } else {
            LogEvent::Phase1ProposalMismatch
        }
    } else {
        LogEvent::Other
    }
}

/// The tunnel a record belongs to: its `tunnel_ip` when that is one of `tunnel_ips`,
/// else the tunnel whose IP appears in its log stream name.
pub fn assign_tunnel<'a>(record: &TunnelLogRecord, tunnel_ips: &'a [String]) -> Option<&'a str> {
    if let Some(ip) = &record.tunnel_ip {
        return tunnel_ips.iter().find(|t| *t == ip).map(String::as_str);
    }
    let stream = record.log_stream.as_deref()?;
    tunnel_ips
        .iter()
        .map(String::as_str)
        .find(|ip| contains_ip(stream, ip))
}

/// True when `ip` appears in `s` not as part of a longer address (192.0.2.1 is not in
/// `vpn-x-192.0.2.10`).
fn contains_ip(s: &str, ip: &str) -> bool {
    s.match_indices(ip).any(|(i, _)| {
        let before = s[..i].chars().next_back();
        let after = s[i + ip.len()..].chars().next();
        let boundary =
            |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_hexdigit() || c == '.' || c == ':'));
        boundary(before) && boundary(after)
    })
}

/// Count and latest example of one kind of event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventStats {
    pub count: usize,
    pub last_at: Option<DateTime<Utc>>,
    pub last_details: String,
}

/// What the records of one tunnel say: last IKE states, DPD, and error events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelLogSummary {
    pub records: usize,
    pub last_at: Option<DateTime<Utc>>,
    pub last_phase1: Option<IkeState>,
    pub last_phase2: Option<IkeState>,
    pub dpd_enabled: Option<bool>,
    pub nat_t_detected: Option<bool>,
    pub events: BTreeMap<LogEvent, EventStats>,
}

impl TunnelLogSummary {
    /// Summarizes records (any order; records without a time count as oldest).
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a TunnelLogRecord>,
    ) -> TunnelLogSummary {
        let mut sorted: Vec<&TunnelLogRecord> = records.into_iter().collect();
        sorted.sort_by_key(|r| r.at);
        let mut s = TunnelLogSummary {
            records: sorted.len(),
            ..TunnelLogSummary::default()
        };
        for r in sorted {
            s.last_at = r.at.or(s.last_at);
            s.last_phase1 = r.ike_phase1_state.or(s.last_phase1);
            s.last_phase2 = r.ike_phase2_state.or(s.last_phase2);
            s.dpd_enabled = r.dpd_enabled.or(s.dpd_enabled);
            s.nat_t_detected = r.nat_t_detected.or(s.nat_t_detected);
            if r.event.is_error() {
                let e = s.events.entry(r.event).or_insert(EventStats {
                    count: 0,
                    last_at: None,
                    last_details: String::new(),
                });
                e.count += 1;
                e.last_at = r.at.or(e.last_at);
                e.last_details = r.details.clone();
            }
        }
        s
    }

    pub fn count(&self, event: LogEvent) -> usize {
        self.events.get(&event).map_or(0, |e| e.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_line_reads_documented_record() {
        let r = parse_line(
            r#"{"event_timestamp": 1764064860, "details": "AWS tunnel payload decryption was unsuccessful due to invalid Pre-shared Key", "dpd_enabled": true, "nat_t_detected": false, "ike_phase1_state": "Down", "ike_phase2_state": "down", "tunnel_ip": "203.0.113.10"}"#,
        )
        .unwrap();
        assert_eq!(r.at, Some("2025-11-25T10:01:00Z".parse().unwrap()));
        assert_eq!(r.tunnel_ip.as_deref(), Some("203.0.113.10"));
        assert_eq!(r.event, LogEvent::Phase1AuthFailure);
        assert_eq!(r.ike_phase1_state, Some(IkeState::Down));
        assert_eq!(r.dpd_enabled, Some(true));
        assert_eq!(r.nat_t_detected, Some(false));
    }

    #[test]
    fn timestamps_in_seconds_millis_and_text_agree() {
        let want: DateTime<Utc> = "2025-11-25T10:01:00Z".parse().unwrap();
        for ts in [
            json!(1764064860),
            json!(1764064860000_i64),
            json!(1764064860.0),
            json!("1764064860000"),
            json!("2025-11-25T10:01:00Z"),
            json!("2025-11-25T11:01:00+01:00"),
            json!("2025-11-25 10:01:00.000"),
        ] {
            let r = parse_record(&json!({"details": "x", "event_timestamp": ts})).unwrap();
            assert_eq!(r.at, Some(want), "{ts}");
        }
        for bad in [
            json!(-5),
            json!(1e300),
            json!("yesterday"),
            json!(true),
            json!("9".repeat(80)),
        ] {
            let r = parse_record(&json!({"details": "x", "event_timestamp": bad})).unwrap();
            assert_eq!(r.at, None, "{bad}");
        }
    }

    #[test]
    fn documented_field_names_are_read_too() {
        let r = parse_record(&json!({
            "VpnLogCreationTimestamp": "2025-11-25 10:01:00",
            "TunnelOutsideIPAddress": "203.0.113.11",
            "TunnelDPDEnabled": "True",
            "TunnelCGWNATTDetectionStatus": "False",
            "TunnelIKEPhase1State": "Established",
            "TunnelIKEPhase2State": "Negotiating",
            "VpnLogDetail": "No Proposal Match Found. Notifying with \"No proposal chosen\""
        }))
        .unwrap();
        assert_eq!(r.tunnel_ip.as_deref(), Some("203.0.113.11"));
        assert_eq!(r.dpd_enabled, Some(true));
        assert_eq!(r.nat_t_detected, Some(false));
        assert_eq!(r.ike_phase2_state, Some(IkeState::Negotiating));
        assert_eq!(r.event, LogEvent::Phase2ProposalMismatch);
    }

    #[test]
    fn hostile_values_become_none_or_errors() {
        assert_eq!(
            parse_line("not json")
                .unwrap_err()
                .to_string()
                .split(':')
                .next(),
            Some("not JSON")
        );
        assert_eq!(
            parse_line("[1,2]"),
            Err(LogParseError::NotAnObject("array"))
        );
        assert_eq!(parse_line("null"), Err(LogParseError::NotAnObject("null")));
        assert_eq!(
            parse_line(r#"{"foo": 1}"#),
            Err(LogParseError::NotATunnelLog)
        );
        assert!(matches!(
            parse_line(&"x".repeat(300_000)),
            Err(LogParseError::TooLarge(_))
        ));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(parse_line(&deep), Err(LogParseError::NotJson(_))));
        let r = parse_record(&json!({
            "details": {"nested": ["a\nb"]},
            "tunnel_ip": "203.0.113.10; rm -rf /",
            "dpd_enabled": "perhaps",
            "ike_phase1_state": 7,
            "vpn_connection_id": "vpn-<script>"
        }))
        .unwrap();
        assert_eq!(r.tunnel_ip, None);
        assert_eq!(r.dpd_enabled, None);
        assert_eq!(r.ike_phase1_state, None);
        assert_eq!(r.vpn_connection_id, None);
        assert!(!r.details.contains('\n'));
        let long = parse_record(&json!({"details": "é".repeat(5000)})).unwrap();
        assert_eq!(long.details.chars().count(), MAX_DETAILS_CHARS);
    }

    #[test]
    fn classify_documented_messages() {
        let cases = [
            (
                "Peer is not responsive - Declaring peer dead",
                None,
                LogEvent::DpdTimeout,
            ),
            (
                "Peer timed out - Declaring peer dead",
                None,
                LogEvent::DpdTimeout,
            ),
            (
                "AWS tunnel payload decryption was unsuccessful due to invalid Pre-shared Key",
                None,
                LogEvent::Phase1AuthFailure,
            ),
            (
                "AWS tunnel received AUTHENTICATION_FAILED notify",
                None,
                LogEvent::Phase1AuthFailure,
            ),
            (
                "No Proposal Match Found by AWS",
                None,
                LogEvent::Phase1ProposalMismatch,
            ),
            (
                "No Proposal Match Found. Notifying with \"No proposal chosen\"",
                Some(IkeState::Established),
                LogEvent::Phase2ProposalMismatch,
            ),
            (
                "NO_PROPOSAL_CHOSEN",
                Some(IkeState::Established),
                LogEvent::Phase2ProposalMismatch,
            ),
            (
                "NO_PROPOSAL_CHOSEN",
                Some(IkeState::Negotiating),
                LogEvent::Phase1ProposalMismatch,
            ),
            (
                "received INVALID_KE_PAYLOAD for IKE_SA",
                None,
                LogEvent::Phase1ProposalMismatch,
            ),
            (
                "AWS tunnel received TS_UNACCEPTABLE: traffic selectors do not match",
                None,
                LogEvent::TrafficSelectorMismatch,
            ),
            ("Sending DPD request", None, LogEvent::Other),
            ("", None, LogEvent::Other),
        ];
        for (details, p1, want) in cases {
            assert_eq!(classify_details(details, p1), want, "{details}");
        }
    }

    #[test]
    fn assign_tunnel_by_ip_then_log_stream_with_boundaries() {
        let ips = vec!["192.0.2.1".to_string(), "192.0.2.10".to_string()];
        let mut r = parse_record(&json!({"details": "x", "tunnel_ip": "192.0.2.10"})).unwrap();
        assert_eq!(assign_tunnel(&r, &ips), Some("192.0.2.10"));
        r.tunnel_ip = Some("198.51.100.1".into());
        assert_eq!(assign_tunnel(&r, &ips), None);
        r.tunnel_ip = None;
        r.log_stream = Some("vpn-0a1b2c3d-192.0.2.10".into());
        assert_eq!(assign_tunnel(&r, &ips), Some("192.0.2.10"));
        r.log_stream = Some("vpn-0a1b2c3d-192.0.2.1".into());
        assert_eq!(assign_tunnel(&r, &ips), Some("192.0.2.1"));
        r.log_stream = Some("other".into());
        assert_eq!(assign_tunnel(&r, &ips), None);
    }

    #[test]
    fn summary_takes_latest_states_and_counts_errors() {
        let lines = [
            r#"{"event_timestamp": 1764064920, "details": "AWS tunnel payload decryption was unsuccessful due to invalid Pre-shared Key", "ike_phase1_state": "down", "ike_phase2_state": "down"}"#,
            r#"{"event_timestamp": 1764064800, "details": "IKE SA established", "ike_phase1_state": "established", "ike_phase2_state": "established", "dpd_enabled": true}"#,
            r#"{"event_timestamp": 1764064860, "details": "AWS tunnel payload decryption was unsuccessful due to invalid Pre-shared Key", "ike_phase1_state": "negotiating"}"#,
        ];
        let records: Vec<TunnelLogRecord> = lines.iter().map(|l| parse_line(l).unwrap()).collect();
        let s = TunnelLogSummary::from_records(&records);
        assert_eq!(s.records, 3);
        assert_eq!(s.last_phase1, Some(IkeState::Down));
        assert_eq!(s.last_phase2, Some(IkeState::Down));
        assert_eq!(s.dpd_enabled, Some(true));
        assert_eq!(s.count(LogEvent::Phase1AuthFailure), 2);
        assert_eq!(
            s.events[&LogEvent::Phase1AuthFailure].last_at,
            Some("2025-11-25T10:02:00Z".parse().unwrap())
        );
        assert_eq!(s.count(LogEvent::DpdTimeout), 0);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                ".{0,40}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("details".to_string()),
                            Just("event_timestamp".to_string()),
                            Just("tunnel_ip".to_string()),
                            Just("ike_phase1_state".to_string()),
                            Just("dpd_enabled".to_string()),
                            ".{0,8}"
                        ],
                        inner,
                        0..6
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn parse_never_panics_on_any_text(s in ".{0,300}") {
                let _ = parse_line(&s);
            }

            #[test]
            fn parse_never_panics_on_any_json(v in json_value()) {
                if let Ok(r) = parse_record(&v) {
                    prop_assert!(r.details.chars().count() <= MAX_DETAILS_CHARS);
                }
            }
        }
    }
}
