//! MQTT 3.1.1 glue: the rumqttc options and the event-loop task.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, PubAck, PubRec, QoS, Request, StateError, SubscribeFilter, SubscribeReasonCode,
    TlsConfiguration, Transport,
};

use super::event_loop::{Grant, Protocol, Step};
use super::source::{describe_io, describe_tls, request_capacity, AckHandle, Settings};

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

/// MQTT 3.1.1 for the shared event loop.
pub(super) struct V4 {
    pub eventloop: EventLoop,
    pub client: AsyncClient,
}

impl Protocol for V4 {
    type Error = ConnectionError;
    const WINDOW: &'static str = "in-flight window";

    async fn poll(&mut self) -> Result<Step, ConnectionError> {
        Ok(match self.eventloop.poll().await? {
            Event::Incoming(Packet::ConnAck(ack)) => Step::ConnAck {
                session_present: ack.session_present,
            },
            Event::Incoming(Packet::SubAck(ack)) => Step::SubAck(
                ack.return_codes
                    .iter()
                    .map(|code| match code {
                        SubscribeReasonCode::Failure => Grant::Refused("failure".into()),
                        SubscribeReasonCode::Success(QoS::AtMostOnce) => Grant::AtMostOnce,
                        SubscribeReasonCode::Success(_) => Grant::Granted,
                    })
                    .collect(),
            ),
            Event::Incoming(Packet::Publish(p)) => Step::Publish(Box::new(AckHandle::V4(p)), None),
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
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.client
            .try_subscribe_many(subs)
            .map_err(|e| e.to_string())
    }

    fn describe(e: &ConnectionError) -> String {
        describe(e)
    }

    const DIRECT_ACKS: bool = true;

    fn connected(&self) -> bool {
        self.eventloop.network.is_some()
    }

    /// rumqttc's PUBACK for a QoS 1 message is stateless (it only reports the packet as an
    /// outgoing event), so it is written straight into the connection's buffer; a PUBREC
    /// (QoS 2) goes through the session state, which must know about it.
    async fn write_acks(&mut self, acks: &[&AckHandle]) -> Result<usize, ConnectionError> {
        let flush_timeout =
            Duration::from_secs(self.eventloop.network_options.connection_timeout());
        let Some(network) = self.eventloop.network.as_mut() else {
            return Ok(0);
        };
        let mut acked = 0;
        let mut written = 0;
        for ack in acks {
            let AckHandle::V4(p) = ack else {
                continue;
            };
            let packet = match p.qos {
                QoS::AtMostOnce => None,
                QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(p.pkid))),
                QoS::ExactlyOnce => self
                    .eventloop
                    .state
                    .handle_outgoing_packet(Request::PubRec(PubRec::new(p.pkid)))?,
            };
            if let Some(packet) = packet {
                network.write(packet).await?;
                written += 1;
            }
            acked += 1;
        }
        if written > 0 {
            tokio::time::timeout(flush_timeout, network.flush())
                .await
                .map_err(|_| ConnectionError::FlushTimeout)??;
        }
        Ok(acked)
    }
}

pub(crate) fn describe(e: &ConnectionError) -> String {
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
