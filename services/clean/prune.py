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

from lxml import html as lxml_html

# Never content, whatever the page: removed with everything inside.
_ALWAYS_DROP = frozenset({
    "script", "style", "noscript", "template", "svg", "iframe", "button", "select", "input", "textarea",
    "object", "embed", "canvas", "map", "dialog",
})
# Page furniture by its tag; dropped unless it holds the article.
_FURNITURE = frozenset({"nav", "footer", "aside", "figcaption", "form", "menu"})
_NEVER_DROP = frozenset({"html", "head", "body", "main", "article"})

# Whole words of a class or id that name furniture. The look-behinds keep layout names
# ("has-sidebar", "no-comments", "elementor-widget") from counting.
_FURNITURE_NAME = re.compile(
    r"(?:^|\s|(?<!has)(?<!with)(?<!no)(?<!show)(?<!is)(?<!elementor)(?<!right)(?<!left)[_-])"
    r"(comments?|kommentare?|shariff|share|sharing|sharer|social|socials|related|relatedposts|"
    r"breadcrumbs?|newsletter|cookies?|consent|sidebar|footer|navbar|nav|navigation|menu|submenu|dropdown|"
    r"teasers?|widgets?|popup|modal|subscribe|promo|pagination|pager|rating|login|toolbar|topbar|"
    r"copyright|legal|disclaimer|credits?|sharedaddy|wp-caption|caption|byline|author|bio|meta|"
    r"outbrain|recommended|recommendations|tags|tagcloud|skip|sr-only)"
    r"(?:$|\s|[_-])",
    re.IGNORECASE,
)
# Names that say "this is the article"; an element named both ways is kept.
_CONTENT_NAME = re.compile(r"(?:^|[\s_-])(content|article|post|entry|story|main|body|text|hentry)(?:$|[\s_-])",
                           re.IGNORECASE)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)

# Readability-style class weights for choosing the article container.
_POSITIVE_NAME = re.compile(r"article|body|content|entry|hentry|main|post|text|blog|story|artikel|inhalt|beitrag",
                            re.IGNORECASE)
_PARAGRAPH_TAGS = ("p", "pre", "td", "blockquote")
_MIN_PARAGRAPH = 25  # characters; shorter <p> are captions, buttons and bylines


def parse_html(html: str) -> lxml_html.HtmlElement:
    """An lxml tree of the page. Raises ValueError on a page with no elements."""
    try:
        return lxml_html.fromstring(html)
    except ValueError:
        # lxml refuses a str that still carries an XML encoding declaration.
        return lxml_html.fromstring(html.encode("utf-8"), parser=lxml_html.HTMLParser(encoding="utf-8"))
    except lxml_html.etree.ParserError as exc:
        raise ValueError(f"not an HTML page: {exc}") from exc


def _name_weight(element: lxml_html.HtmlElement) -> int:
    if element.tag in _FURNITURE:
        return -25
    names = f"{element.get('class') or ''} {element.get('id') or ''}".strip()
    if not names:
        return 0
    weight = 25 if _POSITIVE_NAME.search(names) else 0
    if _FURNITURE_NAME.search(names):
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


def _is_furniture(element: lxml_html.HtmlElement) -> bool:
    if element.tag in _FURNITURE:
        return True
    if element.get("hidden") is not None or element.get("aria-hidden") == "true":
        return True
    style = element.get("style")
    if style and _HIDDEN_STYLE.search(style):
        return True
    names = f"{element.get('class') or ''} {element.get('id') or ''}".strip()
    return bool(names and _FURNITURE_NAME.search(names) and not _CONTENT_NAME.search(names))


def prune_furniture(root: lxml_html.HtmlElement) -> None:
    """Remove scripts, hidden parts and page furniture from the tree, in place, sparing the article."""
    for element in list(root.iter(*_ALWAYS_DROP)):
        if element.getparent() is not None:
            element.drop_tree()
    protected: set[lxml_html.HtmlElement] = set()
    node = article_container(root)
    while node is not None:
        protected.add(node)
        node = node.getparent()
    doomed = []
    for element in root.iter():
        is_comment = not isinstance(element.tag, str)  # also processing instructions
        if is_comment or (element.tag not in _NEVER_DROP and element not in protected and _is_furniture(element)):
            doomed.append(element)
    for element in doomed:
        if element.getparent() is not None:  # not already gone with an ancestor
            element.drop_tree()
