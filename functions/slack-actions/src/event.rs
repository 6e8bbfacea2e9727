//! The three event shapes slack-actions receives, told apart without failing on
//! anything unexpected:
//!
//! 1. a Lambda Function URL request (payload format 2.0): Slack's slash command or
//!    interactivity POST, with its signature headers;
//! 2. an SQS batch from the actions queue: changes queued by (1);
//! 3. an EventBridge Scheduler one-time schedule's input:
//!    `{"escalation": {"incidentKey": "...", "attempt": N}}`.
//!
//! Own serde types rather than `aws_lambda_events`: the three shapes need a handful of
//! fields, and the crate's `sqs` feature pulls `serde_with`, `darling` and `jiff` into
//! every build of the workspace.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::error::Retryable;

/// Slack's payloads are a few KiB; anything much larger is not Slack.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// One invocation's event.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Url(UrlRequest),
    Queue(SqsEvent),
    Escalation(EscalationEvent),
}

/// An event none of the three shapes accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event is not a Function URL request, an SQS batch or an escalation schedule ({0})")]
    Unknown(String),
    #[error("{shape} event is malformed: {reason}")]
    Malformed { shape: &'static str, reason: String },
}

impl Retryable for EventError {
    fn retryable(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        "BadInput"
    }
}

/// Tells the shapes apart by their distinctive keys; the content is checked by serde.
pub fn classify(event: Value) -> Result<Incoming, EventError> {
    let Value::Object(map) = &event else {
        return Err(EventError::Unknown("not a JSON object".into()));
    };
    let malformed = |shape: &'static str, e: serde_json::Error| EventError::Malformed {
        shape,
        reason: shared::text::truncate(&e.to_string(), 200),
    };
    if map.contains_key("escalation") {
        #[derive(Deserialize)]
        struct Envelope {
            escalation: EscalationEvent,
        }
        let e: Envelope =
            serde_json::from_value(event).map_err(|e| malformed("escalation schedule", e))?;
        return Ok(Incoming::Escalation(e.escalation));
    }
    if map.contains_key("Records") {
        let batch: SqsEvent = serde_json::from_value(event).map_err(|e| malformed("SQS", e))?;
        if let Some(other) = batch
            .records
            .iter()
            .find(|r| r.event_source.as_deref().is_some_and(|s| s != "aws:sqs"))
        {
            return Err(EventError::Malformed {
                shape: "SQS",
                reason: format!(
                    "record from {:?}, not aws:sqs",
                    other.event_source.as_deref().unwrap_or_default()
                ),
            });
        }
        return Ok(Incoming::Queue(batch));
    }
    if map.contains_key("requestContext") {
        let req: UrlRequest =
            serde_json::from_value(event).map_err(|e| malformed("Function URL", e))?;
        return Ok(Incoming::Url(req));
    }
    let mut keys: Vec<&str> = map.keys().map(String::as_str).take(8).collect();
    keys.sort_unstable();
    Err(EventError::Unknown(format!("keys: {}", keys.join(", "))))
}

// ------------------------------------------------------------------ Function URL

/// A Function URL request (payload format 2.0), the parts Slack's POST uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlRequest {
    /// Header names as Lambda gives them (lowercase for Function URLs; looked up
    /// case-insensitively anyway).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub is_base64_encoded: bool,
    pub request_context: RequestContext,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    pub http: HttpContext,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpContext {
    pub method: String,
    #[serde(default)]
    pub path: Option<String>,
}

/// Why a request's body cannot be read (answered 400 or 413, nothing logged of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body is not valid base64")]
    Base64,
    #[error("request body is {0} bytes, more than {MAX_BODY_BYTES}")]
    TooLarge(usize),
}

impl UrlRequest {
    /// A header's value, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body exactly as Slack sent it (the signature covers these bytes).
    pub fn body_bytes(&self) -> Result<Vec<u8>, BodyError> {
        let raw = self.body.as_deref().unwrap_or_default();
        let bytes = if self.is_base64_encoded {
            base64::engine::general_purpose::STANDARD
                .decode(raw.as_bytes())
                .map_err(|_| BodyError::Base64)?
        } else {
            raw.as_bytes().to_vec()
        };
        if bytes.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge(bytes.len()));
        }
        Ok(bytes)
    }
}

/// The Function URL response (payload format 2.0).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlResponse {
    pub status_code: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub is_base64_encoded: bool,
}

impl UrlResponse {
    /// A JSON answer (Slack shows a slash command's JSON answer to the user).
    pub fn json(status_code: u16, body: &Value) -> UrlResponse {
        UrlResponse {
            status_code,
            headers: BTreeMap::from([(
                "content-type".to_string(),
                "application/json; charset=utf-8".to_string(),
            )]),
            body: body.to_string(),
            is_base64_encoded: false,
        }
    }

    /// A plain-text answer with a fixed body (errors: never echo the request).
    pub fn text(status_code: u16, body: &str) -> UrlResponse {
        UrlResponse {
            status_code,
            headers: BTreeMap::from([(
                "content-type".to_string(),
                "text/plain; charset=utf-8".to_string(),
            )]),
            body: body.to_string(),
            is_base64_encoded: false,
        }
    }

    /// `200` with an empty body: Slack's acknowledgement of a button press or a
    /// modal submission (closes the modal).
    pub fn ack() -> UrlResponse {
        UrlResponse {
            status_code: 200,
            headers: BTreeMap::new(),
            body: String::new(),
            is_base64_encoded: false,
        }
    }
}

