//! In-process throughput of the pure parts of the pipeline, with no network:
//! normalize an alarm event, classify it, render Block Kit for Slack, analyse a VPN
//! report. `make bench` runs it with a short measurement time and copies the figures
//! into `bench/RESULTS.md`; `cargo bench -p incident-shared --bench pure` runs it alone.
//!
//! Inputs are the real-shaped sample events of `events/` and `shared/tests/slack/input/`,
//! read once before measuring. A benchmark that cannot read its input exits with a
//! message instead of measuring nothing.

use std::hint::black_box;
use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use shared::alarm::normalize_str;
use shared::classify::Rules;
use shared::slack::{render, Inbound, Mode, RenderOptions, SnsMessage};
use shared::vpn::{
    analyse, parse_line, ConnectionFacts, ConnectionLookup, ConnectionState, LogFacts, LogStatus,
    MetricPoint, StaticRoute, Telemetry, TunnelFacts, TunnelLogging, TunnelMetricHistory,
    TunnelOptions, TunnelStatus, VpnConnectionId, VpnFacts,
};

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:incident-notifications";
const VPN: &str = "vpn-0f1e2d3c4b5a69788";
const TUNNEL_1: &str = "203.0.113.10";
const TUNNEL_2: &str = "203.0.113.20";
const PSK: &str = "AWS tunnel payload decryption was unsuccessful due to invalid Pre-shared Key";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("benchmark input {} is unreadable: {e}", path.display()))
}

fn bench_normalize(c: &mut Criterion) {
    let events = root().join("../events");
    let direct = read(events.join("direct-vpn-tunnel-down-alarm.json"));
    let sns = read(events.join("sns-vpn-tunnel-down-alarm.json"));
    let eventbridge = read(events.join("eventbridge-vpn-both-tunnels-down-alarm.json"));
    let mut g = c.benchmark_group("normalize");
    g.bench_function("direct_alarm_action", |b| {
        b.iter(|| normalize_str(black_box(&direct)))
    });
    g.bench_function("sns_envelope", |b| {
        b.iter(|| normalize_str(black_box(&sns)))
    });
    g.bench_function("eventbridge", |b| {
        b.iter(|| normalize_str(black_box(&eventbridge)))
    });
    g.finish();
}

fn bench_classify(c: &mut Criterion) {
    let text = read(root().join("../events/sns-vpn-tunnel-down-alarm.json"));
    let alarms = normalize_str(&text).expect("the sample SNS alarm event normalizes");
    let alarm = alarms
        .first()
        .expect("the sample SNS alarm event holds one alarm");
    let rules = Rules::builtin(Some("incident-pipeline-DiagnosisRunbook"));
    c.bench_function("classify/builtin_rules_vpn_alarm", |b| {
        b.iter(|| rules.classify(black_box(alarm)))
    });
    c.bench_function("normalize_and_classify/sns_vpn_alarm", |b| {
        b.iter(|| {
            normalize_str(black_box(&text))
                .map(|alarms| alarms.iter().map(|a| rules.classify(a)).collect::<Vec<_>>())
        })
    });
}

fn bench_render(c: &mut Criterion) {
    let input = root().join("tests/slack/input");
    let alarm = read(input.join("sns-alarm-classic.json"));
    let chatbot = read(input.join("chatbot-foreign.json"));
    let subject = Some("ALARM: \"VPN tunnel down (vpn-0a1b2c3d4e5...\"");
    let post = RenderOptions::default();
    let card = RenderOptions {
        mode: Mode::Card,
        ..Default::default()
    };
    let mut g = c.benchmark_group("block_kit");
    g.bench_function("parse_and_render_sns_alarm", |b| {
        b.iter(|| {
            let inbound = Inbound::parse(SnsMessage {
                topic_arn: TOPIC,
                subject,
                message: black_box(&alarm),
            });
            serde_json::to_string(&render(&inbound, &post))
        })
    });
    let inbound = Inbound::parse(SnsMessage {
        topic_arn: TOPIC,
        subject,
        message: &alarm,
    });
    g.bench_function("render_alarm_card", |b| {
        b.iter(|| render(black_box(&inbound), &card))
    });
    g.bench_function("parse_and_render_chatbot", |b| {
        b.iter(|| {
            let inbound = Inbound::parse(SnsMessage {
                topic_arn: TOPIC,
                subject: None,
                message: black_box(&chatbot),
            });
            serde_json::to_string(&render(&inbound, &post))
        })
    });
    g.finish();
}

