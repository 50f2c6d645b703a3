#!/usr/bin/env bash
# Step 4's measurements (docs/scale-out.md (b), "Still to measure"):
# pg-proto --experiment p3span | trickle | fleet against a throw-away
# PostgreSQL 15 in a temp dir (loopback, fsync on), three runs each.
#
#   bash run-step4.sh            # as root, from this directory, after cargo build --release
#
# Knobs: RUNS=3, EXPS="p3span trickle fleet", FLEET_DEVICES=2500 (x 4 sensors),
#        TRICKLE_DEVICES=12 (x 4 sensors), SEALS="lock returning" (trickle),
#        CKPT_MIN=30 (trickle), FLEET_SEAL=lock (or returning).
set -u -o pipefail
cd "$(dirname "$0")" || exit 1
RUNS=${RUNS:-3}
EXPS=${EXPS:-p3span trickle fleet}
FLEET_DEVICES=${FLEET_DEVICES:-2500}
TRICKLE_DEVICES=${TRICKLE_DEVICES:-12}
SEALS=${SEALS:-lock returning}
CKPT_MIN=${CKPT_MIN:-30}           # trickle: a CHECKPOINT every this many minutes of data
FLEET_SEAL=${FLEET_SEAL:-lock}
BIN=${BIN:-./target/release/pg-proto}
PGBIN=/usr/lib/postgresql/15/bin
as_pg() { runuser -u postgres -- "$@"; }

TMP=$(mktemp -d /tmp/pgproto2.XXXXXX)
chmod 755 "$TMP"
PG_UP=0
cleanup() {
    [ "$PG_UP" = 1 ] && as_pg "$PGBIN/pg_ctl" -D "$TMP/pg" -m fast -w stop > /dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local p=$1 i
    for i in $(seq 0 200); do
        ss -Hltn "sport = :$((p + i))" 2>/dev/null | grep -q . || { echo $((p + i)); return 0; }
    done
    return 1
}
load_avg() { cut -d' ' -f1-3 /proc/loadavg | tr ' ' /; }

echo "=== machine"
echo "    nproc $(nproc); $(lscpu | sed -n 's/^Model name: *//p' | head -1); $(free -m | awk '/^Mem:/ { print $2 }') MiB; $(uname -sr)"
echo "    $("$PGBIN/postgres" --version); temp dir on $(findmnt -no FSTYPE -T "$TMP") ($(findmnt -no SOURCE -T "$TMP"))"
echo "    1000 x 4 KiB O_DSYNC writes: $(dd if=/dev/zero of="$TMP/dsync" bs=4k count=1000 oflag=dsync 2>&1 | awk '/copied/ { print $(NF-3) }') s"
rm -f "$TMP/dsync"
echo "    load average at start: $(load_avg)"

PG_PORT=$(free_port 28410)
mkdir -p "$TMP/pg" "$TMP/pgrun" && chown postgres "$TMP/pg" "$TMP/pgrun"
as_pg "$PGBIN/initdb" -D "$TMP/pg" -U postgres --auth=trust --no-locale -E UTF8 > "$TMP/initdb.log" 2>&1 \
    || { cat "$TMP/initdb.log"; exit 1; }
# As benches/pg-proto/run.sh, plus autovacuum off (the experiments VACUUM
# explicitly, so no autovacuum lands inside a measured phase).
PG_OPTS="-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$TMP/pgrun \
-c synchronous_commit=on -c fsync=on -c full_page_writes=on -c shared_buffers=1GB \
-c max_wal_size=8GB -c checkpoint_timeout=30min -c autovacuum=off"
as_pg "$PGBIN/pg_ctl" -D "$TMP/pg" -l "$TMP/pgrun/pg.log" -o "$PG_OPTS" -w start > /dev/null \
    || { cat "$TMP/pgrun/pg.log"; exit 1; }
PG_UP=1
PM=$(head -1 "$TMP/pg/postmaster.pid")
URL="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
echo "    postgres on 127.0.0.1:$PG_PORT, postmaster $PM; settings: $PG_OPTS"
echo "    wal_compression accepts: $(for v in lz4 pglz zstd; do psql -qAt "$URL" -c "SET wal_compression = $v" > /dev/null 2>&1 && printf '%s ' $v; done)"

px() { "$BIN" --url "$URL" --postmaster "$PM" "$@"; }

for exp in $EXPS; do
    for r in $(seq 1 "$RUNS"); do
        case $exp in
        p3span)
            echo "=== p3span run $r (load $(load_avg))"
            px --experiment p3span --runs 30 || exit 1 ;;
        trickle)
            for seal in $SEALS; do
                for comp in off lz4; do
                    echo "=== trickle run $r seal=$seal wal_compression=$comp ckpt_min=$CKPT_MIN (load $(load_avg))"
                    px --experiment trickle --devices "$TRICKLE_DEVICES" --seal "$seal" --wal-compression "$comp" \
                        --ckpt-min "$CKPT_MIN" || exit 1
                done
            done ;;
        fleet)
            echo "=== fleet run $r seal=$FLEET_SEAL (load $(load_avg))"
            px --experiment fleet --devices "$FLEET_DEVICES" --seal "$FLEET_SEAL" --wal-compression off || exit 1 ;;
        esac
    done
done
echo "    load average at end: $(load_avg)"
