//! Reading alarms back from CloudWatch for the reconciliation sweep: `DescribeAlarms`
//! by name, at most 100 names per request (the API's limit), following `NextToken`,
//! each metric alarm normalized into the same [`Alarm`] the events give, with
//! `StateUpdatedTimestamp` as the transition time (what the alarm events carry as
//! `state.timestamp`, so the watermark compares like with like).
//!
//! Only metric alarms are asked for (the API's default): composite alarms are
//! returned only to a `cloudwatch:DescribeAlarms` permission on `*`, and the role
//! names the pipeline's alarms (template.yaml).

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::MetricAlarm;
use chrono::{DateTime, TimeZone, Utc};
use shared::alarm::{
    condition_from_queries, Alarm, AlarmCondition, AlarmState, ArnOrigin, ConditionFacts,
    EventShape, MetricCondition, MetricIdentity, MetricQuery,
};
use shared::error::AwsError;

/// `AlarmNames` per `DescribeAlarms` request at most (API limit).
pub const NAMES_PER_REQUEST: usize = 100;
/// `MaxRecords` per page (API limit).
pub const MAX_RECORDS: i32 = 100;
/// Pages followed per batch of names at most (a batch of 100 names fits one page).
pub const PAGES_MAX: usize = 20;

/// Reads alarms by name.
#[async_trait]
pub trait AlarmReader: Send + Sync {
    /// The metric alarms of these names that exist, normalized; any failed request
    /// fails the whole read (nothing is applied from a partial one).
    async fn describe(&self, names: &[String]) -> Result<Vec<Alarm>, AwsError>;
}

/// [`AlarmReader`] on CloudWatch.
#[derive(Debug, Clone)]
pub struct CloudWatchAlarms {
    client: aws_sdk_cloudwatch::Client,
}

impl CloudWatchAlarms {
    pub fn new(client: aws_sdk_cloudwatch::Client) -> Self {
        CloudWatchAlarms { client }
    }
}

#[async_trait]
impl AlarmReader for CloudWatchAlarms {
    async fn describe(&self, names: &[String]) -> Result<Vec<Alarm>, AwsError> {
        let mut out = Vec::new();
        for batch in names.chunks(NAMES_PER_REQUEST) {
            let mut token: Option<String> = None;
            for _ in 0..PAGES_MAX {
                let page = self
                    .client
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
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    pub struct FakeAlarms {
        pub alarms: Mutex<Vec<Alarm>>,
        pub fail_next: Mutex<Option<AwsError>>,
        pub requests: Mutex<Vec<Vec<String>>>,
    }

    impl FakeAlarms {
        pub fn set(&self, alarms: Vec<Alarm>) {
            *self.alarms.lock().unwrap() = alarms;
        }
    }

    #[async_trait]
    impl AlarmReader for FakeAlarms {
        async fn describe(&self, names: &[String]) -> Result<Vec<Alarm>, AwsError> {
            self.requests.lock().unwrap().push(names.to_vec());
            if let Some(e) = self.fail_next.lock().unwrap().take() {
                return Err(e);
            }
            Ok(self
                .alarms
                .lock()
                .unwrap()
                .iter()
                .filter(|a| names.contains(&a.name))
                .cloned()
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
        let got = reader.describe(&names).await.unwrap();
        let got: Vec<&str> = got.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(got, ["alarm-000", "alarm-001"]);
        assert_eq!(third.num_calls(), 1);
    }

    #[tokio::test]
    async fn throttling_is_a_retryable_error() {
        let throttled = mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_error(|| {
            DescribeAlarmsError::generic(
                ErrorMetadata::builder()
                    .code("Throttling")
                    .message("Rate exceeded")
                    .build(),
            )
        });
        let reader = CloudWatchAlarms::new(shared::mock_client!(aws_sdk_cloudwatch, [&throttled]));
        let e = reader.describe(&["a".to_string()]).await.unwrap_err();
        assert!(e.retryable());
        assert_eq!(e.lambda_error_type(), "Retryable.Throttled");
    }
}
