#!/usr/bin/env bash
# Overlord against nginx, VictoriaMetrics and InfluxDB on this machine, in
# one run (see BENCHMARKS.md for what each workload means and one run's
# figures).
#
#   sudo bash benches/compare.sh            # from the repository root
#
# Everything runs on loopback only (127.0.0.1), every loop is bounded, all
# state lives in one `mktemp -d` directory removed on exit, and every
# server started here is stopped by its pid. As root the script installs
# the peers from Debian packages; a peer that does not install or start is
# reported as 'skipped'.
#
# Knobs (environment):
#   DAY_STEPS=8640   readings per series in the bytes-on-disk day (8640 = one
#                    every 10 s for 24 h; lower it for a proportional slice)
#   SET2_STEPS=1000  rows per device in the second bytes-on-disk set (1 s
#                    apart; 1000 = 10 POSTs of 100,000 rows)
#   P1_N=20000 P1_C=32 P1_ROUNDS=3 WRK_SECS=8 P2_ROUNDS=2
#   SKIP_INSTALL=1   do not run apt-get (tools must already be there)
#   BENCH_BIN=... measure that overlord binary instead of building this
#                    tree (BENCH_LOAD_BIN: its load tool; default beside it)
#   NO_HYPERFINE=1   time P3 with curl alone
#   TLS=1            also measure HTTPS (after P1 keep-alive): Overlord's
#                    [tls] port beside an nginx `listen ... ssl` server with
#                    the same certificate (`overlord tls self-signed`, ECDSA
#                    P-256), TLS 1.2/1.3: ab with a new connection (a full
#                    handshake) per request, and wrk keep-alive
#   TLS=only         just that (and the machine): no P2, P3, P6, day, and
#                    no victoria-metrics or influxdb
#   STORAGE=only     only what storage changes: P2 (one and two connections,
#                    no line protocol), P3, the day and the second set,
#                    against VictoriaMetrics (no nginx, influxdb, P1 or P6)
#   PG=0             no Overlord nodes on PostgreSQL ([store] kind =
#                    "postgres", a throw-away PostgreSQL in the temp dir);
#                    by default P1, P2, P3 and P6 are measured on one
#                    node there, with the CPU PostgreSQL's processes spent
#                    during P2, and through a second node that forwards to
#                    it (two nodes, docs/scale-out.md "Many nodes")

set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

DAY_STEPS=${DAY_STEPS:-8640}
P1_N=${P1_N:-20000}
P1_C=${P1_C:-32}
WRK_SECS=${WRK_SECS:-8}
P2_ROUNDS=${P2_ROUNDS:-2}
P1_ROUNDS=${P1_ROUNDS:-3}
DEVICES=1000
P2_ROWS=100000
P2_POSTS=10
TLS=${TLS:-0}
STORAGE=${STORAGE:-all}
PG=${PG:-1}

