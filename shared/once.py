"""Outputs published at most once per key, also when a sender dies between the broker's
acknowledgement and the Redis mark (an alert per rule and story, whatever crashes).

Marking a key only after the acknowledgement leaves a window: a process killed after the broker
has the output but before the mark makes the next delivery of its input publish it again. So a
send goes through three steps, and the window is closed by looking at the topic itself:

1. the sender takes ``nw:once:pending:<key>`` (one script: only when neither the key nor another
   entry is there) with its instance id, the offsets it knows the topic's partitions to have
   reached (``nw:once:offsets:<topic>``, noted at each acknowledgement: the output can only be
   after them) and the value the key is to hold;
2. the output goes out with the header ``newswatch-once: <key>``;
3. on the acknowledgement the key is set, the pending entry deleted, the offset noted.

A later send of the same key is skipped when the key is set. When it finds a pending entry:

- of another instance that is still running (its ``nw:once:instance:<id>`` heartbeat, refreshed
  every few seconds, has not expired): ``TransientError``, and the runtime retries the input
  until that send is settled one way or the other;
- of an instance that died, or its own earlier send whose acknowledgement failed: the topic is
  read from the noted offsets to its end. If a record carries the header, the key is marked and
  nothing is sent; otherwise the entry is taken over (compare-and-set) and the output sent.

What this needs from the broker: the high watermark in fetch responses (right on tansu too,
unlike its ListOffsets) and record headers. An output the broker lost after acknowledging it
(the in-memory broker's death) is not on the topic either, so it is sent again: that is wanted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from shared import kafka_clients, redis_store
from shared.failures import TransientError
from shared.settings import Settings

log = logging.getLogger(__name__)

HEADER = "newswatch-once"
# A running instance refreshes its heartbeat every HEARTBEAT_SECONDS; one that stops doing so for
# INSTANCE_TTL_SECONDS is taken to be dead (a killed process: its pending sends are settled by others).
HEARTBEAT_SECONDS = 4.0
INSTANCE_TTL_SECONDS = 15
# What this process is called in pending entries: unique per process, also across restarts.
INSTANCE = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
OFFSETS_PREFIX = "nw:once:offsets:"

# (topic, {partition: offset to read from}, header value) → whether a record from there on carries it
Finder = Callable[[str, Mapping[int, int], bytes], Awaitable[bool]]

# KEYS: the once-key, its pending entry, the topic's noted offsets; ARGV: instance, value, time, TTL.
# {"done", ""} when the key is set; {"held", entry} when another send holds it; else the entry is
# written and {"taken", entry} returned. Atomic: no mark can land between the look and the write.
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'done', ''}
end
local held = redis.call('GET', KEYS[2])
if held then
  return {'held', held}
end
local since = {}
local noted = redis.call('HGETALL', KEYS[3])
for i = 1, #noted, 2 do
  since[noted[i]] = tonumber(noted[i + 1])
end
local entry = cjson.encode({by = ARGV[1], since = since, value = ARGV[2], at = tonumber(ARGV[3])})
redis.call('SET', KEYS[2], entry, 'EX', tonumber(ARGV[4]))
return {'taken', entry}
"""
# Replace the pending entry only if it still holds what was read (another sender may have taken it over).
_SWAP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


def pending_key(once_key: str) -> str:
    return f"nw:once:pending:{once_key}"


def instance_key(instance: str) -> str:
    return f"nw:once:instance:{instance}"


def offsets_key(topic: str) -> str:
    return OFFSETS_PREFIX + topic


