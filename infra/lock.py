"""Write requirements.lock and requirements-dev.lock from the environment this runs in (`make lock`).

requirements.lock: every distribution newswatch needs at run time (its dependencies, theirs, and so
on, markers evaluated here), pinned to the version installed, plus the build backend. The image
installs exactly these (`pip install --no-deps -r requirements.lock`), and `make install` uses
the file as constraints, so users, CI and the image run the same versions.
requirements-dev.lock: what the `dev` extra adds (tests, linters, the benchmarks' baseline).

To upgrade: install what you want in a virtualenv without constraints (for everything:
`python3 -m venv /tmp/up && /tmp/up/bin/pip install -e '.[dev]'`), run this script with that
interpreter (`/tmp/up/bin/python infra/lock.py`), then `make test`.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "newswatch"
BUILD = ("setuptools", "wheel")  # pyproject's build-system: the image builds with --no-build-isolation


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str], extra: str = "") -> dict[str, str]:
    """canonical name → installed version of these requirements and everything they need (here)."""
    found: dict[str, str] = {}
    todo = [(r, extra) for r in requirements]
    while todo:
        text, wanted_extra = todo.pop()
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(
                {**default_environment(), "extra": wanted_extra}):
            continue
        name = canonical(requirement.name)
        if name in found:
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError as exc:
            raise SystemExit(f"{requirement.name} is required ({text}) but not installed here") from exc
        found[name] = dist.version
        todo.extend((sub, e) for sub in dist.requires or [] for e in ["", *requirement.extras])
    return found


def project_requirements(extra: str) -> list[str]:
    """newswatch's own requirements for ``extra`` ("" = the base ones), as declared in its metadata."""
    dist = metadata.distribution(PROJECT)
    chosen = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        in_extra = requirement.marker is not None and "extra" in str(requirement.marker)
        if (extra and in_extra and requirement.marker is not None
                and requirement.marker.evaluate({**default_environment(), "extra": extra})) \
                or (not extra and not in_extra):
            chosen.append(text)
    return chosen


def render(pins: dict[str, str], header: str) -> str:
    return header + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))


def main() -> None:
    where = f"CPython {sys.version_info.major}.{sys.version_info.minor} on {sys.platform}"
    runtime = closure(project_requirements(""))
    build = {canonical(n): metadata.version(n) for n in BUILD if canonical(n) not in runtime}
    dev = {n: v for n, v in closure(project_requirements("dev"), "dev").items() if n not in runtime}
    (ROOT / "requirements.lock").write_text(
        render(runtime, f"# newswatch's run-time dependencies, all of them, pinned: written by `make lock` ({where});\n"
                        "# infra/lock.py says how to upgrade. The image installs exactly these.\n")
        + "# and the build backend (pyproject.toml's build-system; setuptools is above when a dependency needs it),\n"
        + "# for `pip install --no-build-isolation .`\n"
        + "".join(f"{name}=={build[name]}\n" for name in sorted(build)), "utf-8")
    (ROOT / "requirements-dev.lock").write_text(
        render(dev, f"# what the dev extra adds to requirements.lock, pinned: written by `make lock` ({where})\n"),
        "utf-8")
    print(f"requirements.lock: {len(runtime)} + {len(build)} build; requirements-dev.lock: {len(dev)}")


if __name__ == "__main__":
    main()