log() { printf '\n=== %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

# ---------------------------------------------------------------- install
if [ "${SKIP_INSTALL:-0}" != 1 ] && [ "$(id -u)" = 0 ]; then
    log "installing tools (apt-get)"
    apt-get update -qq >/dev/null 2>&1 || note "apt-get update failed; trying the install anyway"
    # The required tools first, then each peer on its own so one failure
    # does not take the others with it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk apache2-utils hyperfine curl >/dev/null 2>&1 \
        || note "some load tools failed to install"
    pg_pkg=""; [ "$PG" != 0 ] && pg_pkg=postgresql
    for pkg in nginx-light victoria-metrics influxdb $pg_pkg; do
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 \
            || note "$pkg: install failed (skipped)"
    done
fi
for tool in curl ab; do
    command -v "$tool" >/dev/null || { echo "compare.sh: '$tool' is required" >&2; exit 1; }
done
HAVE_NGINX=0; command -v nginx >/dev/null && HAVE_NGINX=1
HAVE_VM=0; command -v victoria-metrics >/dev/null && HAVE_VM=1
HAVE_INFLUX=0; command -v influxd >/dev/null && HAVE_INFLUX=1
HAVE_WRK=0; command -v wrk >/dev/null && HAVE_WRK=1
HAVE_HF=0; command -v hyperfine >/dev/null && [ "${NO_HYPERFINE:-0}" != 1 ] && HAVE_HF=1
if [ "$STORAGE" = only ]; then HAVE_NGINX=0; HAVE_INFLUX=0; fi
# PostgreSQL's server tools (Debian keeps them off PATH).
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
HAVE_PG=0; [ "$PG" != 0 ] && [ "$TLS" != only ] && [ -x "${PG_BIN:-/nonexistent}/pg_ctl" ] && HAVE_PG=1

# ---------------------------------------------------------------- build
if [ -n "${BENCH_BIN:-}" ]; then
    # Measure another build (an older commit's, say) against the same
    # peers: BENCH_BIN=/path/to/overlord, and its load tool beside it
    # in examples/ unless BENCH_LOAD_BIN says where.
    OVERLORD="$BENCH_BIN"
    LOAD="${BENCH_LOAD_BIN:-$(dirname "$BENCH_BIN")/examples/load}"
    log "using $OVERLORD (BENCH_BIN) and $LOAD"
else
    log "building overlord and the load tool (release)"
    cargo build --release --quiet --bin overlord --example load || exit 1
    OVERLORD="$ROOT/target/release/overlord"
    LOAD="$ROOT/target/release/examples/load"
fi

# ---------------------------------------------------------------- temp + cleanup
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stop one server started here; wait (bounded) until it is gone.
stop_pid() {
    local p=$1 i
    kill -TERM "$p" 2>/dev/null
    for i in $(seq 1 300); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
}

# A free loopback port at or above $1 (bounded search).
free_port() {
    local p=$1 i
    for i in $(seq 0 200); do
        if ! ss -Hltn "sport = :$((p + i))" 2>/dev/null | grep -q .; then
            echo $((p + i)); return 0
        fi
    done
    return 1
}

# Wait until a URL answers (any HTTP status), at most ~20 s.
wait_http() {
    local i
    for i in $(seq 1 200); do
        curl -s -o /dev/null -m 1 "$@" && return 0
        sleep 0.1
    done
    return 1
}

# Per-thread-name CPU ticks of a process: "name ticks" lines.
thread_ticks() {
    awk '{ n=$2; gsub(/[()]/, "", n); t[n] += $14 + $15 } END { for (k in t) print k, t[k] }' \
        /proc/"$1"/task/*/stat 2>/dev/null | sort
}
# CPU seconds per thread name between two thread_ticks files, and % of wall.
thread_report() {
    local before=$1 after=$2 wall=$3 hz
    hz=$(getconf CLK_TCK)
    join -a2 -e0 -o 0,1.2,2.2 "$before" "$after" | awk -v hz="$hz" -v wall="$wall" \
        '{ s = ($3 - $2) / hz; if (s > 0) printf "    thread %-18s %6.2f s CPU  (%5.1f%% of one core over %.2f s)\n", $1, s, 100 * s / wall, wall }'
}

# Overlord's group-commit counters: "commit_seconds_sum commits requests_sum".
ov_commits() {
    curl -s -H "Authorization: Bearer $OV_TOKEN" "http://$OV_ADDR/metrics" | awk '
        $1 == "overlord_commit_seconds_sum" { s = $2 }
        $1 == "overlord_commit_seconds_count" { c = $2 }
        $1 == "overlord_commit_requests_sum" { r = $2 }
        END { print s + 0, c + 0, r + 0 }'
}
# What the writer did between two ov_commits lines, over WALL seconds.
commit_report() {
    echo "$1 $2 $3" | awk '{ s = $4 - $1; c = $5 - $2; r = $6 - $3; if (c > 0)
        printf "    writer: %d group commits, %.1f requests each, %.3f ms each, busy %.2f s of %.2f s\n", c, r / c, 1000 * s / c, s, $7 }'
}

# Wait (at most 300 s) until Overlord has sealed every chunk it can
# (docs/storage.md: a sensor's last chunk after [storage] seal_idle_secs
# without a write); prints the seconds waited.
ov_wait_sealed() { ov_wait_metric overlord_seal_pending_sensors zero; }
# Seconds until the server has compacted its data file once while idle
# ([storage] compact_idle_secs); "none" from a build without it.
ov_wait_compacted() { ov_wait_metric overlord_compactions_total nonzero; }
# Seconds (at most 300) until Overlord's metric $1 is zero or nonzero
# ($2); "none" when the metric is not there (an older build).
ov_wait_metric() {
    local name=$1 want=$2 t0 i v
    t0=$(ms_now)
    for i in $(seq 1 600); do
        v=$(curl -s -H "Authorization: Bearer $OV_TOKEN" "http://$OV_ADDR/metrics" \
            | awk -v n="$name" '$1 == n { print $2 }')
        [ -z "$v" ] && { echo none; return; }
        awk -v v="$v" -v w="$want" 'BEGIN { exit !((w == "zero") == (v == 0)) }' && break
        sleep 0.5
    done
    awk -v a="$t0" -v b="$(ms_now)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'
}
# Size and allocated bytes (what du shows) of a file: "size alloc".
file_bytes() { echo "$(stat -c %s "$1") $(( $(stat -c %b "$1") * $(stat -c %B "$1") ))"; }

vmhwm() { awk '/^VmHWM/ { print $2 }' /proc/"$1"/status 2>/dev/null; }
reset_hwm() { echo 5 > /proc/"$1"/clear_refs 2>/dev/null; }

now_s() { date +%s; }
ms_now() { date +%s%N | cut -b1-13; }

# ---------------------------------------------------------------- machine
log "machine"
CPU_MODEL=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
note "nproc: $(nproc); CPU: $CPU_MODEL; memory: $(free -g | awk '/^Mem:/ { print $2 }') GiB"
note "kernel: $(uname -sr)"
note "load average at start: $(uptime | sed 's/.*load average: //') (other work on the machine skews every figure)"
DEV=$(findmnt -no SOURCE -T "$TMP" 2>/dev/null | head -1)
DEVNAME=$(basename "${DEV:-unknown}")
ROTA=$(lsblk -dno ROTA "$DEV" 2>/dev/null | tr -d ' ' || echo '?')
note "temp dir filesystem: $(findmnt -no FSTYPE -T "$TMP" 2>/dev/null) on $DEVNAME (rotational=$ROTA)"
SYNC=$(dd if=/dev/zero of="$TMP/dsync" bs=4k count=1000 oflag=dsync 2>&1 | awk '/copied/ { print $(NF-3) }')
rm -f "$TMP/dsync"
note "1000 x 4 KiB O_DSYNC writes: ${SYNC} s ($(awk -v s="$SYNC" 'BEGIN { printf "%.3f", s }') ms each)"
log "versions"
[ -n "${BENCH_BIN:-}" ] && note "overlord: $BENCH_BIN" || note "overlord $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' + uncommitted changes'), $(rustc --version)"
note "$(ab -V | head -1)"
[ $HAVE_WRK = 1 ] && note "$(wrk -v 2>&1 | head -1)"
[ $HAVE_HF = 1 ] && note "$(hyperfine --version)"
[ $HAVE_NGINX = 1 ] && note "$(nginx -v 2>&1)" || note "nginx: skipped"
[ $HAVE_VM = 1 ] && note "victoria-metrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null)" || note "victoria-metrics: skipped"
[ $HAVE_INFLUX = 1 ] && note "$(influxd version 2>&1 | head -1)" || note "influxdb: skipped"
[ $HAVE_PG = 1 ] && note "$("$PG_BIN/postgres" --version)" || note "postgresql: skipped"

# ---------------------------------------------------------------- servers
# start_overlord DIR PORT -> sets OV_PID OV_ADDR OV_TOKEN
start_overlord() {
    local dir=$1 port=$2 i per_source=""
    mkdir -p "$dir"
    # Every benchmark client is on this host: no per-source connection cap
    # (a build older than the key, measured with BENCH_BIN, has none).
    grep -qa 'max_connections_per_source' "$OVERLORD" && per_source="max_connections_per_source = 0"
    cat > "$dir/overlord.toml" <<EOF
listen = "127.0.0.1:$port"
data_file = "$dir/o.redb"
[limits]
max_connections = 4096
$per_source
# P1 sends every request as the one device dev1: lift the per-device
# request limit (default 50/s) so the benchmark measures the server.
device_requests_per_sec = 0.0
${OV_TLS_CONF:-}
${OV_STORE_CONF:-}
EOF
    # These benchmarks are HTTP: no MQTT listener (a build older than it
    # has none and would refuse the section).
    grep -qa 'max_keep_alive_secs' "$OVERLORD" && printf '[mqtt]\nlisten = ""\n' >> "$dir/overlord.toml"
    "$OVERLORD" --config "$dir/overlord.toml" > "$dir/stdout" 2> "$dir/stderr" &
    OV_PID=$!; PIDS+=("$OV_PID")
    for i in $(seq 1 200); do grep -q '^listening on' "$dir/stdout" 2>/dev/null && break; sleep 0.1; done
    OV_ADDR="127.0.0.1:$port"
    if [ "${3:-}" = follower ]; then
        # A second node on the same database: it makes no administrator.
        grep -q '^following:' "$dir/stdout" || { echo "the second node does not follow:"; cat "$dir/stdout" "$dir/stderr"; exit 1; }
        return 0
    fi
    OV_TOKEN=$(sed -n 's/^admin token: //p' "$dir/stdout")
    [ -n "$OV_TOKEN" ] || { echo "overlord did not start:"; cat "$dir/stderr"; exit 1; }
}

# start_postgres DIR PORT -> PG_PID PG_URL (PG_PID empty when skipped): a
# throw-away cluster in DIR, as the postgres user when run as root (initdb
# refuses root), defaults but for the loopback port and socket directory;
# fsync stays on: a node's 200 means committed and flushed.
start_postgres() {
    local dir=$1 port=$2 as=()
    PG_PID=""; PG_URL=""
    [ $HAVE_PG = 1 ] || return 0
    mkdir -p "$dir"
    # As root, the postgres user must reach DIR: it may pass through the
    # temp dir (not list it) and owns DIR.
    if [ "$(id -u)" = 0 ]; then chmod o+x "$TMP"; chown postgres "$dir"; as=(runuser -u postgres --); fi
    if ! "${as[@]}" "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust --no-locale -E UTF8 > "$dir/initdb.log" 2>&1; then
        note "initdb failed (skipped)"; return 0
    fi
    if ! "${as[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir" start > /dev/null 2>&1; then
        note "postgresql did not start (skipped)"; return 0
    fi
    PG_PID=$(head -1 "$dir/data/postmaster.pid"); PIDS+=("$PG_PID")
    "${as[@]}" "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -qc 'CREATE DATABASE overlord' postgres > /dev/null
    PG_URL="host=127.0.0.1 port=$port user=postgres dbname=overlord"
}
# CPU ticks of PostgreSQL's processes: the postmaster, its live children,
# and (through the postmaster's cutime/cstime) the children it reaped.
pg_ticks() {
    local p t=0 v
    [ -n "${PG_PID:-}" ] || { echo 0; return; }
    t=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/"$PG_PID"/stat 2>/dev/null)
    for p in $(pgrep -P "$PG_PID"); do
        v=$(awk '{ print $14 + $15 }' /proc/"$p"/stat 2>/dev/null); t=$((t + ${v:-0}))
    done
    echo "$t"
}
# Total CPU ticks of one process (every thread).
proc_ticks() { awk '{ print $14 + $15 }' /proc/"$1"/stat 2>/dev/null || echo 0; }

# start_vm DIR PORT -> VM_PID VM_ADDR (VM_PID empty when skipped)
start_vm() {
    local dir=$1 port=$2
    VM_PID=""; VM_ADDR="127.0.0.1:$port"
    [ $HAVE_VM = 1 ] || return 0
    mkdir -p "$dir"
    victoria-metrics -storageDataPath="$dir/data" -httpListenAddr="$VM_ADDR" -retentionPeriod=100y \
        -loggerLevel=ERROR > "$dir/log" 2>&1 &
    VM_PID=$!; PIDS+=("$VM_PID")
    wait_http "http://$VM_ADDR/health" || { note "victoria-metrics did not start (skipped)"; VM_PID=""; }
}

# start_influx DIR PORT -> IF_PID IF_ADDR (IF_PID empty when skipped)
start_influx() {
    local dir=$1 port=$2
    IF_PID=""; IF_ADDR="127.0.0.1:$port"
    [ $HAVE_INFLUX = 1 ] || return 0
    mkdir -p "$dir"
    local rpc; rpc=$(free_port $((port + 1)))
    # Reporting off (no outside traffic); the cache is written to TSM and
    # fully compacted soon after writes stop, so the on-disk size is the
    # compacted one.
    cat > "$dir/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "5s"
  compact-full-write-cold-duration = "10s"
[http]
  bind-address = "$IF_ADDR"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
EOF
    influxd -config "$dir/influxdb.conf" > "$dir/log" 2>&1 &
    IF_PID=$!; PIDS+=("$IF_PID")
    if wait_http "http://$IF_ADDR/ping"; then
        curl -s -XPOST "http://$IF_ADDR/query" --data-urlencode 'q=CREATE DATABASE bench' > /dev/null
    else
        note "influxd did not start (skipped)"; IF_PID=""
    fi
}

# start_nginx DIR PORT -> NG_PID NG_ADDR
start_nginx() {
    local dir=$1 port=$2
    NG_PID=""; NG_ADDR="127.0.0.1:$port"
    [ $HAVE_NGINX = 1 ] || return 0
    mkdir -p "$dir/www/v1" "$dir/logs" "$dir/body"
    printf 'ok,1,0\n' > "$dir/www/v1/readings"
    # The same reply body as Overlord's, as a static file, at the same path.
    cat > "$dir/nginx.conf" <<EOF
user root;
worker_processes auto;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/csv;
    client_body_temp_path $dir/body;
    server {
        listen $NG_ADDR;
        root $dir/www;
    }
${NG_TLS_CONF:-}
}
EOF
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" > "$dir/out" 2>&1 &
    NG_PID=$!; PIDS+=("$NG_PID")
    wait_http "http://$NG_ADDR/v1/readings" || { note "nginx did not start (skipped)"; NG_PID=""; }
}

RES="$TMP/results"; : > "$RES"
put() { echo "$1=$2" >> "$RES"; }
get() { awk -F= -v k="$1" '$1 == k { v = $2 } END { print v }' "$RES"; }

if [ "$TLS" != 0 ]; then
    # One certificate for both servers, made by the command users run.
    "$OVERLORD" tls self-signed --host localhost --host 127.0.0.1 --out "$TMP/tls" > /dev/null || exit 1
    OV_TLS_ADDR="127.0.0.1:$(free_port 28260)"
    NG_TLS_ADDR="127.0.0.1:$(free_port 28270)"
    OV_TLS_CONF="[tls]
cert_file = \"$TMP/tls/cert.pem\"
key_file = \"$TMP/tls/key.pem\"
listen = \"$OV_TLS_ADDR\""
    # nginx's usual TLS settings: the same protocols, its default ciphers
    # and session tickets (as Overlord: rustls sends TLS 1.3 tickets).
    NG_TLS_CONF="    server {
        listen $NG_TLS_ADDR ssl;
        ssl_certificate $TMP/tls/cert.pem;
        ssl_certificate_key $TMP/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;
        root $TMP/nginx/www;
    }"
fi

log "starting servers"
start_nginx "$TMP/nginx" "$(free_port 28180)"
start_overlord "$TMP/ov" "$(free_port 28190)"
if [ "$TLS" != only ]; then
    start_vm "$TMP/vm" "$(free_port 28200)"
    start_influx "$TMP/influx" "$(free_port 28210)"
else
    VM_PID=""; IF_PID=""
fi
note "overlord pid $OV_PID on $OV_ADDR; nginx ${NG_PID:-skipped}; victoria-metrics ${VM_PID:-skipped}; influxd ${IF_PID:-skipped}"
# The same server on PostgreSQL ([store] kind = "postgres"): OVPG_*.
OVPG_PID=""
start_postgres "$TMP/pg" "$(free_port 28220)"
if [ -n "$PG_PID" ]; then
    saved=("$OV_PID" "$OV_ADDR" "$OV_TOKEN")
    # node_listen: a second node (OVF_*) follows it, forwarding every
    # connection to it (docs/scale-out.md, "Many nodes").
    pg_store() { printf '[store]\nkind = "postgres"\npostgres_url = "%s"\nnode_listen = "127.0.0.1:%s"\n' "$PG_URL" "$1"; }
    OV_STORE_CONF=$(pg_store "$(free_port 28240)") start_overlord "$TMP/ovpg" "$(free_port 28230)"
    OVPG_PID=$OV_PID; OVPG_ADDR=$OV_ADDR; OVPG_TOKEN=$OV_TOKEN
    OV_STORE_CONF=$(pg_store "$(free_port 28260)") start_overlord "$TMP/ovpg2" "$(free_port 28250)" follower
    OVF_PID=$OV_PID; OVF_ADDR=$OV_ADDR
    OV_PID=${saved[0]}; OV_ADDR=${saved[1]}; OV_TOKEN=${saved[2]}
    note "overlord on PostgreSQL: pid $OVPG_PID on $OVPG_ADDR, a second node (forwarding to it) pid $OVF_PID on $OVF_ADDR; postgres pid $PG_PID"
fi

R=$(curl -s -X POST -H "Authorization: Bearer $OV_TOKEN" "http://$OV_ADDR/v1/devices" -d 'id=dev1')
DEV_TOKEN=$(echo "$R" | awk -F, 'NR == 2 { print $2 }')
[ -n "$DEV_TOKEN" ] || { echo "could not create dev1: $R"; exit 1; }
[ "$TLS" != only ] && note "creating $DEVICES devices over HTTP: $("$LOAD" devices --addr "$OV_ADDR" --token "$OV_TOKEN" --count $DEVICES --prefix d)"
curl -s -X POST -H "Authorization: Bearer $OV_TOKEN" "http://$OV_ADDR/v1/devices" -d 'id=p3dev0000' > /dev/null
if [ -n "$OVPG_PID" ]; then
    R=$(curl -s -X POST -H "Authorization: Bearer $OVPG_TOKEN" "http://$OVPG_ADDR/v1/devices" -d 'id=dev1')
    PG_DEV_TOKEN=$(echo "$R" | awk -F, 'NR == 2 { print $2 }')
    [ "$TLS" != only ] && note "creating $DEVICES devices on the PostgreSQL node: $("$LOAD" devices --addr "$OVPG_ADDR" --token "$OVPG_TOKEN" --count $DEVICES --prefix d)"
    curl -s -X POST -H "Authorization: Bearer $OVPG_TOKEN" "http://$OVPG_ADDR/v1/devices" -d 'id=p3dev0000' > /dev/null
fi

# ---------------------------------------------------------------- P1
# ab_run NAME URL [ab options...] -> prints and records req/s
ab_run() {
    local name=$1 url=$2; shift 2
    local out rps failed non2xx
    out=$(ab -q -n "$P1_N" -c "$P1_C" "$@" "$url" 2>&1)
    rps=$(echo "$out" | awk '/^Requests per second/ { print $4 }')
    failed=$(echo "$out" | awk '/^Failed requests/ { print $3 }')
    non2xx=$(echo "$out" | awk '/^Non-2xx responses/ { print $3 }')
    p50=$(echo "$out" | awk '$1 == "50%" { print $2 }')
    p99=$(echo "$out" | awk '$1 == "99%" { print $2 }')
    if [ -z "$rps" ]; then
        note "$(printf '%-30s failed: %s' "$name" "$(echo "$out" | tail -2 | tr '\n' ' ')")"
        return
    fi
    note "$(printf '%-30s %9.0f req/s  p50 %s ms  p99 %s ms  failed %s  non-2xx %s' "$name" "$rps" "$p50" "$p99" "${failed:-0}" "${non2xx:-0}")"
    if [ "${failed:-0}" = 0 ] && [ "${non2xx:-0}" = 0 ]; then echo "$rps" >> "$TMP/p1.$name"; fi
}
best() { [ -s "$TMP/$1" ] && sort -g "$TMP/$1" | tail -1; }

P1_PATH="/v1/readings?device=dev1&token=$DEV_TOKEN&N1=21.5"
printf 'dev1,21.5\n' > "$TMP/vm_one.csv"
printf 'm,device=dev1 N1=21.5\n' > "$TMP/influx_one.txt"
# A fixed time whose minute no other request touches: every request is the
# same reading (stored once), so this isolates HTTP + group commit.
FIXED_T=$(( ($(now_s) / 60 - 120) * 60 + 7 ))


# ---------------------------------------------------------------- TLS
# wrk_run NAME [wrk options...] URL -> prints and records req/s
wrk_run() {
    local name=$1; shift
    local out rps errs
    out=$(wrk -t1 -c"$P1_C" -d"${WRK_SECS}s" --latency "$@" 2>&1)
    rps=$(echo "$out" | awk '/^Requests\/sec/ { print $2 }')
    errs=$(echo "$out" | awk '/Non-2xx|Socket errors/' | tr -s ' ' | tr '\n' ' ')
    p50=$(echo "$out" | awk '$1 == "50%" { print $2 }')
    p99=$(echo "$out" | awk '$1 == "99%" { print $2 }')
    note "$(printf '%-30s %9.0f req/s  p50 %s  p99 %s  %s' "$name" "${rps:-0}" "$p50" "$p99" "$errs")"
    [ -z "$errs" ] && put "wrk.$name" "$rps"
}
# Summary helpers (also used by the TLS step's own summary).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "skipped" }'; }
row() { printf '  %-46s %14s %14s %8s\n' "$1" "$2" "$3" "$4"; }
fmt() { [ -n "$1" ] && printf "$2" "$1" || echo skipped; }

# HTTPS: Overlord's [tls] port against nginx's `listen ... ssl`, the same
# certificate and path as P1. ab opens a new connection per request, so
# its req/s is full TLS handshakes per second (no session resumption);
# wrk keeps its connections, so it is the cost of TLS records alone.
tls_step() {
    local round
    log "TLS: HTTPS, same certificate (ECDSA P-256), ab -n $P1_N -c $P1_C new connection per request, $P1_ROUNDS rounds interleaved, best of each; then wrk keep-alive"
    wait_http "https://$OV_TLS_ADDR/healthz" --cacert "$TMP/tls/cert.pem" || { note "overlord HTTPS did not answer"; return; }
    for n in "overlord $OV_TLS_ADDR" "nginx $NG_TLS_ADDR"; do
        set -- $n
        [ "$1" = nginx ] && [ -z "$NG_PID" ] && continue
        note "$1 negotiates: $(openssl s_client -connect "$2" < /dev/null 2>/dev/null | sed -n 's/^New, \(.*\)/\1/p' | head -1)"
    done
    ab_run warmup-overlord-https "https://$OV_TLS_ADDR$P1_PATH&time=$((FIXED_T - 7200))" > /dev/null
    for round in $(seq 1 "$P1_ROUNDS"); do
        note "round $round"
        [ -n "$NG_PID" ] && ab_run nginx-https "https://$NG_TLS_ADDR$P1_PATH"
        thread_ticks "$OV_PID" > "$TMP/tt.before"; t0=$(ms_now)
        ab_run overlord-https "https://$OV_TLS_ADDR$P1_PATH"
        t1=$(ms_now); thread_ticks "$OV_PID" > "$TMP/tt.after"
        [ "$round" = 1 ] && thread_report "$TMP/tt.before" "$TMP/tt.after" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1000 }')"
        # Diagnostic: no reading stored (/healthz), TLS and HTTP alone.
        ab_run overlord-https-healthz "https://$OV_TLS_ADDR/healthz"
        if [ "$TLS" = only ]; then
            # The plain-HTTP figures of the same run, for the TLS cost.
            [ -n "$NG_PID" ] && ab_run nginx "http://$NG_ADDR$P1_PATH"
            ab_run overlord "http://$OV_ADDR$P1_PATH"
        fi
    done
    for n in nginx-https overlord-https overlord-https-healthz nginx overlord; do put "p1.$n" "$(best "p1.$n")"; done
    tls_p2
    if [ $HAVE_WRK = 1 ]; then
        [ -n "$NG_PID" ] && wrk_run nginx-https "https://$NG_TLS_ADDR$P1_PATH"
        wrk_run overlord-https "https://$OV_TLS_ADDR$P1_PATH"
        wrk_run overlord-https-healthz "https://$OV_TLS_ADDR/healthz"
        if [ "$TLS" = only ]; then
            [ -n "$NG_PID" ] && wrk_run nginx "http://$NG_ADDR$P1_PATH"
            wrk_run overlord "http://$OV_ADDR$P1_PATH"
        fi
    fi
}

# P2's shape over HTTPS, Overlord alone (nginx stores nothing): one
# 100,000-row CSV POST (4 sensors, one device) with curl, HTTPS and plain
# HTTP alternating, each POST its own days, best of 2 each.
tls_p2() {
    local i scheme addr t start csv="$TMP/p2tls.csv"
    for i in 1 2 3 4; do
        if [ $((i % 2)) = 1 ]; then scheme=https; addr=$OV_TLS_ADDR; else scheme=http; addr=$OV_ADDR; fi
        start=$(( ($(now_s) / 86400 - 10 - 2 * i) * 86400 ))
        awk -v s="$start" 'BEGIN { print "time,N1,N2,N3,N4"; for (k = 0; k < 100000; k++)
            printf "%d,%.1f,%.1f,%.2f,%.3f\n", s + k, 20 + k % 50 / 10, 40 + k % 30 / 10, 1000 + k % 100 / 100, 3 + k % 1000 / 1000 }' > "$csv"
        t=$(curl -s -o "$TMP/p2tls.out" -w '%{time_total}' --cacert "$TMP/tls/cert.pem" -H 'Content-Type: text/csv' \
            --data-binary @"$csv" "$scheme://$addr/v1/readings?device=dev1&token=$DEV_TOKEN")
        if grep -q '^ok,400000,' "$TMP/p2tls.out"; then
            awk -v t="$t" 'BEGIN { printf "%.0f\n", 100000 / t }' >> "$TMP/p2.overlord-$scheme"
            note "$(printf 'P2 one POST over %-5s %8.0f rows/s' "$scheme" "$(awk -v t="$t" 'BEGIN { print 100000 / t }')")"
        else
            note "P2 over $scheme failed: $(head -c 200 "$TMP/p2tls.out")"
        fi
    done
    put p2.overlord-https "$(best p2.overlord-https)"; put p2.overlord-http "$(best p2.overlord-http)"
}

tls_summary() {
    local O
    O=$(get p1.overlord-https)
    row "TLS ab handshakes/s vs nginx (goal >= 0.8)" "$(fmt "$O" %.0f)" "$(fmt "$(get p1.nginx-https)" %.0f)" "$(ratio "$O" "$(get p1.nginx-https)")"
    O=$(get wrk.overlord-https)
    row "TLS wrk keep-alive req/s vs nginx (goal >= 0.8)" "$(fmt "$O" %.0f)" "$(fmt "$(get wrk.nginx-https)" %.0f)" "$(ratio "$O" "$(get wrk.nginx-https)")"
    O=$(get p1.overlord-https-healthz)
    row "TLS ab, /healthz (no write) vs nginx (diag.)" "$(fmt "$O" %.0f)" "$(fmt "$(get p1.nginx-https)" %.0f)" "$(ratio "$O" "$(get p1.nginx-https)")"
    O=$(get wrk.overlord-https-healthz)
    row "TLS wrk, /healthz (no write) vs nginx (diag.)" "$(fmt "$O" %.0f)" "$(fmt "$(get wrk.nginx-https)" %.0f)" "$(ratio "$O" "$(get wrk.nginx-https)")"
    row "TLS wrk, overlord https/plain (diagnostic)" "$(fmt "$(get wrk.overlord-https)" %.0f)" "$(fmt "$(get wrk.overlord)" %.0f)" "$(ratio "$(get wrk.overlord-https)" "$(get wrk.overlord)")"
    row "TLS wrk, nginx https/plain (diagnostic)" "$(fmt "$(get wrk.nginx-https)" %.0f)" "$(fmt "$(get wrk.nginx)" %.0f)" "$(ratio "$(get wrk.nginx-https)" "$(get wrk.nginx)")"
    row "TLS P2 one CSV POST rows/s, https/plain" "$(fmt "$(get p2.overlord-https)" %.0f)" "$(fmt "$(get p2.overlord-http)" %.0f)" "$(ratio "$(get p2.overlord-https)" "$(get p2.overlord-http)")"
    row "TLS ab, overlord https/plain (diagnostic)" "$(fmt "$(get p1.overlord-https)" %.0f)" "$(fmt "$(get p1.overlord)" %.0f)" "$(ratio "$(get p1.overlord-https)" "$(get p1.overlord)")"
    row "TLS ab, nginx https/plain (diagnostic)" "$(fmt "$(get p1.nginx-https)" %.0f)" "$(fmt "$(get p1.nginx)" %.0f)" "$(ratio "$(get p1.nginx-https)" "$(get p1.nginx)")"
}

if [ "$TLS" = only ]; then
    tls_step
    log "summary (TLS=only; ratio > 1 means Overlord is better)"
    note "load average at the end: $(uptime | sed 's/.*load average: //') (a shared machine skews every figure)"
    row "measure" "overlord" "peer" "ratio"
    row "----------------------------------------------" "--------" "----" "-----"
    tls_summary
    exit 0
fi

if [ "$STORAGE" != only ]; then
log "P1: one reading per new connection, ab -n $P1_N -c $P1_C (HTTP/1.0), $P1_ROUNDS rounds interleaved, best of each"
ab_run warmup-overlord "http://$OV_ADDR$P1_PATH&time=$((FIXED_T - 3600))" > /dev/null
for round in $(seq 1 "$P1_ROUNDS"); do
    note "round $round"
    [ -n "$NG_PID" ] && ab_run nginx "http://$NG_ADDR$P1_PATH"
    thread_ticks "$OV_PID" > "$TMP/tt.before"; c0=$(ov_commits); t0=$(ms_now)
    ab_run overlord "http://$OV_ADDR$P1_PATH"
    t1=$(ms_now); c1=$(ov_commits); thread_ticks "$OV_PID" > "$TMP/tt.after"
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1000 }')
    if [ "$round" = 1 ]; then
        thread_report "$TMP/tt.before" "$TMP/tt.after" "$wall"
        commit_report "$c0" "$c1" "$wall"
    fi
    c0=$(ov_commits); t0=$(ms_now)
    ab_run overlord-fixed-time "http://$OV_ADDR$P1_PATH&time=$FIXED_T"
    t1=$(ms_now); c1=$(ov_commits)
    [ "$round" = 1 ] && commit_report "$c0" "$c1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1000 }')"
    [ -n "$VM_PID" ] && ab_run victoria-metrics "http://$VM_ADDR/api/v1/import/csv?format=1:label:device,2:metric:N1" -p "$TMP/vm_one.csv" -T text/csv
    [ -n "$IF_PID" ] && ab_run influxdb "http://$IF_ADDR/write?db=bench" -p "$TMP/influx_one.txt" -T text/plain
    [ -n "$OVPG_PID" ] && ab_run overlord-postgres "http://$OVPG_ADDR/v1/readings?device=dev1&token=$PG_DEV_TOKEN&N1=21.5"
    [ -n "$OVPG_PID" ] && ab_run overlord-postgres-2nodes "http://$OVF_ADDR/v1/readings?device=dev1&token=$PG_DEV_TOKEN&N1=21.5"
done
for n in nginx overlord overlord-fixed-time victoria-metrics influxdb overlord-postgres overlord-postgres-2nodes; do put "p1.$n" "$(best "p1.$n")"; done

# ---------------------------------------------------------------- wrk
if [ $HAVE_WRK = 1 ]; then
    log "P1 keep-alive: wrk -t1 -c$P1_C -d${WRK_SECS}s (HTTP/1.1 keep-alive)"
    cat > "$TMP/vm.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "dev1,21.5\n"
wrk.headers["Content-Type"] = "text/csv"
EOF
    cat > "$TMP/influx.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "m,device=dev1 N1=21.5\n"
wrk.headers["Content-Type"] = "text/plain"
EOF
    [ -n "$NG_PID" ] && wrk_run nginx "http://$NG_ADDR$P1_PATH"
    c0=$(ov_commits)
    wrk_run overlord "http://$OV_ADDR$P1_PATH"
    c1=$(ov_commits); commit_report "$c0" "$c1" "$WRK_SECS"
    c0=$(ov_commits)
    wrk_run overlord-fixed-time "http://$OV_ADDR$P1_PATH&time=$((FIXED_T + 60))"
    c1=$(ov_commits); commit_report "$c0" "$c1" "$WRK_SECS"
    [ -n "$VM_PID" ] && wrk_run victoria-metrics -s "$TMP/vm.lua" "http://$VM_ADDR/api/v1/import/csv?format=1:label:device,2:metric:N1"
    [ -n "$IF_PID" ] && wrk_run influxdb -s "$TMP/influx.lua" "http://$IF_ADDR/write?db=bench"
else
    log "P1 keep-alive: wrk skipped"
fi

[ "$TLS" = 1 ] && tls_step

fi # STORAGE != only

# ---------------------------------------------------------------- P2
log "P2: $P2_POSTS POSTs x $P2_ROWS CSV rows (4 sensors) over $DEVICES devices, one connection; $P2_ROUNDS rounds"
BASE_DAY=$(( $(now_s) / 86400 * 86400 ))
# ingest_run NAME FORMAT ADDR START [extra load args] -> prints the load line
ingest_run() {
    local name=$1 fmt=$2 addr=$3 start=$4; shift 4
    local out
    out=$("$LOAD" ingest --addr "$addr" --format "$fmt" --devices $DEVICES --prefix d --sensors 4 \
        --start "$start" --step 10 --steps $((P2_ROWS * P2_POSTS / DEVICES)) --rows-per-post $P2_ROWS --pregen "$@" 2>&1)
    note "$(printf '%-18s %s' "$name" "$out")"
    echo "$out" | sed -n 's/.* rows_per_sec=\([0-9]*\).*/\1/p' >> "$TMP/p2.$name"
}
reset_hwm "$OV_PID"; [ -n "$VM_PID" ] && reset_hwm "$VM_PID"; [ -n "$IF_PID" ] && reset_hwm "$IF_PID"
RSS_BASE_OV=$(vmhwm "$OV_PID")
for round in $(seq 1 "$P2_ROUNDS"); do
    # Each round its own day, 4 to 8 days ago, the same data for every server.
    start=$((BASE_DAY - (3 + round) * 86400))
    thread_ticks "$OV_PID" > "$TMP/tt.before"; c0=$(ov_commits); t0=$(ms_now)
    ingest_run overlord overlord "$OV_ADDR" "$start" --token "$OV_TOKEN"
    t1=$(ms_now); c1=$(ov_commits); thread_ticks "$OV_PID" > "$TMP/tt.after"
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1000 }')
    if [ "$round" = 1 ]; then
        thread_report "$TMP/tt.before" "$TMP/tt.after" "$wall"
        commit_report "$c0" "$c1" "$wall"
    fi
    [ -n "$VM_PID" ] && ingest_run victoria-metrics vm "$VM_ADDR" "$start"
    [ -n "$IF_PID" ] && ingest_run influxdb influx "$IF_ADDR" "$start"
    # The same rows as line protocol to Overlord's InfluxDB door, on days
    # of their own (10 to 14 days ago: the CSV rounds' days would be
    # retries).
    [ "$STORAGE" != only ] && ingest_run overlord-lineproto influx "$OV_ADDR" "$((start - 6 * 86400))" --token "$OV_TOKEN"
    if [ -n "$OVPG_PID" ]; then
        # Where the CPU goes: the node's process and PostgreSQL's.
        o0=$(proc_ticks "$OVPG_PID"); g0=$(pg_ticks); t0=$(ms_now)
        ingest_run overlord-postgres overlord "$OVPG_ADDR" "$start" --token "$OVPG_TOKEN"
        t1=$(ms_now); o1=$(proc_ticks "$OVPG_PID"); g1=$(pg_ticks)
        rows=$((P2_ROWS * P2_POSTS * 4))
        echo "$o0 $o1 $g0 $g1 $t0 $t1 $(getconf CLK_TCK) $rows" | awk '{ hz = $7; o = ($2 - $1) / hz; g = ($4 - $3) / hz; w = ($6 - $5) / 1000;
            printf "    PostgreSQL node CPU: overlord %.2f s, postgres %.2f s over %.2f s wall; per reading: overlord %.2f us, postgres %.2f us\n", o, g, w, 1e6 * o / $8, 1e6 * g / $8 }'
        # The same rows through the second node (days of their own, 16 to
        # 20 days ago), and what forwarding costs it.
        f0=$(proc_ticks "$OVF_PID"); t0=$(ms_now)
        ingest_run overlord-postgres-2nodes overlord "$OVF_ADDR" "$((start - 12 * 86400))" --token "$OVPG_TOKEN"
        t1=$(ms_now); f1=$(proc_ticks "$OVF_PID")
        echo "$f0 $f1 $t0 $t1 $(getconf CLK_TCK) $rows" | awk '{ f = ($2 - $1) / $5; w = ($4 - $3) / 1000;
            printf "    the forwarding node: %.2f s CPU over %.2f s wall, %.3f us per reading\n", f, w, 1e6 * f / $6 }'
    fi
