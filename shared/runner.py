"""`newswatch run`: the whole pipeline on this machine, no Docker.

Starts the embedded broker and Redis on local ports, the demo news sites (unless real sources
are given), creates the topics, starts the five services as processes, and prints every alert
as it arrives on the alert topic, as a user's subscriber would. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.text import Text

from shared import events, local
from shared.metrics import DEFAULT_PORTS
from shared.settings import Settings
from shared.topics import ALERTS, create_topics


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


async def tail_alerts(settings: Settings, on_alert: Callable[[events.Alert], None], stop: asyncio.Event) -> None:
    """Read the alert topic from its start, calling ``on_alert`` for each alert, until ``stop``."""
    consumer = AIOKafkaConsumer(
        ALERTS.name(settings.topic_prefix), bootstrap_servers=settings.bootstrap_servers, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False, client_id=f"{settings.topic_prefix}-tail",
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        on_alert(events.decode(events.Alert, record.value))
                    except events.SchemaError as exc:
                        Console(stderr=True).print(f"[red]unreadable alert at offset {record.offset}: {exc}")
    finally:
        await consumer.stop()


def format_alert(alert: events.Alert, elapsed: float | None = None) -> Text:
    line = Text()
    if elapsed is not None:
        line.append(f"[{elapsed:6.1f}s] ", style="dim")
    line.append("ALERT ", style="bold red")
    line.append(f"{alert.rule_id}", style="bold")
    line.append(f" ({alert.rule_name}) ", style="dim")
    line.append(f"[{alert.lang}] ", style="cyan")
    line.append(alert.title or "(untitled)", style="bold white")
    line.append(f"\n          {alert.source} · {alert.url}", style="dim")
    if alert.matched_entities or alert.matched_terms:
        line.append(f"\n          matched: {', '.join(alert.matched_entities + alert.matched_terms)}", style="green")
    return line


def _metrics_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def run_pipeline(opts: RunOptions) -> int:
    console = Console()
    started = time.monotonic()
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    logs = opts.run_dir / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    demo_server = None

    def status(message: str) -> None:
        console.print(f"[dim][{time.monotonic() - started:6.1f}s][/dim] {message}")

    try:
        status(f"starting the tansu broker on 127.0.0.1:{opts.broker_port} …")
        procs.append(local.start_broker(opts.broker_port, logs / "broker.log"))
        status(f"starting redis-server on 127.0.0.1:{opts.redis_port} …")
        procs.append(local.start_redis(opts.redis_port, opts.run_dir / "redis", logs / "redis.log"))

        sources = opts.sources
        if sources is None:
            from services.demo_sites.server import serve_in_thread, sources_yaml

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
            env["NEWSWATCH_ALLOW_PRIVATE_HOSTS"] = "true"  # the demo sites are on 127.0.0.1
            env.setdefault("NEWSWATCH_HOST_DELAY_SECONDS", "0.2")
        settings = Settings.from_env(env)
        created = create_topics(settings)
        status(f"topics ready ({len(created)} created, prefix {settings.topic_prefix!r})")

        ports: dict[str, int] = {}
        for offset, name in enumerate(local.SERVICES):
            port = opts.metrics_base_port + offset if opts.metrics_base_port else DEFAULT_PORTS[name]
            ports[name] = port
            procs.append(local.start_service(name, {**env, "NEWSWATCH_METRICS_PORT": str(port)},
                                             logs / f"{name}.log"))
        status("services: " + ", ".join(f"{n} (metrics :{p})" for n, p in ports.items()))
        status(f"logs in {logs}/; waiting for alerts … (Ctrl-C stops everything)")
        return asyncio.run(_watch(settings, opts, procs, ports, console, started))
    except local.LocalError as exc:
        console.print(f"[bold red]cannot start: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        status("stopping …")
        if demo_server is not None:
            demo_server.shutdown()
        local.stop(list(reversed(procs)))
        status("stopped")


async def _watch(settings: Settings, opts: RunOptions, procs: list[subprocess.Popen[bytes]],
                 ports: dict[str, int], console: Console, started: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    count = 0
    first_at: float | None = None

    def on_alert(alert: events.Alert) -> None:
        nonlocal count, first_at
        elapsed = time.monotonic() - started
        count += 1
        if first_at is None:
            first_at = elapsed
        console.print(format_alert(alert, elapsed))
        if opts.until_alerts and count >= opts.until_alerts:
            stop.set()

    async def supervise() -> None:
        ready: set[str] = set()
        while not stop.is_set():
            for proc in procs:
                if proc.poll() is not None:
                    console.print(f"[bold red]a process exited with code {proc.returncode}: {proc.args!r}")
                    stop.set()
                    return
            for name, port in ports.items():
                if name not in ready and _metrics_up(port):
                    ready.add(name)
                    console.print(f"[dim][{time.monotonic() - started:6.1f}s][/dim] [green]✓[/green] {name} up")
            if opts.duration and time.monotonic() - started > opts.duration:
                stop.set()
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(supervise())
    with contextlib.suppress(asyncio.CancelledError):
        await tail_alerts(settings, on_alert, stop)
    watcher.cancel()
    summary = {"alerts": count, "first_alert_seconds": round(first_at, 1) if first_at else None,
               "ran_seconds": round(time.monotonic() - started, 1)}
    console.print(f"[bold]{json.dumps(summary)}")
    return 0
