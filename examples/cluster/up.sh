#!/usr/bin/env bash
# examples/cluster/up.sh [NODES]: a throw-away PostgreSQL (a primary and a
# synchronous streaming standby, in a temp dir) and NODES Overlord nodes
# serving from it, all on free loopback ports. Prints one line
# `node http://127.0.0.1:PORT` per node and one `admin token: TOKEN`,
# then stays in the foreground until interrupted (Ctrl-C), and stops
# everything it started, by pid, and removes the temp dir.
#
# Every node has `[store] node_listen`: the first serves the database, the
# others forward every connection to it and one takes over when it stops
# (docs/scale-out.md, "Many nodes"). Any node's address will do for any
# client.
#
# Needs Debian's `postgresql` package (initdb, pg_ctl, pg_basebackup; as
# root they run as the `postgres` user, since initdb refuses root) and the
# overlord binary: OVERLORD_BIN, else a release build of this tree.
# See examples/cluster/README.md.

set -euo pipefail

NODES=${1:-1}
if ! [[ "$NODES" =~ ^[0-9]+$ ]] || [ "$NODES" -lt 1 ] || [ "$NODES" -gt 16 ]; then
    echo "usage: $0 [NODES]   (1 to 16 nodes, default 1)" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ -n "${OVERLORD_BIN:-}" ]; then
    # Not passed on: the nodes read every OVERLORD_* variable as a setting.
    OVERLORD=$OVERLORD_BIN
    unset OVERLORD_BIN
else
    echo "building overlord (release)..." >&2
    (cd "$ROOT" && cargo build --release --quiet --bin overlord)
    OVERLORD=$ROOT/target/release/overlord
fi

# PostgreSQL's server tools: beside the pg_ctl on PATH, else Debian's
# newest /usr/lib/postgresql/*/bin.
PG_BIN=""
if command -v pg_ctl > /dev/null; then
    PG_BIN=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
fi
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/pg_basebackup" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -1)
fi
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    echo "up.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
fi

AS=()
# As root the PostgreSQL tools run as `postgres`, which must own its dirs:
# the temp dir is made under /tmp (a TMPDIR only root enters would not do).
if [ "$(id -u)" = 0 ]; then
    AS=(runuser -u postgres --)
    TMP=$(mktemp -d /tmp/overlord-cluster.XXXXXX)
    chown postgres "$TMP"
else
    TMP=$(mktemp -d)
fi
NODE_PIDS=()
PG_DIRS=()
SLEEP_PID=""

