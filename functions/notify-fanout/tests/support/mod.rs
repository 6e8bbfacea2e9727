//! Test support: a fake Slack (Web API and webhooks) on loopback, an in-memory
//! state store with the same conditional semantics as the DynamoDB one, fixed
//! settings, and SNS events.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use notify_fanout::config::Config;
use notify_fanout::secrets::{SecretError, SettingsSource};
use notify_fanout::store::{
    Claim, DeliveryRecord, DeliveryStatus, PostedThread, Slot, StateStore, StoreError, ThreadGuard,
    ThreadRecord, ThreadWrite,
};
use serde_json::{json, Value};
use shared::config::Env;
use shared::incident::Impact;
use shared::notification::{AlarmSummary, EventType, IncidentStatus, Notification};
use shared::slack::SlackSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:incident-notifications";
pub const TOKEN: &str = "xoxb-1234567890-TESTTOKENSECRET";
pub const WEBHOOK_PATH: &str = "/hooks/T0000/B0000/WEBHOOKSECRETPATH";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
    pub raw_body: String,
    pub at: Instant,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: body.into(),
        }
    }
    pub fn rate_limited(retry_after_secs: u64) -> Reply {
        Reply {
            status: 429,
            headers: vec![("Retry-After".into(), retry_after_secs.to_string())],
            body: String::new(),
        }
    }
    pub fn api_error(code: &str) -> Reply {
        Reply::status(200, &json!({"ok": false, "error": code}).to_string())
    }
}

#[derive(Default)]
struct FakeState {
    requests: Vec<Recorded>,
    scripts: HashMap<String, VecDeque<Reply>>,
    next_ts: u64,
}

/// A fake Slack on 127.0.0.1: `/api/chat.postMessage`, `/api/chat.update` and
/// webhooks under `/hooks/`. Unscripted calls succeed like Slack does.
#[derive(Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState {
            next_ts: 1_795_600_000,
            ..Default::default()
        }));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, s).await;
                });
            }
        });
        FakeSlack { addr, state }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn webhook_url(&self) -> String {
        format!("http://{}{WEBHOOK_PATH}", self.addr)
    }

    /// Queues answers for a path (`/api/chat.postMessage`, `WEBHOOK_PATH`, ...).
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn clear_scripts(&self) {
        self.state.lock().unwrap().scripts.clear();
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().requests.clear();
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<FakeState>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let path = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let raw_body = String::from_utf8_lossy(&buf[header_end..]).to_string();
    let body: Value = serde_json::from_str(&raw_body).unwrap_or(Value::Null);

    let reply = {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            path: path.clone(),
            headers,
            body: body.clone(),
            raw_body,
            at: Instant::now(),
        });
        let scripted = st.scripts.get_mut(&path).and_then(VecDeque::pop_front);
        match scripted {
            Some(r) => r,
            None => default_reply(&mut st, &path, &body),
        }
    };
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        if path.starts_with("/api/") {
            "application/json"
        } else {
            "text/plain"
        },
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

fn default_reply(st: &mut FakeState, path: &str, body: &Value) -> Reply {
    // Slack answers with the channel ID even when a name was given.
    let channel = match body.get("channel").and_then(Value::as_str) {
        Some(c) if c.starts_with('#') => "C0NAMED".to_string(),
        Some(c) => c.to_string(),
        None => "C0UNKNOWN".to_string(),
    };
    match path {
        "/api/chat.postMessage" => {
            st.next_ts += 1;
            let ts = format!("{}.000100", st.next_ts);
            Reply::status(200, &json!({"ok": true, "channel": channel, "ts": ts, "message": {}}).to_string())
        }
        "/api/chat.update" => Reply::status(
            200,
            &json!({"ok": true, "channel": channel, "ts": body.get("ts").cloned().unwrap_or(Value::Null)}).to_string(),
        ),
        p if p.starts_with("/hooks/") => Reply::status(200, "ok"),
        _ => Reply::status(404, "not found"),
    }
}

// ---- state store ----

#[derive(Debug, Clone)]
enum Stored {
    Delivery(DeliveryRecord),
    Thread(ThreadRecord),
}

/// [`StateStore`] in memory, with the DynamoDB adapter's conditions. Channels are
/// not paced unless [`MemoryStore::paced`] says so.
#[derive(Default, Clone)]
pub struct MemoryStore {
    items: Arc<Mutex<HashMap<String, Stored>>>,
    /// Per `pace#` key: the next free slot, epoch milliseconds.
    slots: Arc<Mutex<HashMap<String, i64>>>,
    /// Per delivery item: the owner token that wrote it.
    owners: Arc<Mutex<HashMap<String, String>>>,
    interval: std::time::Duration,
}

