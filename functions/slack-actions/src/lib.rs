//! slack-actions: Slack's buttons and the `/incident` command, behind a Lambda
//! Function URL, plus the queue worker that does the changes and the escalation
//! timer's target. See the crate README for the flow and the Slack app setup.

pub mod event;
pub mod incidents;
pub mod queue;
pub mod replay;
pub mod secrets;
pub mod slack_web;
