"""Config files (sources, rules, entity tables): YAML read strictly as UTF-8 and decoded into typed
structs, with errors that name the file, the place in it and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file that cannot be used, with a message a user can act on."""


def read_yaml(path: str | Path, text: str | None = None, error: type[ConfigError] = ConfigError) -> Any:
    """The YAML document of a file (or of ``text``, named ``path`` in errors); a file that cannot be
    read, is not UTF-8 or not YAML raises ``error``."""
    if text is None:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise error(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise error(f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8; "
                        "save the file as UTF-8") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{path}: {place}not valid YAML: {problem}") from exc


def convert(doc: Any, kind: type[T], origin: str | Path, error: type[ConfigError] = ConfigError) -> T:
    """``doc`` as a ``kind`` struct; a mismatch raises ``error`` naming the path in the document
    (``$.rules[2].id``)."""
    try:
        return msgspec.convert(doc, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise error(f"{origin}: {exc}") from exc


def load(path: str | Path, kind: type[T]) -> T:
    return convert(read_yaml(path), kind, path)
