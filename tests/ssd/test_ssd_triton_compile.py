"""Every Triton kernel of the project (ssd/, model/fused_step.py) compiles to a cubin for Hopper (sm_90, the H100/H200 of the targets) —
checked on a CPU-only machine through Triton's bundled ptxas (`aot_compile_kernels.py 80` does Ampere)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

# no `import triton` here: importing it before the interpreter tests set TRITON_INTERPRET breaks them
pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")

SCRIPT = Path(__file__).with_name("aot_compile_kernels.py")


@pytest.mark.slow
def test_kernels_compile_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a cold cache: really compile
    proc = subprocess.run([sys.executable, str(SCRIPT), "90"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.count("ok ") == 14
