"""Fetching politely and safely: one request at a time per host with a minimum gap, robots.txt
obeyed, size and time limits, redirects followed by hand so that every hop is checked, and no
requests to loopback or private addresses unless the operator allows them (SSRF guard).

A ``FetchError`` is ``permanent`` when retrying cannot help (robots.txt disallows, size cap,
non-public address, too many redirects); a network error, a timeout and a robots.txt answering
429/5xx (all disallowed meanwhile, asked again after 5 minutes) are not."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

MAX_REDIRECTS = 5
ROBOTS_TTL_SECONDS = 3600.0
ROBOTS_TROUBLE_TTL_SECONDS = 300.0  # a robots.txt answering 429/5xx is asked again this soon


class FetchError(RuntimeError):
    """A URL that could not be fetched; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


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


async def check_url_safe(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise FetchError(f"refused scheme {parts.scheme!r} in {url}", permanent=True)
    if parts.username or parts.password:
        raise FetchError(f"refused credentials in URL {url}", permanent=True)
    host = parts.hostname
    if not host:
        raise FetchError(f"no host in URL {url}", permanent=True)
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 80, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise FetchError(f"refused {url}: {host} resolves to non-public address {address}", permanent=True)


class HostGate:
    """At most one request in flight per host, and at least ``delay`` seconds between two."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._locks: dict[str, asyncio.Lock] = {}
        self._last: dict[str, float] = {}

    async def wait(self, host: str) -> asyncio.Lock:
        lock = self._locks.setdefault(host, asyncio.Lock())
        await lock.acquire()
        gap = self._last.get(host, 0.0) + self.delay - time.monotonic()
        if gap > 0:
            await asyncio.sleep(gap)
        return lock

    def done(self, host: str, lock: asyncio.Lock) -> None:
        self._last[host] = time.monotonic()
        lock.release()


class PoliteClient:
    """httpx with the rules above. One per process; safe to share between tasks."""

    def __init__(self, user_agent: str, timeout: float, max_bytes: int, host_delay: float,
                 allow_private: bool, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self.user_agent = user_agent
        self.gate = HostGate(host_delay)
        self._robots: dict[str, tuple[float, RobotFileParser | None]] = {}
        self._robots_trouble: set[str] = set()  # origins whose robots.txt answered 429/5xx (all disallowed)
        self.client = httpx.AsyncClient(
            headers={"user-agent": user_agent, "accept-encoding": "gzip, deflate"},
            timeout=httpx.Timeout(timeout), follow_redirects=False, transport=transport,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _get_once(self, url: str, headers: dict[str, str]) -> Response:
        host = urlsplit(url).netloc
        lock = await self.gate.wait(host)
        try:
            async with self.client.stream("GET", url, headers=headers) as response:
                declared = int(response.headers.get("content-length") or 0)
                if declared > self.max_bytes:
                    raise FetchError(f"{url}: {declared} bytes is over the {self.max_bytes} limit", True)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchError(f"{url}: body over the {self.max_bytes}-byte limit", permanent=True)
                    chunks.append(chunk)
                return Response(url=str(response.url), status=response.status_code,
                                content_type=response.headers.get("content-type", ""), body=b"".join(chunks),
                                etag=response.headers.get("etag", ""),
                                last_modified=response.headers.get("last-modified", ""),
                                location=response.headers.get("location", ""),
                                retry_after=response.headers.get("retry-after", ""))
        except httpx.HTTPError as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from exc
        finally:
            self.gate.done(host, lock)

    async def get(self, url: str, headers: dict[str, str] | None = None, check_robots: bool = True) -> Response:
        """GET with every redirect hop checked; raises FetchError."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            await check_url_safe(current, self.allow_private)
            if check_robots and not await self.allowed(current):
                parts = urlsplit(current)
                if f"{parts.scheme}://{parts.netloc}" in self._robots_trouble:  # passes by itself: retry later
                    raise FetchError(f"{current}: robots.txt unavailable (HTTP 429/5xx), not fetched for now")
                raise FetchError(f"{current}: disallowed by robots.txt", permanent=True)
            response = await self._get_once(current, headers or {})
            if response.status in {301, 302, 303, 307, 308}:
                if not response.location:
                    raise FetchError(f"{current}: redirect without a location", permanent=True)
                current = urljoin(current, response.location)
                continue
            return response
        raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects", permanent=True)

    async def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        cached = self._robots.get(origin)
        ttl = ROBOTS_TROUBLE_TTL_SECONDS if origin in self._robots_trouble else ROBOTS_TTL_SECONDS
        if cached is None or time.monotonic() - cached[0] > ttl:
            self._robots_trouble.discard(origin)
            parser: RobotFileParser | None
            try:
                response = await self._get_once(origin + "/robots.txt", {})
                if response.status >= 500 or response.status == 429:
                    self._robots_trouble.add(origin)
                    parser = RobotFileParser()
                    parser.parse(["User-agent: *", "Disallow: /"])  # server trouble: stay away for now
                elif response.status >= 400:
                    parser = None  # no robots.txt: everything is allowed
                else:
                    parser = RobotFileParser()
                    parser.parse(response.body.decode("utf-8", "replace").splitlines())
            except FetchError:
                parser = None
            cached = (time.monotonic(), parser)
            self._robots[origin] = cached
        parser = cached[1]
        return parser is None or parser.can_fetch(self.user_agent, url)
