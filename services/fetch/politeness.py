"""Fetching politely and safely.

Safety (SSRF, hostile servers):

- every connection httpcore opens goes through ``PinnedBackend``: the host is resolved once, every
  address it resolves to is checked, and the connection is made to that very address (no second
  look-up, so no DNS rebinding); TLS keeps the host name for SNI and the Host header stays the URL's.
  This holds for every redirect hop, which is followed by hand (at most ``MAX_REDIRECTS``);
- loopback, private, link-local (169.254.169.254, the cloud metadata address), multicast, reserved
  and unspecified addresses are refused, in any spelling (IPv4-mapped IPv6 included), unless the
  host[:port] is named in ``NEWSWATCH_ALLOW_HOSTS`` (demos and tests);
- an overall deadline per request (connect, headers and the whole body; a server trickling a byte
  every second ends there), besides connect/read timeouts; the host's slot is released
  however the request ends;
- a Content-Type check (text, XML, JSON, or none), the body capped at ``max_bytes`` both as sent and
  after gzip/deflate decoding (decoded by hand, ``max_length`` bounded: a gzip bomb never expands
  past the cap in memory), a Content-Length over the cap refused before reading.

Politeness: robots.txt read as RFC 9309 says (``RobotsRules``: protego's matcher, the group of our
product token), checked on the normalised URL (dot segments removed: the URL fetched is the URL
checked), cached in Redis (``nw:fetch:robots:<origin>``, 1 h; 5 min when it could not be read,
meanwhile everything on the origin waits), its Crawl-delay honoured (up to ``MAX_CRAWL_DELAY``);
per host at most ``host_concurrency`` requests at once and at least the host delay between two
request starts, held across replicas by a Redis reservation (``nw:fetch:host:<host>``, atomic in Lua).

robots.txt (RFC 9309), what fetch does with each answer of ``/robots.txt``:

| answer                                          | rules                                                      |
|-------------------------------------------------|------------------------------------------------------------|
| 2xx                                             | its first ``ROBOTS_MAX_BYTES`` (500 KiB) parsed, the rest  |
|                                                 | ignored, whatever its Content-Type                         |
| 3xx                                             | followed, up to 5 hops (each hop checked like any request);|
|                                                 | more: as if unavailable                                    |
| 4xx but 429 ("unavailable", 2.3.1.3)            | everything allowed                                         |
| 429, 5xx, network error, timeout ("unreachable",| everything disallowed, then asked again: after             |
| 2.3.1.4)                                        | ``ROBOTS_TROUBLE_TTL_SECONDS`` (429/5xx: the server is     |
|                                                 | there and says it is in trouble), after                    |
|                                                 | ``ROBOTS_UNREACHABLE_TTL_SECONDS`` when nothing answered   |
|                                                 | (a server still starting, a network blip); pages wait      |
|                                                 | (retried), feeds wait until it is asked again              |

429 is a 4xx, but it asks the crawler to slow down: reading it as "no robots.txt, everything
allowed" would crawl hardest the server that asked for less.

A ``FetchError`` is ``permanent`` when retrying cannot help (robots.txt disallows, size cap,
refused address or content type, too many redirects, a response head h11 refuses: over 16 KiB,
too many or malformed headers); a network error, a timeout, the deadline, a connection closed
early and a robots.txt answering 429/5xx (or not at all) are not."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import posixpath
import re
import select
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpcore
import httpx
import redis.asyncio as aioredis
from protego import Protego

MAX_REDIRECTS = 5
ROBOTS_TTL_SECONDS = 3600.0
ROBOTS_TROUBLE_TTL_SECONDS = 300.0  # a robots.txt answering 429/5xx is asked again this soon
ROBOTS_UNREACHABLE_TTL_SECONDS = 30.0  # one that did not answer at all, this soon
ROBOTS_LOCAL_SECONDS = 60.0  # a parsed robots.txt is kept in memory this long before Redis is asked again
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 2.5: a crawler must read at least 500 KiB of a robots.txt
ROBOTS_UNREACHABLE = 0  # the status noted for a robots.txt that did not answer (network error, timeout)
MAX_CRAWL_DELAY = 60.0  # a larger Crawl-delay is read as this
KEEPALIVE_SECONDS = 30.0  # an idle connection is kept this long (a feed polled every minute or less reuses it)

Resolver = Callable[[str, int], Awaitable[list[str]]]


class FetchError(RuntimeError):
    """A URL that could not be fetched; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after  # seconds after which trying again can help (None: not known)


