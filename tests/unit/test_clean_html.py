"""clean: pruning page furniture, metadata, encodings, on pages written for these tests."""

from __future__ import annotations

import pytest

from services.clean.extract import decode_body, extract_page, main_text
from services.clean.lead import missing_dek, missing_lead
from services.clean.metadata import iso_datetime, page_metadata
from services.clean.prune import article_container, parse_html, prune_furniture
from services.clean.textdump import cut_related_tail, is_author_bio, is_junk_line

ARTICLE = [
    "Le ministre arménien des Affaires étrangères, Ararat Mirzoyan, a reçu mardi à Erevan son homologue "
    "géorgien pour discuter du transit des marchandises entre les deux pays, a indiqué son ministère.",
    "Selon le communiqué, les deux ministres ont évoqué la construction d'un nouveau poste-frontière, "
    "la modernisation de la route vers Tbilissi et la simplification des formalités douanières.",
    "Les camionneurs attendent parfois deux jours au poste de Bagratachen, ont rappelé les transporteurs, "
    "qui demandent depuis des années un guichet unique pour les contrôles sanitaires et douaniers.",
]


def page(wrapper_class: str, extra_head: str = "") -> str:
    paragraphs = "".join(f"<p>{p}</p>" for p in ARTICLE)
    return f"""<html><head><title>Transit : Erevan et Tbilissi - Le Courrier du Caucase</title>{extra_head}</head>
<body class="single has-sidebar">
<nav class="main-menu"><a href="/">Accueil</a><a href="/monde">Monde</a><a href="/eco">Économie</a></nav>
<div class="{wrapper_class}">
  <h1>Transit : Erevan et Tbilissi veulent aller plus vite</h1>
  <div class="entry-meta"><span class="byline">Par Anna Petrossian</span> · 3 mai 2026</div>
  <div class="share-buttons"><a href="#">Partager sur Facebook</a><a href="#">Tweet</a></div>
  {paragraphs}
  <div class="related-posts"><h3>Sur le même sujet</h3>
    <ul><li><a href="/a">Le port de Poti agrandi pour accueillir plus de conteneurs chinois</a></li>
        <li><a href="/b">Bakou et Ankara signent un accord gazier de long terme</a></li></ul></div>
</div>
<div id="comments" class="comments-area"><h3>3 commentaires</h3>
  <p>Très bonne nouvelle pour nos chauffeurs qui attendent des heures à la frontière chaque été, merci.</p></div>
<div class="widget-area"><p>Inscrivez-vous à notre lettre d'information pour recevoir chaque matin l'essentiel
 de l'actualité du Caucase, de la Turquie et de l'Iran.</p></div>
<footer><p>© 2026 Le Courrier du Caucase. Tous droits réservés. 12, rue Roustaveli, Tbilissi.</p></footer>
</body></html>"""


@pytest.mark.parametrize("wrapper", ["post-content", "widget Blog", "container right-sidebar", "article-body"])
def test_html_page_keeps_article_and_drops_furniture(wrapper: str) -> None:
    extracted = extract_page(page(wrapper).encode(), "text/html; charset=utf-8", "https://courrier.example/transit")
    assert extracted.text.split("\n") == ARTICLE, wrapper
    for junk in ("Accueil", "Partager", "Tweet", "Poti", "commentaires", "Très bonne", "lettre d'information",
                 "Tous droits", "Roustaveli"):
        assert junk not in extracted.text, (wrapper, junk)


def test_article_container_is_spared_whatever_its_class() -> None:
    root = parse_html(page("widget Blog"))
    container = article_container(root)
    assert container is not None and container.get("class") == "widget Blog"
    prune_furniture(root)
    assert root.find(".//div[@class='widget Blog']") is not None
    assert root.find(".//nav") is None and root.find(".//footer") is None
    assert root.find(".//div[@id='comments']") is None and root.find(".//div[@class='share-buttons']") is None


