//! The Logs Insights query over the tunnel log group: start, poll within a budget
//! taken from the Lambda deadline, stop the query when the budget runs out and keep
//! what it returned so far (a partial report, never a hang).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::{QueryStatus, ResultField};
use aws_sdk_cloudwatchlogs::Client;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use shared::error::AwsError;
use shared::vpn::{parse_record, LogFacts, LogStatus, TunnelLogRecord, VpnConnectionId};
use tokio::time::Instant;
use tracing::{info, warn};

const SERVICE: &str = "logs";
/// Rows the query returns at most (Logs Insights allows up to 10,000).
pub const MAX_ROWS: i32 = 1000;

/// How long to wait for the query and how often to ask.
#[derive(Debug, Clone, Copy)]
pub struct QueryBudget {
    pub poll: PollSchedule,
    /// When to stop waiting (the Lambda deadline minus the time reporting needs).
    pub deadline: Instant,
}

/// When to ask for the results of a running query: the first `GetQueryResults` comes
/// `first` after `StartQuery`, and each wait after that is twice the one before, up to
/// `max`. A small query over a quiet log group is answered soon after it starts, so it
/// is not held back by a long first wait; a query that runs for seconds is asked about
/// once per `max`, as with a fixed interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSchedule {
    pub first: Duration,
    pub max: Duration,
}

impl PollSchedule {
    /// Production: 100 ms, 200 ms, 400 ms, 800 ms, then every second. A query that
    /// runs for n seconds costs about n + 4 `GetQueryResults` calls, and its results
    /// are read at most about a second (the longest wait) after it completes.
    pub const PRODUCTION: PollSchedule = PollSchedule {
        first: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };

    /// The same wait before every poll.
    pub const fn fixed(interval: Duration) -> PollSchedule {
        PollSchedule {
            first: interval,
            max: interval,
        }
    }

    /// The waits before each poll, without end (the deadline ends the polling).
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        let max = self.max.max(self.first);
        std::iter::successors(Some(self.first.min(max)), move |d| {
            Some(d.saturating_mul(2).min(max))
        })
    }
}

/// The Logs Insights query for the tunnels of one connection. The VPN id and the IPs
/// are validated (hex id, parsed IP addresses), so nothing from outside reaches the
/// query text unchecked.
pub fn query_string(vpn: &VpnConnectionId, tunnel_ips: &[String]) -> String {
    let ips: Vec<String> = tunnel_ips
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_string())
        .collect();
    let mut filter = vec![format!("@logStream like \"{vpn}\"")];
    if !ips.is_empty() {
        let list: Vec<String> = ips.iter().map(|ip| format!("\"{ip}\"")).collect();
        filter.push(format!("tunnel_ip in [{}]", list.join(", ")));
        filter.extend(ips.iter().map(|ip| format!("@logStream like \"{ip}\"")));
    }
    format!(
        "fields @timestamp, @logStream, @message\n| filter {}\n| sort @timestamp desc\n| limit {MAX_ROWS}",
        filter.join(" or ")
    )
}

