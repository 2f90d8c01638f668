# The common commands. Each one sets up what it needs first (scripts/setup.sh is idempotent).
PY := .venv/bin/python
# The local Elasticsearch node's port is HITS_ES_PORT (default 9200) for every target, as for `hitmetrics`:
# `make run HITS_ES_PORT=9250` (a variable given to make reaches every command it runs).
AIRFLOW_PORT ?= 8080
BI_PORT ?= 8088

.PHONY: setup test fuzz lint run node-start node-status node-stop airflow stack bi test-bi bench

run: setup ## the main job: a sample day through the whole chain on the embedded defaults
	$(PY) -m tools.main_job

setup:
	@scripts/setup.sh

test: setup ## every test, starting its own Elasticsearch node and PostgreSQL
	$(PY) -m pytest

fuzz: setup ## the property-based tests at length: random, 6,000 examples per property (about 11 minutes)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/unit/test_verdicts.py tests/unit/test_indexes.py

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

node-start: setup ## the local Elasticsearch node on 127.0.0.1:$${HITS_ES_PORT:-9200}, data under .data/elasticsearch
	$(PY) -m tools.esnode start

node-status:
	@$(PY) -m tools.esnode status

node-stop:
	@$(PY) -m tools.esnode stop

airflow: setup ## local Airflow (standalone) on 127.0.0.1:$(AIRFLOW_PORT) with hitmetrics' DAGs and yesterday's sample day
	$(PY) -m tools.airflowlocal --port $(AIRFLOW_PORT) --sample-day yesterday

stack: setup ## the distributed stack without Docker: PostgreSQL, Redis, 3 Elasticsearch nodes, Airflow with 2 Celery workers
	$(PY) -m tools.stack --port $(AIRFLOW_PORT)

bi: setup ## Apache Superset on the rollup tables with the Hit metrics dashboard (its own virtualenv, .bi/venv)
	$(PY) -m tools.bi --port $(BI_PORT)

test-bi: setup ## the Superset dashboard end to end: installs .bi/venv, asks every chart's data, takes a screenshot
	$(PY) -m pytest -m bi tests/e2e/test_bi.py

bench: setup ## the benchmark on its own Elasticsearch node; BENCH_ARGS="--hits 10000000" for 10M hits
	$(PY) -m bench $(BENCH_ARGS)
