"""`newswatch run`: the whole pipeline on this machine, no Docker.

Starts the embedded broker and Redis (append-only, in the run folder) on local ports, the demo
news sites (unless real sources are given), creates the topics, starts the services declared in
``shared.pipeline`` as processes, and prints every alert as it arrives on the alert topic, as a
user's subscriber would.

Supervision: a service that exits is started again; if the broker dies, the services are
stopped, the broker restarted, the topics created again and the services started again (in
that order: tansu accepts writes to topics it lost, so nothing may write before the topics
exist). The runner is the alert topic's subscriber here and notes every alert it has shown in Redis
(``nw:alert:shown:<alert id>``); an alert the broker acknowledged but that was never shown went down
with the in-memory broker, so before the services start (at start-up, and after a broker restart)
such alerts are re-armed (``rearm_lost_alerts``) and their pages fetched again.

Ctrl-C drains: fetch stops first, then the runner waits (at most ``--drain-seconds``) until every
stage has consumed everything before it and no page is in flight (``redis_store.pages_in_flight``:
published, not done, by any fetch process), then stops the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.text import Text

from newswatch import local
from shared import events, kafka_clients, once, pipeline, redis_store
from shared.settings import Settings
from shared.topics import ALERTS, STORIES, consumer_lag, create_topics


@dataclass
class RunOptions:
    run_dir: Path
    broker_port: int
    redis_port: int
    sites_port: int
    sources: str | None  # None: the demo sites
    rules: str
    pace: float
    poll_seconds: float
    duration: float | None  # stop after this many seconds (None: until Ctrl-C)
    until_alerts: int | None  # stop after this many alerts
    metrics_base_port: int
    drain_seconds: float = 60.0
    alerts_jsonl: Path | None = None  # also append every alert seen, as a JSON line, to this file


async def tail_alerts(settings: Settings, on_alert: Callable[[events.Alert], None], stop: asyncio.Event,
                      on_story: Callable[[events.Story], None] | None = None) -> None:
    """Read the alert topic from its start, calling ``on_alert`` for each alert, until ``stop``; with
    ``on_story``, the stories topic too (each story's state as it changes), in arrival order."""
    names = [ALERTS.name(settings.topic_prefix)] + ([STORIES.name(settings.topic_prefix)] if on_story else [])
    consumer = AIOKafkaConsumer(
        *names, **kafka_clients.client_config(settings), group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False, client_id=f"{settings.topic_prefix}-tail",
        fetch_max_wait_ms=settings.fetch_wait_ms,  # an alert is shown as soon as it is on the broker
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                is_story = tp.topic != names[0]
                for record in records:
                    try:
                        if is_story and on_story is not None:
                            on_story(events.decode(events.Story, record.value))
                        elif not is_story:
                            on_alert(events.decode(events.Alert, record.value))
                    except events.SchemaError as exc:
                        what = "story" if is_story else "alert"
                        Console(stderr=True).print(f"[red]unreadable {what} at offset {record.offset}: {exc}")
    finally:
        await consumer.stop()


def rearm_lost_alerts(client: redis.Redis, shown: set[str]) -> list[str]:
    """Re-arm the alerts that the broker acknowledged but that were never shown; returns their ids.

    Call it only while no alert stage runs and the broker holds none of the alerts sent before
    (the embedded broker just started, empty). For each such alert its once-key is removed and its
    article's URL, if done, is forgotten, so that fetch takes the page again while its feed lists
    it and the alert stage publishes that alert, and only that one, again: the alerts already shown
    keep their once-keys. An alert is shown when its id is in ``shown`` or its
    ``nw:alert:shown:`` key is set. The topic offsets noted by ``shared.once`` are forgotten."""
    rearmed: list[str] = []
    prefix = redis_store.ALERT_SENT_PREFIX
    for raw_key in client.scan_iter(match=prefix + "*", count=500):
        key = redis_store.as_str(raw_key)
        alert_id = key[len(prefix):]
        if alert_id in shown or client.exists(redis_store.alert_shown_key(alert_id)):
            continue
        article = client.get(key)
        article_id = redis_store.as_str(article) if article is not None else ""
        if article_id in ("", "1"):  # a key written before the value named the article: its claim does
            claim = client.get(redis_store.alert_claim_key(alert_id))
            article_id = redis_store.as_str(claim) if claim is not None else ""
        client.delete(key)
        if article_id:
            url_key = redis_store.url_key(article_id)
            state = client.get(url_key)
            if state is not None and redis_store.as_str(state) == redis_store.URL_DONE:
                client.delete(url_key)
        rearmed.append(alert_id)
    # the offsets the publish-once protocol noted are the lost log's: a fresh topic starts again at 0
    stale = list(client.scan_iter(match=once.OFFSETS_PREFIX + "*", count=500))
    if stale:
        client.delete(*stale)
    return rearmed


def story_line(languages: list[str], sources: list[str], articles: int) -> str:
    return (f"story: {articles} article{'s' if articles != 1 else ''} in {', '.join(languages) or 'und'} "
            f"from {len(sources)} source{'s' if len(sources) != 1 else ''}")


def format_alert(alert: events.Alert, elapsed: float | None = None) -> Text:
    line = Text()
    if elapsed is not None:
        line.append(f"[{elapsed:6.1f}s] ", style="dim")
    line.append({"spike": "SPIKE ", "story": "STORY "}.get(alert.kind, "ALERT "), style="bold red")
    if alert.severity != "info":
        line.append(f"{alert.severity.upper()} ", style="bold yellow")
    line.append(f"{alert.rule_id}", style="bold")
    line.append(f" ({alert.rule_name}) ", style="dim")
    line.append(f"[{alert.lang}] ", style="cyan")
    line.append(alert.title or "(untitled)", style="bold white")
    line.append(f"\n          {alert.source} · {alert.url}", style="dim")
    if alert.kind == "spike":
        line.append(f"\n          {alert.article_count} articles from {', '.join(alert.sources)}", style="yellow")
    if alert.kind == "story":
        line.append(f"\n          {alert.snippet}", style="yellow")
    if alert.matched_entities or alert.matched_terms:
        line.append(f"\n          matched: {', '.join(alert.matched_entities + alert.matched_terms)}", style="green")
    if alert.story_articles:
        line.append(f"\n          {story_line(alert.story_languages, alert.story_sources, alert.story_articles)} "
                    f"({alert.story_id})", style="dim")
    return line


class StoryFollower:
    """Follows the stories that alerted: when one grows into a new language or source, a line says so
    (the alert is made once, on the story's first matching article; the story goes on)."""

    def __init__(self) -> None:
        self.alerted: dict[str, list[str]] = {}  # story id → the rules that alerted for it
        self.known: dict[str, tuple[frozenset[str], frozenset[str]]] = {}  # story id → (languages, sources)
        self.latest: dict[str, events.Story] = {}

    def alert(self, alert: events.Alert) -> Text | None:
        self.alerted.setdefault(alert.story_id, []).append(alert.rule_id)
        known = (frozenset(alert.story_languages), frozenset(alert.story_sources))
        self.known[alert.story_id] = known
        story = self.latest.get(alert.story_id)
        return self.story(story) if story is not None else None  # the story grew before the alert was read

    def story(self, story: events.Story) -> Text | None:
        self.latest[story.id] = story
        if story.id not in self.alerted:
            return None
        now = (frozenset(story.languages), frozenset(story.sources))
        before = self.known.get(story.id, (frozenset(), frozenset()))
        if now[0] <= before[0] and now[1] <= before[1]:
            return None
        self.known[story.id] = (before[0] | now[0], before[1] | now[1])
        line = Text("          ↳ ", style="dim")
        line.append(f"{', '.join(self.alerted[story.id])}: ", style="bold")
        line.append(story_line(story.languages, story.sources, story.article_count), style="cyan")
        new = sorted(now[0] - before[0])
        if new:
            line.append(f" (now also in {', '.join(new)})", style="bold cyan")
        return line


def _metrics_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Supervisor:
    """The runner's children: the broker, Redis and one process per declared service."""

    def __init__(self, opts: RunOptions, logs: Path, status: Callable[[str], None]) -> None:
        self.opts = opts
        self.logs = logs
        self.status = status
        self.broker: subprocess.Popen[bytes] | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.env: dict[str, str] = {}
        self.settings: Settings | None = None
        self.restarts: dict[str, list[float]] = {}
        self.shown: set[str] = set()  # ids of the alerts shown by this run (also in Redis, for later runs)
        self.rearmed: set[str] = set()
        self.store: redis.Redis | None = None

    def connect_store(self) -> None:
        assert self.settings is not None
        self.store = redis_store.connect_blocking(self.settings)

    def note_shown(self, alert: events.Alert) -> None:
        """Remember that the alert reached the user (see ``rearm_lost_alerts``)."""
        assert self.settings is not None and self.store is not None
        self.shown.add(alert.id)
        ttl = self.settings.dedup_ttl_days * 86400
        try:
            self.store.set(redis_store.alert_shown_key(alert.id), "1", ex=ttl)
            if alert.id in self.rearmed:
                # re-armed, then read after all from the dead broker's last fetch: not to be sent again
                self.rearmed.discard(alert.id)
                self.store.set(redis_store.alert_sent_key(alert.id), alert.article_id, ex=ttl)
        except redis.RedisError as exc:  # kept in memory for this run; a later run may show it again
            self.status(f"[yellow]could not note alert {alert.id} as shown in Redis: {exc}")

    def rearm_lost_alerts(self) -> None:
        assert self.store is not None
        try:
            rearmed = rearm_lost_alerts(self.store, self.shown)
        except redis.RedisError as exc:
            self.status(f"[yellow]could not look for alerts lost with the broker: {exc}")
            return
        self.rearmed.update(rearmed)
        if rearmed:
            self.status(f"[yellow]{len(rearmed)} alerts the broker held but had not been shown are re-armed: "
                        "their pages are fetched again while their feeds list them")

    def start_broker(self) -> None:
        self.broker = local.start_broker(self.opts.broker_port, self.logs / "broker.log")
        self.write_pids()

    def write_pids(self) -> None:
        """``<run dir>/processes.json``: the pid of every child, for operators (and fault drills)."""
        pids = {"runner": os.getpid(), **({"broker": self.broker.pid} if self.broker else {}),
                **({"redis": self.redis.pid} if self.redis else {}),
                **{name: proc.pid for name, proc in self.services.items()}}
        # written whole then renamed: a reader (an operator's script, a drill) never sees it half written
        target = self.opts.run_dir / "processes.json"
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps(pids, indent=1), "utf-8")
        partial.replace(target)

    def start_services(self) -> None:
        for offset, decl in enumerate(pipeline.SERVICES):
            self.start_service(decl.name, offset)

    def start_service(self, name: str, offset: int | None = None) -> None:
        if name not in self.ports:
            base = self.opts.metrics_base_port
            self.ports[name] = base + (offset or 0) if base else pipeline.service(name).metrics_port
        env = {**self.env, "NEWSWATCH_METRICS_PORT": str(self.ports[name])}
        self.services[name] = local.start_service(name, env, self.logs / f"{name}.log")
        self.write_pids()

    def stop_services(self, names: list[str] | None = None, grace: float = 10.0) -> None:
        chosen = [n for n in (names or list(self.services)) if n in self.services]
        local.stop([self.services.pop(n) for n in reversed(chosen)], grace=grace)

    def all_procs(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in (self.broker, self.redis) if p is not None] + list(self.services.values())

    def restart_broker(self) -> None:
        """After a broker death: services down, broker up, topics created, services up — in that order."""
        assert self.settings is not None
        code = self.broker.returncode if self.broker is not None else None
        self.status(f"[bold red]the broker died (exit code {code}); everything it held is gone. Stopping the "
                    "services, restarting the broker, creating the topics again, restarting the services …")
        self.stop_services(grace=5.0)
        self.rearm_lost_alerts()
        self.start_broker()
        created = create_topics(self.settings)
        self.start_services()
        self.status(f"[yellow]broker restarted, {len(created)} topics created, services restarted; pages not yet "
                    "stored are fetched again while their feeds list them")

    def restart_service(self, name: str) -> bool:
        """Start a service that exited again; False when it keeps dying (5 exits in a minute)."""
        now = time.monotonic()
        recent = [t for t in self.restarts.get(name, []) if now - t < 60] + [now]
        self.restarts[name] = recent
        if len(recent) > 5:
            return False
        code = self.services[name].returncode
        self.status(f"[bold red]{name} exited with code {code}[/bold red]; starting it again "
                    f"(log: {self.logs / (name + '.log')})")
        self.start_service(name)
        return True

    def pages_in_flight(self) -> int:
        """Pages published and not done yet (``redis_store.pages_in_flight``); -1 if Redis does not answer."""
        if self.store is None:
            return 0
        try:
            return sum(redis_store.pages_in_flight(self.store).values())
        except redis.RedisError:
            return -1

    def drain(self, console: Console) -> None:
        """Stop fetch, then wait until every consumer group has read all its input (bounded)."""
        assert self.settings is not None
        if "fetch" in self.services:
            self.stop_services(["fetch"])
        deadline = time.monotonic() + self.opts.drain_seconds
        waiting: dict[str, int] = {}
        while time.monotonic() < deadline:
            if self.broker is None or self.broker.poll() is not None:
                return
            waiting = {}
            for decl in pipeline.SERVICES:
                if not decl.inputs or decl.name not in self.services:
                    continue
                try:
                    lag = consumer_lag(self.settings, decl.group_id(self.settings.topic_prefix),
                                       [t.name(self.settings.topic_prefix) for t in decl.inputs], timeout_s=3.0)
                except Exception as exc:  # a broker answering slowly: try again
                    waiting[decl.name] = -1
                    console.print(f"[dim]  lag of {decl.name} unknown yet: {exc}")
                    continue
                if sum(lag.values()):
                    waiting[decl.name] = sum(lag.values())
            # Every consumer has read its input, but a page may still be in flight: published by a
            # fetch process that is gone (this run's last poll, or a killed run's), not done yet.
            in_flight = self.pages_in_flight()
            if in_flight:
                waiting["pages in flight"] = in_flight
            if not waiting:
                self.status("drained: every stage has processed all its input")
                return
            self.status("draining … " + ", ".join(f"{n}: {'?' if v < 0 else v} waiting" for n, v in waiting.items()))
            time.sleep(1.0)
        self.status(f"[yellow]stopped draining after {self.opts.drain_seconds:.0f} s; still waiting: {waiting} "
                    "(kept in Redis as not done: pages in flight are fetched again at the next run, the "
                    "rest while the feeds list them)")


def run_pipeline(opts: RunOptions) -> int:
    console = Console()
    # The runner's own Kafka clients (the alert tail, lag checks) would print every failed
    # reconnection while the broker restarts; the runner says what happens itself.
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    started = time.monotonic()
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    logs = opts.run_dir / "logs"
    logs.mkdir(exist_ok=True)
    demo_server = None

    def status(message: str) -> None:
        console.print(f"[dim][{time.monotonic() - started:6.1f}s][/dim] {message}")

    sup = Supervisor(opts, logs, status)
    drained = False
    try:
        status(f"starting the tansu broker on 127.0.0.1:{opts.broker_port} (memory storage) …")
        sup.start_broker()
        status(f"starting redis-server on 127.0.0.1:{opts.redis_port} (append-only file in {opts.run_dir / 'redis'}) …")
        sup.redis = local.start_redis(opts.redis_port, opts.run_dir / "redis", logs / "redis.log")
        sup.write_pids()

        sources = opts.sources
        if sources is None:
            from newswatch.demo.server import serve_in_thread, sources_yaml

            demo_server, _ = serve_in_thread("127.0.0.1", opts.sites_port, opts.pace)
            base = f"http://127.0.0.1:{opts.sites_port}"
            sources_file = opts.run_dir / "demo-sources.yaml"
            sources_file.write_text(sources_yaml(base, opts.poll_seconds), "utf-8")
            sources = str(sources_file)
            status(f"demo news sites on {base} (new articles appear over the next "
                   f"~{40 * opts.pace:.0f} s)")

        env = dict(os.environ)
        env.update({
            "NEWSWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{opts.broker_port}",
            "NEWSWATCH_REDIS_URL": f"redis://127.0.0.1:{opts.redis_port}/0",
            "NEWSWATCH_SOURCES": sources,
            "NEWSWATCH_RULES": opts.rules,
            "NEWSWATCH_POLL_SECONDS": str(opts.poll_seconds),
            "NEWSWATCH_METRICS_HOST": "127.0.0.1",
        })
        if opts.sources is None:
            env["NEWSWATCH_ALLOW_HOSTS"] = f"127.0.0.1:{opts.sites_port}"  # the demo sites, and nothing else local
            env.setdefault("NEWSWATCH_HOST_DELAY_SECONDS", "0.2")
        sup.env = env
        settings = sup.settings = Settings.from_env(env)
        sup.connect_store()
        sup.rearm_lost_alerts()  # the broker just started empty: what an earlier run sent but never showed
        created = create_topics(settings)
        status(f"topics ready ({len(created)} created, prefix {settings.topic_prefix!r})")

        sup.start_services()
        status("services: " + ", ".join(f"{n} (metrics :{p})" for n, p in sup.ports.items()))
        status(f"logs in {logs}/; waiting for alerts … (Ctrl-C drains the pipeline and stops everything)")
        code = asyncio.run(_watch(settings, opts, sup, console, started))
        if sup.broker is not None and sup.broker.poll() is None and code == 0:
            status("stopping fetch and draining the pipeline …")
            sup.drain(console)
            drained = True
        return code
    except local.LocalError as exc:
        console.print(f"[bold red]cannot start: {exc}")
        return 1
    except KeyboardInterrupt:
        if not drained and sup.settings is not None and sup.broker is not None and sup.broker.poll() is None:
            status("interrupted while draining: stopping now")
        return 130
    finally:
        status("stopping …")
        if demo_server is not None:
            demo_server.shutdown()
        sup.stop_services()
        local.stop([p for p in (sup.redis, sup.broker) if p is not None])
        status("stopped")


async def _watch(settings: Settings, opts: RunOptions, sup: Supervisor, console: Console, started: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    count = 0
    first_at: float | None = None
    failed = 0
    follower = StoryFollower()

    def on_story(story: events.Story) -> None:
        grew = follower.story(story)
        if grew is not None:
            console.print(grew)

    def on_alert(alert: events.Alert) -> None:
        nonlocal count, first_at
        elapsed = time.monotonic() - started
        count += 1
        if first_at is None:
            first_at = elapsed
        console.print(format_alert(alert, elapsed))
        grew = follower.alert(alert)
        if grew is not None:
            console.print(grew)
        sup.note_shown(alert)
        if opts.alerts_jsonl is not None:
            with opts.alerts_jsonl.open("ab") as out:
                out.write(events.encode(alert) + b"\n")
        if opts.until_alerts and count >= opts.until_alerts:
            stop.set()

    async def supervise() -> None:
        nonlocal failed
        ready: set[str] = set()
        while not stop.is_set():
            if sup.redis is not None and sup.redis.poll() is not None:
                console.print(f"[bold red]redis-server exited with code {sup.redis.returncode}; stopping")
                failed = 1
                stop.set()
                return
            if sup.broker is not None and sup.broker.poll() is not None:
                # On this (the main) thread: children die with the thread that started them (PR_SET_PDEATHSIG).
                sup.restart_broker()
                ready.clear()
                tail_restart.set()
            for name, proc in list(sup.services.items()):
                if proc.poll() is not None:
                    ready.discard(name)
                    if not sup.restart_service(name):
                        console.print(f"[bold red]{name} keeps exiting; stopping (see {sup.logs / (name + '.log')})")
                        failed = 1
                        stop.set()
                        return
            for name, port in sup.ports.items():
                if name not in ready and name in sup.services and _metrics_up(port):
                    ready.add(name)
                    console.print(f"[dim][{time.monotonic() - started:6.1f}s][/dim] [green]✓[/green] {name} up")
            if opts.duration and time.monotonic() - started > opts.duration:
                stop.set()
            await asyncio.sleep(0.5)

    tail_restart = asyncio.Event()

    async def tail() -> None:
        # The alert topic is read again from its start after a broker restart (the new broker starts empty).
        while not stop.is_set():
            tail_restart.clear()
            inner = asyncio.Event()

            async def relay(inner: asyncio.Event = inner) -> None:
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(tail_restart.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                inner.set()

            relay_task = asyncio.create_task(relay())
            try:
                await tail_alerts(settings, on_alert, inner, on_story)
            except Exception as exc:  # the broker went away under the tail: read again once it is back
                console.print(f"[dim]alert tail interrupted ({type(exc).__name__}); reconnecting …")
                await asyncio.sleep(1.0)
            finally:
                relay_task.cancel()

    watcher = asyncio.create_task(supervise())
    with contextlib.suppress(asyncio.CancelledError):
        await tail()
    watcher.cancel()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    summary = {"alerts": count, "first_alert_seconds": round(first_at, 1) if first_at else None,
               "ran_seconds": round(time.monotonic() - started, 1)}
    console.print(f"[bold]{json.dumps(summary)}")
    return failed
