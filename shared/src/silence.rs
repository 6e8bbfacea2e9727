//! Silences set from Slack (`/incident silence <target> <duration> [reason]`): for a
//! while, alarm transitions that match the target are recorded but page nobody, as
//! Alertmanager's silences do. A resolve is never silenced. When a silence ends
//! (expiry or `/incident unsilence`) while a held alarm still fires, the incident
//! opens then (alarm-to-incident's reconciliation, on a timer at the silence's end).
//!
//! Pure: the [`SilenceBook`] (every silence, active and recently ended, kept in one
//! state-table item so alarm-to-incident reads them with one `GetItem` per alarm),
//! the command's target and duration syntax, matching, and what a silence held back.
//! The store and the timers live in `crate::hold_store` and `crate::hold_timer`.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::alarm::AlarmState;
use crate::incident::Actor;

/// The longest silence: a forgotten silence must not hide alarms for long.
pub const MAX_SILENCE: Duration = Duration::days(7);
/// The shortest one.
pub const MIN_SILENCE: Duration = Duration::minutes(1);
/// Ended silences stay listed (with what they held back) this long.
pub const ENDED_RETENTION: Duration = Duration::days(7);
/// At most this many silences active at once (the book is one DynamoDB item).
pub const MAX_ACTIVE: usize = 100;
/// Held-back transitions listed per silence (the count goes on).
pub const HELD_LISTED: usize = 20;
/// Longest target text (an incident key, a VPN id or an alarm-name prefix).
pub const MAX_TARGET_CHARS: usize = 255;
/// Longest reason.
pub const MAX_REASON_CHARS: usize = 500;

/// What a silence matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum SilenceTarget {
    /// Every alarm classified into this incident key.
    IncidentKey(String),
    /// Every alarm on this site-to-site VPN connection (its `VpnId` dimension).
    Vpn(String),
    /// Every alarm whose name starts with this.
    AlarmPrefix(String),
}

impl SilenceTarget {
    /// True when a transition of `alarm_name` (on `vpn_id`, classified into `key`)
    /// is in the silence's scope.
    pub fn matches(&self, alarm_name: &str, vpn_id: Option<&str>, key: &str) -> bool {
        match self {
            SilenceTarget::IncidentKey(k) => k == key,
            SilenceTarget::Vpn(v) => vpn_id == Some(v.as_str()),
            SilenceTarget::AlarmPrefix(p) => alarm_name.starts_with(p.as_str()),
        }
    }

    /// For people: `incident "VPN connection vpn-1 is DOWN"`, `VPN vpn-1`,
    /// `alarms named vpn-tunnel-*`.
    pub fn describe(&self) -> String {
        match self {
            SilenceTarget::IncidentKey(k) => format!("incident \"{k}\""),
            SilenceTarget::Vpn(v) => format!("VPN {v}"),
            SilenceTarget::AlarmPrefix(p) => format!("alarms named {p}*"),
        }
    }

    /// The text as typed (for the id and the log).
    pub fn value(&self) -> &str {
        match self {
            SilenceTarget::IncidentKey(v)
            | SilenceTarget::Vpn(v)
            | SilenceTarget::AlarmPrefix(v) => v,
        }
    }
}

/// How a silence ended early.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifted {
    pub by: Actor,
    pub at: DateTime<Utc>,
}

/// One transition a silence held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTransition {
    pub alarm_name: String,
    pub alarm_arn: String,
    pub state: AlarmState,
    pub changed_at: DateTime<Utc>,
    pub incident_key: String,
}

/// One silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// `s-` and 8 hex digits, from the request (so a retried request finds it).
    pub id: String,
    pub target: SilenceTarget,
    pub created_by: Actor,
    pub created_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted: Option<Lifted>,
    /// The latest transitions it held back (at most [`HELD_LISTED`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldTransition>,
    /// How many transitions it held back in all.
    #[serde(default)]
    pub held_count: u32,
    /// Only alarms of these accounts (a silence set by someone whose Slack action
    /// scope covers some accounts only, `shared::slack::authz`); `None`: every account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<BTreeSet<String>>,
}

impl Silence {
    /// When it stops (or stopped) holding: its end, or when it was lifted.
    pub fn ended_at(&self) -> DateTime<Utc> {
        self.lifted
            .as_ref()
            .map_or(self.ends_at, |l| l.at.min(self.ends_at))
    }

    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.created_at <= now && now < self.ended_at()
    }

    /// True when alarms of `account` are within the silence's accounts.
    pub fn covers_account(&self, account: &str) -> bool {
        self.accounts.as_ref().is_none_or(|a| a.contains(account))
    }
}

