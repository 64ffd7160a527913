"""Environment variables → typed settings, with documented defaults (12-factor).

Every variable the project reads is declared once in ``ENV_VARS``; the README table, the
docker-compose test and ``newswatch settings`` all read from this one list.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str
    doc: str
    secret: bool = False  # never printed (``newswatch settings`` shows it as set or not)


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("NEWSWATCH_KAFKA_BOOTSTRAP", "127.0.0.1:19092", "Kafka bootstrap servers, comma-separated"),
    EnvVar("NEWSWATCH_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
           "how every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    EnvVar("NEWSWATCH_KAFKA_SASL_MECHANISM", "PLAIN", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    EnvVar("NEWSWATCH_KAFKA_SASL_USERNAME", "", "SASL user name (SASL_PLAINTEXT, SASL_SSL)"),
    EnvVar("NEWSWATCH_KAFKA_SASL_PASSWORD", "", "SASL password (SASL_PLAINTEXT, SASL_SSL)", secret=True),
    EnvVar("NEWSWATCH_KAFKA_SSL_CAFILE", "",
           "PEM file of the CA(s) that signed the brokers' certificates (SSL, SASL_SSL; empty: the system's)"),
    EnvVar("NEWSWATCH_KAFKA_SSL_CERTFILE", "", "PEM client certificate, for brokers that require one (mutual TLS)"),
    EnvVar("NEWSWATCH_KAFKA_SSL_KEYFILE", "", "PEM private key of the client certificate"),
    EnvVar("NEWSWATCH_REDIS_URL", "redis://127.0.0.1:16379/0",
           "Redis URL for dedup keys and state (redis://[user:password@]host:port/db; rediss:// for TLS)"),
    EnvVar("NEWSWATCH_REDIS_PASSWORD", "", "Redis password (AUTH), used when the URL carries none", secret=True),
    EnvVar("NEWSWATCH_TOPIC_PREFIX", "newswatch", "Prefix of every topic name (isolates deployments)"),
    EnvVar("NEWSWATCH_PARTITIONS", "4", "Partitions per topic, used by the admin step that creates topics"),
    EnvVar("NEWSWATCH_REPLICATION", "1", "Replication factor of created topics"),
    EnvVar("NEWSWATCH_METRICS_PORT", "0", "Port of this service's /metrics (0 = the service's default)"),
    EnvVar("NEWSWATCH_METRICS_HOST", "0.0.0.0", "Address the /metrics server binds to"),
    EnvVar("NEWSWATCH_LAG_SECONDS", "15",
           "seconds between two reads of the consumer group's lag (newswatch_consumer_lag_messages)"),
    EnvVar("NEWSWATCH_STALL_SECONDS", "120",
           "liveness: seconds a stage may have input waiting without finishing one before /healthz (and "
           "`newswatch health`) fails"),
    EnvVar("NEWSWATCH_DEPENDENCY_SECONDS", "30",
           "liveness: seconds every attempt of a stage at Redis or the broker may fail before /healthz (and "
           "`newswatch health`) report the stage degraded, naming the dependency (not a failure: a restart "
           "would not help)"),
    EnvVar("NEWSWATCH_LOG_LEVEL", "INFO", "Log level (DEBUG, INFO, WARNING, ERROR)"),
    EnvVar("NEWSWATCH_LOG_FORMAT", "json", "Log format: json (one object a line) or text"),
    EnvVar("NEWSWATCH_MAX_MESSAGE_BYTES", "8388608",
           "largest Kafka message a service reads or writes; larger inputs and outputs are dead-lettered "
           "(Kafka's message.max.bytes must allow it)"),
    EnvVar("NEWSWATCH_DEAD_LETTER_PAYLOAD_BYTES", "65536",
           "bytes of the failed input kept in a dead letter (its size, hash and offset are always kept)"),
    EnvVar("NEWSWATCH_UNKNOWN_ERROR_ATTEMPTS", "3",
           "attempts at an input that raises an unexpected exception before it is dead-lettered"),
    EnvVar("NEWSWATCH_FETCH_WAIT_MS", "100",
           "longest wait of a consumer's fetch for new data (the embedded broker always waits this long)"),
    EnvVar("NEWSWATCH_IN_FLIGHT", "32",
           "inputs a stage processes ahead while the broker acknowledges earlier outputs (1: one at a time)"),
    EnvVar("NEWSWATCH_RETRY_CAP_SECONDS", "30", "longest wait between two retries of a transient failure"),
    EnvVar("NEWSWATCH_SOURCES", "config/sources.yaml", "fetch: YAML file listing feeds, sitemaps and pages"),
    EnvVar("NEWSWATCH_POLL_SECONDS", "60", "fetch: default seconds between two polls of one feed"),
    EnvVar("NEWSWATCH_HOST_DELAY_SECONDS", "1.0", "fetch: minimum seconds between two requests to one host"),
    EnvVar("NEWSWATCH_MAX_PAGE_BYTES", "5000000", "fetch: larger responses are cut off and refused"),
    EnvVar("NEWSWATCH_HTTP_TIMEOUT", "20", "fetch: connect and read timeout (seconds without a byte)"),
    EnvVar("NEWSWATCH_USER_AGENT", "newswatch/0.1 (+https://example.org/newswatch; news monitoring)",
           "fetch: User-Agent (name, version, a page saying who runs it)"),
    EnvVar("NEWSWATCH_HTTP_DEADLINE", "60",
           "fetch: seconds a whole request (connect, headers, body) may take, however the server trickles"),
    EnvVar("NEWSWATCH_HOST_CONCURRENCY", "2", "fetch: requests in flight at once to one host"),
    EnvVar("NEWSWATCH_ALLOW_HOSTS", "",
           "fetch: host[:port] list let through although local (demo and tests); every other loopback, "
           "private, link-local or metadata address is refused"),
    EnvVar("NEWSWATCH_INFLIGHT_TTL_SECONDS", "600",
           "fetch: seconds a published page counts as in flight; not stored downstream by then, it is fetched "
           "again while its feed lists it"),
    EnvVar("NEWSWATCH_URL_TTL_DAYS", "30", "fetch: days an article URL stays known (not fetched again)"),
    EnvVar("NEWSWATCH_DEDUP_TTL_DAYS", "14", "clean/alert: days story and alert keys live in Redis"),
    EnvVar("NEWSWATCH_NEAR_DUP_THRESHOLD", "0.6",
           "clean: estimated Jaccard similarity of word shingles above which two articles are one story"),
    EnvVar("NEWSWATCH_STORY_WINDOW_HOURS", "72",
           "stories: hours after a story's last article during which a new article may still join it"),
    EnvVar("NEWSWATCH_STORY_THRESHOLD", "0.85",
           "stories: link score (0-1) an article must reach to join a story; higher: fewer, surer links"),
    EnvVar("NEWSWATCH_STORY_EMBED_CHARS", "240",
           "stories: characters of title and lead that the multilingual sentence encoder reads per article"),
    EnvVar("NEWSWATCH_ENTITY_TABLE", "", "entities: extra entity table YAML (added to the built-in table)"),
    EnvVar("NEWSWATCH_WATCHLIST", "", "entities: user watchlist YAML, reloaded when it changes"),
    EnvVar("NEWSWATCH_NER_LANGUAGES", "fr,ru",
           "entities: languages whose articles also go through statistical NER (fr: spaCy, ru: natasha; empty: none)"),
    EnvVar("NEWSWATCH_RULES", "config/rules.yaml", "alert: rules YAML, reloaded when it changes"),
    EnvVar("NEWSWATCH_WEBHOOK_TIMEOUT", "10", "alert: seconds before a webhook POST is abandoned"),
    EnvVar("NEWSWATCH_WEBHOOK_RETRIES", "3", "alert: attempts per webhook delivery"),
)

_BY_NAME = {v.name: v for v in ENV_VARS}


def env(name: str, environ: dict[str, str] | None = None) -> str:
    """Value of a declared variable, or its default. Undeclared names are a programming error."""
    spec = _BY_NAME[name]
    source = os.environ if environ is None else environ
    return source.get(name, spec.default)


def shown(name: str, value: str) -> str:
    """A value as it may be printed or logged: secrets masked, a password in a URL too."""
    if _BY_NAME[name].secret:
        return "(set, hidden)" if value else ""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", value)


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _as_bool(raw: str) -> bool:
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    kafka_security_protocol: str
    kafka_sasl_mechanism: str
    kafka_sasl_username: str
    kafka_sasl_password: str = field(repr=False)
    kafka_ssl_cafile: str
    kafka_ssl_certfile: str
    kafka_ssl_keyfile: str
    redis_url: str = field(repr=False)
    redis_password: str = field(repr=False)
    topic_prefix: str
    partitions: int
    replication: int
    metrics_port: int
    metrics_host: str
    lag_seconds: float
    stall_seconds: float
    dependency_seconds: float
    log_level: str
    log_format: str
    max_message_bytes: int
    dead_letter_payload_bytes: int
    unknown_error_attempts: int
    fetch_wait_ms: int
    in_flight: int
    retry_cap_seconds: float
    sources: str
    poll_seconds: float
    host_delay_seconds: float
    max_page_bytes: int
    http_timeout: float
    user_agent: str
    http_deadline: float
    host_concurrency: int
    allow_hosts: str
    inflight_ttl_seconds: float
    url_ttl_days: int
    dedup_ttl_days: int
    near_dup_threshold: float
    story_window_hours: float
    story_threshold: float
    story_embed_chars: int
    entity_table: str
    watchlist: str
    ner_languages: str
    rules: str
    webhook_timeout: float
    webhook_retries: int

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env("NEWSWATCH_" + f.name.upper(), environ)
            kind = f.type
            try:
                if kind == "int":
                    values[f.name] = int(raw)
                elif kind == "float":
                    values[f.name] = float(raw)
                elif kind == "bool":
                    values[f.name] = _as_bool(raw)
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise ValueError(f"NEWSWATCH_{f.name.upper()}={raw!r} is not a valid {kind}") from exc
        return cls(**values)

    def __post_init__(self) -> None:
        if self.kafka_security_protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ValueError(f"NEWSWATCH_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r}: one of "
                             f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}")
        if self.kafka_security_protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise ValueError(f"NEWSWATCH_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r}: one of "
                                 f"{', '.join(KAFKA_SASL_MECHANISMS)}")
            if not (self.kafka_sasl_username and self.kafka_sasl_password):
                raise ValueError(f"NEWSWATCH_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                                 "NEWSWATCH_KAFKA_SASL_USERNAME and NEWSWATCH_KAFKA_SASL_PASSWORD")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("NEWSWATCH_KAFKA_SSL_KEYFILE is set without NEWSWATCH_KAFKA_SSL_CERTFILE")
        if not 1 <= self.fetch_wait_ms <= 60000:
            raise ValueError(f"NEWSWATCH_FETCH_WAIT_MS={self.fetch_wait_ms}: must be 1 to 60000")
        if self.in_flight < 1:
            raise ValueError(f"NEWSWATCH_IN_FLIGHT={self.in_flight}: must be 1 or more")
        if not 0.0 < self.story_threshold <= 1.0:
            raise ValueError(f"NEWSWATCH_STORY_THRESHOLD={self.story_threshold}: must be over 0 and at most 1")
        if self.story_window_hours <= 0:
            raise ValueError(f"NEWSWATCH_STORY_WINDOW_HOURS={self.story_window_hours}: must be over 0")
        if self.story_embed_chars < 0:
            raise ValueError(f"NEWSWATCH_STORY_EMBED_CHARS={self.story_embed_chars}: must be 0 or more")
        if self.stall_seconds <= 0:
            raise ValueError(f"NEWSWATCH_STALL_SECONDS={self.stall_seconds}: must be over 0")
        if self.dependency_seconds <= 0:
            raise ValueError(f"NEWSWATCH_DEPENDENCY_SECONDS={self.dependency_seconds}: must be over 0")

    @property
    def ner_language_list(self) -> list[str]:
        return [s.strip() for s in self.ner_languages.split(",") if s.strip()]

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]
