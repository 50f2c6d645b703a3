#!/bin/sh
# cron.sh - send readings from a cron job with whatever HTTP client the
# box has: busybox wget, GNU wget or curl. No library, one GET.
#
#   OVERLORD=http://192.168.1.10:8080 DEVICE=gh3 TOKEN=... cron.sh N1=21.5 L2=1
#
# crontab line (every minute, the CPU temperature of a plug computer):
#   * * * * * OVERLORD=http://192.168.1.10:8080 DEVICE=gh3 TOKEN=... /usr/local/bin/cron.sh N1=$(($(cat /sys/class/thermal/thermal_zone0/temp)/1000))
#
# CLIENT=busybox|wget|curl picks the client (default: the first found of
# curl, wget, busybox). Prints the server's reply (ok,<stored>,<pending>
# and any inbox rows); exits non-zero unless the readings were stored.
set -u
: "${OVERLORD:?set OVERLORD=http://HOST:PORT}" "${DEVICE:?set DEVICE}" "${TOKEN:?set TOKEN}"

query="device=$DEVICE&token=$TOKEN"
for pair in "$@"; do
  query="$query&$pair"
done
url="$OVERLORD/v1/readings?$query"

client=${CLIENT:-}
if [ -z "$client" ]; then
  for c in curl wget busybox; do
    if command -v "$c" >/dev/null 2>&1; then client=$c; break; fi
  done
fi

case "$client" in
  curl)    reply=$(curl -sS --max-time 30 "$url") ;;
  wget)    reply=$(wget -q -T 30 -O - "$url") ;;
  # (no -T: busybox 1.35 wget crashes with it)
  busybox) reply=$(busybox wget -q -O - "$url") ;;
  *)       echo "cron.sh: no HTTP client (curl, wget or busybox)" >&2; exit 2 ;;
esac
status=$?

printf '%s\n' "$reply"
case "$reply" in
  ok,*) exit 0 ;;
  *)    [ "$status" -ne 0 ] || status=1; exit "$status" ;;
esac
