#!/usr/bin/env python3
"""A webhook receiver for Overlord notification targets, standard library only.

Overlord signs each webhook body with the target's secret:

    Overlord-Timestamp: 1764750000
    Overlord-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">
    Overlord-Event-Id:  evt-42

`verify()` is the recipe: recompute the HMAC over the timestamp, a dot and
the raw body, compare in constant time, and refuse old timestamps (a
replayed request). A retry of the same event carries the same
Overlord-Event-Id, so remember the ids you have handled and skip repeats.

Run it as a receiver:

    python3 verify_webhook.py --secret S3CRET --port 8000

It answers 200 to a valid request and 401 to a bad signature, and prints
one line per request: `ok <event id> <body>` or `bad <event id> <why>`.
With --port 0 it picks a free port and prints `listening <port>` first.
"""

import argparse
import hashlib
import hmac
import http.server
import sys
import time


def verify(secret, timestamp, signature, body, tolerance=300, now=None):
    """Return None if `body` is signed with `secret`, else why not.

    `timestamp` and `signature` are the Overlord-Timestamp and
    Overlord-Signature header values; `body` is the raw request body
    (bytes). `tolerance` is how old (seconds) a request may be.
    """
    if not timestamp or not signature:
        return "unsigned"
    try:
        ts = int(timestamp)
    except ValueError:
        return "bad timestamp"
    now = time.time() if now is None else now
    if tolerance and abs(now - ts) > tolerance:
        return "timestamp too old"
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    expected = mac.hexdigest()
    for part in signature.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme == "v1" and hmac.compare_digest(value, expected):
            return None
    return "signature mismatch"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--secret", required=True)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            event = self.headers.get("Overlord-Event-Id", "")
            why = verify(
                args.secret,
                self.headers.get("Overlord-Timestamp", ""),
                self.headers.get("Overlord-Signature", ""),
                body,
            )
            if why is None:
                print("ok", event, body.decode("utf-8", "replace").replace("\n", "\\n"), flush=True)
                self.send_response(200)
            else:
                print("bad", event, why, flush=True)
                self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer((args.host, args.port), Handler)
    print("listening", server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