stop_pid() {
    local p=$1 i
    kill -TERM "$p" 2> /dev/null || return 0
    for i in $(seq 1 100); do kill -0 "$p" 2> /dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2> /dev/null || true
}
cleanup() {
    trap - EXIT INT TERM
    local p d
    [ -n "$SLEEP_PID" ] && kill "$SLEEP_PID" 2> /dev/null
    for p in "${NODE_PIDS[@]}"; do stop_pid "$p"; done
    for d in "${PG_DIRS[@]}"; do
        # The postmaster's pid; SIGTERM would wait for clients, SIGINT
        # ("fast") disconnects them; both end it.
        if [ -f "$d/postmaster.pid" ]; then
            p=$(head -1 "$d/postmaster.pid")
            kill -INT "$p" 2> /dev/null || true
            for _ in $(seq 1 100); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
            kill -KILL "$p" 2> /dev/null || true
        fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on (bounded search from a random base).
free_port() {
    local p i
    p=$((20000 + RANDOM % 20000))
    for i in $(seq 0 200); do
        if ! ss -Hltn "sport = :$((p + i))" 2> /dev/null | grep -q .; then
            echo $((p + i))
            return 0
        fi
    done
    echo "up.sh: no free port" >&2
    return 1
}

pg_start() {
    local data=$1 port=$2; shift 2
    "${AS[@]}" "$PG_BIN/pg_ctl" -D "$data" -l "$data.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$TMP $*" start > /dev/null
    PG_DIRS+=("$data")
}

P1=$(free_port)
"${AS[@]}" "$PG_BIN/initdb" -D "$TMP/primary" -U postgres --auth=trust --no-locale -E UTF8 > "$TMP/initdb.log"
# Loopback only, trusted: a throw-away cluster. Replication connections
# too, for the standby.
echo "host replication postgres 127.0.0.1/32 trust" >> "$TMP/primary/pg_hba.conf"
pg_start "$TMP/primary" "$P1" -c wal_level=replica -c max_wal_senders=5
psql_at() { local port=$1; shift; timeout 60 "${AS[@]}" "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 "$@" postgres; }
psql_at "$P1" -qc 'CREATE DATABASE overlord'

P2=$(free_port)
timeout 120 "${AS[@]}" "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$P1" -U postgres -D "$TMP/standby" \
    -R -X stream --checkpoint=fast
echo "primary_conninfo = 'host=127.0.0.1 port=$P1 user=postgres application_name=standby1'" \
    >> "$TMP/standby/postgresql.auto.conf"
# Promoted, the standby must not wait for a standby of its own.
pg_start "$TMP/standby" "$P2" -c hot_standby=on -c "synchronous_standby_names=''"
# Synchronous replication, once the standby is there (before, every
# commit would wait for it): a commit (a node's 200) waits until the
# standby has it, so a failover loses nothing acknowledged.
psql_at "$P1" -qc "ALTER SYSTEM SET synchronous_standby_names = 'standby1'"
psql_at "$P1" -qc 'SELECT pg_reload_conf()' > /dev/null
state=""
for _ in $(seq 1 600); do
    state=$(psql_at "$P1" -Atc \
        "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")
    [ "$state" = sync ] && break
    sleep 0.1
done
[ "${state:-}" = sync ] || { echo "up.sh: the standby did not start streaming" >&2; exit 1; }

# Both hosts: a node keeps to the one that takes writes, and follows a
# promotion by itself.
URL="host=127.0.0.1,127.0.0.1 port=$P1,$P2 user=postgres dbname=overlord target_session_attrs=read-write connect_timeout=2"
TOKEN=""
for n in $(seq 1 "$NODES"); do
    dir=$TMP/node$n
    mkdir -p "$dir"
    cat > "$dir/overlord.toml" << CONF
listen = "127.0.0.1:0"
data_file = "$dir/unused.redb"
files_dir = "$dir/files"
[mqtt]
listen = ""
[store]
kind = "postgres"
postgres_url = "$URL"
node_listen = "127.0.0.1:0"
CONF
    "$OVERLORD" --config "$dir/overlord.toml" > "$dir/stdout" 2> "$dir/stderr" &
    NODE_PIDS+=($!)
    addr=""
    for _ in $(seq 1 300); do
        addr=$(sed -n 's/^listening on //p' "$dir/stdout" | head -1)
        [ -n "$addr" ] && break
        kill -0 "${NODE_PIDS[-1]}" 2> /dev/null || break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "up.sh: node $n did not start:" >&2
        cat "$dir/stderr" >&2
        exit 1
    fi
    [ -z "$TOKEN" ] && TOKEN=$(sed -n 's/^admin token: //p' "$dir/stdout")
    echo "node http://$addr"
done
echo "admin token: $TOKEN"
{
    echo "PostgreSQL primary on 127.0.0.1:$P1, synchronous standby on 127.0.0.1:$P2 (state in $TMP)."
    echo "Fail over: kill the primary ($(head -1 "$TMP/primary/postmaster.pid")), then promote the standby:"
    echo "  ${AS[*]} $PG_BIN/pg_ctl -D $TMP/standby promote"
    echo "Ctrl-C stops everything."
} >&2
# In the foreground until interrupted; `wait` returns on a signal.
sleep infinity &
SLEEP_PID=$!
wait "$SLEEP_PID"
