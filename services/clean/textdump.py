"""Plain-text page dumps → article: drop the site's junk lines, keep every article sentence.

Some sources hand us the text of a page, not its HTML: the menus, share prompts, comment
threads and legal footers are still in it, as lines. The rules here are about the shape of
lines, not about one site: the article is the stretch between the first and the last
sentence-like line; outside it, short lines are junk; inside it, known boilerplate lines,
runs of menu-like short lines, and everything from a comment-section header on are junk.
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"""[.!?…:;"»”)\]'’]\s*$""")

# Share prompts, reading-time badges, "read also" links, empty widgets: short lines only.
_SHORT_JUNK = re.compile(
    r"""^\W*(
        spread\ the\ love | share(\ this(\ article|\ story)?)?(\ on\ \w+)? | tweet | pin\ it | email |
        partager(\ (cet|l')\ article|\ sur\ \w+)? | partagez(\ cet\ article)? | imprimer | print |
        teilen | compartir | condividi | поделиться | شارك(\ على\ \w+)? | مشاركة | paylaş |
        leave\ a\ (reply|comment) | laisser\ un\ commentaire | laissez\ un\ commentaire |
        reply | répondre | antworten | ответить | رد |
        no\ data | no\ videos?\ available | loading\.* | chargement\.* |
        (lire|à\ lire|voir)\ aussi | read\ (more|also) | related(\ articles|\ stories|\ posts)? |
        sur\ le\ même\ sujet | même\ (sujet|catégorie|auteur) | читайте\ также | اقرأ\ أيضا | اقرأ\ أيضاً |
        \d+\s*(minutes?|min)\.?\ (de\ lecture|read|read\ time) | temps\ de\ lecture.* |
        source | sources | tags? | mots-clés | étiquettes | advertisement | publicité | реклама | إعلان |
        abonnez-vous.* | subscribe.* | s'abonner.* | подпишитесь.* | اشترك.* |
        nos\ chaînes\ d'information | follow\ us.* | suivez-nous.* |
        social\ media\ auto\ publish.* | powered\ by.* | créé\ par.* | designed\ by.* | réalisé\ par.* |
        inhaltsverzeichnis | table\ of\ contents | sommaire | índice | spis\ treści | содержание |
        bild\ anzeigen | show\ image | view\ image | bild\ vergrößern | zum\ vergrößern\ klicken |
        (vorschau\ auf\ den\ )?nächste[nr]?\ artikel | vorheriger\ artikel | (next|previous)\ (article|post|story) |
        article\ (suivant|précédent) | artículo\ (siguiente|anterior) |
        zusatzinformationen | additional\ information
    )\W*$""",
    re.IGNORECASE | re.VERBOSE,
)

# Lines that are junk whatever their length: legal footers, cookie notices, social-icon runs.
_ANY_JUNK = re.compile(
    r"""(
        © | \(c\)\s*\d{4} | all\ rights\ reserved | tous\ droits\ réservés | alle\ rechte\ vorbehalten |
        todos\ los\ derechos\ reservados | все\ права\ защищены | جميع\ الحقوق\ محفوظة |
        la\ reproduction\ de\ tout\ matériel | reproduction\ (interdite|prohibited) |
        nécessite\ une\ autorisation\ écrite | without\ (prior\ )?written\ permission |
        (we|this\ site|ce\ site|nous)\ (use|utilis\w*)\ (des\ )?cookies | accept(er)?\ (all\ )?(les\ )?cookies |
        pour\ laisser\ des\ commentaires | to\ leave\ a\ comment | must\ be\ logged\ in |
        ^\W*(abonnez-vous|inscrivez-vous|subscribe\ to|sign\ up\ for|подпишитесь|اشترك)\b |
        le\ commentaire\ a\ été\ supprimé | comment\ (has\ been|was)\ deleted
    )""",
    re.IGNORECASE | re.VERBOSE,
)

