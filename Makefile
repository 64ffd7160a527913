# newswatch — each target installs what it needs first (infra/install.sh is quick when done).
PY := .venv/bin/python
NW := .venv/bin/newswatch

.PHONY: run test test-unit test-integration test-containers bench bench-pipeline bench-clean bench-entities bench-fetch bench-rules bench-stories lint lock install install-dev clean

install:
	@./infra/install.sh

install-dev:
	@./infra/install.sh --dev

## run: the whole pipeline on this machine (broker, Redis, demo sites, five services); prints alerts
run: install
	$(NW) run $(ARGS)

## test: unit, integration and container tests, ruff and mypy (what .ci/run calls)
test: install-dev
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -v --durations=10 $(PYTEST_ARGS)

test-unit: install-dev
	$(PY) -m pytest -v -m "not integration and not containers" $(PYTEST_ARGS)

test-integration: install-dev
	$(PY) -m pytest -v -m integration $(PYTEST_ARGS)

## test-containers: docker-compose.yml built and run on podman (part of `make test`; skipped, saying why, where
## podman cannot run; first run on a machine about 10 minutes, base images cached in /var/cache/newswatch)
test-containers: install-dev
	$(PY) -m pytest -v -m containers $(PYTEST_ARGS)

## bench: the benchmarks, each printing a table against its baseline
bench: install-dev
	$(PY) bench/langid.py
	$(PY) bench/extraction.py
	$(PY) bench/near_dups.py
	$(PY) bench/entities.py
	$(PY) bench/fetch.py
	$(PY) bench/rules.py
	$(PY) bench/stories.py
	$(PY) bench/pipeline.py --replicas clean=2,entities=2

## bench-pipeline: the whole pipeline end to end (articles/s, feed-to-alert latency, CPU per article and service),
## with two replicas of clean and of entities sharing their partitions (ARGS="--replicas clean=1" for one)
bench-pipeline: install-dev
	$(PY) bench/pipeline.py --replicas clean=2,entities=2 $(ARGS)

## bench-fetch: feed polls per second on one core against 5,000 simulated feeds on 500 hosts
bench-fetch: install-dev
	$(PY) bench/fetch.py

## bench-entities: NER scores, tagging throughput and the seeds check
bench-entities: install-dev
	$(PY) bench/entities.py

## bench-rules: 10,000 generated rules over real articles, matcher vs the naive loop
bench-rules: install-dev
	$(PY) bench/rules.py

## bench-stories: story linking on SemEval-2022 pairs (P/R/F1 per slice, Pearson) and its streaming cost with
## 10,000 and 1,000,000 articles indexed (CPU ms, Redis round trips and bytes per article)
bench-stories: install-dev
	$(PY) bench/stories.py $(ARGS)

## bench-clean: the clean service's benchmarks only (extraction, near-duplicates)
bench-clean: install-dev
	$(PY) bench/extraction.py
	$(PY) bench/near_dups.py

## lock: write requirements.lock and requirements-dev.lock from .venv (infra/lock.py says how to upgrade)
lock:
	$(PY) infra/lock.py

lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m mypy

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
