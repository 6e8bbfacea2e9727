//! Routing rules: which destinations get a message, by impact, event type, source,
//! account and kind.
//!
//! ```json
//! {
//!   "rules": [
//!     {"name": "critical-to-oncall", "min_impact": 2, "destinations": ["oncall"]},
//!     {"name": "vpn-events", "kinds": ["incident"], "event_types": ["opened", "resolved"], "destinations": ["network"]},
//!     {"name": "prod-alarms", "kinds": ["alarm"], "accounts": ["123456789012"], "destinations": ["ops"], "stop": true},
//!     {"name": "payments-team", "account_tags": {"team": "payments"}, "destinations": ["payments"], "stop": true},
//!     {"name": "everything", "destinations": ["ops"]}
//!   ],
//!   "default": ["ops"]
//! }
//! ```
//!
//! Every rule whose conditions all hold adds its destinations (in order, without
//! repeats); a matching rule with `stop: true` ends the evaluation. An empty or
//! missing condition list matches anything. `min_impact: 2` matches impact 1
//! (critical) and 2 (high), and never a message without an impact (raw alarms,
//! events, text). Sources and event types accept a trailing `*` (`aws.*`). When no
//! rule matches, `default` is used. `account_tags` (organization mode, `shared::org`)
//! matches the tags of the incident's account, its OU's merged with its own: every
//! listed tag must have the value given (`*`: any value).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::inbound::RouteFacts;
use crate::incident::Impact;

/// One routing rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// For logs.
    #[serde(default)]
    pub name: Option<String>,
    /// Matches this impact and worse (lower numbers).
    #[serde(default)]
    pub min_impact: Option<Impact>,
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Tags of the account (organization mode): all must match.
    #[serde(default)]
    pub account_tags: BTreeMap<String, String>,
    pub destinations: Vec<String>,
    #[serde(default)]
    pub stop: bool,
}

/// The routing configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub default: Vec<String>,
}

/// A routing configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("routing JSON is invalid: {0}")]
    Json(String),
    #[error("routing {place} names destination {name:?}, which the Slack secret does not define (known: {known})")]
    UnknownDestination {
        place: String,
        name: String,
        known: String,
    },
    #[error("routing rule {0} has no destinations")]
    EmptyRule(String),
}

impl Routing {
    /// Every destination gets everything (no routing configured).
    pub fn everything<'a>(destinations: impl IntoIterator<Item = &'a str>) -> Routing {
        Routing {
            rules: vec![],
            default: destinations.into_iter().map(str::to_string).collect(),
        }
    }

    /// Parses routing JSON (env `SLACK_ROUTING` or the secret's `routing`).
    pub fn from_json(s: &str) -> Result<Routing, RoutingError> {
        serde_json::from_str(s).map_err(|e| RoutingError::Json(e.to_string()))
    }

    /// Checks that every named destination exists and no rule is empty.
    pub fn validate<'a>(
        &self,
        known: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), RoutingError> {
        let known_list = || known.clone().into_iter().collect::<Vec<_>>().join(", ");
        let check = |place: String, name: &str| {
            if known.clone().into_iter().any(|k| k == name) {
                Ok(())
            } else {
                Err(RoutingError::UnknownDestination {
                    place,
                    name: name.to_string(),
                    known: known_list(),
                })
            }
        };
        for (i, rule) in self.rules.iter().enumerate() {
            let label = rule_label(i, rule);
            if rule.destinations.is_empty() {
                return Err(RoutingError::EmptyRule(label));
            }
            for d in &rule.destinations {
                check(format!("rule {label}"), d)?;
            }
        }
        for d in &self.default {
            check("default".into(), d)?;
        }
        Ok(())
    }

    /// The destinations for a message, in rule order, without repeats, with the
    /// names of the rules that matched (for logs).
    pub fn route(&self, facts: &RouteFacts) -> Route {
        let mut route = Route::default();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.matches(facts) {
                continue;
            }
            route.rules.push(rule_label(i, rule));
            for d in &rule.destinations {
                if !route.destinations.contains(d) {
                    route.destinations.push(d.clone());
                }
            }
            if rule.stop {
                break;
            }
        }
        if route.rules.is_empty() {
            route.destinations = self.default.clone();
            route.rules.push("default".into());
        }
        route
    }
}

/// The outcome of routing one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub destinations: Vec<String>,
    pub rules: Vec<String>,
}

fn rule_label(i: usize, rule: &Rule) -> String {
    match &rule.name {
        Some(n) => format!("#{i} ({n})"),
        None => format!("#{i}"),
    }
}