// ------------------------------------------------------------------ SQS

/// An SQS batch as Lambda's event source mapping delivers it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SqsRecord>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    pub message_id: String,
    pub body: String,
    #[serde(default)]
    pub event_source: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl SqsRecord {
    /// How many times SQS has handed this message out (1 the first time).
    pub fn receive_count(&self) -> u32 {
        self.attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }
}

/// The partial batch response (`ReportBatchItemFailures`): only these messages
/// return to the queue (and, after `maxReceiveCount`, to its dead-letter queue).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFailure {
    pub item_identifier: String,
}

// ------------------------------------------------------------------ Scheduler

/// The input of an escalation schedule: which incident, which attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EscalationEvent {
    pub incident_key: String,
    pub attempt: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url_event(body: &str, b64: bool) -> Value {
        json!({
            "version": "2.0", "rawPath": "/", "rawQueryString": "",
            "headers": {"content-type": "application/x-www-form-urlencoded",
                        "X-Slack-Signature": "v0=abc", "x-slack-request-timestamp": "1531420618"},
            "requestContext": {"http": {"method": "POST", "path": "/"}, "timeEpoch": 1531420618000u64},
            "body": body, "isBase64Encoded": b64
        })
    }

    #[test]
    fn classify_function_url_request_reads_headers_case_insensitively() {
        let Incoming::Url(req) = classify(url_event("command=%2Fincident", false)).unwrap() else {
            panic!("not a URL request")
        };
        assert_eq!(req.header("x-slack-signature"), Some("v0=abc"));
        assert_eq!(req.header("X-Slack-Request-Timestamp"), Some("1531420618"));
        assert_eq!(req.header("x-missing"), None);
        assert_eq!(req.request_context.http.method, "POST");
        assert_eq!(req.body_bytes().unwrap(), b"command=%2Fincident");
    }

    #[test]
    fn base64_body_is_decoded_to_the_signed_bytes() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("token=x&text=list");
        let Incoming::Url(req) = classify(url_event(&encoded, true)).unwrap() else {
            panic!("not a URL request")
        };
        assert_eq!(req.body_bytes().unwrap(), b"token=x&text=list");
    }

    #[test]
    fn bad_base64_and_oversized_bodies_are_refused() {
        let Incoming::Url(req) = classify(url_event("%%%not-base64", true)).unwrap() else {
            panic!()
        };
        assert_eq!(req.body_bytes(), Err(BodyError::Base64));
        let big = "a".repeat(MAX_BODY_BYTES + 1);
        let Incoming::Url(req) = classify(url_event(&big, false)).unwrap() else {
            panic!()
        };
        assert_eq!(
            req.body_bytes(),
            Err(BodyError::TooLarge(MAX_BODY_BYTES + 1))
        );
    }

    #[test]
    fn classify_sqs_batch_and_receive_count() {
        let ev = json!({"Records": [
            {"messageId": "m1", "receiptHandle": "h", "body": "{}", "eventSource": "aws:sqs",
             "attributes": {"ApproximateReceiveCount": "3"}},
            {"messageId": "m2", "body": "{}"}]});
        let Incoming::Queue(batch) = classify(ev).unwrap() else {
            panic!("not SQS")
        };
        assert_eq!(batch.records.len(), 2);
        assert_eq!(batch.records[0].receive_count(), 3);
        assert_eq!(batch.records[1].receive_count(), 1);
    }

    #[test]
    fn classify_refuses_sns_records() {
        let ev = json!({"Records": [{"messageId": "m1", "body": "x", "eventSource": "aws:sns"}]});
        assert_eq!(
            classify(ev),
            Err(EventError::Malformed {
                shape: "SQS",
                reason: "record from \"aws:sns\", not aws:sqs".into()
            })
        );
    }

    #[test]
    fn classify_escalation_schedule_input() {
        let ev =
            json!({"escalation": {"incidentKey": "VPN connection vpn-1 is DOWN", "attempt": 2}});
        assert_eq!(
            classify(ev).unwrap(),
            Incoming::Escalation(EscalationEvent {
                incident_key: "VPN connection vpn-1 is DOWN".into(),
                attempt: 2
            })
        );
        let bad = json!({"escalation": {"incidentKey": "k"}});
        assert!(matches!(
            classify(bad),
            Err(EventError::Malformed {
                shape: "escalation schedule",
                ..
            })
        ));
    }

    #[test]
    fn classify_unknown_names_the_keys_only() {
        assert_eq!(
            classify(json!({"b": 1, "a": "secret-value"})),
            Err(EventError::Unknown("keys: a, b".into()))
        );
        assert_eq!(
            classify(json!([1])),
            Err(EventError::Unknown("not a JSON object".into()))
        );
    }

    #[test]
    fn responses_serialize_in_payload_format_2() {
        let r = UrlResponse::text(401, "invalid request");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"statusCode": 401, "headers": {"content-type": "text/plain; charset=utf-8"},
                   "body": "invalid request", "isBase64Encoded": false})
        );
        let b = BatchResponse {
            batch_item_failures: vec![ItemFailure {
                item_identifier: "m2".into(),
            }],
        };
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({"batchItemFailures": [{"itemIdentifier": "m2"}]})
        );
    }
}
