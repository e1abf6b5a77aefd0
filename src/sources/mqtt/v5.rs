//! MQTT 5 glue: the rumqttc v5 options and the event-loop task.

use std::sync::Arc;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::{Outgoing, TlsConfiguration, Transport};

use super::event_loop::{Grant, Protocol, Step};
use super::source::{
    describe_io, describe_tls, parse_ts_property, request_capacity, AckHandle, Settings,
};

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
        let password = s
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        o.set_credentials(user.clone(), password);
    }
    if let Some(tls) = &s.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls.clone()),
        )));
    }
    AsyncClient::new(o, request_capacity(cfg.inflight))
}

/// MQTT 5 for the shared event loop.
pub(super) struct V5 {
    pub eventloop: EventLoop,
    pub client: AsyncClient,
}

impl Protocol for V5 {
    type Error = ConnectionError;
    const WINDOW: &'static str = "receive maximum";

    async fn poll(&mut self) -> Result<Step, ConnectionError> {
        Ok(match self.eventloop.poll().await? {
            Event::Incoming(Packet::ConnAck(ack)) => Step::ConnAck {
                session_present: ack.session_present,
            },
            Event::Incoming(Packet::SubAck(ack)) => Step::SubAck(
                ack.return_codes
                    .iter()
                    .map(|code| match code {
                        SubscribeReasonCode::Success(QoS::AtMostOnce) => Grant::AtMostOnce,
                        SubscribeReasonCode::Success(_) => Grant::Granted,
                        refused => Grant::Refused(format!("{refused:?}")),
                    })
                    .collect(),
            ),
            Event::Incoming(Packet::Publish(p)) => {
                let ts = p.properties.as_ref().and_then(|props| {
                    props
                        .user_properties
                        .iter()
                        .find(|(k, _)| k == "ts")
                        .and_then(|(_, v)| parse_ts_property(v))
                });
                Step::Publish(Box::new(AckHandle::V5(p)), ts)
            }
            Event::Outgoing(Outgoing::Disconnect) => Step::Disconnected,
            _ => Step::Other,
        })
    }

    fn clean(&mut self) {
        self.eventloop.clean();
    }

    fn subscribe(&self, filters: &[String]) -> Result<(), String> {
        let subs = filters
            .iter()
            .map(|f| Filter::new(f.clone(), QoS::AtLeastOnce));
        self.client
            .try_subscribe_many(subs)
            .map_err(|e| e.to_string())
    }

    fn describe(e: &ConnectionError) -> String {
        describe(e)
    }

    // rumqttc keeps the MQTT 5 connection private: acks go through the client.
    const DIRECT_ACKS: bool = false;

    async fn write_acks(&mut self, _acks: &[&AckHandle]) -> Result<usize, ConnectionError> {
        Ok(0)
    }
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