def test_metadata_from_json_ld_and_meta_tags() -> None:
    head = """<link rel="canonical" href="/2026/05/03/transit">
<meta property="og:site_name" content="Le Courrier du Caucase">
<meta property="og:image" content="/img/poste-frontiere.jpg">
<meta name="description" content="Les deux pays veulent un guichet unique.">
<meta property="article:modified_time" content="2026-05-03T18:05:00+0400">
<script type="application/ld+json">{"@context": "https://schema.org", "@graph": [
  {"@type": "WebSite", "name": "Courrier"},
  {"@type": "NewsArticle", "headline": "Transit : Erevan et Tbilissi veulent aller plus vite",
   "datePublished": "2026-05-03T09:30:00+04:00",
   "author": [{"@type": "Person", "name": "Anna Petrossian"}, {"@type": "Person", "name": "Levan Beridze"}]}
]}</script>"""
    meta = page_metadata(parse_html(page("post-content", head)), "https://courrier.example/monde/transit")
    assert meta.title == "Transit : Erevan et Tbilissi veulent aller plus vite"
    assert meta.published == "2026-05-03T09:30:00+04:00"
    assert meta.updated == "2026-05-03T18:05:00+04:00"
    assert meta.authors == ["Anna Petrossian", "Levan Beridze"]
    assert meta.canonical_url == "https://courrier.example/2026/05/03/transit"
    assert meta.site_name == "Le Courrier du Caucase"
    assert meta.image == "https://courrier.example/img/poste-frontiere.jpg"
    assert meta.description == "Les deux pays veulent un guichet unique."


def test_metadata_without_head_tags_falls_back_to_the_page() -> None:
    meta = page_metadata(parse_html(page("post-content", '<meta name="author" content="By Anna Petrossian">')),
                         "https://courrier.example/2026/05/03/transit")
    assert meta.title == "Transit : Erevan et Tbilissi veulent aller plus vite"  # the <h1>
    assert meta.published == "2026-05-03"  # htmldate, from the URL and the page; no timezone invented
    assert meta.updated == ""
    assert meta.authors == ["Anna Petrossian"]


@pytest.mark.parametrize(("value", "iso"), [
    ("2026-05-03T09:30:00Z", "2026-05-03T09:30:00+00:00"),
    ("2026-05-03T09:30:00+0400", "2026-05-03T09:30:00+04:00"),
    ("2026-05-03 09:30:00", "2026-05-03T09:30:00"),
    ("2026-05-03", "2026-05-03"),
    ("3 mai 2026", ""),
])
def test_iso_datetime(value: str, iso: str) -> None:
    assert iso_datetime(value) == iso


@pytest.mark.parametrize(("text", "codec", "header"), [
    ("Ça coûte très cher à Zürich, dit l'élève", "cp1252", "text/html; charset=ISO-8859-1"),
    ("Ça coûte très cher à Zürich, dit l'élève", "latin-1", "text/html"),
    ("Министр иностранных дел Армении Арарат Мирзоян", "cp1251", "text/html"),
    ("وزير الخارجية الأرميني أرارات ميرزويان في يريفان", "cp1256", "text/html; charset=windows-1256"),
])
def test_legacy_encodings_decode(text: str, codec: str, header: str) -> None:
    body = f"<html><head><meta charset='{codec}'></head><body><p>{text}</p></body></html>".encode(codec)
    decoded, _ = decode_body(body, header)
    assert text in decoded


def test_utf8_page_with_a_latin1_header_decodes_as_utf8() -> None:
    body = page("post-content").encode("utf-8")
    extracted = extract_page(body, "text/html; charset=ISO-8859-1")
    assert extracted.encoding == "utf-8" and "Affaires étrangères" in extracted.text


@pytest.mark.parametrize("line", ["Foto: Getty Images", "Titelbild: dpa", "Auch lesen: Die Bahn streikt",
                                  "Lesen Sie auch", "aja/PAP", "23.06.2016 um 16:14 Uhr", "3 mai 2026",
                                  "VEA TAMBIÉN: Estrella de la educación", "Photo : AFP"])
def test_credit_and_pointer_lines_are_junk(line: str) -> None:
    assert is_junk_line(line)


@pytest.mark.parametrize("line", ["Foto des Tages zeigt die Grenze bei Bagratachen, wo Lastwagen warten.",
                                  "Mai 2026 wird ein wichtiger Monat für den Transit, sagte der Minister."])
def test_sentences_that_start_like_credits_are_kept(line: str) -> None:
    assert not is_junk_line(line)


