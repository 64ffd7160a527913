"""How the project reaches Kafka and Redis: the security settings (SASL, TLS, Redis password) reach every
client it creates — the faust app of each consuming service, fetch's producer, the topic admin, the lag
check, `replay`, `alerts tail` — and are checked when read."""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path
from typing import Any

import certifi
import kafka
import pytest
from typer.testing import CliRunner

from newswatch import local
from newswatch.cli import app as cli
from shared import kafka_clients, pipeline, redis_store
from shared.settings import ENV_VARS, Settings
from tests.conftest import ROOT

SECURE = {
    "NEWSWATCH_KAFKA_BOOTSTRAP": "b1.example.org:9094, b2.example.org:9094",
    "NEWSWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "NEWSWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "NEWSWATCH_KAFKA_SASL_USERNAME": "newswatch",
    "NEWSWATCH_KAFKA_SASL_PASSWORD": "s3cret",
    "NEWSWATCH_KAFKA_SSL_CAFILE": certifi.where(),
}


class Captured(Exception):
    """Raised by a fake client class once it has recorded the arguments it was made with."""


class Calls:
    def __init__(self) -> None:
        self.made: dict[str, dict[str, Any]] = {}

    def fake(self, name: str, stop: bool = True, **methods: Any) -> type:
        calls = self

        class Fake:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                calls.made[name] = kwargs
                if stop:
                    raise Captured(name)

            def close(self) -> None:
                pass

        for method, result in methods.items():
            setattr(Fake, method, lambda self, *a, _r=result, **k: _r)
        return Fake


