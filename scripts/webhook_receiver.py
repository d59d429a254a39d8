"""The demo's stand-in for the SaaS's own app: receives the platform's outgoing webhooks.

`make run` starts it and seed_demo points a webhook endpoint (every event type) at it, so the demo's
delivery log fills with real deliveries. It verifies each request as any receiver should, with the
`standardwebhooks` library and the endpoint's signing secret (read from SECRET_FILE on every request,
since seed_demo writes it after this starts), answers 204 (or 400 for a bad signature), and prints
one line per event. Standard library plus standardwebhooks only; loopback only.

Usage: python scripts/webhook_receiver.py --port 0 --secret-file var/demo-webhook-secret
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks import Webhook, WebhookVerificationError

MAX_BODY = 1024 * 1024


def handler_for(secret_file: Path) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, MAX_BODY))
            try:
                secret = secret_file.read_text().strip()
                event = Webhook(secret).verify(body, dict(self.headers.items()))
            except (OSError, WebhookVerificationError, ValueError) as exc:
                self._answer(400)
                print(f"refused {self.headers.get('webhook-id')}: {exc}", flush=True)  # noqa: T201
                return
            self._answer(204)
            tenant = (event.get("data") or {}).get("tenant") or {}
            print(  # noqa: T201
                f"verified {self.headers.get('webhook-id')} {event.get('type')} "
                f"tenant={tenant.get('slug', '-')}",
                flush=True,
            )

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            return  # one line per event above, not per request

    return Receiver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret-file", type=Path, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(args.secret_file))
    print(f"webhook receiver listening on http://127.0.0.1:{server.server_port}/", flush=True)  # noqa: T201
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
