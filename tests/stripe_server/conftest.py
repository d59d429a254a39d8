"""Fixtures for the local Stripe server's own tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from tests.stripe_server import StripeServer

API_KEY = "sk_test_local_server"


@pytest.fixture(scope="session")
def stripe_server():
    with StripeServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_stripe_server(stripe_server):
    stripe_server.reset()


@pytest.fixture
def client(stripe_server) -> stripe.StripeClient:
    """stripe-python's StripeClient against the local server, without automatic retries."""
    return stripe.StripeClient(
        api_key=API_KEY,
        base_addresses={"api": stripe_server.url, "meter_events": stripe_server.url},
        max_network_retries=0,
    )


@pytest.fixture
def module_stripe(stripe_server, monkeypatch):
    """The module-level `stripe` API (what dj-stripe uses) pointed at the local server."""
    monkeypatch.setattr(stripe, "api_key", API_KEY)
    monkeypatch.setattr(stripe, "api_base", stripe_server.url)
    monkeypatch.setattr(stripe, "meter_events_api_base", stripe_server.url)
    monkeypatch.setattr(stripe, "max_network_retries", 0)
    return stripe


class WebhookReceiver:
    """A tiny HTTP endpoint that records what it is sent and answers `status`."""

    def __init__(self):
        self.received: list[dict] = []
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.received.append({"headers": dict(self.headers), "body": body.decode()})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stripe/webhook"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def events(self) -> list[dict]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.received]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