/// Every silence (active, and ended within [`ENDED_RETENTION`]), with the version the
/// store read, for conditional writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceBook {
    /// 0 for a book never written.
    #[serde(skip)]
    pub version: u64,
    pub silences: Vec<Silence>,
}

/// Why a silence request changes nothing (safe to show the person).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceRefusal {
    #[error("{0}")]
    Invalid(String),
    #[error("No active silence has the id `{0}`. `/incident silences` lists them.")]
    NotFound(String),
    #[error("Silence `{0}` has already ended.")]
    Ended(String),
    #[error("There are already {MAX_ACTIVE} active silences; lift one first (`/incident unsilence <id>`).")]
    TooMany,
}

impl SilenceBook {
    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.silences.iter().find(|s| s.id == id)
    }

    /// The active silences whose target (and accounts) match an alarm of `account`,
    /// the one that ends last first.
    pub fn matching(
        &self,
        account: &str,
        alarm_name: &str,
        vpn_id: Option<&str>,
        key: &str,
        now: DateTime<Utc>,
    ) -> Vec<&Silence> {
        let mut out: Vec<&Silence> = self
            .silences
            .iter()
            .filter(|s| {
                s.is_active(now)
                    && s.covers_account(account)
                    && s.target.matches(alarm_name, vpn_id, key)
            })
            .collect();
        out.sort_by(|a, b| b.ended_at().cmp(&a.ended_at()).then(a.id.cmp(&b.id)));
        out
    }

    /// Drops silences that ended more than [`ENDED_RETENTION`] ago.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.silences
            .retain(|s| s.ended_at() + ENDED_RETENTION > now);
    }

    /// Adds `silence`; one with the same id already there (a retried request) is kept
    /// as it is. Returns the silence as stored.
    pub fn add(
        &mut self,
        silence: Silence,
        now: DateTime<Utc>,
    ) -> Result<&Silence, SilenceRefusal> {
        self.prune(now);
        if let Some(i) = self.silences.iter().position(|s| s.id == silence.id) {
            return Ok(&self.silences[i]);
        }
        if self.silences.iter().filter(|s| s.is_active(now)).count() >= MAX_ACTIVE {
            return Err(SilenceRefusal::TooMany);
        }
        self.silences.push(silence);
        Ok(self.silences.last().expect("just pushed"))
    }

    /// Ends silence `id` now. Lifting one lifted already (a retried request) is fine.
    pub fn lift(
        &mut self,
        id: &str,
        by: &Actor,
        now: DateTime<Utc>,
    ) -> Result<&Silence, SilenceRefusal> {
        self.prune(now);
        let Some(s) = self.silences.iter_mut().find(|s| s.id == id) else {
            return Err(SilenceRefusal::NotFound(crate::text::truncate(id, 40)));
        };
        if s.lifted.as_ref().is_some_and(|l| &l.by == by) {
            return Ok(s);
        }
        if !s.is_active(now) {
            return Err(SilenceRefusal::Ended(s.id.clone()));
        }
        s.lifted = Some(Lifted {
            by: by.clone(),
            at: now,
        });
        Ok(s)
    }

    /// Records that silence `id` held `t` back; false when it was recorded already
    /// (or the silence is gone), so the caller writes only on change.
    pub fn record_held(&mut self, id: &str, t: HeldTransition) -> bool {
        let Some(s) = self.silences.iter_mut().find(|s| s.id == id) else {
            return false;
        };
        if s.held
            .iter()
            .any(|h| h.alarm_arn == t.alarm_arn && h.changed_at == t.changed_at)
        {
            return false;
        }
        s.held.push(t);
        if s.held.len() > HELD_LISTED {
            let drop = s.held.len() - HELD_LISTED;
            s.held.drain(..drop);
        }
        s.held_count = s.held_count.saturating_add(1);
        true
    }

    /// When the item may expire (DynamoDB TTL): once every silence in it is past its
    /// retention.
    pub fn expires_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.silences
            .iter()
            .map(|s| s.ended_at() + ENDED_RETENTION)
            .max()
            .unwrap_or(now + ENDED_RETENTION)
    }
}

/// A silence id for a request: stable for the same person, target and request time.
pub fn silence_id(target: &SilenceTarget, by: &Actor, requested_at: DateTime<Utc>) -> String {
    let h = crate::hash::stable_hash(&[
        target.value(),
        &by.label(),
        &requested_at.timestamp_millis().to_string(),
    ]);
    format!("s-{:08x}", (h >> 96) as u32)
}

