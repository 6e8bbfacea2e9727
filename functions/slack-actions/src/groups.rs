//! Which of the policy's user groups a person is in, from `usergroups.users.list`,
//! cached per group for a few minutes (a group's members change rarely; the request
//! path must answer Slack within 3 s).

use std::collections::HashMap;
use std::time::Duration;

use shared::error::Secret;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::slack_web::{SlackCallError, SlackWeb};

/// How long a group's member list is trusted.
pub const GROUP_TTL: Duration = Duration::from_secs(300);

/// Members per user group, cached.
#[derive(Debug)]
pub struct GroupCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

impl Default for GroupCache {
    fn default() -> Self {
        GroupCache::new(GROUP_TTL)
    }
}

impl GroupCache {
    pub fn new(ttl: Duration) -> Self {
        GroupCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The groups among `groups` that `user` belongs to.
    pub async fn groups_of(
        &self,
        slack: &dyn SlackWeb,
        token: &Secret<String>,
        user: &str,
        groups: &[&str],
    ) -> Result<Vec<String>, SlackCallError> {
        let mut out = Vec::new();
        for group in groups {
            if self
                .members(slack, token, group)
                .await?
                .iter()
                .any(|u| u == user)
            {
                out.push((*group).to_string());
            }
        }
        Ok(out)
    }

    async fn members(
        &self,
        slack: &dyn SlackWeb,
        token: &Secret<String>,
        group: &str,
    ) -> Result<Vec<String>, SlackCallError> {
        {
            let entries = self.entries.lock().await;
            if let Some((at, members)) = entries.get(group) {
                if at.elapsed() < self.ttl {
                    return Ok(members.clone());
                }
            }
        }
        let members = slack.usergroup_members(token, group).await?;
        self.entries
            .lock()
            .await
            .insert(group.to_string(), (Instant::now(), members.clone()));
        Ok(members)
    }
}