@pytest.mark.parametrize("line", [
    "Lea también: Impiden ingreso a Nicaragua a reportero y camarógrafo estadounidense",
    "Read more: Looted colonial art: Germany to set up new contact office",
    "LE PUEDE INTERESAR: La ficha del expresidente en el tribunal de Nueva York",
    "Subscribe now to our eNATION edition for the full story.",
    "Follow The Gleaner on Twitter and Instagram @JamaicaGleaner and on Facebook @GleanerJamaica.",
    "This post contains references to products from one or more of our advertisers.",
    "Anzeige, enthält Affiliate Links",
    "Homepage » Militär » CAE bildet künftig Luftwaffen-Piloten in Bremen aus",
    "Letzte Änderung 14.02.2019", "Aktualisiert am 17.01.2021.", "Crédits photos : Bestimage",
    "Copyright: Gisele Wender",
])
def test_pointer_promo_breadcrumb_and_update_lines_are_junk(line: str) -> None:
    assert is_junk_line(line)


@pytest.mark.parametrize("line", [
    "Werbung nervt. Tracking nervt. Und gerade mobil habe ich keine Zeit, Werbung herunterzuladen.",
    "Retour sur les revues de rang « 1 » ou « 1* » où les chercheurs français « placent » leurs articles.",
    "Le ministre a dit qu'il lirait aussi le rapport avant de signer l'accord avec Tbilissi.",
    "Des milliers d'abonnés ont reçu la lettre de la compagnie, qui annonce une hausse des tarifs dès mai.",
])
def test_sentences_with_promo_words_or_quotes_are_kept(line: str) -> None:
    assert not is_junk_line(line)


@pytest.mark.parametrize("line", [
    "Sign up for our newsletter and never miss a story from the valley.",
    "Get every update straight to your inbox with our free app.",
    "We need your help: support our journalism with a monthly gift.",
    "Ihnen gefällt unser Magazin? Zeigen Sie Ihre Wertschätzung mit einer Spende!",
    "Unterstützen Sie unsere Arbeit mit einem Abo.",
    "Gefällt dir unser Blog? Dann erzähl es weiter.",
    "Zapraszamy do subskrypcji naszego tygodnika.",
    "Puede suscribirse aquí a nuestra newsletter semanal.",
    "(Alle Angaben ohne Gewähr)",
    "Inhaltsverzeichnis", "Table of contents", "Bild anzeigen", "Nächster Artikel", "Next article",
    "Zusatzinformationen:", "Click here to get our weekly digest.", "Alle Fotos der Reise findest du hier.",
    "Cliquez ici pour recevoir nos alertes",
])
def test_site_calls_and_page_controls_are_junk(line: str) -> None:
    assert is_junk_line(line)


@pytest.mark.parametrize("line", [
    "Werden Sie Teil der Gemeinschaft der Produkttester und unterstützen Sie uns dabei, die Rezepte zu verbessern.",
    "Den vollständigen Bericht der Kommission finden Sie hier:",  # what follows is the document
])
def test_a_call_inside_the_story_is_kept(line: str) -> None:
    assert not is_junk_line(line)


def test_related_list_is_cut_only_in_the_second_half() -> None:
    lines = [*ARTICLE, "Sur le même sujet", "Le port de Poti agrandi", "Bakou et Ankara signent"]
    assert cut_related_tail(lines) == ARTICLE
    early = [ARTICLE[0], "À lire aussi", *ARTICLE[1:]]
    assert cut_related_tail(early) == early  # a box after the lead: the story goes on below it


MORE = [
    "Le ministère des Transports a promis de publier d'ici la fin du mois le calendrier des travaux, "
    "en commençant par l'élargissement de la route entre Vanadzor et le poste de Bagratachen.",
    "Les transporteurs géorgiens, eux, attendent surtout la fin des doubles contrôles sanitaires, qui "
    "allongent chaque passage de plusieurs heures pendant les mois d'été, selon leur fédération.",
]


def test_related_box_inside_the_story_cut_and_the_story_resumes() -> None:
    lines = [*ARTICLE, "Sur le même sujet", "Le port de Poti agrandi", "Bakou et Ankara signent", *MORE]
    assert cut_related_tail(lines) == [*ARTICLE, *MORE]
    # one paragraph after the list is the box's blurb or a promotion, not the story going on
    blurb = [*ARTICLE, "Sur le même sujet", "Le port de Poti agrandi", MORE[0]]
    assert cut_related_tail(blurb) == ARTICLE


