//! notify-fanout: delivers the incident notifications of the SNS topic to Slack,
//! through incoming webhooks or a bot token, with threads per incident, routing,
//! mentions, and retries an on-call engineer can trust.
//!
//! Rendering, routing and the secret's format live in `shared::slack` (pure, tested
//! alone); this crate does the I/O: Slack HTTP ([`slack_api`]), the secret
//! ([`secrets`]), the state table ([`store`]), one delivery ([`deliver`]) and one
//! invocation ([`handler`]).

pub mod config;
pub mod deliver;
pub mod handler;
pub mod pace;
pub mod secrets;
pub mod slack_api;
pub mod store;

/// Time kept after the last Slack call for the state-table writes and the response.
pub const DEADLINE_RESERVE: std::time::Duration = std::time::Duration::from_secs(2);
