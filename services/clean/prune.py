"""Cut page furniture out of an HTML tree before the main-text extractor sees it.

Menus, share bars, comment threads, related-article lists and footers are removed by tag
(nav, footer, aside, form, …) and by class/id words (share, comments, related, sidebar, …).
Class names are matched as whole words of the name ("entry-meta", "post_comments"), never
inside other words, and layout names that merely mention a part ("has-sidebar",
"no-comments", "elementor-widget-…") do not count.

The article itself is protected: the element holding the densest run of paragraphs (scored
as readability does) and all its ancestors are never removed, whatever their class says;
Blogger wraps every post in `class="widget Blog"`, many themes put the article inside
`class="... right-sidebar"`. Measured on the trafilatura evaluation set (docs/choices.md):
pruning before trafilatura lowers boilerplate leak and makes extraction faster, because
trafilatura then walks a smaller tree.
"""

from __future__ import annotations

import re

from lxml import etree
from lxml import html as lxml_html

# Never content, whatever the page: removed with everything inside.
_ALWAYS_DROP = frozenset({
    "script", "style", "noscript", "template", "svg", "iframe", "button", "select", "input", "textarea",
    "object", "embed", "canvas", "map", "dialog",
})
# Page furniture by its tag; dropped unless it holds the article.
# Not <form>: ASP.NET pages wrap the whole page in one, and a comment or search form loses its
# inputs (always dropped) anyway.
_FURNITURE = frozenset({"nav", "footer", "aside", "figcaption", "menu"})
# Headings are not dropped for their names: a heading's id is often made from its words
# (id="nav_..." for a heading that starts with "Nav...").
_TEXT_BLOCKS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_NEVER_DROP = frozenset({"html", "head", "body", "main", "article"})

# Words of a class or id (split at spaces, "-" and "_") that name furniture.
_FURNITURE_WORDS = frozenset({
    "comment", "comments", "kommentar", "kommentare", "shariff", "share", "sharing", "sharer", "social", "socials",
    "related", "relatedposts", "breadcrumb", "breadcrumbs", "newsletter", "cookie", "cookies", "consent", "sidebar",
    "footer", "navbar", "nav", "navigation", "menu", "submenu", "dropdown", "widget", "widgets",
    "popup", "modal", "subscribe", "promo", "pagination", "pager", "rating", "login", "toolbar", "topbar",
    "copyright", "legal", "disclaimer", "credit", "credits", "sharedaddy", "caption", "byline", "author", "bio",
    "meta", "outbrain", "recommended", "recommendations", "tags", "tagcloud", "skip",
    "date", "dateline", "timestamp", "banner",  # the date line over a headline; a site's banners
})
_FURNITURE_PAIRS = frozenset({("sr", "only")})  # screen-reader-only text
# A furniture word after one of these is a layout name ("has-sidebar", "no-comments",
# "elementor-widget", "right-sidebar"), not furniture.
_LAYOUT_PREFIXES = frozenset({"has", "with", "no", "show", "is", "elementor", "right", "left"})
# Words that say "this is the article"; an element named both ways is kept.
_CONTENT_WORDS = frozenset({"content", "article", "post", "entry", "story", "main", "body", "text", "hentry"})
# Elements the page itself marks as the article body (schema.org, the common CMS classes) are
# spared with their ancestors like the container. Blogger posts written with <br> and no <p>
# score nothing as paragraphs, yet sit in "post-body entry-content" inside "widget Blog".
_BODY_CLASSES = ("entry-content", "post-body")
_BODY_TAGS = ("div", "article", "section", "main")


def _body_marked(root: lxml_html.HtmlElement) -> list[lxml_html.HtmlElement]:
    # A Python loop over a few tags: faster here than the equivalent XPath over every element.
    marked = []
    for element in root.iter(*_BODY_TAGS):
        names = element.get("class")
        if (names and any(name in names for name in _BODY_CLASSES)) or element.get("itemprop") == "articleBody":
            marked.append(element)
    return marked


_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)

# Readability-style class weights for choosing the article container.
_POSITIVE_NAME = re.compile(r"article|body|content|entry|hentry|main|post|text|blog|story|artikel|inhalt|beitrag",
                            re.IGNORECASE)
_PARAGRAPH_TAGS = ("p", "pre", "td", "blockquote")
_MIN_PARAGRAPH = 25  # characters; shorter <p> are captions, buttons and bylines


def _html_parser(**options: str) -> lxml_html.HTMLParser:
    """lxml's HTML parser with every element an HtmlElement, looked up in C.

    lxml.html's default lookup calls back into Python for every element proxy (to hand out
    form and input classes we never use): a tenth of the extraction time (docs/choices.md).
    """
    parser = lxml_html.HTMLParser(remove_comments=True, remove_pis=True, **options)
    parser.set_element_class_lookup(etree.ElementDefaultClassLookup(
        element=lxml_html.HtmlElement, comment=lxml_html.HtmlComment, pi=lxml_html.HtmlProcessingInstruction,
        entity=lxml_html.HtmlEntity))
    return parser


