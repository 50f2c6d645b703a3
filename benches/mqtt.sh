#!/usr/bin/env bash
# MQTT ingest: Overlord beside mosquitto (persistence on) in one run, and
# the memory of idle authenticated connections (BENCHMARKS.md, "MQTT").
#
#   bash benches/mqtt.sh            # from the repository root
#
# Loopback only, bounded loops, all state in one `mktemp -d` directory
# removed on exit, every server started here stopped by its pid.
# Knobs: SECS=10 (per run), IDLE=10000 (idle connections), SKIP_BUILD=1.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
SECS=${SECS:-10}
IDLE=${IDLE:-10000}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

# Each idle connection is a descriptor here and one in the server.
ulimit -n $((IDLE * 2 + 4096)) 2>/dev/null || echo "note: could not raise ulimit -n; IDLE=$IDLE may fail"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --quiet --bin overlord --example mqtt_load || exit 1
fi
BIN=${CARGO_TARGET_DIR:-target}/release
LOAD=$BIN/examples/mqtt_load

# Overlord: HTTP and MQTT on free ports, no per-device request limit.
cat > "$TMP/o.toml" <<EOF
listen = "127.0.0.1:0"
data_file = "$TMP/o.redb"
[limits]
device_requests_per_sec = 0.0
[mqtt]
listen = "127.0.0.1:0"
max_connections = $((IDLE + 1000))
EOF
"$BIN/overlord" --config "$TMP/o.toml" > "$TMP/o.out" 2> "$TMP/o.err" &
OPID=$!; PIDS+=("$OPID")
for _ in $(seq 1 100); do grep -q '^mqtt listening on' "$TMP/o.out" && break; sleep 0.1; done
HTTP=$(sed -n 's/^listening on //p' "$TMP/o.out")
MQTT=$(sed -n 's/^mqtt listening on //p' "$TMP/o.out")
ADMIN=$(sed -n 's/^admin token: //p' "$TMP/o.out")
# 256 devices, one per connection: id,token lines.
{ echo id; for i in $(seq 0 255); do echo "d$i"; done; } |
    curl -s -H "Authorization: Bearer $ADMIN" -H 'Content-Type: text/csv' --data-binary @- \
        "http://$HTTP/v1/devices" | cut -d, -f1,2 > "$TMP/logins.csv"

# mosquitto with persistence on (its default autosave), anonymous.
MPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$TMP/m.conf" <<EOF
listener $MPORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $TMP/
max_inflight_messages 32
EOF
MOSQ=1
if command -v mosquitto >/dev/null; then
    mosquitto -c "$TMP/m.conf" > "$TMP/m.log" 2>&1 &
    PIDS+=("$!")
    sleep 0.5
else
    MOSQ=0; echo "mosquitto not installed: skipped"
fi

echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
# Idle first, on the fresh server (before the publish runs grow its
# heap): RSS before, with IDLE connections held, per connection.
rss() { awk '/VmRSS/ {print $2}' "/proc/$OPID/status"; }
BEFORE=$(rss)
"$LOAD" idle --addr "$MQTT" --conns "$IDLE" --hold 15 --logins "$TMP/logins.csv" > "$TMP/idle.out" &
LPID=$!; PIDS+=("$LPID")
for _ in $(seq 1 600); do grep -q connected "$TMP/idle.out" && break; sleep 0.1; done
sleep 2
HELD=$(rss)
echo "idle: $(cat "$TMP/idle.out"); server RSS ${BEFORE} KiB before, ${HELD} KiB held; $(( (HELD - BEFORE) * 1024 / (IDLE > 0 ? IDLE : 1) )) bytes per connection"
wait "$LPID"
for c in 32 256; do
    echo "overlord  $("$LOAD" pub --addr "$MQTT" --conns $c --secs "$SECS" --logins "$TMP/logins.csv")"
    [ $MOSQ = 1 ] && echo "mosquitto $("$LOAD" pub --addr "127.0.0.1:$MPORT" --conns $c --secs "$SECS")"
done
# The same device pattern over HTTP in the same run: 32 keep-alive
# connections, one reading per request, each answered after its fsync.
if command -v wrk >/dev/null; then
    TOK0=$(sed -n 's/^d0,//p' "$TMP/logins.csv")
    echo "overlord HTTP (wrk -c32, one reading per GET): $(wrk -t1 -c32 -d"${SECS}s" --latency \
        "http://$HTTP/v1/readings?device=d0&token=$TOK0&N1=21.5" | grep -E 'Requests/sec|99%' | tr -s ' ' | tr '\n' ' ')"
fi
# p99 at half of Overlord's 32-connection rate.
FULL=$("$LOAD" pub --addr "$MQTT" --conns 32 --secs "$SECS" --logins "$TMP/logins.csv" | sed 's/.*per_sec=\([0-9]*\).*/\1/')
HALF=$((FULL / 2))
echo "overlord  at ${HALF}/s: $("$LOAD" pub --addr "$MQTT" --conns 32 --secs "$SECS" --rate "$HALF" --logins "$TMP/logins.csv")"
[ $MOSQ = 1 ] && echo "mosquitto at ${HALF}/s: $("$LOAD" pub --addr "127.0.0.1:$MPORT" --conns 32 --secs "$SECS" --rate "$HALF")"

