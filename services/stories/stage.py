"""The stories stage's wiring: articles-tagged → articles-linked (the article with its story) and
stories (the story's state each time it changes). It runs in the alert service, ahead of the rules.

``Linker`` is the whole of what the stage does to one article, with the encoder's vector given:
the CLI (``newswatch stories --jsonl``, an in-memory index) and the benchmark call it too.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import msgspec
import numpy as np

from services.stories import link
from services.stories.encoder import DIMENSIONS, Encoder, title_and_lead
from services.stories.store import RedisStoryStore, StoryStore
from shared import events, metrics, pipeline, redis_store
from shared.runtime import Emit, cpu
from shared.settings import Settings
from shared.topics import LINKED, STORIES


class Linker:
    def __init__(self, store: StoryStore, encoder: Encoder, settings: Settings) -> None:
        self.store = store
        self.encoder = encoder
        self.threshold = settings.story_threshold
        self.window_s = settings.story_window_hours * 3600

    def embed(self, tagged: events.TaggedArticle) -> np.ndarray:
        return self.encoder.article(tagged.article.title, tagged.article.text)

    async def assign(self, tagged: events.TaggedArticle,
                   embedding: np.ndarray) -> tuple[events.LinkedArticle, events.Story]:
        """The article's story: the one it already joined (a redelivery), its original's (a copy), the
        best-scoring candidate, or a new one; and the story's state after it."""
        features = link.features_of(tagged, embedding)
        terms = link.index_terms(features)
        own = tagged.article.story_id or tagged.id
        async with self.store.linking(tagged.id, features.copy_of, terms, features.at - self.window_s) as lookup:
            original = (lookup.original or features.copy_of) if features.copy_of else None
            wanted = list(dict.fromkeys(s for s in (lookup.known, original, own, *lookup.candidates) if s))
            loaded = {story.id: story for story in await self.store.load(wanted)}
            if lookup.known in loaded:  # a redelivered article: the story as it is, nothing added
                story = loaded[lookup.known]
                return self._outputs(tagged, story, link.Decision(story, 1.0, "repeat"), [])
            copy = loaded.get(original) if original else None
            candidates = [] if copy is not None else [loaded[c] for c in lookup.candidates if c in loaded]
            decision = link.decide(features, candidates, self.threshold, self.window_s, copy)
            if decision.story is None and own in loaded:  # its id is a story already (copies came first)
                decision = link.Decision(loaded[own], 1.0, "copy")
            if decision.story is None:
                story, changes = link.new_story(own, features), ["new"]
            else:
                story, changes = link.absorb(decision.story, features)
            await self.store.save(story, features, terms, lookup)
        metrics.STORY_LINKS.labels(decision.outcome).inc()
        if decision.outcome != "new":
            metrics.STORY_SIZE.observe(story.article_count)
            if "language" in changes:
                metrics.STORY_CROSS_LANGUAGE.inc()
        return self._outputs(tagged, story, decision, changes)

    @staticmethod
    def _outputs(tagged: events.TaggedArticle, story: link.StorySummary, decision: link.Decision,
                 changes: list[str]) -> tuple[events.LinkedArticle, events.Story]:
        article = tagged.article
        if article.story_id != story.id:
            # within linked_article/1 the article's story_id is the linked story; clean's copy link stays
            # in duplicate_of
            article = msgspec.structs.replace(article, story_id=story.id)
        linked = events.LinkedArticle(id=tagged.id, article=article, language=tagged.language,
                                      entities=tagged.entities, story=link.story_ref(story, decision))
        return linked, link.story_event(story, tagged.id, changes)


class EmbedBatcher:
    """Articles that wait together are encoded in one forward pass: the encoder streams its weights once per
    pass, so 8 texts cost 3.5 ms each instead of 5.9 (docs/choices.md). Nothing waits for a batch to fill:
    the first article is encoded at once, and whatever arrived meanwhile goes in the next pass."""

    MAX_BATCH = 16

    def __init__(self, linker: Linker) -> None:
        self.linker = linker
        self.waiting: list[tuple[events.TaggedArticle, asyncio.Future[np.ndarray]]] = []
        self.task: asyncio.Task[None] | None = None

    async def embed(self, tagged: events.TaggedArticle) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.waiting.append((tagged, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await future

    def _embed_many(self, items: list[events.TaggedArticle]) -> np.ndarray:
        encoder = self.linker.encoder
        return encoder.embed([title_and_lead(t.article.title, t.article.text, encoder.chars) for t in items])

    async def _drain(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[:self.MAX_BATCH], self.waiting[self.MAX_BATCH:]
            try:
                if self.linker.encoder.chars <= 0:
                    vectors = np.zeros((len(batch), DIMENSIONS), dtype=np.float32)
                else:
                    vectors = await cpu(self._embed_many, [t for t, _ in batch])
            except Exception as exc:  # every article of the pass fails as the pass did (the runtime decides)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), vector in zip(batch, vectors, strict=True):
                if not future.done():
                    future.set_result(vector)


class StoriesStage:
    """Links each tagged article to its story (Redis index, shared by every replica)."""

    decl: ClassVar[pipeline.StageDecl] = pipeline.STORY_LINKING
    # Up to 8 articles are processed at once (shared.runtime.Ahead): their encodings go in one pass of the
    # encoder (EmbedBatcher), the lock keeps the linking itself one article at a time.
    ahead: ClassVar[int] = 8

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis_store.connect(settings)
        self.encoder = Encoder(settings.story_embed_chars)
        self.linker = Linker(RedisStoryStore(self.redis, settings), self.encoder, settings)
        self.batcher = EmbedBatcher(self.linker)
        metrics.init_stories()

    async def start(self) -> None:
        await self.redis.ping()
        await cpu(self.encoder.load)  # the weights load here, off the event loop, not on the first article

    async def process(self, tagged: events.TaggedArticle) -> list[Emit]:
        embedding = await self.batcher.embed(tagged)
        linked, story = await self.linker.assign(tagged, embedding)
        return [Emit(LINKED, linked.id, linked), Emit(STORIES, story.id, story)]
