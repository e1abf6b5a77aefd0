//! Test harness: starts a real gateway (the library's `Gateway`, with its HTTP server on a
//! port-0 listener and its SQLite store in a temporary directory) and talks to it over HTTP.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use citygate::app::Gateway;
use citygate::config::{load_with_env, Source};
use serde_json::Value;

/// Starts a gateway whose data lives in `dir`, with `extra` TOML layered over the defaults.
pub async fn start(dir: &Path, extra: &str) -> Gateway {
    let base = format!(
        "mqtt = []\n[broker]\nenabled = false\n[gateway]\ndata_dir = {:?}\ndeadman_interval = \"1h\"\n[alerts]\nconsole = false\n",
        dir.display().to_string()
    );
    let sources = [
        Source::Text {
            name: "test base".into(),
            toml: base,
        },
        Source::Text {
            name: "test".into(),
            toml: extra.into(),
        },
    ];
    let config = match load_with_env(&sources, Some(HashMap::new())) {
        Ok(c) => c,
        Err(e) => panic!("test config must load: {e}"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    Gateway::start(config, Some(listener))
        .await
        .expect("gateway starts")
}

pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(g: &Gateway) -> Api {
        Api {
            base: format!("http://{}", g.addr()),
            client: reqwest::Client::new(),
        }
    }

    /// POSTs a body and returns the status and the JSON answer.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body read");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("answer to {path} is not JSON ({e}): {text}"));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body read");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("request sent");
        (
            resp.status().as_u16(),
            resp.text().await.expect("body read"),
        )
    }
}

pub fn now_ms() -> i64 {
    citygate::app::now_ms()
}
