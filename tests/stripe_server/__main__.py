"""Run the local Stripe server on its own: `python -m tests.stripe_server --port 12111`.

Test controls are then reachable over HTTP under `/_test/...` (see `StripeServer.handle_admin`).
"""

import argparse
import contextlib
import signal
import threading

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
    args = parser.parse_args()
    server = StripeServer(args.host, args.port).start()
    server.set_rate_limit(args.rate_limit)
    server.set_rate_limit(args.stream_rate_limit, scope="stream")
    print(f"local Stripe listening on {server.url}", flush=True)  # noqa: T201 - a command's output
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
