//! The Slack Web API calls slack-actions makes, and answers through `response_url`:
//!
//! - `views.open` (the Add-note modal; the `trigger_id` expires 3 s after the click,
//!   so it is called at once, in the request);
//! - `usergroups.users.list` (is the user in a group the action policy names?);
//! - a POST to the interaction's `response_url` (ephemeral replies and outcomes).
//!
//! One attempt each, with a short timeout: the request path must answer Slack within
//! 3 s, and the queue worker is retried by SQS. Tokens and response URLs never reach
//! errors or logs; Slack's error code does, when it looks like one.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use shared::error::{Retryable, Secret};

/// Longest single call.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(2500);

/// A failed Slack call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackCallError {
    #[error("Slack {operation}: HTTP {status}")]
    Http {
        operation: &'static str,
        status: u16,
    },
    #[error("Slack {operation}: error {code}")]
    Api {
        operation: &'static str,
        code: String,
    },
    #[error("Slack {operation}: {what}")]
    Transport {
        operation: &'static str,
        what: &'static str,
    },
    #[error("Slack {operation}: unreadable response")]
    BadResponse { operation: &'static str },
    #[error("response_url is not a Slack URL this function may call")]
    ResponseUrlRefused,
    #[error("user group id {0:?} is not a Slack user group id")]
    BadGroup(String),
}

const TRANSIENT_CODES: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "ratelimited",
];

impl Retryable for SlackCallError {
    fn retryable(&self) -> bool {
        match self {
            SlackCallError::Http { status, .. } => *status == 429 || *status >= 500,
            SlackCallError::Api { code, .. } => TRANSIENT_CODES.contains(&code.as_str()),
            SlackCallError::Transport { .. } | SlackCallError::BadResponse { .. } => true,
            SlackCallError::ResponseUrlRefused | SlackCallError::BadGroup(_) => false,
        }
    }
    fn kind(&self) -> &'static str {
        if self.retryable() {
            "SlackUnavailable"
        } else {
            "SlackRejected"
        }
    }
}

/// What slack-actions asks of Slack.
#[async_trait]
pub trait SlackWeb: Send + Sync {
    /// Opens a modal for the user who clicked (`trigger_id`).
    async fn open_view(
        &self,
        token: &Secret<String>,
        trigger_id: &str,
        view: &Value,
    ) -> Result<(), SlackCallError>;

    /// The user ids of a user group (`S…`).
    async fn usergroup_members(
        &self,
        token: &Secret<String>,
        group: &str,
    ) -> Result<Vec<String>, SlackCallError>;

    /// Posts a message to an interaction's `response_url`.
    async fn respond(
        &self,
        response_url: &Secret<String>,
        body: &Value,
    ) -> Result<(), SlackCallError>;
}

/// [`SlackWeb`] over HTTPS with reqwest.
#[derive(Debug, Clone)]
pub struct SlackHttp {
    http: reqwest::Client,
    api_url: String,
    response_url_prefixes: Vec<String>,
}

impl SlackHttp {
    /// `api_url`: the Web API base (`https://slack.com/api`); `response_url_prefixes`:
    /// where `response_url`s may point (`https://hooks.slack.com/`).
    pub fn new(
        api_url: &str,
        response_url_prefixes: Vec<String>,
    ) -> Result<SlackHttp, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            .user_agent("incident-pipeline-slack-actions")
            .build()?;
        Ok(SlackHttp {
            http,
            api_url: api_url.trim_end_matches('/').to_string(),
            response_url_prefixes,
        })
    }

    /// True when `url` starts with one of the allowed prefixes.
    pub fn response_url_allowed(&self, url: &str) -> bool {
        self.response_url_prefixes
            .iter()
            .any(|p| url.starts_with(p.as_str()))
    }

    async fn api(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, SlackCallError> {
        let response = request.send().await.map_err(|e| transport(operation, &e))?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(SlackCallError::Http { operation, status });
        }
        let body: Value = response
            .json()
            .await
            .map_err(|_| SlackCallError::BadResponse { operation })?;
        if body.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(body)
        } else {
            Err(SlackCallError::Api {
                operation,
                code: safe_code(body.get("error").and_then(Value::as_str).unwrap_or("")),
            })
        }
    }
}

fn transport(operation: &'static str, e: &reqwest::Error) -> SlackCallError {
    SlackCallError::Transport {
        operation,
        what: if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "request failed"
        },
    }
}

/// Slack's error code when it looks like one (`invalid_auth`), else `unknown`.
fn safe_code(s: &str) -> String {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit());
    if ok {
        s.to_string()
    } else {
        "unknown".to_string()
    }
}