@pytest.mark.parametrize("header", ["À propos de Transcaucasia Logistics", "Über die Autorin", "Pressekontakt:",
                                    "About the author", "Media contact"])
def test_site_footer_after_the_story_is_cut(header: str) -> None:
    footer = ("Transcaucasia Logistics est un transporteur fondé en 1998 à Gyumri, qui relie chaque "
              "semaine l'Arménie, la Géorgie et la Turquie avec une flotte de soixante camions.")
    assert cut_related_tail([*ARTICLE, header, footer]) == ARTICLE
    assert cut_related_tail([ARTICLE[0], header, *ARTICLE[1:]])[1] == header  # early: a heading of the story


@pytest.mark.parametrize(("line", "bio"), [
    ("Anna Petrossian est journaliste au Courrier du Caucase depuis 2019.", True),
    ("Maria Lopez is a freelance writer based in Yerevan who covers transport.", True),
    ("Karl Weber ist Redakteur im Ressort Wirtschaft.", True),
    ("Die Ministerin ist die Autorin des Berichts.", False),  # an article and a noun, not a name
    ("Ararat Mirzoyan ist seit 2021 Außenminister; sein Sprecher ist Journalist gewesen.", False),
])
def test_author_bio(line: str, bio: bool) -> None:
    assert is_author_bio(line) is bio


def test_author_bio_closing_the_page_is_dropped() -> None:
    bio = "Anna Petrossian est journaliste au Courrier du Caucase depuis 2019 et couvre les transports."
    html = f"""<html><body><article><h1>Transit</h1>{"".join(f"<p>{p}</p>" for p in ARTICLE)}<p>{bio}</p>
</article></body></html>"""
    text = main_text(parse_html(html))
    assert ARTICLE[-1] in text and "Anna Petrossian" not in text


LEAD = ("Erevan et Tbilissi veulent un guichet unique à la frontière d'ici l'été, pour que les camions "
        "ne restent plus deux jours à Bagratachen.")


def lead_page(lead_block: str, after: str = "") -> str:
    paragraphs = "".join(f"<p>{p}</p>" for p in ARTICLE)
    return f"""<html><body><article><header><h1>Transit</h1>{lead_block}</header>
<div class="article-body">{paragraphs}</div></article>{after}</body></html>"""


def test_missing_lead_is_found_before_the_container() -> None:
    root = parse_html(lead_page(f'<p class="article__lead">{LEAD}</p>'))
    container = prune_furniture(root)
    body_text = "\n".join(ARTICLE)
    assert missing_lead(root, container, body_text) == LEAD
    assert missing_lead(root, container, f"{LEAD}\n{body_text}") == ""  # already there


def test_lead_wrapper_keeps_its_text_blocks_and_drops_labels() -> None:
    block = f'<div class="intro"><div>Publicité</div><p>{LEAD}</p></div>'
    root = parse_html(lead_page(block))
    container = prune_furniture(root)
    assert missing_lead(root, container, "\n".join(ARTICLE)) == LEAD


def test_teaser_after_the_article_is_not_a_lead() -> None:
    teaser = '<div class="teaser-text">Bakou et Ankara signent un accord gazier de long terme pour vingt ans.</div>'
    root = parse_html(lead_page("", after=teaser))
    container = prune_furniture(root)
    assert missing_lead(root, container, "\n".join(ARTICLE)) == ""


DEK = "Les deux capitales promettent un guichet unique à la frontière avant l'été, sans dire qui le paiera."


def dek_page(masthead: str = "", headline: str = "<h1>Transit : Erevan et Tbilissi pressés</h1>") -> str:
    paragraphs = "".join(f"<p>{p}</p>" for p in ARTICLE)
    return f"""<html><body>{masthead}<article><header>{headline}<h2>{DEK}</h2></header>
<div class="article-body">{paragraphs}</div></article></body></html>"""


def test_unnamed_dek_under_the_headline_is_recovered() -> None:
    root = parse_html(dek_page())
    container = prune_furniture(root)
    assert missing_dek(root, container, "\n".join(ARTICLE)) == DEK
    assert missing_dek(root, container, "\n".join([DEK, *ARTICLE])) == ""  # already there


