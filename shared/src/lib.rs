//! Domain of the incident pipeline, shared by every function: the normalized alarm,
//! configuration, errors, logging and AWS client setup. No Lambda entry points live
//! here; each function under `functions/` is a thin adapter over this crate.

pub mod alarm;
pub mod aws;
pub mod backend;
pub mod classify;
pub mod closure;
pub mod config;
pub mod effects;
pub mod error;
pub mod escalation;
pub mod incident;
pub mod lifecycle;
pub mod logging;
pub mod notification;
pub mod publish;
pub mod respond;
pub mod slack;
pub mod state;
pub mod text;
pub mod vpn;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
