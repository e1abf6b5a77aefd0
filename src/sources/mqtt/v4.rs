//! MQTT 3.1.1 glue: the rumqttc options and the event-loop task.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS, StateError, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::backoff::Backoff;
use super::source::{
    describe_io, describe_tls, request_capacity, sleep_or_stop, AckHandle, Message, Settings,
    Shared,
};
use crate::app::now_ms;

pub(super) fn client(s: &Settings) -> (AsyncClient, EventLoop) {
    let cfg = &s.cfg;
    let mut o = MqttOptions::new(cfg.client_id.clone(), s.host.clone(), s.port);
    o.set_keep_alive(cfg.keepalive.0)
        .set_clean_session(cfg.clean_start)
        .set_manual_acks(true)
        .set_inflight(cfg.inflight)
        // See `transport_limit`: max_packet_size itself is enforced per message.
        .set_max_packet_size(s.transport_limit, s.transport_limit);
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

/// The event-loop task. It never `.await`s the client (rumqtt#1025): the client's requests
/// are drained by this very loop, so awaiting one here could deadlock; only `try_*` is used.
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
                // A commit failed: drop the connection so that the broker redelivers.
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
                // rumqttc never resubscribes by itself; a broker without our session (or
                // with a fresh one) would otherwise send nothing.
                if !filters.is_empty() {
                    let subs = filters
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(subs) {
                        error!(connection = %name, error = %e, "cannot queue the MQTT subscription");
                    }
                }
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                for (filter, code) in filters.iter().zip(&ack.return_codes) {
                    if matches!(code, SubscribeReasonCode::Failure) {
                        let msg = format!("the broker refused the subscription to {filter:?}");
                        error!(connection = %name, "{msg}");
                        shared.status.set_error(msg, now_ms());
                    } else if matches!(code, SubscribeReasonCode::Success(QoS::AtMostOnce)) {
                        warn!(connection = %name, filter = %filter, "the broker granted only QoS 0: messages can be lost");
                    }
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    // Not processed, not acked: the broker keeps it for next time.
                    continue;
                }
                shared.status.count_received(1);
                let msg = Message {
                    ack: AckHandle::V4(p),
                    received_at: now_ms(),
                    generation: shared.generation(),
                    ts: None,
                };
                // Blocks when the pipeline is behind: we stop reading and the broker holds
                // the rest.
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
        ConnectionError::ConnectionRefused(code) => refused(*code),
        ConnectionError::Tls(t) => describe_tls(t),
        ConnectionError::Io(io) | ConnectionError::MqttState(StateError::Io(io)) => describe_io(io),
        ConnectionError::NetworkTimeout => "timed out connecting to the broker".into(),
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "the broker did not answer the keepalive ping".into()
        }
        other => other.to_string(),
    }
}

fn refused(code: ConnectReturnCode) -> String {
    let why = match code {
        ConnectReturnCode::BadUserNamePassword => "not authorized (bad user name or password)",
        ConnectReturnCode::NotAuthorized => "not authorized",
        ConnectReturnCode::BadClientId => "client id rejected",
        ConnectReturnCode::RefusedProtocolVersion => "protocol version 3.1.1 not supported",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::Success => "success",
    };
    format!("connection refused by the broker: {why}")
}
