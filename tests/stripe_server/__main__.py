"""Run the local Stripe server on its own: `python -m tests.stripe_server --port 12111`.

Test controls are then reachable over HTTP under `/_test/...` (see `StripeServer.handle_admin`).
`--state FILE` keeps the server's objects across restarts (the demo's sandbox, `make run`): read at
start when the file exists, written every 30 s and when the server stops. `--port 0` takes a free
port; the line "local Stripe listening on URL" says which.
"""

import argparse
import contextlib
import pickle
import signal
import threading
from pathlib import Path

from .server import StripeServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="requests per second (all but the stream)"
    )
    parser.add_argument(
        "--stream-rate-limit", type=float, default=None, help="requests per second on the stream"
    )
    parser.add_argument("--state", type=Path, default=None, help="keep the objects in this file")
    args = parser.parse_args()
    server = StripeServer(args.host, args.port)
    if args.state is not None and args.state.exists():
        _state_load(server, args.state)
    server.start()
    server.set_rate_limit(args.rate_limit)
    server.set_rate_limit(args.stream_rate_limit, scope="stream")
    print(f"local Stripe listening on {server.url}", flush=True)  # noqa: T201 - a command's output
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        while not stop.wait(30):
            if args.state is not None:
                _state_save(server, args.state)  # also every 30 s: a killed sandbox loses little
    server.stop()
    if args.state is not None:
        _state_save(server, args.state)


# The State attributes that hold Stripe's objects (not its lock or event listeners).
_KEPT = (
    "objects", "seq", "types", "counter", "meter_events", "identifiers", "sessions", "idempotency",
    "search_versions", "v2_events", "meter_errors", "adjustments", "invoice_sequences", "meta",
)  # fmt: skip


def _state_save(server: StripeServer, path: Path) -> None:
    with server.state.lock:
        kept = {name: getattr(server.state, name) for name in _KEPT}
        kept["time_offset"] = server.state.time_offset
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_bytes(pickle.dumps(kept))
    path.with_suffix(".tmp").replace(path)


def _state_load(server: StripeServer, path: Path) -> None:
    # The file is one this command wrote (the demo's var/); never point --state at anything else.
    kept = pickle.loads(path.read_bytes())  # noqa: S301
    with server.state.lock:
        for name, value in kept.items():
            setattr(server.state, name, value)


if __name__ == "__main__":
    main()
