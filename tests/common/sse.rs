//! A Server-Sent Events client for tests: reads `event:`/`id:`/`data:` frames from a streaming
//! reqwest response.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

pub struct SseClient {
    resp: reqwest::Response,
    buf: String,
}

impl SseClient {
    /// Connects to `url`, resuming after `last_id` when given; panics unless the answer is a
    /// 200 event stream.
    pub async fn connect(url: &str, last_id: Option<&str>, token: Option<&str>) -> SseClient {
        let client = super::http_client();
        let mut req = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("SSE request sent");
        assert_eq!(resp.status().as_u16(), 200, "SSE stream status");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        SseClient {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (comments such as keepalives are skipped), or `None` if none comes
    /// within `wait` or the stream ends.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            if let Some(e) = self.take_frame() {
                return Some(e);
            }
            let chunk = tokio::time::timeout_at(until, self.resp.chunk())
                .await
                .ok()?;
            match chunk {
                Ok(Some(bytes)) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Parses one complete frame off the buffer; frames that carry no data (comments) are
    /// dropped.
    fn take_frame(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buf.find("\n\n")?;
            let frame: String = self.buf.drain(..end + 2).collect();
            let mut e = SseEvent {
                event: "message".into(),
                id: None,
                data: String::new(),
            };
            let mut has_data = false;
            for line in frame.lines() {
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "event" => e.event = value.to_string(),
                    "id" => e.id = Some(value.to_string()),
                    "data" => {
                        if has_data {
                            e.data.push('\n');
                        }
                        e.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data {
                return Some(e);
            }
        }
    }
}
