//! HTTP to Slack: `chat.postMessage`, `chat.update` and incoming webhooks, with
//! retries inside a time budget taken from the Lambda deadline.
//!
//! - 429: wait for `Retry-After` seconds (Slack's rate limit is about one message per
//!   second per channel), then try again.
//! - 5xx, timeouts, connection failures and Slack's own transient error codes:
//!   exponential backoff with jitter.
//! - Everything else (`invalid_auth`, `channel_not_found`, a webhook's 403/404, ...):
//!   fail at once, not retryable.
//!
//! No retry starts when it could not finish before the budget ends; the error then
//! says how many attempts were made, and is retryable so Lambda tries the event again.
//! Tokens and webhook URLs never appear in errors or logs: errors carry the
//! operation, the HTTP status and Slack's error code (only when it looks like one).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable as _};
use serde::Serialize;
use serde_json::Value;
use shared::error::{Retryable, Secret};
use shared::slack::Message;
use tokio::time::Instant;
use tracing::warn;

/// Longest single HTTP attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// No attempt starts with less time than this left in the budget.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(300);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(4);
const MAX_RETRIES: usize = 8;
/// Used when a 429 has no readable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The time an invocation may spend on Slack calls.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    until: Instant,
    /// The Lambda deadline, epoch seconds (leases in the state table).
    deadline_epoch: i64,
}

impl Budget {
    /// From the Lambda deadline, keeping `reserve` for the work after the last call.
    pub fn from_deadline(deadline: SystemTime, reserve: Duration) -> Budget {
        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Budget {
            until: Instant::now() + remaining.saturating_sub(reserve),
            deadline_epoch: deadline
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        }
    }

    /// A budget of `d` from now (tests, tools).
    pub fn after(d: Duration) -> Budget {
        Budget::from_deadline(SystemTime::now() + d, Duration::ZERO)
    }

    pub fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// Until when a claim made in this invocation is valid (epoch seconds).
    pub fn lease_until(&self) -> i64 {
        self.deadline_epoch + 1
    }

    pub(crate) fn until(&self) -> Instant {
        self.until
    }
}

/// A failed Slack call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SlackError {
    #[error("Slack {operation}: rate limited (HTTP 429), retry after {}s", retry_after.as_secs())]
    RateLimited {
        operation: &'static str,
        retry_after: Duration,
    },
    #[error("Slack {operation}: server error HTTP {status}")]
    Server {
        operation: &'static str,
        status: u16,
    },
    #[error("Slack {operation}: {what}")]
    Transport {
        operation: &'static str,
        what: &'static str,
        retryable: bool,
    },
    #[error("Slack {operation}: rejected with HTTP {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Http {
        operation: &'static str,
        status: u16,
        code: Option<String>,
    },
    #[error("Slack {operation}: error {code}{}", if *retryable { " (transient)" } else { "" })]
    Api {
        operation: &'static str,
        code: String,
        retryable: bool,
    },
    #[error("Slack {operation}: unreadable response (HTTP {status})")]
    BadResponse {
        operation: &'static str,
        status: u16,
    },
    #[error("Slack {operation}: gave up after {attempts} attempt(s) in the time budget; last error: {last}")]
    GaveUp {
        operation: &'static str,
        attempts: u32,
        last: Box<SlackError>,
    },
    #[error("Slack {operation}: no time left before the Lambda deadline")]
    NoTime { operation: &'static str },
    #[error("Slack HTTP client could not be built")]
    Client,
}

/// Slack error codes that say "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
];
/// Slack error codes that mean the credentials are wrong (re-read the secret).
const AUTH_CODES: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "invalid_token",
    "no_service",
];

impl SlackError {
    /// True when the credentials were refused (the secret may have been rotated).
    pub fn is_auth(&self) -> bool {
        match self {
            SlackError::Api { code, .. } => AUTH_CODES.contains(&code.as_str()),
            SlackError::Http { status, code, .. } => {
                *status == 401
                    || *status == 403
                    || code.as_deref().is_some_and(|c| AUTH_CODES.contains(&c))
            }
            SlackError::GaveUp { last, .. } => last.is_auth(),
            _ => false,
        }
    }
}

