#!/usr/bin/env python3
"""The reckoning of scripts/soak: waits for the gateway to drain, then reconciles exactly.

Inputs: the fleet's acknowledgement record (one `sensor,metric,ts_ms,value` line per reading
whose MQTT message the broker acknowledged), the gateway's SQLite file, VictoriaMetrics'
/api/v1/export and the fault log. What "exactly once" means here (RELIABILITY.md says the
same): the production store, InfluxDB, keeps one point per series and timestamp and a
rewrite overwrites it, so the invariant is one *distinct* (series, timestamp) per acknowledged
reading, with the published value. VictoriaMetrics runs without deduplication, so a write the
gateway replayed after a kill -9 shows up as a second identical sample: those are counted and
reported as replays (harmless under InfluxDB's overwrite), while two *different* values at one
series and timestamp would be a real error. SQLite's readings table has (sensor, metric, ts)
as its primary key, so a duplicate there is impossible by construction; it is counted anyway.

Exit status 0 when every check passes, 1 otherwise.
"""

import argparse
import collections
import http.client
import json
import math
import os
import re
import sqlite3
import sys
import time
import urllib.parse
import urllib.request

EXPORT_END_S = 7_258_118_400  # 2200-01-01: export's default end ("now") hides recent samples.


def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def health(url):
    try:
        return get_json(url, timeout=5)
    except Exception as e:  # the gateway may be busy; the caller retries
        return {"error": str(e)}


def load_acked(path):
    acked = {}
    repeated = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            sensor, metric, ts, value = line.split(",")
            key = (sensor, metric, int(ts))
            if key in acked:
                repeated += 1
            acked[key] = float(value)
    return acked, repeated


