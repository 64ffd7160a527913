"""Recover the article's lead (standfirst, chapô, Vorspann) when the main-text extractor drops it.

trafilatura in precision mode often skips the lead: it sits in the article header, next to
the headline, in an element named "lead", "intro", "teaser-text", "standfirst", "chapo" or
"summary", outside the body it extracts. The lead carries the story's key facts, so losing it
costs more than a line. Measured on the trafilatura evaluation set (docs/choices.md): recall
+2.4 points for +0.3 points of leak.

Only an element before or inside the article container counts (a "teaser" after it is the
next story); the first one wins, and it must be mostly text, not links.
"""

from __future__ import annotations

import re

from lxml.html import HtmlElement

from services.clean.textdump import is_junk_line

# Whole words of a class or id that name a lead. "text-with-summary" (Drupal's body field) and
# "site-description" (a blog's tagline) are not leads.
_LEAD_NAME = re.compile(
    r"(?:^|[\s_-])(?<!with-)(?<!site-)"
    r"(lead|leadtext|lede|intro|introduction|teaser|summary|excerpt|preface|standfirst|subtitle|subline|"
    r"subheadline|abstract|chapo|chapeau|vorspann|kicker|deck|dek|description|desc)"
    r"(?:$|[\s_-])",
    re.IGNORECASE,
)
_LEAD_TAGS = frozenset({"p", "div", "h2", "h3", "section", "span", "strong", "header"})
_BLOCKS = ("p", "div", "section", "header", "ul", "ol", "li", "table", "h1", "h2", "h3", "h4", "figure")
MIN_LEAD_CHARS = 40  # shorter is a kicker or a label, not a lead
MAX_LINK_SHARE = 0.3  # more of its text in links is a teaser list


def _squash(text: str) -> str:
    return " ".join(text.split())


def missing_lead(root: HtmlElement, container: HtmlElement | None, text: str) -> str:
    """The lead's text when the page has one and `text` lacks it, else ""."""
    if container is None:
        return ""
    squashed = _squash(text)
    reached_container = False
    for element in root.iter(*_LEAD_TAGS, container.tag):  # the container's tag: to see where it starts
        if element is container:
            reached_container = True
        if element.tag not in _LEAD_TAGS:
            continue
        names = f"{element.get('class') or ''} {element.get('id') or ''}"
        if len(names) < 2 or not _LEAD_NAME.search(names):
            continue
        if reached_container and element is not container and container not in element.iterancestors():
            return ""  # past the article: what follows is other stories
        lead = _squash(element.text_content())
        if len(lead) < MIN_LEAD_CHARS or lead in squashed:
            continue
        linked = sum(len(link.text_content()) for link in element.iter("a"))
        if linked > MAX_LINK_SHARE * len(lead):
            continue
        return "\n".join(_lines(element))
    return ""


def _lines(element: HtmlElement) -> list[str]:
    """The lead's text by block (a wrapper may hold an ad label or a caption beside the lead)."""
    leaves = [block for block in element.iter(*_BLOCKS)
              if block is not element and next(block.iterdescendants(*_BLOCKS), None) is None]
    if not leaves:
        return [_squash(element.text_content())]
    return [line for line in (_squash(leaf.text_content()) for leaf in leaves) if line and not is_junk_line(line)]


_DEK_TAGS = frozenset({"h2", "p"})
MAX_DEK_CHARS = 400  # longer is the article's first paragraph or a block swallowed by broken markup
_HEADER_TAGS = frozenset({"header", "hgroup"})


def missing_dek(root: HtmlElement, container: HtmlElement | None, text: str) -> str:
    """The dek (the subtitle under the headline) when ``text`` lacks it, else "".

    Structural, for pages that do not name it: the first ``<h2>`` or ``<p>`` right after the page's
    first ``<h1>``, in the same parent, when that parent is the article's header (a ``<header>`` or
    ``<hgroup>``, or an element outside the container), mostly text and not links, one or two
    sentences long.
    """
    if container is None:
        return ""
    headline = next(root.iter("h1"), None)
    if headline is None:
        return ""
    heading = _squash(headline.text_content())
    if sum(len(_squash(link.text_content())) for link in headline.iter("a")) > len(heading) / 2:
        return ""  # a linked <h1> is the site's name in its masthead, and what follows its tagline
    parent = headline.getparent()
    if parent is None or parent is container:
        return ""
    if parent.tag not in _HEADER_TAGS and (container in parent.iterancestors() or parent in container.iterancestors()):
        return ""
    for sibling in headline.itersiblings():
        if not isinstance(sibling.tag, str):
            continue
        if sibling.tag not in _DEK_TAGS:
            if sibling.text_content().strip():
                return ""  # something else stands between the headline and a dek
            continue
        dek = _squash(sibling.text_content())
        if not MIN_LEAD_CHARS <= len(dek) <= MAX_DEK_CHARS or dek in _squash(text):
            return ""
        linked = sum(len(link.text_content()) for link in sibling.iter("a"))
        if linked > MAX_LINK_SHARE * len(dek) or is_junk_line(dek):
            return ""
        return dek
    return ""
