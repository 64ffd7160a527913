"""robots.txt as RFC 9309 reads it (issue 21): the RFC's own examples, the rules news sites publish
(wildcards, ``$``, longest match, Allow on ties), our product token's group, and what each answer
of ``/robots.txt`` means (4xx: allowed; 5xx or no answer: disallowed for a while; the first
500 KiB read; redirects followed), against a local server."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Iterator

import pytest

from services.fetch.politeness import (
    ROBOTS_MAX_BYTES,
    FetchError,
    PoliteClient,
    RobotsRules,
    product_token,
    robots_verdict,
)
from shared.settings import Settings
from tests.unit.test_fetch_hostile import Server, client

UA = "newswatch/0.1 (+https://example.org/newswatch; news monitoring)"

# RFC 9309 5.1, "Simple Example" (the "EOF" lines of the RFC's figure are not part of the file).
RFC_EXAMPLE = """\
User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot
"""

# The robots.txt of issue 21, case 1.
ISSUE_CASE = """\
User-agent: *
Disallow: /*?print=
Disallow: /*.php$
Disallow: /news/
Allow: /news/public/
Disallow: /tmp
Allow: /tmp/keep$
"""


def allowed(text: str, product: str, path: str) -> bool:
    return RobotsRules(text, product).can_fetch("https://www.example.com" + path)


def test_product_token_of_the_user_agent() -> None:
    assert product_token(UA) == "newswatch"
    assert product_token("Foo-Bot_2/1.0") == "foo-bot_"
    assert product_token(Settings.from_env({}).user_agent) == "newswatch"


@pytest.mark.parametrize(("product", "path", "expected"), [
    # the * group
    ("otherbot", "/example/page.html", False),
    ("otherbot", "/publications/report.html", True),
    ("otherbot", "/images/a.gif", False),  # *.gif$
    ("otherbot", "/images/a.gif?x", True),  # $: the end of the path, a query after it does not match
    ("otherbot", "/", True),
    # foobot's own group: everything disallowed but the two allowed paths (longest match)
    ("foobot", "/", False),
    ("foobot", "/example/page.html", True),
    ("foobot", "/example/allowed.gif", True),
    ("foobot", "/example/other.html", False),
    ("FooBot", "/example/page.html", True),  # product tokens match case-insensitively
    # barbot and bazbot share one group; the * group no longer applies to them
    ("barbot", "/example/page.html", False),
    ("bazbot", "/example/page.html", False),
    ("barbot", "/example/other.html", True),
    ("bazbot", "/a.gif", True),
    # quxbot's group is empty: everything allowed
    ("quxbot", "/example/page.html", True),
    ("quxbot", "/a.gif", True),
])
def test_the_rfc_example(product: str, path: str, expected: bool) -> None:
    assert allowed(RFC_EXAMPLE, product, path) is expected


def test_the_rfc_longest_match_example() -> None:
    # RFC 9309 5.2: the most specific (longest) match wins
    text = "User-agent: *\nallow: /example/page/\ndisallow: /example/page/disallowed.gif\n"
    assert allowed(text, "newswatch", "/example/page/")
    assert allowed(text, "newswatch", "/example/page/other.html")
    assert not allowed(text, "newswatch", "/example/page/disallowed.gif")


@pytest.mark.parametrize(("path", "expected"), [
    ("/story.html?print=1", False),  # /*?print=
    ("/a/b/story.html?page=2&print=yes", True),  # "?print=" is not in it ("&print=" is)
    ("/index.php", False),  # /*.php$
    ("/forum/index.php", False),
    ("/index.php?id=3", True),  # $ anchors: the query makes it another path
    ("/news/", False),
    ("/news/today.html", False),
    ("/news/public/open.html", True),  # Allow /news/public/ is longer than Disallow /news/
    ("/tmp", False),
    ("/tmpfile", False),
    ("/tmp/keep", True),  # Allow /tmp/keep$ (longer) wins, exactly there
    ("/tmp/keep/more", False),
    ("/story.html", True),
    ("/robots.txt", True),  # always allowed
])
def test_the_issue_case(path: str, expected: bool) -> None:
    assert allowed(ISSUE_CASE, "newswatch", path) is expected


def test_allow_wins_a_tie_whatever_the_order() -> None:
    for text in ("User-agent: *\nDisallow: /page\nAllow: /page\n", "User-agent: *\nAllow: /page\nDisallow: /page\n",
                 "User-agent: *\nDisallow: /p*e\nAllow: /p*e\n"):
        assert allowed(text, "newswatch", "/page"), text
    # same length but a different pattern: the first one to match of the two, Allow first on a tie
    assert allowed("User-agent: *\nDisallow: /*.html\nAllow: /a*html\n", "newswatch", "/a.html")


def test_percent_encoding_is_equivalent() -> None:
    # RFC 9309 2.2.2: non-ASCII octets percent-encoded before comparing; escapes of unreserved
    # characters mean the characters; hex digits in either case
    text = "User-agent: *\nDisallow: /foo/bar/ツ\nDisallow: /x/%62%61%7A\nDisallow: /caf%c3%a9\n"
    for path in ("/foo/bar/%E3%83%84", "/foo/bar/ツ", "/foo/bar/%e3%83%84", "/x/baz", "/x/%62%61%7A",
                 "/café", "/caf%C3%A9"):
        assert not allowed(text, "newswatch", path), path
    assert allowed(text, "newswatch", "/foo/bar/x")


def test_our_group_by_product_token_only() -> None:
    text = ("User-agent: *\nDisallow: /all/\n\nUser-agent: news\nDisallow: /\n\n"
            "User-agent: NewsWatch\nDisallow: /ours/\n\nUser-agent: newswatch\nDisallow: /also/\n")
    rules = RobotsRules(text, product_token(UA))
    # our own groups, merged (2.2.1), and only them: not *, not the "news" group (a prefix of our name)
    assert not rules.can_fetch("https://h/ours/a") and not rules.can_fetch("https://h/also/a")
    assert rules.can_fetch("https://h/all/a") and rules.can_fetch("https://h/")
    # without a group of ours, the * group; a group named like a prefix of ours is another crawler's
    other = RobotsRules("User-agent: *\nDisallow: /all/\n\nUser-agent: news\nDisallow: /\n", "newswatch")
    assert other.can_fetch("https://h/") and not other.can_fetch("https://h/all/x")
    # no group for us and no *: everything allowed
    assert RobotsRules("User-agent: otherbot\nDisallow: /\n", "newswatch").can_fetch("https://h/x")


def test_crawl_delay_of_our_group_kept_and_capped() -> None:
    assert RobotsRules("User-agent: *\nCrawl-delay: 2.5\n", "newswatch").crawl_delay == 2.5
    assert RobotsRules("User-agent: newswatch\nCrawl-delay: 9999\n", "newswatch").crawl_delay == 60.0
    assert RobotsRules("User-agent: other\nCrawl-delay: 5\n", "newswatch").crawl_delay is None


def test_verdict_of_each_answer() -> None:
    assert robots_verdict(404, "", "newswatch") == (None, False)  # unavailable: everything allowed
    assert robots_verdict(403, "", "newswatch") == (None, False)
    assert robots_verdict(401, "", "newswatch") == (None, False)
    for status in (500, 503, 429, 0):  # unreachable (0: no answer): everything disallowed for now
        assert robots_verdict(status, "", "newswatch") == (None, True)
    rules, trouble = robots_verdict(200, "User-agent: *\nDisallow: /x\n", "newswatch")
    assert rules is not None and not trouble and not rules.can_fetch("http://h/x")


# --- against a server ------------------------------------------------------------------------------

@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def _ok(server: Server, path: str) -> None:
    server.answer(path, 200, b"<html>ok</html>", {"Content-Type": "text/html"})


def run(c: PoliteClient, *urls: str) -> list[str]:
    """Each URL's fate: "ok", "disallowed" (final) or "later" (robots.txt unreachable: retried)."""
    async def go() -> list[str]:
        out = []
        try:
            for url in urls:
                try:
                    await c.get(url)
                    out.append("ok")
                except FetchError as exc:
                    out.append("disallowed" if exc.permanent and "robots" in str(exc) else
                               "later" if "robots" in str(exc) else f"error: {exc}")
        finally:
            await c.aclose()
        return out
    return asyncio.run(go())


def test_fetch_obeys_the_issue_case(server: Server) -> None:
    server.answer("/robots.txt", 200, ISSUE_CASE.encode(), {"Content-Type": "text/plain"})
    paths = ["/story.html?print=1", "/index.php", "/news/public/open.html", "/tmp/keep", "/news/x.html"]
    for path in paths:
        _ok(server, path.split("?")[0])
    got = run(client(server), *(server.url(p) for p in paths))
    assert got == ["disallowed", "disallowed", "ok", "ok", "disallowed"]
    asked = [p for p in server.paths() if p != "/robots.txt"]
    assert asked == ["/news/public/open.html", "/tmp/keep"]


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_a_4xx_robots_txt_allows_everything(server: Server, status: int) -> None:
    server.answer("/robots.txt", status, b"User-agent: *\nDisallow: /\n", {"Content-Type": "text/plain"})
    _ok(server, "/a.html")
    assert run(client(server), server.url("/a.html")) == ["ok"]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_5xx_robots_txt_disallows_everything_for_a_while(server: Server, status: int) -> None:
    server.answer("/robots.txt", status, b"", {"Content-Type": "text/plain"})
    _ok(server, "/a.html")
    c = client(server)

    async def go() -> list[str]:
        out = []
        for _ in range(2):
            try:
                await c.get(server.url("/a.html"))
                out.append("ok")
            except FetchError as exc:
                assert not exc.permanent and "robots.txt unreachable" in str(exc)
                out.append("later")
        # the answer is kept for a while (not asked at every page) ...
        assert len(server.hits("/robots.txt")) == 1
        # ... then asked again: now it answers
        server.answer("/robots.txt", 200, b"User-agent: *\nDisallow: /private/\n", {"Content-Type": "text/plain"})
        c._robots.clear()  # as if its time were over
        await c.get(server.url("/a.html"))
        out.append("ok")
        await c.aclose()
        return out
    assert asyncio.run(go()) == ["later", "later", "ok"]
    assert len(server.hits("/a.html")) == 1


def test_an_unreachable_robots_txt_disallows_everything_for_now() -> None:
    # a port where nothing listens: connection refused
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    c = PoliteClient("newswatch/0.1", 2, 100_000, 0.0, f"127.0.0.1:{port}", deadline=2.0)
    assert run(c, f"http://127.0.0.1:{port}/a.html") == ["later"]


def test_robots_txt_trouble_says_when_to_try_again(server: Server) -> None:
    # a feed waits until robots.txt is asked again, not after its own growing backoff: 30 s when
    # nothing answered (a site still starting), 60 s (the local copy) while it answers 5xx
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server.answer("/robots.txt", 503, b"", {"Content-Type": "text/plain"})

    async def go() -> list[float]:
        waits = []
        for c, url in ((PoliteClient("newswatch/0.1", 2, 100_000, 0.0, f"127.0.0.1:{port}", deadline=2.0),
                        f"http://127.0.0.1:{port}/feed.xml"), (client(server), server.url("/feed.xml"))):
            with pytest.raises(FetchError) as info:
                await c.get(url)
            assert not info.value.permanent and info.value.retry_after is not None
            waits.append(info.value.retry_after)
            await c.aclose()
        return waits
    unreachable, busy = asyncio.run(go())
    assert 20 < unreachable <= 30 and 50 < busy <= 60, (unreachable, busy)


def test_the_first_500_kib_are_read_and_the_rest_ignored(server: Server) -> None:
    # a rule inside the first 500 KiB holds; one past it does not; the file is over the page cap
    # (50,000 bytes here) and still read, gzip-encoded or not
    filler = b"# " + b"x" * 998 + b"\n"
    head = b"User-agent: *\nDisallow: /early/\n"
    body = head + filler * (ROBOTS_MAX_BYTES // len(filler) + 1) + b"Disallow: /late/\n"
    assert len(head) < ROBOTS_MAX_BYTES < len(body) - len(b"Disallow: /late/\n")
    for path in ("/early/a.html", "/late/a.html"):
        _ok(server, path)
    for encoded in (body, gzip.compress(body)):
        headers = {"Content-Type": "application/octet-stream"}  # a wrong type does not refuse it either
        if encoded is not body:
            headers["Content-Encoding"] = "gzip"
        server.answer("/robots.txt", 200, encoded, headers)
        got = run(client(server, max_bytes=50_000), server.url("/early/a.html"), server.url("/late/a.html"))
        assert got == ["disallowed", "ok"], encoded[:10]


def test_a_redirected_robots_txt_is_followed(server: Server) -> None:
    server.redirect("/robots.txt", "/r1")
    server.redirect("/r1", "/real-robots.txt", 301)
    server.answer("/real-robots.txt", 200, b"User-agent: *\nDisallow: /no/\n", {"Content-Type": "text/plain"})
    _ok(server, "/no/a.html")
    _ok(server, "/yes.html")
    assert run(client(server), server.url("/no/a.html"), server.url("/yes.html")) == ["disallowed", "ok"]
    # more than five redirects: as if there were none (unavailable, everything allowed)
    for n in range(7):
        server.redirect(f"/loop{n}" if n else "/robots.txt", f"/loop{n + 1}")
    assert run(client(server), server.url("/no/a.html")) == ["ok"]
