#!/usr/bin/env bash
# Issue 20's first measurements (docs/scale-out.md, BENCHMARKS.md
# "PostgreSQL (issue 20): first measurements"): compare.sh's P2 shape
# (1,000 devices x 4 sensors, 10 transactions of 100,000 CSV rows =
# 400,000 readings) written into PostgreSQL by pg-proto (chunk bytes
# upserted; a row per reading by COPY; the same with retries skipped),
# beside Overlord's own P2 (its load tool, one connection) and InfluxDB's,
# in one run, with the CPU seconds of each server per 1M readings; then a
# trickle of 12-reading transactions (rows sealed into chunks after), P1's
# one reading per request against Overlord, and P3's read of one sensor's
# day from chunk rows, from rows and from Overlord over HTTP.
#
#   sudo bash benches/pg-proto/run.sh        # from the repository root
#
# Needs: Debian's postgresql package (initdb/pg_ctl are run as the
# `postgres` user), a release build of overlord and its load tool
# (cargo build --release --bin overlord --example load; or OVERLORD=...,
# LOAD=...), and pg-proto (cargo build --release in benches/pg-proto, or
# PG_PROTO=...). influxd is used when installed. Everything listens on
# 127.0.0.1 only, lives in one mktemp -d directory removed on exit, and
# every server started here is stopped by its pid (PostgreSQL by pg_ctl).
#
# Knobs: ROUNDS=1 (each workload that many times, interleaved),
#        STEPS=1000 (readings per series: 1000 = P2's 10 transactions),
#        P2=0 (skip P2, the trickle and P1), P3=0 (skip P3).

set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
ROUNDS=${ROUNDS:-1}
STEPS=${STEPS:-1000}
DEVICES=1000
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OVERLORD=${OVERLORD:-$TARGET/release/overlord}
LOAD=${LOAD:-$TARGET/release/examples/load}
PG_PROTO=${PG_PROTO:-$TARGET/release/pg-proto}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}

for f in "$OVERLORD" "$LOAD" "$PG_PROTO" "$PGBIN/initdb" "$PGBIN/pg_ctl"; do
    [ -x "$f" ] || { echo "run.sh: $f is missing (see the header)" >&2; exit 1; }