done
start=$((BASE_DAY - 9 * 86400))
ingest_run overlord-2conns overlord "$OV_ADDR" "$start" --token "$OV_TOKEN" --conns 2
[ -n "$VM_PID" ] && ingest_run victoria-metrics-2conns vm "$VM_ADDR" "$start" --conns 2
[ -n "$IF_PID" ] && ingest_run influxdb-2conns influx "$IF_ADDR" "$start" --conns 2
[ -n "$OVPG_PID" ] && ingest_run overlord-postgres-2conns overlord "$OVPG_ADDR" "$start" --token "$OVPG_TOKEN" --conns 2
for n in overlord overlord-2conns overlord-lineproto victoria-metrics victoria-metrics-2conns influxdb influxdb-2conns overlord-postgres overlord-postgres-2conns overlord-postgres-2nodes; do
    put "p2.$n" "$(best "p2.$n")"
done
put rss.overlord "$(vmhwm "$OV_PID")"
[ -n "$VM_PID" ] && put rss.victoria-metrics "$(vmhwm "$VM_PID")"
[ -n "$IF_PID" ] && put rss.influxdb "$(vmhwm "$IF_PID")"
note "peak RSS (VmHWM) during P2: overlord $(get rss.overlord) KiB (was $RSS_BASE_OV KiB before), victoria-metrics $(get rss.victoria-metrics) KiB, influxdb $(get rss.influxdb) KiB"

