//! Slack destinations and credentials, read from the Secrets Manager secret JSON,
//! and the mention policy.
//!
//! ```json
//! {
//!   "destinations": {
//!     "oncall": {"type": "bot", "token": "xoxb-...", "channel": "C0123ONCALL",
//!                "mention": "here", "mention_min_impact": 2},
//!     "ops":    {"type": "webhook", "url": "https://hooks.slack.com/services/T000/B000/XXXX"},
//!     "netops": {"type": "bot", "token": "xoxb-...", "channel": "C0456NET", "mention": "subteam^S0123NET",
//!                "escalation_mention": "subteam^S0999LEADS", "actions": true}
//!   },
//!   "routing": { "rules": [...], "default": [...] }
//! }
//! ```
//!
//! Tokens and webhook URLs are wrapped in [`Secret`] as they are parsed, and parse
//! errors never quote the secret text: serde's messages can echo values, so only
//! the position and the name of a missing field are kept.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::inbound::RouteFacts;
use super::route::{Routing, RoutingError};
use crate::error::{Retryable, Secret};
use crate::incident::Impact;

/// Whom to notify in Slack for an important incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mention {
    /// `<!here>`: active members of the channel.
    Here,
    /// `<!channel>`: every member of the channel.
    Channel,
    /// `<!subteam^ID>`: a user group.
    Subteam(String),
    /// `<@ID>`: one person.
    User(String),
}

impl Mention {
    /// Accepts `here`, `channel`, `subteam^S0123`, `U0123` (with or without Slack's
    /// `<!...>`, `<@...>` or `@` around them).
    pub fn parse(s: &str) -> Option<Mention> {
        let s = s.trim();
        let inner = s
            .strip_prefix('<')
            .and_then(|x| x.strip_suffix('>'))
            .map(|x| x.split('|').next().unwrap_or(x))
            .unwrap_or(s);
        let inner = inner.trim_start_matches(['!', '@']);
        let id_ok = |id: &str| {
            id.len() >= 3
                && id
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        };
        match inner {
            "here" => Some(Mention::Here),
            "channel" => Some(Mention::Channel),
            _ => {
                if let Some(id) = inner.strip_prefix("subteam^") {
                    id_ok(id).then(|| Mention::Subteam(id.to_string()))
                } else if inner.starts_with(['U', 'W']) && id_ok(inner) {
                    Some(Mention::User(inner.to_string()))
                } else {
                    None
                }
            }
        }
    }

    /// The mrkdwn that notifies.
    pub fn syntax(&self) -> String {
        match self {
            Mention::Here => "<!here>".into(),
            Mention::Channel => "<!channel>".into(),
            Mention::Subteam(id) => format!("<!subteam^{id}>"),
            Mention::User(id) => format!("<@{id}>"),
        }
    }
}

/// Where a destination posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An incoming webhook: one channel, no threads, no edits.
    Webhook { url: Secret<String> },
    /// A bot token posting with `chat.postMessage` to a channel (ID or name).
    Bot {
        token: Secret<String>,
        channel: String,
    },
}

/// A named Slack destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    pub target: Target,
    pub mention: Option<Mention>,
    /// Mention at this impact or worse; falls back to `MENTION_MIN_IMPACT`, then
    /// to 1 (critical).
    pub mention_min_impact: Option<Impact>,
    /// Whom to call when nobody acknowledged in time (`unanswered`); falls back to
    /// `mention`.
    pub escalation_mention: Option<Mention>,
    /// Bot destinations: show the incident's action buttons (Acknowledge, Add note,
    /// Re-run diagnosis, Resolve) on its top-level message. Default true; false for
    /// a channel whose Slack app has no interactivity (slack-actions) set up.
    pub actions: bool,
}

