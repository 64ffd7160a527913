"""Structured logs: one JSON object a line (or plain text for people), with the service name."""

from __future__ import annotations

import json
import logging
import logging.config
import time
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


_NOISY = ("kafka", "aiokafka", "faust", "mode", "httpx", "trafilatura", "htmldate")


def logging_config(service: str, level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """A dictConfig for our format; faust's worker is given it too, so its logs look like ours."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "service": service} if fmt == "json"
        else {"format": f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"}
    )
    quiet = "WARNING" if logging.getLevelName(level.upper()) < logging.WARNING else level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"newswatch": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "newswatch",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["default"]},
        # Kafka clients and extractors are chatty at INFO about every rebalance step and page.
        "loggers": {name: {"level": quiet} for name in _NOISY},
    }


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    logging.config.dictConfig(logging_config(service, level, fmt))