# ---------------------------------------------------------------- P3
log "P3: read back 86,400 rows of one sensor (one device, 1 s apart, 3 days ago)"
P3_START=$((BASE_DAY - 3 * 86400))
P3_END=$((P3_START + 86399))
note "insert: $("$LOAD" ingest --addr "$OV_ADDR" --format overlord --token "$OV_TOKEN" --devices 1 --prefix p3dev --sensors 1 --start $P3_START --step 1 --steps 86400 --rows-per-post 43200)"
OV_Q="http://$OV_ADDR/v1/devices/p3dev0000/readings?sensors=N1&from=$P3_START&to=$P3_END&limit=100000"
HF_CMDS=(-n overlord "curl -sf -o /dev/null -H 'Authorization: Bearer $OV_TOKEN' '$OV_Q'")
rows=$(curl -s -H "Authorization: Bearer $OV_TOKEN" "$OV_Q" | tail -n +2 | wc -l)
note "overlord returns $rows rows (plus a header)"
if [ -n "$OVPG_PID" ]; then
    note "insert (PostgreSQL node): $("$LOAD" ingest --addr "$OVPG_ADDR" --format overlord --token "$OVPG_TOKEN" --devices 1 --prefix p3dev --sensors 1 --start $P3_START --step 1 --steps 86400 --rows-per-post 43200)"
    OVPG_Q="http://$OVPG_ADDR/v1/devices/p3dev0000/readings?sensors=N1&from=$P3_START&to=$P3_END&limit=100000"
    rows=$(curl -s -H "Authorization: Bearer $OVPG_TOKEN" "$OVPG_Q" | tail -n +2 | wc -l)
    note "overlord on PostgreSQL returns $rows rows (plus a header)"
    HF_CMDS+=(-n overlord-postgres "curl -sf -o /dev/null -H 'Authorization: Bearer $OVPG_TOKEN' '$OVPG_Q'")
    OVF_Q="http://$OVF_ADDR/v1/devices/p3dev0000/readings?sensors=N1&from=$P3_START&to=$P3_END&limit=100000"
    HF_CMDS+=(-n overlord-postgres-2nodes "curl -sf -o /dev/null -H 'Authorization: Bearer $OVPG_TOKEN' '$OVF_Q'")
