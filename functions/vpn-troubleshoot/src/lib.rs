//! vpn-troubleshoot: the diagnosis step of a VPN incident. Started by the SSM
//! Automation runbook of the template (from the Incident Manager response plan, or
//! by alarm-to-incident with OpsCenter) or by hand, it gathers the facts about a
//! site-to-site VPN connection (EC2, CloudWatch metrics, tunnel logs through Logs
//! Insights), runs the pure analysis of `shared::vpn`, optionally replaces one
//! tunnel endpoint, and reports to the incident, the notification topic and the
//! runbook output.

pub mod config;
pub mod ec2;
pub mod gather;
pub mod handler;
pub mod input;
pub mod logs_query;
pub mod member;
pub mod metrics;
pub mod remediate;