def test_a_sites_tagline_under_its_linked_name_is_no_dek() -> None:
    masthead = ('<div class="masthead"><h1><a href="/">Le Courrier du Caucase</a></h1>'
                "<p>Le blog des routes et des frontières du Caucase du Sud.</p></div>")
    root = parse_html(dek_page(masthead=masthead, headline="<h2>Transit</h2>"))
    container = prune_furniture(root)
    assert missing_dek(root, container, "\n".join(ARTICLE)) == ""


def test_heading_named_like_furniture_is_kept() -> None:
    html = lead_page('<h2 id="nav_transit_1">Navettes et camions : ce qui change</h2>')
    root = parse_html(html)
    prune_furniture(root)
    assert root.find(".//h2[@id='nav_transit_1']") is not None


def test_blogger_post_without_paragraphs_is_spared() -> None:
    post = "<br>".join(ARTICLE)
    html = f"""<html><body><div class="widget Blog"><div class="post hentry">
<div class="post-body entry-content">{post}</div></div></div>
<div class="sidebar"><p>{ARTICLE[0]} Archives, catégories et liens vers d'autres blogs amis du Caucase.</p>
<p>Un autre billet du même auteur, publié en avril, sur la route de Tbilissi et ses travaux.</p></div>
</body></html>"""
    text = main_text(parse_html(html))
    for sentence in ARTICLE:
        assert sentence in text
    assert "Archives" not in text


def test_page_wrapped_in_a_form_keeps_its_posts() -> None:
    # ASP.NET wraps the whole page in one <form>; a forum thread lives inside it, beside the container
    posts = "".join(f'<div class="post"><div class="author">membre{i}</div><div class="body">{p}</div></div>'
                    for i, p in enumerate(ARTICLE))
    html = f"""<html><body><div class="header"><a href="/">Forum</a></div>
<form id="PageForm" method="post"><h1>Transit vers Tbilissi</h1>{posts}<input type="submit" value="Répondre"></form>
<div class="content"><p>{MORE[0]}</p><p>{MORE[1]}</p></div></body></html>"""
    root = parse_html(html)
    prune_furniture(root)
    assert all(sentence in root.text_content() for sentence in ARTICLE)


def test_a_teaser_block_is_left_to_the_extractor() -> None:
    html = f"""<html><body><article><h1>Transit</h1><div class="news-teaser"><p>{LEAD}</p></div>
<div class="article-body">{"".join(f"<p>{p}</p>" for p in ARTICLE)}</div></article></body></html>"""
    root = parse_html(html)
    prune_furniture(root)
    assert root.find(".//div[@class='news-teaser']") is not None


def test_date_lines_and_banners_are_furniture() -> None:
    html = f"""<html><body><article><div class="publish-date">Publié le 3 mai 2026 à 14 h 05</div><h1>Transit</h1>
<div class="promo-banner">Offre spéciale : trois mois pour un euro</div>
<div class="article-body">{"".join(f"<p>{p}</p>" for p in ARTICLE)}</div></article></body></html>"""
    root = parse_html(html)
    prune_furniture(root)
    text = root.text_content()
    assert "3 mai 2026" not in text and "Offre spéciale" not in text
    assert ARTICLE[0] in text


def test_one_word_kicker_over_the_headline_is_dropped() -> None:
    body = "".join(f"<p>{p}</p>" for p in ARTICLE)
    html = f"""<html><body><article><p>Politique</p><h1>Erevan et Tbilissi veulent aller plus vite</h1>
{body}</article></body></html>"""
    assert main_text(parse_html(html)).split("\n")[0] == "Erevan et Tbilissi veulent aller plus vite"