# Photo credits, "read also" pointers and lines that are only a date, a time or an agency
# code ("aja/PAP", "dpa/AFP"): captions and signposts around the text, in the languages seen.
_CREDIT_OR_POINTER = re.compile(
    r"""^\W*(
        (foto|fotos|bild|bilder|photo|photos|image|images|quelle|titelbild|credit|crédits?|fuente|źródło|фото)
            (\s*[:©/].*)? |
        (crédits?\ photos?|photo\ credits?|bildnachweis|beitragsbild|image\ illustrative|copyright)\s*:.* |
        (letzte\ änderung|aktualisiert(\ am)?|zuletzt\ aktualisiert|last\ (updated|modified)|updated(\ on)?|
            mis\ à\ jour(\ le)?|actualizado(\ el)?|release\ date|news\ date)\s*:?\s*[\d\s./:-]* |
        (auch|mehr)\s+(lesen|zum\s+thema).* | weitere\s+(informationen|artikel|beiträge|themen).* |
        das\s+könnte\s+(sie|dich)\s+auch\s+interessieren.* | lesen\s+sie\s+(auch|mehr).* |
        you\s+may\s+also\s+like.* | see\s+also.* | (ver|vea|lee|lea)\s+también.* |
        (zobacz|czytaj)\s+(też|także|również).* | à\s+lire\s+également.* |
        \d{1,2}[./\s]\s*(\w+|\d{1,2})[./\s]\s*\d{2,4}(\s*([,|-]|um|à|at|a\s+las)?\s*\d{1,2}[:.h]\s*\d{2}(\s*uhr)?)? |
        \d{1,2}[:.]\d{2}\s*(uhr|am|pm)? |
        [a-z]{2,4}/[a-z]{2,5}
    )\W*$""",
    re.IGNORECASE | re.VERBOSE,
)