_PARSER = _html_parser()
_UTF8_PARSER = _html_parser(encoding="utf-8")


MAX_DEPTH = 256  # libxml2's nesting limit without XML_PARSE_HUGE (never lifted here)


def parse_html(html: str) -> lxml_html.HtmlElement:
    """An lxml tree of the page. Raises ValueError on a page with no elements, or nested deeper
    than libxml2's limit (it stops parsing there: the tree would be a cut page)."""
    parser = _PARSER
    try:
        try:
            root = lxml_html.fromstring(html, parser=parser)
        except ValueError:
            # lxml refuses a str that still carries an XML encoding declaration.
            parser = _UTF8_PARSER
            root = lxml_html.fromstring(html.encode("utf-8"), parser=parser)
    except lxml_html.etree.ParserError as exc:
        raise ValueError(f"not an HTML page: {exc}") from exc
    if any(entry.type_name == "ERR_RESOURCE_LIMIT" for entry in parser.error_log):
        raise ValueError(f"page nested deeper than {MAX_DEPTH} elements: the HTML parser stops there")
    return root


def _name_weight(element: lxml_html.HtmlElement) -> int:
    if element.tag in _FURNITURE:
        return -25
    names = f"{element.get('class') or ''} {element.get('id') or ''}".strip()
    if not names:
        return 0
    weight = 25 if _POSITIVE_NAME.search(names) else 0
    if _name_kinds(names.lower())[0]:
        weight -= 25
    return weight


def article_container(root: lxml_html.HtmlElement) -> lxml_html.HtmlElement | None:
    """The element holding the densest run of paragraphs, or None on a page without any.

    Each paragraph of 25+ characters scores 1 + its commas + 1 per 100 characters (at most 3),
    credited fully to its parent and half to its grandparent; class and id names add or
    subtract 25 (readability's scoring, which works in any language).
    """
    scores: dict[lxml_html.HtmlElement, float] = {}
    for paragraph in root.iter(*_PARAGRAPH_TAGS):
        text = paragraph.text_content()
        length = len(text.strip())
        if length < _MIN_PARAGRAPH:
            continue
        score = 1 + text.count(",") + text.count("،") + text.count("，") + min(length // 100, 3)
        parent = paragraph.getparent()
        if parent is None:
            continue
        scores[parent] = scores.get(parent, 0) + score
        grandparent = parent.getparent()
        if grandparent is not None:
            scores[grandparent] = scores.get(grandparent, 0) + score / 2
    best, best_score = None, float("-inf")
    for element, score in scores.items():
        total = score + _name_weight(element)
        if total > best_score:
            best, best_score = element, total
    return best


def _name_kinds(names: str) -> tuple[bool, bool]:
    """(names furniture, names the article) for a lower-cased "class id" string."""
    furniture = content = False
    for token in names.split():
        previous = ""
        for part in token.replace("_", "-").split("-"):
            if part in _CONTENT_WORDS:
                content = True
            elif ((part in _FURNITURE_WORDS and previous not in _LAYOUT_PREFIXES)
                  or (previous, part) in _FURNITURE_PAIRS):
                furniture = True
            previous = part
    return furniture, content


def _is_furniture(element: lxml_html.HtmlElement, verdicts: dict[str, bool]) -> bool:
    tag = element.tag
    if tag in _FURNITURE:
        return True
    attributes = element.attrib
    if not attributes:  # most elements; checked first because this runs for every element
        return False
    if "hidden" in attributes or attributes.get("aria-hidden") == "true":
        return True
    style = attributes.get("style")
    if style and _HIDDEN_STYLE.search(style):
        return True
    if tag in _TEXT_BLOCKS:
        return False
    names = f"{attributes.get('class') or ''} {attributes.get('id') or ''}"
    if len(names) == 1:
        return False
    verdict = verdicts.get(names)
    if verdict is None:  # memoised: a page repeats its class names
        furniture, content = _name_kinds(names.lower())
        verdict = verdicts[names] = furniture and not content
    return verdict


def prune_furniture(root: lxml_html.HtmlElement) -> lxml_html.HtmlElement | None:
    """Remove scripts, hidden parts and page furniture from the tree, in place, sparing the article.

    Returns the article container that was spared (None on a page without paragraphs).
    """
    # C-level removal, keeping the tail text that follows each removed element.
    etree.strip_elements(root, *_ALWAYS_DROP, etree.Comment, etree.ProcessingInstruction, with_tail=False)
    protected: set[lxml_html.HtmlElement] = set()
    container = article_container(root)
    for node in [container, *_body_marked(root)]:
        while node is not None and node not in protected:
            protected.add(node)
            node = node.getparent()
    verdicts: dict[str, bool] = {}
    doomed = []
    walk = etree.iterwalk(root, events=("start",))
    for _, element in walk:
        if element.tag not in _NEVER_DROP and element not in protected and _is_furniture(element, verdicts):
            doomed.append(element)
            walk.skip_subtree()  # everything inside goes with it
    for element in doomed:
        element.drop_tree()
    return container
