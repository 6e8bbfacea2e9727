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
//!
//! **Account scopes** (one stack for an organization, `shared::org`): the rules say
//! *what* a person may do; `scopes` says *on which accounts' incidents*:
//!
//! ```json
//! {
//!   "resolve": {"usergroups": ["S0NOC", "S0PAYMENTS", "S0RETAIL"]},
//!   "read":    {"usergroups": ["S0NOC", "S0PAYMENTS", "S0RETAIL"]},
//!   "scopes": [
//!     {"usergroups": ["S0NOC"], "accounts": ["*"]},
//!     {"usergroups": ["S0PAYMENTS"], "accounts": ["111122223333"]},
//!     {"usergroups": ["S0RETAIL"], "account_tags": {"team": "retail"}},
//!     {"users": ["U0AUDITOR"], "accounts": ["*"], "actions": ["read"]}
//!   ]
//! }
//! ```
//!
//! Without `scopes`, every allowed action reaches every account's incidents (as
//! before). With it, deny by default: a person reaches the incidents of an account
//! only when an entry that names them (user or group), and that applies to the
//! action (`actions`; absent: every action), covers the account: its id is in
//! `accounts` (`"*"`: every account), or its tags (the account directory's, OU tags
//! merged) have every `account_tags` entry (`"*"` as a value: the tag with any
//! value). A person in no entry reaches no incident. Each entry must say which
//! accounts (`accounts` and/or `account_tags`), so an entry cannot silently mean all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use crate::config::{ConfigError, Env};
use crate::error::Retryable;
use crate::org::{is_account_id, tags_match, AccountDirectory, AccountInfo};

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

/// One entry of `scopes`: whom it names, which accounts it covers, for which actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeRule {
    pub who: Allow,
    /// Account ids; `"*"` covers every account.
    pub accounts: BTreeSet<String>,
    /// Tags the account must have (all of them).
    pub account_tags: BTreeMap<String, String>,
    /// The actions it applies to; empty: every action.
    pub actions: BTreeSet<Action>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    #[serde(default)]
    users: BTreeSet<String>,
    #[serde(default)]
    usergroups: BTreeSet<String>,
    #[serde(default)]
    accounts: BTreeSet<String>,
    #[serde(default)]
    account_tags: BTreeMap<String, String>,
    #[serde(default)]
    actions: BTreeSet<String>,
}

impl ScopeRule {
    fn every_account(&self) -> bool {
        self.accounts.contains("*")
    }

    fn applies_to(&self, action: Action) -> bool {
        self.actions.is_empty() || self.actions.contains(&action)
    }

    /// True when the entry covers `account`: listed, or tagged as it asks.
    pub fn covers(&self, account: &AccountInfo) -> bool {
        self.every_account()
            || self.accounts.contains(&account.id)
            || (!self.account_tags.is_empty() && tags_match(&self.account_tags, &account.tags))
    }
}

/// Which accounts' incidents a person reaches with one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every account: no `scopes` in the policy, or an entry with `"*"`.
    All,
    /// The accounts these entries cover (none: no account at all).
    Only(Vec<&'a ScopeRule>),
}

impl Scope<'_> {
    pub fn covers(&self, account: &AccountInfo) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(entries) => entries.iter().any(|e| e.covers(account)),
        }
    }

    /// The accounts the scope covers that are known by id: listed in an entry, or in
    /// `directory` with matching tags, or `home` (described by `home_info`) when
    /// covered. `None` for [`Scope::All`]. What a silence set by a scoped person is
    /// limited to, so it can never hold another account's alarms.
    pub fn known_accounts(
        &self,
        directory: Option<&AccountDirectory>,
        home_info: Option<&AccountInfo>,
    ) -> Option<BTreeSet<String>> {
        let Scope::Only(entries) = self else {
            return None;
        };
        let mut out = BTreeSet::new();
        for e in entries {
            out.extend(e.accounts.iter().cloned());
            if let (false, Some(dir)) = (e.account_tags.is_empty(), directory) {
                out.extend(dir.accounts_tagged(&e.account_tags));
            }
        }
        if let Some(home) = home_info.filter(|h| self.covers(h)) {
            out.insert(home.id.clone());
        }
        Some(out)
    }
}

/// The policy: a rule per action, the `default` rule, and the account scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionPolicy {
    rules: BTreeMap<Action, Allow>,
    default: Option<Allow>,
    /// `None`: no `scopes` key (every account).
    scopes: Option<Vec<ScopeRule>>,
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
    #[error("Slack action policy: unknown key {0:?} (expected acknowledge, resolve, rerun, note, declare, read, silence, default or scopes)")]
    UnknownKey(String),
    #[error("Slack action policy: {rule}: {detail}")]
    Rule { rule: String, detail: String },
    #[error("Slack action policy: scopes[{index}]: {detail}")]
    Scope { index: usize, detail: String },
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
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(json).map_err(|e| {
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
        for (key, value) in raw {
            if key == "scopes" {
                policy.scopes = Some(parse_scopes(value)?);
                continue;
            }
            let allow: Allow = serde_json::from_value(value).map_err(|e| PolicyError::Rule {
                rule: crate::text::truncate(&key, 40),
                detail: e.to_string(),
            })?;
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

    /// True when the policy has `scopes`: actions on incidents are limited by account.
    pub fn is_scoped(&self) -> bool {
        self.scopes.is_some()
    }

    /// Which accounts' incidents `user_id`, member of `groups_of_user`, reaches with
    /// `action` (whether the action is allowed at all is [`ActionPolicy::allows`]).
    pub fn scope<S: AsRef<str>>(
        &self,
        action: Action,
        user_id: &str,
        groups_of_user: &[S],
    ) -> Scope<'_> {
        let Some(scopes) = &self.scopes else {
            return Scope::All;
        };
        let mine: Vec<&ScopeRule> = scopes
            .iter()
            .filter(|e| e.applies_to(action) && e.who.allows(user_id, groups_of_user))
            .collect();
        if mine.iter().any(|e| e.every_account()) {
            Scope::All
        } else {
            Scope::Only(mine)
        }
    }

    /// The user groups whose membership decides `action` (and its scope) for
    /// `user_id`: empty when the user is named by id or the rule names no groups, so
    /// the caller looks up memberships (`usergroups.users.list`) only when it matters.
    pub fn groups_to_check(&self, action: Action, user_id: &str) -> Vec<&str> {
        let mut out: BTreeSet<&str> = match self.rule(action) {
            Some(r) if !r.users.contains(user_id) => {
                r.usergroups.iter().map(String::as_str).collect()
            }
            _ => BTreeSet::new(),
        };
        for e in self
            .scopes
            .iter()
            .flatten()
            .filter(|e| e.applies_to(action))
        {
            if !e.who.users.contains(user_id) {
                out.extend(e.who.usergroups.iter().map(String::as_str));
            }
        }
        out.into_iter().collect()
    }

    /// Every user group named anywhere (to warm a membership cache).
    pub fn all_usergroups(&self) -> BTreeSet<&str> {
        self.rules
            .values()
            .chain(self.default.as_ref())
            .chain(self.scopes.iter().flatten().map(|e| &e.who))
            .flat_map(|r| r.usergroups.iter().map(String::as_str))
            .collect()
    }
}

/// Parses and checks `scopes`: a list of entries, each naming people and accounts.
fn parse_scopes(value: serde_json::Value) -> Result<Vec<ScopeRule>, PolicyError> {
    let raw: Vec<RawScope> = serde_json::from_value(value).map_err(|e| PolicyError::Rule {
        rule: "scopes".into(),
        detail: format!("{e} (expected a list of {{\"users\"/\"usergroups\", \"accounts\"/\"account_tags\", \"actions\"}})"),
    })?;
    let mut out = Vec::with_capacity(raw.len());
    for (index, r) in raw.into_iter().enumerate() {
        let bad = |detail: String| PolicyError::Scope { index, detail };
        let who = Allow {
            users: r.users,
            usergroups: r.usergroups,
        };
        who.validate(&format!("scopes[{index}]"))?;
        if who.users.is_empty() && who.usergroups.is_empty() {
            return Err(bad("names nobody (give users and/or usergroups)".into()));
        }
        if r.accounts.is_empty() && r.account_tags.is_empty() {
            return Err(bad(
                "covers no account (give accounts, [\"*\"] for every account, and/or account_tags)"
                    .into(),
            ));
        }
        if let Some(a) = r.accounts.iter().find(|a| *a != "*" && !is_account_id(a)) {
            return Err(bad(format!(
                "accounts: {:?} is not a 12-digit account id or \"*\"",
                crate::text::truncate(a, 40)
            )));
        }
        let mut actions = BTreeSet::new();
        for a in &r.actions {
            let action = Action::from_key(a)
                .filter(|a| *a != Action::Declare)
                .ok_or_else(|| {
                    bad(format!(
                        "actions: {:?} is not an action on incidents (acknowledge, resolve, rerun, note, read or silence)",
                        crate::text::truncate(a, 40)
                    ))
                })?;
            actions.insert(action);
        }
        out.push(ScopeRule {
            who,
            accounts: r.accounts,
            account_tags: r.account_tags,
            actions,
        });
    }
    Ok(out)
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
            matches!(&e, PolicyError::Rule { rule, detail } if rule == "read" && detail.contains("unknown field `user`")),
            "{e}"
        );
        let e = ActionPolicy::from_json(r#"{"read": {"users": ["U0123ABCD"]"#).unwrap_err();
        assert!(matches!(&e, PolicyError::Json { line: 1, .. }), "{e}");
        let e = ActionPolicy::from_env(&Env::from_pairs([(POLICY_ENV, "[1]")])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("configuration: environment variable SLACK_ACTION_POLICY=\"[1]\" is invalid: Slack action policy is not valid JSON"),
            "{e}"
        );
        assert!(!e.retryable());
    }

    const SCOPED: &str = r#"{
        "resolve": {"usergroups": ["S0NOC", "S0PAYMENTS", "S0RETAIL"]},
        "read": {"usergroups": ["S0NOC", "S0PAYMENTS", "S0RETAIL"], "users": ["U0AUDITOR"]},
        "scopes": [
            {"usergroups": ["S0NOC"], "accounts": ["*"]},
            {"usergroups": ["S0PAYMENTS"], "accounts": ["111122223333"]},
            {"usergroups": ["S0RETAIL"], "account_tags": {"team": "retail"}},
            {"users": ["U0AUDITOR"], "accounts": ["*"], "actions": ["read"]}
        ]
    }"#;

    fn account(id: &str, tags: &[(&str, &str)]) -> AccountInfo {
        AccountInfo {
            id: id.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..AccountInfo::default()
        }
    }

    #[test]
    fn without_scopes_every_account_is_reached() {
        let p = ActionPolicy::from_json(POLICY).unwrap();
        assert!(!p.is_scoped());
        let s = p.scope(Action::Resolve, "U0555XYZ", &["S0123ONCALL"]);
        assert_eq!(s, Scope::All);
        assert!(s.covers(&account("444455556666", &[])));
        assert_eq!(s.known_accounts(None, None), None);
    }

    #[test]
    fn scopes_limit_each_team_to_its_accounts() {
        let p = ActionPolicy::from_json(SCOPED).unwrap();
        assert!(p.is_scoped());
        let payments = account("111122223333", &[("team", "payments")]);
        let retail = account("444455556666", &[("team", "retail")]);
        let pay = p.scope(Action::Resolve, "U0PAYER", &["S0PAYMENTS"]);
        assert!(pay.covers(&payments));
        assert!(!pay.covers(&retail));
        let ret = p.scope(Action::Resolve, "U0SHOP", &["S0RETAIL"]);
        assert!(ret.covers(&retail) && !ret.covers(&payments));
        // The retail entry goes by tag: any account tagged team=retail.
        assert!(ret.covers(&account("777788889999", &[("team", "retail")])));
        assert_eq!(p.scope(Action::Resolve, "U0NOCER", &["S0NOC"]), Scope::All);
        // Someone in two teams reaches both.
        let both = p.scope(Action::Read, "U0BOTH", &["S0PAYMENTS", "S0RETAIL"]);
        assert!(both.covers(&payments) && both.covers(&retail));
    }

    #[test]
    fn scoped_policies_deny_by_default_and_entries_apply_to_their_actions() {
        let p = ActionPolicy::from_json(SCOPED).unwrap();
        // Allowed to read by the rule, but in no entry: reaches no account.
        let nobody = p.scope(Action::Read, "U0STRANGER", NONE);
        assert_eq!(nobody, Scope::Only(vec![]));
        assert!(!nobody.covers(&account("111122223333", &[])));
        // The auditor reads everything and resolves nothing.
        assert_eq!(p.scope(Action::Read, "U0AUDITOR", NONE), Scope::All);
        assert_eq!(
            p.scope(Action::Resolve, "U0AUDITOR", NONE),
            Scope::Only(vec![])
        );
    }

    #[test]
    fn known_accounts_of_a_scope_list_ids_tagged_directory_accounts_and_home() {
        let p = ActionPolicy::from_json(SCOPED).unwrap();
        let dir = AccountDirectory::from_json(
            r#"{"accounts": {"444455556666": {"ou": "retail"}, "777788889999": {"tags": {"team": "retail"}},
                             "111122223333": {"ou": "payments"}},
                "ous": {"retail": {"tags": {"team": "retail"}}, "payments": {"tags": {"team": "payments"}}}}"#,
        )
        .unwrap();
        let home = account("123456789012", &[("team", "retail")]);
        let ret = p.scope(Action::Silence, "U0SHOP", &["S0RETAIL"]);
        assert_eq!(
            ret.known_accounts(Some(&dir), Some(&home)).unwrap(),
            BTreeSet::from([
                "123456789012".to_string(),
                "444455556666".into(),
                "777788889999".into()
            ])
        );
        let pay = p.scope(Action::Silence, "U0PAYER", &["S0PAYMENTS"]);
        assert_eq!(
            pay.known_accounts(Some(&dir), Some(&home)).unwrap(),
            BTreeSet::from(["111122223333".to_string()])
        );
    }

    #[test]
    fn groups_to_check_include_the_scopes_groups() {
        let p = ActionPolicy::from_json(SCOPED).unwrap();
        assert_eq!(
            p.groups_to_check(Action::Resolve, "U0PAYER"),
            vec!["S0NOC", "S0PAYMENTS", "S0RETAIL"]
        );
        // The auditor is named by id in the read rule; the scopes still need groups.
        assert_eq!(
            p.groups_to_check(Action::Read, "U0AUDITOR"),
            vec!["S0NOC", "S0PAYMENTS", "S0RETAIL"]
        );
        assert!(p.all_usergroups().contains("S0PAYMENTS"));
    }

    #[test]
    fn bad_scopes_are_start_up_errors_naming_the_entry() {
        for (json, want) in [
            (r#"{"scopes": {}}"#, "scopes: invalid type"),
            (
                r#"{"scopes": [{"usergroups": ["S0A"]}]}"#,
                "scopes[0]: covers no account",
            ),
            (
                r#"{"scopes": [{"accounts": ["*"]}]}"#,
                "scopes[0]: names nobody",
            ),
            (
                r#"{"scopes": [{"users": ["U0A"], "accounts": ["*"]}, {"users": ["U0B"], "accounts": ["1111"]}]}"#,
                "scopes[1]: accounts: \"1111\" is not a 12-digit account id",
            ),
            (
                r#"{"scopes": [{"users": ["U0A"], "accounts": ["*"], "actions": ["declare"]}]}"#,
                "scopes[0]: actions: \"declare\" is not an action on incidents",
            ),
            (
                r#"{"scopes": [{"users": ["jane"], "accounts": ["*"]}]}"#,
                "scopes[0]: \"jane\" is not a Slack user id",
            ),
            (
                r#"{"scopes": [{"users": ["U0A"], "account": ["*"]}]}"#,
                "unknown field `account`",
            ),
        ] {
            let e = ActionPolicy::from_json(json).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e}");
        }
    }
}