fn tunnel(ip: &str, status: TunnelStatus, since: DateTime<Utc>) -> TunnelFacts {
    TunnelFacts {
        outside_ip: ip.into(),
        telemetry: Some(Telemetry {
            status,
            status_message: Some(String::new()),
            last_status_change: Some(since),
            accepted_route_count: Some(0),
            certificate_arn: None,
        }),
        options: Some(TunnelOptions {
            ike_versions: vec!["ikev2".into()],
            logging: TunnelLogging {
                enabled: true,
                log_group_arn: Some(format!(
                    "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/vpn/{VPN}:*"
                )),
                output_format: Some("json".into()),
            },
            ..Default::default()
        }),
        maintenance: None,
    }
}

/// The story's incident: tunnel 1 down with pre-shared key failures for 20 minutes,
/// tunnel 2 up, an hour of one-minute `TunnelState` points and 200 log records.
fn vpn_facts() -> VpnFacts {
    let now: DateTime<Utc> = "2026-11-25T10:20:00Z".parse().expect("a valid timestamp");
    let down_at = now - Duration::minutes(20);
    let mut records = Vec::new();
    for i in 0..200i64 {
        let at = now - Duration::seconds(10 * (200 - i));
        let (ip, details, p1) = if i % 4 == 0 {
            (TUNNEL_2, "AWS tunnel is sending DPD request", "established")
        } else {
            (TUNNEL_1, PSK, "down")
        };
        let line = serde_json::json!({
            "event_timestamp": at.timestamp_millis(), "details": details, "dpd_enabled": true,
            "nat_t_detected": false, "ike_phase1_state": p1, "ike_phase2_state": p1,
            "tunnel_ip": ip,
        })
        .to_string();
        records.push(parse_line(&line).expect("a tunnel log record parses"));
    }
    let points = |down: bool| -> Vec<MetricPoint> {
        (0..60)
            .map(|m| {
                let at = now - Duration::minutes(60 - m);
                let value = if down && at >= down_at { 0.0 } else { 1.0 };
                MetricPoint { at, value }
            })
            .collect()
    };
    VpnFacts {
        vpn_id: VpnConnectionId::parse(VPN).expect("a valid VPN id"),
        collected_at: now,
        lookback_minutes: 60,
        connection: ConnectionLookup::Found(ConnectionFacts {
            state: ConnectionState::Available,
            customer_gateway_id: Some("cgw-0123456789abcdef0".into()),
            vpn_gateway_id: Some("vgw-0123456789abcdef0".into()),
            transit_gateway_id: None,
            static_routes_only: Some(true),
            local_ipv4_network_cidr: None,
            remote_ipv4_network_cidr: None,
            routes: vec![StaticRoute {
                destination_cidr: "10.20.0.0/16".into(),
                state: Some("available".into()),
            }],
            tunnels: vec![
                tunnel(TUNNEL_1, TunnelStatus::Down, down_at),
                tunnel(TUNNEL_2, TunnelStatus::Up, now - Duration::days(3)),
            ],
        }),
        customer_gateway: None,
        attachment: None,
        metrics: vec![
            TunnelMetricHistory {
                tunnel_ip: TUNNEL_1.into(),
                points: points(true),
            },
            TunnelMetricHistory {
                tunnel_ip: TUNNEL_2.into(),
                points: points(false),
            },
        ],
        logs: LogFacts {
            status: LogStatus::Complete,
            log_groups: vec![format!("/aws/vpn/{VPN}")],
            records,
            unreadable: 0,
        },
        gaps: vec![],
    }
}

fn bench_vpn(c: &mut Criterion) {
    let facts = vpn_facts();
    c.bench_function("vpn/analyse_psk_failure_200_records", |b| {
        b.iter(|| analyse(black_box(&facts)))
    });
}

criterion_group!(
    benches,
    bench_normalize,
    bench_classify,
    bench_render,
    bench_vpn
);
criterion_main!(benches);
