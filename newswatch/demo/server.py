"""A local HTTP server for the demo news sites: RSS/Atom feeds and article pages full of the
junk real sites carry (menus, cookie banners, share widgets, related lists, comment threads with
votes, legal footers). Articles are published over time; ``pace`` scales every delay.

Routes: /robots.txt, /<site>/feed.xml (RSS) or /<site>/atom.xml (Atom), /<site>/<slug>.html.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Sequence
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from newswatch.demo.content import ARTICLES, SITES, DemoArticle, Site

_SHARE = {
    "fr": "Partager : Facebook · X · WhatsApp · E-mail",
    "ar": "شارك على فيسبوك · تويتر · واتساب",
    "en": "Share this article: Facebook · X · LinkedIn · Email",
    "ru": "Поделиться: ВКонтакте · Telegram · Одноклассники",
}
_COOKIES = {
    "fr": "Nous utilisons des cookies pour mesurer l'audience et personnaliser les publicités. "
          "Accepter les cookies · Paramétrer",
    "ar": "يستخدم هذا الموقع ملفات تعريف الارتباط لتحسين تجربتك. موافق",
    "en": "We use cookies to improve your experience and to show personalised ads. Accept all cookies · Settings",
    "ru": "Мы используем файлы cookie, чтобы сайт работал лучше. Принять",
}
_MENU = {
    "fr": ["Accueil", "International", "Politique", "Économie", "Culture", "Sport", "Vidéos"],
    "ar": ["الرئيسية", "أخبار عربية", "أخبار دولية", "اقتصاد", "رياضة", "فن وثقافة"],
    "en": ["Home", "World", "Politics", "Business", "Energy", "Opinion", "Podcasts"],
    "ru": ["Главная", "Политика", "Экономика", "Общество", "Культура", "Спорт"],
}
_RELATED = {
    "fr": ["Les prix de l'énergie repartent à la hausse", "Cinq idées de randonnées pour l'automne",
           "La rentrée littéraire en dix romans"],
    "ar": ["ارتفاع أسعار الذهب في الأسواق المحلية", "نصائح للحفاظ على الصحة في الشتاء",
           "افتتاح مهرجان السينما الدولي"],
    "en": ["Oil prices edge higher ahead of producers' meeting", "Ten hiking trails worth the climb",
           "The best new novels of the season"],
    "ru": ["Цены на нефть снова растут", "Пять маршрутов для осенних прогулок", "Лучшие новые романы сезона"],
}
_COMMENTS = {
    "fr": [("Jean-Luc", "+12", "Enfin une bonne nouvelle, espérons que ça dure !"),
           ("Marie_75", "-3", "Encore des promesses, on a déjà vu ce film mille fois..."),
           ("Observateur", "+1", "Article très clair, merci pour ce suivi.")],
    "ar": [("أبو أحمد", "+7", "نتمنى أن يعم السلام المنطقة كلها."), ("سامي", "-2", "كلام لا جديد فيه.")],
    "en": [("kevin_h", "+15", "About time someone said it. Great reporting as always."),
           ("Realist42", "-4", "Nothing will change, mark my words.")],
    "ru": [("Сергей_П", "+5", "Хорошо бы, чтобы договорились уже."), ("Аноним", "-1", "Опять одни разговоры.")],
}
_FOOTER = {
    "fr": "© 2026 {name}. Tous droits réservés. 12 rue des Imprimeurs, 75002 Paris. Tél. +33 1 40 00 00 00. "
          "Mentions légales · Politique de confidentialité · Contact",
    "ar": "© 2026 {name}. جميع الحقوق محفوظة. القاهرة، شارع الصحافة 14. هاتف +20 2 2575 0000",
    "en": "© 2026 {name}. All rights reserved. 1 Harbour Street, Baku. Tel +994 12 000 00 00. "
          "Terms · Privacy · Advertise with us",
    "ru": "© 2026 {name}. Все права защищены. Москва, ул. Печатников, 7. Тел. +7 495 000-00-00",
}
_COMMENTS_TITLE = {"fr": "{n} commentaires", "ar": "{n} تعليقات", "en": "{n} comments", "ru": "Комментарии ({n})"}
_READ_ALSO = {"fr": "À lire aussi", "ar": "اقرأ أيضا", "en": "Related stories", "ru": "Читайте также"}


def _site(site_id: str) -> Site:
    return next(s for s in SITES if s.id == site_id)


def article_path(article: DemoArticle) -> str:
    return f"/{article.site}/{article.slug}.html"


def feed_path(site: Site) -> str:
    return f"/{site.id}/{'atom' if site.feed == 'atom' else 'feed'}.xml"


def render_article(article: DemoArticle, base_url: str, published: float) -> str:
    site = _site(article.site)
    lang = site.lang
    esc = html.escape
    direction = ' dir="rtl"' if lang == "ar" else ""
    menu = "".join(f'<li><a href="/{site.id}/">{esc(m)}</a></li>' for m in _MENU[lang])
    related = "".join(f'<li><a href="/{site.id}/archives.html">{esc(t)}</a></li>' for t in _RELATED[lang])
    comments = "".join(
        f'<li class="comment"><span class="author">{esc(who)}</span> <span class="votes">{votes}</span>'
        f'<time>{time.strftime("%d/%m/%Y %H:%M", time.gmtime(published + 3600))}</time><p>{esc(text)}</p>'
        f'<a class="reply" href="#">Reply</a></li>'
        for who, votes, text in _COMMENTS[lang]
    )
    body = "".join(f"<p>{esc(p)}</p>\n" for p in article.paragraphs)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(published))
    url = base_url + article_path(article)
    return f"""<!DOCTYPE html>
