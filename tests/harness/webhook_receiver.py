"""A webhook receiver for the tests: verifies every request with the PyPI `standardwebhooks`
library (not Courier's code), records it and answers as the test scripted.

Usage: webhook_receiver.py <port> <record file> <secret>...
  Prints "webhook receiver listening on 127.0.0.1:<port>" once it listens.
  POST /hook     a webhook: verified with any of the secrets (401 if none verifies); the answer
                 is the next scripted status (200 when the script is empty), after the scripted
                 delay. Each request is appended to the record file as JSON lines:
                 {"phase": "arrived", "id"} at once, then
                 {"phase": "answered", "verified", "id", "status", "event"}.
  PUT /control   {"statuses": [500, 500], "delay_ms": 0, "retry_after": null}: the script.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PORT = int(sys.argv[1])
RECORD = sys.argv[2]
HOOKS = [Webhook(secret) for secret in sys.argv[3:]]
LOCK = threading.Lock()
SCRIPT = {"statuses": [], "delay_ms": 0, "retry_after": None}


def verify(body, headers):
    for hook in HOOKS:
        try:
            return hook.verify(body, headers)
        except WebhookVerificationError:
            continue
    return None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def answer(self, status, text=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_PUT(self):
        script = json.loads(self.body())
        with LOCK:
            SCRIPT.update(script)
        self.answer(204)

    def do_POST(self):
        body = self.body()
        headers = {k: v for k, v in self.headers.items()}
        event = verify(body, headers)
        with LOCK:
            status = SCRIPT["statuses"].pop(0) if SCRIPT["statuses"] else 200
            delay = SCRIPT["delay_ms"] / 1000
            retry_after = SCRIPT["retry_after"]
        if event is None:
            status = 401
        webhook_id = headers.get("webhook-id") or headers.get("Webhook-Id")
        with LOCK, open(RECORD, "a") as record:
            record.write(json.dumps({"phase": "arrived", "id": webhook_id}) + "\n")
        time.sleep(delay)
        line = {
            "phase": "answered",
            "verified": event is not None,
            "id": webhook_id,
            "status": status,
            "event": event,
        }
        with LOCK, open(RECORD, "a") as record:
            record.write(json.dumps(line) + "\n")
        extra = [("Retry-After", str(retry_after))] if status == 429 and retry_after else []
        self.answer(status, b"answer %d from the test receiver" % status, extra)


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(f"webhook receiver listening on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
