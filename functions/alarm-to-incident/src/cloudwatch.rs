//! Reading alarms back from CloudWatch for the reconciliation sweep: `DescribeAlarms`
//! by name, at most 100 names per request (the API's limit), following `NextToken`,
//! each metric alarm normalized into the same [`Alarm`] the events give, with
//! `StateUpdatedTimestamp` as the transition time (what the alarm events carry as
//! `state.timestamp`, so the watermark compares like with like).
//!
//! Only metric alarms are asked for (the API's default): composite alarms are
//! returned only to a `cloudwatch:DescribeAlarms` permission on `*`, and the role
//! names the pipeline's alarms (template.yaml).
//!
//! The time series (contributors) of a multi-time-series alarm are read with
//! `DescribeAlarmContributors`: one alarm name per request, `NextToken` followed. It
//! lists the contributors in `ALARM` only (its API reference: "the current alarm
//! contributors that are in ALARM state"), each with its id, attributes, reason and
//! `StateTransitionedTimestamp` (optional in the API).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::MetricAlarm;
use chrono::{DateTime, TimeZone, Utc};
use shared::alarm::{
    condition_from_queries, Alarm, AlarmCondition, AlarmState, ArnOrigin, ConditionFacts,
    Contributor, EventShape, MetricCondition, MetricIdentity, MetricQuery,
};
use shared::error::{AwsError, Retryable};
use shared::member_access::{AssumedRoles, MemberAccessFailure};

/// `AlarmNames` per `DescribeAlarms` request at most (API limit).
pub const NAMES_PER_REQUEST: usize = 100;
/// `MaxRecords` per page (API limit).
pub const MAX_RECORDS: i32 = 100;
/// Pages followed per batch of names at most (a batch of 100 names fits one page).
pub const PAGES_MAX: usize = 20;
/// `DescribeAlarmContributors` pages followed per alarm at most (the API sets no page
/// size; a bound so a token that never ends cannot hold the sweep).
pub const CONTRIBUTOR_PAGES_MAX: usize = 100;

/// One time series of a multi-time-series alarm that `DescribeAlarmContributors`
/// lists, so in `ALARM` now.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedContributor {
    pub contributor: Contributor,
    /// `StateReason`.
    pub reason: String,
    /// `StateTransitionedTimestamp`: when it entered `ALARM` (optional in the API).
    pub since: Option<DateTime<Utc>>,
}

/// What `DescribeAlarmContributors` answered for one alarm.
#[derive(Debug, Clone, PartialEq)]
pub enum ContributorRead {
    /// Every page: the contributors in `ALARM` (the API lists no other).
    InAlarm(Vec<ListedContributor>),
    /// CloudWatch declined this alarm only, and trying again cannot help: it no longer
    /// exists (`ResourceNotFoundException`), is not a multi-time-series alarm, or the
    /// role may not read its contributors (`AccessDenied`: a member stack older than
    /// this action). Its contributors are reported, not reconciled.
    NotRead { code: String, message: String },
}

/// Why alarms could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The stack's own account: nothing is applied, the sweep fails (and is retried
    /// or runs again on schedule).
    #[error(transparent)]
    Home(#[from] AwsError),
    /// A member account: its alarm-reader role is missing, refuses, or may not
    /// `DescribeAlarms`. The sweep reports and counts it and goes on with the others.
    #[error("{}: {}", .0.headline(), .0.message)]
    Member(MemberAccessFailure),
}

/// Reads alarms by name, in the account and region they live in.
#[async_trait]
pub trait AlarmReader: Send + Sync {
    /// The metric alarms of these names that exist in `account` and `region`,
    /// normalized; any failed request fails the whole read (nothing is applied from a
    /// partial one).
    async fn describe(
        &self,
        account: &str,
        region: &str,
        names: &[String],
    ) -> Result<Vec<Alarm>, ReadError>;

