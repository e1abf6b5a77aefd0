# Shared pieces of the bench scripts (scripts/bench-*): messages, a
# temporary directory cleaned up on exit with every process started, free ports, mosquitto,
# the release or debug binaries. Source it after setting `bench_name`; it sets `tmp` and
# `pids` and installs an EXIT trap.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${bench_name:-bench}" "$*" >&2; exit 1; }

now() { date +%s.%N; }
# The first numeric value of "key": in a JSON text on stdin.
json_field() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p" | head -n1; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }
# CPU seconds (user + system) of process $1, and its peak RSS (VmHWM) in MiB, from /proc.
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}
hwm_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
# The "outbox" object of /health on stdin, so that its "points" is not a sink's lag.points.
outbox_field() { sed -n 's/.*"outbox":{\([^}]*\)}.*/\1/p' | json_field "$1"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/citygate-bench.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # KEEP_TMP=1 keeps the configs and logs for a look after a failure.
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

# A port nothing listens on (a probe connect fails), below the kernel's ephemeral range: a
# port inside it can be the local end of some outgoing connection (curl, the load), which the
# probe cannot see and which makes a later bind fail with "address in use".
free_port() {
    local p low span
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    span=$((low - 20000))
    [ "$span" -ge 1000 ] || span=30000
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % span))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# wait_port PORT [PID LOG]: until something listens on PORT; with PID, give up (showing LOG)
# as soon as that process, the one meant to listen, has stopped.
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
            cat "$3" >&2
            die "the process meant to listen on port $1 stopped"
        fi
        sleep 0.05
    done
    [ -z "${3:-}" ] || cat "$3" >&2
    die "nothing listens on port $1"
}

# build_bins PROFILE BUILD: builds citygate and citygate-sim when BUILD is 1, then sets
# `citygate` and `sim` to their paths.
build_bins() {
    local profile=$1 build=$2
    local target=${CARGO_TARGET_DIR:-target}
    if [ "$build" = 1 ]; then
        say "building citygate and citygate-sim ($profile)"
        if [ "$profile" = release ]; then
            cargo build --quiet --release --bins -p citygate -p citygate-sim
        else
            cargo build --quiet --bins -p citygate -p citygate-sim
        fi
    fi
    citygate=$target/$profile/citygate
    sim=$target/$profile/citygate-sim
    [ -x "$citygate" ] && [ -x "$sim" ] || die "binaries missing in $target/$profile (drop --no-build)"
}

# start_mosquitto: mosquitto on a free loopback port; sets `mosquitto_bin` and `url`.
# `mosquitto_extra` (optional) holds more lines for its config.
start_mosquitto() {
    mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    [ -x "$mosquitto_bin" ] || die "mosquitto is missing (Debian package: mosquitto)"
    local port
    port=$(free_port)
    cat >"$tmp/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
# Same window for every client (MQTT 3.1.1 has no receive maximum); BENCH_INFLIGHT moves it
# (the gateway's [[mqtt]] inflight follows it in bench-mqtt).
max_inflight_messages ${BENCH_INFLIGHT:-100}
# Never drop a queued QoS 1 message while a consumer is behind.
max_queued_messages 0
max_queued_bytes 0
${mosquitto_extra:-}
CONF
    say "mosquitto on 127.0.0.1:$port"
    "$mosquitto_bin" -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
    pids+=($!)
    wait_port "$port"
    url=mqtt://127.0.0.1:$port
}

mosquitto_version() {
    "$mosquitto_bin" -h 2>/dev/null | sed -n 's/^mosquitto version \([^ ]*\).*/\1/p'
}

machine() {
    echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1))"
}

# wait_connected HEALTH_URL PID LOG: until /health shows the MQTT connection up.
wait_connected() {
    local health=$1 pid=$2 log=$3
    for _ in $(seq 1 200); do
        curl -fsS "$health" 2>/dev/null | grep -q '"connected":true' && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "the gateway stopped"; }
        sleep 0.05
    done
    die "the gateway did not connect to mosquitto"
}
