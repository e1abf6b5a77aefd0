//! A small W3C WebDriver client over reqwest, driving Debian's headless `chromium` through
//! `chromedriver`: just what the console tests need (navigate, find by CSS, click, type, read
//! text, run a script, take a screenshot).
//!
//! Each [`Browser`] starts its own chromedriver on a free port and its own Chromium profile in a
//! temporary directory; dropping it ends the session and kills chromedriver (which takes its
//! Chromium down with it).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::mosquitto::free_port;
use super::process::{signal, spawn_logged, wait_answers};

const NOT_INSTALLED: &str =
    "chromium or chromedriver is missing: install with: apt-get install chromium chromium-driver";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C element reference key.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// An element found on the page.
#[derive(Clone, Debug)]
pub struct Element(String);

/// Panics with the install hint when chromium or chromedriver is missing: the console tests
/// are never skipped.
pub fn require_chromium() {
    for bin in [CHROMEDRIVER, CHROMIUM] {
        assert!(Path::new(bin).exists(), "{bin} not found; {NOT_INSTALLED}");
    }
}

pub struct Browser {
    driver: Option<Child>,
    base: String,
    session: String,
    client: reqwest::Client,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        require_chromium();
        let profile = tempfile::tempdir().expect("chromium profile dir");
        let log = profile.path().join("chromedriver.log");
        let port = free_port();
        let mut driver = Some(spawn_logged(
            Command::new(CHROMEDRIVER).arg(format!("--port={port}")),
            &log,
            NOT_INSTALLED,
        ));
        let base = format!("http://127.0.0.1:{port}");
        let client = super::http_client();
        let log_for_panic = log.clone();
        wait_answers(
            &client,
            &format!("{base}/status"),
            |s| s == 200,
            &mut driver,
            "chromedriver",
            || std::fs::read_to_string(&log_for_panic).unwrap_or_default(),
        )
        .await;
        let user_data = profile.path().join("profile");
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-quic",
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            format!("--user-data-dir={}", user_data.display()),
                            "--window-size=1400,1000",
                        ]
                    }
                }
            }
        });
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            client,
            log,
            _profile: profile,
        };
        let answer = browser.call("POST", "/session", Some(caps)).await;
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {answer}"))
            .to_string();
        browser
    }

    /// One WebDriver command; returns its `value`, panicking with the driver's error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("webdriver {method} {path} → {e}"),
        }
    }

    /// One WebDriver command; `Err` holds the driver's error answer.
    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let url = format!("{}{}", self.base, path);
        let req = match method {
            "GET" => self.client.get(&url),
            "DELETE" => self.client.delete(&url),
            _ => self
                .client
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = req
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}\n{}", self.driver_log()));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(json["value"].clone())
        } else {
            Err(json["value"].clone())
        }
    }

    fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn navigate(&self, url: &str) {
        self.call("POST", &self.path("/url"), Some(json!({ "url": url })))
            .await;
    }

    /// Every element matching `css`, in document order.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .call(
                "POST",
                &self.path("/elements"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str())
                    .map(|id| Element(id.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`, if any (no implicit wait).
    pub async fn find(&self, css: &str) -> Option<Element> {
        self.find_all(css).await.into_iter().next()
    }

    pub async fn click(&self, e: &Element) {
        self.call("POST", &self.path(&format!("/element/{}/click", e.0)), None)
            .await;
    }

    /// Clicks the first element matching `css` once it exists. The console redraws its lists
    /// as data arrives, so an element found a moment ago may be gone ("stale"): find it again.
    pub async fn click_css(&self, css: &str) {
        self.wait_for(
            &format!("a clickable {css}"),
            Duration::from_secs(30),
            || async {
                let e = self.find(css).await?;
                let path = self.path(&format!("/element/{}/click", e.0));
                match self.try_call("POST", &path, None).await {
                    Ok(_) => Some(()),
                    Err(err) if err["error"] == "stale element reference" => None,
                    Err(err) => panic!("click {css}: {err}"),
                }
            },
        )
        .await
    }

    /// The rendered text of the first element matching `css`, read in one step (no stale
    /// reference between finding and reading).
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let v = self
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null",
                vec![json!(css)],
            )
            .await;
        v.as_str().map(str::to_string)
    }

    /// An attribute of every element matching `css`, in document order, read in one step.
    pub async fn attrs_of(&self, css: &str, name: &str) -> Vec<String> {
        let v = self
            .execute(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]))",
                vec![json!(css), json!(name)],
            )
            .await;
        serde_json::from_value::<Vec<Option<String>>>(v)
            .unwrap_or_default()
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    }

    pub async fn send_keys(&self, e: &Element, text: &str) {
        self.call(
            "POST",
            &self.path(&format!("/element/{}/value", e.0)),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The element's rendered text.
    pub async fn text(&self, e: &Element) -> String {
        self.call("GET", &self.path(&format!("/element/{}/text", e.0)), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn attribute(&self, e: &Element, name: &str) -> Option<String> {
        self.call(
            "GET",
            &self.path(&format!("/element/{}/attribute/{name}", e.0)),
            None,
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    /// A DOM property (`value` of an input), as a string.
    pub async fn property(&self, e: &Element, name: &str) -> String {
        let v = self
            .call(
                "GET",
                &self.path(&format!("/element/{}/property/{name}", e.0)),
                None,
            )
            .await;
        match v {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            "POST",
            &self.path("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// A PNG of the viewport, written to `path` (its directory is created).
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", &self.path("/screenshot"), None).await;
        let png = decode_base64(b64.as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("screenshot is not base64"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Polls `probe` until it returns `Some`, or panics with `what` after `deadline` (a
    /// failure guard; the assertions are on what `probe` returns).
    pub async fn wait_for<T, F, Fut>(&self, what: &str, deadline: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let until = Instant::now() + deadline;
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            if Instant::now() > until {
                let console = self.browser_log().await;
                panic!("timed out waiting for {what}\nbrowser console: {console}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's JS errors and console messages, for failure reports.
    pub async fn browser_log(&self) -> String {
        // Chromedriver's log endpoint is not W3C; the page state is what helps most.
        let v = self
            .execute(
                "return document.body ? document.body.innerText.slice(0, 3000) : ''",
                vec![],
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; killing chromedriver alone would orphan it. Drop
        // cannot await and also runs while a failed test unwinds, so this is a plain blocking
        // request on a socket.
        if !self.session.is_empty() {
            end_session(&self.base, &self.session);
        }
        signal(&mut self.driver, "-KILL");
    }
}

fn end_session(base: &str, session: &str) {
    use std::io::{Read, Write};
    let Some(addr) = base.strip_prefix("http://") else {
        return;
    };
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if conn.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
    }
}

/// Standard base64 (the screenshot encoding), without a crate for twenty lines.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let len = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + len]);
    }
    Some(out)
}