    /// The contributors in `ALARM` of each multi-time-series alarm `names` names, in
    /// `account` and `region`, by alarm name. A throttled or failing request fails the
    /// whole read (nothing is applied from a partial one); an alarm CloudWatch declines
    /// for good is [`ContributorRead::NotRead`].
    async fn contributors(
        &self,
        account: &str,
        region: &str,
        names: &[String],
    ) -> Result<BTreeMap<String, ContributorRead>, ReadError>;
}

/// The session name a member's CloudTrail shows for the sweep's reads.
pub const SESSION_NAME: &str = "incident-pipeline-alarm-to-incident";

/// Member accounts' alarms (organization mode): read through each member's
/// alarm-reader role (`member.yaml`), assumed with STS, credentials cached per role.
pub struct MemberAlarms {
    pub assumed: AssumedRoles,
    pub home_account: String,
    /// `MEMBER_ALARM_READER_ROLE_NAME`; `None`: member alarms are not read (each
    /// sweep reports them).
    pub role: Option<String>,
}

/// [`AlarmReader`] on CloudWatch.
pub struct CloudWatchAlarms {
    /// The function's own account and region.
    client: aws_sdk_cloudwatch::Client,
    members: Option<MemberAlarms>,
}

impl CloudWatchAlarms {
    pub fn new(client: aws_sdk_cloudwatch::Client) -> Self {
        CloudWatchAlarms {
            client,
            members: None,
        }
    }

    /// The reader of the function's account; in organization mode also of the member
    /// accounts, through their alarm-reader role (`MEMBER_ALARM_READER_ROLE_NAME`).
    pub fn from_sdk(sdk: &aws_config::SdkConfig, config: &crate::config::Config) -> Self {
        let reader = CloudWatchAlarms::new(aws_sdk_cloudwatch::Client::new(sdk));
        let Some(org) = &config.org else {
            return reader;
        };
        let partition = shared::member_access::partition_of(&config.topic_arn);
        let sts = aws_sdk_sts::Client::new(sdk);
        reader.with_members(MemberAlarms {
            assumed: AssumedRoles::new(sts, sdk.clone(), &partition, SESSION_NAME),
            home_account: org.home_account.clone(),
            role: config.member_alarm_role.clone(),
        })
    }

    /// Organization mode: member accounts' alarms through their role.
    pub fn with_members(mut self, members: MemberAlarms) -> Self {
        self.members = Some(members);
        self
    }
}

impl CloudWatchAlarms {
    /// The client for `account` and `region`: the function's own (one account, or the
    /// home account), else one acting as the member's alarm-reader role, whose ARN
    /// comes with it.
    async fn client_for(
        &self,
        account: &str,
        region: &str,
    ) -> Result<(aws_sdk_cloudwatch::Client, Option<String>), ReadError> {
        let Some(members) = self.members.as_ref() else {
            // One account: every alarm is the function's own.
            return Ok((self.client.clone(), None));
        };
        if account == members.home_account {
            // The function's own credentials and region, as in one account (its role may
            // read its Region's alarms only: others come back missing).
            return Ok((self.client.clone(), None));
        }
        let Some(role) = members.role.as_deref() else {
            return Err(member_failure(
                account,
                region,
                String::new(),
                "NotConfigured".into(),
                "MEMBER_ALARM_READER_ROLE_NAME is not set: member accounts' alarms are not read"
                    .into(),
                false,
            ));
        };
        let config = members
            .assumed
            .config(account, region, role)
            .await
            .map_err(ReadError::Member)?;
        Ok((
            aws_sdk_cloudwatch::Client::new(&config),
            Some(members.assumed.role_arn(account, role)),
        ))
    }
}

fn member_failure(
    account: &str,
    region: &str,
    role_arn: String,
    code: String,
    message: String,
    retryable: bool,
) -> ReadError {
    ReadError::Member(MemberAccessFailure {
        account: account.to_string(),
        region: region.to_string(),
        role_arn,
        code,
        message,
        retryable,
    })
}

/// A failed request as the caller must see it: the home account's error, or a
/// member's failure naming the role it was made with.
fn read_error(account: &str, region: &str, role_arn: Option<String>, e: AwsError) -> ReadError {
    match role_arn {
        None => ReadError::Home(e),
        Some(role_arn) => {
            let code = e.code.clone().unwrap_or_else(|| e.kind().to_string());
            let retryable = e.retryable();
            member_failure(account, region, role_arn, code, e.to_string(), retryable)
        }
    }
}

