"""A Stripe webhook receiver written the way Stripe's docs show it, with the official SDK.

Listens on 127.0.0.1 (port 0) and prints its port on the first line of stdout. For every POST it
verifies the `Stripe-Signature` header with `stripe.Webhook.construct_event` and the secret in the
file named by WEBHOOK_SECRET_FILE (read at each request: the endpoint's secret exists only once
the endpoint, which needs this receiver's URL, was created), answers 200 and prints one JSON line
per verified event (`{"id", "type", "raw"}`), or answers 400 and prints `{"error": ...}` for a
delivery that fails verification. Exits when stdin closes.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe

SECRET_FILE = os.environ["WEBHOOK_SECRET_FILE"]
lock = threading.Lock()


def emit(record):
    with lock:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        payload = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        signature = self.headers.get("Stripe-Signature", "")
        try:
            secret = open(SECRET_FILE, encoding="utf-8").read().strip()
            event = stripe.Webhook.construct_event(payload, signature, secret)
        except (ValueError, stripe.SignatureVerificationError) as error:
            emit({"error": str(error)})
            self.send_response(400)
            self.end_headers()
            return
        emit({"id": event.id, "type": event.type, "raw": payload.decode("utf-8")})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