impl MemoryStore {
    /// A store pacing each channel at `interval`, as the DynamoDB one does.
    pub fn paced(interval: std::time::Duration) -> MemoryStore {
        MemoryStore {
            interval,
            ..MemoryStore::default()
        }
    }
    pub fn thread(&self, pk: &str) -> Option<ThreadRecord> {
        match self.items.lock().unwrap().get(pk) {
            Some(Stored::Thread(t)) => Some(t.clone()),
            _ => None,
        }
    }
    pub fn delivery(&self, pk: &str) -> Option<DeliveryRecord> {
        match self.items.lock().unwrap().get(pk) {
            Some(Stored::Delivery(d)) => Some(d.clone()),
            _ => None,
        }
    }
    pub fn insert_delivery(&self, pk: &str, record: DeliveryRecord) {
        self.items
            .lock()
            .unwrap()
            .insert(pk.to_string(), Stored::Delivery(record));
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn claim_delivery(
        &self,
        pk: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Claim<DeliveryRecord>, StoreError> {
        let mut items = self.items.lock().unwrap();
        let mut owners = self.owners.lock().unwrap();
        match items.get(pk) {
            Some(Stored::Delivery(d))
                if !(d.status == DeliveryStatus::Sending
                    && (d.lease_until < now
                        || owners.get(pk).map(String::as_str) == Some(owner))) =>
            {
                Ok(Claim::Taken(d.clone()))
            }
            _ => {
                items.insert(
                    pk.to_string(),
                    Stored::Delivery(DeliveryRecord {
                        status: DeliveryStatus::Sending,
                        lease_until,
                        channel: None,
                        thread_ts: None,
                    }),
                );
                owners.insert(pk.to_string(), owner.to_string());
                Ok(Claim::Won)
            }
        }
    }

    async fn put_delivery(
        &self,
        pk: &str,
        record: &DeliveryRecord,
        owner: &str,
        _now: i64,
    ) -> Result<(), StoreError> {
        self.insert_delivery(pk, record.clone());
        self.owners
            .lock()
            .unwrap()
            .insert(pk.to_string(), owner.to_string());
        Ok(())
    }

    async fn release_delivery(&self, pk: &str, owner: &str) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap();
        let owners = self.owners.lock().unwrap();
        if matches!(items.get(pk), Some(Stored::Delivery(d)) if d.status == DeliveryStatus::Sending)
            && owners.get(pk).map(String::as_str) == Some(owner)
        {
            items.remove(pk);
        }
        Ok(())
    }

    async fn get_thread(&self, pk: &str) -> Result<Option<ThreadRecord>, StoreError> {
        Ok(self.thread(pk))
    }

    async fn claim_thread(
        &self,
        pk: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
        replace_resolved: Option<&str>,
    ) -> Result<Claim<ThreadRecord>, StoreError> {
        let mut items = self.items.lock().unwrap();
        let free = match items.get(pk) {
            None => true,
            Some(Stored::Thread(ThreadRecord {
                posted: None,
                lease_until,
                owner: by,
            })) => *lease_until < now || by.as_deref() == Some(owner),
            Some(Stored::Thread(ThreadRecord {
                posted: Some(p), ..
            })) => p.resolved && replace_resolved == Some(p.ts.as_str()),
            Some(Stored::Delivery(_)) => false,
        };
        if free {
            items.insert(
                pk.to_string(),
                Stored::Thread(ThreadRecord {
                    posted: None,
                    lease_until,
                    owner: Some(owner.to_string()),
                }),
            );
            Ok(Claim::Won)
        } else {
            match items.get(pk) {
                Some(Stored::Thread(t)) => Ok(Claim::Taken(t.clone())),
                _ => Err(StoreError::Conflict {
                    pk: pk.into(),
                    expected: "a thread",
                }),
            }
        }
    }

    async fn put_thread(
        &self,
        pk: &str,
        thread: &PostedThread,
        guard: &ThreadGuard,
        owner: &str,
        _now: i64,
    ) -> Result<ThreadWrite, StoreError> {
        let mut items = self.items.lock().unwrap();
        let ok = match (items.get(pk), guard) {
            (
                Some(Stored::Thread(ThreadRecord {
                    posted: Some(p), ..
                })),
                ThreadGuard::AtRev { ts, rev },
            ) => &p.ts == ts && p.rev == *rev,
            (
                Some(Stored::Thread(ThreadRecord {
                    posted: None,
                    owner: by,
                    ..
                })),
                ThreadGuard::OwnClaim,
            ) => by.as_deref() == Some(owner),
            (
                Some(Stored::Thread(ThreadRecord {
                    posted: Some(p), ..
                })),
                ThreadGuard::SameThread(ts),
            ) => &p.ts == ts,
            (None, ThreadGuard::NotNewerThan(_)) => true,
            (
                Some(Stored::Thread(ThreadRecord {
                    posted: Some(p), ..
                })),
                ThreadGuard::NotNewerThan(opened_at),
            ) => p.opened_at.timestamp() <= opened_at.timestamp(),
            _ => false,
        };
        if ok {
            items.insert(
                pk.to_string(),
                Stored::Thread(ThreadRecord {
                    posted: Some(thread.clone()),
                    lease_until: 0,
                    owner: Some(owner.to_string()),
                }),
            );
            return Ok(ThreadWrite::Written);
        }
        Ok(ThreadWrite::Refused(match items.get(pk) {
            Some(Stored::Thread(t)) => Some(Box::new(t.clone())),
            _ => None,
        }))
    }

    async fn release_thread(&self, pk: &str, owner: &str) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap();
        if matches!(items.get(pk), Some(Stored::Thread(ThreadRecord { posted: None, owner: by, .. })) if by.as_deref() == Some(owner))
        {
            items.remove(pk);
        }
        Ok(())
    }