class OnceLedger:
    """The once-keys of one process's outlets (see the module's text)."""

    def __init__(self, redis: aioredis.Redis, finder: Finder, ttl_seconds: int, instance: str = INSTANCE) -> None:
        self.redis = redis
        self.finder = finder
        self.ttl = max(1, int(ttl_seconds))
        self.instance = instance
        self._take = redis.register_script(_TAKE)  # EVALSHA, and EVAL when the server does not know it
        self._mine: dict[str, str] = {}  # once-key → the pending entry this process wrote for it
        self._heartbeat: asyncio.Task[None] | None = None

    async def take(self, once_key: str, value: str, topic: str) -> bool:
        """True if the caller is to send the output (it now holds the pending entry); False if the
        output is on the topic already. Raises TransientError while another running instance holds it."""
        await self._beating()
        pending = pending_key(once_key)
        # the usual case, a new key, in one round trip: checked, entry written, with nothing between
        found = await self._take(keys=[once_key, pending, offsets_key(topic)],
                                 args=[self.instance, value, repr(round(time.time(), 3)), self.ttl])
        verdict, detail = (redis_store.as_str(part) for part in found)
        if verdict == "done":
            return False
        if verdict == "taken":
            self._mine[once_key] = detail
            return True
        held = detail
        entry = _entry(held)
        holder = str(entry.get("by", ""))
        if holder != self.instance and await self.redis.exists(instance_key(holder)):
            raise TransientError(f"{once_key} is being published by {holder}, which is running: waiting for it")
        offsets = {int(p): int(o) for p, o in dict(entry.get("since") or {}).items()}
        if await self.finder(topic, offsets, once_key.encode("utf-8")):
            log.info("an unconfirmed send was found on the topic: not sent again",
                     extra={"once_key": once_key, "topic": topic, "sender": holder})
            await self.mark(once_key, str(entry.get("value", value)), None)
            return False
        since = {str(p): int(o) for p, o in (await self._offsets(topic)).items()}
        mine = json.dumps({"by": self.instance, "since": since, "value": value, "at": round(time.time(), 3)})
        if not await self.redis.eval(_SWAP, 1, pending, held, mine, self.ttl):
            raise TransientError(f"{once_key}: another sender took it over meanwhile")
        log.info("an unconfirmed send is not on the topic: sending it", extra={"once_key": once_key, "topic": topic,
                                                                              "sender": holder})
        self._mine[once_key] = mine
        return True

    async def release(self, once_key: str) -> None:
        """The send never left this process (the producer refused it): give the entry back."""
        mine = self._mine.pop(once_key, None)
        if mine is not None:
            await redis_store.delete_if_holds(self.redis, pending_key(once_key), mine)

    async def mark(self, once_key: str, value: str, metadata: Any) -> None:
        """The broker has the output: the key holds ``value``, the pending entry goes, and the
        acknowledged offset (``metadata``: the producer's RecordMetadata, if any) is noted."""
        self._mine.pop(once_key, None)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(once_key, value, ex=self.ttl)
        pipe.delete(pending_key(once_key))
        topic, partition, offset = (getattr(metadata, name, None) for name in ("topic", "partition", "offset"))
        if isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int) and offset >= 0:
            pipe.hset(offsets_key(topic), str(partition), str(offset))
        await pipe.execute()

    async def _offsets(self, topic: str) -> dict[int, int]:
        raw = await self.redis.hgetall(offsets_key(topic))
        return {int(redis_store.as_str(p)): int(redis_store.as_str(o)) for p, o in raw.items()}

    async def _beating(self) -> None:
        """The heartbeat that tells other instances this one is running (set now, then kept up)."""
        if self._heartbeat is None or self._heartbeat.done():
            await self.redis.set(instance_key(self.instance), "1", ex=INSTANCE_TTL_SECONDS)
            self._heartbeat = asyncio.create_task(self._beat(), name="once-heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.redis.set(instance_key(self.instance), "1", ex=INSTANCE_TTL_SECONDS)
            except Exception as exc:  # Redis away: the sends themselves wait for it
                log.warning("once heartbeat failed", extra={"error": repr(exc)[:300]})

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()


def _entry(raw: object) -> dict[str, Any]:
    try:
        entry = json.loads(redis_store.as_str(raw))
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


async def topic_holds(settings: Settings, topic: str, since: Mapping[int, int], mark: bytes,
                      timeout: float = 30.0) -> bool:
    """Whether a record of ``topic`` at or after ``since`` (partition → offset; from the start where
    absent or past the end) carries the header ``newswatch-once: <mark>``. Reads each partition to
    the high watermark its fetch responses carry; TransientError if that takes over ``timeout``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**kafka_clients.client_config(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                max_partition_fetch_bytes=settings.max_message_bytes + 65536)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            if time.monotonic() > deadline:
                raise TransientError(f"no metadata for topic {topic}")
            await asyncio.sleep(0.2)
            await consumer._client.force_metadata_update()  # aiokafka offers no public call for it
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(0, since.get(tp.partition, 0)))
        rewound: set[Any] = set()
        remaining = set(tps)
        while remaining:
            if time.monotonic() > deadline:
                raise TransientError(f"could not read {topic} to its end within {timeout:.0f} s")
            batches = await consumer.getmany(*remaining, timeout_ms=200)
            for records in batches.values():
                if any((HEADER, mark) in tuple(r.headers or ()) for r in records):
                    return True
            for tp in list(remaining):
                high = consumer.highwater(tp)
                if high is None:
                    continue
                position = await consumer.position(tp)
                if position > high and tp not in rewound:  # an offset noted before the broker lost its log
                    await consumer.seek_to_beginning(tp)
                    rewound.add(tp)
                elif position >= high:
                    remaining.discard(tp)
        return False
    finally:
        await consumer.stop()
