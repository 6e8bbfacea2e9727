//! Held-back transitions: an alarm transition recorded (its watermark moves, so a
//! second delivery is a duplicate) but not applied to an incident, because an alarm
//! mute rule muted the alarm (planned maintenance) or a silence set from Slack covers
//! it. Nothing opens and nobody is paged; an open incident gets a timeline note. A
//! transition to `OK` is never held: resolving is never muted or silenced.
//!
//! When the hold ends (the mute window's end, the silence's end or its lifting) and
//! the alarm still fires, the transition is applied then: alarm-to-incident's
//! reconciliation reads the alarm (`DescribeAlarms`), sees the same transition still
//! current, and applies it as if it arrived at that moment (Alertmanager semantics).
//! The hold is stored on the alarm's state item ([`crate::state::AlarmItem::held`]).
//! One time series (contributor) of a multi-time-series alarm cannot be read that way
//! (`DescribeAlarms` has only the alarm as a whole): its hold keeps the held event
//! ([`Hold::series`]), which is applied at the hold's end unless a newer event of the
//! series came meanwhile.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::alarm::{Alarm, AlarmState, MuteDetail};
use crate::silence::SilenceBook;

/// How long a muted transition is held when its event names no window end (the
/// fields are documented as present; a hold must end anyway).
pub const UNKNOWN_MUTE_WINDOW: Duration = Duration::hours(1);