fi
if [ -n "$VM_PID" ]; then
    "$LOAD" ingest --addr "$VM_ADDR" --format vm --devices 1 --prefix p3dev --sensors 1 --start $P3_START --step 1 --steps 86400 --rows-per-post 43200 > /dev/null
    curl -s -XPOST "http://$VM_ADDR/internal/force_flush" > /dev/null
    VM_Q="http://$VM_ADDR/api/v1/export/csv?format=__timestamp__:unix_s,__value__&match%5B%5D=N1%7Bdevice%3D%22p3dev0000%22%7D&start=$P3_START&end=$P3_END"
    for _ in $(seq 1 50); do
        rows=$(curl -s "$VM_Q" | wc -l); [ "$rows" -ge 86400 ] && break; sleep 0.2
    done
    note "victoria-metrics returns $rows rows"
    HF_CMDS+=(-n victoria-metrics "curl -sf -o /dev/null '$VM_Q'")
fi
if [ -n "$IF_PID" ]; then
    "$LOAD" ingest --addr "$IF_ADDR" --format influx --devices 1 --prefix p3dev --sensors 1 --start $P3_START --step 1 --steps 86400 --rows-per-post 43200 > /dev/null
    IF_QS="db=bench&epoch=s&q=$(printf 'SELECT N1 FROM m WHERE device = '"'"'p3dev0000'"'"' AND time >= %ss AND time <= %ss' $P3_START $P3_END | sed 's/ /%20/g; s/=/%3D/g; s/>/%3E/g; s/</%3C/g; s/'"'"'/%27/g')"
    IF_Q="http://$IF_ADDR/query?$IF_QS"
    rows=$(curl -s -H 'Accept: application/csv' "$IF_Q" | tail -n +2 | wc -l)
    note "influxdb returns $rows rows (plus a header), CSV via Accept: application/csv"
    HF_CMDS+=(-n influxdb "curl -sf -o /dev/null -H 'Accept: application/csv' '$IF_Q'")
