//! A real InfluxDB 1.x (the Debian package's `influxd`, 1.6) for tests: its own config file in
//! a temporary directory (meta, data and WAL there too), HTTP on a free 127.0.0.1 port,
//! optional auth with one admin user; `restart()` keeps the port and the data; killed when
//! dropped. The gateway's `api = "v1"` sink writes to `/write?db=`; tests read back with
//! InfluxQL through `/query`.
//!
//! The config also moves the RPC (backup/restore) bind address, `:8088` by default, to a free
//! 127.0.0.1 port, or a second instance (or a system influxd) would make it fail to start;
//! usage reporting, the `_internal` monitor database, UDP and Graphite listeners are off.
//!
//! Timing, measured with 1.6.7 on the 2 shared cores (5 runs): `start()` answers `/ping` in
//! 35-65 ms on an empty data dir, `restart()` in 35-55 ms (it replays the WAL, so acknowledged
//! points survive); `stop()` (SIGTERM) takes 2-3 ms.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use serde_json::Value;
use tempfile::TempDir;

use super::mosquitto::free_port;

const NOT_INSTALLED: &str = "influxd is not installed: install the Debian package influxdb (apt-get install influxdb) or run scripts/test";

pub struct Influx1 {
    dir: TempDir,
    port: u16,
    auth: Option<(String, String)>,
    child: Option<Child>,
    client: reqwest::Client,
}

fn influxd_bin() -> PathBuf {
    for p in ["/usr/bin/influxd", "/usr/local/bin/influxd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    match Command::new("influxd").arg("version").output() {
        Ok(_) => PathBuf::from("influxd"),
        Err(_) => panic!("{NOT_INSTALLED}"),
    }
}

