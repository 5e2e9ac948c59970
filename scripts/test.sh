#!/usr/bin/env bash
# The whole test suite, lint and the import-layering contract included. PCM_FAST=1 skips tests marked slow.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/lint-imports  # the package layering (pyproject.toml [tool.importlinter]): no upward imports, no cycles
marker=()
if [ "${PCM_FAST:-0}" = "1" ]; then marker=(-m "not slow"); fi
export PCM_BENCHMARK_DIR="${PCM_BENCHMARK_DIR:-$(cd .. && pwd)/shared/data/benchmarks}"
.venv/bin/python -m pytest -q "${marker[@]}" "$@"
