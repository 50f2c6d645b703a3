#!/bin/sh
# offline_buffer.sh - never lose a reading while the server is away.
#
# Each run appends one row to a spool file, then sends the whole spool as
# one CSV body (POST /v1/readings, text/csv). Only an `ok,` reply empties
# the spool; otherwise (server down, network out) the rows wait for the
# next run. Sending the same rows twice is harmless: a reading is
# identified by (device, sensor, time) and stored once.
#
#   OVERLORD=http://192.168.1.10:8080 DEVICE=gh3 TOKEN=... SENSORS="N1 I2" \
#     SPOOL=/var/spool/overlord/gh3.csv offline_buffer.sh 21.5 7
#
# SENSORS names the columns; the arguments are their values in that order
# (an empty argument is "no value"). NOW overrides the row's time (unix
# seconds; default: now). CLIENT=curl|wget|busybox as in cron.sh.
set -u
: "${OVERLORD:?set OVERLORD=http://HOST:PORT}" "${DEVICE:?set DEVICE}" "${TOKEN:?set TOKEN}"
: "${SENSORS:?set SENSORS, e.g. SENSORS=\"N1 I2\"}" "${SPOOL:?set SPOOL=FILE}"

header="time"
for s in $SENSORS; do header="$header,$s"; done
row="${NOW:-$(date +%s)}"
for s in $SENSORS; do
  row="$row,${1:-}"
  [ $# -gt 0 ] && shift
done

# Append the new row. A spool is one CSV body: header, then rows.
[ -s "$SPOOL" ] || printf '%s\n' "$header" > "$SPOOL"
printf '%s\n' "$row" >> "$SPOOL"

# Send what is spooled. Move it aside first so a run that starts meanwhile
# spools into a fresh file instead of one being emptied under it.
sending="$SPOOL.sending"
if [ -e "$sending" ]; then
  # A previous run died while sending: keep its rows, add ours.
  tail -n +2 "$SPOOL" >> "$sending" && rm -f "$SPOOL"
else
  mv "$SPOOL" "$sending"
fi

url="$OVERLORD/v1/readings?device=$DEVICE&token=$TOKEN"
client=${CLIENT:-}
if [ -z "$client" ]; then
  for c in curl wget busybox; do
    if command -v "$c" >/dev/null 2>&1; then client=$c; break; fi
  done
fi
case "$client" in
  curl)    reply=$(curl -sS --max-time 60 -H 'Content-Type: text/csv' --data-binary "@$sending" "$url" 2>&1) ;;
  wget)    reply=$(wget -q -T 60 -O - --header 'Content-Type: text/csv' --post-file "$sending" "$url" 2>&1) ;;
  # (no -T: busybox 1.35 wget crashes with it)
  busybox) reply=$(busybox wget -q -O - --header 'Content-Type: text/csv' --post-file "$sending" "$url" 2>&1) ;;
  *)       reply="no HTTP client" ;;
esac

case "$reply" in
  ok,*)
    rm -f "$sending"
    printf '%s\n' "$reply"
    ;;
  *)
    # Keep everything: the older rows first, then any spooled meanwhile.
    if [ -s "$SPOOL" ]; then tail -n +2 "$SPOOL" >> "$sending"; fi
    mv "$sending" "$SPOOL"
    rows=$(($(wc -l < "$SPOOL") - 1))
    echo "offline_buffer.sh: not sent ($reply); $rows rows spooled in $SPOOL" >&2
    exit 1
    ;;
esac
