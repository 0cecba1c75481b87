"""A webhook receiver: checks each delivery's signature and prints the event.

    WEBHOOK_SECRET=whsec_... python webhook_receiver.py 8000

Add it with `await client.add_webhook("http://127.0.0.1:8000/")` and start it with the
secret that call returned (a hub delivers to 127.0.0.1 and other private addresses only
with --webhook-allow-private).
"""

import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from quorum_hub import WebhookVerificationError, verify

SECRET = os.environ["WEBHOOK_SECRET"]


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = verify(SECRET, dict(self.headers.items()), body)
        except WebhookVerificationError as err:
            print(f"refused: {err}", flush=True)
            self.send_response(400)
        else:
            # The same event comes again (same webhook-id) until it is answered with 2xx.
            data = event["data"]
            print(f"{self.headers['webhook-id']} {event['type']}: "
                  f"{data.get('decision')} -> {data.get('value')}", flush=True)
            self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
