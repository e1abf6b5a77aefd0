#!/usr/bin/env python3
"""Load for scripts/bench-resources: readings from S sensors of kinds whose default rules keep
window state (rainfall: 3/6/12 h sums; air_quality: 1/8/24 h means of six pollutants), with a
fraction of the sensors breaching so that their alerts stay active.

Sensors alternate between rainfall and air_quality. Every round each sensor reports once;
rounds are INTERVAL_MS apart and the last one lies a day back (inside the default max_age of
7 d, never in the future). The load goes to the gateway's HTTP ingest as JSON arrays over one
keep-alive connection. Prints one JSON object: messages, readings, accepted, suspect,
rejected, seconds.

  windowed_load.py --url http://127.0.0.1:8080 --sensors 100000 --readings 400000
"""
import argparse
import http.client
import json
import sys
import time
import urllib.parse

INTERVAL_MS = 600_000
DISTRICTS = ["qingcheng", "qingxin", "yingde", "lianzhou", "fogang", "rongcheng", "jiedong"]
AQ_METRICS = ("pm25", "pm10", "so2", "no2", "o3", "co")


def message(sensor, rnd, ts, breach_every):
    breaching = breach_every > 0 and sensor % breach_every == 0
    wobble = (rnd + sensor) % 7
    tags = {"district": DISTRICTS[sensor % len(DISTRICTS)]}
    if sensor % 2 == 0:
        # 60 mm per report: every 3 h sum is at least the 50 mm orange signal (major).
        value = 60.0 + wobble if breaching else 0.1 * wobble
        return {"sensor": f"rf-{sensor:06d}", "kind": "rainfall", "ts": ts, "tags": tags,
                "rainfall": value}, 1
    m = {"sensor": f"aq-{sensor:06d}", "kind": "air_quality", "ts": ts, "tags": tags}
    # Breaching: the PM2.5 24 h mean above 115 (major); otherwise clean air under every limit.
    m["pm25"] = 130.0 + wobble if breaching else 20.0 + wobble
    m["pm10"] = 40.0 + wobble
    m["so2"] = 8.0 + wobble * 0.5
    m["no2"] = 25.0 + wobble
    m["o3"] = 60.0 + wobble
    m["co"] = 0.6 + wobble * 0.05
    return m, len(AQ_METRICS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--sensors", type=int, required=True)
    ap.add_argument("--readings", type=int, required=True,
                    help="messages in all (an air_quality message carries six readings)")
    ap.add_argument("--breach-every", type=int, default=20,
                    help="every Nth sensor breaches (0: none)")
    ap.add_argument("--batch", type=int, default=2000, help="messages per request")
    a = ap.parse_args()
    if a.sensors < 1 or a.readings < 1:
        sys.exit("windowed_load: --sensors and --readings must be positive")

    u = urllib.parse.urlparse(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    rounds = -(-a.readings // a.sensors)
    start = (int(time.time()) - 86_400) * 1000 - rounds * INTERVAL_MS
    totals = {"messages": 0, "readings": 0, "accepted": 0, "suspect": 0, "rejected": 0}
    reasons = {}
    batch = []

    def flush():
        body = json.dumps(batch, separators=(",", ":"))
        conn.request("POST", "/api/v1/ingest", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        text = r.read()
        if r.status // 100 != 2:
            sys.exit(f"windowed_load: ingest answered {r.status}: {text[:300]!r}")
        receipt = json.loads(text)
        for k in ("accepted", "suspect", "rejected"):
            totals[k] += receipt.get(k, 0)
        for k, v in receipt.get("reasons", {}).items():
            reasons[k] = reasons.get(k, 0) + v
        batch.clear()

    t0 = time.monotonic()
    for i in range(a.readings):
        rnd, sensor = divmod(i, a.sensors)
        m, n = message(sensor, rnd, start + rnd * INTERVAL_MS, a.breach_every)
        batch.append(m)
        totals["messages"] += 1
        totals["readings"] += n
        if len(batch) >= a.batch:
            flush()
    if batch:
        flush()
    totals["seconds"] = round(time.monotonic() - t0, 3)
    totals["reasons"] = reasons
    print(json.dumps(totals, separators=(",", ":")))


if __name__ == "__main__":
    main()
