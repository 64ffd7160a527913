"""Metric definitions shared by every stage, and the /metrics server (which also answers /healthz).

Each service is its own process with its own port (declared in ``shared.pipeline``); the
``stage`` label names the stage, so one Grafana panel can show the whole pipeline.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from shared.health import Liveness
from shared.pipeline import ServiceDecl

MESSAGES_IN = Counter("newswatch_messages_in_total", "Messages consumed by a stage", ["stage"])
MESSAGES_OUT = Counter("newswatch_messages_out_total", "Messages produced by a stage", ["stage", "topic"])
MESSAGES_FAILED = Counter("newswatch_messages_failed_total", "Inputs a stage failed to process",
                          ["stage", "error"])
DEAD_LETTERED = Counter("newswatch_dead_lettered_total", "Inputs sent to the dead-letter topic", ["stage"])
PROCESSING_SECONDS = Histogram(
    "newswatch_processing_seconds", "Time to process one input", ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ARTICLE_AGE_SECONDS = Histogram(
    "newswatch_article_age_seconds", "Seconds since the article was fetched, when it leaves the stage",
    ["stage"], buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)
RETRIES = Counter("newswatch_retries_total", "Transient failures retried (Redis, broker)", ["stage"])
ONCE_SKIPPED = Counter("newswatch_once_skipped_total",
                       "Outputs not sent again because their once-key shows them published already", ["stage", "topic"])
UP = Gauge("newswatch_up", "1 while the stage runs", ["stage"])

# Stage-specific metrics live here too, so that every metric name has one home.
FEED_POLLS = Counter("newswatch_fetch_polls_total", "Feed polls", ["source", "outcome"])
FETCHED_BYTES = Counter("newswatch_fetch_bytes_total", "Bytes downloaded", ["source"])
DUPLICATES = Counter("newswatch_clean_duplicates_total", "Articles found to copy an earlier one", ["kind"])
ALERTS_FIRED = Counter("newswatch_alerts_total", "Alerts published", ["rule"])
ALERTS_SUPPRESSED = Counter("newswatch_alerts_suppressed_total",
                            "Rule matches not alerted because the story already fired", ["rule"])
WEBHOOK_DELIVERIES = Counter("newswatch_webhook_deliveries_total", "Webhook POSTs", ["outcome"])

def serve_metrics(service: ServiceDecl, port: int = 0, host: str = "0.0.0.0",
                  liveness: Liveness | None = None) -> int:
    """Start the HTTP server in a thread (``port`` 0: the service's declared port); return the port.

    It serves the metrics on every path but one: ``/healthz`` answers the ``liveness`` verdict
    (200 or 503, JSON; see ``shared/health.py``)."""
    port = port or service.metrics_port
    metrics_app = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if liveness is not None and environ.get("PATH_INFO") == "/healthz":
            verdict = liveness.check()
            start_response("200 OK" if verdict.ok else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [verdict.json()]
        return metrics_app(environ, start_response)

    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class: type[ThreadingWSGIServer] = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
    httpd: ThreadingWSGIServer = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    UP.labels(service.name).set(1)
    return port


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass
