"""An HTTP proxy in front of the moto server for what moto cannot express.

Everything is forwarded to moto unchanged, except that a test can:
- answer GetCostForecast (moto does not implement it: it answers 500): with an amount, or with
  Cost Explorer's DataUnavailableException (the default: AWS's answer when it has too little history);
- make the next requests of an operation fail with AWS's error bodies (throttling, access denied, 5xx).
The platform reaches it through AWS_ENDPOINT_URL exactly as it reaches moto, over HTTP.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class AwsProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.forecast_amount: str | None = None
        self.faults: list[dict] = []
        self.requests: list[tuple[str, dict]] = []  # (operation, JSON body) of CE requests
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                operation = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
                answer = proxy._intercept(operation, body)
                if answer is None:
                    answer = proxy._forward(self.command, self.path, dict(self.headers.items()), body)
                status, headers, payload = answer
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in HOP_HEADERS:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> AwsProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.forecast_amount = None
            self.faults.clear()
            self.requests.clear()

    def fail_next(self, operation: str, count: int, *, status: int = 400, code: str, message: str) -> None:
        with self.lock:
            self.faults.append(
                {"operation": operation, "count": count, "status": status, "code": code, "message": message}
            )

    def operations(self, name: str) -> list[dict]:
        return [body for operation, body in self.requests if operation == name]

    @staticmethod
    def _json(status: int, data: dict) -> tuple[int, dict, bytes]:
        return status, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(data).encode()

    def _intercept(self, operation: str, body: bytes):
        if not operation:
            return None
        with self.lock:
            self.requests.append((operation, json.loads(body or b"{}")))
            for fault in self.faults:
                if fault["operation"] == operation and fault["count"] > 0:
                    fault["count"] -= 1
                    return self._json(fault["status"], {"__type": fault["code"], "message": fault["message"]})
            if operation == "GetCostForecast":
                if self.forecast_amount is None:
                    return self._json(
                        400,
                        {
                            "__type": "DataUnavailableException",
                            "Message": "Insufficient amount of historical data",
                        },
                    )
                return self._json(
                    200,
                    {
                        "Total": {"Amount": self.forecast_amount, "Unit": "USD"},
                        "ForecastResultsByTime": [],
                    },
                )
        return None

    def _forward(self, method: str, path: str, headers: dict, body: bytes):
        request = urllib.request.Request(  # noqa: S310 - the local moto server
            self.upstream + path,
            data=body if method not in ("GET", "HEAD") else None,
            method=method,
            headers={k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local moto
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()