impl Retryable for SlackError {
    fn retryable(&self) -> bool {
        match self {
            SlackError::RateLimited { .. }
            | SlackError::Server { .. }
            | SlackError::BadResponse { .. }
            | SlackError::GaveUp { .. }
            | SlackError::NoTime { .. } => true,
            SlackError::Transport { retryable, .. } | SlackError::Api { retryable, .. } => {
                *retryable
            }
            SlackError::Http { status, .. } => *status == 408,
            SlackError::Client => false,
        }
    }

    fn kind(&self) -> &'static str {
        if self.is_auth() {
            return "SlackAuth";
        }
        match self {
            SlackError::RateLimited { .. } => "SlackRateLimited",
            SlackError::Server { .. }
            | SlackError::Transport { .. }
            | SlackError::BadResponse { .. } => "SlackUnavailable",
            SlackError::GaveUp { .. } | SlackError::NoTime { .. } => "SlackTimeBudget",
            SlackError::Api {
                retryable: true, ..
            } => "SlackUnavailable",
            SlackError::Api { .. } | SlackError::Http { .. } => "SlackRejected",
            SlackError::Client => "SlackClient",
        }
    }
}

/// Keeps Slack's error code only when it looks like one (`channel_not_found`), so
/// no arbitrary response text reaches errors and logs.
fn safe_code(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
    .then(|| s.to_string())
}

fn transport(operation: &'static str, e: &reqwest::Error) -> SlackError {
    // reqwest's own message holds the URL (a webhook URL is a credential): never used.
    let (what, retryable) = if e.is_builder() {
        ("the request could not be built (invalid URL?)", false)
    } else if e.is_timeout() {
        ("request timed out", true)
    } else if e.is_connect() {
        ("connection failed", true)
    } else if e.is_body() || e.is_decode() {
        ("reading the response failed", true)
    } else {
        ("request failed", true)
    };
    SlackError::Transport {
        operation,
        what,
        retryable,
    }
}

/// 429 (wait for `Retry-After`) and 5xx are transient for webhooks and the Web API
/// alike; every other status is read by the caller.
fn reject_transient_status(
    operation: &'static str,
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> Result<(), SlackError> {
    if status.as_u16() == 429 {
        return Err(SlackError::RateLimited {
            operation,
            retry_after: retry_after(headers),
        });
    }
    if status.is_server_error() {
        return Err(SlackError::Server {
            operation,
            status: status.as_u16(),
        });
    }
    Ok(())
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs)
}

/// A message posted with `chat.postMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The channel ID Slack answered with.
    pub channel: String,
    pub ts: String,
}

#[derive(Serialize)]
struct PostMessageBody<'a> {
    channel: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    blocks: &'a [shared::slack::Block],
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_ts: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reply_broadcast: bool,
    unfurl_links: bool,
    unfurl_media: bool,
}

#[derive(Serialize)]
struct UpdateBody<'a> {
    channel: &'a str,
    ts: &'a str,
    text: &'a str,
    blocks: &'a [shared::slack::Block],
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    blocks: &'a [shared::slack::Block],
    unfurl_links: bool,
    unfurl_media: bool,
}

/// Where and how to post with a bot token.
#[derive(Debug, Clone, Copy)]
pub struct PostTo<'a> {
    pub channel: &'a str,
    pub thread_ts: Option<&'a str>,
    /// Also show a thread reply in the channel.
    pub broadcast: bool,
}

/// Slack Web API and webhook client.
#[derive(Debug, Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    api_url: String,
}

