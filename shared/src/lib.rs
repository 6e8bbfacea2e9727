//! Domain of the incident pipeline, shared by every function: the normalized alarm,
//! configuration, errors, logging and AWS client setup. No Lambda entry points live
//! here; each function under `functions/` is a thin adapter over this crate.

pub mod alarm;
#[cfg(feature = "aws")]
pub mod aws;
pub mod backend;
pub mod classify;
pub mod closure;
pub mod config;
#[cfg(feature = "aws")]
pub mod effects;
pub mod error;
#[cfg(feature = "aws")]
pub mod escalation;
pub mod hash;
pub mod hold;
#[cfg(feature = "aws")]
pub mod hold_store;
#[cfg(feature = "aws")]
pub mod hold_timer;
pub mod incident;
pub mod lifecycle;
pub mod logging;
pub mod member_access;
pub mod notification;
pub mod org;
#[cfg(feature = "aws")]
pub mod publish;
#[cfg(feature = "aws")]
pub mod respond;
#[cfg(feature = "aws")]
pub mod schedule;
#[cfg(feature = "aws")]
pub mod secrets;
pub mod silence;
pub mod slack;
#[cfg(feature = "aws")]
pub mod state;
pub mod text;
pub mod vpn;

#[cfg(all(feature = "aws", any(test, feature = "testing")))]
pub mod testing;
