//! slack-actions: Slack's buttons and the `/incident` command behind a Lambda
//! Function URL (verified with the Slack app's signing secret, replay-guarded,
//! authorized per action, answered within Slack's 3 s), the worker of the actions
//! queue that does the changes through `shared::effects`, and the target of the
//! escalation schedules. See `functions/slack-actions/README.md`.

pub mod config;
pub mod event;
pub mod groups;
pub mod handler;
pub mod incidents;
pub mod queue;
pub mod replay;
pub mod scope;
pub mod secrets;
pub mod slack_web;
pub mod wiring;
