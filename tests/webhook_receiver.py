"""A real HTTP webhook receiver on 127.0.0.1 for the tests: answers each POST with the next status of
its script (then 200), records what it got."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Post:
    at: float  # monotonic time the POST arrived
    alert_id: str  # its x-newswatch-alert-id header
    status: int  # what the receiver answered
    body: bytes


class Receiver:
    """``script``: statuses answered in turn (429 and 503 with ``Retry-After: 1``); ``delay``: seconds
    each answer takes."""

    def __init__(self, script: list[int] | None = None, delay: float = 0.0) -> None:
        self.script = list(script or [])
        self.delay = delay
        self.posts: list[Post] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.monotonic()
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                time.sleep(receiver.delay)
                status = receiver.script.pop(0) if receiver.script else 200
                receiver.posts.append(Post(at, self.headers.get("x-newswatch-alert-id", ""), status, body))
                self.send_response(status)
                if status in (429, 503):
                    self.send_header("retry-after", "1")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
