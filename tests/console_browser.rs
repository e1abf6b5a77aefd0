//! The web console in a real browser (headless Chromium over WebDriver): a breaching reading
//! published over MQTT shows up as a live alert, the operator acknowledges it, the page
//! switches to Chinese; and with 10,000 sensors the page shows the group counts and pages
//! through a group and through the active alerts.
//!
//! Needs Debian's `chromium` and `chromium-driver`; never skipped.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::mosquitto::free_port;
use common::publisher::{Proto, Publisher};
use common::webdriver::{Browser, Element};
use common::{mqtt_section, now_ms, start, Api};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);
const MIN: i64 = 60_000;

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artifacts")
        .join(name)
}

fn testid(id: &str) -> String {
    format!("[data-testid=\"{id}\"]")
}

/// Waits until the element matching `css` exists and returns it.
async fn element(b: &Browser, css: &str) -> Element {
    b.wait_for(css, DEADLINE, || async { b.find(css).await })
        .await
}

/// Waits until the text of `css` satisfies `ok`; returns that text.
async fn text_where(b: &Browser, css: &str, ok: impl Fn(&str) -> bool) -> String {
    b.wait_for(&format!("text of {css}"), DEADLINE, || async {
        let text = b.text_of(css).await?;
        ok(&text).then_some(text)
    })
    .await
}

