//! `[alerts.mqtt]` against a real mosquitto: events on `citygate/alerts/<sev>/<kind>/<sensor>`
//! with the AlertMessage JSON; the active set retained under `citygate/alerts/active/`, cleared
//! on resolve; an alert raised while the broker is down is delivered once it is back; a stale
//! retained alert left by an earlier run is cleared.

mod common;

use std::time::{Duration, Instant};

use common::mosquitto::Mosquitto;
use common::{now_ms, start, Api, STORE_DEADLINE};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

/// A message as a test subscriber got it.
#[derive(Clone, Debug)]
struct Got {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// A subscriber on its own connection, QoS 1. With `session`, a persistent session that the
/// broker keeps (and queues for) while the connection is down.
struct Sub {
    rx: mpsc::UnboundedReceiver<Got>,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sub {
    async fn connect(port: u16, id: &str, session: bool, filters: &[&str]) -> Sub {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(!session)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, mut subscribed) = mpsc::unbounded_channel();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let wanted = filters.len();
        let sub_client = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = sub_client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Got {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let until = Instant::now() + STORE_DEADLINE;
        let mut acks = 0;
        while acks < wanted && Instant::now() < until {
            if tokio::time::timeout(Duration::from_millis(100), subscribed.recv())
                .await
                .is_ok()
            {
                acks += 1;
            }
        }
        assert_eq!(acks, wanted, "the broker acknowledged the subscriptions");
        Sub { rx, client, task }
    }

    /// The next message whose topic satisfies `pred` (others are skipped); panics after the
    /// deadline.
    async fn next_where(&mut self, what: &str, pred: impl Fn(&Got) -> bool) -> Got {
        let until = Instant::now() + STORE_DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(m)) if pred(&m) => return m,
                Ok(Some(_)) => continue,
                _ => panic!("no {what} arrived"),
            }
        }
    }

    /// Everything retained under `filter`: subscribes to it, then to a marker topic that the
    /// test retains itself. mosquitto sends a subscription's retained messages while handling
    /// its SUBSCRIBE, in order, so once the marker is here the filter's are all here.
    async fn retained(port: u16, filter: &str) -> Vec<Got> {
        let marker = format!("test/marker/{}", now_ms());
        publish_retained(port, &marker, b"m").await;
        let mut sub = Sub::connect(port, &format!("late-{}", now_ms()), false, &[filter]).await;
        sub.client
            .subscribe(marker.clone(), QoS::AtLeastOnce)
            .await
            .expect("subscribe to the marker");
        let mut got = Vec::new();
        loop {
            let m = sub.next_where("retained message or marker", |_| true).await;
            if m.topic == marker {
                return got;
            }
            got.push(m);
        }
    }
}

