"""`newswatch`: run the pipeline, run one service, or try a stage on files without Kafka.

The stage commands call the very functions the services call (clean.service.build_article,
langdetect.service.label, entities.service.tag, alert.rules.match_article).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

app = typer.Typer(help="newswatch: streaming multilingual news monitoring.", no_args_is_help=True,
                  add_completion=False)
rules_app = typer.Typer(help="Alert rules.", no_args_is_help=True)
alerts_app = typer.Typer(help="The alert topic.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
stories_app = typer.Typer(help="Stories: articles of one event, in any language and from any outlet.")
app.add_typer(rules_app, name="rules")
app.add_typer(alerts_app, name="alerts")
app.add_typer(topics_app, name="topics")
app.add_typer(stories_app, name="stories")

JsonlOpt = Annotated[bool, typer.Option("--jsonl", help='Read {"id", "html"|"text", "url"?, "lang"?} lines '
                                                        "on stdin; write one JSON line each, same id, in order.")]


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _records(jsonl: bool, paths: list[Path]) -> Iterator[dict[str, Any]]:
    """Input records: JSON lines on stdin, or one record per file (.html/.htm as HTML, else text)."""
    if jsonl:
        for n, raw in enumerate(sys.stdin.buffer, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield {"id": None, "_error": f"line {n}: byte 0x{raw[exc.start]:02x} is not UTF-8"}
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except RecursionError:  # '[' * 100000: the decoder recurses once per level
                yield {"id": None, "_error": f"line {n}: not JSON: nested too deeply"}
                continue
            except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
                yield {"id": None, "_error": f"line {n}: not JSON: {exc}"}
                continue
            if not isinstance(record, dict) or not ("html" in record or "text" in record):
                yield {"id": record.get("id") if isinstance(record, dict) else None,
                       "_error": f'line {n}: expected an object with "html" or "text"'}
                continue
            yield record
        return
    if not paths:
        raise typer.BadParameter("give files, or --jsonl with JSON lines on stdin")
    for path in paths:
        data = path.read_bytes()
        key = "html" if path.suffix.lower() in {".html", ".htm"} or data.lstrip()[:1] == b"<" else "text"
        yield {"id": str(path), key: data, "url": ""}


def _article(record: dict[str, Any]) -> Any:
    from services.clean.service import build_article
    from shared import events

    if "html" in record:
        body = record["html"] if isinstance(record["html"], bytes) else str(record["html"]).encode("utf-8")
        kind = "text/html"
    else:
        body = record["text"] if isinstance(record["text"], bytes) else str(record["text"]).encode("utf-8")
        kind = "text/plain; charset=utf-8"
    page = events.RawPage(id=str(record.get("id")), url=record.get("url") or "", final_url=record.get("url") or "",
                          source="cli", fetched_at=time.time(), http_status=200, content_type=kind, body=body,
                          lang_hint=record.get("lang") or "")
    return build_article(page)


def _each(jsonl: bool, paths: list[Path], fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    failed = 0
    for record in _records(jsonl, paths):
        if "_error" in record:
            _emit({"id": record["id"], "error": record["_error"]})
            failed += 1
            continue
        try:
            _emit({"id": record.get("id"), **fn(record)})
        except Exception as exc:  # report per record and go on: one bad page must not stop a batch
            _emit({"id": record.get("id"), "error": f"{type(exc).__name__}: {exc}"})
            failed += 1
    if failed:
        raise typer.Exit(code=1)


@app.command()
def extract(paths: Annotated[list[Path] | None, typer.Argument(help="HTML pages or text dumps")] = None,
            jsonl: JsonlOpt = False) -> None:
    """Article text and metadata of pages (JSON out)."""
    def one(record: dict[str, Any]) -> dict[str, Any]:
        article = _article(record)
        return {k: v for k, v in msgspec.to_builtins(article).items() if k not in {"schema", "id"}}
    _each(jsonl, paths or [], one)


@app.command()
def langdetect(paths: Annotated[list[Path] | None, typer.Argument(help="HTML pages or text dumps")] = None,
               jsonl: JsonlOpt = False,
               raw: Annotated[bool, typer.Option(help="Label the text as given (no extraction)")] = False) -> None:
    """Language of pages: lang (ISO 639-1 or und), confidence, script, segments."""
    from services.langdetect.detect import detect_document

    def one(record: dict[str, Any]) -> dict[str, Any]:
        if raw and "text" in record:
            text = record["text"].decode("utf-8") if isinstance(record["text"], bytes) else str(record["text"])
            title = ""
        else:
            article = _article(record)
            text, title = article.text, article.title
        found = detect_document(text, title)
        return {"lang": found.lang, "confidence": found.confidence, "script": found.script,
                "title_lang": found.title_lang,
                "segments": [{"start": s.start, "end": s.end, "lang": s.lang, "confidence": s.confidence}
                             for s in found.segments]}
    _each(jsonl, paths or [], one)


@app.command()
def entities(paths: Annotated[list[Path] | None, typer.Argument(help="HTML pages or text dumps")] = None,
             jsonl: JsonlOpt = False) -> None:
    """People, places and organisations of pages, linked to canonical ids."""
    from services.entities.kb import load_table
    from services.entities.match import Matcher
    from services.entities.service import tag

    matcher = Matcher(load_table())

    def one(record: dict[str, Any]) -> dict[str, Any]:
        article = _article(record)
        return {"title": article.title,
                "entities": [msgspec.to_builtins(e) for e in tag(matcher, article.title, article.text)]}
    _each(jsonl, paths or [], one)


def _published_at(value: Any, default: float) -> float:
    """Epoch seconds of an ISO 8601 ``published`` (naive: UTC), or ``default`` when absent or unreadable."""
    from datetime import UTC, datetime

    if not value:
        return default
    try:
        when = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return default
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@stories_app.callback(invoke_without_command=True)
def stories(ctx: typer.Context,
            jsonl: Annotated[bool, typer.Option(
                "--jsonl", help='Read {"id", "text", "title"?, "lang"?, "published"?, "url"?, "source"?} lines on '
                                'stdin, in order; write {"id", "story_id", "outcome", "score", "lang", ...} lines, '
                                "in order")] = False,
            use_redis: Annotated[bool, typer.Option(
                "--redis", help="Link into the services' index in Redis (NEWSWATCH_REDIS_URL), not a fresh "
                                "in-memory one")] = False) -> None:
    """Link articles into stories as the stories stage does (language ID, entities, encoder, index)."""
    if ctx.invoked_subcommand is not None:
        return
    if not jsonl:
        typer.echo(ctx.get_help())
        raise typer.Exit(code=2)
    import asyncio

    from services.entities.ner import Recognisers
    from services.entities.service import tag_labelled, watched_tagger
    from services.langdetect.service import label
    from services.stories.encoder import Encoder
    from services.stories.stage import Linker
    from services.stories.store import MemoryStoryStore, RedisStoryStore
    from shared import events, redis_store
    from shared.settings import Settings

    settings = Settings.from_env()
    tagger = watched_tagger(settings.entity_table, settings.watchlist)
    recognisers = Recognisers(settings.ner_language_list)
    encoder = Encoder(settings.story_embed_chars)

    async def main() -> int:
        client = redis_store.connect(settings) if use_redis else None
        store = RedisStoryStore(client, settings) if client is not None else MemoryStoryStore(settings)
        linker = Linker(store, encoder, settings)
        failed = 0
        now = time.time()
        for n, raw in enumerate(sys.stdin.buffer, 1):
            if not raw.strip():
                continue
            record: Any = None
            try:
                record = json.loads(raw.decode("utf-8"))
                if not isinstance(record, dict) or not isinstance(record.get("text"), str) or "id" not in record:
                    raise ValueError('expected an object with "id" and "text"')
                title = str(record.get("title") or "")
                article = events.Article(id=str(record["id"]), url=str(record.get("url") or ""),
                                         source=str(record.get("source") or record.get("url") or "cli"),
                                         fetched_at=_published_at(record.get("published"), now), title=title,
                                         text=record["text"], published=str(record.get("published") or ""))
                language = label(article).language
                if record.get("lang"):
                    language = events.Language(lang=str(record["lang"]), confidence=1.0, script=language.script,
                                               title_lang=str(record["lang"]), segments=language.segments)
                tagged = tag_labelled(tagger.value, recognisers,
                                      events.LabelledArticle(id=article.id, article=article, language=language))
                linked, _ = await linker.assign(tagged, linker.embed(tagged))
                _emit({"id": record["id"], "story_id": linked.story.id, "outcome": linked.story.outcome,
                       "score": linked.story.score, "lang": linked.language.lang,
                       "story_languages": linked.story.languages, "story_articles": linked.story.article_count})
            except Exception as exc:  # one bad line is reported and the rest go on, in order
                failed += 1
                rid = record.get("id") if isinstance(record, dict) else None
                _emit({"id": rid, "error": f"line {n}: {type(exc).__name__}: {exc}"})
        if client is not None:
            await client.aclose()
        return failed

    if asyncio.run(main()):
        raise typer.Exit(code=1)


@stories_app.command("top")
def stories_top(since: Annotated[str, typer.Option(help="Stories seen since: 15m, 6h, 1d or an ISO 8601 time")] = "6h",
                limit: Annotated[int, typer.Option(help="How many stories")] = 10,
                as_json: Annotated[bool, typer.Option("--json", help="One JSON story a line")] = False) -> None:
    """The biggest stories now (from the index in Redis), with their languages and sources."""
    import asyncio

    from rich.console import Console

    from services.stories.store import RedisStoryStore
    from shared import redis_store
    from shared.settings import Settings

    settings = Settings.from_env()
    start = parse_since(since, time.time())

    async def main() -> list[Any]:
        client = redis_store.connect(settings)
        try:
            found = await RedisStoryStore(client, settings).recent(start, 20_000)
        finally:
            await client.aclose()
        return sorted(found, key=lambda s: (-s.article_count, -len(s.languages), -s.last_seen))[:limit]

    top = asyncio.run(main())
    console = Console()
    for story in top:
        row = {"id": story.id, "articles": story.article_count, "languages": story.languages,
               "sources": story.sources, "first_seen": story.first_seen, "last_seen": story.last_seen,
               "titles": story.titles}
        if as_json:
            _emit(row)
            continue
        title = next(iter(story.titles.values()), "(untitled)")
        console.print(f"[bold]{story.article_count:>4}[/bold] articles · [cyan]{', '.join(story.languages) or 'und'}"
                      f"[/cyan] · {len(story.sources)} sources · [bold white]{title}[/bold white] [dim]({story.id})")
    if not top and not as_json:
        console.print(f"no story seen since {since}")


def _load_rules_or_exit(path: Path) -> Any:
    from services.alert.rules import RuleError, RuleSet, load_rules

    try:
        return RuleSet(load_rules(str(path)))
    except RuleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


@rules_app.command("check")
def rules_check(rules: Annotated[Path, typer.Argument(help="rules YAML")]) -> None:
    """Validate a rules file: exit 0 and a summary, or exit 2 with the rule, the place and what was expected."""
    ruleset = _load_rules_or_exit(rules)
    spikes = sum(1 for r in ruleset.rules if r.spike is not None)
    typer.echo(f"{rules}: {len(ruleset)} rules ok ({spikes} spike rules; {len(ruleset.always)} checked on "
               "every article)")


@rules_app.command("test")
def rules_test(rules: Annotated[Path, typer.Argument(help="rules YAML")],
               articles: Annotated[list[Path] | None, typer.Argument(help="HTML pages or text dumps")] = None,
               jsonl: JsonlOpt = False) -> None:
    """Which rules articles match, through what the services run: extract, langdetect, entities (table,
    NER, linker, watchlist: NEWSWATCH_ENTITY_TABLE, NEWSWATCH_WATCHLIST, NEWSWATCH_NER_LANGUAGES)."""
    from services.alert.rules import match_article
    from services.entities.ner import Recognisers
    from services.entities.service import tag_labelled, watched_tagger
    from services.langdetect.service import label
    from shared.settings import Settings

    ruleset = _load_rules_or_exit(rules)
    settings = Settings.from_env()
    tagger = watched_tagger(settings.entity_table, settings.watchlist).value
    recognisers = Recognisers(settings.ner_language_list)

    def one(record: dict[str, Any]) -> dict[str, Any]:
        tagged = tag_labelled(tagger, recognisers, label(_article(record)))
        return {"matches": [{"rule": m.rule.id, "terms": m.terms, "entities": m.entities}
                            for m in match_article(ruleset, tagged)]}
    _each(jsonl, articles or [], one)


@app.command()
def service(name: Annotated[str, typer.Argument(help="fetch, clean, langdetect, entities or alert")]) -> None:
    """Run one service (what each container runs). Configured by NEWSWATCH_* variables."""
    import importlib

    from shared.pipeline import SERVICE_NAMES

    if name not in SERVICE_NAMES:
        raise typer.BadParameter(f"unknown service {name!r}; one of {', '.join(SERVICE_NAMES)}")
    importlib.import_module(f"services.{name}.service").main()


@app.command()
def health(name: Annotated[str, typer.Argument(help="fetch, clean, langdetect, entities or alert")],
           port: Annotated[int, typer.Option(help="Its metrics port (0: NEWSWATCH_METRICS_PORT, else the "
                                                  "service's default)")] = 0,
           timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer")] = 5.0) -> None:
    """Liveness of a running service (the containers' health check): exit 0 when it is consuming (or has
    nothing waiting), 1 with the reason when a stage has had input waiting without finishing any for
    NEWSWATCH_STALL_SECONDS, a stage died, its event loop is blocked, or it does not answer. A stage whose
    Redis or broker has failed at every attempt for NEWSWATCH_DEPENDENCY_SECONDS is printed "degraded",
    naming the dependency, and exits 0: restarting it would not bring the dependency back."""
    import urllib.error
    import urllib.request

    from shared.pipeline import SERVICE_NAMES
    from shared.pipeline import service as declared
    from shared.settings import Settings

    if name not in SERVICE_NAMES:
        raise typer.BadParameter(f"unknown service {name!r}; one of {', '.join(SERVICE_NAMES)}")
    settings = Settings.from_env()
    port = port or settings.metrics_port or declared(name).metrics_port
    host = settings.metrics_host if settings.metrics_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: not live, and why
        body = json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        body = {"service": name, "ok": False, "problems": [f"{url} does not answer: {exc}"]}
    if body.get("service") not in (None, name):
        body = {**body, "ok": False, "problems": [f"port {port} is {body.get('service')}'s, not {name}'s"]}
    _emit(body)
    if not body.get("ok"):
        raise typer.Exit(code=1)


@topics_app.command("create")
def topics_create() -> None:
    """Create the pipeline's topics (idempotent): the admin step run before the services."""
    from shared.logs import setup_logging
    from shared.settings import Settings
    from shared.topics import create_topics

    settings = Settings.from_env()
    setup_logging("topics", settings.log_level, settings.log_format)
    created = create_topics(settings, timeout_s=120)
    typer.echo(json.dumps({"created": created}))


