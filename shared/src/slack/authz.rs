//! Who may do what from Slack: a per-action allow policy, deny by default.
//!
//! ```json
//! {
//!   "acknowledge": {"users": ["U0123ABCD"], "usergroups": ["S0123ONCALL"]},
//!   "resolve":     {"usergroups": ["S0123ONCALL"]},
//!   "rerun":       {"usergroups": ["S0123ONCALL", "S0456NETOPS"]},
//!   "note":        {"usergroups": ["S0123ONCALL", "S0456NETOPS"]},
//!   "declare":     {"usergroups": ["S0123ONCALL"]},
//!   "silence":     {"usergroups": ["S0123ONCALL"]},
//!   "read":        {"usergroups": ["S0789ENG"]},
//!   "default":     {"users": ["U0999LEAD"]}
//! }
//! ```
//!
//! (slack-actions reads it from `SLACK_ACTION_POLICY`.) A person may do an action
//! when their user id is listed in its rule or they belong to one of its user
//! groups. An action without a rule uses `default`; without `default` nobody may do
//! it. An empty rule (`{}`) allows nobody. So an absent or empty policy allows
//! nothing: access is granted, never assumed. Unknown keys and ids that are not
//! Slack user (`U…`/`W…`) or user group (`S…`) ids are errors at start-up, so a typo
//! cannot silently deny (or allow) anyone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use crate::config::{ConfigError, Env};
use crate::error::Retryable;

/// The environment variable slack-actions reads the policy from.
pub const POLICY_ENV: &str = "SLACK_ACTION_POLICY";

/// What a person can do from Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Acknowledge / take ownership.
    Acknowledge,
    Resolve,
    /// Re-run the diagnosis runbook.
    Rerun,
    /// Add a note (command or modal).
    Note,
    /// Declare a new incident.
    Declare,
    /// `/incident list`, `show`, `silences`, `help`.
    Read,
    /// `/incident silence` and `unsilence`: hold alarms back for a while.
    Silence,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Acknowledge,
        Action::Resolve,
        Action::Rerun,
        Action::Note,
        Action::Declare,
        Action::Read,
        Action::Silence,
    ];

    /// The policy key.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Resolve => "resolve",
            Action::Rerun => "rerun",
            Action::Note => "note",
            Action::Declare => "declare",
            Action::Read => "read",
            Action::Silence => "silence",
        }
    }

    /// Words for "You are not allowed to …".
    pub fn describe(self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge or take ownership of incidents",
            Action::Resolve => "resolve incidents",
            Action::Rerun => "re-run the diagnosis",
            Action::Note => "add notes to incidents",
            Action::Declare => "declare incidents",
            Action::Read => "read incidents",
            Action::Silence => "silence alarms",
        }
    }

    fn from_key(key: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == key)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whom one rule allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    #[serde(default)]
    pub users: BTreeSet<String>,
    #[serde(default)]
    pub usergroups: BTreeSet<String>,
}

/// The policy: a rule per action, and the `default` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionPolicy {
    rules: BTreeMap<Action, Allow>,
    default: Option<Allow>,
}

/// Why a policy cannot be used (start-up error, never retryable). Ids are not
/// secrets, so the bad one is named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("Slack action policy is not valid JSON of the expected shape at line {line} column {column}: {detail}")]
    Json {
        line: usize,
        column: usize,
        detail: String,
    },
    #[error("Slack action policy: unknown key {0:?} (expected acknowledge, resolve, rerun, note, declare, read, silence or default)")]
    UnknownKey(String),
    #[error("Slack action policy: {rule}: {id:?} is not a Slack user id (U… or W…)")]
    BadUser { rule: String, id: String },
    #[error("Slack action policy: {rule}: {id:?} is not a Slack user group id (S…)")]
    BadUsergroup { rule: String, id: String },
}

impl Retryable for PolicyError {
    fn retryable(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        "BadConfig"
    }
}