#[async_trait]
impl AlarmReader for CloudWatchAlarms {
    async fn describe(
        &self,
        account: &str,
        region: &str,
        names: &[String],
    ) -> Result<Vec<Alarm>, ReadError> {
        let (client, role_arn) = self.client_for(account, region).await?;
        describe_with(&client, names)
            .await
            .map_err(|e| read_error(account, region, role_arn, e))
    }

    async fn contributors(
        &self,
        account: &str,
        region: &str,
        names: &[String],
    ) -> Result<BTreeMap<String, ContributorRead>, ReadError> {
        let (client, role_arn) = self.client_for(account, region).await?;
        let mut out = BTreeMap::new();
        for name in names {
            let read = contributors_with(&client, name)
                .await
                .map_err(|e| read_error(account, region, role_arn.clone(), e))?;
            out.insert(name.clone(), read);
        }
        Ok(out)
    }
}

/// `DescribeAlarmContributors` of one alarm on `client`, every page. Throttling,
/// timeouts and 5xx are errors (the sweep retries later); a refusal of this alarm is
/// [`ContributorRead::NotRead`].
async fn contributors_with(
    client: &aws_sdk_cloudwatch::Client,
    name: &str,
) -> Result<ContributorRead, AwsError> {
    let mut listed = vec![];
    let mut token: Option<String> = None;
    for _ in 0..CONTRIBUTOR_PAGES_MAX {
        let page = match client
            .describe_alarm_contributors()
            .alarm_name(name)
            .set_next_token(token.take())
            .send()
            .await
        {
            Ok(page) => page,
            Err(e) => {
                let e = AwsError::from_sdk("cloudwatch", "DescribeAlarmContributors", e);
                if e.retryable() {
                    return Err(e);
                }
                return Ok(ContributorRead::NotRead {
                    code: e.code.clone().unwrap_or_else(|| e.kind().to_string()),
                    message: e.message,
                });
            }
        };
        for c in page.alarm_contributors() {
            match listed_contributor(c) {
                Some(l) => listed.push(l),
                None => tracing::warn!(
                    alarm = name,
                    contributor = c.contributor_id().unwrap_or_default(),
                    "DescribeAlarmContributors answered a contributor without a usable id; skipped"
                ),
            }
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(ContributorRead::InAlarm(listed)),
        }
    }
    tracing::warn!(
        alarm = name,
        pages = CONTRIBUTOR_PAGES_MAX,
        "DescribeAlarmContributors kept answering NextToken; the contributors after that many pages are not read"
    );
    Ok(ContributorRead::InAlarm(listed))
}

/// A listed contributor; `None` without an id the pipeline can key it by.
pub fn listed_contributor(
    c: &aws_sdk_cloudwatch::types::AlarmContributor,
) -> Option<ListedContributor> {
    let id = c.contributor_id()?.trim();
    if !Contributor::valid_id(id) {
        return None;
    }
    let attributes = c
        .contributor_attributes()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Some(ListedContributor {
        contributor: Contributor {
            id: id.to_string(),
            attributes,
        },
        reason: c.state_reason().unwrap_or_default().to_string(),
        since: c.state_transitioned_timestamp().and_then(time),
    })
}