impl Destination {
    /// The mention to add for a message, if the policy asks for one:
    /// - an incident being opened or escalated at or above the threshold (the
    ///   destination's `mention_min_impact`, else `default_min`, else critical) gets
    ///   `mention`, unless someone already owns it (the call was answered);
    /// - an `unanswered` incident (nobody acknowledged in time: the escalation policy
    ///   decided it matters) gets `escalation_mention`, else `mention`, whatever its
    ///   impact, unless it is owned by now.
    ///
    /// Updates, diagnoses, acknowledgements and resolutions never notify; neither do
    /// raw alarms, events and text, whose impact is unknown.
    pub fn mention_for(&self, facts: &RouteFacts, default_min: Option<Impact>) -> Option<&Mention> {
        if facts.kind != "incident" || facts.owned {
            return None;
        }
        if facts.event_type == "unanswered" {
            return self.escalation_mention.as_ref().or(self.mention.as_ref());
        }
        let mention = self.mention.as_ref()?;
        let threshold = self
            .mention_min_impact
            .or(default_min)
            .unwrap_or(Impact::CRITICAL);
        let raising = matches!(facts.event_type.as_str(), "opened" | "escalated");
        let severe = facts.impact.is_some_and(|i| i.value() <= threshold.value());
        (raising && severe).then_some(mention)
    }

    /// True when the incident's top-level message offers action buttons.
    pub fn offers_actions(&self) -> bool {
        self.is_bot() && self.actions
    }

    pub fn is_bot(&self) -> bool {
        matches!(self.target, Target::Bot { .. })
    }
}

/// The parsed secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackSettings {
    /// Sorted by name.
    pub destinations: Vec<Destination>,
    pub routing: Option<Routing>,
}

/// Why the Slack secret cannot be used. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("Slack secret is not valid JSON of the expected shape at line {line} column {column}{detail}")]
    Json {
        line: usize,
        column: usize,
        detail: String,
    },
    #[error("Slack secret defines no destinations")]
    NoDestinations,
    #[error("Slack secret: destination {destination:?}: {problem}")]
    Invalid {
        destination: String,
        problem: String,
    },
    #[error("Slack secret: {0}")]
    Routing(#[from] RoutingError),
}

impl Retryable for SettingsError {
    fn retryable(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        "BadSlackSecret"
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    destinations: BTreeMap<String, RawDestination>,
    #[serde(default)]
    routing: Option<Routing>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    mention: Option<String>,
    #[serde(default)]
    mention_min_impact: Option<u8>,
    #[serde(default)]
    escalation_mention: Option<String>,
    #[serde(default)]
    actions: Option<bool>,
}

impl SlackSettings {
    /// Parses and checks the secret JSON. Routing is checked against the destinations.
    pub fn from_secret_json(secret: &str) -> Result<SlackSettings, SettingsError> {
        let raw: RawSecret = serde_json::from_str(secret).map_err(|e| {
            let msg = e.to_string();
            // Only the name of a missing field is safe to repeat; other serde messages
            // may quote the value (a token in the wrong place).
            let detail = match msg.find("missing field `") {
                Some(i) => {
                    let rest = &msg[i..];
                    let end = rest[15..].find('`').map_or(rest.len(), |j| j + 16);
                    format!(": {}", &rest[..end])
                }
                None => format!(" ({:?} error)", e.classify()).to_ascii_lowercase(),
            };
            SettingsError::Json {
                line: e.line(),
                column: e.column(),
                detail,
            }
        })?;
        if raw.destinations.is_empty() {
            return Err(SettingsError::NoDestinations);
        }
        let mut destinations = vec![];
        for (name, d) in raw.destinations {
            destinations.push(destination(name, d)?);
        }
        let settings = SlackSettings {
            destinations,
            routing: raw.routing,
        };
        if let Some(r) = &settings.routing {
            settings.validate_routing(r)?;
        }
        Ok(settings)
    }

    /// Checks a routing configuration (from the secret or `SLACK_ROUTING`) against
    /// the destinations.
    pub fn validate_routing(&self, routing: &Routing) -> Result<(), RoutingError> {
        routing.validate(self.destinations.iter().map(|d| d.name.as_str()))
    }

    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }

    /// The routing to use: `override_routing` (env), else the secret's, else every
    /// destination gets everything.
    pub fn effective_routing(&self, override_routing: Option<&Routing>) -> Routing {
        override_routing
            .or(self.routing.as_ref())
            .cloned()
            .unwrap_or_else(|| {
                Routing::everything(self.destinations.iter().map(|d| d.name.as_str()))
            })
    }
}

fn destination(name: String, d: RawDestination) -> Result<Destination, SettingsError> {
    let invalid = |problem: &str| SettingsError::Invalid {
        destination: crate::text::truncate(&name, 64),
        problem: problem.to_string(),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(invalid(
            "the name must be 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let no_space = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    let target = match d.kind.as_str() {
        "webhook" => {
            if d.token.is_some() || d.channel.is_some() {
                return Err(invalid(
                    "a webhook destination takes only `url` (its channel is fixed by the webhook)",
                ));
            }
            let url = d
                .url
                .ok_or_else(|| invalid("`url` is required for type webhook"))?;
            if !(url.starts_with("https://") || url.starts_with("http://")) || !no_space(&url) {
                return Err(invalid("`url` must be an http(s) URL without spaces"));
            }
            Target::Webhook {
                url: Secret::new(url),
            }
        }
        "bot" => {
            if d.url.is_some() {
                return Err(invalid(
                    "a bot destination takes `token` and `channel`, not `url`",
                ));
            }
            let token = d
                .token
                .ok_or_else(|| invalid("`token` is required for type bot"))?;
            if !no_space(&token) {
                return Err(invalid("`token` must be a non-empty token without spaces"));
            }
            let channel = d
                .channel
                .ok_or_else(|| invalid("`channel` is required for type bot"))?;
            if !no_space(&channel) || channel.len() > 80 {
                return Err(invalid(
                    "`channel` must be a channel ID (C0123...) or name without spaces",
                ));
            }
            Target::Bot {
                token: Secret::new(token),
                channel,
            }
        }
        _ => return Err(invalid("`type` must be \"webhook\" or \"bot\"")),
    };
    let mention = match d.mention.as_deref() {
        None => None,
        Some(m) => Some(Mention::parse(m).ok_or_else(|| {
            invalid("`mention` must be here, channel, subteam^<group ID> or a user ID (U...)")
        })?),
    };
    let escalation_mention = match d.escalation_mention.as_deref() {
        None => None,
        Some(m) => Some(Mention::parse(m).ok_or_else(|| {
            invalid("`escalation_mention` must be here, channel, subteam^<group ID> or a user ID (U...)")
        })?),
    };
    if d.actions.is_some() && d.kind != "bot" {
        return Err(invalid(
            "`actions` applies to bot destinations only (webhook messages cannot have buttons that reach slack-actions)",
        ));
    }
    let mention_min_impact = match d.mention_min_impact {
        None => None,
        Some(v) => Some(
            Impact::new(v)
                .ok_or_else(|| invalid("`mention_min_impact` must be 1 (critical) to 5"))?,
        ),
    };
    Ok(Destination {
        name,
        target,
        mention,
        mention_min_impact,
        escalation_mention,
        actions: d.actions.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = r#"{
        "destinations": {
            "oncall": {"type": "bot", "token": "xoxb-1-secret", "channel": "C0123ONCALL", "mention": "<!subteam^S0123ABC|@oncall>", "mention_min_impact": 2, "escalation_mention": "subteam^S0999LEADS"},
            "ops": {"type": "webhook", "url": "https://hooks.slack.com/services/T0/B0/secretpath"}
        },
        "routing": {"rules": [{"min_impact": 2, "destinations": ["oncall"]}], "default": ["ops"]}
    }"#;

    fn facts(event_type: &str, impact: u8) -> RouteFacts {
        RouteFacts {
            kind: "incident",
            event_type: event_type.into(),
            source: "incident-pipeline".into(),
            account: None,
            account_tags: Default::default(),
            impact: Impact::new(impact),
            owned: false,
        }
    }

    #[test]
    fn parses_destinations_with_secrets_wrapped() {
        let s = SlackSettings::from_secret_json(SECRET).unwrap();
        assert_eq!(s.destinations.len(), 2);
        let oncall = s.destination("oncall").unwrap();
        assert_eq!(
            oncall.target,
            Target::Bot {
                token: Secret::new("xoxb-1-secret".into()),
                channel: "C0123ONCALL".into()
            }
        );
        assert_eq!(oncall.mention, Some(Mention::Subteam("S0123ABC".into())));
        assert_eq!(oncall.mention_min_impact, Some(Impact::HIGH));
        assert_eq!(
            oncall.escalation_mention,
            Some(Mention::Subteam("S0999LEADS".into()))
        );
        assert!(oncall.actions && oncall.offers_actions());
        assert!(!s.destination("ops").unwrap().offers_actions());
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("xoxb-1-secret") && !debug.contains("secretpath"),
            "{debug}"
        );
        assert!(s.routing.is_some());
    }

    #[test]
    fn errors_never_quote_secret_values() {
        let bad = [
            r#"{"destinations": {"a": {"type": "bot", "token": "xoxb-LEAK", "channel": 5}}}"#,
            r#"{"destinations": {"a": {"type": "webhook", "url": "https://hooks/LEAK", "mention_min_impact": "xoxb-LEAK"}}}"#,
            r#"{"destinations": {"a": {"type": "xoxb-LEAK"}}}"#,
            r#"{"destinations": {"a": {"type": "bot", "token": "xoxb LEAK", "channel": "C1"}}}"#,
            r#"{"destinations": {"a": {"type": "webhook", "url": "ftp://LEAK"}}}"#,
            r#"xoxb-LEAK"#,
        ];
        for b in bad {
            let err = SlackSettings::from_secret_json(b).unwrap_err().to_string();
            assert!(!err.contains("LEAK"), "{err}");
        }
    }

    #[test]
    fn error_names_missing_field_and_position() {
        let err = SlackSettings::from_secret_json(
            r#"{"destinations": {"a": {"type": "bot", "token": "x"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "Slack secret: destination \"a\": `channel` is required for type bot"
        );
        let err = SlackSettings::from_secret_json(r#"{"destinations": {"a": {"token": "x"}}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "Slack secret is not valid JSON of the expected shape at line 1 column 37: missing field `type`"
        );
        assert_eq!(
            SlackSettings::from_secret_json(r#"{"destinations": {}}"#).unwrap_err(),
            SettingsError::NoDestinations
        );
    }

    #[test]
    fn routing_in_secret_must_name_known_destinations() {
        let err = SlackSettings::from_secret_json(
            r#"{"destinations": {"a": {"type": "webhook", "url": "https://x"}}, "routing": {"default": ["b"]}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                SettingsError::Routing(RoutingError::UnknownDestination { .. })
            ),
            "{err}"
        );
    }

    #[test]
    fn effective_routing_prefers_override_then_secret_then_everything() {
        let s = SlackSettings::from_secret_json(SECRET).unwrap();
        let env = Routing::everything(["ops"]);
        assert_eq!(s.effective_routing(Some(&env)), env);
        assert_eq!(s.effective_routing(None), s.routing.clone().unwrap());
        let no_routing = SlackSettings { routing: None, ..s };
        assert_eq!(
            no_routing.effective_routing(None).default,
            vec!["oncall", "ops"]
        );
    }

    #[test]
    fn mention_parse_accepts_slack_and_short_forms() {
        assert_eq!(Mention::parse("here"), Some(Mention::Here));
        assert_eq!(Mention::parse("<!here>"), Some(Mention::Here));
        assert_eq!(Mention::parse("@channel"), Some(Mention::Channel));
        assert_eq!(
            Mention::parse("subteam^S012AB"),
            Some(Mention::Subteam("S012AB".into()))
        );
        assert_eq!(
            Mention::parse("<@U012AB>"),
            Some(Mention::User("U012AB".into()))
        );
        assert_eq!(Mention::parse("everyone"), None);
        assert_eq!(Mention::parse("subteam^bad id"), None);
        assert_eq!(Mention::Subteam("S1X".into()).syntax(), "<!subteam^S1X>");
    }

    #[test]
    fn mention_policy_needs_raising_event_and_impact_at_threshold() {
        let s = SlackSettings::from_secret_json(SECRET).unwrap();
        let oncall = s.destination("oncall").unwrap();
        assert!(oncall.mention_for(&facts("opened", 2), None).is_some());
        assert!(oncall.mention_for(&facts("escalated", 1), None).is_some());
        assert!(oncall.mention_for(&facts("opened", 3), None).is_none());
        assert!(oncall.mention_for(&facts("resolved", 1), None).is_none());
        // No mention configured: never, whatever MENTION_MIN_IMPACT says.
        let ops = s.destination("ops").unwrap();
        assert!(ops
            .mention_for(&facts("opened", 1), Some(Impact::NONE))
            .is_none());
        // Destination without its own threshold uses the default, then critical only.
        let here = Destination {
            mention: Some(Mention::Here),
            mention_min_impact: None,
            ..oncall.clone()
        };
        assert!(here
            .mention_for(&facts("opened", 3), Some(Impact::MEDIUM))
            .is_some());
        assert!(here.mention_for(&facts("opened", 2), None).is_none());
        assert!(here.mention_for(&facts("opened", 1), None).is_some());
    }

    #[test]
    fn no_mention_once_someone_owns_the_incident() {
        let s = SlackSettings::from_secret_json(SECRET).unwrap();
        let oncall = s.destination("oncall").unwrap();
        let owned = RouteFacts {
            owned: true,
            ..facts("escalated", 1)
        };
        assert!(oncall.mention_for(&owned, None).is_none());
        let owned = RouteFacts {
            owned: true,
            ..facts("unanswered", 1)
        };
        assert!(oncall.mention_for(&owned, None).is_none());
    }

    #[test]
    fn unanswered_calls_the_escalation_mention_else_the_mention_at_any_impact() {
        let s = SlackSettings::from_secret_json(SECRET).unwrap();
        let oncall = s.destination("oncall").unwrap();
        assert_eq!(
            oncall.mention_for(&facts("unanswered", 4), None),
            Some(&Mention::Subteam("S0999LEADS".into()))
        );
        let plain = Destination {
            escalation_mention: None,
            ..oncall.clone()
        };
        assert_eq!(
            plain.mention_for(&facts("unanswered", 3), None),
            Some(&Mention::Subteam("S0123ABC".into()))
        );
        assert!(s
            .destination("ops")
            .unwrap()
            .mention_for(&facts("unanswered", 1), None)
            .is_none());
        // The escalation mention never replaces the mention of an opening.
        assert_eq!(
            oncall.mention_for(&facts("opened", 1), None),
            Some(&Mention::Subteam("S0123ABC".into()))
        );
        assert!(oncall
            .mention_for(&facts("acknowledged", 1), None)
            .is_none());
    }

    #[test]
    fn escalation_mention_and_actions_are_checked() {
        let err = SlackSettings::from_secret_json(
            r#"{"destinations": {"a": {"type": "bot", "token": "x", "channel": "C1", "escalation_mention": "everyone"}}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`escalation_mention` must be"),
            "{err}"
        );
        let err = SlackSettings::from_secret_json(
            r#"{"destinations": {"a": {"type": "webhook", "url": "https://x", "actions": true}}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("`actions` applies to bot destinations only"),
            "{err}"
        );
        let off = SlackSettings::from_secret_json(
            r#"{"destinations": {"a": {"type": "bot", "token": "x", "channel": "C1", "actions": false}}}"#,
        )
        .unwrap();
        assert!(!off.destinations[0].offers_actions());
    }
}
