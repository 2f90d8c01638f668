#!/usr/bin/env bash
# Installs what hitmetrics needs on a fresh Debian machine, idempotently: a JDK, Maven, PostgreSQL, Redis, Chromium, a C
# compiler from Debian's packages when missing, the Python virtualenv (.venv) with the pinned requirements and
# hitmetrics itself (its C fast path compiled), and the local Elasticsearch node's jars. Safe to run again; it does
# only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v java >/dev/null 2>&1 || [ -n "${JAVA_HOME:-}" ] || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# Redis, the Celery broker of `make stack` and its end-to-end test.
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# Debian's chromium for the end-to-end browser tests (Playwright drives it; no browser is downloaded).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# A C compiler and Python's headers for the loader's fast path (include/hitmetrics/_fastpath.c).
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(sysconfig.get_path("include") + "/Python.h"))' \
  || need+=(python3-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} from Debian's packages"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.hitmetrics-requirements
# pip install -e . also builds the loader's C fast path (setup.py), again when its source changes.
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
  || [ include/hitmetrics/_fastpath.c -nt "$stamp" ]; then
  echo "setup: installing Python packages (about a minute)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt -e .
  touch "$stamp"
fi

.venv/bin/python -m tools.esnode build >/dev/null
# The local S3 server (S3Proxy) of the tests and `make stack`: its jars from Maven Central.
.venv/bin/python -m tools.s3node build >/dev/null
echo "setup: ready"
