//! Pacing of Slack calls per channel: about one message per second (Slack's rate for
//! posting to a channel, DESIGN.md section 6), across concurrent invocations.
//!
//! Lambda runs many invocations at once in a storm, each with its own clients, so a
//! rate kept in memory would pace nothing. The channel's next free send slot lives in
//! the state table (`pace#<channel>`): each call reserves the slot `max(now, next)`
//! with a conditional put that moves `next` one interval on, then sleeps until its
//! slot. Slots are wall-clock milliseconds; Lambda hosts keep NTP time, so skew
//! between invocations is far below the interval. The interval is
//! `SLACK_CHANNEL_INTERVAL_MS` (default 1000; 0 turns pacing off).
//!
//! A call whose slot would come after the invocation's deadline (less the time an
//! attempt needs) reserves nothing and fails retryable ([`DeliveryError::ChannelBusy`]):
//! Lambda retries the event later, when the channel has drained, and the delivery
//! records make that retry post only what is missing. Nothing is dropped. Updates of
//! one incident in quick succession are coalesced before they get here (see
//! [`crate::deliver`]), so a storm spends its slots on what people must read.

use std::time::Duration;

use chrono::Utc;
use shared::slack::{Destination, Target};
use tracing::info;

use crate::deliver::DeliveryError;
use crate::slack_api::{Budget, MIN_ATTEMPT};
use crate::store::{pace_key, Slot, StateStore};

/// The channel a destination posts to, for pacing: a bot destination's channel, or
/// the webhook destination itself (an incoming webhook is bound to one channel).
pub fn channel_of(destination: &Destination) -> String {
    match &destination.target {
        Target::Bot { channel, .. } => channel.clone(),
        Target::Webhook { .. } => format!("webhook:{}", destination.name),
    }
}

/// Waits for `destination`'s channel to have a free send slot, reserving it; returns
/// how long it waited. Fails with [`DeliveryError::ChannelBusy`] when no slot is free
/// before the budget runs out.
pub async fn wait_for_slot(
    store: &dyn StateStore,
    destination: &Destination,
    budget: &Budget,
    owner: &str,
) -> Result<Duration, DeliveryError> {
    if store.channel_interval().is_zero() {
        return Ok(Duration::ZERO);
    }
    let now_ms = Utc::now().timestamp_millis();
    let usable = budget.remaining().saturating_sub(MIN_ATTEMPT);
    let not_after = now_ms.saturating_add(i64::try_from(usable.as_millis()).unwrap_or(i64::MAX));
    let channel = channel_of(destination);
    match store
        .reserve_slot(&pace_key(&channel), owner, now_ms, not_after)
        .await?
    {
        Slot::At(at) => {
            let wait_ms = at.saturating_sub(Utc::now().timestamp_millis()).max(0);
            let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
            if !wait.is_zero() {
                info!(
                    wait_ms,
                    "waiting for the channel's next Slack slot (about one message per second)"
                );
                tokio::time::sleep(wait).await;
            }
            Ok(wait)
        }
        Slot::Full { next_free } => Err(DeliveryError::ChannelBusy {
            wait_seconds: next_free.saturating_sub(now_ms).max(0) / 1000,
        }),
    }
}
