//! The one JSON shape of an alert, the same on every output (REST, SSE, MQTT, webhook), so
//! that a consumer written against one reads them all.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::model::{Alert, AlertEvent, Tags};

/// An alert with its sensor's tags (district, site, …), for routing and filtering by place.
#[derive(Serialize)]
pub struct AlertView<'a> {
    #[serde(flatten)]
    pub alert: &'a Alert,
    pub tags: TagMap<'a>,
}

impl<'a> AlertView<'a> {
    pub fn new(alert: &'a Alert, tags: Option<&'a Tags>) -> AlertView<'a> {
        AlertView {
            alert,
            tags: TagMap(tags),
        }
    }
}

/// Tags as a JSON object; `{}` when the sensor has none.
#[derive(Debug)]
pub struct TagMap<'a>(pub Option<&'a Tags>);

impl Serialize for TagMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let tags = self.0.map(|t| &t[..]).unwrap_or_default();
        let mut map = s.serialize_map(Some(tags.len()))?;
        for (k, v) in tags {
            map.serialize_entry(k.as_str(), v.as_str())?;
        }
        map.end()
    }
}

/// One lifecycle event: `{"seq", "event", "at", "alert": {...}}`.
#[derive(Serialize)]
pub struct AlertMessage<'a> {
    /// The store's sequence number of the event: increasing, never reused.
    pub seq: i64,
    pub event: &'static str,
    pub at: i64,
    pub alert: AlertView<'a>,
}

impl<'a> AlertMessage<'a> {
    pub fn new(seq: i64, e: &'a AlertEvent, tags: Option<&'a Tags>) -> AlertMessage<'a> {
        AlertMessage {
            seq,
            event: e.event.as_str(),
            at: e.at,
            alert: AlertView::new(&e.alert, tags),
        }
    }

    pub fn to_json(&self) -> String {
        // Alerts hold only strings and finite numbers (the store refuses others), so this
        // cannot fail; an empty object is still valid JSON if it ever did.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertEventKind, AlertState, Severity};
    use compact_str::CompactString;

    #[test]
    fn the_message_nests_the_alert_with_its_tags() {
        let alert = Alert {
            id: "wl-1:level_warning:1".into(),
            rule: "level_warning".into(),
            sensor: "wl-1".into(),
            kind: "water_level".into(),
            metric: "level".into(),
            severity: Severity::Major,
            state: AlertState::Active,
            value: 15.5,
            threshold: 15.0,
            peak: 15.5,
            count: 2,
            started_at: 1000,
            updated_at: 2000,
            resolved_at: None,
            ack: None,
            message: "level 15.5 m above 15 m".into(),
        };
        let tags: Tags = vec![(
            CompactString::from("district"),
            CompactString::from("清城区"),
        )]
        .into();
        let e = AlertEvent {
            event: AlertEventKind::Escalated,
            at: 2000,
            alert,
        };
        let v: serde_json::Value =
            serde_json::from_str(&AlertMessage::new(42, &e, Some(&tags)).to_json()).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["event"], "escalated");
        assert_eq!(v["at"], 2000);
        assert_eq!(v["alert"]["id"], "wl-1:level_warning:1");
        assert_eq!(v["alert"]["severity"], "major");
        assert_eq!(v["alert"]["peak"], 15.5);
        assert_eq!(v["alert"]["resolved_at"], serde_json::Value::Null);
        assert_eq!(v["alert"]["tags"]["district"], "清城区");

        let none: serde_json::Value =
            serde_json::from_str(&AlertMessage::new(1, &e, None).to_json()).unwrap();
        assert_eq!(none["alert"]["tags"], serde_json::json!({}));
    }
}