/// Runs the query over `log_groups` for the window and parses the rows.
pub async fn query_tunnel_logs(
    client: &Client,
    log_groups: &[String],
    vpn: &VpnConnectionId,
    tunnel_ips: &[String],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    budget: QueryBudget,
) -> LogFacts {
    let mut facts = LogFacts {
        status: LogStatus::Complete,
        log_groups: log_groups.to_vec(),
        records: vec![],
        unreadable: 0,
    };
    let begun = Instant::now();
    let mut delays = budget.poll.delays();
    if budget.deadline.saturating_duration_since(begun) < budget.poll.first {
        facts.status = LogStatus::Partial {
            reason: "no time left before the Lambda deadline to query the tunnel logs".into(),
        };
        return facts;
    }
    let started = client
        .start_query()
        .set_log_group_names(Some(log_groups.to_vec()))
        .start_time(start.timestamp())
        .end_time(end.timestamp())
        .query_string(query_string(vpn, tunnel_ips))
        .limit(MAX_ROWS)
        .send()
        .await;
    let query_id = match started.map(|o| o.query_id().map(str::to_string)) {
        Ok(Some(id)) => id,
        Ok(None) => {
            facts.status = LogStatus::Failed {
                reason: "StartQuery returned no query id".into(),
            };
            return facts;
        }
        Err(e) => {
            facts.status = LogStatus::Failed {
                reason: AwsError::from_sdk(SERVICE, "StartQuery", e).to_string(),
            };
            return facts;
        }
    };
    let mut rows: Vec<Vec<ResultField>> = vec![];
    loop {
        let remaining = budget.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            stop(client, &query_id).await;
            facts.status = LogStatus::Partial {
                reason: format!(
                    "query still running after {} s (the budget left by the Lambda deadline); stopped",
                    begun.elapsed().as_secs()
                ),
            };
            break;
        }
        let delay = delays.next().unwrap_or(budget.poll.max);
        tokio::time::sleep(delay.min(remaining)).await;
        let out = match client.get_query_results().query_id(&query_id).send().await {
            Ok(out) => out,
            Err(e) => {
                stop(client, &query_id).await;
                facts.status = LogStatus::Failed {
                    reason: AwsError::from_sdk(SERVICE, "GetQueryResults", e).to_string(),
                };
                break;
            }
        };
        match out.status() {
            Some(QueryStatus::Complete) => {
                rows = out.results().to_vec();
                break;
            }
            Some(QueryStatus::Running) | Some(QueryStatus::Scheduled) | None => {
                // A running query returns the rows found so far: keep them for a
                // partial report if the budget runs out.
                if !out.results().is_empty() {
                    rows = out.results().to_vec();
                }
            }
            Some(other) => {
                facts.status = LogStatus::Failed {
                    reason: format!("query ended with status {}", other.as_str()),
                };
                break;
            }
        }
    }
    for row in &rows {
        match record_of(row) {
            Some(r) => facts.records.push(r),
            None => facts.unreadable += 1,
        }
    }
    info!(
        query_id = %query_id,
        rows = rows.len(),
        records = facts.records.len(),
        unreadable = facts.unreadable,
        "tunnel logs read"
    );
    facts
}

async fn stop(client: &Client, query_id: &str) {
    if let Err(e) = client.stop_query().query_id(query_id).send().await {
        // The query ends by itself after 60 minutes at most; nothing else to do.
        warn!(query_id, error = %AwsError::from_sdk(SERVICE, "StopQuery", e), "could not stop the Logs Insights query");
    }
}