def _assert_secure(kwargs: dict[str, Any]) -> None:
    assert kwargs["bootstrap_servers"] == ["b1.example.org:9094", "b2.example.org:9094"]
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("newswatch", "s3cret")
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_client_config_per_protocol() -> None:
    plain = kafka_clients.client_config(Settings.from_env({}))
    assert plain == {"bootstrap_servers": ["127.0.0.1:19092"], "security_protocol": "PLAINTEXT"}
    tls = kafka_clients.client_config(Settings.from_env({"NEWSWATCH_KAFKA_SECURITY_PROTOCOL": "SSL"}))
    assert tls["security_protocol"] == "SSL" and isinstance(tls["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in tls
    sasl = kafka_clients.client_config(Settings.from_env({
        "NEWSWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "NEWSWATCH_KAFKA_SASL_USERNAME": "u",
        "NEWSWATCH_KAFKA_SASL_PASSWORD": "p"}))
    assert sasl["sasl_mechanism"] == "PLAIN" and "ssl_context" not in sasl
    _assert_secure(kafka_clients.client_config(Settings.from_env(SECURE)))
    # Every argument is one both libraries take, under that name.
    import inspect

    import aiokafka

    for name in kafka_clients.client_config(Settings.from_env(SECURE)):
        for klass in (kafka.KafkaConsumer, kafka.KafkaProducer, kafka.KafkaAdminClient):
            assert name in klass.DEFAULT_CONFIG, (klass, name)
        for aioklass in (aiokafka.AIOKafkaConsumer, aiokafka.AIOKafkaProducer):
            assert name in inspect.signature(aioklass).parameters, (aioklass, name)


def test_a_client_certificate_is_loaded(tmp_path: Path) -> None:
    settings = Settings.from_env({**SECURE, "NEWSWATCH_KAFKA_SSL_CERTFILE": str(tmp_path / "missing.pem")})
    with pytest.raises(FileNotFoundError):  # read, not ignored
        kafka_clients.ssl_context(settings)


@pytest.mark.parametrize(("env", "message"), [
    ({"NEWSWATCH_KAFKA_SECURITY_PROTOCOL": "SASL"}, "one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ({"NEWSWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "NEWSWATCH_KAFKA_SASL_USERNAME": "u"},
     "needs NEWSWATCH_KAFKA_SASL_USERNAME and NEWSWATCH_KAFKA_SASL_PASSWORD"),
    ({**SECURE, "NEWSWATCH_KAFKA_SASL_MECHANISM": "GSSAPI"}, "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"NEWSWATCH_KAFKA_SSL_KEYFILE": "k.pem"}, "without NEWSWATCH_KAFKA_SSL_CERTFILE"),
    ({"NEWSWATCH_STALL_SECONDS": "0"}, "must be over 0"),
])
def test_bad_connection_settings_are_refused_when_read(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_env(env)


def test_the_faust_app_of_every_consuming_service_authenticates() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from shared.runtime import make_app

    settings = Settings.from_env(SECURE)
    for decl in pipeline.SERVICES:
        if not decl.inputs:
            continue
        conf = make_app(decl, settings).conf
        assert [str(url) for url in conf.broker] == ["kafka://b1.example.org:9094", "kafka://b2.example.org:9094"]
        # what faust gives its aiokafka consumer and producer
        auth = dict(credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))
        _assert_secure({**auth, "bootstrap_servers": settings.bootstrap_servers})
    plain = make_app(pipeline.service("clean"), Settings.from_env({})).conf
    assert dict(credentials_to_aiokafka_auth(plain.broker_credentials, plain.ssl_context)) == {
        "security_protocol": "PLAINTEXT"}


def test_fetch_producer_authenticates(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiokafka

    from shared.runtime import _run_sources

    calls = Calls()
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", calls.fake("producer"))
    with pytest.raises(Captured):
        asyncio.run(_run_sources(pipeline.service("fetch"), [], Settings.from_env(SECURE)))
    _assert_secure(calls.made["producer"])


def test_topic_admin_and_lag_check_authenticate(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import topics

    calls = Calls()
    monkeypatch.setattr(topics, "KafkaAdminClient", calls.fake("admin"))
    with pytest.raises(Captured):
        topics.create_topics(Settings.from_env(SECURE))
    _assert_secure(calls.made.pop("admin"))

    monkeypatch.setattr(topics, "KafkaAdminClient", calls.fake("admin", stop=False, list_group_offsets={}))
    monkeypatch.setattr(kafka, "KafkaConsumer", calls.fake("consumer"))
    with pytest.raises(Captured):
        topics.consumer_lag(Settings.from_env(SECURE), "g", ["t"])
    _assert_secure(calls.made["admin"])
    _assert_secure(calls.made["consumer"])


def test_cli_commands_authenticate(monkeypatch: pytest.MonkeyPatch) -> None:
    from newswatch import replay, runner
    from shared import topics

    for name, value in SECURE.items():
        monkeypatch.setenv(name, value)
    calls = Calls()
    monkeypatch.setattr(topics, "KafkaAdminClient", calls.fake("topics create"))
    monkeypatch.setattr(replay, "KafkaConsumer", calls.fake("replay consumer", stop=False))
    monkeypatch.setattr(replay, "KafkaProducer", calls.fake("replay producer"))
    monkeypatch.setattr(runner, "AIOKafkaConsumer", calls.fake("alerts tail"))
    runs = CliRunner()
    for args in (["topics", "create"], ["replay"], ["alerts", "tail"]):
        result = runs.invoke(cli, args)
        assert isinstance(result.exception, Captured), (args, result.output, result.exception)
    assert set(calls.made) == {"topics create", "replay consumer", "replay producer", "alerts tail"}
    for kwargs in calls.made.values():
        _assert_secure(kwargs)


def test_no_client_is_made_around_the_one_place() -> None:
    # Kafka clients take their connection from shared.kafka_clients, Redis clients from redis_store.connect.
    kafka_made = re.compile(r"(KafkaConsumer|KafkaProducer|KafkaAdminClient|AIOKafkaConsumer|AIOKafkaProducer)\(")
    for path in sorted((ROOT / "shared").glob("*.py")) + sorted((ROOT / "services").rglob("*.py")) \
            + sorted((ROOT / "newswatch").rglob("*.py")):
        source = path.read_text("utf-8")
        where = path.relative_to(ROOT)
        if path.name != "kafka_clients.py":
            assert "bootstrap_servers=" not in source, where
            for call in kafka_made.finditer(source):
                assert re.search(r"kafka_clients\.client_config\((self\.)?settings\)",
                                 source[call.end():call.end() + 120]), where
        if path.name != "redis_store.py":
            assert not re.search(r"Redis\(|from_url\(|BlockingConnectionPool", source), where


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = local.free_port()
    workdir = tmp_path_factory.mktemp("redis-auth")
    proc = local.spawn([local.redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--requirepass", "r3dis pass"], workdir / "redis.log")
    local.wait_port(port, "redis-server", proc=proc)
    yield port
    local.stop([proc])


def test_redis_password_from_the_setting_or_the_url(redis_with_password: int) -> None:
    import redis

    url = f"redis://127.0.0.1:{redis_with_password}/0"

    async def ping(env: dict[str, str], max_connections: int | None = None) -> object:
        client = redis_store.connect(Settings.from_env(env), max_connections)
        try:
            return await client.ping()
        finally:
            await client.aclose()

    assert asyncio.run(ping({"NEWSWATCH_REDIS_URL": url, "NEWSWATCH_REDIS_PASSWORD": "r3dis pass"}))
    assert asyncio.run(ping({"NEWSWATCH_REDIS_URL": url, "NEWSWATCH_REDIS_PASSWORD": "r3dis pass"}, 4))
    assert asyncio.run(ping({"NEWSWATCH_REDIS_URL": f"redis://:r3dis%20pass@127.0.0.1:{redis_with_password}/0"}))
    with pytest.raises(redis.AuthenticationError):
        asyncio.run(ping({"NEWSWATCH_REDIS_URL": url}))
    with pytest.raises(redis.AuthenticationError):
        asyncio.run(ping({"NEWSWATCH_REDIS_URL": url, "NEWSWATCH_REDIS_PASSWORD": "wrong"}))
    # the runner's blocking client: the same settings
    blocking = redis_store.connect_blocking(Settings.from_env({"NEWSWATCH_REDIS_URL": url,
                                                                "NEWSWATCH_REDIS_PASSWORD": "r3dis pass"}))
    assert blocking.ping()
    blocking.close()
    with pytest.raises(redis.AuthenticationError):
        redis_store.connect_blocking(Settings.from_env({"NEWSWATCH_REDIS_URL": url})).ping()


def test_settings_command_hides_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSWATCH_KAFKA_SASL_PASSWORD", "kafka-secret")
    monkeypatch.setenv("NEWSWATCH_REDIS_PASSWORD", "redis-secret")
    monkeypatch.setenv("NEWSWATCH_REDIS_URL", "rediss://user:url-secret@redis.example.org:6380/0")
    result = CliRunner().invoke(cli, ["settings"])
    assert result.exit_code == 0
    assert "secret" not in result.output.replace("(set, hidden)", "")
    assert "NEWSWATCH_REDIS_URL=rediss://user:***@redis.example.org:6380/0" in result.output
    assert "NEWSWATCH_KAFKA_SASL_PASSWORD=(set, hidden)" in result.output
    assert {v.name for v in ENV_VARS if v.secret} == {"NEWSWATCH_KAFKA_SASL_PASSWORD", "NEWSWATCH_REDIS_PASSWORD"}
    assert "s3cret" not in repr(Settings.from_env(SECURE))