/// A Slack user group id: `S` followed by upper-case letters and digits.
pub fn is_group_id(s: &str) -> bool {
    s.len() >= 2
        && s.len() <= 32
        && s.starts_with('S')
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[async_trait]
impl SlackWeb for SlackHttp {
    async fn open_view(
        &self,
        token: &Secret<String>,
        trigger_id: &str,
        view: &Value,
    ) -> Result<(), SlackCallError> {
        let request = self
            .http
            .post(format!("{}/views.open", self.api_url))
            .bearer_auth(token.expose())
            .json(&json!({"trigger_id": trigger_id, "view": view}));
        self.api("views.open", request).await.map(|_| ())
    }

    async fn usergroup_members(
        &self,
        token: &Secret<String>,
        group: &str,
    ) -> Result<Vec<String>, SlackCallError> {
        if !is_group_id(group) {
            return Err(SlackCallError::BadGroup(shared::text::truncate(group, 40)));
        }
        // A read method: form or query parameters (Slack does not take JSON here).
        let request = self
            .http
            .get(format!(
                "{}/usergroups.users.list?usergroup={group}",
                self.api_url
            ))
            .bearer_auth(token.expose());
        let body = self.api("usergroups.users.list", request).await?;
        let users =
            body.get("users")
                .and_then(Value::as_array)
                .ok_or(SlackCallError::BadResponse {
                    operation: "usergroups.users.list",
                })?;
        Ok(users
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect())
    }

    async fn respond(
        &self,
        response_url: &Secret<String>,
        body: &Value,
    ) -> Result<(), SlackCallError> {
        if !self.response_url_allowed(response_url.expose()) {
            return Err(SlackCallError::ResponseUrlRefused);
        }
        let operation = "response_url";
        let response = self
            .http
            .post(response_url.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| transport(operation, &e))?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(SlackCallError::Http { operation, status });
        }
        // Slack answers `{"ok": true}` (or plain `ok` from older endpoints).
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<Value>(&text) {
            Ok(v) if v.get("ok").and_then(Value::as_bool) == Some(false) => {
                Err(SlackCallError::Api {
                    operation,
                    code: safe_code(v.get("error").and_then(Value::as_str).unwrap_or("")),
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// One-request-per-connection HTTP server answering `answers` in order and
    /// recording each request's head and body.
    async fn server(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            for (status, body) in answers {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                loop {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&got).to_string());
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn token() -> Secret<String> {
        Secret::new("xoxb-test".to_string())
    }

    #[tokio::test]
    async fn views_open_posts_trigger_and_view_with_bearer_token() {
        let (url, seen) = server(vec![(200, r#"{"ok":true,"view":{"id":"V1"}}"#)]).await;
        let slack = SlackHttp::new(&format!("{url}/api/"), vec![]).unwrap();
        slack
            .open_view(&token(), "123.456.abc", &json!({"type": "modal"}))
            .await
            .unwrap();
        let req = seen.lock().unwrap()[0].clone();
        assert!(req.starts_with("POST /api/views.open HTTP/1.1"), "{req}");
        assert!(req
            .to_ascii_lowercase()
            .contains("authorization: bearer xoxb-test"));
        let body: Value = serde_json::from_str(req.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"trigger_id": "123.456.abc", "view": {"type": "modal"}})
        );
    }

    #[tokio::test]
    async fn expired_trigger_is_an_api_error_that_is_not_retryable() {
        let (url, _) = server(vec![(200, r#"{"ok":false,"error":"expired_trigger_id"}"#)]).await;
        let slack = SlackHttp::new(&format!("{url}/api"), vec![]).unwrap();
        let err = slack
            .open_view(&token(), "t", &json!({}))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SlackCallError::Api {
                operation: "views.open",
                code: "expired_trigger_id".into()
            }
        );
        assert!(!err.retryable());
    }

    #[tokio::test]
    async fn usergroup_members_lists_user_ids() {
        let (url, seen) = server(vec![(200, r#"{"ok":true,"users":["U1","U2"]}"#)]).await;
        let slack = SlackHttp::new(&format!("{url}/api"), vec![]).unwrap();
        assert_eq!(
            slack.usergroup_members(&token(), "S0ONCALL").await.unwrap(),
            vec!["U1".to_string(), "U2".to_string()]
        );
        assert!(seen.lock().unwrap()[0]
            .starts_with("GET /api/usergroups.users.list?usergroup=S0ONCALL HTTP/1.1"));
        let err = slack
            .usergroup_members(&token(), "S1&x=y")
            .await
            .unwrap_err();
        assert_eq!(err, SlackCallError::BadGroup("S1&x=y".into()));
    }

    #[tokio::test]
    async fn respond_posts_json_to_allowed_response_url_only() {
        let (url, seen) = server(vec![(200, r#"{"ok":true}"#), (500, "{}")]).await;
        let slack =
            SlackHttp::new("https://slack.invalid/api", vec![format!("{url}/actions/")]).unwrap();
        let ok_url = Secret::new(format!("{url}/actions/T1/123/abc"));
        slack
            .respond(
                &ok_url,
                &json!({"response_type": "ephemeral", "text": "On it"}),
            )
            .await
            .unwrap();
        let req = seen.lock().unwrap()[0].clone();
        assert!(
            req.starts_with("POST /actions/T1/123/abc HTTP/1.1"),
            "{req}"
        );
        assert!(req.ends_with(r#"{"response_type":"ephemeral","text":"On it"}"#));
        let err = slack.respond(&ok_url, &json!({})).await.unwrap_err();
        assert_eq!(
            err,
            SlackCallError::Http {
                operation: "response_url",
                status: 500
            }
        );
        assert!(err.retryable());
        let elsewhere = Secret::new("http://169.254.169.254/latest".to_string());
        let err = slack.respond(&elsewhere, &json!({})).await.unwrap_err();
        assert_eq!(err, SlackCallError::ResponseUrlRefused);
        assert!(!err.to_string().contains("169.254"));
    }

    #[test]
    fn safe_code_drops_text_that_is_not_a_code() {
        assert_eq!(safe_code("invalid_auth"), "invalid_auth");
        assert_eq!(safe_code("<html>oops</html>"), "unknown");
        assert!(is_group_id("S0123ABC"));
        assert!(!is_group_id("U0123ABC"));
    }
}