impl SlackClient {
    /// `api_url` is the Web API base, e.g. `https://slack.com/api` (a fake in tests).
    pub fn new(api_url: &str) -> Result<SlackClient, SlackError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            // A redirect would resend the token elsewhere; Slack does not redirect API calls.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "incident-pipeline-notify-fanout/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|_| SlackError::Client)?;
        Ok(SlackClient {
            http,
            api_url: api_url.trim_end_matches('/').to_string(),
        })
    }

    /// `chat.postMessage`; returns the channel ID and `ts` of the message.
    pub async fn post_message(
        &self,
        token: &Secret<String>,
        to: PostTo<'_>,
        message: &Message,
        budget: &Budget,
    ) -> Result<Posted, SlackError> {
        let body = PostMessageBody {
            channel: to.channel,
            text: &message.text,
            blocks: &message.blocks,
            thread_ts: to.thread_ts,
            reply_broadcast: to.broadcast && to.thread_ts.is_some(),
            unfurl_links: false,
            unfurl_media: false,
        };
        let v = self.api("chat.postMessage", token, &body, budget).await?;
        let channel = v.get("channel").and_then(Value::as_str);
        let ts = v.get("ts").and_then(Value::as_str);
        match (channel, ts) {
            (Some(c), Some(t)) if !c.is_empty() && !t.is_empty() => Ok(Posted {
                channel: c.to_string(),
                ts: t.to_string(),
            }),
            _ => Err(SlackError::BadResponse {
                operation: "chat.postMessage",
                status: 200,
            }),
        }
    }

    /// `chat.update` of a message the token posted.
    pub async fn update_message(
        &self,
        token: &Secret<String>,
        channel: &str,
        ts: &str,
        message: &Message,
        budget: &Budget,
    ) -> Result<(), SlackError> {
        let body = UpdateBody {
            channel,
            ts,
            text: &message.text,
            blocks: &message.blocks,
        };
        self.api("chat.update", token, &body, budget)
            .await
            .map(|_| ())
    }

    /// Posts to an incoming webhook.
    pub async fn post_webhook(
        &self,
        url: &Secret<String>,
        message: &Message,
        budget: &Budget,
    ) -> Result<(), SlackError> {
        let body = WebhookBody {
            text: &message.text,
            blocks: &message.blocks,
            unfurl_links: false,
            unfurl_media: false,
        };
        let op = "webhook";
        let body = &body;
        with_retry(op, budget, move || async move {
            let timeout = attempt_timeout(op, budget)?;
            let resp = self
                .http
                .post(url.expose())
                .json(&body)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| transport(op, &e))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp.text().await.map_err(|e| transport(op, &e))?;
            reject_transient_status(op, status, &headers)?;
            if !status.is_success() {
                return Err(SlackError::Http {
                    operation: op,
                    status: status.as_u16(),
                    code: safe_code(&text),
                });
            }
            Ok(())
        })
        .await
    }

    async fn api<B: Serialize>(
        &self,
        op: &'static str,
        token: &Secret<String>,
        body: &B,
        budget: &Budget,
    ) -> Result<Value, SlackError> {
        let url = format!("{}/{op}", self.api_url);
        let url = url.as_str();
        with_retry(op, budget, move || async move {
            let timeout = attempt_timeout(op, budget)?;
            let resp = self
                .http
                .post(url)
                .bearer_auth(token.expose())
                .json(body)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| transport(op, &e))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp.text().await.map_err(|e| transport(op, &e))?;
            reject_transient_status(op, status, &headers)?;
            let parsed: Option<Value> = serde_json::from_str(&text).ok();
            let code = parsed
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .map(|c| safe_code(c).unwrap_or_else(|| "unrecognized_error".into()));
            if !status.is_success() {
                return Err(SlackError::Http {
                    operation: op,
                    status: status.as_u16(),
                    code,
                });
            }
            let Some(v) = parsed else {
                return Err(SlackError::BadResponse {
                    operation: op,
                    status: status.as_u16(),
                });
            };
            if v.get("ok").and_then(Value::as_bool) == Some(true) {
                return Ok(v);
            }
            let code = code.unwrap_or_else(|| "unrecognized_error".into());
            if code == "ratelimited" {
                return Err(SlackError::RateLimited {
                    operation: op,
                    retry_after: retry_after(&headers),
                });
            }
            Err(SlackError::Api {
                operation: op,
                retryable: TRANSIENT_CODES.contains(&code.as_str()),
                code,
            })
        })
        .await
    }
}

fn attempt_timeout(operation: &'static str, budget: &Budget) -> Result<Duration, SlackError> {
    let remaining = budget.remaining();
    if remaining < MIN_ATTEMPT {
        return Err(SlackError::NoTime { operation });
    }
    Ok(remaining.min(ATTEMPT_TIMEOUT))
}