class RefusedAddress(FetchError):
    """A host that resolves to an address fetch must not reach."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


@dataclass
class Response:
    url: str  # final URL, after redirects
    status: int
    content_type: str
    body: bytes
    etag: str = ""
    last_modified: str = ""
    location: str = ""  # redirect target, when status is 3xx
    retry_after: str = ""  # the Retry-After header, as sent (read with shared.retry.parse_retry_after)


# --- addresses -------------------------------------------------------------------------------------

def parse_allow_hosts(value: str | Iterable[str]) -> frozenset[tuple[str, int | None]]:
    """``"localhost:8808, 127.0.0.1:9000, demo.test"`` → {(host, port or None)}; IPv6 as ``[::1]:80``."""
    entries = value.split(",") if isinstance(value, str) else list(value)
    out: set[tuple[str, int | None]] = set()
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        parts = urlsplit("//" + entry)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"NEWSWATCH_ALLOW_HOSTS: bad port in {raw.strip()!r}") from exc
        if not parts.hostname:
            raise ValueError(f"NEWSWATCH_ALLOW_HOSTS: no host in {raw.strip()!r}")
        out.add((parts.hostname, port))
    return frozenset(out)


def is_public(address: str) -> bool:
    """True for an address on the public internet (IPv4-mapped and 6to4/Teredo forms judged by their IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not is_public(str(embedded)):
            return False
    return bool(ip.is_global) and not ip.is_multicast


async def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class AddressPolicy:
    """Which (host, port) fetch may connect to, and at which address."""

    def __init__(self, allow_hosts: str | Iterable[str] = "", resolver: Resolver | None = None) -> None:
        self.allow = parse_allow_hosts(allow_hosts)
        self.resolver = resolver or system_resolver

    def allowed_by_name(self, host: str, port: int) -> bool:
        host = host.lower().strip("[]")
        return (host, port) in self.allow or (host, None) in self.allow

    def check_literal(self, host: str, port: int, url: str) -> None:
        """Refuse at once a URL whose host is an address fetch must not reach (no look-up, no connection)."""
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return  # a name: checked when the connection is made
        if not self.allowed_by_name(host, port) and not is_public(host):
            raise RefusedAddress(f"refused {url}: {host} is not a public address")

    async def pick(self, host: str, port: int) -> str:
        """The address to connect to: resolved once, every address checked; raises RefusedAddress."""
        addresses = await self.resolver(host.strip("[]"), port)
        if not addresses:
            raise FetchError(f"cannot resolve {host}: no address")
        if not self.allowed_by_name(host, port):
            for address in addresses:
                if not is_public(address):
                    raise RefusedAddress(f"refused {host}:{port}: it resolves to non-public address {address}")
        return addresses[0]


def socket_readable(sock: socket.socket | None) -> bool:
    """Whether an idle connection's socket has something to read (the server closed it, or sent
    something unasked): then the connection cannot be reused."""
    if sock is None or sock.fileno() == -1:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's anyio stream with a cheap "is_readable": httpcore asks it of every idle connection
    before reusing it, and anyio answers by building its whole attribute table (~0.4 ms, as much as
    the rest of a keep-alive request); the socket is looked up once here instead."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self.inner = inner
        self.sock: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        return _Stream(await self.inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return socket_readable(self.sock)
        return self.inner.get_extra_info(info)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to the address ``AddressPolicy.pick`` checked."""

    def __init__(self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()
        self.connected: list[tuple[str, int]] = []  # (address, port) of every connection opened (tests read it)

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        address = await self.policy.pick(host, port)
        self.connected.append((address, port))
        return _Stream(await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress(f"refused unix socket {path}")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


# What httpcore raises for a request that failed on the network or the protocol (no common base).
HTTP_ERRORS: tuple[type[Exception], ...] = (
    httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
    httpcore.ProxyError, httpcore.LocalProtocolError, httpcore.RemoteProtocolError,
)


# What h11 says of a response head it will not read, which the server sends the same every time: a
# header line or a head over its 16 KiB limit ("Receive buffer too long"; 10,000 headers or one of
# 1 MB), or too many or malformed header lines. Retrying such a server 8 times is 8 times for nothing.
_SAME_EVERY_TIME = re.compile(r"receive buffer too long|too many header|header.*too (long|large)|"
                              r"illegal header|invalid header", re.IGNORECASE)


def answers_the_same(exc: BaseException) -> bool:
    """Whether a protocol error is the server's answer itself (final), not a connection's accident
    (a server that closed the connection early, an interrupted read: retried)."""
    return isinstance(exc, httpcore.RemoteProtocolError) and bool(_SAME_EVERY_TIME.search(str(exc)))


@dataclass
class _Origin:
    pool: httpcore.AsyncConnectionPool
    busy: int = 0


class PinnedTransport:
    """httpcore connection pools, one small pool per origin, every connection through
    ``PinnedBackend``.

    Why httpcore (httpx's own HTTP engine) and not an ``httpx.AsyncClient`` over it: fetch
    follows redirects, decodes bodies, applies timeouts and checks every hop itself, so the client
    layer (request and response models, auth, cookies, redirects, hooks) was pure cost: ~0.3 ms of
    the ~1.7 ms of CPU a feed poll costs. Why a pool per origin: httpcore's pool scans all its
    connections for every request, which with thousands of hosts in one pool costs more than the
    requests themselves. At most ``max_origins`` pools are kept; the least recently used idle ones
    are closed beyond that."""

    def __init__(self, policy: AddressPolicy, per_origin: int = 4, max_origins: int = 2000) -> None:
        self.policy = policy
        self.per_origin = per_origin
        self.max_origins = max_origins
        self.ssl_context = httpx.create_ssl_context()  # one context: building one costs ~40 ms
        self.backend = PinnedBackend(policy)
        self._origins: dict[tuple[bytes, bytes, int | None], _Origin] = {}

    def _origin(self, key: tuple[bytes, bytes, int | None]) -> _Origin:
        origin = self._origins.pop(key, None)
        if origin is None:
            origin = _Origin(httpcore.AsyncConnectionPool(
                ssl_context=self.ssl_context, max_connections=self.per_origin,
                max_keepalive_connections=self.per_origin, keepalive_expiry=KEEPALIVE_SECONDS,
                http1=True, http2=False, network_backend=self.backend))
        self._origins[key] = origin  # most recently used last
        return origin

    async def _evict(self) -> None:
        for key in list(self._origins):
            if len(self._origins) <= self.max_origins:
                break
            if not self._origins[key].busy:
                await self._origins.pop(key).pool.aclose()

    @contextlib.asynccontextmanager
    async def stream(self, url: str, headers: dict[str, str], timeout: float,
                     trace: Callable[[str, dict[str, Any]], Awaitable[None]]) -> AsyncIterator[httpcore.Response]:
        """A GET of ``url`` with ``headers`` (the Host header added), its response streamed."""
        parsed = httpx.URL(url)  # IDNA host, percent-encoded path and query: what goes on the wire
        key = (parsed.raw_scheme, parsed.raw_host, parsed.port)
        origin = self._origin(key)
        if len(self._origins) > self.max_origins:
            await self._evict()
        request = httpcore.Request(
            b"GET", httpcore.URL(scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port,
                                 target=parsed.raw_path),
            headers=[(b"host", parsed.netloc),
                     *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())],
            extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout},
                        "trace": trace})
        origin.busy += 1
        try:
            response = await origin.pool.handle_async_request(request)
            try:
                yield response
            finally:
                await response.aclose()
        finally:
            origin.busy -= 1

    async def aclose(self) -> None:
        origins, self._origins = list(self._origins.values()), {}  # requests still ending may add to it
        for origin in origins:
            await origin.pool.aclose()


def header(response: httpcore.Response, name: bytes) -> str:
    """A response header's value ("" when absent); ``name`` in lower case."""
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


# --- URLs ------------------------------------------------------------------------------------------

_ENCODED_DOT = re.compile("%2e", re.IGNORECASE)


@functools.lru_cache(maxsize=65536)
def normalise_path(url: str) -> str:
    """The URL with ``.``/``..`` segments resolved (RFC 3986 5.2.4), the form the request goes out in."""
    parts = urlsplit(url)
    path = _ENCODED_DOT.sub(".", parts.path or "/")  # %2e is a dot (RFC 3986 6.2.2.2)
    if "." in path:
        trailing = path.endswith(("/", "/.", "/.."))
        path = posixpath.normpath(path)
        path = "/" + path.lstrip("/")
        if trailing and path != "/":
            path += "/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def check_url(url: str, policy: AddressPolicy) -> tuple[str, int]:
    """(host, port) of an http(s) URL fetch may ask for; raises FetchError (permanent)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise FetchError(f"refused scheme {parts.scheme!r} in {url}", permanent=True)
    if parts.username or parts.password:
        raise FetchError(f"refused credentials in URL {url}", permanent=True)
    host = parts.hostname
    if not host:
        raise FetchError(f"no host in URL {url}", permanent=True)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise FetchError(f"bad port in {url}", permanent=True) from exc
    policy.check_literal(host, port, url)
    return host, port


async def check_url_safe(url: str, policy: AddressPolicy) -> None:
    """The whole check, look-up included (the client does it on the connection itself)."""
    host, port = check_url(url, policy)
    await policy.pick(host, port)


_ACCEPTED_TYPES = re.compile(r"^(text/[\w.+-]+|[\w.+-]+/([\w.+-]+\+)?(xml|json)|application/(rss|atom|rdf)[\w.+-]*)$")


def acceptable_type(content_type: str) -> bool:
    """Text, XML or JSON (or no Content-Type at all): what a feed, sitemap, robots.txt or page can be."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return not kind or bool(_ACCEPTED_TYPES.match(kind))


# --- per-host slots --------------------------------------------------------------------------------

# Reserve the next start time of a request to a host: slot = max(now, next); next = slot + delay.
# Returns the microseconds to wait. Redis's clock is the one clock all replicas share.
def reserve_lua(key: str, spacing: str) -> str:
    """Lua that reserves the next request slot of a host: the slot is the later of now and the one
    the last reservation left, and the next starts ``spacing`` µs after it. Sets ``wait`` (µs from
    now to the slot). Redis's clock: every replica reads the same one."""
    return f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local slot = math.max(now, tonumber(redis.call('GET', {key}) or '0'))
local spacing = tonumber({spacing})
redis.call('SET', {key}, string.format('%d', slot + spacing), 'PX', math.floor((slot - now + spacing) / 1000) + 1000)
wait = slot - now
"""


_RESERVE = "local wait\n" + reserve_lua("KEYS[1]", "ARGV[1]") + "return wait\n"


@dataclass(frozen=True)
class Reservation:
    """A host's slot reserved in Redis ahead of the request (with other work in one round trip):
    the request to ``host`` may start at ``ready_at`` (monotonic), spaced ``spacing`` s from the last."""

    host: str
    spacing: float
    ready_at: float


SHARED_MARGIN = 0.03  # seconds added to the delay between two replicas' requests to one host
RESERVATION_SLACK = 0.01  # a slot reserved ahead is used at most this long after it started


def host_key(host: str) -> str:
    return f"nw:fetch:host:{host}"


class HostGate:
    """Per host: at most ``concurrency`` requests at once, and at least ``delay`` seconds between two
    request starts, in this process and, with Redis, across replicas."""

    def __init__(self, delay: float, concurrency: int = 2, redis: aioredis.Redis | None = None) -> None:
        self.delay = delay
        self.concurrency = max(1, concurrency)
        self.redis = redis
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._next: dict[str, float] = {}  # monotonic time of the next start reserved here
        self._last: dict[str, float] = {}  # monotonic time of the last request sent here
        self._sending: dict[str, asyncio.Lock] = {}  # held from a request's turn until its headers are sent
        self._script: Any = redis.register_script(_RESERVE) if redis is not None else None

    @property
    def shared(self) -> bool:
        """Whether the spacing holds across replicas (through Redis)."""
        return self._script is not None and self.delay > 0

    def idle(self, host: str) -> bool:
        """Whether a request to ``host`` would start now here: nothing in flight or queued for it, its
        spacing past. Only then is its slot worth reserving ahead (``Reservation``): one that waits
        behind others here would reach its slot late and waste it."""
        sem = self._sems.get(host)
        if sem is not None and (sem.locked() or sem._value < self.concurrency):
            return False
        return self._next.get(host, 0.0) <= time.monotonic()

    def spacing(self, delay: float | None = None) -> float:
        """Seconds reserved in Redis between two requests to a host: the delay, plus a margin that
        covers a replica's time from its slot to its request leaving."""
        return (self.delay if delay is None else max(self.delay, delay)) + SHARED_MARGIN

    async def _reserve_shared(self, host: str, delay: float) -> float:
        """The monotonic time the host's shared slot starts (now when nothing is shared)."""
        asked = time.monotonic()
        if self._script is None or delay <= 0:
            return asked
        waited = await self._script(keys=[host_key(host)], args=[int(self.spacing(delay) * 1_000_000)])
        return asked + int(waited) / 1_000_000

    @contextlib.asynccontextmanager
    async def slot(self, host: str, delay: float | None = None,
                   reserved: Reservation | None = None) -> AsyncIterator[Callable[[], None]]:
        """Wait for the host's turn; yields ``sent``, to call once the request's headers are sent (the
        next request to the host waits for it, so spacing is counted between requests actually sent).

        ``reserved``: a slot of this host already reserved in Redis (see ``Reservation``), used
        when it was spaced for at least this delay; else one is reserved here."""
        delay = self.delay if delay is None else max(self.delay, delay)
        sem = self._sems.get(host)
        if sem is None:
            sem = self._sems[host] = asyncio.Semaphore(self.concurrency)
        async with sem:
            # This process's own spacing (on the monotonic clock) ...
            now = time.monotonic()
            start = max(now, self._next.get(host, 0.0))
            self._next[host] = start + delay
            # ... and the replicas' (Redis), whichever is later.
            if (reserved is not None and reserved.host == host and reserved.spacing >= self.spacing(delay)
                    and time.monotonic() <= reserved.ready_at + RESERVATION_SLACK):
                shared_at = reserved.ready_at
            # A slot reserved ahead but reached late (a robots.txt fetched first, a wait for the
            # host's semaphore) is dropped: a later reservation by another replica may be due now.
            else:
                shared_at = await self._reserve_shared(host, delay)
            wait = max(start, shared_at) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            sending = self._sending.get(host)
            if sending is None:
                sending = self._sending[host] = asyncio.Lock()
            await sending.acquire()
            released = False

            def sent() -> None:
                nonlocal released
                if not released:
                    released = True
                    self._last[host] = max(self._last.get(host, 0.0), time.monotonic())
                    sending.release()
            try:
                # The last send here is checked and set with no await between: exact in this process.
                for _ in range(100):
                    gap = self._last.get(host, -1e9) + delay - time.monotonic()
                    if gap <= 0:
                        break
                    await asyncio.sleep(gap)
                self._last[host] = time.monotonic()
                self._next[host] = max(self._next[host], self._last[host] + delay)
                yield sent
            finally:
                sent()


# --- the client ------------------------------------------------------------------------------------

@dataclass
class _Robots:
    at: float  # monotonic time it was read
    rules: RobotsRules | None  # None: everything allowed
    trouble: bool = False  # the robots.txt could not be read (429, 5xx, no answer): everything waits
    ttl: float = ROBOTS_TTL_SECONDS  # how long the answer holds (``robots_ttl``)

    def fresh_for(self, now: float) -> float:
        """Seconds this copy is still used before Redis (then the origin) is asked again."""
        return self.at + min(ROBOTS_LOCAL_SECONDS, self.ttl) - now


def robots_key(origin: str) -> str:
    return f"nw:fetch:robots:{origin}"


class PoliteClient:
    """HTTP GET with the rules above. One per process; safe to share between tasks."""

    def __init__(self, user_agent: str, timeout: float, max_bytes: int, host_delay: float,
                 allow_hosts: str | Iterable[str] = "", *, deadline: float | None = None,
                 host_concurrency: int = 2, redis: aioredis.Redis | None = None,
                 resolver: Resolver | None = None, max_connections: int = 2000) -> None:
        self.max_bytes = max_bytes
        self.user_agent = user_agent
        self.product = product_token(user_agent)  # the robots.txt group fetch obeys
        self.deadline = deadline if deadline is not None else timeout * 3
        self.policy = AddressPolicy(allow_hosts, resolver)
        self.redis = redis
        self.gate = HostGate(host_delay, host_concurrency, redis)
        self._robots: dict[str, _Robots] = {}
        self._robots_locks: dict[str, asyncio.Lock] = {}
        self.timeout = timeout
        self._checked: dict[str, tuple[str, int] | FetchError] = {}
        self.transport = PinnedTransport(self.policy, per_origin=host_concurrency + 1, max_origins=max_connections)
        self.headers = {"user-agent": user_agent, "accept-encoding": "gzip, deflate", "accept": "*/*"}

    @property
    def backend(self) -> PinnedBackend:
        return self.transport.backend

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def _drain(self, url: str, response: httpcore.Response) -> None:
        """Read a body that is not kept (a redirect's, a 304's), raw and capped."""
        size = 0
        async for raw in response.aiter_stream():
            size += len(raw)
            if size > self.max_bytes:
                raise FetchError(f"{url}: body over the {self.max_bytes}-byte limit", permanent=True)

    async def _read(self, url: str, response: httpcore.Response, prefix: int | None = None) -> bytes:
        """The body, decoded (gzip/deflate) by hand with every step capped at ``max_bytes``.

        ``prefix``: only the body's first ``prefix`` bytes (decoded) are wanted: reading stops
        there and they are returned (robots.txt), instead of refusing a longer body."""
        if prefix is not None:
            return await self._read_prefix(url, response, prefix)
        encoding = header(response, b"content-encoding").strip().lower()
        decoder: Any = None
        if encoding in {"gzip", "x-gzip", "deflate"}:
            decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
        elif encoding not in {"", "identity"}:
            raise FetchError(f"{url}: unsupported content encoding {encoding!r}", permanent=True)
        chunks: list[bytes] = []
        size = raw_size = 0
        async for raw in response.aiter_stream():
            raw_size += len(raw)
            if raw_size > self.max_bytes:
                raise FetchError(f"{url}: body over the {self.max_bytes}-byte limit", permanent=True)
            data = raw
            while data:
                if decoder is None:
                    out, data = data, b""
                else:
                    try:
                        out = decoder.decompress(data, self.max_bytes - size + 1)
                    except zlib.error as exc:
                        raise FetchError(f"{url}: broken {encoding} body: {exc}", permanent=True) from exc
                    data = decoder.unconsumed_tail
                size += len(out)
                if size > self.max_bytes:
                    raise FetchError(f"{url}: body over the {self.max_bytes}-byte limit after {encoding} "
                                     "decoding", permanent=True)
                chunks.append(out)
        return b"".join(chunks)

    async def _read_prefix(self, url: str, response: httpcore.Response, prefix: int) -> bytes:
        encoding = header(response, b"content-encoding").strip().lower()
        decoder: Any = None
        if encoding in {"gzip", "x-gzip", "deflate"}:
            decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)
        elif encoding not in {"", "identity"}:
            raise FetchError(f"{url}: unsupported content encoding {encoding!r}", permanent=True)
        kept = bytearray()
        async for raw in response.aiter_stream():
            try:
                out = decoder.decompress(raw, prefix - len(kept)) if decoder is not None else raw
            except zlib.error as exc:
                raise FetchError(f"{url}: broken {encoding} body: {exc}", permanent=True) from exc
            kept += out[:prefix - len(kept)]
            if len(kept) >= prefix:
                break  # the rest is never read (the connection is closed, not reused)
        return bytes(kept)

    async def _get_once(self, url: str, headers: dict[str, str], delay: float | None = None,
                        reserved: Reservation | None = None, prefix: int | None = None) -> Response:
        host, port = self.check(url)
        async with self.gate.slot(f"{host}:{port}", delay, reserved) as sent:
            async def trace(event: str, info: dict[str, Any]) -> None:
                if event == "http11.send_request_headers.complete":
                    sent()

            try:
                async with asyncio.timeout(self.deadline):
                    async with self.transport.stream(url, {**self.headers, **headers}, self.timeout,
                                                     trace) as response:
                        status = response.status
                        content_type = header(response, b"content-type")
                        if 300 <= status < 400 or status == 204:
                            # Read to the end though it is dropped: a response read to its end hands
                            # its connection back for the next request to the host (keep-alive);
                            # one left unread is closed, and every poll answered 304 paid a new
                            # TCP connection.
                            await self._drain(url, response)
                            body = b""
                        else:
                            declared = header(response, b"content-length") or "0"
                            if prefix is None:  # a prefix is read whatever the size and type said
                                if declared.isdigit() and int(declared) > self.max_bytes:
                                    raise FetchError(f"{url}: {declared} bytes is over the {self.max_bytes} limit",
                                                     True)
                                if 200 <= status < 300 and not acceptable_type(content_type):
                                    raise FetchError(f"{url}: refused content type {content_type!r}", permanent=True)
                            body = await self._read(url, response, prefix)
                        return Response(url=url, status=status, content_type=content_type, body=body,
                                        etag=header(response, b"etag"),
                                        last_modified=header(response, b"last-modified"),
                                        location=header(response, b"location"),
                                        retry_after=header(response, b"retry-after"))
            except TimeoutError as exc:
                raise FetchError(f"{url}: no complete answer within the {self.deadline:g} s deadline") from exc
            except HTTP_ERRORS as exc:
                raise FetchError(f"{url}: {type(exc).__name__}: {exc}", permanent=answers_the_same(exc)) from exc
            except httpx.InvalidURL as exc:
                raise FetchError(f"{url}: invalid URL: {exc}", permanent=True) from exc

    async def get(self, url: str, headers: dict[str, str] | None = None, check_robots: bool = True,
                  reserved: Reservation | None = None, prefix: int | None = None) -> Response:
        """GET with every redirect hop checked (address, robots.txt); raises FetchError.

        ``reserved``: the first hop's host slot, reserved ahead (``HostGate.slot``); ``prefix``: see ``_read``."""
        current = normalise_path(url)
        seen: set[str] = set()
        for _ in range(MAX_REDIRECTS + 1):
            self.check(current)
            delay = None
            if check_robots:
                robots = await self._robots_for(current)
                if robots.trouble:  # passes by itself: retry once robots.txt is asked again
                    raise FetchError(f"{current}: robots.txt unreachable (HTTP 429/5xx or no answer), "
                                     "not fetched for now", retry_after=robots.fresh_for(time.monotonic()))
                if robots.rules is not None and not robots.rules.can_fetch(current):
                    raise FetchError(f"{current}: disallowed by robots.txt", permanent=True)
                delay = robots.rules.crawl_delay if robots.rules is not None else None
            response = await self._get_once(current, headers or {}, delay, reserved, prefix)
            reserved = None  # a redirect's next hop takes its own slot
            if response.status in {301, 302, 303, 307, 308}:
                if not response.location:
                    raise FetchError(f"{current}: redirect without a location", permanent=True)
                seen.add(current)
                current = normalise_path(urljoin(current, response.location.strip()))
                if current in seen:
                    raise FetchError(f"{url}: redirect loop at {current}", permanent=True)
                continue
            return response
        raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects", permanent=True)

    def check(self, url: str) -> tuple[str, int]:
        """``check_url`` with this client's policy, remembered per URL (a feed polled every few
        seconds is checked once: the parse and the address checks cost ~0.2 ms)."""
        known = self._checked.get(url)
        if known is None:
            if len(self._checked) >= 100_000:
                self._checked.clear()
            try:
                known = self._checked[url] = check_url(url, self.policy)
            except FetchError as exc:
                known = self._checked[url] = exc
        if isinstance(known, FetchError):
            raise known.with_traceback(None)  # the remembered error, without the last raise's frames
        return known

    def gate_host(self, url: str) -> str | None:
        """The host gate's key ("host:port") of the URL's first hop; None for a URL ``get`` refuses."""
        try:
            host, port = self.check(normalise_path(url))
        except FetchError:
            return None
        return f"{host}:{port}"

    async def allowed(self, url: str) -> bool:
        """Whether robots.txt lets fetch have ``url`` now (False while it cannot be read)."""
        url = normalise_path(url)
        robots = await self._robots_for(url)
        return not robots.trouble and (robots.rules is None or robots.rules.can_fetch(url))

    def _fresh_robots(self, origin: str) -> _Robots | None:
        cached = self._robots.get(origin)
        if cached is not None and cached.fresh_for(time.monotonic()) > 0:
            return cached
        return None

    async def _robots_for(self, url: str) -> _Robots:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc.lower()}"
        cached = self._fresh_robots(origin)
        if cached is not None:
            return cached
        lock = self._robots_locks.setdefault(origin, asyncio.Lock())
        async with lock:  # one robots.txt request per origin, however many pages wait for it
            cached = self._fresh_robots(origin)
            if cached is not None:
                return cached
            return await self._read_robots(origin)

    async def _read_robots(self, origin: str) -> _Robots:
        status, text = await self._robots_text(origin)
        robots = _Robots(time.monotonic(), *robots_verdict(status, text, self.product), ttl=robots_ttl(status))
        self._robots[origin] = robots
        return robots

    async def _robots_text(self, origin: str) -> tuple[int, str]:
        """(status, text) of the origin's robots.txt, from Redis when another replica read it lately.
        The status is ``ROBOTS_UNREACHABLE`` when it did not answer, 404 when it was refused for
        good (a refused address, too many redirects: the pages will tell)."""
        key = robots_key(origin)
        if self.redis is not None:
            stored = await self.redis.hgetall(key)
            if stored:
                text = stored.get(b"text", b"")
                return int(stored.get(b"status", b"0")), redis_store_text(text)
        try:
            # Redirects followed, each hop checked (RFC 9309 2.3.1.2: at least five); the first
            # 500 KiB kept (2.5), read as UTF-8 (2.3).
            response = await self.get(origin + "/robots.txt", check_robots=False, prefix=ROBOTS_MAX_BYTES)
            status = response.status
            text = response.body.decode("utf-8", "replace") if 200 <= status < 300 else ""
        except FetchError as exc:
            status, text = (404 if exc.permanent else ROBOTS_UNREACHABLE), ""
        if self.redis is not None:
            ttl = robots_ttl(status)
            await self.redis.hset(key, mapping={"status": str(status), "text": text})
            await self.redis.expire(key, int(ttl))
        return status, text


def redis_store_text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


_PRODUCT_TOKEN = re.compile(r"[A-Za-z_-]+")


def product_token(user_agent: str) -> str:
    """The product token of a User-Agent (RFC 9309 2.2.1: letters, "_" and "-"), lower case:
    ``newswatch/0.1 (+https://…)`` → ``newswatch``."""
    found = _PRODUCT_TOKEN.match(user_agent.strip())
    return found.group(0).lower() if found else ""


class RobotsRules:
    """One robots.txt as RFC 9309 reads it, for one product token.

    protego does the matching: ``*`` and ``$`` in paths (2.2.3), the longest match winning and
    Allow winning a tie (2.2.2), paths and patterns compared with their percent-encoding
    normalised (2.2.2: ``/foo/bar/ツ`` is ``/foo/bar/%E3%83%84``), groups of one product token
    merged (2.2.1), ``/robots.txt`` itself always allowed (2.2.2), Crawl-delay read (not in the
    RFC; kept as the extension most sites use). The group is chosen here, not by protego: the
    group whose User-agent is our product token (case-insensitive), else ``*``, else none (all
    allowed). protego's own choice takes the longest User-agent that occurs anywhere in the
    given name, so a group ``news`` would rule a crawler called ``newswatch``."""

    __slots__ = ("_group", "crawl_delay")

    def __init__(self, text: str, product: str) -> None:
        groups = Protego.parse(text)._user_agents  # product token (lower case) → its merged group
        self._group = groups.get(product.lower()) or groups.get("*")
        delay = self._group.crawl_delay if self._group is not None else None
        self.crawl_delay: float | None = min(float(delay), MAX_CRAWL_DELAY) if delay else None

    def can_fetch(self, url: str) -> bool:
        if self._group is None:
            return True
        if urlsplit(url).path == "/robots.txt":
            return True
        return bool(self._group.can_fetch(url))


def robots_unreachable(status: int) -> bool:
    """RFC 9309 2.3.1.4: a server error or no answer (and here 429) means "disallow everything for now"."""
    return status == ROBOTS_UNREACHABLE or status == 429 or status >= 500


def robots_ttl(status: int) -> float:
    """How long a robots.txt answer holds: an hour; 5 minutes for 429/5xx; 30 s when nothing answered."""
    if status == ROBOTS_UNREACHABLE:
        return ROBOTS_UNREACHABLE_TTL_SECONDS
    return ROBOTS_TROUBLE_TTL_SECONDS if robots_unreachable(status) else ROBOTS_TTL_SECONDS


def robots_verdict(status: int, text: str, product: str) -> tuple[RobotsRules | None, bool]:
    """(rules, trouble) of a robots.txt answer: the parsed rules of a 2xx; none (everything
    allowed) for a 4xx ("unavailable", 2.3.1.3) and any other answer; ``trouble`` (everything
    disallowed, asked again later) when it could not be read (``robots_unreachable``)."""
    if robots_unreachable(status):
        return None, True
    if 200 <= status < 300:
        return RobotsRules(text, product), False
    return None, False