fi
if [ $HAVE_HF = 1 ]; then
    hyperfine -N --warmup 3 --runs 30 --style basic --export-csv "$TMP/p3.csv" "${HF_CMDS[@]}" 2>&1 | grep -E 'Time|Range|^Benchmark' | sed 's/^/    /'
    # command,mean,stddev,median,user,system,min,max (seconds)
    while IFS=, read -r cmd mean _ median _; do
        [ "$cmd" = command ] && continue
        put "p3.$cmd" "$(awk -v m="$median" 'BEGIN { printf "%.2f", m * 1000 }')"
    done < "$TMP/p3.csv"
else
    note "hyperfine missing: median of 30 runs of curl's time_total"
    p3_fetch() {
        case $1 in
            overlord) curl -sf -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $OV_TOKEN" "$OV_Q" ;;
            overlord-postgres) curl -sf -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $OVPG_TOKEN" "$OVPG_Q" ;;
            overlord-postgres-2nodes) curl -sf -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $OVPG_TOKEN" "$OVF_Q" ;;
            victoria-metrics) curl -sf -o /dev/null -w '%{time_total}\n' "$VM_Q" ;;
            influxdb) curl -sf -o /dev/null -w '%{time_total}\n' -H 'Accept: application/csv' "$IF_Q" ;;
        esac
    }
    for i in $(seq 0 3 $((${#HF_CMDS[@]} - 1))); do
        name=${HF_CMDS[$((i + 1))]}
        t=$(for _ in $(seq 1 30); do p3_fetch "$name"; done | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", a[int((NR + 1) / 2)] * 1000 }')
        note "$name median $t ms"; put "p3.$name" "$t"
    done
fi

# ---------------------------------------------------------------- P6
if [ "$STORAGE" != only ]; then
log "P6: ack-to-delivery latency through a channel long-poll, 10,000 readings/s for ${P6_SECS:-10} s"
out=$("$LOAD" latency --addr "$OV_ADDR" --token "$OV_TOKEN" --rate 10000 --batch 100 --secs "${P6_SECS:-10}" 2>&1) || true
note "$out"
put p6.p99 "$(echo "$out" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')"
put p6.p50 "$(echo "$out" | sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p')"
if [ -n "$OVPG_PID" ]; then
    out=$("$LOAD" latency --addr "$OVPG_ADDR" --token "$OVPG_TOKEN" --rate 10000 --batch 100 --secs "${P6_SECS:-10}" 2>&1) || true
    note "PostgreSQL node: $out"
    put p6.postgres.p99 "$(echo "$out" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')"
    out=$("$LOAD" latency --addr "$OVF_ADDR" --token "$OVPG_TOKEN" --rate 10000 --batch 100 --secs "${P6_SECS:-10}" 2>&1) || true
    note "through the second node: $out"
    put p6.postgres-2nodes.p99 "$(echo "$out" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')"
fi
fi # STORAGE != only

log "stopping the P1-P3 servers"
stop_pid "$OV_PID"
[ -n "$OVPG_PID" ] && stop_pid "$OVF_PID"
[ -n "$OVPG_PID" ] && stop_pid "$OVPG_PID"
[ -n "$PG_PID" ] && stop_pid "$PG_PID"
[ -n "$NG_PID" ] && stop_pid "$NG_PID"
[ -n "$VM_PID" ] && stop_pid "$VM_PID"
[ -n "$IF_PID" ] && stop_pid "$IF_PID"

# ---------------------------------------------------------------- day
DAY_READINGS=$((DEVICES * 4 * DAY_STEPS))
log "bytes on disk: $DEVICES devices x 4 sensors x $DAY_STEPS readings 10 s apart = $DAY_READINGS readings"
DAY_START=$((BASE_DAY - 2 * 86400))
start_overlord "$TMP/ov-day" "$(free_port 28230)"
"$LOAD" devices --addr "$OV_ADDR" --token "$OV_TOKEN" --count $DEVICES --prefix d > /dev/null
size_empty=$(stat -c %s "$TMP/ov-day/o.redb")
c0=$(ov_commits); t0=$(ms_now)
out=$("$LOAD" ingest --addr "$OV_ADDR" --format overlord --token "$OV_TOKEN" --devices $DEVICES --prefix d --sensors 4 \
    --start $DAY_START --step 10 --steps "$DAY_STEPS" --rows-per-post $P2_ROWS --conns 2)
t1=$(ms_now); c1=$(ov_commits)
note "overlord ingest: $out"
commit_report "$c0" "$c1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1000 }')"
note "overlord RSS after the day: VmHWM $(vmhwm "$OV_PID") KiB"
read -r size alloc <<< "$(file_bytes "$TMP/ov-day/o.redb")"
note "overlord data file right after the upload: $size bytes (allocated $alloc)"
note "overlord sealed every chunk $(ov_wait_sealed) s after the last reply"
read -r size alloc <<< "$(file_bytes "$TMP/ov-day/o.redb")"
note "overlord data file once sealed: $size bytes (allocated $alloc)"
note "overlord compacted its data file while idle $(ov_wait_compacted) s after that"
stop_pid "$OV_PID"
read -r size alloc <<< "$(file_bytes "$TMP/ov-day/o.redb")"
note "overlord data file: $size bytes (allocated $alloc; $size_empty with only the devices)"
# The headline is what du shows: the allocated blocks.
put day.overlord "$alloc"; put day.overlord.size "$size"
# Diagnostic: what `overlord compact` (server stopped) gives back.
if "$OVERLORD" --config "$TMP/ov-day/overlord.toml" compact > "$TMP/ov-day/compact.out" 2>&1; then
    compacted=$(stat -c %s "$TMP/ov-day/o.redb")
    note "overlord data file after 'overlord compact': $compacted bytes"
    put day.overlord.compacted "$compacted"
else
    note "overlord compact failed: $(tail -1 "$TMP/ov-day/compact.out")"
fi

start_vm "$TMP/vm-day" "$(free_port 28240)"
if [ -n "$VM_PID" ]; then
    out=$("$LOAD" ingest --addr "$VM_ADDR" --format vm --devices $DEVICES --prefix d --sensors 4 \
        --start $DAY_START --step 10 --steps "$DAY_STEPS" --rows-per-post $P2_ROWS --conns 2)
    note "victoria-metrics ingest: $out"
    curl -s -XPOST "http://$VM_ADDR/internal/force_flush" > /dev/null
    sleep 2
    stop_pid "$VM_PID"
    # data + indexdb; the cache folder (rebuildable) is left out.
    size=$(du -sb "$TMP/vm-day/data/data" "$TMP/vm-day/data/indexdb" | awk '{ s += $1 } END { print s }')
    note "victoria-metrics data + indexdb: $size bytes"
    put day.victoria-metrics "$size"
fi

start_influx "$TMP/influx-day" "$(free_port 28250)"
if [ -n "$IF_PID" ]; then
    out=$("$LOAD" ingest --addr "$IF_ADDR" --format influx --devices $DEVICES --prefix d --sensors 4 \
        --start $DAY_START --step 10 --steps "$DAY_STEPS" --rows-per-post $P2_ROWS --conns 2)
    note "influxdb ingest: $out"
    # Wait (at most 60 s) for the cache to be written to TSM and the WAL to empty.
    for _ in $(seq 1 60); do
        [ "$(du -sb "$TMP/influx-day/wal" | awk '{ print $1 }')" -lt 1048576 ] && break
        sleep 1
    done
    sleep 12   # full compaction after 10 s cold
    stop_pid "$IF_PID"
    size=$(du -sb "$TMP/influx-day/data" "$TMP/influx-day/wal" | awk '{ s += $1 } END { print s }')
    note "influxdb data + wal: $size bytes"
    put day.influxdb "$size"
fi

# ---------------------------------------------------------------- second set
# A second, independent shape: the same kind of random walks (1-3
# decimals) one row per device per second, 10 POSTs of 100,000 rows.
SET2_STEPS=${SET2_STEPS:-1000}
SET2_READINGS=$((DEVICES * 4 * SET2_STEPS))
log "bytes on disk, second set: $DEVICES devices x 4 sensors x $SET2_STEPS readings 1 s apart = $SET2_READINGS readings"
SET2_START=$((BASE_DAY - 10 * 86400))
start_overlord "$TMP/ov-set2" "$(free_port 28260)"
"$LOAD" devices --addr "$OV_ADDR" --token "$OV_TOKEN" --count $DEVICES --prefix d > /dev/null
out=$("$LOAD" ingest --addr "$OV_ADDR" --format overlord --token "$OV_TOKEN" --devices $DEVICES --prefix d --sensors 4 \
    --start $SET2_START --step 1 --steps "$SET2_STEPS" --rows-per-post $P2_ROWS)
note "overlord ingest: $out"
note "overlord sealed every chunk $(ov_wait_sealed) s after the last reply"
read -r size alloc <<< "$(file_bytes "$TMP/ov-set2/o.redb")"
note "overlord data file once sealed: $size bytes (allocated $alloc)"
note "overlord compacted its data file while idle $(ov_wait_compacted) s after that"
stop_pid "$OV_PID"
read -r size alloc <<< "$(file_bytes "$TMP/ov-set2/o.redb")"
note "overlord data file: $size bytes (allocated $alloc)"
put set2.overlord "$alloc"
start_vm "$TMP/vm-set2" "$(free_port 28270)"
if [ -n "$VM_PID" ]; then
    out=$("$LOAD" ingest --addr "$VM_ADDR" --format vm --devices $DEVICES --prefix d --sensors 4 \
        --start $SET2_START --step 1 --steps "$SET2_STEPS" --rows-per-post $P2_ROWS)
    note "victoria-metrics ingest: $out"
    curl -s -XPOST "http://$VM_ADDR/internal/force_flush" > /dev/null
    sleep 2
    stop_pid "$VM_PID"
    size=$(du -sb "$TMP/vm-set2/data/data" "$TMP/vm-set2/data/indexdb" | awk '{ s += $1 } END { print s }')
    note "victoria-metrics data + indexdb: $size bytes"
    put set2.victoria-metrics "$size"
fi

# ---------------------------------------------------------------- summary
log "summary (ratio > 1 means Overlord is better)"
note "load average at the end: $(uptime | sed 's/.*load average: //')"
row "measure" "overlord" "peer" "ratio"
row "----------------------------------------------" "--------" "----" "-----"
OV=$(get p1.overlord)
row "P1 ab req/s vs nginx static (goal >= 0.95)" "$(fmt "$OV" %.0f)" "$(fmt "$(get p1.nginx)" %.0f)" "$(ratio "$OV" "$(get p1.nginx)")"
row "P1 ab req/s vs victoria-metrics csv import" "$(fmt "$OV" %.0f)" "$(fmt "$(get p1.victoria-metrics)" %.0f)" "$(ratio "$OV" "$(get p1.victoria-metrics)")"
row "P1 ab req/s vs influxdb /write" "$(fmt "$OV" %.0f)" "$(fmt "$(get p1.influxdb)" %.0f)" "$(ratio "$OV" "$(get p1.influxdb)")"
OVF=$(get p1.overlord-fixed-time)
row "P1 ab, fixed time (diagnostic) vs nginx" "$(fmt "$OVF" %.0f)" "$(fmt "$(get p1.nginx)" %.0f)" "$(ratio "$OVF" "$(get p1.nginx)")"
OW=$(get wrk.overlord)
row "wrk keep-alive req/s vs nginx" "$(fmt "$OW" %.0f)" "$(fmt "$(get wrk.nginx)" %.0f)" "$(ratio "$OW" "$(get wrk.nginx)")"
row "wrk keep-alive req/s vs victoria-metrics" "$(fmt "$OW" %.0f)" "$(fmt "$(get wrk.victoria-metrics)" %.0f)" "$(ratio "$OW" "$(get wrk.victoria-metrics)")"
row "wrk keep-alive req/s vs influxdb" "$(fmt "$OW" %.0f)" "$(fmt "$(get wrk.influxdb)" %.0f)" "$(ratio "$OW" "$(get wrk.influxdb)")"
row "wrk, fixed time (diagnostic) vs nginx" "$(fmt "$(get wrk.overlord-fixed-time)" %.0f)" "$(fmt "$(get wrk.nginx)" %.0f)" "$(ratio "$(get wrk.overlord-fixed-time)" "$(get wrk.nginx)")"
O2=$(get p2.overlord)
row "P2 rows/s vs goal 1,000,000" "$(fmt "$O2" %.0f)" "1000000" "$(ratio "$O2" 1000000)"
row "P2 rows/s vs victoria-metrics csv import" "$(fmt "$O2" %.0f)" "$(fmt "$(get p2.victoria-metrics)" %.0f)" "$(ratio "$O2" "$(get p2.victoria-metrics)")"
row "P2 rows/s vs influxdb line protocol" "$(fmt "$O2" %.0f)" "$(fmt "$(get p2.influxdb)" %.0f)" "$(ratio "$O2" "$(get p2.influxdb)")"
row "P2 line protocol rows/s vs influxdb" "$(fmt "$(get p2.overlord-lineproto)" %.0f)" "$(fmt "$(get p2.influxdb)" %.0f)" "$(ratio "$(get p2.overlord-lineproto)" "$(get p2.influxdb)")"
row "P2 rows/s, 2 connections, vs goal" "$(fmt "$(get p2.overlord-2conns)" %.0f)" "1000000" "$(ratio "$(get p2.overlord-2conns)" 1000000)"
row "P2 rows/s, 2 connections, vs v-m 2 conns" "$(fmt "$(get p2.overlord-2conns)" %.0f)" "$(fmt "$(get p2.victoria-metrics-2conns)" %.0f)" "$(ratio "$(get p2.overlord-2conns)" "$(get p2.victoria-metrics-2conns)")"
row "P2 rows/s, 2 connections, vs influx 2 conns" "$(fmt "$(get p2.overlord-2conns)" %.0f)" "$(fmt "$(get p2.influxdb-2conns)" %.0f)" "$(ratio "$(get p2.overlord-2conns)" "$(get p2.influxdb-2conns)")"
RO=$(get rss.overlord)
row "P2 peak RSS KiB vs victoria-metrics" "$(fmt "$RO" %s)" "$(fmt "$(get rss.victoria-metrics)" %s)" "$(ratio "$(get rss.victoria-metrics)" "$RO")"
row "P2 peak RSS KiB vs influxdb" "$(fmt "$RO" %s)" "$(fmt "$(get rss.influxdb)" %s)" "$(ratio "$(get rss.influxdb)" "$RO")"
Q=$(get p3.overlord)
row "P3 86,400-row query, median ms, vs v-m" "$(fmt "$Q" %s)" "$(fmt "$(get p3.victoria-metrics)" %s)" "$(ratio "$(get p3.victoria-metrics)" "$Q")"
row "P3 86,400-row query, median ms, vs influxdb" "$(fmt "$Q" %s)" "$(fmt "$(get p3.influxdb)" %s)" "$(ratio "$(get p3.influxdb)" "$Q")"
row "P6 ack-to-delivery p99 ms vs goal 50 ms" "$(fmt "$(get p6.p99)" %s)" "50" "$(ratio 50 "$(get p6.p99)")"
if [ -n "$OVPG_PID" ]; then
    PGP1=$(get p1.overlord-postgres); PGP2=$(get p2.overlord-postgres); PGP3=$(get p3.overlord-postgres)
    row "PostgreSQL node: P1 ab req/s vs redb node" "$(fmt "$PGP1" %.0f)" "$(fmt "$OV" %.0f)" "$(ratio "$PGP1" "$OV")"
    row "PostgreSQL node: P2 rows/s vs influxdb (goal >= 1)" "$(fmt "$PGP2" %.0f)" "$(fmt "$(get p2.influxdb)" %.0f)" "$(ratio "$PGP2" "$(get p2.influxdb)")"
    row "PostgreSQL node: P2 rows/s vs redb node" "$(fmt "$PGP2" %.0f)" "$(fmt "$O2" %.0f)" "$(ratio "$PGP2" "$O2")"
    row "PostgreSQL node: P2 2 conns vs redb 2 conns" "$(fmt "$(get p2.overlord-postgres-2conns)" %.0f)" "$(fmt "$(get p2.overlord-2conns)" %.0f)" "$(ratio "$(get p2.overlord-postgres-2conns)" "$(get p2.overlord-2conns)")"
    row "PostgreSQL node: P3 median ms vs redb (goal >= 0.5)" "$(fmt "$PGP3" %s)" "$(fmt "$Q" %s)" "$(ratio "$Q" "$PGP3")"
    row "PostgreSQL node: P6 p99 ms vs goal 50 ms" "$(fmt "$(get p6.postgres.p99)" %s)" "50" "$(ratio 50 "$(get p6.postgres.p99)")"
    row "two nodes, via the second: P1 vs one node" "$(fmt "$(get p1.overlord-postgres-2nodes)" %.0f)" "$(fmt "$PGP1" %.0f)" "$(ratio "$(get p1.overlord-postgres-2nodes)" "$PGP1")"
    row "two nodes, via the second: P2 vs influxdb" "$(fmt "$(get p2.overlord-postgres-2nodes)" %.0f)" "$(fmt "$(get p2.influxdb)" %.0f)" "$(ratio "$(get p2.overlord-postgres-2nodes)" "$(get p2.influxdb)")"
    row "two nodes, via the second: P2 vs one node" "$(fmt "$(get p2.overlord-postgres-2nodes)" %.0f)" "$(fmt "$PGP2" %.0f)" "$(ratio "$(get p2.overlord-postgres-2nodes)" "$PGP2")"
    row "two nodes, via the second: P3 ms vs redb" "$(fmt "$(get p3.overlord-postgres-2nodes)" %s)" "$(fmt "$Q" %s)" "$(ratio "$Q" "$(get p3.overlord-postgres-2nodes)")"
    row "two nodes, via the second: P6 p99 ms vs 50" "$(fmt "$(get p6.postgres-2nodes.p99)" %s)" "50" "$(ratio 50 "$(get p6.postgres-2nodes.p99)")"
fi
bpr() { [ -n "$1" ] && awk -v s="$1" -v n="$DAY_READINGS" 'BEGIN { printf "%.2f", s / n }'; }
BO=$(bpr "$(get day.overlord)")
row "bytes/reading on disk vs victoria-metrics" "$BO" "$(fmt "$(bpr "$(get day.victoria-metrics)")" %s)" "$(ratio "$(bpr "$(get day.victoria-metrics)")" "$BO")"
row "bytes/reading on disk vs influxdb" "$BO" "$(fmt "$(bpr "$(get day.influxdb)")" %s)" "$(ratio "$(bpr "$(get day.influxdb)")" "$BO")"
row "overlord bytes/reading (file size)" "$(bpr "$(get day.overlord.size)")" "" ""
row "overlord bytes/reading after overlord compact" "$(bpr "$(get day.overlord.compacted)")" "" ""
bpr2() { [ -n "$1" ] && awk -v s="$1" -v n="$SET2_READINGS" 'BEGIN { printf "%.2f", s / n }'; }
B2=$(bpr2 "$(get set2.overlord)")
row "second set bytes/reading vs victoria-metrics" "$B2" "$(fmt "$(bpr2 "$(get set2.victoria-metrics)")" %s)" "$(ratio "$(bpr2 "$(get set2.victoria-metrics)")" "$B2")"
if [ "$TLS" != 0 ]; then tls_summary; fi