def db_connect(path):
    # Read-only, beside the running gateway (WAL: readers do not block the writer).
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def same(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def vm_export(vm, sensors, attempts=3):
    """Every exported series of the given sensors, as (metric, sensor, timestamps, values).

    /api/v1/export streams: once VictoriaMetrics has sent its 200 header it can only report a
    later error in the body, as a line of text after the JSON lines, or by closing the
    connection. Such an export is read again (it is idempotent); if every attempt fails, the
    error names the offending line instead of a bare JSONDecodeError."""
    q = urllib.parse.urlencode(
        {"match[]": '{sensor=~".+"}', "start": "0", "end": str(EXPORT_END_S)}
    )
    problem = None
    for attempt in range(attempts):
        if attempt:
            print(f"==> VictoriaMetrics export attempt {attempt} failed ({problem}); retrying", file=sys.stderr)
            time.sleep(2)
        try:
            urllib.request.urlopen(f"{vm}/internal/force_flush", timeout=30).read()
            with urllib.request.urlopen(f"{vm}/api/v1/export?{q}", timeout=120) as r:
                body = r.read()
        except (OSError, http.client.HTTPException) as e:
            problem = f"request failed: {e}"
            continue
        out = []
        problem = None
        for n, line in enumerate(body.splitlines(), 1):
            if not line.strip():
                continue
            try:
                s = json.loads(line)
                sensor = s["metric"].get("sensor")
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                problem = f"line {n} is not an exported series ({e}): {line[:300]!r}"
                break
            if sensor in sensors:
                out.append((s["metric"]["__name__"], sensor, s["timestamps"], s["values"]))
        if problem is None:
            return out
    raise SystemExit(f"error: VictoriaMetrics' export failed {attempts} times; last: {problem}")


def known_reasons(src):
    """Every string literal in the gateway's sources: a dead letter's reason must be one."""
    words = set()
    for root, _, files in os.walk(src):
        for name in files:
            if name.endswith(".rs"):
                with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                    words.update(re.findall(r'"([a-z][a-z0-9_]*)"', f.read()))
    return words


def reconcile(a, acked, faults):
    sensors = {k[0] for k in acked}
    db = db_connect(a.db)
    try:
        kind_of = dict(db.execute("SELECT DISTINCT sensor, kind FROM readings"))
        stored = collections.Counter()
        stored_value = {}
        for sensor, metric, ts, value in db.execute(
            "SELECT sensor, metric, ts, value FROM readings"
        ):
            if sensor in sensors:
                stored[(sensor, metric, ts)] += 1
                stored_value[(sensor, metric, ts)] = value
        letters = db.execute(
            "SELECT id, reason, detail, sensor, metric, ts FROM dead_letters"
        ).fetchall()
        alerts = db.execute(
            "SELECT id, rule, sensor, metric, state, severity, started_at, resolved_at FROM alerts"
        ).fetchall()
        events = collections.defaultdict(list)
        for alert_id, event in db.execute(
            "SELECT alert_id, event FROM alert_events ORDER BY seq"
        ):
            events[alert_id].append(event)
    finally:
        db.close()

    # Dead letters: each has a reason the gateway's code knows.
    reasons = known_reasons(a.src)
    by_reason = collections.Counter(r[1] for r in letters)
    bad_letters = [r for r in letters if not r[1] or r[1] not in reasons]
    rejected = {(r[3], r[4], r[5]) for r in letters if r[3] and r[4] and r[5] is not None}

    # SQLite: every acknowledged reading once, with its value, unless it was rejected.
    # The fleet sends only valid readings (its incidents are valid readings that breach
    # rules, or suspect ones), so a rejected one is a gateway fault as much as a lost one:
    # it fails the run too, rather than count as accounted for.
    sqlite_lost, sqlite_wrong, acked_rejected = [], [], []
    for key, value in acked.items():
        if key in stored:
            if not same(stored_value[key], value):
                sqlite_wrong.append((key, value, stored_value[key]))
        elif key in rejected:
            acked_rejected.append(key)
        else:
            sqlite_lost.append(key)
    sqlite_dups = sum(n - 1 for n in stored.values() if n > 1)
    sqlite_unacked = sum(1 for k in stored if k not in acked)

    # VictoriaMetrics: one distinct (series, ts) per acknowledged reading, replays counted.
    vm_samples = collections.defaultdict(list)
    raw = 0
    for name, sensor, timestamps, values in vm_export(a.vm, sensors):
        kind = kind_of.get(sensor)
        if not kind or not name.startswith(kind + "_"):
            continue
        metric = name[len(kind) + 1:]
        if metric == "quality":
            # The point's quality="good" string field, which VM stores as a 0 series.
            continue
        for ts, v in zip(timestamps, values):
            vm_samples[(sensor, metric, ts)].append(v)
            raw += 1
    vm_lost, vm_wrong = [], []
    for key, value in acked.items():
        got = vm_samples.get(key)
        if got is None:
            if key not in rejected:
                vm_lost.append(key)
        elif not same(got[0], value):
            vm_wrong.append((key, value, got[0]))
    vm_replays = sum(len(v) - 1 for v in vm_samples.values() if len(v) > 1)
    vm_conflicts = [k for k, v in vm_samples.items() if any(not same(x, v[0]) for x in v)]
    vm_unacked = sum(1 for k in vm_samples if k not in acked)

    # Alerts: one active alert per (sensor, rule, metric); Modbus devices are up again, so
    # none of theirs about being offline may stay active.
    active = [x for x in alerts if x[4] == "active"]
    per_key = collections.Counter((x[2], x[1], x[3]) for x in active)
    dup_active = {f"{k[0]}/{k[1]}/{k[2]}": n for k, n in per_key.items() if n > 1}
    offline_rules = {"device_offline", "offline"}
    stale_offline = [
        f"{x[2]}/{x[1]}" for x in active if x[2] in a.modbus_sensors and x[1] in offline_rules
    ]
    raised_offline = sum(1 for x in alerts if x[2] in a.modbus_sensors and x[1] in offline_rules)

    # Each alert's state agrees with its own event log, across every kill -9: raised once
    # first, resolved iff a resolved event was stored.
    log_mismatch = []
    for x in alerts:
        ev = events.get(x[0], [])
        if not ev or ev[0] != "raised" or ev.count("raised") != 1:
            log_mismatch.append(f"{x[2]}/{x[1]}: events {ev}")
        elif (x[4] == "resolved") != ("resolved" in ev):
            log_mismatch.append(f"{x[2]}/{x[1]}: {x[4]} with events {ev}")

    faults_by_kind = collections.Counter(f[1] for f in faults)
    checks = {
        "acknowledged readings all in SQLite (lost = 0)": not sqlite_lost,
        "acknowledged readings all in VictoriaMetrics (lost = 0)": not vm_lost,
        "stored values equal the published ones": not sqlite_wrong and not vm_wrong,
        "no two different values for one series and timestamp in VictoriaMetrics": not vm_conflicts,
        "no duplicate rows in SQLite": sqlite_dups == 0,
        "every dead letter has a known reason": not bad_letters,
        "no acknowledged fleet reading was rejected": not acked_rejected,
        "no two active alerts for one (sensor, rule, metric)": not dup_active,
        "no Modbus offline alert active once the devices answer": not stale_offline,
        "every alert's state agrees with its event log": not log_mismatch,
    }
    return {
        "duration_s": a.duration,
        "seed": a.seed,
        "faults": dict(sorted(faults_by_kind.items())),
        "faults_total": sum(v for k, v in faults_by_kind.items() if not k.endswith("_back")),
        "gateway_starts": a.gateway_starts,
        "published_messages": a.published,
        "acked_readings": len(acked),
        "stored_sqlite": sum(1 for k in acked if k in stored),
        "stored_vm": sum(1 for k in acked if k in vm_samples),
        "acked_but_rejected": len(acked_rejected),
        "lost_sqlite": len(sqlite_lost),
        "lost_vm": len(vm_lost),
        "duplicates_sqlite": sqlite_dups,
        "vm_samples_raw": raw,
        "vm_replayed_duplicates": vm_replays,
        "vm_conflicts": len(vm_conflicts),
        "value_mismatches": len(sqlite_wrong) + len(vm_wrong),
        "delivered_without_ack_sqlite": sqlite_unacked,
        "delivered_without_ack_vm": vm_unacked,
        "dead_letters": len(letters),
        "dead_letters_by_reason": dict(sorted(by_reason.items())),
        "dead_letters_without_known_reason": len(bad_letters),
        "alerts_total": len(alerts),
        "alerts_active": len(active),
        "modbus_offline_alerts_raised": raised_offline,
        "duplicate_active_alerts": dup_active,
        "stale_offline_alerts": stale_offline,
        "alert_log_mismatches": log_mismatch[:10],
        "checks": checks,
        "ok": all(checks.values()),
        "examples": {
            "lost_sqlite": [list(k) for k in sqlite_lost[:5]],
            "lost_vm": [list(k) for k in vm_lost[:5]],
            "vm_conflicts": [list(k) for k in vm_conflicts[:5]],
            "bad_dead_letters": [list(r[:3]) for r in bad_letters[:5]],
            "acked_but_rejected": [list(k) for k in acked_rejected[:5]],
        },
    }


def drained(h):
    """Nothing in flight: the outbox is not behind and every device and broker is up.

    The Modbus devices keep polling, so the outbox is rarely empty and the readings count
    never stops: "not behind" is its oldest entry younger than a few seconds. The MQTT side
    is judged by its received counter staying put across two polls (see the caller).
    """
    if "error" in h:
        return False
    outbox = h.get("outbox", {})
    if outbox.get("points", 1) != 0 and outbox.get("oldest_age_seconds", 1e9) > 5:
        return False
    if not all(m.get("connected") for m in h.get("mqtt", [])):
        return False
    return all(d.get("state") == "up" for d in h.get("modbus", []))


def mqtt_received(h):
    return tuple(m.get("received") for m in h.get("mqtt", [])) if "error" not in h else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--acked", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--vm", required=True)
    p.add_argument("--health", required=True)
    p.add_argument("--faults", required=True)
    p.add_argument("--duration", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--published", type=int, default=0)
    p.add_argument("--gateway-starts", type=int, default=1)
    p.add_argument("--modbus-sensors", default="")
    p.add_argument("--src", default="src")
    p.add_argument("--json", action="store_true")
    p.add_argument("--deadline", type=int, default=240, help="seconds to wait for the drain")
    a = p.parse_args()
    a.modbus_sensors = set(filter(None, a.modbus_sensors.split(",")))

    acked, repeated = load_acked(a.acked)
    faults = []
    with open(a.faults, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                faults.append(parts)

    # Drain: the outbox caught up and the MQTT source's received count steady across two
    # polls 3 s apart, then reconcile; a reading still on its way (in the broker's queue)
    # would show as lost, so a failed reckoning is retried until the deadline before it counts.
    deadline = time.monotonic() + a.deadline
    result, last_count = None, None
    while True:
        h = health(a.health)
        count = mqtt_received(h)
        steady = drained(h) and count is not None and count == last_count
        last_count = count
        if steady or time.monotonic() > deadline:
            result = reconcile(a, acked, faults)
            if result["ok"] or time.monotonic() > deadline:
                break
        time.sleep(3)
    result["acked_record_repeats"] = repeated
    result["drain_health"] = {
        k: h.get(k) for k in ("status", "outbox") if isinstance(h, dict)
    }

    if a.json:
        print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    else:
        faults_text = ", ".join(f"{k} {v}" for k, v in result["faults"].items()) or "none"
        print(
            f"""soak: {result['duration_s']} s, seed {result['seed']}
faults:                {result['faults_total']} ({faults_text}); gateway started {result['gateway_starts']} times
published:             {result['published_messages']} messages, {result['acked_readings']} readings acknowledged by the broker
stored (SQLite):       {result['stored_sqlite']}   lost {result['lost_sqlite']}
stored (VM, distinct): {result['stored_vm']}   lost {result['lost_vm']}
acknowledged but rejected (must be 0): {result['acked_but_rejected']}
duplicates:            SQLite {result['duplicates_sqlite']}, VM replayed samples {result['vm_replayed_duplicates']} (identical; InfluxDB overwrites), VM conflicts {result['vm_conflicts']}
delivered without a PUBACK seen: SQLite {result['delivered_without_ack_sqlite']}, VM {result['delivered_without_ack_vm']}
dead letters:          {result['dead_letters']} {result['dead_letters_by_reason']}
alerts:                {result['alerts_total']} raised, {result['alerts_active']} active, {result['modbus_offline_alerts_raised']} Modbus offline""",
        )
        for name, ok in result["checks"].items():
            print(f"  [{'ok' if ok else 'FAIL'}] {name}")
        if not result["ok"]:
            print(json.dumps(result["examples"], ensure_ascii=False), file=sys.stderr)
        print("soak: PASS" if result["ok"] else "soak: FAIL")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
