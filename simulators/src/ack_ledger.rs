//! Which QoS 1 publishes the broker acknowledged, message by message.
//!
//! rumqttc reports an acknowledgement only as a packet id (`PubAck(pkid)`), and packet ids are
//! reused as soon as they are free. The ledger ties each id back to the message it was given to,
//! from the client's own events:
//! - `Outgoing::Publish(pkid)` for an id the ledger does not hold is a first transmission: the
//!   client sends requests in the order they were queued, so it belongs to the oldest queued
//!   message still waiting for an id;
//! - the same event for an id the ledger already holds is a retransmission after a reconnect
//!   (an id is only given out again once its PUBACK freed it);
//! - `PubAck(pkid)` completes the message holding that id.
//!
//! One thing breaks that chain: a reconnect into a *new* session (`session_present = false`),
//! after which rumqttc silently drops every unacknowledged publish, including ones still
//! queued. The ledger cannot tell which, so it says so ([`AckLedger::lost_track`]) instead of
//! guessing; the publisher avoids it with a persistent session (`clean_session = false`).

use std::collections::{HashMap, VecDeque};

/// Messages queued, in flight and acknowledged; `T` is what gets recorded per message.
#[derive(Debug)]
pub struct AckLedger<T> {
    waiting: VecDeque<T>,
    in_flight: HashMap<u16, T>,
    connected_before: bool,
    lost_track: Option<String>,
}

impl<T> Default for AckLedger<T> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            in_flight: HashMap::new(),
            connected_before: false,
            lost_track: None,
        }
    }
}

impl<T> AckLedger<T> {
    /// A message was handed to the client (call before the client can send it).
    pub fn queued(&mut self, message: T) {
        self.waiting.push_back(message);
    }

    /// The client sent a PUBLISH with this packet id.
    pub fn sent(&mut self, pkid: u16) {
        if self.in_flight.contains_key(&pkid) {
            return;
        }
        match self.waiting.pop_front() {
            Some(m) => {
                self.in_flight.insert(pkid, m);
            }
            None => self.lose_track(format!("packet id {pkid} sent with no message queued")),
        }
    }

    /// The broker acknowledged this packet id: the message it carried, if the ledger knows it.
    pub fn acked(&mut self, pkid: u16) -> Option<T> {
        let m = self.in_flight.remove(&pkid);
        if m.is_none() {
            self.lose_track(format!(
                "PUBACK for packet id {pkid}, which is not in flight"
            ));
        }
        m
    }

    /// A CONNACK arrived.
    pub fn connected(&mut self, session_present: bool) {
        let pending = self.waiting.len() + self.in_flight.len();
        if self.connected_before && !session_present && pending > 0 {
            self.lose_track(format!(
                "the broker started a new session with {pending} publishes unacknowledged; \
                 the client dropped some of them and the ledger cannot tell which"
            ));
        }
        self.connected_before = true;
    }

    /// Why the ledger can no longer map acknowledgements to messages, if it cannot.
    pub fn lost_track(&self) -> Option<&str> {
        self.lost_track.as_deref()
    }

    /// Messages not acknowledged (yet).
    pub fn unacked(&self) -> usize {
        self.waiting.len() + self.in_flight.len()
    }

    /// Writing a record failed: the record is incomplete, which is as bad as losing track.
    pub fn write_failed(&mut self, e: &std::io::Error) {
        self.lose_track(format!("writing the record: {e}"));
    }

    fn lose_track(&mut self, why: String) {
        if self.lost_track.is_none() {
            self.lost_track = Some(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_out_of_order_complete_the_message_that_took_each_id() {
        let mut l = AckLedger::default();
        l.connected(false);
        for m in ["a", "b", "c"] {
            l.queued(m);
        }
        l.sent(1);
        l.sent(2);
        l.sent(3);
        assert_eq!(l.acked(2), Some("b"));
        assert_eq!(l.acked(3), Some("c"));
        assert_eq!(l.acked(1), Some("a"));
        assert_eq!(l.unacked(), 0);
        assert_eq!(l.lost_track(), None);
    }

    #[test]
    fn a_retransmission_after_a_reconnect_keeps_its_message() {
        let mut l = AckLedger::default();
        l.connected(false);
        l.queued("a");
        l.queued("b");
        l.sent(7);
        // The connection drops; the session is resumed and id 7 is sent again, then "b".
        l.connected(true);
        l.sent(7);
        l.sent(8);
        assert_eq!(l.acked(8), Some("b"));
        assert_eq!(l.acked(7), Some("a"));
        assert_eq!(l.lost_track(), None);
    }

    #[test]
    fn an_id_freed_by_its_ack_goes_to_the_next_message() {
        let mut l = AckLedger::default();
        l.connected(false);
        l.queued("a");
        l.queued("b");
        l.sent(1);
        assert_eq!(l.acked(1), Some("a"));
        l.sent(1);
        assert_eq!(l.acked(1), Some("b"));
    }

    #[test]
    fn a_new_session_with_publishes_pending_is_reported_not_guessed() {
        let mut l = AckLedger::default();
        l.connected(false);
        l.queued("a");
        l.sent(1);
        l.connected(false);
        assert!(l.lost_track().unwrap().contains("new session"));
    }

    #[test]
    fn a_new_session_with_nothing_pending_is_fine() {
        let mut l: AckLedger<&str> = AckLedger::default();
        l.connected(false);
        l.connected(false);
        assert_eq!(l.lost_track(), None);
    }

    #[test]
    fn an_unknown_ack_is_reported() {
        let mut l: AckLedger<&str> = AckLedger::default();
        assert_eq!(l.acked(3), None);
        assert!(l.lost_track().unwrap().contains("not in flight"));
    }
}