/// Parses `30m`, `2h`, `1d`, `1h30m` (units `m`, `h`, `d`, `w`), between
/// [`MIN_SILENCE`] and [`MAX_SILENCE`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim().to_ascii_lowercase();
    let bad = || {
        format!(
            "`{}` is not a duration: use minutes, hours or days such as `30m`, `2h`, `1d` or `1h30m`.",
            crate::text::truncate(text.trim(), 20)
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::zero();
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            if digits.len() >= 6 {
                return Err(bad());
            }
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total += match c {
            'm' => Duration::minutes(n),
            'h' => Duration::hours(n),
            'd' => Duration::days(n),
            'w' => Duration::weeks(n),
            _ => return Err(bad()),
        };
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    if total < MIN_SILENCE {
        return Err("A silence lasts at least 1 minute.".into());
    }
    if total > MAX_SILENCE {
        return Err("A silence lasts at most 7 days (`7d`); set a new one when it ends.".into());
    }
    Ok(total)
}

/// `vpn-` and 8 or 17 hex digits: a site-to-site VPN connection id.
pub fn is_vpn_id(s: &str) -> bool {
    s.strip_prefix("vpn-").is_some_and(|h| {
        (8..=17).contains(&h.len())
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(m: i64) -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(m)
    }

    fn alice() -> Actor {
        Actor::Person {
            id: "U0ALICE".into(),
            name: "alice".into(),
        }
    }

    fn silence(id: &str, target: SilenceTarget, from: i64, to: i64) -> Silence {
        Silence {
            id: id.into(),
            target,
            created_by: alice(),
            created_at: at(from),
            ends_at: at(to),
            reason: None,
            lifted: None,
            held: vec![],
            held_count: 0,
            accounts: None,
        }
    }

    #[test]
    fn durations_parse_with_units_and_bounds() {
        assert_eq!(parse_duration("30m"), Ok(Duration::minutes(30)));
        assert_eq!(parse_duration("2h"), Ok(Duration::hours(2)));
        assert_eq!(parse_duration("1D"), Ok(Duration::days(1)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::minutes(90)));
        assert_eq!(parse_duration("1w"), Ok(Duration::days(7)));
        for bad in ["", "30", "m", "2x", "1.5h", "-1h", "h2", "9999999m"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
        assert_eq!(
            parse_duration("0m").unwrap_err(),
            "A silence lasts at least 1 minute."
        );
        assert!(parse_duration("8d").unwrap_err().contains("at most 7 days"));
    }

    #[test]
    fn targets_match_key_vpn_or_name_prefix() {
        let key = SilenceTarget::IncidentKey("VPN connection vpn-1 is DOWN".into());
        assert!(key.matches("x", None, "VPN connection vpn-1 is DOWN"));
        assert!(!key.matches("x", None, "other"));
        let vpn = SilenceTarget::Vpn("vpn-0f1e2d3c4b5a69788".into());
        assert!(vpn.matches("any", Some("vpn-0f1e2d3c4b5a69788"), "k"));
        assert!(!vpn.matches("any", None, "k"));
        let prefix = SilenceTarget::AlarmPrefix("vpn-tunnel-".into());
        assert!(prefix.matches("vpn-tunnel-down-x", None, "k"));
        assert!(!prefix.matches("api-5xx", None, "k"));
        assert!(is_vpn_id("vpn-0f1e2d3c4b5a69788") && is_vpn_id("vpn-12345678"));
        assert!(!is_vpn_id("vpn-XYZ12345") && !is_vpn_id("vpn-123"));
    }

    #[test]
    fn matching_uses_only_active_silences_latest_end_first() {
        let mut book = SilenceBook::default();
        let p = || SilenceTarget::AlarmPrefix("vpn-".into());
        book.add(silence("s-1", p(), 0, 60), at(0)).unwrap();
        book.add(silence("s-2", p(), 0, 120), at(0)).unwrap();
        book.add(silence("s-3", p(), 0, 10), at(0)).unwrap();
        let ids = |m: i64| -> Vec<String> {
            book.matching("123456789012", "vpn-x", None, "k", at(m))
                .iter()
                .map(|s| s.id.clone())
                .collect()
        };
        assert_eq!(ids(5), ["s-2", "s-1", "s-3"]);
        assert_eq!(ids(30), ["s-2", "s-1"]);
        assert_eq!(ids(200), Vec::<String>::new());
    }

    #[test]
    fn a_silence_limited_to_accounts_holds_only_their_alarms() {
        let mut book = SilenceBook::default();
        let mut s = silence(
            "s-00000001",
            SilenceTarget::Vpn("vpn-12345678".into()),
            0,
            60,
        );
        s.accounts = Some(BTreeSet::from(["444455556666".to_string()]));
        book.add(s, at(0)).unwrap();
        let vpn = Some("vpn-12345678");
        assert_eq!(book.matching("444455556666", "a", vpn, "k", at(1)).len(), 1);
        assert!(book
            .matching("111122223333", "a", vpn, "k", at(1))
            .is_empty());
        // An older book (no accounts) matches every account.
        let json = serde_json::to_value(&book.silences[0]).unwrap();
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("accounts");
        let old: Silence = serde_json::from_value(old).unwrap();
        assert!(old.covers_account("111122223333"));
        assert_eq!(json["accounts"], serde_json::json!(["444455556666"]));
    }

    #[test]
    fn add_is_idempotent_bounded_and_prunes_old_silences() {
        let mut book = SilenceBook::default();
        let t = || SilenceTarget::Vpn("vpn-12345678".into());
        book.add(silence("s-1", t(), 0, 60), at(0)).unwrap();
        let mut again = silence("s-1", t(), 0, 999);
        again.reason = Some("retried".into());
        assert_eq!(book.add(again, at(1)).unwrap().ends_at, at(60));
        assert_eq!(book.silences.len(), 1);
        // Ended more than 7 days ago: gone at the next write.
        book.add(silence("s-2", t(), 0, 60), at(60 + 7 * 24 * 60 + 1))
            .unwrap();
        assert_eq!(book.silences.len(), 1);
        assert_eq!(book.silences[0].id, "s-2");
        let mut full = SilenceBook::default();
        for i in 0..MAX_ACTIVE {
            full.add(silence(&format!("s-{i}"), t(), 0, 60), at(0))
                .unwrap();
        }
        assert_eq!(
            full.add(silence("s-x", t(), 0, 60), at(0)).unwrap_err(),
            SilenceRefusal::TooMany
        );
    }

    #[test]
    fn lift_ends_an_active_silence_once() {
        let mut book = SilenceBook::default();
        book.add(
            silence("s-1", SilenceTarget::Vpn("vpn-12345678".into()), 0, 60),
            at(0),
        )
        .unwrap();
        assert_eq!(
            book.lift("s-1", &alice(), at(10)).unwrap().ended_at(),
            at(10)
        );
        assert!(!book.get("s-1").unwrap().is_active(at(11)));
        // A retried request by the same person is fine.
        assert!(book.lift("s-1", &alice(), at(12)).is_ok());
        let bob = Actor::Person {
            id: "U0BOB".into(),
            name: "bob".into(),
        };
        assert_eq!(
            book.lift("s-1", &bob, at(12)).unwrap_err(),
            SilenceRefusal::Ended("s-1".into())
        );
        assert!(matches!(
            book.lift("s-9", &bob, at(12)),
            Err(SilenceRefusal::NotFound(_))
        ));
    }

    #[test]
    fn held_transitions_are_counted_once_and_listed_bounded() {
        let mut book = SilenceBook::default();
        book.add(
            silence("s-1", SilenceTarget::AlarmPrefix("a".into()), 0, 600),
            at(0),
        )
        .unwrap();
        let held = |m: i64| HeldTransition {
            alarm_name: "a".into(),
            alarm_arn: "arn:aws:cloudwatch:eu-west-1:1:alarm:a".into(),
            state: AlarmState::Alarm,
            changed_at: at(m),
            incident_key: "k".into(),
        };
        assert!(book.record_held("s-1", held(1)));
        assert!(!book.record_held("s-1", held(1)), "same transition again");
        for m in 2..30 {
            book.record_held("s-1", held(m));
        }
        let s = book.get("s-1").unwrap();
        assert_eq!(s.held_count, 29);
        assert_eq!(s.held.len(), HELD_LISTED);
        assert_eq!(s.held.last().unwrap().changed_at, at(29));
        assert!(!book.record_held("s-404", held(1)));
    }

    #[test]
    fn ids_are_stable_per_request() {
        let t = SilenceTarget::Vpn("vpn-12345678".into());
        let a = silence_id(&t, &alice(), at(0));
        assert_eq!(a, silence_id(&t, &alice(), at(0)));
        assert_ne!(a, silence_id(&t, &alice(), at(1)));
        assert!(a.starts_with("s-") && a.len() == 10, "{a}");
    }
}
