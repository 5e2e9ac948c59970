"""Triton decides at its first import whether it runs in interpreter mode. A kernel test file sets
TRITON_INTERPRET=1 before importing triton and records `_TRITON_TOO_EARLY` when another module got
there first; its tests then skip and `test_rerun_in_fresh_process` runs the file again in a new
process. Both halves of that live here, once, for every such file."""

import os
import subprocess
import sys

import pytest


def _too_early(request) -> bool:
    return getattr(request.module, "_TRITON_TOO_EARLY", False)


@pytest.fixture(autouse=True)
def _fresh_process_guard(request):
    if _too_early(request) and request.node.name != "test_rerun_in_fresh_process":
        pytest.skip("triton was imported before TRITON_INTERPRET=1; test_rerun_in_fresh_process runs these")


@pytest.fixture()
def rerun_in_fresh_process(request):
    def run() -> None:
        if not _too_early(request):
            pytest.skip("the tests of this file ran in this process")
        env = dict(os.environ, TRITON_INTERPRET="1")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                               str(request.path)], env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:]

    return run
