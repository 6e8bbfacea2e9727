//! Slack, without I/O: the Block Kit model and its limits, mrkdwn escaping, the
//! recognition of what arrives on the notification topic, rendering, routing rules,
//! destinations and the mention policy; and what slack-actions needs to answer
//! people: request signatures, the parsing of commands and button presses, the
//! action policy and the replies, lists and modal it shows. The functions do the
//! HTTP and the state; everything here is pure so it can be tested, fuzzed and
//! benchmarked alone.

pub mod authz;
pub mod blocks;
pub mod escape;
pub mod inbound;
pub mod interaction;
pub mod render;
pub mod route;
pub mod settings;
pub mod signature;
pub mod views;

#[cfg(test)]
mod golden_tests;

/// Slack's Web API; the local setup points `SLACK_API_URL` at its own Slack.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";

pub use blocks::{Block, Message};
pub use inbound::{Inbound, RouteFacts, SnsMessage, ThreadIntent};
pub use render::{render, ClosingFigures, Milestones, Mode, RenderOptions};
pub use route::{Route, Routing, RoutingError};
pub use settings::{Destination, Mention, SettingsError, SlackSettings, Target};