# A pointer to another story: "Lea también: <headline>", "Read more: <headline>". Any length
# a headline has; the label is what makes it a pointer.
_POINTER_LABEL = re.compile(
    r"""^\W*(
        (lea|lee|vea|ver|mira)\ (también|más) | (le|te)\ puede\ interesar | puedes\ ver | más\ sobre |
        read\ (more|also|next) | see\ also | related | also\ read | (à\ )?lire\ (aussi|également) | voir\ aussi |
        lesen\ sie\ (auch|hier|mehr) | mehr\ zum\ thema | auch\ interessant | dowiedz\ się\ więcej |
        (czytaj|zobacz)\ (też|także|również) | leia\ também | veja\ também | leggi\ anche | читайте\ также |
        اقرأ\ أيضا | اقرأ\ أيضاً
    )\s*[:»>-]""",
    re.IGNORECASE | re.VERBOSE,
)
# The site speaking about itself: subscription and newsletter calls, app and social-media
# prompts, advertising and affiliate notices, paywall notes. Matched inside lines of up to
# _JUNK_MAX_WORDS words, where they are the whole point of the line.
_PROMO = re.compile(
    r"""(
        \bsubscribe\ (now|today|here|to\ (our|the))\b | \bsign\ up\ (here|now|for\ our|to\ our)\b |
        \balready\ a\ subscriber\b | \bfor\ the\ full\ story\b | \bto\ view\ the\ full\ story\b |
        \bfollow\ (us|the\ \w+|@\w+)\ on\ (twitter|facebook|instagram|x)\b |
        \bdownload\ (the|our)\ [\w\ ]{0,20}apps?\b | \bletters?\ to\ the\ editor\b | \bour\ advertisers\b |
        \bwe\ may\ (receive|earn)\ (a\ )?(compensation|commission) |
        \bzum\ newsletter\b | \bnewsletter\ (abonnieren|anmelden|bestellen)\b | \baffiliate[-\ ]links?\b |
        ^\W*(werbung|anzeige)\s*([:.|,]|$) | \bunterstütze\ \w+\ (bereits|jetzt|mit)\b |
        \bsuscr[ií]bete\b | \bhazte\ (miembro|socio)\b | \b(canal|grupo)\ de\ (telegram|youtube|whatsapp)\b |
        \bnuestro\ canal\ de\b | \binscrivez-vous\ à\ (notre|la)\ newsletter\b |
        \bподпишитесь\ на\ наш\b |
        \bsign(ing)?\ up\ (to|for)\ (our|the)\ newsletter\b | \bnever\ miss\ (the\ latest|a\ story|an?\ \w+)\b |
        \bstraight\ to\ your\ (phone|inbox)\b | \bwe\ need\ your\ (help|support)\b |
        \bsupport\ (us|our\ (work|journalism|reporting))\b | \b(donate|spenden)\ (now|today|jetzt)\b |
        \bjetzt\ spenden\b | \bzeigen\ sie\ ihre\ wertschätzung\b |
        \bunterstützen\ sie\ (unsere\ arbeit|unabhängigen\ journalismus)\b |
        \bgefällt\ (dir|ihnen|euch)\ unser\b | \bexklusive\ angebote\b | \bexclusive\ (offers|deals)\b |
        \bzapraszamy\ (też\ |również\ )?do\ subskrypcji\b | \bsuscribirse\b[^.]{0,30}\bnewsletter\b |
        \balle\ angaben\ ohne\ gewähr\b |
        \b(click|tap)\ here\b | \bhier\ klicken\b | \bklicken\ sie\ hier\b | \bcliquez\ ici\b |
        \bhaga\ clic\ aquí\b | \b(findest\ du|finden\ sie|gibt\ es|geht\ es|geht's|geht’s)\ hier\s*[.!]?\s*$
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_JUNK_MAX_WORDS = 40  # longer lines are running text, whatever phrase they hold
# Breadcrumbs: "Home » Politics » ..." (two or more separators; a quotation's « » is not one).
_BREADCRUMB = re.compile(r"^(?!.*«)[^»›]{1,60}\s[»›]\s[^»›]{1,80}\s[»›]\s")

_SOCIAL = ("facebook|fb|twitter|x|telegram|youtube|instagram|tiktok|dzen|spotify|vk|vkontakte|whatsapp|"
           "linkedin|pinterest|reddit|rss|threads|mastodon|viber|ok|email|e-mail|google\\+?|flipboard")
_SOCIAL_RUN = re.compile(rf"^(?:\W*(?:{_SOCIAL}))+\W*$", re.IGNORECASE)
_PHONE = re.compile(r"^\W*(tel|tél|phone|fax|тел)?\.?\s*:?\s*\+?\d[\d\s().\-/]{6,}\d\W*$", re.IGNORECASE)
_VOTE = re.compile(r"^\s*(\d+\.\s*)?[+\-−]?\d+\s*$")
_TIMESTAMP = re.compile(r"^\s*\d{1,2}\s+\w+\s+\d{4}\s*(,|à|at|в)?\s*\d{1,2}\s*[:h]\s*\d{2}\s*$", re.IGNORECASE)
_COMMENT_HEADER = re.compile(
    r"""^\W*(
        \d+\s+(commentaires?|comments?|kommentare?|comentarios?|комментари\w*|تعليقات?|تعليق|yorum\w*|reacties) |
        (commentaires?|comments?|kommentare?|comentarios?|комментари\w*|تعليقات?|yorum\w*)(\s*\(\d+\))? |
        leave\ a\ (reply|comment) | laisser\ un\ commentaire | ajouter\ un\ commentaire | add\ a\ comment |
        cher\ lecteur,?\ pour\ laisser\ des\ commentaires.* | dear\ reader.*comment.*
    )\W*$""",
    re.IGNORECASE | re.VERBOSE,
)


def _gate(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """A looser copy of a case-insensitive pattern, for lower-cased text, without word boundaries.

    Searching many phrases inside a line is slow when each may start anywhere: without
    IGNORECASE and leading \\b the regex engine skips ahead by first character, 3–5× faster.
    The exact pattern then runs only on the few lines the gate lets through.
    """
    return re.compile(pattern.pattern.replace(r"\b", ""), re.VERBOSE)


_PROMO_GATE = _gate(_PROMO)
_ANY_JUNK_GATE = _gate(_ANY_JUNK)


def words(line: str) -> int:
    return len(_WORD.findall(line))


def is_sentence_like(line: str) -> bool:
    """A line of running text: long enough, or ended as a sentence is."""
    n = words(line)
    return n >= 20 or (n >= 7 and bool(_SENTENCE_END.search(line.strip())))


# A full stop, question or exclamation mark (Latin, Arabic, CJK, Devanagari), closing quotes allowed.
_FULL_STOP = re.compile(r"""[.!?…؟。！？।][\s"»”)\]'’]*$""")
SHORT_SENTENCE_WORDS = 3


def is_short_sentence(line: str) -> bool:
    """A sentence too short for ``is_sentence_like``: a wire flash, one line of a brief.

    Three words or more, ended by a full stop or a question or exclamation mark (a label, a menu
    item or a headline is not ended so)."""
    stripped = line.strip()
    return words(stripped) >= SHORT_SENTENCE_WORDS and bool(_FULL_STOP.search(stripped))


def is_junk_line(line: str) -> bool:
    """Boilerplate whatever the site: share prompts, legal footers, cookie notices, social icons."""
    stripped = line.strip()
    if not stripped:
        return True
    count = words(stripped)
    if count > _JUNK_MAX_WORDS:  # running text; every rule below is for shorter lines
        return False
    if count <= 8 and (_SHORT_JUNK.match(stripped) or _SOCIAL_RUN.match(stripped)
                       or _PHONE.match(stripped) or _VOTE.match(stripped)
                       or _COMMENT_HEADER.match(stripped)
                       or _TIMESTAMP.match(stripped)):
        return True
    if len(stripped) < 80 and _CREDIT_OR_POINTER.match(stripped):
        return True
    if _POINTER_LABEL.match(stripped) or _BREADCRUMB.match(stripped):
        return True
    lowered = stripped.lower()
    return bool((_PROMO_GATE.search(lowered) and _PROMO.search(stripped))
                or (_ANY_JUNK_GATE.search(lowered) and _ANY_JUNK.search(stripped)))


# Headers of the "more from us" lists that follow an article, in the languages seen in news.
_RELATED_HEADER = re.compile(
    r"""^\W*(
        auch\ interessant | .*\b(könnte|dürfte|könnten)\ (dich|sie|euch)\ (auch\ )?interessieren |
        mehr\ (zum\ thema|themen|dazu|artikel|news|nachrichten|aus\ de[rm]) |
        weitere\ (artikel|beiträge|themen|news|nachrichten|aktuelle|infos|meldungen|informationen) |
        (empfohlene|ähnliche|verwandte|beliebte|passende)\ (beiträge|artikel|themen|posts) |
        schon\ gelesen | zum\ weiterlesen | weiterlesen | lesen\ sie\ (auch|mehr) | entdecke\ weitere | meistgelesen |
        related(\ (articles?|posts?|stories|content|coverage|news|reading))? |
        (you\ )?(may|might)\ (also\ )?(like|enjoy|be\ interested) | more\ (from|on|stories|news|articles|like\ this) |
        recommended(\ for\ you|\ articles?|\ stories)? | read\ (more|next|also) | trending(\ now)? |
        popular\ (posts|stories|articles) | most\ (read|popular) | further\ reading | see\ also |
        (à\ )?lire\ aussi | sur\ le\ même\ sujet | articles?\ (similaires|liés|associés|recommandés) |
        vous\ (aimerez|pourriez\ aimer) | les\ plus\ lus | dans\ la\ même\ rubrique | à\ voir\ aussi |
        (también\ )?(te|le)\ puede\ interesar | (lea|lee)\ (también|más) | más\ (sobre|noticias|leídas) |
        (noticias|artículos|notas)\ relacionad[ao]s | leggi\ anche | articoli\ correlati | potrebbe\ interessarti |
        leia\ também | veja\ também | notícias\ relacionadas |
        czytaj\ (też|także|również) | zobacz\ (też|także|również) |
        polecane | читайте\ также | по\ теме | похожие\ (новости|статьи|материалы) | ещё\ по\ теме |
        اقرأ\ أيضا | اقرأ\ أيضاً | مواضيع\ ذات\ صلة | أخبار\ ذات\ صلة | ilgili\ haberler | bunlar\ da\ ilginizi
    )\b""",
    re.IGNORECASE | re.VERBOSE,
)
_RELATED_HEADER_MAX_WORDS = 9


# Headers of what a site appends after the article about itself or its author: "About us", "Über
# die Autorin", "Kontakt", "Press contact", "Media contact" (a press release's "About <company>" footer).
# Prose follows them, so they end the article; only a short header line counts.
_FOOTER_HEADER = re.compile(
    r"""^\W*(
        about | über | à\ propos(\ de)? | acerca\ de | sobre | o\ nas | о\ нас | zur?\ person |
        kontakt | contact | pressekontakt | press\ contact | media\ contact | medienkontakt |
        ansprechpartner(in)? | for\ more\ information | weitere\ informationen | more\ information | presse
    )\b[^.!?]{0,60}$""",
    re.IGNORECASE | re.VERBOSE,
)
_FOOTER_HEADER_MAX_WORDS = 8
# After a "related articles" header, a line this long is the story again (the box sat inside it), not
# the list's headlines: the text resumes there.
_RESUME_MIN_WORDS = 25


def _is_prose(line: str) -> bool:
    return words(line) >= _RESUME_MIN_WORDS and bool(_FULL_STOP.search(line.strip()))


def _resumes(lines: list[str]) -> int | None:
    """Where running prose starts again in ``lines``: two paragraphs in a row (one alone is a box's
    blurb, a promotion), not headlines."""
    for i in range(len(lines) - 1):
        if _is_prose(lines[i]) and _is_prose(lines[i + 1]):
            return i
    return None


def cut_related_tail(lines: list[str]) -> list[str]:
    """Drop a "related articles" header and the list after it, when it sits in the text's second half;
    drop a site's own footer ("About us", "Kontakt", a press release's "About <company>") and what follows.

    An article may carry such a header higher up (a "read also" box after its lead); only the
    second half is cut, where what follows the header is the site's list, not the story. When
    long prose follows the list, the story went on below the box: the text resumes there.
    """
    total = sum(len(line) for line in lines)
    seen = 0
    for i, line in enumerate(lines):
        if i >= 2 and seen >= total / 2:
            stripped = line.strip()
            count = words(stripped)
            if count <= _RELATED_HEADER_MAX_WORDS and _RELATED_HEADER.match(stripped):
                resume = _resumes(lines[i + 1:])
                if resume is None:
                    return lines[:i]
                return lines[:i] + cut_related_tail(lines[i + 1 + resume:])
            if count <= _FOOTER_HEADER_MAX_WORDS and _FOOTER_HEADER.match(stripped):
                return lines[:i]
        seen += len(line)
    return lines


# An author's bio: "<First Last> is/ist/est … <role word> …", a name of two or three capitalised words
# first (not an article and a noun: "Die Ministerin ist …"), the role within a few words. Only the
# text's last line is tested (extract.py): bios close articles.
_AUTHOR_BIO = re.compile(
    r"""^(?!(?:Der|Die|Das|Dem|Den|Des|Ein|Eine|Einer|The|This|That|These|Our|His|Her|Its|Le|La|Les|Un|Une|El|Los|Las|
    Il|Lo|Gli|Ten|Ta|To)\s)[A-ZÀ-ÖØ-Þ][\w'’-]+(?:\s[A-ZÀ-ÖØ-Þ][\w'’-]+){1,2}\s(?:is|ist|est|es|jest|was|war)\s.{0,40}?(?i:\b(?:
        founder | co-founder | editor | journalist\w* | writer | reporter | correspondent | author | contributor |
        columnist | consultant | head\ of | redakteur\w* | chefredakt\w* | autor\w* | gründ\w* | korrespondent\w* |
        rédact\w* | journaliste | chroniqueu\w* | periodista | redactor\w* | redaktor\w* | dziennikar\w*
    )\b)""",
    re.VERBOSE,
)
_AUTHOR_BIO_MAX_WORDS = 80


def is_author_bio(line: str) -> bool:
    stripped = line.strip()
    return words(stripped) <= _AUTHOR_BIO_MAX_WORDS and bool(_AUTHOR_BIO.match(stripped))


def _cut_comments(lines: list[str]) -> list[str]:
    """Everything from the comment section's header on is comments, once article text was seen."""
    seen_text = False
    for i, line in enumerate(lines):
        if is_sentence_like(line) and not is_junk_line(line):
            seen_text = True
        elif seen_text and _COMMENT_HEADER.match(line.strip()):
            return lines[:i]
    return lines


def _is_menu_candidate(line: str) -> bool:
    return not is_sentence_like(line) and words(line) <= 6


_LABEL_MAX_WORDS = 3


def _is_label(line: str) -> bool:
    """A short line that is no sentence: a menu item, a section name, a button, a stray caption."""
    return words(line) <= _LABEL_MAX_WORDS and not _FULL_STOP.search(line.strip())


def junk_signals(lines: list[str]) -> bool:
    """Whether a dump shows any sign of page furniture around its text.

    A signal is a junk line (share prompt, footer, cookie notice, credit, comment header, pointer:
    ``is_junk_line``), a "related articles" header, a line printed twice, a run of three or more
    short non-sentence lines (a menu, a tag list), or a label line (three words or fewer, no full
    stop) anywhere but first, where it is the headline. Without any, the dump is taken as the
    article it is: the page-shape rules of ``clean_text_dump`` (the article span between the first
    and last long sentence, menus, headline guessing) are for pages, not for a lone sentence."""
    stripped = [line.strip() for line in lines]
    if len(set(stripped)) < len(stripped):
        return True
    run = 0
    for i, line in enumerate(stripped):
        if is_junk_line(line) or (words(line) <= _RELATED_HEADER_MAX_WORDS and _RELATED_HEADER.match(line)):
            return True
        if i > 0 and _is_label(line):
            return True
        run = run + 1 if _is_menu_candidate(line) else 0
        if run >= 3:
            return True
    return False


def _plain_text(lines: list[str]) -> tuple[str, str]:
    """(title, text) of a dump without junk signals: every line is kept; the first is the headline
    when more follow and it is not ended as a sentence."""
    lines = [line.strip() for line in lines]
    first = lines[0]
    if len(lines) > 1 and words(first) < 40 and not _SENTENCE_END.search(first):
        return first, "\n".join(lines[1:])
    return "", "\n".join(lines)


def clean_text_dump(text: str) -> tuple[str, str]:
    """(title, article text) of a page-text dump; paragraphs joined by "\\n"."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines:
        return "", ""
    if not junk_signals(lines):
        return _plain_text(lines)
    lines = cut_related_tail(_cut_comments(lines))

    lines = [line for line in lines if not is_junk_line(line)]
    body_idx = [i for i, line in enumerate(lines) if is_sentence_like(line)]
    if not body_idx:
        # No long sentence: the article, if any, is made of short ones (a flash between share
        # prompts and a footer). Lines that are no sentence are the page's.
        body_idx = [i for i, line in enumerate(lines) if is_short_sentence(line)]
    if not body_idx:
        longer = [line.strip() for line in lines if words(line) >= 4]
        return (longer[0] if longer else ""), "\n".join(longer[1:])
    first, last = body_idx[0], body_idx[-1]
    # Before the text, a short line printed twice is a masthead or a photo caption.
    head_counts = Counter(line.strip() for line in lines[:first])
    head = [line for line in lines[:first] if head_counts[line.strip()] == 1 or words(line) >= 6]
    # In the text, a line printed twice in a row (the headline again) is kept once.
    body = [line for i, line in enumerate(lines[first:last + 1])
            if i == 0 or line.strip() != lines[first + i - 1].strip()]

    # The headline is the longest line before the body that reads as one; the first body line
    # counts too when it is not ended by a full stop (headlines end with "?" or nothing).
    candidates = [line.strip() for line in head if words(line) >= 4]
    opening = body[0].strip()
    if len(body) > 1 and words(opening) < 40 and not opening.endswith((".", "…", ":", ";")):
        candidates.append(opening)
    title = max(candidates, key=len) if candidates else ""
    if title == opening:
        body = body[1:]
        # What stood between the headline and the text (dates, bylines) is not text.
        while body and not is_sentence_like(body[0]):
            body = body[1:]

    # Inside the body, drop runs of three or more short non-sentence lines (menus, tag lists).
    kept: list[str] = []
    i = 0
    while i < len(body):
        if _is_menu_candidate(body[i]):
            j = i
            while j < len(body) and _is_menu_candidate(body[j]):
                j += 1
            if j - i < 3:
                kept.extend(body[i:j])
            i = j
        else:
            kept.append(body[i])
            i += 1
    paragraphs = [line.strip() for line in kept if line.strip() and line.strip() != title]
    return title, "\n".join(paragraphs)
