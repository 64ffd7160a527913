"""Every metric of newswatch, defined once, and the /metrics server (which also answers /healthz).

Conventions (Prometheus): counters end in ``_total``, durations are in seconds, a point in time is
``_timestamp_seconds``; a label takes its values from a closed set only: stage and topic names
from ``shared.pipeline``, the enums below, source ids from the sources file, rule ids from the
rules file. Every labelled counter is created at zero for its known label values as soon as the
process knows them (``init_service`` at start, ``init_source`` for fetch's sources,
``init_rule`` when the rules load, ``init_clean``/``init_webhooks`` for those stages), so that
``rate``/``increase`` see the first event (a counter born at 3 shows an increase of 0) and a
healthy pipeline's panels show 0, not "No data".

Each service is its own process with its own port (declared in ``shared.pipeline``) and exports
the series of its own stages; the ``stage`` label names the stage, so one panel shows the whole
pipeline. Replicas of a service export the same series names: sum counters across them, and take
the max of ``newswatch_consumer_lag_messages`` (every replica reads its group's whole lag).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from shared import health, pipeline
from shared.failures import Kind, dependency
from shared.health import Liveness
from shared.pipeline import ServiceDecl, StageDecl
from shared.topics import ALERTS

log = logging.getLogger(__name__)

# --- closed label sets ---------------------------------------------------------------------------

# Why a stage gave an input up (``newswatch_messages_failed_total{kind}``): transient failures are
# retried, never given up.
FAILURE_KINDS: tuple[str, ...] = (Kind.POISON.value, Kind.UNKNOWN.value)
# An HTTP answer's class; "none": no answer (network error, timeout, refused before asking, backed off).
STATUS_CLASSES: tuple[str, ...] = ("none", "2xx", "3xx", "4xx", "5xx")
# A feed or sitemap poll: ok (2xx, parsed), unchanged (304), error (anything else, a 2xx that does not
# parse included), backoff (not asked: the feed is backed off after errors). The status classes each
# outcome can have are the series created at zero.
POLL_OUTCOMES: dict[str, tuple[str, ...]] = {
    "ok": ("2xx",), "unchanged": ("3xx",), "error": STATUS_CLASSES, "backoff": ("none",)}
# A link a feed or sitemap lists that fetch refuses to fetch: a scheme that is not http(s) (javascript:,
# file:, data:, ftp:, mailto:…) or a URL over services.fetch.feeds.MAX_URL_CHARS (feeds.screen).
REFUSAL_REASONS: tuple[str, ...] = ("scheme", "too_long")
# An article page fetch: published; retry (a transient failure, tried again later); gave_up (a final
# answer, a refusal, or too many attempts: fetch's log says which).
PAGE_OUTCOMES: tuple[str, ...] = ("published", "retry", "gave_up")
# A feed item at a poll: new (its URL not settled yet: fetched, or waiting for its retry) or seen
# (fetched, in flight or given up already).
ITEM_STATES: tuple[str, ...] = ("new", "seen")
# clean: an article starts a new story, or copies an earlier one exactly or nearly (syndication).
STORY_KINDS: tuple[str, ...] = ("new", "exact", "near")
# One webhook delivery (an alert to one URL): ok (2xx), refused (a 4xx other than 408/429: not
# retried), failed (every attempt failed). Counted once per delivery, whatever its attempts.
WEBHOOK_OUTCOMES: tuple[str, ...] = ("ok", "refused", "failed")

# --- every stage ---------------------------------------------------------------------------------

MESSAGES_CONSUMED = Counter(
    "newswatch_messages_consumed_total",
    "Inputs a stage took from its topic (fetch: article pages it tried to fetch)", ["stage", "topic"])
MESSAGES_PRODUCED = Counter(
    "newswatch_messages_produced_total", "Outputs a stage published, acknowledged by the broker", ["stage", "topic"])
MESSAGES_FAILED = Counter(
    "newswatch_messages_failed_total",
    "Inputs a stage gave up on (kind: poison or unknown; fetch: pages given up)", ["stage", "topic", "kind"])
DEAD_LETTERED = Counter(
    "newswatch_messages_dead_lettered_total", "Inputs sent to the dead-letter topic", ["stage", "topic"])
ONCE_SKIPPED = Counter(
    "newswatch_messages_once_skipped_total",
    "Outputs not sent again because their once-key shows them published already", ["stage", "topic"])
DEPENDENCY_ERRORS = Counter(
    "newswatch_dependency_errors_total",
    "Transient failures of a dependency (broker, redis, other), each waited out and retried",
    ["stage", "dependency"])
PROCESSING_SECONDS = Histogram(
    "newswatch_processing_seconds", "Time to process one input to its end (fetch: fetch and publish one page)",
    ["stage"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ARTICLE_AGE_SECONDS = Histogram(
    "newswatch_article_age_seconds", "Seconds since the article's page was fetched, when a stage's output leaves it",
    ["stage"], buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600))
FEED_TO_ALERT_SECONDS = Histogram(
    "newswatch_feed_to_alert_seconds",
    "Seconds from the fetch of an article's page to the broker's acknowledgement of an alert it raised",
    ["stage"], buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120, 300, 900, 3600))
CONSUMER_LAG = Gauge(
    "newswatch_consumer_lag_messages",
    "Messages the stage's consumer group has not committed yet: high watermark - committed offset",
    ["stage", "topic", "partition"])
UP = Gauge("newswatch_up", "1 while the stage runs; 0 while it starts (models, connections) or stops", ["stage"])

# --- fetch, per source ---------------------------------------------------------------------------

FETCH_POLLS = Counter(
    "newswatch_fetch_polls_total", "Feed and sitemap polls, by outcome and HTTP status class",
    ["source", "outcome", "status_class"])
FETCH_LAST_SUCCESS = Gauge(
    "newswatch_fetch_last_success_timestamp_seconds",
    "When a poll of the source last succeeded (ok or unchanged); 0: not since this process started", ["source"])
FETCH_ITEMS = Counter(
    "newswatch_fetch_items_total", "Items the source's feeds listed, new or seen", ["source", "state"])
FETCH_REFUSED = Counter(
    "newswatch_fetch_refused_total", "Links listed by the source's feeds and sitemaps that fetch refuses, by reason",
    ["source", "reason"])
FETCH_PAGES = Counter("newswatch_fetch_pages_total", "Article page fetches, by outcome", ["source", "outcome"])
FETCHED_BYTES = Counter("newswatch_fetch_bytes_total", "Bytes downloaded (feeds, sitemaps and pages)", ["source"])

# --- clean, alert --------------------------------------------------------------------------------

CLEAN_ARTICLES = Counter(
    "newswatch_clean_articles_total", "Articles by story: new, or an exact or near copy of an earlier one",
    ["kind"])
ALERTS_FIRED = Counter(
    "newswatch_alerts_total", "Alerts published (acknowledged by the broker), by rule and severity",
    ["rule", "severity"])
ALERTS_SUPPRESSED = Counter(
    "newswatch_alerts_suppressed_total", "Rule matches not alerted: the story fired already, or the rule cools down",
    ["rule"])
WEBHOOK_DELIVERIES = Counter(
    "newswatch_webhook_deliveries_total", "Webhook deliveries (one alert to one URL), once each, by outcome",
    ["outcome"])
WEBHOOK_ATTEMPTS = Counter(
    "newswatch_webhook_attempts_total", "Webhook POSTs, retries included, by HTTP status class", ["status_class"])


STORY_LINKS = Counter(
    "newswatch_story_links_total",
    "Articles linked to a story, by outcome: new (starts one), linked (joined by score), copy (clean's copy), "
    "repeat (a redelivered article)", ["outcome"])
STORY_CROSS_LANGUAGE = Counter(
    "newswatch_story_cross_language_links_total", "Articles that brought a new language to an existing story")
STORY_SIZE = Histogram(
    "newswatch_story_size_articles", "Articles in a story when another article joins it",
    buckets=(2, 3, 5, 10, 20, 50, 100, 200, 500, 1000))


def status_class(status: int | None) -> str:
    """``STATUS_CLASSES`` member of an HTTP status (None: no answer)."""
    if status is None or not 200 <= status < 600:
        return "none"
    return f"{status // 100}xx"


# --- creation at zero ----------------------------------------------------------------------------


def init_stage(stage: StageDecl) -> None:
    """Every series of one stage, at zero; its ``newswatch_up`` at 0 until the stage has started."""
    name, source = stage.name, stage.input_label
    MESSAGES_CONSUMED.labels(name, source)
    for kind in FAILURE_KINDS:
        MESSAGES_FAILED.labels(name, source, kind)
    if stage.input is not None:
        DEAD_LETTERED.labels(name, source)
    for topic in stage.outputs:
        MESSAGES_PRODUCED.labels(name, topic.suffix)
        ONCE_SKIPPED.labels(name, topic.suffix)
        if topic is ALERTS:
            FEED_TO_ALERT_SECONDS.labels(name)
    for dep in pipeline.DEPENDENCIES:
        DEPENDENCY_ERRORS.labels(name, dep)
    PROCESSING_SECONDS.labels(name)
    if stage.outputs:
        ARTICLE_AGE_SECONDS.labels(name)
    UP.labels(name).set(0)


def init_service(service: ServiceDecl) -> None:
    for stage in service.stages:
        init_stage(stage)


def init_source(source: str) -> None:
    """fetch: the series of one source (from the sources file, at start)."""
    for outcome, classes in POLL_OUTCOMES.items():
        for cls in classes:
            FETCH_POLLS.labels(source, outcome, cls)
    for outcome in PAGE_OUTCOMES:
        FETCH_PAGES.labels(source, outcome)
    for state in ITEM_STATES:
        FETCH_ITEMS.labels(source, state)
    for reason in REFUSAL_REASONS:
        FETCH_REFUSED.labels(source, reason)
    FETCHED_BYTES.labels(source)
    FETCH_LAST_SUCCESS.labels(source)


def init_rule(rule: str, severity: str) -> None:
    """alert: the series of one rule (when the rules load)."""
    ALERTS_FIRED.labels(rule, severity)
    ALERTS_SUPPRESSED.labels(rule)


def init_stories() -> None:
    for outcome in ("new", "linked", "copy", "repeat"):
        STORY_LINKS.labels(outcome)


def init_clean() -> None:
    for kind in STORY_KINDS:
        CLEAN_ARTICLES.labels(kind)


def init_webhooks() -> None:
    for outcome in WEBHOOK_OUTCOMES:
        WEBHOOK_DELIVERIES.labels(outcome)
    for cls in STATUS_CLASSES:
        WEBHOOK_ATTEMPTS.labels(cls)


# --- recording helpers (one line at each call site) ----------------------------------------------


def dependency_error(stage: str, exc: BaseException) -> None:
    """A transient failure, retried: counted against the dependency it is blamed on (and told to the
    liveness check, which reports a dependency failing for long: ``shared.health``)."""
    blamed = dependency(exc)
    DEPENDENCY_ERRORS.labels(stage, blamed).inc()
    health.dependency_failed(stage, blamed)


def poll(source: str, outcome: str, status: int | None) -> None:
    """fetch: one feed or sitemap poll; a success (ok, unchanged) also sets the source's last success time."""
    FETCH_POLLS.labels(source, outcome, status_class(status)).inc()
    if outcome in ("ok", "unchanged"):
        FETCH_LAST_SUCCESS.labels(source).set(time.time())