/// `DescribeAlarms` of `names` on `client`: batches of [`NAMES_PER_REQUEST`], pages
/// followed.
async fn describe_with(
    client: &aws_sdk_cloudwatch::Client,
    names: &[String],
) -> Result<Vec<Alarm>, AwsError> {
    let mut out = Vec::new();
    for batch in names.chunks(NAMES_PER_REQUEST) {
        let mut token: Option<String> = None;
        for _ in 0..PAGES_MAX {
            let page = client
                .describe_alarms()
                .set_alarm_names(Some(batch.to_vec()))
                .max_records(MAX_RECORDS)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("cloudwatch", "DescribeAlarms", e))?;
            for m in page.metric_alarms() {
                match normalize_described(m) {
                    Some(a) => out.push(a),
                    None => tracing::warn!(
                        alarm = m.alarm_name().unwrap_or_default(),
                        "DescribeAlarms answered an alarm without name, ARN, state or time; skipped"
                    ),
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    Ok(out)
}

fn time(t: &aws_sdk_cloudwatch::primitives::DateTime) -> Option<DateTime<Utc>> {
    let ms = t.to_millis().ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

fn dims(d: &[aws_sdk_cloudwatch::types::Dimension]) -> std::collections::BTreeMap<String, String> {
    d.iter()
        .filter_map(|d| Some((d.name()?.to_string(), d.value()?.to_string())))
        .collect()
}

fn positive(v: Option<i32>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

/// A described metric alarm as the pipeline's [`Alarm`]; `None` without the fields
/// that identify a transition (name, ARN, state, `StateUpdatedTimestamp`).
pub fn normalize_described(m: &MetricAlarm) -> Option<Alarm> {
    let arn = m.alarm_arn()?.to_string();
    // arn:<partition>:cloudwatch:<region>:<account>:alarm:<name>
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    let (region, account) = (parts.get(3)?.to_string(), parts.get(4)?.to_string());
    let state = AlarmState::parse(m.state_value()?.as_str())?;
    let changed_at = time(m.state_updated_timestamp()?)?;
    let comparison = m.comparison_operator().map(|c| c.as_str().to_string());
    let condition = if !m.metrics().is_empty() {
        let queries: Vec<MetricQuery> = m
            .metrics()
            .iter()
            .map(|q| {
                let stat = q.metric_stat();
                MetricQuery {
                    id: q.id().unwrap_or_default().to_string(),
                    expression: q.expression().map(str::to_string),
                    metric: stat.and_then(|s| s.metric()).map(|metric| MetricIdentity {
                        namespace: metric.namespace().unwrap_or_default().to_string(),
                        name: metric.metric_name().unwrap_or_default().to_string(),
                        dimensions: dims(metric.dimensions()),
                    }),
                    statistic: stat.and_then(|s| s.stat()).map(str::to_string),
                    period_seconds: positive(stat.and_then(|s| s.period()).or(q.period())),
                    label: q.label().map(str::to_string),
                    return_data: q.return_data().unwrap_or(true),
                }
            })
            .collect();
        // The same kinds (metric, math, anomaly band, Metrics Insights) as the events'.
        condition_from_queries(
            queries,
            ConditionFacts {
                threshold: m.threshold(),
                threshold_metric_id: m.threshold_metric_id().map(str::to_string),
                comparison,
                evaluation_periods: positive(m.evaluation_periods()),
                treat_missing_data: m.treat_missing_data().map(str::to_string),
                period_seconds: positive(m.period()),
                ..ConditionFacts::default()
            },
        )
    } else if let Some(name) = m.metric_name() {
        AlarmCondition::Metric(MetricCondition {
            metric: MetricIdentity {
                namespace: m.namespace().unwrap_or_default().to_string(),
                name: name.to_string(),
                dimensions: dims(m.dimensions()),
            },
            statistic: m
                .extended_statistic()
                .map(str::to_string)
                .or_else(|| m.statistic().map(|s| s.as_str().to_string())),
            period_seconds: positive(m.period()),
            threshold: m.threshold(),
            comparison,
            evaluation_periods: positive(m.evaluation_periods()),
            unit: m
                .unit()
                .map(|u| u.as_str().to_string())
                .filter(|u| u != "None"),
            treat_missing_data: m.treat_missing_data().map(str::to_string),
        })
    } else {
        AlarmCondition::Unknown
    };
    Some(Alarm {
        name: m.alarm_name()?.to_string(),
        arn,
        account,
        region,
        state,
        previous_state: None,
        reason: m.state_reason().unwrap_or_default().to_string(),
        changed_at,
        description: m
            .alarm_description()
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        condition,
        shape: EventShape::DescribeAlarms,
        muted: None,
        // DescribeAlarms describes the alarm as a whole.
        contributor: None,
        arn_origin: ArnOrigin::Event,
    })
}

/// An [`AlarmReader`] answering from a list (or failing), for handler tests.
#[cfg(test)]
pub(crate) mod fakes {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    pub struct FakeAlarms {
        pub alarms: Mutex<Vec<Alarm>>,
        pub fail_next: Mutex<Option<AwsError>>,
        /// Accounts whose reads fail like a member role that is missing or refuses.
        pub unreachable: Mutex<BTreeMap<String, MemberAccessFailure>>,
        /// The names asked for, per request.
        pub requests: Mutex<Vec<Vec<String>>>,
        /// (account, region) of each request.
        pub places: Mutex<Vec<(String, String)>>,
        /// `DescribeAlarmContributors`: the contributors in `ALARM` by (account, alarm
        /// name); an alarm not set here lists none.
        pub listed: Mutex<BTreeMap<(String, String), Vec<ListedContributor>>>,
        /// Alarm names CloudWatch declines (code), by name.
        pub declined: Mutex<BTreeMap<String, String>>,
        /// The next `contributors` read fails like this (the home account's error).
        pub fail_contributors_next: Mutex<Option<AwsError>>,
        /// (account, alarm names) asked for with `DescribeAlarmContributors`, per read.
        pub contributor_requests: Mutex<Vec<(String, Vec<String>)>>,
    }

    impl FakeAlarms {
        pub fn set(&self, alarms: Vec<Alarm>) {
            *self.alarms.lock().unwrap() = alarms;
        }

        /// What `DescribeAlarmContributors` lists for alarm `name` of `account`.
        pub fn list(&self, account: &str, name: &str, contributors: Vec<ListedContributor>) {
            self.listed
                .lock()
                .unwrap()
                .insert((account.to_string(), name.to_string()), contributors);
        }
    }

    #[async_trait]
    impl AlarmReader for FakeAlarms {
        async fn describe(
            &self,
            account: &str,
            region: &str,
            names: &[String],
        ) -> Result<Vec<Alarm>, ReadError> {
            self.requests.lock().unwrap().push(names.to_vec());
            self.places
                .lock()
                .unwrap()
                .push((account.to_string(), region.to_string()));
            if let Some(f) = self.unreachable.lock().unwrap().get(account) {
                return Err(ReadError::Member(f.clone()));
            }
            if let Some(e) = self.fail_next.lock().unwrap().take() {
                return Err(ReadError::Home(e));
            }
            Ok(self
                .alarms
                .lock()
                .unwrap()
                .iter()
                .filter(|a| names.contains(&a.name))
                .filter(|a| account.is_empty() || a.account == account)
                .cloned()
                .collect())
        }

        async fn contributors(
            &self,
            account: &str,
            _region: &str,
            names: &[String],
        ) -> Result<BTreeMap<String, ContributorRead>, ReadError> {
            self.contributor_requests
                .lock()
                .unwrap()
                .push((account.to_string(), names.to_vec()));
            if let Some(f) = self.unreachable.lock().unwrap().get(account) {
                return Err(ReadError::Member(f.clone()));
            }
            if let Some(e) = self.fail_contributors_next.lock().unwrap().take() {
                return Err(ReadError::Home(e));
            }
            let listed = self.listed.lock().unwrap();
            let declined = self.declined.lock().unwrap();
            Ok(names
                .iter()
                .map(|n| {
                    let read = match declined.get(n) {
                        Some(code) => ContributorRead::NotRead {
                            code: code.clone(),
                            message: format!("declined by the test: {code}"),
                        },
                        None => ContributorRead::InAlarm(
                            listed
                                .get(&(account.to_string(), n.clone()))
                                .cloned()
                                .unwrap_or_default(),
                        ),
                    };
                    (n.clone(), read)
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudwatch::operation::describe_alarms::{
        DescribeAlarmsError, DescribeAlarmsOutput,
    };
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, StateValue, Statistic};
    use aws_smithy_mocks::mock;
    use aws_smithy_types::error::ErrorMetadata;
    use shared::error::Retryable;

    pub(crate) fn metric_alarm(name: &str, state: StateValue, at_ms: i64) -> MetricAlarm {
        MetricAlarm::builder()
            .alarm_name(name)
            .alarm_arn(format!(
                "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{name}"
            ))
            .state_value(state)
            .state_reason("Threshold Crossed: 1 datapoint [0.0] was less than the threshold (1.0).")
            .state_updated_timestamp(aws_smithy_types::DateTime::from_millis(at_ms))
            .namespace("AWS/VPN")
            .metric_name("TunnelState")
            .dimensions(
                Dimension::builder()
                    .name("VpnId")
                    .value("vpn-0f1e2d3c4b5a69788")
                    .build(),
            )
            .statistic(Statistic::Minimum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(ComparisonOperator::LessThanThreshold)
            .treat_missing_data("missing")
            .build()
    }

    #[test]
    fn described_metric_alarm_normalizes_like_its_event() {
        let m = metric_alarm("vpn-tunnel-down", StateValue::Ok, 1_795_600_860_490);
        let a = normalize_described(&m).unwrap();
        assert_eq!(a.state, AlarmState::Ok);
        assert_eq!(a.changed_at.timestamp_millis(), 1_795_600_860_490);
        assert_eq!(
            (a.region.as_str(), a.account.as_str()),
            ("eu-west-1", "123456789012")
        );
        assert_eq!(a.vpn_id(), Some("vpn-0f1e2d3c4b5a69788"));
        assert_eq!(a.statistic(), Some("Minimum"));
        assert_eq!(a.shape, EventShape::DescribeAlarms);
        assert!(normalize_described(&MetricAlarm::builder().alarm_name("x").build()).is_none());
    }

    #[tokio::test]
    async fn names_go_in_batches_of_100_and_pages_are_followed() {
        let names: Vec<String> = (0..150).map(|i| format!("alarm-{i:03}")).collect();
        let first = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
            .match_requests(|r| {
                r.alarm_names().len() == 100
                    && r.alarm_names()[0] == "alarm-000"
                    && r.next_token().is_none()
            })
            .then_output(|| {
                DescribeAlarmsOutput::builder()
                    .metric_alarms(metric_alarm("alarm-000", StateValue::Alarm, 1_000))
                    .next_token("page-2")
                    .build()
            });
        let second = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
            .match_requests(|r| r.alarm_names().len() == 100 && r.next_token() == Some("page-2"))
            .then_output(|| {
                DescribeAlarmsOutput::builder()
                    .metric_alarms(metric_alarm("alarm-001", StateValue::Ok, 2_000))
                    .build()
            });
        let third = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
            .match_requests(|r| r.alarm_names().len() == 50 && r.alarm_names()[0] == "alarm-100")
            .then_output(|| DescribeAlarmsOutput::builder().build());
        let reader = CloudWatchAlarms::new(shared::mock_client!(
            aws_sdk_cloudwatch,
            [&first, &second, &third]
        ));
        let got = reader.describe("", "", &names).await.unwrap();
        let got: Vec<&str> = got.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(got, ["alarm-000", "alarm-001"]);
        assert_eq!(third.num_calls(), 1);
    }

    /// CloudWatch's throttling answer.
    fn throttling() -> ErrorMetadata {
        ErrorMetadata::builder()
            .code("Throttling")
            .message("Rate exceeded")
            .build()
    }

    /// The home account's error of a failed read.
    fn home_error<T: std::fmt::Debug>(read: Result<T, ReadError>) -> AwsError {
        match read {
            Err(ReadError::Home(e)) => e,
            other => panic!("the home account's error, not {other:?}"),
        }
    }

    #[tokio::test]
    async fn throttling_is_a_retryable_error() {
        let throttled = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
            .then_error(|| DescribeAlarmsError::generic(throttling()));
        let reader = CloudWatchAlarms::new(shared::mock_client!(aws_sdk_cloudwatch, [&throttled]));
        let e = home_error(reader.describe("", "", &["a".to_string()]).await);
        assert!(e.retryable());
        assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
    }

    fn contributor(id: &str, vpn: &str, at_ms: i64) -> aws_sdk_cloudwatch::types::AlarmContributor {
        aws_sdk_cloudwatch::types::AlarmContributor::builder()
            .contributor_id(id)
            .contributor_attributes("VpnId", vpn)
            .state_reason("Threshold Crossed: 1 datapoint was less than the threshold (1.0).")
            .state_transitioned_timestamp(aws_smithy_types::DateTime::from_millis(at_ms))
            .build()
    }

    #[tokio::test]
    async fn contributors_are_read_one_alarm_per_request_with_pages_followed() {
        use aws_sdk_cloudwatch::operation::describe_alarm_contributors::DescribeAlarmContributorsOutput;
        let first = mock!(aws_sdk_cloudwatch::Client::describe_alarm_contributors)
            .match_requests(|r| r.alarm_name() == Some("all-vpns") && r.next_token().is_none())
            .then_output(|| {
                DescribeAlarmContributorsOutput::builder()
                    .alarm_contributors(contributor("3f9a1c7e5b2d8046", "vpn-1", 1_000))
                    .next_token("page-2")
                    .build()
            });
        let second = mock!(aws_sdk_cloudwatch::Client::describe_alarm_contributors)
            .match_requests(|r| {
                r.alarm_name() == Some("all-vpns") && r.next_token() == Some("page-2")
            })
            .then_output(|| {
                DescribeAlarmContributorsOutput::builder()
                    .alarm_contributors(contributor("a41d6e0b97c3f258", "vpn-2", 2_000))
                    // An id the pipeline cannot key by: skipped, not fatal.
                    .alarm_contributors(contributor("a/b", "vpn-3", 2_000))
                    .next_token("")
                    .build()
            });
        let other = mock!(aws_sdk_cloudwatch::Client::describe_alarm_contributors)
            .match_requests(|r| r.alarm_name() == Some("all-tunnels") && r.next_token().is_none())
            .then_output(|| DescribeAlarmContributorsOutput::builder().build());
        let reader = CloudWatchAlarms::new(shared::mock_client!(
            aws_sdk_cloudwatch,
            [&first, &second, &other]
        ));
        let names = ["all-vpns".to_string(), "all-tunnels".to_string()];
        let got = reader.contributors("", "", &names).await.unwrap();
        let ContributorRead::InAlarm(vpns) = &got["all-vpns"] else {
            panic!("listed: {got:?}")
        };
        let ids: Vec<(&str, &str)> = vpns
            .iter()
            .map(|l| {
                (
                    l.contributor.id.as_str(),
                    l.contributor.attributes["VpnId"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [("3f9a1c7e5b2d8046", "vpn-1"), ("a41d6e0b97c3f258", "vpn-2")]
        );
        assert_eq!(vpns[1].since.unwrap().timestamp_millis(), 2_000);
        assert!(vpns[0].reason.starts_with("Threshold Crossed"));
        assert_eq!(got["all-tunnels"], ContributorRead::InAlarm(vec![]));
        assert_eq!(
            (first.num_calls(), second.num_calls(), other.num_calls()),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn a_declined_alarm_is_not_read_and_a_throttled_read_fails_retryably() {
        use aws_sdk_cloudwatch::operation::describe_alarm_contributors::{
            DescribeAlarmContributorsError, DescribeAlarmContributorsOutput,
        };
        let gone = mock!(aws_sdk_cloudwatch::Client::describe_alarm_contributors)
            .match_requests(|r| r.alarm_name() == Some("deleted"))
            .then_error(|| {
                DescribeAlarmContributorsError::ResourceNotFoundException(
                    aws_sdk_cloudwatch::types::error::ResourceNotFoundException::builder()
                        .message("Alarm deleted does not exist")
                        .meta(
                            ErrorMetadata::builder()
                                .code("ResourceNotFoundException")
                                .message("Alarm deleted does not exist")
                                .build(),
                        )
                        .build(),
                )
            });
        let listed = mock!(aws_sdk_cloudwatch::Client::describe_alarm_contributors)
            .match_requests(|r| r.alarm_name() == Some("all-vpns"))
            .then_output(|| DescribeAlarmContributorsOutput::builder().build());
        let reader =
            CloudWatchAlarms::new(shared::mock_client!(aws_sdk_cloudwatch, [&gone, &listed]));
        let got = reader
            .contributors("", "", &["deleted".to_string(), "all-vpns".to_string()])
            .await
            .unwrap();
        assert!(
            matches!(&got["deleted"], ContributorRead::NotRead { code, .. } if code == "ResourceNotFoundException"),
            "{got:?}"
        );
        assert_eq!(got["all-vpns"], ContributorRead::InAlarm(vec![]));

        let throttled = mock!(aws_sdk_cloudwatch::Client::describe_alarm_contributors)
            .then_error(|| DescribeAlarmContributorsError::generic(throttling()));
        let reader = CloudWatchAlarms::new(shared::mock_client!(aws_sdk_cloudwatch, [&throttled]));
        let e = home_error(reader.contributors("", "", &["all-vpns".to_string()]).await);
        assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
        assert_eq!(e.operation, "DescribeAlarmContributors");
    }

    fn org_reader(
        sts_rules: &[&aws_smithy_mocks::Rule],
        role: Option<&str>,
        home: &[&aws_smithy_mocks::Rule],
    ) -> CloudWatchAlarms {
        let sts = shared::mock_client!(aws_sdk_sts, sts_rules.iter().copied());
        let base = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        CloudWatchAlarms::new(shared::mock_client!(
            aws_sdk_cloudwatch,
            home.iter().copied()
        ))
        .with_members(MemberAlarms {
            assumed: AssumedRoles::new(sts, base, "aws", SESSION_NAME),
            home_account: "123456789012".into(),
            role: role.map(str::to_string),
        })
    }

    #[tokio::test]
    async fn a_member_whose_role_refuses_or_is_not_configured_is_a_member_failure() {
        let denied = mock!(aws_sdk_sts::Client::assume_role)
            .match_requests(|r| {
                r.role_arn()
                    == Some("arn:aws:iam::111122223333:role/incident-pipeline-alarm-reader")
                    && r.role_session_name() == Some(SESSION_NAME)
            })
            .then_error(|| {
                aws_sdk_sts::operation::assume_role::AssumeRoleError::generic(
                    ErrorMetadata::builder()
                        .code("AccessDenied")
                        .message("not authorized to perform: sts:AssumeRole")
                        .build(),
                )
            });
        let reader = org_reader(&[&denied], Some("incident-pipeline-alarm-reader"), &[]);
        let names = ["vpn-tunnel-down".to_string()];
        let ReadError::Member(f) = reader
            .describe("111122223333", "eu-central-1", &names)
            .await
            .unwrap_err()
        else {
            panic!("a member failure")
        };
        assert_eq!(
            (f.code.as_str(), f.region.as_str()),
            ("AccessDenied", "eu-central-1")
        );
        assert_eq!(denied.num_calls(), 1);
        let reader = org_reader(&[], None, &[]);
        let ReadError::Member(f) = reader
            .describe("111122223333", "eu-west-1", &names)
            .await
            .unwrap_err()
        else {
            panic!("a member failure")
        };
        assert_eq!(f.code, "NotConfigured");
        // Contributors are read through the same role (or not at all).
        let ReadError::Member(f) = reader
            .contributors("111122223333", "eu-west-1", &names)
            .await
            .unwrap_err()
        else {
            panic!("a member failure")
        };
        assert_eq!(f.code, "NotConfigured");
    }

    #[tokio::test]
    async fn the_home_account_is_read_with_the_functions_own_credentials() {
        let home = mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_output(|| {
            DescribeAlarmsOutput::builder()
                .metric_alarms(metric_alarm("vpn-tunnel-down", StateValue::Ok, 1_000))
                .build()
        });
        let reader = org_reader(&[], Some("incident-pipeline-alarm-reader"), &[&home]);
        let got = reader
            .describe(
                "123456789012",
                "eu-west-1",
                &["vpn-tunnel-down".to_string()],
            )
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(home.num_calls(), 1, "no role assumed for the home account");
    }
}
