"""The fast feed reader (lxml) against feedparser, the reference: the same items, titles, dates and
languages on every dialect it takes, and feedparser's answer on what it does not take."""

from __future__ import annotations

import re
from dataclasses import replace
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.fetch.feeds import FeedResult, parse_feed, parse_feed_slowly, parse_xml_feed

RSS2 = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>
<title>Le Courrier</title><link>https://example.org/</link><language>fr-FR</language>
<item><title>  Cessez-le-feu &amp; n\xc3\xa9gociations </title><link>https://example.org/a/1.html</link>
  <pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate><description>&lt;p&gt;x&lt;/p&gt;</description></item>
<item><title><![CDATA[Titre <b>gras</b>]]></title><guid>https://example.org/a/2.html</guid>
  <dc:date>2026-11-24T10:00:00Z</dc:date></item>
<item><title>Sans lien permanent</title><guid isPermaLink="false">tag:example.org,2026:3</guid></item>
<item><title>Relatif</title><link>/a/4.html</link></item>
<item><title>Pas web</title><link>mailto:redaction@example.org</link></item>
</channel></rss>"""

RSS091 = b"""<?xml version="1.0"?><rss version="0.91"><channel><title>Old</title><language>en</language>
<item><title>One</title><link>http://old.example.com/1</link></item></channel></rss>"""

RSS1 = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
 xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://ex.org/"><title>RDF feed</title><dc:language>de</dc:language></channel>
<item rdf:about="https://ex.org/1"><title>Erster</title><link>https://ex.org/1</link><dc:date>2026-11-24</dc:date></item>
<item rdf:about="https://ex.org/2"><title>Zweiter</title><link>https://ex.org/2</link></item>
</rdf:RDF>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="ar"><title>Atom feed</title>
<entry><title>First</title><link rel="alternate" type="text/html" href="https://ex.org/e/1"/>
  <link rel="self" href="https://ex.org/e/1.atom"/><published>2026-11-24T10:00:00Z</published></entry>
<entry><title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">Second <em>one</em></div></title>
  <link rel="enclosure" href="https://ex.org/e/2.mp3"/><link href="https://ex.org/e/2"/>
  <updated>2026-11-24T11:00:00Z</updated></entry>
<entry><title>No link</title><id>urn:x</id></entry>
</feed>"""


def plain(result: FeedResult) -> FeedResult:
    """Titles without markup: an Atom ``type="xhtml"`` title is its text here, feedparser keeps its tags."""
    items = [replace(i, title=re.sub(r"<[^>]+>", "", i.title)) for i in result.items]
    return replace(result, items=items)


def same(body: bytes, base: str = "") -> None:
    fast = parse_xml_feed(body, base)
    assert fast is not None, "the fast reader should take this feed"
    assert plain(fast) == plain(parse_feed_slowly(body, base))
    assert parse_feed(body, base) == fast


@pytest.mark.parametrize("body", [RSS2, RSS091, RSS1, ATOM], ids=["rss2", "rss091", "rss1", "atom"])
def test_the_fast_reader_lists_what_feedparser_lists(body: bytes) -> None:
    same(body, "https://example.org/rss.xml")


def test_relative_links_resolve_against_the_feed_url() -> None:
    result = parse_feed(RSS2, "https://example.org/rss.xml")
    assert [i.url for i in result.items] == [
        "https://example.org/a/1.html", "https://example.org/a/2.html", "https://example.org/a/4.html"]
    assert result.lang == "fr" and result.items[0].title == "Cessez-le-feu & négociations"
    atom = parse_feed(ATOM)
    assert [i.title for i in atom.items] == ["First", "Second one"]
    assert [i.url for i in atom.items] == ["https://ex.org/e/1", "https://ex.org/e/2"]


def test_what_the_fast_reader_does_not_take_goes_to_feedparser() -> None:
    broken = b"<rss version='2.0'><channel><title>T</title><item><title>A & B</title>" \
             b"<link>https://ex.org/1</link></item>"  # unescaped & and no closing tags
    assert parse_xml_feed(broken) is None
    assert parse_feed(broken) == parse_feed_slowly(broken)
    assert [i.url for i in parse_feed(broken).items] == ["https://ex.org/1"]
    atom03 = b'<feed version="0.3" xmlns="http://purl.org/atom/ns#"><entry><title>x</title>' \
             b'<link rel="alternate" type="text/html" href="https://ex.org/x"/></entry></feed>'
    assert parse_xml_feed(atom03) is None
    assert [i.url for i in parse_feed(atom03).items] == ["https://ex.org/x"]
    assert parse_xml_feed(b"<html><body>not a feed</body></html>") is None
    html = b"<html><body>not a feed</body></html>"
    assert parse_feed(html) == parse_feed_slowly(html) and not parse_feed(html).items


def test_entity_declarations_are_refused_before_any_parser() -> None:
    laughs = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>' \
             b"<rss version='2.0'><channel><item><title>&b;</title><link>https://ex.org/1</link></item></channel></rss>"
    assert parse_feed(laughs).error.startswith("refused")


# Without U+0080–U+00FF: feedparser "repairs" a title that reads as UTF-8 taken for Latin-1
# ("Â¡" becomes "¡"); the fast reader gives the text as written, which is what the XML says.
LATIN_1 = [chr(c) for c in range(0x80, 0x100)]
words = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=LATIN_1), min_size=1, max_size=30)


@given(st.lists(st.tuples(words, st.integers(0, 99), st.sampled_from(["rss", "atom"])), min_size=1, max_size=6),
       st.sampled_from(["", "en", "fr-CA"]))
@settings(max_examples=150, deadline=None)
def test_generated_feeds_read_the_same_as_feedparser(entries: list[tuple[str, int, str]], lang: str) -> None:
    kind = entries[0][2]
    if kind == "rss":
        items = "".join(f"<item><title>{escape(t)}</title><link>https://ex.org/{n}</link>"
                        f"<pubDate>Tue, 24 Nov 2026 10:{n:02d}:00 GMT</pubDate></item>" for t, n, _ in entries)
        language = f"<language>{lang}</language>" if lang else ""
        body = f"<rss version='2.0'><channel><title>F</title>{language}{items}</channel></rss>"
    else:
        items = "".join(f"<entry><title>{escape(t)}</title><link href='https://ex.org/{n}'/>"
                        f"<updated>2026-11-24T10:{n:02d}:00Z</updated></entry>" for t, n, _ in entries)
        xml_lang = f" xml:lang='{lang}'" if lang else ""
        body = f"<feed xmlns='http://www.w3.org/2005/Atom'{xml_lang}><title>F</title>{items}</feed>"
    same(body.encode("utf-8"))