fn jitter_seed() -> u64 {
    // backon without its `std` feature seeds jitter with a constant: seed it per call.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0x5eed, |d| d.as_nanos() as u64)
}

/// Runs `attempt` until it succeeds, fails for good, or the next try would not fit
/// in the budget.
async fn with_retry<T, F, Fut>(
    operation: &'static str,
    budget: &Budget,
    mut attempt: F,
) -> Result<T, SlackError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SlackError>>,
{
    let attempts = AtomicU32::new(0);
    let until = budget.until();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .with_jitter_seed(jitter_seed())
        .with_max_times(MAX_RETRIES);
    let result = (|| {
        attempts.fetch_add(1, Ordering::Relaxed);
        attempt()
    })
    .retry(backoff)
    .when(|e: &SlackError| e.retryable() && !matches!(e, SlackError::NoTime { .. }))
    .adjust(|e, next| {
        let delay = match e {
            SlackError::RateLimited { retry_after, .. } => next.map(|_| *retry_after),
            _ => next,
        }?;
        // Only wait if an attempt still fits after the wait.
        (Instant::now() + delay + MIN_ATTEMPT <= until).then_some(delay)
    })
    .notify(|e, delay| {
        warn!(
            operation,
            error = %e,
            attempt = attempts.load(Ordering::Relaxed),
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "Slack call failed, retrying"
        );
    })
    .await;
    let attempts = attempts.load(Ordering::Relaxed);
    result.map_err(|e| {
        if e.retryable() && attempts > 1 {
            SlackError::GaveUp {
                operation,
                attempts,
                last: Box::new(e),
            }
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_code_keeps_codes_only() {
        assert_eq!(
            safe_code("channel_not_found").as_deref(),
            Some("channel_not_found")
        );
        assert_eq!(
            safe_code(" invalid_token\n").as_deref(),
            Some("invalid_token")
        );
        assert_eq!(
            safe_code("<html>https://hooks.slack.com/services/T/B/X</html>"),
            None
        );
        assert_eq!(safe_code(""), None);
    }

    #[test]
    fn classification_of_errors() {
        let auth = SlackError::Api {
            operation: "chat.postMessage",
            code: "invalid_auth".into(),
            retryable: false,
        };
        assert!(!auth.retryable() && auth.is_auth());
        assert_eq!(auth.lambda_error_type(), "NonRetryable.SlackAuth");
        assert_eq!(
            auth.to_string(),
            "Slack chat.postMessage: error invalid_auth"
        );
        let limited = SlackError::RateLimited {
            operation: "webhook",
            retry_after: Duration::from_secs(30),
        };
        assert_eq!(limited.lambda_error_type(), "Retryable.SlackRateLimited");
        let gone = SlackError::Http {
            operation: "webhook",
            status: 404,
            code: Some("no_service".into()),
        };
        assert!(!gone.retryable());
        assert_eq!(
            gone.to_string(),
            "Slack webhook: rejected with HTTP 404 (no_service)"
        );
        let gave_up = SlackError::GaveUp {
            operation: "chat.update",
            attempts: 3,
            last: Box::new(SlackError::Server {
                operation: "chat.update",
                status: 503,
            }),
        };
        assert_eq!(gave_up.lambda_error_type(), "Retryable.SlackTimeBudget");
    }

    #[test]
    fn retry_after_header_is_read_in_seconds_with_default() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), DEFAULT_RETRY_AFTER);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(7));
    }

    #[tokio::test]
    async fn budget_exhausted_before_first_attempt_is_no_time() {
        let budget = Budget::after(Duration::from_millis(10));
        let client = SlackClient::new("http://127.0.0.1:9").unwrap();
        let err = client
            .post_webhook(
                &Secret::new("http://127.0.0.1:9/hook".into()),
                &Message {
                    text: "x".into(),
                    blocks: vec![],
                },
                &budget,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SlackError::NoTime {
                    operation: "webhook"
                }
            ),
            "{err}"
        );
        assert!(err.retryable());
    }
}