/// The display name of a kind in one language, from the gateway's catalog.
fn kind_name(catalog: &Value, kind: &str, lang: &str) -> String {
    catalog["kinds"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kind"] == kind))
        .and_then(|k| k["name"][lang].as_str())
        .unwrap_or_else(|| panic!("no {lang} name for {kind} in {catalog}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_assets_and_catalog_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), "").await;
    let api = Api::new(&g);

    for (path, content_type, needle) in [
        (
            "/",
            "text/html; charset=utf-8",
            "data-testid=\"alert-list\"",
        ),
        (
            "/console/app.js",
            "text/javascript; charset=utf-8",
            "followAlerts",
        ),
        (
            "/console/style.css",
            "text/css; charset=utf-8",
            "--critical",
        ),
    ] {
        let resp = api
            .client
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .expect("request sent");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        let body = resp.text().await.expect("body");
        assert!(body.contains(needle), "{path} lacks {needle}");
    }

    let (status, err) = api.get("/console/nope.js").await;
    assert_eq!(
        (status, &err["reason"]),
        (404, &json!("not_found")),
        "{err}"
    );

    let (status, catalog) = api.get("/api/v1/catalog").await;
    assert_eq!(status, 200, "{catalog}");
    assert_eq!(catalog["timezone"], "Asia/Shanghai");
    let kinds: Vec<&str> = catalog["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .filter_map(|k| k["kind"].as_str())
        .collect();
    for kind in citygate_sim::KINDS {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let aq = catalog["kinds"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kind"] == "air_quality"))
        .expect("air_quality");
    let co = aq["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["metric"] == "co"))
        .expect("co");
    assert_eq!(co["unit"], "mg/m³");
    assert!(co["name"]["zh"].as_str().is_some_and(|s| !s.is_empty()));
    g.shutdown().await.expect("clean shutdown");
}

const STATIONS: &str = r#"
[sensors.wl-qc-001]
kind = "water_level"
tags = { district = "qingcheng", site = "Beijiang, Qingyuan reach" }
rules.level = { above = { warning = 15.0, critical = 18.0 } }
# The test raises the alert with one clear step; the rise-rate rule would raise a second one.
rules.rise_rate = { disabled = true }

[sensors.gd-qx-07]
kind = "gas_detector"
tags = { district = "qingxin" }

[sensors.em-yd-12]
kind = "electricity_meter"
tags = { district = "yingde" }

[sensors.wq-qc-042]
kind = "water_quality"
tags = { district = "qingcheng" }
"#;

/// A few hours of history and some other alerts, so the page (and its screenshots) show
/// a chart and more than one severity.
async fn seed_history(api: &Api) {
    let now = now_ms();
    let mut lines = String::new();
    for i in 0..36 {
        let ts = now - (36 - i) * 10 * MIN;
        let level = 13.0 + 0.05 * i as f64;
        lines.push_str(&format!(
            "water_level,sensor=wl-qc-001 level={level:.2} {}\n",
            ts * 1_000_000
        ));
    }
    let t = now - 5 * MIN;
    lines.push_str(&format!(
        "gas_detector,sensor=gd-qx-07 lel=55,h2s=2 {}\n",
        t * 1_000_000
    ));
    lines.push_str(&format!(
        "electricity_meter,sensor=em-yd-12 voltage_a=190,voltage_b=221,voltage_c=219 {}\n",
        t * 1_000_000
    ));
    lines.push_str(&format!(
        "water_quality,sensor=wq-qc-042 ph=7.2,ammonia_nitrogen=1.3 {}\n",
        t * 1_000_000
    ));
    let (status, receipt) = api.post("/api/v1/ingest", "text/plain", lines).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["rejected"], 0, "{receipt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_alert_is_acknowledged_and_the_page_speaks_chinese() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let overlay = format!(
        "[broker]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n{}\n{STATIONS}",
        mqtt_section(
            "embedded",
            &format!("mqtt://127.0.0.1:{port}"),
            Proto::V311,
            ""
        )
    );
    let g = start(dir.path(), &overlay).await;
    let api = Api::new(&g);
    let status =
        common::wait_for_mqtt_status(&api, "embedded", DEADLINE, common::is_connected).await;
    assert!(common::is_connected(&status), "{status}");
    seed_history(&api).await;
    let (_, catalog) = api.get("/api/v1/catalog").await;

    let b = Browser::start().await;
    b.navigate(&format!("{}/", api.base)).await;
    let operator = element(&b, &testid("operator-input")).await;
    b.send_keys(&operator, "Li Wei").await;
    element(&b, "[data-testid=\"conn-status\"][data-state=\"live\"]").await;
    // The alerts raised before the page opened come with the snapshot.
    element(&b, "[data-testid=\"alert-row\"][data-sensor=\"gd-qx-07\"]").await;

    // Over the river's warning level (15.0 m), published by a device over MQTT; a rise of
    // 0.57 m in 10 minutes is within what the gauge can do (5 m/h), so it is not suspect.
    let mut publisher = Publisher::connect(port, Proto::V311).await;
    publisher
        .publish(
            "city/qingcheng/water_level/wl-qc-001",
            format!(r#"{{"ts":{},"level":15.32}}"#, now_ms()),
        )
        .await;

    let row_css = "[data-testid=\"alert-row\"][data-sensor=\"wl-qc-001\"][data-rule=\"level\"]";
    let row_text = text_where(&b, row_css, |t| !t.is_empty()).await;
    assert!(row_text.contains("15.32 m"), "{row_text}");
    assert_eq!(b.attrs_of(row_css, "data-severity").await, ["warning"]);
    let kind_css = format!("{row_css} {}", testid("alert-kind"));
    assert_eq!(
        b.text_of(&kind_css).await,
        Some(kind_name(&catalog, "water_level", "en"))
    );

    // Ack: the dialog asks for a comment (the operator is known), then the row says who.
    b.click_css(&format!("{row_css} {}", testid("alert-ack")))
        .await;
    let comment = element(
        &b,
        &format!("{} {}", testid("dialog"), testid("dialog-input")),
    )
    .await;
    b.send_keys(&comment, "crew sent").await;
    b.click(&element(&b, &testid("dialog-ok")).await).await;
    let acked = text_where(
        &b,
        &format!("{row_css}[data-acked=\"true\"] {}", testid("alert-acked")),
        |t| !t.is_empty(),
    )
    .await;
    assert_eq!(acked, "acked by Li Wei");
    let (_, active) = api.get("/api/v1/alerts?state=active").await;
    let alert = active["alerts"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|a| a["sensor"] == "wl-qc-001" && a["rule"] == "level")
        })
        .unwrap_or_else(|| panic!("no active alert for wl-qc-001: {active}"));
    assert_eq!(alert["ack"]["by"], "Li Wei", "{alert}");
    assert_eq!(alert["ack"]["comment"], "crew sent", "{alert}");

    // The chart of the alerting sensor: its readings and the two levels of its rule.
    b.click_css(&kind_css).await;
    let thresholds = testid("chart-threshold");
    b.wait_for("the chart's thresholds", DEADLINE, || async {
        let severities = b.attrs_of(&thresholds, "data-severity").await;
        let values = b.attrs_of(&thresholds, "data-value").await;
        let mut found: Vec<String> = severities
            .iter()
            .zip(&values)
            .map(|(s, v)| format!("{s}={v}"))
            .collect();
        found.sort();
        (found == ["critical=18", "warning=15"]).then_some(())
    })
    .await;
    let points = text_where(&b, &testid("chart-status"), |t| t.ends_with("readings")).await;
    assert_eq!(points, "37 readings");
    element(&b, &testid("chart-series")).await;
    // The sensor counts follow the alert without a page reload.
    let alerting = text_where(
        &b,
        "[data-testid=\"summary-row\"][data-kind=\"water_level\"][data-district=\"qingcheng\"] \
         [data-testid=\"group-count\"][data-status=\"alerting\"]",
        |t| t == "1",
    )
    .await;
    assert_eq!(alerting, "1");
    b.screenshot(&artifact("console-en.png")).await;

    // 中文: a UI label, a kind name from the catalog, the acknowledgement.
    b.click_css(&testid("lang-zh")).await;
    let title = text_where(&b, &testid("alerts-title"), |t| t != "Live alerts").await;
    assert_eq!(title, "实时告警");
    let kind_zh = kind_name(&catalog, "water_level", "zh");
    assert_ne!(kind_zh, kind_name(&catalog, "water_level", "en"));
    let shown = text_where(&b, &format!("{row_css} {}", testid("alert-kind")), |t| {
        t == kind_zh
    })
    .await;
    assert_eq!(shown, kind_zh);
    let acked = text_where(&b, &format!("{row_css} {}", testid("alert-acked")), |t| {
        t.contains("确认")
    })
    .await;
    assert_eq!(acked, "已由 Li Wei 确认");
    let html_lang = b
        .execute("return document.documentElement.lang", vec![])
        .await;
    assert_eq!(html_lang, "zh-CN");
    let missing = b
        .execute(
            "return import('/console/i18n.js').then(m => m.missingKeys())",
            vec![],
        )
        .await;
    assert_eq!(missing, json!([]), "labels without a Chinese text");
    b.screenshot(&artifact("console-zh.png")).await;

    // A reload keeps the language and the operator.
    b.navigate(&format!("{}/", api.base)).await;
    let title = text_where(&b, &testid("alerts-title"), |t| !t.is_empty()).await;
    assert_eq!(title, "实时告警");
    let op = element(&b, &testid("operator-input")).await;
    assert_eq!(b.property(&op, "value").await, "Li Wei");
    drop(b);
    g.shutdown().await.expect("clean shutdown");
}

const KINDS: [(&str, &str); 4] = [
    ("water_level", "level=3.2"),
    ("noise", "laeq=35"),
    ("rainfall", "rainfall=0"),
    ("gas_detector", "lel=0"),
];
const DISTRICTS: [&str; 5] = ["qingcheng", "qingxin", "yingde", "lianzhou", "fogang"];
const FLEET: usize = 10_000;

/// Sensor `i` of the fleet: its kind, district, id and line-protocol reading. Every 20 sensors
/// form one round of all kind × district groups; in every other round the gas detectors read
/// 30 % LEL, above the 25 % warning level, so half of them alert.
fn fleet_sensor(i: usize, ts_ns: i64) -> (&'static str, &'static str, String, String) {
    let (kind, field) = KINDS[i % KINDS.len()];
    let district = DISTRICTS[(i / KINDS.len()) % DISTRICTS.len()];
    let id = format!("{}-{district}-{i:05}", &kind[..2]);
    let alerting = kind == "gas_detector" && (i / 20) % 2 == 0;
    let field = if alerting { "lel=30" } else { field };
    let line = format!("{kind},sensor={id},district={district} {field} {ts_ns}\n");
    (kind, district, id, line)
}

/// The summary table as the page shows it: (kind, district, status) → count.
async fn summary_on_page(b: &Browser) -> Vec<(String, String, String, u64)> {
    let rows = b
        .execute(
            r#"return [...document.querySelectorAll('[data-testid="summary-row"]')].flatMap(tr =>
                 [...tr.querySelectorAll('[data-testid="group-count"]')].map(td =>
                   [tr.dataset.kind, tr.dataset.district, td.dataset.status, Number(td.textContent)]))"#,
            vec![],
        )
        .await;
    let mut out: Vec<(String, String, String, u64)> =
        serde_json::from_value(rows).expect("summary rows");
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sensors_are_grouped_and_paged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), "").await;
    let api = Api::new(&g);
    let ts_ns = (now_ms() - MIN) * 1_000_000;
    let fleet: Vec<_> = (0..FLEET).map(|i| fleet_sensor(i, ts_ns)).collect();
    for batch in fleet.chunks(1000) {
        let body: String = batch.iter().map(|(_, _, _, line)| line.as_str()).collect();
        let (status, receipt) = api.post("/api/v1/ingest", "text/plain", body).await;
        assert_eq!(status, 200, "{receipt}");
        assert_eq!(receipt["accepted"], batch.len(), "{receipt}");
    }
    let alerting = FLEET / 4 / 2;

    let summary: Value = {
        let until = std::time::Instant::now() + DEADLINE;
        loop {
            let (_, s) = api.get("/api/v1/sensors/summary").await;
            let alerting_now: u64 = s["groups"]
                .as_array()
                .map(|gs| gs.iter().filter_map(|g| g["alerting"].as_u64()).sum())
                .unwrap_or(0);
            if (s["total"] == FLEET && alerting_now == alerting as u64)
                || std::time::Instant::now() > until
            {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(summary["total"], FLEET, "{summary}");
    let mut expected = Vec::new();
    for grp in summary["groups"].as_array().expect("groups") {
        let kind = grp["kind"].as_str().expect("kind");
        let district = grp["district"].as_str().expect("district");
        let gas = kind == "gas_detector";
        assert_eq!(grp["total"], 500, "{grp}");
        assert_eq!(grp["alerting"], if gas { 250 } else { 0 }, "{grp}");
        assert_eq!(grp["ok"], if gas { 250 } else { 500 }, "{grp}");
        for status in ["total", "ok", "suspect", "offline", "alerting"] {
            let n = grp[status].as_u64().expect("count");
            expected.push((kind.into(), district.into(), status.into(), n));
        }
    }
    expected.sort();
    assert_eq!(expected.len(), KINDS.len() * DISTRICTS.len() * 5);

    let b = Browser::start().await;
    b.navigate(&format!("{}/", api.base)).await;
    let shown = b
        .wait_for("the group counts", DEADLINE, || async {
            let rows = summary_on_page(&b).await;
            (rows.len() == expected.len()).then_some(rows)
        })
        .await;
    assert_eq!(shown, expected);
    let total = text_where(&b, &testid("sensors-total"), |t| !t.is_empty()).await;
    assert_eq!(total, "10000 sensors");

    // One group, paged 50 at a time in the API's order (by id within the group).
    let mut ids: Vec<&str> = fleet
        .iter()
        .filter(|(k, d, _, _)| *k == "water_level" && *d == "qingxin")
        .map(|(_, _, id, _)| id.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 500);
    b.click_css(
        "[data-testid=\"summary-row\"][data-kind=\"water_level\"][data-district=\"qingxin\"]",
    )
    .await;
    let next = element(&b, &testid("sensors-next")).await;
    for page in 0..10 {
        let first = ids[page * 50];
        let shown = b
            .wait_for(
                &format!("page {} of the group", page + 1),
                DEADLINE,
                || async {
                    let shown = b.attrs_of(&testid("sensor-row"), "data-sensor-id").await;
                    (shown.first().map(String::as_str) == Some(first)).then_some(shown)
                },
            )
            .await;
        assert_eq!(shown, ids[page * 50..page * 50 + 50], "page {}", page + 1);
        let range = text_where(&b, &testid("sensors-range"), |t| !t.is_empty()).await;
        assert_eq!(
            range,
            format!("{}–{} of 500", page * 50 + 1, page * 50 + 50)
        );
        let label = text_where(&b, &testid("sensors-page"), |t| !t.is_empty()).await;
        assert_eq!(label, format!("Page {} of 10", page + 1));
        if page < 9 {
            b.click(&next).await;
        }
    }
    assert_eq!(b.property(&next, "disabled").await, "true");

    // Thousands of active alerts: one page in the DOM at a time, filters narrow the list.
    let count = text_where(&b, &testid("alerts-count"), |t| {
        t.starts_with(&format!("{alerting} "))
    })
    .await;
    assert_eq!(count, format!("{alerting} active"));
    let pages = alerting.div_ceil(50);
    let label = text_where(&b, &testid("alerts-page"), |t| !t.is_empty()).await;
    assert_eq!(label, format!("Page 1 of {pages}"));
    let page_1 = b.attrs_of(&testid("alert-row"), "data-alert-id").await;
    assert_eq!(page_1.len(), 50);
    b.click_css(&testid("alerts-next")).await;
    text_where(&b, &testid("alerts-page"), |t| t.starts_with("Page 2 ")).await;
    let page_2 = b.attrs_of(&testid("alert-row"), "data-alert-id").await;
    assert_eq!(page_2.len(), 50);
    assert!(
        page_2.iter().all(|id| !page_1.contains(id)),
        "pages overlap"
    );

    b.click_css("[data-testid=\"alert-filter-district\"] option[value=\"yingde\"]")
        .await;
    let count = text_where(&b, &testid("alerts-count"), |t| t.contains("shown")).await;
    assert_eq!(count, format!("{alerting} active · 250 shown"));
    let sensors: Vec<String> = serde_json::from_value(
        b.execute(
            r#"return [...document.querySelectorAll('[data-testid="alert-row"]')].map(r => r.dataset.sensor)"#,
            vec![],
        )
        .await,
    )
    .expect("sensor ids");
    assert_eq!(sensors.len(), 50);
    assert!(
        sensors.iter().all(|s| s.starts_with("ga-yingde-")),
        "{sensors:?}"
    );
    b.screenshot(&artifact("console-10k.png")).await;
    drop(b);
    g.shutdown().await.expect("clean shutdown");
}

/// The console's SSE parser (it reads the stream with fetch(), so it parses the frames
/// itself): frames split anywhere across chunks, CRLF line ends, comments (keepalives),
/// multi-line data and the last id seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_parser_reassembles_events_split_across_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = start(dir.path(), "").await;
    let api = Api::new(&g);
    let b = Browser::start().await;
    b.navigate(&format!("{}/", api.base)).await;
    let stream = "event: snapshot\r\nid: 7\r\ndata: {\"seq\":7,\r\ndata: \"alerts\":[]}\r\n\r\n\
                  : keepalive\n\nevent: alert\nid: 8\ndata: {\"seq\":8}\n\ndata: no event name\n\n";
    let events = b
        .execute(
            r#"const [text, step] = arguments;
               return import('/console/api.js').then(({ SseParser }) => {
                 const out = [];
                 const p = new SseParser((e) => out.push(e));
                 for (let i = 0; i < text.length; i += step) p.push(text.slice(i, i + step));
                 return out;
               })"#,
            vec![json!(stream), json!(3)],
        )
        .await;
    assert_eq!(
        events,
        json!([
            {"event": "snapshot", "id": "7", "data": "{\"seq\":7,\n\"alerts\":[]}"},
            {"event": "alert", "id": "8", "data": "{\"seq\":8}"},
            {"event": "message", "id": null, "data": "no event name"},
        ])
    );
    drop(b);
    g.shutdown().await.expect("clean shutdown");
}

/// With `[http.auth] protect_reads`, the page asks for the token, asks again after a wrong
/// one, and then runs with the right one: live stream, sensor counts, an acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_asks_for_the_token_when_reads_are_protected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, "s3cret-console\n").expect("write token");
    let overlay = format!(
        "[http.auth]\ntoken_file = {:?}\nprotect_reads = true\n{STATIONS}",
        token_file.display().to_string()
    );
    let g = start(dir.path(), &overlay).await;
    let api = Api::new(&g);
    let line = format!(
        "gas_detector,sensor=gd-qx-07 lel=55,h2s=2 {}\n",
        (now_ms() - MIN) * 1_000_000
    );
    let resp = api
        .client
        .post(format!("{}/api/v1/ingest", api.base))
        .header("authorization", "Bearer s3cret-console")
        .header("content-type", "text/plain")
        .body(line)
        .send()
        .await
        .expect("ingest");
    assert_eq!(resp.status().as_u16(), 200);

    let b = Browser::start().await;
    b.navigate(&format!("{}/", api.base)).await;
    let prompt = text_where(&b, &testid("dialog-text"), |t| !t.is_empty()).await;
    assert_eq!(prompt, "This gateway needs an access token.");
    let input = element(&b, &testid("dialog-input")).await;
    assert_eq!(b.property(&input, "type").await, "password");
    b.send_keys(&input, "wrong").await;
    b.click_css(&testid("dialog-ok")).await;
    // 403: asked again (the dialog closes and opens anew, empty).
    b.wait_for("the token prompt after a wrong token", DEADLINE, || async {
        let again = b
            .execute(
                r#"const d = document.querySelector('[data-testid="dialog"]');
                   const i = document.querySelector('[data-testid="dialog-input"]');
                   return d.open && i.value === ''"#,
                vec![],
            )
            .await;
        (again == true).then_some(())
    })
    .await;
    assert_eq!(
        b.execute("return sessionStorage.getItem('citygate.token')", vec![])
            .await,
        "wrong"
    );
    b.send_keys(&input, "s3cret-console").await;
    b.click_css(&testid("dialog-ok")).await;

    element(&b, "[data-testid=\"conn-status\"][data-state=\"live\"]").await;
    let total = text_where(&b, &testid("sensors-total"), |t| t.ends_with("sensors")).await;
    // The four configured stations, whether they reported or not.
    assert_eq!(total, "4 sensors");
    let row_css = "[data-testid=\"alert-row\"][data-sensor=\"gd-qx-07\"][data-rule=\"lel\"]";
    b.click_css(&format!("{row_css} {}", testid("alert-ack")))
        .await;
    // No operator yet: the dialog asks for the name, with the comment beside it.
    let prompt = text_where(&b, &testid("dialog-text"), |t| t.starts_with("Who")).await;
    assert!(prompt.contains("acknowledging"), "{prompt}");
    b.send_keys(&input, "Chen Jing").await;
    b.click_css(&testid("dialog-ok")).await;
    let acked = text_where(&b, &format!("{row_css} {}", testid("alert-acked")), |t| {
        !t.is_empty()
    })
    .await;
    assert_eq!(acked, "acked by Chen Jing");
    let op = element(&b, &testid("operator-input")).await;
    assert_eq!(b.property(&op, "value").await, "Chen Jing");
    drop(b);
    g.shutdown().await.expect("clean shutdown");
}