    async fn reserve_slot(
        &self,
        pk: &str,
        _owner: &str,
        now_ms: i64,
        not_after_ms: i64,
    ) -> Result<Slot, StoreError> {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get(pk).copied().unwrap_or(now_ms).max(now_ms);
        if slot > not_after_ms {
            return Ok(Slot::Full { next_free: slot });
        }
        slots.insert(pk.to_string(), slot + self.interval.as_millis() as i64);
        Ok(Slot::At(slot))
    }

    fn channel_interval(&self) -> std::time::Duration {
        self.interval
    }
}

// ---- settings ----

/// Settings parsed once from secret JSON; counts invalidations.
pub struct FixedSettings {
    pub settings: Arc<SlackSettings>,
    pub invalidated: AtomicUsize,
}

impl FixedSettings {
    pub fn new(secret_json: &str) -> FixedSettings {
        FixedSettings {
            settings: Arc::new(SlackSettings::from_secret_json(secret_json).unwrap()),
            invalidated: AtomicUsize::new(0),
        }
    }
    pub fn invalidations(&self) -> usize {
        self.invalidated.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SettingsSource for FixedSettings {
    async fn settings(&self) -> Result<Arc<SlackSettings>, SecretError> {
        Ok(self.settings.clone())
    }
    async fn invalidate(&self) {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
    }
}

/// Secret JSON with a bot destination `oncall` (mentions `@here` at impact <= 2,
/// the user group `S0LEADS` when nobody acknowledged in time) and a webhook
/// destination `ops` on the fake.
pub fn secret_json(fake: &FakeSlack, routing: Option<Value>) -> String {
    let mut v = json!({
        "destinations": {
            "oncall": {"type": "bot", "token": TOKEN, "channel": "C0ONCALL", "mention": "here", "mention_min_impact": 2,
                       "escalation_mention": "subteam^S0LEADS"},
            "ops": {"type": "webhook", "url": fake.webhook_url()}
        }
    });
    if let Some(r) = routing {
        v["routing"] = r;
    }
    v.to_string()
}

pub fn config(fake: &FakeSlack) -> Config {
    Config::from_env(&Env::from_pairs([
        (
            "SLACK_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:slack-AbCdEf",
        ),
        ("STATE_TABLE_NAME", "state"),
        ("SLACK_API_URL", fake.api_url().as_str()),
    ]))
    .unwrap()
}

// ---- events ----

pub fn sns_event(message_id: &str, subject: Option<&str>, message: &str) -> Value {
    json!({"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": format!("{TOPIC}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55"),
        "Sns": {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": TOPIC,
            "Subject": subject,
            "Message": message,
            "Timestamp": "2026-11-25T10:01:01.000Z",
            "SignatureVersion": "1",
            "MessageAttributes": {}
        }
    }]})
}

pub fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

pub const INCIDENT_KEY: &str = "VPN connection vpn-0a1b2c3d4e5f67890 is DOWN";

/// The VPN incident, at a lifecycle step.
pub fn incident(event: EventType, impact: Impact, at: &str) -> Notification {
    let resolved = event == EventType::Resolved;
    Notification {
        event,
        incident_key: INCIDENT_KEY.into(),
        title: INCIDENT_KEY.into(),
        summary: format!("VPN incident, step {}", event.as_str()),
        impact,
        status: if resolved { IncidentStatus::Resolved } else { IncidentStatus::Open },
        backend: Some("OpsCenter".into()),
        incident_ref: Some("oi-0123456789ab".into()),
        incident_url: None,
        account: "123456789012".into(),
        region: "eu-west-1".into(),
        alarm: Some(AlarmSummary {
            name: "vpn-tunnel-down".into(),
            arn: "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:vpn-tunnel-down".into(),
            state: if resolved { "OK" } else { "ALARM" }.into(),
            reason: "Threshold Crossed".into(),
            url: "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#alarmsV2:alarm/vpn-tunnel-down".into(),
            condition: None,
        }),
        vpn_id: Some("vpn-0a1b2c3d4e5f67890".into()),
        tunnel_ip: None,
        occurred_at: t(at),
        opened_at: Some(t("2026-11-25T10:01:00Z")),
        duration_seconds: None,
        next_steps: vec!["Check the customer gateway".into()],
        links: vec![],
        findings: vec![],
        timeline: vec![],
        roles: Default::default(),
        post_incident: None,
        notification_id: None,
        account_info: None,
    }
}

/// The SNS event carrying a notification, as alarm-to-incident publishes it.
pub fn incident_event(message_id: &str, n: &Notification) -> Value {
    sns_event(message_id, None, &n.to_chatbot().to_string())
}