/// Why a transition is held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum HoldCause {
    /// An alarm mute rule (maintenance window).
    Mute {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule_arn: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window_start: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window_end: Option<DateTime<Utc>>,
    },
    /// A silence set from Slack.
    Silence {
        id: String,
        /// Who set it (label), for notes.
        set_by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A transition held back until `until` (or until its silence is lifted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub cause: HoldCause,
    pub until: DateTime<Utc>,
    /// For one time series (contributor) of a multi-time-series alarm: the held
    /// transition as it arrived. `DescribeAlarms` knows only the alarm as a whole, so
    /// at the hold's end the sweep applies this (unless a newer event of the series
    /// came meanwhile: an `OK` is never held) instead of reading CloudWatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Box<Alarm>>,
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Hold {
    /// `maintenance window of mute rule arn:… (… to …)` or `silence s-… set by … (reason)`.
    pub fn describe(&self) -> String {
        match &self.cause {
            HoldCause::Mute {
                rule_arn,
                window_start,
                window_end,
            } => {
                let rule = rule_arn.as_deref().unwrap_or("(rule not named)");
                let window = match (window_start, window_end) {
                    (Some(s), Some(e)) => format!(" ({} to {})", iso(*s), iso(*e)),
                    (None, Some(e)) => format!(" (until {})", iso(*e)),
                    (Some(s), None) => format!(" (from {})", iso(*s)),
                    (None, None) => String::new(),
                };
                format!("the maintenance window of mute rule {rule}{window}")
            }
            HoldCause::Silence { id, set_by, reason } => {
                let why = reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                format!("silence {id} set by {set_by}{why}")
            }
        }
    }

    /// The silence id, for a silence's hold.
    pub fn silence_id(&self) -> Option<&str> {
        match &self.cause {
            HoldCause::Silence { id, .. } => Some(id),
            HoldCause::Mute { .. } => None,
        }
    }

    /// When the hold ends, as far as `book` says: a silence lifted early ends then; a
    /// silence no longer in the book ended long ago.
    pub fn ends_at(&self, book: &SilenceBook) -> DateTime<Utc> {
        match &self.cause {
            HoldCause::Mute { .. } => self.until,
            HoldCause::Silence { id, .. } => match book.get(id) {
                Some(s) => s.ended_at().min(self.until),
                None => DateTime::<Utc>::MIN_UTC,
            },
        }
    }

    pub fn has_ended(&self, book: &SilenceBook, now: DateTime<Utc>) -> bool {
        self.ends_at(book) <= now
    }
}

fn mute_hold(m: &MuteDetail, changed_at: DateTime<Utc>) -> Hold {
    Hold {
        cause: HoldCause::Mute {
            rule_arn: m.rule_arn.clone(),
            window_start: m.window_start,
            window_end: m.window_end,
        },
        until: m.window_end.unwrap_or(changed_at + UNKNOWN_MUTE_WINDOW),
        series: None,
    }
}

/// Whether `alarm`'s transition (classified into incident `key`) is held back at
/// `now`: by its mute rule while the window lasts, or by an active matching silence;
/// the one that lasts longest when both. `OK` is never held.
pub fn hold_for(alarm: &Alarm, key: &str, book: &SilenceBook, now: DateTime<Utc>) -> Option<Hold> {
    if alarm.state == AlarmState::Ok {
        return None;
    }
    let mute = alarm
        .muted
        .as_ref()
        .map(|m| mute_hold(m, alarm.changed_at))
        .filter(|h| h.until > now);
    let silence = book
        .matching(&alarm.account, &alarm.name, alarm.vpn_id(), key, now)
        .first()
        .map(|s| Hold {
            cause: HoldCause::Silence {
                id: s.id.clone(),
                set_by: s.created_by.label(),
                reason: s.reason.clone(),
            },
            until: s.ended_at(),
            series: None,
        });
    let hold = match (mute, silence) {
        (Some(m), Some(s)) => Some(if s.until > m.until { s } else { m }),
        (m, s) => m.or(s),
    };
    // A contributor's transition keeps its event: see `Hold::series`.
    hold.map(|h| Hold {
        series: alarm.contributor.is_some().then(|| Box::new(alarm.clone())),
        ..h
    })
}

/// The timeline note for a held transition on an open incident.
pub fn held_note(alarm_name: &str, state: AlarmState, hold: &Hold) -> String {
    format!(
        "{alarm_name} is {state} during {}: recorded, nobody paged; applied if it still holds when the hold ends ({})",
        hold.describe(),
        iso(hold.until)
    )
}

/// The timeline note when a held transition is applied at the hold's end.
pub fn released_note(
    alarm_name: &str,
    state: AlarmState,
    since: DateTime<Utc>,
    hold: &Hold,
) -> String {
    format!(
        "{alarm_name} has been {state} since {} (held back by {}); the hold ended and it still is",
        iso(since),
        hold.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::Actor;
    use crate::silence::{Silence, SilenceTarget};

    fn at(m: i64) -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(m)
    }

    fn alarm(state: &str, muted_until: Option<i64>) -> Alarm {
        let mut a = crate::alarm::normalize_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../events/eventbridge-vpn-tunnel-down-alarm.json"
            ))
            .unwrap(),
        )
        .unwrap()
        .remove(0);
        a.state = AlarmState::parse(state).unwrap();
        a.changed_at = at(0);
        a.muted = muted_until.map(|m| MuteDetail {
            rule_arn: Some(
                "arn:aws:cloudwatch:us-east-1:123456789012:alarm-mute-rule:nightly".into(),
            ),
            window_start: Some(at(-5)),
            window_end: Some(at(m)),
        });
        a
    }

    fn book(to: i64) -> SilenceBook {
        let mut b = SilenceBook::default();
        b.add(
            Silence {
                id: "s-00000001".into(),
                target: SilenceTarget::AlarmPrefix(String::new()),
                created_by: Actor::Person {
                    id: "U0ALICE".into(),
                    name: "alice".into(),
                },
                created_at: at(-10),
                ends_at: at(to),
                reason: Some("router upgrade".into()),
                lifted: None,
                held: vec![],
                held_count: 0,
                accounts: None,
            },
            at(-10),
        )
        .unwrap();
        b
    }

    #[test]
    fn muted_alarm_is_held_until_the_window_ends_and_ok_never() {
        let h = hold_for(
            &alarm("ALARM", Some(60)),
            "k",
            &SilenceBook::default(),
            at(1),
        )
        .unwrap();
        assert_eq!(h.until, at(60));
        assert_eq!(
            h.describe(),
            "the maintenance window of mute rule arn:aws:cloudwatch:us-east-1:123456789012:alarm-mute-rule:nightly (2026-11-25T09:55:00Z to 2026-11-25T11:00:00Z)"
        );
        assert_eq!(
            hold_for(&alarm("OK", Some(60)), "k", &book(90), at(1)),
            None
        );
        // Delivered after its window: applied normally.
        assert_eq!(
            hold_for(
                &alarm("ALARM", Some(60)),
                "k",
                &SilenceBook::default(),
                at(61)
            ),
            None
        );
        assert!(hold_for(
            &alarm("INSUFFICIENT_DATA", Some(60)),
            "k",
            &SilenceBook::default(),
            at(1)
        )
        .is_some());
    }

    #[test]
    fn silence_holds_and_the_longer_hold_wins() {
        let h = hold_for(&alarm("ALARM", None), "k", &book(30), at(1)).unwrap();
        assert_eq!(h.silence_id(), Some("s-00000001"));
        assert_eq!(
            h.describe(),
            "silence s-00000001 set by alice (U0ALICE): router upgrade"
        );
        let longer_mute = hold_for(&alarm("ALARM", Some(60)), "k", &book(30), at(1)).unwrap();
        assert_eq!(longer_mute.until, at(60));
        let longer_silence = hold_for(&alarm("ALARM", Some(20)), "k", &book(30), at(1)).unwrap();
        assert_eq!(longer_silence.silence_id(), Some("s-00000001"));
        assert_eq!(
            hold_for(&alarm("ALARM", None), "k", &book(30), at(31)),
            None
        );
    }

    #[test]
    fn a_silence_hold_ends_when_lifted_or_forgotten() {
        let mut b = book(30);
        let h = hold_for(&alarm("ALARM", None), "k", &b, at(1)).unwrap();
        assert!(!h.has_ended(&b, at(2)));
        let alice = Actor::Person {
            id: "U0ALICE".into(),
            name: "alice".into(),
        };
        b.lift("s-00000001", &alice, at(5)).unwrap();
        assert!(h.has_ended(&b, at(5)));
        assert!(h.has_ended(&SilenceBook::default(), at(2)));
        let m = hold_for(
            &alarm("ALARM", Some(60)),
            "k",
            &SilenceBook::default(),
            at(1),
        )
        .unwrap();
        assert!(!m.has_ended(&b, at(59)) && m.has_ended(&b, at(60)));
    }
}
