#!/usr/bin/env python3
"""Startup time of `citygate run` for scripts/bench-resources: from exec to the first 200 from
GET /ready, polled every millisecond, COUNT times, each in a fresh working directory (so each
start creates its SQLite database, as a first start in service does). Prints one JSON object:
each start's seconds and their median.

  startup_time.py --citygate target/release/citygate --workdir /tmp/x --port 8080 --count 5 \
      [-- extra citygate arguments before `run`, e.g. -c override.toml]
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time


def ready(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        c.request("GET", "/ready")
        return c.getresponse().status == 200
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--citygate", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--port", type=int, required=True, help="the HTTP port it will listen on")
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--timeout-s", type=float, default=60)
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    exe = os.path.abspath(a.citygate)
    times = []
    for i in range(a.count):
        cwd = os.path.join(a.workdir, f"start{i}")
        os.makedirs(cwd)
        env = dict(os.environ, RUST_LOG="warn")
        with open(os.path.join(cwd, "citygate.log"), "wb") as log:
            t0 = time.monotonic()
            p = subprocess.Popen([exe, *a.extra, "run"], cwd=cwd, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
            try:
                while not ready(a.port):
                    if p.poll() is not None:
                        sys.exit(f"startup_time: citygate stopped (see {cwd}/citygate.log)")
                    if time.monotonic() - t0 > a.timeout_s:
                        sys.exit(f"startup_time: not ready after {a.timeout_s}s (see {cwd}/citygate.log)")
                    time.sleep(0.001)
                times.append(time.monotonic() - t0)
            finally:
                p.terminate()
                p.wait()
    print(json.dumps({"count": len(times), "seconds": [round(t, 4) for t in times],
                      "median_s": round(statistics.median(times), 4)},
                     separators=(",", ":")))


if __name__ == "__main__":
    main()