RAW_PRUNE_CASES = """<html><body><div id="main"><h1>Titre</h1><p>Texte de l'article.</p>
<div id="comments"><p>dropped: comments by id</p></div><div id="commentary"><p>kept: commentary</p></div>
<section class="post-comments x"><p>dropped: post-comments class</p></section>
<ol class="comment-list"><li>dropped: comment list by class</li></ol><ul id="comol"><li>dropped: list id</li></ul>
<ul id="disqus_thread"><li>kept before conversion: disqus id on a list</li></ul>
<div id="disqus_thread"><p>dropped: disqus div</p></div><details class="Comments"><p>dropped: details</p></details>
<span class="comment"><b>kept: a span</b></span>
<div class="infinite-scroll"><p>dropped: scroll container without h1</p></div>
<div class="infinite-scroll"><h1>kept: scroll container with the h1</h1></div>
<aside id="mvp-post-add-box"><h1>dropped: appended article even with an h1</h1></aside>
<section class="elementor-share-buttons"><p>dropped: share buttons</p></section>
<span class="elementor-share-buttons">kept: a span</span>tail kept</div></body></html>"""


def test_raw_tree_pruning_walk_equals_trafilaturas_xpaths() -> None:
    """The plain walks in extract.py remove exactly what trafilatura's XPath expressions remove."""
    from lxml import etree
    from trafilatura.htmlprocessing import convert_tags, prune_unwanted_nodes, tree_cleaning
    from trafilatura.xpaths import RAW_TREE_PRUNE_XPATH, REMOVE_COMMENTS_AND_LISTS_XPATH, REMOVE_COMMENTS_XPATH

    from services.clean import extract

    ours, theirs = parse_html(RAW_PRUNE_CASES), parse_html(RAW_PRUNE_CASES)
    extract._drop(ours, extract._RAW_PRUNE_TAGS, extract._is_appended_or_comments)
    prune_unwanted_nodes(theirs, RAW_TREE_PRUNE_XPATH + REMOVE_COMMENTS_AND_LISTS_XPATH)
    assert etree.tostring(ours) == etree.tostring(theirs)
    text = ours.text_content()
    assert "dropped" not in text and text.count("kept") == 6 and "tail kept" in text

    ours = convert_tags(tree_cleaning(ours, extract._OPTIONS), extract._OPTIONS)
    theirs = convert_tags(tree_cleaning(theirs, extract._OPTIONS), extract._OPTIONS)
    extract._drop(ours, extract._CONVERTED_COMMENT_TAGS, extract._is_comments)
    prune_unwanted_nodes(theirs, REMOVE_COMMENTS_XPATH)
    assert etree.tostring(ours) == etree.tostring(theirs)
    assert "disqus id on a list" not in ours.text_content()


def _trafilatura_pages() -> list[str]:
    """Pages that exercise the raw-tree pruning: comment sections (by id, by class, as a list),
    an infinite-scroll container of follow-up articles, a share-button block, and a page too thin
    for the main extractor, where the fallbacks decide."""
    follow_up = ("<div class='infinite-scroll'><h2>Article suivant</h2><p>Un autre article, ajouté au bas de la "
                 "page par le thème du site, qui parle de tout autre chose.</p></div>")
    comment_list = ("<ol class='comment-list'><li>Premier commentaire, assez long pour être un paragraphe de "
                    "lecteur qui donne son avis.</li><li>Second avis d'un lecteur, tout aussi long.</li></ol>")
    share = "<div class='elementor-share-buttons'><span>Partager cet article avec vos amis sur les réseaux</span></div>"
    thin = "<html><body><div><span>Bref.</span><div>" + ARTICLE[0] + "</div></div></body></html>"
    return [page("post-content"), page("entry-content", ""), page("post-content").replace(
        "</body>", follow_up + comment_list + share + "</body>"), thin]


@pytest.mark.parametrize("index", range(4))
def test_step_by_step_trafilatura_equals_its_extract(index: int) -> None:
    """main_text calls trafilatura's steps itself (services/clean/extract.py): on the same pruned
    tree, the fast run and the fallback run must give what trafilatura.extract gives."""
    import trafilatura

    from services.clean import extract

    root = parse_html(_trafilatura_pages()[index])
    prune_furniture(root)
    head = root.find("head")
    if head is not None:
        head.drop_tree()
    expected_fast = trafilatura.extract(root, fast=True, include_comments=False, favor_precision=True) or ""
    expected_full = trafilatura.extract(root, fast=False, include_comments=False, favor_precision=True) or ""
    run = extract._main_extractor(root)
    fast_text = extract._as_text(run.body)
    assert fast_text == expected_fast
    assert extract._with_fallbacks(run) == expected_full
    assert "Premier commentaire" not in fast_text and "Un autre article" not in fast_text
