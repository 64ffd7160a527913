"""Liveness: is this service doing its work? Answered at ``/healthz`` beside ``/metrics`` (and by
``newswatch health SERVICE``, the containers' health check).

A service is live when all of these hold:

- its event loop runs: the runtime beats every few seconds (``beat``) once the service is up (a faust
  service: once its consumer and producer have started); no beat for ``NEWSWATCH_STALL_SECONDS``
  fails, whatever the metrics thread still answers;
- no stage task died (``died``: the exception that ended it);
- no consuming stage has input waiting without finishing one for ``NEWSWATCH_STALL_SECONDS``:
  *waiting* is what the broker holds on the partitions this process owns beyond what the stage
  has finished (high watermark minus the next offset to process, from the consumer's fetch
  responses: right on Apache Kafka and on the embedded broker). Idle with nothing waiting is live.

A stage whose every attempt at a dependency (Redis or the broker) has failed for
``NEWSWATCH_DEPENDENCY_SECONDS`` is *degraded*: the answer names the dependency and how long
(``{"ok": true, "status": "degraded", "degraded": ["stage fetch: redis failing for 42 s …"]}``, HTTP
200, ``newswatch health`` exit 0). It is not a failure because restarting the process cannot
help: the dependency is away, and the runtime already waits for it and retries. For the same
reason a stage with input waiting whose dependency is failing is degraded, not stalled. A failure
counts when the runtime counts it (``newswatch_dependency_errors_total``, through
``dependency_failed``); the streak ends at the stage's next success with that dependency (an input
finished, a delivery acknowledged, fetch's heartbeat written, a lag read), or when no attempt has
failed for ``forget_seconds``. Transient "other" failures (the network) are a source's own business
(a feed down) and do not degrade a stage.

The state is written from the event loop (and the lag thread) and read from the HTTP server's
threads: a lock guards it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

STARTING = "starting"
RUNNING = "running"
DIED = "died"

# The dependencies whose failure degrades a stage (``shared.pipeline.DEPENDENCIES`` but "other").
WATCHED_DEPENDENCIES = ("broker", "redis")


@dataclass
class Streak:
    """A dependency failing at every attempt of a stage since ``since``."""

    since: float
    last: float
    failures: int = 1


@dataclass
class StageState:
    name: str
    consuming: bool  # has an input topic
    state: str = STARTING
    error: str = ""
    since: float = 0.0  # when it entered its state
    handled: int = 0  # inputs finished by this process
    last_handled: float = 0.0  # monotonic time of the last one (0: none yet)
    waiting: int | None = None  # inputs waiting on this process's partitions (None: not known yet)
    waiting_since: float = 0.0  # when ``waiting`` last went from nothing to something
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) → next to process
    failing: dict[str, Streak] = field(default_factory=dict)  # dependency → its streak of failures


@dataclass(frozen=True)
class Verdict:
    ok: bool
    problems: list[str]
    body: dict[str, object]

    def json(self) -> bytes:
        return json.dumps(self.body, sort_keys=True).encode("utf-8")


class Liveness:
    def __init__(self, service: str, stall_seconds: float, clock: Callable[[], float] = time.monotonic,
                 dependency_seconds: float = 30.0, forget_seconds: float | None = None) -> None:
        self.service = service
        self.stall_seconds = stall_seconds
        self.dependency_seconds = dependency_seconds
        # A streak with no failure for this long is over (nothing tries the dependency any more):
        # longer than the runtime's longest wait between two retries (NEWSWATCH_RETRY_CAP_SECONDS).
        self.forget_seconds = forget_seconds if forget_seconds is not None else max(2 * dependency_seconds, 90.0)
        self.clock = clock
        self._lock = threading.Lock()
        self._stages: dict[str, StageState] = {}
        self._beat = clock()

    def add(self, stage: str, consuming: bool) -> None:
        with self._lock:
            self._stages[stage] = StageState(stage, consuming, since=self.clock())

    def beat(self) -> None:
        """The event loop is turning (called from a task on it)."""
        with self._lock:
            self._beat = self.clock()

    def _set(self, stage: str, state: str, error: str = "") -> None:
        with self._lock:
            st = self._stages[stage]
            st.state, st.error, st.since = state, error, self.clock()

    def starting(self, stage: str) -> None:
        self._set(stage, STARTING)

    def running(self, stage: str) -> None:
        self._set(stage, RUNNING)

    def died(self, stage: str, exc: BaseException) -> None:
        self._set(stage, DIED, f"{type(exc).__name__}: {exc}"[:500])

    @contextlib.contextmanager
    def watching(self, stage: str) -> Iterator[None]:
        """Around a stage's task: starting on entry; an exception out of it marks the stage died (and
        goes on up). Cancellation (shutdown) is not a death."""
        self.starting(stage)
        try:
            yield
        except Exception as exc:
            self.died(stage, exc)
            raise

    def dependency_failed(self, stage: str, dependency: str) -> None:
        """An attempt of the stage at ``dependency`` failed (transient: it is waited out and retried)."""
        if dependency not in WATCHED_DEPENDENCIES:
            return
        with self._lock:
            st = self._stages.get(stage)
            if st is None:
                return
            now = self.clock()
            streak = st.failing.get(dependency)
            if streak is None or now - streak.last > self.forget_seconds:
                st.failing[dependency] = Streak(now, now)
            else:
                streak.last, streak.failures = now, streak.failures + 1

    def dependency_ok(self, stage: str, *dependencies: str) -> None:
        """The stage's attempt at these dependencies (all when none given) succeeded: their streak is over."""
        with self._lock:
            st = self._stages.get(stage)
            if st is None or not st.failing:
                return
            for dependency in dependencies or tuple(st.failing):
                st.failing.pop(dependency, None)

    def handled(self, stage: str, topic: str, partition: int, offset: int) -> None:
        """The stage finished the input at ``offset`` (its outputs acknowledged, or dead-lettered)."""
        with self._lock:
            st = self._stages[stage]
            st.failing.clear()  # it went through Redis and the broker
            st.handled += 1
            st.last_handled = self.clock()
            key = (topic, partition)
            st.next_offsets[key] = max(st.next_offsets.get(key, 0), offset + 1)

    def observe(self, stage: str, partitions: Iterable[tuple[str, int, int | None, int | None]]) -> None:
        """What the consumer sees for the stage's input: (topic, partition, high watermark, committed
        offset) of each partition this process owns now; None where not known yet. The stage's
        finished offsets are set against them: waiting = high watermark - max(next to process,
        committed) over the partitions whose high watermark is known."""
        with self._lock:
            st = self._stages[stage]
            waiting: int | None = None
            for topic, partition, high, committed in partitions:
                if high is None:
                    continue
                floor = max(st.next_offsets.get((topic, partition), 0), committed or 0)
                waiting = (waiting or 0) + max(0, high - floor)
            if waiting and not st.waiting:
                st.waiting_since = self.clock()
            st.waiting = waiting

    def check(self) -> Verdict:
        now = self.clock()
        problems: list[str] = []
        degraded: list[str] = []
        stages: dict[str, object] = {}
        failing: dict[str, dict[str, object]] = {}
        with self._lock:
            quiet = now - self._beat
            if quiet > self.stall_seconds:
                problems.append(f"the event loop has not beaten for {quiet:.0f} s (blocked, or the service "
                                "never got started: broker unreachable?)")
            for st in self._stages.values():
                progress = max(st.last_handled, st.waiting_since)
                streaks = {dep: streak for dep, streak in st.failing.items()
                           if now - streak.last <= self.forget_seconds}
                for dep, streak in sorted(streaks.items()):
                    failing.setdefault(dep, {})[st.name] = {"seconds": round(now - streak.since, 1),
                                                             "failures": streak.failures}
                    if now - streak.since > self.dependency_seconds:
                        degraded.append(f"stage {st.name}: {dep} failing for {now - streak.since:.0f} s "
                                        f"({streak.failures} attempts failed, none succeeded; waited out and retried)")
                stalled = st.consuming and st.waiting and now - progress > self.stall_seconds
                if st.state == DIED:
                    problems.append(f"stage {st.name} died: {st.error}")
                elif stalled and streaks:  # explained by its dependency: a restart would not help
                    degraded.append(f"stage {st.name} has {st.waiting} inputs waiting and has finished none for "
                                    f"{now - progress:.0f} s, while {' and '.join(sorted(streaks))} fails")
                elif stalled:
                    problems.append(f"stage {st.name} has {st.waiting} inputs waiting and has finished none for "
                                    f"{now - progress:.0f} s ({st.state})")
                stages[st.name] = {
                    "state": st.state,
                    **({"handled": st.handled, "waiting": st.waiting,
                        "seconds_since_handled": round(now - st.last_handled, 1) if st.last_handled else None}
                       if st.consuming else {}),
                    **({"error": st.error} if st.error else {}),
                }
        status = "failing" if problems else "degraded" if degraded else "ok"
        body: dict[str, object] = {"service": self.service, "ok": not problems, "status": status,
                                   "problems": problems, "degraded": degraded, "stall_seconds": self.stall_seconds,
                                   "dependency_seconds": self.dependency_seconds, "stages": stages,
                                   **({"failing": failing} if failing else {})}
        return Verdict(not problems, problems, body)


# The process's liveness, for the code that counts dependency failures (``shared.metrics``) and
# successes without holding it (``install`` is called once by the runtime at start).
_installed: Liveness | None = None


def install(liveness: Liveness | None) -> None:
    global _installed
    _installed = liveness


def dependency_failed(stage: str, dependency: str) -> None:
    if _installed is not None:
        _installed.dependency_failed(stage, dependency)


def dependency_ok(stage: str, *dependencies: str) -> None:
    if _installed is not None:
        _installed.dependency_ok(stage, *dependencies)
