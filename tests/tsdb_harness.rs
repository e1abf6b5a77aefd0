//! The time-series store harness itself: a real VictoriaMetrics and a real InfluxDB 1.x take
//! line protocol (escaped tags, a Chinese tag value, a year-old point), give back exactly what
//! was written, keep a duplicate once, keep the data across stop()+restart(), run side by
//! side, and answer odd writes the way the sinks will be built to expect.

mod common;

use std::collections::BTreeMap;

use common::influxdb1::Influx1;
use common::victoria::{Series, Victoria};
use serde_json::{json, Value};

const YEAR_MS: i64 = 365 * 24 * 3_600_000;

/// Line protocol for the round trips: an escaped tag value (space, comma, equals sign), a
/// Chinese one, a duplicate line, and a point a year old. Returns the body and the times.
fn lines(now: i64) -> (String, i64, i64) {
    let old = now - YEAR_MS;
    let body = format!(
        "water_level,sensor=wl-1,district=清城区,site=north\\ gate\\,b\\=2 level=1.25 {now}\n\
         water_level,sensor=wl-1,district=清城区,site=north\\ gate\\,b\\=2 level=1.25 {now}\n\
         water_level,sensor=wl-1,district=清城区,site=north\\ gate\\,b\\=2 level=1.5 {t2}\n\
         water_level,sensor=wl-2,district=d1,site=s level=-0.125 {old}\n",
        t2 = now + 1000,
    );
    (body, now, old)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// In `export()`'s order: by name, then labels (`d1` sorts before `清城区`).
fn expected_vm_series(now: i64, old: i64) -> Vec<Series> {
    vec![
        Series {
            name: "water_level_level".into(),
            labels: labels(&[("district", "d1"), ("sensor", "wl-2"), ("site", "s")]),
            values: vec![-0.125],
            timestamps: vec![old],
        },
        Series {
            name: "water_level_level".into(),
            labels: labels(&[
                ("district", "清城区"),
                ("sensor", "wl-1"),
                ("site", "north gate,b=2"),
            ]),
            values: vec![1.25, 1.5],
            timestamps: vec![now, now + 1000],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_round_trip_dedup_retention_and_restart() {
    let mut vm = Victoria::start().await;
    let (body, now, old) = lines(common::now_ms());
    let client = common::http_client();
    let resp = client
        .post(format!(
            "{}/api/v2/write?org=x&bucket=y&precision=ms",
            vm.url()
        ))
        .body(body.clone())
        .send()
        .await
        .expect("write");
    assert_eq!(resp.status().as_u16(), 204);
    // The same points replayed in a later request (a retried batch) are kept once too.
    assert_eq!(vm.write(&body).await.0, 204);

    let selector = r#"{__name__="water_level_level"}"#;
    let expected = expected_vm_series(now, old);
    assert_eq!(vm.export(selector).await, expected);
    assert_eq!(vm.count_samples(selector).await, 3);

    vm.stop();
    let refused = client.get(format!("{}/health", vm.url())).send().await;
    assert!(refused.is_err(), "a stopped VM must refuse connections");
    vm.restart().await;
    assert_eq!(vm.export(selector).await, expected);
}

/// What VM 1.79 does with writes an InfluxDB would refuse: it answers 204 and skips or
/// converts, never a partial-write error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_odd_writes() {
    let vm = Victoria::start().await;
    let now = common::now_ms();

    assert_eq!(vm.write("").await, (204, String::new()));

    // A malformed line (no field value) between two good ones: skipped silently.
    let (status, _) = vm
        .write(&format!(
            "odd_a,s=1 v=1 {now}\nodd_a,s=1 v= {t}\nodd_a,s=1 v=2 {t2}\n",
            t = now + 1,
            t2 = now + 2
        ))
        .await;
    assert_eq!(status, 204);
    let a = vm.export(r#"{__name__="odd_a_v"}"#).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].values, vec![1.0, 2.0]);
    assert_eq!(a[0].timestamps, vec![now, now + 2]);

    // A field whose type changes (what InfluxDB calls a field type conflict): VM has no field
    // types; integers and booleans become numbers and a string becomes 0.
    let (status, _) = vm
        .write(&format!(
            "odd_b,s=1 v=1.5 {now}\nodd_b,s=1 v=3i {t}\nodd_b,s=1 v=true {t2}\nodd_b,s=1 v=\"x y\" {t3}\n",
            t = now + 1,
            t2 = now + 2,
            t3 = now + 3
        ))
        .await;
    assert_eq!(status, 204);
    let b = vm.export(r#"{__name__="odd_b_v"}"#).await;
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].values, vec![1.5, 3.0, 1.0, 0.0]);
    assert_eq!(b[0].timestamps, vec![now, now + 1, now + 2, now + 3]);
}

fn influx_row(time: i64, district: &str, sensor: &str, site: &str, level: f64) -> Value {
    json!({"time": time, "district": district, "sensor": sensor, "site": site, "level": level})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx1_round_trip_dedup_and_restart() {
    let mut influx = Influx1::start().await;
    influx.create_database("citygate").await;
    let (body, now, old) = lines(common::now_ms());
    // A string field with a space, a comma, an equals sign and a quote, escaped.
    let body = format!("{body}notes,sensor=wl-1 note=\"a b,c=d \\\"q\\\"\" {now}\n");
    let client = common::http_client();
    let resp = client
        .post(format!("{}/write?db=citygate&precision=ms", influx.url()))
        .body(body.clone())
        .send()
        .await
        .expect("write");
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(influx.write("citygate", &body).await.0, 204);

    let expected_levels: Vec<Value> = vec![
        influx_row(old, "d1", "wl-2", "s", -0.125),
        influx_row(now, "清城区", "wl-1", "north gate,b=2", 1.25),
        influx_row(now + 1000, "清城区", "wl-1", "north gate,b=2", 1.5),
    ];
    let levels = |rows: Vec<BTreeMap<String, Value>>| -> Vec<Value> {
        rows.into_iter()
            .map(|r| Value::Object(r.into_iter().collect()))
            .collect()
    };
    let q = "SELECT * FROM water_level ORDER BY time";
    assert_eq!(levels(influx.rows("citygate", q).await), expected_levels);
    let notes = influx
        .rows("citygate", "SELECT note FROM notes GROUP BY sensor")
        .await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["note"], json!("a b,c=d \"q\""));
    assert_eq!(notes[0]["sensor"], json!("wl-1"));
    assert_eq!(notes[0]["time"], json!(now));

    influx.stop();
    let refused = client.get(format!("{}/ping", influx.url())).send().await;
    assert!(
        refused.is_err(),
        "a stopped influxd must refuse connections"
    );
    influx.restart().await;
    assert_eq!(levels(influx.rows("citygate", q).await), expected_levels);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx1_odd_writes() {
    let influx = Influx1::start().await;
    influx.create_database("citygate").await;
    let now = common::now_ms();

    assert_eq!(influx.write("citygate", "").await, (204, String::new()));

    let (status, body) = influx
        .write("citygate", &format!("odd,s=1 v=1.5 {now}\n"))
        .await;
    assert_eq!((status, body.as_str()), (204, ""));
    // A type conflict in the middle of a batch: 400, a "partial write" error naming the
    // field, and the good lines of the batch are stored.
    let (status, body) = influx
        .write(
            "citygate",
            &format!(
                "odd,s=1 v=2.5 {t1}\nodd,s=1 v=\"text\" {t2}\nodd,s=1 v=3.5 {t3}\n",
                t1 = now + 1,
                t2 = now + 2,
                t3 = now + 3
            ),
        )
        .await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&body).expect("JSON error body");
    let message = error["error"].as_str().expect("error message");
    assert!(
        message.starts_with("partial write: field type conflict")
            && message.contains("\"v\"")
            && message.ends_with("dropped=1"),
        "{message}"
    );
    let rows = influx
        .rows("citygate", "SELECT v FROM odd ORDER BY time")
        .await;
    let got: Vec<(Value, Value)> = rows
        .iter()
        .map(|r| (r["time"].clone(), r["v"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!(now), json!(1.5)),
            (json!(now + 1), json!(2.5)),
            (json!(now + 3), json!(3.5))
        ]
    );

    // A line that does not parse: also a 400 "partial write", and the good line is stored.
    let (status, body) = influx
        .write(
            "citygate",
            &format!("odd,s=1 v=9 {t}\nodd,s=1 v= {t}\n", t = now + 10),
        )
        .await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&body).expect("JSON error body");
    let message = error["error"].as_str().expect("error message");
    assert!(
        message.starts_with("partial write: unable to parse")
            && message.contains("missing field value")
            // InfluxDB counts only rejected points, not lines that did not parse.
            && message.ends_with("dropped=0"),
        "{message}"
    );
    let rows = influx.rows("citygate", "SELECT count(v) FROM odd").await;
    assert_eq!(rows[0]["count"], json!(4));

    let (status, body) = influx
        .write("nosuch", &format!("odd,s=1 v=1 {now}\n"))
        .await;
    assert_eq!(status, 404);
    let error: Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(error["error"], json!("database not found: \"nosuch\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx1_auth_rejects_a_wrong_password() {
    let influx = Influx1::start_with_auth("admin", "s3cret 'quoted'").await;
    assert_eq!(influx.credentials(), Some(("admin", "s3cret 'quoted'")));
    influx.create_database("citygate").await;
    let now = common::now_ms();
    let client = common::http_client();
    let write = |user: Option<(&'static str, &'static str)>| {
        let mut req = client
            .post(format!("{}/write?db=citygate&precision=ms", influx.url()))
            .body(format!("auth_test,s=1 v=7 {now}\n"));
        if let Some((u, p)) = user {
            req = req.basic_auth(u, Some(p));
        }
        req.send()
    };
    let wrong = write(Some(("admin", "wrong"))).await.expect("write");
    assert_eq!(wrong.status().as_u16(), 401);
    let anonymous = write(None).await.expect("write");
    assert_eq!(anonymous.status().as_u16(), 401);
    let right = write(Some(("admin", "s3cret 'quoted'")))
        .await
        .expect("write");
    assert_eq!(right.status().as_u16(), 204);

    let rows = influx.rows("citygate", "SELECT v FROM auth_test").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["v"], json!(7));
    assert_eq!(rows[0]["time"], json!(now));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_each_run_side_by_side() {
    let (vm_a, vm_b) = tokio::join!(Victoria::start(), Victoria::start());
    let (ix_a, ix_b) = tokio::join!(Influx1::start(), Influx1::start());
    assert_ne!(vm_a.port(), vm_b.port());
    assert_ne!(ix_a.port(), ix_b.port());
    let now = common::now_ms();
    for (i, vm) in [&vm_a, &vm_b].into_iter().enumerate() {
        assert_eq!(vm.write(&format!("side,inst={i} v={i} {now}")).await.0, 204);
    }
    for (i, ix) in [&ix_a, &ix_b].into_iter().enumerate() {
        ix.create_database("db").await;
        assert_eq!(
            ix.write("db", &format!("side,inst={i} v={i} {now}"))
                .await
                .0,
            204
        );
    }
    for (i, vm) in [&vm_a, &vm_b].into_iter().enumerate() {
        let series = vm.export(r#"{__name__="side_v"}"#).await;
        assert_eq!(series.len(), 1, "instance {i} holds only its own point");
        assert_eq!(series[0].labels["inst"], i.to_string());
        assert_eq!(series[0].values, vec![i as f64]);
        assert_eq!(series[0].timestamps, vec![now]);
    }
    for (i, ix) in [&ix_a, &ix_b].into_iter().enumerate() {
        let rows = ix.rows("db", "SELECT * FROM side").await;
        assert_eq!(rows.len(), 1, "instance {i} holds only its own point");
        assert_eq!(rows[0]["inst"], json!(i.to_string()));
        assert_eq!(rows[0]["v"], json!(i));
        assert_eq!(rows[0]["time"], json!(now));
    }
}