/// An InfluxQL string literal: single quotes, with `\` and `'` escaped.
fn influxql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An InfluxQL identifier: double quotes, with `\` and `"` escaped.
fn influxql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Influx1 {
    pub async fn start() -> Influx1 {
        Influx1::start_inner(false).await
    }

    /// With `auth-enabled = true` and `user` as an admin. InfluxDB 1.x lets an unauthenticated
    /// client create the first user, and only an admin one, which is how it is made here.
    pub async fn start_with_auth(user: &str, password: &str) -> Influx1 {
        let mut influx = Influx1::start_inner(true).await;
        let q = format!(
            "CREATE USER {} WITH PASSWORD {} WITH ALL PRIVILEGES",
            influxql_ident(user),
            influxql_string(password)
        );
        influx.post_query(&q).await;
        influx.auth = Some((user.to_owned(), password.to_owned()));
        influx
    }

    async fn start_inner(auth_enabled: bool) -> Influx1 {
        let dir = tempfile::tempdir().expect("tempdir for influxd");
        let port = free_port();
        let rpc_port = free_port();
        let conf = format!(
            "reporting-enabled = false\n\
             bind-address = \"127.0.0.1:{rpc_port}\"\n\
             [meta]\n  dir = {meta:?}\n\
             [data]\n  dir = {data:?}\n  wal-dir = {wal:?}\n  query-log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  auth-enabled = {auth}\n\
             \x20 log-enabled = false\n  pprof-enabled = false\n\
             [continuous_queries]\n  enabled = false\n",
            meta = dir.path().join("meta").display().to_string(),
            data = dir.path().join("data").display().to_string(),
            wal = dir.path().join("wal").display().to_string(),
            auth = auth_enabled,
        );
        std::fs::write(dir.path().join("influxdb.conf"), conf).expect("write influxdb.conf");
        let mut influx = Influx1 {
            dir,
            port,
            // Set by start_with_auth once the user exists.
            auth: None,
            child: None,
            client: super::http_client(),
        };
        influx.spawn().await;
        influx
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
    }

    /// The server's own log (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "influxd is still running");
        let mut cmd = Command::new(influxd_bin());
        cmd.arg("run")
            .arg("-config")
            .arg(self.dir.path().join("influxdb.conf"));
        // influxd lets INFLUXDB_* variables override its config file.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("INFLUXDB_") {
                cmd.env_remove(key);
            }
        }
        let child = super::process::spawn_logged(&mut cmd, &self.log_path(), NOT_INSTALLED);
        self.child = Some(child);
        let url = format!("{}/ping", self.url());
        let log = self.log_path();
        super::process::wait_answers(
            &self.client,
            &url,
            |s| s == 204,
            &mut self.child,
            "influxd",
            || std::fs::read_to_string(&log).unwrap_or_default(),
        )
        .await;
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin user and password of `start_with_auth`.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    fn with_auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        }
    }

    /// POSTs line protocol to `/write?db=<db>&precision=ms` (with the admin's credentials when
    /// auth is on); returns the status and the body.
    pub async fn write(&self, db: &str, lines: &str) -> (u16, String) {
        let req = self
            .client
            .post(format!("{}/write", self.url()))
            .query(&[("db", db), ("precision", "ms")])
            .body(lines.to_owned());
        let resp = self
            .with_auth(req)
            .send()
            .await
            .expect("write request to influxd");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("write answer body"))
    }

    /// Statements that change things (CREATE, DROP) must be POSTed in 1.x.
    async fn post_query(&self, influxql: &str) -> Value {
        let req = self
            .client
            .post(format!("{}/query", self.url()))
            .form(&[("q", influxql)]);
        let resp = self.with_auth(req).send().await.expect("query request");
        answer_json(influxql, resp).await
    }

    pub async fn create_database(&self, db: &str) {
        self.post_query(&format!("CREATE DATABASE {}", influxql_ident(db)))
            .await;
    }

    /// GET `/query?db=&q=&epoch=ms`: SELECT and SHOW statements; times come back in ms.
    /// Panics if the server or any statement reports an error.
    pub async fn query(&self, db: &str, influxql: &str) -> Value {
        let req = self.client.get(format!("{}/query", self.url())).query(&[
            ("db", db),
            ("q", influxql),
            ("epoch", "ms"),
        ]);
        let resp = self.with_auth(req).send().await.expect("query request");
        answer_json(influxql, resp).await
    }

    /// `query()` flattened: one map per row, column name → value, with the series' tags
    /// (present with GROUP BY) added as strings. Rows of all series and statements, in order.
    pub async fn rows(&self, db: &str, influxql: &str) -> Vec<BTreeMap<String, Value>> {
        flatten(&self.query(db, influxql).await)
    }

    fn signal(&mut self, sig: &str) {
        super::process::signal(&mut self.child, sig);
    }

    /// SIGTERM and wait for the exit (a store outage; the port refuses connections).
    pub fn stop(&mut self) {
        self.signal("-TERM");
    }

    /// Starts again on the same ports with the same data (stops it first if running).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

async fn answer_json(influxql: &str, resp: reqwest::Response) -> Value {
    let status = resp.status();
    let text = resp.text().await.expect("query answer body");
    assert!(
        status.is_success(),
        "{influxql:?} answered {status}: {text}"
    );
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer to {influxql:?} is not JSON ({e}): {text}"));
    let statement_errors: Vec<&Value> = json["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("error"))
        .collect();
    assert!(
        json.get("error").is_none() && statement_errors.is_empty(),
        "{influxql:?} failed: {text}"
    );
    json
}

/// `{"results":[{"series":[{"name","tags","columns","values"}]}]}` → rows.
fn flatten(answer: &Value) -> Vec<BTreeMap<String, Value>> {
    let mut rows = Vec::new();
    for result in answer["results"].as_array().into_iter().flatten() {
        for series in result["series"].as_array().into_iter().flatten() {
            let columns: Vec<&str> = series["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().expect("column names are strings"))
                .collect();
            for values in series["values"].as_array().into_iter().flatten() {
                let mut row: BTreeMap<String, Value> = series["tags"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let values = values.as_array().expect("a row is an array");
                for (column, value) in columns.iter().zip(values) {
                    row.insert((*column).to_owned(), value.clone());
                }
                rows.push(row);
            }
        }
    }
    rows
}

impl Drop for Influx1 {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}