<html lang="{lang}"{direction}>
<head>
<meta charset="{site.charset}">
<title>{esc(article.title)} | {esc(site.name)}</title>
<link rel="canonical" href="{url}">
<meta property="og:title" content="{esc(article.title)}">
<meta property="og:site_name" content="{esc(site.name)}">
<meta property="article:published_time" content="{iso}">
<meta name="author" content="{esc(article.author)}">
</head>
<body>
<div class="cookie-banner" id="cookies"><p>{esc(_COOKIES[lang])}</p><button>OK</button></div>
<header><div class="logo">{esc(site.name)}</div><nav><ul class="menu">{menu}</ul></nav></header>
<main>
<article>
<h1>{esc(article.title)}</h1>
<div class="byline"><span class="author">{esc(article.author)}</span> · <time datetime="{iso}">{iso[:10]}</time></div>
<div class="share-top">{esc(_SHARE[lang])}</div>
<div class="article-body">
{body}</div>
<div class="share-bottom">{esc(_SHARE[lang])}</div>
</article>
<aside class="related"><h3>{esc(_READ_ALSO[lang])}</h3><ul>{related}</ul></aside>
<section id="comments" class="comments"><h3>{esc(_COMMENTS_TITLE[lang].format(n=len(_COMMENTS[lang])))}</h3>
<ol>{comments}</ol></section>
</main>
<footer><p>{esc(_FOOTER[lang].format(name=site.name))}</p></footer>
</body>
</html>
"""


def render_feed(site: Site, items: list[tuple[DemoArticle, float]], base_url: str) -> str:
    esc = html.escape
    if site.feed == "atom":
        entries = "".join(
            f"<entry><title>{esc(a.title)}</title><link href=\"{base_url}{article_path(a)}\"/>"
            f"<id>{base_url}{article_path(a)}</id>"
            f"<updated>{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))}</updated></entry>"
            for a, t in items
        )
        return (f'<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
                f'xml:lang="{site.lang}"><title>{esc(site.name)}</title><id>{base_url}/{site.id}/</id>'
                f"<updated>{time.strftime('%Y-%m-%dT%H:%M:%SZ')}</updated>{entries}</feed>")
    entries = "".join(
        f"<item><title>{esc(a.title)}</title><link>{base_url}{article_path(a)}</link>"
        f"<guid>{base_url}{article_path(a)}</guid><pubDate>{formatdate(t, usegmt=True)}</pubDate></item>"
        for a, t in items
    )
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>{esc(site.name)}'
            f"</title><link>{base_url}/{site.id}/</link><language>{site.lang}</language>{entries}"
            f"</channel></rss>")


class DemoSites:
    """The sites' state: when the server started, and how fast time runs."""

    def __init__(self, pace: float = 1.0, articles: Sequence[DemoArticle] = ARTICLES) -> None:
        self.pace = pace
        self.articles = tuple(articles)
        self.started = time.time()

    def published(self) -> list[tuple[DemoArticle, float]]:
        now = time.time()
        out = []
        for article in self.articles:
            at = self.started + article.delay * self.pace
            if at <= now:
                out.append((article, at))
        return out

    def handle(self, path: str, base_url: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a path."""
        if path == "/robots.txt":
            return 200, "text/plain", b"User-agent: *\nDisallow: /private/\n"
        live = self.published()
        for site in SITES:
            if path == feed_path(site):
                items = sorted((x for x in live if x[0].site == site.id), key=lambda x: -x[1])
                kind = "application/atom+xml" if site.feed == "atom" else "application/rss+xml"
                return 200, f"{kind}; charset=utf-8", render_feed(site, items, base_url).encode("utf-8")
        for article, at in live:
            if path == article_path(article):
                site = _site(article.site)
                page = render_article(article, base_url, at).encode(site.charset)
                # vestnik's server forgets the charset in its header: the <meta> tag must be used.
                header = "text/html" if site.id == "vestnik" else f"text/html; charset={site.charset}"
                return 200, header, page
        return 404, "text/html; charset=utf-8", b"<html><body><h1>404 Not Found</h1></body></html>"


def make_server(host: str, port: int, pace: float = 1.0,
                articles: Sequence[DemoArticle] = ARTICLES) -> tuple[ThreadingHTTPServer, DemoSites]:
    sites = DemoSites(pace, articles)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            base = f"http://{self.headers.get('host') or f'{host}:{port}'}"
            status, kind, body = sites.handle(self.path.split("?")[0], base)
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet: the pipeline logs fetches
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server, sites


def serve_in_thread(host: str, port: int, pace: float = 1.0,
                    articles: Sequence[DemoArticle] = ARTICLES) -> tuple[ThreadingHTTPServer, DemoSites]:
    server, sites = make_server(host, port, pace, articles)
    threading.Thread(target=server.serve_forever, name="demo-sites", daemon=True).start()
    return server, sites


def sources_yaml(base_url: str, poll_seconds: float) -> str:
    """A sources file listing every demo site's feed."""
    lines = ["sources:"]
    for site in SITES:
        lines += [f"  - id: {site.id}", f"    feeds: [{base_url}{feed_path(site)}]", f"    lang: {site.lang}",
                  f"    poll_seconds: {poll_seconds}"]
    return "\n".join(lines) + "\n"
