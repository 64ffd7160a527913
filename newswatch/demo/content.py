"""The demo news: made-up sites and articles, written for this project.

Every article says what the pipeline must find in it (language, canonical entity ids), so the
integration test checks outcomes against facts written here by hand, not against the code.
Articles appear over time (``delay``: seconds after the server starts, before pacing), so
alerts arrive live during the demo. The wire story ``wire-putin-pashinyan`` is republished by
a second site with other junk, a changed headline and its last paragraph cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    lang: str
    feed: str  # "rss" or "atom"
    charset: str = "utf-8"


@dataclass(frozen=True)
class DemoArticle:
    site: str
    slug: str
    title: str
    paragraphs: tuple[str, ...]
    delay: float
    author: str
    lang: str
    entities: frozenset[str]  # canonical ids the entities stage must find, no more, no fewer
    story: str = ""  # articles of one story share this (wire copies)
    # articles of one event share this, whatever their language or text (the stories stage's story);
    # empty: the event of ``story``, else the article's own
    event: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


SITES: tuple[Site, ...] = (
    Site("courrier-caucase", "Le Courrier du Caucase", "fr", "rss"),
    Site("depeches-monde", "Dépêches Monde", "fr", "atom"),
    Site("mashriq", "المشرق اليوم", "ar", "rss", charset="windows-1256"),
    Site("caspian-herald", "The Caspian Herald", "en", "atom"),
    Site("vestnik", "Вестник Закавказья", "ru", "rss", charset="windows-1251"),
)

_WIRE_PARAGRAPHS = (
    "MOSCOU, 14 mars (TASS) — Le président russe Vladimir Poutine s'est entretenu par téléphone avec le "
    "Premier ministre arménien Nikol Pachinian, a annoncé jeudi le service de presse du Kremlin.",
    "Les deux dirigeants ont passé en revue la mise en œuvre des déclarations trilatérales sur le "
    "Haut-Karabakh et la situation à la frontière entre l'Arménie et l'Azerbaïdjan, selon le communiqué.",
    "Ils sont convenus de poursuivre les contacts à différents niveaux et ont évoqué le déblocage des "
    "liaisons de transport dans la région, un dossier suivi de près à Bakou comme à Erevan.",
    "D'après le Kremlin, la conversation a également porté sur la coopération économique bilatérale, "
    "alors que les échanges commerciaux entre les deux pays ont nettement progressé l'an dernier.",
    "Le porte-parole du Kremlin a précisé qu'aucune rencontre en personne n'était prévue pour l'instant, "
    "tout en n'excluant pas une visite à Moscou dans les prochains mois.",
)

ARTICLES: tuple[DemoArticle, ...] = (
    DemoArticle(
        site="courrier-caucase", slug="pourparlers-bakou-erevan-moscou", delay=0, author="Claire Martin",
        lang="fr",
        title="Bakou et Erevan reprennent les pourparlers sous l'égide de Moscou",
        paragraphs=(
            "Les ministres des Affaires étrangères de l'Azerbaïdjan et de l'Arménie, Jeyhun Bayramov et "
            "Ararat Mirzoyan, se sont retrouvés mardi à Moscou pour une nouvelle série de discussions "
            "consacrées au traité de paix, a-t-on appris de sources diplomatiques.",
            "La rencontre s'est tenue en présence de Sergueï Lavrov, qui a salué « une atmosphère de "
            "travail constructive » et rappelé l'attachement de la Russie aux accords signés après la "
            "guerre de 2020 au Haut-Karabakh.",
            "Selon un diplomate présent, les délégations ont surtout discuté de la délimitation de la "
            "frontière et de l'ouverture des voies de communication, deux questions qui bloquent encore "
            "la signature d'un accord définitif.",
            "Aucune date n'a été fixée pour la prochaine réunion, mais les deux parties ont dit vouloir "
            "maintenir le rythme des échanges dans les semaines à venir.",
        ),
        entities=frozenset({"Q227", "Q399", "nw:person:jeyhun-bayramov", "nw:person:ararat-mirzoyan", "Q649",
                            "nw:person:sergey-lavrov", "Q159", "nw:place:nagorno-karabakh", "Q9248", "Q1953"}),
    ),
    DemoArticle(
        site="courrier-caucase", slug="poutine-pachinian-entretien-telephonique", delay=14,
        author="Rédaction avec TASS", lang="fr", story="wire-putin-pashinyan",
        title="Poutine et Pachinian évoquent la situation au Haut-Karabakh",
        paragraphs=_WIRE_PARAGRAPHS,
        entities=frozenset({"Q649", "nw:org:tass", "Q7747", "nw:person:nikol-pashinyan", "nw:org:kremlin",
                            "nw:place:nagorno-karabakh", "Q399", "Q227", "Q9248", "Q1953"}),
    ),
    DemoArticle(
        site="depeches-monde", slug="kremlin-poutine-pachinian-telephone", delay=22, author="Dépêches Monde",
        lang="fr", story="wire-putin-pashinyan",
        title="Haut-Karabakh : entretien téléphonique entre Vladimir Poutine et Nikol Pachinian",
        paragraphs=_WIRE_PARAGRAPHS[:-1],
        entities=frozenset({"Q649", "nw:org:tass", "Q7747", "nw:person:nikol-pashinyan", "nw:org:kremlin",
                            "nw:place:nagorno-karabakh", "Q399", "Q227", "Q9248", "Q1953"}),
    ),
    DemoArticle(
        site="depeches-monde", slug="conseil-securite-libye", delay=6, author="Julien Morel", lang="fr",
        title="Le Conseil de sécurité de l'ONU prolonge sa mission en Libye",
        paragraphs=(
            "Le Conseil de sécurité de l'ONU a prolongé vendredi d'un an le mandat de sa mission d'appui "
            "en Libye, un pays toujours divisé entre deux gouvernements rivaux.",
            "Le texte appelle les autorités de Tripoli et le camp du maréchal Khalifa Haftar, qui contrôle "
            "l'est du pays, à s'entendre sur un calendrier électoral crédible.",
            "Plusieurs diplomates ont regretté l'absence de progrès depuis l'an dernier et plaidé pour un "
            "retrait des combattants étrangers encore présents sur le territoire libyen.",
        ),
        entities=frozenset({"Q37470", "Q1016", "nw:place:tripoli-libya", "nw:person:khalifa-haftar"}),
    ),
    DemoArticle(
        site="courrier-caucase", slug="festival-jazz-lyon-record", delay=30, author="Sophie Bernard",
        lang="fr",
        title="Festival de jazz : une édition record sur les bords du Rhône",
        paragraphs=(
            "Le festival de jazz de Vienne a accueilli cette année plus de deux cent mille spectateurs, un "
            "record depuis sa création il y a plus de quarante ans, selon les organisateurs.",
            "Les concerts du théâtre antique ont affiché complet presque chaque soir, porté par une "
            "programmation mêlant jeunes talents et grandes figures de la scène internationale.",
            "La direction du festival annonce déjà une édition prolongée l'été prochain, avec davantage de "
            "concerts gratuits dans les rues et sur les places de la ville.",
        ),
        entities=frozenset(),
    ),
    DemoArticle(
        site="mashriq", slug="putin-pashinyan-karabakh", delay=3, author="قسم الأخبار الدولية", lang="ar",
        event="wire-putin-pashinyan",  # the same Kremlin account of the call, written in Arabic
        title="بوتين وباشينيان يبحثان تطورات الوضع في قره باغ",
        paragraphs=(
            "بحث الرئيس الروسي فلاديمير بوتين في اتصال هاتفي مع رئيس الوزراء الأرميني نيكول باشينيان "
            "تطورات الأوضاع في إقليم قره باغ، وفق ما أعلنه الكرملين يوم الخميس.",
            "وذكرت وكالة تاس الروسية أن الجانبين ناقشا تنفيذ البيانات الثلاثية الموقعة بعد حرب عام 2020، "
            "إضافة إلى الوضع على الحدود بين أرمينيا وأذربيجان.",
            "واتفق الطرفان على مواصلة الاتصالات على مختلف المستويات، فيما أكد الكرملين أهمية إعادة فتح طرق "
            "النقل في المنطقة بما يخدم مصالح جميع الأطراف.",
        ),
        entities=frozenset({"Q7747", "nw:person:nikol-pashinyan", "nw:place:nagorno-karabakh",
                            "nw:org:kremlin", "nw:org:tass", "Q399", "Q227"}),
    ),
    DemoArticle(
        site="mashriq", slug="cairo-book-fair-opens", delay=38, author="القسم الثقافي", lang="ar",
        title="افتتاح الدورة الجديدة لمعرض الكتاب بمشاركة واسعة",
        paragraphs=(
            "افتتحت صباح اليوم الدورة الجديدة لمعرض الكتاب بمشاركة أكثر من ألف دار نشر من عشرات الدول، "
            "وسط إقبال كبير من الزوار منذ الساعات الأولى.",
            "ويتضمن برنامج المعرض ندوات فكرية وأمسيات شعرية وورشا للأطفال، إضافة إلى لقاءات مفتوحة بين "
            "الكتاب والقراء في مختلف القاعات.",
            "وقال المنظمون إن هذه الدورة تشهد زيادة ملحوظة في عدد العناوين الجديدة مقارنة بالعام الماضي.",
        ),
        entities=frozenset(),
    ),
    DemoArticle(
        site="caspian-herald", slug="aliyev-conditions-karabakh-operation", delay=10, author="Daniel Hughes",
        lang="en",
        title="Aliyev sets conditions for halting Karabakh operation",
        paragraphs=(
            "Azerbaijan's President Ilham Aliyev said on Wednesday that the military operation in "
            "Karabakh would stop only if local armed groups laid down their weapons, his office said "
            "after a phone call with US Secretary of State Antony Blinken.",
            "Presidential adviser Hikmet Hajiyev told reporters in Baku that the army was advancing "
            "faster than planned and that civilians would be offered safe passage.",
            "Blinken urged an immediate ceasefire and a return to talks, warning that the blockade of the "
            "Lachin corridor had already caused severe shortages of food and medicine.",
            "Armenia accused Azerbaijan of seeking to drive out the ethnic Armenian population, a charge "
            "Baku denies.",
        ),
        entities=frozenset({"Q227", "nw:person:ilham-aliyev", "nw:place:nagorno-karabakh",
                            "nw:person:antony-blinken", "nw:person:hikmet-hajiyev", "Q9248",
                            "nw:place:lachin-corridor", "Q399", "Q30"}),
    ),
    DemoArticle(
        site="caspian-herald", slug="akar-shoigu-call-libya-syria", delay=18, author="Elena Petrova",
        lang="en",
        title="Turkish and Russian defence chiefs discuss Libya and Syria in phone call",
        paragraphs=(
            "Turkish Defence Minister Hulusi Akar and his Russian counterpart Sergei Shoigu spoke by phone "
            "on Monday, discussing Libya and Syria as well as the fighting in the South Caucasus, the "
            "Anadolu news agency reported.",
            "Akar said Ankara supported a stable and sovereign Libya and backed the resolutions of the UN "
            "Security Council, while Shoigu stressed the need to avoid any escalation near Idlib.",
            "The two ministers agreed to keep their military channels open and to meet in person later "
            "this year, according to the ministry in Ankara.",
        ),
        entities=frozenset({"nw:person:hulusi-akar", "nw:person:sergei-shoigu", "Q1016", "Q858",
                            "nw:org:anadolu-agency", "Q3640", "Q37470", "nw:place:idlib"}),
    ),
    DemoArticle(
        site="vestnik", slug="lavrov-mirzoyan-peace-treaty", delay=26, author="Иван Соколов", lang="ru",
        title="Лавров и Мирзоян обсудили подготовку мирного договора",
        paragraphs=(
            "Министр иностранных дел России Сергей Лавров провёл в Москве переговоры с главой МИД Армении "
            "Араратом Мирзояном, сообщает пресс-служба министерства.",
            "Стороны обсудили подготовку мирного договора между Арменией и Азербайджаном, а также ситуацию "
            "вокруг Нагорного Карабаха и работу комиссий по делимитации границы.",
            "По словам Лаврова, Россия готова и дальше содействовать урегулированию и разблокированию "
            "транспортных коммуникаций в регионе.",
        ),
        entities=frozenset({"nw:person:sergey-lavrov", "Q159", "Q649", "nw:person:ararat-mirzoyan", "Q399",
                            "Q227", "nw:place:nagorno-karabakh"}),
    ),
)

# The alerts the demo rules (config/rules.yaml) must raise: (rule id, story key). The call between
# Putin and Pashinyan (the French wire copies and the Arabic account) is one story: it fires "karabakh"
# and "putin-pashinyan" once, on whichever article arrives first.
EXPECTED_ALERTS: frozenset[tuple[str, str]] = frozenset({
    ("karabakh", "pourparlers-bakou-erevan-moscou"),
    ("karabakh", "wire-putin-pashinyan"),
    ("karabakh", "aliyev-conditions-karabakh-operation"),
    ("karabakh", "lavrov-mirzoyan-peace-treaty"),
    ("putin-pashinyan", "wire-putin-pashinyan"),
    ("libya-fr", "conseil-securite-libye"),
    ("ceasefire-en", "aliyev-conditions-karabakh-operation"),
    ("defence-ministers", "akar-shoigu-call-libya-syria"),
})


def story_key(article: DemoArticle) -> str:
    """The name a test uses for the article's story: its event, else its wire story, else its own slug."""
    return article.event or article.story or article.slug