/// Publishes one retained message at QoS 1 and waits for the broker's PUBACK.
async fn publish_retained(port: u16, topic: &str, payload: &[u8]) {
    let mut o = MqttOptions::new(format!("pub-{}", now_ms()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 8);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
        .await
        .expect("queue publish");
    let until = Instant::now() + STORE_DEADLINE;
    loop {
        assert!(Instant::now() < until, "no PUBACK for {topic}");
        if let Ok(Event::Incoming(Packet::PubAck(_))) = el.poll().await {
            return;
        }
    }
}

const SENSORS: &str = r#"
[sensors.wl-m1]
kind = "water_level"
tags = { district = "qingcheng" }
rules.level = { above = { warning = 12.0, critical = 14.0 } }
rules.rise_rate = { above = { warning = 100.0, critical = 200.0 } }
"#;

fn config(broker: &Mosquitto) -> String {
    format!(
        "{SENSORS}\n[alerts.mqtt]\nenabled = true\nurl = \"{}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n",
        broker.url()
    )
}

async fn level(api: &Api, sensor: &str, value: f64, minutes_ago: i64) {
    let ts = now_ms() - minutes_ago * 60_000;
    let body = format!(r#"{{"sensor":"{sensor}","ts":{ts},"level":{value}}}"#);
    let (status, receipt) = api.post("/api/v1/ingest", "application/json", body).await;
    assert_eq!(
        (status, receipt["accepted"].as_u64()),
        (200, Some(1)),
        "{receipt}"
    );
}

const EVENT_TOPIC: &str = "citygate/alerts/warning/water_level/wl-m1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_and_the_active_set_is_retained_until_resolved() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut live = Sub::connect(broker.port(), "live", false, &["citygate/alerts/#"]).await;
    let g = start(dir.path(), &config(&broker)).await;
    let api = Api::new(&g);
    common::wait_alert_output(&api, |o| o["state"] == "ok").await;

    level(&api, "wl-m1", 12.5, 120).await;
    let raised = live
        .next_where("the raised event", |m| m.topic == EVENT_TOPIC)
        .await;
    let msg = raised.json();
    assert_eq!(msg["event"], "raised");
    assert_eq!(msg["alert"]["sensor"], "wl-m1");
    assert_eq!(msg["alert"]["severity"], "warning");
    assert_eq!(msg["alert"]["value"], 12.5);
    assert_eq!(msg["alert"]["state"], "active");
    assert_eq!(msg["alert"]["tags"]["district"], "qingcheng");
    let id = msg["alert"]["id"].as_str().expect("alert id").to_string();
    let seq = msg["seq"].as_i64().expect("seq");
    let stored: i64 = rusqlite::Connection::open(g.db_path())
        .expect("db")
        .query_row("SELECT max(seq) FROM alert_events", [], |r| r.get(0))
        .expect("seq");
    assert_eq!(seq, stored);
    assert!(!raised.retain);

    // A subscriber that comes later sees the active alert, retained.
    common::wait_alert_output(&api, |o| o["lag"] == 0).await;
    let retained = Sub::retained(broker.port(), "citygate/alerts/active/+").await;
    assert_eq!(retained.len(), 1, "{retained:?}");
    assert_eq!(retained[0].topic, format!("citygate/alerts/active/{id}"));
    assert!(retained[0].retain);
    let alert = retained[0].json();
    assert_eq!(
        (alert["id"].as_str(), alert["state"].as_str()),
        (Some(id.as_str()), Some("active"))
    );
    assert_eq!(alert["tags"]["district"], "qingcheng");

    // Resolved: the event goes out and the retained state is cleared.
    level(&api, "wl-m1", 10.0, 60).await;
    let resolved = live
        .next_where("the resolved event", |m| m.topic == EVENT_TOPIC)
        .await;
    assert_eq!(resolved.json()["event"], "resolved");
    assert_eq!(resolved.json()["seq"], seq + 1);
    let out = common::wait_alert_output(&api, |o| o["lag"] == 0 && o["delivered"] == 2).await;
    assert_eq!(
        (out["state"].as_str(), out["cursor"].as_i64()),
        (Some("ok"), Some(seq + 1))
    );
    let retained = Sub::retained(broker.port(), "citygate/alerts/active/+").await;
    assert!(retained.is_empty(), "{retained:?}");
    g.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_raised_while_the_broker_is_down_is_delivered_when_it_is_back() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // A persistent session: the broker queues for it while it is away.
    let mut sub = Sub::connect(
        broker.port(),
        "keeper",
        true,
        &["citygate/alerts/warning/#"],
    )
    .await;
    let g = start(dir.path(), &config(&broker)).await;
    let api = Api::new(&g);
    common::wait_alert_output(&api, |o| o["state"] == "ok").await;

    broker.stop();
    let out = common::wait_alert_output(&api, |o| o["state"] == "down").await;
    assert_eq!(out["state"], "down", "{out}");
    level(&api, "wl-m1", 12.5, 60).await;
    let out = common::wait_alert_output(&api, |o| o["lag"] == 1).await;
    assert_eq!(
        (out["state"].as_str(), out["lag"].as_i64()),
        (Some("down"), Some(1))
    );

    broker.start_again();
    let got = sub
        .next_where("the raised event", |m| m.topic == EVENT_TOPIC)
        .await;
    assert_eq!(got.json()["event"], "raised");
    assert_eq!(got.json()["alert"]["value"], 12.5);
    let out = common::wait_alert_output(&api, |o| o["lag"] == 0 && o["state"] == "ok").await;
    assert_eq!(
        (out["delivered"].as_u64(), out["lag"].as_i64()),
        (Some(1), Some(0))
    );
    let retained = Sub::retained(broker.port(), "citygate/alerts/active/+").await;
    assert_eq!(
        retained.len(),
        1,
        "{retained:?}\nbroker log:\n{}",
        broker.log()
    );
    g.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_retained_alert_is_cleared_and_an_active_one_is_kept() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // Left by an earlier run that crashed before publishing its resolve.
    publish_retained(
        broker.port(),
        "citygate/alerts/active/ghost:level:1",
        br#"{"id":"ghost:level:1"}"#,
    )
    .await;
    let mut watcher = Sub::connect(
        broker.port(),
        "watcher",
        false,
        &["citygate/alerts/active/+"],
    )
    .await;
    let ghost = watcher
        .next_where("the ghost", |m| m.topic.ends_with("/ghost:level:1"))
        .await;
    assert!(ghost.retain && !ghost.payload.is_empty());

    let g = start(dir.path(), &config(&broker)).await;
    let api = Api::new(&g);
    level(&api, "wl-m1", 12.5, 60).await;
    let cleared = watcher
        .next_where("the ghost's clearing", |m| {
            m.topic.ends_with("/ghost:level:1")
        })
        .await;
    assert!(cleared.payload.is_empty(), "{cleared:?}");
    common::wait_alert_output(&api, |o| o["lag"] == 0 && o["delivered"] == 1).await;
    let retained = Sub::retained(broker.port(), "citygate/alerts/active/+").await;
    let topics: Vec<&str> = retained.iter().map(|m| m.topic.as_str()).collect();
    let active: Vec<String> = g
        .alerts()
        .active()
        .iter()
        .map(|a| format!("citygate/alerts/active/{}", a.id))
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(topics, [active[0].as_str()]);
    // The check over, the output leaves the filter, so that the broker does not send it back
    // (and keep for it) every active-state message it publishes. mosquitto logs a SUBSCRIBE
    // as "<client> <qos> <filter>" and an UNSUBSCRIBE as "<client> <filter>".
    let until = Instant::now() + STORE_DEADLINE;
    let unsubscribed = "citygate-alerts citygate/alerts/active/+";
    while !broker.log().lines().any(|l| l.ends_with(unsubscribed)) {
        assert!(
            Instant::now() < until,
            "the alert output did not unsubscribe; broker log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        broker
            .log()
            .lines()
            .any(|l| l.ends_with("citygate-alerts 0 citygate/alerts/active/+")),
        "it had subscribed at QoS 0:\n{}",
        broker.log()
    );
    g.shutdown().await.expect("shutdown");
}