impl Rule {
    fn matches(&self, f: &RouteFacts) -> bool {
        let impact_ok = match self.min_impact {
            None => true,
            Some(min) => f.impact.is_some_and(|i| i.value() <= min.value()),
        };
        impact_ok
            && any_or_empty(&self.kinds, f.kind)
            && any_or_empty(&self.event_types, &f.event_type)
            && any_or_empty(&self.sources, &f.source)
            && (self.accounts.is_empty()
                || f.account
                    .as_deref()
                    .is_some_and(|a| any_or_empty(&self.accounts, a)))
            && crate::org::tags_match(&self.account_tags, &f.account_tags)
    }
}

fn any_or_empty(patterns: &[String], value: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix),
            None => p == value,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: &'static str, event_type: &str, source: &str, impact: Option<u8>) -> RouteFacts {
        RouteFacts {
            kind,
            event_type: event_type.into(),
            source: source.into(),
            account: Some("123456789012".into()),
            account_tags: BTreeMap::new(),
            impact: impact.and_then(Impact::new),
            owned: false,
        }
    }

    fn routing() -> Routing {
        Routing::from_json(
            r#"{"rules": [
                {"name": "critical", "min_impact": 2, "destinations": ["oncall"]},
                {"name": "security", "sources": ["aws.guard*"], "destinations": ["security"], "stop": true},
                {"name": "all", "destinations": ["ops", "oncall"]}
              ], "default": ["fallback"]}"#,
        )
        .unwrap()
    }

    #[test]
    fn critical_goes_to_oncall_and_everything_to_ops() {
        let r = routing().route(&facts("incident", "opened", "incident-pipeline", Some(1)));
        assert_eq!(r.destinations, vec!["oncall", "ops"]);
        assert_eq!(r.rules, vec!["#0 (critical)", "#2 (all)"]);
        let r = routing().route(&facts("incident", "opened", "incident-pipeline", Some(3)));
        assert_eq!(r.destinations, vec!["ops", "oncall"]);
    }

    #[test]
    fn unknown_impact_never_matches_min_impact() {
        let r = routing().route(&facts("alarm", "alarm", "aws.cloudwatch", None));
        assert_eq!(r.rules, vec!["#2 (all)"]);
    }

    #[test]
    fn stop_ends_evaluation_and_prefix_patterns_match() {
        let r = routing().route(&facts("event", "GuardDuty Finding", "aws.guardduty", None));
        assert_eq!(r.destinations, vec!["security"]);
    }

    #[test]
    fn default_applies_when_no_rule_matches() {
        let routing = Routing::from_json(r#"{"rules": [{"accounts": ["999999999999"], "destinations": ["a"]}], "default": ["b"]}"#).unwrap();
        let r = routing.route(&facts("text", "text", "sns", None));
        assert_eq!(r.destinations, vec!["b"]);
        assert_eq!(r.rules, vec!["default"]);
    }

    #[test]
    fn account_tags_route_each_team_to_its_channel() {
        let routing = Routing::from_json(
            r#"{"rules": [
                {"name": "payments", "account_tags": {"team": "payments"}, "destinations": ["payments"], "stop": true},
                {"name": "retail", "account_tags": {"team": "retail", "env": "*"}, "destinations": ["retail"], "stop": true}
              ], "default": ["ops"]}"#,
        )
        .unwrap();
        let with = |tags: &[(&str, &str)]| {
            let mut f = facts("incident", "opened", "incident-pipeline", Some(3));
            f.account_tags = tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            routing.route(&f).destinations
        };
        assert_eq!(with(&[("team", "payments")]), ["payments"]);
        assert_eq!(with(&[("team", "retail"), ("env", "prod")]), ["retail"]);
        // `env: *` needs the tag to exist.
        assert_eq!(with(&[("team", "retail")]), ["ops"]);
        assert_eq!(with(&[]), ["ops"]);
        assert!(
            Routing::from_json(r#"{"rules": [{"account_tag": {}, "destinations": ["a"]}]}"#)
                .is_err()
        );
    }

    #[test]
    fn validate_names_unknown_destination_and_empty_rules() {
        let err = routing()
            .validate(["oncall", "ops", "security"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "routing default names destination \"fallback\", which the Slack secret does not define (known: oncall, ops, security)"
        );
        let empty =
            Routing::from_json(r#"{"rules": [{"name": "x", "destinations": []}]}"#).unwrap();
        assert_eq!(
            empty.validate(["a"]).unwrap_err(),
            RoutingError::EmptyRule("#0 (x)".into())
        );
    }

    #[test]
    fn from_json_rejects_unknown_fields_and_bad_impact() {
        assert!(
            Routing::from_json(r#"{"rules": [{"destinations": ["a"], "min_impakt": 1}]}"#)
                .unwrap_err()
                .to_string()
                .contains("unknown field `min_impakt`")
        );
        assert!(
            Routing::from_json(r#"{"rules": [{"destinations": ["a"], "min_impact": 9}]}"#)
                .unwrap_err()
                .to_string()
                .contains("impact must be 1 (critical) to 5")
        );
    }
}