done
id postgres > /dev/null 2>&1 || { echo "run.sh: no postgres user (install postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }

TMP=$(mktemp -d)
chmod 755 "$TMP"
PIDS=()
PG_UP=0
cleanup() {
    local p
    [ "$PG_UP" = 1 ] && as_pg "$PGBIN/pg_ctl" -D "$TMP/pg" -m fast -w stop > /dev/null 2>&1
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { printf '    %s\n' "$*"; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }
free_port() {
    local p=$1 i
    for i in $(seq 0 200); do
        ss -Hltn "sport = :$((p + i))" 2>/dev/null | grep -q . || { echo $((p + i)); return 0; }
    done
    return 1
}
wait_http() {
    local i
    for i in $(seq 1 200); do curl -s -o /dev/null -m 1 "$@" && return 0; sleep 0.1; done
    return 1
}
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' /proc/"$1"/stat; }
HZ=$(getconf CLK_TCK)

echo "=== machine"
note "nproc $(nproc); $(lscpu | sed -n 's/^Model name: *//p' | head -1); $(free -g | awk '/^Mem:/ { print $2 }') GiB; $(uname -sr)"
note "commit $(git rev-parse --short HEAD 2>/dev/null); $("$PGBIN/postgres" --version); $(command -v influxd > /dev/null && influxd version 2>/dev/null | head -1)"
note "temp dir on $(findmnt -no FSTYPE -T "$TMP") ($(findmnt -no SOURCE -T "$TMP"))"
note "1000 x 4 KiB O_DSYNC writes: $(dd if=/dev/zero of="$TMP/dsync" bs=4k count=1000 oflag=dsync 2>&1 | awk '/copied/ { print $(NF-3) }') s"
rm -f "$TMP/dsync"
note "load average at start: $(load_avg)"

# ---------------------------------------------------------------- PostgreSQL
PG_PORT=$(free_port 28310)
# The data directory, its log and its socket belong to postgres.
mkdir -p "$TMP/pg" "$TMP/pgrun" && chown postgres "$TMP/pg" "$TMP/pgrun"
as_pg "$PGBIN/initdb" -D "$TMP/pg" -U postgres --auth=trust --no-locale -E UTF8 > "$TMP/initdb.log" 2>&1 \
    || { cat "$TMP/initdb.log"; exit 1; }
# Durable as in production (fsync, synchronous_commit on, full pages);
# memory and WAL sized for a small dedicated box, so the run does not
# checkpoint every few seconds.
PG_OPTS="-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$TMP/pgrun \
-c synchronous_commit=on -c fsync=on -c full_page_writes=on -c shared_buffers=1GB \
-c max_wal_size=8GB -c checkpoint_timeout=30min"
as_pg "$PGBIN/pg_ctl" -D "$TMP/pg" -l "$TMP/pgrun/pg.log" -o "$PG_OPTS" -w start > /dev/null || { cat "$TMP/pgrun/pg.log"; exit 1; }
PG_UP=1
PM=$(head -1 "$TMP/pg/postmaster.pid")
URL="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
note "postgres on 127.0.0.1:$PG_PORT, postmaster $PM; settings: $PG_OPTS"

# ---------------------------------------------------------------- Overlord
OV_PORT=$(free_port 28320)
mkdir -p "$TMP/ov"
cat > "$TMP/ov/overlord.toml" <<EOF
listen = "127.0.0.1:$OV_PORT"
data_file = "$TMP/ov/o.redb"
[limits]
max_connections = 4096
max_connections_per_source = 0
device_requests_per_sec = 0.0
[mqtt]
listen = ""
EOF
"$OVERLORD" --config "$TMP/ov/overlord.toml" > "$TMP/ov/stdout" 2> "$TMP/ov/stderr" &
OV_PID=$!; PIDS+=("$OV_PID")
for _ in $(seq 1 200); do grep -q '^listening on' "$TMP/ov/stdout" 2>/dev/null && break; sleep 0.1; done
OV_TOKEN=$(sed -n 's/^admin token: //p' "$TMP/ov/stdout")
[ -n "$OV_TOKEN" ] || { echo "overlord did not start:"; cat "$TMP/ov/stderr"; exit 1; }
note "overlord pid $OV_PID: $("$LOAD" devices --addr "127.0.0.1:$OV_PORT" --token "$OV_TOKEN" --count $DEVICES --prefix d)"

# ---------------------------------------------------------------- InfluxDB
IF_PID=""
if [ "${P2:-1}" = 1 ] && command -v influxd > /dev/null; then
    IF_PORT=$(free_port 28330); IF_RPC=$(free_port $((IF_PORT + 1)))
    mkdir -p "$TMP/influx"
    cat > "$TMP/influx/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$IF_RPC"
[meta]
  dir = "$TMP/influx/meta"
[data]
  dir = "$TMP/influx/data"
  wal-dir = "$TMP/influx/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$IF_PORT"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
EOF
    influxd -config "$TMP/influx/influxdb.conf" > "$TMP/influx/log" 2>&1 &
    IF_PID=$!; PIDS+=("$IF_PID")
    if wait_http "http://127.0.0.1:$IF_PORT/ping"; then
        curl -s -XPOST "http://127.0.0.1:$IF_PORT/query" --data-urlencode 'q=CREATE DATABASE bench' > /dev/null
        note "influxd pid $IF_PID on 127.0.0.1:$IF_PORT"
    else
        note "influxd did not start (skipped)"; IF_PID=""
    fi
fi

# server_p2 NAME PID FORMAT ADDR START [load args]: one P2 round through
# the load tool; prints its line and the server's CPU per 1M readings.
server_p2() {
    local name=$1 pid=$2 fmt=$3 addr=$4 start=$5 c0 c1 out readings; shift 5
    c0=$(ticks "$pid")
    out=$("$LOAD" ingest --addr "$addr" --format "$fmt" --devices $DEVICES --prefix d --sensors 4 \
        --start "$start" --step 10 --steps "$STEPS" --rows-per-post 100000 --pregen "$@" 2>&1)
    c1=$(ticks "$pid")
    readings=$(echo "$out" | sed -n 's/.* readings=\([0-9]*\).*/\1/p')
    printf '%-11s %s server_cpu_s_per_1M_readings=%s load=%s\n' "$name" "$out" \
        "$(awk -v a="$c0" -v b="$c1" -v n="${readings:-0}" -v hz="$HZ" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / hz / (n / 1e6); else print "?" }')" \
        "$(load_avg | tr ' ' /)"
}

if [ "${P2:-1}" = 1 ]; then
    echo "=== P2 shape: $DEVICES devices x 4 sensors x $STEPS steps, 100,000 rows (400,000 readings) per transaction/POST; $ROUNDS round(s)"
    BASE=$(( $(date +%s) / 86400 * 86400 ))
    for round in $(seq 1 "$ROUNDS"); do
        start=$((BASE - (3 + round) * 86400))
        server_p2 overlord "$OV_PID" overlord "127.0.0.1:$OV_PORT" "$start" --token "$OV_TOKEN"
        [ -n "$IF_PID" ] && server_p2 influxdb "$IF_PID" influx "127.0.0.1:$IF_PORT" "$start"
        for mode in chunks rows rows-dedup rows-unnest; do
            out=$("$PG_PROTO" --url "$URL" --postmaster "$PM" --mode "$mode" --devices $DEVICES \
                --steps "$STEPS" --start "$start" 2>&1)
            printf '%-11s %s load=%s\n' postgres "$out" "$(load_avg | tr ' ' /)"
        done
    done
    # Trickle ingest, as a node's group commits of single-reading requests
    # make it: 12 devices x 4 sensors, an hour of readings 10 s apart (360 per
    # series, so every chunk fills up as it would), 3 CSV rows = 12 readings
    # per transaction (1,440 transactions).
    echo "=== PostgreSQL trickle: 12 readings per transaction, chunks filling up to 360 readings"
    # The row form is then sealed (--seal): each (device, sensor, hour) of
    # rows folded into one chunk row and the rows deleted.
    for mode in chunks rows-unnest; do
        seal=""; [ "$mode" = rows-unnest ] && seal=--seal
        out=$("$PG_PROTO" --url "$URL" --postmaster "$PM" --mode "$mode" --devices 12 \
            --steps 360 --rows-per-post 3 --start "$BASE" $seal 2>&1)
        printf '%-11s %s load=%s\n' postgres "$out" "$(load_avg | tr ' ' /)"
    done

    # P1's shape: one reading per request (32 clients, ab), Overlord's CPU
    # per request: the node's share of a device that sends one reading at a
    # time.
    echo "=== P1 shape: ab -n 20000 -c 32, one reading per request"
    R=$(curl -s -X POST -H "Authorization: Bearer $OV_TOKEN" "http://127.0.0.1:$OV_PORT/v1/devices" -d 'id=dev1')
    DEV_TOKEN=$(echo "$R" | awk -F, 'NR == 2 { print $2 }')
    if [ -n "$DEV_TOKEN" ] && command -v ab > /dev/null; then
        c0=$(ticks "$OV_PID")
        out=$(ab -q -n 20000 -c 32 "http://127.0.0.1:$OV_PORT/v1/readings?device=dev1&token=$DEV_TOKEN&N1=21.5" 2>&1)
        c1=$(ticks "$OV_PID")
        printf 'overlord    req_per_sec=%s failed=%s non2xx=%s server_cpu_us_per_request=%s load=%s\n' \
            "$(echo "$out" | awk '/^Requests per second/ { print $4 }')" \
            "$(echo "$out" | awk '/^Failed requests/ { print $3 }')" \
            "$(echo "$out" | awk '/^Non-2xx responses/ { print $3 }')" \
            "$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.0f", (b - a) / hz / 20000 * 1e6 }')" \
            "$(load_avg | tr ' ' /)"
    else
        note "P1 skipped (no device token or no ab)"
    fi
    note "overlord data file after P2: $(stat -c %s "$TMP/ov/o.redb") bytes (not compacted, not waited for sealing)"
fi

# P3's shape: one sensor of one device, 86,400 readings 1 s apart, read
# back whole. Overlord over HTTP (curl, the server's full path); the
# prototype's read is PostgreSQL plus decoding and CSV text on the
# client, without HTTP.
if [ "${P3:-1}" = 1 ]; then
    echo "=== P3 shape: 86,400 readings of one sensor read back, 30 runs after one warm-up"
    P3_START=$(( $(date +%s) / 86400 * 86400 - 3 * 86400 ))
    P3_END=$((P3_START + 86399))
    curl -s -X POST -H "Authorization: Bearer $OV_TOKEN" "http://127.0.0.1:$OV_PORT/v1/devices" -d 'id=p3dev0000' > /dev/null
    note "overlord insert: $("$LOAD" ingest --addr "127.0.0.1:$OV_PORT" --format overlord --token "$OV_TOKEN" --devices 1 \
        --prefix p3dev --sensors 1 --start $P3_START --step 1 --steps 86400 --rows-per-post 43200 2>&1)"
    Q="http://127.0.0.1:$OV_PORT/v1/devices/p3dev0000/readings?sensors=N1&from=$P3_START&to=$P3_END&limit=100000"
    rows=$(curl -s -H "Authorization: Bearer $OV_TOKEN" "$Q" | tail -n +2 | wc -l)
    c0=$(ticks "$OV_PID")
    for _ in $(seq 1 30); do
        curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $OV_TOKEN" "$Q"
    done | sort -g > "$TMP/p3.ov"
    c1=$(ticks "$OV_PID")
    printf 'overlord    query: rows=%s runs=30 median_ms=%s p90_ms=%s server_cpu_ms_per_query=%s load=%s\n' "$rows" \
        "$(awk 'NR == 15 { printf "%.2f", $1 * 1000 }' "$TMP/p3.ov")" \
        "$(awk 'NR == 27 { printf "%.2f", $1 * 1000 }' "$TMP/p3.ov")" \
        "$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz * 1000 / 30 }')" \
        "$(load_avg | tr ' ' /)"
    for mode in chunks rows-unnest; do
        out=$("$PG_PROTO" --url "$URL" --postmaster "$PM" --mode "$mode" --devices 1 --step 1 \
            --steps 86400 --rows-per-post 43200 --start "$P3_START" --query 30 2>&1)
        printf '%-11s %s load=%s\n' postgres "$(echo "$out" | grep '^query:')" "$(load_avg | tr ' ' /)"
    done
fi
note "load average at end: $(load_avg)"
