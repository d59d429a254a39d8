import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """A local HTTP server standing for the SaaS's webhook endpoint: it records every request and
    answers with the next of `statuses` (the last one repeats)."""

    url: str
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=lambda: [200])
    answer_body: bytes = b'{"ok": true}'
    delay: float = 0.0  # seconds before answering
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_status(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


@pytest.fixture
def receiver(settings):
    settings.WEBHOOKS_ALLOW_HTTP = True
    state: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            target = state["receiver"]
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            with target.lock:
                target.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
            status = target.next_status()
            time.sleep(target.delay)
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "https://elsewhere.example.com/")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(target.answer_body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up
                self.wfile.write(target.answer_body)

        def log_message(self, format, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["receiver"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["receiver"]
    server.shutdown()
    server.server_close()
    thread.join()
