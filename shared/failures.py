"""The failure policy, once for the whole code base: is an error the world's (retry the same
input until it passes) or the input's (dead-letter it), or unknown (retry a few times, then
dead-letter it with where it failed)?

| kind      | examples                                                           | what the runtime does            |
|-----------|--------------------------------------------------------------------|----------------------------------|
| transient | Redis down, read-only (failover), OOM, loading; broker unreachable, | retry with capped backoff, never |
|           | not leader, timeouts, unknown topic (broker restarting); network    | drop, never dead-letter          |
| poison    | not a valid event, unusable content, an output over the message cap | dead-letter with the reason      |
| unknown   | any other exception (a bug, a library's surprise)                  | retry a bounded number of times, |
|           |                                                                    | then dead-letter with the frame  |
"""

from __future__ import annotations

import asyncio
import enum
import traceback
from pathlib import PurePath

import httpx
import redis
from aiokafka import errors as aiokafka_errors
from kafka import errors as kafka_errors

from shared.events import SchemaError


class PoisonInput(ValueError):
    """An input that can never be processed (bad schema, unusable content): dead-letter it."""


class TransientError(RuntimeError):
    """Raised by a stage for a condition that passes by itself (a dependency not ready yet)."""


class Kind(enum.Enum):
    TRANSIENT = "transient"
    POISON = "poison"
    UNKNOWN = "unknown"


# Redis replies that mean "the server cannot take this now", not "this command is wrong".
_REDIS_TRANSIENT_REPLIES = ("OOM", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY ")

_KAFKA_TRANSIENT: tuple[type[BaseException], ...] = (
    aiokafka_errors.KafkaConnectionError, aiokafka_errors.KafkaTimeoutError, aiokafka_errors.NodeNotReadyError,
    aiokafka_errors.NoBrokersAvailable, aiokafka_errors.RequestTimedOutError,
    aiokafka_errors.NotLeaderForPartitionError, aiokafka_errors.LeaderNotAvailableError,
    aiokafka_errors.UnknownTopicOrPartitionError, aiokafka_errors.KafkaUnavailableError,
    kafka_errors.KafkaConnectionError, kafka_errors.KafkaTimeoutError,
)
_KAFKA_POISON: tuple[type[BaseException], ...] = (
    aiokafka_errors.MessageSizeTooLargeError, aiokafka_errors.RecordTooLargeError,
    kafka_errors.MessageSizeTooLargeError,
)

# Exported for the few places that talk to Redis outside a stage (start-up checks, CLI).
REDIS_TRANSIENT: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError,
                                                    redis.ReadOnlyError, redis.BusyLoadingError)


def classify(exc: BaseException) -> Kind:
    if isinstance(exc, PoisonInput | SchemaError | RecursionError | UnicodeError):
        return Kind.POISON
    if isinstance(exc, TransientError):
        return Kind.TRANSIENT
    if isinstance(exc, _KAFKA_POISON):
        return Kind.POISON
    if isinstance(exc, _KAFKA_TRANSIENT):
        return Kind.TRANSIENT
    if isinstance(exc, aiokafka_errors.KafkaError | kafka_errors.KafkaError):
        return Kind.TRANSIENT if getattr(exc, "retriable", False) else Kind.UNKNOWN
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.ReadOnlyError
                  | redis.OutOfMemoryError | redis.exceptions.TryAgainError):
        return Kind.TRANSIENT
    if isinstance(exc, redis.ResponseError):
        return Kind.TRANSIENT if str(exc).upper().startswith(_REDIS_TRANSIENT_REPLIES) else Kind.UNKNOWN
    if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError | asyncio.TimeoutError):
        return Kind.TRANSIENT
    return Kind.UNKNOWN


def dependency(exc: BaseException) -> str:
    """What a transient failure is blamed on, one of ``shared.pipeline.DEPENDENCIES``: the broker
    (a Kafka client's error), Redis (a Redis client's error), or other."""
    if isinstance(exc, aiokafka_errors.KafkaError | kafka_errors.KafkaError):
        return "broker"
    if isinstance(exc, redis.RedisError):
        return "redis"
    return "other"


def where(exc: BaseException) -> str:
    """The innermost frame of the traceback, as ``file:line in function`` (for a dead letter)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    path = PurePath(last.filename)
    return f"{path.parent.name}/{path.name}:{last.lineno} in {last.name}"
