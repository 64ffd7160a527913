"""How every Kafka client of the project reaches the brokers: bootstrap servers, security protocol,
SASL and TLS, from ``NEWSWATCH_KAFKA_*`` (``shared/settings.py``).

This is the one place that turns those settings into client arguments. Every client the project
makes takes them from here: the faust app of each consuming service (``faust_config``), aiokafka
producers and consumers (fetch's producer, ``alerts tail``) and kafka-python admin clients,
consumers and producers (``topics create``, the lag check, ``replay``), through ``client_config``:
kafka-python and aiokafka name these arguments alike.
"""

from __future__ import annotations

import ssl
from typing import Any

from shared.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL (None for the plaintext protocols): the brokers' certificates
    checked against ``NEWSWATCH_KAFKA_SSL_CAFILE`` (or the system's CAs), host names checked, and the
    client certificate loaded when one is given."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None)
    return context


def client_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any kafka-python or aiokafka client: where the brokers are and how to
    authenticate. A client adds its own arguments (group, offsets, sizes) beside these."""
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers, "security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    if protocol.startswith("SASL_"):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        config["sasl_plain_password"] = settings.kafka_sasl_password
    return config


def faust_config(settings: Settings) -> dict[str, Any]:
    """The faust app settings that say where the brokers are and how to authenticate: ``broker``
    and ``broker_credentials`` (faust hands them to its aiokafka consumer and producer)."""
    import faust

    credentials: Any = None
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        credentials = faust.SASLCredentials(username=settings.kafka_sasl_username,
                                            password=settings.kafka_sasl_password,
                                            mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    return {"broker": [f"kafka://{server}" for server in settings.bootstrap_servers],
            "broker_credentials": credentials}