fn id_ok(id: &str, kinds: &[char]) -> bool {
    id.starts_with(kinds)
        && (3..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl Allow {
    fn validate(&self, rule: &str) -> Result<(), PolicyError> {
        if let Some(id) = self.users.iter().find(|u| !id_ok(u, &['U', 'W'])) {
            return Err(PolicyError::BadUser {
                rule: rule.to_string(),
                id: crate::text::truncate(id, 40),
            });
        }
        if let Some(id) = self.usergroups.iter().find(|g| !id_ok(g, &['S'])) {
            return Err(PolicyError::BadUsergroup {
                rule: rule.to_string(),
                id: crate::text::truncate(id, 40),
            });
        }
        Ok(())
    }

    /// True when the user is listed or is in one of the listed groups.
    pub fn allows<S: AsRef<str>>(&self, user_id: &str, groups_of_user: &[S]) -> bool {
        self.users.contains(user_id)
            || groups_of_user
                .iter()
                .any(|g| self.usergroups.contains(g.as_ref()))
    }
}

impl ActionPolicy {
    /// A policy that allows nobody anything.
    pub fn deny_all() -> ActionPolicy {
        ActionPolicy::default()
    }

    /// Parses and checks the policy JSON.
    pub fn from_json(json: &str) -> Result<ActionPolicy, PolicyError> {
        let raw: BTreeMap<String, Allow> = serde_json::from_str(json).map_err(|e| {
            let detail = e.to_string();
            // serde appends " at line L column C": said once, in our own words.
            let detail = detail
                .rsplit_once(" at line ")
                .map_or(detail.as_str(), |(d, _)| d)
                .to_string();
            PolicyError::Json {
                line: e.line(),
                column: e.column(),
                detail,
            }
        })?;
        let mut policy = ActionPolicy::default();
        for (key, allow) in raw {
            allow.validate(&key)?;
            if key == "default" {
                policy.default = Some(allow);
            } else {
                let action = Action::from_key(&key)
                    .ok_or_else(|| PolicyError::UnknownKey(crate::text::truncate(&key, 40)))?;
                policy.rules.insert(action, allow);
            }
        }
        Ok(policy)
    }

    /// The policy from [`POLICY_ENV`]; unset or blank = [`ActionPolicy::deny_all`].
    pub fn from_env(env: &Env) -> Result<ActionPolicy, ConfigError> {
        match env.optional(POLICY_ENV) {
            None => Ok(ActionPolicy::deny_all()),
            Some(json) => ActionPolicy::from_json(&json).map_err(|e| ConfigError::Invalid {
                var: POLICY_ENV.to_string(),
                value: crate::text::truncate(&json, 200),
                reason: e.to_string(),
            }),
        }
    }

    /// The rule that decides `action`: its own, else `default`, else none (nobody).
    pub fn rule(&self, action: Action) -> Option<&Allow> {
        self.rules.get(&action).or(self.default.as_ref())
    }

    /// Whether `user_id`, member of `groups_of_user`, may do `action`.
    pub fn allows<S: AsRef<str>>(
        &self,
        action: Action,
        user_id: &str,
        groups_of_user: &[S],
    ) -> bool {
        self.rule(action)
            .is_some_and(|r| r.allows(user_id, groups_of_user))
    }

    /// The user groups whose membership decides `action` for `user_id`: empty when
    /// the user is allowed by id or the rule names no groups, so the caller looks up
    /// memberships (`usergroups.users.list`) only when it matters.
    pub fn groups_to_check(&self, action: Action, user_id: &str) -> Vec<&str> {
        match self.rule(action) {
            Some(r) if !r.users.contains(user_id) => {
                r.usergroups.iter().map(String::as_str).collect()
            }
            _ => vec![],
        }
    }

    /// Every user group named anywhere (to warm a membership cache).
    pub fn all_usergroups(&self) -> BTreeSet<&str> {
        self.rules
            .values()
            .chain(self.default.as_ref())
            .flat_map(|r| r.usergroups.iter().map(String::as_str))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"{
        "acknowledge": {"users": ["U0123ABCD"], "usergroups": ["S0123ONCALL"]},
        "resolve": {"usergroups": ["S0123ONCALL"]},
        "read": {"users": [], "usergroups": ["S0789ENG"]},
        "declare": {},
        "default": {"users": ["U0999LEAD"]}
    }"#;

    const NONE: &[&str] = &[];

    #[test]
    fn allows_listed_users_and_group_members_only() {
        let p = ActionPolicy::from_json(POLICY).unwrap();
        assert!(p.allows(Action::Acknowledge, "U0123ABCD", NONE));
        assert!(p.allows(Action::Acknowledge, "U0555XYZ", &["S0123ONCALL"]));
        assert!(!p.allows(Action::Acknowledge, "U0555XYZ", &["S0789ENG"]));
        assert!(!p.allows(Action::Resolve, "U0123ABCD", NONE));
        assert!(p.allows(Action::Resolve, "U0123ABCD", &["S0123ONCALL".to_string()]));
        assert!(p.allows(Action::Read, "U0555XYZ", &["S0789ENG"]));
    }

    #[test]
    fn actions_without_a_rule_use_default_and_empty_rules_allow_nobody() {
        let p = ActionPolicy::from_json(POLICY).unwrap();
        // rerun and note have no rule: default (the lead only).
        assert!(p.allows(Action::Rerun, "U0999LEAD", NONE));
        assert!(p.allows(Action::Note, "U0999LEAD", NONE));
        assert!(!p.allows(Action::Note, "U0123ABCD", &["S0123ONCALL"]));
        // declare has an empty rule: not even the default's users.
        assert!(!p.allows(Action::Declare, "U0999LEAD", NONE));
    }

    #[test]
    fn no_default_and_no_policy_deny_everything() {
        let p = ActionPolicy::from_json(r#"{"read": {"users": ["U0123ABCD"]}}"#).unwrap();
        assert!(p.allows(Action::Read, "U0123ABCD", NONE));
        for a in Action::ALL.into_iter().filter(|a| *a != Action::Read) {
            assert!(!p.allows(a, "U0123ABCD", NONE), "{a}");
        }
        let empty = ActionPolicy::from_env(&Env::from_pairs([("X", "y")])).unwrap();
        assert_eq!(empty, ActionPolicy::deny_all());
        for a in Action::ALL {
            assert!(!empty.allows(a, "U0123ABCD", &["S0123ONCALL"]), "{a}");
        }
        assert_eq!(
            ActionPolicy::from_json("{}").unwrap(),
            ActionPolicy::deny_all()
        );
    }

    #[test]
    fn groups_to_check_only_when_membership_decides() {
        let p = ActionPolicy::from_json(POLICY).unwrap();
        assert_eq!(
            p.groups_to_check(Action::Acknowledge, "U0123ABCD"),
            NONE.to_vec()
        );
        assert_eq!(
            p.groups_to_check(Action::Acknowledge, "U0555XYZ"),
            vec!["S0123ONCALL"]
        );
        assert_eq!(p.groups_to_check(Action::Note, "U0555XYZ"), NONE.to_vec());
        assert_eq!(
            p.all_usergroups().into_iter().collect::<Vec<_>>(),
            vec!["S0123ONCALL", "S0789ENG"]
        );
    }

    #[test]
    fn unknown_keys_and_bad_ids_are_start_up_errors() {
        assert_eq!(
            ActionPolicy::from_json(r#"{"acknowlege": {}}"#),
            Err(PolicyError::UnknownKey("acknowlege".into()))
        );
        assert_eq!(
            ActionPolicy::from_json(r#"{"resolve": {"users": ["jane"]}}"#),
            Err(PolicyError::BadUser {
                rule: "resolve".into(),
                id: "jane".into()
            })
        );
        assert_eq!(
            ActionPolicy::from_json(r#"{"default": {"usergroups": ["@oncall"]}}"#),
            Err(PolicyError::BadUsergroup {
                rule: "default".into(),
                id: "@oncall".into()
            })
        );
        assert_eq!(
            ActionPolicy::from_json(r#"{"read": {"usergroups": ["U0123ABCD"]}}"#),
            Err(PolicyError::BadUsergroup {
                rule: "read".into(),
                id: "U0123ABCD".into()
            })
        );
        let e = ActionPolicy::from_json(r#"{"read": {"user": ["U0123ABCD"]}}"#).unwrap_err();
        assert!(
            matches!(&e, PolicyError::Json { line: 1, detail, .. } if detail.contains("unknown field `user`")),
            "{e}"
        );
        let e = ActionPolicy::from_env(&Env::from_pairs([(POLICY_ENV, "[1]")])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("configuration: environment variable SLACK_ACTION_POLICY=\"[1]\" is invalid: Slack action policy is not valid JSON"),
            "{e}"
        );
        assert!(!e.retryable());
    }
}