# --- consumer lag --------------------------------------------------------------------------------


class LagExporter(threading.Thread):
    """Reads a service's consumer lag every ``interval`` seconds, in its own thread (off the event
    loop), and sets ``newswatch_consumer_lag_messages{stage, topic, partition}``.

    ``read`` returns the lag of each (topic name, partition) of the given topics; a failed read
    keeps the last values (the broker away: the lag is what it was) and counts a broker error
    against each consuming stage."""

    def __init__(self, service: ServiceDecl, prefix: str, interval: float,
                 read: Callable[[list[str]], dict[tuple[str, int], int]]) -> None:
        super().__init__(name=f"newswatch-lag-{service.name}", daemon=True)
        self.stages = {stage.input.name(prefix): (stage.name, stage.input.suffix)
                       for stage in service.stages if stage.input is not None}
        self.interval = interval
        self.read = read
        self.stopped = threading.Event()

    def once(self) -> bool:
        try:
            lag = self.read(list(self.stages))
        except Exception as exc:
            for stage, _ in self.stages.values():
                DEPENDENCY_ERRORS.labels(stage, "broker").inc()
                health.dependency_failed(stage, "broker")
            log.warning("consumer lag not read", extra={"error": repr(exc)[:500]})
            return False
        for stage, _ in self.stages.values():
            health.dependency_ok(stage, "broker")
        for (topic, partition), value in lag.items():
            stage, suffix = self.stages[topic]
            CONSUMER_LAG.labels(stage, suffix, str(partition)).set(value)
        return True

    def run(self) -> None:
        while not self.stopped.is_set():
            self.once()
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()


def serve_metrics(service: ServiceDecl, port: int = 0, host: str = "0.0.0.0",
                  liveness: Liveness | None = None) -> int:
    """Create the service's series at zero and start the HTTP server in a thread (``port`` 0: the
    service's declared port); return the port.

    It serves the metrics on every path but one: ``/healthz`` answers the ``liveness`` verdict
    (200 or 503, JSON; see ``shared/health.py``)."""
    port = port or service.metrics_port
    init_service(service)
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
    return port


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass
