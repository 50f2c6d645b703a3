#!/usr/bin/env python3
"""follow_channel.py - follow an Overlord channel with the standard library.

Long-polls GET /v1/channels/CH/items?after=IDX&wait=SECONDS and prints each
item (index,time,device,sensor,value). The last index seen is kept in a
state file, so a restarted follower resumes where it stopped: nothing is
missed and nothing is printed twice.

    follow_channel.py --url http://127.0.0.1:8080 --channel greenhouse \\
        --token "$USER_TOKEN" --state greenhouse.idx

--count N stops after N items (for scripts and tests); otherwise it runs
until interrupted, reconnecting after errors with a short back-off.
"""

import argparse
import csv
import io
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def load_after(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0


def save_after(path, index):
    # Write then rename: a crash leaves the old index or the new, never half.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{index}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fetch(url, token, timeout):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode("utf-8")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="server, e.g. http://127.0.0.1:8080")
    p.add_argument("--channel", required=True)
    p.add_argument("--token", required=True, help="a user's API token")
    p.add_argument("--state", required=True, help="file keeping the last index seen")
    p.add_argument("--wait", type=int, default=30, help="long-poll seconds (<= max_wait_secs)")
    p.add_argument("--count", type=int, default=0, help="stop after this many items")
    a = p.parse_args()

    after = load_after(a.state)
    seen = 0
    channel = urllib.parse.quote(a.channel, safe="")
    while True:
        url = f"{a.url}/v1/channels/{channel}/items?after={after}&wait={a.wait}&limit=100"
        try:
            body = fetch(url, a.token, a.wait + 15)
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace").strip()
            if e.code in (401, 403, 404):
                print(f"follow_channel.py: {e.code} {detail}", file=sys.stderr)
                return 1
            retry = int(e.headers.get("Retry-After", "1"))
            print(f"follow_channel.py: {e.code} {detail}; retrying in {retry}s", file=sys.stderr)
            time.sleep(retry)
            continue
        except (urllib.error.URLError, OSError) as e:
            print(f"follow_channel.py: {e}; retrying in 2s", file=sys.stderr)
            time.sleep(2)
            continue
        rows = list(csv.reader(io.StringIO(body)))
        for row in rows[1:]:  # rows[0] is the header
            if not row:
                continue
            index = int(row[0])
            if index <= after:
                continue
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerow(row)
            sys.stdout.write(out.getvalue())
            sys.stdout.flush()
            after = index
            save_after(a.state, after)
            seen += 1
            if a.count and seen >= a.count:
                return 0


if __name__ == "__main__":
    sys.exit(main())