/// A result row as a tunnel-log record: the JSON of `@message`, plus `@timestamp`
/// and `@logStream` where the record lacks them.
pub fn record_of(row: &[ResultField]) -> Option<TunnelLogRecord> {
    let mut fields = Map::new();
    for f in row {
        if let (Some(k), Some(v)) = (f.field(), f.value()) {
            fields.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    let mut obj = match fields
        .get("@message")
        .and_then(Value::as_str)
        .map(serde_json::from_str::<Value>)
    {
        Some(Ok(Value::Object(m))) => m,
        _ => return None,
    };
    for key in ["@timestamp", "@logStream"] {
        if let Some(v) = fields.get(key) {
            obj.entry(key.to_string()).or_insert_with(|| v.clone());
        }
    }
    parse_record(&Value::Object(obj)).ok()
}

/// The log groups of the tunnels that log to CloudWatch Logs (deduplicated).
pub fn log_groups<'a>(
    logging: impl IntoIterator<Item = &'a shared::vpn::TunnelLogging>,
) -> Vec<String> {
    logging
        .into_iter()
        .filter(|l| l.enabled)
        .filter_map(|l| l.log_group_name())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudwatchlogs::operation::get_query_results::GetQueryResultsOutput;
    use aws_sdk_cloudwatchlogs::operation::start_query::StartQueryOutput;
    use aws_smithy_mocks::mock;
    use shared::mock_client;
    use shared::testing::aws_smithy_mocks::RuleMode;
    use shared::vpn::{LogEvent, TunnelLogging};
    use std::sync::{Arc, Mutex};

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn production_schedule_polls_soon_then_backs_off_to_once_a_second() {
        let waits: Vec<Duration> = PollSchedule::PRODUCTION.delays().take(8).collect();
        assert_eq!(
            waits,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000),
                ms(1000),
                ms(1000)
            ]
        );
        // A query done within 1.5 s is read after 4 polls, at 1.5 s; the old fixed
        // 1 s interval read a 100 ms query only after a full second.
        let until_fourth: Duration = PollSchedule::PRODUCTION.delays().take(4).sum();
        assert_eq!(until_fourth, ms(1500));
        assert_eq!(
            PollSchedule::fixed(ms(20))
                .delays()
                .take(3)
                .collect::<Vec<_>>(),
            [ms(20); 3]
        );
        // A longest wait below the first is read as the first: waits never shrink.
        let odd = PollSchedule {
            first: ms(500),
            max: ms(300),
        };
        assert_eq!(odd.delays().take(2).collect::<Vec<_>>(), [ms(500); 2]);
    }

    #[tokio::test]
    async fn query_is_polled_on_the_growing_schedule_until_complete() {
        let polls: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let start = mock!(Client::start_query)
            .match_requests(|r| r.log_group_names() == ["vpn"] && r.limit() == Some(MAX_ROWS))
            .then_output(|| StartQueryOutput::builder().query_id("q-1").build());
        let results = mock!(Client::get_query_results)
            .match_requests(|r| r.query_id() == Some("q-1"))
            .then_compute_output({
                let polls = polls.clone();
                move |_| {
                    let mut polls = polls.lock().unwrap();
                    polls.push(Instant::now());
                    // Running for four polls, complete at the fifth.
                    let done = polls.len() == 5;
                    GetQueryResultsOutput::builder()
                        .status(if done {
                            QueryStatus::Complete
                        } else {
                            QueryStatus::Running
                        })
                        .results(vec![
                            field("@timestamp", "2026-11-25 09:50:00.000"),
                            field(
                                "@message",
                                r#"{"details": "Peer is not responsive - Declaring peer dead"}"#,
                            ),
                        ])
                        .build()
                }
            });
        let client = mock_client!(
            aws_sdk_cloudwatchlogs,
            RuleMode::MatchAny,
            [&start, &results]
        );
        let vpn = VpnConnectionId::parse("vpn-0a1b2c3d").unwrap();
        let schedule = PollSchedule {
            first: ms(10),
            max: ms(40),
        };
        let now = Utc::now();
        let begun = Instant::now();
        let facts = query_tunnel_logs(
            &client,
            &["vpn".to_string()],
            &vpn,
            &[],
            now - chrono::Duration::minutes(60),
            now,
            QueryBudget {
                poll: schedule,
                deadline: begun + Duration::from_secs(30),
            },
        )
        .await;
        assert_eq!(facts.status, LogStatus::Complete);
        assert_eq!(facts.records.len(), 1);
        assert_eq!(
            results.num_calls(),
            5,
            "polled until complete, then no more"
        );
        // Each wait is at least the schedule's: 10, 20, 40, 40, 40 ms (sleeps never end
        // early; a loaded machine can only make them longer).
        let polls = polls.lock().unwrap().clone();
        let mut previous = begun;
        for (i, (at, wait)) in polls.iter().zip(schedule.delays()).enumerate() {
            assert!(
                at.duration_since(previous) >= wait,
                "poll {i} came {:?} after the previous step, before its wait of {wait:?}",
                at.duration_since(previous)
            );
            previous = *at;
        }
    }

    #[tokio::test]
    async fn quick_query_is_read_after_the_first_short_wait_not_the_longest() {
        let start = mock!(Client::start_query)
            .then_output(|| StartQueryOutput::builder().query_id("q-2").build());
        let results = mock!(Client::get_query_results)
            .match_requests(|r| r.query_id() == Some("q-2"))
            .then_output(|| {
                GetQueryResultsOutput::builder()
                    .status(QueryStatus::Complete)
                    .build()
            });
        let client = mock_client!(
            aws_sdk_cloudwatchlogs,
            RuleMode::MatchAny,
            [&start, &results]
        );
        let vpn = VpnConnectionId::parse("vpn-0a1b2c3d").unwrap();
        let now = Utc::now();
        let begun = Instant::now();
        let facts = query_tunnel_logs(
            &client,
            &["vpn".to_string()],
            &vpn,
            &[],
            now - chrono::Duration::minutes(60),
            now,
            QueryBudget {
                poll: PollSchedule {
                    first: ms(10),
                    max: Duration::from_secs(5),
                },
                deadline: begun + Duration::from_secs(30),
            },
        )
        .await;
        assert_eq!(facts.status, LogStatus::Complete);
        assert_eq!(results.num_calls(), 1);
        // Far below the 5 s longest wait a fixed interval would have slept.
        assert!(
            begun.elapsed() < Duration::from_secs(2),
            "{:?}",
            begun.elapsed()
        );
    }

    #[test]
    fn query_string_filters_on_vpn_and_valid_tunnel_ips_only() {
        let vpn = VpnConnectionId::parse("vpn-0a1b2c3d").unwrap();
        let q = query_string(
            &vpn,
            &[
                "192.0.2.1".into(),
                "x\" or 1=1 | display".into(),
                "2001:db8::1".into(),
            ],
        );
        assert_eq!(
            q,
            "fields @timestamp, @logStream, @message\n\
             | filter @logStream like \"vpn-0a1b2c3d\" or tunnel_ip in [\"192.0.2.1\", \"2001:db8::1\"] or \
             @logStream like \"192.0.2.1\" or @logStream like \"2001:db8::1\"\n\
             | sort @timestamp desc\n| limit 1000"
        );
    }

    fn field(k: &str, v: &str) -> ResultField {
        ResultField::builder().field(k).value(v).build()
    }

    #[test]
    fn record_of_reads_message_json_and_fills_stream_and_time() {
        let r = record_of(&[
            field("@timestamp", "2026-11-25 09:50:00.000"),
            field("@logStream", "vpn-0a1b2c3d-192.0.2.1"),
            field("@message", r#"{"details": "Peer is not responsive - Declaring peer dead", "ike_phase1_state": "down"}"#),
        ])
        .unwrap();
        assert_eq!(r.event, LogEvent::DpdTimeout);
        assert_eq!(r.at, Some("2026-11-25T09:50:00Z".parse().unwrap()));
        assert_eq!(r.log_stream.as_deref(), Some("vpn-0a1b2c3d-192.0.2.1"));
        // The record's own time wins over the ingestion time.
        let r = record_of(&[
            field("@timestamp", "2026-11-25 09:50:00.000"),
            field(
                "@message",
                r#"{"details": "x", "event_timestamp": 1795600000}"#,
            ),
        ])
        .unwrap();
        assert_eq!(r.at, Some("2026-11-25T09:46:40Z".parse().unwrap()));
    }

    #[test]
    fn record_of_refuses_text_and_foreign_rows() {
        assert!(record_of(&[field("@message", "2026-11-25 IKE_SA established")]).is_none());
        assert!(record_of(&[field("@message", r#"{"other": 1}"#)]).is_none());
        assert!(record_of(&[field("@timestamp", "2026-11-25 09:50:00.000")]).is_none());
        assert!(record_of(&[]).is_none());
    }

    #[test]
    fn log_groups_are_the_enabled_ones_deduplicated() {
        let l = |enabled: bool, arn: &str| TunnelLogging {
            enabled,
            log_group_arn: Some(arn.to_string()),
            output_format: Some("json".into()),
        };
        let a = l(true, "arn:aws:logs:eu-west-1:1:log-group:vpn:*");
        let b = l(true, "arn:aws:logs:eu-west-1:1:log-group:vpn");
        let c = l(false, "arn:aws:logs:eu-west-1:1:log-group:other");
        assert_eq!(log_groups([&a, &b, &c]), ["vpn"]);
    }
}
