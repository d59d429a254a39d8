"""An HTTP proxy in front of the moto server for what moto cannot express.

Everything is forwarded to moto unchanged, except that a test can:
- answer GetCostForecast (moto does not implement it: it answers 500): with an amount, or with
  Cost Explorer's DataUnavailableException (the default: AWS's answer when it has too little history);
- answer API Gateway's GetUsage (moto does not implement it) from counts the test sets (`usage_set`),
  in API Gateway's documented shape: `{"usagePlanId", "startDate", "endDate", "position",
  "values": {"<keyId>": [[used, remaining], ...one per day, startDate to endDate...]}}` (boto3 calls
  `values` `items`), paged by `limit` and `position`;
- make the next requests of an operation fail with AWS's error bodies (throttling, access denied, 5xx):
  JSON-protocol operations (Cost Explorer) by their X-Amz-Target, API Gateway's REST operations by
  method and path (REST_OPERATIONS).
The platform reaches it through AWS_ENDPOINT_URL exactly as it reaches moto, over HTTP.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
# API Gateway's REST operations the proxy names (to record them, fail them or answer them).
REST_OPERATIONS = [
    ("GET", re.compile(r"^/usageplans/(?P<usagePlanId>[^/]+)/usage$"), "GetUsage"),
    ("GET", re.compile(r"^/usageplans/(?P<usagePlanId>[^/]+)/keys$"), "GetUsagePlanKeys"),
    ("POST", re.compile(r"^/usageplans/(?P<usagePlanId>[^/]+)/keys$"), "CreateUsagePlanKey"),
    ("GET", re.compile(r"^/usageplans/(?P<usagePlanId>[^/]+)/keys/(?P<keyId>[^/]+)$"), "GetUsagePlanKey"),
    (
        "DELETE",
        re.compile(r"^/usageplans/(?P<usagePlanId>[^/]+)/keys/(?P<keyId>[^/]+)$"),
        "DeleteUsagePlanKey",
    ),
]
GET_USAGE_DEFAULT_LIMIT = 25  # API Gateway's default page size


class AwsProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.forecast_amount: str | None = None
        self.faults: list[dict] = []
        self.requests: list[tuple[str, dict]] = []  # (operation, JSON body) of CE requests
        # API Gateway's usage: {usage plan id: {key id: {day: (used, remaining)}}}.
        self.usage: dict[str, dict[str, dict[date, tuple[int, int]]]] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                operation = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
                if operation:
                    answer = proxy._intercept(operation, body)
                else:
                    answer = proxy._intercept_rest(self.command, self.path, body)
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
            self.usage.clear()

    def usage_set(self, plan_id: str, key_id: str, day: date, used: int, remaining: int = 0) -> None:
        """What GetUsage answers for the key on that day (days not set answer [0, 0])."""
        with self.lock:
            self.usage.setdefault(plan_id, {}).setdefault(key_id, {})[day] = (used, remaining)

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
        with self.lock:
            self.requests.append((operation, json.loads(body or b"{}")))
            if fault := self._fault(operation):
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

    def _fault(self, operation: str):
        for fault in self.faults:
            if fault["operation"] == operation and fault["count"] > 0:
                fault["count"] -= 1
                return fault
        return None

    def _intercept_rest(self, method: str, path: str, body: bytes):
        """API Gateway's REST operations: recorded; failed when a fault is set; GetUsage answered."""
        parts = urlsplit(path)
        for verb, pattern, name in REST_OPERATIONS:
            if verb == method and (match := pattern.match(parts.path)):
                operation, params = name, dict(match.groupdict())
                break
        else:
            return None
        params.update({name: values[-1] for name, values in parse_qs(parts.query).items()})
        if body:
            params.update(json.loads(body))
        with self.lock:
            self.requests.append((operation, params))
            if fault := self._fault(operation):
                # API Gateway's error body, the error code in x-amzn-ErrorType.
                headers = {"Content-Type": "application/json", "x-amzn-ErrorType": fault["code"]}
                return fault["status"], headers, json.dumps({"message": fault["message"]}).encode()
            if operation == "GetUsage":
                return self._get_usage(params)
        return None

    def _get_usage(self, params: dict) -> tuple[int, dict, bytes]:
        start, end = date.fromisoformat(params["startDate"]), date.fromisoformat(params["endDate"])
        days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
        keys = sorted(self.usage.get(params["usagePlanId"], {}).items())
        if params.get("keyId"):
            keys = [(key, counts) for key, counts in keys if key == params["keyId"]]
        offset = int(params.get("position") or 0)
        limit = int(params.get("limit") or GET_USAGE_DEFAULT_LIMIT)
        page = keys[offset : offset + limit]
        answer = {
            "usagePlanId": params["usagePlanId"],
            "startDate": params["startDate"],
            "endDate": params["endDate"],
            "values": {key: [list(counts.get(day, (0, 0))) for day in days] for key, counts in page},
        }
        if offset + limit < len(keys):
            answer["position"] = str(offset + limit)
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def _forward(self, method: str, path: str, headers: dict, body: bytes):
        request = urllib.request.Request(  # noqa: S310 - the local moto server
            self.upstream + path,
            data=body if body and method not in ("GET", "HEAD") else None,  # no form content type
            method=method,
            headers={k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local moto
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()