_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def parse_since(value: str, now: float) -> float:
    """Epoch seconds of ``--since``: a duration ago (90s, 15m, 2h, 1d) or an ISO 8601 time."""
    import re
    from datetime import UTC, datetime

    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value.strip())
    if found:
        return now - float(found.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2)]
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"--since {value!r}: expected a duration (15m, 2h, 1d) or an ISO 8601 time") from exc
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def alert_filter(rules: list[str], severity: str | None, since: float | None) -> Callable[[Any], bool]:
    """Whether an alert passes ``alerts tail``'s filters (rule ids, minimum severity, created since)."""
    if severity is not None and severity not in _SEVERITY_RANK:
        raise typer.BadParameter(f"--severity {severity!r}: one of info, warning, critical")
    floor = _SEVERITY_RANK.get(severity or "info", 0)

    def keep(alert: Any) -> bool:
        return ((not rules or alert.rule_id in rules) and _SEVERITY_RANK.get(alert.severity, 0) >= floor
                and (since is None or alert.created_at >= since))
    return keep


@alerts_app.command("tail")
def alerts_tail(as_json: Annotated[bool, typer.Option("--json", help="One JSON alert a line")] = False,
                stories: Annotated[bool, typer.Option(
                    "--stories", help="With --json: also a {\"story_update\": …} line when an alerted story grows "
                                      "into a new language or source (the text output always shows it)")] = False,
                rule: Annotated[list[str] | None, typer.Option("--rule", help="Only this rule (repeatable)")] = None,
                severity: Annotated[str | None, typer.Option(help="At least this severity: info, warning, "
                                                                   "critical")] = None,
                since: Annotated[str | None, typer.Option(help="Only alerts made since: 15m, 2h, 1d or an ISO "
                                                                "8601 time")] = None) -> None:
    """Print alerts as they arrive (from the start of the topic), filtered."""
    import asyncio
    import signal

    from rich.console import Console

    from newswatch.runner import StoryFollower, format_alert, tail_alerts
    from shared import events
    from shared.settings import Settings

    console = Console()
    keep = alert_filter(rule or [], severity, parse_since(since, time.time()) if since else None)

    follower = StoryFollower()

    def show(alert: events.Alert) -> None:
        if not keep(alert):
            return
        if as_json:
            sys.stdout.write(events.encode(alert).decode() + "\n")
            sys.stdout.flush()
            follower.alert(alert)
        else:
            console.print(format_alert(alert))
            grew = follower.alert(alert)
            if grew is not None:
                console.print(grew)

    def on_story(story: events.Story) -> None:
        grew = follower.story(story)
        if grew is None:
            return
        if as_json:  # the alerted story grew: its state, as a line of its own
            sys.stdout.write(json.dumps({"story_update": msgspec.to_builtins(story),
                                         "rules": follower.alerted.get(story.id, [])}, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            console.print(grew)

    async def main() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await tail_alerts(Settings.from_env(), show, stop, on_story if stories or not as_json else None)

    asyncio.run(main())


@app.command()
def replay(
    source: Annotated[str | None, typer.Option(help="Source id (default: every source)")] = None,
    since: Annotated[str | None, typer.Option(help="Fetched at or after: ISO 8601 (UTC) or epoch seconds")] = None,
    until: Annotated[str | None, typer.Option(help="Fetched before: ISO 8601 (UTC) or epoch seconds")] = None,
    idle_seconds: Annotated[float, typer.Option(help="Stop reading after this long without a message")] = 3.0,
) -> None:
    """Send raw pages from the raw-pages topic through clean and the rest again (nothing alerts twice)."""
    from newswatch.replay import parse_when
    from newswatch.replay import replay as run_replay
    from shared.settings import Settings

    try:
        start, end = parse_when(since, 0.0), parse_when(until, time.time())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    result = run_replay(Settings.from_env(), source, start, end, idle_seconds=idle_seconds)
    _emit({"read": result.read, "replayed": result.replayed, "undecodable": result.skipped_undecodable,
           "source": source, "since": start, "until": end})


@app.command()
def run(
    sources: Annotated[str | None, typer.Option(help="Sources YAML (default: the demo news sites)")] = None,
    rules: Annotated[str, typer.Option(help="Rules YAML")] = "config/rules.yaml",
    run_dir: Annotated[Path, typer.Option(help="Logs and Redis files")] = Path(".run"),
    broker_port: Annotated[int, typer.Option(help="0 = a free port")] = 19092,
    redis_port: Annotated[int, typer.Option(help="0 = a free port")] = 16379,
    sites_port: Annotated[int, typer.Option(help="Demo sites port; 0 = a free port")] = 8808,
    metrics_base_port: Annotated[int, typer.Option(help="Metrics ports start here (0 = 9301…9305)")] = 0,
    pace: Annotated[float, typer.Option(help="Demo publication pace: 0.5 = twice as fast")] = 1.0,
    poll_seconds: Annotated[float, typer.Option(help="Seconds between polls of a feed")] = 3.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds")] = None,
    until_alerts: Annotated[int | None, typer.Option(help="Stop after this many alerts")] = None,
    drain_seconds: Annotated[float, typer.Option(help="On stop, wait at most this long for every stage to "
                                                      "catch up")] = 60.0,
    alerts_jsonl: Annotated[Path | None, typer.Option(help="Also append every alert, as a JSON line, "
                                                           "to this file")] = None,
) -> None:
    """Run the whole pipeline here: broker, Redis, demo sites, five services; print alerts live."""
    from newswatch.local import free_port
    from newswatch.runner import RunOptions, run_pipeline

    code = run_pipeline(RunOptions(
        run_dir=run_dir, broker_port=broker_port or free_port(), redis_port=redis_port or free_port(),
        sites_port=sites_port or free_port(), sources=sources, rules=rules, pace=pace,
        poll_seconds=poll_seconds, duration=duration, until_alerts=until_alerts,
        metrics_base_port=metrics_base_port, drain_seconds=drain_seconds,
        alerts_jsonl=alerts_jsonl,
    ))
    raise typer.Exit(code=code)


@app.command()
def demo_sites(port: Annotated[int, typer.Option()] = 8808, host: Annotated[str, typer.Option()] = "127.0.0.1",
               pace: Annotated[float, typer.Option()] = 1.0) -> None:
    """Serve the demo news sites (what `run` starts by itself)."""
    from newswatch.demo.server import make_server, sources_yaml

    server, _ = make_server(host, port, pace)
    typer.echo(f"demo sites on http://{host}:{port}; sources file:\n" + sources_yaml(f"http://{host}:{port}", 60))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()


@app.command()
def settings() -> None:
    """Every NEWSWATCH_* variable, its current value (passwords hidden) and what it does."""
    from shared.settings import ENV_VARS, env, shown

    for var in ENV_VARS:
        typer.echo(f"{var.name}={shown(var.name, env(var.name))}    # {var.doc}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
