//! MQTT 5 glue: the rumqttc v5 options and the event-loop task.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::backoff::Backoff;
use super::source::{
    describe_io, describe_tls, parse_ts_property, request_capacity, sleep_or_stop, AckHandle,
    Message, Settings, Shared,
};
use crate::app::now_ms;

pub(super) fn client(s: &Settings) -> (AsyncClient, EventLoop) {
    let cfg = &s.cfg;
    let mut o = MqttOptions::new(cfg.client_id.clone(), s.host.clone(), s.port);
    let expiry = u32::try_from(cfg.session_expiry.0.as_secs()).unwrap_or(u32::MAX);
    o.set_keep_alive(cfg.keepalive.0)
        .set_clean_start(cfg.clean_start)
        .set_session_expiry_interval(Some(expiry))
        // The broker sends at most this many unacknowledged messages: our flow control.
        .set_receive_maximum(Some(cfg.inflight))
        // Announced in CONNECT and used as rumqttc's incoming limit; see `transport_limit`.
        .set_max_packet_size(Some(u32::try_from(s.transport_limit).unwrap_or(u32::MAX)))
        .set_manual_acks(true);
    if let Some(user) = &cfg.username {
        let password = s.password.as_ref().map(|p| p.0.clone()).unwrap_or_default();
        o.set_credentials(user.clone(), password);
    }
    if let Some(tls) = &s.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls.clone()),
        )));
    }
    AsyncClient::new(o, request_capacity(cfg.inflight))
}

/// The event-loop task; see `v4::run` (the same loop, MQTT 5 packets).
pub(super) async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Message>,
    mut backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    let name = shared.status.name.clone();
    loop {
        let polled = tokio::select! {
            ev = eventloop.poll() => Some(ev),
            _ = shared.reconnect.notified(), if !shared.stopping.load(Ordering::SeqCst) => None,
        };
        let event = match polled {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                shared.new_generation(|| eventloop.clean());
                shared.on_error(&describe(&e));
                if !sleep_or_stop(backoff.next_delay(), &mut stop).await {
                    break;
                }
                continue;
            }
            None => {
                shared.new_generation(|| eventloop.clean());
                shared.on_error("reconnecting to get unacknowledged messages redelivered");
                if !sleep_or_stop(backoff.next_delay(), &mut stop).await {
                    break;
                }
                continue;
            }
        };
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                backoff.reset();
                shared.on_connected(ack.session_present);
                // rumqttc never resubscribes by itself.
                if !filters.is_empty() {
                    let subs = filters
                        .iter()
                        .map(|f| Filter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(subs) {
                        error!(connection = %name, error = %e, "cannot queue the MQTT subscription");
                    }
                }
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                for (filter, code) in filters.iter().zip(&ack.return_codes) {
                    match code {
                        SubscribeReasonCode::Success(QoS::AtMostOnce) => {
                            warn!(connection = %name, filter = %filter, "the broker granted only QoS 0: messages can be lost");
                        }
                        SubscribeReasonCode::Success(_) => {}
                        refused => {
                            let msg = format!(
                                "the broker refused the subscription to {filter:?}: {refused:?}"
                            );
                            error!(connection = %name, "{msg}");
                            shared.status.set_error(msg, now_ms());
                        }
                    }
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    continue;
                }
                shared.status.count_received(1);
                let ts = p.properties.as_ref().and_then(|props| {
                    props
                        .user_properties
                        .iter()
                        .find(|(k, _)| k == "ts")
                        .and_then(|(_, v)| parse_ts_property(v))
                });
                let msg = Message {
                    ack: AckHandle::V5(p),
                    received_at: now_ms(),
                    generation: shared.generation(),
                    ts,
                };
                let _ = tx.send(msg).await;
            }
            Event::Outgoing(Outgoing::Disconnect) if shared.stopping.load(Ordering::SeqCst) => {
                break
            }
            _ => {}
        }
    }
    shared.loop_done.store(true, Ordering::SeqCst);
    shared.status.set_connected(false);
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code)
        | ConnectionError::MqttState(StateError::ConnFail { reason: code }) => refused(*code),
        ConnectionError::Tls(t) => describe_tls(t),
        ConnectionError::Io(io) | ConnectionError::MqttState(StateError::Io(io)) => describe_io(io),
        ConnectionError::Timeout(_) => "timed out connecting to the broker".into(),
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "the broker did not answer the keepalive ping".into()
        }
        ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code,
            reason_string,
        }) => format!(
            "the broker disconnected us: {reason_code:?}{}",
            reason_string
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

fn refused(code: ConnectReturnCode) -> String {
    let why = match code {
        ConnectReturnCode::BadUserNamePassword => {
            "not authorized (bad user name or password)".to_string()
        }
        ConnectReturnCode::NotAuthorized => "not authorized".to_string(),
        ConnectReturnCode::ClientIdentifierNotValid | ConnectReturnCode::BadClientId => {
            "client id rejected".to_string()
        }
        ConnectReturnCode::UnsupportedProtocolVersion
        | ConnectReturnCode::RefusedProtocolVersion => {
            "protocol version 5 not supported (try protocol = \"v311\")".to_string()
        }
        other => format!("{other:?}"),
    };
    format!("connection refused by the broker: {why}")
}
